"""Atomic file writing and the PNG reading the training pipeline needs (cv2)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write_bytes

__all__ = [
    "atomic_write_bytes",
    "atomic_write_json",
    "write_png",
    "read_rgb",
    "read_panoptic_ids",
    "rgb_to_id",
    "id_to_rgb",
]


def atomic_write_json(path: str | os.PathLike, obj, *, indent: int | None = None) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=indent, sort_keys=True).encode())


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as PNG, atomically.

    ``array``: [H, W] uint8 / uint16 (grey), [H, W, 3] uint8 RGB or [H, W, 4] uint8 RGBA.
    """
    import cv2

    if array.ndim == 3 and array.shape[2] == 3:
        array = array[:, :, ::-1]  # cv2 stores BGR
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, [2, 1, 0, 3]]
    if array.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png: dtype must be uint8 or uint16, got {array.dtype}")
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(array))
    if not ok:  # pragma: no cover - cv2 only fails on unsupported shapes, excluded above
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, encoded.tobytes())


def _read(path: str | os.PathLike, flags: int) -> np.ndarray:
    import cv2

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    # imdecode from bytes: cv2.imread cannot open non-ASCII paths on every platform.
    data = np.fromfile(str(path), dtype=np.uint8)
    array = cv2.imdecode(data, flags) if data.size else None
    if array is None:
        raise DataError(f"{path}: not a readable image")
    return array


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """[H, W, 3] uint8 RGB of an image file (grey is expanded, alpha dropped)."""
    import cv2

    array = _read(path, cv2.IMREAD_COLOR)
    return np.ascontiguousarray(array[:, :, ::-1])


def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO panoptic encoding: [H, W, 3] uint8 RGB -> [H, W] int32 id = R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: [H, W] ids in [0, 2^24) -> [H, W, 3] uint8 RGB."""
    ids = ids.astype(np.int64)
    return np.stack([ids % 256, (ids // 256) % 256, (ids // 65536) % 256], axis=-1).astype(np.uint8)


def read_panoptic_ids(path: str | os.PathLike) -> np.ndarray:
    """[H, W] int32 segment ids of a COCO-format panoptic PNG."""
    return rgb_to_id(read_rgb(path))
