"""find_instance_centers: hand-made cases, native == reference on generated heatmaps, bad input."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdlkit.ops import native_available
from pdlkit.ops.center_nms import (
    find_instance_centers,
    find_instance_centers_batched,
    find_instance_centers_reference,
)


needs_native = pytest.mark.skipif(
    not native_available(),
    reason="pdlkit._C is not built (pip install --no-build-isolation -e .)",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
BACKENDS = ["reference", pytest.param("native", marks=needs_native)]

# Peaks: (1, 1) 0.5 beside weaker 0.2 / 0.3; (2, 4) 0.9; a plateau 0.7, 0.7 at (4, 2), (4, 3);
# 0.05 at (3, 0) is under the threshold.
HAND_HEATMAP = torch.tensor(
    [
        [0.0, 0.2, 0.0, 0.0, 0.0],
        [0.0, 0.5, 0.3, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0, 0.9],
        [0.05, 0.0, 0.0, 0.0, 0.0],
        [0.0, 0.0, 0.7, 0.7, 0.0],
    ]
)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "nms_kernel, top_k, threshold, expected",
    [
        (3, 200, 0.1, [(1, 1), (2, 4), (4, 2), (4, 3)]),  # both plateau pixels equal their window max
        (3, 5, 0.1, [(1, 1), (2, 4), (4, 2), (4, 3)]),  # 4 peaks < k = 5: all kept
        (3, 4, 0.1, [(2, 4), (4, 2), (4, 3)]),  # kth = 0.5: only values > 0.5 stay
        (3, 3, 0.1, [(2, 4)]),  # kth = 0.7 removes the plateau
        (1, 200, 0.25, [(1, 1), (1, 2), (2, 4), (4, 2), (4, 3)]),  # 1x1 window: all above 0.25
        (1, 200, 0.1, [(0, 1), (1, 1), (1, 2), (2, 4), (4, 2), (4, 3)]),
        (5, 200, 0.1, [(1, 1), (2, 4)]),  # 0.9 suppresses the plateau two rows below
        (3, 200, 0.8, [(2, 4)]),
    ],
)
def test_hand_made(backend, nms_kernel, top_k, threshold, expected):
    centers, scores = find_instance_centers(HAND_HEATMAP, threshold=threshold, nms_kernel=nms_kernel,
                                            top_k=top_k, backend=backend)
    assert centers.dtype == torch.int64 and scores.dtype == torch.float32
    assert centers.tolist() == [list(c) for c in expected]
    assert scores.tolist() == [HAND_HEATMAP[y, x].item() for y, x in expected]


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_threshold_keeps_only_positive_values(backend):
    heatmap = torch.tensor([[-0.2, -0.5, 0.0], [-0.9, -0.1, 0.3]])
    centers, scores = find_instance_centers(heatmap, threshold=-1.0, nms_kernel=1, top_k=100,
                                            backend=backend)
    assert centers.tolist() == [[1, 2]]
    assert scores.tolist() == [pytest.approx(0.3)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "rows, expected",
    [
        ([[]], []),
        ([[0.5]], []),  # k = min(top_k, H * W) = 1 and one peak: kth = 0.5, nothing is above it
        ([[0.5, 0.2]], [[0, 0]]),  # k = 2 > one survivor: kth <= 0, the peak stays
        ([[0.2], [0.5]], [[1, 0]]),
    ],
)
def test_tiny_and_empty(backend, rows, expected):
    heatmap = torch.tensor(rows, dtype=torch.float32)
    centers, scores = find_instance_centers(heatmap, backend=backend)
    assert centers.tolist() == expected and centers.shape == (len(expected), 2)
    assert scores.tolist() == [heatmap[y, x].item() for y, x in expected]
    empty = torch.zeros((3, 0))
    assert find_instance_centers(empty, backend=backend)[0].shape == (0, 2)


def _random_heatmap(seed: int, height: int, width: int, levels: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand((height, width), generator=generator)
    # Few levels make ties between neighbours (plateaus) and between peaks (the kth value).
    return (values * levels).floor() / levels


SIZES = st.one_of(st.integers(1, 24), st.sampled_from([31, 64, 65, 257]))


@needs_native
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    height=SIZES,
    width=st.one_of(st.integers(1, 24), st.sampled_from([32, 63, 513])),
    levels=st.sampled_from([2, 5, 50, 100000]),
    nms_kernel=st.sampled_from([1, 3, 5, 7, 9]),
    top_k=st.one_of(st.integers(1, 10), st.integers(11, 301)),
    threshold=st.sampled_from([-0.5, 0.0, 0.1, 0.4, 0.95]),
)
def test_native_equals_reference(seed, height, width, levels, nms_kernel, top_k, threshold):
    heatmap = _random_heatmap(seed, height, width, levels)
    expected = find_instance_centers_reference(heatmap, threshold=threshold, nms_kernel=nms_kernel, top_k=top_k)
    got = find_instance_centers(heatmap, threshold=threshold, nms_kernel=nms_kernel, top_k=top_k,
                                backend="native")
    assert torch.equal(got[0], expected[0])
    assert torch.equal(got[1], expected[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_layouts_give_the_same_centers(backend):
    heatmap = _random_heatmap(3, 40, 56, 7)
    expected = find_instance_centers(heatmap, nms_kernel=3, backend=backend)
    transposed = heatmap.t().contiguous().t()  # same values, column-major strides
    channels_last = heatmap[None, None].contiguous(memory_format=torch.channels_last)[0]  # [1, H, W]
    strided = torch.zeros(40, 112)[:, ::2]
    strided.copy_(heatmap)
    for variant in (transposed, channels_last, strided, heatmap[None]):
        got = find_instance_centers(variant, nms_kernel=3, backend=backend)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_matches_single(backend):
    heatmaps = torch.stack([_random_heatmap(s, 20, 30, 9) for s in range(3)])
    for batch in (heatmaps, heatmaps[:, None]):
        results = find_instance_centers_batched(batch, nms_kernel=3, top_k=7, backend=backend)
        assert len(results) == 3
        for heatmap, (centers, scores) in zip(heatmaps, results):
            expected = find_instance_centers(heatmap, nms_kernel=3, top_k=7, backend=backend)
            assert torch.equal(centers, expected[0]) and torch.equal(scores, expected[1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "heatmap, kwargs, match",
    [
        (torch.zeros(4, 4, dtype=torch.float64), {}, "float32"),
        (torch.zeros(4, 4, dtype=torch.int64), {}, "float32"),
        (torch.zeros(2, 4, 4), {}, r"\[H, W\]"),
        (torch.zeros(4), {}, r"\[H, W\]"),
        (torch.zeros(1, 1, 4, 4), {}, r"\[H, W\]"),
        (torch.zeros(4, 4), {"nms_kernel": 4}, "nms_kernel"),
        (torch.zeros(4, 4), {"nms_kernel": 0}, "nms_kernel"),
        (torch.zeros(4, 4), {"nms_kernel": -3}, "nms_kernel"),
        (torch.zeros(4, 4), {"top_k": 0}, "top_k"),
        (torch.zeros(4, 4), {"threshold": float("nan")}, "threshold"),
        (torch.tensor([[0.5, float("nan")], [0.1, 0.2]]), {}, "NaN"),
    ],
)
def test_bad_input(backend, heatmap, kwargs, match):
    with pytest.raises(ValueError, match=match):
        find_instance_centers(heatmap, backend=backend, **kwargs)


@needs_native
def test_native_op_checks_its_own_arguments():
    """C++ callers get the same checks as Python ones (the op is reachable without pdlkit.ops)."""
    op = torch.ops.pdlkit.find_instance_centers
    with pytest.raises(ValueError, match="nms_kernel"):
        op(torch.zeros(3, 3), 0.1, 2, 10)
    with pytest.raises(ValueError, match="top_k"):
        op(torch.zeros(3, 3), 0.1, 3, 0)
    with pytest.raises(ValueError, match="NaN"):
        op(torch.full((3, 3), float("nan")), 0.1, 3, 10)
    with pytest.raises(ValueError, match="float32"):
        op(torch.zeros(3, 3, dtype=torch.float64), 0.1, 3, 10)


def test_infinite_values_are_allowed():
    heatmap = torch.tensor([[float("inf"), 0.0, 0.0], [0.0, 0.0, float("-inf")], [0.0, 0.0, 0.6]])
    centers, scores = find_instance_centers_reference(heatmap, nms_kernel=3)
    assert centers.tolist() == [[0, 0], [2, 2]]
    if native_available():
        native = find_instance_centers(heatmap, nms_kernel=3, backend="native")
        assert torch.equal(native[0], centers) and torch.equal(native[1], scores)


@pytest.mark.cuda
@needs_cuda
@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_cuda_equals_cpu(seed):
    height, width = [(1, 1), (17, 33), (64, 64), (257, 513), (5, 300), (100, 7)][seed]
    heatmap = _random_heatmap(seed, height, width, [3, 50, 1000, 7, 2, 100000][seed])
    for nms_kernel, top_k in ((3, 200), (7, 5), (1, 1000)):
        cpu = find_instance_centers(heatmap, nms_kernel=nms_kernel, top_k=top_k, backend="native")
        gpu = find_instance_centers(heatmap.cuda(), nms_kernel=nms_kernel, top_k=top_k, backend="native")
        assert gpu[0].is_cuda
        assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])


@needs_native
def test_native_with_several_threads_equals_reference():
    """Row chunks run in parallel and are joined in raster order."""
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for seed in range(4):
            heatmap = _random_heatmap(seed, 400, 67, 6)
            for nms_kernel, top_k in ((1, 5000), (3, 300), (7, 20)):
                expected = find_instance_centers_reference(heatmap, nms_kernel=nms_kernel, top_k=top_k)
                got = find_instance_centers(heatmap, nms_kernel=nms_kernel, top_k=top_k, backend="native")
                assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    finally:
        torch.set_num_threads(previous)
