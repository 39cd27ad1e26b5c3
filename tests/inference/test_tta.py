"""Padding, multi-scale and flip test-time augmentation."""
from __future__ import annotations

import torch
from torch import nn

from pdlkit.inference.tta import forward_padded, forward_tta, pad_to_multiple

from .fakes import ConvPanopticNet


def test_pad_to_multiple_pads_bottom_right_with_zero():
    images = torch.ones(2, 3, 5, 7)
    padded = pad_to_multiple(images, 4)
    assert padded.shape == (2, 3, 8, 8)
    assert torch.equal(padded[..., :5, :7], images)
    assert padded[..., 5:, :].abs().sum() == 0 and padded[..., :, 7:].abs().sum() == 0
    assert pad_to_multiple(images, 1) is images


class _Recorder(nn.Module):
    """Returns fixed functions of its input and keeps the input it was given."""

    def forward(self, images):
        self.seen = images.clone()
        return {"semantic": images * 2.0, "center": images[:, :1] + 1.0, "offset": images[:, 1:] - 1.0}


def test_forward_padded_pads_with_zero_and_crops_back():
    images = torch.randn(1, 3, 13, 21)
    model = _Recorder()
    out = forward_padded(model, images, size_divisibility=8)
    assert model.seen.shape == (1, 3, 16, 24)
    assert torch.equal(model.seen[..., :13, :21], images)
    assert model.seen[..., 13:, :].abs().sum() == 0 and model.seen[..., 21:].abs().sum() == 0
    assert out["semantic"].shape == (1, 3, 13, 21) and out["offset"].shape == (1, 2, 13, 21)
    assert torch.equal(out["semantic"], images * 2.0)
    assert torch.equal(out["center"], images[:, :1] + 1.0)
    assert torch.equal(out["offset"], images[:, 1:] - 1.0)


def test_one_scale_without_flip_is_the_plain_forward():
    model = ConvPanopticNet(num_classes=4, size_divisibility=4)
    images = torch.randn(2, 3, 9, 14)
    tta = forward_tta(model, images, size_divisibility=4, scales=(1.0,), flip=False)
    plain = forward_padded(model, images, 4)
    for key in ("semantic", "center", "offset"):
        assert torch.equal(tta[key], plain[key])


def test_flip_on_a_mirror_symmetric_image_gives_symmetric_maps():
    model = ConvPanopticNet(num_classes=4, size_divisibility=4)
    half = torch.randn(1, 3, 10, 6)
    images = torch.cat([half, half.flip(-1)], dim=-1)  # 10 x 12, mirror symmetric
    out = forward_tta(model, images, size_divisibility=4, scales=(1.0,), flip=True)
    probs = out["semantic"].exp()
    torch.testing.assert_close(probs, probs.flip(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["center"], out["center"].flip(-1), rtol=0, atol=1e-6)
    # y offsets mirror as they are; x offsets change sign under the mirror
    torch.testing.assert_close(out["offset"][:, 0], out["offset"][:, 0].flip(-1), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["offset"][:, 1], -out["offset"][:, 1].flip(-1), rtol=0, atol=1e-6)
    # and the average is of the plain and the mirrored run, computed here independently
    plain = forward_padded(model, images, 4)
    expected_x = (plain["offset"][:, 1] - plain["offset"][:, 1].flip(-1)) / 2
    torch.testing.assert_close(out["offset"][:, 1], expected_x, rtol=0, atol=1e-6)
    expected_probs = (plain["semantic"].softmax(1) + plain["semantic"].softmax(1).flip(-1)) / 2
    torch.testing.assert_close(probs, expected_probs, rtol=0, atol=1e-6)


class _SizeProportionalOffsets(nn.Module):
    """Offsets proportional to the input size (as real offsets scale with the picture):
    (H_in / 8, W_in / 8) everywhere; semantic and center constant."""

    size_divisibility = 1

    def forward(self, images):
        n, _, height, width = images.shape
        offset = torch.empty(n, 2, height, width)
        offset[:, 0], offset[:, 1] = height / 8, width / 8
        return {"semantic": torch.zeros(n, 3, height, width), "center": torch.full((n, 1, height, width), 0.5),
                "offset": offset}


def test_offsets_of_other_scales_are_rescaled_to_the_original_resolution():
    images = torch.zeros(1, 3, 16, 24)
    out = forward_tta(_SizeProportionalOffsets(), images, scales=(0.5, 1.0, 1.5, 2.0), flip=False)
    torch.testing.assert_close(out["offset"][:, 0], torch.full((1, 16, 24), 2.0))
    torch.testing.assert_close(out["offset"][:, 1], torch.full((1, 16, 24), 3.0))
    torch.testing.assert_close(out["center"], torch.full((1, 1, 16, 24), 0.5))
    # three classes with equal logits: the averaged probabilities stay uniform
    torch.testing.assert_close(out["semantic"].exp(), torch.full((1, 3, 16, 24), 1 / 3))


def test_multi_scale_averages_probabilities_of_resized_views():
    model = ConvPanopticNet(num_classes=3, size_divisibility=4)
    images = torch.randn(1, 3, 12, 16)
    out = forward_tta(model, images, size_divisibility=4, scales=(1.0, 0.5), flip=False)
    full = forward_padded(model, images, 4)
    small_in = torch.nn.functional.interpolate(images, size=(6, 8), mode="bilinear", align_corners=False)
    small = forward_padded(model, small_in, 4)
    up = lambda t: torch.nn.functional.interpolate(t, size=(12, 16), mode="bilinear", align_corners=False)
    expected = (full["semantic"].softmax(1) + up(small["semantic"]).softmax(1)) / 2
    torch.testing.assert_close(out["semantic"].exp(), expected, rtol=0, atol=1e-6)
    expected_offset = (full["offset"] + up(small["offset"]) * 2.0) / 2
    torch.testing.assert_close(out["offset"], expected_offset, rtol=0, atol=1e-5)
