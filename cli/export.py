"""``pdl export``: a checkpoint's network as ONNX or TorchScript."""
from __future__ import annotations

import click


@click.command("export")
@click.argument("checkpoint", metavar="CKPT")
@click.option("--format", "format_", type=click.Choice(["onnx", "torchscript"]), default="onnx", show_default=True,
              help="onnx: for onnxruntime and pdl predict --weights FILE.onnx; torchscript: for libtorch.")
@click.option("--output", "-o", required=True, metavar="FILE", help="The file to write (e.g. model.onnx).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (17 or newer).")
def command(checkpoint, format_, output, opset):
    """Export the network of CKPT: images [N, 3, H, W] (normalised RGB) -> semantic logits
    [N, C, H, W], center heatmap [N, 1, H, W], offsets [N, 2, H, W] (y, x), with dynamic N, H, W.

    The checkpoint's config and dataset spec are stored in the file (ONNX metadata_props as JSON;
    TorchScript extra files), so the file alone is enough for pdl predict.

    \b
    Examples:
      pdl export runs/toy/model_final.pt --format onnx --output toy.onnx
      pdl predict images/ --weights toy.onnx --output preds
      pdl export r52_dc5_d2.pt --format torchscript --output r52.ts
    """
    from pdlkit.export import export_checkpoint

    path = export_checkpoint(checkpoint, output, format=format_, opset=opset)
    click.echo(f"exported {checkpoint} as {format_} to {path}")
