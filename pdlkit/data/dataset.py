"""The training dataset: read image + panoptic png, augment, encode Panoptic-DeepLab targets."""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from ..io import read_image, rgb_to_id
from .records import Record, load_records
from .spec import DatasetSpec
from .transforms import apply_augment, sample_augment_params

__all__ = ["PanopticTrainDataset", "build_train_dataset", "TARGET_KEYS"]

# What an item holds besides "image" (pdlkit.ops.encode_targets' outputs but the ragged center_points).
TARGET_KEYS = ("semantic", "center", "offset", "semantic_weights", "center_weights", "offset_weights")


def _unused_id(segments: np.ndarray) -> int:
    """An id that is no segment (0 unless a segment uses it): what padding gets, so it is unlabelled."""
    ids = segments[:, 0]
    return 0 if not np.any(ids == 0) else int(ids.max()) + 1


try:  # a torch Dataset when torch is importable (always, in practice); plain object otherwise
    from torch.utils.data import Dataset as _Base
except ImportError:  # pragma: no cover
    _Base = object


class PanopticTrainDataset(_Base):
    """Items for training Panoptic-DeepLab.

    ``item = {"image": [3, h, w] f32 (normalised with data_cfg.mean/std, RGB), "semantic": [h, w] int64
    train ids (spec.ignore_label on unlabelled pixels), "center": [h, w] f32, "offset": [2, h, w] f32
    (y, x), "semantic_weights" / "center_weights" / "offset_weights": [h, w] f32}`` with (h, w) =
    ``data_cfg.crop_size`` when ``augment`` (random scale, pad with the mean pixel / unlabelled, random
    crop, random flip), else the image's own size with no change at all.
    """

    def __init__(self, records: list, data_cfg, spec: DatasetSpec, *, augment: bool = True):
        self.records = list(records)
        self.data_cfg = data_cfg
        self.spec = spec
        self.augment = augment
        self.crop_hw = tuple(int(v) for v in data_cfg.crop_size)
        if len(self.crop_hw) != 2 or min(self.crop_hw) < 1:
            raise DataError(f"data.crop_size must be (height, width) > 0, got {data_cfg.crop_size}")
        if not 0 < data_cfg.min_scale <= data_cfg.max_scale:
            raise DataError(f"data.min_scale/max_scale must satisfy 0 < min <= max, got "
                            f"{data_cfg.min_scale}, {data_cfg.max_scale}")
        self.mean = np.asarray(data_cfg.mean, np.float32).reshape(1, 1, 3)
        self.std = np.asarray(data_cfg.std, np.float32).reshape(1, 1, 3)

    def __len__(self) -> int:
        return len(self.records)

    def read(self, index: int):
        """(image [H, W, 3] uint8 RGB, panoptic [H, W, 3] uint8 RGB-encoded ids, record)."""
        record: Record = self.records[index]
        image = read_image(record.image_path)
        panoptic_rgb = read_image(record.panoptic_path)
        if image.shape[:2] != panoptic_rgb.shape[:2]:
            raise DataError(f"{record.panoptic_path}: size {panoptic_rgb.shape[:2]} differs from its image "
                            f"{record.image_path} {image.shape[:2]}")
        return image, panoptic_rgb, record

    def encode(self, panoptic: np.ndarray, segments: np.ndarray) -> dict:
        """pdlkit.ops.encode_targets with data_cfg's settings; panoptic [H, W] int32 ids."""
        import torch

        from ..ops import encode_targets

        cfg = self.data_cfg
        targets = encode_targets(
            torch.from_numpy(np.ascontiguousarray(panoptic, dtype=np.int32)),
            torch.from_numpy(np.ascontiguousarray(segments, dtype=np.int64)).reshape(-1, 4),
            sigma=float(cfg.sigma),
            ignore_label=int(self.spec.ignore_label),
            small_instance_area=int(cfg.small_instance_area),
            small_instance_weight=float(cfg.small_instance_weight),
            ignore_stuff_in_offset=bool(cfg.ignore_stuff_in_offset),
            ignore_crowd_in_semantic=bool(cfg.ignore_crowd_in_semantic),
        )
        return {key: targets[key] for key in TARGET_KEYS}

    def __getitem__(self, index: int) -> dict:
        import torch

        image, panoptic_rgb, record = self.read(index)
        if self.augment:
            cfg = self.data_cfg
            params = sample_augment_params(image.shape[0], image.shape[1], self.crop_hw,
                                           min_scale=float(cfg.min_scale), max_scale=float(cfg.max_scale),
                                           flip=bool(cfg.flip))
            normalised, panoptic = apply_augment(image, panoptic_rgb, params, self.crop_hw, mean=self.mean,
                                                 std=self.std, panoptic_fill=_unused_id(record.segments))
        else:
            normalised = (image.astype(np.float32) - self.mean) / self.std
            panoptic = rgb_to_id(panoptic_rgb)
        item = {"image": torch.from_numpy(np.ascontiguousarray(normalised.transpose(2, 0, 1)))}
        item.update(self.encode(panoptic, record.segments))
        return item


def build_train_dataset(cfg, spec: DatasetSpec, *, augment: bool = True, split: str | None = None
                        ) -> PanopticTrainDataset:
    """The training dataset of ``cfg.data`` (split ``cfg.data.train_split`` unless given)."""
    split = split or cfg.data.train_split
    records = load_records(cfg.data.root, split, cfg.data.dataset, spec=spec)
    if not records:
        raise DataError(f"{cfg.data.root}: split {split!r} has no annotated images")
    return PanopticTrainDataset(records, cfg.data, spec, augment=augment)
