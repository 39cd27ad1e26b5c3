"""The CPU kernels' instruction-set paths (AVX-512, AVX2, SSE2, scalar; chosen at run time, capped
by PDL_SIMD) give bit-identical results.  Each path runs in its own process, since the choice is
made once per process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from .conftest import needs_native

REPO = Path(__file__).resolve().parents[2]

# Writes the three ops' outputs on a generated scene (logits and labels) to argv[1].
SCRIPT = r"""
import sys, torch
from pdlkit import ops
torch.set_num_threads(2)
g = torch.Generator().manual_seed(3)
h, w, c = 61, 83, 6
labels = torch.randint(0, c, (h, w), generator=g)
labels[10:30, 5:40] = 4
labels[35:60, 30:80] = 5
logits = torch.randn(c, h, w, generator=g) + 4 * torch.nn.functional.one_hot(labels, c).permute(2, 0, 1)
heatmap = torch.rand(h, w, generator=g) * 0.3
heatmap[20, 20], heatmap[47, 55], heatmap[47, 60] = 0.9, 0.8, 0.85
offsets = torch.randn(2, h, w, generator=g) * 3
out = {}
for name, semantic in (("logits", logits), ("labels", labels)):
    r = ops.panoptic_merge(semantic, heatmap, offsets, [4, 5], stuff_area=5, nms_kernel=3, backend="native")
    out[name] = [getattr(r, f) for f in ("panoptic", "semantic", "ids", "classes", "centers", "objectness",
                                         "class_scores", "scores")]
# Odd widths (vector tails, rows misaligned for the streaming stores), several row blocks, and
# class counts past the register-held slot tables (8 lanes for AVX2, 32 for AVX-512: gathers).
for h, w, c in ((70, 263, 20), (9, 37, 40), (5, 1, 9)):
    labels = torch.randint(0, c, (h, w), generator=g)
    labels[h // 4:h // 2, w // 5:w // 2] = c - 1
    logits = torch.randn(c, h, w, generator=g) + 4 * torch.nn.functional.one_hot(labels, c).permute(2, 0, 1)
    heatmap = torch.rand(h, w, generator=g) * 0.3
    heatmap.view(-1)[torch.randint(0, h * w, (6,), generator=g)] = 0.9
    offsets = torch.randn(2, h, w, generator=g) * 3
    r = ops.panoptic_merge(logits, heatmap, offsets, list(range(c // 2, c)), stuff_area=5, nms_kernel=3,
                           backend="native")
    out[f"logits_{h}x{w}x{c}"] = [getattr(r, f) for f in ("panoptic", "semantic", "ids", "classes", "centers",
                                                         "objectness", "class_scores", "scores")]
out["centers"] = list(ops.find_instance_centers(heatmap, threshold=0.05, nms_kernel=5, backend="native"))
out["dense_centers"] = list(ops.find_instance_centers(heatmap, threshold=-1.0, nms_kernel=3, backend="native"))
torch.save(out, sys.argv[1])
"""


def run_path(level: str | None, path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PDL_SIMD", None)
    if level:
        env["PDL_SIMD"] = level
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], cwd=REPO, env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(path)


@needs_native
def test_every_simd_path_gives_identical_results(tmp_path):
    best = run_path(None, tmp_path / "best.pt")
    assert len(best["logits"][2]) >= 2  # instances were found, so the grouping loops ran
    assert len(best["logits_70x263x20"][2]) >= 2
    for level in ("avx2", "sse2", "scalar"):
        other = run_path(level, tmp_path / f"{level}.pt")
        for key in best:
            for a, b in zip(best[key], other[key], strict=True):
                assert torch.equal(a, b), f"{level}: {key} differs"
