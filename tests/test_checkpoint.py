"""Checkpoints: atomic writes, checksums, non-finite values refused, the last_checkpoint pointer,
load_model, clear errors, random-state round trips."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pdlkit import __version__
from pdlkit.checkpoint import (
    DamagedCheckpointError,
    capture_rng_state,
    checkpoint_digest,
    earlier_checkpoints,
    load_checkpoint,
    load_model,
    newest_valid_checkpoint,
    read_last_checkpoint,
    restore_rng_state,
    save_checkpoint,
    strip_module_prefix,
    write_last_checkpoint,
)
from pdlkit.config import load_config
from pdlkit.data.spec import cityscapes_spec
from pdlkit.errors import DataError
from pdlkit.modeling import build_model


class _FailsToPickle:
    """Pickling it raises, after torch.save has already written part of the file."""

    def __reduce__(self):
        raise RuntimeError("disk full (simulated)")


def test_round_trip_fills_version(tmp_path):
    path = tmp_path / "model.pt"
    weights = {"conv.weight": torch.randn(4, 3, 3, 3)}
    save_checkpoint(path, {"model": weights, "iteration": 7})
    state = load_checkpoint(path)
    assert state["pdlkit_version"] == __version__
    assert state["iteration"] == 7
    assert torch.equal(state["model"]["conv.weight"], weights["conv.weight"])


def test_failing_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "iteration": 1})
    before = path.read_bytes()
    # A large tensor first, so the failure happens after bytes have gone to the temporary file.
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"model": {"w": torch.zeros(100_000)}, "iteration": 2, "bad": _FailsToPickle()})
    assert path.read_bytes() == before
    assert load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary file left


def test_missing_file_is_a_data_error_naming_it(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.pt: checkpoint file not found"):
        load_checkpoint(tmp_path / "nothere.pt")


def test_garbage_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint at all")
    with pytest.raises(DataError, match=r"garbage\.pt: not a readable pdlkit checkpoint"):
        load_checkpoint(path)


def test_foreign_torch_file_is_not_a_pdlkit_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, path)
    with pytest.raises(DataError, match=r"foreign\.pt: not a pdlkit checkpoint \(missing model, pdlkit_version\)"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(DataError, match=r"holds a list"):
        load_checkpoint(path)


def test_last_checkpoint_pointer(tmp_path):
    assert read_last_checkpoint(tmp_path) is None
    target = save_checkpoint(tmp_path / "model_0000010.pt", {"model": {}})
    write_last_checkpoint(tmp_path, target)
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000010.pt"  # relative: movable
    assert read_last_checkpoint(tmp_path) == tmp_path / "model_0000010.pt"
    target.unlink()
    with pytest.raises(DataError, match="model_0000010.pt, which does not exist"):
        read_last_checkpoint(tmp_path)


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    state = capture_rng_state()
    expected = (torch.rand(5), np.random.rand(5), np.random.normal(), [random.random() for _ in range(5)])
    save_checkpoint(tmp_path / "rng.pt", {"model": {}, "rng": state})
    restore_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
    again = (torch.rand(5), np.random.rand(5), np.random.normal(), [random.random() for _ in range(5)])
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]
    assert expected[3] == again[3]


# ------------------------------------------------------------------------------------ checksums
def _flip_middle(path, size=4096):
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - size // 2
    data[start:start + size] = bytes(b ^ 0xFF for b in data[start:start + size])
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_the_middle_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model": {"w": torch.linspace(-1, 1, 1_000_000)}, "iteration": 3})
    _flip_middle(path)
    # torch.load alone reads the damaged file without complaint: only the checksum notices.
    assert torch.load(path, weights_only=True)["iteration"] == 3
    with pytest.raises(DamagedCheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value) == f"{path}: damaged (its contents do not match its checksum)"
    assert info.value.path == path and isinstance(info.value, DataError)


def test_checksum_covers_every_entry_and_ignores_dict_order():
    state = {"model": {"a": torch.ones(2), "b": torch.zeros(3, dtype=torch.int64)}, "iteration": 5,
             "config": {"solver": {"lr": 0.1}}}
    digest = checkpoint_digest(state)
    reordered = {"iteration": 5, "config": {"solver": {"lr": 0.1}},
                 "model": {"b": torch.zeros(3, dtype=torch.int64), "a": torch.ones(2)}}
    assert checkpoint_digest(reordered) == digest
    for changed in ({**state, "iteration": 6}, {**state, "config": {"solver": {"lr": 0.2}}},
                    {**state, "model": {"a": torch.tensor([1.0, 1.0 + 2 ** -23]), "b": state["model"]["b"]}},
                    {**state, "model": {"a": torch.ones(2, dtype=torch.float64), "b": state["model"]["b"]}},
                    {**state, "model": {"a": torch.ones(1, 2), "b": state["model"]["b"]}}):
        assert checkpoint_digest(changed) != digest


def test_a_file_without_checksum_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"model": {"w": torch.ones(2)}, "pdlkit_version": "0.0.1"}, path)
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(2))


def test_non_finite_weights_are_refused_at_save(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "iteration": 1})
    before = path.read_bytes()
    weights = {"bn.running_var": torch.tensor([1.0, float("inf")])}
    with pytest.raises(DataError) as info:
        save_checkpoint(path, {"model": weights, "iteration": 2})
    assert str(info.value) == (f"{path}: not saved, because model.bn.running_var holds non-finite values "
                               f"(NaN or infinity)")
    assert path.read_bytes() == before


def test_non_finite_optimizer_state_is_refused_at_load(tmp_path):
    path = tmp_path / "model.pt"
    state = {"model": {"w": torch.ones(2)}, "pdlkit_version": __version__,
             "optimizer": {"state": {0: {"exp_avg": torch.tensor([0.0, float("nan")])}}, "param_groups": []}}
    # Written with a valid checksum, as a buggy or foreign writer would: the values are still refused.
    torch.save({**state, "checksum": {"algorithm": "blake2b", "digest": checkpoint_digest(state)}}, path)
    with pytest.raises(DamagedCheckpointError, match=r"optimizer\.state\.0\.exp_avg holds non-finite values"):
        load_checkpoint(path)


def test_newest_valid_earlier_checkpoint(tmp_path):
    for iteration in (2, 4, 6):
        save_checkpoint(tmp_path / f"model_{iteration:07d}.pt",
                        {"model": {"w": torch.full((100_000,), float(iteration))}, "iteration": iteration})
    save_checkpoint(tmp_path / "model_final.pt", {"model": {}, "iteration": 8})
    names = [p.name for p in earlier_checkpoints(tmp_path, tmp_path / "model_0000006.pt")]
    assert names == ["model_0000004.pt", "model_0000002.pt"]
    names = [p.name for p in earlier_checkpoints(tmp_path, tmp_path / "model_final.pt")]
    assert names == ["model_0000006.pt", "model_0000004.pt", "model_0000002.pt"]
    _flip_middle(tmp_path / "model_0000006.pt", size=64)
    path, state = newest_valid_checkpoint(earlier_checkpoints(tmp_path, tmp_path / "model_final.pt"))
    assert path.name == "model_0000004.pt" and state["iteration"] == 4
    assert newest_valid_checkpoint([]) is None


# ------------------------------------------------------------------------------------ load_model
def _tiny_cfg():
    return load_config(None, ["model.backbone=resnet18", "model.pretrained=none", "model.aspp_channels=8",
                              "model.semantic_decoder_channels=8", "model.semantic_head_channels=8",
                              "model.instance_decoder_channels=8", "model.instance_head_channels=8"])


def test_load_model_round_trips_a_ddp_checkpoint(tmp_path):
    cfg, spec = _tiny_cfg(), cityscapes_spec()
    torch.manual_seed(0)
    model = build_model(cfg.model, spec.num_classes)
    wrapped = {"module." + key: value for key, value in model.state_dict().items()}  # as DDP saves them
    path = save_checkpoint(tmp_path / "m.pt", {"model": wrapped, "config": cfg.to_dict(), "dataset": spec.to_dict()})
    loaded, loaded_cfg, loaded_spec = load_model(path)
    assert not loaded.training
    assert loaded_cfg.to_dict()["model"] == {**cfg.to_dict()["model"], "pretrained": "none"}
    assert loaded_spec == spec
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_load_model_errors_name_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "bare.pt", {"model": {}})
    with pytest.raises(DataError, match=r"bare\.pt: not a complete pdlkit checkpoint \(missing config, dataset\)"):
        load_model(path)
    cfg, spec = _tiny_cfg(), cityscapes_spec()
    path = save_checkpoint(tmp_path / "wrong.pt", {"model": {"x": torch.ones(1)}, "config": cfg.to_dict(),
                                                  "dataset": spec.to_dict()})
    with pytest.raises(DataError, match=r"wrong\.pt: the weights do not fit the checkpoint's model"):
        load_model(path)


def test_strip_module_prefix_only_when_every_key_has_it():
    assert strip_module_prefix({"module.a": 1, "module.b.c": 2}) == {"a": 1, "b.c": 2}
    assert strip_module_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}
    assert strip_module_prefix({}) == {}
