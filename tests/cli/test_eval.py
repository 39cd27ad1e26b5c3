"""``pdl eval``: table, --json, equality with the library, and one-sentence user errors."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evaluation"))
import scenes  # noqa: E402  (hand-made predictions shared with the evaluation tests)

from pdlkit.cli.main import cli  # noqa: E402


@pytest.fixture(scope="module")
def toy_predictions(toy_root, tmp_path_factory):
    return scenes.write_predictions(toy_root, "val", tmp_path_factory.mktemp("toy_pred"), seed=21, perturb=True)


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def test_eval_predictions_prints_table_and_writes_json(toy_root, toy_predictions, tmp_path):
    from pdlkit.evaluation import evaluate_predictions

    out = tmp_path / "metrics.json"
    result = _run("eval", "--data", toy_root, "--predictions", toy_predictions, "--json", out, "-q")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output and "AP50" in result.output and "things" in result.output
    written = json.loads(out.read_text())
    expected = evaluate_predictions(toy_root, "val", toy_predictions, progress=False)
    for key in ("PQ", "SQ", "RQ", "mIoU", "AP", "AP50"):
        assert written[key] == pytest.approx(expected[key], abs=1e-12)
    assert written["things"]["n"] == expected["things"]["n"]
    assert f"{expected['PQ']:.1f}" in result.output


def test_no_ap_leaves_ap_out(toy_root, toy_predictions, tmp_path):
    out = tmp_path / "metrics.json"
    result = _run("eval", "--data", toy_root, "--predictions", toy_predictions, "--json", out, "--no-ap", "-q")
    assert result.exit_code == 0, result.output
    assert "AP" not in json.loads(out.read_text())


def _one_sentence_error(result, *fragments):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_wrong_data_root(tmp_path, toy_predictions):
    _one_sentence_error(_run("eval", "--data", tmp_path / "nowhere", "--predictions", toy_predictions),
                        "nowhere", "does not exist")
    (tmp_path / "empty").mkdir()
    _one_sentence_error(_run("eval", "--data", tmp_path / "empty", "--predictions", toy_predictions),
                        "not a prepared dataset root", "pdl prepare")


def test_missing_predictions_and_weights(toy_root, tmp_path):
    _one_sentence_error(_run("eval", "--data", toy_root, "--predictions", tmp_path / "preds"),
                        "preds", "predictions folder does not exist")
    (tmp_path / "half").mkdir()
    _one_sentence_error(_run("eval", "--data", toy_root, "--predictions", tmp_path / "half"),
                        "panoptic.json")
    _one_sentence_error(_run("eval", "--data", toy_root, "--weights", tmp_path / "model.pt"),
                        "model.pt", "weights file not found")


def test_images_without_prediction_are_named(toy_root, toy_predictions, tmp_path):
    import shutil

    pred = tmp_path / "pred"
    shutil.copytree(toy_predictions, pred)
    index = json.loads((pred / "panoptic.json").read_text())
    dropped = index["annotations"].pop(1)["image_id"]
    (pred / "panoptic.json").write_text(json.dumps(index))
    _one_sentence_error(_run("eval", "--data", toy_root, "--predictions", pred), dropped, "no prediction")


def test_weights_and_predictions_are_exclusive(toy_root, toy_predictions):
    assert _run("eval", "--data", toy_root).exit_code == 2
    assert _run("eval", "--data", toy_root, "--predictions", toy_predictions, "--weights", "x.pt").exit_code == 2


@pytest.mark.slow
def test_eval_weights_equals_predict_then_eval(toy_root, toy_checkpoint, tmp_path):
    """--weights predicts the split first; the numbers equal pdl predict + pdl eval --predictions."""
    with_weights = tmp_path / "a.json"
    result = _run("eval", "--data", toy_root, "--weights", toy_checkpoint, "--device", "cpu",
                  "--json", with_weights, "-q")
    assert result.exit_code == 0, result.output
    predictions = tmp_path / "preds"
    result = _run("predict", toy_root / "leftImg8bit" / "val", "--weights", toy_checkpoint,
                  "--output", predictions, "--device", "cpu", "-q")
    assert result.exit_code == 0, result.output
    with_predictions = tmp_path / "b.json"
    result = _run("eval", "--data", toy_root, "--predictions", predictions, "--json", with_predictions, "-q")
    assert result.exit_code == 0, result.output
    a, b = json.loads(with_weights.read_text()), json.loads(with_predictions.read_text())
    assert a == b
    assert a["num_images"] == 3 and 0.0 <= a["PQ"] <= 100.0
    # The model's own prediction files, scored by the official evaluators, give the same numbers.
    official = scenes.official_panoptic(toy_root, "val", predictions, tmp_path)
    assert a["PQ"] == pytest.approx(100 * official["All"]["pq"], abs=1e-6)
    pixel = scenes.official_pixel(toy_root, "val", predictions)
    assert a["mIoU"] == pytest.approx(100 * pixel["averageScoreClasses"], abs=1e-6)


def test_unprepared_coco_format_folders_name_their_prepare_command(tmp_path, toy_predictions):
    """The advice fits the layout the user has: COCO names, Vistas names, or anything else."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    import custom_dataset as custom

    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "annotations" / "panoptic_val2017.json").write_text("{}")
    _one_sentence_error(_run("eval", "--data", tmp_path / "coco", "--predictions", toy_predictions),
                        f"run `pdl prepare coco {tmp_path / 'coco'}`")
    custom.write_vistas(tmp_path / "vistas", train=1, val=1)
    _one_sentence_error(_run("eval", "--data", tmp_path, "--predictions", toy_predictions), "pdl prepare panoptic")
    _one_sentence_error(_run("eval", "--data", tmp_path / "vistas", "--predictions", toy_predictions),
                        f"run `pdl prepare vistas {tmp_path / 'vistas'}`")


def test_duplicate_and_null_predictions_are_one_sentence(toy_root, toy_predictions, tmp_path):
    import shutil

    pred = tmp_path / "pred"
    shutil.copytree(toy_predictions, pred)
    index = json.loads((pred / "panoptic.json").read_text())
    first = index["annotations"][0]["image_id"]
    index["annotations"].append(dict(index["annotations"][0]))
    (pred / "panoptic.json").write_text(json.dumps(index))
    _one_sentence_error(_run("eval", "--data", toy_root, "--predictions", pred), f"image_id '{first}' appears twice")
    index["annotations"].pop()
    index["annotations"][0]["segments_info"] = None
    (pred / "panoptic.json").write_text(json.dumps(index))
    _one_sentence_error(_run("eval", "--data", toy_root, "--predictions", pred), "segments_info", "must be a list")
