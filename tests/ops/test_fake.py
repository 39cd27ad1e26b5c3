"""Fake kernels: opcheck of the three ops, FakeTensor shapes with data-dependent counts, and
torch.compile of a small network + post-processing giving the eager panoptic output."""
from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from pdlkit.ops import panoptic_merge

from .conftest import needs_native

pytestmark = needs_native

HEATMAP = torch.zeros(1, 12, 16)
HEATMAP[0, 3, 4] = 0.9
HEATMAP[0, 8, 11] = 0.7
LABELS = torch.zeros(12, 16, dtype=torch.int64)
LABELS[2:5, 3:6] = 2
LABELS[7:10, 10:13] = 3
PANOPTIC = LABELS.to(torch.int32) * 10
SEGMENTS = torch.tensor([[0, 0, 0, 0], [20, 2, 1, 0], [30, 3, 1, 0]])
OFFSETS = torch.zeros(2, 12, 16)
LOGITS = torch.randn(5, 12, 16, generator=torch.Generator().manual_seed(0))
MERGE_SCALARS = ([2, 3], 1000, 4, -1, 0.1, 3, 200)


@pytest.mark.parametrize(
    "op,args",
    [
        ("find_instance_centers", (HEATMAP, 0.1, 3, 200)),
        ("encode_targets", (PANOPTIC, SEGMENTS, 2.0, 255, 4096, 3.0, True, False)),
        ("panoptic_merge", (LABELS, HEATMAP, OFFSETS) + MERGE_SCALARS),
        ("panoptic_merge", (LOGITS, HEATMAP, OFFSETS) + MERGE_SCALARS),
    ],
)
def test_opcheck(op, args):
    # Schema, fake kernel against the real one, and AOT dispatch with dynamic shapes.
    torch.library.opcheck(getattr(torch.ops.pdlkit, op).default, args)


def test_fake_tensors_give_shapes_with_data_dependent_counts():
    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        logits, heatmap, offsets = (mode.from_tensor(t) for t in (LOGITS, HEATMAP, OFFSETS))
        outputs = torch.ops.pdlkit.panoptic_merge(logits, heatmap, offsets, *MERGE_SCALARS)
        panoptic, semantic, ids, classes, centers, objectness, class_scores, scores = outputs
        assert (panoptic.shape, panoptic.dtype) == ((12, 16), torch.int32)
        assert (semantic.shape, semantic.dtype) == ((12, 16), torch.int64)
        count = ids.shape[0]
        assert isinstance(count, torch.SymInt)  # unknown until the op runs
        assert centers.shape == (count, 2) and centers.dtype == torch.int64
        assert all(t.shape == (count,) and t.dtype == torch.float32 for t in (objectness, class_scores, scores))
        targets = torch.ops.pdlkit.encode_targets(mode.from_tensor(PANOPTIC), mode.from_tensor(SEGMENTS), 2.0, 255,
                                                  4096, 3.0, True, False)
        assert [tuple(t.shape) for t in targets[:2]] == [(12, 16), (12, 16)]
        assert isinstance(targets[2].shape[0], torch.SymInt) and targets[2].shape[1] == 2
        assert targets[3].shape == (2, 12, 16)
        centers, scores = torch.ops.pdlkit.find_instance_centers(heatmap, 0.1, 3, 200)
        assert centers.shape[1] == 2 and scores.shape[0] == centers.shape[0]


class TinyPanopticNet(torch.nn.Module):
    """Three 1x1-conv heads on one 3x3 conv: semantic logits [N, 4, H, W], center [N, 1, H, W],
    offsets [N, 2, H, W]."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.trunk = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.semantic = torch.nn.Conv2d(8, 4, 1)
        self.center = torch.nn.Conv2d(8, 1, 1)
        self.offset = torch.nn.Conv2d(8, 2, 1)
        for parameter in self.parameters():
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.5

    def forward(self, image):
        features = torch.relu(self.trunk(image))
        return self.semantic(features), torch.sigmoid(self.center(features)), 4 * self.offset(features)


def predict(net, image):
    semantic, center, offsets = net(image)
    return panoptic_merge(semantic[0], center[0], offsets[0], [2, 3], stuff_area=8, nms_kernel=3,
                          backend="native")


def test_compiled_network_and_post_processing_equal_eager():
    net = TinyPanopticNet().eval()
    image = torch.randn(1, 3, 24, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        eager = predict(net, image)
        torch._dynamo.reset()
        compiled = torch.compile(predict, fullgraph=False, backend="aot_eager")(net, image)
    assert len(eager) > 0  # the scene has instances, so the dynamic counts are exercised
    for field in ("panoptic", "semantic", "ids", "classes", "centers"):
        assert torch.equal(getattr(compiled, field), getattr(eager, field)), field
    for field in ("objectness", "class_scores", "scores"):
        torch.testing.assert_close(getattr(compiled, field), getattr(eager, field), rtol=1e-6, atol=1e-6)
