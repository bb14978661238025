"""Reference code lengths (``mulan_ppl.train.baselines``)."""

import io
import math

import numpy as np
import pytest
from PIL import Image

from mulan_ppl.train import baselines


def _images(values, shape):
    return np.asarray(values, np.uint8).reshape(shape)


def test_histogram_matches_hand_computation():
    # Two positions (H=1, W=2, C=1), V = 3, three training images, add-one smoothing: denominators 3 + 3 = 6.
    train = _images([[0, 2], [0, 1], [1, 1]], (3, 1, 2, 1))
    # position 0: counts (2, 1, 0) -> (3, 2, 1)/6; position 1: counts (0, 2, 1) -> (1, 3, 2)/6
    expected = np.log2(np.array([[3, 2, 1], [1, 3, 2]]) / 6.0).reshape(1, 2, 1, 3)
    np.testing.assert_allclose(baselines.fit_histogram(train, vocab_size=3), expected, rtol=1e-12)

    test = _images([[2, 0], [0, 1]], (2, 1, 2, 1))
    # p: image 1 -> 1/6 at position 0, 1/6 at position 1; image 2 -> 3/6, 3/6
    hand = -(2 * math.log2(1 / 6) + 2 * math.log2(3 / 6)) / 4
    assert baselines.histogram_bpd(train, test, vocab_size=3) == pytest.approx(hand, rel=1e-12)


def test_histogram_pseudocount_and_unseen_values():
    train = np.zeros((4, 1, 1, 1), np.uint8)
    test = np.ones((1, 1, 1, 1), np.uint8)  # never seen in training: finite thanks to smoothing
    assert baselines.histogram_bpd(train, test, vocab_size=2, pseudocount=0.5) == pytest.approx(-math.log2(0.5 / 5))
    assert baselines.histogram_bpd(train, test, vocab_size=2) == pytest.approx(-math.log2(1 / 6))
    with pytest.raises(ValueError, match="pseudocount"):
        baselines.fit_histogram(train, vocab_size=2, pseudocount=0.0)


def test_histogram_rejects_bad_inputs():
    train = np.zeros((2, 2, 2, 1), np.uint8)
    with pytest.raises(ValueError, match="`test`.*up to 5.*vocab_size=3"):
        baselines.histogram_bpd(train, np.full((1, 2, 2, 1), 5, np.uint8), vocab_size=3)
    with pytest.raises(ValueError, match="share"):
        baselines.histogram_bpd(train, np.zeros((1, 2, 1, 1), np.uint8), vocab_size=3)
    with pytest.raises(ValueError, match="`train`.*uint8"):
        baselines.histogram_bpd(train.astype(np.int64), train, vocab_size=3)


def test_tile_images_layout():
    images = np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1) + 1
    grid = baselines.tile_images(images)  # ceil(sqrt(5)) = 3 columns, 2 rows, one empty cell
    np.testing.assert_array_equal(grid[..., 0], [[1, 2, 3], [4, 5, 0]])
    big = np.random.default_rng(0).integers(0, 256, (3, 2, 3, 3), dtype=np.uint8)
    grid = baselines.tile_images(big, num_columns=2, padding=1, pad_value=9)
    assert grid.shape == (2 * 3 - 1, 2 * 4 - 1, 3)
    np.testing.assert_array_equal(grid[0:2, 0:3], big[0])
    np.testing.assert_array_equal(grid[0:2, 4:7], big[1])
    np.testing.assert_array_equal(grid[3:5, 0:3], big[2])
    assert np.all(grid[2] == 9) and np.all(grid[:, 3] == 9) and np.all(grid[3:, 4:] == 9)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_holds_exactly_the_tiled_levels(channels):
    images = np.random.default_rng(1).integers(0, 17, (10, 8, 8, channels), dtype=np.uint8)
    buffer = io.BytesIO()
    baselines._pil_image(images, "test").save(buffer, format="PNG")
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    np.testing.assert_array_equal(decoded.reshape(baselines.tile_images(images).shape), baselines.tile_images(images))
    assert int(decoded.max()) <= 16  # raw levels, not rescaled to 0..255


@pytest.mark.parametrize("codec", baselines.CODECS)
def test_codecs_cannot_beat_the_entropy_of_uniform_bytes(codec):
    # 4,096 independent uniform bytes: a fixed lossless code shorter than 8 bits/byte by 0.1 bit/byte (410 bits) has
    # probability below 2**-410; the upper bound only allows for container overhead.
    images = np.random.default_rng(2).integers(0, 256, (16, 16, 16, 1), dtype=np.uint8)
    bpd = baselines.codec_bpd(images, codecs=(codec,))[codec]
    assert 7.9 < bpd < 10.0


@pytest.mark.parametrize("codec", baselines.CODECS)
def test_codecs_compress_a_constant_image_to_almost_nothing(codec):
    images = np.full((64, 32, 32, 3), 7, np.uint8)
    assert 0.0 < baselines.codec_bpd(images, codecs=(codec,))[codec] < 0.05  # under 1 % of the raw 8 bits


def test_codec_selection():
    images = np.zeros((4, 8, 8, 1), np.uint8)
    assert list(baselines.codec_bpd(images, codecs=("png", "bz2"))) == ["png", "bz2"]
    assert list(baselines.all_baselines(images, images, vocab_size=2, codecs=())) == ["histogram"]
    with pytest.raises(ValueError, match="'gzip'"):
        baselines.codec_bpd(images, codecs=("gzip",))
    with pytest.raises(ValueError, match="`method`"):
        baselines.webp_bpd(images, method=7)
    assert baselines.webp_bpd(images, method=0) > 0


def test_codecs_reject_non_uint8_and_odd_channel_counts():
    with pytest.raises(ValueError, match="uint8"):
        baselines.png_bpd(np.zeros((1, 2, 2, 1), np.int32))
    with pytest.raises(ValueError, match="C in"):
        baselines.webp_bpd(np.zeros((1, 2, 2, 2), np.uint8))


def test_digits_baselines_match_the_documented_numbers():
    from mulan_ppl.train.data import load_digits

    ds = load_digits()
    result = baselines.all_baselines(ds.train, ds.test, vocab_size=ds.vocab_size)
    assert list(result) == ["histogram", "bz2", "lzma", "webp_lossless", "png"]
    expected = {"histogram": 2.44, "bz2": 2.84, "lzma": 2.87, "webp_lossless": 3.09, "png": 3.81}
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=0.005), name


def test_format_bpd_table():
    table = baselines.format_bpd_table({"model": 2.5, "histogram": 2.4356}, title="bpd")
    lines = table.splitlines()
    assert lines[:2] == ["bpd", "---"]
    assert lines[2].startswith("model") and lines[2].endswith("2.500")
    assert lines[3].startswith("per-position histogram") and lines[3].endswith("2.436")
    assert len(lines[2]) == len(lines[3])
