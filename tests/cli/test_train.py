"""`pdl train`: exit codes and one-sentence errors, a short run, SIGTERM -> checkpoint -> --resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pdlkit.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
TOY_CONFIG = str(REPO / "configs" / "toy.yaml")
# A tiny network on the 64x128 toy images (the engine tests use the same sizes).
TINY = [
    "model.aspp_channels=16", "model.aspp_dropout=0.0", "model.semantic_decoder_channels=16",
    "model.semantic_head_channels=16", "model.semantic_low_level_channels=[8,8]",
    "model.instance_decoder_channels=16", "model.instance_low_level_channels=[8,8]",
    "model.instance_head_channels=8", "data.crop_size=[64,128]", "data.num_workers=0", "solver.batch_size=2",
    "solver.warmup_iters=0", "solver.log_period=1", "test.max_eval_images=1",
]


def _sets(items):
    return [arg for item in items for arg in ("--set", item)]


def _run(args):
    result = CliRunner().invoke(cli, args)
    return result.exit_code, result.output


def test_missing_config_option_is_a_usage_error():
    code, output = _run(["train"])
    assert code == 2 and "Missing option '--config'" in output


def test_missing_config_file(tmp_path):
    code, output = _run(["train", "--config", str(tmp_path / "nope.yaml")])
    assert code == 1
    assert output.strip() == f"Error: {tmp_path / 'nope.yaml'}: config file not found"


def test_unknown_key_in_set_names_the_nearest_key(tmp_path):
    code, output = _run(["train", "--config", TOY_CONFIG, "--set", "solver.lrr=0.1"])
    assert code == 1
    assert output.strip() == "Error: --set: unknown config key 'solver.lrr'; did you mean 'solver.lr'?"


def test_malformed_set_and_wrong_type(tmp_path):
    code, output = _run(["train", "--config", TOY_CONFIG, "--set", "solver.lr"])
    assert code == 1 and "is not of the form KEY=VALUE" in output
    code, output = _run(["train", "--config", TOY_CONFIG, "--set", "solver.max_iter=many"])
    assert code == 1 and "solver.max_iter expects int, got 'many'" in output


def test_unknown_key_in_the_yaml_file_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("solver:\n  max_iters: 10\n")
    code, output = _run(["train", "--config", str(config)])
    assert code == 1
    assert f"{config}: unknown config key 'solver.max_iters'; did you mean 'solver.max_iter'?" in output


def test_missing_data_root(tmp_path):
    code, output = _run(["train", "--config", TOY_CONFIG, "--data", str(tmp_path / "nowhere"),
                         "--output", str(tmp_path / "out")])
    assert code == 1
    assert output.strip() == f"Error: {tmp_path / 'nowhere'}: dataset root not found (set it with --data or data.root)"
    assert "Traceback" not in output


def test_unprepared_data_root(tmp_path):
    (tmp_path / "raw").mkdir()
    code, output = _run(["train", "--config", TOY_CONFIG, "--data", str(tmp_path / "raw"),
                         "--output", str(tmp_path / "out"), "--quiet"])
    assert code == 1
    assert "cityscapes_panoptic_train.json not found" in output and "pdl prepare" in output


def test_data_and_output_override_set(toy_root, tmp_path):
    # --data / --output win over --set, and a short run reports the final numbers.
    code, output = _run(["train", "--config", TOY_CONFIG, "--data", str(toy_root), "--output", str(tmp_path / "run"),
                         "--quiet", "--threads", "1",
                         *_sets(TINY + ["solver.max_iter=2", "data.root=/elsewhere", "output_dir=/elsewhere"])])
    assert code == 0, output
    assert f"model: {tmp_path / 'run' / 'model_final.pt'}" in output
    assert "PQ " in output and "mIoU " in output
    saved = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert saved["iteration"] == 2
    import torch

    assert torch.get_num_threads() == 1  # --threads
    code, output = _run(["train", "--config", TOY_CONFIG, "--threads", "0"])
    assert code == 2 and "0 is not in the range x>=1" in output


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_resume_finishes(toy_root, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "pdlkit.cli.main", "train", "--config", TOY_CONFIG, "--data", str(toy_root),
               "--output", str(out), "--quiet", *_sets(TINY + ["solver.max_iter=100000"])]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    try:
        # Wait until training is under way (log_period=1: one line per iteration).
        while process.poll() is None and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate()
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr[-2000:]
    stopped_at = int(stderr.split("stopped by SIGTERM at iteration ")[1].split(";")[0])
    assert stopped_at >= 2
    checkpoint = out / f"model_{stopped_at:07d}.pt"
    assert f"checkpoint saved to {checkpoint}; continue with --resume" in stderr
    assert (out / "last_checkpoint").read_text().strip() == checkpoint.name
    assert "Traceback" not in stderr

    from pdlkit.engine import load_checkpoint

    assert load_checkpoint(checkpoint)["iteration"] == stopped_at
    # Resume and finish two iterations later (a larger max_iter would only change the lr curve).
    resumed = subprocess.run(command[:-2] + ["--set", f"solver.max_iter={stopped_at + 2}", "--resume"],
                             cwd=tmp_path, env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {checkpoint} at iteration {stopped_at}" in resumed.stderr
    assert load_checkpoint(out / "model_final.pt")["iteration"] == stopped_at + 2


def test_out_of_range_values_fail_before_training(tmp_path):
    for override, message in (("solver.lr=-1", "solver.lr must be a positive number, got -1.0"),
                              ("post.nms_kernel=4", "post.nms_kernel must be a positive odd integer, got 4"),
                              ("data.sigma=0", "data.sigma must be a positive number, got 0.0")):
        code, output = _run(["train", "--config", TOY_CONFIG, "--output", str(tmp_path / "out"), "--set", override])
        assert code == 1
        assert output.strip() == f"Error: {message}"
    assert not (tmp_path / "out").exists()  # nothing started


HANG_GUARD_S = 300  # kills a hung process so that the test fails instead of waiting forever


@pytest.mark.slow
def test_a_bad_label_png_with_a_loader_worker_is_one_sentence_and_exit_1(toy_root, tmp_path):
    import shutil

    data = tmp_path / "toy"
    shutil.copytree(toy_root, data)
    for png in (data / "gtFine" / "cityscapes_panoptic_train").glob("*.png"):
        png.write_bytes(png.read_bytes()[: png.stat().st_size // 2])  # truncated
    command = [sys.executable, "-m", "pdlkit.cli.main", "train", "--config", TOY_CONFIG, "--data", str(data),
               "--output", str(tmp_path / "run"), "--quiet",
               *_sets(TINY + ["data.num_workers=1", "solver.max_iter=3"])]
    process = subprocess.Popen(command, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # the worker too
        process.communicate()
        pytest.fail("pdl train hung after an error in its DataLoader worker")
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert process.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    assert len(errors) == 1 and errors[0].endswith("_gtFine_panoptic.png: not a readable image"), stderr[-2000:]
    assert str(data / "gtFine" / "cityscapes_panoptic_train") in errors[0]


def _flip_middle(path, size=4096):
    data = bytearray(path.read_bytes())
    start = len(data) // 2 - size // 2
    data[start:start + size] = bytes(b ^ 0xFF for b in data[start:start + size])
    path.write_bytes(bytes(data))


def test_resume_with_a_damaged_checkpoint_offers_and_takes_the_earlier_one(toy_root, tmp_path):
    out = tmp_path / "run"
    base = ["train", "--config", TOY_CONFIG, "--data", str(toy_root), "--output", str(out), "--quiet",
            *_sets(TINY + ["solver.checkpoint_period=1", "test.max_eval_images=1"])]
    code, output = _run(base + ["--set", "solver.max_iter=2"])
    assert code == 0, output
    _flip_middle(out / "model_final.pt")
    code, output = _run(base + ["--set", "solver.max_iter=3", "--resume"])
    assert code == 1
    assert output.strip().splitlines()[-1] == (
        f"Error: {out / 'model_final.pt'}: damaged (its contents do not match its checksum); the newest valid "
        f"earlier checkpoint is {out / 'model_0000001.pt'}; add --resume-fallback to resume from it")
    code, output = _run(base + ["--set", "solver.max_iter=3", "--resume-fallback"])
    assert code == 0, output
    assert f"model: {out / 'model_final.pt'}" in output

    from pdlkit.checkpoint import load_checkpoint

    assert load_checkpoint(out / "model_final.pt")["iteration"] == 3
