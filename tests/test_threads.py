"""Thread defaults: intra-op threads from the usable cores, OpenCV single-threaded, passive waits."""
from __future__ import annotations

import os
import subprocess
import sys

import cv2
import pytest
import torch

from pdlkit.threads import MAX_DEFAULT_THREADS, configure_threads, default_threads, usable_cores


@pytest.fixture
def restore_threads():
    torch_threads, cv2_threads = torch.get_num_threads(), cv2.getNumThreads()
    yield
    torch.set_num_threads(torch_threads)
    cv2.setNumThreads(cv2_threads)


def test_default_is_the_usable_cores_capped_and_shared_among_local_ranks(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert usable_cores() == len(os.sched_getaffinity(0))
    assert default_threads() == min(usable_cores(), MAX_DEFAULT_THREADS)
    monkeypatch.setattr("pdlkit.threads.usable_cores", lambda: 16)
    assert default_threads() == MAX_DEFAULT_THREADS
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert default_threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_threads() == 1


def test_configure_threads(restore_threads):
    assert configure_threads(3) == 3
    assert torch.get_num_threads() == 3 and cv2.getNumThreads() == 1
    assert configure_threads(None) == default_threads() == torch.get_num_threads()
    with pytest.raises(ValueError, match="threads must be >= 1, got -2"):
        configure_threads(-2)


def _wait_policy_after_importing_the_cli(env_value, spincount=None):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = spincount
    code = "import os, pdlkit.cli.main; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_cli_makes_openmp_wait_passively_unless_told_otherwise():
    assert _wait_policy_after_importing_the_cli(None) == "PASSIVE"
    assert _wait_policy_after_importing_the_cli("ACTIVE") == "ACTIVE"
    # a libgomp spin count set by the user is their wait policy: nothing is added to it
    assert _wait_policy_after_importing_the_cli(None, spincount="300000") == "None"
