"""Run an exported ONNX network (``pdl export --format onnx``) through onnxruntime.

:class:`OnnxNetwork` looks like the PyTorch model to the :class:`~pdlkit.inference.Predictor`: an
``nn.Module`` whose ``forward(images [N, 3, H, W] normalised float32)`` returns ``{"semantic":
[N, C, H, W], "center": [N, 1, H, W], "offset": [N, 2, H, W] (y, x)}`` as torch tensors, with a
``size_divisibility`` attribute.  Pre-processing, TTA and the native post-processing ops stay the
same, so ``pdl predict --weights model.onnx`` writes what the checkpoint would.

onnxruntime is an optional dependency (``pip install onnxruntime`` or ``onnxruntime-gpu``); without it
loading an ``.onnx`` file raises a :class:`~pdlkit.errors.PdlError` that says so.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn

from ..errors import PdlError

__all__ = ["OnnxNetwork", "import_onnxruntime"]


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise PdlError(
            "running .onnx weights needs onnxruntime, which is not installed: pip install onnxruntime "
            "(or onnxruntime-gpu), or pass a .pt checkpoint"
        ) from None
    return onnxruntime


class OnnxNetwork(nn.Module):
    """An onnxruntime session over a pdlkit-exported ONNX file (see the module docstring).

    Attributes from the file's metadata: ``config`` (:class:`pdlkit.config.Config`), ``spec``
    (:class:`pdlkit.data.spec.DatasetSpec`), ``size_divisibility``, ``num_classes``.
    ``device`` "cuda" uses onnxruntime's CUDA provider when it is installed, else the CPU.
    ``threads`` sets onnxruntime's intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu", *, threads: Optional[int] = None):
        super().__init__()
        from ..config import Config
        from ..data.spec import DatasetSpec

        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise PdlError(f"{path}: weights file not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PdlError(f"{path}: not a loadable ONNX file ({first})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "pdlkit_config" not in meta or "pdlkit_dataset" not in meta:
            raise PdlError(f"{path}: has no pdlkit metadata (config and dataset); export it with `pdl export`")
        try:
            self.config = Config.from_dict(json.loads(meta["pdlkit_config"]), source=str(path))
            self.spec = DatasetSpec.from_dict(json.loads(meta["pdlkit_dataset"]))
            self.size_divisibility = int(meta.get("size_divisibility", "1"))
        except (json.JSONDecodeError, ValueError) as exc:
            raise PdlError(f"{path}: its pdlkit metadata is malformed ({exc})") from None
        self.config.model.pretrained = "none"
        self.num_classes = self.spec.num_classes
        self.path = path
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != ["images"] or sorted(outputs) != ["center", "offset", "semantic"]:
            raise PdlError(
                f"{path}: expected input 'images' and outputs semantic, center, offset; found inputs "
                f"{inputs} and outputs {outputs}"
            )
        self._output_names = outputs

    def forward(self, images: torch.Tensor) -> Dict[str, torch.Tensor]:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [N, 3, H, W], got {list(images.shape)}")
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        results = self.session.run(self._output_names, {"images": array})
        return {name: torch.from_numpy(value).to(images.device) for name, value in zip(self._output_names, results)}

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, providers={self.session.get_providers()}"
