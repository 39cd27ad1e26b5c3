"""``pdl prepare``: the toy dataset, Cityscapes and any COCO-panoptic dataset made ready for training."""
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
    """Write the toy dataset, or prepare Cityscapes, COCO, Mapillary Vistas or your own
    COCO-panoptic data for training and evaluation.

    \b
    Examples:
      pdl prepare toy datasets/toy
      pdl prepare toy datasets/toy-big --train 200 --val 50 --height 256 --width 512 --seed 1
      pdl prepare cityscapes datasets/cityscapes
      pdl prepare coco datasets/coco
      pdl prepare vistas datasets/vistas
      pdl prepare panoptic data/mine --split train --images DIR --json FILE --masks DIR
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


def _summary(root, manifest) -> str:
    spec = manifest["spec"]
    things = sum(spec["is_thing"])
    splits = ", ".join(f"{name} {entry['num_images']}" for name, entry in sorted(manifest["splits"].items()))
    return (f"{root}: {len(spec['class_names'])} categories ({things} things, "
            f"{len(spec['class_names']) - things} stuff); images per split: {splits}; "
            f"train with data.dataset=coco data.root={root}")


@command.command("coco")
@click.argument("root", type=click.Path(file_okay=False))
@_user_errors
def coco(root):
    """Check a COCO panoptic 2017 folder and record its splits train and val.

    ROOT must hold annotations/panoptic_{train,val}2017.json, the panoptic pngs
    (annotations/panoptic_{split}2017/ or panoptic_{split}2017/) and the images ({train,val}2017/).
    Writes ROOT/pdlkit_dataset.json (the categories and where each split's files are).  Other
    names or locations: `pdl prepare panoptic`.

    \b
    Example:
      pdl prepare coco datasets/coco
    """
    from pdlkit.data.prepare import prepare_coco

    click.echo(_summary(root, prepare_coco(root)))


@command.command("vistas")
@click.argument("root", type=click.Path(file_okay=False))
@_user_errors
def vistas(root):
    """Check a Mapillary Vistas folder (panoptic v2.0, else v1.2) and record train and val.

    ROOT must hold {training,validation}/images/ and {training,validation}/v2.0/panoptic/
    (panoptic_2020.json and its pngs; v1.2: panoptic/panoptic_2018.json), as the download
    unpacks.  Writes ROOT/pdlkit_dataset.json; train with configs/vistas_r50.yaml.

    \b
    Example:
      pdl prepare vistas datasets/vistas
    """
    from pdlkit.data.prepare import prepare_vistas

    click.echo(_summary(root, prepare_vistas(root)))


@command.command("panoptic")
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--split", required=True, help="Name of the split, e.g. train or val.")
@click.option("--images", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder the JSON's image file_names are relative to.")
@click.option("--json", "json_file", required=True, type=click.Path(dir_okay=False), metavar="FILE",
              help="The COCO-panoptic JSON (images, annotations, categories).")
@click.option("--masks", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Folder of the panoptic PNGs the JSON's annotations name.")
@click.option("--name", default=None, help="Dataset name stored in the spec (default: ROOT's name).")
@_user_errors
def panoptic(root, split, images, json_file, masks, name):
    """Check one split of any COCO-panoptic dataset and record it in ROOT/pdlkit_dataset.json.

    Run once per split; the files may live anywhere (paths inside ROOT are stored relative to
    it).  The JSON's categories (ids, names, isthing, colours) become the classes; every split
    must list the same ones.  Every file_name must stay inside its folder.

    \b
    Examples:
      pdl prepare panoptic data/mine --split train --images data/mine/img/train \\
          --json data/mine/ann/train.json --masks data/mine/ann/train_png
      pdl prepare panoptic data/mine --split val --images data/mine/img/val \\
          --json data/mine/ann/val.json --masks data/mine/ann/val_png
    """
    from pdlkit.data.coco_format import prepare_panoptic

    manifest = prepare_panoptic(root, split, images=images, json_file=json_file, masks=masks, name=name)
    click.echo(_summary(root, manifest))
