"""encode_targets: native == reference, the reference against an independent numpy version, hand-made
cases with their answers written out, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdlkit.ops import encode_targets, encode_targets_reference
from pdlkit.ops._backend import native_available
from pdlkit.ops.encode_targets import TARGET_KEYS

requires_native = pytest.mark.skipif(
    not native_available(), reason="pdlkit._C is not built (pip install --no-build-isolation -e .)"
)


def _cuda_kernels() -> bool:
    if not (torch.cuda.is_available() and native_available()):
        return False
    import pdlkit._C

    return bool(pdlkit._C.with_cuda)


requires_cuda = pytest.mark.skipif(not _cuda_kernels(), reason="needs a CUDA device and pdlkit._C with CUDA")

BACKENDS = [
    "reference",
    pytest.param("native", marks=requires_native),
]


def assert_targets_equal(actual: dict, expected: dict) -> None:
    assert set(actual) == set(TARGET_KEYS) == set(expected)
    for key in TARGET_KEYS:
        a, e = actual[key].cpu(), expected[key].cpu()
        assert a.dtype == e.dtype, (key, a.dtype, e.dtype)
        assert a.shape == e.shape, (key, a.shape, e.shape)
        if a.dtype == torch.int64:
            assert torch.equal(a, e), f"{key}: {(a != e).sum()} pixels differ"
        else:
            diff = (a - e).abs().max().item() if a.numel() else 0.0
            assert diff <= 1e-5, f"{key}: max difference {diff}"


def _options(**overrides):
    options = dict(sigma=8.0, ignore_label=255, small_instance_area=4096, small_instance_weight=3.0,
                   ignore_stuff_in_offset=True, ignore_crowd_in_semantic=False)
    options.update(overrides)
    return options


# ---- an independent numpy implementation: one mask per segment, as the definition reads -----------

def numpy_targets(panoptic, segments, *, sigma, ignore_label, small_instance_area, small_instance_weight,
                  ignore_stuff_in_offset, ignore_crowd_in_semantic):
    pan = np.asarray(panoptic)
    height, width = pan.shape
    semantic = np.full((height, width), ignore_label, dtype=np.int64)
    center = np.zeros((height, width), dtype=np.float32)
    offset = np.zeros((2, height, width), dtype=np.float32)
    semantic_weights = np.ones((height, width), dtype=np.float32)
    center_weights = np.zeros((height, width), dtype=np.float32)
    offset_weights = np.zeros((height, width), dtype=np.float32)
    axis = np.arange(0, 6 * sigma + 3, 1, dtype=np.float64)
    middle = 3 * sigma + 1
    gaussian = np.exp(-((axis[None, :] - middle) ** 2 + (axis[:, None] - middle) ** 2) / (2 * sigma**2))
    points = []
    for segment_id, train_id, is_thing, is_crowd in np.asarray(segments).tolist():
        mask = pan == segment_id
        if not (ignore_crowd_in_semantic and is_crowd):
            semantic[mask] = train_id
        if not is_crowd:
            center_weights[mask] = 1
            if is_thing or not ignore_stuff_in_offset:
                offset_weights[mask] = 1
        if not is_thing:
            continue
        rows, cols = np.nonzero(mask)
        if rows.size == 0:
            continue
        if rows.size < small_instance_area:
            semantic_weights[mask] = small_instance_weight
        mean_y, mean_x = rows.mean(), cols.mean()
        points.append((mean_y, mean_x))
        offset[0][rows, cols] = mean_y - rows
        offset[1][rows, cols] = mean_x - cols
        y, x = int(np.round(mean_y)), int(np.round(mean_x))
        left, top = int(np.round(x - 3 * sigma - 1)), int(np.round(y - 3 * sigma - 1))
        right, bottom = int(np.round(x + 3 * sigma + 2)), int(np.round(y + 3 * sigma + 2))
        r0, r1, c0, c1 = max(0, top), min(bottom, height), max(0, left), min(right, width)
        center[r0:r1, c0:c1] = np.maximum(center[r0:r1, c0:c1], gaussian[r0 - top:r1 - top, c0 - left:c1 - left])
    as_tensor = torch.from_numpy
    return {
        "semantic": as_tensor(semantic),
        "center": as_tensor(center),
        "center_points": torch.tensor(points, dtype=torch.float64).reshape(-1, 2).float(),
        "offset": as_tensor(offset),
        "semantic_weights": as_tensor(semantic_weights),
        "center_weights": as_tensor(center_weights),
        "offset_weights": as_tensor(offset_weights),
    }


# ---- random scenes ------------------------------------------------------------------------------

ID_STYLES = {
    "small": lambda rng, n: rng.choice(np.arange(1, 2 * n + 40), size=n + 4, replace=False),
    "cityscapes": lambda rng, n: rng.choice(np.arange(26000, 34000), size=n + 4, replace=False),
    "rgb": lambda rng, n: rng.choice(256**3, size=n + 4, replace=False),  # R + 256 G + 256² B
    "negative": lambda rng, n: rng.choice(2**41, size=n + 4, replace=False) - 2**40,
}


def random_scene(seed, height, width, num_segments, id_style, crowd_rate, thing_rate, train_id_max):
    """A map of overlapping rectangles and blobs, specks, unlabelled pixels and ids absent from it."""
    rng = np.random.default_rng(seed)
    ids = ID_STYLES[id_style](rng, num_segments).astype(np.int64)
    segment_ids, unlisted = ids[:num_segments], ids[num_segments:]  # unlisted ids read as unlabelled
    palette = np.concatenate([segment_ids, unlisted]) if num_segments else unlisted
    panoptic = np.full((height, width), rng.choice(palette), dtype=np.int64)
    for _ in range(int(rng.integers(0, 40))):
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1 = min(height, y0 + int(rng.integers(1, max(2, height // 2))))
        x1 = min(width, x0 + int(rng.integers(1, max(2, width // 2))))
        panoptic[y0:y1, x0:x1] = rng.choice(palette)
    specks = int(rng.integers(0, 1 + height * width // 20))
    panoptic[rng.integers(0, height, specks), rng.integers(0, width, specks)] = rng.choice(palette, specks)
    segments = np.stack(
        [
            segment_ids,
            rng.integers(0, train_id_max + 1, num_segments),
            rng.random(num_segments) < thing_rate,
            rng.random(num_segments) < crowd_rate,
        ],
        axis=1,
    ).astype(np.int64).reshape(num_segments, 4)
    return torch.from_numpy(panoptic), torch.from_numpy(segments)


@st.composite
def scenes(draw, max_height=257, max_width=513, max_segments=300, max_sigma=40.0):
    height = draw(st.integers(1, max_height))
    width = draw(st.integers(1, max_width))
    num_segments = draw(st.integers(0, max_segments))
    id_style = draw(st.sampled_from(sorted(ID_STYLES)))
    ignore_label = draw(st.sampled_from([255, -1]))
    panoptic, segments = random_scene(
        draw(st.integers(0, 2**32 - 1)), height, width, num_segments, id_style,
        crowd_rate=draw(st.sampled_from([0.0, 0.2, 1.0])),
        thing_rate=draw(st.sampled_from([0.0, 0.5, 1.0])),
        train_id_max=254 if ignore_label == 255 else 255,
    )
    if id_style in ("small", "cityscapes") and draw(st.booleans()):
        panoptic = panoptic.int()
    options = _options(
        sigma=draw(st.sampled_from([0.5, 1.0, 2.5, 8.0, 10.0]) | st.floats(0.05, max_sigma)),
        ignore_label=ignore_label,
        small_instance_area=draw(st.integers(0, 5000)),
        small_instance_weight=draw(st.sampled_from([3.0, 1.0, 0.25])),
        ignore_stuff_in_offset=draw(st.booleans()),
        ignore_crowd_in_semantic=draw(st.booleans()),
    )
    return panoptic, segments, options


# ---- native == reference --------------------------------------------------------------------------

@requires_native
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes())
def test_native_equals_reference(scene):
    panoptic, segments, options = scene
    expected = encode_targets_reference(panoptic, segments, **options)
    assert_targets_equal(encode_targets(panoptic, segments, backend="native", **options), expected)


@requires_native
@settings(max_examples=15, deadline=None)
@given(scenes(max_height=64, max_width=96, max_segments=40))
def test_native_takes_any_layout(scene):
    panoptic, segments, options = scene
    expected = encode_targets(panoptic, segments, backend="native", **options)
    transposed = panoptic.t().contiguous().t()  # column-major storage, same values
    strided = torch.zeros(panoptic.shape[0], 2 * panoptic.shape[1], dtype=panoptic.dtype)[:, ::2]
    strided.copy_(panoptic)
    segments_view = torch.cat([segments, segments], dim=1)[:, :4]  # a non-contiguous [S, 4] view
    for layout in (transposed, strided):
        assert_targets_equal(encode_targets(layout, segments_view, backend="native", **options), expected)


@requires_native
def test_native_thread_count_does_not_change_the_result():
    panoptic, segments = random_scene(3, 200, 300, 120, "cityscapes", 0.1, 0.6, 254)
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = encode_targets(panoptic, segments, backend="native", sigma=5.0)
        torch.set_num_threads(2)
        double = encode_targets(panoptic, segments, backend="native", sigma=5.0)
    finally:
        torch.set_num_threads(previous)
    for key in TARGET_KEYS:
        assert torch.equal(single[key], double[key]), key


# ---- the reference against numpy -----------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(scenes(max_height=70, max_width=90, max_segments=30, max_sigma=12.0))
def test_reference_equals_independent_numpy(scene):
    panoptic, segments, options = scene
    assert_targets_equal(encode_targets_reference(panoptic, segments, **options),
                         numpy_targets(panoptic.numpy(), segments.numpy(), **options))


# ---- hand-made cases ------------------------------------------------------------------------------

# 1 = road (stuff, train 0); 5 = a car (thing 13, 2x2); 9 = a crowd of persons (thing 11); 0 = no segment.
HAND_PANOPTIC = [
    [1, 1, 1, 1, 1],
    [1, 5, 5, 1, 0],
    [1, 5, 5, 1, 0],
    [9, 9, 1, 1, 1],
    [9, 9, 1, 1, 1],
]
HAND_SEGMENTS = [[1, 0, 0, 0], [5, 13, 1, 0], [9, 11, 1, 1]]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_hand_made_5x5(backend, dtype):
    out = encode_targets(torch.tensor(HAND_PANOPTIC, dtype=dtype), torch.tensor(HAND_SEGMENTS), sigma=1.0,
                         small_instance_area=5, small_instance_weight=3.0, backend=backend)
    assert out["semantic"].tolist() == [
        [0, 0, 0, 0, 0],
        [0, 13, 13, 0, 255],
        [0, 13, 13, 0, 255],
        [11, 11, 0, 0, 0],
        [11, 11, 0, 0, 0],
    ]
    # Both things have 4 < 5 pixels (the crowd too); stuff and unlabelled keep 1.
    assert out["semantic_weights"].tolist() == [
        [1, 1, 1, 1, 1],
        [1, 3, 3, 1, 1],
        [1, 3, 3, 1, 1],
        [3, 3, 1, 1, 1],
        [3, 3, 1, 1, 1],
    ]
    assert out["center_weights"].tolist() == [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1],
    ]
    assert out["offset_weights"].tolist() == [  # stuff ignored in offsets, crowd ignored
        [0, 0, 0, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 1, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ]
    # Mass centers: car (1.5, 1.5), crowd (3.5, 0.5); offsets point there from every thing pixel.
    assert out["center_points"].tolist() == [[1.5, 1.5], [3.5, 0.5]]
    h = 0.5
    assert out["offset"][0].tolist() == [
        [0, 0, 0, 0, 0],
        [0, h, h, 0, 0],
        [0, -h, -h, 0, 0],
        [h, h, 0, 0, 0],
        [-h, -h, 0, 0, 0],
    ]
    assert out["offset"][1].tolist() == [
        [0, 0, 0, 0, 0],
        [0, h, -h, 0, 0],
        [0, h, -h, 0, 0],
        [h, -h, 0, 0, 0],
        [h, -h, 0, 0, 0],
    ]
    # Peaks at the centers rounded half to even: (1.5, 1.5) -> (2, 2), (3.5, 0.5) -> (4, 0).  Each
    # pixel holds exp(-d²/2) for its smallest squared distance d² to a peak.
    nearest_squared_distance = [
        [8, 5, 4, 5, 8],
        [5, 2, 1, 2, 5],
        [4, 1, 0, 1, 4],
        [1, 2, 1, 2, 5],
        [0, 1, 4, 5, 8],
    ]
    expected_center = torch.tensor([[math.exp(-d / 2) for d in row] for row in nearest_squared_distance])
    assert torch.allclose(out["center"], expected_center, atol=1e-7, rtol=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_flags(backend):
    out = encode_targets(torch.tensor(HAND_PANOPTIC), torch.tensor(HAND_SEGMENTS), sigma=1.0,
                         small_instance_area=4, ignore_stuff_in_offset=False,
                         ignore_crowd_in_semantic=True, backend=backend)
    assert out["semantic"].tolist() == [
        [0, 0, 0, 0, 0],
        [0, 13, 13, 0, 255],
        [0, 13, 13, 0, 255],
        [255, 255, 0, 0, 0],
        [255, 255, 0, 0, 0],
    ]
    assert out["offset_weights"].tolist() == [  # stuff counts now; crowd and unlabelled still not
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 0],
        [0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1],
    ]
    assert out["semantic_weights"].eq(1).all()  # 4 pixels is not < 4
    assert out["center_points"].tolist() == [[1.5, 1.5], [3.5, 0.5]]  # the crowd still has a center


@pytest.mark.parametrize("backend", BACKENDS)
def test_fractional_sigma_window(backend):
    # sigma 0.5: a 6x6 window whose middle (2.5, 2.5) falls between cells.  A one-pixel thing at
    # (0, 2): top = round(-2.5) = -2, left = round(-0.5) = 0, so row 0 is window row 2 and column c is
    # window column c: value exp(-((c - 2.5)² + 0.25) / 0.5).
    panoptic = torch.tensor([[0, 0, 7, 0, 0, 0]])
    out = encode_targets(panoptic, torch.tensor([[7, 1, 1, 0]]), sigma=0.5, backend=backend)
    expected = [math.exp(-((c - 2.5) ** 2 + 0.25) / 0.5) for c in range(6)]
    assert torch.allclose(out["center"][0], torch.tensor(expected), atol=1e-7, rtol=0)
    assert out["center"][0, 2] == out["center"][0, 3] == pytest.approx(math.exp(-1))
    assert out["center_points"].tolist() == [[0.0, 2.0]]
    assert out["offset"].abs().sum() == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_ids_absent_ids_and_unlabelled(backend):
    rgb_id = 200 + 256 * 17 + 256**2 * 250  # an RGB-encoded COCO id
    panoptic = torch.tensor([[rgb_id, rgb_id, 3], [rgb_id, 42, 3]])
    segments = torch.tensor([[rgb_id, 4, 1, 0], [3, 2, 0, 0], [123456789, 5, 1, 0]])  # last: no pixels
    out = encode_targets(panoptic, segments, sigma=1.0, small_instance_area=0, backend=backend)
    assert out["semantic"].tolist() == [[4, 4, 2], [4, 255, 2]]  # 42 is in no segment
    assert torch.equal(out["center_points"], torch.tensor([[1 / 3, 1 / 3]]))  # absent ids: no center
    assert out["center_weights"].tolist() == [[1, 1, 1], [1, 0, 1]]
    assert out["offset_weights"].tolist() == [[1, 1, 0], [1, 0, 0]]
    assert torch.allclose(out["offset"][:, 0, 0], torch.tensor([1 / 3, 1 / 3]))
    assert out["center"][0, 0] == 1.0  # the center (1/3, 1/3) rounds to (0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_segments(backend):
    out = encode_targets(torch.full((3, 4), 5), torch.zeros(0, 4, dtype=torch.int64), backend=backend)
    assert out["semantic"].eq(255).all() and out["semantic"].dtype == torch.int64
    assert out["center_points"].shape == (0, 2)
    assert out["center"].eq(0).all() and out["offset"].shape == (2, 3, 4) and out["offset"].eq(0).all()
    assert out["semantic_weights"].eq(1).all()
    assert out["center_weights"].eq(0).all() and out["offset_weights"].eq(0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_pixel_image(backend):
    out = encode_targets(torch.tensor([[8]]), torch.tensor([[8, 0, 1, 0]]), backend=backend)
    assert out["center"].tolist() == [[1.0]] and out["center_points"].tolist() == [[0.0, 0.0]]
    assert out["semantic_weights"].tolist() == [[3.0]]  # 1 pixel < 4096


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 5), (4, 0), (0, 0)])
def test_empty_maps(backend, shape):
    out = encode_targets(torch.zeros(shape, dtype=torch.int64), torch.tensor([[0, 1, 1, 0]]), backend=backend)
    assert out["semantic"].shape == out["center"].shape == out["center_weights"].shape == shape
    assert out["offset"].shape == (2, *shape) and out["center_points"].shape == (0, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_huge_sigma_covers_the_image(backend):
    # The window dwarfs the image (and int32): every pixel lies within a few cells of the middle.
    out = encode_targets(torch.tensor([[1, 1, 1], [1, 1, 1]]), torch.tensor([[1, 0, 1, 0]]), sigma=1e9,
                         backend=backend)
    assert out["center_points"].tolist() == [[0.5, 1.0]]
    assert torch.allclose(out["center"], torch.ones(2, 3), atol=1e-7, rtol=0)


# ---- bad input ------------------------------------------------------------------------------------

GOOD_PANOPTIC = torch.tensor([[1, 2], [2, 2]])
GOOD_SEGMENTS = torch.tensor([[1, 0, 0, 0], [2, 3, 1, 0]])

BAD_INPUTS = [
    (dict(panoptic=GOOD_PANOPTIC.float()), "panoptic must be int32 or int64"),
    (dict(panoptic=GOOD_PANOPTIC[None]), r"panoptic must be \[H, W\]"),
    (dict(panoptic=GOOD_PANOPTIC.numpy()), "panoptic must be a torch.Tensor"),
    (dict(segments=GOOD_SEGMENTS[:, :3]), r"segments must be \[S, 4\]"),
    (dict(segments=GOOD_SEGMENTS.float()), "segments must be an integer tensor"),
    (dict(segments=torch.tensor([[1, 0, 0, 0], [1, 3, 1, 0]])), "id 1 appears more than once"),
    (dict(segments=torch.tensor([[1, 256, 0, 0]])), "train_id must be in 0..255"),
    (dict(segments=torch.tensor([[1, -1, 0, 0]])), "train_id must be in 0..255"),
    (dict(segments=torch.tensor([[1, 255, 0, 0]])), "train_id equals ignore_label"),
    (dict(segments=torch.tensor([[1, 0, 2, 0]])), "is_thing must be 0 or 1"),
    (dict(segments=torch.tensor([[1, 0, 0, -1]])), "iscrowd must be 0 or 1"),
    (dict(sigma=0.0), "sigma must be between 1e-06 and 1e[+]12 pixels"),
    (dict(sigma=-2.0), "sigma must be between"),
    # Extremes where float64 arithmetic would decide the result (0 / 0, inexact coordinates):
    # refused the same way by both backends.
    (dict(sigma=1e-200), "sigma must be between"),
    (dict(sigma=1e16), "sigma must be between"),
    (dict(sigma=float("nan")), "sigma must be finite"),
    (dict(sigma="8"), "sigma must be a real number"),
    (dict(small_instance_area=-1), "small_instance_area must be >= 0"),
    (dict(small_instance_area=2.5), "small_instance_area must be an integer"),
    (dict(small_instance_weight=float("inf")), "small_instance_weight must be finite"),
    (dict(ignore_label=2**64), "ignore_label must fit in int64"),
    (dict(ignore_stuff_in_offset=1), "ignore_stuff_in_offset must be True or False"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change,message", BAD_INPUTS)
def test_bad_input(backend, change, message):
    arguments = dict(panoptic=GOOD_PANOPTIC, segments=GOOD_SEGMENTS)
    arguments.update(change)
    panoptic, segments = arguments.pop("panoptic"), arguments.pop("segments")
    if backend == "reference":
        with pytest.raises(ValueError, match=message):
            encode_targets_reference(panoptic, segments, **arguments)
    with pytest.raises(ValueError, match=message):
        encode_targets(panoptic, segments, backend=backend, **arguments)


def test_bad_backend_name():
    with pytest.raises(ValueError, match="backend must be one of"):
        encode_targets(GOOD_PANOPTIC, GOOD_SEGMENTS, backend="fast")


@requires_native
@pytest.mark.parametrize(
    "panoptic,segments,sigma,message",
    [
        (GOOD_PANOPTIC.float(), GOOD_SEGMENTS, 8.0, "panoptic must be int32 or int64"),
        (GOOD_PANOPTIC[None], GOOD_SEGMENTS, 8.0, "panoptic must be 2-D"),
        (GOOD_PANOPTIC, GOOD_SEGMENTS[:, :3], 8.0, "segments has 3 columns, expected 4"),
        (GOOD_PANOPTIC, torch.tensor([[2, 0, 0, 0], [2, 1, 0, 0]]), 8.0, "id 2 appears more than once"),
        (GOOD_PANOPTIC, torch.tensor([[2, 300, 0, 0]]), 8.0, "train_id must be in 0..255"),
        (GOOD_PANOPTIC, GOOD_SEGMENTS, 0.0, "sigma must be between"),
        (GOOD_PANOPTIC, GOOD_SEGMENTS, float("nan"), "sigma must be between"),
        (GOOD_PANOPTIC, GOOD_SEGMENTS, 1e16, "sigma must be between"),
        (GOOD_PANOPTIC, GOOD_SEGMENTS, 1e-200, "sigma must be between"),
    ],
)
def test_native_op_checks_its_own_arguments(panoptic, segments, sigma, message):
    # C++ callers reach the op without the Python checks: it must refuse bad input itself.
    with pytest.raises(ValueError, match=message):
        torch.ops.pdlkit.encode_targets(panoptic, segments, sigma, 255, 4096, 3.0, True, False)


# ---- CUDA -----------------------------------------------------------------------------------------

@pytest.mark.cuda
@requires_cuda
@settings(max_examples=40, deadline=None)
@given(scenes())
def test_cuda_equals_reference(scene):
    panoptic, segments, options = scene
    expected = encode_targets_reference(panoptic, segments, **options)
    actual = encode_targets(panoptic.cuda(), segments.cuda(), backend="native", **options)
    assert all(value.is_cuda for value in actual.values())
    assert_targets_equal(actual, expected)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_cuda_hand_made_and_layouts(dtype):
    panoptic = torch.tensor(HAND_PANOPTIC, dtype=dtype)
    expected = encode_targets_reference(panoptic, torch.tensor(HAND_SEGMENTS), sigma=1.0)
    on_gpu = panoptic.cuda().t().contiguous().t()
    assert_targets_equal(encode_targets(on_gpu, torch.tensor(HAND_SEGMENTS).cuda(), sigma=1.0,
                                        backend="native"), expected)
    # More segments than the kernel keeps in shared memory, with RGB-style ids (binary search).
    big, segments = random_scene(11, 120, 200, 1500, "rgb", 0.1, 0.7, 254)
    assert_targets_equal(encode_targets(big.cuda(), segments.cuda(), sigma=3.0, backend="native"),
                         encode_targets_reference(big, segments, sigma=3.0))


@pytest.mark.cuda
@requires_cuda
def test_cuda_device_mix_is_refused():
    with pytest.raises(ValueError, match="must be on the same device"):
        encode_targets(GOOD_PANOPTIC.cuda(), GOOD_SEGMENTS, backend="native")
    with pytest.raises(ValueError, match="must be on the same device"):
        torch.ops.pdlkit.encode_targets(GOOD_PANOPTIC.cuda(), GOOD_SEGMENTS, 8.0, 255, 4096, 3.0, True, False)
