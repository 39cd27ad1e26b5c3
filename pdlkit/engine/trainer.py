"""The training loop: Adam + warmup-poly schedule, AMP on CUDA, DDP under torchrun, checkpoints,
periodic evaluation, exact resume, clean stops on NaN losses and on SIGINT / SIGTERM.

``train(cfg)`` runs one process, or one of ``WORLD_SIZE`` processes started by ``torchrun`` (NCCL on
GPUs, gloo on CPUs).  ``cfg.solver.batch_size`` is the total over all processes; each rank loads its
``batch_size / world_size`` slice of every global batch (see :mod:`pdlkit.engine.data_order`), so
the data order does not depend on the number of processes.  Only rank 0 writes files.

Files in ``cfg.output_dir``: ``model_<iteration>.pt`` every ``solver.checkpoint_period``
iterations, ``model_final.pt`` at the end, ``last_checkpoint`` (name of the newest checkpoint),
``metrics.jsonl``, ``tensorboard/`` (when tensorboard is installed), ``config.yaml`` and
``final_metrics.json``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

from ..config import Config
from ..errors import DataError, PdlError
from .checkpoint import (
    capture_rng_state,
    load_checkpoint,
    read_last_checkpoint,
    restore_rng_state,
    save_checkpoint,
    write_last_checkpoint,
)
from .distributed import DistributedContext, cleanup_distributed, setup_distributed

__all__ = ["train", "Trainer", "TrainingInterrupted", "NonFiniteLossError", "LOSS_TERMS"]

logger = logging.getLogger("pdlkit.engine")

# Keys of PanopticDeepLabLoss's output, in the order they are logged and all-reduced.
LOSS_TERMS = ("total", "semantic", "center", "offset")


class TrainingInterrupted(PdlError):
    """SIGINT / SIGTERM stopped training after a checkpoint was written."""

    def __init__(self, message: str, *, signum: int, iteration: int, checkpoint: Optional[Path]):
        super().__init__(message)
        self.signum = signum
        self.iteration = iteration
        self.checkpoint = checkpoint


class NonFiniteLossError(PdlError):
    """The loss became NaN or infinite; no checkpoint was written after the last good one."""

    def __init__(self, message: str, *, iteration: int, checkpoint: Optional[Path]):
        super().__init__(message)
        self.iteration = iteration
        self.checkpoint = checkpoint


def train(cfg: Config, *, resume: bool = False, progress: bool = True) -> dict:
    """Train the model of ``cfg`` and return the final evaluation (PQ, SQ, RQ, mIoU, ... percentages)
    plus ``iteration`` and ``checkpoint`` (the path of ``model_final.pt``).

    ``resume=True`` continues from the checkpoint named by ``cfg.output_dir/last_checkpoint`` with
    the same model, optimizer, scheduler, scaler, random states and data order; with no checkpoint
    there it starts from scratch.  Raises :class:`NonFiniteLossError` on a NaN/inf loss and
    :class:`TrainingInterrupted` after SIGINT / SIGTERM (both :class:`~pdlkit.errors.PdlError`).
    Ranks other than 0 return only ``{"iteration": ...}``.
    """
    context = setup_distributed()
    try:
        trainer = Trainer(cfg, context, progress=progress)
        return trainer.run(resume=resume)
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

    def __init__(self, cfg: Config, context: Optional[DistributedContext] = None, *, progress: bool = True):
        self.cfg = cfg
        self.context = context or DistributedContext()
        self.progress = progress
        self.output_dir = Path(cfg.output_dir)
        self._check_config()

    # ------------------------------------------------------------------------------------ setup
    def _check_config(self) -> None:
        cfg, world = self.cfg, self.context.world_size
        solver = cfg.solver
        if solver.max_iter <= 0:
            raise PdlError(f"solver.max_iter must be positive, got {solver.max_iter}")
        if solver.batch_size <= 0 or solver.batch_size % world != 0:
            raise PdlError(f"solver.batch_size {solver.batch_size} (the total over all processes) must be a "
                           f"positive multiple of the number of processes ({world})")
        for name in ("checkpoint_period", "log_period"):
            if getattr(solver, name) <= 0:
                raise PdlError(f"solver.{name} must be positive, got {getattr(solver, name)}")
        if cfg.test.eval_period < 0:
            raise PdlError(f"test.eval_period must be >= 0, got {cfg.test.eval_period}")
        if cfg.solver.clip_grad_norm is not None and cfg.solver.clip_grad_norm <= 0:
            raise PdlError(f"solver.clip_grad_norm must be positive or null, got {cfg.solver.clip_grad_norm}")
        root = Path(cfg.data.root)
        if not root.is_dir():
            raise DataError(f"{root}: dataset root not found (set it with --data or data.root)")

    def build(self) -> None:
        """Dataset, model (norm layers adapted to the device), loss, Adam, schedule and grad scaler."""
        import torch

        from ..data import build_train_dataset, spec_for
        from ..modeling import PanopticDeepLabLoss, build_model

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
        from .schedule import WarmupPolyLR

        self.scheduler = WarmupPolyLR(self.optimizer, max_iter=cfg.solver.max_iter, power=cfg.solver.poly_power,
                                      warmup_iters=cfg.solver.warmup_iters, warmup_factor=cfg.solver.warmup_factor)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.iteration = 0
        self.last_good_checkpoint: Optional[Path] = None

    def _resume(self) -> None:
        import torch

        checkpoint_path = read_last_checkpoint(self.output_dir)
        if checkpoint_path is None:
            if self.context.is_main:
                logger.warning("--resume: no checkpoint in %s, starting from scratch", self.output_dir)
            return
        state = load_checkpoint(checkpoint_path, map_location=self.device)
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
        # The schedule follows the config, so a finished or stopped run can be extended with a larger
        # solver.max_iter; with the same config this recomputes exactly the saved learning rate.
        solver = self.cfg.solver
        self.scheduler.max_iter, self.scheduler.power = solver.max_iter, solver.poly_power
        self.scheduler.warmup_iters, self.scheduler.warmup_factor = solver.warmup_iters, solver.warmup_factor
        self.scheduler.base_lrs = [solver.lr for _ in self.optimizer.param_groups]
        current = self.scheduler.get_lr()
        for group, lr in zip(self.optimizer.param_groups, current):
            group["lr"] = lr
        self.scheduler._last_lr = list(current)
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
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

    def _make_loader(self):
        import torch

        from .data_order import SeededSamples, ShardedBatchOrder, make_worker_init_fn

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
            pin_memory=self.device.type == "cuda",
            worker_init_fn=make_worker_init_fn(cfg.seed, context.rank, start_epoch) if num_workers else None,
            # A private generator: creating the loader's iterator must not consume the global torch
            # random stream, or a resumed run would draw different dropout masks.
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    # ------------------------------------------------------------------------------------ checkpoints
    def _state(self) -> dict:
        from .. import __version__

        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "iteration": self.iteration,
            "config": self.cfg.to_dict(),
            "dataset": self.spec.to_dict(),
            "pdlkit_version": __version__,
            "rng_per_rank": self._gather_rng_states(),
        }

    def _gather_rng_states(self) -> list:
        state = capture_rng_state()
        if not self.context.distributed:
            return [state]
        import torch.distributed as dist

        gathered = [None] * self.context.world_size
        dist.all_gather_object(gathered, state)
        return gathered

    def save(self, name: str) -> Optional[Path]:
        """Write a checkpoint (rank 0) and point ``last_checkpoint`` at it; all ranks must call it."""
        state = self._state()  # every rank takes part in gathering the random states
        path = self.output_dir / name
        if self.context.is_main:
            save_checkpoint(path, state)
            write_last_checkpoint(self.output_dir, path)
        self.context.barrier()
        self.last_good_checkpoint = path
        return path

    # ------------------------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict:
        """PQ / SQ / RQ / mIoU of the current model on the val split (rank 0; others wait)."""
        result: dict = {}
        if self.context.is_main:
            model = _unwrap(self.model)
            was_training = model.training
            model.eval()
            try:
                result = _evaluate(model, self.cfg, self.spec, self.device, work_dir=self.output_dir)
            finally:
                model.train(was_training)
        self.context.barrier()
        return result

    # ------------------------------------------------------------------------------------ the loop
    def run(self, *, resume: bool = False) -> dict:
        import torch

        self.build()
        if resume:
            self._resume()
        else:
            # Per-rank streams for dropout; data randomness is seeded per sample (data_order).
            _seed_everything(_rank_seed(self.cfg.seed, self.context.rank, 0))
        cfg, context = self.cfg, self.context

        if context.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            _write_config(self.output_dir / "config.yaml", cfg)
        model = self.model
        model.train()
        if context.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        self.model = model

        writer = None
        if context.is_main:
            from .metrics import MetricsWriter

            writer = MetricsWriter(self.output_dir, start_iteration=self.iteration)
        try:
            with _StopRequest() as stop_request:
                self._loop(model, writer, stop_request)
            final_path = self.output_dir / "model_final.pt"
            # Resuming a finished run only re-evaluates; everything else ends with model_final.pt.
            if self.last_good_checkpoint != final_path:
                self.save("model_final.pt")
            result = self.evaluate()
            if context.is_main:
                from .metrics import pick_eval_scalars

                if writer is not None and result:
                    writer.write({"iteration": self.iteration, "eval": pick_eval_scalars(result)})
                summary = {"iteration": self.iteration, "checkpoint": str(final_path), **result}
                _write_json(self.output_dir / "final_metrics.json", summary)
                return summary
            return {"iteration": self.iteration}
        finally:
            if writer is not None:
                writer.close()
            if self.device.type == "cuda":
                torch.cuda.synchronize()

    def _loop(self, model, writer, stop_request: _StopRequest) -> None:
        from tqdm.auto import tqdm

        from .metrics import WindowAverage, format_seconds, pick_eval_scalars

        cfg, context = self.cfg, self.context
        max_iter = cfg.solver.max_iter
        if self.iteration >= max_iter:
            return
        loader = self._make_loader()
        batches = iter(loader)
        window = WindowAverage()
        bar = tqdm(total=max_iter, initial=self.iteration, desc="train", unit="it", dynamic_ncols=True,
                   disable=not (context.is_main and self.progress), smoothing=0.05)
        run_start, run_start_iteration = time.perf_counter(), self.iteration
        try:
            while self.iteration < max_iter:
                step_start = time.perf_counter()
                batch = next(batches)
                data_time = time.perf_counter() - step_start
                loss_values, lr, stop_now = self.run_step(batch, stop_requested=stop_request.signum is not None)
                step_time = time.perf_counter() - step_start

                window.add({**{f"loss_{k}" if k != "total" else "loss": v for k, v in zip(LOSS_TERMS, loss_values)},
                            "time": step_time, "data_time": data_time})
                if context.is_main:
                    bar.set_postfix_str(
                        f"loss {loss_values[0]:.3f} sem {loss_values[1]:.3f} ctr {loss_values[2]:.3f} "
                        f"off {loss_values[3]:.3f} lr {lr:.2e}", refresh=False)
                    bar.update(1)
                if self.iteration % cfg.solver.log_period == 0 or self.iteration == max_iter:
                    if writer is not None:
                        means = window.means()
                        done = self.iteration - run_start_iteration
                        seconds_per_iter = (time.perf_counter() - run_start) / max(done, 1)
                        writer.write({"iteration": self.iteration, "lr": lr, **means,
                                      "eta_seconds": seconds_per_iter * (max_iter - self.iteration)})
                    window.reset()

                if self.iteration % cfg.solver.checkpoint_period == 0 and self.iteration < max_iter:
                    self.save(f"model_{self.iteration:07d}.pt")
                if (cfg.test.eval_period > 0 and self.iteration % cfg.test.eval_period == 0
                        and self.iteration < max_iter):
                    result = self.evaluate()
                    if writer is not None and result:
                        scalars = pick_eval_scalars(result)
                        writer.write({"iteration": self.iteration, "eval": scalars})
                        bar.write(f"iteration {self.iteration}: " + ", ".join(
                            f"{k} {v:.2f}" for k, v in scalars.items()))
                if stop_now:
                    self._stop(stop_request.signum or signal.SIGTERM)
        finally:
            bar.close()
            del batches  # shuts the workers down before anything else happens
        if context.is_main:
            elapsed = time.perf_counter() - run_start
            logger.info("trained %d iterations in %s", self.iteration - run_start_iteration, format_seconds(elapsed))

    def run_step(self, batch: dict, *, stop_requested: bool = False):
        """One optimisation step on ``batch`` (``{"image": [N, 3, H, W], targets...}``, this rank's
        slice).  Returns (mean loss terms over all ranks in ``LOSS_TERMS`` order, the learning rate
        used, whether any rank asked to stop).  Raises :class:`NonFiniteLossError` before touching
        the weights when the loss is NaN or infinite on any rank."""
        import torch

        cfg, context = self.cfg, self.context
        model = self.model
        images = batch["image"].to(self.device, non_blocking=True)
        targets = {key: value.to(self.device, non_blocking=True)
                   for key, value in batch.items() if key != "image" and torch.is_tensor(value)}
        autocast = torch.autocast(device_type="cuda", dtype=torch.float16) if self.use_amp else nullcontext()
        with autocast:
            outputs = model(images)
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
        where = (f"the last good checkpoint is {self.last_good_checkpoint}" if self.last_good_checkpoint
                 else "no checkpoint had been written yet")
        raise NonFiniteLossError(
            f"the loss became non-finite at iteration {self.iteration + 1} ({terms}); training stopped "
            f"and {where} (try a lower solver.lr or solver.clip_grad_norm)",
            iteration=self.iteration + 1, checkpoint=self.last_good_checkpoint)

    def _stop(self, signum: int) -> None:
        # Name a periodic-style file so the run can also be resumed by hand from it.
        path = self.save(f"model_{self.iteration:07d}.pt")
        name = signal.Signals(signum).name
        raise TrainingInterrupted(
            f"training stopped by {name} at iteration {self.iteration}; checkpoint saved to {path}; "
            f"continue with --resume",
            signum=signum, iteration=self.iteration, checkpoint=path)


# ---------------------------------------------------------------------------------------- helpers
def _evaluate(model, cfg: Config, spec, device, *, work_dir) -> dict:
    """Score ``model`` on the val split (AP skipped for speed); ``{}`` with a warning when the split
    cannot be read."""
    from ..evaluation import predict_and_evaluate
    from ..inference import Predictor

    try:
        return predict_and_evaluate(Predictor.from_model(model, cfg, spec, device), cfg.data.root,
                                    cfg.data.val_split, dataset=cfg.data.dataset, work_dir=work_dir,
                                    max_images=cfg.test.max_eval_images, compute_ap=False)
    except DataError as exc:
        logger.warning("skipping evaluation: %s", exc)
        return {}


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _rank_seed(seed: int, rank: int, iteration: int) -> int:
    from .data_order import _mix

    return _mix(seed, 3, rank, iteration) & 0xFFFFFFFF


def _seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    torch.manual_seed(seed)


def _adapt_norm_layers(model, norm: str, device, distributed: bool):
    """SyncBatchNorm only where it can work (CUDA + DDP); plain BatchNorm2d everywhere else."""
    import torch

    if norm == "SyncBN" and device.type == "cuda" and distributed:
        return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _sync_to_batch_norm(model)


def _sync_to_batch_norm(module):
    import torch

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


def _write_config(path: Path, cfg: Config) -> None:
    import yaml

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    os.replace(tmp, path)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=float))
    os.replace(tmp, path)
