"""The one backend policy of pdlkit.ops: names, fallback with one warning, clear errors."""
from __future__ import annotations

import warnings

import pytest
import torch

from pdlkit.errors import PdlError
from pdlkit.ops import (
    _backend,
    encode_targets,
    encode_targets_reference,
    find_instance_centers,
    find_instance_centers_reference,
    panoptic_merge,
    panoptic_merge_reference,
)
from pdlkit.ops._backend import NativeOpsUnavailable, use_native

HEATMAP = torch.zeros(6, 8)
HEATMAP[2, 3] = 0.9
LABELS = torch.zeros(6, 8, dtype=torch.int64)
LABELS[1:4, 2:5] = 2
PANOPTIC = torch.zeros(6, 8, dtype=torch.int32)
PANOPTIC[1:4, 2:5] = 7
SEGMENTS = torch.tensor([[0, 0, 0, 0], [7, 2, 1, 0]])


def call_all(backend):
    """The three ops on one small scene with ``backend``."""
    return (
        find_instance_centers(HEATMAP, nms_kernel=3, backend=backend),
        encode_targets(PANOPTIC, SEGMENTS, sigma=1.0, backend=backend),
        panoptic_merge(LABELS, HEATMAP, torch.zeros(2, 6, 8), [2], stuff_area=1, nms_kernel=3, backend=backend),
    )


@pytest.fixture
def without_extension(monkeypatch):
    """As if pdlkit._C could not be imported (the policy's caches reset around the test)."""
    monkeypatch.setattr(_backend, "_load_native", lambda: "No module named 'pdlkit._C'")
    monkeypatch.setattr(_backend, "_warned", set())


def test_unknown_backend_name_is_refused_by_every_op():
    for call in (lambda: find_instance_centers(HEATMAP, backend="fast"),
                 lambda: encode_targets(PANOPTIC, SEGMENTS, backend="fast"),
                 lambda: panoptic_merge(LABELS, HEATMAP, torch.zeros(2, 6, 8), [2], backend="fast")):
        with pytest.raises(ValueError, match="backend must be one of"):
            call()


def test_native_without_extension_is_a_clear_error(without_extension):
    for call in (lambda: find_instance_centers(HEATMAP, backend="native"),
                 lambda: encode_targets(PANOPTIC, SEGMENTS, backend="native"),
                 lambda: panoptic_merge(LABELS, HEATMAP, torch.zeros(2, 6, 8), [2], backend="native")):
        with pytest.raises(NativeOpsUnavailable, match="cannot be imported.*pip install"):
            call()
    assert issubclass(NativeOpsUnavailable, PdlError)


def test_auto_without_extension_falls_back_with_one_warning(without_extension):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        centers, targets, merged = call_all("auto")
        call_all("auto")
    assert [str(w.message).count("pure-torch reference") for w in caught] == [1]
    expected_centers = find_instance_centers_reference(HEATMAP, nms_kernel=3)
    assert all(torch.equal(a, b) for a, b in zip(centers, expected_centers))
    expected_targets = encode_targets_reference(PANOPTIC, SEGMENTS, sigma=1.0)
    assert all(torch.equal(targets[k], expected_targets[k]) for k in expected_targets)
    expected = panoptic_merge_reference(LABELS, HEATMAP, torch.zeros(2, 6, 8), [2], stuff_area=1, nms_kernel=3)
    assert torch.equal(merged.panoptic, expected.panoptic)


def test_cuda_tensors_without_cuda_kernels(monkeypatch):
    # The policy looks only at the device, so this needs no GPU.
    monkeypatch.setattr(_backend, "native_cuda_available", lambda: False)
    monkeypatch.setattr(_backend, "_warned", set())
    if _backend.native_available():
        with pytest.raises(NativeOpsUnavailable, match="without its CUDA kernels.*PDL_WITH_CUDA=1"):
            use_native("native", "cuda")
    with pytest.warns(RuntimeWarning, match="reference"):
        assert use_native("auto", torch.device("cuda")) is False
    assert use_native("reference", "cuda") is False


def test_devices_without_kernels(monkeypatch):
    monkeypatch.setattr(_backend, "_load_native", lambda: None)
    with pytest.raises(NativeOpsUnavailable, match="no kernels for mps"):
        use_native("native", "mps")
    assert use_native("native", "cpu") is True
    assert use_native("native", "meta") is True  # the fake kernels
