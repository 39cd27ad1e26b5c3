"""predict_paths as a pipeline: decode ahead, network on the caller's thread, writer threads; the
stages are bounded, so the decoded images alive at once do not grow with the number of inputs."""
from __future__ import annotations

import json
import os
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from pdlkit.inference import Predictor, predict_paths
from pdlkit.inference.writers import PredictionWriter

from .fakes import ConvPanopticNet, small_config, toy_spec


@pytest.fixture
def predictor():
    spec = toy_spec()
    return Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), small_config(), spec, "cpu")


def _folder(root, count):
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for k in range(count):
        cv2.imwrite(str(root / f"img{k:04d}.png"), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return root


def test_decoded_images_in_flight_stay_bounded_with_a_slow_writer(predictor, tmp_path, monkeypatch):
    count = 300
    images = _folder(tmp_path / "in", count)
    real_write = PredictionWriter.write
    writer_threads = set()

    def slow_write(self, *args, **kwargs):
        writer_threads.add(threading.current_thread().name)
        time.sleep(0.002)  # writing is the slow stage: every queue in front of it fills up
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(PredictionWriter, "write", slow_write)
    summary = predict_paths(predictor, images, tmp_path / "out", batch_size=2, workers=3, progress=False)
    assert summary.processed == count and not summary.failed
    # bound = decode queue (4) + write queue (6) + batch (2) + writers (3) + 2 producers blocked
    assert summary.in_flight_limit == 17
    assert 4 <= summary.peak_in_flight <= summary.in_flight_limit  # filled up, never past the bound
    assert writer_threads == {"pdl-write-0", "pdl-write-1", "pdl-write-2"}
    annotations = json.loads((tmp_path / "out" / "panoptic.json").read_text())["annotations"]
    assert [a["image_id"] for a in annotations] == [f"img{k:04d}" for k in range(count)]


def test_pipeline_files_equal_the_predictor_run_by_hand(predictor, tmp_path):
    """The threads change when files are written, not what is written."""
    from pdlkit.inference import read_image

    images = _folder(tmp_path / "in", 12)
    predict_paths(predictor, images, tmp_path / "threaded", workers=4, progress=False)
    writer = PredictionWriter(tmp_path / "by_hand", predictor.spec)
    for path in sorted(images.iterdir()):
        writer.write(predictor(read_image(path)), "", path.stem, path)
    writer.write_index()
    for name in ("panoptic", "semantic"):
        for path in sorted((tmp_path / "by_hand" / name).iterdir()):
            assert (tmp_path / "threaded" / name / path.name).read_bytes() == path.read_bytes()
    assert ((tmp_path / "threaded" / "panoptic.json").read_bytes()
            == (tmp_path / "by_hand" / "panoptic.json").read_bytes())


def test_summary_reports_images_per_second(predictor, tmp_path):
    summary = predict_paths(predictor, _folder(tmp_path / "in", 3), tmp_path / "out", progress=False)
    assert summary.seconds > 0
    assert summary.images_per_second == pytest.approx(3 / summary.seconds)
    assert str(summary).startswith("3 processed, 0 skipped (already done), 0 failed (")
    assert str(summary).endswith(" images/s)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_loader_and_writers_run_below_the_network_priority(predictor, tmp_path, monkeypatch):
    from pdlkit.inference import runner

    def nice():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen = {}
    real_write, real_read = PredictionWriter.write, runner.read_image

    def write(self, *args, **kwargs):
        seen.setdefault("writer", set()).add(nice())
        return real_write(self, *args, **kwargs)

    def read(*args, **kwargs):
        seen.setdefault("loader", set()).add(nice())
        return real_read(*args, **kwargs)

    def network(image, *args, **kwargs):
        seen.setdefault("network", set()).add(nice())
        return real_predict(image, *args, **kwargs)

    real_predict = predictor.predict_batch
    monkeypatch.setattr(PredictionWriter, "write", write)
    monkeypatch.setattr(runner, "read_image", read)
    monkeypatch.setattr(predictor, "predict_batch", network)
    before = nice()
    summary = predict_paths(predictor, _folder(tmp_path / "in", 6), tmp_path / "out", workers=2, progress=False)
    assert summary.processed == 6
    lowered = min(19, before + runner.BACKGROUND_NICENESS)
    assert seen == {"writer": {lowered}, "loader": {lowered}, "network": {before}}
    assert nice() == before  # the caller's thread keeps its priority
