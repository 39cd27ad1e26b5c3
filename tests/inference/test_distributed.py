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


@pytest.mark.slow
def test_two_rank_eval_equals_one_process_exactly(toy_checkpoint, toy_root, tmp_path):
    args = lambda name: ["eval", "--data", toy_root, "--weights", toy_checkpoint, "--json",  # noqa: E731
                         tmp_path / name, "-q"]
    single = _pdl(args("single.json"), tmp_path, ranks=1)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _pdl(args("double.json"), tmp_path)
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "single.json").read_text())
    two = json.loads((tmp_path / "double.json").read_text())
    assert one == two and one["PQ"] is not None
