"""Pictures of panoptic predictions: overlays, semantic maps, center heatmaps, offset fields, panels.

All images are ``[H, W, 3]`` uint8 RGB.  A *segment map* is ``[H, W]`` int ids with a list of segment
dicts (``id``, ``category_id``, ``isthing``) saying what each id is; ids that no segment lists are
void.  That fits both a :class:`~pdlkit.inference.Prediction` (train-id-space ids, void -1) and the
files of ``pdl predict`` (dataset-space ids, void 0).

``visualize_predictions`` draws the pictures for a ``pdl predict`` output folder:
``overlay`` = the image with the panoptic overlay (class colours from the dataset spec, each instance
its own shade, white instance boundaries, class names on large segments); ``panel`` = a 2 x 2 grid
(overlay | semantic map / center heatmap with the chosen centers | offsets on thing pixels as an
HSV flow picture: hue = direction, value = length), which needs the raw outputs of
``pdl predict --save-raw``.

``plot_training_run`` draws a ``pdl train`` folder's ``metrics.jsonl``: the loss curves beside the
periodic PQ / mIoU (SQ, RQ), with OpenCV (no plotting library needed).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from pdlkit.errors import DataError, PdlError
from pdlkit.io import read_json, read_panoptic_png, write_png

__all__ = [
    "colorize_semantic",
    "panoptic_overlay",
    "center_heatmap_image",
    "offset_flow_image",
    "make_panel",
    "prediction_panel",
    "visualize_predictions",
    "VisualizeSummary",
    "nice_ticks",
    "plot_series",
    "read_training_metrics",
    "plot_training_run",
]

# brightness changes that tell instances of one class apart: >0 blends toward white, <0 toward black
_SHADES = (0.0, 0.35, -0.3, 0.6, -0.5, 0.2, -0.15, 0.45)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _shade(color: Sequence[int], amount: float) -> np.ndarray:
    color = np.asarray(color, dtype=np.float32)
    target = 255.0 if amount > 0 else 0.0
    return color + (target - color) * abs(amount)


def _train_id_lut(category_ids: np.ndarray, spec) -> np.ndarray:
    """category ids -> train ids (-1 for ids the spec does not know)."""
    mapping = spec.category_to_train_id
    return np.asarray([mapping.get(int(c), -1) for c in category_ids], dtype=np.int64)


def colorize_semantic(train_ids: np.ndarray, spec) -> np.ndarray:
    """[H, W] train ids -> [H, W, 3] uint8 spec colours (black for ids outside the spec)."""
    palette = np.zeros((spec.num_classes + 1, 3), dtype=np.uint8)
    palette[: spec.num_classes] = np.asarray(spec.colors, dtype=np.uint8)
    ids = np.where((train_ids >= 0) & (train_ids < spec.num_classes), train_ids, spec.num_classes)
    return palette[ids]


def _compact(segment_map: np.ndarray, segments: Sequence[Dict[str, Any]]) -> np.ndarray:
    """[H, W] ids -> [H, W] index into ``segments`` (-1 for void / unlisted ids)."""
    if not segments:
        return np.full(segment_map.shape, -1, dtype=np.int64)
    ids = np.asarray([s["id"] for s in segments], dtype=np.int64)
    order = np.argsort(ids)
    sorted_ids = ids[order]
    flat = segment_map.astype(np.int64)
    slot = np.clip(np.searchsorted(sorted_ids, flat), 0, len(ids) - 1)
    found = sorted_ids[slot] == flat
    return np.where(found, order[slot], -1)


def _boundaries(index_map: np.ndarray, thing_index: np.ndarray, thickness: int) -> np.ndarray:
    """[H, W] bool: pixels on the border between two segments where one side is a thing."""
    import cv2

    is_thing = np.zeros(index_map.shape, dtype=bool)
    valid = index_map >= 0
    is_thing[valid] = thing_index[index_map[valid]]
    edge = np.zeros(index_map.shape, dtype=bool)
    diff_x = index_map[:, 1:] != index_map[:, :-1]
    thing_x = is_thing[:, 1:] | is_thing[:, :-1]
    edge[:, 1:] |= diff_x & thing_x
    diff_y = index_map[1:, :] != index_map[:-1, :]
    thing_y = is_thing[1:, :] | is_thing[:-1, :]
    edge[1:, :] |= diff_y & thing_y
    if thickness > 1:
        kernel = np.ones((thickness, thickness), dtype=np.uint8)
        edge = cv2.dilate(edge.astype(np.uint8), kernel) > 0
    return edge


def _segment_colors(segments: Sequence[Dict[str, Any]], lut: np.ndarray, spec):
    """([K + 1, 3] float32 colour per segment, class colour with a per-instance shade for things;
    [K] bool thing flags)."""
    colors = np.zeros((len(segments) + 1, 3), dtype=np.float32)
    seen_per_class: Dict[int, int] = {}
    thing_index = np.zeros(len(segments), dtype=bool)
    for k, (segment, train_id) in enumerate(zip(segments, lut)):
        base = spec.colors[train_id] if train_id >= 0 else (0, 0, 0)
        if segment.get("isthing"):
            thing_index[k] = True
            nth = seen_per_class.get(int(train_id), 0)
            seen_per_class[int(train_id)] = nth + 1
            colors[k] = _shade(base, _SHADES[nth % len(_SHADES)])
        else:
            colors[k] = base
    return colors, thing_index


def panoptic_overlay(
    image: np.ndarray,
    segment_map: np.ndarray,
    segments: Sequence[Dict[str, Any]],
    spec,
    *,
    alpha: float = 0.55,
    labels: bool = True,
    label_min_fraction: float = 0.01,
) -> np.ndarray:
    """The image with each segment filled in its class colour (instances in their own shade),
    white boundaries around instances and class names on segments covering at least
    ``label_min_fraction`` of the image.  image [H, W, 3] uint8 RGB; segment_map [H, W]."""
    import cv2

    if image.shape[:2] != segment_map.shape:
        raise DataError(f"image is {image.shape[:2]} but the prediction is {segment_map.shape}")
    height, width = segment_map.shape
    index_map = _compact(segment_map, segments)
    lut = _train_id_lut(np.asarray([s["category_id"] for s in segments], dtype=np.int64), spec)
    colors, thing_index = _segment_colors(segments, lut, spec)
    out = image.astype(np.float32)
    valid = index_map >= 0
    out[valid] = out[valid] * (1.0 - alpha) + colors[index_map[valid]] * alpha
    thickness = max(1, int(round(min(height, width) / 512)))
    out[_boundaries(index_map, thing_index, thickness)] = 255.0
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)

    if labels and segments:
        areas = np.bincount(index_map[valid], minlength=len(segments))
        font_scale = max(0.3, min(height, width) / 700.0)
        text_thickness = max(1, int(round(font_scale * 1.5)))
        for k in np.flatnonzero(areas >= label_min_fraction * height * width):
            train_id = lut[k]
            if train_id < 0:
                continue
            # the segment's most interior pixel (farthest from its border): inside it even when it is
            # not convex, and where the label covers the least of the other segments
            inside = np.pad((index_map == k).astype(np.uint8), 1)
            distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3)[1:-1, 1:-1]
            center_y, center_x = np.unravel_index(int(np.argmax(distance)), distance.shape)
            name = spec.class_names[train_id]
            (text_w, text_h), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_thickness)
            x = int(np.clip(center_x - text_w // 2, 0, max(0, width - text_w)))
            y = int(np.clip(center_y + text_h // 2, text_h, height - 1))
            cv2.putText(out, name, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0),
                        text_thickness + 2, cv2.LINE_AA)
            cv2.putText(out, name, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255),
                        text_thickness, cv2.LINE_AA)
    return out


def center_heatmap_image(heatmap: np.ndarray, centers: Optional[np.ndarray] = None) -> np.ndarray:
    """[H, W] heatmap (clipped to [0, 1]) as a JET picture with ``centers`` [K, 2] (y, x) marked."""
    import cv2

    values = np.clip(np.nan_to_num(heatmap.astype(np.float32)), 0.0, 1.0)
    picture = cv2.applyColorMap((values * 255 + 0.5).astype(np.uint8), cv2.COLORMAP_JET)
    picture = cv2.cvtColor(picture, cv2.COLOR_BGR2RGB)
    if centers is not None and len(centers):
        size = max(5, int(round(min(heatmap.shape) / 40)))
        for y, x in np.asarray(centers).reshape(-1, 2):
            cv2.drawMarker(picture, (int(x), int(y)), (0, 0, 0), cv2.MARKER_CROSS, size + 2, 3)
            cv2.drawMarker(picture, (int(x), int(y)), (255, 255, 255), cv2.MARKER_CROSS, size, 1)
    return picture


def offset_flow_image(offsets: np.ndarray, max_length: Optional[float] = None,
                      mask: Optional[np.ndarray] = None) -> np.ndarray:
    """[2, H, W] offsets (y, x) -> HSV flow picture: hue = direction, value = length / ``max_length``
    (default: the largest length shown), full saturation.  ``mask`` [H, W] bool: pixels to show
    (the others are black) -- offsets are trained on thing pixels only, elsewhere they are noise."""
    import cv2

    dy = np.nan_to_num(offsets[0].astype(np.float32))
    dx = np.nan_to_num(offsets[1].astype(np.float32))
    length = np.sqrt(dx * dx + dy * dy)
    if mask is not None:
        length = np.where(mask, length, 0.0)
    scale = float(max_length) if max_length else float(length.max(initial=0.0))
    angle = (np.degrees(np.arctan2(dy, dx)) + 360.0) % 360.0  # 0..360, OpenCV hue is 0..180
    hsv = np.empty(dy.shape + (3,), dtype=np.uint8)
    hsv[..., 0] = (angle / 2.0).astype(np.uint8) % 180
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(length / max(scale, 1e-6) * 255 + 0.5, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def _title(tile: np.ndarray, text: str) -> np.ndarray:
    import cv2

    tile = np.ascontiguousarray(tile)
    scale = max(0.35, min(tile.shape[:2]) / 600.0)
    y = int(22 * scale / 0.6) + 2
    cv2.putText(tile, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(tile, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def make_panel(overlay: np.ndarray, semantic: np.ndarray, heatmap: np.ndarray,
               flow: np.ndarray) -> np.ndarray:
    """Four [H, W, 3] pictures -> one [2H, 2W, 3] grid (overlay | semantic / heatmap | offsets)."""
    tiles = [_title(overlay, "panoptic"), _title(semantic, "semantic"),
             _title(heatmap, "centers"), _title(flow, "offsets")]
    top = np.concatenate(tiles[:2], axis=1)
    bottom = np.concatenate(tiles[2:], axis=1)
    return np.concatenate([top, bottom], axis=0)


def prediction_panel(image: np.ndarray, prediction, spec) -> np.ndarray:
    """Panel of an in-memory :class:`~pdlkit.inference.Prediction` of ``image`` [H, W, 3]."""
    overlay = panoptic_overlay(image, prediction.panoptic, prediction.segments, spec)
    return make_panel(
        overlay,
        colorize_semantic(prediction.semantic, spec),
        center_heatmap_image(prediction.center_heatmap, prediction.centers),
        offset_flow_image(prediction.offsets, mask=_thing_mask(prediction.semantic, spec)),
    )


def _thing_mask(train_ids: np.ndarray, spec) -> np.ndarray:
    """[H, W] bool: pixels whose train id is a thing class."""
    is_thing = np.append(np.asarray(spec.is_thing, dtype=bool), False)
    ids = np.where((train_ids >= 0) & (train_ids < spec.num_classes), train_ids, spec.num_classes)
    return is_thing[ids]


# ---------------------------------------------------------------------- prediction folders
@dataclass
class VisualizeSummary:
    written: List[Path] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)  # (image id or path, reason)


def _load_spec(root: Path):
    from pdlkit.data.spec import DatasetSpec

    spec_path = root / "spec.json"
    if spec_path.is_file():
        try:
            return DatasetSpec.from_dict(read_json(spec_path))
        except ValueError as exc:
            raise DataError(f"{spec_path}: not a valid dataset spec ({exc})") from None
    index = root / "panoptic.json"
    if index.is_file():
        try:
            categories = read_json(index)["categories"]
            return DatasetSpec(
                name="predictions",
                class_names=[c["name"] for c in categories],
                category_ids=[c["id"] for c in categories],
                is_thing=[bool(c["isthing"]) for c in categories],
                colors=[c.get("color", (128, 128, 128)) for c in categories],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{index}: no usable categories ({exc})") from None
    raise DataError(f"{root}: not a prediction folder of pdl predict (no spec.json or panoptic.json)")


def _find_root(path: Path) -> Path:
    for parent in [path] + list(path.parents):
        if (parent / "spec.json").is_file() or (parent / "panoptic.json").is_file():
            return parent
    raise DataError(f"{path}: not inside a prediction folder of pdl predict (no panoptic.json above it)")


def _records(root: Path, only: Optional[Path]) -> List[Dict[str, Any]]:
    """Per-image records (image_id, file_name, segments_info, source_image?) of a prediction folder,
    or just the one that ``only`` (any file of that image under root) belongs to."""
    records: Dict[str, Dict[str, Any]] = {}
    segments_root = root / "segments"
    if segments_root.is_dir():
        for path in sorted(segments_root.rglob("*.json")):
            try:
                record = read_json(path)
            except DataError:
                continue
            records[record["file_name"]] = record
    index = root / "panoptic.json"
    if index.is_file():
        try:
            for record in read_json(index).get("annotations", []):
                records.setdefault(record["file_name"], record)
        except (ValueError, KeyError, AttributeError) as exc:
            raise DataError(f"{index}: not a readable panoptic.json ({exc})") from None
    if only is not None:
        rel = None
        for sub in ("panoptic", "semantic", "raw", "segments"):
            try:
                rel = only.resolve().relative_to((root / sub).resolve())
                break
            except ValueError:
                continue
        if rel is None:
            raise DataError(f"{only}: not a prediction file under {root}")
        key = rel.with_suffix(".png").as_posix()
        if key not in records:
            raise DataError(f"{only}: no record of this image in {root} (panoptic.json / segments)")
        return [records[key]]
    if not records:
        raise DataError(f"{root}: holds no predictions (empty panoptic.json and no segments records)")
    return [records[k] for k in sorted(records)]


def _find_image(record: Dict[str, Any], images_dir: Optional[Path]) -> Path:
    rel = Path(record["file_name"]).parent
    image_id = record["image_id"]
    if images_dir is not None:
        stems = (image_id, image_id + "_leftImg8bit")
        for folder in (images_dir / rel, images_dir):
            for stem in stems:
                for ext in IMAGE_EXTENSIONS:
                    for candidate in (folder / (stem + ext), folder / (stem + ext.upper())):
                        if candidate.is_file():
                            return candidate
        for candidate in sorted(images_dir.rglob(image_id + "*")):
            if candidate.suffix.lower() in IMAGE_EXTENSIONS and candidate.stem in stems:
                return candidate
        raise DataError(f"{images_dir}: no image named {image_id} (or {image_id}_leftImg8bit) found")
    source = record.get("source_image")
    if source and Path(source).is_file():
        return Path(source)
    raise DataError(f"{record['file_name']}: the input image is not found; give the images folder (images_dir)")


def visualize_predictions(
    predictions: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    images_dir: str | os.PathLike | None = None,
    what: str = "overlay",
    scale: int = 1,
    progress: bool = True,
) -> VisualizeSummary:
    """Draw ``what`` ("overlay" | "panel") for every image of a ``pdl predict`` folder (or for the
    image of one prediction file in it) into ``output_dir/<sub-folders>/<image_id>_<what>.png``.
    ``scale`` > 1 enlarges small images (and their maps) before drawing, so labels stay legible.

    Per-image problems (input image not found, size mismatch, missing raw outputs) are collected in
    the summary; a folder that is not a prediction folder raises :class:`DataError`.
    """
    from tqdm import tqdm

    if what not in ("overlay", "panel"):
        raise PdlError(f"what must be overlay or panel, got {what!r}", parameter="what")
    if not isinstance(scale, int) or scale < 1:
        raise PdlError(f"scale must be a whole number >= 1, got {scale!r}", parameter="scale")
    source = Path(predictions)
    if not source.exists():
        raise PdlError(f"{source}: no such file or folder")
    images_root = Path(images_dir) if images_dir is not None else None
    if images_root is not None and not images_root.is_dir():
        raise PdlError(f"{images_root}: images_dir must be a folder", parameter="images_dir")
    root = source if source.is_dir() else _find_root(source.parent)
    spec = _load_spec(root)
    records = _records(root, None if source.is_dir() else source)
    summary = VisualizeSummary()
    out_root = Path(output_dir)
    for record in tqdm(records, unit="img", desc="visualize", disable=not progress, dynamic_ncols=True):
        name = record["file_name"]
        try:
            target = _draw_record(record, root, out_root, images_root, spec, what, scale)
            summary.written.append(target)
        except PdlError as exc:
            summary.failed.append((name, str(exc)))
    return summary


def _draw_record(record, root: Path, out_root: Path, images_root: Optional[Path], spec, what: str,
                 scale: int) -> Path:
    """Draw one prediction record's picture and write it; returns the written path."""
    from pdlkit.fileio import resolve_inside
    from pdlkit.inference.io import read_image

    name = record["file_name"]
    # file_name comes from a json anyone may have edited: never read or write outside
    panoptic_path = resolve_inside(root / "panoptic", name, what=f"file_name {name!r}")
    target = resolve_inside(out_root, Path(name).with_name(f"{Path(name).stem}_{what}.png"),
                            what=f"file_name {name!r}")
    image = read_image(_find_image(record, images_root))
    segment_map = read_panoptic_png(panoptic_path)
    if image.shape[:2] != segment_map.shape:
        raise DataError(f"{name}: the image is {image.shape[1]}x{image.shape[0]} but the "
                        f"prediction is {segment_map.shape[1]}x{segment_map.shape[0]}")
    image, segment_map = _enlarge(image, scale, linear=True), _enlarge(segment_map, scale)
    picture = panoptic_overlay(image, segment_map, record["segments_info"], spec)
    if what == "panel":
        raw_path = resolve_inside(root / "raw", Path(name).with_suffix(".npz"), what=f"file_name {name!r}")
        heatmap, offsets, centers, semantic = _read_raw(raw_path, scale)
        picture = make_panel(picture, colorize_semantic(semantic, spec),
                             center_heatmap_image(heatmap, centers),
                             offset_flow_image(offsets, mask=_thing_mask(semantic, spec)))
    write_png(target, picture)
    return target


def _read_raw(raw_path: Path, scale: int):
    """(heatmap [H, W], offsets [2, H, W], centers [K, 2] (y, x), semantic [H, W]) of a raw file,
    enlarged ``scale`` times (offsets are lengths in pixels: they grow with the picture)."""
    if not raw_path.is_file():
        raise DataError(f"{raw_path}: missing; a panel needs the raw outputs, run pdl predict with --save-raw")
    try:
        with np.load(raw_path) as raw:
            heatmap = raw["center_heatmap"].astype(np.float32)
            offsets = raw["offsets"].astype(np.float32)
            centers = raw["centers"].astype(np.int64).reshape(-1, 2)
            semantic = raw["semantic"].astype(np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{raw_path}: not a readable raw output file ({exc})") from None
    if scale > 1:
        heatmap = _enlarge(heatmap, scale, linear=True)
        offsets = np.stack([_enlarge(o, scale, linear=True) for o in offsets]) * scale
        centers = centers * scale + (scale - 1) // 2
        semantic = _enlarge(semantic, scale)
    return heatmap, offsets, centers, semantic


def _enlarge(array: np.ndarray, scale: int, *, linear: bool = False) -> np.ndarray:
    """[H, W] or [H, W, C] -> [scale H, scale W, ...]; nearest for labels, bilinear for pictures."""
    if scale == 1:
        return array
    import cv2

    if not linear:
        return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)
    height, width = array.shape[:2]
    return cv2.resize(array, (width * scale, height * scale), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------------- training curves
# line colours (RGB) in the order series are drawn: losses, then PQ, mIoU, SQ, RQ
CURVE_COLORS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
                (23, 190, 207), (140, 86, 75), (227, 119, 194))
_EVAL_KEYS = ("PQ", "mIoU", "SQ", "RQ")


def nice_ticks(low: float, high: float, count: int = 5) -> List[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) covering [low, high]."""
    if not np.isfinite(low) or not np.isfinite(high):
        raise ValueError(f"tick range must be finite, got [{low}, {high}]")
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = float(10.0 ** np.floor(np.log10(raw)))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = float(np.floor(low / step) * step)
    steps = int(np.ceil((high - first) / step - 1e-9))
    return [round(first + k * step, 12) for k in range(steps + 1)]


@dataclass
class PlotArea:
    """Maps data (x, y) to pixels of a ``width`` x ``height`` tile inside its margins."""

    x_ticks: List[float]
    y_ticks: List[float]
    width: int = 640
    height: int = 420
    left: int = 70
    right: int = 20
    top: int = 40
    bottom: int = 45

    def to_pixel(self, x: float, y: float) -> Tuple[int, int]:
        x0, x1, y0, y1 = self.x_ticks[0], self.x_ticks[-1], self.y_ticks[0], self.y_ticks[-1]
        px = self.left + (x - x0) / (x1 - x0) * (self.width - self.left - self.right)
        py = self.height - self.bottom - (y - y0) / (y1 - y0) * (self.height - self.top - self.bottom)
        return int(round(px)), int(round(py))


def _draw_axes(area: PlotArea, title: str, y_label: str) -> np.ndarray:
    import cv2

    tile = np.full((area.height, area.width, 3), 255, dtype=np.uint8)
    font, grey = cv2.FONT_HERSHEY_SIMPLEX, (90, 90, 90)
    for y in area.y_ticks:
        _, py = area.to_pixel(area.x_ticks[0], y)
        cv2.line(tile, (area.left, py), (area.width - area.right, py), (225, 225, 225), 1)
        cv2.putText(tile, f"{y:g}", (4, py + 4), font, 0.4, grey, 1, cv2.LINE_AA)
    for x in area.x_ticks:
        px, _ = area.to_pixel(x, area.y_ticks[0])
        cv2.line(tile, (px, area.top), (px, area.height - area.bottom), (225, 225, 225), 1)
        cv2.putText(tile, f"{x:g}", (px - 12, area.height - area.bottom + 18), font, 0.4, grey, 1,
                    cv2.LINE_AA)
    cv2.rectangle(tile, (area.left, area.top), (area.width - area.right, area.height - area.bottom),
                  grey, 1)
    cv2.putText(tile, title, (area.left, 26), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(tile, y_label, (area.width - area.right - 8 * len(y_label), 26), font, 0.45, grey, 1,
                cv2.LINE_AA)
    cv2.putText(tile, "iteration", (area.width // 2 - 30, area.height - 8), font, 0.45, grey, 1,
                cv2.LINE_AA)
    return tile


def plot_series(series: Dict[str, Tuple[Sequence[float], Sequence[float]]], title: str,
                y_label: str, *, markers: bool = False,
                colors: Sequence[Tuple[int, int, int]] = CURVE_COLORS) -> Tuple[np.ndarray, PlotArea]:
    """Line plot of ``{name: (iterations, values)}`` -> ([H, W, 3] uint8 RGB tile, its PlotArea)."""
    import cv2

    xs = [float(x) for values, _ in series.values() for x in values]
    ys = [float(y) for _, values in series.values() for y in values if np.isfinite(y)]
    area = PlotArea(nice_ticks(min(xs, default=0.0), max(xs, default=1.0)),
                    nice_ticks(min(ys, default=0.0), max(ys, default=1.0)))
    tile = _draw_axes(area, title, y_label)
    for index, (name, (iterations, values)) in enumerate(series.items()):
        color = tuple(int(c) for c in colors[index % len(colors)])
        points = [area.to_pixel(x, y) for x, y in zip(iterations, values) if np.isfinite(y)]
        if len(points) > 1:
            cv2.polylines(tile, [np.asarray(points, np.int32)], False, color, 2, cv2.LINE_AA)
        for point in points if markers or len(points) == 1 else []:
            cv2.circle(tile, point, 4, color, -1, cv2.LINE_AA)
        legend_y = area.top + 16 + 18 * index
        cv2.line(tile, (area.width - area.right - 130, legend_y - 4),
                 (area.width - area.right - 108, legend_y - 4), color, 3)
        cv2.putText(tile, name, (area.width - area.right - 102, legend_y), cv2.FONT_HERSHEY_SIMPLEX,
                    0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return tile, area


def read_training_metrics(path: str | os.PathLike) -> Tuple[Dict[str, Tuple[list, list]], Dict[str, Tuple[list, list]]]:
    """``metrics.jsonl`` -> (loss series, evaluation series), each ``{name: (iterations, values)}``;
    losses are the keys starting with ``loss``, evaluations the PQ / mIoU / SQ / RQ of ``eval``."""
    losses: Dict[str, Tuple[list, list]] = {}
    evaluations: Dict[str, Tuple[list, list]] = {}
    path = Path(path)
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            iteration = int(row["iteration"])
        except (ValueError, KeyError, TypeError):
            raise DataError(f"{path}: line {number} is not a metrics record") from None
        for key, value in row.items():
            if key.startswith("loss") and isinstance(value, (int, float)):
                losses.setdefault(key, ([], []))[0].append(iteration)
                losses[key][1].append(float(value))
        for key in _EVAL_KEYS:
            value = (row.get("eval") or {}).get(key)
            if isinstance(value, (int, float)):
                evaluations.setdefault(key, ([], []))[0].append(iteration)
                evaluations[key][1].append(float(value))
    return losses, evaluations


def plot_training_run(run_dir: str | os.PathLike, output: str | os.PathLike | None = None) -> Path:
    """Draw the loss curves and the periodic PQ / mIoU (SQ, RQ) of a ``pdl train`` folder's
    ``metrics.jsonl`` side by side into a PNG (default ``run_dir/training_curves.png``)."""
    run_dir = Path(run_dir)
    metrics = run_dir / "metrics.jsonl"
    if not metrics.is_file():
        raise DataError(f"{run_dir}: not a training run folder (no metrics.jsonl)")
    losses, evaluations = read_training_metrics(metrics)
    if not losses and not evaluations:
        raise DataError(f"{metrics}: holds no losses or evaluations yet")
    loss_tile, _ = plot_series(losses, "training losses", "loss")
    eval_colors = CURVE_COLORS[1:] + CURVE_COLORS[:1]
    eval_tile, _ = plot_series(evaluations, "evaluation" if evaluations else "evaluation (none yet)",
                               "%", markers=True, colors=eval_colors)
    target = Path(output) if output is not None else run_dir / "training_curves.png"
    write_png(target, np.concatenate([loss_tile, eval_tile], axis=1))
    return target
