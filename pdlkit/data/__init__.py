"""Datasets: the dataset spec, Cityscapes / COCO panoptic records, the toy generator, ``prepare_*``,
augmentation and the training dataset (targets through ``pdlkit.ops.encode_targets``).

cv2 and cityscapesscripts load only when used.
"""
from .dataset import TARGET_KEYS, PanopticTrainDataset, build_train_dataset
from .io import id_to_rgb, read_panoptic_ids, rgb_to_id
from .prepare import prepare_cityscapes, prepare_coco, prepare_toy
from .records import Record, load_records, segments_from_info
from .spec import DatasetSpec, cityscapes_spec, coco_spec_from_categories, spec_for
from .toy import generate_toy

__all__ = [
    "DatasetSpec",
    "cityscapes_spec",
    "coco_spec_from_categories",
    "spec_for",
    "generate_toy",
    "prepare_cityscapes",
    "prepare_coco",
    "prepare_toy",
    "Record",
    "load_records",
    "segments_from_info",
    "PanopticTrainDataset",
    "build_train_dataset",
    "TARGET_KEYS",
    "rgb_to_id",
    "id_to_rgb",
    "read_panoptic_ids",
]
