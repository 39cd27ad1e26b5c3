"""Predictor: preprocessing, post-processing through pdlkit.ops, segments, batching, checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pdlkit.errors import PdlError
from pdlkit.inference import Prediction, Predictor
from pdlkit.ops import panoptic_merge

from .fakes import ConvPanopticNet, small_config, toy_spec


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def predictor():
    spec = toy_spec()
    return Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), small_config(), spec, "cpu")


def test_prediction_equals_the_pipeline_written_out(predictor):
    image = _image(29, 43)
    prediction = predictor(image)
    assert isinstance(prediction, Prediction)
    assert predictor.model.seen_shapes[-1] == (1, 3, 32, 48)  # padded to the size divisibility

    cfg = predictor.cfg
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    normalised = (torch.from_numpy(image).permute(2, 0, 1)[None].float() - mean) / std
    padded = torch.zeros(1, 3, 32, 48)
    padded[..., :29, :43] = normalised
    with torch.no_grad():
        raw = predictor.model(padded)
    semantic, center, offset = (raw[k][0, ..., :29, :43] for k in ("semantic", "center", "offset"))
    expected = panoptic_merge(semantic, center, offset, [2, 3], label_divisor=1000, stuff_area=16,
                              void_label=-1, threshold=0.1, nms_kernel=5, top_k=200)

    assert prediction.panoptic.dtype == np.int32 and prediction.panoptic.shape == (29, 43)
    np.testing.assert_array_equal(prediction.panoptic, expected.panoptic.numpy())
    np.testing.assert_array_equal(prediction.semantic, semantic.argmax(0).numpy())
    np.testing.assert_allclose(prediction.center_heatmap, center[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(prediction.offsets, offset.numpy(), atol=1e-6)
    assert prediction.instance_ids == expected.ids.tolist()
    assert len(prediction.instances) == len(expected.ids) > 0
    for k, instance in enumerate(prediction.instances):
        assert instance["id"] == expected.ids[k]
        assert instance["center"] == expected.centers[k].tolist()
        assert instance["objectness"] == pytest.approx(float(expected.objectness[k]), abs=1e-6)
        assert instance["class_score"] == pytest.approx(float(expected.class_scores[k]), abs=1e-6)
        assert instance["score"] == pytest.approx(instance["objectness"] * instance["class_score"], abs=1e-6)
    np.testing.assert_array_equal(prediction.centers, expected.centers.numpy())


def test_segments_areas_boxes_and_categories(predictor):
    prediction = predictor(_image(31, 40, seed=3))
    spec = predictor.spec
    panoptic = prediction.panoptic
    ids = sorted(int(i) for i in np.unique(panoptic) if i >= 0)
    assert [s["id"] for s in prediction.segments] == ids
    for segment in prediction.segments:
        ys, xs = np.nonzero(panoptic == segment["id"])
        assert segment["area"] == len(ys)
        assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        train_id = segment["id"] // 1000
        assert segment["train_id"] == train_id
        assert segment["category_id"] == spec.category_ids[train_id]
        assert segment["iscrowd"] == 0
        assert segment["isthing"] == spec.is_thing[train_id]
        has_scores = {"score", "objectness", "class_score"} <= set(segment)
        assert has_scores == segment["isthing"]
        if not segment["isthing"]:
            assert segment["id"] % 1000 == 0


def test_batches_equal_single_images(predictor):
    a, b, c = _image(24, 32, 1), _image(24, 32, 2), _image(17, 20, 3)
    batch = predictor.predict_batch([a, c, b])
    assert (2, 3, 24, 32) in predictor.model.seen_shapes  # a and b shared one forward pass
    for image, prediction in zip([a, c, b], batch):
        single = predictor(image)
        np.testing.assert_array_equal(prediction.panoptic, single.panoptic)
        np.testing.assert_allclose(prediction.center_heatmap, single.center_heatmap, atol=1e-5)
        assert [s["id"] for s in prediction.segments] == [s["id"] for s in single.segments]


def test_one_scale_tta_equals_plain_prediction():
    spec = toy_spec()
    cfg = small_config()
    cfg.test.tta_scales = (1.0,)
    cfg.test.tta_flip = False
    model = ConvPanopticNet(spec.num_classes, size_divisibility=8)
    plain = Predictor.from_model(model, cfg, spec, "cpu")(_image(20, 30))
    tta = Predictor.from_model(model, cfg, spec, "cpu", tta=True)(_image(20, 30))
    np.testing.assert_array_equal(plain.panoptic, tta.panoptic)
    assert plain.segments == tta.segments


def test_flip_tta_on_a_symmetric_image_gives_mirrored_maps():
    spec = toy_spec()
    cfg = small_config()
    cfg.test.tta_scales = (1.0,)
    cfg.test.tta_flip = True
    predictor = Predictor.from_model(ConvPanopticNet(spec.num_classes, size_divisibility=8), cfg, spec, "cpu",
                                     tta=True)
    half = _image(24, 16, seed=5)
    image = np.concatenate([half, half[:, ::-1]], axis=1)
    prediction = predictor(image)
    np.testing.assert_allclose(prediction.center_heatmap, prediction.center_heatmap[:, ::-1], atol=1e-6)
    np.testing.assert_allclose(prediction.offsets[1], -prediction.offsets[1][:, ::-1], atol=1e-6)
    np.testing.assert_allclose(prediction.offsets[0], prediction.offsets[0][:, ::-1], atol=1e-6)


def test_bad_images_are_rejected(predictor):
    with pytest.raises(ValueError, match="uint8"):
        predictor(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
        predictor(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        predictor([[0, 0, 0]])


def test_missing_and_onnx_weights_give_clear_errors(tmp_path):
    with pytest.raises(PdlError, match="missing.pt: weights file not found"):
        Predictor(tmp_path / "missing.pt")
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    with pytest.raises(PdlError, match="ONNX"):
        Predictor(tmp_path / "model.onnx")
    with pytest.raises(PdlError, match="no CUDA"):
        if not torch.cuda.is_available():
            spec = toy_spec()
            Predictor.from_model(ConvPanopticNet(4), small_config(), spec, "cuda")
        else:
            raise PdlError("no CUDA: skipped where a GPU exists")


def test_checkpoint_round_trip_with_the_real_model(tmp_path, repo_root):
    """A pdlkit checkpoint (model, config, dataset) loads and predicts like the model it holds."""
    from pdlkit.config import load_config
    from pdlkit.data.spec import cityscapes_spec
    from pdlkit.engine import save_checkpoint
    from pdlkit.modeling import build_model

    cfg = load_config(repo_root / "configs" / "toy.yaml")
    cfg.model.pretrained = "none"
    spec = cityscapes_spec()
    torch.manual_seed(0)
    model = build_model(cfg.model, spec.num_classes).eval()
    path = tmp_path / "toy.pt"
    save_checkpoint(path, {"model": model.state_dict(), "config": cfg.to_dict(), "dataset": spec.to_dict(),
                           "iteration": 0, "pdlkit_version": "test"})
    loaded = Predictor(path, device="cpu")
    assert loaded.spec == spec and loaded.cfg.post.stuff_area == cfg.post.stuff_area
    direct = Predictor.from_model(model, cfg, spec, "cpu")
    image = _image(45, 70, seed=7)
    a, b = loaded(image), direct(image)
    np.testing.assert_array_equal(a.panoptic, b.panoptic)
    np.testing.assert_array_equal(a.semantic, b.semantic)
    np.testing.assert_allclose(a.offsets, b.offsets, atol=1e-5)


# ------------------------------------------------------------------ detectron2-matching options
def test_mass_centers_by_hand():
    from pdlkit.inference.predictor import mass_centers

    panoptic = np.full((8, 10), -1, np.int32)
    panoptic[2:5, 5:8] = 11001          # 3x3 block: mass center (3, 6) exactly
    panoptic[0, 0:3] = 12001            # L shape: rows 0,0,0,1 -> 0.25; cols 0,1,2,0 -> 0.75
    panoptic[1, 0] = 12001
    panoptic[6:8, 0:10] = 11002         # rows 6,7 -> 6.5; cols 0..9 -> 4.5
    panoptic[5, 9] = 11000              # a stuff id beside them is not an instance
    centers = mass_centers(panoptic, [12001, 11001, 11002, 13005])
    np.testing.assert_array_equal(centers, [[0, 0], [3, 6], [6, 4], [0, 0]])  # truncated; absent -> (0, 0)
    assert mass_centers(panoptic, []).shape == (0, 2)


def test_mass_centers_equal_torch_float32_means_on_random_instances():
    """detectron2 takes int(torch.mean(torch.nonzero(mask).float()[:, axis])) per instance."""
    from pdlkit.inference.predictor import mass_centers

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, (30, 40)).repeat(10, 0).repeat(10, 1)  # 300x400 blocks of 30 labels
    panoptic = np.where(labels < 25, 11000 + labels + 1, -1).astype(np.int32)
    ids = sorted(int(i) for i in np.unique(panoptic) if i > 0)
    want = []
    for seg_id in ids:
        indices = torch.nonzero(torch.from_numpy(panoptic == seg_id)).float()
        want.append([int(torch.mean(indices[:, 0]).item()), int(torch.mean(indices[:, 1]).item())])
    assert mass_centers(panoptic, ids).tolist() == want


@pytest.mark.parametrize("size,limits,expected", [
    ((1024, 2048), (1024, 2048), (1024, 2048)),
    ((508, 1020), (1024, 2048), (1020, 2048)),   # 2056.06 wide, capped at 2048
    ((480, 640), (640, 640), (480, 640)),
    ((375, 500), (640, 640), (480, 640)),
    ((640, 427), (640, 640), (640, 427)),
    ((333, 500), (0, 0), (333, 500)),            # 0: no resize
    ((100, 300), (200, 0), (200, 600)),          # 0: no cap
])
def test_shortest_edge_shape(size, limits, expected):
    from pdlkit.inference.tta import shortest_edge_shape

    assert shortest_edge_shape(*size, *limits) == expected


@pytest.mark.parametrize("divisibility,seen", [(-1, (1, 3, 32, 48)), (0, (1, 3, 29, 43)), (16, (1, 3, 32, 48)),
                                               (64, (1, 3, 64, 64))])
def test_size_divisibility_sets_the_padding(divisibility, seen):
    from pdlkit.modeling import build_model

    spec = toy_spec()
    cfg = small_config()
    cfg.model.backbone, cfg.model.pretrained = "resnet18", "none"
    cfg.model.aspp_channels = cfg.model.semantic_decoder_channels = cfg.model.semantic_head_channels = 16
    cfg.model.instance_decoder_channels = cfg.model.instance_head_channels = 8
    cfg.model.semantic_low_level_channels, cfg.model.instance_low_level_channels = (8, 8), (8, 8)
    cfg.test.size_divisibility = divisibility
    model = build_model(cfg.model, spec.num_classes).eval()
    shapes = []
    model.backbone.register_forward_pre_hook(lambda module, args: shapes.append(tuple(args[0].shape)))
    prediction = Predictor.from_model(model, cfg, spec, "cpu")(_image(29, 43))
    assert shapes == [seen] and prediction.panoptic.shape == (29, 43)

    # the same padding done by hand gives the same maps
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    normalised = (torch.from_numpy(_image(29, 43)).permute(2, 0, 1)[None].float() - mean) / std
    padded = torch.zeros(seen)
    padded[..., :29, :43] = normalised
    with torch.no_grad():
        center = model(padded, size_divisibility=1)["center"][0, 0, :29, :43]
    np.testing.assert_allclose(prediction.center_heatmap, center.numpy(), atol=1e-6)


def test_resize_maps_outputs_back_to_the_input_size():
    spec = toy_spec()
    cfg = small_config()
    cfg.test.min_size, cfg.test.max_size = 40, 0
    model = ConvPanopticNet(spec.num_classes, size_divisibility=8)
    prediction = Predictor.from_model(model, cfg, spec, "cpu")(_image(20, 30))
    assert model.seen_shapes[-1] == (1, 3, 40, 64)  # 20x30 -> 40x60, padded to 8
    assert prediction.panoptic.shape == (20, 30) and prediction.center_heatmap.shape == (20, 30)


@pytest.mark.parametrize("key,value,message", [
    ("precision", "fp8", "test.precision must be one of fp32, fp16, bf16"),
    ("instance_score", "peak", "post.instance_score must be one of center, mass_center"),
    ("min_size", -5, "test.min_size must be 0"),
])
def test_bad_inference_settings_are_one_sentence(key, value, message):
    spec = toy_spec()
    cfg = small_config()
    setattr(cfg.post if key == "instance_score" else cfg.test, key, value)
    with pytest.raises(PdlError, match=message):
        Predictor.from_model(ConvPanopticNet(spec.num_classes), cfg, spec, "cpu")


def test_precision_defaults_to_fp32_and_amp_is_fp16():
    spec = toy_spec()
    model = ConvPanopticNet(spec.num_classes)
    assert Predictor.from_model(model, small_config(), spec, "cpu").precision == "fp32"
    assert Predictor.from_model(model, small_config(), spec, "cpu", precision="bf16").precision == "bf16"
    cfg = small_config()
    cfg.test.precision = "bf16"
    assert Predictor.from_model(model, cfg, spec, "cpu").precision == "bf16"
    assert Predictor.from_model(model, cfg, spec, "cpu", amp=False).precision == "fp32"
