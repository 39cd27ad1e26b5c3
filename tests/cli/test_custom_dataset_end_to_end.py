"""A user's own COCO-panoptic dataset through every command, as docs/custom_data.md walks it:
prepare -> train (periodic evaluation on) -> eval -> predict -> eval -> convert -> visualize, each
with exit code 0; pdl eval of the predictions equals panopticapi's algorithm (cityscapesscripts'
evaluatePanoptic) and the converted instances load in pycocotools."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import custom_dataset as custom  # noqa: E402

from pdlkit.cli.main import cli  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "model.aspp_channels=16", "model.aspp_dropout=0.0", "model.semantic_decoder_channels=16",
    "model.semantic_head_channels=16", "model.semantic_low_level_channels=[8,8]",
    "model.instance_decoder_channels=16", "model.instance_low_level_channels=[8,8]",
    "model.instance_head_channels=8", "data.crop_size=[64,96]", "data.num_workers=0", "solver.batch_size=2",
    "solver.warmup_iters=0", "solver.max_iter=4", "solver.checkpoint_period=1000", "test.eval_period=2",
    "data.dataset=coco",
]


def _ok(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, (args[:2], result.output)
    return result.output


@pytest.mark.slow
def test_own_dataset_end_to_end(tmp_path):
    root, run = tmp_path / "mine", tmp_path / "run"
    splits = custom.write_custom(root, train=4, val=3)
    for split, (images, json_file, masks) in splits.items():
        _ok("prepare", "panoptic", root, "--split", split, "--images", images, "--json", json_file, "--masks", masks)

    _ok("train", "--config", REPO / "configs" / "toy.yaml", "--data", root, "--output", run, "--quiet",
        *[arg for item in TINY for arg in ("--set", item)])
    periodic = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [m["iteration"] for m in periodic if "eval" in m]
    assert evaluated[0] == 2 and evaluated[-1] == 4  # periodic at iteration 2, final at 4
    assert all("PQ" in m["eval"] for m in periodic if "eval" in m)
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["num_images"] == 3 and set(final["per_class"]) == {
        "person", "bicycle", "dog", "road", "grass", "sky"}

    weights = run / "model_final.pt"
    _ok("eval", "--data", root, "--weights", weights, "--json", tmp_path / "by_weights.json", "-q")
    _ok("predict", splits["val"][0], "--weights", weights, "--output", tmp_path / "pred", "--quiet")
    _ok("eval", "--data", root, "--predictions", tmp_path / "pred", "--json", tmp_path / "by_pred.json", "-q")
    by_weights = json.loads((tmp_path / "by_weights.json").read_text())
    by_pred = json.loads((tmp_path / "by_pred.json").read_text())
    assert by_pred == by_weights  # one predict-and-evaluate path, same numbers
    official = custom.official_pq(splits["val"][1], splits["val"][2], tmp_path / "pred", tmp_path / "work")
    assert by_pred["PQ"] == pytest.approx(100 * official["All"]["pq"], abs=1e-9)
    assert by_pred["stuff"]["PQ"] == pytest.approx(100 * official["Stuff"]["pq"], abs=1e-9)

    _ok("convert", tmp_path / "pred", "--output", tmp_path / "coco", "--format", "coco", "--data", root,
        "--split", "val", "-q")
    assert json.loads((tmp_path / "coco" / "coco_instances_results.json").read_text()) == []  # 4 iterations: no things
    _ok("visualize", tmp_path / "pred", "--output", tmp_path / "vis", "-q")
    assert len(list((tmp_path / "vis").rglob("*.png"))) == 3


@pytest.mark.parametrize("perturb", [False, True])
def test_cli_eval_and_convert_match_the_references(tmp_path, perturb):
    """pdl eval = evaluatePanoptic on perfect and perturbed predictions; pdl convert's instances load
    in pycocotools and score the AP pdl eval reports."""
    root = tmp_path / "mine"
    splits = custom.write_custom(root, train=1, val=4)
    for split, (images, json_file, masks) in splits.items():
        _ok("prepare", "panoptic", root, "--split", split, "--images", images, "--json", json_file, "--masks", masks)
    images, json_file, masks = splits["val"]
    data = json.loads(json_file.read_text())
    pred = custom.write_predictions(images, masks, data, tmp_path / "pred", seed=8, perturb=perturb)
    _ok("eval", "--data", root, "--predictions", pred, "--json", tmp_path / "m.json", "-q")
    ours = json.loads((tmp_path / "m.json").read_text())
    official = custom.official_pq(json_file, masks, pred, tmp_path / "work")
    for group, name in ((ours, "All"), (ours["things"], "Things"), (ours["stuff"], "Stuff")):
        for metric in ("PQ", "SQ", "RQ"):
            assert group[metric] == pytest.approx(100 * official[name][metric.lower()], abs=1e-9)
    assert (ours["PQ"] == pytest.approx(100.0)) is not perturb

    _ok("convert", pred, "--output", tmp_path / "coco", "--format", "coco", "--data", root, "--split", "val", "-q")
    results = tmp_path / "coco" / "coco_instances_results.json"
    assert {r["image_id"] for r in json.loads(results.read_text())} <= {2000, 2007, 2014, 2021}
    ap, ap50 = custom.pycocotools_ap(custom.coco_instances_gt(data, masks), results)  # COCO.loadRes reads it
    assert ours["AP"] == pytest.approx(ap, abs=1e-9) and ours["AP50"] == pytest.approx(ap50, abs=1e-9)
