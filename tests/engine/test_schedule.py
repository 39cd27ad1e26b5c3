"""Warmup + poly learning-rate schedule."""
from __future__ import annotations

import pytest
import torch

from pdlkit.engine.schedule import WarmupPolyLR, poly_lr_factor


def test_poly_without_warmup_matches_the_formula():
    for iteration in (0, 1, 50, 99, 100):
        assert poly_lr_factor(iteration, max_iter=100, power=0.9) == pytest.approx((1 - iteration / 100) ** 0.9)


def test_linear_warmup_ramps_from_warmup_factor():
    # iteration 0: warmup_factor; halfway through the warmup: the mean of warmup_factor and 1.
    assert poly_lr_factor(0, max_iter=1000, warmup_iters=10, warmup_factor=0.1) == pytest.approx(0.1)
    assert poly_lr_factor(5, max_iter=1000, warmup_iters=10, warmup_factor=0.1) == pytest.approx(
        0.55 * (1 - 5 / 1000) ** 0.9)
    assert poly_lr_factor(10, max_iter=1000, warmup_iters=10, warmup_factor=0.1) == pytest.approx(
        (1 - 10 / 1000) ** 0.9)


def test_scheduler_steps_and_resumes_on_the_same_curve():
    def make():
        param = torch.nn.Parameter(torch.zeros(1))
        optimizer = torch.optim.Adam([param], lr=0.01)
        return optimizer, WarmupPolyLR(optimizer, max_iter=20, power=0.9, warmup_iters=4, warmup_factor=0.25)

    optimizer, scheduler = make()
    seen = []
    for _ in range(20):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.01 * poly_lr_factor(i, max_iter=20, warmup_iters=4, warmup_factor=0.25)
                                  for i in range(20)])
    assert optimizer.param_groups[0]["lr"] == 0.0  # the end of the poly curve

    optimizer, scheduler = make()
    for _ in range(7):
        optimizer.step()
        scheduler.step()
    saved = scheduler.state_dict()
    optimizer2, scheduler2 = make()
    scheduler2.load_state_dict(saved)
    # The restored scheduler sets the lr on its next step exactly as the original does.
    optimizer.step()
    scheduler.step()
    optimizer2.step()
    scheduler2.step()
    assert optimizer2.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"] == pytest.approx(seen[8])
