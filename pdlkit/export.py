"""Export a checkpoint's network to ONNX or TorchScript for deployment.

The exported graph is the network only (pre- and post-processing stay outside, as in ``pdl predict``)::

    images    [N, 3, H, W] float32, RGB normalised with the config's data.mean / data.std
    -> semantic [N, C, H, W] logits, center [N, 1, H, W] heatmap, offset [N, 2, H, W] (y, x) in pixels

with N, H and W dynamic.  The graph zero-pads H and W up to a multiple of ``size_divisibility`` (the
backbone's output stride) and crops the outputs back, exactly like ``PanopticDeepLab.forward``.  One
limitation of tracing: an ASPP whose image pooling uses a fixed window (``model.aspp_pooling_size``,
the detectron2 checkpoints) keeps the window traced at export time, which is the configured window
when the export example is at least that large (it is: the example is the pooling size); inputs
smaller than the window then need PyTorch (which clips the window) rather than the exported graph.

The checkpoint's config and dataset spec travel with the file, so ``pdl predict --weights model.onnx``
needs nothing else:

- ONNX: ``metadata_props`` ``pdlkit_config`` (``Config.to_dict()`` as JSON), ``pdlkit_dataset``
  (``DatasetSpec.to_dict()`` as JSON), ``pdlkit_version``, ``size_divisibility``; opset >= 17.
- TorchScript: ``_extra_files`` ``config.json``, ``dataset.json``, ``pdlkit.json`` (version and
  size divisibility), read back with ``torch.jit.load(path, _extra_files=...)``.

Files are written to a temporary name beside the output and renamed (never half-written).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

from . import __version__
from .checkpoint import load_model
from .errors import PdlError
from .fileio import atomic_path

__all__ = [
    "FORMATS",
    "MIN_OPSET",
    "ExportableNetwork",
    "export_model",
    "export_checkpoint",
    "read_export_metadata",
    "load_checkpoint_model",
]

FORMATS = ("onnx", "torchscript")
MIN_OPSET = 17
OUTPUT_NAMES = ("semantic", "center", "offset")


class ExportableNetwork(nn.Module):
    """``PanopticDeepLab`` as ``images -> (semantic, center, offset)`` with traceable padding.

    The padding amounts are computed from the traced input size, so the exported graph pads any
    H x W (the model's own padding step then sees a multiple of the stride and does nothing).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.size_divisibility = int(getattr(model, "size_divisibility", 1) or 1)

    def forward(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        height, width = images.shape[-2], images.shape[-1]
        divisor = self.size_divisibility
        pad_bottom = (divisor - height % divisor) % divisor
        pad_right = (divisor - width % divisor) % divisor
        padded = F.pad(images, [0, pad_right, 0, pad_bottom])
        outputs = self.model(padded)
        return tuple(outputs[name][:, :, :height, :width] for name in OUTPUT_NAMES)  # type: ignore[return-value]


def load_checkpoint_model(checkpoint_path: str | os.PathLike):
    """(model in eval mode, Config, DatasetSpec) of a pdlkit checkpoint (:func:`pdlkit.checkpoint.load_model`)."""
    return load_model(checkpoint_path)


def _require_onnx():
    """The ``onnx`` module, or a :class:`PdlError` saying which package to install."""
    try:
        import onnx
    except ImportError:
        raise PdlError("ONNX export needs the onnx package, which is not installed: pip install onnx") from None
    return onnx


def _example_size(cfg, divisor: int) -> Tuple[int, int]:
    pooling = getattr(cfg.model, "aspp_pooling_size", None)
    if pooling:
        return int(pooling[0]), int(pooling[1])
    return 4 * divisor, 8 * divisor


def _metadata(cfg, spec, divisor: int) -> Dict[str, str]:
    return {
        "pdlkit_config": json.dumps(cfg.to_dict(), sort_keys=True),
        "pdlkit_dataset": json.dumps(spec.to_dict(), sort_keys=True),
        "pdlkit_version": str(__version__),
        "size_divisibility": str(divisor),
        "pdlkit_io": json.dumps(
            {
                "input": "images [N, 3, H, W] float32 RGB, (pixel - data.mean) / data.std",
                "outputs": {
                    "semantic": "[N, C, H, W] logits",
                    "center": "[N, 1, H, W] heatmap",
                    "offset": "[N, 2, H, W] (y, x) pixels",
                },
            }
        ),
    }


def _export_onnx(network: ExportableNetwork, example: torch.Tensor, tmp: Path, metadata: Dict[str, str], opset: int):
    onnx = _require_onnx()

    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}}
    dynamic.update({name: {0: "batch", 2: "height", 3: "width"} for name in OUTPUT_NAMES})
    with warnings.catch_warnings():
        # the tracer warns about Python control flow it turns into constants (checked by the tests)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(tmp),
            dynamo=False,  # the torch.export-based exporter needs onnxscript, which is not a dependency
            opset_version=opset,
            input_names=["images"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic,
            do_constant_folding=True,
        )
    model_proto = onnx.load(str(tmp))
    del model_proto.metadata_props[:]
    for key, value in metadata.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    model_proto.producer_name = "pdlkit"
    onnx.checker.check_model(model_proto)
    onnx.save(model_proto, str(tmp))


def _export_torchscript(network: ExportableNetwork, example: torch.Tensor, tmp: Path, metadata: Dict[str, str]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(network, (example,), check_trace=False)
    extra = {
        "config.json": metadata["pdlkit_config"],
        "dataset.json": metadata["pdlkit_dataset"],
        "pdlkit.json": json.dumps(
            {"pdlkit_version": metadata["pdlkit_version"], "size_divisibility": int(metadata["size_divisibility"])}
        ),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        torch.jit.save(traced, str(tmp), _extra_files=extra)


def export_model(
    model: nn.Module,
    cfg,
    spec,
    output: str | os.PathLike,
    *,
    format: str = "onnx",
    opset: int = MIN_OPSET,
    example_size: Optional[Tuple[int, int]] = None,
) -> Path:
    """Export ``model`` (a ``PanopticDeepLab``) with ``cfg`` / ``spec`` as metadata to ``output``.

    The model is moved to the CPU and left in eval mode.  ``example_size`` (H, W) is the traced
    example; by default the ASPP pooling window when the config sets one, else 4 x 8 strides.
    """
    if format not in FORMATS:
        raise PdlError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "onnx" and opset < MIN_OPSET:
        raise PdlError(f"ONNX opset {opset} is too old; pdlkit exports opset {MIN_OPSET} or newer")
    if format == "onnx":
        _require_onnx()  # before any work, so that nothing is traced for nothing
    output = Path(output)
    model = model.cpu().eval()
    network = ExportableNetwork(model).eval()
    divisor = network.size_divisibility
    height, width = example_size or _example_size(cfg, divisor)
    example = torch.zeros(1, 3, height, width)
    metadata = _metadata(cfg, spec, divisor)
    try:
        with atomic_path(output) as tmp, torch.no_grad():
            if format == "onnx":
                _export_onnx(network, example, tmp, metadata, opset)
            else:
                _export_torchscript(network, example, tmp, metadata)
    finally:
        model.eval()  # the ONNX exporter restores the wrapper's mode; keep the model in eval
    return output


def export_checkpoint(
    checkpoint: str | os.PathLike, output: str | os.PathLike, *, format: str = "onnx", opset: int = MIN_OPSET
) -> Path:
    """``pdl export``: a pdlkit checkpoint -> an ONNX or TorchScript file with its metadata."""
    model, cfg, spec = load_checkpoint_model(checkpoint)
    return export_model(model, cfg, spec, output, format=format, opset=opset)


def read_export_metadata(path: str | os.PathLike) -> dict:
    """``{"config": dict, "dataset": dict, "pdlkit_version": str, "size_divisibility": int}`` of an
    exported file (ONNX or TorchScript, by extension: ``.onnx`` / anything else)."""
    path = Path(path)
    if not path.is_file():
        raise PdlError(f"{path}: exported model file not found")
    if path.suffix.lower() == ".onnx":
        onnx = _require_onnx()

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise PdlError(f"{path}: not a readable ONNX file ({str(exc).strip().splitlines()[0]})") from None
        props = {p.key: p.value for p in proto.metadata_props}
        return _parse_metadata(path, props.get("pdlkit_config"), props.get("pdlkit_dataset"),
                               props.get("pdlkit_version"), props.get("size_divisibility"))
    extra = {"config.json": "", "dataset.json": "", "pdlkit.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise PdlError(f"{path}: not a readable TorchScript file ({str(exc).strip().splitlines()[0]})") from None
    info = json.loads(extra["pdlkit.json"]) if extra["pdlkit.json"] else {}
    return _parse_metadata(path, extra["config.json"] or None, extra["dataset.json"] or None,
                           info.get("pdlkit_version"), info.get("size_divisibility"))


def _parse_metadata(path: Path, config, dataset, version, divisor) -> dict:
    if not config or not dataset:
        raise PdlError(f"{path}: has no pdlkit metadata (config and dataset); export it with `pdl export`")
    try:
        return {
            "config": json.loads(config),
            "dataset": json.loads(dataset),
            "pdlkit_version": version,
            "size_divisibility": int(divisor or 1),
        }
    except (json.JSONDecodeError, ValueError) as exc:
        raise PdlError(f"{path}: its pdlkit metadata is malformed ({exc})") from None
