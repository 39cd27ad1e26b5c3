"""What a careless or hostile input folder does to predict_paths: odd names, colliding ids, huge
headers, EXIF orientation, links and unreadable folders, failing writes -- one file never ends a run."""
from __future__ import annotations

import json
import os
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from pdlkit.errors import DataError
from pdlkit.inference import Predictor, predict_paths, read_image, scan_images
from pdlkit.inference import io as image_io

from .fakes import ConvPanopticNet, small_config, toy_spec


def _write_rgb(path, seed=0, shape=(16, 24)):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)


@pytest.fixture
def predictor():
    spec = toy_spec()
    return Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), small_config(), spec, "cpu")


def _index(out):
    return json.loads((out / "panoptic.json").read_text())["annotations"]


def test_a_file_named_dot_dot_png_is_reported_not_fatal(predictor, tmp_path):
    _write_rgb(tmp_path / "in" / "good.png")
    _write_rgb(tmp_path / "in" / "..png", seed=1)
    summary = predict_paths(predictor, tmp_path / "in", tmp_path / "out", progress=False)
    assert summary.processed == 1
    assert len(summary.failed) == 1 and summary.failed[0][0].endswith("..png")
    assert "image id '.'" in summary.failed[0][1]
    assert [a["file_name"] for a in _index(tmp_path / "out")] == ["good.png"]


def test_colliding_image_ids_name_both_files(predictor, tmp_path):
    _write_rgb(tmp_path / "in" / "a" / "x.png")
    _write_rgb(tmp_path / "in" / "b" / "x.png", seed=1)
    _write_rgb(tmp_path / "in" / "sub.png", seed=2)
    _write_rgb(tmp_path / "in" / "sub" / "..png", seed=3)
    summary = predict_paths(predictor, tmp_path / "in", tmp_path / "out", progress=False)
    assert summary.processed == 2
    reasons = dict(summary.failed)
    collision = reasons[str(tmp_path / "in" / "b" / "x.png")]
    assert "image id 'x'" in collision and str(tmp_path / "in" / "a" / "x.png") in collision
    assert "image id '.'" in reasons[str(tmp_path / "in" / "sub" / "..png")]
    annotations = _index(tmp_path / "out")
    assert sorted(a["file_name"] for a in annotations) == ["a/x.png", "sub.png"]
    ids = [a["image_id"] for a in annotations]
    assert len(ids) == len(set(ids))


def _huge_png(path, height, width):
    """A 1-bit grey PNG of height x width zeros, compressed row by row (never whole in memory)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_max_pixels_refuses_from_the_header_before_decoding(predictor, tmp_path, monkeypatch):
    huge = tmp_path / "in" / "huge.png"
    huge.parent.mkdir()
    _huge_png(huge, 20000, 20000)
    assert huge.stat().st_size < 1_000_000
    _write_rgb(tmp_path / "in" / "small.png")

    decoded = []
    real_imdecode = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda data, flags: decoded.append(len(data)) or real_imdecode(data, flags))
    with pytest.raises(DataError, match=r"huge.png: 20000x20000 pixels \(400 MP\) is more than the limit of 50 MP"):
        read_image(huge)
    assert decoded == []  # refused from the header: the 400 MP were never allocated
    summary = predict_paths(predictor, tmp_path / "in", tmp_path / "out", progress=False)
    assert summary.processed == 1 and [p for p, _ in summary.failed] == [str(huge)]
    # the limit is the caller's: 16 x 24 = 384 pixels pass 384 and fail 383
    assert read_image(tmp_path / "in" / "small.png", max_pixels=384).shape == (16, 24, 3)
    with pytest.raises(DataError, match="small.png: 24x16 pixels"):
        read_image(tmp_path / "in" / "small.png", max_pixels=383)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied_like_the_training_reader(tmp_path, fmt):
    from pdlkit.data.dataset import read_image as training_read_image

    upright = np.zeros((20, 40, 3), dtype=np.uint8)
    upright[:6, :6] = (250, 10, 10)  # a red corner at the top left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / f"phone.{fmt.lower()}"
    Image.fromarray(upright).save(path, fmt, exif=exif.tobytes(), quality=95)
    shown = read_image(path)
    assert shown.shape == (40, 20, 3)
    np.testing.assert_array_equal(shown, training_read_image(path))  # the training reader
    # OpenCV's colour read applies the orientation too
    np.testing.assert_array_equal(shown, cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])
    from PIL import ImageOps

    with Image.open(path) as stored:  # Pillow's own decoder and transpose as the reference
        reference = np.asarray(ImageOps.exif_transpose(stored).convert("RGB"))
    tolerance = 0 if fmt == "PNG" else 8  # two JPEG decoders may round differently
    assert np.abs(shown.astype(int) - reference).max() <= tolerance
    if fmt == "PNG":
        np.testing.assert_array_equal(shown, np.rot90(upright, k=-1))  # clockwise: corner top right
    # grey and 16-bit files keep their depth handling (no alpha or colour change from the new flags)
    grey16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    cv2.imwrite(str(tmp_path / "g16.png"), grey16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[..., 2], (grey16 >> 8).astype(np.uint8))


def test_links_and_unreadable_folders_are_named_and_counted(predictor, tmp_path, monkeypatch):
    root = tmp_path / "in"
    _write_rgb(root / "a.png")
    _write_rgb(root / "deep" / "b.png", seed=1)
    (root / "deep" / "loop").symlink_to(root, target_is_directory=True)
    (root / "dangling.png").symlink_to(tmp_path / "gone.png")
    (root / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("locked"):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(image_io.os, "scandir", scandir)
    scan = scan_images(root)
    assert [(p.name, rel) for p, rel in scan.images] == [("a.png", ""), ("b.png", "deep")]
    reasons = dict(scan.skipped)
    assert reasons == {
        str(root / "dangling.png"): "dangling symbolic link",
        str(root / "deep" / "loop"): "symlink loop (this folder is already being searched)",
        str(root / "locked"): "cannot list the folder (Permission denied)",
    }
    summary = predict_paths(predictor, root, tmp_path / "out", progress=False)
    assert summary.processed == 2 and sorted(summary.passed_over) == sorted(scan.skipped)
    assert "3 entries not searched" in str(summary)


def test_a_failing_write_or_network_call_ends_only_its_image(predictor, tmp_path, monkeypatch):
    for k in range(4):
        _write_rgb(tmp_path / "in" / f"img{k}.png", seed=k)
    _write_rgb(tmp_path / "in" / "odd.png", seed=9, shape=(8, 8))
    from pdlkit.inference.writers import PredictionWriter

    real_write = PredictionWriter.write

    def write(self, prediction, rel_dir, image_id, source=""):
        if image_id == "img2":
            raise OSError(28, "No space left on device")
        return real_write(self, prediction, rel_dir, image_id, source)

    real_batch = predictor.predict_batch

    def predict_batch(images):
        if images[0].shape[:2] == (8, 8):
            raise RuntimeError("out of memory")
        return real_batch(images)

    monkeypatch.setattr(PredictionWriter, "write", write)
    monkeypatch.setattr(predictor, "predict_batch", predict_batch)
    summary = predict_paths(predictor, tmp_path / "in", tmp_path / "out", progress=False)
    assert summary.processed == 3
    reasons = dict(summary.failed)
    assert "No space left on device" in reasons[str(tmp_path / "in" / "img2.png")]
    assert "out of memory" in reasons[str(tmp_path / "in" / "odd.png")]
    assert sorted(a["image_id"] for a in _index(tmp_path / "out")) == ["img0", "img1", "img3"]
