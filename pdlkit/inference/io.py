"""Reading input images and finding them on disk.

``read_image`` turns whatever OpenCV can decode (JPEG, PNG, BMP, TIFF; grayscale, gray+alpha, RGB,
RGBA; 8-bit, 16-bit, float) into an ``[H, W, 3]`` uint8 RGB array.  16-bit images are reduced to 8 bits
by ``>> 8`` (a fixed mapping, 65535 -> 255): scaling by each image's own maximum would change the
brightness of an image depending on its content, which a network trained on 8-bit data does not expect.
Alpha is dropped (the colour channels are kept as stored, not composited).

``find_images`` expands a prediction input (one file, a folder searched recursively, or a glob) into
``(path, relative_dir)`` pairs; ``relative_dir`` is the sub-folder that the writers mirror, so two
files with one name in different folders do not collide.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import List, Tuple

import numpy as np

from pdlkit.errors import DataError, PdlError

__all__ = ["IMAGE_EXTENSIONS", "read_image", "find_images", "image_id_of"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB.

    Raises :class:`DataError` naming the file when it is missing, empty, corrupt or of an
    unsupported layout.
    """
    import cv2

    path = Path(path)
    try:
        encoded = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode: non-ASCII paths work
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if encoded.size == 0:
        raise DataError(f"{path}: the file is empty")
    image = cv2.imdecode(encoded, cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    return _to_rgb8(image, path)


def _to_rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV's decoded array (BGR/BGRA/gray, any depth) -> [H, W, 3] uint8 RGB."""
    import cv2

    image = _to_uint8(image, path)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise DataError(f"{path}: unsupported image layout with shape {image.shape}")
    channels = image.shape[2]
    if channels in (1, 2):  # gray, gray + alpha
        image = np.repeat(image[:, :, :1], 3, axis=2)
    elif channels == 3:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    elif channels == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    else:
        raise DataError(f"{path}: unsupported number of channels ({channels})")
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray, path: Path) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    if image.dtype == np.int8:
        return (image.astype(np.int16) + 128).astype(np.uint8)
    if image.dtype == np.int16:
        return ((image.astype(np.int32) + 32768) >> 8).astype(np.uint8)
    if image.dtype in (np.float32, np.float64, np.float16):
        values = np.nan_to_num(image.astype(np.float32))
        # Float images are conventionally in [0, 1]; anything larger is taken as 0..255.
        scale = 255.0 if float(values.max(initial=0.0)) <= 1.0 else 1.0
        return np.clip(values * scale + 0.5, 0, 255).astype(np.uint8)
    if image.dtype in (np.int32, np.uint32):
        return np.clip(image, 0, None).astype(np.uint64).__rshift__(24).astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel type {image.dtype}")


def image_id_of(path: str | os.PathLike) -> str:
    """File name without extension and without a trailing ``_leftImg8bit`` (DESIGN.md §3)."""
    stem = Path(path).stem
    suffix = "_leftImg8bit"
    return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else stem


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _relative_dir(path: Path, base: Path) -> str:
    """Folder of ``path`` relative to ``base`` as posix text; "" when directly inside (or outside)."""
    try:
        rel = path.parent.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return ""
    return "" if rel == "." else rel


def find_images(source: str | os.PathLike) -> List[Tuple[Path, str]]:
    """Expand a prediction input into sorted ``(image path, relative sub-folder)`` pairs.

    ``source`` is an image file (its relative folder is ``""``), a folder (searched recursively for
    the extensions in :data:`IMAGE_EXTENSIONS`; sub-folders relative to it are mirrored) or a glob
    pattern (``**`` allowed; sub-folders relative to the pattern's fixed leading part are mirrored).
    Raises :class:`PdlError` when nothing exists or nothing matches.
    """
    text = str(source)
    path = Path(text)
    if path.is_file():
        return [(path, "")]
    if path.is_dir():
        files = sorted(
            p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise PdlError(
                f"{path}: no images found (looked recursively for {', '.join(IMAGE_EXTENSIONS)})"
            )
        return [(p, _relative_dir(p, path)) for p in files]
    if _has_magic(text):
        base_parts = []
        for part in Path(text).parts:
            if _has_magic(part):
                break
            base_parts.append(part)
        base = Path(*base_parts) if base_parts else Path(".")
        files = sorted(Path(p) for p in glob.glob(text, recursive=True) if Path(p).is_file())
        if not files:
            raise PdlError(f"{text}: no files match this pattern")
        return [(p, _relative_dir(p, base)) for p in files]
    raise PdlError(f"{text}: no such file or folder")
