"""Small deterministic stand-ins for the network, for inference tests that do not need training."""
from __future__ import annotations

import torch
from torch import nn

from pdlkit.config import Config
from pdlkit.data.spec import DatasetSpec


class ConvPanopticNet(nn.Module):
    """A fixed random conv net with Panoptic-DeepLab's output contract.

    forward(images [N, 3, H, W]) -> {"semantic": [N, C, H, W], "center": [N, 1, H, W] in (0, 1),
    "offset": [N, 2, H, W] (y, x)}.  It insists on inputs that are multiples of
    ``size_divisibility`` to prove the predictor pads.
    """

    def __init__(self, num_classes: int, size_divisibility: int = 8, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.size_divisibility = size_divisibility
        self.features = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.semantic = nn.Conv2d(8, num_classes, 3, padding=1, bias=False)
        self.center = nn.Conv2d(8, 1, 5, padding=2, bias=False)
        self.offset = nn.Conv2d(8, 2, 3, padding=1, bias=False)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
        self.seen_shapes = []

    def forward(self, images):
        self.seen_shapes.append(tuple(images.shape))
        height, width = images.shape[-2:]
        assert height % self.size_divisibility == 0 and width % self.size_divisibility == 0
        features = torch.relu(self.features(images))
        return {
            "semantic": self.semantic(features),
            # blurred so that peaks are a few pixels apart, as in a real heatmap
            "center": torch.sigmoid(nn.functional.avg_pool2d(self.center(features), 9, 1, 4) - 1.0),
            "offset": 3.0 * torch.tanh(self.offset(features)),
        }


def toy_spec(num_classes: int = 4) -> DatasetSpec:
    """Train ids 0..n-1 -> category ids 7, 8, 24, 26, ...; the second half are things."""
    category_ids = [7, 8, 24, 26, 33, 11][:num_classes]
    return DatasetSpec(
        name="fake",
        class_names=[f"class{t}" for t in range(num_classes)],
        category_ids=category_ids,
        is_thing=[t >= num_classes // 2 for t in range(num_classes)],
        colors=[(40 * t + 20, 200 - 30 * t, 60 + 50 * t) for t in range(num_classes)],
    )


def small_config() -> Config:
    cfg = Config()
    cfg.post.stuff_area = 16  # tiny images: keep stuff segments
    cfg.post.nms_kernel = 5
    return cfg
