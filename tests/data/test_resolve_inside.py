"""pdlkit.fileio.resolve_inside: the one check every dataset and output path goes through."""
from __future__ import annotations

import os

import pytest

from pdlkit.errors import DataError
from pdlkit.fileio import resolve_inside


def test_inside_paths_resolve(tmp_path):
    (tmp_path / "a").mkdir()
    assert resolve_inside(tmp_path, "a/b.png", what="x") == tmp_path.resolve() / "a" / "b.png"
    assert resolve_inside(tmp_path, "a/../c.png", what="x") == tmp_path.resolve() / "c.png"
    os.symlink(tmp_path / "a", tmp_path / "link")  # a link that stays inside is fine
    assert resolve_inside(tmp_path, "link/d.png", what="x") == tmp_path.resolve() / "a" / "d.png"


@pytest.mark.parametrize("relative, message", [
    ("../x.png", "'../x.png' leads outside"),
    ("a/../../x.png", "leads outside"),
    ("/etc/passwd", "is an absolute path"),
    ("", "an empty or malformed path"),
    ("a\x00b", "an empty or malformed path"),
])
def test_escapes_are_refused_in_one_sentence(tmp_path, relative, message):
    with pytest.raises(DataError, match=message) as info:
        resolve_inside(tmp_path / "root", relative, what="data.json: file_name")
    assert str(info.value).startswith("data.json: file_name") and "\n" not in str(info.value)


def test_a_link_pointing_outside_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "outside.png").write_bytes(b"")
    os.symlink(tmp_path / "outside.png", tmp_path / "root" / "in.png")
    with pytest.raises(DataError, match="'in.png' leads outside"):
        resolve_inside(tmp_path / "root", "in.png", what="x")
