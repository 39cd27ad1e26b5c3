"""Writers of the prediction files of ``pdl predict``.

Layout under the output folder ``DIR`` for an input image ``<rel>/<name>.<ext>`` (``rel`` mirrors
the input's sub-folders; ``image_id`` = ``name`` without a trailing ``_leftImg8bit``):

- ``DIR/panoptic/<rel>/<image_id>.png``: RGB segment ids, id = R + 256 G + 256² B, 0 = void.  A
  segment's id is ``category_id * label_divisor + k`` (the dataset spec's divisor) (k = the instance number from 1 for things,
  0 for stuff; stuff of a category with id 0 takes ``(max category id + 1) * label_divisor``).
- ``DIR/semantic/<rel>/<image_id>.png``: dataset label ids (category ids), uint8 (uint16 when a
  category id exceeds 255).
- ``DIR/segments/<rel>/<image_id>.json``: the image's COCO panoptic annotation record
  (``image_id``, ``file_name`` relative to ``DIR/panoptic``, ``segments_info``) plus ``height``,
  ``width`` and ``source_image``.  Written last: its presence marks the image as done, and
  ``panoptic.json`` is rebuilt from these records, so an interrupted run never loses one.
- ``DIR/panoptic.json``: ``{"annotations": [...], "categories": [{"id", "name", "isthing",
  "color"}]}`` (COCO panoptic result format, dataset category ids).
- ``DIR/spec.json``: the dataset spec (``DatasetSpec.to_dict()``) for ``pdl visualize``.
- ``DIR/raw/<rel>/<image_id>.npz`` (``save_raw``): compressed ``center_heatmap`` [H, W] float16,
  ``offsets`` [2, H, W] float16 (y, x), ``centers`` [K, 2] int32 (y, x), ``semantic`` [H, W] train ids.

Every file is written to a temporary name in its folder and renamed.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np

from pdlkit.errors import DataError

from ..fileio import atomic_write_bytes
from ..io import id_to_rgb, read_json, write_json, write_png
from .predictor import Prediction

__all__ = [
    "PredictionWriter",
    "file_segments",
]


def file_segments(prediction: Prediction, spec) -> Tuple[np.ndarray, List[Dict[str, Any]]]:
    """Dataset-space ids: ([H, W] int64 id map, 0 = void; segments_info for panoptic.json).

    The merge numbers instances with its own ``label_divisor`` (``post.label_divisor``, train-id
    space); the files use the dataset's (``spec.label_divisor``), the one evaluation decodes with.
    """
    divisor = int(spec.label_divisor)
    unused_category_base = (max(int(c) for c in spec.category_ids) + 1) * divisor
    old_ids, new_ids, infos = [], [], []
    for segment in prediction.segments:
        k = segment["id"] % prediction.label_divisor
        if k >= divisor:
            raise DataError(f"instance number {k} does not fit under the dataset's label_divisor {divisor}")
        file_id = segment["category_id"] * divisor + k
        if file_id == 0:
            file_id = unused_category_base
        if file_id >= 256 ** 3:
            raise DataError(f"segment id {file_id} does not fit in an RGB png (category ids too large)")
        info = {key: value for key, value in segment.items() if key not in ("id", "train_id")}
        info = {"id": int(file_id), **info}
        old_ids.append(segment["id"])
        new_ids.append(file_id)
        infos.append(info)
    id_map = np.zeros(prediction.panoptic.shape, dtype=np.int64)
    if old_ids:
        old = np.asarray(old_ids, dtype=np.int64)
        order = np.argsort(old)
        old_sorted, new_sorted = old[order], np.asarray(new_ids, dtype=np.int64)[order]
        panoptic = prediction.panoptic.astype(np.int64, copy=False)
        valid = panoptic >= 0
        slot = np.searchsorted(old_sorted, panoptic[valid])
        id_map[valid] = new_sorted[slot]
    return id_map, infos


class PredictionWriter:
    """Writes predictions under ``output_dir`` in the layout of the module docstring."""

    def __init__(self, output_dir: str | os.PathLike, spec, *, save_raw: bool = False):
        self.root = Path(output_dir)
        self.spec = spec
        self.save_raw = save_raw
        self.root.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths
    def paths(self, rel_dir: str, image_id: str) -> Dict[str, Path]:
        rel = Path(rel_dir) / image_id if rel_dir else Path(image_id)
        return {
            "panoptic": self.root / "panoptic" / rel.with_name(rel.name + ".png"),
            "semantic": self.root / "semantic" / rel.with_name(rel.name + ".png"),
            "segments": self.root / "segments" / rel.with_name(rel.name + ".json"),
            "raw": self.root / "raw" / rel.with_name(rel.name + ".npz"),
        }

    def is_done(self, rel_dir: str, image_id: str) -> bool:
        paths = self.paths(rel_dir, image_id)
        needed = ["segments", "panoptic", "semantic"] + (["raw"] if self.save_raw else [])
        return all(paths[name].is_file() for name in needed)

    # ------------------------------------------------------------------ writing
    def write(self, prediction: Prediction, rel_dir: str, image_id: str,
              source: str | os.PathLike = "") -> None:
        """Write one image's files; ``source`` (the input image) is recorded for pdl visualize."""
        paths = self.paths(rel_dir, image_id)
        id_map, segments_info = file_segments(prediction, self.spec)
        if self.save_raw:
            buffer = io.BytesIO()
            np.savez_compressed(
                buffer,
                center_heatmap=prediction.center_heatmap.astype(np.float16),
                offsets=prediction.offsets.astype(np.float16),
                centers=prediction.centers.astype(np.int32).reshape(-1, 2),
                semantic=prediction.semantic.astype(np.uint8 if self.spec.num_classes <= 256 else np.int32),
            )
            atomic_write_bytes(paths["raw"], buffer.getvalue())
        category_lut = np.asarray(self.spec.category_ids, dtype=np.int64)
        semantic_ids = category_lut[prediction.semantic]
        dtype = np.uint8 if category_lut.max(initial=0) <= 255 else np.uint16
        write_png(paths["semantic"], semantic_ids.astype(dtype))
        write_png(paths["panoptic"], id_to_rgb(id_map))
        record = {
            "image_id": image_id,
            "file_name": paths["panoptic"].relative_to(self.root / "panoptic").as_posix(),
            "segments_info": segments_info,
            "height": prediction.height,
            "width": prediction.width,
            "source_image": str(Path(source).resolve()) if source else "",
        }
        write_json(paths["segments"], record, indent=None)  # last: marks the image as done

    def categories(self) -> List[Dict[str, Any]]:
        spec = self.spec
        return [
            {
                "id": int(spec.category_ids[t]),
                "name": str(spec.class_names[t]),
                "isthing": int(bool(spec.is_thing[t])),
                "color": [int(c) for c in spec.colors[t]],
            }
            for t in range(spec.num_classes)
        ]

    def write_index(self) -> int:
        """Rebuild ``panoptic.json`` (and ``spec.json``) from every per-image record; returns the
        number of annotations."""
        annotations = []
        segments_root = self.root / "segments"
        if segments_root.is_dir():
            for record_path in sorted(segments_root.rglob("*.json")):
                try:
                    record = read_json(record_path)
                except DataError:
                    continue  # only a foreign file could be half-written here; ours are atomic
                annotations.append(
                    {key: record[key] for key in ("image_id", "file_name", "segments_info") if key in record}
                )
        write_json(self.root / "spec.json", self.spec.to_dict(), indent=None)
        write_json(self.root / "panoptic.json", {"annotations": annotations, "categories": self.categories()},
                   indent=None)
        return len(annotations)
