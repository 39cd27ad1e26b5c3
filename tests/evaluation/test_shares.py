"""Scoring a split in disjoint shares (as the ranks of a torchrun job do) and combining them gives
exactly the numbers of scoring it at once: PQ's floating-point sums, mIoU and both AP flavours."""
from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import pytest
import scenes

from pdlkit.evaluation import EvalShare, combine_shares, evaluate_predictions, score_images

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import custom_dataset as custom  # noqa: E402

from pdlkit.data.coco_format import prepare_panoptic  # noqa: E402


@pytest.fixture(scope="module")
def cityscapes_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("share_gt")
    names = scenes.write_ground_truth(root, "val", num_images=7, height=48, width=96, seed=11)
    predictions = scenes.write_predictions(root, "val", tmp_path_factory.mktemp("share_pred") / "pred", seed=4)
    return root, predictions, names


@pytest.fixture(scope="module")
def coco_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("share_custom")
    splits = custom.write_custom(root, train=1, val=5)
    for split, (images, json_file, masks) in splits.items():
        prepare_panoptic(root, split, images=images, json_file=json_file, masks=masks)
    images, json_file, masks = splits["val"]
    data = json.loads(json_file.read_text())
    predictions = custom.write_predictions(images, masks, data, tmp_path_factory.mktemp("share_cpred") / "p",
                                           seed=2, perturb=True)
    return root, predictions, [str(image["id"]) for image in data["images"]]


def _shares(root, predictions, names, parts):
    """Score ``names`` in ``parts`` strided shares, each share through a pickle round trip (as
    all_gather_object sends it), returned last share first."""
    shares = [score_images(root, "val", predictions, progress=False, image_ids=names[k::parts], num_workers=2)
              for k in range(parts)]
    return [pickle.loads(pickle.dumps(share)) for share in reversed(shares)]


@pytest.mark.parametrize("case", ["cityscapes_case", "coco_case"])
@pytest.mark.parametrize("parts", [2, 3, 9])
def test_shares_combine_to_the_single_process_numbers_exactly(request, case, parts):
    root, predictions, names = request.getfixturevalue(case)
    whole = evaluate_predictions(root, "val", predictions, progress=False)
    assert whole["AP"] is not None and 0 < whole["PQ"] < 100 and whole["num_images"] == len(names)
    shares = _shares(root, predictions, names, parts)
    assert [share.num_images for share in reversed(shares)] == [len(names[k::parts]) for k in range(parts)]
    assert combine_shares(shares) == whole  # == on floats: bit for bit, not approximately


def test_shards_of_the_pairs_combine_exactly(cityscapes_case):
    """``shard=(rank, world)`` (what ``pdl eval --predictions`` under torchrun gives each rank)."""
    root, predictions, names = cityscapes_case
    shards = [score_images(root, "val", predictions, progress=False, shard=(rank, 3)) for rank in range(3)]
    assert [s.num_images for s in shards] == [3, 2, 2]
    assert combine_shares(shards) == evaluate_predictions(root, "val", predictions, progress=False)
    beyond = score_images(root, "val", predictions, progress=False, shard=(7, 8))
    assert beyond.num_images == 0


def test_an_empty_share_changes_nothing_and_needs_no_predictions(cityscapes_case):
    root, predictions, names = cityscapes_case
    empty = score_images(root, "val", None, image_ids=[])
    assert isinstance(empty, EvalShare) and empty.num_images == 0 and not empty.iou and not empty.instances
    full = score_images(root, "val", predictions, progress=False)
    assert combine_shares([empty, full]) == evaluate_predictions(root, "val", predictions, progress=False)


def test_a_share_is_scored_from_its_own_images_only(cityscapes_case, tmp_path):
    """A share reads only its images' files: the others' PNGs may be absent (as on another rank)."""
    root, predictions, names = cityscapes_case
    mine = names[::2]
    subset = tmp_path / "pred"
    subset.mkdir()
    index = json.loads((predictions / "panoptic.json").read_text())
    kept = [a for a in index["annotations"] if a["image_id"] in mine]
    assert len(kept) == len(mine)
    for folder in ("panoptic", "semantic"):
        (subset / folder).mkdir()
        for annotation in kept:
            (subset / folder / annotation["file_name"]).parent.mkdir(exist_ok=True)
            (subset / folder / annotation["file_name"]).write_bytes(
                (predictions / folder / annotation["file_name"]).read_bytes())
    (subset / "panoptic.json").write_text(json.dumps(dict(index, annotations=kept)))
    own = score_images(root, "val", subset, progress=False, image_ids=mine)
    assert own.num_images == len(mine)
    assert combine_shares([own]) == evaluate_predictions(root, "val", predictions, progress=False, image_ids=mine)
