"""Panoptic-DeepLab's three losses, with detectron2's definitions (``projects/DeepLab/deeplab/loss.py``
``DeepLabCE`` and ``PanopticDeepLabInsEmbedHead.{center,offset}_losses``).

- **semantic**: bootstrapped cross-entropy (DeeperLab).  Per-pixel CE (0 on ``ignore_label`` pixels)
  times ``semantic_weights``; of all N*H*W pixels keep the ``k = int(top_k * N*H*W)`` largest values
  (ignored pixels count in N*H*W and rank as 0, exactly as detectron2 and TensorFlow DeepLab do) and
  average them.  ``top_k >= 1`` averages every pixel.  (k is at least 1, so a tiny input never yields
  a mean over nothing.)
- **center**: sum of (prediction - target)^2 * ``center_weights`` over the batch, divided by the sum of
  the weights; 0 when the weights sum to 0.
- **offset**: sum of |prediction - target| over both channels (y, x) * ``offset_weights``, divided by
  the sum of the weights (each pixel counted once); 0 when the weights sum to 0.

Each term is multiplied by its weight from :class:`pdlkit.config.LossConfig` (1, 200, 0.01) and
``total`` is their sum.  Losses are computed in float32 whatever the outputs' dtype (AMP).
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["PanopticDeepLabLoss", "bootstrapped_cross_entropy", "weighted_mean"]


def bootstrapped_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    top_k: float = 0.2,
    ignore_label: int = 255,
) -> torch.Tensor:
    """Mean of the hardest ``top_k`` fraction of weighted per-pixel CE values.

    logits [N, C, H, W]; labels [N, H, W] int64 (``ignore_label`` ignored); weights [N, H, W] or None.
    """
    pixel_losses = F.cross_entropy(logits.float(), labels.long(), ignore_index=ignore_label, reduction="none")
    if weights is not None:
        pixel_losses = pixel_losses * weights.float()
    pixel_losses = pixel_losses.reshape(-1)
    if top_k >= 1.0:
        return pixel_losses.mean()
    k = max(1, int(top_k * pixel_losses.numel()))
    return torch.topk(pixel_losses, k, sorted=False).values.mean()


def weighted_mean(per_pixel: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``(per_pixel * weights).sum() / weights.sum()``, or 0 (with a gradient path) when that sum is 0.

    per_pixel [N, K, H, W]; weights [N, 1, H, W] (broadcast over K, so the sum of weights counts pixels).
    """
    weighted_sum = (per_pixel * weights).sum()
    weight_sum = weights.sum()
    positive = weight_sum > 0
    # A safe denominator keeps NaN out of the gradient of the branch torch.where discards.
    safe = torch.where(positive, weight_sum, torch.ones_like(weight_sum))
    return torch.where(positive, weighted_sum / safe, weighted_sum * 0)


def _as_map(target: torch.Tensor, name: str, like: torch.Tensor) -> torch.Tensor:
    """[N, H, W] or [N, 1, H, W] -> [N, 1, H, W] float32, checked against ``like`` [N, K, H, W]."""
    if target.dim() == 3:
        target = target.unsqueeze(1)
    if target.dim() != 4 or target.shape[1] != 1 or target.shape[0] != like.shape[0] or target.shape[-2:] != like.shape[-2:]:
        raise ValueError(
            f"targets[{name!r}] must be [N, H, W] or [N, 1, H, W] matching the outputs "
            f"[{like.shape[0]}, *, {like.shape[2]}, {like.shape[3]}], got {list(target.shape)}"
        )
    return target.float()


class PanopticDeepLabLoss(nn.Module):
    """``loss(outputs, targets) -> {"semantic", "center", "offset", "total"}`` (scalars, weighted).

    outputs: the model's dict — semantic [N, C, H, W], center [N, 1, H, W], offset [N, 2, H, W] (y, x).
    targets: semantic [N, H, W] int64 (``ignore_label`` ignored), center [N, H, W] or [N, 1, H, W],
    offset [N, 2, H, W] (y, x), semantic_weights / center_weights / offset_weights [N, H, W] float.
    ``semantic_weights`` may be absent (all ones).
    """

    def __init__(self, cfg=None, *, ignore_label: int = 255):
        super().__init__()
        if cfg is None:
            from ..config import LossConfig

            cfg = LossConfig()
        self.semantic_weight = float(cfg.semantic_weight)
        self.semantic_top_k = float(cfg.semantic_top_k)
        self.center_weight = float(cfg.center_weight)
        self.offset_weight = float(cfg.offset_weight)
        self.ignore_label = int(ignore_label)
        if not 0.0 < self.semantic_top_k <= 1.0:
            raise ValueError(f"loss.semantic_top_k must be in (0, 1], got {self.semantic_top_k}")

    def forward(self, outputs: Dict[str, torch.Tensor], targets: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        logits = outputs["semantic"]
        labels = targets["semantic"]
        if labels.dim() == 4 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.shape != (logits.shape[0], *logits.shape[2:]):
            raise ValueError(
                f"targets['semantic'] must be [N, H, W] = {[logits.shape[0], *logits.shape[2:]]}, got {list(labels.shape)}"
            )
        semantic_weights = targets.get("semantic_weights")
        if semantic_weights is not None:
            semantic_weights = _as_map(semantic_weights, "semantic_weights", logits)[:, 0]
        semantic = bootstrapped_cross_entropy(
            logits, labels, semantic_weights, top_k=self.semantic_top_k, ignore_label=self.ignore_label
        )

        center_prediction = outputs["center"].float()
        center_target = _as_map(targets["center"], "center", center_prediction)
        center_weights = _as_map(targets["center_weights"], "center_weights", center_prediction)
        center = weighted_mean((center_prediction - center_target) ** 2, center_weights)

        offset_prediction = outputs["offset"].float()
        offset_target = targets["offset"].float()
        if offset_target.shape != offset_prediction.shape:
            raise ValueError(
                f"targets['offset'] must be {list(offset_prediction.shape)} (y, x), got {list(offset_target.shape)}"
            )
        offset_weights = _as_map(targets["offset_weights"], "offset_weights", offset_prediction)
        offset = weighted_mean((offset_prediction - offset_target).abs(), offset_weights)

        losses = {
            "semantic": semantic * self.semantic_weight,
            "center": center * self.center_weight,
            "offset": offset * self.offset_weight,
        }
        losses["total"] = losses["semantic"] + losses["center"] + losses["offset"]
        return losses
