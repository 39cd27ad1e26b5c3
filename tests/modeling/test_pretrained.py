"""Backbone weights come from local files only: a given path, the torch hub cache, or nowhere."""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from pdlkit.config import ModelConfig, load_config
from pdlkit.errors import PdlError
from pdlkit.modeling import build_model


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """Any download attempt fails the test; the hub cache is an empty temporary folder."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a download was attempted: {args[:1]}")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def _resnet18_state():
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


def _assert_backbone_equals(model, state):
    for key, value in model.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_torchvision_state_dict_file(tmp_path):
    state = _resnet18_state()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    model = build_model(ModelConfig(backbone="resnet18", pretrained=str(path)), 5)
    _assert_backbone_equals(model, state)


def test_pdlkit_checkpoint_file_uses_its_backbone_entries(tmp_path):
    source = build_model(ModelConfig(backbone="resnet18", pretrained="none"), 3)
    path = tmp_path / "model_final.pt"
    torch.save({"model": source.state_dict(), "iteration": 7}, path)
    model = build_model(ModelConfig(backbone="resnet18", pretrained=str(path)), 5)
    _assert_backbone_equals(model, source.backbone.state_dict())


def test_file_without_batch_counters_loads(tmp_path):
    state = {k: v for k, v in _resnet18_state().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old_style.pth"
    torch.save(state, path)
    model = build_model(ModelConfig(backbone="resnet18", pretrained=str(path)), 5)
    _assert_backbone_equals(model, state | {k: v for k, v in model.backbone.state_dict().items() if k.endswith("tracked")})


def test_bad_state_dict_names_the_file_and_the_keys(tmp_path):
    state = _resnet18_state()
    del state["layer2.0.conv1.weight"]
    state["layer9.extra.weight"] = torch.zeros(3)
    state["bn1.weight"] = torch.zeros(65)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(PdlError) as caught:
        build_model(ModelConfig(backbone="resnet18", pretrained=str(path)), 5)
    message = str(caught.value)
    assert str(path) in message
    assert "missing keys layer2.0.conv1.weight" in message
    assert "unexpected keys layer9.extra.weight" in message
    assert "bn1.weight (file (65,), model (64,))" in message
    assert "\n" not in message


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(PdlError, match="does not fit the resnet18 backbone"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(path)), 5)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(PdlError, match="pretrained weights file not found"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(tmp_path / "nope.pth")), 5)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(PdlError, match="corrupt.pth: not a readable torch state dict"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(corrupt)), 5)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_state_dict)
    with pytest.raises(PdlError, match="expected a state dict"):
        build_model(ModelConfig(backbone="resnet18", pretrained=str(not_a_state_dict)), 5)


def test_default_takes_imagenet_weights_from_the_hub_cache(no_downloads):
    state = _resnet18_state()
    (no_downloads / "checkpoints").mkdir(parents=True)
    torch.save(state, no_downloads / "checkpoints" / "resnet18-f37072fd.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = build_model(ModelConfig(backbone="resnet18"), 5)
    _assert_backbone_equals(model, state)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50", "mobilenet_v3_large"])
def test_default_without_cached_weights_warns_and_trains_from_scratch(backbone):
    with pytest.warns(UserWarning, match="no ImageNet weights in .*training from scratch"):
        model = build_model(ModelConfig(backbone=backbone), 5)
    assert model.semantic_branch.predictor.out_channels == 5


def test_resnet52_default_warns_that_torchvision_has_no_weights():
    with pytest.warns(UserWarning, match="torchvision has no ImageNet weights"):
        build_model(ModelConfig(backbone="resnet52"), 5)


def test_none_trains_from_scratch_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_model(ModelConfig(backbone="resnet18", pretrained="none"), 5)
        build_model(ModelConfig(backbone="resnet18", pretrained="None"), 5)
        # YAML / --set spelling: the word "none" stays a value for model.pretrained (null is the default).
        cfg = load_config(None, ["model.backbone=resnet18", "model.pretrained=none"])
        assert cfg.model.pretrained == "none"
        build_model(cfg.model, 5)
