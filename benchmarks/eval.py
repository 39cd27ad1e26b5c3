"""Time pdlkit's PQ + mIoU (and AP) against cityscapesscripts' evaluators on the same files.

Builds hand-made Cityscapes-style ground truth (tests/evaluation/scenes.py: stuff, void, crowd,
occluding instances, converted by cityscapesscripts' createPanopticImgs) and perturbed predictions
at two sizes, checks that the numbers agree, and prints the best wall time of each side over
interleaved repeats and the ratio (and the ratio of the medians).  The official side is ``evalPanopticSemanticLabeling`` (its own multiprocessing pool over all
cores) + ``evalPixelLevelSemanticLabeling`` (its defaults, which include the instance-level nIoU);
pdlkit's side is ``evaluate_predictions(compute_ap=False)``.  When hotcoco (a Rust evaluator,
``pip install hotcoco``; PQ only) is installed it is timed on the same files too, after its
inputs are given the integer image ids it requires (not timed).  AP is timed separately: pdl
eval's AP against ``pdl convert`` + ``evalInstanceLevelSemanticLabeling``.  Last, the PNG decoders
installed (OpenCV, Pillow, imagecodecs' libpng and libspng, pdlkit's libdeflate + native unfilter
path) are timed on the largest panoptic PNGs, one core each.

    python benchmarks/eval.py                       # 50 images of 128x256 (4-11 instances),
                                                    # 4 of 1024x2048 (25-35 instances)
    python benchmarks/eval.py --small 20 --large 0 --repeats 1
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "evaluation"))

import scenes  # noqa: E402

from pdlkit.evaluation import convert_predictions, evaluate_predictions  # noqa: E402


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) plus its finished, reaped child processes."""
    import multiprocessing
    import resource

    while multiprocessing.active_children():  # reaps the official pool's exited workers
        time.sleep(0.005)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _interleaved_times(functions, repeats: int):
    """Run the functions in turn ``repeats`` times (so background load hits all of them alike).

    Returns per function (best wall time, median wall time, median CPU time, last result).  CPU
    time (this process's threads + child processes) is far less sensitive than wall time to other
    programs sharing the cores.
    """
    wall = [[] for _ in functions]
    cpu = [[] for _ in functions]
    results = [None] * len(functions)
    for _ in range(repeats):
        for k, function in enumerate(functions):
            cpu_start, start = _cpu_seconds(), time.perf_counter()
            results[k] = function()
            wall[k].append(time.perf_counter() - start)
            cpu[k].append(_cpu_seconds() - cpu_start)
    return [
        (min(w), statistics.median(w), statistics.median(c), r) for w, c, r in zip(wall, cpu, results)
    ]


def _hotcoco_pq(root: Path, predictions: Path, work: Path):
    """A function that runs hotcoco's PanopticEval on the files (None when hotcoco is absent)."""
    try:
        from hotcoco import panoptic
    except ImportError:
        return None
    import contextlib
    import io
    import json

    gt = json.loads((root / "gtFine" / "cityscapes_panoptic_val.json").read_text())
    number = {image["id"]: k + 1 for k, image in enumerate(gt["images"])}  # hotcoco wants integers
    for image in gt["images"]:
        image["id"] = number[image["id"]]
    for annotation in gt["annotations"]:
        annotation["image_id"] = number[annotation["image_id"]]
    pred = json.loads((predictions / "panoptic.json").read_text())
    for annotation in pred["annotations"]:
        annotation["image_id"] = number[annotation["image_id"]]
    (work / "hotcoco_gt.json").write_text(json.dumps(gt))
    (work / "hotcoco_pred.json").write_text(json.dumps(pred))

    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator = panoptic.PanopticEval(str(work / "hotcoco_gt.json"), str(work / "hotcoco_pred.json"),
                                              gt_folder=str(root / "gtFine" / "cityscapes_panoptic_val"),
                                              pred_folder=str(predictions / "panoptic"))
            evaluator.run()
        return evaluator.results()

    return run


def _decoders():
    """{name: function(path) -> decoded pixels} of the PNG decoders installed."""
    import cv2
    import numpy as np
    from PIL import Image

    from pdlkit.evaluation import _io

    decoders = {"opencv (libpng)": lambda path: cv2.imread(str(path), cv2.IMREAD_UNCHANGED),
                "pillow": lambda path: np.asarray(Image.open(path))}
    try:
        import imagecodecs

        decoders["imagecodecs png (libpng)"] = lambda path: imagecodecs.png_decode(path.read_bytes())
        decoders["imagecodecs spng (libspng)"] = lambda path: imagecodecs.spng_decode(path.read_bytes())
    except ImportError:
        pass
    if _io._FAST_DECODE is not None:
        decoders["pdlkit (libdeflate + native unfilter, to ids)"] = _io.read_panoptic_png
    return decoders


def time_decoders(paths, repeats: int):
    """[(decoder, best ms per file, median ms per file)] over ``paths``, one thread (CPU time)."""
    rows = []
    for name, decode in _decoders().items():
        per_file = []
        for _ in range(repeats):
            start = time.process_time()
            for path in paths:
                decode(path)
            per_file.append(1000 * (time.process_time() - start) / len(paths))
        rows.append((name, min(per_file), statistics.median(per_file)))
    return rows


def run_case(name: str, num_images: int, height: int, width: int, repeats: int, work: Path, with_ap: bool,
             num_instances=(4, 12)):
    root = work / f"{name}_gt"
    scenes.write_ground_truth(root, "val", num_images, height, width, seed=0, num_instances=num_instances)
    predictions = scenes.write_predictions(root, "val", work / f"{name}_pred", seed=1, perturb=True)
    scratch = work / f"{name}_scratch"
    scratch.mkdir()

    def official_pq_miou():
        return (
            scenes.official_panoptic(root, "val", predictions, scratch),
            scenes.official_pixel(root, "val", predictions),
        )

    def ours_pq_miou():
        return evaluate_predictions(root, "val", predictions, compute_ap=False, progress=False)

    ours_pq_miou()  # first call pays the imports (OpenCV, tqdm); not part of the comparison
    hotcoco = _hotcoco_pq(root, predictions, scratch)
    functions = [official_pq_miou, ours_pq_miou] + ([hotcoco] if hotcoco else [])
    timings = _interleaved_times(functions, repeats)
    official_best, official_median, official_cpu, (panoptic, pixel) = timings[0]
    ours_best, ours_median, ours_cpu, ours = timings[1]
    assert abs(ours["PQ"] - 100 * panoptic["All"]["pq"]) < 1e-6, "PQ differs from the official evaluator"
    assert abs(ours["mIoU"] - 100 * pixel["averageScoreClasses"]) < 1e-6, "mIoU differs"
    row = {
        "case": f"{num_images} x {height}x{width}",
        "official_s": official_best,
        "pdlkit_s": ours_best,
        "ratio": official_best / ours_best,
        "ratio_median": official_median / ours_median,
        "official_cpu_s": official_cpu,
        "pdlkit_cpu_s": ours_cpu,
        "PQ": ours["PQ"],
        "mIoU": ours["mIoU"],
        "hotcoco_s": None,
    }
    if hotcoco:
        hotcoco_best, hotcoco_median, hotcoco_cpu, hotcoco_result = timings[2]
        assert abs(ours["PQ"] - 100 * hotcoco_result["All"]["pq"]) < 1e-6, "PQ differs from hotcoco"
        row.update(hotcoco_s=hotcoco_best, hotcoco_cpu_s=hotcoco_cpu, hotcoco_ratio_median=hotcoco_median / ours_median)
    if num_images and height * width >= 1 << 20:
        row["decoders"] = time_decoders(sorted((root / "gtFine" / "cityscapes_panoptic_val").glob("*.png"))
                                        + sorted((predictions / "panoptic").rglob("*.png")), repeats)
    if with_ap:
        def official_ap():
            results = work / f"{name}_instances"
            convert_predictions(predictions, results)
            cache = scratch / "gtInstances.json"
            if cache.exists():
                cache.unlink()  # a fresh ground-truth read, as on a first run
            return scenes.official_instance(root, "val", results, scratch)

        def ours_all():
            return evaluate_predictions(root, "val", predictions, compute_ap=True, progress=False)

        (official_ap_time, _, official_ap_cpu, instance), (ours_all_time, _, ours_all_cpu, ours_full) = _interleaved_times(
            [official_ap, ours_all], repeats
        )
        assert abs(ours_full["AP"] - 100 * instance["averages"]["allAp"]) < 1e-4, "AP differs"
        row.update(official_ap_s=official_ap_time, pdlkit_all_s=ours_all_time, AP=ours_full["AP"],
                   official_ap_cpu_s=official_ap_cpu, pdlkit_all_cpu_s=ours_all_cpu)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=50, help="number of small images")
    parser.add_argument("--small-size", default="128x256", help="HxW of the small images")
    parser.add_argument("--large", type=int, default=4, help="number of 1024x2048 images")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-ap", action="store_true", help="skip the AP timing")
    args = parser.parse_args(argv)
    small_h, small_w = (int(v) for v in args.small_size.split("x"))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cores: {cores}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; "
          f"best of {args.repeats} interleaved runs (ratio of medians in brackets); pdlkit threads: {cores}, official pool: {cores} processes")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdl_bench_eval_") as temp:
        work = Path(temp)
        if args.small:
            rows.append(run_case("small", args.small, small_h, small_w, args.repeats, work, not args.no_ap))
        if args.large:
            # Cityscapes-like: 25-35 instances per image (Cityscapes val averages about 20 things).
            rows.append(run_case("large", args.large, 1024, 2048, args.repeats, work, not args.no_ap, (25, 36)))
    print()
    print("PQ + mIoU: official = evalPanopticSemanticLabeling + evalPixelLevelSemanticLabeling")
    print(f"{'images':<16}{'wall s: official':>17}{'pdlkit':>8}{'ratio':>7}{'(medians)':>10}"
          f"{'CPU s: official':>17}{'pdlkit':>8}{'ratio':>7}")
    for row in rows:
        print(f"{row['case']:<16}{row['official_s']:>17.3f}{row['pdlkit_s']:>8.3f}{row['ratio']:>6.1f}x"
              f"{row['ratio_median']:>9.1f}x{row['official_cpu_s']:>17.3f}{row['pdlkit_cpu_s']:>8.3f}"
              f"{row['official_cpu_s'] / row['pdlkit_cpu_s']:>6.1f}x")
    if any(row["hotcoco_s"] is not None for row in rows):
        print("PQ only: hotcoco's PanopticEval (its own threads) against pdlkit's PQ + mIoU above")
        print(f"{'images':<16}{'wall s: hotcoco':>17}{'pdlkit':>8}{'hotcoco/pdlkit':>16}{'(medians)':>10}"
              f"{'CPU s: hotcoco':>16}{'pdlkit':>8}{'hotcoco/pdlkit':>16}")
        for row in rows:
            print(f"{row['case']:<16}{row['hotcoco_s']:>17.3f}{row['pdlkit_s']:>8.3f}"
                  f"{row['hotcoco_s'] / row['pdlkit_s']:>15.2f}x{row['hotcoco_ratio_median']:>9.2f}x"
                  f"{row['hotcoco_cpu_s']:>16.3f}{row['pdlkit_cpu_s']:>8.3f}"
                  f"{row['hotcoco_cpu_s'] / row['pdlkit_cpu_s']:>15.2f}x")
    else:
        print("(hotcoco not installed: pip install hotcoco to time it too)")
    if not args.no_ap:
        print("AP: official = pdl convert + evalInstanceLevelSemanticLabeling; pdlkit = PQ + mIoU + AP")
        print(f"{'images':<16}{'wall s: official':>17}{'pdlkit':>8}{'ratio':>7}"
              f"{'CPU s: official':>17}{'pdlkit':>8}{'ratio':>7}")
        for row in rows:
            print(f"{row['case']:<16}{row['official_ap_s']:>17.3f}{row['pdlkit_all_s']:>8.3f}"
                  f"{row['official_ap_s'] / row['pdlkit_all_s']:>6.1f}x{row['official_ap_cpu_s']:>17.3f}"
                  f"{row['pdlkit_all_cpu_s']:>8.3f}{row['official_ap_cpu_s'] / row['pdlkit_all_cpu_s']:>6.1f}x")
    for row in rows:
        if row.get("decoders"):
            print(f"PNG decoding, {row['case']} panoptic PNGs (ground truth and predictions), one core:")
            for name, best, median in row["decoders"]:
                print(f"  {name:<46}{best:>7.2f} ms/file (median {median:.2f})")
    print("(numbers checked equal: PQ and mIoU to 1e-6, AP to 1e-4)")
    return rows


if __name__ == "__main__":
    main()
