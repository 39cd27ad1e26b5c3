"""Pictures: flow colours, heatmaps, overlays, panels, and drawing a pdl predict folder."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pdlkit.visualize import (
    center_heatmap_image,
    colorize_semantic,
    make_panel,
    offset_flow_image,
    panoptic_overlay,
    visualize_predictions,
)

from inference.fakes import ConvPanopticNet, small_config, toy_spec


def test_offset_flow_hue_is_direction_and_value_is_length():
    offsets = np.zeros((2, 1, 5), dtype=np.float32)
    offsets[1, 0, 0] = 2.0    # right
    offsets[0, 0, 1] = 2.0    # down (y grows downwards)
    offsets[1, 0, 2] = -2.0   # left
    offsets[1, 0, 3] = 1.0    # right, half as long
    flow = offset_flow_image(offsets)
    assert flow.shape == (1, 5, 3) and flow.dtype == np.uint8
    hsv = cv2.cvtColor(flow, cv2.COLOR_RGB2HSV)
    assert hsv[0, 0, 0] == 0 and hsv[0, 1, 0] == 45 and hsv[0, 2, 0] == 90  # 0°, 90°, 180° (OpenCV halves)
    assert list(flow[0, 0]) == [255, 0, 0]
    assert hsv[0, 3, 2] == 128 and hsv[0, 0, 2] == 255
    assert list(flow[0, 4]) == [0, 0, 0]  # no offset: black
    masked = offset_flow_image(offsets, mask=np.array([[False, True, True, True, True]]))
    assert list(masked[0, 0]) == [0, 0, 0] and (masked[0, 1:] == flow[0, 1:]).all()


def test_center_heatmap_marks_centers():
    heatmap = np.zeros((40, 60), dtype=np.float32)
    heatmap[10, 20] = 1.0
    picture = center_heatmap_image(heatmap, np.array([[10, 20]]))
    assert picture.shape == (40, 60, 3)
    assert list(picture[10, 20]) == [255, 255, 255]
    plain = center_heatmap_image(heatmap)
    assert list(plain[30, 50]) == list(cv2.applyColorMap(np.zeros((1, 1), np.uint8), cv2.COLORMAP_JET)[0, 0][::-1])


def test_overlay_blends_class_colours_and_draws_white_instance_boundaries():
    spec = toy_spec()  # train ids 0, 1 stuff; 2, 3 things
    image = np.full((12, 16, 3), 100, dtype=np.uint8)
    segment_map = np.full((12, 16), -1, dtype=np.int64)
    segment_map[:, :8] = 0           # stuff class 0
    segment_map[:6, 8:] = 2001       # two instances of class 2 on top of each other
    segment_map[6:, 8:] = 2002
    segment_map[0, 0] = -1           # a void pixel
    segments = [
        {"id": 0, "category_id": spec.category_ids[0], "isthing": False},
        {"id": 2001, "category_id": spec.category_ids[2], "isthing": True},
        {"id": 2002, "category_id": spec.category_ids[2], "isthing": True},
    ]
    overlay = panoptic_overlay(image, segment_map, segments, spec, alpha=0.5, labels=False)
    assert list(overlay[0, 0]) == [100, 100, 100]
    expected_stuff = np.floor(np.asarray(spec.colors[0]) * 0.5 + 50 + 0.5)
    np.testing.assert_array_equal(overlay[3, 3], expected_stuff)
    assert list(overlay[2, 12]) != list(overlay[9, 12])  # two instances, two shades
    # one-pixel boundaries on the lower / right side of an id change that touches a thing
    assert (overlay[6, 8:] == 255).all() and not (overlay[5, 9:] == 255).all(axis=-1).any()
    assert (overlay[:, 8] == 255).all() and not (overlay[:, 7] == 255).all(axis=-1).any()
    assert not (overlay[2, 2] == 255).all()
    labelled = panoptic_overlay(image, segment_map, segments, spec, alpha=0.5, labels=True)
    assert (labelled != overlay).any()


def test_colorize_semantic_and_panel_size():
    spec = toy_spec()
    semantic = np.array([[0, 1], [3, 9]])
    colored = colorize_semantic(semantic, spec)
    assert list(colored[1, 0]) == list(spec.colors[3]) and list(colored[1, 1]) == [0, 0, 0]
    tiles = [np.zeros((10, 14, 3), np.uint8) for _ in range(4)]
    assert make_panel(*tiles).shape == (20, 28, 3)


@pytest.fixture
def predicted(tmp_path):
    """A pdl predict folder of three images (one in a sub-folder), with raw outputs."""
    from pdlkit.inference import Predictor, predict_paths

    rng = np.random.default_rng(0)
    images = tmp_path / "images"
    for rel, size in [("a_leftImg8bit.png", (24, 40)), ("b.jpg", (24, 40)), ("sub/c.png", (33, 21))]:
        (images / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(images / rel), rng.integers(0, 256, size + (3,), dtype=np.uint8))
    spec = toy_spec()
    predictor = Predictor.from_model(ConvPanopticNet(spec.num_classes, 8), small_config(), spec, "cpu")
    predict_paths(predictor, images, tmp_path / "pred", save_raw=True, progress=False)
    predict_paths(predictor, images, tmp_path / "pred_noraw", progress=False)
    return tmp_path


def test_visualize_folder_writes_panels_of_twice_the_image_size(predicted):
    out = predicted / "vis"
    summary = visualize_predictions(predicted / "pred", out, what="panel", progress=False)
    assert not summary.failed
    sizes = {p.relative_to(out).as_posix(): cv2.imread(str(p)).shape for p in summary.written}
    assert sizes == {"a_panel.png": (48, 80, 3), "b_panel.png": (48, 80, 3), "sub/c_panel.png": (66, 42, 3)}
    overlays = visualize_predictions(predicted / "pred", out, what="overlay", progress=False)
    assert cv2.imread(str(out / "sub" / "c_overlay.png")).shape == (33, 21, 3)
    assert len(overlays.written) == 3


def test_scale_enlarges_the_pictures(predicted):
    summary = visualize_predictions(predicted / "pred" / "panoptic" / "b.png", predicted / "big", what="panel",
                                    scale=3, progress=False)
    assert cv2.imread(str(summary.written[0])).shape == (6 * 24, 6 * 40, 3)
    small = visualize_predictions(predicted / "pred" / "panoptic" / "b.png", predicted / "small", what="panel",
                                  progress=False)
    big_panel = cv2.imread(str(summary.written[0]))
    small_panel = cv2.imread(str(small.written[0]))
    # the semantic tile (top right) is the nearest-neighbour enlargement (rows below the titles)
    small_semantic = small_panel[18:24, 40:80]
    big_semantic = big_panel[54:72, 120:240]
    np.testing.assert_array_equal(big_semantic, np.repeat(np.repeat(small_semantic, 3, 0), 3, 1))


def test_visualize_one_file_and_images_folder(predicted):
    out = predicted / "vis1"
    summary = visualize_predictions(predicted / "pred" / "panoptic" / "sub" / "c.png", out,
                                    images_dir=predicted / "images", what="panel", progress=False)
    assert [p.relative_to(out).as_posix() for p in summary.written] == ["sub/c_panel.png"]
    # the overlay tile of the panel is the overlay picture
    overlay = visualize_predictions(predicted / "pred" / "raw" / "sub" / "c.npz", out, progress=False)
    panel = cv2.imread(str(out / "sub" / "c_panel.png"))
    alone = cv2.imread(str(overlay.written[0]))
    np.testing.assert_array_equal(panel[20:33, :21], alone[20:, :])  # below the tile title


def test_visualize_errors(predicted):
    summary = visualize_predictions(predicted / "pred_noraw", predicted / "v", what="panel", progress=False)
    assert len(summary.failed) == 3 and not summary.written
    assert all("--save-raw" in reason for _, reason in summary.failed)
    (predicted / "elsewhere").mkdir()
    missing = visualize_predictions(predicted / "pred", predicted / "v", images_dir=predicted / "elsewhere",
                                    progress=False)
    assert len(missing.failed) == 3 and "no image named" in missing.failed[0][1]
    from pdlkit.errors import DataError, PdlError

    with pytest.raises(DataError, match="not a prediction folder"):
        visualize_predictions(predicted / "images", predicted / "v", progress=False)
    with pytest.raises(PdlError, match="no such file"):
        visualize_predictions(predicted / "nothing", predicted / "v", progress=False)


def test_a_file_name_with_dot_dot_never_writes_outside_the_output(predicted):
    import json
    import shutil

    pred = predicted / "pred"
    shutil.rmtree(pred / "segments")  # only panoptic.json names the files now
    index = json.loads((pred / "panoptic.json").read_text())
    (pred / "escape").mkdir()
    shutil.copy(pred / "panoptic" / "b.png", pred / "escape" / "b.png")
    for annotation in index["annotations"]:
        if annotation["file_name"] == "b.png":
            annotation["file_name"] = "../escape/b.png"  # a readable png, one level up
    (pred / "panoptic.json").write_text(json.dumps(index))
    out = predicted / "vis" / "inner"
    summary = visualize_predictions(pred, out, images_dir=predicted / "images", progress=False)
    assert len(summary.written) == 2
    assert [name for name, _ in summary.failed] == ["../escape/b.png"]
    assert "leads outside" in summary.failed[0][1]
    written = sorted(p.relative_to(predicted).as_posix() for p in predicted.rglob("*_overlay.png"))
    assert written == ["vis/inner/a_overlay.png", "vis/inner/sub/c_overlay.png"]


def test_nice_ticks_cover_the_range_with_round_steps():
    from pdlkit.visualize import nice_ticks

    assert nice_ticks(0, 750) == [0, 200, 400, 600, 800]
    assert nice_ticks(55.2, 64.0) == [54, 56, 58, 60, 62, 64]
    assert nice_ticks(0.1, 0.3) == [0.1, 0.15, 0.2, 0.25, 0.3]
    assert nice_ticks(3, 3)[0] == 3 and len(nice_ticks(3, 3)) > 1


def _metrics_run(root):
    import json

    root.mkdir()
    lines = [{"iteration": it, "lr": 1e-3, "loss": 4.0, "loss_semantic": 1.0, "eta_seconds": 1.0}
             for it in range(10, 110, 10)]
    lines += [{"iteration": 50, "eval": {"PQ": 30.0, "mIoU": 50.0, "SQ": 70.0, "RQ": 40.0}},
              {"iteration": 100, "eval": {"PQ": 40.0, "mIoU": 60.0, "SQ": 75.0, "RQ": 50.0}}]
    (root / "metrics.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return root


def test_training_curves_put_each_series_where_its_numbers_say(tmp_path):
    from pdlkit.visualize import CURVE_COLORS, plot_series, plot_training_run, read_training_metrics

    run = _metrics_run(tmp_path / "run")
    losses, evaluations = read_training_metrics(run / "metrics.jsonl")
    assert sorted(losses) == ["loss", "loss_semantic"] and losses["loss"][0] == list(range(10, 110, 10))
    assert evaluations["PQ"] == ([50, 100], [30.0, 40.0]) and evaluations["mIoU"][1] == [50.0, 60.0]

    tile, area = plot_series(losses, "training losses", "loss")
    color = np.array(CURVE_COLORS[0])  # "loss" is the first series: a flat line at 4.0
    _, row = area.to_pixel(10, 4.0)
    left, _ = area.to_pixel(10, 4.0)
    right, _ = area.to_pixel(100, 4.0)
    exact = np.all(tile == color, axis=-1)
    assert exact[row, left + 5:right - 5].all()
    legend_left = area.width - area.right - 135  # the legend's swatches share the colours
    assert not exact[: row - 2, left:legend_left].any() and not exact[row + 3:, left:legend_left].any()

    picture = cv2.imread(str(plot_training_run(run)))
    assert picture.shape == (area.height, 2 * area.width, 3)
    eval_tile = cv2.cvtColor(picture[:, area.width:], cv2.COLOR_BGR2RGB)
    pq_color = np.array(CURVE_COLORS[1])  # PQ: the first evaluation series
    _, eval_area = plot_series(evaluations, "evaluation", "%", markers=True)
    for iteration, value in zip(*evaluations["PQ"]):
        x, y = eval_area.to_pixel(iteration, value)
        assert (eval_tile[y, x] == pq_color).all()  # a marker at each evaluation


def test_visualize_cli_on_a_run_folder(tmp_path):
    from click.testing import CliRunner

    from pdlkit.cli.main import cli

    run = _metrics_run(tmp_path / "run")
    result = CliRunner().invoke(cli, ["visualize", str(run)])
    assert result.exit_code == 0 and (run / "training_curves.png").is_file()
    result = CliRunner().invoke(cli, ["visualize", str(run), "--output", str(tmp_path / "c.png")])
    assert result.exit_code == 0 and (tmp_path / "c.png").is_file()
    (run / "metrics.jsonl").write_text("not json\n")
    result = CliRunner().invoke(cli, ["visualize", str(run)])
    assert result.exit_code == 1 and "line 1 is not a metrics record" in result.output
