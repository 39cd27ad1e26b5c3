"""Speed options of the Predictor on the toy checkpoint: bfloat16 keeps PQ within 0.5 of float32,
the float32 speed-ups (folded batch norms, channels-last) keep the predictions."""
from __future__ import annotations

import numpy as np

from pdlkit.evaluation import evaluate_predictions
from pdlkit.inference import Predictor, predict_paths, read_image


def _evaluate(predictor, toy_root, out):
    summary = predict_paths(predictor, str(toy_root / "leftImg8bit" / "val"), out, progress=False)
    assert summary.processed == 3 and not summary.failed
    return evaluate_predictions(toy_root, "val", out, spec=predictor.spec, compute_ap=False, progress=False,
                                num_workers=1)


def test_bf16_keeps_the_toy_pq(toy_root, toy_checkpoint, tmp_path):
    fp32 = Predictor(toy_checkpoint)
    bf16 = Predictor(toy_checkpoint, precision="bf16")
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    pq = {name: _evaluate(p, toy_root, tmp_path / name)["PQ"] for name, p in (("fp32", fp32), ("bf16", bf16))}
    assert abs(pq["bf16"] - pq["fp32"]) <= 0.5, pq

    image = read_image(sorted((toy_root / "leftImg8bit" / "val").rglob("*.png"))[0])
    agree = np.mean(fp32(image).semantic == bf16(image).semantic)
    assert agree > 0.95


def test_fp32_speedups_keep_the_predictions(toy_root, toy_checkpoint):
    plain = Predictor(toy_checkpoint)
    fast = Predictor(toy_checkpoint)
    fast.cfg.test.fold_bn = fast.cfg.test.channels_last = True
    fast = Predictor.from_model(fast.model, fast.cfg, fast.spec, "cpu")
    for path in sorted((toy_root / "leftImg8bit" / "val").rglob("*.png")):
        image = read_image(path)
        want, got = plain(image), fast(image)
        np.testing.assert_allclose(got.center_heatmap, want.center_heatmap, rtol=0, atol=1e-3)
        np.testing.assert_allclose(got.offsets, want.offsets, rtol=0, atol=1e-3)
        assert np.mean(got.panoptic == want.panoptic) > 0.999


def test_pdl_predict_precision_option(toy_root, toy_checkpoint, tmp_path):
    import json

    from click.testing import CliRunner

    from pdlkit.cli.main import cli

    images = toy_root / "leftImg8bit" / "val"
    outputs = {}
    for precision in ("fp32", "bf16"):
        result = CliRunner().invoke(cli, ["predict", str(images), "--weights", str(toy_checkpoint), "--output",
                                          str(tmp_path / precision), "--precision", precision, "--quiet"])
        assert result.exit_code == 0, result.output
        outputs[precision] = json.loads((tmp_path / precision / "panoptic.json").read_text())["annotations"]
    assert [a["image_id"] for a in outputs["fp32"]] == [a["image_id"] for a in outputs["bf16"]]
    result = CliRunner().invoke(cli, ["predict", str(images), "--weights", str(toy_checkpoint), "--output",
                                      str(tmp_path / "x"), "--precision", "fp8"])
    assert result.exit_code == 2 and "fp8" in result.output
