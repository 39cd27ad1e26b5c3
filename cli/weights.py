"""``pdl weights``: import published checkpoints (detectron2) and ImageNet backbone weights."""
from __future__ import annotations

import click


@click.group("weights")
def command():
    """Convert weights from other toolkits into pdlkit files."""


@command.command("import")
@click.argument("source", metavar="SRC")
@click.option("--from", "source_format", type=click.Choice(["detectron2", "torchvision"]), required=True,
              help="detectron2: a .pkl / .pth model-zoo file; torchvision: an ImageNet state dict (.pth).")
@click.option("--config", "-c", "config_path", metavar="CFG",
              help="The config the weights belong to (architecture, dataset, input normalisation).")
@click.option("--output", "-o", required=True, metavar="FILE", help="The pdlkit checkpoint (.pt) to write.")
@click.option("--backbone-only", is_flag=True,
              help="Import only an ImageNet backbone (detectron2's R-52.pkl) for model.pretrained.")
@click.option("--backbone", metavar="NAME", help="Backbone of a --backbone-only / torchvision import, "
              "when no --config names it (e.g. resnet50).")
@click.option("--data", metavar="ROOT", help="Dataset root for the dataset spec (COCO reads its category map there).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config value.")
def import_command(source, source_format, config_path, output, backbone_only, backbone, data, overrides):
    """Convert SRC into a pdlkit file.

    A whole detectron2 Panoptic-DeepLab checkpoint becomes a pdlkit checkpoint (model, config,
    dataset spec) for pdl eval / predict / export; every tensor is matched by an explicit name map
    and shape, and the first mismatch is reported by name.  Backbone imports write a state dict that
    training reads through `--set model.pretrained=FILE`.

    \b
    Examples:
      pdl weights import model_final_bd324a.pkl --from detectron2 \\
          --config configs/cityscapes_r52_dc5_d2.yaml --output r52_dc5_d2.pt
      pdl weights import model_final_23d03a.pkl --from detectron2 \\
          --config configs/cityscapes_r52_dc5_d2_dsconv.yaml --output r52_dc5_d2_dsconv.pt
      pdl weights import R-52.pkl --from detectron2 --backbone-only --output r52_imagenet.pt
      pdl weights import resnet50-11ad3fa6.pth --from torchvision --backbone resnet50 --output r50.pt
    """
    from pdlkit.checkpoint import import_weights_file
    from pdlkit.config import load_config

    cfg = None
    if config_path is not None:
        cfg = load_config(config_path, overrides)
        if data is not None:
            cfg.data.root = data
    report = import_weights_file(
        source, output, source_format=source_format, cfg=cfg, backbone=backbone, backbone_only=backbone_only
    )
    dropped = f"; dropped {', '.join(report.dropped)}" if report.dropped else ""
    click.echo(f"imported {report.loaded} tensors ({report.kind}) from {source} into {output}{dropped}")
