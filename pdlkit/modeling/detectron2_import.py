"""Import detectron2 checkpoints (Panoptic-DeepLab model zoo, ImageNet ``R-52.pkl``) and torchvision
ImageNet state dicts into pdlkit.

Readers
-------
- ``.pkl``: a pickled dict (protocols 2-5: numpy's ``_reconstruct`` path and protocol 5's
  ``_frombuffer`` path), read with ``encoding="latin1"`` by an unpickler that only rebuilds numpy
  arrays, numpy scalars and plain containers (no other code runs).  Tensors live under ``"model"``
  (or at the top level); ``"__author__"`` and ``"matching_heuristics"`` (written by detectron2's model
  zoo and by its ``convert-torchvision-to-d2.py``) are metadata and ignored, present or not.  Arrays
  keep their shape, 0-d ones included (SyncBN's ``num_batches_tracked`` counters); an array that is
  not numeric (e.g. dtype object) is refused with a :class:`~pdlkit.errors.PdlError`.
- ``.pth`` / ``.pt``: ``torch.load(weights_only=True)``; ``{"model": state_dict, ...}`` (a detectron2
  training checkpoint also holds ``optimizer`` / ``scheduler`` / ``iteration``, ignored) or a bare
  state dict.

Key map (detectron2 -> pdlkit), complete for the Panoptic-DeepLab meta-architecture
-----------------------------------------------------------------------------------
detectron2 module layout (``projects/Panoptic-DeepLab/panoptic_deeplab/panoptic_seg.py``,
``projects/DeepLab/deeplab/{resnet,semantic_seg}.py``, ``detectron2/layers/{aspp,blocks}.py``);
``X`` is one of ``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``:

=====================================================  ==============================================
detectron2                                             pdlkit
=====================================================  ==============================================
``backbone.stem.conv{k}.weight`` (k = 1..3)            ``backbone.conv{k}.weight``
``backbone.stem.conv{k}.norm.X``                       ``backbone.bn{k}.X``
``backbone.res{s}.{i}.conv{k}.weight`` (s = 2..5)      ``backbone.layer{s-1}.{i}.conv{k}.weight``
``backbone.res{s}.{i}.conv{k}.norm.X``                 ``backbone.layer{s-1}.{i}.bn{k}.X``
``backbone.res{s}.{i}.shortcut.weight``                ``backbone.layer{s-1}.{i}.downsample.0.weight``
``backbone.res{s}.{i}.shortcut.norm.X``                ``backbone.layer{s-1}.{i}.downsample.1.X``
``sem_seg_head.<rest>``                                ``semantic_branch.<rest>``
``ins_embed_head.<rest>``                              ``instance_branch.<rest>``
``pixel_mean``, ``pixel_std``                          dropped (pdlkit normalises in preprocessing:
                                                       ``data.mean`` / ``data.std``; checked equal)
=====================================================  ==============================================

``<rest>`` is the same on both sides because pdlkit's decoder, ASPP and heads copy detectron2's
module names: ``decoder.res5.project_conv.convs.{0..3}`` (ASPP 1x1 and atrous convs, or their
``depthwise`` / ``pointwise`` parts), ``decoder.res5.project_conv.convs.4.1.{weight,bias}`` (image
pooling conv, no norm), ``decoder.res5.project_conv.project``, ``decoder.res{2,3}.project_conv``,
``decoder.res{2,3}.fuse_conv.{0,1}`` (two 3x3 convs) or ``.fuse_conv.{depthwise,pointwise}`` (DSConv),
``head.{0,1}`` or ``head.{depthwise,pointwise}``, ``predictor``, ``center_head.{0,1}``,
``center_predictor``, ``offset_head.{0,1}`` or ``offset_head.{depthwise,pointwise}``,
``offset_predictor``; every conv with a norm stores it as ``<conv>.norm.X``.

detectron2 checkpoints may or may not hold ``num_batches_tracked`` (a training counter, not a weight;
detectron2's SyncBN layers store it as a 0-d int64 array, 83 of them in the R52-DC5 model and 89 in
the DSConv one): when present it is copied as the 0-d tensor it is, when absent pdlkit's counter stays 0
and the report counts it as defaulted.  Every other pdlkit parameter and
buffer must be filled, every source key must be used (or be one of the dropped keys above), and
shapes must agree; otherwise :class:`~pdlkit.errors.PdlError` names the first offending key on both
sides.

Backbone-only imports (for training): detectron2's ImageNet ``R-52.pkl`` uses the backbone names
above with or without the ``backbone.`` prefix (a classifier ``fc.*`` / ``linear.*`` is dropped), as
do torchvision files converted by detectron2's ``convert-torchvision-to-d2.py`` (classifier
``stem.fc.*`` dropped);
torchvision ImageNet files use pdlkit's own backbone names (``fc.*`` / ``classifier.*`` dropped).

Input convention: the published checkpoints take RGB images normalised with mean (123.675, 116.28,
103.53) and std (58.395, 57.12, 57.375) on 0-255 pixels (pdlkit's defaults).
"""
from __future__ import annotations

import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Tuple

import numpy as np
import torch

from .. import __version__
from ..errors import PdlError
from ..fileio import atomic_write
from .panoptic_deeplab import build_model

__all__ = [
    "DROPPED_DETECTRON2_KEYS",
    "read_detectron2_weights",
    "pdlkit_to_detectron2_name",
    "detectron2_key_map",
    "map_detectron2_state",
    "ImportReport",
    "import_detectron2_model",
    "import_backbone_weights",
]

# Source keys that have no pdlkit counterpart on purpose.
DROPPED_DETECTRON2_KEYS = ("pixel_mean", "pixel_std")
_OPTIONAL_SUFFIX = "num_batches_tracked"
# ImageNet classifiers: torchvision's fc / classifier, detectron2's linear, and "stem.fc" from
# detectron2's tools/convert-torchvision-to-d2.py (it prefixes every key without "layer" by "stem.")
_CLASSIFIER_PREFIXES = ("fc.", "linear.", "classifier.", "stem.fc.")


# ------------------------------------------------------------------------------------------ reading
class _ArrayUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays, numpy scalars and plain containers; refuses every other global."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        # pickle protocol 5 (Python 3.8+'s default for numpy arrays): raw bytes + dtype + shape
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("__builtin__", "set"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _array_to_tensor(array: np.ndarray, path: Path, key) -> torch.Tensor:
    """A numeric numpy array (any shape, 0-d included) -> a tensor of the same shape and dtype."""
    if array.dtype.kind not in "biuf":
        raise PdlError(
            f"{path}: entry {key!r} is an array of dtype {array.dtype}, not numeric weights"
        )
    # a copy in native byte order: arrays rebuilt from a pickle may be read-only or big-endian, and
    # np.ascontiguousarray would turn the 0-d num_batches_tracked counters into shape (1,)
    native = array.astype(array.dtype.newbyteorder("="), order="C", copy=True)
    return torch.from_numpy(native)


def read_detectron2_weights(path: str | os.PathLike) -> Dict[str, torch.Tensor]:
    """The name -> tensor mapping of a detectron2 ``.pkl`` / ``.pth`` file (see the module docstring).

    Raises :class:`PdlError` naming the file when it is missing, unreadable or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise PdlError(f"{path}: weights file not found")
    if path.suffix.lower() == ".pkl":
        try:
            with open(path, "rb") as handle:
                data = _ArrayUnpickler(handle, encoding="latin1").load()
        except Exception as exc:
            raise PdlError(f"{path}: not a readable detectron2 .pkl file ({_first_line(exc)})") from None
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise PdlError(f"{path}: not a readable torch file ({_first_line(exc)})") from None
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    elif isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping):
        raise PdlError(f"{path}: expected a dict of named arrays, found a {type(data).__name__}")
    state: Dict[str, torch.Tensor] = {}
    for key, value in data.items():
        if key in ("__author__", "matching_heuristics"):
            continue
        if isinstance(value, (np.ndarray, np.generic)):
            value = _array_to_tensor(np.asarray(value), path, key)
        if not isinstance(value, torch.Tensor):
            raise PdlError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")
        state[str(key)] = value
    if not state:
        raise PdlError(f"{path}: holds no weights")
    # detectron2 models wrapped in DistributedDataParallel save "module." prefixes.
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


# --------------------------------------------------------------------------------------- name map
_STEM = re.compile(r"^backbone\.(conv|bn)([123])\.(.+)$")
_BLOCK = re.compile(r"^backbone\.layer([1-4])\.(\d+)\.(conv[123]|bn[123]|downsample\.[01])\.(.+)$")


def pdlkit_to_detectron2_name(name: str) -> str:
    """detectron2's name of the pdlkit parameter / buffer ``name`` (a ResNet Panoptic-DeepLab).

    Raises ValueError for a name outside the map (e.g. a MobileNetV3 backbone).
    """
    match = _STEM.match(name)
    if match:
        kind, k, rest = match.groups()
        return f"backbone.stem.conv{k}.{rest}" if kind == "conv" else f"backbone.stem.conv{k}.norm.{rest}"
    match = _BLOCK.match(name)
    if match:
        layer, block, part, rest = match.groups()
        prefix = f"backbone.res{int(layer) + 1}.{block}"
        if part.startswith("conv"):
            return f"{prefix}.{part}.{rest}"
        if part.startswith("bn"):
            return f"{prefix}.conv{part[2]}.norm.{rest}"
        if part == "downsample.0":
            return f"{prefix}.shortcut.{rest}"
        return f"{prefix}.shortcut.norm.{rest}"
    if name.startswith("semantic_branch."):
        return "sem_seg_head." + name[len("semantic_branch."):]
    if name.startswith("instance_branch."):
        return "ins_embed_head." + name[len("instance_branch."):]
    raise ValueError(f"pdlkit name {name!r} has no detectron2 counterpart")


def detectron2_key_map(model: torch.nn.Module, *, prefix: str = "") -> Dict[str, str]:
    """detectron2 name -> pdlkit name for every entry of ``model.state_dict()``.

    ``prefix`` is prepended to both sides' pdlkit names when ``model`` is a sub-module (e.g. a
    backbone: pass ``"backbone."``; the returned pdlkit names are then relative to ``model``).
    """
    mapping = {}
    for name in model.state_dict():
        try:
            d2_name = pdlkit_to_detectron2_name(prefix + name)
        except ValueError as exc:
            raise PdlError(f"{exc}: only ResNet backbones can be imported from detectron2") from None
        mapping[d2_name] = name
    return mapping


def _shape(t: torch.Tensor) -> Tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def map_detectron2_state(
    source: Mapping[str, torch.Tensor],
    target: Mapping[str, torch.Tensor],
    key_map: Mapping[str, str],
    *,
    source_name: str = "checkpoint",
    dropped: Tuple[str, ...] = DROPPED_DETECTRON2_KEYS,
) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Rename ``source`` (detectron2 names) into ``target``'s names with ``key_map`` and check it.

    Returns (the complete state for ``target``, the source keys deliberately dropped).  Fails with a
    :class:`PdlError` naming the first missing / unexpected / mis-shaped key (both names).
    ``num_batches_tracked`` may be absent from the source; the target's value is kept then.
    """
    result: Dict[str, torch.Tensor] = {}
    used_sources = set()
    for d2_name, pd_name in key_map.items():
        expected = target[pd_name]
        if d2_name not in source:
            if d2_name.endswith(_OPTIONAL_SUFFIX):
                result[pd_name] = expected.detach().clone()
                continue
            raise PdlError(
                f"{source_name}: missing key {d2_name!r} (for pdlkit's {pd_name!r}, shape "
                f"{list(_shape(expected))})"
            )
        value = source[d2_name]
        used_sources.add(d2_name)
        if _shape(value) != _shape(expected):
            raise PdlError(
                f"{source_name}: {d2_name!r} has shape {list(_shape(value))} but pdlkit's {pd_name!r} "
                f"needs {list(_shape(expected))}"
            )
        result[pd_name] = value.detach().to(dtype=expected.dtype).clone()
    dropped_here = []
    for key in source:
        if key in used_sources:
            continue
        if key in dropped:
            dropped_here.append(key)
            continue
        hint = _layout_hint(key)
        raise PdlError(f"{source_name}: unexpected key {key!r} (no pdlkit counterpart in this model{hint})")
    return result, dropped_here


def _layout_hint(key: str) -> str:
    if ".depthwise." in key or ".pointwise." in key:
        return "; the checkpoint has depthwise-separable convs: use a *_dsconv config / model.depthwise_separable=true"
    if re.search(r"\.(fuse_conv|head|offset_head)\.[01]\.", key):
        return "; the checkpoint has plain 3x3 convs: use model.depthwise_separable=false"
    return ""


# ---------------------------------------------------------------------------------- whole models
@dataclass
class ImportReport:
    """What an import did: the file, how many tensors went where, what was dropped."""

    source: str
    kind: str  # "model" | "backbone"
    loaded: int
    dropped: List[str] = field(default_factory=list)
    defaulted: List[str] = field(default_factory=list)  # target entries kept (num_batches_tracked)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "loaded": self.loaded,
            "dropped": list(self.dropped),
            "defaulted": len(self.defaulted),
        }


def _check_pixel_stats(source: Mapping[str, torch.Tensor], data_cfg, source_name: str) -> None:
    for key, expected in (("pixel_mean", data_cfg.mean), ("pixel_std", data_cfg.std)):
        if key not in source:
            continue
        values = source[key].reshape(-1).double()
        wanted = torch.tensor([float(v) for v in expected], dtype=torch.float64)
        if values.numel() != 3 or not torch.allclose(values, wanted, atol=1e-3):
            raise PdlError(
                f"{source_name}: {key} is {[round(float(v), 3) for v in values]} but the config's data."
                f"{key.split('_')[1]} is {list(expected)}; set the config to the checkpoint's values"
            )


def import_detectron2_model(source_path: str | os.PathLike, cfg, spec) -> Tuple[dict, ImportReport]:
    """A whole detectron2 Panoptic-DeepLab checkpoint -> (pdlkit checkpoint dict, report).

    ``cfg`` (:class:`pdlkit.config.Config`) must describe the checkpoint's architecture exactly (the
    ``configs/*_d2*.yaml`` files do); ``spec`` is the dataset spec it was trained on.  The returned
    dict has the checkpoint keys ``model``, ``config``, ``dataset`` and ``pdlkit_version`` (plus
    ``imported_from``) and loads into ``build_model(cfg.model, spec.num_classes)`` with strict=True.
    """
    source_path = Path(source_path)
    source = read_detectron2_weights(source_path)
    if not any(k.startswith("sem_seg_head.") for k in source):
        raise PdlError(
            f"{source_path}: has no sem_seg_head.* weights, so it is not a Panoptic-DeepLab model "
            "(an ImageNet backbone such as R-52.pkl imports with --backbone-only)"
        )
    _check_pixel_stats(source, cfg.data, str(source_path))
    source_dsconv = any(".fuse_conv.depthwise." in k for k in source)
    if source_dsconv != bool(cfg.model.depthwise_separable):
        found = "depthwise-separable" if source_dsconv else "plain 3x3"
        wanted = "a *_dsconv config (model.depthwise_separable=true)" if source_dsconv else (
            "a config without DSConv (model.depthwise_separable=false)")
        raise PdlError(
            f"{source_path}: the checkpoint's decoder uses {found} fusion convs "
            f"(e.g. {next(k for k in source if '.fuse_conv.' in k)!r}); import it with {wanted}"
        )
    cfg = cfg.copy()
    cfg.model.pretrained = "none"
    model = build_model(cfg.model, spec.num_classes)
    target = model.state_dict()
    state, dropped = map_detectron2_state(source, target, detectron2_key_map(model), source_name=str(source_path))
    model.load_state_dict(state, strict=True)  # proves every target entry is filled
    defaulted = [k for k in target if k.endswith(_OPTIONAL_SUFFIX) and pdlkit_to_detectron2_name(k) not in source]
    report = ImportReport(str(source_path), "model", len(state) - len(defaulted), dropped, defaulted)
    checkpoint = {
        "model": model.state_dict(),
        "config": cfg.to_dict(),
        "dataset": spec.to_dict(),
        "iteration": 0,
        "pdlkit_version": __version__,
        "imported_from": {"format": "detectron2", **report.to_dict()},
    }
    return checkpoint, report


def import_backbone_weights(
    source_path: str | os.PathLike, backbone_name: str, *, source_format: str = "detectron2"
) -> Tuple[Dict[str, torch.Tensor], ImportReport]:
    """ImageNet weights -> a complete pdlkit backbone state dict (``model.pretrained`` reads it).

    source_format "detectron2": ``R-52.pkl``-style names (module docstring); "torchvision": a
    torchvision state dict (or a detectron2-named one, recognised by its ``stem.`` keys).
    """
    from .backbones import build_backbone

    source_path = Path(source_path)
    source = read_detectron2_weights(source_path)
    try:
        backbone = build_backbone(backbone_name, output_stride=16, norm="BN")
    except ValueError as exc:
        raise PdlError(str(exc)) from None
    target = backbone.state_dict()
    stripped = {k[len("backbone."):] if k.startswith("backbone.") else k: v for k, v in source.items()}
    classifier = tuple(k for k in stripped if k.startswith(_CLASSIFIER_PREFIXES))
    d2_named = any(k.startswith("stem.") or re.match(r"res[2-5]\.", k) for k in stripped)
    if d2_named:
        prefixed = {"backbone." + k: v for k, v in stripped.items() if k not in classifier}
        key_map = {d2: "backbone." + pd for d2, pd in detectron2_key_map(backbone, prefix="backbone.").items()}
        full_target = {"backbone." + k: v for k, v in target.items()}
        state, _ = map_detectron2_state(
            prefixed, full_target, key_map, source_name=str(source_path), dropped=()
        )
        state = {k[len("backbone."):]: v for k, v in state.items()}
    else:
        if source_format == "detectron2":
            raise PdlError(
                f"{source_path}: no detectron2 backbone names (stem.*, res2.* ...); for a torchvision "
                "file use --from torchvision"
            )
        renamed = {k: v for k, v in stripped.items() if k not in classifier}
        identity = {k: k for k in target}
        state, _ = map_detectron2_state(renamed, target, identity, source_name=str(source_path), dropped=())
    backbone.load_state_dict(state, strict=True)
    defaulted = [k for k in target if k.endswith(_OPTIONAL_SUFFIX)]
    report = ImportReport(str(source_path), "backbone", len(state), list(classifier), defaulted)
    return backbone.state_dict(), report


def save_backbone_state(path: str | os.PathLike, state: Mapping[str, torch.Tensor]) -> Path:
    """Write a backbone state dict atomically (temporary file + rename)."""
    path = Path(path)
    atomic_write(path, lambda handle: torch.save(dict(state), handle), fsync=True)
    return path
