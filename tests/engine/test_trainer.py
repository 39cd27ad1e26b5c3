"""The training loop on the toy set: a step lowers the loss, exact resume after a stop, NaN losses,
what a run writes, evaluation through a callable that may fail, resume from a damaged checkpoint."""
from __future__ import annotations

import functools
import json
import os
import signal

import pytest
import torch

import pdlkit.engine.trainer
import pdlkit.modeling
from pdlkit.checkpoint import load_checkpoint, read_last_checkpoint
from pdlkit.config import ConfigError, load_config
from pdlkit.engine import train
from pdlkit.engine.trainer import LOSS_TERMS, DamagedResumeError, NonFiniteLossError, Trainer, TrainingInterrupted
from pdlkit.evaluation.split import evaluate_model

from .tiny import tiny_config


def _evaluation(cfg):
    return functools.partial(evaluate_model, cfg=cfg, work_dir=cfg.output_dir)


def _batch(dataset, indices):
    return torch.utils.data.default_collate([dataset[i] for i in indices])


def _total_loss(trainer, batch):
    with torch.no_grad():
        outputs = trainer.model(batch["image"])
        return float(trainer.loss_fn(outputs, {k: v for k, v in batch.items() if k != "image"})["total"])


def test_one_step_lowers_the_loss_on_a_fixed_batch(toy_root, tmp_path):
    trainer = Trainer(tiny_config(toy_root, tmp_path, "solver.lr=0.001"), progress=False)
    trainer.build()
    torch.manual_seed(0)
    batch = _batch(trainer.dataset, [0, 1])
    trainer.model.train()  # batch statistics, no dropout (tiny_config sets it to 0): a function of the weights
    before = _total_loss(trainer, batch)
    losses, lr, stop = trainer.run_step(batch)
    after = _total_loss(trainer, batch)
    assert losses[0] == pytest.approx(before, rel=1e-5)  # run_step reports the loss it stepped on
    assert lr == pytest.approx(0.001) and stop is False
    assert trainer.iteration == 1
    assert after < before


def _signal_on_call(number, signum):
    real = pdlkit.modeling.PanopticDeepLabLoss

    class SignalOnCall(real):
        calls = 0

        def forward(self, outputs, targets):
            SignalOnCall.calls += 1
            if SignalOnCall.calls == number:
                os.kill(os.getpid(), signum)
            return super().forward(outputs, targets)

    return SignalOnCall


def _state_equal(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, dict):
            if not isinstance(y, dict) or not _state_equal(x, y):
                return False
        elif torch.is_tensor(x):
            if not (torch.is_tensor(y) and x.dtype == y.dtype and torch.equal(x, y)):
                return False
        elif x != y:
            return False
    return True


@pytest.mark.slow
def test_stop_then_resume_equals_a_straight_run(toy_root, tmp_path, monkeypatch):
    # Random scale/crop/flip, dropout and a data-loader worker: everything random stays in play.
    extra = ["solver.max_iter=6", "solver.checkpoint_period=100", "data.num_workers=1", "data.min_scale=0.75",
             "data.max_scale=1.5", "data.flip=true", "model.aspp_dropout=0.1", "solver.warmup_iters=2"]
    straight_dir, stopped_dir = tmp_path / "straight", tmp_path / "stopped"
    straight = train(tiny_config(toy_root, straight_dir, *extra), progress=False)
    assert straight["iteration"] == 6

    # SIGTERM arrives during the forward pass of step 2; the loop sees it at the next step's
    # all-reduce, finishes that step and saves model_0000003.pt.
    monkeypatch.setattr(pdlkit.engine.trainer, "PanopticDeepLabLoss", _signal_on_call(2, signal.SIGTERM))
    with pytest.raises(TrainingInterrupted, match=r"stopped by SIGTERM at iteration 3; checkpoint saved to") as info:
        train(tiny_config(toy_root, stopped_dir, *extra), progress=False)
    monkeypatch.undo()
    assert info.value.iteration == 3 and info.value.signum == signal.SIGTERM
    assert read_last_checkpoint(stopped_dir) == stopped_dir / "model_0000003.pt"
    assert load_checkpoint(stopped_dir / "model_0000003.pt")["iteration"] == 3
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone again

    resumed = train(tiny_config(toy_root, stopped_dir, *extra), resume=True, progress=False)
    assert resumed["iteration"] == 6
    a = load_checkpoint(straight_dir / "model_final.pt")
    b = load_checkpoint(stopped_dir / "model_final.pt")
    for key in ("model", "optimizer", "scheduler", "scaler"):
        assert _state_equal(a[key], b[key]), key
    assert a["iteration"] == b["iteration"] == 6
    # The log reads as one run: every iteration once, and the same losses as the straight run.
    lines = [json.loads(line) for line in (stopped_dir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "loss" in line]
    assert [line["iteration"] for line in train_lines] == [1, 2, 3, 4, 5, 6]
    straight_lines = [json.loads(line) for line in (straight_dir / "metrics.jsonl").read_text().splitlines()]
    assert [line["loss"] for line in train_lines] == [line["loss"] for line in straight_lines if "loss" in line]


def test_nan_loss_stops_with_the_iteration_and_keeps_the_last_good_checkpoint(toy_root, tmp_path, monkeypatch):
    real = pdlkit.modeling.PanopticDeepLabLoss

    class NaNOnThirdCall(real):
        calls = 0

        def forward(self, outputs, targets):
            NaNOnThirdCall.calls += 1
            losses = dict(super().forward(outputs, targets))
            if NaNOnThirdCall.calls == 3:
                losses["center"] = losses["center"] * float("nan")
                losses["total"] = losses["semantic"] + losses["center"] + losses["offset"]
            return losses

    monkeypatch.setattr(pdlkit.engine.trainer, "PanopticDeepLabLoss", NaNOnThirdCall)
    cfg = tiny_config(toy_root, tmp_path, "solver.max_iter=6", "solver.checkpoint_period=2")
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, progress=False)
    message = str(info.value)
    assert "non-finite at iteration 3" in message and "center nan" in message
    assert f"the last good checkpoint is {tmp_path / 'model_0000002.pt'}" in message
    assert "\n" not in message
    assert info.value.iteration == 3
    assert read_last_checkpoint(tmp_path) == tmp_path / "model_0000002.pt"
    assert load_checkpoint(tmp_path / "model_0000002.pt")["iteration"] == 2
    assert not (tmp_path / "model_final.pt").exists()
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["model_0000002.pt"]


def test_a_run_writes_checkpoints_metrics_and_the_final_evaluation(toy_root, tmp_path):
    cfg = tiny_config(toy_root, tmp_path, "solver.max_iter=4", "solver.checkpoint_period=2",
                      "solver.log_period=2", "test.eval_period=2")
    result = train(cfg, progress=False, evaluate=_evaluation(cfg))
    for key in ("PQ", "SQ", "RQ", "mIoU"):
        assert 0.0 <= result[key] <= 100.0
    assert result["iteration"] == 4 and result["num_images"] == 1  # test.max_eval_images=1
    assert result["checkpoint"] == str(tmp_path / "model_final.pt")
    assert read_last_checkpoint(tmp_path) == tmp_path / "model_final.pt"

    state = load_checkpoint(tmp_path / "model_final.pt")
    for key in ("model", "optimizer", "scheduler", "scaler", "iteration", "config", "dataset", "pdlkit_version"):
        assert key in state, key
    assert state["iteration"] == 4
    assert state["config"] == cfg.to_dict()
    assert state["dataset"]["class_names"][13] == "car"
    assert load_checkpoint(tmp_path / "model_0000002.pt")["iteration"] == 2
    assert state["scheduler"]["last_epoch"] == 4

    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if "loss" in r]
    assert [r["iteration"] for r in train_records] == [2, 4]
    for record in train_records:
        assert record["loss"] == pytest.approx(record["loss_semantic"] + record["loss_center"] + record["loss_offset"],
                                               rel=1e-5)
        assert record["data_time"] <= record["time"]
    evals = [r for r in records if "eval" in r]
    assert [r["iteration"] for r in evals] == [2, 4]  # periodic (eval_period=2) and final
    assert evals[-1]["eval"]["PQ"] == pytest.approx(result["PQ"])
    assert json.loads((tmp_path / "final_metrics.json").read_text())["PQ"] == pytest.approx(result["PQ"])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert load_config(tmp_path / "config.yaml").to_dict() == cfg.to_dict()
    assert LOSS_TERMS == ("total", "semantic", "center", "offset")


def test_resume_of_a_finished_run_only_evaluates(toy_root, tmp_path):
    cfg = tiny_config(toy_root, tmp_path, "solver.max_iter=2")
    first = train(cfg, progress=False, evaluate=_evaluation(cfg))
    mtime = (tmp_path / "model_final.pt").stat().st_mtime_ns
    again = train(cfg, resume=True, progress=False, evaluate=_evaluation(cfg))
    assert again["iteration"] == 2
    assert again["PQ"] == pytest.approx(first["PQ"])
    assert (tmp_path / "model_final.pt").stat().st_mtime_ns == mtime


def test_bad_settings_are_user_errors(toy_root, tmp_path):
    from pdlkit.errors import DataError

    with pytest.raises(ConfigError, match="solver.batch_size must be a positive integer, got 0"):
        Trainer(tiny_config(toy_root, tmp_path, "solver.batch_size=0"))
    cfg = tiny_config(toy_root, tmp_path)
    cfg.solver.max_iter = 0  # set in code, after load_config validated: the trainer checks again
    with pytest.raises(ConfigError, match="solver.max_iter must be a positive integer, got 0"):
        Trainer(cfg)
    with pytest.raises(DataError, match="nowhere: dataset root not found"):
        Trainer(tiny_config(tmp_path / "nowhere", tmp_path))


def test_a_failing_evaluation_is_reported_and_training_goes_on(toy_root, tmp_path):
    cfg = tiny_config(toy_root, tmp_path, "solver.max_iter=4", "test.eval_period=2")
    calls = []

    def evaluate(model, iteration):
        # The checkpoint of this iteration is on disk before the evaluation runs.
        calls.append((iteration, load_checkpoint(read_last_checkpoint(tmp_path))["iteration"], model.training))
        if iteration == 2:
            raise RuntimeError("out of memory\nwhile predicting")
        return {"PQ": 12.5, "mIoU": 40.0}

    result = train(cfg, progress=False, evaluate=evaluate)
    assert calls == [(2, 2, False), (4, 4, False)]
    assert result["iteration"] == 4 and result["PQ"] == 12.5 and "eval_error" not in result
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"iteration": 2, "eval_error": "RuntimeError: out of memory while predicting"} in records
    assert [r["eval"]["PQ"] for r in records if "eval" in r] == [12.5]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.glob("*.pt")) == ["model_0000002.pt", "model_final.pt"]


def test_a_failing_final_evaluation_keeps_the_model(toy_root, tmp_path):
    cfg = tiny_config(toy_root, tmp_path, "solver.max_iter=2")

    def evaluate(model, iteration):
        raise ValueError("post.nms_kernel must be odd")

    result = train(cfg, progress=False, evaluate=evaluate)
    assert result == {"iteration": 2, "checkpoint": str(tmp_path / "model_final.pt"),
                      "eval_error": "ValueError: post.nms_kernel must be odd"}
    assert load_checkpoint(tmp_path / "model_final.pt")["iteration"] == 2
    assert json.loads((tmp_path / "final_metrics.json").read_text()) == result


def _flip_middle(path, size=4096):
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - size // 2
    data[start:start + size] = bytes(b ^ 0xFF for b in data[start:start + size])
    path.write_bytes(bytes(data))


def test_resume_from_a_damaged_checkpoint_names_and_takes_the_earlier_one(toy_root, tmp_path):
    train(tiny_config(toy_root, tmp_path, "solver.max_iter=2", "solver.checkpoint_period=1"), progress=False)
    assert read_last_checkpoint(tmp_path) == tmp_path / "model_final.pt"
    _flip_middle(tmp_path / "model_final.pt")
    cfg = tiny_config(toy_root, tmp_path, "solver.max_iter=3", "solver.checkpoint_period=1")
    with pytest.raises(DamagedResumeError) as info:
        train(cfg, resume=True, progress=False)
    assert str(info.value) == (
        f"{tmp_path / 'model_final.pt'}: damaged (its contents do not match its checksum); the newest valid "
        f"earlier checkpoint is {tmp_path / 'model_0000001.pt'} (resume_fallback=True resumes from it)")
    assert info.value.fallback == tmp_path / "model_0000001.pt"

    result = train(cfg, resume=True, resume_fallback=True, progress=False)
    assert result["iteration"] == 3
    assert load_checkpoint(tmp_path / "model_final.pt")["iteration"] == 3  # the damaged file is replaced
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if "loss" in r] == [1, 2, 3]  # iteration 2 trained again


def test_non_finite_weights_are_never_saved(toy_root, tmp_path):
    trainer = Trainer(tiny_config(toy_root, tmp_path), progress=False)
    trainer.build()
    trainer.output_dir.mkdir(parents=True, exist_ok=True)
    trainer.save("model_0000000.pt")
    batch_norm = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    batch_norm.running_var[0] = float("inf")
    with pytest.raises(NonFiniteLossError) as info:
        trainer.save("model_0000001.pt")
    assert "running_var holds non-finite values" in str(info.value)
    assert f"the last good checkpoint is {tmp_path / 'model_0000000.pt'}" in str(info.value)
    assert not (tmp_path / "model_0000001.pt").exists()
    assert read_last_checkpoint(tmp_path) == tmp_path / "model_0000000.pt"
