"""Hand-made Cityscapes-style ground truth, predictions made from it, and the official evaluators.

Used by the evaluation tests and by ``benchmarks/eval.py``.  Ground truth is written as Cityscapes
``*_gtFine_instanceIds.png`` / ``*_gtFine_labelIds.png`` and converted to the panoptic json + PNGs
by cityscapesscripts' own ``createPanopticImgs``, exactly as ``pdl prepare`` does.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import cv2
import numpy as np

THING_LABELS = (24, 25, 26, 27, 28, 31, 32, 33)  # person .. bicycle
STUFF_LABELS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23)
EVALUATED = set(THING_LABELS) | set(STUFF_LABELS)
CITIES = ("aachen", "bochum")


def _ellipse(mask_shape, center, axes):
    mask = np.zeros(mask_shape, np.uint8)
    cv2.ellipse(mask, (int(center[1]), int(center[0])), (int(axes[1]), int(axes[0])), 0, 0, 360, 1, -1)
    return mask.astype(bool)


def make_instance_map(
    rng: np.random.Generator, height: int, width: int, num_instances=(4, 12)
) -> np.ndarray:
    """A ``[H, W]`` int32 Cityscapes instanceIds map: stuff, void, crowd, occluding instances.

    ``num_instances``: (low, high) bounds of the number of thing instances drawn (high exclusive).
    """
    inst = np.full((height, width), 23, np.int32)  # sky
    horizon = int(height * rng.uniform(0.3, 0.45))
    inst[horizon:, :] = 11  # building
    road_top = int(height * rng.uniform(0.55, 0.7))
    inst[road_top:, :] = 7
    inst[road_top : road_top + max(2, height // 16), : width // 3] = 8  # sidewalk
    for _ in range(rng.integers(1, 4)):  # vegetation / terrain / pole blobs
        label = int(rng.choice([21, 22, 17, 20]))
        y0, x0 = rng.integers(0, height - 4), rng.integers(0, width - 4)
        inst[y0 : y0 + rng.integers(3, height // 3), x0 : x0 + rng.integers(3, width // 4)] = label
    inst[height - max(2, height // 12) :, :] = 1  # ego vehicle: void
    y0, x0 = rng.integers(0, height // 2), rng.integers(0, width - 8)
    inst[y0 : y0 + height // 10 + 1, x0 : x0 + width // 12 + 1] = 4  # "static": void
    counters = {}
    for _ in range(int(rng.integers(*num_instances))):
        label = int(rng.choice(THING_LABELS, p=[0.3, 0.05, 0.35, 0.05, 0.05, 0.05, 0.05, 0.1]))
        counters[label] = counters.get(label, 0) + 1
        small = rng.random() < 0.2
        ay = rng.integers(2, 5) if small else rng.integers(height // 12 + 2, height // 4 + 3)
        ax = rng.integers(2, 5) if small else rng.integers(width // 24 + 2, width // 7 + 3)
        cy, cx = rng.integers(horizon, height), rng.integers(0, width)
        inst[_ellipse(inst.shape, (cy, cx), (ay, ax))] = label * 1000 + counters[label]
    if rng.random() < 0.7:  # a crowd region (car group or person group)
        label = int(rng.choice([24, 26]))
        y0, x0 = rng.integers(horizon, height - 6), rng.integers(0, width - 12)
        inst[y0 : y0 + height // 8 + 2, x0 : x0 + width // 8 + 2] = label
    if rng.random() < 0.3:  # a caravan: a thing label that is not evaluated (void for AP)
        y0, x0 = rng.integers(horizon, height - 6), rng.integers(0, width - 12)
        inst[y0 : y0 + height // 10 + 2, x0 : x0 + width // 10 + 2] = 29001
    return inst


def label_map_of(inst: np.ndarray) -> np.ndarray:
    return np.where(inst < 1000, inst, inst // 1000).astype(np.uint8)


def write_ground_truth(
    root: Path, split: str, num_images: int, height: int, width: int, seed: int, num_instances=(4, 12)
):
    """Write gtFine/{split} instance and label ids and run cityscapesscripts' createPanopticImgs."""
    from cityscapesscripts.preparation.createPanopticImgs import convert2panoptic

    rng = np.random.default_rng(seed)
    root = Path(root)
    image_ids = []
    for i in range(num_images):
        city = CITIES[i % len(CITIES)]
        image_id = f"{city}_{i:06d}_000019"
        folder = root / "gtFine" / split / city
        folder.mkdir(parents=True, exist_ok=True)
        inst = make_instance_map(rng, height, width, num_instances)
        cv2.imwrite(str(folder / f"{image_id}_gtFine_instanceIds.png"), inst.astype(np.uint16))
        cv2.imwrite(str(folder / f"{image_id}_gtFine_labelIds.png"), label_map_of(inst))
        image_dir = root / "leftImg8bit" / split / city
        image_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(
            str(image_dir / f"{image_id}_leftImg8bit.png"),
            rng.integers(0, 255, (height, width, 3), dtype=np.uint8),
        )
        image_ids.append(image_id)
    with contextlib.redirect_stdout(io.StringIO()):
        convert2panoptic(str(root / "gtFine"), str(root / "gtFine"), False, [split])
    return image_ids


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    return np.roll(np.roll(mask, dy, axis=0), dx, axis=1)


def make_prediction_map(inst: np.ndarray, rng: np.random.Generator, perturb: bool) -> np.ndarray:
    """A predicted instance map (same encoding as instanceIds) made from the ground truth.

    Perturbed: dropped, merged, relabelled and shifted instances, a missing and an invented stuff
    class, false positives on void and on crowd regions, scattered void pixels.
    """
    pred = inst.copy()
    height, width = inst.shape
    # Crowd regions become one predicted instance of their class; caravans become cars.
    for label in THING_LABELS:
        pred[inst == label] = label * 1000 + 900
    pred[inst == 29001] = 26 * 1000 + 901
    # Void labels stay void in a prediction (id 0 = no segment).
    pred[(pred < 1000) & ~np.isin(pred, list(EVALUATED))] = 0
    if not perturb:
        return pred
    instances = [v for v in np.unique(inst) if v >= 1000 and v // 1000 in THING_LABELS]
    for value in instances:
        mask = pred == value
        if not mask.any():
            continue
        action = rng.random()
        if action < 0.12:  # dropped
            pred[mask] = 7 if rng.random() < 0.5 else 0
        elif action < 0.24:  # relabelled
            other = int(rng.choice([l for l in THING_LABELS if l != value // 1000]))
            pred[mask] = other * 1000 + 500 + int(value % 1000)
        elif action < 0.45:  # shifted
            dy, dx = rng.integers(-4, 5, size=2)
            pred[mask] = 7
            pred[_shift(mask, int(dy), int(dx))] = value
        elif action < 0.55:  # merged into another instance of its class
            same = [v for v in instances if v != value and v // 1000 == value // 1000]
            if same:
                pred[mask] = same[0]
    if rng.random() < 0.5:  # a stuff class missing
        pred[pred == 11] = 21
    if rng.random() < 0.3:  # a stuff class that is not in the ground truth
        pred[: height // 6, : width // 5] = 22
    for k in range(int(rng.integers(0, 3))):  # false positives, some lying on void
        label = int(rng.choice(THING_LABELS))
        cy = int(rng.integers(height - height // 6, height)) if rng.random() < 0.5 else int(rng.integers(0, height))
        cx = int(rng.integers(0, width))
        pred[_ellipse(inst.shape, (cy, cx), (height // 10 + 1, width // 16 + 1))] = label * 1000 + 700 + k
    scatter = rng.random(inst.shape) < 0.02
    pred[scatter] = 0
    return pred


def write_predictions(root: Path, split: str, out: Path, seed: int, perturb: bool = True, semantic_noise=0.03):
    """Predictions (docs/formats.md) of every ground-truth image, in ``<city>/`` sub-folders."""
    rng = np.random.default_rng(seed)
    root, out = Path(root), Path(out)
    gt_json = json.loads((root / "gtFine" / f"cityscapes_panoptic_{split}.json").read_text())
    annotations = []
    for gt_ann in gt_json["annotations"]:
        image_id = gt_ann["image_id"]
        city = image_id.split("_")[0]
        inst = cv2.imread(
            str(root / "gtFine" / split / city / f"{image_id}_gtFine_instanceIds.png"), cv2.IMREAD_UNCHANGED
        ).astype(np.int32)
        pred = make_prediction_map(inst, rng, perturb)
        segments = []
        for value in np.unique(pred):
            if value == 0:
                continue
            category = int(value) if value < 1000 else int(value) // 1000
            mask = pred == value
            ys, xs = np.nonzero(mask)
            segment = {
                "id": int(value),
                "category_id": category,
                "iscrowd": 0,
                "area": int(mask.sum()),
                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)],
            }
            if category in THING_LABELS:
                objectness = float(rng.uniform(0.1, 1.0))
                class_score = float(rng.uniform(0.3, 1.0))
                segment.update(objectness=objectness, class_score=class_score, score=objectness * class_score)
            segments.append(segment)
        rgb = np.stack([pred % 256, (pred // 256) % 256, pred // 65536], axis=-1).astype(np.uint8)
        file_name = f"{city}/{image_id}.png"
        (out / "panoptic" / city).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "panoptic" / file_name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        semantic = label_map_of(pred)
        noise = rng.random(pred.shape) < semantic_noise
        semantic[noise] = rng.choice([0, 4, 7, 8, 11, 21, 22, 23, 24, 26, 33], size=int(noise.sum()))
        (out / "semantic" / city).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "semantic" / file_name), semantic)
        annotations.append({"image_id": image_id, "file_name": file_name, "segments_info": segments})
    (out / "panoptic.json").write_text(json.dumps({"annotations": annotations}))
    return out


# ------------------------------------------------------------------------------ official evaluators
def official_panoptic(root: Path, split: str, pred_dir: Path, work: Path) -> dict:
    from cityscapesscripts.evaluation.evalPanopticSemanticLabeling import evaluatePanoptic

    with contextlib.redirect_stdout(io.StringIO()):
        return evaluatePanoptic(
            str(root / "gtFine" / f"cityscapes_panoptic_{split}.json"),
            str(root / "gtFine" / f"cityscapes_panoptic_{split}"),
            str(pred_dir / "panoptic.json"),
            str(pred_dir / "panoptic"),
            str(work / "resultPanopticSemanticLabeling.json"),
        )


def official_pixel(root: Path, split: str, pred_dir: Path) -> dict:
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as pixel

    gt_files = sorted((root / "gtFine" / split).glob("*/*_gtFine_labelIds.png"))
    pred_files = []
    for gt in gt_files:
        image_id = gt.name[: -len("_gtFine_labelIds.png")]
        pred_files.append(str(pred_dir / "semantic" / image_id.split("_")[0] / f"{image_id}.png"))
    pixel.args.quiet = True
    pixel.args.JSONOutput = False
    with contextlib.redirect_stdout(io.StringIO()):
        return pixel.evaluateImgLists(pred_files, [str(g) for g in gt_files], pixel.args)


def official_instance(root: Path, split: str, results_dir: Path, work: Path) -> dict:
    """Run evalInstanceLevelSemanticLabeling with its cache and matches.json inside ``work``."""
    from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as instance

    gt_files = sorted((root / "gtFine" / split).glob("*/*_gtFine_instanceIds.png"))
    pred_files = []
    for gt in gt_files:
        image_id = gt.name[: -len("_gtFine_instanceIds.png")]
        pred_files.append(str(results_dir / image_id.split("_")[0] / f"{image_id}_pred.txt"))
    args = instance.args
    args.gtInstancesFile = str(work / "gtInstances.json")
    args.predictionPath = os.path.abspath(str(results_dir))
    args.predictionWalk = None
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    def write_json(data, file_name):
        # cityscapesscripts' writer cannot serialise the numpy integers that numpy 2 counts return.
        def plain(value):
            return value.item() if isinstance(value, np.generic) else value.__dict__

        with open(file_name, "w") as handle:
            json.dump(data, handle, default=plain, sort_keys=True, indent=4)

    previous_cwd, previous_writer = os.getcwd(), instance.writeDict2JSON
    os.chdir(work)  # the tool writes matches.json to the working directory
    instance.writeDict2JSON = write_json
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return instance.evaluateImgLists(pred_files, [str(g) for g in gt_files], args)
    finally:
        instance.writeDict2JSON = previous_writer
        os.chdir(previous_cwd)
