"""Numerically stable primitives of the variance-preserving Gaussian diffusion.

Everything is written in terms of ``gamma = -log SNR`` so that no ``exp(gamma)`` or ``1 / sigma**2`` is ever formed
where a ``sigmoid``, ``log_sigmoid`` or ``expm1`` form exists (DESIGN.md §5). All functions are elementwise, take
arrays of any real dtype (integers become floats) and broadcast with NumPy rules. A non-real dtype is a ``TypeError``,
arguments that do not broadcast and concrete NaN inputs a ``ValueError`` naming the argument; infinities are valid
limits (``gamma = ±inf``, a log-variance of ``-inf``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mulan_ppl._validation import float_inputs

__all__ = [
    "alpha_sigma",
    "gaussian_kl",
    "log1mexp",
    "log_alpha_sq",
    "log_sigma_sq",
    "log_transition_variance",
    "snr",
    "snr_ratio_minus_one",
    "transition_variance",
]


def log_alpha_sq(gamma: jax.Array) -> jax.Array:
    r"""Log signal variance, :math:`\log \alpha^2 = \log \mathrm{sigmoid}(-\gamma)`.

    Example:
        >>> float(log_alpha_sq(jnp.asarray(0.0)))  # alpha^2 = 1/2
        -0.6931...
    """
    (gamma,) = float_inputs("log_alpha_sq", gamma=gamma)
    return jax.nn.log_sigmoid(-gamma)


def log_sigma_sq(gamma: jax.Array) -> jax.Array:
    r"""Log noise variance, :math:`\log \sigma^2 = \log \mathrm{sigmoid}(\gamma)`.

    Example:
        >>> float(log_sigma_sq(jnp.asarray(0.0)))
        -0.6931...
    """
    (gamma,) = float_inputs("log_sigma_sq", gamma=gamma)
    return jax.nn.log_sigmoid(gamma)


def alpha_sigma(gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Signal and noise scales of the variance-preserving process.

    Mathematical details:
        .. math:: \alpha = \sqrt{\mathrm{sigmoid}(-\gamma)}, \qquad \sigma = \sqrt{\mathrm{sigmoid}(\gamma)},
            \qquad \alpha^2 + \sigma^2 = 1.

    Args:
        gamma: noise level ``-log SNR``, any shape.

    Returns:
        ``(alpha, sigma)``, each of ``gamma``'s shape.

    Example:
        >>> a, s = alpha_sigma(jnp.asarray([0.0]))
        >>> print(round(float(a[0] ** 2 + s[0] ** 2), 6))
        1.0
    """
    (gamma,) = float_inputs("alpha_sigma", gamma=gamma)
    return jnp.sqrt(jax.nn.sigmoid(-gamma)), jnp.sqrt(jax.nn.sigmoid(gamma))


def snr(gamma: jax.Array) -> jax.Array:
    r"""Signal-to-noise ratio :math:`\mathrm{SNR} = \alpha^2/\sigma^2 = e^{-\gamma}`.

    Example:
        >>> print(snr(jnp.array([0.0, -2.0, 2.0])))
        [1.         7.389056   0.13533528]
    """
    (gamma,) = float_inputs("snr", gamma=gamma)
    return jnp.exp(-gamma)


def log1mexp(x: jax.Array) -> jax.Array:
    r"""Stable :math:`\log(1 - e^{x})` for :math:`x \le 0` (Mächler's two-branch rule); ``-inf`` at ``x = 0``.

    Example:
        >>> print(float(log1mexp(jnp.asarray(-1e-8))) < -18)
        True
    """
    (x,) = float_inputs("log1mexp", x=x)
    x = jnp.minimum(x, 0.0)
    # Both branches are evaluated; keep each one's argument inside its safe domain so gradients stay finite.
    small = x > -0.6931471805599453
    x_small = jnp.where(small, x, -1.0)
    x_large = jnp.where(small, -1.0, x)
    return jnp.where(small, jnp.log(-jnp.expm1(x_small)), jnp.log1p(-jnp.exp(x_large)))


def transition_variance(gamma_s: jax.Array, gamma_t: jax.Array) -> jax.Array:
    r"""Variance of the forward transition q(z_t | z_s).

    Mathematical details:
        .. math:: \sigma^2_{t|s} = \sigma_t^2 - \alpha^2_{t|s}\sigma_s^2
            = -\mathrm{expm1}(\gamma_s - \gamma_t)\,\mathrm{sigmoid}(\gamma_t),

        zero at ``s = t`` and never a difference of nearly equal numbers.

    Example:
        >>> print(float(transition_variance(jnp.asarray(-1.0), jnp.asarray(-1.0))))
        0.0
    """
    gamma_s, gamma_t = float_inputs("transition_variance", gamma_s=gamma_s, gamma_t=gamma_t)
    return -jnp.expm1(gamma_s - gamma_t) * jax.nn.sigmoid(gamma_t)


def log_transition_variance(gamma_s: jax.Array, gamma_t: jax.Array) -> jax.Array:
    r""":math:`\log \sigma^2_{t|s} = \log(1 - e^{\gamma_s - \gamma_t}) + \log\mathrm{sigmoid}(\gamma_t)`; ``-inf`` at s = t.

    Example:
        >>> gamma_s, gamma_t = jnp.asarray(-2.0), jnp.asarray(0.0)
        >>> log_var = log_transition_variance(gamma_s, gamma_t)
        >>> print(round(float(log_var), 6), round(float(jnp.log(transition_variance(gamma_s, gamma_t))), 6))
        -0.838561 -0.838561
        >>> print(float(log_transition_variance(gamma_t, gamma_t)))  # s = t
        -inf
    """
    gamma_s, gamma_t = float_inputs("log_transition_variance", gamma_s=gamma_s, gamma_t=gamma_t)
    return log1mexp(gamma_s - gamma_t) + jax.nn.log_sigmoid(gamma_t)


def snr_ratio_minus_one(gamma_s: jax.Array, gamma_t: jax.Array) -> jax.Array:
    r""":math:`\mathrm{SNR}_s/\mathrm{SNR}_t - 1 = \mathrm{expm1}(\gamma_t - \gamma_s)`, the per-step weight in eps space.

    Example:
        >>> print(float(snr_ratio_minus_one(jnp.asarray(0.0), jnp.asarray(0.0))))
        0.0
    """
    gamma_s, gamma_t = float_inputs("snr_ratio_minus_one", gamma_s=gamma_s, gamma_t=gamma_t)
    return jnp.expm1(gamma_t - gamma_s)


def gaussian_kl(loc_q: jax.Array, log_var_q: jax.Array, loc_p: jax.Array, log_var_p: jax.Array) -> jax.Array:
    r"""Elementwise KL between univariate Gaussians given in log-variance form.

    Mathematical details:
        .. math:: \mathrm{KL}(\mathcal N(\mu_q, e^{l_q}) \,\|\, \mathcal N(\mu_p, e^{l_p}))
            = \tfrac12\big(e^{u} - 1 - u\big) + \tfrac12 (\mu_q - \mu_p)^2 e^{-l_p}, \qquad u = l_q - l_p,

        where :math:`e^u - 1 - u` is evaluated as ``expm1(u) - u`` (exact 0 at equal variances).

    Args:
        loc_q, log_var_q, loc_p, log_var_p: broadcast-compatible arrays.

    Returns:
        The KL per element, in nats.

    Example:
        >>> print(float(gaussian_kl(jnp.asarray(1.0), jnp.asarray(0.0), jnp.asarray(0.0), jnp.asarray(0.0))))
        0.5
    """
    loc_q, log_var_q, loc_p, log_var_p = float_inputs(
        "gaussian_kl", loc_q=loc_q, log_var_q=log_var_q, loc_p=loc_p, log_var_p=log_var_p)
    u = log_var_q - log_var_p
    return 0.5 * (jnp.expm1(u) - u) + 0.5 * jnp.square(loc_q - loc_p) * jnp.exp(-log_var_p)
