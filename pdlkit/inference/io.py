"""Reading input images and finding them on disk.

``read_image`` turns whatever OpenCV can decode (JPEG, PNG, BMP, TIFF; grayscale, gray+alpha, RGB,
RGBA; 8-bit, 16-bit, float) into an ``[H, W, 3]`` uint8 RGB array, turned upright by the file's EXIF
orientation tag (as a phone photo is shown) — the same orientation the training reader applies.
16-bit images are reduced to 8 bits by ``>> 8`` (a fixed mapping, 65535 -> 255): scaling by each
image's own maximum would change the brightness of an image depending on its content, which a
network trained on 8-bit data does not expect.  Alpha is dropped (colours kept as stored).
Before decoding, the size in the file's header is checked against ``max_pixels``, so a small file
that claims 20000x20000 pixels is refused without allocating them.

``scan_images`` expands a prediction input (one file, a folder searched recursively, or a glob)
into ``(path, relative_dir)`` pairs plus the entries it had to skip (symlink loops, dangling links,
unreadable folders), each with a reason; ``relative_dir`` is the sub-folder the writers mirror.

Image ids: ``image_id_of`` is the file name without extension and without a trailing
``_leftImg8bit`` (Cityscapes' rule, which lets the ids match the ground truth's).  An id must be a
plain file name: ids that are empty, ``.``/``..`` or hold a path separator are refused per file.
"""
from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from pdlkit.errors import DataError, PdlError

__all__ = [
    "IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "ScanResult", "read_image", "image_size",
    "scan_images", "find_images", "image_id_of", "check_image_id",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: above any camera's photo, far below an allocation failure


def _png_size(path: Path) -> Optional[Tuple[int, int]]:
    """(height, width) from a PNG's IHDR chunk (Pillow refuses to tell sizes over ~179 MP)."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def image_size(path: str | os.PathLike) -> Optional[Tuple[int, int]]:
    """``(height, width)`` as stored in the file's header, without decoding the pixels; None when
    the format is not known here (OpenCV may still decode it).

    Raises :class:`DataError` for a header larger than Pillow agrees to describe (~179 MP)."""
    from PIL import Image

    path = Path(path)
    size = _png_size(path)
    if size is not None:
        return size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    except Image.DecompressionBombError:
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise DataError(f"{path}: more than {limit / 1e6:.0f} MP in the header; refused unread") from None
    except Exception:  # not identified by Pillow: let OpenCV judge the file
        return None
    return int(height), int(width)


def _check_pixels(path: Path, max_pixels: Optional[int]) -> None:
    if not max_pixels:
        return
    size = image_size(path)
    if size is not None and size[0] * size[1] > max_pixels:
        height, width = size
        raise DataError(
            f"{path}: {width}x{height} pixels ({height * width / 1e6:.0f} MP) is more than the limit "
            f"of {max_pixels / 1e6:g} MP (raise the max-pixels limit)")


def read_image(path: str | os.PathLike, *, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file as ``[H, W, 3]`` uint8 RGB, EXIF orientation applied.

    ``max_pixels`` (None or 0: no limit) bounds H * W, checked from the header before decoding.
    Raises :class:`DataError` naming the file when it is missing, empty, corrupt, too large or of
    an unsupported layout.
    """
    import cv2

    path = Path(path)
    try:
        encoded = np.fromfile(str(path), dtype=np.uint8)  # fromfile + imdecode: non-ASCII paths work
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    if encoded.size == 0:
        raise DataError(f"{path}: the file is empty")
    _check_pixels(path, max_pixels)
    # ANYDEPTH | ANYCOLOR keeps grey and 16-bit as stored and, unlike IMREAD_UNCHANGED, applies the
    # EXIF orientation; only alpha is lost, which is dropped anyway
    image = cv2.imdecode(encoded, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
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


# ---------------------------------------------------------------------------------------- image ids
def image_id_of(path: str | os.PathLike) -> str:
    """File name without extension and without a trailing ``_leftImg8bit``."""
    stem = Path(path).stem  # "..png" -> "." (refused by check_image_id)
    suffix = "_leftImg8bit"
    return stem[: -len(suffix)] if stem.endswith(suffix) and len(stem) > len(suffix) else stem


def check_image_id(image_id: str, path: str | os.PathLike) -> None:
    """Raise :class:`DataError` when ``image_id`` cannot name an output file of its own."""
    if image_id in ("", ".", "..") or "/" in image_id or "\\" in image_id or "\0" in image_id:
        raise DataError(f"{path}: the file name gives the image id {image_id!r}, which cannot name an "
                        "output file; rename the file")


# ---------------------------------------------------------------------------------------- discovery
@dataclass
class ScanResult:
    """Images found under an input: ``images`` sorted ``(path, relative sub-folder)`` pairs and
    ``skipped`` ``(entry, reason)`` for every entry that could not be looked into."""

    images: List[Tuple[Path, str]] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _relative_dir(path: Path, base: Path) -> str:
    """Folder of ``path`` relative to ``base`` as posix text; "" when directly inside (or outside)."""
    try:
        rel = path.parent.relative_to(base).as_posix()
    except ValueError:
        try:
            rel = path.parent.resolve().relative_to(base.resolve()).as_posix()
        except ValueError:
            return ""
    return "" if rel == "." else rel


def _walk(folder: Path, result: ScanResult, seen: set) -> None:
    """Depth-first, sorted; follows folder links once (a link back up is a loop, named)."""
    try:
        real = folder.resolve(strict=True)
        if real in seen:
            result.skipped.append((str(folder), "symlink loop (this folder is already being searched)"))
            return
        seen.add(real)
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as exc:
        result.skipped.append((str(folder), f"cannot list the folder ({exc.strerror or exc})"))
        return
    for entry in entries:
        path = folder / entry.name
        try:
            is_dir, is_file = entry.is_dir(), entry.is_file()
        except OSError as exc:
            result.skipped.append((str(path), f"cannot look at the entry ({exc.strerror or exc})"))
            continue
        if is_dir:
            _walk(path, result, seen)
        elif is_file:
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                result.images.append((path, ""))
        elif entry.is_symlink():
            result.skipped.append((str(path), "dangling symbolic link"))
        # sockets, fifos and devices are not images: passed over like any other non-image file
    seen.discard(real)


def scan_images(source: str | os.PathLike) -> ScanResult:
    """Expand a prediction input into a :class:`ScanResult`.

    ``source`` is an image file (its relative folder is ``""``), a folder (searched recursively for
    the extensions in :data:`IMAGE_EXTENSIONS`; sub-folders relative to it are mirrored) or a glob
    pattern (``**`` allowed; sub-folders relative to the pattern's fixed leading part are mirrored).
    Raises :class:`PdlError` when nothing exists or nothing matches.
    """
    text = str(source)
    path = Path(text)
    if path.is_file():
        return ScanResult([(path, "")])
    if path.is_dir():
        result = ScanResult()
        _walk(path, result, set())
        if not result.images:
            raise PdlError(
                f"{path}: no images found (looked recursively for {', '.join(IMAGE_EXTENSIONS)})")
        result.images = [(p, _relative_dir(p, path)) for p, _ in result.images]
        return result
    if _has_magic(text):
        return _scan_glob(text)
    if os.path.islink(text):
        raise PdlError(f"{text}: a dangling symbolic link")
    raise PdlError(f"{text}: no such file or folder")


def _scan_glob(text: str) -> ScanResult:
    base_parts = []
    for part in Path(text).parts:
        if _has_magic(part):
            break
        base_parts.append(part)
    base = Path(*base_parts) if base_parts else Path(".")
    result = ScanResult()
    for name in sorted(glob.glob(text, recursive=True)):
        candidate = Path(name)
        if candidate.is_file():
            result.images.append((candidate, _relative_dir(candidate, base)))
        elif candidate.is_symlink() and not candidate.exists():
            result.skipped.append((name, "dangling symbolic link"))
    if not result.images:
        raise PdlError(f"{text}: no files match this pattern")
    return result


def find_images(source: str | os.PathLike) -> List[Tuple[Path, str]]:
    """The ``(path, relative sub-folder)`` pairs of :func:`scan_images` (skipped entries dropped)."""
    return scan_images(source).images
