"""`pdl export` and `pdl predict --weights model.onnx` on the toy checkpoint."""
from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pdlkit.cli.main import cli
from pdlkit.export import read_export_metadata


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_export_writes_both_formats_with_metadata(toy_checkpoint, tmp_path):
    checkpoint = torch.load(toy_checkpoint, weights_only=True)
    for fmt, name in (("onnx", "toy.onnx"), ("torchscript", "toy.ts")):
        result = _run("export", toy_checkpoint, "--format", fmt, "--output", tmp_path / name)
        assert result.exit_code == 0, result.output
        meta = read_export_metadata(tmp_path / name)
        assert meta["config"] == checkpoint["config"]
        assert meta["dataset"] == checkpoint["dataset"]


def test_export_errors(toy_checkpoint, tmp_path):
    result = _run("export", tmp_path / "missing.pt", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 1 and "missing.pt: checkpoint file not found" in result.output
    result = _run("export", toy_checkpoint, "--format", "tflite", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 2
    result = _run("export", toy_checkpoint, "--opset", "11", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 1 and "opset 11 is too old" in result.output
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_predict_through_onnx_writes_the_same_pngs(toy_checkpoint, toy_root, tmp_path):
    images = sorted((toy_root / "leftImg8bit" / "val").rglob("*.png"))[:3]
    assert images
    inputs = tmp_path / "in"
    inputs.mkdir()
    for image in images:
        shutil.copy(image, inputs / image.name)
    onnx_path = tmp_path / "toy.onnx"
    assert _run("export", toy_checkpoint, "--output", onnx_path).exit_code == 0

    for weights, out in ((toy_checkpoint, "torch"), (onnx_path, "onnx")):
        result = _run("predict", inputs, "--weights", weights, "--output", tmp_path / out, "--quiet")
        assert result.exit_code == 0, result.output

    torch_pngs = sorted((tmp_path / "torch" / "panoptic").rglob("*.png"))
    assert len(torch_pngs) == len(images)
    for png in torch_pngs:
        other = tmp_path / "onnx" / png.relative_to(tmp_path / "torch")
        np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED),
                                      cv2.imread(str(other), cv2.IMREAD_UNCHANGED), err_msg=png.name)


def test_onnx_export_without_onnx_says_which_package_to_install(toy_checkpoint, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    result = _run("export", toy_checkpoint, "--format", "onnx", "--output", tmp_path / "m.onnx")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: ONNX export needs the onnx package, which is not installed: pip install onnx"
    assert not (tmp_path / "m.onnx").exists()
    result = _run("export", toy_checkpoint, "--format", "torchscript", "--output", tmp_path / "m.ts")
    assert result.exit_code == 0, result.output  # TorchScript does not need it
