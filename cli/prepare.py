"""``pdl prepare``: the toy dataset, Cityscapes and COCO panoptic made ready for training."""
from __future__ import annotations

import functools

import click


def _user_errors(func):
    """PdlError -> one-sentence message, exit code 1 (also when this group runs outside ``pdl``)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from pdlkit.errors import PdlError

        try:
            return func(*args, **kwargs)
        except PdlError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group("prepare", context_settings={"help_option_names": ["-h", "--help"]})
def command():
    """Write the toy dataset, or prepare Cityscapes / COCO panoptic for training.

    \b
    Examples:
      pdl prepare toy datasets/toy
      pdl prepare toy datasets/toy-big --train 200 --val 50 --height 256 --width 512 --seed 1
      pdl prepare cityscapes datasets/cityscapes
      pdl prepare coco datasets/coco
    """


@command.command("toy")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--train", "train", default=40, show_default=True, type=click.IntRange(min=0),
              help="Number of training images.")
@click.option("--val", "val", default=10, show_default=True, type=click.IntRange(min=0),
              help="Number of validation images.")
@click.option("--height", default=128, show_default=True, type=click.IntRange(min=32), help="Image height.")
@click.option("--width", default=256, show_default=True, type=click.IntRange(min=32), help="Image width.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed; same seed, same files.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_user_errors
def toy(out, train, val, height, width, seed, quiet):
    """Generate a synthetic street-scene dataset in the Cityscapes layout and prepare it.

    Writes OUT/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and OUT/gtFine/... (labelIds,
    instanceIds, color, polygons json) with real Cityscapes label ids, then what `pdl prepare
    cityscapes` creates (labelTrainIds, panoptic json + pngs).

    \b
    Examples:
      pdl prepare toy datasets/toy
      pdl prepare toy /tmp/toy --train 6 --val 3 --height 64 --width 128
    """
    from pdlkit.data.prepare import prepare_toy

    root = prepare_toy(out, train=train, val=val, height=height, width=width, seed=seed, progress=not quiet)
    click.echo(f"toy dataset ready in {root} ({train} train, {val} val images of {height}x{width}, seed {seed})")


@command.command("cityscapes")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@_user_errors
def cityscapes(root, quiet):
    """Check a Cityscapes folder and create labelTrainIds and the panoptic ground truth.

    ROOT must hold leftImg8bit/ and gtFine/ as downloaded.  Creates *_gtFine_labelTrainIds.png and
    gtFine/cityscapes_panoptic_{split}.json + gtFine/cityscapes_panoptic_{split}/ with cityscapesscripts;
    existing outputs are kept, so an interrupted run can simply be repeated.

    \b
    Example:
      pdl prepare cityscapes datasets/cityscapes
    """
    from pdlkit.data.prepare import prepare_cityscapes

    summary = prepare_cityscapes(root, progress=not quiet)
    written = ", ".join(summary["panoptic_written"]) or "none"
    skipped = ", ".join(summary["panoptic_skipped"]) or "none"
    click.echo(f"{root}: labelTrainIds written {summary['train_ids_written']}, kept {summary['train_ids_skipped']}; "
               f"panoptic splits written: {written}, kept: {skipped}")


@command.command("coco")
@click.argument("root", type=click.Path(file_okay=False))
@_user_errors
def coco(root):
    """Check a COCO panoptic folder and write its category map.

    ROOT must hold annotations/panoptic_{train,val}2017.json, the panoptic pngs
    (annotations/panoptic_{split}2017/ or panoptic_{split}2017/) and the images ({train,val}2017/).
    Writes ROOT/pdlkit_coco_categories.json (train id t = t-th category by ascending id).

    \b
    Example:
      pdl prepare coco datasets/coco
    """
    from pdlkit.data.prepare import prepare_coco

    content = prepare_coco(root)
    spec = content["spec"]
    things = sum(spec["is_thing"])
    click.echo(f"{root}: {len(spec['class_names'])} categories ({things} things, "
               f"{len(spec['class_names']) - things} stuff); train {content['num_annotations']['train']}, "
               f"val {content['num_annotations']['val']} images")
