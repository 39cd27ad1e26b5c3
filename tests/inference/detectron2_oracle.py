"""An independent re-implementation of detectron2's Panoptic-DeepLab inference, for parity tests.

Written from what detectron2's code does (``projects/Panoptic-DeepLab``: ``panoptic_seg.py``,
``post_processing.py``; ``projects/DeepLab``; ``detectron2/layers/{aspp,blocks}.py``,
``detectron2/data/transforms`` and ``ImageList``), step by step and as literally as the test needs,
sharing no code with pdlkit:

- test mapper: ``ResizeShortestEdge(MIN_SIZE_TEST, MAX_SIZE_TEST)`` (float scale, ``int(x + 0.5)``,
  PIL bilinear on the uint8 image), RGB, CHW;
- model: ``(x - pixel_mean) / pixel_std``, ``ImageList.from_tensors`` (zero pad at the bottom and right
  to a multiple of ``SIZE_DIVISIBILITY`` when it is > 0, else the backbone's 0 = none), the network
  (:func:`network_forward` over a detectron2-named state dict; heads upsample by ``scale_factor=4``,
  offsets x 4), ``sem_seg_postprocess`` (crop to the resized size, bilinear to the input size; offsets
  are not rescaled);
- post-processing: thresholded max-pool NMS with top-k, per-pixel argmin of ``torch.norm`` distances,
  majority vote with ``torch.mode``, stuff area, void -1;
- instances: per panoptic label of a thing class, score = mean softmax probability of the class over
  the mask x the center heatmap at (int(mean y), int(mean x)) of ``torch.nonzero(mask).float()``.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


# ------------------------------------------------------------------------------------ test mapper
def resize_shortest_edge(image: np.ndarray, short: int, max_size: int) -> np.ndarray:
    h, w = image.shape[:2]
    size = short * 1.0
    scale = size / min(h, w)
    if h < w:
        newh, neww = size, scale * w
    else:
        newh, neww = scale * h, size
    if max(newh, neww) > max_size:
        scale = max_size * 1.0 / max(newh, neww)
        newh = newh * scale
        neww = neww * scale
    neww = int(neww + 0.5)
    newh = int(newh + 0.5)
    return np.asarray(Image.fromarray(image).resize((neww, newh), Image.BILINEAR))


def image_list(images: List[torch.Tensor], size_divisibility: int) -> torch.Tensor:
    max_h = max(im.shape[-2] for im in images)
    max_w = max(im.shape[-1] for im in images)
    if size_divisibility > 1:
        max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
        max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
    batch = images[0].new_full((len(images), images[0].shape[0], max_h, max_w), 0.0)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[-2], : im.shape[-1]].copy_(im)
    return batch


def sem_seg_postprocess(result: torch.Tensor, img_size, output_height: int, output_width: int) -> torch.Tensor:
    result = result[:, : img_size[0], : img_size[1]].expand(1, -1, -1, -1)
    return F.interpolate(result, size=(output_height, output_width), mode="bilinear", align_corners=False)[0]


# ------------------------------------------------------------------------------- post-processing
def find_instance_center(center_heatmap, threshold, nms_kernel, top_k):
    center_heatmap = F.threshold(center_heatmap, threshold, -1)
    pad = (nms_kernel - 1) // 2
    pooled = F.max_pool2d(center_heatmap, kernel_size=nms_kernel, stride=1, padding=pad)
    center_heatmap[center_heatmap != pooled] = -1
    center_heatmap = center_heatmap.squeeze()
    top_scores, _ = torch.topk(torch.flatten(center_heatmap), top_k)
    return torch.nonzero(center_heatmap > top_scores[-1].clamp_(min=0))


def group_pixels(center_points, offsets, thing_seg, chunk: int = 1 << 16):
    """detectron2's group_pixels, evaluated only where ``thing_seg`` is set (elsewhere its result is
    multiplied by 0); the [2, M] -> .T layout of detectron2's ``center_loc`` is kept so that
    ``torch.norm`` takes the same kernel path."""
    height, width = offsets.shape[1:]
    y, x = torch.meshgrid(torch.arange(height, dtype=offsets.dtype), torch.arange(width, dtype=offsets.dtype),
                          indexing="ij")
    where = thing_seg.reshape(-1) > 0
    center_loc = (torch.stack([y, x]) + offsets).flatten(1)[:, where].T.unsqueeze(0)  # [1, M, 2]
    points = center_points.unsqueeze(1)  # [K, 1, 2]
    ids = []
    for start in range(0, center_loc.shape[1], chunk):  # per pixel: the chunks do not interact
        distance = torch.norm(points - center_loc[:, start:start + chunk], dim=-1)
        ids.append(torch.argmin(distance, dim=0))
    instance_id = torch.zeros(height * width, dtype=torch.int64)
    if ids:
        instance_id[where] = torch.cat(ids) + 1
    return instance_id.reshape(1, height, width)


def panoptic_segmentation(sem_seg, center_heatmap, offsets, thing_ids, label_divisor, stuff_area, void_label,
                          threshold, nms_kernel, top_k):
    thing_seg = torch.zeros_like(sem_seg)
    for thing_class in thing_ids:
        thing_seg[sem_seg == thing_class] = 1
    centers = find_instance_center(center_heatmap.clone(), threshold, nms_kernel, top_k)
    if centers.shape[0] == 0:
        ins_seg = torch.zeros_like(sem_seg)
    else:
        ins_seg = thing_seg * group_pixels(centers, offsets, thing_seg)
    pan_seg = torch.zeros_like(sem_seg) + void_label
    is_thing = (ins_seg > 0) & (thing_seg > 0)
    tracker = Counter()
    for ins_id in torch.unique(ins_seg):
        if ins_id == 0:
            continue
        mask = (ins_seg == ins_id) & is_thing
        if torch.nonzero(mask).size(0) == 0:
            continue
        class_id, _ = torch.mode(sem_seg[mask].view(-1))
        tracker[class_id.item()] += 1
        pan_seg[mask] = class_id * label_divisor + tracker[class_id.item()]
    for class_id in torch.unique(sem_seg):
        if class_id.item() in thing_ids:
            continue
        stuff_mask = (sem_seg == class_id) & (ins_seg == 0)
        if stuff_mask.sum().item() >= stuff_area:
            pan_seg[stuff_mask] = class_id * label_divisor
    return pan_seg


def instances(panoptic, r, c, thing_ids, label_divisor) -> Dict[int, dict]:
    semantic_prob = F.softmax(r, dim=0)
    found = {}
    for label in np.unique(panoptic.numpy()):
        if label == -1:
            continue
        pred_class = int(label) // label_divisor
        if pred_class not in thing_ids:
            continue
        mask = panoptic == int(label)
        sem_score = torch.mean(semantic_prob[pred_class][mask])
        indices = torch.nonzero(mask).float()
        cy, cx = torch.mean(indices[:, 0]), torch.mean(indices[:, 1])
        center_score = c[0, int(cy.item()), int(cx.item())]
        found[int(label)] = {"class": pred_class, "score": float(sem_score * center_score),
                             "mass_center": [int(cy.item()), int(cx.item())]}
    return found


# ------------------------------------------------------------------------------------- inference
def inference(image: np.ndarray, network: Callable[[torch.Tensor], Dict[str, torch.Tensor]], *, min_size: int,
              max_size: int, size_divisibility: int, mean: Sequence[float], std: Sequence[float],
              thing_ids: Sequence[int], label_divisor: int = 1000, stuff_area: int = 2048,
              threshold: float = 0.1, nms_kernel: int = 7, top_k: int = 200) -> dict:
    """detectron2's test mapper + ``PanopticDeepLab.forward`` in eval mode for one uint8 RGB image.

    ``network(images [1, 3, Hp, Wp])`` returns the heads' upsampled outputs ``{"sem_seg", "center",
    "offset"}`` at 4x the stride-4 maps.  Returns {"panoptic": [H, W] int64, "sem_seg": [C, H, W],
    "center": [1, H, W], "offset": [2, H, W], "instances": {panoptic label: class, score, mass_center}}.
    """
    height, width = image.shape[:2]
    resized = resize_shortest_edge(image, min_size, max_size)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
    pixel_mean = torch.tensor(list(mean)).view(-1, 1, 1)
    pixel_std = torch.tensor(list(std)).view(-1, 1, 1)
    normalised = (tensor - pixel_mean) / pixel_std
    batch = image_list([normalised], size_divisibility)
    with torch.no_grad():
        out = network(batch)
    image_size = resized.shape[:2]
    r = sem_seg_postprocess(out["sem_seg"][0], image_size, height, width)
    c = sem_seg_postprocess(out["center"][0], image_size, height, width)
    o = sem_seg_postprocess(out["offset"][0], image_size, height, width)
    thing_ids = list(thing_ids)
    panoptic = panoptic_segmentation(r.argmax(dim=0, keepdim=True), c, o, thing_ids, label_divisor, stuff_area,
                                     -1, threshold, nms_kernel, top_k).squeeze(0)
    return {"panoptic": panoptic, "sem_seg": r, "center": c, "offset": o,
            "instances": instances(panoptic, r, c, thing_ids, label_divisor)}


# -------------------------------------------------------------------------------------- network
def _bn(x, state, prefix):
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                        state[f"{prefix}.weight"], state[f"{prefix}.bias"], False, 0.0, 1e-5)


def _conv(x, state, name, *, stride=1, padding=0, dilation=1, groups=1, norm=True, relu=True):
    """detectron2's ``layers.Conv2d``: conv, optional ``.norm``, optional ReLU."""
    x = F.conv2d(x, state[f"{name}.weight"], state.get(f"{name}.bias"), stride, padding, dilation, groups)
    if norm:
        x = _bn(x, state, f"{name}.norm")
    return F.relu(x) if relu else x


def _dsconv(x, state, name, kernel, dilation=1):
    """DepthwiseSeparableConv2d: k x k depthwise (norm, ReLU), 1x1 pointwise (norm, ReLU)."""
    channels = x.shape[1]
    x = _conv(x, state, f"{name}.depthwise", padding=dilation * (kernel - 1) // 2, dilation=dilation, groups=channels)
    return _conv(x, state, f"{name}.pointwise")


def _resnet(x, state):
    """DeepLab stem (3x3 s2 64, 3x3 64, 3x3 128, max pool) + bottlenecks (stride in the 3x3), res5
    dilated 2 with multi-grid (1, 2, 4), i.e. dilations 2, 4, 8; returns res2, res3, res5."""
    x = _conv(x, state, "backbone.stem.conv1", stride=2, padding=1)
    x = _conv(x, state, "backbone.stem.conv2", padding=1)
    x = _conv(x, state, "backbone.stem.conv3", padding=1)
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    features = {}
    for stage, blocks, stride in ((2, 3, 1), (3, 4, 2), (4, 6, 2), (5, 3, 1)):
        for i in range(blocks):
            name = f"backbone.res{stage}.{i}"
            s = stride if i == 0 else 1
            d = 2 * (1, 2, 4)[i] if stage == 5 else 1
            shortcut = _conv(x, state, f"{name}.shortcut", stride=s, relu=False) if i == 0 else x
            out = _conv(x, state, f"{name}.conv1")
            out = _conv(out, state, f"{name}.conv2", stride=s, padding=d, dilation=d)
            out = _conv(out, state, f"{name}.conv3", relu=False)
            x = F.relu(out + shortcut)
        features[f"res{stage}"] = x
    return features


def _aspp(x, state, name, dsconv, pool_kernel):
    size = x.shape[-2:]
    if size[0] % pool_kernel[0] or size[1] % pool_kernel[1]:
        raise ValueError("`pool_kernel_size` must be divisible by the shape of inputs.")
    branches = [_conv(x, state, f"{name}.convs.0")]
    for index, rate in zip((1, 2, 3), (6, 12, 18)):
        if dsconv:
            branches.append(_dsconv(x, state, f"{name}.convs.{index}", 3, dilation=rate))
        else:
            branches.append(_conv(x, state, f"{name}.convs.{index}", padding=rate, dilation=rate))
    pooled = F.avg_pool2d(x, kernel_size=pool_kernel, stride=1)
    pooled = _conv(pooled, state, f"{name}.convs.4.1", norm=False)
    branches.append(F.interpolate(pooled, size=size, mode="bilinear", align_corners=False))
    return _conv(torch.cat(branches, dim=1), state, f"{name}.project")


def _two_or_separable(x, state, name, dsconv):
    if dsconv:
        return _dsconv(x, state, name, 5)
    return _conv(_conv(x, state, f"{name}.0", padding=1), state, f"{name}.1", padding=1)


def _decoder(features, state, head, dsconv, pool_kernel):
    y = _aspp(features["res5"], state, f"{head}.decoder.res5.project_conv", dsconv, pool_kernel)
    for feature in ("res3", "res2"):
        projected = _conv(features[feature], state, f"{head}.decoder.{feature}.project_conv")
        y = F.interpolate(y, size=projected.shape[2:], mode="bilinear", align_corners=False)
        y = _two_or_separable(torch.cat([projected, y], dim=1), state, f"{head}.decoder.{feature}.fuse_conv", dsconv)
    return y


def network_forward(images: torch.Tensor, state: Dict[str, torch.Tensor], *, dsconv: bool, pool_kernel) -> dict:
    """detectron2's PanopticDeepLab network (eval) on normalised, padded images, from a detectron2-named
    state dict; ``pool_kernel`` = the ASPP window in feature pixels (train crop / 16)."""
    features = _resnet(images, state)
    sem = _decoder(features, state, "sem_seg_head", dsconv, pool_kernel)
    sem = _two_or_separable(sem, state, "sem_seg_head.head", dsconv)
    sem = _conv(sem, state, "sem_seg_head.predictor", norm=False, relu=False)
    ins = _decoder(features, state, "ins_embed_head", dsconv, pool_kernel)
    center = _two_or_separable(ins, state, "ins_embed_head.center_head", False)
    center = _conv(center, state, "ins_embed_head.center_predictor", norm=False, relu=False)
    offset = _two_or_separable(ins, state, "ins_embed_head.offset_head", dsconv)
    offset = _conv(offset, state, "ins_embed_head.offset_predictor", norm=False, relu=False)
    up = dict(scale_factor=4, mode="bilinear", align_corners=False)
    return {"sem_seg": F.interpolate(sem, **up), "center": F.interpolate(center, **up),
            "offset": F.interpolate(offset, **up) * 4}
