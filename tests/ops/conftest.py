"""Markers shared by the op tests."""
from __future__ import annotations

import pytest
import torch

from pdlkit.ops import native_available

needs_native = pytest.mark.skipif(
    not native_available(), reason="pdlkit._C is not built (pip install --no-build-isolation -e .)"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
