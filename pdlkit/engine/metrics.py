"""Training logs: ``metrics.jsonl`` (always) and TensorBoard scalars (when tensorboard is importable).

``metrics.jsonl`` holds one JSON object per line: every ``log_period`` iterations the window's mean
losses, learning rate and timings (``{"iteration", "lr", "loss", "loss_semantic", ...}``), and after
each evaluation ``{"iteration", "eval": {"PQ", "SQ", "RQ", "mIoU", ...}}``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Optional

from ..fileio import atomic_write_text

__all__ = ["MetricsWriter", "WindowAverage", "format_seconds"]


def format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class WindowAverage:
    """Running means of named scalars since the last :meth:`reset`."""

    def __init__(self):
        self.sums: dict = {}
        self.count = 0

    def add(self, values: dict) -> None:
        for key, value in values.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def means(self) -> dict:
        return {key: total / self.count for key, total in self.sums.items()} if self.count else {}

    def reset(self) -> None:
        self.sums = {}
        self.count = 0


class MetricsWriter:
    """Appends JSON lines to ``output_dir/metrics.jsonl`` and mirrors scalars to TensorBoard.

    ``start_iteration`` > 0 (a resumed run) first drops lines logged after that iteration by the
    interrupted run, so the file reads as one uninterrupted run.
    """

    def __init__(self, output_dir: str | os.PathLike, *, start_iteration: int = 0, tensorboard: bool = True):
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.output_dir / "metrics.jsonl"
        if start_iteration > 0 and self.path.is_file():
            self._truncate_after(start_iteration)
        elif start_iteration == 0 and self.path.is_file():
            self.path.unlink()  # a fresh run in a reused folder starts a fresh log
        self._handle = open(self.path, "a", encoding="utf-8")
        self._tensorboard = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tensorboard = SummaryWriter(
                    log_dir=str(self.output_dir / "tensorboard"),
                    purge_step=start_iteration if start_iteration > 0 else None,
                )

    def _truncate_after(self, iteration: int) -> None:
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a killed process
                continue
            if int(record.get("iteration", 0)) <= iteration:
                kept.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: dict, *, scalars_prefix: str = "train/") -> None:
        self._handle.write(json.dumps(record, sort_keys=True) + "\n")
        self._handle.flush()
        if self._tensorboard is not None:
            step = int(record["iteration"])
            for key, value in _flatten(record).items():
                if key != "iteration" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tensorboard.add_scalar(scalars_prefix + key, value, step)
            self._tensorboard.flush()

    def close(self) -> None:
        self._handle.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _flatten(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, prefix + key + "/"))
        else:
            flat[prefix + key] = value
    return flat


def pick_eval_scalars(result: Optional[dict]) -> dict:
    """The headline numbers of an evaluation result (skips per-class tables)."""
    if not result:
        return {}
    scalars = {}
    for key in ("PQ", "SQ", "RQ", "mIoU", "AP", "AP50"):
        if isinstance(result.get(key), (int, float)):
            scalars[key] = float(result[key])
    for group in ("things", "stuff"):
        part = result.get(group)
        if isinstance(part, dict):
            for key in ("PQ", "SQ", "RQ"):
                if isinstance(part.get(key), (int, float)):
                    scalars[f"{group}_{key}"] = float(part[key])
    return scalars
