"""Typed configuration: dataclasses holding every default, YAML files and ``KEY=VALUE`` overrides.

A config is a tree of dataclasses (:class:`Config` at the root).  YAML files override the defaults,
``--set a.b=c`` overrides those.  An unknown key anywhere is an error naming the key and its nearest
valid spelling.  Every value is then checked against its allowed range (:meth:`Config.validate`).
Defaults are the paper's Cityscapes recipe (crop 512x1024, batch 32, Adam at 1e-3, 90k iterations).
"""
from __future__ import annotations

import ast
import copy
import dataclasses
import difflib
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = [
    "ConfigError",
    "ModelConfig",
    "LossConfig",
    "DataConfig",
    "SolverConfig",
    "PostProcessConfig",
    "TestConfig",
    "Config",
    "load_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid (unknown key, wrong type, unreadable file)."""


@dataclass
class ModelConfig:
    # resnet18 | resnet50 | resnet101 | resnet52 (deep stem) | mobilenet_v3_large
    backbone: str = "resnet50"
    output_stride: int = 16
    # None: ImageNet weights from torchvision's local cache when present, else from scratch (warning).
    # A path: a torchvision or detectron2 backbone state dict.  "none": from scratch, no warning.
    pretrained: Optional[str] = None
    norm: str = "BN"  # BN | SyncBN (under DDP on CUDA) | GN
    aspp_channels: int = 256
    aspp_rates: tuple = (6, 12, 18)
    aspp_dropout: float = 0.1
    # Image-pooling window of the ASPP in input pixels (h, w), divided by the output stride; None: global
    # average pooling.  detectron2's checkpoints use their train crop (512, 1024), which at 1024x2048
    # inference pools local windows instead of the whole image.
    aspp_pooling_size: Optional[tuple] = None
    semantic_decoder_channels: int = 256
    semantic_low_level_channels: tuple = (64, 32)  # projections of the stride-8 and stride-4 features
    semantic_head_channels: int = 256
    instance_decoder_channels: int = 128
    instance_low_level_channels: tuple = (32, 16)
    instance_head_channels: int = 32
    depthwise_separable: bool = True  # 5x5 depthwise-separable fusion convs in the decoders


@dataclass
class LossConfig:
    semantic_weight: float = 1.0
    semantic_top_k: float = 0.2  # bootstrapped CE keeps the hardest 20% of pixels
    center_weight: float = 200.0
    offset_weight: float = 0.01


@dataclass
class DataConfig:
    dataset: str = "cityscapes"  # cityscapes | coco
    root: str = "datasets/cityscapes"
    train_split: str = "train"
    val_split: str = "val"
    crop_size: tuple = (512, 1024)  # (height, width)
    min_scale: float = 0.5
    max_scale: float = 2.0
    flip: bool = True
    num_workers: int = 4
    sigma: float = 8.0
    small_instance_area: int = 4096
    small_instance_weight: float = 3.0
    ignore_stuff_in_offset: bool = True
    ignore_crowd_in_semantic: bool = False
    mean: tuple = (123.675, 116.28, 103.53)
    std: tuple = (58.395, 57.12, 57.375)


@dataclass
class SolverConfig:
    lr: float = 0.001
    weight_decay: float = 0.0
    max_iter: int = 90000
    batch_size: int = 32  # total over all processes
    poly_power: float = 0.9
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    clip_grad_norm: Optional[float] = None
    amp: bool = True  # only takes effect on CUDA
    checkpoint_period: int = 5000
    log_period: int = 20


@dataclass
class PostProcessConfig:
    threshold: float = 0.1
    nms_kernel: int = 7
    top_k: int = 200
    stuff_area: int = 2048
    label_divisor: int = 1000
    void_label: int = -1
    # Where an instance's objectness is read from the center heatmap: "center" = at the instance's own
    # predicted center (the paper's); "mass_center" = at its mask's mass center, each coordinate
    # truncated to an integer (detectron2's, which its published instance AP uses).
    instance_score: str = "center"


@dataclass
class TestConfig:
    eval_period: int = 0  # 0: evaluate only at the end of training
    tta_scales: tuple = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
    tta_flip: bool = True
    max_eval_images: int = 0  # 0: the whole split
    # Test resize (detectron2's ResizeShortestEdge): scale the shorter side to min_size unless the
    # longer side would exceed max_size, then the longer side to max_size; PIL bilinear on the uint8
    # image; outputs are resized back to the input size (bilinear).  0: no resize / no cap.
    min_size: int = 0
    max_size: int = 0
    # With a resize, multiply the offsets by the resize ratio when mapping them back (False:
    # detectron2's way, which resizes the offset maps but keeps their values).
    scale_offsets: bool = True
    # Zero-pad the network input (bottom, right) to a multiple of this: -1 the network's output
    # stride; 0 no padding; e.g. 640 pads COCO images of at most 640 pixels to a 640x640 canvas.
    size_divisibility: int = -1
    # Network arithmetic: "fp32" (exact), "fp16" (autocast; CUDA) or "bf16" (autocast; CPU or CUDA).
    precision: str = "fp32"
    # CPU speed-ups of the network (outputs equal fp32 eager within 1e-3 on the logits):
    fold_bn: bool = False        # fold eval-mode batch norms into the preceding convs
    channels_last: bool = False  # NHWC memory format (oneDNN's fast path)
    compile: bool = False        # torch.compile the network (first call compiles: slow)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    post: PostProcessConfig = field(default_factory=PostProcessConfig)
    test: TestConfig = field(default_factory=TestConfig)
    output_dir: str = "output"
    seed: int = 0

    # ---------------------------------------------------------------- conversion
    def to_dict(self) -> dict:
        """Plain nested dict (tuples become lists) suitable for YAML, JSON and checkpoints."""
        return _to_plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> "Config":
        cfg = cls()
        _merge(cfg, data, prefix="", source=source)
        return cfg

    def merge_file(self, path: str | os.PathLike) -> "Config":
        data = _read_yaml(path)
        _merge(self, data, prefix="", source=str(path))
        return self

    def apply_overrides(self, overrides: typing.Iterable[str], *, source: str = "overrides") -> "Config":
        """Apply ``a.b=c`` strings; values are parsed as YAML scalars / lists.  Errors start with
        ``source`` (the CLI passes its flag, ``--set``)."""
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"{source}: override {item!r} is not of the form KEY=VALUE")
            key, _, raw = item.partition("=")
            key = key.strip()
            value = _parse_value(raw)
            nested: Any = value
            for part in reversed(key.split(".")):
                nested = {part: nested}
            _merge(self, nested, prefix="", source=source)
        return self

    def copy(self) -> "Config":
        return copy.deepcopy(self)

    def validate(self) -> "Config":
        """Check every value against its allowed range; raise :class:`ConfigError` naming the first
        key that is out of range (so a bad value fails before training or prediction starts)."""
        for key, (check, expected) in _RULES.items():
            value = self
            for part in key.split("."):
                value = getattr(value, part)
            try:
                ok = bool(check(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"{key} must be {expected}, got {value!r}")
        if self.data.max_scale < self.data.min_scale:
            raise ConfigError(f"data.max_scale must be >= data.min_scale ({self.data.min_scale}), "
                              f"got {self.data.max_scale!r}")
        return self


def load_config(path: str | os.PathLike | None = None, overrides: typing.Iterable[str] = (), *,
                overrides_source: str = "overrides") -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; validated."""
    cfg = Config()
    if path is not None:
        cfg.merge_file(path)
    cfg.apply_overrides(overrides, source=overrides_source)
    return cfg.validate()


# ----------------------------------------------------------------------- allowed values
def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _positive(v) -> bool:
    return _finite(v) and v > 0


def _non_negative(v) -> bool:
    return _finite(v) and v >= 0


def _positive_ints(length: Optional[int] = None):
    def check(v) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) > 0 and (length is None or len(v) == length)
                and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v))
    return check


_POSITIVE = (_positive, "a positive number")
_NON_NEGATIVE = (_non_negative, "a number >= 0")
_POSITIVE_INT = (lambda v: isinstance(v, int) and v > 0, "a positive integer")
_NON_NEGATIVE_INT = (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
_FRACTION = (lambda v: _finite(v) and 0 <= v <= 1, "between 0 and 1")
# dotted key -> (check, what the value must be, as the error message says it)
_RULES = {
    "model.output_stride": (lambda v: v in (8, 16, 32), "8, 16 or 32"),
    "model.norm": (lambda v: v in ("BN", "SyncBN", "GN"), "BN, SyncBN or GN"),
    "model.aspp_channels": _POSITIVE_INT,
    "model.aspp_rates": (_positive_ints(), "a list of positive integers"),
    "model.aspp_dropout": (lambda v: _finite(v) and 0 <= v < 1, ">= 0 and < 1"),
    "model.aspp_pooling_size": (lambda v: v is None or _positive_ints(2)(v), "null or two positive integers (h, w)"),
    "model.semantic_decoder_channels": _POSITIVE_INT,
    "model.semantic_low_level_channels": (_positive_ints(2), "two positive integers"),
    "model.semantic_head_channels": _POSITIVE_INT,
    "model.instance_decoder_channels": _POSITIVE_INT,
    "model.instance_low_level_channels": (_positive_ints(2), "two positive integers"),
    "model.instance_head_channels": _POSITIVE_INT,
    "loss.semantic_weight": _NON_NEGATIVE,
    "loss.semantic_top_k": (lambda v: _finite(v) and 0 < v <= 1, "> 0 and <= 1"),
    "loss.center_weight": _NON_NEGATIVE,
    "loss.offset_weight": _NON_NEGATIVE,
    "data.dataset": (lambda v: v in ("cityscapes", "coco"), "cityscapes or coco"),
    "data.crop_size": (_positive_ints(2), "two positive integers (height, width)"),
    "data.min_scale": _POSITIVE,
    "data.max_scale": _POSITIVE,
    "data.num_workers": _NON_NEGATIVE_INT,
    "data.sigma": _POSITIVE,
    "data.small_instance_area": _NON_NEGATIVE_INT,
    "data.small_instance_weight": _NON_NEGATIVE,
    "data.mean": (lambda v: len(v) == 3 and all(_finite(x) for x in v), "three numbers (R, G, B)"),
    "data.std": (lambda v: len(v) == 3 and all(_positive(x) for x in v), "three positive numbers (R, G, B)"),
    "solver.lr": _POSITIVE,
    "solver.weight_decay": _NON_NEGATIVE,
    "solver.max_iter": _POSITIVE_INT,
    "solver.batch_size": _POSITIVE_INT,
    "solver.poly_power": _NON_NEGATIVE,
    "solver.warmup_iters": _NON_NEGATIVE_INT,
    "solver.warmup_factor": (lambda v: _finite(v) and 0 < v <= 1, "> 0 and <= 1"),
    "solver.clip_grad_norm": (lambda v: v is None or _positive(v), "null or a positive number"),
    "solver.checkpoint_period": _POSITIVE_INT,
    "solver.log_period": _POSITIVE_INT,
    "post.threshold": _FRACTION,
    "post.nms_kernel": (lambda v: isinstance(v, int) and v > 0 and v % 2 == 1, "a positive odd integer"),
    "post.top_k": _POSITIVE_INT,
    "post.stuff_area": _NON_NEGATIVE_INT,
    "post.label_divisor": _POSITIVE_INT,
    "test.eval_period": _NON_NEGATIVE_INT,
    "test.tta_scales": (lambda v: len(v) > 0 and all(_positive(x) for x in v), "a list of positive numbers"),
    "test.max_eval_images": _NON_NEGATIVE_INT,
    "output_dir": (lambda v: isinstance(v, str) and v.strip() != "", "a folder name"),
}


# -------------------------------------------------------------------- helpers
def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _read_yaml(path: str | os.PathLike) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def _parse_value(raw: str) -> Any:
    import yaml

    raw = raw.strip()
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw


def _merge(target: Any, data: dict, *, prefix: str, source: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(target)}
    hints = typing.get_type_hints(type(target))
    for key, value in data.items():
        dotted = prefix + str(key)
        if key not in fields:
            names = [prefix + n for n in fields]
            close = difflib.get_close_matches(dotted, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"{source}: unknown config key {dotted!r}{hint}")
        current = getattr(target, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=dotted + ".", source=source)
        else:
            setattr(target, key, _coerce(value, hints[key], dotted, source))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union:  # Optional[X]
        # For Optional[str] the word "none" is a value (model.pretrained: none = no weights); only
        # YAML null means None there.
        null_words = ("null",) if str in args else ("none", "null")
        if value is None or (isinstance(value, str) and value.lower() in null_words):
            return None
        hint = next(a for a in args if a is not type(None))
    bad = ConfigError(f"{source}: {key} expects {getattr(hint, '__name__', hint)}, got {value!r}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise bad
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise bad
        return int(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise bad
        return str(value)
    if hint is tuple:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        return tuple(value)
    return value
