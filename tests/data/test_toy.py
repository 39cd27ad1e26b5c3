"""The toy generator: Cityscapes layout, valid label / instance maps, determinism, honest content."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pdlkit.data import generate_toy
from pdlkit.data.toy import TOY_MARKER
from pdlkit.errors import DataError

NAME = re.compile(r"^(?P<city>[a-z]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


def _labels():
    from cityscapesscripts.helpers.labels import id2label

    return id2label


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _gt(image: Path, suffix: str) -> Path:
    split, city = image.parts[-3], image.parts[-2]
    stem = image.name[: -len("_leftImg8bit.png")]
    return image.parents[3] / "gtFine" / split / city / f"{stem}_gtFine_{suffix}"


@pytest.fixture(scope="module")
def toy_raw(tmp_path_factory) -> Path:
    """A larger unprepared toy set (16 + 4 images at the default 128x256) to check its statistics."""
    return generate_toy(tmp_path_factory.mktemp("toy_raw"), train=16, val=4, seed=3)


def test_layout_is_cityscapes(tmp_path):
    root = generate_toy(tmp_path, train=3, val=2, height=64, width=128, seed=0)
    images = sorted((root / "leftImg8bit").rglob("*.png"))
    assert len(images) == 5
    assert sorted({p.parts[-3] for p in images}) == ["train", "val"]
    for image in images:
        match = NAME.match(image.name)
        assert match, image.name
        assert match["city"] == image.parent.name
        assert match["frame"] == "000019"
        for suffix in ("labelIds.png", "instanceIds.png", "color.png", "polygons.json"):
            assert _gt(image, suffix).is_file()
    # nothing else: no temp files left behind
    assert not [p for p in root.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert json.loads((root / TOY_MARKER).read_text())["seed"] == 0


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = _files(generate_toy(tmp_path / "a", train=2, val=1, height=64, width=128, seed=7))
    b = _files(generate_toy(tmp_path / "b", train=2, val=1, height=64, width=128, seed=7))
    c = _files(generate_toy(tmp_path / "c", train=2, val=1, height=64, width=128, seed=8))
    assert a == b
    assert a.keys() == c.keys()
    differing = [k for k in a if k.endswith("_leftImg8bit.png") and a[k] != c[k]]
    assert len(differing) == 3
    # image i depends on (seed, split, i) only: a longer set starts with the same images
    d = _files(generate_toy(tmp_path / "d", train=4, val=1, height=64, width=128, seed=7))
    assert all(d[k] == a[k] for k in a if k != TOY_MARKER)


def test_label_and_instance_maps_are_valid_cityscapes(toy_raw):
    id2label = _labels()
    crowd_pixels = unlabelled_images = 0
    images = sorted((toy_raw / "leftImg8bit").rglob("*.png"))
    for image_path in images:
        image = Image.open(image_path)
        assert image.mode == "RGB" and image.size == (256, 128)
        label_img = Image.open(_gt(image_path, "labelIds.png"))
        assert label_img.mode == "L"
        labels = np.asarray(label_img)
        instance_img = Image.open(_gt(image_path, "instanceIds.png"))
        assert instance_img.mode == "I;16"  # 16-bit, as the real dataset
        instances = np.asarray(instance_img).astype(np.int64)
        assert labels.shape == instances.shape == (128, 256)
        assert set(np.unique(labels)) <= set(id2label)
        # instance id = label id * 1000 + k for individual things, the bare label id elsewhere
        is_instance = instances >= 1000
        assert np.array_equal(np.where(is_instance, instances // 1000, instances), labels)
        assert all(id2label[int(v) // 1000].hasInstances for v in np.unique(instances[is_instance]))
        assert (instances[is_instance] % 1000).max(initial=0) < 100
        has_instances = np.vectorize(lambda v: id2label[int(v)].hasInstances)(labels)
        crowd_pixels += int(np.sum(has_instances & ~is_instance))
        unlabelled_images += bool(np.any(labels == 0))
        color = np.asarray(Image.open(_gt(image_path, "color.png")).convert("RGB"))
        for label_id in np.unique(labels):
            assert np.all(color[labels == label_id] == id2label[int(label_id)].color)
    assert crowd_pixels > 0  # crowd regions: thing label without instance
    assert unlabelled_images >= 0.8 * len(images)


def test_polygons_json_rasterises_to_the_label_maps(toy_raw):
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    for image_path in sorted((toy_raw / "leftImg8bit" / "val").rglob("*.png")):
        polygons = _gt(image_path, "polygons.json")
        data = json.loads(polygons.read_text())
        assert (data["imgHeight"], data["imgWidth"]) == (128, 256)
        assert {"label", "polygon"} <= set(data["objects"][0])
        out = toy_raw.parent / "raster_check"
        out.mkdir(exist_ok=True)
        json2labelImg(str(polygons), str(out / "labels.png"), "ids")
        assert np.array_equal(np.asarray(Image.open(out / "labels.png")),
                              np.asarray(Image.open(_gt(image_path, "labelIds.png"))))
        # json2instanceImg itself cannot save (Pillow 13 writes no 32-bit PNG): rasterise in memory
        annotation = Annotation()
        annotation.fromJsonFile(str(polygons))
        assert np.array_equal(np.asarray(createInstanceImage(annotation, "ids")).astype(np.int64),
                              np.asarray(Image.open(_gt(image_path, "instanceIds.png"))).astype(np.int64))


def test_things_vary_in_size_and_occlude_each_other(toy_raw):
    """Visible areas span small to large; many instances are partly hidden by nearer ones."""
    from cityscapesscripts.helpers.annotation import Annotation
    from PIL import ImageDraw

    areas, occluded, classes = [], 0, set()
    for image_path in sorted((toy_raw / "leftImg8bit").rglob("*.png")):
        instances = np.asarray(Image.open(_gt(image_path, "instanceIds.png"))).astype(np.int64)
        ids, counts = np.unique(instances[instances >= 1000], return_counts=True)
        areas += counts.tolist()
        classes |= {int(i) // 1000 for i in ids}
        annotation = Annotation()
        annotation.fromJsonFile(str(_gt(image_path, "polygons.json")))
        seen = {}
        for obj in annotation.objects:  # full (unoccluded) area of each individual instance
            if obj.label in ("person", "rider", "car", "truck", "bicycle"):
                mask = Image.new("L", (256, 128), 0)
                ImageDraw.Draw(mask).polygon(obj.polygon, fill=1)
                label_id = {"person": 24, "rider": 25, "car": 26, "truck": 27, "bicycle": 33}[obj.label]
                k = seen.get(label_id, 0)
                seen[label_id] = k + 1
                full = int(np.asarray(mask).sum())
                visible = int(np.sum(instances == label_id * 1000 + k))
                occluded += 0 < visible < full * 0.9
    areas = np.array(areas)
    assert classes >= {24, 25, 26, 33}
    assert areas.min() < 60 and areas.max() > 3000
    assert np.sum(areas < 200) >= 10 and np.sum(areas > 1000) >= 10
    assert occluded >= 10


def test_rerun_is_a_no_op_and_other_parameters_are_refused(tmp_path):
    root = generate_toy(tmp_path, train=2, val=1, height=64, width=128, seed=0)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    generate_toy(tmp_path, train=2, val=1, height=64, width=128, seed=0)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    with pytest.raises(DataError, match="other parameters"):
        generate_toy(tmp_path, train=2, val=1, height=64, width=128, seed=1)


def test_refuses_a_folder_with_foreign_data_and_bad_sizes(tmp_path):
    (tmp_path / "real" / "gtFine").mkdir(parents=True)
    with pytest.raises(DataError, match="did not write"):
        generate_toy(tmp_path / "real", train=1, val=1)
    with pytest.raises(DataError, match="height must be an integer >= 32"):
        generate_toy(tmp_path / "small", height=8)
    with pytest.raises(DataError, match="nothing to generate"):
        generate_toy(tmp_path / "none", train=0, val=0)
