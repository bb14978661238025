"""Reference code lengths for integer images, in bits per dimension, to print beside a model's test bpd.

- :func:`histogram_bpd`: a per-position categorical model (one distribution over the ``V`` levels for each pixel and
  channel) fitted on the training split with add-``pseudocount`` smoothing; its test cross-entropy is the bpd of a
  model that ignores every dependency between dimensions.
- :func:`codec_bpd`: general-purpose lossless codecs on the test split: PNG (Pillow, ``optimize``, compression level
  9) and WebP lossless (Pillow, ``method=6``, ``quality=100``) of the test images tiled into one grid image, and bz2
  (level 9) and xz/LZMA (preset 9) of the raw bytes of the ``(N, H, W, C)`` array. The codecs see the raw integer
  levels ``0 .. V-1`` (what the model sees), not levels rescaled to ``0 .. 255``; container headers are included.

Every number is ``bits / (N * H * W * C)`` over the real test images; grid padding costs bits but adds no dimensions.
On the digits test split (:func:`mulan_ppl.train.data.load_digits`: 360 images, V = 17) these give: histogram 2.44,
bz2 2.84, LZMA 2.87, WebP lossless 3.09, PNG 3.81 bpd.
"""

from __future__ import annotations

import bz2
import functools
import io
import lzma
import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "CODECS",
    "all_baselines",
    "bz2_bpd",
    "codec_bpd",
    "fit_histogram",
    "format_bpd_table",
    "histogram_bpd",
    "lzma_bpd",
    "png_bpd",
    "tile_images",
    "webp_bpd",
]


def _check(images, name: str, call: str, vocab_size: int | None = None) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"`{call}`: `{name}` must be uint8 integer images; got dtype {images.dtype}.")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"`{call}`: `{name}` must have shape (N, H, W, C) with N >= 1; got shape {images.shape}.")
    if vocab_size is not None and int(images.max()) >= vocab_size:
        raise ValueError(
            f"`{call}`: `{name}` has values up to {int(images.max())}, outside [0, vocab_size={vocab_size})."
        )
    return images


def fit_histogram(train: np.ndarray, *, vocab_size: int, pseudocount: float = 1.0) -> np.ndarray:
    r"""Per-position categorical distributions fitted by smoothed counting, as log2-probabilities.

    Mathematical details:
        For each position ``d`` (pixel and channel) and level ``v``, with :math:`n_{dv}` the number of training
        images whose value at ``d`` is ``v``, ``N`` the number of images and :math:`a` the pseudocount,

        .. math:: p_d(v) = \frac{n_{dv} + a}{N + a V}.

        ``pseudocount=1`` is add-one (Laplace) smoothing.

    Args:
        train: ``uint8`` images ``(N, H, W, C)`` with values in ``[0, vocab_size)``.
        vocab_size: number of levels ``V``.
        pseudocount: ``a > 0``.

    Returns:
        ``float64`` array ``(H, W, C, V)`` of :math:`\log_2 p_d(v)`.

    Example:
        >>> train = np.array([0, 0, 1], np.uint8).reshape(3, 1, 1, 1)
        >>> print(np.exp2(fit_histogram(train, vocab_size=2)).ravel())  # (2+1)/5, (1+1)/5
        [0.6 0.4]
    """
    train = _check(train, "train", "fit_histogram", vocab_size)
    if not pseudocount > 0:
        raise ValueError(f"`fit_histogram`: `pseudocount` must be > 0; got {pseudocount!r}.")
    flat = train.reshape(len(train), -1).astype(np.int64)
    num_dims = flat.shape[1]
    counts = np.zeros((num_dims, vocab_size), np.float64)
    np.add.at(counts, (np.broadcast_to(np.arange(num_dims), flat.shape), flat), 1.0)
    log2p = np.log2(counts + pseudocount) - np.log2(len(train) + pseudocount * vocab_size)
    return log2p.reshape(*train.shape[1:], vocab_size)


def histogram_bpd(train: np.ndarray, test: np.ndarray, *, vocab_size: int, pseudocount: float = 1.0) -> float:
    r"""Test bits per dimension of the per-position histogram model fitted on ``train`` (:func:`fit_histogram`).

    Mathematical details:
        .. math:: \text{bpd} = -\frac{1}{M D} \sum_{i=1}^{M} \sum_{d=1}^{D} \log_2 p_d(x^{(i)}_d)

        over the ``M`` test images of ``D = H W C`` dimensions.

    Args:
        train: ``uint8`` images ``(N, H, W, C)``.
        test: ``uint8`` images ``(M, H, W, C)``.
        vocab_size: number of levels ``V``.
        pseudocount: smoothing ``a > 0``.

    Returns:
        The bpd as a Python float.

    Example:
        >>> train = np.array([0, 0, 1], np.uint8).reshape(3, 1, 1, 1)
        >>> test = np.array([0, 1], np.uint8).reshape(2, 1, 1, 1)
        >>> round(histogram_bpd(train, test, vocab_size=2), 4)  # -(log2 0.6 + log2 0.4) / 2
        1.0294
    """
    log2p = fit_histogram(train, vocab_size=vocab_size, pseudocount=pseudocount)
    test = _check(test, "test", "histogram_bpd", vocab_size)
    if test.shape[1:] != log2p.shape[:-1]:
        raise ValueError(
            f"`histogram_bpd`: `train` and `test` must share (H, W, C); got {log2p.shape[:-1]} and {test.shape[1:]}."
        )
    flat = test.reshape(len(test), -1).astype(np.int64)
    table = log2p.reshape(-1, vocab_size)
    return float(-table[np.arange(flat.shape[1]), flat].mean())


def tile_images(images: np.ndarray, *, num_columns: int | None = None, padding: int = 0,
                pad_value: int = 0) -> np.ndarray:
    """Tiles images row by row into one grid image.

    Args:
        images: array ``(N, H, W, C)``.
        num_columns: images per grid row; default ``ceil(sqrt(N))``. Empty cells of the last row hold ``pad_value``.
        padding: pixels of ``pad_value`` between neighbouring tiles (none at the outer border).
        pad_value: value of padding pixels and empty cells.

    Returns:
        Array ``(rows * (H + padding) - padding, cols * (W + padding) - padding, C)`` of ``images.dtype``.

    Example:
        >>> tile_images(np.zeros((5, 2, 3, 1), np.uint8)).shape  # 3 columns, 2 rows
        (4, 9, 1)
        >>> tile_images(np.ones((2, 1, 1, 1), np.uint8), num_columns=2, padding=1)[..., 0].tolist()
        [[1, 0, 1]]
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"`tile_images`: `images` must have shape (N, H, W, C) with N >= 1; got {images.shape}.")
    n, h, w, c = images.shape
    cols = math.ceil(math.sqrt(n)) if num_columns is None else int(num_columns)
    if cols < 1 or padding < 0:
        raise ValueError(f"`tile_images`: need `num_columns` >= 1 and `padding` >= 0; got {cols}, {padding}.")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    hp, wp = h + padding, w + padding
    grid = np.full((rows * hp, cols * wp, c), pad_value, images.dtype)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * hp: r * hp + h, q * wp: q * wp + w] = images[i]
    return grid[: rows * hp - padding, : cols * wp - padding]


def _pil_image(images: np.ndarray, call: str):
    from PIL import Image  # noqa: PLC0415  (Pillow is an optional dependency)

    images = _check(images, "images", call)
    grid = tile_images(images)
    channels = grid.shape[-1]
    if channels == 1:
        return Image.fromarray(grid[..., 0], mode="L")
    if channels in (3, 4):
        return Image.fromarray(grid, mode="RGB" if channels == 3 else "RGBA")
    raise ValueError(f"`{call}`: image codecs need C in (1, 3, 4) channels; got images.shape={images.shape}.")


def _bpd(num_bytes: int, images: np.ndarray) -> float:
    return 8.0 * num_bytes / images.size


def png_bpd(images: np.ndarray) -> float:
    """Bits per dimension of the tiled images as one PNG (Pillow, ``optimize=True``, ``compress_level=9``).

    Example:
        >>> constant = np.zeros((64, 8, 8, 1), np.uint8)
        >>> png_bpd(constant) * constant.size / 8 < 100  # bytes: little beyond the format's headers
        True
    """
    buffer = io.BytesIO()
    _pil_image(images, "png_bpd").save(buffer, format="PNG", optimize=True, compress_level=9)
    return _bpd(buffer.tell(), np.asarray(images))


def webp_bpd(images: np.ndarray, *, method: int = 6) -> float:
    """Bits per dimension of the tiled images as one lossless WebP (Pillow, ``quality=100``).

    ``method`` (0 .. 6) trades time for size; at 6 with quality 100 libwebp searches exhaustively, which takes about
    0.15 s per 32x32 RGB image of natural content (25 minutes for CIFAR-10's 10,000 test images, against seconds
    for digits); ``method=4`` is about ten times faster and about 1 % larger there.

    Example:
        >>> constant = np.zeros((64, 8, 8, 1), np.uint8)
        >>> webp_bpd(constant) * constant.size / 8 < 100  # bytes: little beyond the format's headers
        True
    """
    if not 0 <= method <= 6:
        raise ValueError(f"`webp_bpd`: `method` must be in 0 .. 6; got {method!r}.")
    buffer = io.BytesIO()
    _pil_image(images, "webp_bpd").save(buffer, format="WEBP", lossless=True, quality=100, method=int(method))
    return _bpd(buffer.tell(), np.asarray(images))


def bz2_bpd(images: np.ndarray) -> float:
    """Bits per dimension of the raw ``(N, H, W, C)`` bytes compressed with bz2 at level 9.

    Example:
        >>> constant = np.zeros((64, 8, 8, 1), np.uint8)
        >>> bz2_bpd(constant) * constant.size / 8 < 100  # bytes: little beyond the format's headers
        True
    """
    images = _check(images, "images", "bz2_bpd")
    return _bpd(len(bz2.compress(np.ascontiguousarray(images).tobytes(), 9)), images)


def lzma_bpd(images: np.ndarray) -> float:
    """Bits per dimension of the raw ``(N, H, W, C)`` bytes compressed with xz/LZMA at preset 9.

    Example:
        >>> constant = np.zeros((64, 8, 8, 1), np.uint8)
        >>> lzma_bpd(constant) * constant.size / 8 < 100  # bytes: little beyond the format's headers
        True
    """
    images = _check(images, "images", "lzma_bpd")
    return _bpd(len(lzma.compress(np.ascontiguousarray(images).tobytes(), preset=9)), images)


CODECS = ("bz2", "lzma", "webp_lossless", "png")


def codec_bpd(images: np.ndarray, *, codecs: Sequence[str] = CODECS, webp_method: int = 6) -> dict[str, float]:
    """Several codecs on the same images, in bits per dimension, keyed and ordered as ``codecs``.

    Args:
        images: ``uint8`` images ``(N, H, W, C)``.
        codecs: a subset of ``("bz2", "lzma", "webp_lossless", "png")``.
        webp_method: ``method`` passed to :func:`webp_bpd`.

    Example:
        >>> sorted(codec_bpd(np.zeros((4, 8, 8, 1), np.uint8), codecs=("png", "bz2")))
        ['bz2', 'png']
    """
    unknown = [name for name in codecs if name not in CODECS]
    if unknown:
        raise ValueError(f"`codec_bpd`: unknown codec {unknown[0]!r}; expected some of {CODECS}.")
    functions = {"bz2": bz2_bpd, "lzma": lzma_bpd, "png": png_bpd,
                 "webp_lossless": functools.partial(webp_bpd, method=webp_method)}
    return {name: functions[name](images) for name in codecs}


def all_baselines(train: np.ndarray, test: np.ndarray, *, vocab_size: int, codecs: Sequence[str] = CODECS,
                  webp_method: int = 6) -> dict[str, float]:
    """Histogram model (fitted on ``train``) and the codecs, all measured on ``test``, in bits per dimension.

    Args:
        train: ``uint8`` images ``(N, H, W, C)``.
        test: ``uint8`` images ``(M, H, W, C)``.
        vocab_size: number of levels ``V``.
        codecs: which codecs to run (:func:`codec_bpd`); ``()`` for the histogram model alone.
        webp_method: WebP effort (:func:`webp_bpd`); lower it, or pass a subset of ``test``, for CIFAR-10 scale.

    Returns:
        ``{"histogram": ..., "bz2": ..., "lzma": ..., "webp_lossless": ..., "png": ...}`` (only the chosen codecs).

    Example:
        >>> from mulan_ppl.train.data import load_digits
        >>> ds = load_digits()
        >>> {k: round(v, 2) for k, v in all_baselines(ds.train, ds.test, vocab_size=ds.vocab_size).items()}
        {'histogram': 2.44, 'bz2': 2.84, 'lzma': 2.87, 'webp_lossless': 3.09, 'png': 3.81}
    """
    return {"histogram": histogram_bpd(train, test, vocab_size=vocab_size),
            **codec_bpd(test, codecs=codecs, webp_method=webp_method)}


_LABELS = {
    "histogram": "per-position histogram",
    "bz2": "bz2 (level 9)",
    "lzma": "xz/LZMA (preset 9)",
    "webp_lossless": "WebP lossless (tiled)",
    "png": "PNG (tiled)",
}


def format_bpd_table(rows: Mapping[str, float], *, title: str = "test bits per dimension") -> str:
    """A plain-text two-column table of ``name -> bpd``, in the given order, ready to print.

    Known baseline keys (those of :func:`all_baselines`) are spelled out; other keys (a model's results) are printed
    as given.

    Example:
        >>> print(format_bpd_table({"model (ELBO)": 2.1234, "png": 3.8}))
        test bits per dimension
        -----------------------
        model (ELBO)     2.123
        PNG (tiled)      3.800
    """
    labels = [_LABELS.get(name, name) for name in rows]
    width = max(len(label) for label in labels) + 4 if labels else 0
    lines = [title, "-" * len(title)]
    lines += [f"{label:<{width}}{value:>5.3f}" for label, value in zip(labels, rows.values())]
    return "\n".join(lines)
