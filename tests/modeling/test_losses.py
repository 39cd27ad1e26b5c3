"""Panoptic-DeepLab losses on small cases whose answers are written out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from pdlkit.config import LossConfig
from pdlkit.modeling.losses import PanopticDeepLabLoss, bootstrapped_cross_entropy

IGNORE = 255


def _semantic_case():
    """4x4, two classes; the class-1 logit is 0 everywhere, so CE = log(1 + exp(-z)) for label 0 and
    log(1 + exp(z)) for label 1, where z is the class-0 logit."""
    z = torch.full((4, 4), 5.0)
    labels = torch.zeros(4, 4, dtype=torch.long)
    weights = torch.ones(4, 4)
    z[0, 0], labels[0, 0], weights[0, 0] = 0.0, 0, 3.0  # small instance: 3 * log 2 = 2.079
    z[0, 1], labels[0, 1] = 0.0, 1  # log 2 = 0.693
    z[1, 1], labels[1, 1] = 2.0, 1  # log(1 + e^2) = 2.127
    z[2, 2], labels[2, 2] = -9.0, IGNORE  # would be the hardest pixel, but it is ignored
    z[3, 3], labels[3, 3] = -1.0, 0  # log(1 + e) = 1.313
    logits = torch.stack([z, torch.zeros(4, 4)])[None]  # [1, 2, 4, 4]
    return logits, labels[None], weights[None]


def test_bootstrapped_cross_entropy_by_hand():
    logits, labels, weights = _semantic_case()
    # int(0.2 * 16) = 3 hardest weighted pixels: (1, 1), (0, 0), (3, 3).
    expected = (math.log(1 + math.e**2) + 3 * math.log(2) + math.log(1 + math.e)) / 3
    loss = bootstrapped_cross_entropy(logits, labels, weights, top_k=0.2)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_bootstrapped_cross_entropy_without_mining_averages_all_pixels():
    logits, labels, weights = _semantic_case()
    easy = math.log(1 + math.exp(-5.0))
    # 11 easy pixels, the 4 special ones, and the ignored pixel counted as 0 (detectron2's DeepLabCE).
    total = 11 * easy + 3 * math.log(2) + math.log(2) + math.log(1 + math.e**2) + math.log(1 + math.e)
    loss = bootstrapped_cross_entropy(logits, labels, weights, top_k=1.0)
    assert loss.item() == pytest.approx(total / 16, rel=1e-6)


def _instance_case():
    center_prediction = torch.tensor(
        [[0.5, 0.5, 0.0, 0.0], [0.5, 1.0, 0.0, 0.0], [0.0, 0.0, 0.9, 0.0], [0.0, 0.0, 0.0, 0.2]]
    )
    center_target = torch.tensor(
        [[0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    )
    center_weights = torch.tensor(
        [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    )
    offset_prediction = torch.stack([torch.full((4, 4), 1.0), torch.full((4, 4), -2.0)])  # (y, x)
    offset_target = torch.zeros(2, 4, 4)
    offset_target[:, 3, 3] = torch.tensor([0.5, -1.0])
    offset_weights = torch.zeros(4, 4)
    offset_weights[0, 0] = offset_weights[3, 3] = 1.0
    return center_prediction, center_target, center_weights, offset_prediction, offset_target, offset_weights


def test_all_three_losses_by_hand():
    logits, labels, semantic_weights = _semantic_case()
    cp, ct, cw, op, ot, ow = _instance_case()
    outputs = {"semantic": logits, "center": cp[None, None], "offset": op[None]}
    targets = {
        "semantic": labels,
        "semantic_weights": semantic_weights,
        "center": ct[None],  # [N, H, W]
        "center_weights": cw[None],
        "offset": ot[None],
        "offset_weights": ow[None],
    }
    losses = PanopticDeepLabLoss(LossConfig())(outputs, targets)
    semantic = (math.log(1 + math.e**2) + 3 * math.log(2) + math.log(1 + math.e)) / 3
    # Weighted squared errors: 0.25 + 0.25 + 0.25 + 0 + 0 + 0.04 over 6 weighted pixels; (2, 2) has weight 0.
    center = (0.25 + 0.25 + 0.25 + 0.0 + 0.0 + 0.04) / 6
    # |1| + |-2| = 3 at (0, 0); |1 - 0.5| + |-2 + 1| = 1.5 at (3, 3); two weighted pixels.
    offset = (3.0 + 1.5) / 2
    assert losses["semantic"].item() == pytest.approx(1.0 * semantic, rel=1e-6)
    assert losses["center"].item() == pytest.approx(200.0 * center, rel=1e-6)
    assert losses["offset"].item() == pytest.approx(0.01 * offset, rel=1e-6)
    assert losses["total"].item() == pytest.approx(semantic + 200 * center + 0.01 * offset, rel=1e-6)


def test_batch_weights_apply_to_their_own_image():
    # Image 0 has error 1 on its single weighted pixel, image 1 error 0 on its three: (1 + 0) / 4.
    prediction = torch.zeros(2, 1, 4, 4)
    prediction[0, 0, 0, 0] = 1.0
    prediction[1] = 5.0
    target = prediction.clone()
    target[0, 0, 0, 0] = 0.0
    weights = torch.zeros(2, 4, 4)
    weights[0, 0, 0] = 1.0
    weights[1, 1, :3] = 1.0
    cfg = LossConfig(center_weight=1.0)
    outputs = {"semantic": torch.zeros(2, 2, 4, 4), "center": prediction, "offset": torch.zeros(2, 2, 4, 4)}
    targets = {
        "semantic": torch.zeros(2, 4, 4, dtype=torch.long),
        "center": target,  # [N, 1, H, W] is accepted too
        "center_weights": weights,
        "offset": torch.zeros(2, 2, 4, 4),
        "offset_weights": weights,
    }
    assert PanopticDeepLabLoss(cfg)(outputs, targets)["center"].item() == pytest.approx(0.25)


def test_zero_weights_give_zero_loss_and_finite_gradients():
    center = torch.rand(1, 1, 4, 4, requires_grad=True)
    offset = torch.rand(1, 2, 4, 4, requires_grad=True)
    logits = torch.rand(1, 3, 4, 4, requires_grad=True)
    targets = {
        "semantic": torch.full((1, 4, 4), IGNORE, dtype=torch.long),
        "center": torch.ones(1, 4, 4),
        "center_weights": torch.zeros(1, 4, 4),
        "offset": torch.ones(1, 2, 4, 4),
        "offset_weights": torch.zeros(1, 4, 4),
    }
    losses = PanopticDeepLabLoss()({"semantic": logits, "center": center, "offset": offset}, targets)
    assert losses["center"].item() == 0.0 and losses["offset"].item() == 0.0 and losses["semantic"].item() == 0.0
    losses["total"].backward()
    for tensor in (center, offset, logits):
        assert torch.equal(tensor.grad, torch.zeros_like(tensor))


def test_half_precision_outputs_are_scored_in_float32():
    logits, labels, weights = _semantic_case()
    loss = bootstrapped_cross_entropy(logits.half(), labels, weights, top_k=0.2)
    assert loss.dtype == torch.float32


def test_shape_mismatch_is_a_clear_error():
    outputs = {"semantic": torch.zeros(1, 2, 4, 4), "center": torch.zeros(1, 1, 4, 4), "offset": torch.zeros(1, 2, 4, 4)}
    targets = {
        "semantic": torch.zeros(1, 4, 4, dtype=torch.long),
        "center": torch.zeros(1, 4, 5),
        "center_weights": torch.ones(1, 4, 4),
        "offset": torch.zeros(1, 2, 4, 4),
        "offset_weights": torch.ones(1, 4, 4),
    }
    with pytest.raises(ValueError, match=r"targets\['center'\]"):
        PanopticDeepLabLoss()(outputs, targets)
    with pytest.raises(ValueError, match="semantic_top_k"):
        PanopticDeepLabLoss(LossConfig(semantic_top_k=0.0))
