"""pdl eval's own PNG path (libdeflate inflate + native unfiltering) and its one-pass joint
histograms, against OpenCV's decoder and the numpy formulations they replace."""
import struct
import zlib

import cv2
import numpy as np
import pytest

from pdlkit.errors import DataError
from pdlkit.evaluation import _io
from pdlkit.evaluation.semantic import confusion_from_segments, confusion_matrix, fold_joint

needs_fast = pytest.mark.skipif(_io._FAST_DECODE is None, reason="imagecodecs (libdeflate or zlib-ng) or _native missing")


def _paeth(a: int, b: int, c: int) -> int:
    """The predictor as the PNG specification writes it."""
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _filter_row(kind: int, row: bytes, prev: bytes, bpp: int) -> bytes:
    out = bytearray()
    for i, x in enumerate(row):
        left = row[i - bpp] if i >= bpp else 0
        up = prev[i]
        up_left = prev[i - bpp] if i >= bpp else 0
        predictor = [0, left, up, (left + up) // 2, _paeth(left, up, up_left)][kind]
        out.append((x - predictor) % 256)
    return bytes(out)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(image: np.ndarray, filters, idat_pieces: int = 1) -> bytes:
    """An 8-bit PNG of ``image`` ([H, W] gray, [H, W, 3] RGB or [H, W, 4] RGBA) with the given
    filter type on each row, its compressed data split over ``idat_pieces`` IDAT chunks."""
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = image.reshape(height, width * channels)
    prev, raw = bytes(width * channels), bytearray()
    for y in range(height):
        row = rows[y].tobytes()
        raw += bytes([filters[y]]) + _filter_row(filters[y], row, prev, channels)
        prev = row
    return _png_from_raw(bytes(raw), width, height, colour, idat_pieces)


def _png_from_raw(raw: bytes, width: int, height: int, colour: int, idat_pieces: int = 1) -> bytes:
    compressed = zlib.compress(raw, 6)
    step = -(-len(compressed) // idat_pieces)
    idats = b"".join(_chunk(b"IDAT", compressed[k : k + step]) for k in range(0, len(compressed), step))
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + idats + _chunk(b"IEND", b"")


def _image(rng, height, width, channels):
    shape = (height, width) if channels == 1 else (height, width, channels)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[: height // 2, : width // 2] = image[0, 0]  # a flat block, as in label images
    return image


@needs_fast
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("width", [1, 2, 11, 37])
@pytest.mark.parametrize("pattern", ["cycle", "runs"])
def test_every_filter_type_decodes_as_opencv(tmp_path, channels, width, pattern):
    rng = np.random.default_rng(channels * 100 + width)
    height = 15
    image = _image(rng, height, width, channels)
    if pattern == "cycle":  # every type after every other type
        filters = [k % 5 for k in range(height)]
    else:  # runs of one type (consecutive Paeth rows are decoded in pairs), odd lengths included
        filters = [4, 4, 4, 1, 1, 4, 4, 2, 2, 2, 3, 3, 4, 0, 4]
    encoded = _png(image, filters, idat_pieces=3)
    fast = _io._fast_decode(encoded, rgb_ids=channels >= 3)
    assert fast is not None  # this path, not the fallback
    reference = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED)
    path = tmp_path / "x.png"
    path.write_bytes(encoded)
    if channels == 2:  # gray + alpha: OpenCV keeps no alpha for it; compare the gray plane
        np.testing.assert_array_equal(fast, image)
        np.testing.assert_array_equal(fast[..., 0], reference if reference.ndim == 2 else reference[..., 0])
    elif channels == 1:
        np.testing.assert_array_equal(fast, reference)
        np.testing.assert_array_equal(_io.read_label_png(path), image)
    else:
        rgb = image[..., :3].astype(np.int32)
        expected = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        bgr = reference[..., :3].astype(np.int32)
        np.testing.assert_array_equal(bgr[..., 2] + 256 * bgr[..., 1] + 65536 * bgr[..., 0], expected)
        np.testing.assert_array_equal(fast, expected)
        np.testing.assert_array_equal(_io.read_panoptic_png(path), expected)


@needs_fast
def test_opencv_written_files_decode_equal(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.choice(np.array([0, 7, 26001, 26002, 24000, 1 << 23], np.int64), (64, 96))
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    labels = rng.integers(0, 34, (64, 96), dtype=np.uint8)
    for level in (0, 1, 9):
        cv2.imwrite(str(tmp_path / "p.png"), rgb[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, level])
        cv2.imwrite(str(tmp_path / "l.png"), labels, [cv2.IMWRITE_PNG_COMPRESSION, level])
        assert _io._fast_decode((tmp_path / "p.png").read_bytes(), rgb_ids=True) is not None
        np.testing.assert_array_equal(_io.read_panoptic_png(tmp_path / "p.png"), ids)
        np.testing.assert_array_equal(_io.read_label_png(tmp_path / "l.png"), labels)


def test_damaged_files_fall_back_and_are_named(tmp_path):
    rng = np.random.default_rng(1)
    encoded = bytearray(_png(_image(rng, 6, 5, 3), [4] * 6))
    bad_crc = bytearray(encoded)
    bad_crc[-13] ^= 0xFF  # last byte of the IDAT's checksum
    assert _io._fast_decode(bytes(bad_crc), rgb_ids=True) is None
    raw = bytearray(6 * (1 + 5 * 3))
    raw[16] = 7  # row 1: not a filter type
    broken = _png_from_raw(bytes(raw), 5, 6, 2)
    assert _io._fast_decode(broken, rgb_ids=True) is None
    for name, data in (("truncated.png", bytes(encoded[:40])), ("filter.png", broken), ("empty.png", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=name):
            _io.read_panoptic_png(tmp_path / name)


def test_sixteen_bit_labels_take_the_general_decoder(tmp_path):
    labels = np.arange(12 * 7, dtype=np.uint16).reshape(12, 7) * 700
    cv2.imwrite(str(tmp_path / "l16.png"), labels)
    assert _io._fast_decode((tmp_path / "l16.png").read_bytes(), rgb_ids=False) is None
    np.testing.assert_array_equal(_io.read_label_png(tmp_path / "l16.png"), labels)


@pytest.mark.parametrize("seed", range(40))
def test_known_pair_histogram_equals_index_maps(seed):
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 30, 2)
    rows = rng.choice(rng.integers(0, 40000, 6), (height, width)).astype(np.int32)
    rows[:, : width // 2] = rows[0, 0]  # runs of equal pairs
    row_ids = rng.choice(np.unique(np.r_[rows.ravel(), 41000]), rng.integers(0, 6), replace=False)
    if seed % 2:
        cols = rng.integers(0, 30, (height, width)).astype(np.uint8)
        col_ids = rng.choice(40, rng.integers(0, 10), replace=False)
    else:
        cols = rng.choice(np.array([0, 5, 1 << 20, (1 << 24) - 1]), (height, width)).astype(np.int32)
        col_ids = np.array([0, 5, (1 << 24) - 1])[: seed % 4]  # the largest id takes the numpy path
    expected = _io.pair_histogram(_io.index_map(rows, row_ids), _io.index_map(cols, col_ids),
                                  len(row_ids) + 1, len(col_ids) + 1)
    np.testing.assert_array_equal(_io.known_pair_histogram(rows, row_ids, cols, col_ids), expected)


def test_segment_confusion_equals_label_map_confusion():
    rng = np.random.default_rng(3)
    gt_ids = rng.choice(np.array([0, 7000, 26001, 26002, 11, 99], np.int32), (40, 50))
    segments = [{"id": 7000, "category_id": 7}, {"id": 26001, "category_id": 26},
                {"id": 26002, "category_id": 26}, {"id": 11, "category_id": 11}]  # 99: not listed
    void = 0
    category = {s["id"]: s["category_id"] for s in segments}
    gt_labels = np.vectorize(lambda v: category.get(int(v), void))(gt_ids)
    pred_labels = rng.integers(0, 30, (40, 50)).astype(np.uint8)
    class_ids = [7, 8, 11, 26]
    np.testing.assert_array_equal(
        confusion_from_segments(gt_ids, segments, void, pred_labels, class_ids),
        confusion_matrix(gt_labels, pred_labels, class_ids),
    )
    # PQ's joint histogram folded by category = the confusion of the two category maps.
    pred_ids = rng.choice(np.array([0, 1, 2, 3], np.int32), (40, 50))
    pred_segments = [{"id": 1, "category_id": 7}, {"id": 2, "category_id": 26}, {"id": 3, "category_id": 8}]
    pred_category = {s["id"]: s["category_id"] for s in pred_segments}
    pred_as_labels = np.vectorize(lambda v: pred_category.get(int(v), void))(pred_ids)
    joint = _io.known_pair_histogram(gt_ids, [0] + [s["id"] for s in segments], pred_ids,
                                     [0] + [s["id"] for s in pred_segments])
    rows = [void] + [s["category_id"] for s in segments] + [void]
    cols = [void] + [s["category_id"] for s in pred_segments] + [void]
    np.testing.assert_array_equal(fold_joint(joint, rows, cols, class_ids),
                                  confusion_matrix(gt_labels, pred_as_labels, class_ids))


@needs_fast
def test_native_unfilter_rejects_inconsistent_sizes():
    from pdlkit.evaluation._native import pair_counts, unfilter

    with pytest.raises(ValueError):
        unfilter(np.zeros(10, np.uint8), 2, 2, 3, True, np.zeros((2, 2), np.int32))
    with pytest.raises(ValueError):  # a table entry outside the histogram
        pair_counts(np.zeros(4, np.int32), np.array([5], np.int32), 0, np.zeros(4, np.int32),
                    np.array([0], np.int32), 0, False, 2, 2, np.zeros(4, np.int64))


@needs_fast
def test_reused_buffers_are_per_thread_and_per_name(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(5)
    paths = []
    for k in range(4):
        ids = rng.integers(0, 1 << 24, (9, 13))
        rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        paths.append(tmp_path / f"{k}.png")
        paths[-1].write_bytes(_png(rgb, [k % 5] * 9))
    fresh = [_io.read_panoptic_png(p) for p in paths]
    first = _io.read_panoptic_png(paths[0], reuse="a")
    other_name = _io.read_panoptic_png(paths[1], reuse="b")
    np.testing.assert_array_equal(first, fresh[0])  # another name left it alone
    np.testing.assert_array_equal(other_name, fresh[1])
    _io.read_panoptic_png(paths[2], reuse="a")
    np.testing.assert_array_equal(first, fresh[2])  # the same name in the same thread reuses it

    def in_thread(k):
        ids = _io.read_panoptic_png(paths[k], reuse="a")
        return ids.__array_interface__["data"][0], ids.copy()

    with ThreadPoolExecutor(2) as pool:
        (address_0, ids_0), (address_1, ids_1) = pool.map(in_thread, [0, 3])
    np.testing.assert_array_equal(ids_0, fresh[0])
    np.testing.assert_array_equal(ids_1, fresh[3])
    assert address_0 != first.__array_interface__["data"][0]  # not the main thread's buffer
