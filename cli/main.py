"""Entry point of ``pdl``.  Sub-commands are imported lazily so that ``pdl --help`` is instant."""
from __future__ import annotations

import importlib
import sys

import click

from pdlkit.threads import set_wait_policy

# Before anything loads torch's OpenMP runtime, which reads the wait policy once.
set_wait_policy()

# command name -> (module under pdlkit.cli, one-line help shown by `pdl --help`)
COMMANDS = {
    "prepare": ("prepare", "Write the toy dataset or prepare Cityscapes / COCO panoptic for training."),
    "train": ("train", "Train a Panoptic-DeepLab model (one process, or DDP under torchrun)."),
    "eval": ("eval", "PQ/SQ/RQ, mIoU and instance AP of a checkpoint or of saved predictions."),
    "predict": ("predict", "Panoptic segmentation of an image, a folder or a glob."),
    "visualize": ("visualize", "Overlays and panels (image, semantic, centers, offsets) as PNG."),
    "convert": ("convert", "Panoptic predictions -> instance predictions (Cityscapes or COCO)."),
    "weights": ("weights", "Import published checkpoints (detectron2) and backbone weights."),
    "export": ("export", "Export a checkpoint's network to ONNX or TorchScript."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"pdlkit.cli.{COMMANDS[name][0]}")
        return module.command

    def format_commands(self, ctx, formatter):
        rows = [(name, help_text) for name, (_, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        from pdlkit.config import ConfigError
        from pdlkit.errors import PdlError

        try:
            return super().invoke(ctx)
        except PdlError as exc:
            raise click.ClickException(_in_flag_terms(exc, self, ctx)) from None
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None


# Library parameters whose command-line option has another name.
PARAMETER_OPTIONS = {"images_dir": "images", "cfg": "config_path"}


def _in_flag_terms(exc, group: click.Group, ctx) -> str:
    """The error's message with its library parameters named by the invoked command's flags."""
    command = group.get_command(ctx, ctx.invoked_subcommand) if ctx.invoked_subcommand else None
    if command is None:
        return str(exc)
    commands = [command] + list(getattr(command, "commands", {}).values())
    flags = {option.name: max(option.opts, key=len)
             for c in commands for option in c.params if isinstance(option, click.Option)}
    names = {parameter: flags[PARAMETER_OPTIONS.get(parameter, parameter)] for parameter in exc.parameters
             if PARAMETER_OPTIONS.get(parameter, parameter) in flags}
    return exc.in_terms_of(names)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="pdlkit", prog_name="pdl")
def cli():
    """pdlkit: bottom-up panoptic segmentation (Panoptic-DeepLab).

    \b
    Quick start on the built-in toy dataset:
      pdl prepare toy datasets/toy
      pdl train --config configs/toy.yaml --data datasets/toy --output runs/toy
      pdl eval --data datasets/toy --weights runs/toy/model_final.pt
      pdl predict datasets/toy/leftImg8bit/val --weights runs/toy/model_final.pt --output preds
      pdl visualize preds --images datasets/toy/leftImg8bit/val --output vis
    """


def main(argv=None):
    return cli.main(args=argv, prog_name="pdl")


if __name__ == "__main__":
    sys.exit(main())
