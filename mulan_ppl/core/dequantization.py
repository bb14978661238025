r"""Dequantization of integer data: densities over each data bin, for the continuous likelihood bound.

An integer :math:`x \in \{0..V-1\}` sits at the bin centre :math:`f = 2(x + \tfrac12)/V - 1` of a bin of half-width
:math:`1/V`; a dequantization draws :math:`y = f + w` with :math:`w` inside the bin, and
:math:`\log P(x) \ge \mathbb E_{q(y|x)}[\log p(y) - \log q(y|x)]` for any density :math:`p` over :math:`[-1, 1]`.

* ``"uniform"``: :math:`w \sim U(-1/V, 1/V)`, :math:`\log q(y|x) = d\log(V/2)`.
* ``"truncated_normal"``: :math:`w = (\sigma_0/\alpha_0)\,u = e^{\gamma_0/2} u` with
  :math:`u \sim \mathcal N(0, 1)` truncated to :math:`[-\tau, \tau]`, :math:`\tau = \alpha_0/(\sigma_0 V) =
  e^{-\gamma_0/2}/V` (the bin edge), so :math:`\log q(y|x) = \sum_i [\log q(u_i) - \gamma_{0,i}/2]`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy import special

from mulan_ppl._validation import check_positive_int, float_inputs, is_concrete

__all__ = [
    "DEQUANTIZATIONS",
    "truncated_normal_entropy",
    "truncated_normal_log_normalizer",
    "truncated_normal_log_prob",
    "truncation_bound",
]

DEQUANTIZATIONS = ("truncated_normal", "uniform")

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _check_tau(where: str, tau) -> jax.Array:
    """A float truncation point; when concrete, without NaN and > 0 (the normaliser of [-0, 0] is 0)."""
    (tau,) = float_inputs(where, tau=tau)
    if is_concrete(tau) and not np.all(np.asarray(tau) > 0):
        raise ValueError(f"`{where}`: `tau` must be > 0; got min(tau)={np.min(np.asarray(tau))}.")
    return tau


def truncation_bound(gamma_0: jax.Array, vocab_size: int) -> jax.Array:
    r"""The truncation point :math:`\tau = \alpha_0/(\sigma_0 V) = e^{-\gamma_0/2}/V` that keeps :math:`y` in its bin.

    Example:
        >>> print(round(float(truncation_bound(jnp.asarray(-13.3), 256)), 4))
        3.0187
    """
    vocab_size = check_positive_int("truncation_bound", "vocab_size", vocab_size, minimum=2)
    (gamma_0,) = float_inputs("truncation_bound", gamma_0=gamma_0)
    return jnp.exp(-0.5 * gamma_0) / vocab_size


def truncated_normal_log_normalizer(tau: jax.Array) -> jax.Array:
    r""":math:`\log Z = \log\mathrm{erf}(\tau/\sqrt2)`, the log mass of :math:`\mathcal N(0,1)` on :math:`[-\tau,\tau]`.

    Mathematical details:
        Computed as :math:`\log(1 - \mathrm{erfc}(\tau/\sqrt2))` for :math:`\tau > 1` (no cancellation when
        :math:`Z \to 1`) and as :math:`\log\mathrm{erf}` below.

    Example:
        >>> print(round(float(jnp.exp(truncated_normal_log_normalizer(jnp.asarray(3.0187)))), 5))
        0.99746
    """
    tau = _check_tau("truncated_normal_log_normalizer", tau)
    r = tau / math.sqrt(2.0)
    large = tau > 1.0
    return jnp.where(large, jnp.log1p(-special.erfc(jnp.where(large, r, 1.0))),
                     jnp.log(special.erf(jnp.where(large, 1.0, r))))


def truncated_normal_log_prob(u: jax.Array, tau: jax.Array) -> jax.Array:
    r"""Elementwise :math:`\log q(u) = -\tfrac12 u^2 - \tfrac12\log 2\pi - \log Z` on :math:`|u| \le \tau`
    (``-inf`` outside).

    Example:
        >>> print(truncated_normal_log_prob(jnp.asarray([0.0, 2.0]), 1.0)[1])
        -inf
    """
    u, tau = float_inputs("truncated_normal_log_prob", u=u, tau=_check_tau("truncated_normal_log_prob", tau))
    log_q = -0.5 * jnp.square(u) - _HALF_LOG_2PI - truncated_normal_log_normalizer(tau)
    return jnp.where(jnp.abs(u) <= tau, log_q, -jnp.inf)


def truncated_normal_entropy(tau: jax.Array) -> jax.Array:
    r"""Entropy of :math:`\mathcal N(0, 1)` truncated to :math:`[-\tau, \tau]`, elementwise.

    Mathematical details:
        With :math:`\phi` the standard normal density, :math:`\mathbb E[u^2] = 1 - 2\tau\phi(\tau)/Z`, so
        :math:`H = \tfrac12\log 2\pi + \log Z + \tfrac12(1 - 2\tau\phi(\tau)/Z)`.

    Example:
        >>> print(round(float(truncated_normal_entropy(jnp.asarray(50.0))), 6))  # untruncated: (1 + log 2 pi) / 2
        1.418939
    """
    tau = _check_tau("truncated_normal_entropy", tau)
    log_z = truncated_normal_log_normalizer(tau)
    tail = 2.0 * tau * jnp.exp(-0.5 * jnp.square(tau) - _HALF_LOG_2PI - log_z)
    return _HALF_LOG_2PI + log_z + 0.5 * (1.0 - tail)
