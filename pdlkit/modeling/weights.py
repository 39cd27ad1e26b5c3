"""ImageNet weights for the backbones — from local files only; nothing is ever downloaded.

``ModelConfig.pretrained``:

- ``None``: torchvision's ImageNet weights for the backbone from the local torch hub cache
  (``torch.hub.get_dir()/checkpoints/<torchvision file name>``, e.g. ``resnet50-11ad3fa6.pth``) when
  such a file is there; otherwise a warning and random initialisation.
- ``"none"``: random initialisation, silently.
- a path: a state dict saved with ``torch.save`` — torchvision-style (``conv1.weight``, ``layer1...``;
  the classifier ``fc.*`` / ``classifier.*`` is dropped), pdlkit's own backbone, or a whole pdlkit model /
  checkpoint (``{"model": ...}`` or ``{"state_dict": ...}``; only the ``backbone.`` entries are used).
  Every backbone tensor must be present with the right shape, and nothing else may be left over;
  otherwise a :class:`~pdlkit.errors.PdlError` names the file and the offending keys.
  (detectron2's ``R-52.pkl`` is converted into such a file by ``pdl weights import``.)
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

from ..errors import PdlError
from .backbones import Backbone

__all__ = ["torchvision_weight_files", "cached_imagenet_weights", "read_state_dict", "load_backbone_weights"]

# Enum names of torchvision's weights per architecture.
_TORCHVISION_WEIGHTS = {
    "resnet18": "ResNet18_Weights",
    "resnet50": "ResNet50_Weights",
    "resnet101": "ResNet101_Weights",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights",
}


def torchvision_weight_files(arch: str) -> List[str]:
    """File names torchvision gives the ImageNet weights of ``arch``, its default weights first."""
    import torchvision.models as models

    enum_name = _TORCHVISION_WEIGHTS.get(arch)
    if enum_name is None:
        return []
    weights_enum = getattr(models, enum_name)
    ordered = [weights_enum.DEFAULT] + [w for w in weights_enum if w is not weights_enum.DEFAULT]
    return [os.path.basename(w.url) for w in ordered]


def cached_imagenet_weights(arch: Optional[str]) -> Optional[Path]:
    """The first of ``arch``'s torchvision weight files present in the local torch hub cache, or None."""
    if arch is None:
        return None
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for name in torchvision_weight_files(arch):
        if (checkpoints / name).is_file():
            return checkpoints / name
    return None


def read_state_dict(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """The tensors of a ``torch.save``-d state dict (or of its ``"model"`` / ``"state_dict"`` entry)."""
    path = Path(path)
    if not path.is_file():
        raise PdlError(f"{path}: pretrained weights file not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say so in one sentence
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PdlError(f"{path}: not a readable torch state dict ({first_line})") from None
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise PdlError(f"{path}: expected a state dict (a mapping of parameter names to tensors)")
    return dict(data)


def _backbone_entries(state: Dict[str, torch.Tensor], backbone: Backbone) -> Dict[str, torch.Tensor]:
    if any(key.startswith("backbone.") for key in state):
        return {key[len("backbone."):]: value for key, value in state.items() if key.startswith("backbone.")}
    return {
        key: value
        for key, value in state.items()
        if not any(key.startswith(prefix) for prefix in backbone.classifier_prefixes)
    }


def _listing(keys: List[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def load_state_dict_file(backbone: Backbone, path: str | os.PathLike) -> None:
    """Load the backbone weights in ``path`` into ``backbone`` (see the module docstring)."""
    state = _backbone_entries(read_state_dict(path), backbone)
    expected = backbone.state_dict()
    # Older torchvision files carry no num_batches_tracked; the counter is not a weight.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        f"{k} (file {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    name = getattr(backbone, "name", None) or backbone.torchvision_arch or type(backbone).__name__
    problems = []
    if missing:
        problems.append(f"missing keys {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_listing(unexpected)}")
    if mismatched:
        problems.append(f"wrong shapes {_listing(mismatched)}")
    if problems:
        raise PdlError(f"{path}: does not fit the {name} backbone: {'; '.join(problems)}")
    backbone.load_state_dict(state, strict=False)


def load_backbone_weights(backbone: Backbone, pretrained: Optional[str], *, norm: str = "BN") -> Optional[Path]:
    """Initialise ``backbone`` as ``ModelConfig.pretrained`` says; returns the file used (or None)."""
    if pretrained is not None and str(pretrained).strip().lower() == "none":
        return None
    if pretrained is not None:
        load_state_dict_file(backbone, pretrained)
        return Path(pretrained)
    name = getattr(backbone, "name", None) or backbone.torchvision_arch or type(backbone).__name__
    if norm == "GN":
        warnings.warn(
            f"{name}: ImageNet weights exist only for batch norm, so the GN backbone trains from scratch",
            stacklevel=3,
        )
        return None
    if backbone.torchvision_arch is None:
        warnings.warn(
            f"{name}: torchvision has no ImageNet weights for this backbone; training from scratch "
            "(convert detectron2's R-52.pkl with `pdl weights import` and set model.pretrained=PATH)",
            stacklevel=3,
        )
        return None
    path = cached_imagenet_weights(backbone.torchvision_arch)
    if path is None:
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        wanted = " or ".join(torchvision_weight_files(backbone.torchvision_arch))
        warnings.warn(
            f"{name}: no ImageNet weights in {folder} ({wanted}); training from scratch "
            "(set model.pretrained=PATH to a torchvision state dict, or model.pretrained=none to silence this)",
            stacklevel=3,
        )
        return None
    load_state_dict_file(backbone, path)
    return path
