"""pdl predict and pdl eval under torchrun (2 gloo ranks on the CPU) write exactly what one process
writes and score exactly what one process scores; a rank killed mid-run is finished by a rerun."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pdlkit.inference.distributed import shard

WORKER = Path(__file__).with_name("distributed_worker.py")


def _pdl(args, cwd, ranks=2, **env):
    command = [sys.executable]
    if ranks > 1:
        command += ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={ranks}"]
    command += [str(WORKER)] + [str(a) for a in args]
    environment = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", **env)
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True)


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shares_are_disjoint_balanced_and_stable():
    items = [f"img{k}" for k in range(11)]
    shares = [shard(items, rank, 3) for rank in range(3)]
    assert shares == [["img0", "img3", "img6", "img9"], ["img1", "img4", "img7", "img10"],
                      ["img2", "img5", "img8"]]
    assert sorted(sum(shares, [])) == sorted(items)
    with pytest.raises(ValueError):
        shard(items, 3, 3)


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes_and_a_rerun_finishes_a_crash(toy_checkpoint, toy_root, tmp_path):
    images = toy_root / "leftImg8bit"  # train and val: 9 images in city sub-folders
    args = lambda out: ["predict", images, "--weights", toy_checkpoint, "--output", out, "-q"]  # noqa: E731
    single = _pdl(args(tmp_path / "single"), tmp_path, ranks=1)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _pdl(args(tmp_path / "double"), tmp_path)
    assert double.returncode == 0, double.stderr[-3000:]
    assert "9 processed, 0 skipped (already done), 0 failed" in double.stdout
    expected = _files(tmp_path / "single")
    assert len([name for name in expected if name.startswith("panoptic/")]) == 9
    assert _files(tmp_path / "double") == expected  # every png, record, spec.json and panoptic.json

    crashed = _pdl(args(tmp_path / "crashed"), tmp_path, PDL_TEST_CRASH_RANK="1", PDL_TEST_CRASH_AFTER="2")
    assert crashed.returncode != 0
    done = _files(tmp_path / "crashed")
    assert "panoptic.json" not in done  # rank 0 never indexes a run that did not finish
    assert not [name for name in done if "/." in name or name.startswith(".")]  # no half files
    written = len([name for name in done if name.startswith("segments/")])
    assert 2 <= written < 9
    rerun = _pdl(args(tmp_path / "crashed"), tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"{9 - written} processed, {written} skipped (already done), 0 failed" in rerun.stdout
    assert _files(tmp_path / "crashed") == expected


def _eval_alone_and_in_two_ranks(options, tmp_path):
    """``pdl eval OPTIONS`` in one process and in 2 ranks (each with its own temporary folder):
    asserts equal results; returns them and each rank's log of the shares it scored."""
    args = lambda name: ["eval", *options, "--json", tmp_path / name, "-q"]  # noqa: E731
    single = _pdl(args("single.json"), tmp_path, ranks=1)
    assert single.returncode == 0, single.stderr[-3000:]
    ranks = tmp_path / "ranks"
    double = _pdl(args("double.json"), tmp_path, PDL_TEST_RANK_DIRS=str(ranks))
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "single.json").read_text())
    assert json.loads((tmp_path / "double.json").read_text()) == one  # == on floats: bit for bit
    return one, [json.loads((ranks / f"rank{rank}" / "scored.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_two_rank_eval_equals_one_process_exactly(toy_checkpoint, toy_root, tmp_path):
    """Each rank predicts and scores its own share in a temporary folder of its own; the gathered
    statistics give every number of one process, bit for bit (AP included)."""
    one, scored = _eval_alone_and_in_two_ranks(["--data", toy_root, "--weights", toy_checkpoint], tmp_path)
    assert one["PQ"] is not None and "AP" in one
    ranks = tmp_path / "ranks"

    val_images = sorted(p.name.removesuffix("_leftImg8bit.png") for p in (toy_root / "leftImg8bit" / "val").rglob("*.png"))
    for rank, shares in enumerate(scored):
        (share,) = shares
        assert share["image_ids"] == val_images[rank::2] and share["num_images"] == len(val_images[rank::2])
        assert Path(share["predictions"]).is_relative_to(ranks / f"rank{rank}" / "tmp")
    assert not list((ranks / "rank0" / "tmp").iterdir()) and not list((ranks / "rank1" / "tmp").iterdir())


@pytest.mark.slow
def test_trainer_evaluation_under_two_ranks_equals_one_process(toy_root, tmp_path):
    """The run's final evaluation (2 ranks, each predicting a share with rank 0's weights) equals
    scoring its model_final.pt in one process; periodic evaluations take the same path."""
    import importlib.util

    from pdlkit.config import load_config
    from pdlkit.data.spec import DatasetSpec
    from pdlkit.engine import load_checkpoint
    from pdlkit.evaluation import predict_and_evaluate
    from pdlkit.inference import Predictor
    from pdlkit.modeling import build_model

    spec_of_tiny = importlib.util.spec_from_file_location("tiny", Path(__file__).parents[1] / "engine" / "tiny.py")
    tiny = importlib.util.module_from_spec(spec_of_tiny)
    spec_of_tiny.loader.exec_module(tiny)
    REPO, tiny_overrides = tiny.REPO, tiny.tiny_overrides
    out = tmp_path / "run"
    overrides = tiny_overrides(toy_root, out, "solver.max_iter=2", "test.eval_period=1",
                               "test.max_eval_images=0")
    command = ["train", "--config", REPO / "configs" / "toy.yaml", "--quiet"]
    for item in overrides:
        command += ["--set", item]
    done = _pdl(command, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    final = json.loads((out / "final_metrics.json").read_text())
    periodic = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in periodic if "eval" in r] == [1, 2]

    checkpoint = load_checkpoint(out / "model_final.pt")
    cfg = load_config(REPO / "configs" / "toy.yaml", overrides)
    spec = DatasetSpec.from_dict(checkpoint["dataset"])
    model = build_model(cfg.model, spec.num_classes)
    model.load_state_dict({k.removeprefix("module."): v for k, v in checkpoint["model"].items()})
    alone = predict_and_evaluate(Predictor.from_model(model.eval(), cfg, spec, "cpu"), toy_root, "val",
                                 dataset=cfg.data.dataset, work_dir=tmp_path / "alone", compute_ap=False)
    assert {k: v for k, v in final.items() if k not in ("iteration", "checkpoint")} == json.loads(
        json.dumps(alone))


@pytest.mark.slow
def test_two_rank_eval_of_a_predictions_folder_equals_one_process(toy_checkpoint, toy_root, tmp_path):
    """``pdl eval --predictions`` under torchrun: each rank scores every other image of the folder."""
    predicted = _pdl(["predict", toy_root / "leftImg8bit" / "val", "--weights", toy_checkpoint, "--output",
                      tmp_path / "preds", "-q"], tmp_path, ranks=1)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    _, scored = _eval_alone_and_in_two_ranks(["--data", toy_root, "--predictions", tmp_path / "preds"], tmp_path)
    assert [shares[0]["num_images"] for shares in scored] == [2, 1]  # the toy val split's 3 images
