"""Training speed of the toy config quiet and beside a busy process, in one run.

Prepares a small toy dataset (128x256 images, as ``pdl prepare toy``), then runs ``pdl train
--config configs/toy.yaml`` for a few iterations twice: once on a quiet machine, once while a
process this script starts spins on one core (a neighbour using its fair share of the CPUs).  Each
run's s/iteration is the median of the per-iteration times in ``metrics.jsonl`` after the first
iterations (start-up and the first batches are left out).  The quiet / busy order alternates over
``--repeats`` and the minimum of each is reported, as timings on a shared machine are noisy.

    python benchmarks/train_load.py                    # pdl train's defaults
    python benchmarks/train_load.py --threads 2        # pass --threads to pdl train
    python benchmarks/train_load.py --env OMP_WAIT_POLICY=ACTIVE --iters 12

Measured on the 2-core development machine while ~6 other jobs shared it (load average 8-12, so
even "quiet" is loaded): the defaults gave 2.78 s/iteration quiet and 2.24 beside the busy process
(0.81x: the extra neighbour disappears in the noise); with spinning OpenMP threads
(``--env OMP_WAIT_POLICY=ACTIVE``) the same runs took 27.3 and 34.1 s/iteration.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = 3  # iterations left out of the median (start-up, the loader's first batches)


def _busy() -> subprocess.Popen:
    """A process that keeps one core busy until killed (pure Python: one thread)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def _train(data: Path, out: Path, iters: int, threads, env_extra: dict) -> float:
    command = [sys.executable, "-m", "pdlkit.cli.main", "train", "--config", str(REPO / "configs" / "toy.yaml"),
               "--data", str(data), "--output", str(out), "--quiet",
               "--set", f"solver.max_iter={iters}", "--set", "solver.log_period=1",
               "--set", f"solver.checkpoint_period={iters}", "--set", "test.max_eval_images=1"]
    if threads:
        command += ["--threads", str(threads)]
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(env_extra)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"pdl train failed:\n{result.stderr[-2000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [line["time"] for line in lines if "time" in line and line["iteration"] > SKIP]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="training iterations per run")
    parser.add_argument("--repeats", type=int, default=2, help="quiet/busy pairs (minimum reported)")
    parser.add_argument("--threads", type=int, default=None, help="pdl train --threads (default: its own)")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for pdl train (repeatable)")
    args = parser.parse_args()
    env_extra = dict(item.split("=", 1) for item in args.env)
    from pdlkit.data.prepare import prepare_toy

    quiet, busy = [], []
    with tempfile.TemporaryDirectory(prefix="pdl_train_load_") as tmp:
        data = Path(tmp) / "toy"
        prepare_toy(data, train=16, val=2, height=128, width=256, seed=0, progress=False)
        for repeat in range(args.repeats):
            for loaded in ((False, True) if repeat % 2 == 0 else (True, False)):
                neighbour = _busy() if loaded else None
                try:
                    time.sleep(0.5 if loaded else 0)
                    seconds = _train(data, Path(tmp) / f"run{repeat}{int(loaded)}", args.iters, args.threads, env_extra)
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
                (busy if loaded else quiet).append(seconds)
                print(f"  {'busy ' if loaded else 'quiet'} run {repeat + 1}: {seconds:.3f} s/iteration", flush=True)
    print(f"toy config, {os.cpu_count()} CPUs, threads {args.threads or 'default'}, env {env_extra or '-'}")
    print(f"quiet: {min(quiet):.3f} s/iteration   beside a busy process: {min(busy):.3f} s/iteration   "
          f"ratio {min(busy) / min(quiet):.2f}x (target <= 2.5x)")


if __name__ == "__main__":
    main()
