"""Library errors speak in the library's parameters; `pdl` says the same sentence with its flags."""
from __future__ import annotations

from click.testing import CliRunner

from pdlkit.cli.main import cli
from pdlkit.errors import DataError, PdlError


def test_in_terms_of_renames_each_parameter_once():
    error = PdlError("a torchvision file needs cfg or backbone to know which backbone it is",
                     parameter=("cfg", "backbone"))
    assert error.parameters == ("cfg", "backbone")
    assert error.in_terms_of({"cfg": "--config", "backbone": "--backbone"}) == (
        "a torchvision file needs --config or --backbone to know which backbone it is")
    assert error.in_terms_of({}) == str(error)
    assert PdlError("batch_size must be at least 1, got 0", parameter="batch_size").in_terms_of(
        {"batch_size": "--batch-size"}) == "--batch-size must be at least 1, got 0"


def test_errors_without_parameter_keep_their_message():
    assert DataError("x.png: not a PNG").parameters == ()
    assert DataError("x.png: not a PNG").in_terms_of({"x": "--x"}) == "x.png: not a PNG"


def test_library_sentence_is_said_with_the_commands_flag(tmp_path):
    from pdlkit.visualize import visualize_predictions

    predictions = tmp_path / "preds"
    (predictions / "panoptic").mkdir(parents=True)
    (predictions / "panoptic.json").write_text(
        '{"annotations": [], "categories": [{"id": 7, "name": "road", "isthing": 0, "color": [128, 64, 128]}]}')
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    try:
        visualize_predictions(predictions, tmp_path / "out", images_dir=not_a_folder, progress=False)
    except PdlError as exc:
        library_message = str(exc)
    assert "images_dir must be a folder" in library_message
    result = CliRunner().invoke(cli, ["visualize", str(predictions), "--images", str(not_a_folder),
                                      "--output", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "--images must be a folder" in result.output and "images_dir" not in result.output
