"""Files as detectron2 writes them: SyncBN state dicts with 0-d ``num_batches_tracked`` counters,
numpy arrays pickled with protocol 2 and 5 (with and without the model zoo's metadata), a
``DetectionCheckpointer`` ``.pth`` and torchvision files converted by ``convert-torchvision-to-d2.py``;
imported strictly through ``pdl weights import`` and through Python, for each published architecture."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from pdlkit.cli.main import cli
from pdlkit.config import load_config
from pdlkit.data.coco_format import MANIFEST_NAME
from pdlkit.data.spec import cityscapes_spec, coco_spec_from_categories
from pdlkit.errors import PdlError
from pdlkit.modeling import build_model
from pdlkit.modeling.detectron2_import import (
    import_backbone_weights,
    import_detectron2_model,
    read_detectron2_weights,
)

from .test_detectron2_import import detectron2_panoptic_deeplab_names

REPO = Path(__file__).resolve().parents[2]
PUBLISHED = {
    # config -> (DSConv layout, classes, num_batches_tracked counters in detectron2's model)
    "cityscapes_r52_dc5_d2.yaml": (False, 19, 83),
    "cityscapes_r52_dc5_d2_dsconv.yaml": (True, 19, 89),
    "coco_r52_dc5_d2_dsconv.yaml": (True, 133, 89),
}


def coco_manifest_root(tmp_path: Path) -> Path:
    """A folder with the manifest ``pdl prepare coco`` writes: 80 things and 53 stuff classes."""
    categories = [{"id": i + 1 if i < 80 else 92 + i, "name": f"c{i}", "isthing": int(i < 80)} for i in range(133)]
    root = tmp_path / "coco"
    root.mkdir(exist_ok=True)
    manifest = {"format": "coco_panoptic", "spec": coco_spec_from_categories(categories).to_dict(), "splits": {}}
    (root / MANIFEST_NAME).write_text(json.dumps(manifest))
    return root


def _config(name: str, tmp_path: Path):
    cfg = load_config(REPO / "configs" / name)
    if cfg.data.dataset == "coco":
        cfg.data.root = str(coco_manifest_root(tmp_path))
    return cfg


def _shapes(cfg, num_classes: int) -> dict:
    """pdlkit parameter shapes, keyed by the detectron2 names of the independent name list."""
    from pdlkit.modeling.detectron2_import import detectron2_key_map

    cfg = cfg.copy()
    cfg.model.pretrained = "none"
    model = build_model(cfg.model, num_classes)
    return {d2: tuple(model.state_dict()[pd].shape) for d2, pd in detectron2_key_map(model).items()}


def detectron2_syncbn_state(cfg, num_classes: int, dsconv: bool, seed: int = 0) -> dict:
    """What ``{k: v.numpy() for k, v in model.state_dict().items()}`` gives for detectron2's SyncBN
    Panoptic-DeepLab: float32 weights, int64 0-d counters after every norm, pixel_mean / pixel_std."""
    shapes = _shapes(cfg, num_classes)
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in detectron2_panoptic_deeplab_names(dsconv):
        shape = shapes[name]
        if name.endswith(("running_var", "norm.weight")):
            arrays[name] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        else:  # fan-in scaled, so that activations stay of order 1 through the 50-odd layers
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 20
            arrays[name] = (rng.standard_normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)
        if name.endswith("norm.running_var"):
            arrays[name[: -len("running_var")] + "num_batches_tracked"] = np.array(90000 + len(arrays), np.int64)
    arrays["pixel_mean"] = np.array([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
    arrays["pixel_std"] = np.array([58.395, 57.12, 57.375], np.float32).reshape(3, 1, 1)
    return arrays


def write_pkl(path: Path, arrays: dict, protocol: int, metadata: bool = True) -> Path:
    content = {"model": arrays}
    if metadata:
        content.update({"__author__": "Detectron2 Model Zoo", "matching_heuristics": True})
    with open(path, "wb") as handle:
        pickle.dump(content, handle, protocol=protocol)
    return path


def _check_imported(checkpoint: dict, arrays: dict, counters: int) -> None:
    state = checkpoint["model"]
    copied = {k: v for k, v in state.items() if k.endswith("num_batches_tracked")}
    assert len(copied) == counters
    assert all(v.shape == () and v.dtype == torch.int64 and int(v) > 90000 for v in copied.values())
    assert int(state["backbone.bn1.num_batches_tracked"]) == int(arrays["backbone.stem.conv1.norm.num_batches_tracked"])
    assert torch.equal(state["backbone.layer4.2.bn3.running_var"],
                       torch.from_numpy(arrays["backbone.res5.2.conv3.norm.running_var"]))
    assert torch.equal(state["instance_branch.offset_predictor.weight"],
                       torch.from_numpy(arrays["ins_embed_head.offset_predictor.weight"]))


@pytest.mark.slow
@pytest.mark.parametrize("config_name", sorted(PUBLISHED))
def test_published_architectures_import_from_protocol_2_and_5(tmp_path, config_name):
    dsconv, num_classes, counters = PUBLISHED[config_name]
    cfg = _config(config_name, tmp_path)
    arrays = detectron2_syncbn_state(cfg, num_classes, dsconv)
    assert sum(k.endswith("num_batches_tracked") for k in arrays) == counters

    # protocol 2 (detectron2's model zoo files), through Python, strictly
    source = write_pkl(tmp_path / "model_final.pkl", arrays, protocol=2)
    spec = cityscapes_spec() if num_classes == 19 else None
    if spec is None:
        from pdlkit.data.spec import spec_for

        spec = spec_for(cfg.data)
    checkpoint, report = import_detectron2_model(source, cfg, spec)
    assert report.defaulted == [] and sorted(report.dropped) == ["pixel_mean", "pixel_std"]
    _check_imported(checkpoint, arrays, counters)

    # protocol 5 (current Python's default) through the CLI
    write_pkl(source, arrays, protocol=5)
    out = tmp_path / "imported.pt"
    args = ["weights", "import", str(source), "--from", "detectron2", "--config", str(REPO / "configs" / config_name),
            "--output", str(out)]
    if cfg.data.dataset == "coco":
        args += ["--data", cfg.data.root]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"imported {len(arrays) - 2} tensors" in result.output
    _check_imported(torch.load(out, weights_only=True), arrays, counters)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("metadata", [True, False])
def test_reader_keeps_0d_arrays_for_every_protocol(tmp_path, protocol, metadata):
    arrays = {
        "a.norm.num_batches_tracked": np.array(7, np.int64),
        "a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "a.big_endian": np.arange(4, dtype=">f4"),
        "a.scalar": np.float32(2.5),
        "a.fortran": np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)),
    }
    state = read_detectron2_weights(write_pkl(tmp_path / "w.pkl", arrays, protocol, metadata))
    assert sorted(state) == sorted(arrays)
    assert state["a.norm.num_batches_tracked"].shape == () and int(state["a.norm.num_batches_tracked"]) == 7
    assert state["a.norm.num_batches_tracked"].dtype == torch.int64
    assert torch.equal(state["a.weight"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert torch.equal(state["a.big_endian"], torch.arange(4, dtype=torch.float32))
    assert state["a.scalar"].shape == () and float(state["a.scalar"]) == 2.5
    assert torch.equal(state["a.fortran"], torch.arange(6, dtype=torch.float64).reshape(2, 3))


def test_detection_checkpointer_pth(tmp_path):
    """DetectionCheckpointer.save: {"model": state_dict of torch tensors, optimizer, scheduler,
    iteration} (the trainer's own state too in newer versions)."""
    cfg = _config("cityscapes_r52_dc5_d2.yaml", tmp_path)
    arrays = detectron2_syncbn_state(cfg, 19, dsconv=False, seed=1)
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    assert state["backbone.stem.conv1.norm.num_batches_tracked"].shape == ()
    path = tmp_path / "model_0089999.pth"
    torch.save({
        "model": state,
        "optimizer": {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
                      "param_groups": [{"lr": 0.001, "params": [0]}]},
        "scheduler": {"base_lrs": [0.001], "last_epoch": 89999},
        "iteration": 89999,
        "trainer": {"iteration": 89999, "hooks": {}, "_trainer": {}},
    }, path)
    checkpoint, report = import_detectron2_model(path, cfg, cityscapes_spec())
    _check_imported(checkpoint, arrays, 83)
    assert report.loaded == len(arrays) - 2


def _torchvision_converted(arch: str, counters: bool) -> dict:
    """torchvision's ImageNet state dict renamed as convert-torchvision-to-d2.py renames it."""
    import torchvision

    state = getattr(torchvision.models, arch)(weights=None).state_dict()
    converted = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked") and not counters:
            continue  # older torchvision files have no counters
        new = key if "layer" in key else "stem." + key
        for t in (1, 2, 3, 4):
            new = new.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            new = new.replace(f"bn{t}", f"conv{t}.norm")
        new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        converted[new] = value.detach().numpy()
    return converted


@pytest.mark.parametrize("counters", [True, False])
def test_torchvision_file_converted_by_detectron2(tmp_path, counters):
    arrays = _torchvision_converted("resnet18", counters)
    assert "stem.fc.weight" in arrays and ("stem.conv1.norm.num_batches_tracked" in arrays) == counters
    source = tmp_path / "r18.pkl"
    with open(source, "wb") as handle:
        pickle.dump({"model": arrays, "__author__": "torchvision", "matching_heuristics": True}, handle)
    state, report = import_backbone_weights(source, "resnet18")
    assert sorted(report.dropped) == ["stem.fc.bias", "stem.fc.weight"]
    assert torch.equal(state["layer3.1.bn2.running_var"], torch.from_numpy(arrays["res4.1.conv2.norm.running_var"]))
    assert torch.equal(state["conv1.weight"], torch.from_numpy(arrays["stem.conv1.weight"]))
    assert state["bn1.num_batches_tracked"].shape == ()

    out = tmp_path / "r18_in1k.pt"
    result = CliRunner().invoke(cli, ["weights", "import", str(source), "--from", "detectron2", "--backbone-only",
                                      "--backbone", "resnet18", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert torch.equal(torch.load(out, weights_only=True)["layer1.0.conv1.weight"],
                       torch.from_numpy(arrays["res2.0.conv1.weight"]))


def test_r52_imagenet_file_with_counters_imports_backbone_only(tmp_path):
    cfg = _config("cityscapes_r52_dc5_d2.yaml", tmp_path)
    full = detectron2_syncbn_state(cfg, 19, dsconv=False, seed=2)
    arrays = {k[len("backbone."):]: v for k, v in full.items() if k.startswith("backbone.")}
    arrays["linear.weight"] = np.zeros((1000, 2048), np.float32)
    arrays["linear.bias"] = np.zeros((1000,), np.float32)
    source = write_pkl(tmp_path / "R-52.pkl", arrays, protocol=5)
    out = tmp_path / "r52.pt"
    result = CliRunner().invoke(cli, ["weights", "import", str(source), "--from", "detectron2", "--backbone-only",
                                      "--config", str(REPO / "configs" / "cityscapes_r52_dc5_d2.yaml"),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    state = torch.load(out, weights_only=True)
    assert state["bn3.num_batches_tracked"].shape == ()
    assert int(state["bn3.num_batches_tracked"]) == int(arrays["stem.conv3.norm.num_batches_tracked"])
    assert torch.equal(state["layer2.3.bn1.bias"], torch.from_numpy(arrays["res3.3.conv1.norm.bias"]))


# ------------------------------------------------------------------------------------ bad files
def test_object_array_is_one_sentence(tmp_path):
    path = write_pkl(tmp_path / "objects.pkl", {"a.weight": np.array([1, "x"], dtype=object)}, protocol=5)
    with pytest.raises(PdlError) as info:
        read_detectron2_weights(path)
    assert str(info.value) == f"{path}: entry 'a.weight' is an array of dtype object, not numeric weights"
    result = CliRunner().invoke(cli, ["weights", "import", str(path), "--from", "detectron2", "--backbone-only",
                                      "--output", str(tmp_path / "x.pt")])
    assert result.exit_code == 1
    assert "dtype object, not numeric weights" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.pt").exists()


class _Call:
    """Pickles as a call of ``func(*args)``: what a malicious file would do on load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("protocol", [2, 5])
@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "numpy.load", "torch.load", "subprocess"])
def test_malicious_pickles_are_refused(tmp_path, protocol, payload):
    import os
    import subprocess

    marker = tmp_path / "owned"
    calls = {
        "os.system": _Call(os.system, f"touch {marker}"),
        "builtins.eval": _Call(eval, f"open({str(marker)!r}, 'w')"),
        "numpy.load": _Call(np.load, str(marker)),
        "torch.load": _Call(torch.load, str(marker)),
        "subprocess": _Call(subprocess.call, ["touch", str(marker)]),
    }
    path = write_pkl(tmp_path / "evil.pkl", {"w": np.zeros(2, np.float32), "x": calls[payload]}, protocol)
    with pytest.raises(PdlError, match="refusing to load"):
        read_detectron2_weights(path)
    assert not marker.exists()
    result = CliRunner().invoke(cli, ["weights", "import", str(path), "--from", "detectron2", "--backbone-only",
                                      "--output", str(tmp_path / "x.pt")])
    assert result.exit_code == 1 and "refusing to load" in result.output and "Traceback" not in result.output
    assert not marker.exists()
