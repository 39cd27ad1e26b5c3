"""Runs the hypothesis fuzzer of the ops (fuzz_ops.py) in a subprocess: a crash of the native code
is then a failed test that names the last input, not a dead test runner."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import needs_native

REPO = Path(__file__).resolve().parents[2]


@needs_native
def test_native_and_reference_agree_on_fuzzed_input():
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("fuzz_ops.py")), "120", "0"],
                            cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    tail = (result.stdout[-3000:] + "\n" + result.stderr[-6000:]).strip()
    assert result.returncode >= 0, f"the fuzzer crashed (signal {-result.returncode}); last lines:\n{tail}"
    assert result.returncode == 0, tail
    assert "fuzz: all cases agree" in result.stdout
