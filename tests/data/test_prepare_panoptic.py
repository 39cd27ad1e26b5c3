"""pdl prepare panoptic / vistas: any names and locations, the JSON's categories as the spec,
records and training items, and refusals that name the file and say what to do."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
import custom_dataset as custom  # noqa: E402

from pdlkit.cli.main import cli  # noqa: E402
from pdlkit.config import Config  # noqa: E402
from pdlkit.data import build_train_dataset, load_records, spec_for  # noqa: E402
from pdlkit.data.coco_format import MANIFEST_NAME, prepare_panoptic  # noqa: E402
from pdlkit.data.prepare import prepare_vistas  # noqa: E402
from pdlkit.errors import DataError  # noqa: E402


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def _prepare_cli(root, split, images, json_file, masks):
    return _run("prepare", "panoptic", root, "--split", split, "--images", images, "--json", json_file,
                "--masks", masks)


@pytest.fixture()
def custom_root(tmp_path):
    root = tmp_path / "mine"
    return root, custom.write_custom(root, train=2, val=2, height=48, width=64)


def test_general_form_writes_the_manifest_and_the_spec(custom_root):
    root, splits = custom_root
    for split, files in splits.items():
        result = _prepare_cli(root, split, *files)
        assert result.exit_code == 0, result.output
    assert "6 categories (3 things, 3 stuff); images per split: train 2, val 2" in result.output
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    assert manifest["splits"]["val"] == {"images": "images/val", "json": "annotations/val.json",
                                         "masks": "annotations/val_png", "num_images": 2}
    cfg = Config()
    cfg.data.dataset, cfg.data.root = "coco", str(root)
    spec = spec_for(cfg.data)
    assert spec.category_ids == (7, 19, 42, 100, 101, 205)
    assert spec.class_names == ("person", "bicycle", "dog", "road", "grass", "sky")
    assert spec.is_thing == (True, True, True, False, False, False)
    assert spec.colors[0] == (220, 20, 60) and spec.name == "mine"


def test_records_and_training_items_use_contiguous_train_ids(custom_root):
    root, splits = custom_root
    for split, files in splits.items():
        prepare_panoptic(root, split, images=files[0], json_file=files[1], masks=files[2])
    records = load_records(root, "train", "coco")
    data = json.loads(splits["train"][1].read_text())
    assert [r.image_id for r in records] == ["scene_1_000", "scene_1_001"]
    assert records[0].image_path == (splits["train"][0] / "scene_1_000.jpg").resolve()
    to_train = {7: 0, 19: 1, 42: 2, 100: 3, 101: 4, 205: 5}
    expected = [[s["id"], to_train[s["category_id"]], int(s["category_id"] in custom.THINGS), s["iscrowd"]]
                for s in data["annotations"][0]["segments_info"]]
    assert records[0].segments.tolist() == expected

    cfg = Config()
    cfg.data.dataset, cfg.data.root, cfg.data.num_workers = "coco", str(root), 0
    item = build_train_dataset(cfg, spec_for(cfg.data), augment=False)[0]
    rgb = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(records[0].panoptic_path)).astype(np.int64)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
    semantic = np.full(ids.shape, 255)
    for seg_id, train_id, _, _ in expected:
        semantic[ids == seg_id] = train_id
    assert np.array_equal(item["semantic"].numpy(), semantic)  # void (id 0) stays unlabelled


def test_files_outside_the_root_are_stored_absolute(tmp_path):
    splits = custom.write_custom(tmp_path / "data", train=1, val=1, height=32, width=48)
    manifest = prepare_panoptic(tmp_path / "elsewhere", "train", images=splits["train"][0],
                                json_file=splits["train"][1], masks=splits["train"][2])
    assert manifest["splits"]["train"]["images"] == str(splits["train"][0])
    assert len(load_records(tmp_path / "elsewhere", "train", "coco")) == 1


def _rewrite(json_file: Path, change) -> None:
    data = json.loads(json_file.read_text())
    change(data)
    json_file.write_text(json.dumps(data))


def test_paths_leading_out_of_their_folder_are_refused(custom_root, tmp_path):
    root, splits = custom_root
    images, json_file, masks = splits["train"]
    (tmp_path / "secret.png").write_bytes(b"x")
    _rewrite(json_file, lambda d: d["annotations"][0].update(file_name="../../../secret.png"))
    result = _prepare_cli(root, "train", images, json_file, masks)
    assert result.exit_code == 1 and "'../../../secret.png' leads outside" in result.output
    _rewrite(json_file, lambda d: d["annotations"][0].update(file_name=str(tmp_path / "secret.png")))
    with pytest.raises(DataError, match="is an absolute path"):
        prepare_panoptic(root, "train", images=images, json_file=json_file, masks=masks)
    # a link inside the folder that points outside it is the same escape
    _rewrite(json_file, lambda d: d["annotations"][0].update(file_name="link.png"))
    os.symlink(tmp_path / "secret.png", masks / "link.png")
    with pytest.raises(DataError, match="'link.png' leads outside"):
        prepare_panoptic(root, "train", images=images, json_file=json_file, masks=masks)
    assert not (root / MANIFEST_NAME).exists()


def test_a_json_edited_after_prepare_is_still_checked_on_read(custom_root):
    root, splits = custom_root
    prepare_panoptic(root, "train", images=splits["train"][0], json_file=splits["train"][1],
                     masks=splits["train"][2])
    _rewrite(splits["train"][1], lambda d: d["images"][0].update(file_name="../../../../etc/hostname"))
    with pytest.raises(DataError, match="image file_name: '../../../../etc/hostname' leads outside"):
        load_records(root, "train", "coco")


def test_refusals_name_the_file_and_the_problem(custom_root):
    root, splits = custom_root
    images, json_file, masks = splits["val"]
    (masks / "scene_2_001.png").unlink()
    result = _prepare_cli(root, "val", images, json_file, masks)
    assert result.exit_code == 1 and "missing panoptic pngs scene_2_001.png named in" in result.output
    assert _prepare_cli(root, "val/x", images, json_file, masks).exit_code == 1
    _rewrite(json_file, lambda d: d["images"].append(dict(d["images"][0])))
    with pytest.raises(DataError, match="image id 2000 appears twice in 'images'"):
        prepare_panoptic(root, "val", images=images, json_file=json_file, masks=masks)
    _rewrite(json_file, lambda d: d["images"].pop())
    _rewrite(json_file, lambda d: d["categories"][0].update(id=20000))
    with pytest.raises(DataError, match="category ids must lie in 0..16776 .*renumber 20000"):
        prepare_panoptic(root, "val", images=images, json_file=json_file, masks=masks)
    with pytest.raises(DataError, match="the masks folder of split 'val' does not exist"):
        prepare_panoptic(root, "val", images=images, json_file=json_file, masks=root / "nope")


def test_splits_must_share_their_categories(custom_root):
    root, splits = custom_root
    prepare_panoptic(root, "train", images=splits["train"][0], json_file=splits["train"][1],
                     masks=splits["train"][2])
    _rewrite(splits["val"][1], lambda d: d["categories"][0].update(name="heaven"))
    with pytest.raises(DataError, match="its categories differ from those of split 'train'"):
        prepare_panoptic(root, "val", images=splits["val"][0], json_file=splits["val"][1], masks=splits["val"][2])


def test_vistas_layout(tmp_path):
    custom.write_vistas(tmp_path / "vistas")
    result = _run("prepare", "vistas", tmp_path / "vistas")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "vistas" / MANIFEST_NAME).read_text())
    assert manifest["splits"]["train"]["json"] == "training/v2.0/panoptic/panoptic_2020.json"
    assert manifest["spec"]["name"] == "vistas"
    records = load_records(tmp_path / "vistas", "val", "coco")
    assert [r.image_id for r in records] == ["scene_4_000", "scene_4_001"]
    # configs/vistas_r50.yaml is one data: block away from this folder
    from pdlkit.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "vistas_r50.yaml",
                      [f"data.root={tmp_path / 'vistas'}"])
    assert spec_for(cfg.data).category_ids == (7, 19, 42, 100, 101, 205)
    assert len(build_train_dataset(cfg, spec_for(cfg.data))) == 2

    shutil.rmtree(tmp_path / "vistas" / "validation" / "images")
    with pytest.raises(DataError, match="not a Mapillary Vistas layout; missing: validation/images/"):
        prepare_vistas(tmp_path / "vistas")


def test_errors_say_which_prepare_fits_the_folder(custom_root, tmp_path):
    root, splits = custom_root
    prepare_panoptic(root, "train", images=splits["train"][0], json_file=splits["train"][1],
                     masks=splits["train"][2])
    with pytest.raises(DataError, match="holds a COCO-panoptic dataset: set data.dataset to coco"):
        load_records(root, "train", "cityscapes")
    with pytest.raises(DataError, match="no split 'val' .*pdl prepare panoptic"):
        load_records(root, "val", "coco")
    custom.write_vistas(tmp_path / "v")
    with pytest.raises(DataError, match="run `pdl prepare vistas"):
        load_records(tmp_path / "v", "train", "coco")
