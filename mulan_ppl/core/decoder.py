"""Integer data <-> the continuous scale, and VDM's discretized Gaussian decoder p(x | z_0)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mulan_ppl._validation import check_integer_data, check_positive_int, float_inputs
from mulan_ppl.core import stable

__all__ = ["decode_integers", "decoder_logits", "default_gamma_min", "encode_integers"]


def encode_integers(x: jax.Array, vocab_size: int) -> jax.Array:
    r"""Maps integers ``0 .. V-1`` to the bin centres in ``[-1, 1]``: :math:`f = 2(x + \tfrac12)/V - 1`.

    Example:
        >>> print(encode_integers(jnp.asarray([0, 1]), 2))
        [-0.5  0.5]
    """
    vocab_size = check_positive_int("encode_integers", "vocab_size", vocab_size, minimum=2)
    x = check_integer_data("encode_integers", "x", x, vocab_size)
    return 2.0 * (jnp.asarray(x, jnp.result_type(float)) + 0.5) / vocab_size - 1.0


def decode_integers(f: jax.Array, vocab_size: int) -> jax.Array:
    r"""Inverse of :func:`encode_integers`, rounding to the nearest bin and clipping to ``[0, V-1]`` (int32).

    Example:
        >>> print(decode_integers(jnp.asarray([-0.5, 0.49, 7.0]), 2))
        [0 1 1]
    """
    vocab_size = check_positive_int("decode_integers", "vocab_size", vocab_size, minimum=2)
    (f,) = float_inputs("decode_integers", f=f)
    x = jnp.round((f + 1.0) * vocab_size / 2.0 - 0.5)
    return jnp.clip(x, 0, vocab_size - 1).astype(jnp.int32)


def default_gamma_min(vocab_size: int) -> float:
    r"""The lowest noise level derived from the vocabulary: :math:`\gamma_{\min}(V) = -2\ln(3V)`.

    It puts :math:`\sigma_0 = e^{\gamma_{\min}/2}` at a third of the bin half-width ``1/V``: -13.29 at V = 256 (VDM
    uses -13.3), -7.86 at V = 17. A much smaller :math:`\sigma_0` makes the discrete bound pay for resolution the
    data does not have (math-notes §4).

    Example:
        >>> print(round(default_gamma_min(256), 2))
        -13.29
    """
    vocab_size = check_positive_int("default_gamma_min", "vocab_size", vocab_size, minimum=2)
    return -2.0 * math.log(3.0 * vocab_size)


def decoder_logits(z_0: jax.Array, gamma_0: jax.Array, vocab_size: int) -> jax.Array:
    r"""Unnormalised log-probabilities of VDM's discretized Gaussian decoder over the ``V`` bins.

    Mathematical details:
        With bin centres :math:`c_j = 2(j + \tfrac12)/V - 1`,

        .. math:: \ell_j = -\tfrac12\Big(\frac{z_0/\alpha_0 - c_j}{\sigma_0/\alpha_0}\Big)^2
            = -\tfrac12\Big(\frac{z_0 - \alpha_0 c_j}{\sigma_0}\Big)^2, \qquad
            p(x = j \mid z_0) = \mathrm{softmax}(\ell)_j,

        independently per dimension. The right-hand form never divides by :math:`\alpha_0`, so it stays finite at
        large :math:`\gamma_0`. This is a softmax over bin centres, not a Gaussian CDF integrated over the bins.

    Args:
        z_0: latent at t = 0, shape ``(B, *event)``.
        gamma_0: noise level broadcastable to ``z_0``.
        vocab_size: number of integer levels ``V >= 2``.

    Returns:
        Logits of shape ``(*z_0.shape, V)``.

    Example:
        >>> logits = decoder_logits(jnp.zeros(1), jnp.zeros(1), 2)
        >>> print(jax.nn.softmax(logits))
        [[0.5 0.5]]
    """
    vocab_size = check_positive_int("decoder_logits", "vocab_size", vocab_size, minimum=2)
    z_0, gamma_0 = float_inputs("decoder_logits", z_0=z_0, gamma_0=gamma_0)
    if jnp.broadcast_shapes(jnp.shape(z_0), jnp.shape(gamma_0)) != jnp.shape(z_0):
        raise ValueError(f"`decoder_logits`: `gamma_0` must broadcast to the shape of `z_0`; got "
                         f"z_0.shape={jnp.shape(z_0)}, gamma_0.shape={jnp.shape(gamma_0)}.")
    centres = encode_integers(jnp.arange(vocab_size), vocab_size).astype(jnp.result_type(z_0, gamma_0))
    alpha, sigma = (jnp.broadcast_to(a, jnp.shape(z_0)) for a in stable.alpha_sigma(gamma_0))
    centres = centres.reshape((1,) * alpha.ndim + (vocab_size,))
    diff = (z_0[..., None] - alpha[..., None] * centres) / sigma[..., None]
    return -0.5 * jnp.square(diff)
