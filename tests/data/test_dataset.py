"""Records and the training dataset on the toy set: targets equal encode_targets on the raw sample,
augmentation keeps image and labels aligned, items are reproducible from the torch seed."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pdlkit.config import Config
from pdlkit.data import TARGET_KEYS, build_train_dataset, cityscapes_spec, load_records, segments_from_info
from pdlkit.data.dataset import _unused_id
from pdlkit.data.transforms import AugmentParams, apply_augment, apply_augment_reference, flip_pair
from pdlkit.errors import DataError


def _cfg(root, **data) -> Config:
    cfg = Config()
    cfg.data.root = str(root)
    cfg.data.crop_size = (64, 128)
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def _raw_sample(root, split, image_id):
    """(image [H, W, 3] uint8, ids [H, W] int64, segments [S, 4]) read here with PIL and the official table."""
    from cityscapesscripts.helpers.labels import id2label

    data = json.loads((root / "gtFine" / f"cityscapes_panoptic_{split}.json").read_text())
    ann = next(a for a in data["annotations"] if a["image_id"] == image_id)
    rgb = np.asarray(Image.open(root / "gtFine" / f"cityscapes_panoptic_{split}" / ann["file_name"]).convert("RGB"))
    rgb = rgb.astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    rows = [[s["id"], id2label[s["category_id"]].trainId, int(id2label[s["category_id"]].hasInstances), s["iscrowd"]]
            for s in ann["segments_info"] if 0 <= id2label[s["category_id"]].trainId < 255]
    city = image_id.split("_")[0]
    image = np.asarray(Image.open(root / "leftImg8bit" / split / city / f"{image_id}_leftImg8bit.png").convert("RGB"))
    return image, ids, np.array(rows, np.int64)


def test_records_follow_the_panoptic_json(toy_root):
    spec = cityscapes_spec()
    train, val = load_records(toy_root, "train"), load_records(toy_root, "val", "toy")
    assert len(train) == 6 and len(val) == 3
    assert [r.image_id for r in train] == sorted(r.image_id for r in train)
    for record in train + val:
        assert record.image_path.is_file() and record.panoptic_path.is_file()
        assert record.image_path.name == f"{record.image_id}_leftImg8bit.png"
        assert (record.height, record.width) == (64, 128)
        assert record.segments.dtype == np.int64 and record.segments.shape[1] == 4
        for segment_id, train_id, is_thing, iscrowd in record.segments:
            label_id = segment_id // 1000 if segment_id >= 1000 else segment_id
            assert spec.category_ids[train_id] == label_id
            assert is_thing == spec.is_thing[train_id]
            assert iscrowd == int(segment_id < 1000 and is_thing)


def test_segments_without_train_id_are_dropped():
    info = [{"id": 7, "category_id": 7}, {"id": 9, "category_id": 9},  # parking: no train id
            {"id": 26001, "category_id": 26, "iscrowd": 0}, {"id": 24, "category_id": 24, "iscrowd": 1}]
    rows = segments_from_info(info, cityscapes_spec())
    assert rows.tolist() == [[7, 0, 0, 0], [26001, 13, 1, 0], [24, 11, 1, 1]]
    assert segments_from_info([], cityscapes_spec()).shape == (0, 4)
    with pytest.raises(DataError, match="lacks an integer 'id'"):
        segments_from_info([{"category_id": 7}], cityscapes_spec(), source="x.json")


def test_missing_panoptic_json_says_to_prepare(tmp_path):
    with pytest.raises(DataError, match="pdl prepare cityscapes"):
        load_records(tmp_path, "train")
    with pytest.raises(DataError, match="unknown dataset"):
        load_records(tmp_path, "train", "mapillary")


def test_unaugmented_item_equals_encode_targets_on_the_raw_sample(toy_root):
    from pdlkit.ops import encode_targets

    cfg = _cfg(toy_root, sigma=3.0, small_instance_area=100, small_instance_weight=2.5)
    dataset = build_train_dataset(cfg, cityscapes_spec(), augment=False)
    assert len(dataset) == 6
    for index in (0, 3, 5):
        item = dataset[index]
        image, ids, segments = _raw_sample(toy_root, "train", dataset.records[index].image_id)
        expected = encode_targets(torch.from_numpy(ids), torch.from_numpy(segments), sigma=3.0, ignore_label=255,
                                  small_instance_area=100, small_instance_weight=2.5, ignore_stuff_in_offset=True,
                                  ignore_crowd_in_semantic=False)
        assert set(item) == {"image", *TARGET_KEYS}
        for key in TARGET_KEYS:
            assert item[key].dtype == expected[key].dtype, key
            assert torch.equal(item[key], expected[key]), key
        mean = np.array(cfg.data.mean, np.float32)
        std = np.array(cfg.data.std, np.float32)
        normalised = ((image.astype(np.float32) - mean) / std).transpose(2, 0, 1)
        assert item["image"].dtype == torch.float32
        assert np.allclose(item["image"].numpy(), normalised, atol=1e-6)
        assert (item["semantic"] == 255).any() and (item["center"] == 1).any()


def test_augmented_items_have_crop_size_and_follow_the_seed(toy_root):
    cfg = _cfg(toy_root, crop_size=(48, 80), min_scale=0.5, max_scale=2.0)
    dataset = build_train_dataset(cfg, cityscapes_spec())
    shapes = {"image": (3, 48, 80), "semantic": (48, 80), "center": (48, 80), "offset": (2, 48, 80),
              "semantic_weights": (48, 80), "center_weights": (48, 80), "offset_weights": (48, 80)}
    torch.manual_seed(11)
    first = [dataset[i] for i in range(len(dataset))]
    torch.manual_seed(11)
    again = [dataset[i] for i in range(len(dataset))]
    torch.manual_seed(12)
    other = [dataset[i] for i in range(len(dataset))]
    for a, b in zip(first, again):
        assert {k: tuple(v.shape) for k, v in a.items()} == shapes
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a["image"], c["image"]) for a, c in zip(first, other))
    batch = torch.utils.data.default_collate(first[:2])
    assert batch["image"].shape == (2, 3, 48, 80) and batch["semantic"].dtype == torch.int64


def _checker(height=40, width=64, block=8):
    """ids [H, W] constant on block x block tiles, and an image whose colour identifies the tile."""
    tile = (np.arange(height)[:, None] // block) * 100 + np.arange(width)[None, :] // block + 1
    lut = {int(t): ((t * 37) % 200 + 20, (t * 91) % 200 + 20, (t * 53) % 200 + 20) for t in np.unique(tile)}
    image = np.array([[lut[int(t)] for t in row] for row in tile], np.uint8)
    return image, tile.astype(np.int64), lut


@pytest.mark.parametrize("resized, crop_yx, flip", [((40, 64), (0, 0), False), ((60, 96), (7, 13), True),
                                                     ((28, 45), (0, 0), True), ((80, 128), (31, 40), False)])
def test_augmentation_keeps_image_and_labels_aligned(resized, crop_yx, flip):
    from pdlkit.io import id_to_rgb

    image, tile, lut = _checker()
    crop = (32, 48)
    mean, std = np.full((1, 1, 3), 10.0, np.float32), np.full((1, 1, 3), 2.0, np.float32)
    out_image, out_ids = apply_augment(image, id_to_rgb(tile), AugmentParams(resized, crop_yx, flip), crop,
                                       mean=mean, std=std, panoptic_fill=0)
    assert out_image.shape == (32, 48, 3) and out_ids.shape == (32, 48)
    pixels = out_image * std + mean
    padded = out_ids == 0
    assert np.allclose(pixels[padded], 10.0)  # padding is the mean pixel
    assert padded.any() == (resized[0] < crop[0] + crop_yx[0] or resized[1] < crop[1] + crop_yx[1])
    # away from tile borders the colour under a label is that label's own colour
    inner = np.ones_like(padded)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            shifted = np.roll(np.roll(out_ids, dy, 0), dx, 1)
            inner &= shifted == out_ids
    inner[[0, -1], :] = inner[:, [0, -1]] = False
    inner &= ~padded
    assert inner.sum() > 200
    expected = np.array([lut[int(t)] for t in out_ids[inner]], np.float32)
    assert np.abs(pixels[inner] - expected).max() <= 1.0
    # left-right: without flip, tile columns grow with x; with flip they shrink
    row = out_ids[inner.any(1).argmax()]
    cols = (row[row > 0] % 100)
    assert (np.all(np.diff(cols) <= 0) if flip else np.all(np.diff(cols) >= 0))


@pytest.mark.parametrize("scale, crop_yx, flip", [(1.0, (0, 0), False), (1.0, (0, 0), True), (0.6, (0, 0), True),
                                                  (1.7, (20, 33), False), (1.37, (11, 70), True), (2.0, (64, 1), False)])
def test_warped_augmentation_equals_resize_pad_crop_flip(toy_root, scale, crop_yx, flip):
    """The one-warp fast path against the step-by-step reference (cv2.resize, np.pad, slicing)."""
    dataset = build_train_dataset(_cfg(toy_root), cityscapes_spec())
    image, panoptic_rgb, record = dataset.read(4)
    params = AugmentParams((round(64 * scale), round(128 * scale)), crop_yx, flip)
    kwargs = dict(mean=dataset.mean, std=dataset.std, panoptic_fill=0)
    fast_image, fast_ids = apply_augment(image, panoptic_rgb, params, (56, 100), **kwargs)
    ref_image, ref_ids = apply_augment_reference(image, panoptic_rgb, params, (56, 100), **kwargs)
    assert fast_image.shape == ref_image.shape == (56, 100, 3) and fast_ids.dtype == np.int32
    # bilinear weights are fixed-point in warpAffine: at most one grey level apart
    assert np.abs((fast_image - ref_image) * dataset.std).max() <= 1.0 + 1e-4
    # nearest neighbour differs only where a sample falls within 1/1024 px of a pixel boundary
    assert np.mean(fast_ids != ref_ids) < 0.02
    if scale == 1.0:
        assert np.array_equal(fast_ids, ref_ids)
    assert np.array_equal(fast_image == 0, ref_image == 0)  # the same padding


def test_flip_twice_is_identity_and_flipped_targets_mirror(toy_root):
    image, tile, _ = _checker()
    a, b = flip_pair(*flip_pair(image, tile))
    assert np.array_equal(a, image) and np.array_equal(b, tile)

    dataset = build_train_dataset(_cfg(toy_root), cityscapes_spec())
    raw_image, panoptic_rgb, record = dataset.read(2)
    fill = _unused_id(record.segments)
    targets = []
    for flip in (False, True):
        params = AugmentParams((64, 128), (0, 0), flip)
        _, ids = apply_augment(raw_image, panoptic_rgb, params, (64, 128), mean=dataset.mean, std=dataset.std,
                               panoptic_fill=fill)
        targets.append(dataset.encode(ids, record.segments))
    plain, mirrored = targets
    for key in ("semantic", "semantic_weights", "center_weights", "offset_weights"):
        assert torch.equal(mirrored[key], plain[key].flip(-1)), key
    assert torch.allclose(mirrored["offset"][0], plain["offset"][0].flip(-1), atol=1e-4)
    assert torch.allclose(mirrored["offset"][1], -plain["offset"][1].flip(-1), atol=1e-4)


def test_padding_is_unlabelled(toy_root):
    cfg = _cfg(toy_root, crop_size=(80, 150), min_scale=1.0, max_scale=1.0, flip=False)
    torch.manual_seed(0)
    item = build_train_dataset(cfg, cityscapes_spec())[1]
    assert item["image"].shape == (3, 80, 150)
    pad = np.zeros((80, 150), bool)
    pad[64:, :] = pad[:, 128:] = True
    assert torch.all(item["semantic"][pad] == 255)
    assert torch.all(item["image"][:, pad] == 0)  # the mean pixel, normalised
    assert torch.all(item["center_weights"][pad] == 0) and torch.all(item["offset_weights"][pad] == 0)
    assert (item["semantic"][~pad] != 255).float().mean() > 0.5


def test_pad_id_is_never_a_segment():
    assert _unused_id(np.array([[7, 0, 0, 0], [26000, 13, 1, 0]])) == 0
    assert _unused_id(np.array([[0, 3, 0, 0], [5, 1, 0, 0]])) == 6
    assert _unused_id(np.zeros((0, 4), np.int64)) == 0


def test_mismatched_png_size_is_reported(toy_root, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(toy_root, root)
    dataset = build_train_dataset(_cfg(root), cityscapes_spec(), augment=False)
    Image.new("RGB", (10, 10)).save(dataset.records[0].panoptic_path)
    with pytest.raises(DataError, match=r"size \(10, 10\) differs from its image"):
        dataset[0]
    dataset.records[1].image_path.write_bytes(b"not a png")
    with pytest.raises(DataError, match="not a readable image"):
        dataset[1]


def test_bad_crop_and_scale_settings_are_user_errors(toy_root):
    with pytest.raises(DataError, match="crop_size"):
        build_train_dataset(_cfg(toy_root, crop_size=(0, 10)), cityscapes_spec())
    with pytest.raises(DataError, match="min_scale"):
        build_train_dataset(_cfg(toy_root, min_scale=2.0, max_scale=1.0), cityscapes_spec())
