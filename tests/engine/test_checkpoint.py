"""Checkpoints: atomic writes, the last_checkpoint pointer, clear errors, random-state round trips."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pdlkit import __version__
from pdlkit.engine import load_checkpoint, save_checkpoint
from pdlkit.engine.checkpoint import (
    capture_rng_state,
    read_last_checkpoint,
    restore_rng_state,
    write_last_checkpoint,
)
from pdlkit.errors import DataError


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
