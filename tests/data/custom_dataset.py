"""A user's own COCO-panoptic dataset, written by the tests: six classes with non-contiguous ids
(things 7, 19, 42; stuff 100, 101, 205), crowd regions, void pixels, integer image ids that are not
the file names; or the same scenes in the Mapillary Vistas v2 layout (string ids).  Also
predictions made from the ground truth (perfect or perturbed) as ``pdl predict`` writes them, and
the reference evaluators run on the same files."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [
    {"id": 205, "name": "sky", "isthing": 0, "color": [70, 130, 180], "supercategory": "stuff"},
    {"id": 7, "name": "person", "isthing": 1, "color": [220, 20, 60], "supercategory": "thing"},
    {"id": 100, "name": "road", "isthing": 0, "color": [128, 64, 128], "supercategory": "stuff"},
    {"id": 19, "name": "bicycle", "isthing": 1, "color": [119, 11, 32], "supercategory": "thing"},
    {"id": 101, "name": "grass", "isthing": 0, "color": [107, 142, 35], "supercategory": "stuff"},
    {"id": 42, "name": "dog", "isthing": 1},  # no colour: pdlkit derives one
]
THINGS = (7, 19, 42)
STUFF = (100, 101, 205)
COLOR = {7: (220, 60, 60), 19: (40, 40, 200), 42: (200, 160, 40), 100: (90, 90, 90), 101: (60, 160, 60),
         205: (120, 170, 230)}


def _bbox(mask: np.ndarray) -> list:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _ids_to_rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def _segments(ids: np.ndarray, info: dict) -> list:
    """COCO segments_info of an id map; ``info``: id -> (category, iscrowd)."""
    segments = []
    for value in np.unique(ids):
        if value == 0:
            continue
        mask = ids == value
        category, crowd = info[int(value)]
        segments.append({"id": int(value), "category_id": category, "iscrowd": crowd,
                         "area": int(mask.sum()), "bbox": _bbox(mask)})
    return segments


def make_scene(rng: np.random.Generator, height: int, width: int, crowd: bool) -> tuple:
    """(ids [H, W] int64, {id: (category, iscrowd)}, rgb [H, W, 3] uint8) of one street scene."""
    ids = np.zeros((height, width), np.int64)
    fresh = iter(rng.choice(np.arange(1, 1 << 24), size=64, replace=False).tolist())
    info = {}
    for category, (top, bottom) in ((205, (0, height // 3)), (101, (height // 3, height // 2)),
                                    (100, (height // 2, height))):
        seg = next(fresh)
        ids[top:bottom] = seg
        info[seg] = (category, 0)
    for _ in range(int(rng.integers(2, 5))):
        category = int(rng.choice(THINGS))
        h, w = int(rng.integers(height // 6, height // 3)), int(rng.integers(width // 10, width // 4))
        y, x = int(rng.integers(height // 3, height - h)), int(rng.integers(0, width - w))
        seg = next(fresh)
        ids[y:y + h, x:x + w] = seg
        info[seg] = (category, 0)
    if crowd:
        seg = next(fresh)
        ids[height - height // 6:, width - width // 4:] = seg
        info[seg] = (7, 1)
    ids[: height // 8, : width // 6] = 0  # void: an unlabelled corner
    rgb = np.zeros((height, width, 3), np.uint8)
    for seg, (category, _) in info.items():
        rgb[ids == seg] = COLOR[category]
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-12, 13, rgb.shape), 0, 255).astype(np.uint8)
    return ids, info, rgb


def write_split(images_dir: Path, json_path: Path, masks_dir: Path, *, count: int, seed: int, height: int,
                width: int, string_ids: bool, first_id: int = 1000) -> dict:
    """One split: JPEG images, panoptic PNGs and the JSON; returns the JSON content."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for k in range(count):
        name = f"scene_{seed}_{k:03d}"
        image_id = name if string_ids else first_id + 7 * k  # ids are not the file names
        ids, info, rgb = make_scene(rng, height, width, crowd=k % 2 == 0)
        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb).save(images_dir / f"{name}.jpg", quality=95)
        Image.fromarray(_ids_to_rgb(ids)).save(masks_dir / f"{name}.png")
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": height, "width": width})
        annotations.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": _segments(ids, info)})
    data = {"info": {}, "images": images, "annotations": annotations, "categories": CATEGORIES}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data))
    return data


def write_custom(root: Path, *, train: int = 4, val: int = 3, height: int = 64, width: int = 96) -> dict:
    """``root/images/{train,val}/``, ``root/annotations/{train,val}.json`` and
    ``root/annotations/{train,val}_png/``; returns {split: (images, json, masks)}."""
    splits = {}
    for split, count, seed in (("train", train, 1), ("val", val, 2)):
        files = (root / "images" / split, root / "annotations" / f"{split}.json", root / "annotations" / f"{split}_png")
        write_split(*files, count=count, seed=seed, height=height, width=width, string_ids=False,
                    first_id=1000 * seed)
        splits[split] = files
    return splits


def write_vistas(root: Path, *, train: int = 2, val: int = 2, height: int = 48, width: int = 64) -> None:
    """The Mapillary Vistas v2 layout: ``{training,validation}/images`` and ``.../v2.0/panoptic``."""
    for folder, count, seed in (("training", train, 3), ("validation", val, 4)):
        panoptic = root / folder / "v2.0" / "panoptic"
        write_split(root / folder / "images", panoptic / "panoptic_2020.json", panoptic, count=count, seed=seed,
                    height=height, width=width, string_ids=True)


# ----------------------------------------------------------------------------------- predictions
def _perturb(ids: np.ndarray, info: dict, rng: np.random.Generator) -> tuple:
    """Predicted (ids, {id: category}) from the ground truth: dropped, relabelled, shifted and merged
    instances, crowd predicted as one instance, a relabelled stuff region, a false positive, void."""
    pred = ids.copy()
    categories = {seg: category for seg, (category, _) in info.items()}
    things = [seg for seg, (category, crowd) in info.items() if category in THINGS and not crowd]
    for seg in things:
        action, mask = rng.random(), ids == seg
        if action < 0.15:
            pred[mask] = 0
        elif action < 0.3:
            categories[seg] = int(rng.choice([c for c in THINGS if c != categories[seg]]))
        elif action < 0.5:
            pred[mask] = 0
            pred[np.roll(mask, int(rng.integers(1, 4)), axis=1)] = seg
        elif action < 0.6 and len(things) > 1:
            pred[mask] = things[0] if seg != things[0] else things[1]
    if rng.random() < 0.5:
        grass = [s for s, c in categories.items() if c == 101][0]
        pred[(ids == grass) & (np.arange(ids.shape[1]) < ids.shape[1] // 3)] = [
            s for s, c in categories.items() if c == 100][0]
    fp = next(i for i in range(1, 100) if i not in categories)  # a fresh id that fits the RGB encoding
    pred[: ids.shape[0] // 5, ids.shape[1] // 2: ids.shape[1] // 2 + 6] = fp
    categories[fp] = 42
    pred[rng.random(ids.shape) < 0.02] = 0
    return pred, categories


def write_predictions(images_dir: Path, masks_dir: Path, data: dict, out: Path, *, seed: int,
                      perturb: bool, ids: str = "file") -> Path:
    """A predictions folder as ``pdl predict`` writes it (``ids="file"``: image_id = file stem) or
    with the dataset's own ids (``ids="dataset"``)."""
    rng = np.random.default_rng(seed)
    images = {im["id"]: im for im in data["images"]}
    annotations = []
    for gt in data["annotations"]:
        gt_ids = np.asarray(Image.open(masks_dir / gt["file_name"]).convert("RGB")).astype(np.int64)
        gt_ids = gt_ids[..., 0] + 256 * gt_ids[..., 1] + 65536 * gt_ids[..., 2]
        info = {s["id"]: (s["category_id"], s["iscrowd"]) for s in gt["segments_info"]}
        pred, categories = _perturb(gt_ids, info, rng) if perturb else (
            gt_ids, {s: c for s, (c, _) in info.items()})
        stem = Path(images[gt["image_id"]]["file_name"]).stem
        segments = []
        for segment in _segments(pred, {s: (c, 0) for s, c in categories.items()}):
            if segment["category_id"] in THINGS:
                segment["score"] = float(rng.uniform(0.05, 1.0))
            segments.append(segment)
        (out / "panoptic").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_ids_to_rgb(pred)).save(out / "panoptic" / f"{stem}.png")
        annotations.append({"image_id": stem if ids == "file" else gt["image_id"], "file_name": f"{stem}.png",
                            "segments_info": segments})
    (out / "panoptic.json").write_text(json.dumps({"annotations": annotations}))
    return out


# ----------------------------------------------------------------------------------- references
def official_pq(gt_json: Path, masks_dir: Path, pred_dir: Path, work: Path) -> dict:
    """cityscapesscripts' evaluatePanoptic (panopticapi's pq_compute) on the same files; the
    predictions json is rewritten with the dataset's image ids, which is all it matches by."""
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    data = json.loads(gt_json.read_text())
    by_stem = {Path(im["file_name"]).stem: im["id"] for im in data["images"]}
    pred = json.loads((pred_dir / "panoptic.json").read_text())
    for ann in pred["annotations"]:
        ann["image_id"] = by_stem.get(ann["image_id"], ann["image_id"])
    work.mkdir(parents=True, exist_ok=True)
    (work / "pred_with_dataset_ids.json").write_text(json.dumps(pred))
    with contextlib.redirect_stdout(io.StringIO()):
        return evaluatePanoptic(str(gt_json), str(masks_dir), str(work / "pred_with_dataset_ids.json"),
                                str(pred_dir / "panoptic"), str(work / "pq.json"))


def reference_miou(data: dict, masks_dir: Path, pred_dir: Path) -> float:
    """mIoU (percent) in plain numpy from the two panoptic maps' categories (void not scored)."""
    class_ids = sorted(c["id"] for c in CATEGORIES)
    pred_index = json.loads((pred_dir / "panoptic.json").read_text())["annotations"]
    images = {im["id"]: Path(im["file_name"]).stem for im in data["images"]}
    by_stem = {ann["file_name"][:-4]: ann for ann in pred_index}
    tp = np.zeros(len(class_ids)); fp = np.zeros(len(class_ids)); fn = np.zeros(len(class_ids))  # noqa: E702
    for gt in data["annotations"]:
        pred_ann = by_stem[images[gt["image_id"]]]
        gt_sem = _semantic(masks_dir / gt["file_name"], gt["segments_info"])
        pred_sem = _semantic(pred_dir / "panoptic" / pred_ann["file_name"], pred_ann["segments_info"])
        scored = np.isin(gt_sem, class_ids)
        for k, c in enumerate(class_ids):
            tp[k] += np.sum((gt_sem == c) & (pred_sem == c))
            fn[k] += np.sum((gt_sem == c) & (pred_sem != c))
            fp[k] += np.sum((pred_sem == c) & (gt_sem != c) & scored)
    defined = (tp + fp + fn) > 0
    return 100.0 * float(np.mean(tp[defined] / (tp + fp + fn)[defined]))


def _semantic(png: Path, segments: list) -> np.ndarray:
    rgb = np.asarray(Image.open(png).convert("RGB")).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    semantic = np.full(ids.shape, -1, np.int64)
    for segment in segments:
        semantic[ids == segment["id"]] = segment["category_id"]
    return semantic


def coco_instances_gt(data: dict, masks_dir: Path) -> dict:
    """A COCO instances json of the thing segments (RLE from the panoptic PNGs), as pycocotools reads."""
    from pycocotools import mask as mask_util

    annotations = []
    for gt in data["annotations"]:
        rgb = np.asarray(Image.open(masks_dir / gt["file_name"]).convert("RGB")).astype(np.int64)
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        for segment in gt["segments_info"]:
            if segment["category_id"] not in THINGS:
                continue
            rle = mask_util.encode(np.asfortranarray((ids == segment["id"]).astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append({"id": len(annotations) + 1, "image_id": gt["image_id"],
                                "category_id": segment["category_id"], "segmentation": rle,
                                "area": float(mask_util.area(rle)), "bbox": list(mask_util.toBbox(rle)),
                                "iscrowd": segment["iscrowd"]})
    return {"images": [{"id": im["id"], "height": im["height"], "width": im["width"]} for im in data["images"]],
            "annotations": annotations, "categories": [{"id": c} for c in THINGS]}


def pycocotools_ap(gt_instances: dict, results_json: Path) -> tuple:
    """(AP, AP50) in percent of a results file against a ground-truth dict, by pycocotools alone."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = gt_instances
        gt.createIndex()
        evaluator = COCOeval(gt, gt.loadRes(str(results_json)), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return 100.0 * evaluator.stats[0], 100.0 * evaluator.stats[1]
