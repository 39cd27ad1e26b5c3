"""``pdl predict``: panoptic segmentation of an image, a folder (recursive) or a glob."""
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
              help="auto = cuda when a GPU is present, else cpu.")
@click.option("--tta", is_flag=True, help="Test-time augmentation: the config's scales + horizontal flip.")
@click.option("--overwrite", is_flag=True, help="Redo images whose outputs exist (default: skip them).")
@click.option("--save-raw", is_flag=True,
              help="Also store center heatmap and offsets (raw/*.npz) for pdl visualize --what panel.")
@click.option("--no-amp", is_flag=True, help="Run the network in float32 (the same as --precision fp32).")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "bf16"]), default=None,
              help="Network arithmetic (default: the checkpoint config's test.precision, fp32). bf16 runs a "
                   "bfloat16 copy of the network on the CPU (faster on CPUs with AVX-512 BF16 / AMX, "
                   "not bit-exact); fp16 is autocast, for CUDA.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(input, weights, output, batch_size, device, tta, overwrite, save_raw, no_amp, precision, quiet):
    """Predict INPUT (an image, a folder searched recursively, or a quoted glob) and write
    DIR/panoptic/*.png, DIR/panoptic.json (COCO panoptic result format), DIR/semantic/*.png.

    Sub-folders of INPUT are mirrored under DIR.  Images already predicted are skipped unless
    --overwrite.  Unreadable images are reported and skipped; the exit code is then 1.

    \b
    Examples:
      pdl predict street.jpg --weights runs/toy/model_final.pt --output preds
      pdl predict datasets/cityscapes/leftImg8bit/val --weights model.pt --output preds --batch-size 4
      pdl predict 'photos/**/*.jpg' --weights model.pt --output preds --tta --save-raw
    """
    from pathlib import Path

    import cv2

    from pdlkit.errors import PdlError
    from pdlkit.inference import Predictor, find_images, predict_paths

    # corrupt files are reported by pdl in one line; OpenCV's own decoder log would only add noise
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)

    if not Path(weights).is_file():
        raise PdlError(f"{weights}: weights file not found")
    find_images(input)  # an empty or missing INPUT fails before the model is loaded
    predictor = Predictor(weights, device=device, tta=tta, amp=False if no_amp else None,
                          precision="fp32" if no_amp else precision)
    summary = predict_paths(predictor, input, output, batch_size=batch_size, overwrite=overwrite,
                            save_raw=save_raw, progress=not quiet)
    for path, reason in summary.failed:
        click.echo(f"failed: {reason}", err=True)
    click.echo(f"{summary}; outputs in {output}")
    if summary.failed:
        click.get_current_context().exit(1)
