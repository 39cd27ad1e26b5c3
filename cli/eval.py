"""``pdl eval``: PQ/SQ/RQ, mIoU and instance AP of a checkpoint or of saved predictions."""
from __future__ import annotations

import click


@click.command("eval")
@click.option("--data", "data_root", required=True, metavar="ROOT",
              help="Dataset root prepared by pdl prepare (Cityscapes layout or COCO-panoptic).")
@click.option("--split", default="val", show_default=True, help="Split whose ground truth is scored.")
@click.option("--weights", "-w", metavar="CKPT", help="Predict the images of SPLIT with this checkpoint first.")
@click.option("--predictions", "-p", metavar="DIR", help="A folder written by pdl predict.")
@click.option("--json", "json_path", metavar="FILE", help="Also write every number to this JSON file.")
@click.option("--device", default="auto", show_default=True, metavar="cpu|cuda|cuda:N",
              help="Device for --weights (auto = cuda when a GPU is present, else cpu).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Images per forward pass with --weights.")
@click.option("--no-ap", is_flag=True, help="Skip instance AP (PQ and mIoU only; faster).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def command(data_root, split, weights, predictions, json_path, device, batch_size, no_ap, quiet):
    """Score panoptic predictions against the ground truth of ROOT/SPLIT.

    PQ, SQ, RQ equal panopticapi's pq_compute (cityscapesscripts' evalPanopticSemanticLabeling);
    mIoU equals evalPixelLevelSemanticLabeling; AP, AP50 (one instance per thing segment scored
    objectness x class score) equal evalInstanceLevelSemanticLabeling on Cityscapes data and
    pycocotools' mask COCOeval on COCO-format data; in percent.  Averages take only the classes
    that occur.  Every ground-truth image needs a prediction, matched by the dataset's image id
    or by its file name (as pdl predict names outputs).

    \b
    Examples:
      pdl eval --data datasets/toy --weights runs/toy/model_final.pt
      pdl eval --data datasets/cityscapes --predictions preds --json metrics.json
      pdl eval --data datasets/cityscapes --split val --predictions preds --no-ap
      pdl eval --data datasets/mine --split val --weights runs/mine/model_final.pt
    """
    from pathlib import Path

    from pdlkit.errors import PdlError
    from pdlkit.evaluation import (
        evaluate_across_ranks,
        format_results,
        load_ground_truth,
        predict_and_evaluate,
        spec_of_predictions,
        write_results_json,
    )

    if (weights is None) == (predictions is None):
        raise click.UsageError("give exactly one of --weights CKPT or --predictions DIR")
    load_ground_truth(data_root, split)  # a wrong root fails before any prediction work
    # under torchrun every rank predicts and/or scores its share of the images; the statistics are gathered
    from pdlkit.engine.distributed import cleanup_distributed

    from .predict import torchrun_context

    context = torchrun_context()
    try:
        if weights is not None:
            from pdlkit.inference import Predictor

            if not Path(weights).is_file():
                raise PdlError(f"{weights}: weights file not found")
            if context.distributed and device == "auto":
                device = context.device
            results = predict_and_evaluate(Predictor(weights, device=device), data_root, split,
                                           compute_ap=not no_ap, batch_size=batch_size,
                                           progress=not quiet and context.is_main)
        else:
            results = evaluate_across_ranks(data_root, split, predictions, spec=spec_of_predictions(predictions),
                                            compute_ap=not no_ap, progress=not quiet)
    finally:
        cleanup_distributed(context)
    if not context.is_main:
        return
    click.echo(format_results(results))
    if json_path:
        write_results_json(json_path, results)
        click.echo(f"wrote {json_path}")
