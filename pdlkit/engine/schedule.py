"""Learning-rate schedule: poly decay with an optional linear warmup (detectron2's ``WarmupPolyLR``)."""
from __future__ import annotations

import torch

__all__ = ["poly_lr_factor", "WarmupPolyLR"]


def poly_lr_factor(iteration: int, *, max_iter: int, power: float = 0.9, warmup_iters: int = 0,
                   warmup_factor: float = 0.001) -> float:
    """Multiplier of the base learning rate before optimizer step ``iteration`` (0-based).

    ``(1 - iteration / max_iter) ** power``, times a linear ramp from ``warmup_factor`` to 1 over
    the first ``warmup_iters`` iterations.
    """
    if max_iter <= 0:
        raise ValueError(f"max_iter must be positive, got {max_iter}")
    progress = min(max(iteration, 0), max_iter) / max_iter
    factor = (1.0 - progress) ** power
    if iteration < warmup_iters:
        alpha = iteration / warmup_iters
        factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """``lr = base_lr * poly_lr_factor(last_epoch)``; step once per iteration after ``optimizer.step()``.

    Its state (``last_epoch``, ``base_lrs``) round-trips through ``state_dict`` so a resumed run
    continues the same curve.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, max_iter: int, power: float = 0.9,
                 warmup_iters: int = 0, warmup_factor: float = 0.001, last_epoch: int = -1):
        self.max_iter = int(max_iter)
        self.power = float(power)
        self.warmup_iters = int(warmup_iters)
        self.warmup_factor = float(warmup_factor)
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        factor = poly_lr_factor(self.last_epoch, max_iter=self.max_iter, power=self.power,
                                warmup_iters=self.warmup_iters, warmup_factor=self.warmup_factor)
        return [base_lr * factor for base_lr in self.base_lrs]

    def _get_closed_form_lr(self):
        return self.get_lr()
