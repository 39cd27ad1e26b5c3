"""Datasets: the dataset spec, Cityscapes / COCO-panoptic (any names) records, the toy generator,
``prepare_*``, augmentation and the training dataset (targets through ``pdlkit.ops.encode_targets``).

Names load on first use (PEP 562), so ``pdl prepare`` and ``pdlkit.data.spec`` do not import torch.
"""
from __future__ import annotations

import importlib

# public name -> submodule that defines it
_EXPORTS = {
    "DatasetSpec": "spec",
    "cityscapes_spec": "spec",
    "coco_spec_from_categories": "spec",
    "spec_for": "spec",
    "generate_toy": "toy",
    "prepare_cityscapes": "prepare",
    "prepare_coco": "prepare",
    "prepare_vistas": "prepare",
    "prepare_panoptic": "coco_format",
    "prepare_toy": "prepare",
    "Record": "records",
    "load_records": "records",
    "segments_from_info": "records",
    "PanopticTrainDataset": "dataset",
    "build_train_dataset": "dataset",
    "TARGET_KEYS": "dataset",
    "rgb_to_id": "io",
    "id_to_rgb": "io",
    "read_panoptic_ids": "io",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
