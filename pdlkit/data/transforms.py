"""Training augmentation on numpy arrays: random scale, pad, random crop, horizontal flip.

The image and its panoptic id map always move together.  Images are resized bilinearly and panoptic
maps with centre-aligned nearest neighbour (``INTER_NEAREST_EXACT``: same pixel grid as the bilinear
resize, and ids are never blended).  Randomness is drawn from torch's generator, so one
``torch.manual_seed`` (the DataLoader seeds each worker) makes an item reproducible.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AugmentParams", "sample_augment_params", "apply_augment", "apply_augment_reference", "resize_pair",
           "pad_pair", "crop_pair", "flip_pair"]


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the augmentation: resized size (h, w), crop origin (y, x) after padding, flip."""

    resized_hw: tuple
    crop_yx: tuple
    flip: bool


def sample_augment_params(height: int, width: int, crop_hw: tuple, *, min_scale: float, max_scale: float,
                          flip: bool, generator=None) -> AugmentParams:
    """Draw scale in [min_scale, max_scale], a crop origin and a flip with torch's RNG."""
    import torch

    scale = float(torch.empty(()).uniform_(min_scale, max_scale, generator=generator)) \
        if max_scale > min_scale else float(min_scale)
    resized = (max(1, int(round(height * scale))), max(1, int(round(width * scale))))
    crop_h, crop_w = crop_hw
    room_y = max(resized[0], crop_h) - crop_h
    room_x = max(resized[1], crop_w) - crop_w
    y0 = int(torch.randint(0, room_y + 1, (), generator=generator))
    x0 = int(torch.randint(0, room_x + 1, (), generator=generator))
    do_flip = bool(flip) and bool(torch.rand((), generator=generator) < 0.5)
    return AugmentParams(resized, (y0, x0), do_flip)


def resize_pair(image: np.ndarray, panoptic_rgb: np.ndarray, size_hw: tuple):
    """image [H, W, C] (bilinear), panoptic_rgb [H, W, 3] uint8 (nearest) -> both at ``size_hw``."""
    import cv2

    h, w = size_hw
    if (h, w) == image.shape[:2]:
        return image, panoptic_rgb
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    panoptic_rgb = cv2.resize(panoptic_rgb, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, panoptic_rgb


def pad_pair(image: np.ndarray, panoptic: np.ndarray, min_hw: tuple, *, image_fill: float, panoptic_fill: int):
    """Pad bottom/right up to ``min_hw``: image [H, W, C] with ``image_fill``, panoptic [H, W] with
    ``panoptic_fill`` (an id that is no segment, so padding is unlabelled)."""
    h, w = panoptic.shape
    pad_h, pad_w = max(min_hw[0] - h, 0), max(min_hw[1] - w, 0)
    if pad_h == 0 and pad_w == 0:
        return image, panoptic
    image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=image_fill)
    panoptic = np.pad(panoptic, ((0, pad_h), (0, pad_w)), constant_values=panoptic_fill)
    return image, panoptic


def crop_pair(image: np.ndarray, panoptic: np.ndarray, origin_yx: tuple, size_hw: tuple):
    y0, x0 = origin_yx
    h, w = size_hw
    return image[y0:y0 + h, x0:x0 + w], panoptic[y0:y0 + h, x0:x0 + w]


def flip_pair(image: np.ndarray, panoptic: np.ndarray):
    """Mirror left-right (x -> W - 1 - x)."""
    return image[:, ::-1], panoptic[:, ::-1]


def apply_augment(image: np.ndarray, panoptic_rgb: np.ndarray, params: AugmentParams, crop_hw: tuple, *,
                  mean: np.ndarray, std: np.ndarray, panoptic_fill: int):
    """image [H, W, 3] uint8 RGB, panoptic_rgb [H, W, 3] uint8 -> (normalised image [h, w, 3] f32,
    panoptic ids [h, w] int32) at ``crop_hw``: resize to ``params.resized_hw``, pad bottom/right with
    the mean pixel (0 after normalising) and ``panoptic_fill``, crop at ``params.crop_yx``, flip.

    One affine warp per array computes only the crop's pixels, sampling the source exactly where
    ``cv2.resize`` would (pixel centres: src = (dst + 0.5) / scale - 0.5, edges clamped), so the result
    is :func:`apply_augment_reference` without materialising the resized image (up to 4x the source
    at scale 2).
    """
    import cv2

    from ..io import rgb_to_id

    height, width = panoptic_rgb.shape[:2]
    crop_h, crop_w = crop_hw
    resized_h, resized_w = params.resized_hw
    y0, x0 = params.crop_yx
    scale_y, scale_x = resized_h / height, resized_w / width
    # destination (row r, column c) -> resized (Y, X) = (r + y0, x0 + c) or, flipped, (x0 + crop_w - 1 - c)
    # -> source ((Y + .5) / scale_y - .5, (X + .5) / scale_x - .5)
    sign = -1.0 if params.flip else 1.0
    first_x = x0 + (crop_w - 1 if params.flip else 0)
    to_source = np.array([[sign / scale_x, 0.0, (first_x + 0.5) / scale_x - 0.5],
                          [0.0, 1.0 / scale_y, (y0 + 0.5) / scale_y - 0.5]])
    flags = cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(image, to_source, (crop_w, crop_h), flags=flags | cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    warped_panoptic = cv2.warpAffine(panoptic_rgb, to_source, (crop_w, crop_h), flags=flags | cv2.INTER_NEAREST,
                                     borderMode=cv2.BORDER_REPLICATE)
    normalised = (warped.astype(np.float32) - mean) / std
    panoptic = rgb_to_id(warped_panoptic)
    # what lies beyond the resized image is padding
    rows = np.arange(crop_h) + y0
    cols = first_x + sign * np.arange(crop_w)
    pad = (rows[:, None] >= resized_h) | (cols[None, :] >= resized_w)
    if pad.any():
        normalised[pad] = 0.0
        panoptic[pad] = panoptic_fill
    return normalised, panoptic


def apply_augment_reference(image: np.ndarray, panoptic_rgb: np.ndarray, params: AugmentParams, crop_hw: tuple,
                            *, mean: np.ndarray, std: np.ndarray, panoptic_fill: int):
    """:func:`apply_augment` step by step (resize, normalise, pad, crop, flip); slow, for tests."""
    from ..io import rgb_to_id

    image, panoptic_rgb = resize_pair(image, panoptic_rgb, params.resized_hw)
    normalised = (image.astype(np.float32) - mean) / std
    panoptic = rgb_to_id(panoptic_rgb)
    normalised, panoptic = pad_pair(normalised, panoptic, crop_hw, image_fill=0.0, panoptic_fill=panoptic_fill)
    normalised, panoptic = crop_pair(normalised, panoptic, params.crop_yx, crop_hw)
    if params.flip:
        normalised, panoptic = flip_pair(normalised, panoptic)
    return np.ascontiguousarray(normalised), np.ascontiguousarray(panoptic)
