"""predict_video: one prediction per frame, named by frame index, and an overlay video with the
source's frame count and rate, from a short video the test writes itself."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pdlkit.errors import PdlError
from pdlkit.inference import Predictor
from pdlkit.inference.video import is_video_input, predict_video
from pdlkit.io import rgb_to_id

from .fakes import ConvPanopticNet, small_config, toy_spec


@pytest.fixture
def predictor():
    spec = toy_spec()
    return Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), small_config(), spec, "cpu")


def _write_video(path, frames=9, fps=7.0, size=(48, 32)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    rng = np.random.default_rng(0)
    for k in range(frames):
        frame = np.full((size[1], size[0], 3), 40 * (k % 5), dtype=np.uint8)
        frame[8:24, 4 + 3 * k: 20 + 3 * k] = rng.integers(0, 256, 3, dtype=np.uint8)  # a moving box
        writer.write(frame)
    writer.release()


def _decoded_frames(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


@pytest.mark.parametrize("out_name", ["overlay.mp4", "overlay.avi"])
def test_one_prediction_per_frame_and_an_overlay_video(predictor, tmp_path, out_name):
    clip = tmp_path / "clip.avi"
    _write_video(clip)
    out = tmp_path / "pred"
    from pdlkit.visualize import panoptic_overlay

    def draw(image, prediction):
        return panoptic_overlay(image, prediction.panoptic, prediction.segments, predictor.spec)

    summary = predict_video(predictor, clip, out, video_out=tmp_path / out_name, batch_size=2,
                            progress=False, draw=draw)
    assert (summary.processed, summary.skipped, summary.failed) == (9, 0, [])

    frames, _ = _decoded_frames(clip)
    index = json.loads((out / "panoptic.json").read_text())["annotations"]
    assert [a["image_id"] for a in index] == [f"frame_{k:06d}" for k in range(9)]
    for k in (0, 4, 8):  # the files of frame k are the prediction of decoded frame k
        expected = predictor(frames[k])
        stored = rgb_to_id(cv2.imread(str(out / "panoptic" / f"frame_{k:06d}.png"))[..., ::-1])
        np.testing.assert_array_equal(stored > 0, expected.panoptic >= 0)
        assert len(index[k]["segments_info"]) == len(expected.segments)

    overlay_frames, fps = _decoded_frames(tmp_path / out_name)
    assert len(overlay_frames) == 9 and fps == pytest.approx(7.0)
    assert overlay_frames[0].shape == frames[0].shape
    assert not list(tmp_path.glob(".*partial*"))

    first = predictor(frames[0])
    drawn = panoptic_overlay(frames[0], first.panoptic, first.segments, predictor.spec).astype(int)
    assert np.abs(overlay_frames[0].astype(int) - drawn).mean() < 12  # a lossy codec in between


def test_rerun_without_video_out_skips_done_frames(predictor, tmp_path):
    clip = tmp_path / "clip.avi"
    _write_video(clip, frames=5)
    predict_video(predictor, clip, tmp_path / "pred", progress=False)
    (tmp_path / "pred" / "segments" / "frame_000003.json").unlink()
    again = predict_video(predictor, clip, tmp_path / "pred", progress=False)
    assert (again.processed, again.skipped) == (1, 4)


def test_video_inputs_and_errors(predictor, tmp_path):
    assert is_video_input("clip.MP4") and is_video_input("0") and not is_video_input("a.png")
    with pytest.raises(PdlError, match="nope.mp4: no such video file"):
        predict_video(predictor, tmp_path / "nope.mp4", tmp_path / "out", progress=False)
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    with pytest.raises(PdlError, match="an overlay video needs draw="):
        predict_video(predictor, tmp_path / "nope.mp4", tmp_path / "out", video_out=tmp_path / "o.mp4")
    with pytest.raises(PdlError, match="junk.mp4: OpenCV cannot open this video"):
        predict_video(predictor, tmp_path / "junk.mp4", tmp_path / "out", progress=False)
