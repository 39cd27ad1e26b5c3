"""prepare_cityscapes (and prepare_toy): layout checks, labelTrainIds, panoptic ground truth, skipping,
no half-written output."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pdlkit.data import generate_toy, prepare_cityscapes
from pdlkit.errors import DataError


def _train_id_lut() -> np.ndarray:
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, 255, np.uint8)
    for label in labels:
        if label.id >= 0:
            lut[label.id] = label.trainId if label.trainId >= 0 else 255
    return lut


def _rgb2id(path: Path) -> np.ndarray:
    rgb = np.asarray(Image.open(path).convert("RGB")).astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@pytest.fixture
def raw_toy(tmp_path) -> Path:
    return generate_toy(tmp_path / "toy", train=2, val=1, height=64, width=96, seed=5)


def test_train_ids_equal_the_label_ids_mapped_by_the_official_table(toy_root):
    lut = _train_id_lut()
    files = sorted((toy_root / "gtFine").rglob("*_gtFine_labelIds.png"))
    assert len(files) == 9
    for label_file in files:
        train_file = label_file.with_name(label_file.name.replace("_labelIds", "_labelTrainIds"))
        train_ids = np.asarray(Image.open(train_file))
        assert train_ids.dtype == np.uint8
        assert np.array_equal(train_ids, lut[np.asarray(Image.open(label_file))])


def test_panoptic_json_and_pngs_agree_with_the_instance_maps(toy_root):
    from cityscapesscripts.helpers.labels import id2label

    for split, count in (("train", 6), ("val", 3)):
        data = json.loads((toy_root / "gtFine" / f"cityscapes_panoptic_{split}.json").read_text())
        assert [c["id"] for c in data["categories"]] == [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26,
                                                          27, 28, 31, 32, 33]
        assert len(data["images"]) == len(data["annotations"]) == count
        for ann in data["annotations"]:
            city = ann["image_id"].split("_")[0]
            instance_map = np.asarray(Image.open(
                toy_root / "gtFine" / split / city / f"{ann['image_id']}_gtFine_instanceIds.png")).astype(np.int64)
            ids = _rgb2id(toy_root / "gtFine" / f"cityscapes_panoptic_{split}" / ann["file_name"])
            # every evaluated pixel keeps its instance id; void classes become 0
            evaluated = np.vectorize(lambda v: not id2label[int(v) // 1000 if v >= 1000 else int(v)].ignoreInEval)(
                instance_map)
            assert np.array_equal(ids, np.where(evaluated, instance_map, 0))
            present = set(np.unique(ids).tolist()) - {0}
            assert {s["id"] for s in ann["segments_info"]} == present
            for seg in ann["segments_info"]:
                assert seg["area"] == int(np.sum(ids == seg["id"]))
                label_id = seg["id"] // 1000 if seg["id"] >= 1000 else seg["id"]
                assert seg["category_id"] == label_id
                assert seg["iscrowd"] == int(seg["id"] < 1000 and id2label[label_id].hasInstances)


def test_official_panoptic_evaluator_reads_the_ground_truth(toy_root, tmp_path):
    """cityscapesscripts' evaluator accepts the files; the ground truth against itself scores PQ 100."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    gt = toy_root / "gtFine"
    results = evaluatePanoptic(str(gt / "cityscapes_panoptic_val.json"), str(gt / "cityscapes_panoptic_val"),
                               str(gt / "cityscapes_panoptic_val.json"), str(gt / "cityscapes_panoptic_val"),
                               str(tmp_path / "results.json"))
    assert results["All"]["pq"] == pytest.approx(1.0)
    assert results["Things"]["n"] >= 3 and results["Stuff"]["n"] >= 4


def test_rerun_skips_existing_outputs(raw_toy):
    first = prepare_cityscapes(raw_toy, progress=False)
    assert first["train_ids_written"] == 3 and first["panoptic_written"] == ["train", "val"]
    outputs = [p for p in (raw_toy / "gtFine").rglob("*") if p.is_file() and "panoptic" in p.name
               or p.name.endswith("_labelTrainIds.png")]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    second = prepare_cityscapes(raw_toy, progress=False)
    assert second["train_ids_written"] == 0 and second["train_ids_skipped"] == 3
    assert second["panoptic_written"] == [] and second["panoptic_skipped"] == ["train", "val"]
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    # a deleted output is recreated, the rest kept
    victim = next((raw_toy / "gtFine" / "val").rglob("*_labelTrainIds.png"))
    victim.unlink()
    shutil.rmtree(raw_toy / "gtFine" / "cityscapes_panoptic_val")
    third = prepare_cityscapes(raw_toy, progress=False)
    assert third["train_ids_written"] == 1 and third["panoptic_written"] == ["val"]
    assert victim.is_file()


def test_failed_conversion_leaves_no_partial_output(raw_toy, monkeypatch):
    import cityscapesscripts.preparation.createPanopticImgs as official

    real = official.convert2panoptic

    def crash_after_writing(cityscapesPath, outputFolder, useTrainId, setNames):
        real(cityscapesPath=cityscapesPath, outputFolder=outputFolder, useTrainId=useTrainId, setNames=setNames)
        raise KeyboardInterrupt  # interrupted after the pngs and json exist, before they are moved

    monkeypatch.setattr(official, "convert2panoptic", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        prepare_cityscapes(raw_toy, progress=False)
    gt = raw_toy / "gtFine"
    assert not (gt / "cityscapes_panoptic_train.json").exists()
    assert not (gt / "cityscapes_panoptic_train").exists()
    assert [p.name for p in gt.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr(official, "convert2panoptic", real)
    assert prepare_cityscapes(raw_toy, progress=False)["panoptic_written"] == ["train", "val"]
    # a png folder without its json (an interrupted move) is redone, not trusted
    (gt / "cityscapes_panoptic_val.json").unlink()
    assert prepare_cityscapes(raw_toy, progress=False)["panoptic_written"] == ["val"]
    assert not [p for p in raw_toy.rglob("*") if p.name.endswith(".tmp")]


def test_environment_is_restored(raw_toy, monkeypatch):
    import os

    monkeypatch.setenv("CITYSCAPES_DATASET", "/somewhere/else")
    prepare_cityscapes(raw_toy, progress=False)
    assert os.environ["CITYSCAPES_DATASET"] == "/somewhere/else"


@pytest.mark.parametrize(
    "break_it, expected",
    [
        (lambda r: shutil.rmtree(r / "gtFine"), ["gtFine/"]),
        (lambda r: shutil.rmtree(r / "leftImg8bit"), ["leftImg8bit/"]),
        (lambda r: shutil.rmtree(r / "gtFine" / "val"), ["gtFine/val/"]),
        (lambda r: [p.unlink() for p in (r / "gtFine" / "train").rglob("*_instanceIds.png")],
         ["_gtFine_instanceIds.png", "and 0 more"]),
        (lambda r: [p.unlink() for p in r.rglob("*_polygons.json")], ["_gtFine_polygons.json"]),
        (lambda r: [shutil.rmtree(r / "leftImg8bit" / s) for s in ("train", "val")],
         ["leftImg8bit/train/", "leftImg8bit/val/"]),
    ],
)
def test_broken_layout_names_what_is_missing(raw_toy, break_it, expected):
    break_it(raw_toy)
    with pytest.raises(DataError) as info:
        prepare_cityscapes(raw_toy, progress=False)
    message = str(info.value)
    assert message.startswith(f"{raw_toy} is not a complete Cityscapes layout; missing: ")
    assert "\n" not in message
    for part in expected:
        if part == "and 0 more":
            assert "more" not in message  # only 2 files missing: all named
        else:
            assert part in message
    assert not list(raw_toy.rglob("*_labelTrainIds.png"))  # nothing written before the check passes


def test_many_missing_files_are_summarised(raw_toy):
    for p in raw_toy.rglob("*_gtFine_*"):
        p.unlink()
    with pytest.raises(DataError, match=r"and 1 more$"):
        prepare_cityscapes(raw_toy, progress=False)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        prepare_cityscapes(tmp_path / "nope", progress=False)
