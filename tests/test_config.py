"""pdlkit.config: defaults, YAML + overrides, and validation of every value before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from pdlkit.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
TOY = REPO / "configs" / "toy.yaml"


def test_defaults_and_every_shipped_config_are_valid():
    Config().validate()
    configs = sorted((REPO / "configs").glob("*.yaml"))
    assert configs
    for path in configs:
        load_config(path)


def test_overrides_apply_in_order_over_the_file():
    cfg = load_config(TOY, ["solver.lr=0.01", "data.crop_size=[32,64]", "solver.lr=0.02"])
    assert cfg.solver.lr == 0.02 and cfg.data.crop_size == (32, 64)
    assert cfg.model.backbone == "resnet18"  # from the file


@pytest.mark.parametrize("override, message", [
    ("solver.lr=-1", "solver.lr must be a positive number, got -1.0"),
    ("solver.lr=0", "solver.lr must be a positive number, got 0.0"),
    ("solver.lr=.nan", "solver.lr must be a positive number, got nan"),
    ("post.nms_kernel=4", "post.nms_kernel must be a positive odd integer, got 4"),
    ("post.nms_kernel=-3", "post.nms_kernel must be a positive odd integer, got -3"),
    ("data.sigma=0", "data.sigma must be a positive number, got 0.0"),
    ("data.sigma=.inf", "data.sigma must be a positive number, got inf"),
    ("data.crop_size=[0,128]", "data.crop_size must be two positive integers (height, width), got (0, 128)"),
    ("data.crop_size=[64]", "data.crop_size must be two positive integers (height, width), got (64,)"),
    ("data.num_workers=-1", "data.num_workers must be an integer >= 0, got -1"),
    ("data.std=[1,0,1]", "data.std must be three positive numbers (R, G, B), got (1, 0, 1)"),
    ("data.dataset=kitti", "data.dataset must be cityscapes or coco, got 'kitti'"),
    ("data.min_scale=2.0", "data.max_scale must be >= data.min_scale (2.0), got 1.5"),
    ("solver.max_iter=0", "solver.max_iter must be a positive integer, got 0"),
    ("solver.batch_size=0", "solver.batch_size must be a positive integer, got 0"),
    ("solver.warmup_factor=0", "solver.warmup_factor must be > 0 and <= 1, got 0.0"),
    ("solver.clip_grad_norm=0", "solver.clip_grad_norm must be null or a positive number, got 0.0"),
    ("solver.checkpoint_period=0", "solver.checkpoint_period must be a positive integer, got 0"),
    ("loss.semantic_top_k=0", "loss.semantic_top_k must be > 0 and <= 1, got 0.0"),
    ("loss.center_weight=-1", "loss.center_weight must be a number >= 0, got -1.0"),
    ("model.output_stride=12", "model.output_stride must be 8, 16 or 32, got 12"),
    ("model.norm=LN", "model.norm must be BN, SyncBN or GN, got 'LN'"),
    ("model.aspp_dropout=1", "model.aspp_dropout must be >= 0 and < 1, got 1.0"),
    ("post.threshold=1.5", "post.threshold must be between 0 and 1, got 1.5"),
    ("post.top_k=0", "post.top_k must be a positive integer, got 0"),
    ("post.label_divisor=0", "post.label_divisor must be a positive integer, got 0"),
    ("test.eval_period=-1", "test.eval_period must be an integer >= 0, got -1"),
    ("test.tta_scales=[1.0,-0.5]", "test.tta_scales must be a list of positive numbers, got (1.0, -0.5)"),
])
def test_out_of_range_values_fail_at_load_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(TOY, [override])
    assert str(info.value) == message


def test_validate_catches_values_set_in_code():
    cfg = load_config(TOY)
    cfg.post.nms_kernel = 6
    with pytest.raises(ConfigError, match=r"^post.nms_kernel must be a positive odd integer, got 6$"):
        cfg.validate()


def test_a_bad_value_in_a_file_is_caught_too(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("solver:\n  lr: -0.5\n")
    with pytest.raises(ConfigError, match=r"^solver.lr must be a positive number, got -0.5$"):
        load_config(path)
