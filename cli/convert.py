"""``pdl convert``: panoptic predictions -> instance predictions (Cityscapes or COCO format)."""
from __future__ import annotations

import click


@click.command("convert")
@click.argument("pred_dir", metavar="PRED_DIR")
@click.option("--output", "-o", required=True, metavar="DIR", help="Folder for the instance predictions.")
@click.option("--format", "format_", type=click.Choice(["cityscapes", "coco"]), default="cityscapes",
              show_default=True, help="cityscapes: <image>_pred.txt + masks/*.png; coco: results json with RLE masks.")
@click.option("--data", "data_root", metavar="ROOT", default=None,
              help="Dataset root (pdl prepare) whose json gives the image ids written by --format coco.")
@click.option("--split", default="val", show_default=True, help="Split of --data the predictions belong to.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def command(pred_dir, output, format_, data_root, split, quiet):
    """Turn the thing segments of PRED_DIR (written by pdl predict) into instance predictions,
    one per segment, scored objectness x class score.

    cityscapes: DIR/<sub-folder>/<image>_pred.txt with lines `masks/<image>_<k>.png <labelId>
    <score>` and the 0/255 mask PNGs, for cityscapesscripts' evalInstanceLevelSemanticLabeling.
    coco: DIR/coco_instances_results.json (RLE masks, boxes, category ids, scores) with the
    image ids of the dataset's json (--data ROOT --split NAME; without them the predictions'
    ids must be integers or digit strings), as pycocotools' COCO.loadRes reads it.
    Every output path must stay inside DIR.

    \b
    Examples:
      pdl convert preds --output preds_instances
      pdl convert preds --output coco_out --format coco --data datasets/coco --split val
    """
    from pdlkit.evaluation import convert_predictions
    from pdlkit.evaluation.convert import DatasetIdsNeeded

    try:
        summary = convert_predictions(pred_dir, output, format=format_, spec=None, data_root=data_root,
                                      split=split, progress=not quiet)
    except DatasetIdsNeeded as exc:
        raise click.ClickException(str(exc).replace("give the dataset (data_root and split)",
                                                    "pass --data ROOT --split NAME")) from None
    click.echo(f"{summary['instances']} instances of {summary['images']} images written to "
               f"{summary['output']}")
