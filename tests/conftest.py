"""Session-wide fixtures: the toy dataset and a tiny trained checkpoint are built once per run."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Tests are many small ops; one intra-op thread keeps a 2-core CI machine from oversubscribing.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory) -> Path:
    """A small prepared toy dataset in the Cityscapes layout (train 6, val 3 images of 64x128)."""
    from pdlkit.data.prepare import prepare_toy

    root = tmp_path_factory.mktemp("toy")
    prepare_toy(root, train=6, val=3, height=64, width=128, seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def toy_checkpoint(toy_root, tmp_path_factory) -> Path:
    """A checkpoint of configs/toy.yaml trained for a few iterations on ``toy_root``."""
    from pdlkit.config import load_config
    from pdlkit.engine import train

    out = tmp_path_factory.mktemp("toy_run")
    cfg = load_config(
        REPO / "configs" / "toy.yaml",
        [
            f"data.root={toy_root}",
            f"output_dir={out}",
            "data.crop_size=[64,128]",
            "data.num_workers=0",
            "solver.max_iter=3",
            "solver.batch_size=2",
            "solver.checkpoint_period=1000",
            "test.eval_period=0",
            "test.max_eval_images=1",
        ],
    )
    train(cfg)
    return out / "model_final.pt"
