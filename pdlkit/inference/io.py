"""Reading input images and finding them on disk.

``read_image`` is :func:`pdlkit.io.read_image` (any picture as ``[H, W, 3]`` uint8 RGB, EXIF
orientation applied, 16-bit by ``>> 8``, alpha dropped) with a default limit of
``DEFAULT_MAX_PIXELS``, checked from the file's header before decoding.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from pdlkit import io
from pdlkit.errors import DataError, PdlError
from pdlkit.io import image_size

__all__ = [
    "IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "ScanResult", "read_image", "image_size",
    "scan_images", "find_images", "image_id_of", "check_image_id",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 50_000_000  # 50 MP: above any camera's photo, far below an allocation failure


def read_image(path: str | os.PathLike, *, max_pixels: Optional[int] = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """:func:`pdlkit.io.read_image` with prediction's pixel limit by default: ``[H, W, 3]`` uint8
    RGB, EXIF orientation applied; ``max_pixels`` (None or 0: no limit) checked from the header."""
    return io.read_image(path, max_pixels=max_pixels)


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
