"""Whole ``pdl predict`` (``predict_paths``: decode thread -> network -> writer threads) against the
bare ``Predictor`` on the same images, and the memory of a run over many tiny images.

- "Predictor": ``predict_batch`` on images already in memory, nothing read or written;
- "pdl predict": the same images as PNG files in a folder, read, predicted and written
  (panoptic / semantic PNGs, per-image JSON, panoptic.json) by ``predict_paths``;
- "many tiny images": ``--many`` 8x8 images through ``predict_paths``: the peak of decoded images
  in flight (bounded by the queues) and the growth of the process's peak resident memory.

Random weights of configs/toy.yaml (speed does not depend on their values).  ``--compare-nice``
adds a "pdl predict" row with the loader and writer threads at the network's own priority (the
default lowers them; see pdlkit.inference.runner).

    python benchmarks/predict_pipeline.py [--threads 2] [--images 8] [--sizes 128x256,1024x2048]
                                          [--write-threads N] [--many 2000] [--compare-nice]
"""
from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def toy_predictor():
    from pdlkit.config import load_config
    from pdlkit.data.spec import cityscapes_spec
    from pdlkit.inference import Predictor
    from pdlkit.modeling import build_model

    cfg = load_config(REPO / "configs" / "toy.yaml")
    cfg.model.pretrained = "none"
    spec = cityscapes_spec()
    torch.manual_seed(0)
    return Predictor.from_model(build_model(cfg.model, spec.num_classes), cfg, spec, "cpu")


def _scenes(count: int, height: int, width: int):
    """Smooth random scenes (PNG sizes like photos', unlike pure noise)."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (count, max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return [cv2.resize(s, (width, height), interpolation=cv2.INTER_CUBIC) for s in small]


def _write_folder(images, folder: Path) -> None:
    import cv2

    folder.mkdir(parents=True)
    for k, image in enumerate(images):
        cv2.imwrite(str(folder / f"img_{k:06d}.png"), image)


def compare(predictor, images, *, write_threads, repeats: int = 2, nice_values=(None,)) -> dict:
    """Best-of-``repeats`` images/s of the bare Predictor and of predict_paths on the same images,
    the latter with each of ``nice_values`` as the loader / writer threads' niceness (None: the
    default), all interleaved in each round so that the machine's changing load falls on all."""
    from pdlkit.inference import predict_paths, runner

    default_nice = runner.BACKGROUND_NICENESS
    predictor(images[0])  # warm-up
    bare, whole = [], {nice: [] for nice in nice_values}
    with tempfile.TemporaryDirectory(prefix="pdl_bench_pipeline_") as tmp:
        _write_folder(images, Path(tmp) / "in")
        for repeat in range(repeats):
            start = time.perf_counter()
            for image in images:
                predictor.predict_batch([image])
            bare.append(len(images) / (time.perf_counter() - start))
            for nice in nice_values:
                runner.BACKGROUND_NICENESS = default_nice if nice is None else nice
                try:
                    summary = predict_paths(predictor, Path(tmp) / "in", Path(tmp) / f"out{repeat}-{nice}",
                                            progress=False, workers=write_threads)
                finally:
                    runner.BACKGROUND_NICENESS = default_nice
                whole[nice].append(summary.images_per_second)
    return {"bare": max(bare), "whole": {nice: max(v) for nice, v in whole.items()},
            "ratio": {nice: max(v) / max(bare) for nice, v in whole.items()}}


def many_tiny(predictor, count: int, *, write_threads: int) -> dict:
    """Peak decoded images in flight and peak-RSS growth over ``count`` 8x8 images."""
    from pdlkit.inference import predict_paths

    with tempfile.TemporaryDirectory(prefix="pdl_bench_many_") as tmp:
        _write_folder(_scenes(count, 8, 8), Path(tmp) / "in")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        summary = predict_paths(predictor, Path(tmp) / "in", Path(tmp) / "out", progress=False,
                                workers=write_threads)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"images": summary.processed, "images_per_s": summary.images_per_second,
            "peak_in_flight": summary.peak_in_flight, "bound": summary.in_flight_limit,
            "rss_growth_mb": (after - before) / 1024}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--sizes", default="128x256,1024x2048")
    parser.add_argument("--write-threads", type=int, default=None, help="default: predict_paths' own")
    parser.add_argument("--compare-nice", action="store_true",
                        help="also run pdl predict with the loader / writer threads at the network's priority")
    parser.add_argument("--many", type=int, default=2000, help="tiny images for the memory row; 0 skips")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    predictor = toy_predictor()
    from pdlkit.inference import runner

    nice_values = (None, 0) if args.compare_nice else (None,)
    print(f"torch threads {torch.get_num_threads()}, writer threads {args.write_threads or 'default'}, toy R18 "
          f"random weights, load average {os.getloadavg()[0]:.1f}")
    print("| size | images | loader/writer niceness | Predictor images/s | pdl predict images/s | "
          "pdl predict / Predictor |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        height, width = (int(v) for v in size.lower().split("x"))
        result = compare(predictor, _scenes(args.images, height, width), write_threads=args.write_threads,
                         nice_values=nice_values)
        for nice in nice_values:
            shown = f"+{runner.BACKGROUND_NICENESS} (default)" if nice is None else f"+{nice}"
            print(f"| {height}x{width} | {args.images} | {shown} | {result['bare']:.2f} | "
                  f"{result['whole'][nice]:.2f} | {100 * result['ratio'][nice]:.0f}% |")
    if args.many:
        row = many_tiny(predictor, args.many, write_threads=args.write_threads)
        print(f"\n{row['images']} images of 8x8: {row['images_per_s']:.0f} images/s, at most "
              f"{row['peak_in_flight']} decoded images in flight (bound {row['bound']}), peak RSS grew "
              f"{row['rss_growth_mb']:.1f} MB")


if __name__ == "__main__":
    main()
