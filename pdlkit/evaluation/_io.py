"""Evaluation's hot path over files: fast PNG decoding, id compaction, pair counts, and finding the
ground truth and predictions.  Any PNG the fast path does not take goes to :mod:`pdlkit.io`.

Ground truth is a COCO-panoptic dataset prepared by ``pdl prepare coco|vistas|panoptic``, or the
Cityscapes layout that cityscapesscripts' ``createPanopticImgs`` writes
(``gtFine/cityscapes_panoptic_{split}.json`` + ``gtFine/cityscapes_panoptic_{split}/``) beside
``gtFine/{split}/{city}/*_gtFine_{labelIds,instanceIds}.png``; predictions follow docs/formats.md
(``DIR/panoptic.json``, ``DIR/panoptic/<file_name>``, ``DIR/semantic/<file_name>``).
"""
from __future__ import annotations

import contextlib
import os
import struct
import threading
import zlib
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import numpy as np

from pdlkit import io
from pdlkit.errors import DataError

__all__ = [
    "read_panoptic_png",
    "read_label_png",
    "index_map",
    "pair_histogram",
    "known_pair_histogram",
    "count_png_pairs",
    "value_counts",
    "load_ground_truth",
    "load_predictions",
]


def _fast_decoder():
    """(inflate, row unfilter, crc32) when imagecodecs has libdeflate or zlib-ng and the
    ``_native`` module is built, else None.  Inflate is where libpng/libspng spend most of their time on
    these flat label images: libdeflate and zlib-ng do it 10-30x faster than the zlib those link
    (libdeflate another ~20 % faster than zlib-ng on 1024x2048 panoptic PNGs)."""
    try:
        import imagecodecs

        from ._native import unfilter
    except ImportError:
        return None
    for name in ("deflate", "zlibng"):
        codec = getattr(imagecodecs, name.upper(), None)
        if codec is not None and codec.available:
            # Their CRC-32 is also ~10x the speed of the zlib module's (folding with PCLMUL).
            return getattr(imagecodecs, f"{name}_decode"), unfilter, getattr(imagecodecs, f"{name}_crc32")
    return None


_FAST_DECODE = _fast_decoder()
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (palette: not here)


def _png_layout(encoded: bytes) -> Optional[tuple]:
    """``(height, width, channels, image data chunks)`` of an 8-bit, non-interlaced, non-palette
    PNG whose chunks are intact (IDAT checksums verified), else None: the general decoders then
    read the file or report what is wrong with it."""
    if encoded[:8] != _PNG_SIGNATURE:
        return None
    crc32 = _FAST_DECODE[2] if _FAST_DECODE is not None else zlib.crc32
    view, unpack = memoryview(encoded), struct.unpack_from
    header, pieces, pos, end = None, [], 8, len(encoded)
    while pos + 12 <= end:
        length, kind = unpack(">I4s", encoded, pos)
        if pos + 12 + length > end:
            return None
        if kind == b"IDAT":
            piece = view[pos + 8 : pos + 8 + length]
            if crc32(piece, _IDAT_CRC) != unpack(">I", encoded, pos + 8 + length)[0]:
                return None
            pieces.append(piece)
        elif kind == b"IHDR" and length == 13:
            header = unpack(">IIBBBBB", encoded, pos + 8)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None or not pieces:
        return None
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in _CHANNELS or interlace != 0 or width == 0 or height == 0:
        return None
    return height, width, _CHANNELS[colour], pieces


_IDAT_CRC = zlib.crc32(b"IDAT")  # a chunk's CRC covers its type, then its data
_IDLE_SCRATCH: list = []
_SCRATCH_LOCK = threading.Lock()


@contextlib.contextmanager
def _scratch(nbytes: int):
    """A ``[nbytes]`` uint8 scratch array lent for the ``with`` block from a pool that all threads
    share: a fresh multi-megabyte array per image costs its page faults again (measured ~3 ms of
    ~17 per 1024x2048 image with three PNGs), and the worker threads of one evaluation are not
    those of the next."""
    with _SCRATCH_LOCK:
        fits = [k for k, b in enumerate(_IDLE_SCRATCH) if b.size >= nbytes]
        buffer = _IDLE_SCRATCH.pop(min(fits, key=lambda k: _IDLE_SCRATCH[k].size)) if fits else None
    if buffer is None:
        buffer = np.empty(nbytes, np.uint8)
    try:
        yield buffer[:nbytes]
    finally:
        with _SCRATCH_LOCK:
            _IDLE_SCRATCH.append(buffer)
            # Keep the largest (their page faults cost the most) within a count and a byte budget.
            kept, total = [], 0
            for idle in sorted(_IDLE_SCRATCH, key=lambda b: -b.size):
                if len(kept) < _MAX_IDLE_SCRATCH and total + idle.size <= _MAX_IDLE_BYTES:
                    kept.append(idle)
                    total += idle.size
            _IDLE_SCRATCH[:] = kept


_MAX_IDLE_SCRATCH = 12  # 3 files an image, a few threads
_MAX_IDLE_BYTES = 256 << 20  # what stays allocated between evaluations


_THREAD_BUFFERS = threading.local()


def _thread_buffer(slot: str, nbytes: int) -> np.ndarray:
    """``[nbytes]`` uint8 array of the calling thread, reused from call to call (see
    :func:`_scratch`), for results a caller holds until its next call."""
    buffers = _THREAD_BUFFERS.__dict__
    buffer = buffers.get(slot)
    if buffer is None or buffer.size < nbytes:
        buffer = buffers[slot] = np.empty(nbytes, np.uint8)
    return buffer[:nbytes]


def _inflate(encoded: bytes, scratch: contextlib.ExitStack) -> Optional[tuple]:
    """``(height, width, channels, raw)`` of an 8-bit PNG on the fast path, ``raw`` its inflated,
    still filtered rows (``height * (1 + width * channels)`` bytes of a :func:`_scratch` array
    lent until ``scratch`` closes), or None when the fast path does not apply (the general
    decoders then read the file or name its defect)."""
    layout = _png_layout(encoded) if _FAST_DECODE is not None else None
    if layout is None:
        return None
    height, width, channels, pieces = layout
    size = height * (1 + width * channels)
    raw = scratch.enter_context(_scratch(size + 1))  # one spare byte: a longer stream shows up as size + 1
    try:  # both check the stream's Adler-32
        decoded = _FAST_DECODE[0](pieces[0] if len(pieces) == 1 else b"".join(pieces), out=raw)
    except Exception:  # corrupt or truncated stream: the general decoders report it
        return None
    if len(decoded) != size:
        return None
    return height, width, channels, raw[:size]


def _fast_decode(encoded: bytes, rgb_ids: bool, reuse: Optional[str] = None) -> Optional[np.ndarray]:
    """``[H, W]`` int32 ids (``rgb_ids``, RGB(A) files) or ``[H, W(, C)]`` uint8 pixels, equal to
    what libpng decodes, or None when this path does not apply (the caller then uses the general
    decoders, which also name any defect).  ``reuse``: write into this thread's buffer of that name
    (valid until the thread's next decode into it) instead of a new array."""
    with contextlib.ExitStack() as scratch:
        inflated = _inflate(encoded, scratch)
        if inflated is None or (rgb_ids and inflated[2] < 3):
            return None
        height, width, channels, raw = inflated
        shape = (height, width) if rgb_ids else (height, width, channels)
        dtype = np.dtype(np.int32 if rgb_ids else np.uint8)
        if reuse is None:
            out = np.empty(shape, dtype)
        else:
            out = _thread_buffer(reuse, int(np.prod(shape)) * dtype.itemsize).view(dtype).reshape(shape)
        try:
            _FAST_DECODE[1](raw, height, width, channels, rgb_ids, out)
        except ValueError:  # an unknown filter type
            return None
    return out if rgb_ids or channels > 1 else out.reshape(height, width)


def read_panoptic_png(path: str | os.PathLike, *, reuse: Optional[str] = None) -> np.ndarray:
    """Read a COCO-panoptic PNG as ``[H, W]`` int32 segment ids, id = R + 256·G + 256²·B.

    Alpha, if present, is ignored (as cityscapesscripts' ``rgb2id`` does).  8-bit RGB(A) files
    take the libdeflate path (ids written while unfiltering); others :func:`pdlkit.io.read_panoptic_png`.
    ``reuse``: a name; the result may then live in a buffer of the calling thread that its next
    read with the same name overwrites (for loops that are done with one image before the next).
    """
    path = Path(path)
    encoded = io.read_bytes(path)
    ids = _fast_decode(encoded, rgb_ids=True, reuse=reuse)
    if ids is not None:
        return ids
    return io.read_panoptic_png(path, encoded)


def read_label_png(path: str | os.PathLike, *, reuse: Optional[str] = None) -> np.ndarray:
    """Read a single-channel label PNG (8- or 16-bit gray, or palette indices) as ``[H, W]``;
    ``reuse`` as in :func:`read_panoptic_png`.  Files off the fast path: :func:`pdlkit.io.read_label_png`."""
    path = Path(path)
    encoded = io.read_bytes(path)
    image = _fast_decode(encoded, rgb_ids=False, reuse=reuse)
    if image is not None and image.ndim == 2:
        return image
    return io.read_label_png(path, encoded)


def index_map(id_map: np.ndarray, known_ids: np.ndarray) -> np.ndarray:
    """Replace every id by its position in ``known_ids``; ids not listed become ``len(known_ids)``.

    ``id_map`` ``[H, W]`` non-negative ints, ``known_ids`` ``[S]`` unique non-negative ints (any
    order).  Returns ``[H, W]`` uint8 for uint8 maps with ``S < 255``, uint16 when ``S < 65535`` (the usual case: less memory traffic for
    the histogram that follows), else int64.  A lookup table (one gather per pixel) serves ids
    below 2²²; larger ids fall back to a binary search.
    """
    known_ids = np.asarray(known_ids, dtype=np.int64)
    unknown = len(known_ids)
    if id_map.dtype == np.uint8 and unknown < 255:
        import cv2

        # 8-bit label maps: OpenCV's 256-entry table lookup (vectorised, GIL released).
        table = np.full(256, unknown, np.uint8)
        in_range = known_ids < 256
        table[known_ids[in_range]] = np.nonzero(in_range)[0]
        return cv2.LUT(id_map, table)
    dtype = np.uint16 if unknown < 65535 else np.int64
    max_id = int(id_map.max(initial=0))
    if max_id < (1 << 22):
        lookup = np.full(max_id + 1, unknown, dtype=dtype)
        in_range = known_ids <= max_id
        lookup[known_ids[in_range]] = np.nonzero(in_range)[0]
        return np.take(lookup, id_map)
    order = np.argsort(known_ids)
    sorted_ids = known_ids[order]
    flat = id_map.astype(np.int64).ravel()
    position = np.searchsorted(sorted_ids, flat)
    position_clipped = np.minimum(position, max(unknown - 1, 0))
    if unknown:
        found = (position < unknown) & (sorted_ids[position_clipped] == flat)
        result = np.where(found, order[position_clipped], unknown)
    else:
        result = np.zeros(flat.shape, np.int64)
    return result.astype(dtype).reshape(id_map.shape)


def pair_histogram(rows: np.ndarray, cols: np.ndarray, num_rows: int, num_cols: int) -> np.ndarray:
    """``[num_rows, num_cols]`` int64 counts of the pixel pairs ``(rows[y, x], cols[y, x])``.

    ``rows`` / ``cols``: same-shape index maps with values below ``num_rows`` / ``num_cols``.  With
    at most 65536 cells the pair key fits in uint16 and OpenCV's histogram counts it in one pass
    (exact: float32 counts are integers below 2²⁴, and it releases the GIL, so threads overlap);
    otherwise ``np.bincount`` over an int64 key.
    """
    cells = num_rows * num_cols
    if cells <= (1 << 16) and rows.size < (1 << 24) and rows.size > 0:
        import cv2

        key = rows.astype(np.uint16)  # a fresh array: modified in place below
        key *= np.uint16(num_cols)
        key += cols.astype(np.uint16, copy=False)
        key = key.reshape(key.shape[0], -1) if key.ndim >= 2 else key.reshape(-1, 1)
        counts = cv2.calcHist([np.ascontiguousarray(key)], [0], None, [cells], [0, cells])
        return counts.ravel().astype(np.int64).reshape(num_rows, num_cols)
    key = rows.astype(np.int64) * num_cols + cols
    return np.bincount(key.ravel(), minlength=cells).reshape(num_rows, num_cols)


def _native_pair_counts():
    try:
        from ._native import pair_counts
    except ImportError:  # not built: the numpy path serves
        return None
    return pair_counts


_PAIR_COUNTS = _native_pair_counts()
_TABLE_LIMIT = 1 << 22  # lookup tables up to 16 MiB; larger ids take the numpy path


def _lookup_table(known_ids: np.ndarray) -> np.ndarray:
    """int32 table: entry ``v`` = position of id ``v`` in ``known_ids`` (the last one when listed
    twice, as :func:`index_map`), ``len(known_ids)`` for ids not listed."""
    table = np.full(int(known_ids.max(initial=-1)) + 1, len(known_ids), np.int32)
    table[known_ids] = np.arange(len(known_ids), dtype=np.int32)
    return table


def known_pair_histogram(rows: np.ndarray, row_ids, cols: np.ndarray, col_ids) -> np.ndarray:
    """``[R + 1, C + 1]`` int64 counts of pixel pairs by the position of ``rows[y, x]`` in
    ``row_ids`` (``R`` ids; ``R`` for an id not listed) and of ``cols[y, x]`` in ``col_ids``.

    Equal to ``pair_histogram(index_map(rows, row_ids), index_map(cols, col_ids), R + 1, C + 1)``.
    ``rows``: ``[H, W]`` int32 ids; ``cols``: same shape, int32 ids or uint8 labels.  With the
    native module this is one pass over the pixels and no index map is built.
    """
    row_ids = np.asarray(row_ids, np.int64)
    col_ids = np.asarray(col_ids, np.int64)
    shape = (len(row_ids) + 1, len(col_ids) + 1)
    native = (_PAIR_COUNTS is not None and rows.dtype == np.int32 and cols.dtype in (np.int32, np.uint8)
              and rows.shape == cols.shape and (row_ids >= 0).all() and (col_ids >= 0).all()
              and row_ids.max(initial=0) < _TABLE_LIMIT and col_ids.max(initial=0) < _TABLE_LIMIT)
    if not native:
        return pair_histogram(index_map(rows, row_ids), index_map(cols, col_ids), *shape)
    counts = np.zeros(shape, np.int64)
    _PAIR_COUNTS(np.ascontiguousarray(rows), _lookup_table(row_ids), len(row_ids),
                 np.ascontiguousarray(cols), _lookup_table(col_ids), len(col_ids), cols.dtype == np.uint8,
                 shape[0], shape[1], counts)
    return counts


def _native_count_pngs():
    try:
        from ._native import count_pngs
    except ImportError:  # not built (or built before it existed): the maps are decoded instead
        return None
    return count_pngs


_COUNT_PNGS = _native_count_pngs()


def _table_of(known_ids) -> Optional[np.ndarray]:
    """:func:`_lookup_table` of non-negative ids below the table limit, else None."""
    known_ids = np.asarray(known_ids, np.int64)
    if (known_ids < 0).any() or known_ids.max(initial=0) >= _TABLE_LIMIT:
        return None
    return _lookup_table(known_ids)


def count_png_pairs(gt_png, gt_ids, pred_png, pred_ids, labels_png=None, label_ids=(), *,
                    keep_maps: bool = False) -> Optional[Dict[str, Any]]:
    """The pair counts of two panoptic PNGs (and a label PNG), each decoded row by row and counted
    while the row is in the cache: no ``[H, W]`` map is written unless ``keep_maps``.

    ``gt_png`` / ``pred_png``: 8-bit RGB(A) panoptic PNGs (ids R + 256 G + 256² B);
    ``labels_png``: an 8-bit gray label PNG or None; ``gt_ids`` ``[R]``, ``pred_ids`` ``[C]``,
    ``label_ids`` ``[L]``: the listed values.  Returns ``{"joint": [R + 1, C + 1]`` int64 (as
    ``known_pair_histogram(gt, gt_ids, pred, pred_ids)``), ``"labels": [R + 1, L + 1]`` int64 (as
    ``known_pair_histogram(gt, gt_ids, labels, label_ids)``, None without ``labels_png``),
    ``"gt_map"``, ``"pred_map"``: ``[H, W]`` int32 ids in this thread's buffers ``"gt"`` /
    ``"pred"`` (as ``read_panoptic_png(..., reuse=...)``) when ``keep_maps``, else None``}``.
    None when a file is off this path (another PNG kind, a damaged file, sizes that differ, ids
    beyond the lookup tables, no native module): the caller then decodes the maps, and the
    general decoders name any defect.  A missing file raises :class:`DataError`.
    """
    tables = [_table_of(gt_ids), _table_of(pred_ids), _table_of(label_ids)]
    if _COUNT_PNGS is None or any(t is None for t in tables):
        return None
    with contextlib.ExitStack() as scratch:
        gt, pred = (_inflate(io.read_bytes(Path(path)), scratch) for path in (gt_png, pred_png))
        labels = None if labels_png is None else _inflate(io.read_bytes(Path(labels_png)), scratch)
        if gt is None or pred is None or gt[2] < 3 or pred[2] < 3 or gt[:2] != pred[:2] or (
                labels_png is not None and (labels is None or labels[:3] != (*gt[:2], 1))):
            return None
        height, width = gt[:2]
        joint = np.zeros((len(gt_ids) + 1, len(pred_ids) + 1), np.int64)
        label_counts = None if labels is None else np.zeros((len(gt_ids) + 1, len(label_ids) + 1), np.int64)
        maps = [_thread_buffer(slot, 4 * height * width).view(np.int32).reshape(height, width) if keep_maps
                else None for slot in ("gt", "pred")]
        try:
            _COUNT_PNGS(gt[3], gt[2], pred[3], pred[2], None if labels is None else labels[3], height, width,
                        tables[0], len(gt_ids), tables[1], len(pred_ids), tables[2], len(label_ids),
                        joint, label_counts, *maps)
        except ValueError:  # an unknown filter type
            return None
    return {"joint": joint, "labels": label_counts, "gt_map": maps[0], "pred_map": maps[1]}


def value_counts(values: np.ndarray) -> tuple:
    """Sorted distinct values of a non-negative int map and their pixel counts (int64 arrays)."""
    if values.dtype == np.uint16 and 0 < values.size < (1 << 24):
        import cv2

        image = values.reshape(values.shape[0], -1) if values.ndim >= 2 else values.reshape(-1, 1)
        counts = cv2.calcHist([np.ascontiguousarray(image)], [0], None, [1 << 16], [0, 1 << 16])
        counts = counts.ravel().astype(np.int64)
        present = np.nonzero(counts)[0]
        return present.astype(np.int64), counts[present]
    flat = values.ravel()
    if int(flat.max(initial=0)) < (1 << 22):
        counts = np.bincount(flat)
        present = np.nonzero(counts)[0]
        return present.astype(np.int64), counts[present].astype(np.int64)
    present, counts = np.unique(flat, return_counts=True)
    return present.astype(np.int64), counts.astype(np.int64)


# ---------------------------------------------------------------------------------- dataset files
def load_ground_truth(data_root: str | os.PathLike, split: str) -> Dict[str, Any]:
    """Find the panoptic ground truth of ``split``: a COCO-panoptic dataset prepared by ``pdl
    prepare coco|vistas|panoptic``, or a Cityscapes-layout root.

    Returns ``{"format": "coco" | "cityscapes", "json": the panoptic json, "json_path": Path,
    "panoptic_dir": Path, "label_ids": {image_id: Path}, "instance_ids": {image_id: Path}}`` (the two
    maps only for Cityscapes).  Raises :class:`DataError` naming what is missing and the ``pdl
    prepare`` command that fits the folder.
    """
    from pdlkit.data.coco_format import is_coco_format, layout_hint, read_split_json, split_files

    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: the dataset root does not exist")
    if is_coco_format(root):
        files = split_files(root, split)
        return {"format": "coco", "json": read_split_json(files["json"]), "json_path": files["json"],
                "panoptic_dir": files["masks"], "label_ids": {}, "instance_ids": {}}
    json_path = root / "gtFine" / f"cityscapes_panoptic_{split}.json"
    panoptic_dir = root / "gtFine" / f"cityscapes_panoptic_{split}"
    if not json_path.is_file() or not panoptic_dir.is_dir():
        raise DataError(
            f"{root}: not a prepared dataset root for split {split!r} "
            f"({json_path.relative_to(root)} or {panoptic_dir.relative_to(root)}/ is missing); "
            f"{layout_hint(root)}"
        )
    gt_json = io.read_json(json_path)
    if not isinstance(gt_json, dict) or not all(k in gt_json for k in ("annotations", "categories")):
        raise DataError(f"{json_path}: not a COCO panoptic json (needs 'annotations' and 'categories')")
    label_ids, instance_ids = _cityscapes_label_files(root / "gtFine" / split)
    return {"format": "cityscapes", "json": gt_json, "json_path": json_path, "panoptic_dir": panoptic_dir,
            "label_ids": label_ids, "instance_ids": instance_ids}


class _SplitFiles(Mapping):
    """``{image_id: path}`` of ``split_dir/<city>/<image_id><suffix>``, listed on first use: the
    folder walk is a serial cost of every evaluation, and scoring without AP never needs it."""

    def __init__(self, split_dir: Path, suffix: str) -> None:
        self._split_dir, self._suffix, self._files = split_dir, suffix, None

    def _listed(self) -> Dict[str, Path]:
        if self._files is None:
            found = self._split_dir.glob(f"*/*{self._suffix}") if self._split_dir.is_dir() else ()
            self._files = {path.name[: -len(self._suffix)]: path for path in found}
        return self._files

    def __getitem__(self, image_id: str) -> Path:
        return self._listed()[image_id]

    def __iter__(self):
        return iter(self._listed())

    def __len__(self) -> int:
        return len(self._listed())


def _cityscapes_label_files(split_dir: Path) -> tuple:
    """({image_id: *_gtFine_labelIds.png}, {image_id: *_gtFine_instanceIds.png}) of one split."""
    return _SplitFiles(split_dir, "_gtFine_labelIds.png"), _SplitFiles(split_dir, "_gtFine_instanceIds.png")


def _check_prediction(json_path: Path, annotation: Any) -> None:
    """One annotation of a predictions json: the keys and types every reader relies on."""
    if not isinstance(annotation, dict) or not {"image_id", "file_name", "segments_info"} <= set(annotation):
        raise DataError(f"{json_path}: every annotation needs image_id, file_name and segments_info")
    if not isinstance(annotation["segments_info"], list):
        raise DataError(f"{json_path}: segments_info of image {annotation['image_id']!r} must be a list "
                        f"of segments, got {type(annotation['segments_info']).__name__}")
    if not isinstance(annotation["file_name"], str) or not isinstance(annotation["image_id"], (str, int)):
        raise DataError(f"{json_path}: image {annotation['image_id']!r} needs a string file_name and a "
                        f"string or integer image_id")


def load_predictions(predictions_dir: str | os.PathLike) -> Dict[str, Any]:
    """Index a predictions folder (``panoptic.json`` + ``panoptic/``, see docs/formats.md).

    Returns ``{"dir": Path, "json_path": Path, "annotations": {image_id: annotation} (ids as the
    json has them, int or str), "png": {image_id: Path of its panoptic PNG}, "categories": the json's
    categories or None}``; raises :class:`DataError` when the folder, ``panoptic.json`` or
    ``panoptic/`` is missing or malformed, an image id appears twice, or a ``file_name`` leads
    outside ``panoptic/``.
    """
    from pdlkit.fileio import resolve_inside

    directory = Path(predictions_dir)
    if not directory.is_dir():
        raise DataError(f"{directory}: the predictions folder does not exist")
    json_path = directory / "panoptic.json"
    if not json_path.is_file() or not (directory / "panoptic").is_dir():
        raise DataError(
            f"{directory}: not a predictions folder (needs panoptic.json and panoptic/, "
            f"as `pdl predict` writes them)"
        )
    data = io.read_json(json_path)
    annotations = data.get("annotations") if isinstance(data, dict) else None
    if not isinstance(annotations, list):
        raise DataError(f"{json_path}: expected a COCO panoptic result with an 'annotations' list")
    by_id: Dict[Any, Any] = {}
    pngs: Dict[Any, Path] = {}
    for annotation in annotations:
        _check_prediction(json_path, annotation)
        image_id = annotation["image_id"]
        if image_id in by_id:
            raise DataError(f"{json_path}: image_id {image_id!r} appears twice; each image needs exactly "
                            f"one annotation")
        by_id[image_id] = annotation
        pngs[image_id] = resolve_inside(directory / "panoptic", annotation["file_name"],
                                        what=f"{json_path}: file_name")
    return {"dir": directory, "json_path": json_path, "annotations": by_id, "png": pngs,
            "categories": data.get("categories")}
