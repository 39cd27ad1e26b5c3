"""`pdl prepare`: exit codes, messages and the files it writes."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from pdlkit.cli.main import cli


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args):
        return runner.invoke(cli, ["prepare", *map(str, args)], catch_exceptions=False)

    return invoke


def test_help_lists_the_subcommands_with_examples(run):
    result = run("--help")
    assert result.exit_code == 0
    for word in ("toy", "cityscapes", "coco", "Examples:", "pdl prepare toy datasets/toy"):
        assert word in result.output
    for sub in ("toy", "cityscapes", "coco"):
        sub_help = run(sub, "--help")
        assert sub_help.exit_code == 0 and "Example" in sub_help.output


def test_toy_writes_a_prepared_dataset(run, tmp_path):
    out = tmp_path / "toy"
    result = run("toy", out, "--train", 2, "--val", 1, "--height", 64, "--width", 96, "--seed", 4, "-q")
    assert result.exit_code == 0, result.output
    assert "toy dataset ready" in result.output
    assert len(list((out / "leftImg8bit" / "train").rglob("*_leftImg8bit.png"))) == 2
    assert len(list(out.rglob("*_labelTrainIds.png"))) == 3
    val = json.loads((out / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    assert len(val["annotations"]) == 1
    # then `pdl prepare cityscapes` on it keeps everything
    again = run("cityscapes", out, "-q")
    assert again.exit_code == 0
    assert "written 0, kept 3" in again.output and "written: none, kept: train, val" in again.output


def test_user_errors_exit_1_with_one_sentence(run, tmp_path):
    (tmp_path / "cs" / "leftImg8bit" / "train").mkdir(parents=True)
    result = run("cityscapes", tmp_path / "cs")
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and "missing: gtFine/" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1

    coco = run("coco", tmp_path)
    assert coco.exit_code == 1 and "annotations/panoptic_train2017.json" in coco.output

    (tmp_path / "foreign" / "gtFine").mkdir(parents=True)
    toy = run("toy", tmp_path / "foreign", "-q")
    assert toy.exit_code == 1 and "did not write" in toy.output


def test_usage_errors_exit_2(run, tmp_path):
    assert run("toy", tmp_path / "x", "--train", -1).exit_code == 2
    assert run("toy", tmp_path / "x", "--height", 8).exit_code == 2
    assert run("toy").exit_code == 2
    assert run("kitti", tmp_path).exit_code == 2


def test_coco_prints_the_category_summary(run, tmp_path):
    import numpy as np
    from PIL import Image

    categories = [{"id": 5, "name": "sky", "isthing": 0}, {"id": 2, "name": "dog", "isthing": 1}]
    for split in ("train", "val"):
        (tmp_path / f"{split}2017").mkdir()
        (tmp_path / "annotations" / f"panoptic_{split}2017").mkdir(parents=True)
        Image.new("RGB", (8, 6)).save(tmp_path / f"{split}2017" / "a.jpg")
        ids = np.zeros((6, 8, 3), np.uint8)
        ids[:3, :, 0] = 1
        Image.fromarray(ids).save(tmp_path / "annotations" / f"panoptic_{split}2017" / "a.png")
        data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 6, "width": 8}],
                "annotations": [{"image_id": 1, "file_name": "a.png",
                                 "segments_info": [{"id": 1, "category_id": 5, "iscrowd": 0, "area": 24}]}],
                "categories": categories}
        (tmp_path / "annotations" / f"panoptic_{split}2017.json").write_text(json.dumps(data))
    result = run("coco", tmp_path)
    assert result.exit_code == 0, result.output
    assert "2 categories (1 things, 1 stuff); images per split: train 1, val 1" in result.output
    assert "data.dataset=coco" in result.output
    written = json.loads((tmp_path / "pdlkit_dataset.json").read_text())
    assert written["splits"]["val"] == {"images": "val2017", "json": "annotations/panoptic_val2017.json",
                                       "masks": "annotations/panoptic_val2017", "num_images": 1}
    assert written["spec"]["class_names"] == ["dog", "sky"]
