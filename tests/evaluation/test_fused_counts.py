"""pdl eval's one-pass decode-and-count (``_native.count_pngs`` behind ``_io.count_png_pairs``)
and the SSSE3 unfiltering loops: equal to decoding the maps (OpenCV) and counting them with
``known_pair_histogram``, with the SSSE3 loops on and off; bad arguments are one ValueError."""
import cv2
import numpy as np
import pytest
from test_fast_png import _png, _png_from_raw

from pdlkit.errors import DataError
from pdlkit.evaluation import _io
from pdlkit.evaluation.panoptic import count_files, segment_ids

native = pytest.importorskip("pdlkit.evaluation._native")
needs_fast = pytest.mark.skipif(_io._FAST_DECODE is None or _io._COUNT_PNGS is None,
                                reason="imagecodecs (libdeflate or zlib-ng) or _native missing")
pytestmark = needs_fast


@pytest.fixture(params=[2, 1, 0], ids=["avx512", "ssse3", "baseline"])
def simd(request):
    """Run the test with the AVX-512, the SSSE3 and the baseline loops (those the CPU has)."""
    before = native.simd(request.param)
    if native.simd(request.param) != request.param:
        native.simd(before)
        pytest.skip("this CPU lacks the instructions of that level")
    yield request.param
    native.simd(before)


def _rgb(ids: np.ndarray) -> np.ndarray:
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _label_like(rng, height, width, values, noise=0.02) -> np.ndarray:
    """A map of flat rectangles of ``values`` (as label images are) with scattered other pixels."""
    image = np.full((height, width), values[0], np.int64)
    for _ in range(6):
        y, x = rng.integers(0, height), rng.integers(0, width)
        image[y : y + rng.integers(1, height + 1), x : x + rng.integers(1, width + 1)] = rng.choice(values)
    scatter = rng.random((height, width)) < noise
    image[scatter] = rng.choice(values, int(scatter.sum()))
    return image


def _write(path, image, filters, alpha=False):
    if image.ndim == 3 and alpha:
        image = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    path.write_bytes(_png(image, filters, idat_pieces=2))
    return path


# ------------------------------------------------------------------------------ unfiltering loops
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("width", [6, 16, 23, 70])
def test_wide_label_rows_decode_as_opencv(simd, channels, width):
    """Rows long enough for the 16-byte steps, flat areas (Sub steps in Paeth rows) beside edges
    and noise (per-byte Paeth), every filter type after every other."""
    rng = np.random.default_rng(channels * 1000 + width)
    height = 25
    planes = [_label_like(rng, height, width, [0, 7, 200, 255, 13]) for _ in range(channels)]
    image = np.stack(planes, axis=-1).astype(np.uint8) if channels > 1 else planes[0].astype(np.uint8)
    filters = [4, 4, 1, 4, 2, 4, 3, 4, 0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 0, 0, 4, 1, 2, 3, 4]
    encoded = _png(image, filters, idat_pieces=2)
    fast = _io._fast_decode(encoded, rgb_ids=channels >= 3)
    assert fast is not None
    if channels >= 3:
        rgb = image[..., :3].astype(np.int32)
        expected = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    else:
        expected = image
        if channels == 1:  # the specification's decoder, independently
            np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_UNCHANGED),
                                          image)
    np.testing.assert_array_equal(fast, expected)


# ------------------------------------------------------------------------------- decode and count
def test_hand_made_counts(tmp_path, simd):
    """A 2x4 image whose counts are written out by hand."""
    gt = np.array([[0, 5, 5, 7], [7, 7, 9, 9]])  # 9 is not listed
    pred = np.array([[1, 1, 2, 2], [2, 2, 2, 0]])
    labels = np.array([[3, 3, 4, 4], [4, 200, 4, 4]], np.uint8)  # 200 is not a class
    paths = [_write(tmp_path / "gt.png", _rgb(gt), [1, 2]), _write(tmp_path / "pred.png", _rgb(pred), [4, 4]),
             _write(tmp_path / "labels.png", labels, [1, 4])]
    counted = _io.count_png_pairs(paths[0], [0, 5, 7], paths[1], [0, 1, 2], paths[2], [3, 4], keep_maps=True)
    # rows: id 0, 5, 7, other; columns: id 0, 1, 2, other
    np.testing.assert_array_equal(counted["joint"], [[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 3, 0], [1, 0, 1, 0]])
    # rows as above; columns: label 3, 4, other
    np.testing.assert_array_equal(counted["labels"], [[1, 0, 0], [1, 1, 0], [0, 2, 1], [0, 2, 0]])
    np.testing.assert_array_equal(counted["gt_map"], gt)
    np.testing.assert_array_equal(counted["pred_map"], pred)
    assert _io.count_png_pairs(paths[0], [0, 5, 7], paths[1], [0, 1, 2])["gt_map"] is None


@pytest.mark.parametrize("seed", range(12))
def test_counts_equal_decoded_maps(tmp_path, simd, seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(1, 12)), int(rng.choice([1, 15, 16, 17, 33, 47, 100]))
    gt_values = [0, 7000, 26001, 26002, 11, 99, (1 << 22) + 5]  # the last two are not listed
    pred_values = [0, 1, 2, 3, 70000, 1 << 23]  # 1 << 23: not listed
    gt = _label_like(rng, height, width, gt_values)
    pred = _label_like(rng, height, width, pred_values, noise=0.1)
    labels = _label_like(rng, height, width, [0, 7, 8, 11, 26, 33, 255], noise=0.1).astype(np.uint8)
    gt_ids, pred_ids, class_ids = gt_values[:5], pred_values[:5], [7, 11, 26]
    pick = lambda: [int(f) for f in rng.integers(0, 5, height)]  # noqa: E731
    paths = [_write(tmp_path / "gt.png", _rgb(gt), pick(), alpha=seed % 2 == 1),
             _write(tmp_path / "pred.png", _rgb(pred), pick(), alpha=seed % 3 == 1),
             _write(tmp_path / "labels.png", labels, pick())]
    counted = _io.count_png_pairs(paths[0], gt_ids, paths[1], pred_ids, paths[2], class_ids, keep_maps=seed % 2 == 0)
    np.testing.assert_array_equal(counted["joint"], _io.known_pair_histogram(gt, gt_ids, pred, pred_ids))
    np.testing.assert_array_equal(counted["labels"], _io.known_pair_histogram(gt, gt_ids, labels, class_ids))
    if seed % 2 == 0:
        np.testing.assert_array_equal(counted["gt_map"], gt)
        np.testing.assert_array_equal(counted["pred_map"], pred)
    without_labels = _io.count_png_pairs(paths[0], gt_ids, paths[1], pred_ids)
    np.testing.assert_array_equal(without_labels["joint"], counted["joint"])
    assert without_labels["labels"] is None


def test_files_off_the_fast_path_give_none(tmp_path):
    ids = np.array([[0, 5], [5, 7]])
    gt = _write(tmp_path / "gt.png", _rgb(ids), [0, 1])
    pred = _write(tmp_path / "pred.png", _rgb(ids), [0, 1])
    wide = _write(tmp_path / "wide.png", _rgb(np.zeros((2, 3), np.int64)), [0, 0])
    labels16 = tmp_path / "labels16.png"
    cv2.imwrite(str(labels16), np.ones((2, 2), np.uint16))
    raw = bytearray(2 * (1 + 2 * 3))
    raw[7] = 9  # row 1: not a filter type
    bad_filter = tmp_path / "filter.png"
    bad_filter.write_bytes(_png_from_raw(bytes(raw), 2, 2, 2))
    known = [0, 5, 7]
    assert _io.count_png_pairs(gt, known, pred, known) is not None
    assert _io.count_png_pairs(gt, known, wide, known) is None  # sizes differ
    assert _io.count_png_pairs(gt, known, pred, known, labels16, [1]) is None  # 16-bit labels
    assert _io.count_png_pairs(gt, known, bad_filter, known) is None  # the general decoder names it
    assert _io.count_png_pairs(gt, known, pred, [0, 1 << 22]) is None  # beyond the lookup tables
    assert _io.count_png_pairs(gt, known, pred, known, gt, [1]) is None  # labels must be gray
    with pytest.raises(DataError, match="missing.png"):
        _io.count_png_pairs(gt, known, tmp_path / "missing.png", known)


def test_count_files_leaves_disagreeing_predictions_to_the_maps(tmp_path):
    ids = np.array([[0, 5, 5], [6, 6, 0]])
    gt = _write(tmp_path / "gt.png", _rgb(ids), [0, 1])
    pred = _write(tmp_path / "pred.png", _rgb(ids), [1, 4])
    gt_segments = [{"id": 5, "category_id": 1}, {"id": 6, "category_id": 2}]
    assert count_files(gt, gt_segments, pred, gt_segments)["joint"][1:3, 1:3].tolist() == [[2, 0], [0, 2]]
    assert count_files(gt, gt_segments, pred, gt_segments[:1]) is None  # id 6 not in the json
    assert count_files(gt, gt_segments, pred, gt_segments + [{"id": 8, "category_id": 1}]) is None
    with pytest.raises(DataError, match="twice"):
        count_files(gt, gt_segments, pred, gt_segments + gt_segments[:1], image_id="x")
    np.testing.assert_array_equal(segment_ids(gt_segments), [0, 5, 6])


def test_scratch_pool_lends_distinct_buffers_and_keeps_the_largest(monkeypatch):
    import contextlib

    monkeypatch.setattr(_io, "_IDLE_SCRATCH", [])
    with _io._scratch(10) as first, _io._scratch(10) as second:
        assert first.size == second.size == 10 and not np.shares_memory(first, second)
        first[:] = 1
    with _io._scratch(4) as again:  # an idle buffer, not a new one
        assert np.shares_memory(again, first) or np.shares_memory(again, second)
    sizes = [100 + k for k in range(_io._MAX_IDLE_SCRATCH + 3)]
    with contextlib.ExitStack() as stack:
        lent = [stack.enter_context(_io._scratch(n)) for n in sizes]
        assert not any(np.shares_memory(a, b) for k, a in enumerate(lent) for b in lent[k + 1 :])
    kept = sorted(b.size for b in _io._IDLE_SCRATCH)
    assert kept == sorted(sizes)[-_io._MAX_IDLE_SCRATCH :]
    monkeypatch.setattr(_io, "_MAX_IDLE_BYTES", 250)  # the byte budget: the largest that fit
    with _io._scratch(120), _io._scratch(300):
        pass
    assert [b.size for b in _io._IDLE_SCRATCH] == [120, 114]


def test_split_files_are_listed_when_first_used(tmp_path):
    split = tmp_path / "gtFine" / "val"
    files = _io._SplitFiles(split, "_gtFine_instanceIds.png")
    for city, name in (("aachen", "aachen_000001_000019"), ("bochum", "bochum_000002_000019")):
        (split / city).mkdir(parents=True, exist_ok=True)
        (split / city / f"{name}_gtFine_instanceIds.png").write_bytes(b"")
        (split / city / f"{name}_gtFine_labelIds.png").write_bytes(b"")
    # made before the files existed, listed at the first look
    assert dict(files) == {"aachen_000001_000019": split / "aachen" / "aachen_000001_000019_gtFine_instanceIds.png",
                           "bochum_000002_000019": split / "bochum" / "bochum_000002_000019_gtFine_instanceIds.png"}
    assert "bochum_000002_000019" in files and files.get("x") is None and len(files) == 2
    assert len(_io._SplitFiles(tmp_path / "absent", "_gtFine_instanceIds.png")) == 0


# ------------------------------------------------------------------------------------- bad input
def _arguments(height=2, width=3):
    """Valid count_pngs arguments for an all-zero RGB pair with labels."""
    return dict(gt_raw=np.zeros(height * (3 * width + 1), np.uint8), gt_channels=3,
                pred_raw=np.zeros(height * (3 * width + 1), np.uint8), pred_channels=3,
                labels_raw=np.zeros(height * (width + 1), np.uint8), height=height, width=width,
                gt_table=np.array([0], np.int32), gt_other=1, pred_table=np.array([0], np.int32), pred_other=1,
                label_table=np.array([0], np.int32), label_other=1, joint=np.zeros((2, 2), np.int64),
                label_counts=np.zeros((2, 2), np.int64), gt_map=None, pred_map=None)


def test_count_pngs_arguments_are_checked():
    arguments = _arguments()
    native.count_pngs(*arguments.values())
    assert arguments["joint"][0, 0] == 6 and arguments["label_counts"][0, 0] == 6
    bad = {
        "gt_raw": np.zeros(5, np.uint8),  # too short for 2x3 RGB
        "pred_raw": np.zeros(2 * 10, np.float32),
        "labels_raw": np.zeros(2 * 5, np.uint8),
        "gt_channels": 2,
        "height": 0,
        "gt_table": np.array([0], np.int64),
        "pred_table": np.array([5], np.int32),  # outside the 2 columns
        "gt_other": 2,
        "label_other": -1,
        "joint": np.zeros((2, 2), np.float64),
        "label_counts": np.zeros((3, 2), np.int64),  # not as many rows as joint
        "gt_map": np.zeros((2, 3), np.int64),
        "pred_map": np.zeros((2, 6), np.int32)[:, ::2],  # not contiguous
    }
    for name, value in bad.items():
        with pytest.raises(ValueError) as info:
            native.count_pngs(*{**_arguments(), name: value}.values())
        message = str(info.value)
        assert message.startswith("count_pngs:") or "bad images" in message, name
        assert "\n" not in message
    with pytest.raises(ValueError, match="count_pngs: joint must be a C-contiguous writable int64"):
        native.count_pngs(*{**_arguments(), "joint": b"\0" * 32}.values())  # read-only
    with pytest.raises(TypeError):
        native.count_pngs(1, 2, 3)
    raw = _arguments()
    raw["gt_raw"][0] = 7  # row 0: not a filter type
    with pytest.raises(ValueError, match="unknown PNG filter type in row 0"):
        native.count_pngs(*raw.values())


# ---------------------------------------------------------------------------- evaluate_predictions
@pytest.mark.parametrize("semantic", [True, False])
def test_evaluation_equals_the_decoded_maps_path(tmp_path, monkeypatch, semantic):
    """PQ, mIoU and AP through the one-pass counts equal those through decoded maps (each image's
    files off the fast path), with and without a semantic/ folder."""
    import shutil

    import scenes

    from pdlkit.evaluation import evaluate_predictions

    root = tmp_path / "gt"
    scenes.write_ground_truth(root, "val", 4, 96, 160, seed=7)
    predictions = scenes.write_predictions(root, "val", tmp_path / "pred", seed=8, perturb=True)
    if not semantic:
        shutil.rmtree(predictions / "semantic")
    calls = []
    monkeypatch.setattr(_io, "_COUNT_PNGS", lambda *args: calls.append(args[4] is not None) or native.count_pngs(*args))
    fast = evaluate_predictions(root, "val", predictions, progress=False, num_workers=2)
    assert calls == [semantic] * 4  # every image counted in one pass, with its labels when present
    monkeypatch.setattr(_io, "_COUNT_PNGS", None)
    maps = evaluate_predictions(root, "val", predictions, progress=False, num_workers=2)
    assert fast == maps
    assert fast["mIoU"] is not None and fast["AP"] is not None
