"""Image reading (all formats -> RGB uint8) and input discovery for pdl predict."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pdlkit.errors import DataError, PdlError
from pdlkit.inference import find_images, image_id_of, read_image


def _rgb(height=7, width=11, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tif", ".tiff"])
def test_lossless_formats_round_trip_rgb(tmp_path, ext):
    image = _rgb()
    path = tmp_path / f"a{ext}"
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    loaded = read_image(path)
    assert loaded.dtype == np.uint8 and loaded.shape == (7, 11, 3)
    np.testing.assert_array_equal(loaded, image)


def test_jpeg_is_rgb_not_bgr(tmp_path):
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[..., 0] = 250  # pure red in RGB
    path = tmp_path / "red.JPG"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    loaded = read_image(path)
    assert loaded[..., 0].min() > 230 and loaded[..., 2].max() < 25


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = np.arange(35, dtype=np.uint8).reshape(5, 7) * 7
    path = tmp_path / "g.png"
    cv2.imwrite(str(path), gray)
    loaded = read_image(path)
    assert loaded.shape == (5, 7, 3)
    for channel in range(3):
        np.testing.assert_array_equal(loaded[..., channel], gray)


def test_rgba_drops_alpha(tmp_path):
    image = _rgb(6, 9)
    alpha = np.full((6, 9, 1), 17, dtype=np.uint8)
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([image, alpha], axis=2), cv2.COLOR_RGBA2BGRA))
    np.testing.assert_array_equal(read_image(path), image)


def test_16bit_is_shifted_by_8(tmp_path):
    rng = np.random.default_rng(1)
    deep = rng.integers(0, 65536, (5, 3, 3), dtype=np.uint16)
    path = tmp_path / "d.png"
    cv2.imwrite(str(path), deep)  # BGR order on disk
    loaded = read_image(path)
    np.testing.assert_array_equal(loaded, (deep[..., ::-1] >> 8).astype(np.uint8))
    gray16 = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[..., 1], [[0, 0, 1, 255]])


def test_odd_sizes_keep_their_size(tmp_path):
    for height, width in [(1, 1), (3, 1), (1, 5), (33, 17)]:
        path = tmp_path / f"{height}x{width}.png"
        image = _rgb(height, width)
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        np.testing.assert_array_equal(read_image(path), image)


def test_corrupt_empty_and_missing_files_name_the_file(tmp_path):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.raises(DataError, match="broken.png"):
        read_image(corrupt)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg.*empty"):
        read_image(empty)
    with pytest.raises(DataError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_image_id_strips_extension_and_leftimg8bit():
    assert image_id_of("a/b/frankfurt_000000_000294_leftImg8bit.png") == "frankfurt_000000_000294"
    assert image_id_of("x.tiff") == "x"
    assert image_id_of("_leftImg8bit.png") == "_leftImg8bit"


def test_find_images_folder_glob_and_file(tmp_path):
    for rel in ["a.png", "sub/a.png", "sub/deeper/b.JPG", "sub/notes.txt"]:
        path = tmp_path / "in" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    found = find_images(tmp_path / "in")
    assert [(p.relative_to(tmp_path / "in").as_posix(), rel) for p, rel in found] == [
        ("a.png", ""),
        ("sub/a.png", "sub"),
        ("sub/deeper/b.JPG", "sub/deeper"),
    ]
    globbed = find_images(str(tmp_path / "in" / "**" / "*.png"))
    assert [rel for _, rel in globbed] == ["", "sub"]
    assert find_images(tmp_path / "in" / "sub" / "a.png") == [(tmp_path / "in" / "sub" / "a.png", "")]


def test_find_images_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PdlError, match="no images found"):
        find_images(tmp_path / "empty")
    with pytest.raises(PdlError, match="no such file or folder"):
        find_images(tmp_path / "nothing_here")
    with pytest.raises(PdlError, match="no files match"):
        find_images(str(tmp_path / "*.png"))
