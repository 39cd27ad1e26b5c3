"""`pdl predict`: exit codes, one-sentence errors, mixed folders, reruns."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from pdlkit.cli.main import cli


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_missing_weights_is_one_sentence(tmp_path):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    result = _run("predict", tmp_path / "in", "--weights", tmp_path / "nope.pt", "--output", tmp_path / "out")
    assert result.exit_code == 1
    assert "nope.pt: weights file not found" in result.output
    assert not (tmp_path / "out").exists()


def test_empty_or_missing_input_fails_before_loading_the_model(tmp_path):
    weights = tmp_path / "model.pt"
    weights.write_bytes(b"not loaded: the input is checked first")
    (tmp_path / "empty").mkdir()
    result = _run("predict", tmp_path / "empty", "--weights", weights, "--output", tmp_path / "out")
    assert result.exit_code == 1 and "no images found" in result.output
    result = _run("predict", tmp_path / "missing", "--weights", weights, "--output", tmp_path / "out")
    assert result.exit_code == 1 and "no such file or folder" in result.output


def test_onnx_weights_and_corrupt_checkpoint(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "model.onnx").write_bytes(b"x")
    result = _run("predict", tmp_path / "a.png", "--weights", tmp_path / "model.onnx", "--output", tmp_path / "o")
    assert result.exit_code == 1 and "ONNX" in result.output
    (tmp_path / "broken.pt").write_bytes(b"garbage")
    result = _run("predict", tmp_path / "a.png", "--weights", tmp_path / "broken.pt", "--output", tmp_path / "o")
    assert result.exit_code == 1 and "broken.pt" in result.output


def test_usage_errors_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["predict", str(tmp_path)])
    assert result.exit_code == 2 and "--weights" in result.output


@pytest.mark.slow
def test_predict_mixed_folder_with_the_toy_checkpoint(toy_checkpoint, toy_root, tmp_path):
    rng = np.random.default_rng(0)
    source = next((toy_root / "leftImg8bit" / "val").rglob("*.png"))
    image = cv2.imread(str(source))
    inputs = tmp_path / "in"
    (inputs / "x").mkdir(parents=True)
    (inputs / "y").mkdir()
    cv2.imwrite(str(inputs / "x" / "same.png"), image)
    cv2.imwrite(str(inputs / "y" / "other.jpg"), image[:50, :97])
    cv2.imwrite(str(inputs / "gray.png"), cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(inputs / "rgba.png"), cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))
    cv2.imwrite(str(inputs / "deep.tif"), image.astype(np.uint16) * 257)
    (inputs / "corrupt.jpg").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
    out = tmp_path / "out"

    result = _run("predict", inputs, "--weights", toy_checkpoint, "--output", out, "--batch-size", "2", "-q")
    assert result.exit_code == 1
    assert "corrupt.jpg" in result.output
    assert "5 processed, 0 skipped (already done), 1 failed" in result.output
    index = json.loads((out / "panoptic.json").read_text())
    names = sorted(a["file_name"] for a in index["annotations"])
    assert names == ["deep.png", "gray.png", "rgba.png", "x/same.png", "y/other.png"]
    assert cv2.imread(str(out / "panoptic" / "y" / "other.png")).shape[:2] == (50, 97)
    # 16-bit (x257) and RGBA versions of one image give the 8-bit image's prediction
    for name in ("deep.png", "rgba.png"):
        assert (out / "panoptic" / name).read_bytes() == (out / "panoptic" / "x" / "same.png").read_bytes()

    (inputs / "corrupt.jpg").unlink()
    again = _run("predict", inputs, "--weights", toy_checkpoint, "--output", out, "-q")
    assert again.exit_code == 0 and "0 processed, 5 skipped" in again.output
    redo = _run("predict", inputs, "--weights", toy_checkpoint, "--output", out, "-q", "--overwrite")
    assert redo.exit_code == 0 and "5 processed, 0 skipped" in redo.output


@pytest.mark.slow
def test_predict_with_tta_and_raw_outputs(toy_checkpoint, toy_root, tmp_path):
    source = next((toy_root / "leftImg8bit" / "val").rglob("*.png"))
    out = tmp_path / "tta"
    result = _run("predict", source, "--weights", toy_checkpoint, "--output", out, "--tta", "--save-raw", "-q")
    assert result.exit_code == 0 and "1 processed" in result.output
    image_id = source.stem[: -len("_leftImg8bit")]
    height, width = cv2.imread(str(source)).shape[:2]
    with np.load(out / "raw" / f"{image_id}.npz") as raw:
        assert raw["offsets"].shape == (2, height, width)
    assert json.loads((out / "panoptic.json").read_text())["annotations"][0]["image_id"] == image_id


def test_max_pixels_names_the_file_and_the_run_goes_on(toy_checkpoint, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    cv2.imwrite(str(inputs / "small.png"), np.zeros((16, 16, 3), np.uint8))
    cv2.imwrite(str(inputs / "large.png"), np.zeros((40, 30, 3), np.uint8))
    cv2.imwrite(str(inputs / "..png"), np.zeros((16, 16, 3), np.uint8))
    result = _run("predict", inputs, "--weights", toy_checkpoint, "--output", tmp_path / "out",
                  "--max-pixels", 1000, "--quiet")
    assert result.exit_code == 1
    assert "large.png: 30x40 pixels (0 MP) is more than the limit of 0.001 MP" in result.output
    assert "..png: the file name gives the image id '.'" in result.output
    assert "1 processed, 0 skipped (already done), 2 failed" in result.output
    assert (tmp_path / "out" / "panoptic" / "small.png").is_file()


def test_predict_a_video_writes_frames_and_an_overlay_video(toy_checkpoint, toy_root, tmp_path):
    source = cv2.imread(str(next((toy_root / "leftImg8bit" / "val").rglob("*.png"))))
    clip = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, source.shape[1::-1])
    for shift in range(4):
        writer.write(np.roll(source, 8 * shift, axis=1))
    writer.release()
    result = _run("predict", clip, "--weights", toy_checkpoint, "--output", tmp_path / "out",
                  "--video-out", tmp_path / "overlay.mp4", "-q")
    assert result.exit_code == 0, result.output
    assert "4 processed, 0 skipped (already done), 0 failed" in result.output
    assert sorted(p.name for p in (tmp_path / "out" / "panoptic").iterdir()) == [
        f"frame_{k:06d}.png" for k in range(4)]
    video = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert video.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    count = 0
    while video.read()[0]:
        count += 1
    assert count == 4
    result = _run("predict", tmp_path / "out" / "panoptic", "--weights", toy_checkpoint, "--output",
                  tmp_path / "o2", "--video-out", tmp_path / "x.mp4")
    assert result.exit_code == 1 and "--video-out needs a video INPUT" in result.output
