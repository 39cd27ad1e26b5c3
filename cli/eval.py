"""``pdl eval``: PQ/SQ/RQ, mIoU and instance AP of a checkpoint or of saved predictions."""
from __future__ import annotations

import click


@click.command("eval")
@click.option("--data", "data_root", required=True, metavar="ROOT",
              help="Prepared dataset root in the Cityscapes layout (pdl prepare).")
@click.option("--split", default="val", show_default=True, help="Split whose ground truth is scored.")
@click.option("--weights", "-w", metavar="CKPT", help="Predict ROOT/leftImg8bit/SPLIT with this checkpoint first.")
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

    Numbers equal cityscapesscripts' evalPanopticSemanticLabeling (PQ, SQ, RQ),
    evalPixelLevelSemanticLabeling (mIoU) and evalInstanceLevelSemanticLabeling (AP, AP50; one
    instance per thing segment scored objectness x class score), in percent.  Averages take only
    the classes that occur.  Every ground-truth image needs a prediction.

    \b
    Examples:
      pdl eval --data datasets/toy --weights runs/toy/model_final.pt
      pdl eval --data datasets/cityscapes --predictions preds --json metrics.json
      pdl eval --data datasets/cityscapes --split val --predictions preds --no-ap
    """
    import tempfile
    from pathlib import Path

    from pdlkit.errors import PdlError
    from pdlkit.evaluation import evaluate_predictions, format_results
    from pdlkit.evaluation._io import atomic_write_json, load_ground_truth

    if (weights is None) == (predictions is None):
        raise click.UsageError("give exactly one of --weights CKPT or --predictions DIR")
    load_ground_truth(data_root, split)  # a wrong root fails before any prediction work

    with tempfile.TemporaryDirectory(prefix="pdl_eval_") as temp_dir:
        spec = None
        if weights is not None:
            from pdlkit.inference import Predictor, predict_paths

            if not Path(weights).is_file():
                raise PdlError(f"{weights}: weights file not found")
            images = Path(data_root) / "leftImg8bit" / split
            if not images.is_dir():
                raise PdlError(f"{images}: no images to predict for split {split!r}")
            predictor = Predictor(weights, device=device)
            spec = predictor.spec
            predictions = Path(temp_dir) / "predictions"
            summary = predict_paths(predictor, str(images), predictions, batch_size=batch_size,
                                    progress=not quiet)
            for path, reason in summary.failed:
                click.echo(f"failed: {reason}", err=True)
        else:
            spec = _spec_of_predictions(Path(predictions))
        results = evaluate_predictions(data_root, split, predictions, spec=spec,
                                       compute_ap=not no_ap, progress=not quiet)
    click.echo(format_results(results))
    if json_path:
        atomic_write_json(json_path, results)
        click.echo(f"wrote {json_path}")


def _spec_of_predictions(directory):
    """The dataset spec that pdl predict stored beside its predictions, if any."""
    from pdlkit.data.spec import DatasetSpec
    from pdlkit.evaluation._io import load_json

    path = directory / "spec.json"
    return DatasetSpec.from_dict(load_json(path)) if path.is_file() else None
