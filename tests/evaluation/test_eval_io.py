"""Id compaction and PNG reading helpers."""
from __future__ import annotations

import numpy as np
import pytest

from pdlkit.errors import DataError
from pdlkit.evaluation._io import index_map, read_label_png, read_panoptic_png
from pdlkit.io import write_png


@pytest.mark.parametrize("scale", [1, 1 << 23])  # lookup-table path and binary-search path
def test_index_map_positions_and_unknown(scale):
    rng = np.random.default_rng(0)
    known = np.array([5, 0, 9, 3], np.int64) * scale
    values = rng.choice(np.array([5, 0, 9, 3, 7, 11], np.int64) * scale, size=(6, 7))
    result = index_map(values, known)
    expected = np.vectorize(lambda v: list(known).index(v) if v in known else len(known))(values)
    np.testing.assert_array_equal(result, expected)


def test_panoptic_png_round_trip(tmp_path):
    ids = np.array([[0, 1, 256], [65536, 26001, 256 ** 3 - 1]], np.int64)
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    write_png(tmp_path / "p.png", rgb)
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "p.png"), ids)
    assert [p.name for p in tmp_path.iterdir()] == ["p.png"]  # no temporary file left behind


def test_label_png_palette_reads_indices(tmp_path):
    from PIL import Image

    labels = np.array([[0, 7], [26, 33]], np.uint8)
    image = Image.fromarray(labels, mode="L").convert("P")
    image.putpalette([v for i in range(256) for v in (i, 255 - i, 3 * i % 256)])
    image.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "p.png"), np.asarray(Image.open(tmp_path / "p.png")))


def test_unreadable_png_is_named(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        read_panoptic_png(bad)
    with pytest.raises(DataError, match="8-bit RGB"):
        write_png(tmp_path / "gray.png", np.zeros((2, 2), np.uint8))
        read_panoptic_png(tmp_path / "gray.png")


@pytest.mark.parametrize("num_rows,num_cols", [(1, 1), (3, 7), (200, 300), (300, 300)])  # the last exceeds 65536 cells
def test_pair_histogram_equals_bincount(num_rows, num_cols):
    from pdlkit.evaluation._io import pair_histogram

    rng = np.random.default_rng(num_rows)
    rows = rng.integers(0, num_rows, (37, 53)).astype(np.uint16)
    cols = rng.integers(0, num_cols, (37, 53)).astype(np.uint16)
    expected = np.zeros((num_rows, num_cols), np.int64)
    np.add.at(expected, (rows.astype(np.int64), cols.astype(np.int64)), 1)
    np.testing.assert_array_equal(pair_histogram(rows, cols, num_rows, num_cols), expected)


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_value_counts(dtype):
    from pdlkit.evaluation._io import value_counts

    values = np.array([[26001, 7, 7], [0, 65535, 7]], dtype)
    present, counts = value_counts(values)
    assert present.tolist() == [0, 7, 26001, 65535] and counts.tolist() == [1, 3, 1, 1]


def test_index_map_uint8_path():
    values = np.array([[0, 7, 26], [255, 8, 7]], np.uint8)
    result = index_map(values, np.array([26, 7, 300]))
    assert result.dtype == np.uint8
    assert result.tolist() == [[3, 1, 0], [3, 3, 1]]


@pytest.mark.parametrize("decoder", ["spng", "opencv"])
def test_both_png_decoders_read_the_same(tmp_path, monkeypatch, decoder):
    """imagecodecs' libspng (when installed) and OpenCV, the decoders pdlkit.io falls back to when
    evaluation's fast path does not apply, give the same ids and labels, for RGB, RGBA, 8- and
    16-bit gray and palette PNGs."""
    import cv2
    from PIL import Image

    from pdlkit import io
    from pdlkit.evaluation import _io

    monkeypatch.setattr(_io, "_FAST_DECODE", None)  # every file through pdlkit.io
    if decoder == "opencv":
        monkeypatch.setattr(io, "_SPNG_DECODE", None)
    elif io._SPNG_DECODE is None:
        pytest.skip("imagecodecs is not installed")
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 1 << 24, (9, 13))
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (9, 13), dtype=np.uint8)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "rgb.png"), ids)
    np.testing.assert_array_equal(read_panoptic_png(tmp_path / "rgba.png"), ids)  # alpha ignored
    gray8 = rng.integers(0, 256, (9, 13), dtype=np.uint8)
    gray16 = rng.integers(0, 1 << 16, (9, 13)).astype(np.uint16)
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    Image.fromarray(gray8 % 5).convert("P").save(tmp_path / "pal.png")
    np.testing.assert_array_equal(read_label_png(tmp_path / "g8.png"), gray8)
    np.testing.assert_array_equal(read_label_png(tmp_path / "g16.png"), gray16)
    np.testing.assert_array_equal(read_label_png(tmp_path / "pal.png"), np.asarray(Image.open(tmp_path / "pal.png")))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match="bad.png: not a readable PNG"):
        read_panoptic_png(tmp_path / "bad.png")
