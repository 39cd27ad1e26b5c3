"""predict_paths: mixed inputs, the prediction files, reruns, overwrite, raw outputs, bad names."""
from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from pdlkit.errors import PdlError
from pdlkit.inference import Predictor, predict_paths
from pdlkit.io import rgb_to_id

from .fakes import ConvPanopticNet, small_config, toy_spec


def _write_rgb(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


@pytest.fixture
def predictor():
    spec = toy_spec()
    return Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), small_config(), spec, "cpu")


@pytest.fixture
def mixed_folder(tmp_path):
    """Good images, a corrupt one, grayscale, RGBA, 16-bit, and two sub-folders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "in"
    _write_rgb(root / "a_leftImg8bit.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    _write_rgb(root / "b.jpg", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    _write_rgb(root / "city1" / "same.png", rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    _write_rgb(root / "city2" / "other.png", rng.integers(0, 256, (17, 23, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "gray.png"), rng.integers(0, 256, (20, 28), dtype=np.uint8))
    cv2.imwrite(str(root / "rgba.png"), rng.integers(0, 256, (21, 30, 4), dtype=np.uint8))
    cv2.imwrite(str(root / "deep16.png"), rng.integers(0, 65536, (19, 26, 3), dtype=np.uint16))
    (root / "city1" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    return root


EXPECTED = ["a", "b", "city1/same", "city2/other", "deep16", "gray", "rgba"]


def _check_files(out, spec):
    index = json.loads((out / "panoptic.json").read_text())
    assert sorted(a["file_name"] for a in index["annotations"]) == sorted(e + ".png" for e in EXPECTED)
    assert [c["id"] for c in index["categories"]] == list(spec.category_ids)
    assert [c["isthing"] for c in index["categories"]] == [int(t) for t in spec.is_thing]
    assert [c["color"] for c in index["categories"]] == [list(c) for c in spec.colors]
    for annotation in index["annotations"]:
        assert annotation["image_id"] == annotation["file_name"].split("/")[-1][: -len(".png")]
        rgb = cv2.cvtColor(cv2.imread(str(out / "panoptic" / annotation["file_name"])), cv2.COLOR_BGR2RGB)
        ids = rgb_to_id(rgb)
        segments = {s["id"]: s for s in annotation["segments_info"]}
        present = set(np.unique(ids).tolist()) - {0}
        assert present == set(segments)  # every segment in the png and every png id in the json
        for seg_id, segment in segments.items():
            assert seg_id // 1000 == segment["category_id"] and segment["category_id"] in spec.category_ids
            assert segment["area"] == int((ids == seg_id).sum())
            assert segment["iscrowd"] == 0
            assert ("score" in segment) == bool(segment["isthing"])
        semantic = cv2.imread(str(out / "semantic" / annotation["file_name"]), cv2.IMREAD_UNCHANGED)
        assert semantic.dtype == np.uint8 and semantic.shape == ids.shape
        assert set(np.unique(semantic).tolist()) <= set(spec.category_ids)
        # stuff pixels of the panoptic png carry the semantic class of the same pixel
        stuff = (ids > 0) & (ids % 1000 == 0)
        np.testing.assert_array_equal(semantic[stuff], ids[stuff] // 1000)
    return index


def test_mixed_folder(predictor, mixed_folder, tmp_path):
    out = tmp_path / "out"
    summary = predict_paths(predictor, mixed_folder, out, batch_size=2, progress=False)
    assert summary.processed == 7 and summary.skipped == 0
    # a.png and b.jpg (equal sizes, consecutive) share a forward pass; other sizes run alone
    assert (2, 3, 24, 32) in predictor.model.seen_shapes
    assert max(shape[0] for shape in predictor.model.seen_shapes) == 2
    assert len(summary.failed) == 1
    path, reason = summary.failed[0]
    assert path.endswith("corrupt.png") and "corrupt.png" in reason
    index = _check_files(out, predictor.spec)
    sizes = {a["file_name"]: cv2.imread(str(out / "panoptic" / a["file_name"])).shape[:2]
             for a in index["annotations"]}
    assert sizes["city1/same.png"] == (24, 32) and sizes["city2/other.png"] == (17, 23)
    assert sizes["gray.png"] == (20, 28) and sizes["deep16.png"] == (19, 26)
    assert json.loads((out / "spec.json").read_text()) == predictor.spec.to_dict()
    # files get the usual permissions (not mkstemp's 0600); no temporary files are left behind
    mode = (out / "panoptic.json").stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]


def test_rerun_skips_and_overwrite_redoes(predictor, mixed_folder, tmp_path):
    out = tmp_path / "out"
    predict_paths(predictor, mixed_folder, out, progress=False)
    outputs = sorted(p for p in out.rglob("*.png"))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in outputs}
    calls = len(predictor.model.seen_shapes)

    again = predict_paths(predictor, mixed_folder, out, progress=False)
    assert (again.processed, again.skipped, len(again.failed)) == (0, 7, 1)
    assert len(predictor.model.seen_shapes) == calls  # the network did not run
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in outputs} == before

    # a crash that lost panoptic.json loses nothing: the per-image records rebuild it
    (out / "panoptic.json").unlink()
    predict_paths(predictor, mixed_folder, out, progress=False)
    _check_files(out, predictor.spec)

    for p in outputs:
        os.utime(p, ns=(1, 1))
    redo = predict_paths(predictor, mixed_folder, out, overwrite=True, progress=False)
    assert (redo.processed, redo.skipped) == (7, 0)
    for p in outputs:
        assert p.stat().st_mtime_ns != 1
        assert p.read_bytes() == before[p][1]  # same model, same files


def test_save_raw_and_single_file_and_glob(predictor, mixed_folder, tmp_path):
    out = tmp_path / "out"
    summary = predict_paths(predictor, mixed_folder / "b.jpg", out, save_raw=True, progress=False)
    assert summary.processed == 1 and not summary.failed
    with np.load(out / "raw" / "b.npz") as raw:
        assert raw["center_heatmap"].shape == (24, 32) and raw["center_heatmap"].dtype == np.float16
        assert raw["offsets"].shape == (2, 24, 32)
        assert raw["centers"].ndim == 2 and raw["centers"].shape[1] == 2
        assert raw["semantic"].shape == (24, 32)
    from pdlkit.inference import read_image

    prediction = predictor(read_image(mixed_folder / "b.jpg"))
    with np.load(out / "raw" / "b.npz") as raw:
        np.testing.assert_allclose(raw["center_heatmap"], prediction.center_heatmap, atol=2e-3)
        np.testing.assert_array_equal(raw["centers"], prediction.centers)
        np.testing.assert_array_equal(raw["semantic"], prediction.semantic)

    globbed = predict_paths(predictor, str(mixed_folder / "city*" / "*.png"), tmp_path / "g", progress=False)
    assert globbed.processed == 2 and len(globbed.failed) == 1
    assert (tmp_path / "g" / "panoptic" / "city1" / "same.png").is_file()
    assert (tmp_path / "g" / "panoptic" / "city2" / "other.png").is_file()


def test_same_output_name_in_one_folder_is_reported(predictor, tmp_path):
    rng = np.random.default_rng(0)
    _write_rgb(tmp_path / "in" / "x.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    _write_rgb(tmp_path / "in" / "x.bmp", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    summary = predict_paths(predictor, tmp_path / "in", tmp_path / "out", progress=False)
    assert summary.processed == 1
    assert len(summary.failed) == 1 and "same output name" in summary.failed[0][1]


def test_output_inside_the_input_folder_is_not_read_back(predictor, mixed_folder):
    out = mixed_folder / "predictions"
    first = predict_paths(predictor, mixed_folder, out, progress=False)
    second = predict_paths(predictor, mixed_folder, out, progress=False)
    assert (second.processed, second.skipped, len(second.failed)) == (0, first.processed, 1)


def test_empty_and_missing_input(predictor, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PdlError, match="no images found"):
        predict_paths(predictor, tmp_path / "empty", tmp_path / "out", progress=False)
    with pytest.raises(PdlError, match="no such file or folder"):
        predict_paths(predictor, tmp_path / "nope", tmp_path / "out", progress=False)


def test_file_ids_use_the_dataset_label_divisor(tmp_path):
    """Prediction files are in dataset space: ids are category_id * spec.label_divisor + k, whatever
    label divisor the merge used internally (post.label_divisor), so that evaluation, which decodes
    with the spec's divisor, reads them back."""
    spec = toy_spec()
    image = np.random.default_rng(3).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), image)
    outputs = {}
    for divisor in (1000, 256):
        cfg = small_config()
        cfg.post.label_divisor = divisor
        predictor = Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), cfg, spec, "cpu")
        out = tmp_path / f"out{divisor}"
        assert predict_paths(predictor, folder, out, progress=False).ok
        record = json.loads((out / "panoptic.json").read_text())["annotations"][0]
        ids = rgb_to_id(cv2.imread(str(out / "panoptic" / "a.png"))[..., ::-1])
        outputs[divisor] = (record["segments_info"], ids)
        things = [s for s in record["segments_info"] if s["category_id"] in (24, 26)]
        assert things, "the fake network should give thing segments"
        for segment in record["segments_info"]:
            assert segment["id"] // spec.label_divisor == segment["category_id"]
    assert outputs[1000][0] == outputs[256][0]
    np.testing.assert_array_equal(outputs[1000][1], outputs[256][1])
