"""`pdl visualize` on `pdl predict --save-raw` outputs of the toy checkpoint."""
from __future__ import annotations

import cv2
import pytest
from click.testing import CliRunner

from pdlkit.cli.main import cli


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def test_visualize_missing_folder(tmp_path):
    result = _run("visualize", tmp_path / "nothing", "--output", tmp_path / "vis")
    assert result.exit_code == 1 and "no such file or folder" in result.output
    result = _run("visualize", tmp_path, "--output", tmp_path / "vis", "--what", "nonsense")
    assert result.exit_code == 2


@pytest.mark.slow
def test_panels_from_the_toy_checkpoint(toy_checkpoint, toy_root, tmp_path):
    images = toy_root / "leftImg8bit" / "val"
    raw = _run("predict", images, "--weights", toy_checkpoint, "--output", tmp_path / "pred", "--save-raw", "-q")
    assert raw.exit_code == 0
    plain = _run("predict", images, "--weights", toy_checkpoint, "--output", tmp_path / "plain", "-q")
    assert plain.exit_code == 0

    result = _run("visualize", tmp_path / "pred", "--images", images, "--output", tmp_path / "vis",
                  "--what", "panel", "-q")
    assert result.exit_code == 0, result.output
    inputs = sorted(images.rglob("*.png"))
    panels = sorted((tmp_path / "vis").rglob("*_panel.png"))
    assert len(panels) == len(inputs) > 0
    height, width = cv2.imread(str(inputs[0])).shape[:2]
    for panel in panels:
        assert cv2.imread(str(panel)).shape == (2 * height, 2 * width, 3)
    # the city sub-folder of the input is mirrored
    assert panels[0].parent.name == inputs[0].parent.name

    result = _run("visualize", tmp_path / "plain", "--output", tmp_path / "vis2", "--what", "panel", "-q")
    assert result.exit_code == 1 and "--save-raw" in result.output
    overlay = _run("visualize", tmp_path / "plain", "--output", tmp_path / "vis2", "-q")
    assert overlay.exit_code == 0
    assert cv2.imread(str(next((tmp_path / "vis2").rglob("*_overlay.png")))).shape == (height, width, 3)
