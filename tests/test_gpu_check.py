"""scripts/gpu_check.sh: its CPU smoke mode runs every step and each benchmark prints its rows; its
refusals are one clear sentence.  benchmarks/predict_folder.py's pieces on their own."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "gpu_check.sh"
sys.path.insert(0, str(REPO / "benchmarks"))

import predict_folder  # noqa: E402

NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def run_script(*args, python=sys.executable, tmp_path=None):
    env = dict(os.environ, PYTHON=str(python))
    if tmp_path is not None:
        env["TMPDIR"] = str(tmp_path)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, cwd=tmp_path)


def table_rows(text: str, first_cell: str):
    """The cells of every markdown table row whose first cell is ``first_cell``."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            rows.append(cells)
    return rows


@pytest.mark.slow
def test_cpu_smoke_runs_every_step_and_prints_every_row(tmp_path):
    done = run_script("--cpu-smoke", tmp_path=tmp_path)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr

    # the CUDA tests were collected and, without a GPU, every one of them skipped
    pytest_line = next(line for line in out.splitlines() if "deselected in" in line)
    assert re.match(r"\d+ skipped, \d+ deselected in", pytest_line) or torch.cuda.is_available(), pytest_line

    # ops.py: one row per op at the smoke size, with positive times, the batched merge at batch 2
    ops = {cells[0]: cells for cells in _ops_rows(out)}
    assert set(ops) == {"find_instance_centers", "panoptic_merge (logits)", "panoptic_merge (labels)",
                        "merge_batched (N=2)", "encode_targets"}
    for cells in ops.values():
        assert cells[1] == "64x128" and float(cells[2]) > 0 and float(cells[6]) > 0

    # predict_folder.py: Predictor and pdl predict rows for fp32 and fp16, every file predicted
    rows = table_rows(out, "toy")
    bare = [r for r in rows if len(r) == 9]
    folder = [r for r in rows if len(r) == 7]
    assert [(r[1], r[2], r[3]) for r in bare] == [("64x128", "fp32", "2"), ("64x128", "fp16", "2")]
    assert [(r[1], r[2], r[3]) for r in folder] == [("64x128", "fp32", "3"), ("64x128", "fp16", "3")]
    for r in bare:
        assert float(r[4]) > 0 and re.fullmatch(NUMBER, r[5])
    for r in folder:
        assert float(r[4]) > 0 and r[6].endswith("%")

    summary = out[out.index("gpu_check summary (CPU smoke"):]
    assert re.search(r"build \(CUDA\)\s+skipped \(CPU smoke\)", summary)
    for step in ("CUDA tests (pytest -m cuda)", "ops + batched merge (ops.py)",
                 "Predictor + pdl predict (predict_folder.py)"):
        assert re.search(re.escape(step) + r"\s+ok\s+\d+s", summary), summary
    assert not list(tmp_path.glob("pdl_gpu_check.*")), "the script's log folder was left behind"


def _ops_rows(text: str):
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 8 and cells[1] == "64x128":
            yield cells


def test_unknown_argument_is_refused():
    done = run_script("--fast")
    assert done.returncode == 2
    assert done.stderr.strip() == "gpu_check: unknown argument --fast (use --cpu-smoke or nothing)"


def test_a_python_without_torch_is_named(tmp_path):
    no_site = tmp_path / "python-no-site"  # the same interpreter without site-packages: no torch
    no_site.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    no_site.chmod(0o755)
    done = run_script("--cpu-smoke", python=no_site)
    assert done.returncode == 1
    assert f"{no_site} cannot import torch" in done.stderr and "PYTHON" in done.stderr
    assert done.stdout == ""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where no GPU is present")
def test_without_a_gpu_the_full_check_refuses_before_building():
    done = run_script()
    assert done.returncode == 1
    assert "sees no CUDA GPU" in done.stderr and "--cpu-smoke" in done.stderr
    assert "build" not in done.stdout


def test_cli_summary_is_parsed_as_written():
    from pdlkit.inference.runner import PredictSummary

    text = str(PredictSummary(processed=3, skipped=1, seconds=1.5))
    found = predict_folder.SUMMARY.search(text + "; outputs in out")
    assert found is not None and found.groups() == ("3", "2.00")
    assert predict_folder.SUMMARY.search(str(PredictSummary(processed=0))) is None


def test_bench_spec_has_cityscapes_classes_without_cityscapesscripts():
    pytest.importorskip("cityscapesscripts")
    from pdlkit.data.spec import cityscapes_spec

    spec, real = predict_folder.bench_spec(), cityscapes_spec()
    assert spec.num_classes == real.num_classes == 19
    assert spec.is_thing == real.is_thing and spec.thing_ids == tuple(range(11, 19))


def test_failed_pdl_predict_is_reported_with_its_message(tmp_path):
    (tmp_path / "in").mkdir()
    with pytest.raises(RuntimeError, match=r"pdl predict failed \(exit 1\): .*missing\.pt: weights file not found"):
        predict_folder.run_pdl_predict(tmp_path / "in", tmp_path / "missing.pt", tmp_path / "out", "cpu",
                                       "fp32", 1, 1)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("precision, agreement, offsets_tolerance",
                         [("fp32", 0.999, 1e-3), ("fp16", 0.99, 3e-2)])
def test_predictor_on_the_gpu_agrees_with_the_cpu(precision, agreement, offsets_tolerance, monkeypatch):
    """The whole Predictor (network + merge on the GPU) against fp32 on the CPU, same weights.
    Random weights put some pixels near a tie between classes, hence agreement rather than equality
    (on the CPU, fp16 autocast agrees with fp32 on 99.997 % of this image's pixels, offsets to 0.2 %)."""
    import copy

    import numpy as np

    from pdlkit.inference import Predictor

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32 here
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model, cfg, spec = predict_folder.bench_model("toy.yaml")
    image = predict_folder.scenes(1, 128, 256)[0]
    cpu = Predictor.from_model(copy.deepcopy(model), cfg, spec, "cpu", precision="fp32")(image)
    gpu_predictor = Predictor.from_model(copy.deepcopy(model), cfg, spec, "cuda", precision=precision)
    assert gpu_predictor.device.type == "cuda"
    gpu = gpu_predictor(image)
    assert gpu.semantic.shape == cpu.semantic.shape == (128, 256)
    assert float((gpu.semantic == cpu.semantic).mean()) >= agreement
    assert float((gpu.panoptic == cpu.panoptic).mean()) >= agreement
    scale = max(float(np.abs(cpu.offsets).max()), 1e-3)
    np.testing.assert_allclose(gpu.offsets, cpu.offsets, atol=offsets_tolerance * scale)
