"""``pdl visualize``: overlays and 2x2 panels of pdl predict's outputs as PNG."""
from __future__ import annotations

import click


@click.command("visualize")
@click.argument("predictions", metavar="PRED_DIR")
@click.option("--images", default=None, metavar="DIR",
              help="Folder of the input images (default: the paths recorded by pdl predict).")
@click.option("--output", "-o", required=True, metavar="DIR", help="Folder for the pictures.")
@click.option("--what", type=click.Choice(["overlay", "panel"]), default="overlay", show_default=True,
              help="overlay: image + panoptic colours; panel: overlay, semantic, centers, offsets "
                   "(needs pdl predict --save-raw).")
@click.option("--scale", default=1, show_default=True, type=click.IntRange(min=1),
              help="Enlarge small images N times before drawing (legible labels).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(predictions, images, output, what, scale, quiet):
    """Draw the predictions in PRED_DIR (a pdl predict output folder, or one prediction file in it)
    as DIR/<sub-folders>/<image_id>_<what>.png.

    \b
    Examples:
      pdl visualize preds --output vis
      pdl predict datasets/toy/leftImg8bit/val --weights model.pt --output preds --save-raw
      pdl visualize preds --images datasets/toy/leftImg8bit/val --output vis --what panel
      pdl visualize preds/panoptic/city/img_0001.png --output vis --what panel --scale 2
    """
    from pdlkit.visualize import visualize_predictions

    summary = visualize_predictions(predictions, output, images_dir=images, what=what, scale=scale,
                                    progress=not quiet)
    for name, reason in summary.failed:
        click.echo(f"failed: {reason}", err=True)
    click.echo(f"{len(summary.written)} pictures written to {output}, {len(summary.failed)} failed")
    if summary.failed:
        click.get_current_context().exit(1)
