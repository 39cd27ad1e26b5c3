"""ONNX / TorchScript export: outputs equal PyTorch's on several input sizes, metadata round trips,
onnxruntime as an optional dependency."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from pdlkit.config import load_config
from pdlkit.data.spec import cityscapes_spec
from pdlkit.errors import PdlError
from pdlkit.export import export_model, read_export_metadata
from pdlkit.inference.onnx_runtime import OnnxNetwork
from pdlkit.modeling import build_model

REPO = Path(__file__).resolve().parents[1]


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights and batch-norm statistics that give outputs of order 1 (fresh predictors give ~1e-4)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / math.sqrt(fan_in))
                if module.bias is not None:
                    module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(0.1 * torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(module.running_var.shape, generator=generator))
    return model.eval()


def toy_model(pooling=None):
    cfg = load_config(REPO / "configs" / "toy.yaml")
    cfg.model.aspp_pooling_size = pooling
    return randomise(build_model(cfg.model, 19)), cfg


CASES = {
    "global-pooling": (None, [(64, 128), (80, 176)]),
    # a fixed ASPP pooling window (the detectron2 checkpoints' setting), inputs at least that large
    "window-pooling": ((64, 128), [(64, 128), (96, 160)]),
    # sizes that are not multiples of the stride: the exported graph pads and crops itself
    "odd-sizes": (None, [(50, 77), (33, 129)]),
}


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    pooling, sizes = CASES[request.param]
    model, cfg = toy_model(pooling)
    folder = tmp_path_factory.mktemp("export")
    onnx_path = export_model(model, cfg, cityscapes_spec(), folder / "toy.onnx", format="onnx")
    ts_path = export_model(model, cfg, cityscapes_spec(), folder / "toy.ts", format="torchscript")
    return model, cfg, onnx_path, ts_path, sizes


def _reference(model, images):
    with torch.no_grad():
        return model(images)


def test_onnx_equals_pytorch(exported):
    model, _, onnx_path, _, sizes = exported
    network = OnnxNetwork(onnx_path)
    for batch, (height, width) in zip((1, 2), sizes):
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
        want = _reference(model, images)
        got = network(images)
        for key in ("semantic", "center", "offset"):
            assert got[key].shape == want[key].shape
            assert want[key].abs().max() > 0.05
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-4)


def test_torchscript_equals_pytorch(exported):
    model, _, _, ts_path, sizes = exported
    scripted = torch.jit.load(str(ts_path))
    for batch, (height, width) in zip((2, 1), sizes):
        images = torch.randn(batch, 3, height, width, generator=torch.Generator().manual_seed(width))
        want = _reference(model, images)
        with torch.no_grad():
            got = dict(zip(("semantic", "center", "offset"), scripted(images)))
        for key in ("semantic", "center", "offset"):
            torch.testing.assert_close(got[key], want[key], rtol=1e-4, atol=1e-4)


def test_metadata_round_trips(exported):
    _, cfg, onnx_path, ts_path, _ = exported
    import onnx

    proto = onnx.load(str(onnx_path))
    assert max(op.version for op in proto.opset_import if op.domain in ("", "ai.onnx")) >= 17
    for path in (onnx_path, ts_path):
        meta = read_export_metadata(path)
        assert meta["config"] == cfg.to_dict()
        assert meta["dataset"] == cityscapes_spec().to_dict()
        assert meta["size_divisibility"] == 16
    network = OnnxNetwork(onnx_path)
    assert network.spec == cityscapes_spec()
    assert network.config.model.backbone == cfg.model.backbone
    assert json.loads({p.key: p.value for p in proto.metadata_props}["pdlkit_config"])["data"]["mean"] == list(
        cfg.data.mean
    )
    assert not [p for p in onnx_path.parent.iterdir() if p.name.endswith(".tmp")]


def test_failed_export_leaves_no_file(tmp_path):
    model, cfg = toy_model()
    with pytest.raises(PdlError, match="opset 13 is too old"):
        export_model(model, cfg, cityscapes_spec(), tmp_path / "m.onnx", opset=13)
    with pytest.raises(PdlError, match="unknown export format"):
        export_model(model, cfg, cityscapes_spec(), tmp_path / "m.x", format="tflite")
    assert list(tmp_path.iterdir()) == []


def test_onnx_without_metadata_or_runtime_is_a_clear_error(tmp_path, monkeypatch):
    bare = tmp_path / "bare.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 3, 1), (torch.zeros(1, 3, 4, 4),), str(bare), dynamo=False,
                      input_names=["images"], output_names=["semantic"])
    with pytest.raises(PdlError, match="no pdlkit metadata"):
        OnnxNetwork(bare)
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(PdlError, match="junk.onnx: not a loadable ONNX file"):
        OnnxNetwork(tmp_path / "junk.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if it were not installed
    with pytest.raises(PdlError, match="needs onnxruntime, which is not installed: pip install onnxruntime"):
        OnnxNetwork(bare)


def test_predictor_runs_onnx_like_pytorch(exported):
    from pdlkit.inference import Predictor

    model, cfg, onnx_path, _, sizes = exported
    height, width = sizes[0]
    image = np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    through_onnx = Predictor(onnx_path)(image)
    through_torch = Predictor.from_model(model, cfg, cityscapes_spec(), "cpu")(image)
    np.testing.assert_allclose(through_onnx.center_heatmap, through_torch.center_heatmap, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(through_onnx.offsets, through_torch.offsets, rtol=1e-4, atol=1e-4)
    agreement = (through_onnx.semantic == through_torch.semantic).mean()
    assert agreement > 0.999  # argmax may differ only where two logits tie within float error


def test_onnx_export_without_onnx_names_the_package(tmp_path, monkeypatch):
    model, cfg = toy_model()
    monkeypatch.setitem(sys.modules, "onnx", None)  # as if it were not installed
    with pytest.raises(PdlError, match=r"^ONNX export needs the onnx package, which is not installed: pip install onnx$"):
        export_model(model, cfg, cityscapes_spec(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
