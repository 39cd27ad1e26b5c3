"""detectron2 checkpoint import: a synthetic Panoptic-DeepLab R52 checkpoint written the way detectron2
names its modules (the name list below is written from detectron2's module layout, independently of
pdlkit's key map), imported from .pkl and .pth, loaded strictly, and compared output for output."""
from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from pdlkit.config import load_config
from pdlkit.data.spec import cityscapes_spec
from pdlkit.errors import PdlError
from pdlkit.modeling import build_model
from pdlkit.modeling.detectron2_import import (
    detectron2_key_map,
    import_backbone_weights,
    import_detectron2_model,
    read_detectron2_weights,
)

REPO = Path(__file__).resolve().parents[2]
BN = ("weight", "bias", "running_mean", "running_var")


def detectron2_panoptic_deeplab_names(dsconv: bool) -> list:
    """Every tensor name of detectron2's PanopticDeepLab with the R52 deep-stem backbone (no
    num_batches_tracked, no pixel_mean / pixel_std)."""
    names = []

    def conv(prefix, norm=True, bias=False):
        names.append(f"{prefix}.weight")
        if bias:
            names.append(f"{prefix}.bias")
        if norm:
            names.extend(f"{prefix}.norm.{b}" for b in BN)

    def separable_or_two(prefix, separable):
        if separable:
            conv(f"{prefix}.depthwise")
            conv(f"{prefix}.pointwise")
        else:
            conv(f"{prefix}.0")
            conv(f"{prefix}.1")

    for k in (1, 2, 3):
        conv(f"backbone.stem.conv{k}")
    for stage, blocks in zip((2, 3, 4, 5), (3, 4, 6, 3)):
        for i in range(blocks):
            for k in (1, 2, 3):
                conv(f"backbone.res{stage}.{i}.conv{k}")
            if i == 0:
                conv(f"backbone.res{stage}.{i}.shortcut")
    for head in ("sem_seg_head", "ins_embed_head"):
        aspp = f"{head}.decoder.res5.project_conv"
        conv(f"{aspp}.convs.0")
        for rate_index in (1, 2, 3):
            if dsconv:
                conv(f"{aspp}.convs.{rate_index}.depthwise")
                conv(f"{aspp}.convs.{rate_index}.pointwise")
            else:
                conv(f"{aspp}.convs.{rate_index}")
        conv(f"{aspp}.convs.4.1", norm=False, bias=True)
        conv(f"{aspp}.project")
        for feature in ("res3", "res2"):
            conv(f"{head}.decoder.{feature}.project_conv")
            separable_or_two(f"{head}.decoder.{feature}.fuse_conv", dsconv)
    separable_or_two("sem_seg_head.head", dsconv)
    conv("sem_seg_head.predictor", norm=False, bias=True)
    separable_or_two("ins_embed_head.center_head", False)  # always two 3x3 convs in detectron2
    conv("ins_embed_head.center_predictor", norm=False, bias=True)
    separable_or_two("ins_embed_head.offset_head", dsconv)
    conv("ins_embed_head.offset_predictor", norm=False, bias=True)
    return names


# Shapes that follow from detectron2's configs (R52 stem 64-64-128, PROJECT_CHANNELS [32, 64] in both
# heads, ASPP 256, decoders 256 / 128, heads 256 / 32, 19 classes).
KNOWN_SHAPES_COMMON = {
    "backbone.stem.conv1.weight": (64, 3, 3, 3),
    "backbone.stem.conv3.weight": (128, 64, 3, 3),
    "backbone.res2.0.shortcut.weight": (256, 128, 1, 1),
    "backbone.res5.2.conv3.weight": (2048, 512, 1, 1),
    "sem_seg_head.decoder.res3.project_conv.weight": (64, 512, 1, 1),
    "sem_seg_head.decoder.res2.project_conv.weight": (32, 256, 1, 1),
    "ins_embed_head.decoder.res3.project_conv.weight": (64, 512, 1, 1),
    "ins_embed_head.decoder.res2.project_conv.weight": (32, 256, 1, 1),
    "sem_seg_head.decoder.res5.project_conv.convs.4.1.weight": (256, 2048, 1, 1),
    "sem_seg_head.decoder.res5.project_conv.project.weight": (256, 1280, 1, 1),
    "sem_seg_head.predictor.weight": (19, 256, 1, 1),
    "ins_embed_head.center_head.0.weight": (128, 128, 3, 3),
    "ins_embed_head.center_predictor.weight": (1, 32, 1, 1),
    "ins_embed_head.offset_predictor.weight": (2, 32, 1, 1),
}
KNOWN_SHAPES = {
    True: {
        "sem_seg_head.decoder.res3.fuse_conv.depthwise.weight": (320, 1, 5, 5),  # 64 + 256 ASPP
        "sem_seg_head.decoder.res2.fuse_conv.depthwise.weight": (288, 1, 5, 5),  # 32 + 256
        "ins_embed_head.decoder.res2.fuse_conv.depthwise.weight": (160, 1, 5, 5),  # 32 + 128
        "sem_seg_head.decoder.res5.project_conv.convs.1.depthwise.weight": (2048, 1, 3, 3),
        "sem_seg_head.head.pointwise.weight": (256, 256, 1, 1),
        "ins_embed_head.offset_head.pointwise.weight": (32, 128, 1, 1),
    },
    False: {
        "sem_seg_head.decoder.res3.fuse_conv.0.weight": (256, 320, 3, 3),
        "ins_embed_head.decoder.res2.fuse_conv.1.weight": (128, 128, 3, 3),
        "sem_seg_head.decoder.res5.project_conv.convs.3.weight": (256, 2048, 3, 3),
        "sem_seg_head.head.1.weight": (256, 256, 3, 3),
        "ins_embed_head.offset_head.1.weight": (32, 128, 3, 3),
    },
}


def _config(dsconv: bool):
    name = "cityscapes_r52_dc5_d2_dsconv.yaml" if dsconv else "cityscapes_r52_dc5_d2.yaml"
    cfg = load_config(REPO / "configs" / name)
    cfg.model.pretrained = "none"
    return cfg


@functools.lru_cache(maxsize=None)
def _r52_shapes(dsconv: bool) -> dict:
    """detectron2 name -> shape, through pdlkit's key map (the names are checked separately)."""
    model = build_model(_config(dsconv).model, 19)
    return {d2: tuple(model.state_dict()[pd].shape) for d2, pd in detectron2_key_map(model).items()}


def _synthetic_checkpoint(dsconv: bool, seed: int = 0) -> dict:
    """detectron2 name -> random float32 array of the shape the R52 model needs."""
    shapes = _r52_shapes(dsconv)
    rng = np.random.default_rng(seed)
    arrays = {}
    for name in detectron2_panoptic_deeplab_names(dsconv):
        shape = shapes[name]  # a KeyError here means pdlkit's map lacks a detectron2 name
        if name.endswith("running_var"):
            arrays[name] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        elif name.endswith("norm.weight"):
            arrays[name] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            arrays[name] = (rng.standard_normal(size=shape) / np.sqrt(fan_in)).astype(np.float32)
    arrays["pixel_mean"] = np.array([123.675, 116.28, 103.53], np.float32).reshape(3, 1, 1)
    arrays["pixel_std"] = np.array([58.395, 57.12, 57.375], np.float32).reshape(3, 1, 1)
    return arrays


def _write_pkl(path: Path, arrays: dict) -> Path:
    with open(path, "wb") as handle:
        pickle.dump({"model": arrays, "__author__": "test", "matching_heuristics": True}, handle)
    return path


def _write_pth(path: Path, arrays: dict) -> Path:
    torch.save({"model": {k: torch.from_numpy(v) for k, v in arrays.items()}, "iteration": 90000}, path)
    return path


@pytest.mark.parametrize("dsconv", [False, True])
def test_key_map_names_equal_detectron2_layout(dsconv):
    cfg = _config(dsconv)
    model = build_model(cfg.model, 19)
    key_map = detectron2_key_map(model)
    mapped = {k for k in key_map if not k.endswith("num_batches_tracked")}
    expected = set(detectron2_panoptic_deeplab_names(dsconv))
    assert mapped == expected
    # every pdlkit entry is the target of exactly one detectron2 name
    assert sorted(key_map.values()) == sorted(model.state_dict())
    shapes = {d2: tuple(model.state_dict()[pd].shape) for d2, pd in key_map.items()}
    for name, shape in {**KNOWN_SHAPES_COMMON, **KNOWN_SHAPES[dsconv]}.items():
        assert shapes[name] == shape, name


@pytest.mark.parametrize("dsconv,suffix", [(False, ".pkl"), (True, ".pth")])
def test_import_loads_strictly_and_matches_direct_model(tmp_path, dsconv, suffix):
    arrays = _synthetic_checkpoint(dsconv)
    source = (_write_pkl if suffix == ".pkl" else _write_pth)(tmp_path / f"model_final{suffix}", arrays)
    cfg = _config(dsconv)
    checkpoint, report = import_detectron2_model(source, cfg, cityscapes_spec())
    assert sorted(report.dropped) == ["pixel_mean", "pixel_std"]
    assert checkpoint["dataset"]["name"] == "cityscapes"

    imported = build_model(cfg.model, 19)
    imported.load_state_dict(checkpoint["model"], strict=True)
    imported.eval()

    # Spot checks of the pairing that shapes alone cannot tell apart.
    pairs = {
        "sem_seg_head.predictor.bias": "semantic_branch.predictor.bias",
        "ins_embed_head.offset_predictor.bias": "instance_branch.offset_predictor.bias",
        "backbone.res2.0.shortcut.norm.running_mean": "backbone.layer1.0.downsample.1.running_mean",
        "backbone.stem.conv2.norm.weight": "backbone.bn2.weight",
        "ins_embed_head.decoder.res5.project_conv.convs.0.weight": "instance_branch.decoder.res5.project_conv.convs.0.weight",
    }
    state = imported.state_dict()
    for d2_name, pd_name in pairs.items():
        assert torch.equal(state[pd_name], torch.from_numpy(arrays[d2_name])), d2_name

    direct = build_model(cfg.model, 19)
    key_map = detectron2_key_map(direct)
    direct_state = direct.state_dict()
    direct.load_state_dict(
        {pd: torch.from_numpy(arrays[d2]) if d2 in arrays else direct_state[pd] for d2, pd in key_map.items()},
        strict=True,
    )
    direct.eval()
    images = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = imported(images)
        want = direct(images)
    for key in ("semantic", "center", "offset"):
        assert got[key].abs().max() > 1e-3  # real signal, not near-zero init outputs
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0)


def _import_error(tmp_path, arrays, dsconv=False) -> str:
    source = _write_pkl(tmp_path / "broken.pkl", arrays)
    with pytest.raises(PdlError) as info:
        import_detectron2_model(source, _config(dsconv), cityscapes_spec())
    return str(info.value)


def test_missing_extra_and_misshaped_keys_are_named(tmp_path):
    arrays = _synthetic_checkpoint(False)

    missing = dict(arrays)
    del missing["ins_embed_head.center_head.1.norm.running_var"]
    message = _import_error(tmp_path, missing)
    assert "missing key 'ins_embed_head.center_head.1.norm.running_var'" in message
    assert "instance_branch.center_head.1.norm.running_var" in message

    extra = dict(arrays)
    extra["sem_seg_head.aux_predictor.weight"] = np.zeros((19, 256, 1, 1), np.float32)
    assert "unexpected key 'sem_seg_head.aux_predictor.weight'" in _import_error(tmp_path, extra)

    misshaped = dict(arrays)
    misshaped["backbone.res4.3.conv2.weight"] = np.zeros((256, 256, 1, 1), np.float32)
    message = _import_error(tmp_path, misshaped)
    assert "'backbone.res4.3.conv2.weight' has shape [256, 256, 1, 1]" in message
    assert "'backbone.layer3.3.conv2.weight' needs [256, 256, 3, 3]" in message


def test_wrong_layout_config_names_the_key_and_hints(tmp_path):
    arrays = _synthetic_checkpoint(True)  # a DSConv checkpoint given the plain-conv config
    message = _import_error(tmp_path, arrays, dsconv=False)
    assert "depthwise" in message and "dsconv" in message


def test_pixel_statistics_must_match_config(tmp_path):
    arrays = _synthetic_checkpoint(False)
    arrays["pixel_mean"] = np.array([103.53, 116.28, 123.675], np.float32).reshape(3, 1, 1)  # BGR
    assert "pixel_mean" in _import_error(tmp_path, arrays)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as handle:
        pickle.dump({"model": {"x": Evil()}}, handle)
    with pytest.raises(PdlError, match="refusing to load builtins.print"):
        read_detectron2_weights(path)


def _backbone_arrays(prefix: str) -> dict:
    names = [n for n in detectron2_panoptic_deeplab_names(False) if n.startswith("backbone.")]
    shapes = _r52_shapes(False)
    rng = np.random.default_rng(3)
    arrays = {}
    for name in names:
        shape = shapes[name]
        arrays[prefix + name[len("backbone."):]] = rng.uniform(0.5, 1.5, size=shape).astype(np.float32)
    return arrays


@pytest.mark.parametrize("prefix", ["", "backbone."])
def test_r52_imagenet_backbone_import(tmp_path, prefix):
    arrays = _backbone_arrays(prefix)
    arrays["fc.weight"] = np.zeros((1000, 2048), np.float32)
    arrays["fc.bias"] = np.zeros((1000,), np.float32)
    source = _write_pkl(tmp_path / "R-52.pkl", arrays)
    state, report = import_backbone_weights(source, "resnet52")
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    assert torch.equal(state["conv3.weight"], torch.from_numpy(arrays[prefix + "stem.conv3.weight"]))
    assert torch.equal(state["layer4.2.bn3.running_var"], torch.from_numpy(arrays[prefix + "res5.2.conv3.norm.running_var"]))
    assert torch.equal(state["layer2.0.downsample.1.bias"], torch.from_numpy(arrays[prefix + "res3.0.shortcut.norm.bias"]))

    # the written file is what model.pretrained reads
    from pdlkit.modeling.detectron2_import import save_backbone_state

    out = save_backbone_state(tmp_path / "r52_in1k.pt", state)
    cfg = _config(False)
    cfg.model.pretrained = str(out)
    model = build_model(cfg.model, 19)
    assert torch.equal(model.backbone.conv1.weight, torch.from_numpy(arrays[prefix + "stem.conv1.weight"]))

    del arrays[prefix + "res3.2.conv1.weight"]
    _write_pkl(source, arrays)
    with pytest.raises(PdlError, match="missing key 'backbone.res3.2.conv1.weight'"):
        import_backbone_weights(source, "resnet52")


def test_torchvision_backbone_import(tmp_path):
    import torchvision

    reference = torchvision.models.resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(reference, path)
    state, report = import_backbone_weights(path, "resnet18", source_format="torchvision")
    assert sorted(report.dropped) == ["fc.bias", "fc.weight"]
    for key, value in state.items():
        assert torch.equal(value, reference[key]), key

    reference["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    torch.save(reference, path)
    with pytest.raises(PdlError, match="'layer1.0.conv1.weight' has shape"):
        import_backbone_weights(path, "resnet18", source_format="torchvision")
