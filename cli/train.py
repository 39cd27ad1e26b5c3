"""``pdl train``: train a Panoptic-DeepLab model from a YAML config (one process, or DDP under torchrun)."""
from __future__ import annotations

import click

EPILOG = """\b
Examples:
  pdl prepare toy datasets/toy
  pdl train --config configs/toy.yaml
  pdl train --config configs/cityscapes_r50.yaml --data datasets/cityscapes --output runs/r50
  pdl train --config configs/toy.yaml --set solver.max_iter=200 --set model.backbone=resnet50
  pdl train --config configs/toy.yaml --output runs/toy --resume
  torchrun --nproc_per_node 8 -m pdlkit.cli.main train --config configs/cityscapes_r52.yaml

\b
--set takes dotted config keys (see pdlkit/config.py); values are YAML scalars or lists,
e.g. data.crop_size=[512,1024].  solver.batch_size is the total over all processes.
Ctrl-C or SIGTERM saves a checkpoint before exiting; --resume continues from it.
"""


@click.command(name="train", epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True, metavar="CFG",
              help="YAML config file (e.g. configs/toy.yaml).")
@click.option("--data", "data_root", metavar="ROOT", help="Dataset root (overrides data.root).")
@click.option("--output", "output_dir", metavar="DIR", help="Output folder (overrides output_dir).")
@click.option("--resume", is_flag=True,
              help="Continue from the checkpoint named by DIR/last_checkpoint (same state and data order).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set solver.lr=0.0005 (repeatable).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(config_path, data_root, output_dir, resume, overrides, quiet):
    """Train a Panoptic-DeepLab model.

    Writes checkpoints (model_<iter>.pt, model_final.pt), metrics.jsonl, TensorBoard scalars and the
    final PQ / SQ / RQ / mIoU on the val split into the output folder.
    """
    import logging
    import sys

    from pdlkit.config import load_config

    cfg = load_config(config_path, overrides)
    # --data / --output are paths, not YAML values: set them verbatim, after (and over) --set.
    if data_root is not None:
        cfg.data.root = data_root
    if output_dir is not None:
        cfg.output_dir = output_dir

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from pdlkit.engine.trainer import TrainingInterrupted, train

    try:
        result = train(cfg, resume=resume, progress=not quiet)
    except TrainingInterrupted as exc:
        click.echo(str(exc), err=True)
        sys.exit(128 + int(exc.signum))  # the shell convention for "killed by signal N"
    if "checkpoint" in result:  # rank 0
        click.echo(f"model: {result['checkpoint']}")
        headline = [(key, result[key]) for key in ("PQ", "SQ", "RQ", "mIoU") if key in result]
        if headline:
            click.echo(", ".join(f"{key} {value:.2f}" for key, value in headline))
