"""Image, PNG and JSON files: the one place where pdlkit decodes and encodes them.

Readers raise :class:`pdlkit.errors.DataError` in one sentence that names the file; writers go
through :mod:`pdlkit.fileio`, so a crash or a full disk never leaves a half-written file.

- ``read_image``: any picture OpenCV decodes (JPEG, PNG, BMP, TIFF; grey, grey + alpha, RGB, RGBA;
  8/16-bit, float) as ``[H, W, 3]`` uint8 RGB, turned upright by the EXIF orientation tag.  16-bit
  values map to 8 bits by ``>> 8`` (a fixed mapping: scaling by each image's own maximum would make
  the brightness depend on the content); alpha is dropped, the colours kept as stored.
- ``read_png`` / ``write_png``: PNG pixels as stored (``[H, W]`` grey or ``[H, W, 3|4]`` RGB(A),
  uint8 or uint16), no orientation, no conversion.  ``read_label_png``: one channel (palette files
  give their indices).  ``read_panoptic_png``: COCO-panoptic ids.
- ``rgb_to_id`` / ``id_to_rgb``: the COCO-panoptic colour encoding, id = R + 256 G + 256² B.
- ``read_json`` / ``write_json``: strict JSON (NaN and infinities written as null).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import numpy as np

from .errors import DataError
from .fileio import atomic_write_bytes, atomic_write_text

__all__ = [
    "read_bytes",
    "read_image",
    "image_size",
    "decode_png",
    "read_png",
    "read_label_png",
    "read_panoptic_png",
    "write_png",
    "rgb_to_id",
    "id_to_rgb",
    "read_json",
    "write_json",
    "json_safe",
]

_ID_LIMIT = 1 << 24  # three 8-bit channels
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------ bytes
def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file; :class:`DataError` naming it when it is missing or unreadable."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise DataError(f"{Path(path)}: cannot read the file ({exc.strerror or exc})") from None


# ------------------------------------------------------------------------------------------ images
def read_image(path: str | os.PathLike, *, max_pixels: Optional[int] = None) -> np.ndarray:
    """Read a picture as ``[H, W, 3]`` uint8 RGB, EXIF orientation applied (see the module text).

    ``max_pixels`` (None or 0: no limit) bounds H * W, checked from the file's header before
    decoding, so a small file that claims 20000x20000 pixels is refused without allocating them.
    Raises :class:`DataError` naming the file when it is missing, empty, corrupt, too large or of
    an unsupported layout.
    """
    import cv2

    path = Path(path)
    # bytes + imdecode rather than cv2.imread: imread cannot open non-ASCII paths everywhere and
    # says nothing about why a file failed
    encoded = np.frombuffer(read_bytes(path), dtype=np.uint8)
    if encoded.size == 0:
        raise DataError(f"{path}: the file is empty")
    _check_pixels(path, max_pixels)
    # ANYDEPTH | ANYCOLOR keeps grey and 16-bit as stored and, unlike IMREAD_UNCHANGED, applies the
    # EXIF orientation; only alpha is lost, which is dropped anyway
    image = cv2.imdecode(encoded, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if image is None or image.size == 0:
        raise DataError(f"{path}: not a readable image")
    return _to_rgb8(image, path)


def _png_size(path: Path) -> Optional[Tuple[int, int]]:
    """(height, width) from a PNG's IHDR chunk (Pillow refuses to tell sizes over ~179 MP)."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")


def image_size(path: str | os.PathLike) -> Optional[Tuple[int, int]]:
    """``(height, width)`` as stored in the file's header, without decoding the pixels; None when
    the format is not known here (OpenCV may still decode it).

    Raises :class:`DataError` for a header larger than Pillow agrees to describe (~179 MP)."""
    import warnings

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
        raise DataError(f"{path}: {width}x{height} pixels ({height * width / 1e6:.0f} MP) is more than the limit "
                        f"of {max_pixels / 1e6:g} MP (raise max_pixels)", parameter="max_pixels")


def _to_rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV's decoded array (BGR/BGRA/grey, any depth) -> [H, W, 3] uint8 RGB."""
    import cv2

    image = _to_uint8(image, path)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise DataError(f"{path}: unsupported image layout with shape {image.shape}")
    channels = image.shape[2]
    if channels in (1, 2):  # grey, grey + alpha
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
        return (np.clip(image, 0, None).astype(np.uint64) >> 24).astype(np.uint8)
    raise DataError(f"{path}: unsupported pixel type {image.dtype}")


# --------------------------------------------------------------------------------------------- PNG
def _spng_decoder() -> Optional[Callable]:
    """imagecodecs' libspng decoder when installed (measured 1.2-1.7x faster than OpenCV's libpng
    on label PNGs, and it releases the GIL), else None."""
    try:
        from imagecodecs import spng_decode
    except ImportError:
        return None
    return spng_decode


_SPNG_DECODE = _spng_decoder()


def decode_png(encoded: bytes, path: str | os.PathLike) -> np.ndarray:
    """The pixels of PNG bytes as stored: ``[H, W]`` grey or ``[H, W, 3|4]`` RGB(A), uint8/uint16
    (palette files come out as RGB).  ``path`` names the file in the :class:`DataError`."""
    import cv2

    data = np.frombuffer(encoded, dtype=np.uint8)
    if _SPNG_DECODE is not None and data.size:
        try:
            return _SPNG_DECODE(data)
        except Exception:  # 16-bit or unusual PNGs, and corrupt files: OpenCV decides
            pass
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise DataError(f"{Path(path)}: not a readable PNG (empty, corrupt or unsupported)")
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def read_png(path: str | os.PathLike) -> np.ndarray:
    """A PNG file's pixels as stored (see :func:`decode_png`); :class:`DataError` naming it."""
    return decode_png(read_bytes(path), path)


def read_label_png(path: str | os.PathLike, encoded: Optional[bytes] = None) -> np.ndarray:
    """``[H, W]`` labels of a one-channel PNG: 8- or 16-bit grey, or a palette file's indices (as
    PIL reads them).  ``encoded``: the file's bytes when the caller has read them already."""
    path = Path(path)
    image = decode_png(read_bytes(path) if encoded is None else encoded, path)
    if image.ndim == 2:
        return image
    # the decoders expand palette images to colour; their indices are the labels
    from PIL import Image

    try:
        with Image.open(path) as pil_image:
            if pil_image.mode not in ("P", "L", "I", "I;16"):
                raise DataError(f"{path}: a label PNG must have one channel, got mode {pil_image.mode}")
            return np.asarray(pil_image)
    except OSError as exc:
        raise DataError(f"{path}: not a readable PNG ({exc})") from None


def read_panoptic_png(path: str | os.PathLike, encoded: Optional[bytes] = None) -> np.ndarray:
    """``[H, W]`` int32 segment ids of a COCO-panoptic PNG (8-bit RGB or RGBA; alpha ignored, as
    cityscapesscripts' ``rgb2id`` does).  ``encoded`` as in :func:`read_label_png`."""
    path = Path(path)
    image = decode_png(read_bytes(path) if encoded is None else encoded, path)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise DataError(f"{path}: a panoptic PNG must be 8-bit RGB, got shape {image.shape} of {image.dtype}")
    return rgb_to_id(image)


def write_png(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write ``image`` as PNG, atomically: ``[H, W]`` uint8/uint16 grey, ``[H, W, 3]`` RGB or
    ``[H, W, 4]`` RGBA (uint8/uint16).  Raises :class:`DataError` (a ValueError) for any other array."""
    import cv2

    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise DataError(f"{path}: a PNG holds uint8 or uint16 pixels, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))) or image.size == 0:
        raise DataError(f"{path}: a PNG is [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)  # OpenCV stores BGR
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(image))
    if not ok:  # pragma: no cover - OpenCV fails only on layouts excluded above
        raise DataError(f"{path}: could not encode the PNG")
    atomic_write_bytes(path, encoded.tobytes())


# ------------------------------------------------------------------------------ panoptic colours
def rgb_to_id(rgb: np.ndarray) -> np.ndarray:
    """COCO-panoptic encoding: ``[..., 3|4]`` RGB(A) -> ``[...]`` int32 id = R + 256 G + 256² B
    (alpha ignored)."""
    rgb = np.asarray(rgb)
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] in (3, 4):
        import cv2

        # As RGBA bytes a little-endian uint32 reads R + 256 G + 256² B + 256³ A: one SIMD colour
        # conversion and a mask give the ids without per-channel passes.
        rgba = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2RGBA) if rgb.shape[2] == 3 else rgb
        ids = np.ascontiguousarray(rgba).view("<u4").reshape(rgba.shape[:2]) & np.uint32(0xFFFFFF)
        return ids.view(np.int32)
    channels = rgb[..., :3].astype(np.int32)
    return channels[..., 0] + 256 * channels[..., 1] + 65536 * channels[..., 2]


def id_to_rgb(ids: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_id`: ``[...]`` ids in ``[0, 2^24)`` -> ``[..., 3]`` uint8 RGB.

    Raises :class:`DataError` (a ValueError) for an id outside that range: it has no colour, and
    wrapping it round would write another segment's id."""
    ids = np.asarray(ids)
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= _ID_LIMIT):
        raise DataError(f"segment ids must lie in [0, 2^24) to be written as RGB, got {int(ids.min())}..{int(ids.max())}")
    ids = ids.astype(np.uint32, copy=False)
    return np.stack([ids & 255, (ids >> 8) & 255, ids >> 16], axis=-1).astype(np.uint8)


# -------------------------------------------------------------------------------------------- JSON
def read_json(path: str | os.PathLike) -> Any:
    """The parsed file; :class:`DataError` naming it when it is missing, unreadable or not JSON."""
    path = Path(path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc.msg} at line {exc.lineno})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from None


def json_safe(value: Any) -> Any:
    """NaN/inf -> None, numpy scalars and arrays -> Python numbers and lists, keys -> str, so
    that the result is strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_json(path: str | os.PathLike, data: Any, *, indent: Optional[int] = 2, sort_keys: bool = False,
               default: Optional[Callable[[Any], Any]] = None) -> None:
    """Write ``data`` as strict JSON, atomically.  ``indent=None`` writes one compact line (no
    spaces); ``default`` converts objects json cannot (e.g. ``float`` for tensors)."""
    separators = (",", ":") if indent is None else None
    convert = None if default is None else (lambda value: json_safe(default(value)))
    text = json.dumps(json_safe(data), indent=indent, sort_keys=sort_keys, default=convert,
                      separators=separators, allow_nan=False)
    atomic_write_text(path, text + "\n")
