"""Checkpoints: one ``.pt`` file per save, written atomically, plus a ``last_checkpoint`` pointer.

A pdlkit checkpoint is a dict with the keys of DESIGN.md §3 — ``model``, ``optimizer``,
``scheduler``, ``scaler``, ``iteration``, ``config`` (``Config.to_dict()``), ``dataset``
(``DatasetSpec.to_dict()``), ``pdlkit_version`` — and, for an exact ``--resume``, ``rng`` (the
torch / CUDA / numpy / Python random states).  Every value is a tensor or a plain Python container,
so the file loads with ``torch.load(weights_only=True)`` and never runs pickled code.

The pointer ``OUTPUT_DIR/last_checkpoint`` is a one-line text file holding the file name of the
newest checkpoint in that folder (no symlink, so it survives copying the folder anywhere).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any, Optional

from ..errors import DataError
from ..fileio import atomic_write, atomic_write_text

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "write_last_checkpoint",
    "read_last_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
    "LAST_CHECKPOINT_FILE",
]

LAST_CHECKPOINT_FILE = "last_checkpoint"
# The keys without which a file is not a pdlkit checkpoint (weights-only imports carry no optimizer).
REQUIRED_KEYS = ("model", "pdlkit_version")


def save_checkpoint(path: str | os.PathLike, state: dict) -> Path:
    """Write ``state`` to ``path`` with ``torch.save`` through a temporary file + ``os.replace``.

    Never leaves a half-written file at ``path``: if serialisation or the disk fails, the previous
    file at ``path`` (if any) is untouched.  ``pdlkit_version`` is filled in when absent.
    """
    import torch

    from .. import __version__

    path = Path(path)
    if not isinstance(state, dict):
        raise TypeError(f"save_checkpoint expects a dict, got {type(state).__name__}")
    state = dict(state)
    state.setdefault("pdlkit_version", __version__)
    atomic_write(path, lambda handle: torch.save(state, handle), fsync=True)
    return path


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Read a pdlkit checkpoint.  Raises :class:`DataError` naming the file when it is missing,
    unreadable or not a pdlkit checkpoint (no ``model`` / ``pdlkit_version`` keys)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint file not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on foreign bytes (IndexError among them)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: not a readable pdlkit checkpoint ({first_line})") from None
    if not isinstance(state, dict):
        raise DataError(f"{path}: not a pdlkit checkpoint (holds a {type(state).__name__}, not a dict)")
    missing = [key for key in REQUIRED_KEYS if key not in state]
    if missing:
        raise DataError(f"{path}: not a pdlkit checkpoint (missing {', '.join(missing)})")
    return state


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


# ----------------------------------------------------------------- random number generator states
def capture_rng_state() -> dict:
    """The states of every generator training draws from, as tensors and plain lists.

    Plain containers (not numpy arrays / tuples of objects) keep the checkpoint loadable with
    ``weights_only=True``.
    """
    import numpy as np
    import torch

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
    import numpy as np
    import torch

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
