"""Hypothesis fuzzing of the three ops, native against reference; run as a script in a subprocess
by test_fuzz.py so that a crash of the native code fails that test instead of killing pytest.

For every generated call (random shapes including 0-size ones, dtypes, memory layouts, NaN / Inf,
extreme ids, sigma, offsets, NMS kernels and top_k) both backends must either raise the same
exception type or return equal results (integers exactly, floats within 1e-6).  Each case is
printed before it runs, so a crash names the input that caused it.

    python tests/ops/fuzz_ops.py EXAMPLES SEED
"""
from __future__ import annotations

import sys

import torch
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from pdlkit.ops import encode_targets, find_instance_centers, panoptic_merge

FLOAT_EDGES = [0.0, -0.0, 0.5, 1.0, -1.0, 1e30, -1e30, 1e6, float("inf"), float("-inf"), float("nan")]
INT_EDGES = [0, 1, -1, 2**31 - 1, -(2**31), 2**62, -(2**63), 2**63 - 1]


def outcome(call):
    try:
        return "ok", call()
    except Exception as exc:  # noqa: BLE001 - the type is what is compared
        return "error", type(exc)


def assert_same(native, reference, describe: str):
    assert native[0] == reference[0], f"{describe}: native {native}, reference {reference}"
    if native[0] == "error":
        assert native[1] is reference[1], f"{describe}: native raised {native[1]}, reference {reference[1]}"
        return
    assert_equal(native[1], reference[1], describe)


def assert_equal(a, b, describe: str):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_equal(a[key], b[key], f"{describe} [{key}]")
    elif isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            assert_equal(x, y, describe)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{describe}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6, equal_nan=True, msg=describe)
        else:
            assert torch.equal(a, b), f"{describe}:\n{a}\n{b}"
    else:  # a PanopticResult
        for field in ("panoptic", "semantic", "ids", "classes", "centers", "objectness", "class_scores", "scores"):
            assert_equal(getattr(a, field), getattr(b, field), f"{describe} .{field}")


@st.composite
def layouts(draw, tensor: torch.Tensor) -> torch.Tensor:
    """The same values in another memory layout: contiguous, transposed storage, or strided."""
    kind = draw(st.sampled_from(["contiguous", "transposed", "strided"]))
    if kind == "transposed" and tensor.dim() >= 2:
        return tensor.transpose(-1, -2).contiguous().transpose(-1, -2)
    if kind == "strided":
        wide = torch.zeros(tensor.shape[:-1] + (2 * tensor.shape[-1],), dtype=tensor.dtype)
        wide[..., ::2] = tensor
        return wide[..., ::2]
    return tensor


@st.composite
def float_maps(draw, shape, special: float = 0.1) -> torch.Tensor:
    numel = 1
    for size in shape:
        numel *= size
    values = draw(st.lists(st.floats(-2, 2, width=32) | st.sampled_from([0.05, 0.3, 0.9]), min_size=numel,
                           max_size=numel))
    tensor = torch.tensor(values, dtype=torch.float32).reshape(shape)
    if numel and draw(st.floats(0, 1)) < special:
        tensor.view(-1)[draw(st.integers(0, numel - 1))] = draw(st.sampled_from(FLOAT_EDGES))
    return draw(layouts(tensor))


sizes = st.integers(0, 7)
kernels = st.sampled_from([1, 3, 5, 7, 2, 0, -1])
top_ks = st.sampled_from([1, 2, 3, 200, 0, -5, 2**40])
thresholds = st.sampled_from([0.1, 0.0, -1.0, 0.5, float("inf"), float("-inf"), float("nan")])


@st.composite
def center_cases(draw):
    shape = draw(st.sampled_from([(), (1,)])) + (draw(sizes), draw(sizes))
    heatmap = draw(float_maps(shape))
    if draw(st.floats(0, 1)) < 0.05:
        heatmap = heatmap.to(draw(st.sampled_from([torch.float64, torch.float16, torch.int32])))
    return heatmap, dict(threshold=draw(thresholds), nms_kernel=draw(kernels), top_k=draw(top_ks))


@st.composite
def encode_cases(draw):
    height, width = draw(sizes), draw(sizes)
    dtype = draw(st.sampled_from([torch.int32, torch.int64, torch.int64, torch.int16]))
    limits = torch.iinfo(dtype)
    extremes = [v for v in INT_EDGES + [1000] if limits.min <= v <= limits.max]
    pool = draw(st.lists(st.sampled_from([0, 1, 2, 3] + extremes), min_size=1, max_size=4))
    ids = draw(st.lists(st.sampled_from(pool), min_size=height * width, max_size=height * width))
    panoptic = draw(layouts(torch.tensor(ids, dtype=dtype).reshape(height, width)))
    rows = draw(st.lists(st.tuples(st.sampled_from(pool + [7]), st.sampled_from([0, 1, 11, 254, 255, 256, -1]),
                                   st.sampled_from([0, 1, 1, 2]), st.sampled_from([0, 0, 1])), max_size=4))
    segments = torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)
    options = dict(
        sigma=draw(st.sampled_from([0.5, 1.0, 8.0, 1e-6, 1e12, 1e16, 1e-200, 0.0, -1.0, float("nan")])),
        ignore_label=draw(st.sampled_from([255, 0, 11, -1, 2**40])),
        small_instance_area=draw(st.sampled_from([0, 1, 3, 4096, -1])),
        small_instance_weight=draw(st.sampled_from([3.0, 0.0, float("inf")])),
        ignore_stuff_in_offset=draw(st.booleans()),
        ignore_crowd_in_semantic=draw(st.booleans()),
    )
    return panoptic, segments, options


@st.composite
def merge_cases(draw):
    height, width = draw(sizes), draw(sizes)
    classes = draw(st.integers(1, 4))
    if draw(st.booleans()):
        semantic = draw(float_maps((classes, height, width), special=0.05))
    else:
        dtype = draw(st.sampled_from([torch.int64, torch.int32, torch.uint8, torch.int16, torch.int8]))
        values = draw(st.lists(st.integers(0, classes - 1) | st.sampled_from([-1, 1000]), min_size=height * width,
                               max_size=height * width))
        values = [v % 256 if dtype == torch.uint8 else max(min(v, 127), -128) if dtype == torch.int8 else v
                  for v in values]
        semantic = draw(layouts(torch.tensor(values, dtype=dtype).reshape(height, width)))
    heatmap = draw(float_maps(draw(st.sampled_from([(), (1,)])) + (height, width), special=0.05))
    scale = draw(st.sampled_from([0.0, 1.0, 3.0, 1e6, 1e30]))
    offsets = draw(float_maps((2, height, width), special=0.05)) * scale
    options = dict(
        label_divisor=draw(st.sampled_from([1000, 1, 3, 2**30, 2**31])),
        stuff_area=draw(st.sampled_from([0, 1, 4, -1])),
        void_label=draw(st.sampled_from([-1, 0, 255, 2**31])),
        threshold=draw(thresholds), nms_kernel=draw(kernels), top_k=draw(top_ks),
    )
    things = draw(st.lists(st.integers(-1, classes), max_size=3))
    return semantic, heatmap, offsets, things, options


def describe(*parts) -> str:
    shapes = [f"{p.dtype}{tuple(p.shape)}" if isinstance(p, torch.Tensor) else repr(p) for p in parts]
    return ", ".join(shapes)


def run(examples: int, random_seed: int) -> None:
    config = settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck))

    @seed(random_seed)
    @config
    @given(center_cases())
    def centers(case):
        heatmap, options = case
        print("find_instance_centers", describe(heatmap, options), flush=True)
        assert_same(outcome(lambda: find_instance_centers(heatmap, backend="native", **options)),
                    outcome(lambda: find_instance_centers(heatmap, backend="reference", **options)), "centers")

    @seed(random_seed)
    @config
    @given(encode_cases())
    def targets(case):
        panoptic, segments, options = case
        print("encode_targets", describe(panoptic, segments, options), flush=True)
        assert_same(outcome(lambda: encode_targets(panoptic, segments, backend="native", **options)),
                    outcome(lambda: encode_targets(panoptic, segments, backend="reference", **options)), "targets")

    @seed(random_seed)
    @config
    @given(merge_cases())
    def merge(case):
        semantic, heatmap, offsets, things, options = case
        print("panoptic_merge", describe(semantic, heatmap, offsets, things, options), flush=True)
        assert_same(outcome(lambda: panoptic_merge(semantic, heatmap, offsets, things, backend="native", **options)),
                    outcome(lambda: panoptic_merge(semantic, heatmap, offsets, things, backend="reference",
                                                   **options)), "merge")

    for test in (centers, targets, merge):
        test()
    print("fuzz: all cases agree", flush=True)


if __name__ == "__main__":
    torch.set_num_threads(1)
    run(int(sys.argv[1]), int(sys.argv[2]))
