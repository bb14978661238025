"""Fourier-feature input channels and sinusoidal embeddings for the denoiser and the encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl._validation import check_positive_int

__all__ = ["default_fourier_exponents", "fourier_features", "sinusoidal_embedding"]


def default_fourier_exponents(vocab_size: int) -> tuple[int, int]:
    r"""The Fourier-feature exponents at the bin scale of a vocabulary of ``V`` levels.

    Mathematical details:
        With :math:`n = \lfloor \log_2 V \rfloor` the exponents are :math:`k \in \{n - 2, n - 1\}`, used as
        :math:`\sin/\cos(2^k \cdot 2\pi z)` (see :func:`fourier_features`). In the data scale ``[-1, 1]`` a bin is
        :math:`2/V` wide, and the feature of exponent :math:`k` has period :math:`2^{-k}`: at :math:`k = n - 1` the
        period is one bin (for a power of two; never less than one bin otherwise), at :math:`k = n - 2` two bins.
        This gives VDM's :math:`k = 6, 7` at :math:`V = 256` and :math:`k = 2, 3` at :math:`V = 17`.

    Args:
        vocab_size: number of integer levels ``V >= 2`` of the data.

    Returns:
        A tuple of two ints.

    Raises:
        ValueError: ``vocab_size`` is not an integer >= 2.

    Example:
        >>> from mulan_ppl.nets import default_fourier_exponents
        >>> default_fourier_exponents(256), default_fourier_exponents(17)
        ((6, 7), (2, 3))

    References:
        1. Kingma, Salimans, Poole, Ho. Variational Diffusion Models, App. C. https://arxiv.org/abs/2107.00630
    """
    vocab_size = check_positive_int("default_fourier_exponents", "vocab_size", vocab_size, minimum=2)
    n = int(vocab_size).bit_length() - 1  # floor(log2 V), exactly
    return (n - 2, n - 1)


def check_exponents(where: str, fourier_exponents, vocab_size: int) -> tuple[int, ...]:
    """``None`` -> :func:`default_fourier_exponents`; otherwise a sequence of ints (``()`` turns features off)."""
    if fourier_exponents is None:
        return default_fourier_exponents(vocab_size)
    if not isinstance(fourier_exponents, Sequence) or isinstance(fourier_exponents, str):
        raise ValueError(f"`{where}`: `fourier_exponents` must be None or a sequence of ints; "
                         f"got {fourier_exponents!r}.")
    for k in fourier_exponents:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"`{where}`: `fourier_exponents` must hold ints; got {fourier_exponents!r}.")
    return tuple(int(k) for k in fourier_exponents)


def fourier_features(z: jax.Array, exponents: Sequence[int]) -> jax.Array:
    r"""Base-2 Fourier features of every channel, to concatenate to a network's input.

    Mathematical details:
        For each channel :math:`z_c` and exponent :math:`k`, the features are
        :math:`\sin(2^k \cdot 2\pi z_c)` and :math:`\cos(2^k \cdot 2\pi z_c)`. They let a network resolve the fine
        structure of :math:`z` at the scale of the data's bins, which matters for the likelihood of discrete data
        (VDM, App. C). The layout follows VDM: all sines, then all cosines, each ordered channel-major
        (channel 0 at every exponent, then channel 1, ...).

    Args:
        z: array of shape ``(..., C)``, channels last. Keep it in float32: a bfloat16 ``z`` cannot resolve
            :math:`2^7 \cdot 2\pi z` to a bin.
        exponents: the exponents :math:`k` (see :func:`default_fourier_exponents`).

    Returns:
        Array of shape ``(..., 2 * len(exponents) * C)`` and the dtype of ``z``.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.nets import fourier_features
        >>> h = fourier_features(jnp.full((1, 2, 2, 3), 0.125), (0, 1))   # 2 pi / 8 and 2 pi / 4
        >>> h.shape
        (1, 2, 2, 12)
        >>> print(jnp.round(h[0, 0, 0, :4], 4))                             # sines of channels 0, 1
        [0.7071 1.     0.7071 1.    ]
    """
    z = jnp.asarray(z)
    exponents = tuple(exponents)
    if not exponents:
        return z[..., :0]
    frequencies = 2.0 * jnp.pi * 2.0 ** jnp.asarray(exponents, z.dtype)
    h = (z[..., :, None] * frequencies).reshape((*z.shape[:-1], z.shape[-1] * len(exponents)))
    return jnp.concatenate([jnp.sin(h), jnp.cos(h)], axis=-1)


def sinusoidal_embedding(t: jax.Array, dim: int, *, scale: float = 1000.0, max_period: float = 10000.0) -> jax.Array:
    r"""Transformer-style sinusoidal embedding of a scalar per example (VDM's time embedding).

    Mathematical details:
        With :math:`h = \lfloor d/2 \rfloor` frequencies :math:`\omega_j = P^{-j/(h-1)}`, :math:`j = 0 \dots h-1`,
        the embedding of :math:`s = \text{scale} \cdot t` is :math:`[\sin(s\omega_0), \dots, \sin(s\omega_{h-1}),
        \cos(s\omega_0), \dots, \cos(s\omega_{h-1})]`, zero-padded to :math:`d` when :math:`d` is odd. VDM embeds the
        normalised noise level :math:`t \in [0, 1]` with ``scale = 1000``.

    Args:
        t: array of shape ``(B,)``.
        dim: embedding size ``d >= 2``.
        scale: multiplies ``t`` before the embedding.
        max_period: :math:`P`, the longest period.

    Returns:
        Array of shape ``(B, dim)`` in float32 (float64 when ``t`` is float64).

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.nets import sinusoidal_embedding
        >>> print(sinusoidal_embedding(jnp.array([0.0]), 4))
        [[0. 0. 1. 1.]]
    """
    dim = check_positive_int("sinusoidal_embedding", "dim", dim, minimum=2)
    t = jnp.asarray(t)
    t = t.astype(jnp.result_type(t, jnp.float32))
    half = dim // 2
    rate = math.log(max_period) / max(half - 1, 1)
    frequencies = jnp.exp(-rate * jnp.arange(half, dtype=t.dtype))
    angles = (scale * t)[:, None] * frequencies
    embedding = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if dim % 2:
        embedding = jnp.pad(embedding, ((0, 0), (0, 1)))
    return embedding
