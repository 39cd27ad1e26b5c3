"""Native ops against their references on realistic synthetic scenes.

Builds Cityscapes-like scenes (19 classes, 25-35 thing instances of mixed sizes that occlude each
other, noisy center heatmap and offsets), then times, with the median and the minimum of repeats
(on a shared machine the minimum is the better estimate of what an op costs):

* ``find_instance_centers``: native vs the pure-torch reference;
* ``panoptic_merge`` from logits and from labels: native vs the pure-torch reference;
* ``encode_targets``: native vs a per-segment numpy target generator written below (per segment
  masks, mean, Gaussian window pasted by max) in the style of the widely used numpy implementation;
* with ``--batch N``: ``panoptic_merge_batched`` over N images (native vs N single reference calls).

At 1024x2048 on the CPU it also prints the targets: merge from logits <= 15 ms, encode <= 5 ms.

Usage::

    python benchmarks/ops.py [--sizes 512x1024,1024x2048] [--threads 2] [--device cpu|cuda]
                             [--repeats 5] [--reference-repeats 3] [--ops centers,merge,encode]
                             [--batch 8]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pdlkit import ops  # noqa: E402

NUM_CLASSES = 19
THING_IDS = list(range(11, 19))  # Cityscapes train ids: person .. bicycle
STUFF_BANDS = [10, 2, 8, 0, 1]  # sky, building, vegetation, road, sidewalk, top to bottom
SIGMA = 8.0


def make_scene(height: int, width: int, seed: int) -> dict:
    """One synthetic scene with its ground truth and network-like outputs.

    Returns ``panoptic`` [H, W] int32 segment ids, ``segments`` [S, 4] int64 (id, train id, is_thing,
    iscrowd), ``labels`` [H, W] int64, ``logits`` [19, H, W] f32, ``heatmap`` [1, H, W] f32 and
    ``offsets`` [2, H, W] f32 (y, x).
    """
    rng = np.random.default_rng(seed)
    panoptic = np.zeros((height, width), np.int32)
    segments = []
    # Stuff: horizontal bands with wavy borders, plus a few blocks of other stuff classes.
    cuts = np.sort(rng.uniform(0.1, 0.9, len(STUFF_BANDS) - 1)) * height
    ys = np.arange(height)[:, None]
    xs = np.arange(width)[None, :]
    band = np.zeros((height, width), np.int64)
    for i, cut in enumerate(cuts):
        wave = cut + 0.03 * height * np.sin(xs / width * rng.uniform(2, 8) + rng.uniform(0, 6))
        band += ys >= wave
    next_id = 1
    for i, train_id in enumerate(STUFF_BANDS):
        panoptic[band == i] = next_id
        segments.append((next_id, train_id, 0, 0))
        next_id += 1
    for train_id in rng.choice([3, 4, 5, 6, 7, 9], size=4, replace=False):
        y0, x0 = rng.integers(0, height // 2), rng.integers(0, width - width // 8)
        panoptic[y0:y0 + height // 6, x0:x0 + width // 10] = next_id
        segments.append((next_id, int(train_id), 0, 0))
        next_id += 1
    # Things: ellipses of log-uniform size, painted in order, so later ones occlude earlier ones.
    for _ in range(int(rng.integers(25, 36))):
        radius_y = float(np.exp(rng.uniform(np.log(6), np.log(height / 6))))
        radius_x = radius_y * rng.uniform(0.5, 2.0)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        inside = ((ys - cy) / radius_y) ** 2 + ((xs - cx) / radius_x) ** 2 <= 1.0
        if not inside.any():
            continue
        panoptic[inside] = next_id
        segments.append((next_id, int(rng.choice(THING_IDS)), 1, int(rng.random() < 0.05)))
        next_id += 1
    segments_array = np.array(segments, np.int64)
    label_of_id = np.zeros(next_id, np.int64)
    label_of_id[segments_array[:, 0]] = segments_array[:, 1]
    labels = label_of_id[panoptic]

    # Network-like outputs: noisy logits peaked at the label, a Gaussian heatmap at each instance's
    # mass center plus noise, offsets pointing at the mass center plus noise.
    generator = torch.Generator().manual_seed(seed)
    labels_t = torch.from_numpy(labels)
    logits = torch.randn((NUM_CLASSES, height, width), generator=generator)
    logits.scatter_add_(0, labels_t[None], torch.full((1, height, width), 4.0))
    heatmap = torch.rand((height, width), generator=generator) * 0.05
    offsets = torch.randn((2, height, width), generator=generator) * 0.5
    grid_y = torch.arange(height, dtype=torch.float32)[:, None]
    grid_x = torch.arange(width, dtype=torch.float32)[None, :]
    for seg_id, _, is_thing, _ in segments:
        if not is_thing:
            continue
        mask = torch.from_numpy(panoptic == seg_id)
        if not bool(mask.any()):
            continue
        points = mask.nonzero().to(torch.float32)
        my, mx = points.mean(0).tolist()
        y0, y1 = max(0, int(my - 3 * SIGMA)), min(height, int(my + 3 * SIGMA) + 1)
        x0, x1 = max(0, int(mx - 3 * SIGMA)), min(width, int(mx + 3 * SIGMA) + 1)
        window = torch.exp(-((grid_y[y0:y1] - my) ** 2 + (grid_x[:, x0:x1] - mx) ** 2) / (2 * SIGMA**2))
        heatmap[y0:y1, x0:x1] = torch.maximum(heatmap[y0:y1, x0:x1], window)
        offsets[0][mask] += (my - grid_y.expand(height, width))[mask]
        offsets[1][mask] += (mx - grid_x.expand(height, width))[mask]
    return {
        "panoptic": torch.from_numpy(panoptic),
        "segments": torch.from_numpy(segments_array),
        "labels": labels_t,
        "logits": logits,
        "heatmap": heatmap[None],
        "offsets": offsets,
    }


def encode_targets_numpy(panoptic: np.ndarray, segments: np.ndarray, sigma: float = SIGMA,
                         ignore_label: int = 255, small_instance_area: int = 4096,
                         small_instance_weight: float = 3.0) -> dict:
    """Per-segment numpy target generator (the baseline that ``encode_targets`` is timed against)."""
    height, width = panoptic.shape
    semantic = np.full((height, width), ignore_label, np.uint8)
    center = np.zeros((height, width), np.float32)
    offset = np.zeros((2, height, width), np.float32)
    semantic_weights = np.ones((height, width), np.float32)
    center_weights = np.zeros((height, width), np.float32)
    offset_weights = np.zeros((height, width), np.float32)
    y_grid, x_grid = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    size = int(6 * sigma + 3)
    axis = np.arange(size, dtype=np.float32)
    middle = 3 * sigma + 1
    gaussian = np.exp(-((axis[None, :] - middle) ** 2 + (axis[:, None] - middle) ** 2) / (2 * sigma**2))
    center_points = []
    for seg_id, train_id, is_thing, iscrowd in segments.tolist():
        mask = panoptic == seg_id
        semantic[mask] = train_id
        if not iscrowd:
            center_weights[mask] = 1
            if is_thing:
                offset_weights[mask] = 1
        if not is_thing:
            continue
        ys, xs = np.nonzero(mask)
        if len(ys) == 0:
            continue
        if len(ys) < small_instance_area:
            semantic_weights[mask] = small_instance_weight
        cy, cx = ys.mean(), xs.mean()
        center_points.append((cy, cx))
        y, x = int(round(cy)), int(round(cx))
        top, left = int(np.round(y - 3 * sigma - 1)), int(np.round(x - 3 * sigma - 1))
        bottom, right = int(np.round(y + 3 * sigma + 2)), int(np.round(x + 3 * sigma + 2))
        if top >= height or left >= width or bottom < 0 or right < 0:
            continue
        c, d = max(0, -left), min(right, width) - left
        a, b = max(0, -top), min(bottom, height) - top
        cc, dd = max(0, left), min(right, width)
        aa, bb = max(0, top), min(bottom, height)
        center[aa:bb, cc:dd] = np.maximum(center[aa:bb, cc:dd], gaussian[a:b, c:d])
        offset[0][mask] = cy - y_grid[mask]
        offset[1][mask] = cx - x_grid[mask]
    return {"semantic": semantic, "center": center, "center_points": center_points, "offset": offset,
            "semantic_weights": semantic_weights, "center_weights": center_weights,
            "offset_weights": offset_weights}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


TARGETS_MS = {"panoptic_merge (logits)": 15.0, "encode_targets": 5.0}  # at 1024x2048, CPU, 2 threads


def median_ms(fn, repeats: int, device: str) -> float:
    return timed(fn, repeats, device)[0]


def timed(fn, repeats: int, device: str):
    """Median wall-clock ms, minimum wall-clock ms and median process CPU ms (all threads) of ``fn``.

    On a shared machine the CPU time tells what the op costs when the wall clock is inflated by
    other processes; on an idle one, wall ~ CPU / threads for well-parallelised code.
    """
    fn()  # warm-up (allocations, lazy init)
    _sync(device)
    walls, cpus = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        _sync(device)
        walls.append((time.perf_counter() - start) * 1000.0)
        cpus.append((time.process_time() - start_cpu) * 1000.0)
    return statistics.median(walls), min(walls), statistics.median(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="512x1024,1024x2048", help="comma-separated HxW list")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (CPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=7, help="repeats of the native ops")
    parser.add_argument("--reference-repeats", type=int, default=3, help="repeats of the slow baselines")
    parser.add_argument("--ops", default="centers,merge,encode", help="subset of centers,merge,encode")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=0, help="also time panoptic_merge_batched on N images")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = set(args.ops.split(","))
    if not ops.native_available():
        print("pdlkit._C is not built: nothing native to time", file=sys.stderr)
        return 1
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("--device cuda given, but no CUDA device is available", file=sys.stderr)
        return 1
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",") if s]
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}; "
          f"median of {args.repeats} (native) / {args.reference_repeats} (baselines) runs; "
          f"load average {load_average()} (on a busy machine the wall clock is inflated)")
    rows = []
    for height, width in sizes:
        scene = make_scene(height, width, args.seed)
        on = {k: v.to(device) for k, v in scene.items()}
        count = int(scene["segments"][:, 2].sum())
        size = f"{height}x{width}"
        if "centers" in wanted:
            native = timed(lambda: ops.find_instance_centers(on["heatmap"], backend="native"),
                           args.repeats, device)
            reference = median_ms(lambda: ops.find_instance_centers_reference(on["heatmap"]),
                                  args.reference_repeats, device)
            rows.append(("find_instance_centers", size, native, "torch reference", reference))
        if "merge" in wanted:
            for source in ("logits", "labels"):
                semantic = on[source]
                native = timed(lambda: ops.panoptic_merge(semantic, on["heatmap"], on["offsets"],
                                                          THING_IDS, backend="native"),
                               args.repeats, device)
                reference = median_ms(lambda: ops.panoptic_merge_reference(semantic, on["heatmap"],
                                                                           on["offsets"], THING_IDS),
                                      args.reference_repeats, device)
                rows.append((f"panoptic_merge ({source})", size, native, "torch reference", reference))
            found = len(ops.panoptic_merge(on["logits"], on["heatmap"], on["offsets"], THING_IDS,
                                           backend="native"))
            print(f"{size}: {count} thing segments in the scene, {found} instances found from logits")
        if args.batch > 0:
            rows.append(time_batched(on, size, args))
        if "encode" in wanted:
            native = timed(lambda: ops.encode_targets(on["panoptic"], on["segments"], sigma=SIGMA,
                                                      backend="native"),
                           args.repeats, device)
            panoptic_np, segments_np = scene["panoptic"].numpy(), scene["segments"].numpy()
            baseline = median_ms(lambda: encode_targets_numpy(panoptic_np, segments_np),
                                 args.reference_repeats, "cpu")
            rows.append(("encode_targets", size, native, "numpy per segment", baseline))
    print()
    cpu_column = "native CPU ms" if device == "cpu" else "host CPU ms"
    header = (f"| {'op':<26} | {'size':>9} | {'native ms':>9} | {'min ms':>8} | {cpu_column:>13} | "
              f"{'baseline':<17} | {'baseline ms':>11} | {'ratio':>7} |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for name, size, (native, fastest, native_cpu), baseline_name, baseline in rows:
        print(f"| {name:<26} | {size:>9} | {native:9.2f} | {fastest:8.2f} | {native_cpu:13.2f} | "
              f"{baseline_name:<17} | {baseline:11.1f} | {baseline / native:6.1f}x |")
    print(f"\nnative ms: median wall clock; min ms: fastest run.  ratio = baseline ms / native ms.  "
          f"{cpu_column}: median process CPU time of one native call, all threads together.")
    print_targets(rows, device, args.threads)
    return 0


def load_average() -> str:
    """The 1-minute load average over the CPU count, or "n/a" where the OS has none."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    except (AttributeError, OSError):
        return "n/a"


def time_batched(on: dict, size: str, args):
    """panoptic_merge_batched over ``args.batch`` copies of the scene's logits."""
    logits = on["logits"][None].expand(args.batch, -1, -1, -1).contiguous()
    heatmaps = on["heatmap"][None].expand(args.batch, -1, -1, -1).contiguous()
    offsets = on["offsets"][None].expand(args.batch, -1, -1, -1).contiguous()
    native = timed(lambda: ops.panoptic_merge_batched(logits, heatmaps, offsets, THING_IDS, backend="native"),
                   args.repeats, args.device)
    reference = median_ms(lambda: ops.panoptic_merge_batched(logits, heatmaps, offsets, THING_IDS,
                                                             backend="reference"),
                          args.reference_repeats, args.device)
    return (f"merge_batched (N={args.batch})", size, native, "torch reference", reference)


def print_targets(rows, device: str, threads: int) -> None:
    """The performance targets at 1024x2048 on the CPU, judged by the fastest run."""
    for name, size, (_, fastest, _), _, _ in rows:
        target = TARGETS_MS.get(name)
        if target is None or size != "1024x2048" or device != "cpu":
            continue
        verdict = "met" if fastest <= target else "NOT met"
        print(f"target {name} at {size} with {threads} threads: <= {target:g} ms, fastest {fastest:.2f} ms: "
              f"{verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
