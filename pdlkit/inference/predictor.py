"""``Predictor``: a checkpoint (or a model in memory) -> panoptic predictions of RGB images.

Pipeline per batch of equal-sized images (settings from the config's ``test`` and ``post``):
uint8 RGB ``[N, H, W, 3]`` -> optional test resize (shorter side ``min_size``, longer side at most
``max_size``; PIL bilinear) -> device -> normalised with the config's mean / std -> zero-padded to
``size_divisibility`` (zero = the mean after normalisation) -> network (optionally TTA; ``precision``
fp32 / fp16 / bf16) -> cropped back -> resized back to ``[H, W]`` -> ``pdlkit.ops.
panoptic_merge_batched`` on the logits -> instance scores (``post.instance_score``) -> ``Prediction``.

With ``configs/*_d2*.yaml`` (min_size / max_size / size_divisibility / scale_offsets /
instance_score "mass_center" / fp32 as detectron2's configs and code) every step equals detectron2's
Panoptic-DeepLab inference; ``tests/inference/test_detectron2_parity.py`` checks it against an
independent re-implementation of detectron2's inference path.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from pdlkit.errors import DataError, PdlError
from pdlkit.ops import panoptic_merge_batched

from .tta import PRECISIONS, forward_tta, outputs_to_size, resize_images, shortest_edge_shape

__all__ = ["Prediction", "Predictor", "segments_from_panoptic", "mass_centers", "INSTANCE_SCORES"]

INSTANCE_SCORES = ("center", "mass_center")


@dataclass
class Prediction:
    """The panoptic prediction of one image of size ``[H, W]``.

    panoptic:       [H, W] int32, train-id space: ``train_id * label_divisor + k`` (k >= 1 for thing
                    instances, 0 for stuff), ``void_label`` (-1) where nothing was assigned.
    semantic:       [H, W] int64 train ids (argmax of the semantic head).
    segments:       one dict per segment of ``panoptic``, sorted by id: ``id`` (the value in
                    ``panoptic``), ``category_id`` (dataset category id), ``train_id``, ``iscrowd`` 0,
                    ``area``, ``bbox`` [x, y, w, h], ``isthing``; things also have ``score``
                    (objectness x class score), ``objectness`` (the center heatmap at the
                    instance's own center, or with ``post.instance_score: mass_center`` at its
                    mask's mass center), ``class_score`` (mean softmax probability of its class
                    over its pixels) and ``center`` [y, x] (its predicted center); with
                    mass_center also ``mass_center`` [y, x].
    center_heatmap: [H, W] float32 raw center heatmap.
    offsets:        [2, H, W] float32 raw offsets (y, x), in pixels.
    centers:        [K, 2] int64 (y, x) centers of the instances in ``instances`` order.
    instance_ids:   [K] panoptic ids of the instances, in center (raster) order.
    """

    panoptic: np.ndarray
    semantic: np.ndarray
    segments: List[Dict[str, Any]]
    center_heatmap: np.ndarray
    offsets: np.ndarray
    centers: np.ndarray
    instance_ids: List[int] = field(default_factory=list)
    label_divisor: int = 1000
    void_label: int = -1

    @property
    def instances(self) -> List[Dict[str, Any]]:
        """The thing segments (instances), in center (raster) order, as in ``centers``."""
        by_id = {s["id"]: s for s in self.segments}
        return [by_id[i] for i in self.instance_ids]

    @property
    def height(self) -> int:
        return int(self.panoptic.shape[0])

    @property
    def width(self) -> int:
        return int(self.panoptic.shape[1])


def segments_from_panoptic(
    panoptic,
    spec,
    label_divisor: int,
    instance_info: Dict[int, Dict[str, Any]],
) -> List[Dict[str, Any]]:
    """Segments (area, bbox, categories) of a train-id-space panoptic map.

    panoptic: [H, W] int array or tensor, negative = void.  instance_info maps a thing's panoptic id
    to its extra fields (score, objectness, class_score, center).  Areas and boxes come from three
    bincounts over the pixels (numpy: several times faster than torch's on the CPU), not from a loop
    over segments.
    """
    if isinstance(panoptic, torch.Tensor):
        panoptic = panoptic.cpu().numpy()
    height, width = panoptic.shape
    # key = id + 1 (void, any negative id, -> 0); one bincount gives every area without sorting
    keys = panoptic.astype(np.int64).reshape(-1)
    keys += 1
    np.maximum(keys, 0, out=keys)
    counts = np.bincount(keys)
    present = np.flatnonzero(counts)  # may include the void key 0
    num = len(present)
    compact = np.zeros(len(counts), dtype=np.int64)
    compact[present] = np.arange(num)
    index = compact.take(keys).reshape(height, width)  # [H, W] in 0..num-1
    # per-row and per-column pixel counts of every segment ([H, num], [W, num]): a box spans the
    # first to the last row / column with a nonzero count
    in_row = np.bincount((index + (np.arange(height) * num)[:, None]).reshape(-1),
                         minlength=height * num).reshape(height, num) > 0
    in_col = np.bincount((index + (np.arange(width) * num)[None, :]).reshape(-1),
                         minlength=width * num).reshape(width, num) > 0
    y0 = in_row.argmax(0)
    y1 = height - 1 - in_row[::-1].argmax(0)
    x0 = in_col.argmax(0)
    x1 = width - 1 - in_col[::-1].argmax(0)
    rows = np.stack([present - 1, counts[present], y0, x0, y1, x1], axis=1).tolist()

    segments = []
    for seg_id, area, top, left, bottom, right in rows:
        if seg_id < 0:
            continue
        train_id = seg_id // label_divisor
        if train_id >= spec.num_classes:
            raise RuntimeError(f"panoptic id {seg_id} names class {train_id} outside the dataset spec")
        segment = {
            "id": int(seg_id),
            "category_id": int(spec.category_ids[train_id]),
            "train_id": int(train_id),
            "iscrowd": 0,
            "area": int(area),
            "bbox": [int(left), int(top), int(right - left + 1), int(bottom - top + 1)],
            "isthing": bool(spec.is_thing[train_id]),
        }
        if seg_id in instance_info:
            segment.update(instance_info[seg_id])
        segments.append(segment)
    return segments


def mass_centers(panoptic: np.ndarray, instance_ids: Sequence[int]) -> np.ndarray:
    """[K, 2] int64 (y, x) mass centers of the instances ``instance_ids`` of ``panoptic`` ([H, W] ints).

    Each coordinate is the mean of the instance's pixel coordinates computed as detectron2 does (in
    float32: the exact integer sum rounded to float32, divided by the pixel count) and truncated to an
    integer.  Exact sums come from one bincount over the thing pixels, not a loop over instances; the
    result equals detectron2's whenever its float32 sum is exact (coordinate sums below 2**24).
    An id absent from ``panoptic`` gets (0, 0).
    """
    ids = np.asarray(list(instance_ids), dtype=np.int64)
    if len(ids) == 0:
        return np.zeros((0, 2), np.int64)
    height, width = panoptic.shape
    order = np.argsort(ids)
    sorted_ids = ids[order]
    flat = panoptic.reshape(-1)
    position = np.searchsorted(sorted_ids, flat).clip(max=len(ids) - 1)
    pixels = np.flatnonzero(sorted_ids[position] == flat)
    instance = order[position[pixels]]
    counts = np.bincount(instance, minlength=len(ids)).astype(np.float32)
    sums = [np.bincount(instance, weights=coordinate, minlength=len(ids))
            for coordinate in (pixels // width, pixels % width)]  # float64: exact below 2**53
    with np.errstate(invalid="ignore", divide="ignore"):
        means = [np.nan_to_num(total.astype(np.float32) / counts) for total in sums]
    return np.stack(means, axis=1).astype(np.int64)


class Predictor:
    """Panoptic-DeepLab inference on ``[H, W, 3]`` uint8 RGB arrays.

    ``Predictor(weights, device)`` loads a pdlkit checkpoint (docs/formats.md): its config, dataset spec
    and model state; ``Predictor.from_model(model, cfg, spec, device)`` wraps a model in memory.
    ``tta`` runs ``cfg.test.tta_scales`` (+ flip when ``cfg.test.tta_flip``).  ``precision``
    ("fp32", "fp16", "bf16"; None: ``cfg.test.precision``) is the network's arithmetic; ``amp`` True
    is the older spelling of "fp16" on CUDA, False of "fp32".  ``cfg.test.fold_bn`` /
    ``channels_last`` / ``compile`` speed the network up (see :mod:`pdlkit.modeling.inference`).
    """

    def __init__(self, weights: str | os.PathLike, device: str | torch.device | None = "cpu", *,
                 tta: bool = False, amp: Optional[bool] = None, precision: Optional[str] = None):
        from pdlkit.config import Config

        path = Path(weights)
        if not path.is_file():
            raise PdlError(f"{path}: weights file not found")
        if path.suffix.lower() == ".onnx":  # an exported network run by onnxruntime (pdl export)
            from .onnx_runtime import OnnxNetwork

            network = OnnxNetwork(path, device=_resolve_device(device))
            self._setup(network, network.config, network.spec, device, tta, amp, precision)
            self.weights = path
            return
        from pdlkit.checkpoint import load_checkpoint
        from pdlkit.data.spec import DatasetSpec
        from pdlkit.modeling import build_model

        checkpoint = load_checkpoint(path, map_location="cpu")
        missing = [k for k in ("model", "config", "dataset") if k not in checkpoint]
        if missing:
            raise DataError(f"{path}: not a pdlkit checkpoint (missing {', '.join(missing)})")
        cfg = Config.from_dict(checkpoint["config"], source=str(path))
        cfg.model.pretrained = "none"  # the checkpoint holds every weight; never look for ImageNet ones
        spec = DatasetSpec.from_dict(checkpoint["dataset"])
        model = build_model(cfg.model, spec.num_classes)
        state = {k[len("module."):] if k.startswith("module.") else k: v
                 for k, v in checkpoint["model"].items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:2])
            raise DataError(f"{path}: the weights do not fit the checkpoint's model ({detail})") from None
        self._setup(model, cfg, spec, device, tta, amp, precision)
        self.weights = path

    @classmethod
    def from_model(cls, model: torch.nn.Module, cfg, spec, device: str | torch.device | None = None,
                   *, tta: bool = False, amp: Optional[bool] = None,
                   precision: Optional[str] = None) -> "Predictor":
        """Wrap a model in memory (e.g. the trainer's, for evaluation); ``device`` None keeps the
        model's own device."""
        predictor = cls.__new__(cls)
        if device is None:
            param = next(iter(model.parameters()), None)
            device = param.device if param is not None else "cpu"
        predictor._setup(model, cfg, spec, device, tta, amp, precision)
        predictor.weights = None
        return predictor

    def _setup(self, model, cfg, spec, device, tta, amp, precision) -> None:
        from pdlkit.modeling.inference import prepare_network

        self.device = _resolve_device(device)
        self.cfg = cfg
        self.spec = spec
        self.model = model.to(self.device).eval()
        self.tta = bool(tta)
        test = cfg.test
        if precision is None:
            precision = test.precision if amp is None else ("fp16" if amp and self.device.type == "cuda" else "fp32")
        self.precision = _check_choice("test.precision", precision, tuple(PRECISIONS))
        self.amp = self.precision == "fp16"
        self.instance_score = _check_choice("post.instance_score", cfg.post.instance_score, INSTANCE_SCORES)
        for key in ("min_size", "max_size"):
            if int(getattr(test, key)) < 0:
                raise PdlError(f"test.{key} must be 0 (off) or a positive number of pixels, got {getattr(test, key)}")
        # bf16 on the CPU: a bfloat16 copy of the network (several times faster than CPU autocast)
        bf16_weights = self.precision == "bf16" and self.device.type == "cpu"
        self.autocast = "fp32" if bf16_weights else self.precision
        self.size_divisibility, self.network = prepare_network(
            self.model, int(test.size_divisibility), fold_bn=bool(test.fold_bn),
            channels_last=bool(test.channels_last), compile=bool(test.compile), bf16_weights=bf16_weights)
        self.mean = torch.tensor(cfg.data.mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.data.std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.thing_ids = [i for i, thing in enumerate(spec.is_thing) if thing]
        # seconds spent in the network / in post-processing, summed over calls (for benchmarks)
        self.timings = {"network": 0.0, "postprocess": 0.0}

    @property
    def label_divisor(self) -> int:
        return int(self.cfg.post.label_divisor)

    # ------------------------------------------------------------------ inference
    def __call__(self, image: np.ndarray) -> Prediction:
        """Predict one ``[H, W, 3]`` uint8 RGB image."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[np.ndarray]) -> List[Prediction]:
        """Predict several images; images of one size share a forward pass, others run alone."""
        for index, image in enumerate(images):
            _check_image(image, index)
        predictions: List[Optional[Prediction]] = [None] * len(images)
        groups: Dict[tuple, List[int]] = {}
        for index, image in enumerate(images):
            groups.setdefault(image.shape, []).append(index)
        for indices in groups.values():
            batch = np.stack([images[i] for i in indices])
            for i, prediction in zip(indices, self._predict_stack(batch)):
                predictions[i] = prediction
        return predictions  # type: ignore[return-value]

    @torch.inference_mode()
    def _predict_stack(self, batch: np.ndarray) -> List[Prediction]:
        """batch: [N, H, W, 3] uint8 RGB -> N predictions."""
        start = time.perf_counter()
        test = self.cfg.test
        height, width = batch.shape[1:3]
        batch = resize_images(batch, shortest_edge_shape(height, width, int(test.min_size), int(test.max_size)))
        pixels = torch.from_numpy(batch).to(self.device, non_blocking=True)
        images = (pixels.permute(0, 3, 1, 2).contiguous().float() - self.mean) / self.std
        outputs = forward_tta(
            self.network,
            images,
            size_divisibility=self.size_divisibility,
            scales=test.tta_scales if self.tta else (1.0,),
            flip=bool(test.tta_flip) if self.tta else False,
            precision=self.autocast,
        )
        outputs = outputs_to_size(outputs, (height, width), scale_offsets=bool(test.scale_offsets))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        network_done = time.perf_counter()

        post = self.cfg.post
        results = panoptic_merge_batched(
            outputs["semantic"],
            outputs["center"],
            outputs["offset"],
            self.thing_ids,
            label_divisor=post.label_divisor,
            stuff_area=post.stuff_area,
            void_label=post.void_label,
            threshold=post.threshold,
            nms_kernel=post.nms_kernel,
            top_k=post.top_k,
        )
        predictions = []
        centers_all = outputs["center"][:, 0].cpu().numpy()
        offsets_all = outputs["offset"].cpu().numpy()
        for index, result in enumerate(results):
            predictions.append(self._to_prediction(result, centers_all[index], offsets_all[index]))
        end = time.perf_counter()
        self.timings["network"] += network_done - start
        self.timings["postprocess"] += end - network_done
        return predictions

    def _to_prediction(self, result, center_heatmap: np.ndarray, offsets: np.ndarray) -> Prediction:
        ids = result.ids.cpu().tolist()
        centers = result.centers.cpu().to(torch.int64)
        objectness = result.objectness.cpu().tolist()
        class_scores = result.class_scores.cpu().tolist()
        scores = result.scores.cpu().tolist()
        center_list = centers.tolist()
        panoptic = result.panoptic.cpu().numpy().astype(np.int32, copy=False)
        instance_info = {
            int(seg_id): {
                "score": float(scores[k]),
                "objectness": float(objectness[k]),
                "class_score": float(class_scores[k]),
                "center": [int(center_list[k][0]), int(center_list[k][1])],
            }
            for k, seg_id in enumerate(ids)
        }
        if self.instance_score == "mass_center":
            _score_at_mass_centers(instance_info, ids, panoptic, center_heatmap)
        segments = segments_from_panoptic(panoptic, self.spec, self.label_divisor, instance_info)
        return Prediction(
            panoptic=panoptic,
            semantic=result.semantic.cpu().numpy().astype(np.int64, copy=False),
            segments=segments,
            center_heatmap=center_heatmap,
            offsets=offsets,
            centers=centers.numpy().reshape(-1, 2),
            instance_ids=[int(i) for i in ids],
            label_divisor=self.label_divisor,
            void_label=int(self.cfg.post.void_label),
        )


def _score_at_mass_centers(instance_info: Dict[int, Dict[str, Any]], ids: List[int], panoptic: np.ndarray,
                           center_heatmap: np.ndarray) -> None:
    """Re-score the instances with the heatmap at their mass centers (float32 products, as detectron2)."""
    points = mass_centers(panoptic, ids)
    values = center_heatmap[points[:, 0], points[:, 1]].astype(np.float32)
    for k, seg_id in enumerate(ids):
        info = instance_info[int(seg_id)]
        info["mass_center"] = [int(points[k, 0]), int(points[k, 1])]
        info["objectness"] = float(values[k])
        info["score"] = float(values[k] * np.float32(info["class_score"]))


def _check_choice(key: str, value: Any, choices: Sequence[str]) -> str:
    if value not in choices:
        raise PdlError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _check_image(image: Any, index: int) -> None:
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image {index}: expected a numpy array [H, W, 3] uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image {index}: expected an [H, W, 3] uint8 RGB array, got shape {tuple(image.shape)} "
            f"dtype {image.dtype} (pdlkit.inference.read_image converts files)"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image {index}: empty image of shape {tuple(image.shape)}")


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise PdlError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PdlError(f"device {device!r} was asked for, but no CUDA GPU is available here; use cpu",
                       parameter="device")
    return resolved
