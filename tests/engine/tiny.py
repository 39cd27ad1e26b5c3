"""Helpers for the engine tests: a tiny model on the 64x128 toy set."""
from __future__ import annotations

from pathlib import Path

from pdlkit.config import load_config

REPO = Path(__file__).resolve().parents[2]

# resnet18 with narrow decoders, no dropout (so a forward pass is a function of the weights),
# one-process data loading, evaluation on one val image.
TINY_OVERRIDES = [
    "model.backbone=resnet18",
    "model.pretrained=none",
    "model.aspp_channels=16",
    "model.aspp_dropout=0.0",
    "model.semantic_decoder_channels=16",
    "model.semantic_head_channels=16",
    "model.semantic_low_level_channels=[8,8]",
    "model.instance_decoder_channels=16",
    "model.instance_low_level_channels=[8,8]",
    "model.instance_head_channels=8",
    "data.crop_size=[64,128]",
    "data.num_workers=0",
    "solver.batch_size=2",
    "solver.warmup_iters=0",
    "solver.log_period=1",
    "solver.checkpoint_period=1000",
    "test.eval_period=0",
    "test.max_eval_images=1",
]


def tiny_overrides(data_root, output_dir, *extra) -> list:
    return [f"data.root={data_root}", f"output_dir={output_dir}", *TINY_OVERRIDES, *extra]


def tiny_config(data_root, output_dir, *extra):
    return load_config(REPO / "configs" / "toy.yaml", tiny_overrides(data_root, output_dir, *extra))
