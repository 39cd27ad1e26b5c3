"""``pdl visualize``: overlays and 2x2 panels of pdl predict's outputs, or a training run's curves, as PNG."""
from __future__ import annotations

import click


@click.command("visualize")
@click.argument("predictions", metavar="PRED_DIR|RUN_DIR")
@click.option("--images", default=None, metavar="DIR",
              help="Folder of the input images (default: the paths recorded by pdl predict).")
@click.option("--output", "-o", default=None, metavar="DIR",
              help="Folder for the pictures (for RUN_DIR: a .png file or a folder; default "
                   "RUN_DIR/training_curves.png).")
@click.option("--what", type=click.Choice(["overlay", "panel"]), default="overlay", show_default=True,
              help="overlay: image + panoptic colours; panel: overlay, semantic, centers, offsets "
                   "(needs pdl predict --save-raw).")
@click.option("--scale", default=1, show_default=True, type=click.IntRange(min=1),
              help="Enlarge small images N times before drawing (legible labels).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(predictions, images, output, what, scale, quiet):
    """Draw the predictions in PRED_DIR (a pdl predict output folder, or one prediction file in it)
    as DIR/<sub-folders>/<image_id>_<what>.png, or the loss curves and periodic PQ / mIoU of a
    pdl train folder RUN_DIR (its metrics.jsonl) as one PNG.

    \b
    Examples:
      pdl visualize preds --output vis
      pdl predict datasets/toy/leftImg8bit/val --weights model.pt --output preds --save-raw
      pdl visualize preds --images datasets/toy/leftImg8bit/val --output vis --what panel
      pdl visualize preds/panoptic/city/img_0001.png --output vis --what panel --scale 2
      pdl visualize runs/toy                    # -> runs/toy/training_curves.png
    """
    from pathlib import Path

    from pdlkit.errors import PdlError
    from pdlkit.visualize import plot_training_run, visualize_predictions

    source = Path(predictions)
    if (source / "metrics.jsonl").is_file() and not (source / "panoptic.json").is_file():
        target = Path(output) if output else None
        if target is not None and target.suffix.lower() != ".png":
            target = target / "training_curves.png"
        click.echo(f"wrote {plot_training_run(source, target)}")
        return
    if output is None:
        raise PdlError(f"{source}: --output DIR is needed for the pictures of a prediction folder")

    summary = visualize_predictions(predictions, output, images_dir=images, what=what, scale=scale,
                                    progress=not quiet)
    for name, reason in summary.failed:
        click.echo(f"failed: {reason}", err=True)
    click.echo(f"{len(summary.written)} pictures written to {output}, {len(summary.failed)} failed")
    if summary.failed:
        click.get_current_context().exit(1)
