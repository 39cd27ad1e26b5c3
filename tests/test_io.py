"""pdlkit.io: exact round trips, orientation, atomic writes and bad files."""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from pdlkit import io
from pdlkit.errors import DataError

EXTREME_IDS = np.array([[0, 1, 255, 256], [65535, 65536, 26001, (1 << 24) - 1]], np.int64)


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------ panoptic colours
def test_ids_and_rgb_round_trip_at_the_24_bit_extremes():
    rgb = io.id_to_rgb(EXTREME_IDS)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    np.testing.assert_array_equal(rgb[1, 3], [255, 255, 255])
    np.testing.assert_array_equal(rgb[1, 1], [0, 0, 1])  # 65536 = 256² B
    np.testing.assert_array_equal(rgb[0, 3], [0, 1, 0])
    ids = io.rgb_to_id(rgb)
    assert ids.dtype == np.int32
    np.testing.assert_array_equal(ids, EXTREME_IDS)


def test_rgb_to_id_by_hand_alpha_views_and_other_dtypes():
    rgb = np.array([[[1, 2, 3], [255, 0, 128]]], np.uint8)
    expected = [[1 + 2 * 256 + 3 * 65536, 255 + 128 * 65536]]
    np.testing.assert_array_equal(io.rgb_to_id(rgb), expected)
    rgba = np.dstack([rgb, np.array([[7, 255]], np.uint8)])
    np.testing.assert_array_equal(io.rgb_to_id(rgba), expected)  # alpha ignored
    np.testing.assert_array_equal(io.rgb_to_id(np.dstack([rgb, rgb])[:, :, 3:]), expected)  # a strided view
    np.testing.assert_array_equal(io.rgb_to_id(rgb.astype(np.int64)), expected)
    np.testing.assert_array_equal(io.rgb_to_id(rgb[0]), expected[0])  # [N, 3]


def test_id_to_rgb_refuses_ids_without_a_colour():
    with pytest.raises(DataError, match=r"\[0, 2\^24\)"):
        io.id_to_rgb(np.array([[1 << 24]]))
    with pytest.raises(DataError, match="-1"):
        io.id_to_rgb(np.array([-1, 5]))
    assert io.id_to_rgb(np.zeros((0, 3), np.int64)).shape == (0, 3, 3)


# ------------------------------------------------------------------------------------------- PNG
def test_png_round_trips_exactly_for_every_layout(tmp_path):
    rng = np.random.default_rng(0)
    images = {
        "grey8": rng.integers(0, 256, (5, 7), dtype=np.uint8),
        "grey16": np.array([[0, 1, 255, 256], [32768, 65534, 65535, 4660]], np.uint16),
        "rgb8": rng.integers(0, 256, (5, 7, 3), dtype=np.uint8),
        "rgba8": rng.integers(0, 256, (5, 7, 4), dtype=np.uint8),
        "rgb16": rng.integers(0, 1 << 16, (3, 4, 3)).astype(np.uint16),
    }
    for name, image in images.items():
        io.write_png(tmp_path / f"{name}.png", image)
        loaded = io.read_png(tmp_path / f"{name}.png")
        assert loaded.dtype == image.dtype, name
        np.testing.assert_array_equal(loaded, image, err_msg=name)
    # channel order checked against an independent decoder
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgb8.png")), images["rgb8"])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "rgba8.png")), images["rgba8"])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "grey16.png")), images["grey16"])
    assert _files(tmp_path) == sorted(f"{name}.png" for name in images)  # no temporary files left


def test_panoptic_and_label_pngs(tmp_path):
    io.write_png(tmp_path / "p.png", io.id_to_rgb(EXTREME_IDS))
    np.testing.assert_array_equal(io.read_panoptic_png(tmp_path / "p.png"), EXTREME_IDS)
    labels = np.array([[0, 7, 3], [26, 33, 0]], np.uint8)
    palette = Image.fromarray(labels, mode="L").convert("P")
    palette.putpalette([v for i in range(256) for v in (i, 255 - i, 3 * i % 256)])
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(io.read_label_png(tmp_path / "palette.png"),
                                  np.asarray(Image.open(tmp_path / "palette.png")))
    io.write_png(tmp_path / "grey.png", labels)
    np.testing.assert_array_equal(io.read_label_png(tmp_path / "grey.png"), labels)
    with pytest.raises(DataError, match="grey.png: a panoptic PNG must be 8-bit RGB"):
        io.read_panoptic_png(tmp_path / "grey.png")
    with pytest.raises(DataError, match="p.png: a label PNG must have one channel"):
        io.read_label_png(tmp_path / "p.png")


def test_write_png_refuses_arrays_a_png_cannot_hold(tmp_path):
    with pytest.raises(DataError, match="f.png: a PNG holds uint8 or uint16 pixels, got float32"):
        io.write_png(tmp_path / "f.png", np.zeros((2, 2), np.float32))
    with pytest.raises(DataError, match=r"c.png: .*got shape \(2, 2, 2\)"):
        io.write_png(tmp_path / "c.png", np.zeros((2, 2, 2), np.uint8))
    assert _files(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch):
    old = np.full((2, 3), 9, np.uint8)
    io.write_png(tmp_path / "a.png", old)
    io.write_json(tmp_path / "a.json", {"v": 1})

    def failing_replace(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        io.write_png(tmp_path / "a.png", np.zeros((2, 3), np.uint8))
    with pytest.raises(OSError, match="No space left"):
        io.write_json(tmp_path / "a.json", {"v": 2})
    with pytest.raises(OSError, match="No space left"):
        io.write_png(tmp_path / "new.png", np.zeros((2, 3), np.uint8))
    monkeypatch.undo()
    assert _files(tmp_path) == ["a.json", "a.png"]
    np.testing.assert_array_equal(io.read_png(tmp_path / "a.png"), old)
    assert io.read_json(tmp_path / "a.json") == {"v": 1}
    with pytest.raises(TypeError):  # json cannot encode it: the old file stays
        io.write_json(tmp_path / "a.json", {"v": object()})
    assert io.read_json(tmp_path / "a.json") == {"v": 1} and _files(tmp_path) == ["a.json", "a.png"]


# ------------------------------------------------------------------------------------------ images
def test_read_image_applies_the_exif_orientation(tmp_path):
    # 8 x 16 picture: a dark left half and a bright right half with a red top-left block
    picture = np.zeros((8, 16, 3), np.uint8)
    picture[:, 8:] = 230
    picture[:4, :4] = [220, 20, 20]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored as is, shown turned 90 degrees clockwise
    Image.fromarray(picture).save(tmp_path / "photo.jpg", quality=100, exif=exif.tobytes())
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "photo.jpg")))
    loaded = io.read_image(tmp_path / "photo.jpg")
    assert loaded.shape == (16, 8, 3) == upright.shape
    assert np.abs(loaded.astype(int) - upright.astype(int)).max() <= 8  # JPEG decoders may differ by a few levels
    assert loaded[:8].mean() < 40 and loaded[8:].mean() > 190  # the bright half is at the bottom
    assert loaded[1, 6, 0] > 180 and loaded[1, 6, 1] < 70  # the red block is top right


def test_read_image_grey_alpha_and_16_bit(tmp_path):
    grey = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    np.testing.assert_array_equal(io.read_image(tmp_path / "g.png"), np.repeat(grey[:, :, None], 3, axis=2))
    rgba = np.array([[[1, 2, 3, 0], [250, 128, 7, 255]]], np.uint8)
    io.write_png(tmp_path / "a.png", rgba)
    np.testing.assert_array_equal(io.read_image(tmp_path / "a.png"), rgba[:, :, :3])  # alpha dropped, not composited
    io.write_png(tmp_path / "g16.png", np.array([[0, 255, 256, 65535]], np.uint16))
    np.testing.assert_array_equal(io.read_image(tmp_path / "g16.png")[..., 0], [[0, 0, 1, 255]])  # >> 8


# ------------------------------------------------------------------------------------------- JSON
def test_json_round_trip_and_strictness(tmp_path):
    data = {"name": "Straße ✓", "ids": [0, (1 << 24) - 1, -3], "nested": {"pq": 61.25, "empty": []}, "ok": True,
            "none": None}
    io.write_json(tmp_path / "d.json", data)
    assert io.read_json(tmp_path / "d.json") == data
    text = (tmp_path / "d.json").read_text(encoding="utf-8")
    assert text.endswith("}\n") and "\n  " in text  # indent 2
    io.write_json(tmp_path / "c.json", {"b": 1, "a": [1, 2]}, indent=None, sort_keys=True)
    assert (tmp_path / "c.json").read_text() == '{"a":[1,2],"b":1}\n'
    odd = {"nan": math.nan, "inf": -math.inf, "np": np.float32(0.5), "i": np.int64(7), "arr": np.arange(3), 4: "k"}
    io.write_json(tmp_path / "o.json", odd)
    assert json.loads((tmp_path / "o.json").read_text()) == {"nan": None, "inf": None, "np": 0.5, "i": 7,
                                                             "arr": [0, 1, 2], "4": "k"}

    class Scalar:  # what a tensor is to json: only ``default`` can convert it
        def __float__(self):
            return math.nan

    io.write_json(tmp_path / "t.json", {"loss": Scalar()}, default=float)
    assert io.read_json(tmp_path / "t.json") == {"loss": None}


# -------------------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("reader", [io.read_image, io.read_png, io.read_label_png, io.read_panoptic_png])
def test_image_readers_name_the_bad_file(tmp_path, reader):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    for name, problem in [("broken.png", "not a readable"), ("empty.png", "the file is empty|not a readable PNG"),
                          ("missing.png", "cannot read the file")]:
        with pytest.raises(DataError, match=f"{name}: ({problem})"):
            reader(tmp_path / name)


def test_read_json_names_the_bad_file(tmp_path):
    with pytest.raises(DataError, match="nothere.json: file not found"):
        io.read_json(tmp_path / "nothere.json")
    (tmp_path / "bad.json").write_text('{"a": 1,')
    with pytest.raises(DataError, match=r"bad.json: not a readable JSON file \(.* at line 1\)"):
        io.read_json(tmp_path / "bad.json")
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(DataError, match="latin.json: not a readable JSON file"):
        io.read_json(tmp_path / "latin.json")


def test_pixel_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    import cv2

    io.write_png(tmp_path / "small.png", np.zeros((16, 24, 3), np.uint8))
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(tmp_path / "small.jpg")
    assert io.image_size(tmp_path / "small.png") == (16, 24)
    assert io.image_size(tmp_path / "small.jpg") == (10, 30)
    (tmp_path / "notes.txt").write_text("no picture")
    assert io.image_size(tmp_path / "notes.txt") is None
    assert io.read_image(tmp_path / "small.png", max_pixels=384).shape == (16, 24, 3)
    decoded = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda data, flags: decoded.append(1) or real_imdecode(data, flags))
    with pytest.raises(DataError, match=r"small.png: 24x16 pixels \(0 MP\) is more than the limit of 0.000383 MP") as info:
        io.read_image(tmp_path / "small.png", max_pixels=383)
    assert info.value.parameters == ("max_pixels",)  # a front end names it in its own terms
    assert decoded == []  # refused before decoding
