"""``pdl convert``: its Cityscapes output scored by the official instance evaluator equals pdl eval's AP."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
import scenes  # noqa: E402

from pdlkit.cli.main import cli  # noqa: E402


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def test_convert_then_official_ap_equals_pdl_eval(toy_root, tmp_path):
    # (Some seeds give a class whose every prediction is ignored while its targets are all missed;
    # the official tool then fails with an IndexError, pdl eval scores the class 0.  This one not.)
    predictions = scenes.write_predictions(toy_root, "val", tmp_path / "pred", seed=33, perturb=True)
    result = _run("convert", predictions, "--output", tmp_path / "instances", "--format", "cityscapes", "-q")
    assert result.exit_code == 0, result.output
    assert "instances of 3 images" in result.output
    official = scenes.official_instance(toy_root, "val", tmp_path / "instances", tmp_path)["averages"]

    metrics = tmp_path / "metrics.json"
    result = _run("eval", "--data", toy_root, "--predictions", predictions, "--json", metrics, "-q")
    assert result.exit_code == 0, result.output
    ours = json.loads(metrics.read_text())
    assert ours["AP"] == pytest.approx(100 * official["allAp"], abs=1e-4)
    assert ours["AP50"] == pytest.approx(100 * official["allAp50%"], abs=1e-4)


def test_convert_coco_and_errors(toy_root, tmp_path):
    predictions = scenes.write_predictions(toy_root, "val", tmp_path / "pred", seed=32, perturb=False)
    # Without the dataset, string image ids cannot become COCO's integers: say which flags help.
    result = _run("convert", predictions, "--output", tmp_path / "coco", "--format", "coco", "-q")
    assert result.exit_code == 1 and "--data ROOT --split NAME" in result.output
    result = _run("convert", predictions, "--output", tmp_path / "coco", "--format", "coco", "-q",
                  "--data", toy_root, "--split", "val")
    assert result.exit_code == 0, result.output
    results = json.loads((tmp_path / "coco" / "coco_instances_results.json").read_text())
    assert results and all(isinstance(r["segmentation"]["counts"], str) for r in results)
    # the toy set's json names its images by string ids: those are written as they are
    gt = json.loads((toy_root / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    assert {r["image_id"] for r in results} <= {im["id"] for im in gt["images"]}

    missing = _run("convert", tmp_path / "nothing", "--output", tmp_path / "out")
    assert missing.exit_code == 1 and "predictions folder does not exist" in missing.output
    assert "Traceback" not in missing.output
    assert _run("convert", predictions, "--output", tmp_path / "out", "--format", "voc").exit_code == 2
