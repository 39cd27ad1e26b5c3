"""The Predictor with the detectron2-matching configs equals an independent re-implementation of
detectron2's inference (tests/inference/detectron2_oracle.py): panoptic maps, segment lists and
instance scores.

- Pipeline parity at the published sizes (1024x2048, 508x1020 -> resized to 1020x2048, COCO 480x640
  -> padded to a 640x640 canvas) with each published config's test settings and a tiny network that
  both sides call (the geometry, post-processing and scores are under test, not the network).
- End-to-end parity with the real architectures: a detectron2-written SyncBN checkpoint of each
  published config, imported with `pdl weights import`, run by the Predictor and by the oracle's
  own network over the detectron2-named arrays, at a small size (the ASPP pooling window and the
  test sizes are scaled down with it; R52 at 1024x2048 takes minutes on a CPU).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from modeling.test_detectron2_files import coco_manifest_root
from torch import nn
from torch.nn import functional as F

from pdlkit.cli.main import cli
from pdlkit.config import load_config
from pdlkit.data.spec import cityscapes_spec, spec_for
from pdlkit.inference import Predictor

from . import detectron2_oracle as d2

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    "cityscapes_r52_dc5_d2.yaml": False,
    "cityscapes_r52_dc5_d2_dsconv.yaml": True,
    "coco_r52_dc5_d2_dsconv.yaml": True,
}


def _config_and_spec(name: str, tmp_path: Path):
    cfg = load_config(REPO / "configs" / name)
    if cfg.data.dataset == "coco":
        cfg.data.root = str(coco_manifest_root(tmp_path))
        return cfg, spec_for(cfg.data)
    return cfg, cityscapes_spec()


class TinyNet(nn.Module):
    """Stride-4 maps upsampled by exactly 4 and cropped, plus an image-wide mean, so the padding of
    the input shows in every output (as the ASPP's image pooling makes it show)."""

    def __init__(self, num_classes: int, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.size_divisibility = 4
        self.features = nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.semantic = nn.Conv2d(8, num_classes, 1)
        self.center = nn.Conv2d(8, 1, 1)
        self.offset = nn.Conv2d(8, 2, 1)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator))

    def forward(self, images, size_divisibility=None):
        height, width = images.shape[-2:]
        features = torch.relu(self.features(images))
        features = features + features.mean(dim=(2, 3), keepdim=True)
        center = F.avg_pool2d(self.center(features), 61, 1, 30)
        center = torch.sigmoid(3.0 * (center - center.mean()) / center.std() - 3.0)  # sparse, unsaturated peaks
        maps = {"semantic": self.semantic(features), "center": center, "offset": 5.0 * torch.tanh(self.offset(features))}
        size = (features.shape[-2] * 4, features.shape[-1] * 4)
        up = {k: F.interpolate(v, size=size, mode="bilinear", align_corners=False)[..., :height, :width]
              for k, v in maps.items()}
        up["offset"] = up["offset"] * 4
        return up


def _image(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth random colours (blobs a network can segment), uint8 RGB."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 32 + 2, width // 32 + 2, 3)).astype(np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(small).resize((width, height), Image.BILINEAR))


def _oracle(image, network, cfg, spec):
    test, post = cfg.test, cfg.post
    return d2.inference(
        image, network, min_size=test.min_size, max_size=test.max_size, size_divisibility=test.size_divisibility,
        mean=cfg.data.mean, std=cfg.data.std, thing_ids=[t for t, thing in enumerate(spec.is_thing) if thing],
        label_divisor=post.label_divisor, stuff_area=post.stuff_area, threshold=post.threshold,
        nms_kernel=post.nms_kernel, top_k=post.top_k)


def _assert_equal(prediction, oracle) -> int:
    np.testing.assert_array_equal(prediction.panoptic, oracle["panoptic"].numpy())
    np.testing.assert_array_equal(prediction.semantic, oracle["sem_seg"].argmax(0).numpy())
    np.testing.assert_allclose(prediction.center_heatmap, oracle["center"][0].numpy(), rtol=0, atol=1e-6)
    things = {s["id"]: s for s in prediction.segments if s["isthing"]}
    assert sorted(things) == sorted(oracle["instances"])
    for label, want in oracle["instances"].items():
        got = things[label]
        assert got["train_id"] == want["class"]
        assert got["mass_center"] == want["mass_center"], label
        assert got["score"] == pytest.approx(want["score"], rel=1e-5, abs=1e-7), label
    return len(things)


def _tiny_case(config_name, height, width, tmp_path):
    cfg, spec = _config_and_spec(config_name, tmp_path)
    network = TinyNet(spec.num_classes, seed=height + width)
    predictor = Predictor.from_model(network, cfg, spec, "cpu")
    image = _image(height, width, seed=height)
    prediction = predictor(image)
    oracle = _oracle(image, lambda batch: {
        ("sem_seg" if k == "semantic" else k): v for k, v in network(batch, size_divisibility=1).items()}, cfg, spec)
    return prediction, oracle, cfg


CASES = [(name, 508, 1020) for name in CONFIGS if "cityscapes" in name] + [("coco_r52_dc5_d2_dsconv.yaml", 480, 640)]


@pytest.mark.parametrize("config_name,height,width", CASES)
def test_pipeline_equals_detectron2(tmp_path, config_name, height, width):
    prediction, oracle, cfg = _tiny_case(config_name, height, width, tmp_path)
    assert _assert_equal(prediction, oracle) >= 3  # a real test: several instances


@pytest.mark.slow
@pytest.mark.parametrize("config_name", [n for n in CONFIGS if "cityscapes" in n])
def test_pipeline_equals_detectron2_at_1024x2048(tmp_path, config_name):
    prediction, oracle, cfg = _tiny_case(config_name, 1024, 2048, tmp_path)
    assert _assert_equal(prediction, oracle) >= 3


@pytest.mark.parametrize("override", ["test.size_divisibility=32", "test.scale_offsets=true", "test.min_size=0",
                                      "post.instance_score=center"])
def test_each_detectron2_setting_matters(tmp_path, override):
    """Negative control: undo one setting and the output no longer equals detectron2's."""
    cfg, spec = _config_and_spec("cityscapes_r52_dc5_d2.yaml", tmp_path)
    cfg.apply_overrides([override])
    network = TinyNet(spec.num_classes, seed=1528)
    image = _image(508, 1020, seed=508)
    prediction = Predictor.from_model(network, cfg, spec, "cpu")(image)
    reference = load_config(REPO / "configs" / "cityscapes_r52_dc5_d2.yaml")
    oracle = _oracle(image, lambda batch: {
        ("sem_seg" if k == "semantic" else k): v for k, v in network(batch, size_divisibility=1).items()},
        reference, spec)
    with pytest.raises((AssertionError, KeyError)):
        _assert_equal(prediction, oracle)


# Small-scale versions of the published settings: the ASPP window keeps dividing the features, the
# resize and the COCO canvas shrink with it.
SMALL = {
    "cityscapes": (["model.aspp_pooling_size=[64,128]", "test.min_size=64", "test.max_size=128",
                    "post.stuff_area=64"], (4, 8), (48, 96)),
    "coco": (["model.aspp_pooling_size=[128,128]", "test.min_size=128", "test.max_size=128",
              "test.size_divisibility=128", "post.stuff_area=64"], (8, 8), (72, 96)),
}


@pytest.mark.parametrize("config_name", sorted(CONFIGS))
def test_imported_checkpoint_equals_detectron2(tmp_path, config_name):
    """detectron2-written SyncBN .pkl -> pdl weights import -> Predictor, against the oracle's own
    network over the same detectron2-named arrays plus detectron2's pipeline."""
    from modeling.test_detectron2_files import detectron2_syncbn_state, write_pkl

    dsconv = CONFIGS[config_name]
    cfg, spec = _config_and_spec(config_name, tmp_path)
    overrides, pool_kernel, (height, width) = SMALL[cfg.data.dataset]
    arrays = detectron2_syncbn_state(cfg, spec.num_classes, dsconv, seed=8)
    # sharper predictors, so that a random network gives several classes and instances
    arrays["sem_seg_head.predictor.weight"] *= 8.0
    arrays["ins_embed_head.center_predictor.weight"] *= 4.0
    arrays["ins_embed_head.offset_predictor.weight"] *= 4.0
    source = write_pkl(tmp_path / "model_final.pkl", arrays, protocol=5)
    out = tmp_path / "imported.pt"
    args = ["weights", "import", str(source), "--from", "detectron2", "--config", str(REPO / "configs" / config_name),
            "--output", str(out)] + [arg for item in overrides for arg in ("--set", item)]
    if cfg.data.dataset == "coco":
        args += ["--data", cfg.data.root]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output

    predictor = Predictor(out)
    image = _image(height, width, seed=3)
    prediction = predictor(image)
    state = {k: torch.from_numpy(v) for k, v in arrays.items()}
    oracle = _oracle(image, lambda batch: d2.network_forward(batch, state, dsconv=dsconv, pool_kernel=pool_kernel),
                     predictor.cfg, spec)
    scale = float(oracle["center"].abs().max())
    np.testing.assert_allclose(prediction.offsets, oracle["offset"].numpy(), rtol=0, atol=1e-4 * max(1.0, scale))
    assert _assert_equal(prediction, oracle) >= 3
