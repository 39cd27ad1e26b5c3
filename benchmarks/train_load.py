"""Training speed of the toy config quiet and beside a busy process, for several OpenMP wait settings,
in one run.

Prepares a small toy dataset (128x256 images, as ``pdl prepare toy``), then runs ``pdl train
--config configs/toy.yaml`` for a few iterations, for each wait setting (``--policy``) twice: once
on a quiet machine, once while a process this script starts spins on one core (a neighbour using
its fair share of the CPUs).  Each run's s/iteration is the median of the per-iteration times in
``metrics.jsonl`` after the first iterations (start-up and the first batches are left out).  Every
setting runs quiet and busy in each round, the order reversing from round to round (``--repeats``),
and the minimum of each is reported, as timings on a shared machine are noisy.

    python benchmarks/train_load.py        # pdl's default, passive waits, libgomp's 3 ms spin
    python benchmarks/train_load.py --threads 2 --policy default --policy "spin-1k:GOMP_SPINCOUNT=1000"

Measured on the 2-core development machine while other jobs kept it at load 4-6 (so "quiet" is
itself loaded), one round: passive 1.25 quiet / 2.66 busy s/iteration (2.1x), GOMP_SPINCOUNT=10000
7.44 / 9.07, 50000 8.86 / 11.8, 300000 (libgomp's default when nothing is set) 6.02 quiet; a
second run: passive 2.19 / 2.26, GOMP_SPINCOUNT=1000 2.12 / 3.22.  Passive stays the default.
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


_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


def _train(data: Path, out: Path, iters: int, threads, env_extra: dict) -> float:
    command = [sys.executable, "-m", "pdlkit.cli.main", "train", "--config", str(REPO / "configs" / "toy.yaml"),
               "--data", str(data), "--output", str(out), "--quiet",
               "--set", f"solver.max_iter={iters}", "--set", "solver.log_period=1",
               "--set", f"solver.checkpoint_period={iters}", "--set", "test.max_eval_images=1"]
    if threads:
        command += ["--threads", str(threads)]
    # each policy starts from none of the wait variables: "default" is what pdl sets by itself
    env = {key: value for key, value in os.environ.items()
           if key not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") + _WAIT_VARIABLES}
    env.update(env_extra)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"pdl train failed:\n{result.stderr[-2000:]}")
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    times = [line["time"] for line in lines if "time" in line and line["iteration"] > SKIP]
    return statistics.median(times)


def _policies(items) -> dict:
    """"NAME" or "NAME:KEY=VALUE,KEY=VALUE" -> {NAME: env}; "default" is pdl's own choice."""
    policies = {}
    for item in items:
        name, _, assignments = item.partition(":")
        policies[name] = dict(pair.split("=", 1) for pair in assignments.split(",") if pair)
    return policies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="training iterations per run")
    parser.add_argument("--repeats", type=int, default=2, help="quiet/busy pairs (minimum reported)")
    parser.add_argument("--threads", type=int, default=None, help="pdl train --threads (default: its own)")
    parser.add_argument("--policy", action="append", default=[], metavar="NAME[:KEY=VALUE,...]",
                        help="an OpenMP wait setting to compare (repeatable; default: pdl's default, passive "
                             "waits, and libgomp's own 3 ms spin)")
    args = parser.parse_args()
    policies = _policies(args.policy or ["default", "passive:OMP_WAIT_POLICY=PASSIVE",
                                         "spin-3ms:GOMP_SPINCOUNT=300000"])
    from pdlkit.data.prepare import prepare_toy

    load_before = f"{os.getloadavg()[0]:.1f}"
    results = {(name, loaded): [] for name in policies for loaded in (False, True)}
    with tempfile.TemporaryDirectory(prefix="pdl_train_load_") as tmp:
        data = Path(tmp) / "toy"
        prepare_toy(data, train=16, val=2, height=128, width=256, seed=0, progress=False)
        for repeat in range(args.repeats):
            # every policy quiet and busy in each round, the order alternating, so a change in the
            # machine's load over the run falls on all of them
            order = [(name, loaded) for name in policies for loaded in (False, True)]
            for name, loaded in (order if repeat % 2 == 0 else order[::-1]):
                neighbour = _busy() if loaded else None
                try:
                    time.sleep(0.5 if loaded else 0)
                    out = Path(tmp) / f"run{repeat}-{name}-{int(loaded)}"
                    seconds = _train(data, out, args.iters, args.threads, policies[name])
                finally:
                    if neighbour is not None:
                        neighbour.kill()
                        neighbour.wait()
                results[(name, loaded)].append(seconds)
                print(f"  {name:>10} {'busy ' if loaded else 'quiet'} run {repeat + 1}: {seconds:.3f} s/iteration",
                      flush=True)
    print(f"toy config, {os.cpu_count()} CPUs, threads {args.threads or 'default'}, "
          f"load average before/after {load_before} / {os.getloadavg()[0]:.1f}")
    print("| wait setting | environment | quiet s/it | beside a busy process s/it | busy / quiet |")
    print("|---|---|---|---|---|")
    for name, env in policies.items():
        quiet, busy = min(results[(name, False)]), min(results[(name, True)])
        shown = ",".join(f"{k}={v}" for k, v in env.items()) or "(pdl's default)"
        print(f"| {name} | {shown} | {quiet:.3f} | {busy:.3f} | {busy / quiet:.2f}x |")
    print("(target: busy / quiet <= 2.5x, and quiet as fast as the fastest setting)")


if __name__ == "__main__":
    main()
