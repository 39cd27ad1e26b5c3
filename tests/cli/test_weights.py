"""`pdl weights import`: detectron2 and torchvision files through the CLI, exit codes and messages."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from pdlkit.cli.main import cli
from pdlkit.config import load_config
from pdlkit.modeling import build_model
from pdlkit.modeling.detectron2_import import pdlkit_to_detectron2_name

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "configs" / "toy.yaml"


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def _detectron2_pickle(path: Path, *, drop=None) -> dict:
    """The toy model's weights under detectron2's names, pickled as detectron2's model zoo does."""
    cfg = load_config(TOY)
    torch.manual_seed(0)
    state = build_model(cfg.model, 19).state_dict()
    arrays = {}
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue  # detectron2 .pkl files may omit it; the import keeps pdlkit's 0
        perturbed = value + 0.01 * torch.randn_like(value)  # distinct from a fresh model's values
        if name.endswith("running_var"):
            perturbed = perturbed.abs() + 0.5
        arrays[pdlkit_to_detectron2_name(name)] = perturbed.numpy()
    if drop:
        del arrays[drop]
    with open(path, "wb") as handle:
        pickle.dump({"model": arrays, "__author__": "test", "matching_heuristics": True}, handle)
    return arrays


def test_import_detectron2_model(tmp_path):
    arrays = _detectron2_pickle(tmp_path / "model_final.pkl")
    out = tmp_path / "imported.pt"
    result = _run("weights", "import", tmp_path / "model_final.pkl", "--from", "detectron2", "--config", TOY,
                  "--output", out)
    assert result.exit_code == 0, result.output
    assert "imported" in result.output
    checkpoint = torch.load(out, weights_only=True)
    assert checkpoint["config"] == load_config(TOY).to_dict() | {
        "model": {**load_config(TOY).to_dict()["model"], "pretrained": "none"}
    }
    assert checkpoint["dataset"]["name"] == "cityscapes"
    assert torch.equal(checkpoint["model"]["backbone.layer2.0.downsample.1.running_var"],
                       torch.from_numpy(arrays["backbone.res3.0.shortcut.norm.running_var"]))
    assert torch.equal(checkpoint["model"]["instance_branch.center_predictor.bias"],
                       torch.from_numpy(arrays["ins_embed_head.center_predictor.bias"]))

    from pdlkit.inference import Predictor

    prediction = Predictor(out)(np.zeros((40, 60, 3), np.uint8))
    assert prediction.panoptic.shape == (40, 60)


def test_import_errors_are_one_sentence(tmp_path):
    _detectron2_pickle(tmp_path / "broken.pkl", drop="sem_seg_head.head.pointwise.norm.bias")
    result = _run("weights", "import", tmp_path / "broken.pkl", "--from", "detectron2", "--config", TOY,
                  "--output", tmp_path / "x.pt")
    assert result.exit_code == 1
    assert "missing key 'sem_seg_head.head.pointwise.norm.bias'" in result.output
    assert "semantic_branch.head.pointwise.norm.bias" in result.output
    assert not (tmp_path / "x.pt").exists()

    result = _run("weights", "import", tmp_path / "broken.pkl", "--from", "detectron2", "--output", tmp_path / "x.pt")
    assert result.exit_code == 1 and "needs --config" in result.output

    result = _run("weights", "import", tmp_path / "nope.pkl", "--from", "detectron2", "--config", TOY,
                  "--output", tmp_path / "x.pt")
    assert result.exit_code == 1 and "nope.pkl: weights file not found" in result.output

    result = _run("weights", "import", tmp_path / "broken.pkl", "--from", "caffe", "--output", tmp_path / "x.pt")
    assert result.exit_code == 2


def test_import_torchvision_backbone(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(reference, tmp_path / "resnet18.pth")
    out = tmp_path / "r18.pt"
    result = _run("weights", "import", tmp_path / "resnet18.pth", "--from", "torchvision", "--backbone", "resnet18",
                  "--output", out)
    assert result.exit_code == 0, result.output
    assert "dropped fc.weight, fc.bias" in result.output or "dropped fc.bias, fc.weight" in result.output
    cfg = load_config(TOY, [f"model.pretrained={out}"])
    model = build_model(cfg.model, 19)
    assert torch.equal(model.backbone.layer3[1].conv2.weight,
                       reference["layer3.1.conv2.weight"])

    result = _run("weights", "import", tmp_path / "resnet18.pth", "--from", "torchvision", "--output", out)
    assert result.exit_code == 1 and "needs --config or --backbone" in result.output
    result = _run("weights", "import", tmp_path / "resnet18.pth", "--from", "torchvision", "--backbone", "resnet50",
                  "--output", out)
    assert result.exit_code == 1 and "resnet18.pth" in result.output
