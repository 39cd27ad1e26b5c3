"""``pdl predict``: panoptic segmentation of an image, a folder (recursive), a glob or a video."""
from __future__ import annotations

import click


@click.command("predict")
@click.argument("input", metavar="INPUT")
@click.option("--weights", "-w", required=True, metavar="CKPT",
              help="A pdlkit checkpoint (.pt) from pdl train, or an .onnx file from pdl export (needs onnxruntime).")
@click.option("--output", "-o", required=True, metavar="DIR",
              help="Folder for panoptic/, semantic/, panoptic.json.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass (images of one size are batched).")
@click.option("--device", default="auto", show_default=True, metavar="cpu|cuda|cuda:N",
              help="auto = cuda when a GPU is present (under torchrun: this rank's GPU), else cpu.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: the config's scales + horizontal flip.")
@click.option("--overwrite", is_flag=True, help="Redo images whose outputs exist (default: skip them).")
@click.option("--save-raw", is_flag=True,
              help="Also store center heatmap and offsets (raw/*.npz) for pdl visualize --what panel.")
@click.option("--no-amp", is_flag=True, help="Run the network in float32 (the same as --precision fp32).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Network arithmetic (default: the checkpoint config's test.precision, fp32). bf16 runs a "
                   "bfloat16 copy of the network on the CPU (faster on CPUs with AVX-512 BF16 / AMX, "
                   "not bit-exact); fp16 is autocast, for CUDA.")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="CPU threads for the network (default: the cores this process may use, shared among "
                   "torchrun's local processes, at most 8). "
                   "Idle threads sleep (OMP_WAIT_POLICY=PASSIVE), so a busy neighbour costs only its "
                   "share; on a machine of your own OMP_WAIT_POLICY=ACTIVE can be ~20% faster.")
@click.option("--max-pixels", default=50_000_000, show_default=True, type=click.IntRange(min=0),
              help="Refuse (and name) images with more pixels, read from the file header; 0 = no limit.")
@click.option("--write-threads", default=None, type=click.IntRange(min=1), metavar="N",
              help="Threads encoding and writing the output files, below the network's priority "
                   "(default: half the cores, 1 to 4).")
@click.option("--video-out", default=None, metavar="FILE",
              help="For a video INPUT: also write the overlay video here (source frame rate).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(input, weights, output, batch_size, device, tta, overwrite, save_raw, no_amp, precision, threads,
            max_pixels, write_threads, video_out, quiet):
    """Predict INPUT (an image, a folder searched recursively, a quoted glob, a video file or a
    camera index) and write DIR/panoptic/*.png, DIR/panoptic.json (COCO panoptic result format),
    DIR/semantic/*.png.

    Sub-folders of INPUT are mirrored under DIR.  Images already predicted are skipped unless
    --overwrite.  Unreadable images are reported and skipped; the exit code is then 1.  Image ids
    are file names without extension (and without a trailing _leftImg8bit) and must be unique:
    a second file with the same id is reported, not predicted.  Video frames are named by frame
    index (frame_000000, ...).  Under torchrun each process predicts its share of the images and
    rank 0 writes panoptic.json once all are done.

    \b
    Examples:
      pdl predict street.jpg --weights runs/toy/model_final.pt --output preds
      pdl predict datasets/cityscapes/leftImg8bit/val --weights model.pt --output preds --batch-size 4
      pdl predict 'photos/**/*.jpg' --weights model.pt --output preds --tta --save-raw
      pdl predict clip.mp4 --weights model.pt --output preds --video-out overlay.mp4
      torchrun --nproc_per_node 8 -m pdlkit.cli.main predict frames/ --weights model.pt --output preds
    """
    from pathlib import Path

    import cv2

    from pdlkit.errors import PdlError
    from pdlkit.inference.video import is_video_input
    from pdlkit.threads import configure_threads

    # corrupt files are reported by pdl in one line; OpenCV's own decoder log would only add noise
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)
    if not Path(weights).is_file():
        raise PdlError(f"{weights}: weights file not found")
    configure_threads(threads)
    network = dict(device=device, tta=tta, no_amp=no_amp, precision=precision)
    options = dict(batch_size=batch_size, overwrite=overwrite, save_raw=save_raw, progress=not quiet,
                   max_pixels=max_pixels or None, workers=write_threads)
    if is_video_input(input):
        _predict_video(input, weights, output, network, video_out, options)
    else:
        if video_out:
            raise PdlError(f"--video-out needs a video INPUT; {input} is not one")
        _predict_images(input, weights, output, network, options)


def _load_predictor(weights, device, tta, no_amp, precision):
    import torch

    from pdlkit.inference import Predictor

    predictor = Predictor(weights, device=device, tta=tta, amp=False if no_amp else None,
                          precision="fp32" if no_amp else precision)
    if predictor.device.type == "cuda" and predictor.device.index is not None:
        torch.cuda.set_device(predictor.device)  # --device cuda:K: streams and kernels on GPU K
    return predictor


def torchrun_context():
    """The process group under torchrun (WORLD_SIZE > 1); a plain process gets a one-rank context
    and keeps its --device (cuda:K) untouched."""
    import os

    from pdlkit.engine.distributed import DistributedContext, setup_distributed

    under_torchrun = int(os.environ.get("WORLD_SIZE", "1") or 1) > 1
    return setup_distributed() if under_torchrun else DistributedContext()


def _predict_images(input, weights, output, network, options) -> None:
    from pdlkit.engine.distributed import cleanup_distributed
    from pdlkit.inference import predict_paths, scan_images

    scan_images(input)  # an empty or missing INPUT fails before the model is loaded
    context = torchrun_context()
    try:
        if context.distributed and network["device"] == "auto":
            network = dict(network, device=context.device)
        predictor = _load_predictor(weights, **network)
        options["progress"] = options["progress"] and context.is_main
        summary = predict_paths(predictor, input, output, **options)
    finally:
        cleanup_distributed(context)
    if context.is_main or summary.failed:
        _report(summary, output)


def _predict_video(input, weights, output, network, video_out, options) -> None:
    from pdlkit.inference.video import predict_video
    from pdlkit.visualize import panoptic_overlay

    predictor = _load_predictor(weights, **network)

    def draw(image, prediction):
        return panoptic_overlay(image, prediction.panoptic, prediction.segments, predictor.spec)

    summary = predict_video(predictor, input, output, video_out=video_out, draw=draw,
                            **{k: options[k] for k in ("batch_size", "overwrite", "save_raw",
                                                       "progress", "workers")})
    _report(summary, output)


def _report(summary, output) -> None:
    for path, reason in summary.passed_over:
        click.echo(f"not searched: {path}: {reason}", err=True)
    for path, reason in summary.failed:
        click.echo(f"failed: {reason}", err=True)
    click.echo(f"{summary}; outputs in {output}")
    if summary.failed:
        click.get_current_context().exit(1)
