"""Speed of prediction on this machine: images/s and the share of time spent in post-processing.

Two models, random weights (speed does not depend on the values, except through the number of
instances the post-processing sees, which is printed):

- the toy model (configs/toy.yaml) at 128 x 256, through ``Predictor`` and through the whole
  ``predict_paths`` pipeline (reading, network, post-processing, writing the files);
- the Cityscapes ResNet-50 model (configs/cityscapes_r50.yaml) at 1024 x 2048 through ``Predictor``.

"network" is normalisation + padding + forward; "post" is ``panoptic_merge`` on the logits plus
building the segment list and copying the maps to numpy (everything after the forward).  Random
weights give few or no instances, so the last row times the post-processing of a synthetic street
scene with ~30 instances (realistic logits, heatmap and offsets) and adds the R50 network time.

Then the CPU network speed-ups (``pdlkit.modeling.inference``), each against plain eager float32
on the same weights (random, with trained-looking batch-norm statistics): folded batch norms,
channels-last, both, both + torch.compile (``--compile``; the first call compiles), and bfloat16
(a bf16 copy of the folded channels-last network; CPU autocast for comparison).  Columns: the best
of the timed forwards, the speed-up over eager fp32, and the largest logit difference from it.

    python benchmarks/predict.py [--threads 2] [--toy-images 30] [--city-images 3] [--weights CKPT]
                                 [--speedups-only] [--big-iterations 1] [--compile]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _predictor(config_name: str, weights: str | None, device: str):
    from pdlkit.config import load_config
    from pdlkit.data.spec import cityscapes_spec
    from pdlkit.inference import Predictor
    from pdlkit.modeling import build_model

    if weights:
        return Predictor(weights, device=device)
    cfg = load_config(REPO / "configs" / config_name)
    cfg.model.pretrained = "none"
    cfg.model.norm = "BN"
    spec = cityscapes_spec()
    torch.manual_seed(0)
    model = build_model(cfg.model, spec.num_classes)
    return Predictor.from_model(model, cfg, spec, device)


def _time_predictor(predictor, images, warmup: int = 1):
    for image in images[:warmup]:
        predictor(image)
    predictor.timings = {"network": 0.0, "postprocess": 0.0}
    per_image, instances = [], []
    for image in images[warmup:]:
        start = time.perf_counter()
        prediction = predictor(image)
        per_image.append(time.perf_counter() - start)
        instances.append(len(prediction.instances))
    total = sum(per_image)
    return {
        "images": len(per_image),
        "images_per_s": len(per_image) / total,
        "median_ms": 1000 * statistics.median(per_image),
        "network_ms": 1000 * predictor.timings["network"] / len(per_image),
        "post_ms": 1000 * predictor.timings["postprocess"] / len(per_image),
        "post_share": predictor.timings["postprocess"] / total,
        "instances": statistics.median(instances),
    }


def _time_predict_paths(predictor, images):
    import cv2

    from pdlkit.inference import predict_paths

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        for k, image in enumerate(images):
            cv2.imwrite(str(folder / f"img_{k:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        predictor.timings = {"network": 0.0, "postprocess": 0.0}
        start = time.perf_counter()
        summary = predict_paths(predictor, folder, Path(tmp) / "out", progress=False)
        elapsed = time.perf_counter() - start
    return {
        "images": summary.processed,
        "images_per_s": summary.processed / elapsed,
        "median_ms": 1000 * elapsed / summary.processed,
        "network_ms": 1000 * predictor.timings["network"] / summary.processed,
        "post_ms": 1000 * predictor.timings["postprocess"] / summary.processed,
        "post_share": predictor.timings["postprocess"] / elapsed,
        "instances": float("nan"),
    }


class _SceneOutputs(torch.nn.Module):
    """Returns fixed, realistic network outputs of a street-like scene whatever the input: 19-class
    logits of stuff bands and ``instances`` elliptic things, Gaussian center peaks (sigma 8) and
    offsets pointing at the centers, plus noise.  Times the post-processing of a scene that has
    instances, which random weights do not produce."""

    size_divisibility = 1

    def __init__(self, height: int, width: int, instances: int = 30, seed: int = 0):
        super().__init__()
        rng = np.random.default_rng(seed)
        labels = np.zeros((height, width), dtype=np.int64)
        bands = np.linspace(0, height, 6).astype(int)
        for k, stuff in enumerate([10, 2, 8, 1, 0]):  # sky, building, vegetation, sidewalk, road
            labels[bands[k]:bands[k + 1]] = stuff
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        heatmap = np.zeros((height, width), dtype=np.float32)
        offsets = rng.normal(0, 2, (2, height, width)).astype(np.float32)
        for _ in range(instances):
            cy, cx = rng.uniform(0.3 * height, 0.95 * height), rng.uniform(0, width)
            ry, rx = rng.uniform(10, 0.12 * height), rng.uniform(10, 0.08 * width)
            inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            labels[inside] = rng.integers(11, 19)
            offsets[0][inside], offsets[1][inside] = cy - yy[inside], cx - xx[inside]
            heatmap = np.maximum(heatmap, np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 8.0 ** 2)))
        logits = rng.normal(0, 1, (19, height, width)).astype(np.float32)
        np.put_along_axis(logits, labels[None], 6.0, axis=0)
        self.outputs = {"semantic": torch.from_numpy(logits)[None],
                        "center": torch.from_numpy(heatmap)[None, None],
                        "offset": torch.from_numpy(offsets)[None]}

    def forward(self, images):
        return self.outputs


def _time_postprocess_of_scene(height: int, width: int, repeats: int = 3):
    """Post-processing ms of a realistic scene (through Predictor, after a no-op network)."""
    from pdlkit.config import load_config
    from pdlkit.data.spec import cityscapes_spec
    from pdlkit.inference import Predictor

    cfg = load_config(REPO / "configs" / "cityscapes_r50.yaml")
    predictor = Predictor.from_model(_SceneOutputs(height, width), cfg, cityscapes_spec(), "cpu")
    image = np.zeros((height, width, 3), dtype=np.uint8)
    predictor(image)
    predictor.timings = {"network": 0.0, "postprocess": 0.0}
    instances = [len(predictor(image).instances) for _ in range(repeats)]
    return 1000 * predictor.timings["postprocess"] / repeats, statistics.median(instances)


def _toy_images(count: int, height: int, width: int):
    """Toy-set-like scenes: the generator's images when available, else random textures."""
    rng = np.random.default_rng(0)
    try:
        from pdlkit.data.prepare import prepare_toy
        from pdlkit.inference import read_image

        root = Path(tempfile.mkdtemp(prefix="pdl_bench_toy_"))
        prepare_toy(root, train=1, val=count, height=height, width=width, seed=0, progress=False)
        return [read_image(p) for p in sorted((root / "leftImg8bit" / "val").rglob("*.png"))][:count]
    except Exception as exc:  # the generator is optional here: speed does not depend on the scene
        print(f"(toy generator unavailable: {exc}; using random images)", file=sys.stderr)
        return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(count)]


def _bench_model(config_name: str) -> torch.nn.Module:
    """The config's network with random weights and trained-looking batch-norm statistics."""
    from pdlkit.config import load_config
    from pdlkit.modeling import build_model

    cfg = load_config(REPO / "configs" / config_name)
    cfg.model.pretrained, cfg.model.norm = "none", "BN"
    torch.manual_seed(0)
    model = build_model(cfg.model, 19).eval()
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator) * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    for predictor in (model.semantic_branch.predictor, model.instance_branch.center_predictor,
                      model.instance_branch.offset_predictor):
        torch.nn.init.normal_(predictor.weight, 0.0, 1.0)  # logits far from 0, as a trained model's
    return model


class _Autocast(torch.nn.Module):
    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, images):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return {k: v.float() for k, v in self.network(images).items()}


def _network_variants(model, use_compile: bool):
    from pdlkit.modeling.inference import prepare_network

    variants = [("eager fp32", lambda: model)]
    for name, options in (("fold BN", dict(fold_bn=True)), ("channels-last", dict(channels_last=True)),
                          ("fold BN + channels-last", dict(fold_bn=True, channels_last=True))):
        variants.append((name, lambda options=options: prepare_network(model, -1, **options)[1]))
    if use_compile:
        variants.append(("fold + channels-last + compile",
                         lambda: prepare_network(model, -1, fold_bn=True, channels_last=True, compile=True)[1]))
    variants.append(("bf16 (fold + channels-last + bf16 weights)",
                     lambda: prepare_network(model, -1, fold_bn=True, channels_last=True, bf16_weights=True)[1]))
    variants.append(("bf16 autocast (fold + channels-last)",
                     lambda: _Autocast(prepare_network(model, -1, fold_bn=True, channels_last=True)[1])))
    return variants


_BIG_VARIANTS = ("eager fp32", "fold BN + channels-last", "bf16 (fold + channels-last + bf16 weights)")


def _time_network_speedups(config_name: str, size, iterations: int, use_compile: bool, only=None):
    """[(variant, best seconds, speed-up over eager fp32, max |logit difference|, max |eager logit|)];
    ``only``: the variant names to time (default all).

    The variants are timed in rounds (one forward of each per round, ``iterations`` rounds) and
    each keeps its best: on a shared machine the load changes over minutes, and timing one variant
    after the other would credit whichever ran in a quiet spell."""
    model = _bench_model(config_name)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    networks = [(name, make()) for name, make in _network_variants(model, use_compile)
                if only is None or name in only or "compile" in name]
    times = {name: [] for name, _ in networks}
    logits = {}
    with torch.inference_mode():
        for name, network in networks:
            logits[name] = network(images)["semantic"].float()  # warm-up (oneDNN caches; compiles here)
        for _ in range(iterations):
            for name, network in networks:
                start = time.perf_counter()
                network(images)
                times[name].append(time.perf_counter() - start)
    reference, eager_time = logits[networks[0][0]], min(times[networks[0][0]])
    return [(name, min(times[name]), eager_time / min(times[name]), float((logits[name] - reference).abs().max()),
             float(reference.abs().max())) for name, _ in networks]


def _print_speedups(title: str, rows) -> None:
    print(f"\n{title}")
    print("| variant | best ms | speed-up vs eager fp32 | max abs logit diff | relative to max abs logit |")
    print("|---|---|---|---|---|")
    for name, seconds, ratio, diff, scale in rows:
        print(f"| {name} | {1000 * seconds:.1f} | {ratio:.2f}x | {diff:.2e} | {diff / max(scale, 1e-12):.1e} |")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--toy-images", type=int, default=30)
    parser.add_argument("--city-images", type=int, default=3, help="0 skips the 1024x2048 model")
    parser.add_argument("--weights", default=None, help="a toy checkpoint (default: random weights)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--speedups-only", action="store_true", help="only the CPU network speed-up tables")
    parser.add_argument("--big-iterations", type=int, default=1, help="timed forwards per variant at 1024x2048")
    parser.add_argument("--toy-iterations", type=int, default=10, help="timed forwards per variant at 128x256")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (compiles first: minutes)")
    parser.add_argument("--no-big", action="store_true", help="skip the 1024x2048 speed-up tables")
    parser.add_argument("--all-big-variants", action="store_true",
                        help="time every variant at 1024x2048 (default: eager, fold + channels-last, bf16)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.speedups_only:
        _speedup_tables(args)
        return

    from pdlkit.ops import native_available

    rows = []
    toy = _predictor("toy.yaml", args.weights, args.device)
    images = _toy_images(args.toy_images + 1, 128, 256)
    rows.append(("toy R18, Predictor", "128x256", _time_predictor(toy, images)))
    rows.append(("toy R18, pdl predict pipeline", "128x256", _time_predict_paths(toy, images[1:])))
    if args.city_images > 0:
        city = _predictor("cityscapes_r50.yaml", None, args.device)
        rng = np.random.default_rng(1)
        big = [rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8) for _ in range(args.city_images + 1)]
        rows.append(("Cityscapes R50, Predictor", "1024x2048", _time_predictor(city, big)))
        scene_post_ms, scene_instances = _time_postprocess_of_scene(1024, 2048)
        network_ms = rows[-1][2]["network_ms"]
        rows.append(("Cityscapes R50, scene with instances", "1024x2048", {
            "images": 3, "images_per_s": 1000 / (network_ms + scene_post_ms),
            "median_ms": network_ms + scene_post_ms, "network_ms": network_ms, "post_ms": scene_post_ms,
            "post_share": scene_post_ms / (network_ms + scene_post_ms), "instances": scene_instances}))

    print(f"device {args.device}, torch threads {torch.get_num_threads()}, native ops {native_available()}, "
          f"torch {torch.__version__}")
    header = "| model | size | images | images/s | ms/image | network ms | post ms | post share | instances |"
    print(header)
    print("|" + "---|" * 9)
    for name, size, r in rows:
        print(f"| {name} | {size} | {r['images']} | {r['images_per_s']:.2f} | {r['median_ms']:.1f} | "
              f"{r['network_ms']:.1f} | {r['post_ms']:.1f} | {100 * r['post_share']:.1f}% | {r['instances']} |")
    _speedup_tables(args)


def _speedup_tables(args) -> None:
    print(f"\nCPU network speed-ups: torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    _print_speedups("toy R18, 128x256", _time_network_speedups("toy.yaml", (128, 256), args.toy_iterations,
                                                                  args.compile))
    if not args.no_big:
        for config_name, title in (("cityscapes_r50.yaml", "Cityscapes R50, 1024x2048"),
                                   ("cityscapes_r52_dc5_d2.yaml", "Cityscapes R52-DC5 (detectron2), 1024x2048")):
            only = None if args.all_big_variants else _BIG_VARIANTS
            _print_speedups(title, _time_network_speedups(config_name, (1024, 2048), args.big_iterations,
                                                          args.compile, only))


if __name__ == "__main__":
    main()
