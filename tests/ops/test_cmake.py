"""The CMake build of csrc/ (libpdlkit_ops + the C++ dispatcher tests) configures, builds and passes
ctest with nothing but torch's cmake prefix path.

Builds CPU-only in a temporary folder (a few minutes on 2 cores).  Where CI has already built the
CMake tree, point PDL_CMAKE_BUILD_DIR at it: the test then brings that build up to date and runs its
ctest instead of starting from nothing.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ctest") is None,
                       reason="cmake/ctest not installed"),
]


def _run(command, cwd):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def test_cmake_build_and_ctest(tmp_path):
    existing = os.environ.get("PDL_CMAKE_BUILD_DIR")
    if existing:
        build = Path(existing).resolve()
        assert (build / "CMakeCache.txt").is_file(), f"PDL_CMAKE_BUILD_DIR={existing} is not a configured build"
    else:
        build = tmp_path / "build"
        _run(["cmake", "-S", str(REPO), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
              f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}", "-DPDL_WITH_CUDA=OFF",
              f"-DPython_EXECUTABLE={sys.executable}"], REPO)
    _run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)], REPO)
    assert any(build.glob("libpdlkit_ops*")), "libpdlkit_ops was not built"
    output = _run(["ctest", "--test-dir", str(build), "--output-on-failure"], REPO)
    assert "100% tests passed" in output
    # The C++ test binary reports each op it exercised.
    direct = _run([str(build / "test_ops")], build)
    for op in ("encode_targets", "find_instance_centers", "panoptic_merge"):
        assert re.search(rf"^{op}\s+ok$", direct, re.M), direct
    assert "all C++ op tests passed" in direct
