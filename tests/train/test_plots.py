"""Figures (``mulan_ppl.train.plots``): files are read back with Pillow."""

import numpy as np
import pytest
from PIL import Image

from mulan_ppl.train import plots


def test_levels_to_uint8_maps_the_ends_and_keeps_order():
    levels = np.arange(17)
    display = plots.levels_to_uint8(levels, 17)
    assert display.dtype == np.uint8 and display[0] == 0 and display[-1] == 255
    assert np.all(np.diff(display.astype(int)) > 0)
    np.testing.assert_array_equal(plots.levels_to_uint8(np.arange(256, dtype=np.uint8), 256), np.arange(256))
    with pytest.raises(ValueError, match="vocab_size=17"):
        plots.levels_to_uint8(np.array([17]), 17)
    with pytest.raises(ValueError, match="integer"):
        plots.levels_to_uint8(np.array([0.5]), 17)


def test_grey_sample_grid_contents(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 17, (5, 8, 8, 1)).astype(np.int32)  # model samples need not be uint8
    path = plots.save_sample_grid(images, tmp_path / "sub" / "grid.png", vocab_size=17, upscale=2)
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "L"
        grid = np.asarray(picture)
    # 3 columns x 2 rows of 8x8 tiles, 1-pixel white gaps, all magnified twice
    assert grid.shape == (2 * (2 * 8 + 1), 2 * (3 * 8 + 2))
    expected_first = np.repeat(np.repeat(plots.levels_to_uint8(images[0, ..., 0], 17), 2, 0), 2, 1)
    np.testing.assert_array_equal(grid[:16, :16], expected_first)
    assert np.all(grid[16:18] == 255)  # the gap between the rows
    assert np.all(grid[18:, 36:] == 255)  # the empty sixth cell


def test_rgb_sample_grid(tmp_path):
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[1, ..., 0] = 255
    path = plots.save_sample_grid(images, tmp_path / "rgb.png", vocab_size=256, num_columns=4, padding=0)
    with Image.open(path) as picture:
        assert picture.mode == "RGB" and picture.size == (128, 32)
        grid = np.asarray(picture)
    np.testing.assert_array_equal(grid[:, 32:64], images[1])
    np.testing.assert_array_equal(grid[:, :32], images[0])


def test_sample_grid_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="C in"):
        plots.save_sample_grid(np.zeros((2, 4, 4, 2), np.uint8), tmp_path / "x.png", vocab_size=256)
    with pytest.raises(ValueError, match="vocab_size=17"):
        plots.save_sample_grid(np.full((2, 4, 4, 1), 20, np.uint8), tmp_path / "x.png", vocab_size=17)
    with pytest.raises(ValueError, match="upscale"):
        plots.save_sample_grid(np.zeros((2, 4, 4, 1), np.uint8), tmp_path / "x.png", vocab_size=2, upscale=0)


def test_snr_curves_png(tmp_path):
    times = np.linspace(0.0, 1.0, 21)
    powers = np.random.default_rng(1).uniform(0.5, 2.0, (4, 1, 2, 3, 1))  # S=4 contexts, event (2, 3, 1)
    gammas = -13.3 + 18.3 * times[None, :, None, None, None] ** powers
    path = plots.save_snr_curves(times, gammas, tmp_path / "figs" / "snr.png", max_dims=3, title="t", dpi=50)
    with Image.open(path) as picture:
        assert picture.format == "PNG"
        assert picture.size == (11 * 50, round(4.2 * 50))
        pixels = np.asarray(picture.convert("L"))
    assert pixels.min() < 128 < pixels.max()  # something was drawn on the white background


def test_snr_curves_reject_bad_shapes(tmp_path):
    times = np.linspace(0.0, 1.0, 5)
    with pytest.raises(ValueError, match="T = len\\(times\\) = 5"):
        plots.save_snr_curves(times, np.zeros((2, 4, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="`times`"):
        plots.save_snr_curves(times[:, None], np.zeros((2, 5, 3)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="finite"):
        plots.save_snr_curves(times, np.full((2, 5, 3), np.nan), tmp_path / "x.png")
