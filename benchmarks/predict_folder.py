"""Images/s of one model on one device, per precision: the bare ``Predictor`` on images in memory,
and the whole ``pdl predict`` command on a folder of the same images written as PNG files.

Default: detectron2's Cityscapes R52-DC5 (configs/cityscapes_r52_dc5_d2.yaml, plain batch norm,
random weights: speed does not depend on their values, except through the number of instances the
post-processing sees, which is printed) at 1024x2048 on the GPU in fp32 and fp16.

- "Predictor": ``Predictor.from_model(..., precision=P)`` called once per image (warm-up first);
  "network" is normalisation + forward (synchronised), "post" is the merge + segment list + copies.
- "pdl predict": ``python -m pdlkit.cli.main predict FOLDER --weights CKPT --device D --precision P``
  in a subprocess on a checkpoint of the same weights; images/s is the command's own figure (decode
  thread -> network -> writer threads, model loading excluded); "command s" is the whole subprocess.

    python benchmarks/predict_folder.py [--device cuda] [--config cityscapes_r52_dc5_d2.yaml]
        [--size 1024x2048] [--precisions fp32,fp16] [--images 8] [--folder-images 16]
        [--batch-size 1] [--threads N]
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def bench_spec():
    """19 classes with Cityscapes' thing train ids (11-18).  Built here rather than from
    cityscapesscripts' table, which GPU machines without a network often lack; names and colours do
    not change the speed."""
    from pdlkit.data.spec import DatasetSpec

    return DatasetSpec(name="cityscapes", class_names=[f"class_{t}" for t in range(19)],
                       category_ids=list(range(7, 26)), is_thing=[t >= 11 for t in range(19)],
                       colors=[((37 * t) % 256, (91 * t) % 256, (53 * t + 40) % 256) for t in range(19)])


def bench_model(config_name: str):
    """(model, cfg, spec): the config's network with seeded random weights, plain BN, no pretraining."""
    from pdlkit.config import load_config
    from pdlkit.modeling import build_model

    cfg = load_config(REPO / "configs" / config_name)
    cfg.model.pretrained, cfg.model.norm = "none", "BN"  # SyncBN needs a process group; same in eval
    spec = bench_spec()
    torch.manual_seed(0)
    return build_model(cfg.model, spec.num_classes).eval(), cfg, spec


def scenes(count: int, height: int, width: int):
    """``count`` smooth random RGB uint8 [H, W, 3] images (PNG sizes like photos', unlike noise)."""
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (count, max(1, height // 16), max(1, width // 16), 3), dtype=np.uint8)
    return [cv2.resize(s, (width, height), interpolation=cv2.INTER_CUBIC) for s in small]


def time_predictor(model, cfg, spec, device: str, precision: str, images, warmup: int = 2) -> dict:
    """images/s, median ms/image, mean network / post ms and median instances over ``images``."""
    from pdlkit.inference import Predictor

    predictor = Predictor.from_model(model, cfg, spec, device, precision=precision)
    for k in range(warmup):  # lazy CUDA / cuDNN initialisation, allocator growth
        predictor(images[k % len(images)])
    predictor.timings = {"network": 0.0, "postprocess": 0.0}
    per_image, instances = [], []
    for image in images:
        start = time.perf_counter()
        prediction = predictor(image)  # returns numpy maps: the device work is done
        per_image.append(time.perf_counter() - start)
        instances.append(len(prediction.instances))
    return {"images_per_s": len(images) / sum(per_image), "median_ms": 1000 * statistics.median(per_image),
            "network_ms": 1000 * predictor.timings["network"] / len(images),
            "post_ms": 1000 * predictor.timings["postprocess"] / len(images),
            "instances": statistics.median(instances)}


def write_checkpoint(model, cfg, spec, path: Path) -> None:
    from pdlkit.checkpoint import save_checkpoint

    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_checkpoint(path, {"model": state, "config": cfg.to_dict(), "dataset": spec.to_dict(), "iteration": 0})


def write_folder(images, folder: Path) -> None:
    import cv2

    folder.mkdir(parents=True)
    for k, image in enumerate(images):
        cv2.imwrite(str(folder / f"img_{k:04d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


SUMMARY = re.compile(r"(\d+) processed, .*\(([0-9.]+) images/s\)")


def run_pdl_predict(folder: Path, weights: Path, output: Path, device: str, precision: str,
                    batch_size: int, threads: int | None) -> dict:
    """Runs ``pdl predict`` on ``folder``; its processed count, images/s and the command's seconds."""
    command = [sys.executable, "-m", "pdlkit.cli.main", "predict", str(folder), "--weights", str(weights),
               "--output", str(output), "--device", device, "--precision", precision,
               "--batch-size", str(batch_size), "--quiet"]
    if threads:
        command += ["--threads", str(threads)]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    found = SUMMARY.search(done.stdout)
    if done.returncode != 0 or not found:
        raise RuntimeError(f"pdl predict failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
    return {"processed": int(found.group(1)), "images_per_s": float(found.group(2)), "command_s": seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", default="cityscapes_r52_dc5_d2.yaml", help="a file in configs/")
    parser.add_argument("--size", default="1024x2048", help="HxW of the images")
    parser.add_argument("--precisions", default="fp32,fp16", help="comma-separated fp32,fp16,bf16")
    parser.add_argument("--images", type=int, default=8, help="timed Predictor calls per precision")
    parser.add_argument("--folder-images", type=int, default=16, help="PNG files for pdl predict; 0 skips")
    parser.add_argument("--batch-size", type=int, default=1, help="pdl predict --batch-size")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"--device {args.device} given, but no CUDA device is available", file=sys.stderr)
        return 1
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.lower().split("x"))
    precisions = [p for p in args.precisions.split(",") if p]
    model, cfg, spec = bench_model(args.config)
    name = Path(args.config).stem
    images = scenes(max(args.images, args.folder_images, 1), height, width)
    where = "cpu"
    if args.device.startswith("cuda"):  # fp32 convolutions on the GPU are TF32 unless torch is told otherwise
        where = (f"{torch.cuda.get_device_name(torch.device(args.device))}, TF32 convolutions "
                 f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'}")
    print(f"{name}, random weights, {height}x{width}, device {args.device} ({where}), torch {torch.__version__}, "
          f"torch threads {torch.get_num_threads()}")
    bare = {}
    print("\n| model | size | precision | images | Predictor images/s | ms/image | network ms | post ms | instances |")
    print("|---|---|---|---|---|---|---|---|---|")
    for precision in precisions:
        r = time_predictor(model, cfg, spec, args.device, precision, images[:args.images])
        bare[precision] = r["images_per_s"]
        print(f"| {name} | {args.size} | {precision} | {args.images} | {r['images_per_s']:.2f} | "
              f"{r['median_ms']:.1f} | {r['network_ms']:.1f} | {r['post_ms']:.1f} | {r['instances']:g} |")
    if args.folder_images > 0:
        folder_table(model, cfg, spec, images[:args.folder_images], precisions, bare, args)
    return 0


def folder_table(model, cfg, spec, images, precisions, bare, args) -> None:
    """The ``pdl predict`` rows: the same weights from a checkpoint, the images as PNG files."""
    with tempfile.TemporaryDirectory(prefix="pdl_bench_folder_") as tmp:
        weights = Path(tmp) / "model.pt"
        write_checkpoint(model, cfg, spec, weights)
        write_folder(images, Path(tmp) / "in")
        print("\n| model | size | precision | images | pdl predict images/s | command s | vs Predictor |")
        print("|---|---|---|---|---|---|---|")
        for precision in precisions:
            r = run_pdl_predict(Path(tmp) / "in", weights, Path(tmp) / f"out_{precision}", args.device,
                                precision, args.batch_size, args.threads)
            print(f"| {Path(args.config).stem} | {args.size} | {precision} | {r['processed']} | "
                  f"{r['images_per_s']:.2f} | {r['command_s']:.1f} | "
                  f"{100 * r['images_per_s'] / bare[precision]:.0f}% |")
    print("\npdl predict images/s: decode -> network -> writing the files, as the command reports it "
          "(model loading excluded, the first image's device start-up included); command s: the whole "
          "subprocess (start, import, load, predict).")


if __name__ == "__main__":
    raise SystemExit(main())
