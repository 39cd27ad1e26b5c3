"""DDP on the CPU (gloo, 2 processes under torchrun) equals one process on the combined batch.

Per-rank losses are averaged over each rank's own weights, and DDP averages the ranks' gradients; that
equals the loss over the combined batch when every rank's weight sums are equal.  So the train split
holds an image and its mirror image (mirroring keeps every weight sum), the semantic loss keeps all
pixels (top_k 1.0, no bootstrapping selection across the batch), augmentation is off, and the model
uses group norm (batch norm statistics are per rank on the CPU: SyncBatchNorm runs only on CUDA).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pdlkit.config import load_config
from pdlkit.engine import load_checkpoint, train

from .tiny import REPO, tiny_overrides

EQUIVALENCE = [
    "model.norm=GN",
    "loss.semantic_top_k=1.0",
    "data.min_scale=1.0",
    "data.max_scale=1.0",
    "data.flip=false",
    "solver.max_iter=1",
    "solver.batch_size=2",
]


def _mirrored_pair_dataset(toy_root, out):
    """A copy of the toy set whose train split is image A and A mirrored left-right (as image B)."""
    import cv2

    shutil.copytree(toy_root, out)
    json_path = out / "gtFine" / "cityscapes_panoptic_train.json"
    data = json.loads(json_path.read_text())
    first, second = data["annotations"][:2]
    png_dir = out / "gtFine" / "cityscapes_panoptic_train"
    images = {p.name[: -len("_leftImg8bit.png")]: p for p in (out / "leftImg8bit" / "train").glob("*/*.png")}
    for source, target in ((images[first["image_id"]], images[second["image_id"]]),
                           (png_dir / first["file_name"], png_dir / second["file_name"])):
        cv2.imwrite(str(target), np.ascontiguousarray(cv2.imread(str(source), cv2.IMREAD_UNCHANGED)[:, ::-1]))
    second["segments_info"] = first["segments_info"]
    data["annotations"] = [first, second]
    data["images"] = [im for im in data["images"] if im["id"] in (first["image_id"], second["image_id"])]
    json_path.write_text(json.dumps(data))
    return out


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process_on_the_combined_batch(toy_root, tmp_path):
    data_root = _mirrored_pair_dataset(toy_root, tmp_path / "pair")
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    overrides = lambda out: tiny_overrides(data_root, out, *EQUIVALENCE)  # noqa: E731

    train(load_config(REPO / "configs" / "toy.yaml", overrides(single_dir)), progress=False)

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
               "-m", "pdlkit.cli.main", "train", "--config", str(REPO / "configs" / "toy.yaml"), "--quiet"]
    for item in overrides(ddp_dir):
        command += ["--set", item]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    single = load_checkpoint(single_dir / "model_final.pt")
    ddp = load_checkpoint(ddp_dir / "model_final.pt")
    assert single["iteration"] == ddp["iteration"] == 1
    # After one Adam step, exp_avg = (1 - beta1) * g: the averaged gradients must agree.  Judge them
    # against the largest gradient: a few parameters have an exactly-zero true gradient (e.g. a conv
    # before group norm over single-channel groups of a 1x1 map), where both runs hold rounding noise.
    single_grads = {i: s["exp_avg"] for i, s in single["optimizer"]["state"].items()}
    ddp_grads = {i: s["exp_avg"] for i, s in ddp["optimizer"]["state"].items()}
    assert single_grads.keys() == ddp_grads.keys() and len(single_grads) > 50
    global_scale = max(float(g.abs().max()) for g in single_grads.values())
    for index, a in single_grads.items():
        b = ddp_grads[index]
        assert float((a - b).abs().max()) <= 1e-4 * float(a.abs().max()) + 1e-6 * global_scale, index

    # Parameters: Adam's first step is lr * g / (|g| + eps), so where the gradient is well above its
    # rounding difference the update, hence the weight, must agree; noise-level gradients are free.
    from pdlkit.modeling import build_model

    cfg = load_config(REPO / "configs" / "toy.yaml", overrides(single_dir))
    names = [name for name, p in build_model(cfg.model, 19).named_parameters() if p.requires_grad]
    assert len(names) == len(single_grads)  # optimizer index k is the k-th trainable parameter
    compared = total = 0
    for index, name in enumerate(names):
        g_single, g_ddp = single_grads[index], ddp_grads[index]
        significant = g_single.abs() > 100 * (g_single - g_ddp).abs() + 1e-9 * global_scale
        difference = (single["model"][name] - ddp["model"][name]).abs()
        if significant.any():
            assert float(difference[significant].max()) <= 1e-6, name
        compared += int(significant.sum())
        total += significant.numel()
    assert compared >= 0.95 * total, (compared, total)
