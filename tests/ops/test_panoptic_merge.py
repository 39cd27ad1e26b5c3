"""panoptic_merge: hand-made cases, native == reference on generated scenes, layouts, bad input."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pdlkit.ops import native_available
from pdlkit.ops.panoptic_merge import (
    PanopticResult,
    panoptic_merge,
    panoptic_merge_batched,
    panoptic_merge_reference,
)


needs_native = pytest.mark.skipif(
    not native_available(), reason="pdlkit._C is not built (pip install --no-build-isolation -e .)"
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
BACKENDS = ["reference", pytest.param("native", marks=needs_native)]
INT_FIELDS = ("panoptic", "semantic", "ids", "classes", "centers")
FLOAT_FIELDS = ("objectness", "class_scores", "scores")


def assert_same(got: PanopticResult, expected: PanopticResult) -> None:
    for field in INT_FIELDS:
        a, b = getattr(got, field).cpu(), getattr(expected, field).cpu()
        assert a.dtype == b.dtype, field
        assert torch.equal(a, b), f"{field} differs:\n{a}\n{b}"
    for field in FLOAT_FIELDS:
        a, b = getattr(got, field).cpu(), getattr(expected, field).cpu()
        assert a.dtype == b.dtype == torch.float32, field
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=field)


# --- hand-made cases -------------------------------------------------------------------------------
# Classes 0 (road) and 1 (sky) are stuff, 2 (car) and 3 (person) things.  Two centers: A at (1, 0)
# and B at (1, 5); zero offsets, so each thing pixel joins the center nearest to itself.
HAND_LABELS = torch.tensor(
    [
        [1, 1, 1, 1, 1, 1],
        [2, 2, 0, 0, 3, 3],
        [2, 2, 0, 0, 3, 2],
        [0, 0, 0, 0, 0, 0],
    ]
)
HAND_HEATMAP = torch.zeros(4, 6)
HAND_HEATMAP[1, 0] = 0.9
HAND_HEATMAP[1, 5] = 0.8


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_labels(backend):
    result = panoptic_merge(HAND_LABELS, HAND_HEATMAP, torch.zeros(2, 4, 6), [2, 3], stuff_area=3,
                            nms_kernel=3, backend=backend)
    # A: four car pixels -> car 1 (2001).  B: three person votes beat one car vote -> person 1
    # (3001), the car pixel at (2, 5) included.  Sky (6 px) and road (10 px) pass stuff_area = 3.
    assert result.panoptic.tolist() == [
        [1000, 1000, 1000, 1000, 1000, 1000],
        [2001, 2001, 0, 0, 3001, 3001],
        [2001, 2001, 0, 0, 3001, 3001],
        [0, 0, 0, 0, 0, 0],
    ]
    assert result.panoptic.dtype == torch.int32 and result.semantic.dtype == torch.int64
    assert torch.equal(result.semantic, HAND_LABELS)
    assert result.ids.tolist() == [2001, 3001]
    assert result.classes.tolist() == [2, 3]
    assert result.centers.tolist() == [[1, 0], [1, 5]]
    assert result.objectness.tolist() == pytest.approx([0.9, 0.8])
    assert result.class_scores.tolist() == [1.0, 1.0]
    assert result.scores.tolist() == pytest.approx([0.9, 0.8])
    assert len(result) == 2

    # Sky has 6 pixels: under stuff_area = 7 it turns void; road (10) stays.
    small = panoptic_merge(HAND_LABELS, HAND_HEATMAP, torch.zeros(2, 4, 6), [2, 3], stuff_area=7,
                           void_label=-5, nms_kernel=3, backend=backend)
    assert small.panoptic[0].tolist() == [-5] * 6
    assert small.panoptic[3].tolist() == [0] * 6


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_no_center_makes_things_void(backend):
    result = panoptic_merge(HAND_LABELS, torch.zeros(4, 6), torch.zeros(2, 4, 6), [2, 3], stuff_area=3,
                            label_divisor=100, backend=backend)
    assert result.panoptic.tolist() == [
        [100, 100, 100, 100, 100, 100],
        [-1, -1, 0, 0, -1, -1],
        [-1, -1, 0, 0, -1, -1],
        [0, 0, 0, 0, 0, 0],
    ]
    assert result.ids.shape == (0,) and result.centers.shape == (0, 2) and result.scores.shape == (0,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_ties(backend):
    # One row of things; centers (0, 0) and (0, 4) of equal height.  (0, 2) is equally far from
    # both and joins the first.
    labels = torch.tensor([[3, 2, 2, 3, 2]])
    heatmap = torch.tensor([[0.5, 0.0, 0.0, 0.0, 0.5]])
    result = panoptic_merge(labels, heatmap, torch.zeros(2, 1, 5), [2, 3], stuff_area=1, nms_kernel=3,
                            backend=backend)
    # Center 0 owns x = 0, 1, 2 -> labels 3, 2, 2: class 2.  Center 1 owns x = 3, 4 -> labels 3, 2:
    # a tie, the smallest class (2) wins; it is the second car.
    assert result.panoptic.tolist() == [[2001, 2001, 2001, 2002, 2002]]
    assert result.classes.tolist() == [2, 2]
    assert result.ids.tolist() == [2001, 2002]


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_float_distance_from_distinct_squares_goes_to_first_center(backend):
    # Pixel (0, 1) points at (4096, 1.5): squared distances 16777218 to center (0, 0) and 16777216
    # to center (0, 2), whose float32 square roots are both 4096.  The first center wins.
    f = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    square_a = (f(0.0) - f(4096.0)) ** 2 + (f(0.0) - f(1.5)) ** 2
    square_b = (f(0.0) - f(4096.0)) ** 2 + (f(2.0) - f(1.5)) ** 2
    assert square_a != square_b and torch.sqrt(square_a) == torch.sqrt(square_b)
    offsets = torch.zeros(2, 1, 3)
    offsets[0, 0, 1] = 4096.0
    offsets[1, 0, 1] = 0.5
    result = panoptic_merge(torch.ones(1, 3, dtype=torch.int64), torch.tensor([[0.5, 0.0, 0.5]]), offsets, [1],
                            nms_kernel=3, backend=backend)
    assert result.panoptic.tolist() == [[1001, 1001, 1002]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_near_tie_uses_correctly_rounded_float32_square_roots(backend):
    # Pixel (0, 2) points at (605.56732, 2.00599) (float32).  Its float32 squared distances to the
    # centers A (0, 0) and B (0, 4) have correctly rounded float32 roots 605.57068 and 605.57062, so B
    # is nearer; torch's float32 sqrt on the CPU is not correctly rounded and gives 605.57062 for
    # both, a tie that A would win.  Found by a random search over offsets of that size.
    f = lambda v: torch.tensor(v, dtype=torch.float32)  # noqa: E731
    loc_y, loc_x = f(605.5673217773438), f(2.0) + f(0.005991194397211075)
    square_a = (f(0.0) - loc_y) ** 2 + (f(0.0) - loc_x) ** 2
    square_b = (f(0.0) - loc_y) ** 2 + (f(4.0) - loc_x) ** 2
    assert torch.sqrt(square_b.double()).float() < torch.sqrt(square_a.double()).float()
    offsets = torch.zeros(2, 1, 5)
    offsets[0, 0, 2], offsets[1, 0, 2] = 605.5673217773438, 0.005991194397211075
    result = panoptic_merge(torch.tensor([[0, 0, 1, 0, 0]]), torch.tensor([[0.9, 0.0, 0.0, 0.0, 0.8]]), offsets,
                            [1], stuff_area=1, nms_kernel=3, backend=backend)
    assert result.centers.tolist() == [[0, 4]]
    assert result.panoptic.tolist() == [[0, 0, 1001, 0, 0]]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hand_made_logits(backend):
    # 2 x 3 logits over 3 classes (0 stuff, 1 and 2 things); argmax ties go to the smaller class.
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]],
            [[0.0, 1.0, 1.0], [1.0, 3.0, 0.0]],
            [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]],
        ]
    )
    heatmap = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.7, 0.0]])
    result = panoptic_merge(logits, heatmap, torch.zeros(2, 2, 3), [1, 2], stuff_area=1, nms_kernel=3,
                            backend=backend)
    assert result.semantic.tolist() == [[0, 1, 1], [1, 1, 0]]
    assert result.panoptic.tolist() == [[0, 1001, 1001], [1001, 1001, 0]]
    # Class 1's softmax probability at the four instance pixels.
    probabilities = torch.softmax(logits, 0)[1]
    expected = (probabilities[0, 1] + probabilities[0, 2] + probabilities[1, 0] + probabilities[1, 1]) / 4
    assert result.class_scores.tolist() == [pytest.approx(expected.item(), abs=1e-6)]
    assert result.scores.tolist() == [pytest.approx(0.7 * expected.item(), abs=1e-6)]


# --- native == reference on generated scenes ------------------------------------------------------


def make_scene(seed: int, height: int, width: int, num_classes: int, num_blobs: int, thing_fraction: float,
               heat_levels: int):
    """Labels with rectangular blobs, logits favouring them, a quantised heatmap (ties) with
    ``num_blobs`` bumps, offsets pointing roughly at the bumps on a half-pixel grid (distance ties)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (1,), generator=g).expand(height, width).clone()
    for _ in range(num_blobs):
        y0, x0 = (torch.randint(0, max(height, 1), (1,), generator=g).item(),
                  torch.randint(0, max(width, 1), (1,), generator=g).item())
        h, w = (torch.randint(1, max(2, height // 2 + 1), (1,), generator=g).item(),
                torch.randint(1, max(2, width // 2 + 1), (1,), generator=g).item())
        labels[y0:y0 + h, x0:x0 + w] = torch.randint(0, num_classes, (1,), generator=g).item()
    noise = torch.rand((height, width), generator=g) < 0.05
    labels[noise] = torch.randint(0, num_classes, (int(noise.sum()),), generator=g)
    logits = torch.randn((num_classes, height, width), generator=g)
    logits.scatter_add_(0, labels[None], torch.full((1, height, width), 2.5))
    if torch.rand((), generator=g) < 0.3:  # exact argmax ties between channels
        logits = logits.round()
    heatmap = (torch.rand((height, width), generator=g) * heat_levels).floor() / heat_levels * 0.3
    peaks = torch.randint(0, max(height * width, 1), (num_blobs,), generator=g)
    if height * width:
        heatmap.view(-1)[peaks] = (torch.rand((num_blobs,), generator=g) * heat_levels).floor() / heat_levels
    offsets = (torch.randn((2, height, width), generator=g) * 6).round() / 2
    things = [c for c in range(num_classes) if torch.rand((), generator=g) < thing_fraction]
    return labels, logits, heatmap, offsets, things


@needs_native
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    height=st.one_of(st.integers(1, 20), st.sampled_from([32, 33, 64, 257])),
    width=st.one_of(st.integers(1, 20), st.sampled_from([32, 63, 128, 513])),
    num_classes=st.integers(1, 12),
    num_blobs=st.integers(0, 300),
    thing_fraction=st.sampled_from([0.0, 0.4, 1.0]),
    heat_levels=st.sampled_from([2, 4, 1000]),
    nms_kernel=st.sampled_from([1, 3, 7]),
    top_k=st.sampled_from([1, 3, 50, 301]),
    stuff_area=st.sampled_from([0, 1, 20, 2048]),
    use_logits=st.booleans(),
)
def test_native_equals_reference(seed, height, width, num_classes, num_blobs, thing_fraction, heat_levels,
                                 nms_kernel, top_k, stuff_area, use_logits):
    labels, logits, heatmap, offsets, things = make_scene(seed, height, width, num_classes, num_blobs,
                                                          thing_fraction, heat_levels)
    semantic = logits if use_logits else labels
    kwargs = dict(label_divisor=1000, stuff_area=stuff_area, void_label=-1, threshold=0.1,
                  nms_kernel=nms_kernel, top_k=top_k)
    expected = panoptic_merge_reference(semantic, heatmap, offsets, things, **kwargs)
    got = panoptic_merge(semantic, heatmap, offsets, things, backend="native", **kwargs)
    assert_same(got, expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["all_stuff", "all_thing", "empty_rows", "empty_cols", "one_pixel"])
def test_edge_scenes(backend, case):
    labels, logits, heatmap, offsets, _ = make_scene(7, 24, 40, 5, 12, 0.5, 4)
    things = {"all_stuff": [], "all_thing": [0, 1, 2, 3, 4]}.get(case, [1, 3])
    if case == "empty_rows":
        labels, logits, heatmap, offsets = labels[:0], logits[:, :0], heatmap[:0], offsets[:, :0]
    elif case == "empty_cols":
        labels, logits, heatmap, offsets = labels[:, :0], logits[:, :, :0], heatmap[:, :0], offsets[:, :, :0]
    elif case == "one_pixel":
        labels, logits, heatmap, offsets = labels[:1, :1], logits[:, :1, :1], heatmap[:1, :1], offsets[:, :1, :1]
    for semantic in (labels, logits):
        got = panoptic_merge(semantic, heatmap, offsets, things, stuff_area=10, backend=backend)
        expected = panoptic_merge_reference(semantic, heatmap, offsets, things, stuff_area=10)
        assert_same(got, expected)
        if case == "all_stuff":
            assert len(got) == 0 and set(got.panoptic.unique().tolist()) <= {-1, 0, 1000, 2000, 3000, 4000}
        if case == "all_thing":  # with a center, every pixel belongs to an instance; without, void
            if len(got):
                assert bool((got.panoptic % 1000 > 0).all())
            else:
                assert bool((got.panoptic == -1).all())


def test_reference_matches_brute_force_grouping():
    """The chunked reference grouping equals a full [K, H, W] argmin (torch.argmin: first minimum)."""
    labels, _, heatmap, offsets, _ = make_scene(11, 30, 37, 3, 40, 1.0, 3)
    result = panoptic_merge_reference(labels, heatmap, offsets, [0, 1, 2], nms_kernel=1, top_k=300, stuff_area=0)
    from pdlkit.ops.center_nms import find_instance_centers_reference

    centers, _ = find_instance_centers_reference(heatmap, nms_kernel=1, top_k=300)
    assert centers.shape[0] > 20
    ys = torch.arange(30, dtype=torch.float32)[:, None] + offsets[0]
    xs = torch.arange(37, dtype=torch.float32)[None, :] + offsets[1]
    dy = centers[:, 0, None, None].float() - ys
    dx = centers[:, 1, None, None].float() - xs
    nearest = torch.argmin(torch.sqrt((dy * dy + dx * dx).double()).float(), dim=0)  # correctly rounded
    # Map each pixel's panoptic id back to its center through ids/centers.
    center_of_id = {int(i): tuple(c) for i, c in zip(result.ids.tolist(), result.centers.tolist())}
    got_centers = [[center_of_id[int(v)] for v in row] for row in result.panoptic.tolist()]
    expected_centers = [[tuple(centers[k].tolist()) for k in row] for row in nearest.tolist()]
    assert got_centers == expected_centers


# --- layouts, batches -------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_contiguous_and_channels_last(backend):
    labels, logits, heatmap, offsets, things = make_scene(5, 33, 50, 6, 20, 0.5, 5)
    expected_logits = panoptic_merge(logits, heatmap, offsets, things, stuff_area=5, backend=backend)
    expected_labels = panoptic_merge(labels, heatmap, offsets, things, stuff_area=5, backend=backend)
    logits_cl = logits[None].contiguous(memory_format=torch.channels_last)[0]
    assert not logits_cl.is_contiguous()
    offsets_cl = offsets[None].contiguous(memory_format=torch.channels_last)[0]
    heatmap_t = heatmap.t().contiguous().t()
    labels_strided = torch.zeros(33, 100, dtype=torch.int64)[:, ::2]
    labels_strided.copy_(labels)
    assert_same(panoptic_merge(logits_cl, heatmap_t[None], offsets_cl, things, stuff_area=5, backend=backend),
                expected_logits)
    assert_same(panoptic_merge(labels_strided, heatmap_t, offsets_cl, things, stuff_area=5, backend=backend),
                expected_labels)
    for dtype in (torch.int32, torch.uint8, torch.int16):
        assert_same(panoptic_merge(labels.to(dtype), heatmap, offsets, things, stuff_area=5, backend=backend),
                    expected_labels)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_matches_single(backend):
    scenes = [make_scene(s, 20, 24, 4, 10, 0.5, 4) for s in range(3)]
    things = [1, 2]
    logits = torch.stack([s[1] for s in scenes])
    labels = torch.stack([s[0] for s in scenes])
    heatmaps = torch.stack([s[2] for s in scenes])
    offsets = torch.stack([s[3] for s in scenes])
    for semantic, heat in ((logits, heatmaps[:, None]), (labels, heatmaps)):
        results = panoptic_merge_batched(semantic, heat, offsets, things, stuff_area=3, backend=backend)
        assert len(results) == 3
        for i, result in enumerate(results):
            single = panoptic_merge(semantic[i], heatmaps[i], offsets[i], things, stuff_area=3, backend=backend)
            assert_same(result, single)


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_thing_ids_from_a_generator(backend):
    # A generator is spent after one pass: it must be read once, not once per image.
    labels = HAND_LABELS[None].repeat(3, 1, 1)
    heatmaps = HAND_HEATMAP[None].repeat(3, 1, 1)
    results = panoptic_merge_batched(labels, heatmaps, torch.zeros(3, 2, 4, 6), (t for t in (2, 3)),
                                     stuff_area=3, nms_kernel=3, backend=backend)
    expected = panoptic_merge(HAND_LABELS, HAND_HEATMAP, torch.zeros(2, 4, 6), [2, 3], stuff_area=3, nms_kernel=3,
                              backend=backend)
    assert len(expected) == 2
    for result in results:
        assert_same(result, expected)


def test_batched_bad_shapes():
    with pytest.raises(ValueError, match="semantic"):
        panoptic_merge_batched(torch.zeros(3, 4, 5), torch.zeros(1, 4, 5), torch.zeros(1, 2, 4, 5), [])
    with pytest.raises(ValueError, match="center_heatmap"):
        panoptic_merge_batched(torch.zeros(2, 3, 4, 5), torch.zeros(1, 4, 5), torch.zeros(2, 2, 4, 5), [])
    with pytest.raises(ValueError, match="offsets"):
        panoptic_merge_batched(torch.zeros(2, 4, 5, dtype=torch.int64), torch.zeros(2, 4, 5), torch.zeros(2, 4, 5), [])


# --- bad input --------------------------------------------------------------------------------------


def _good():
    return dict(semantic=torch.zeros(3, 4, 5), center_heatmap=torch.zeros(4, 5), offsets=torch.zeros(2, 4, 5),
                thing_ids=[1, 2])


def _nan_at(tensor, index=(0, 0)):
    tensor = tensor.clone()
    tensor[index] = float("nan")
    return tensor


BAD_INPUTS = [
    ({"semantic": torch.zeros(3, 4, 5, dtype=torch.float64)}, "float32"),
    ({"semantic": torch.zeros(3, 4, 5, dtype=torch.bool)}, "semantic"),
    ({"semantic": torch.zeros(4, 5)}, r"\[C, H, W\]"),
    ({"semantic": torch.zeros(1, 4, 5, dtype=torch.int64)}, r"\[H, W\]"),
    ({"semantic": torch.zeros(3, 4, 6)}, "center_heatmap"),
    ({"center_heatmap": torch.zeros(4, 5, dtype=torch.float16)}, "center_heatmap"),
    ({"center_heatmap": torch.zeros(2, 4, 5)}, "center_heatmap"),
    ({"center_heatmap": torch.zeros(5, 4)}, "center_heatmap"),
    ({"center_heatmap": _nan_at(torch.zeros(4, 5))}, "NaN"),
    ({"offsets": torch.zeros(3, 4, 5)}, "offsets"),
    ({"offsets": torch.zeros(2, 4, 5, dtype=torch.float64)}, "offsets"),
    ({"offsets": torch.zeros(2, 5, 4)}, "offsets"),
    ({"offsets": _nan_at(torch.zeros(2, 4, 5), (1, 3, 3))}, "offsets"),
    ({"offsets": torch.full((2, 4, 5), float("inf"))}, "offsets"),
    ({"semantic": _nan_at(torch.zeros(3, 4, 5), (2, 1, 1))}, "semantic"),
    ({"thing_ids": [3]}, "thing_ids"),
    ({"thing_ids": [-1]}, "thing_ids"),
    ({"thing_ids": [1.5]}, "thing_ids"),
    ({"thing_ids": "12"}, "thing_ids"),
    ({"semantic": torch.full((4, 5), -1, dtype=torch.int64)}, "label"),
    ({"semantic": torch.full((4, 5), 1000, dtype=torch.int64)}, "label"),
    ({"semantic": torch.zeros(4, 5, dtype=torch.int64), "thing_ids": [1000]}, "thing_ids"),
    ({"nms_kernel": 2}, "nms_kernel"),
    ({"nms_kernel": 0}, "nms_kernel"),
    ({"top_k": 0}, "top_k"),
    ({"label_divisor": 0}, "label_divisor"),
    ({"void_label": 2**40}, "void_label"),
    ({"semantic": torch.zeros(3, 4, 5), "label_divisor": 2**30}, "label_divisor"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("change, match", BAD_INPUTS)
def test_bad_input(backend, change, match):
    args = _good()
    keywords = {k: v for k, v in change.items() if k not in args}
    args.update({k: v for k, v in change.items() if k in args})
    with pytest.raises(ValueError, match=match):
        panoptic_merge(args["semantic"], args["center_heatmap"], args["offsets"], args["thing_ids"],
                       backend=backend, **keywords)


@needs_native
@pytest.mark.parametrize(
    "semantic, heatmap, offsets, things, match",
    [
        (torch.zeros(3, 4, 5), torch.full((4, 5), float("nan")), torch.zeros(2, 4, 5), [1], "NaN"),
        (torch.full((4, 5), 7, dtype=torch.int64), torch.zeros(4, 5), torch.zeros(2, 4, 5), [1], "label"),
        (torch.zeros(3, 4, 5), torch.zeros(4, 5), torch.zeros(2, 4, 5), [5], "thing_ids"),
        (torch.zeros(3, 4, 5), torch.zeros(4, 5), torch.full((2, 4, 5), float("nan")), [1], "offsets"),
        (torch.full((3, 4, 5), float("inf")), torch.zeros(4, 5), torch.zeros(2, 4, 5), [1], "semantic"),
    ],
)
def test_native_op_checks_values_itself(semantic, heatmap, offsets, things, match):
    with pytest.raises(ValueError, match=match):
        torch.ops.pdlkit.panoptic_merge(semantic, heatmap, offsets, things, 5, 0, -1, 0.1, 3, 10)


@pytest.mark.cuda
@needs_cuda
def test_device_mix_is_rejected():
    args = _good()
    with pytest.raises((ValueError, RuntimeError), match="device"):
        panoptic_merge(args["semantic"].cuda(), args["center_heatmap"], args["offsets"].cuda(), [1])


def test_device_mix_is_rejected_on_meta():
    # Without a GPU, the meta device still exercises the device check of the shared validation.
    args = _good()
    with pytest.raises(ValueError, match="device"):
        panoptic_merge(args["semantic"], args["center_heatmap"].to("meta"), args["offsets"], [1],
                       backend="reference")


# --- CUDA --------------------------------------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@needs_native
@pytest.mark.parametrize("seed", range(8))
def test_cuda_equals_cpu(seed):
    height, width = [(1, 1), (17, 33), (64, 64), (257, 513), (5, 300), (100, 7), (0, 4), (48, 80)][seed]
    labels, logits, heatmap, offsets, things = make_scene(seed, height, width, 7, [0, 5, 40, 300, 9, 20, 0, 60][seed],
                                                          0.5, [2, 4, 1000, 3, 2, 5, 2, 4][seed])
    for semantic in (logits, labels):
        for top_k, nms_kernel in ((200, 3), (301, 1)):
            kwargs = dict(stuff_area=10, top_k=top_k, nms_kernel=nms_kernel, backend="native")
            cpu = panoptic_merge(semantic, heatmap, offsets, things, **kwargs)
            gpu = panoptic_merge(semantic.cuda(), heatmap.cuda(), offsets.cuda(), things, **kwargs)
            assert gpu.panoptic.is_cuda and gpu.ids.is_cuda
            assert_same(gpu, cpu)


@needs_native
def test_native_with_several_threads_equals_reference():
    """Row chunks run in parallel: their votes, areas and sums must add up to the reference's."""
    previous = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        for seed in range(3):
            labels, logits, heatmap, offsets, things = make_scene(seed, 301, 97, 8, 120, 0.5, 5)
            for semantic in (logits, labels):
                kwargs = dict(stuff_area=50, nms_kernel=3, top_k=150)
                assert_same(panoptic_merge(semantic, heatmap, offsets, things, backend="native", **kwargs),
                            panoptic_merge_reference(semantic, heatmap, offsets, things, **kwargs))
    finally:
        torch.set_num_threads(previous)


@needs_native
@pytest.mark.parametrize("width", [1, 7, 15, 16, 17, 33, 100, 259])
@pytest.mark.parametrize("num_classes", [3, 9, 17, 33, 40])
def test_native_equals_reference_at_vector_edges(width, num_classes):
    """Widths around the 8- and 16-pixel blocks (vector tails; rows misaligned for the streaming
    stores) and class counts around the slot tables held in registers (8 entries for AVX2, 16 and
    32 for AVX-512; more classes take a gather)."""
    labels, logits, heatmap, offsets, things = make_scene(width * 100 + num_classes, 23, width, num_classes, 15,
                                                          0.5, 5)
    things = things or [num_classes - 1]
    for semantic in (logits, labels):
        kwargs = dict(stuff_area=5, nms_kernel=3, top_k=50)
        assert_same(panoptic_merge(semantic, heatmap, offsets, things, backend="native", **kwargs),
                    panoptic_merge_reference(semantic, heatmap, offsets, things, **kwargs))


@needs_native
def test_thread_count_changes_no_output_bit():
    """Threads take blocks of rows as they free up, so which thread sums which rows varies; every
    per-thread total is an integer (probabilities in fixed point), so 1, 2 and 3 threads give
    bit-identical outputs, class scores included."""
    labels, logits, heatmap, offsets, things = make_scene(5, 300, 259, 19, 150, 0.5, 5)  # 5 blocks of rows
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            results.append(panoptic_merge(logits, heatmap, offsets, things, stuff_area=50, nms_kernel=3,
                                          backend="native"))
    finally:
        torch.set_num_threads(previous)
    assert len(results[0]) >= 5
    for other in results[1:]:
        for field in INT_FIELDS + FLOAT_FIELDS:
            assert torch.equal(getattr(other, field), getattr(results[0], field)), field
