"""Checkpoints: one ``.pt`` file per save, written atomically, checksummed, plus a ``last_checkpoint``
pointer; and :func:`load_model`, the one way from a checkpoint to ``(model, Config, DatasetSpec)``.

A pdlkit checkpoint is a dict with the keys ``model`` (state dict), ``optimizer``, ``scheduler``,
``scaler``, ``iteration``, ``config`` (``Config.to_dict()``), ``dataset`` (``DatasetSpec.to_dict()``),
``pdlkit_version``, ``rng_per_rank`` (for an exact resume: per process, the torch / CUDA / numpy /
Python random states) and ``checksum``.  Weights-only imports carry only ``model``, ``config``,
``dataset``, ``pdlkit_version`` and ``checksum``.  Every value is a tensor or a plain Python
container, so the file loads with ``torch.load(weights_only=True)`` and never runs pickled code.

``checksum`` is ``{"algorithm": "blake2b", "digest": hex}`` over every other entry (tensor dtypes,
shapes and bytes; the other values' types and reprs), verified on load: a damaged file is refused
with a sentence naming it even when ``torch.load`` reads it without complaint.  Files written before
checksums existed load unchecked.  Non-finite values in ``model`` or ``optimizer`` are refused when
saving and when loading.

The pointer ``OUTPUT_DIR/last_checkpoint`` is a one-line text file holding the file name of the
newest checkpoint in that folder (no symlink, so it survives copying the folder anywhere).
"""
from __future__ import annotations

import hashlib
import os
import random
import re
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import numpy as np
import torch

from . import __version__
from .config import Config
from .data.spec import DatasetSpec, spec_for
from .errors import DataError, PdlError
from .fileio import atomic_write, atomic_write_text
from .modeling import build_model
from .modeling.detectron2_import import (
    ImportReport,
    import_backbone_weights,
    import_detectron2_model,
    save_backbone_state,
)

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "import_weights_file",
    "strip_module_prefix",
    "checkpoint_digest",
    "DamagedCheckpointError",
    "write_last_checkpoint",
    "read_last_checkpoint",
    "earlier_checkpoints",
    "newest_valid_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "LAST_CHECKPOINT_FILE",
]

LAST_CHECKPOINT_FILE = "last_checkpoint"
# The keys without which a file is not a pdlkit checkpoint (weights-only imports carry no optimizer).
REQUIRED_KEYS = ("model", "pdlkit_version")
# Entries whose floating-point tensors must be finite (a NaN weight or Adam moment poisons a run).
FINITE_KEYS = ("model", "optimizer")
CHECKSUM_ALGORITHM = "blake2b"
_PERIODIC_NAME = re.compile(r"^model_(\d+)\.pt$")


class DamagedCheckpointError(DataError):
    """A checkpoint file that exists but cannot be trusted (unreadable, checksum mismatch,
    non-finite values).  ``path`` is the file, ``reason`` the problem in a few words."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


# ------------------------------------------------------------------------------------ save / load
def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` with ``torch.save`` through a temporary file + ``os.replace``,
    with ``pdlkit_version`` (when absent) and ``checksum`` added.

    Never leaves a half-written file at ``path``: if serialisation or the disk fails, the previous
    file at ``path`` (if any) is untouched.  Raises :class:`DataError` (and writes nothing) when a
    floating-point tensor in ``state["model"]`` or ``state["optimizer"]`` holds NaN or infinity.
    """
    path = Path(path)
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint expects a dict, got {type(state).__name__}")
    state = {key: value for key, value in state.items() if key != "checksum"}
    state.setdefault("pdlkit_version", __version__)
    bad = _first_non_finite(state)
    if bad:
        raise DataError(f"{path}: not saved, because {bad} holds non-finite values (NaN or infinity)")
    state["checksum"] = {"algorithm": CHECKSUM_ALGORITHM, "digest": checkpoint_digest(state)}
    atomic_write(path, lambda handle: torch.save(state, handle), fsync=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read and verify a pdlkit checkpoint.

    Raises :class:`DataError` naming the file when it is missing or not a pdlkit checkpoint, and
    :class:`DamagedCheckpointError` (a ``DataError``) when it is unreadable, its checksum does not
    match its contents, or its weights / optimizer state hold non-finite values.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on foreign bytes (IndexError among them)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DamagedCheckpointError(path, f"not a readable pdlkit checkpoint ({first_line})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a pdlkit checkpoint (holds a {type(state).__name__}, not a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise DataError(f"{path}: not a pdlkit checkpoint (missing {', '.join(missing)})")
    _verify_checksum(path, state)
    bad = _first_non_finite(state)
    if bad:
        raise DamagedCheckpointError(path, f"{bad} holds non-finite values (NaN or infinity)")
    return state


def _verify_checksum(path: Path, state: dict) -> None:
    recorded = state.pop("checksum", None)
    if recorded is None:
        return  # written before pdlkit checksummed its checkpoints
    if not isinstance(recorded, dict) or recorded.get("algorithm") != CHECKSUM_ALGORITHM:
        raise DamagedCheckpointError(path, "damaged (its checksum entry is malformed)")
    if checkpoint_digest(state) != recorded.get("digest"):
        raise DamagedCheckpointError(path, "damaged (its contents do not match its checksum)")


# ------------------------------------------------------------------------------------ checksum
def checkpoint_digest(state: dict) -> str:
    """Hex digest of a checkpoint's contents (every entry but ``checksum``), independent of the
    device its tensors are on and of the order its dicts were built in."""
    digest = hashlib.blake2b(digest_size=32)
    for chunk in _digest_chunks({k: v for k, v in state.items() if k != "checksum"}):
        digest.update(chunk)
    return digest.hexdigest()


def _digest_chunks(value: Any) -> Iterator[Any]:
    if torch.is_tensor(value):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        yield f"T{tensor.dtype}{tuple(value.shape)}".encode()
        yield tensor.view(torch.uint8).numpy() if tensor.numel() else b""  # hashed in place, no copy
    elif isinstance(value, dict):
        yield f"D{len(value)}".encode()
        for key in sorted(value, key=lambda k: (type(k).__name__, repr(k))):
            yield f"K{type(key).__name__}:{key!r}".encode()
            yield from _digest_chunks(value[key])
    elif isinstance(value, (list, tuple)):
        yield f"{type(value).__name__[0].upper()}{len(value)}".encode()
        for item in value:
            yield from _digest_chunks(item)
    else:
        yield f"V{type(value).__name__}:{value!r}".encode()


def _first_non_finite(state: dict) -> Optional[str]:
    """The dotted key of the first floating-point tensor under ``FINITE_KEYS`` holding NaN/inf."""
    for key in FINITE_KEYS:
        for name, tensor in _tensors(state.get(key), key):
            if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all()):
                return name
    return None


def _tensors(value: Any, prefix: str) -> Iterator[Tuple[str, torch.Tensor]]:
    if torch.is_tensor(value):
        yield prefix, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{prefix}.{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _tensors(item, f"{prefix}.{index}")


# ------------------------------------------------------------------------------------ model
def strip_module_prefix(state_dict: dict) -> dict:
    """A state dict without the ``module.`` prefix that DistributedDataParallel adds to every key
    (the only place pdlkit strips it)."""
    prefix = "module."
    if state_dict and all(str(key).startswith(prefix) for key in state_dict):
        return {key[len(prefix):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def load_model(path: str | os.PathLike, map_location: Any = "cpu") -> Tuple[torch.nn.Module, Config, DatasetSpec]:
    """``(model in eval mode, Config, DatasetSpec)`` of a pdlkit checkpoint.

    The model is built from the checkpoint's own config (never fetching pretrained backbone
    weights: the file holds every weight).  Raises :class:`DataError` naming the file when it lacks
    ``config`` / ``dataset`` or its weights do not fit the model its config describes.
    """
    path = Path(path)
    checkpoint = load_checkpoint(path, map_location=map_location)
    missing = [key for key in ("config", "dataset") if key not in checkpoint]
    if missing:
        raise DataError(f"{path}: not a complete pdlkit checkpoint (missing {', '.join(missing)})")
    cfg = Config.from_dict(checkpoint["config"], source=str(path))
    cfg.model.pretrained = "none"
    spec = DatasetSpec.from_dict(checkpoint["dataset"])
    model = build_model(cfg.model, spec.num_classes)
    try:
        model.load_state_dict(strip_module_prefix(checkpoint["model"]), strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:2])
        raise DataError(f"{path}: the weights do not fit the checkpoint's model ({detail})") from None
    return model.eval(), cfg, spec


# ------------------------------------------------------------------------------------ the pointer
def write_last_checkpoint(output_dir: str | os.PathLike, checkpoint_path: str | os.PathLike) -> None:
    """Point ``output_dir/last_checkpoint`` at ``checkpoint_path`` (stored relative to the folder)."""
    output_dir = Path(output_dir)
    name = os.path.relpath(Path(checkpoint_path), output_dir)
    atomic_write_text(output_dir / LAST_CHECKPOINT_FILE, name + "\n")


def read_last_checkpoint(output_dir: str | os.PathLike) -> Optional[Path]:
    """The checkpoint that ``output_dir/last_checkpoint`` names, or None when there is none.

    Raises :class:`DataError` when the pointer names a file that does not exist.
    """
    output_dir = Path(output_dir)
    pointer = output_dir / LAST_CHECKPOINT_FILE
    if not pointer.is_file():
        return None
    name = pointer.read_text().strip()
    if not name:
        return None
    target = output_dir / name
    if not target.is_file():
        raise DataError(f"{pointer}: names {name}, which does not exist")
    return target


def earlier_checkpoints(output_dir: str | os.PathLike, newest: Path) -> List[Path]:
    """The periodic checkpoints ``model_<iteration>.pt`` of ``output_dir`` older than ``newest``
    (by the iteration in their names; all of them when ``newest`` is ``model_final.pt``), newest first."""
    match = _PERIODIC_NAME.match(Path(newest).name)
    limit = int(match.group(1)) if match else None
    found = []
    for path in Path(output_dir).glob("model_*.pt"):
        number = _PERIODIC_NAME.match(path.name)
        if number and path != Path(newest) and (limit is None or int(number.group(1)) < limit):
            found.append((int(number.group(1)), path))
    return [path for _, path in sorted(found, reverse=True)]


def newest_valid_checkpoint(candidates: List[Path], map_location: Any = "cpu") -> Optional[Tuple[Path, dict]]:
    """``(path, state)`` of the first of ``candidates`` that loads and verifies, or None."""
    for path in candidates:
        try:
            return path, load_checkpoint(path, map_location=map_location)
        except DataError:
            continue
    return None


# ----------------------------------------------------------------- random number generator states
def capture_rng_state() -> dict:
    """The states of every generator training draws from, as tensors and plain lists.

    Plain containers (not numpy arrays / tuples of objects) keep the checkpoint loadable with
    ``weights_only=True``.
    """
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["gauss"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["internal"]), python_state["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


# ------------------------------------------------------------------------------- weight import
def import_weights_file(
    source: str | os.PathLike,
    output: str | os.PathLike,
    *,
    source_format: str = "detectron2",
    cfg=None,
    backbone: Optional[str] = None,
    backbone_only: bool = False,
) -> ImportReport:
    """``pdl weights import``: convert ``source`` and write ``output`` atomically.

    - detectron2 whole model (default): needs ``cfg`` (the checkpoint's architecture and dataset,
      e.g. configs/cityscapes_r52_dc5_d2.yaml); writes a pdlkit checkpoint that ``pdl eval`` /
      ``pdl predict`` / ``pdl export`` take.
    - ``backbone_only`` (detectron2 ``R-52.pkl``) or ``source_format="torchvision"``: writes a backbone
      state dict for ``model.pretrained``; the backbone is ``backbone``, else ``cfg.model.backbone``,
      else resnet52 for detectron2.
    """
    if source_format not in ("detectron2", "torchvision"):
        raise PdlError(f"unknown source format {source_format!r}; expected detectron2 or torchvision")
    if source_format == "torchvision" or backbone_only:
        name = backbone or (cfg.model.backbone if cfg is not None else None)
        if name is None:
            if source_format == "torchvision":
                raise PdlError("a torchvision file needs cfg or backbone to know which backbone it is",
                               parameter=("cfg", "backbone"))
            name = "resnet52"
        state, report = import_backbone_weights(source, name, source_format=source_format)
        save_backbone_state(output, state)
        return report
    if cfg is None:
        raise PdlError("importing a whole detectron2 model needs cfg (e.g. configs/cityscapes_r52_dc5_d2.yaml)",
                       parameter="cfg")
    checkpoint, report = import_detectron2_model(source, cfg, spec_for(cfg.data))
    save_checkpoint(output, checkpoint)
    return report
