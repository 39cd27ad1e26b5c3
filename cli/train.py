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
Every value is checked before training starts.
Ctrl-C or SIGTERM saves a checkpoint before exiting; --resume continues from it.
Checkpoints carry a checksum: when the newest one is damaged, --resume names the newest
valid earlier checkpoint and --resume-fallback resumes from it.
"""


@click.command(name="train", epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", required=True, metavar="CFG",
              help="YAML config file (e.g. configs/toy.yaml).")
@click.option("--data", "data_root", metavar="ROOT", help="Dataset root (overrides data.root).")
@click.option("--output", "output_dir", metavar="DIR", help="Output folder (overrides output_dir).")
@click.option("--resume", is_flag=True,
              help="Continue from the checkpoint named by DIR/last_checkpoint (same state and data order).")
@click.option("--resume-fallback", is_flag=True,
              help="Like --resume, but when that checkpoint is damaged resume from the newest valid earlier one.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config value, e.g. --set solver.lr=0.0005 (repeatable).")
@click.option("--threads", type=click.IntRange(min=1), metavar="N",
              help="CPU threads for the network (default: the cores this process may use, shared among "
                   "torchrun's local processes, at most 8; data-loading workers use one thread each). "
                   "Idle threads sleep (OMP_WAIT_POLICY=PASSIVE), so a busy neighbour costs only its "
                   "share; on a machine of your own OMP_WAIT_POLICY=ACTIVE can be ~20% faster.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(config_path, data_root, output_dir, resume, resume_fallback, overrides, threads, quiet):
    """Train a Panoptic-DeepLab model.

    Writes checkpoints (model_<iter>.pt, model_final.pt), metrics.jsonl, TensorBoard scalars and the
    final PQ / SQ / RQ / mIoU on the val split into the output folder.
    """
    import logging

    from pdlkit.config import load_config
    from pdlkit.threads import configure_threads

    cfg = load_config(config_path, overrides, overrides_source="--set")
    # --data / --output are paths, not YAML values: set them verbatim, after (and over) --set.
    if data_root is not None:
        cfg.data.root = data_root
    if output_dir is not None:
        cfg.output_dir = output_dir
    _check_data_root(cfg.data.root)
    configure_threads(threads)

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = _train(cfg, resume=resume or resume_fallback, resume_fallback=resume_fallback, quiet=quiet)
    if "checkpoint" in result:  # rank 0
        click.echo(f"model: {result['checkpoint']}")
        headline = [(key, result[key]) for key in ("PQ", "SQ", "RQ", "mIoU") if key in result]
        if headline:
            click.echo(", ".join(f"{key} {value:.2f}" for key, value in headline))
        if "eval_error" in result:
            click.echo(f"the final evaluation failed ({result['eval_error']}); the model is saved", err=True)


def _check_data_root(root: str) -> None:
    from pathlib import Path

    if not Path(root).is_dir():
        raise click.ClickException(f"{root}: dataset root not found (set it with --data or data.root)")


def _train(cfg, *, resume: bool, resume_fallback: bool, quiet: bool) -> dict:
    """The library call, with its errors said in terms of this command's flags."""
    import functools
    import sys

    from pdlkit.engine import DamagedResumeError, TrainingInterrupted, train
    from pdlkit.evaluation.split import evaluate_model

    evaluate = functools.partial(evaluate_model, cfg=cfg, work_dir=cfg.output_dir)
    try:
        return train(cfg, resume=resume, resume_fallback=resume_fallback, progress=not quiet, evaluate=evaluate)
    except TrainingInterrupted as exc:
        click.echo(f"{exc}; continue with --resume", err=True)
        sys.exit(128 + int(exc.signum))  # the shell convention for "killed by signal N"
    except DamagedResumeError as exc:
        where = (f"the newest valid earlier checkpoint is {exc.fallback}; add --resume-fallback to resume from it"
                 if exc.fallback else f"no valid earlier checkpoint is in {exc.damaged.parent}")
        raise click.ClickException(f"{exc.damaged}: {exc.reason}; {where}") from None
