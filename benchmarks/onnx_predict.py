"""Prediction speed through onnxruntime against PyTorch on this machine's CPU.

For each model (the toy config, and detectron2's R52-DC5 Cityscapes architecture at 512x1024) the
script builds the network with random weights (speed does not depend on them), exports it with
``pdlkit.export.export_model``, and times ``Predictor`` on the same image through PyTorch and through
onnxruntime (``pdl predict --weights model.onnx``): median seconds per image over the repeats, the
network's share, and the ratio PyTorch / onnxruntime (> 1: onnxruntime is faster).  Both runtimes
get the same number of threads.

    python benchmarks/onnx_predict.py [--threads 1] [--repeats 5] [--skip-r52]

On a shared 2-core machine use one thread: with other processes running, two threads per runtime
oversubscribe the cores and PyTorch's timings degrade far more than onnxruntime's (seen here:
toy 2.7 s vs 0.16 s per image for PyTorch at load 11 with 2 threads vs 1), which inflates the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _time_predictor(predictor, image: np.ndarray, repeats: int):
    predictor(image)  # warm-up (allocations, onnxruntime's first-run graph work)
    totals, networks = [], []
    for _ in range(repeats):
        predictor.timings = {"network": 0.0, "postprocess": 0.0}
        start = time.perf_counter()
        predictor(image)
        totals.append(time.perf_counter() - start)
        networks.append(predictor.timings["network"])
    return statistics.median(totals), statistics.median(networks)


def bench(name: str, config: str, size, threads: int, repeats: int, folder: Path) -> dict:
    from pdlkit.config import load_config
    from pdlkit.data.spec import cityscapes_spec
    from pdlkit.export import export_model
    from pdlkit.inference import Predictor
    from pdlkit.inference.onnx_runtime import OnnxNetwork
    from pdlkit.modeling import build_model

    cfg = load_config(REPO / "configs" / config)
    cfg.model.pretrained = "none"
    cfg.model.norm = "BN"
    spec = cityscapes_spec()
    torch.manual_seed(0)
    model = build_model(cfg.model, spec.num_classes).eval()
    start = time.perf_counter()
    onnx_path = export_model(model, cfg, spec, folder / f"{name}.onnx")
    export_seconds = time.perf_counter() - start

    image = np.random.default_rng(0).integers(0, 256, size=(size[0], size[1], 3), dtype=np.uint8)
    torch_predictor = Predictor.from_model(model, cfg, spec, "cpu")
    network = OnnxNetwork(onnx_path, threads=threads)
    onnx_predictor = Predictor.from_model(network, network.config, network.spec, "cpu")
    torch_total, torch_net = _time_predictor(torch_predictor, image, repeats)
    onnx_total, onnx_net = _time_predictor(onnx_predictor, image, repeats)
    return {
        "name": name,
        "size": f"{size[0]}x{size[1]}",
        "export_s": export_seconds,
        "torch_s": torch_total,
        "torch_net_s": torch_net,
        "onnx_s": onnx_total,
        "onnx_net_s": onnx_net,
        "ratio": torch_total / onnx_total,
        "net_ratio": torch_net / onnx_net,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-r52", action="store_true", help="only the toy model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cases = [("toy", "toy.yaml", (128, 256))]
    if not args.skip_r52:
        cases.append(("R52-DC5 (d2)", "cityscapes_r52_dc5_d2.yaml", (512, 1024)))
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, config, size in cases:
            rows.append(bench(name, config, size, args.threads, args.repeats, Path(folder)))

    import onnxruntime

    print(f"pdl predict per image, CPU, {args.threads} threads for both runtimes, median of {args.repeats} "
          f"(torch {torch.__version__}, onnxruntime {onnxruntime.__version__})")
    print("| model | input | PyTorch s/img (network) | onnxruntime s/img (network) | PyTorch / onnxruntime |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['name']} | {row['size']} | {row['torch_s']:.3f} ({row['torch_net_s']:.3f}) | "
              f"{row['onnx_s']:.3f} ({row['onnx_net_s']:.3f}) | {row['ratio']:.2f}x (network {row['net_ratio']:.2f}x) |")
    for row in rows:
        print(f"export of {row['name']}: {row['export_s']:.1f} s")


if __name__ == "__main__":
    main()
