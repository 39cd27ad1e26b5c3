"""The training loop: Adam + warmup-poly schedule, AMP on CUDA, DDP under torchrun, checkpoints,
periodic evaluation through a callable, exact resume, clean stops on NaN losses and on SIGINT / SIGTERM.

``train(cfg)`` runs one process, or one of ``WORLD_SIZE`` processes started by ``torchrun`` (NCCL on
GPUs, gloo on CPUs).  ``cfg.solver.batch_size`` is the total over all processes; each rank loads its
``batch_size / world_size`` slice of every global batch (see :mod:`pdlkit.engine.data_order`), so
the data order does not depend on the number of processes.  Only rank 0 writes files.

Evaluation is not the trainer's business: it takes ``evaluate(model, iteration) -> dict`` (as
detectron2's ``EvalHook`` takes a function) and calls it on rank 0 every ``test.eval_period``
iterations and at the end, after saving a checkpoint.  An evaluation that raises is logged and
recorded in ``metrics.jsonl`` (``{"iteration", "eval_error"}``); training goes on.

Files in ``cfg.output_dir``: ``model_<iteration>.pt`` every ``solver.checkpoint_period``
iterations (and before each periodic evaluation), ``model_final.pt`` at the end,
``last_checkpoint`` (name of the newest checkpoint), ``metrics.jsonl``, ``tensorboard/`` (when
tensorboard is installed), ``config.yaml`` and ``final_metrics.json``.
"""
from __future__ import annotations

import logging
import math
import random
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import yaml
from torch import nn
from tqdm.auto import tqdm

from ..checkpoint import (
    DamagedCheckpointError,
    capture_rng_state,
    earlier_checkpoints,
    load_checkpoint,
    newest_valid_checkpoint,
    read_last_checkpoint,
    restore_rng_state,
    save_checkpoint,
    write_last_checkpoint,
)
from ..config import Config
from ..data import build_train_dataset, spec_for
from ..errors import DataError, PdlError
from ..fileio import atomic_write_text
from ..io import write_json
from ..modeling import PanopticDeepLabLoss, build_model
from . import data_order
from .data_order import SampleError, SeededSamples, ShardedBatchOrder, collate_or_error, make_worker_init_fn
from .distributed import DistributedContext, cleanup_distributed, setup_distributed
from .metrics import MetricsWriter, WindowAverage, format_seconds, pick_eval_scalars
from .schedule import WarmupPolyLR

__all__ = ["train", "Trainer", "TrainingInterrupted", "NonFiniteLossError", "DamagedResumeError", "LOSS_TERMS",
           "Evaluate"]

logger = logging.getLogger("pdlkit.engine")

# Keys of PanopticDeepLabLoss's output, in the order they are logged and all-reduced.
LOSS_TERMS = ("total", "semantic", "center", "offset")
# evaluate(model in eval mode, iteration) -> {"PQ": ..., "SQ": ..., "mIoU": ..., ...}
Evaluate = Callable[[nn.Module, int], dict]


class TrainingInterrupted(PdlError):
    """SIGINT / SIGTERM stopped training after a checkpoint was written."""

    def __init__(self, message: str, *, signum: int, iteration: int, checkpoint: Optional[Path]):
        super().__init__(message)
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint


class NonFiniteLossError(PdlError):
    """The loss (or a weight) became NaN or infinite; no checkpoint was written after the last good one."""

    def __init__(self, message: str, *, iteration: int, checkpoint: Optional[Path]):
        super().__init__(message)
        self.iteration = iteration
        self.checkpoint = checkpoint


class DamagedResumeError(DataError):
    """The checkpoint to resume from is damaged.  ``damaged`` is its path, ``reason`` the problem and
    ``fallback`` the newest earlier checkpoint that verifies (None when there is none), from which
    ``resume_fallback=True`` resumes."""

    def __init__(self, damaged: Path, reason: str, fallback: Optional[Path]):
        where = (f"the newest valid earlier checkpoint is {fallback} (resume_fallback=True resumes from it)"
                 if fallback else f"no valid earlier checkpoint is in {damaged.parent}")
        super().__init__(f"{damaged}: {reason}; {where}")
        self.damaged, self.reason, self.fallback = damaged, reason, fallback


def train(cfg: Config, *, resume: bool = False, resume_fallback: bool = False, progress: bool = True,
          evaluate: Optional[Evaluate] = None) -> dict:
    """Train the model of ``cfg``; return ``{"iteration", "checkpoint"}`` (the path of
    ``model_final.pt``) plus the final evaluation's result, or ``"eval_error"`` when it raised.

    ``resume=True`` continues from the checkpoint named by ``cfg.output_dir/last_checkpoint`` with
    the same model, optimizer, scheduler, scaler, random states and data order; with no checkpoint
    there it starts from scratch.  When that checkpoint is damaged it raises
    :class:`DamagedResumeError` naming the newest valid earlier one, or, with
    ``resume_fallback=True``, resumes from that one.  ``evaluate(model, iteration)`` (optional)
    scores the model every ``test.eval_period`` iterations and at the end.  Raises
    :class:`NonFiniteLossError` on a NaN/inf loss and :class:`TrainingInterrupted` after SIGINT /
    SIGTERM (both :class:`~pdlkit.errors.PdlError`).  Ranks other than 0 return only ``{"iteration"}``.
    """
    context = setup_distributed()
    try:
        trainer = Trainer(cfg, context, progress=progress, evaluate=evaluate)
        return trainer.run(resume=resume, resume_fallback=resume_fallback)
    finally:
        cleanup_distributed(context)


class _StopRequest:
    """Turns SIGINT / SIGTERM into a flag the loop polls once per iteration (main thread only)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            # A second Ctrl-C: the user does not want to wait for the checkpoint.
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False


class Trainer:
    """Holds the model, optimizer, schedule, data order and writers of one training run."""

    def __init__(self, cfg: Config, context: Optional[DistributedContext] = None, *, progress: bool = True,
                 evaluate: Optional[Evaluate] = None):
        self.cfg = cfg
        self.context = context or DistributedContext()
        self.progress = progress
        self.evaluate_fn = evaluate
        self.output_dir = Path(cfg.output_dir)
        self.writer: Optional[MetricsWriter] = None
        self._check_config()

    # ------------------------------------------------------------------------------------ setup
    def _check_config(self) -> None:
        self.cfg.validate()
        batch, world = self.cfg.solver.batch_size, self.context.world_size
        if batch % world != 0:
            raise PdlError(f"solver.batch_size {batch} (the total over all processes) must be a "
                           f"positive multiple of the number of processes ({world})")
        root = Path(self.cfg.data.root)
        if not root.is_dir():
            raise DataError(f"{root}: dataset root not found (data.root)")

    def build(self) -> None:
        """Dataset, model (norm layers adapted to the device), loss, Adam, schedule and grad scaler."""
        cfg, context = self.cfg, self.context
        self.device = torch.device(context.device)
        self.use_amp = bool(cfg.solver.amp) and self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True

        # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's).
        _seed_everything(cfg.seed)
        self.spec = spec_for(cfg.data)
        self.dataset = build_train_dataset(cfg, self.spec)
        if len(self.dataset) == 0:
            raise DataError(f"{cfg.data.root}: the {cfg.data.train_split!r} split has no training images")
        model = build_model(cfg.model, self.spec.num_classes)
        model = _adapt_norm_layers(model, cfg.model.norm, self.device, context.distributed)
        self.model = model.to(self.device)
        self.loss_fn = PanopticDeepLabLoss(cfg.loss).to(self.device)

        self._trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self._trainable, lr=cfg.solver.lr, weight_decay=cfg.solver.weight_decay)
        self.scheduler = WarmupPolyLR(self.optimizer, max_iter=cfg.solver.max_iter, power=cfg.solver.poly_power,
                                      warmup_iters=cfg.solver.warmup_iters, warmup_factor=cfg.solver.warmup_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.iteration = 0
        self.last_good_checkpoint: Optional[Path] = None
        self._saved_iteration = -1

    # ------------------------------------------------------------------------------------ resume
    def _resume(self, *, fallback: bool = False) -> None:
        found = self._resume_state(fallback)
        if found is None:
            if self.context.is_main:
                logger.warning("resume: no checkpoint in %s, starting from scratch", self.output_dir)
            return
        checkpoint_path, state = found
        for key in ("optimizer", "scheduler", "iteration"):
            if key not in state:
                raise DataError(f"{checkpoint_path}: has no {key!r}, so training cannot resume from it")
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            detail = str(exc).strip().splitlines()
            raise PdlError(f"{checkpoint_path}: its model does not match the config "
                           f"({detail[1].strip() if len(detail) > 1 else detail[0]})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self._follow_config_schedule()
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = self._saved_iteration = int(state["iteration"])
        rng_states = state.get("rng_per_rank") or []
        if len(rng_states) == self.context.world_size:
            restore_rng_state(rng_states[self.context.rank])
        else:
            _seed_everything(_rank_seed(self.cfg.seed, self.context.rank, self.iteration))
        self.last_good_checkpoint = checkpoint_path
        del state
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.context.is_main:
            logger.info("resumed from %s at iteration %d", checkpoint_path, self.iteration)

    def _resume_state(self, fallback: bool):
        """(path, verified state) to resume from, or None when the folder has no checkpoint."""
        latest = read_last_checkpoint(self.output_dir)
        if latest is None:
            return None
        try:
            return latest, load_checkpoint(latest, map_location=self.device)
        except DamagedCheckpointError as exc:
            earlier = newest_valid_checkpoint(earlier_checkpoints(self.output_dir, latest), self.device)
            if earlier is None or not fallback:
                raise DamagedResumeError(latest, exc.reason, earlier[0] if earlier else None) from None
            if self.context.is_main:
                logger.warning("%s: %s; resuming from %s instead", latest, exc.reason, earlier[0])
            return earlier

    def _follow_config_schedule(self) -> None:
        # The schedule follows the config, so a finished or stopped run can be extended with a larger
        # solver.max_iter; with the same config this recomputes exactly the saved learning rate.
        solver, scheduler = self.cfg.solver, self.scheduler
        scheduler.max_iter, scheduler.power = solver.max_iter, solver.poly_power
        scheduler.warmup_iters, scheduler.warmup_factor = solver.warmup_iters, solver.warmup_factor
        scheduler.base_lrs = [solver.lr for _ in self.optimizer.param_groups]
        current = scheduler.get_lr()
        for group, lr in zip(self.optimizer.param_groups, current):
            group["lr"] = lr
        scheduler._last_lr = list(current)

    def _make_loader(self):
        cfg, context = self.cfg, self.context
        self.batch_order = ShardedBatchOrder(
            len(self.dataset), cfg.solver.batch_size, seed=cfg.seed, rank=context.rank,
            world_size=context.world_size, start_iteration=self.iteration, stop_iteration=cfg.solver.max_iter,
        )
        start_epoch = self.batch_order.epoch_of(self.iteration)
        num_workers = max(int(cfg.data.num_workers), 0)
        return torch.utils.data.DataLoader(
            SeededSamples(self.dataset),
            batch_sampler=self.batch_order,
            num_workers=num_workers,
            collate_fn=collate_or_error,
            pin_memory=self.device.type == "cuda",
            worker_init_fn=make_worker_init_fn(cfg.seed, context.rank, start_epoch) if num_workers else None,
            # A private generator: creating the loader's iterator must not consume the global torch
            # random stream, or a resumed run would draw different dropout masks.
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    # ------------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "config": self.cfg.to_dict(),
            "dataset": self.spec.to_dict(),
            "rng_per_rank": self._gather_rng_states(),
        }

    def _gather_rng_states(self) -> list:
        state = capture_rng_state()
        if not self.context.distributed:
            return [state]
        gathered = [None] * self.context.world_size
        torch.distributed.all_gather_object(gathered, state)
        return gathered

    def save(self, name: str) -> Optional[Path]:
        """Write a checkpoint (rank 0) and point ``last_checkpoint`` at it; all ranks must call it.

        Raises :class:`NonFiniteLossError` (and writes nothing) when a weight or an optimizer state
        holds NaN or infinity."""
        state = self._state()  # every rank takes part in gathering the random states
        path = self.output_dir / name
        if self.context.is_main:
            try:
                save_checkpoint(path, state)
            except DataError as exc:  # non-finite values: keep the last good checkpoint as it is
                raise NonFiniteLossError(f"training stopped at iteration {self.iteration}: {exc}; "
                                         f"{self._last_good_phrase()}", iteration=self.iteration,
                                         checkpoint=self.last_good_checkpoint) from None
            write_last_checkpoint(self.output_dir, path)
        self.context.barrier()
        self.last_good_checkpoint = path
        self._saved_iteration = self.iteration
        return path

    def _last_good_phrase(self) -> str:
        return (f"the last good checkpoint is {self.last_good_checkpoint}" if self.last_good_checkpoint
                else "no checkpoint had been written yet")

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """The evaluation callable's result for the current model, after saving a checkpoint.  Every
        rank calls it with rank 0's weights and buffers (under torchrun the library evaluation
        predicts a share per rank and rank 0 scores).  An evaluation that raises is logged and
        recorded in metrics.jsonl and gives ``{"eval_error": message}``; it never stops training."""
        from ..inference.distributed import sync_module_state

        if self.evaluate_fn is None:
            return {}
        if self._saved_iteration != self.iteration:
            self.save(f"model_{self.iteration:07d}.pt")  # nothing is lost if the evaluation crashes
        result: dict = {}
        model = _unwrap(self.model)
        was_training = model.training
        try:
            sync_module_state(model)  # CPU DDP keeps per-rank batch-norm statistics
            result = dict(self.evaluate_fn(model.eval(), self.iteration) or {})
        except Exception as exc:  # noqa: BLE001 - any failure of the callable is reported, not fatal
            message = " ".join(str(exc).split()) or type(exc).__name__
            logger.error("evaluation at iteration %d failed: %s: %s", self.iteration, type(exc).__name__, message)
            result = {"eval_error": f"{type(exc).__name__}: {message}"}
        finally:
            model.train(was_training)
        if self.context.is_main:
            self._log_evaluation(result)
        self.context.barrier()
        return result

    def _log_evaluation(self, result: dict) -> None:
        if self.writer is None:
            return
        if "eval_error" in result:
            self.writer.write({"iteration": self.iteration, "eval_error": result["eval_error"]})
        elif result:
            self.writer.write({"iteration": self.iteration, "eval": pick_eval_scalars(result)})

    # ------------------------------------------------------------------------------------ the loop
    def run(self, *, resume: bool = False, resume_fallback: bool = False) -> dict:
        self.build()
        if resume:
            self._resume(fallback=resume_fallback)
        else:
            # Per-rank streams for dropout; data randomness is seeded per sample (data_order).
            _seed_everything(_rank_seed(self.cfg.seed, self.context.rank, 0))
        if self.context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.output_dir / "config.yaml", yaml.safe_dump(self.cfg.to_dict(), sort_keys=False))
            self.writer = MetricsWriter(self.output_dir, start_iteration=self.iteration)
        self.model.train()
        if self.context.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=device_ids)
        try:
            with _StopRequest() as stop_request:
                self._loop(stop_request)
            final_path = self.output_dir / "model_final.pt"
            # Resuming a finished run only re-evaluates; everything else ends with model_final.pt.
            if self.last_good_checkpoint != final_path:
                self.save("model_final.pt")
            result = self.evaluate()
            if not self.context.is_main:
                return {"iteration": self.iteration}
            summary = {"iteration": self.iteration, "checkpoint": str(final_path), **result}
            write_json(self.output_dir / "final_metrics.json", summary, indent=2, sort_keys=True, default=float)
            return summary
        finally:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self.device.type == "cuda":
                torch.cuda.synchronize()

    def _loop(self, stop_request: _StopRequest) -> None:
        max_iter = self.cfg.solver.max_iter
        if self.iteration >= max_iter:
            return
        batches = iter(self._make_loader())
        self._window = WindowAverage()
        self._bar = tqdm(total=max_iter, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True,
                         disable=not (self.context.is_main and self.progress), smoothing=0.05)
        self._run_start, self._run_start_iteration = time.perf_counter(), self.iteration
        try:
            while self.iteration < max_iter:
                step_start = time.perf_counter()
                batch = self._next_batch(batches, stop_request)
                data_time = time.perf_counter() - step_start
                loss_values, lr, stop_now = self.run_step(batch, stop_requested=stop_request.signum is not None)
                self._after_step(loss_values, lr, time.perf_counter() - step_start, data_time)
                if stop_now:
                    self._stop(stop_request.signum or signal.SIGTERM)
        finally:
            self._bar.close()
            _shut_down(batches)
        if self.context.is_main:
            elapsed = time.perf_counter() - self._run_start
            logger.info("trained %d iterations in %s", self.iteration - self._run_start_iteration,
                        format_seconds(elapsed))

    def _next_batch(self, batches, stop_request: _StopRequest) -> dict:
        try:
            batch = next(batches)
        except RuntimeError as exc:
            if stop_request.signum is not None:  # the same signal already ended the loader's workers
                self._stop(stop_request.signum)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PdlError(f"data loading failed at iteration {self.iteration + 1} ({first})") from None
        if isinstance(batch, SampleError):
            raise DataError(batch.message)
        return batch

    def _after_step(self, loss_values, lr: float, step_time: float, data_time: float) -> None:
        """Logging, periodic checkpoints and periodic evaluation after iteration ``self.iteration``."""
        cfg, max_iter = self.cfg, self.cfg.solver.max_iter
        self._window.add({**{f"loss_{k}" if k != "total" else "loss": v for k, v in zip(LOSS_TERMS, loss_values)},
                          "time": step_time, "data_time": data_time})
        if self.context.is_main:
            self._bar.set_postfix_str(
                f"loss {loss_values[0]:.3f} sem {loss_values[1]:.3f} ctr {loss_values[2]:.3f} "
                f"off {loss_values[3]:.3f} lr {lr:.2e}", refresh=False)
            self._bar.update(1)
        if self.iteration % cfg.solver.log_period == 0 or self.iteration == max_iter:
            self._write_window(lr)
        if self.iteration % cfg.solver.checkpoint_period == 0 and self.iteration < max_iter:
            self.save(f"model_{self.iteration:07d}.pt")
        if cfg.test.eval_period > 0 and self.iteration % cfg.test.eval_period == 0 and self.iteration < max_iter:
            scalars = pick_eval_scalars(self.evaluate())
            if scalars:
                self._bar.write(f"iteration {self.iteration}: " + ", ".join(f"{k} {v:.2f}" for k, v in scalars.items()))

    def _write_window(self, lr: float) -> None:
        if self.writer is not None:
            done = self.iteration - self._run_start_iteration
            seconds_per_iter = (time.perf_counter() - self._run_start) / max(done, 1)
            self.writer.write({"iteration": self.iteration, "lr": lr, **self._window.means(),
                               "eta_seconds": seconds_per_iter * (self.cfg.solver.max_iter - self.iteration)})
        self._window.reset()

    def run_step(self, batch: dict, *, stop_requested: bool = False):
        """One optimisation step on ``batch`` (``{"image": [N, 3, H, W], targets...}``, this rank's
        slice).  Returns (mean loss terms over all ranks in ``LOSS_TERMS`` order, the learning rate
        used, whether any rank asked to stop).  Raises :class:`NonFiniteLossError` before touching
        the weights when the loss is NaN or infinite on any rank."""
        cfg, context = self.cfg, self.context
        images = batch["image"].to(self.device, non_blocking=True)
        targets = {key: value.to(self.device, non_blocking=True)
                   for key, value in batch.items() if key != "image" and torch.is_tensor(value)}
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if self.use_amp else nullcontext()
        with autocast:
            outputs = self.model(images)
            losses = self.loss_fn(outputs, targets)
        # One all-reduce carries the loss terms (for logging, and for the NaN check, which all ranks
        # must agree on) and the stop flag (so that all ranks stop at the same iteration).
        reduced = torch.stack([losses[key].detach().float() for key in LOSS_TERMS]
                              + [torch.tensor(float(stop_requested), device=self.device)])
        context.all_reduce_sum(reduced)
        reduced = reduced.cpu()
        loss_values = (reduced[:len(LOSS_TERMS)] / context.world_size).tolist()
        stop_now = reduced[-1].item() > 0
        if not all(math.isfinite(v) for v in loss_values):
            self._raise_non_finite(loss_values)

        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(losses["total"]).backward()
        if cfg.solver.clip_grad_norm is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._trainable, cfg.solver.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        self.iteration += 1
        return loss_values, lr, stop_now

    def _raise_non_finite(self, loss_values) -> None:
        terms = ", ".join(f"{name} {value}" for name, value in zip(LOSS_TERMS, loss_values))
        raise NonFiniteLossError(
            f"the loss became non-finite at iteration {self.iteration + 1} ({terms}); training stopped "
            f"and {self._last_good_phrase()} (try a lower solver.lr or solver.clip_grad_norm)",
            iteration=self.iteration + 1, checkpoint=self.last_good_checkpoint)

    def _stop(self, signum: int) -> None:
        # Name a periodic-style file so the run can also be resumed by hand from it.
        path = self.save(f"model_{self.iteration:07d}.pt")
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            f"training stopped by {name} at iteration {self.iteration}; checkpoint saved to {path}",
            signum=signum, iteration=self.iteration, checkpoint=path)


# ---------------------------------------------------------------------------------------- helpers
def _shut_down(batches) -> None:
    """Stop the loader's workers now, through their queues.

    Dropping the iterator is not enough after an exception: the traceback keeps it alive until the
    process exits, and its workers with it.
    """
    shutdown = getattr(batches, "_shutdown_workers", None)  # absent for num_workers=0
    if shutdown is not None:
        shutdown()


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _rank_seed(seed: int, rank: int, iteration: int) -> int:
    return data_order._mix(seed, 3, rank, iteration) & 0xFFFFFFFF


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def _adapt_norm_layers(model, norm: str, device, distributed: bool):
    """SyncBatchNorm only where it can work (CUDA + DDP); plain BatchNorm2d everywhere else."""
    if norm == "SyncBN" and device.type == "cuda" and distributed:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _sync_to_batch_norm(model)


def _sync_to_batch_norm(module):
    converted = module
    if isinstance(module, torch.nn.SyncBatchNorm):
        converted = torch.nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                         module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.train(module.training)
    for name, child in module.named_children():
        converted.add_module(name, _sync_to_batch_norm(child))
    return converted
