"""The EDM training noise distribution as a schedule: gamma from the normal inverse CDF, truncated to exact ends."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.scipy.special import ndtr, ndtri

from mulan_ppl.schedules._common import (
    GAMMA_MAX,
    GAMMA_MIN,
    as_time,
    check_endpoints,
    float_args,
    interpolate,
    pin,
    with_time_derivative,
)

__all__ = ["EDM", "edm_gamma", "edm_time"]

# Largest |standardised endpoint| accepted by `EDM`: the normal tail at 12 standard deviations (1.8e-33) is still a
# normal float32 number and the derivative (~ exp(z^2 / 2)) stays below float32's maximum.
_MAX_ABS_Z = 12.0


def _tails(gamma_min, gamma_max, p_mean, p_std):
    """Lower tail u0 = Phi(z0), upper tail v1 = 1 - Phi(z1), and their gap, each without cancellation."""
    loc, scale = 2.0 * p_mean, 2.0 * p_std
    z_0, z_1 = (gamma_min - loc) / scale, (gamma_max - loc) / scale
    u_0, v_1 = ndtr(z_0), ndtr(-z_1)
    delta = jnp.where(z_0 >= 0, ndtr(-z_0) - v_1, jnp.where(z_1 <= 0, ndtr(z_1) - u_0, (1.0 - u_0) - v_1))
    return u_0, v_1, delta


def _standard_normal_quantile(t, u_0, v_1, delta):
    """z(t) = Phi^{-1}(u0 + delta t), from whichever tail is smaller (u or v = 1 - u, carried separately)."""
    # Pinned: when delta is the constant 1 under jit, XLA rewrites v1 + 1 * (1 - t) as (v1 + 1) - t, which loses a
    # tail v1 below float32's epsilon.
    u = pin(u_0 + delta * t, u_0, t > 0)
    v = pin(v_1 + delta * (1.0 - t), v_1, t < 1)
    lower = u <= v
    return jnp.where(lower, 1.0, -1.0) * ndtri(jnp.where(lower, u, v))


def _edm_value_and_rate(t, gamma_min, gamma_max, p_mean, p_std):
    u_0, v_1, delta = _tails(gamma_min, gamma_max, p_mean, p_std)
    z = _standard_normal_quantile(t, u_0, v_1, delta)
    z_0 = _standard_normal_quantile(jnp.zeros_like(delta), u_0, v_1, delta)
    z_1 = _standard_normal_quantile(jnp.ones_like(delta), u_0, v_1, delta)
    gamma = interpolate(gamma_min, gamma_max, (z - z_0) / (z_1 - z_0))
    rate = (gamma_max - gamma_min) / (z_1 - z_0) * delta * math.sqrt(2.0 * math.pi) * jnp.exp(0.5 * jnp.square(z))
    return gamma, rate


_edm = with_time_derivative(_edm_value_and_rate)


def edm_gamma(t: jax.Array, *, gamma_min: float | jax.Array = GAMMA_MIN, gamma_max: float | jax.Array = GAMMA_MAX,
              p_mean: float | jax.Array = -1.2, p_std: float | jax.Array = 1.2) -> jax.Array:
    r"""EDM's training noise distribution as a schedule in gamma = -log SNR, truncated to exact endpoints.

    Mathematical details:
        EDM draws :math:`\log\tilde\sigma \sim \mathcal N(P_{\text{mean}}, P_{\text{std}}^2)` with
        :math:`\tilde\sigma^2 = e^{-\lambda} = e^{\gamma}`, so :math:`\gamma \sim \mathcal N(2P_{\text{mean}},
        4P_{\text{std}}^2)` and the schedule is the inverse CDF,
        :math:`\gamma(u) = 2P_{\text{mean}} + 2P_{\text{std}}\,\Phi^{-1}(u)`. (Kingma & Gao's Table 4 prints
        :math:`\lambda = -F^{-1}_{\mathcal N}(t; 2.4, 2.4^2)`, whose mean has the wrong sign, erratum E4; the
        consistent form is :math:`\lambda = 2.4 - 2.4\,\Phi^{-1}(t)`, which is this one.) Truncated to
        :math:`[\gamma_{\min}, \gamma_{\max}]`: with :math:`z_i = (\gamma_i - 2P_{\text{mean}})/(2P_{\text{std}})`,

        .. math::

            u(t) &= \Phi(z_{\min}) + \big(\Phi(z_{\max}) - \Phi(z_{\min})\big)\, t, \\
            \gamma(t) &= 2P_{\text{mean}} + 2P_{\text{std}}\, \Phi^{-1}(u(t)), \\
            \frac{d\gamma}{dt} &= 2P_{\text{std}}\, \big(\Phi(z_{\max}) - \Phi(z_{\min})\big)\,
                \sqrt{2\pi}\, e^{z^2/2}, \qquad z = \Phi^{-1}(u(t)).

        :math:`u` and :math:`1 - u` are carried separately and :math:`\Phi^{-1}` is taken on the smaller tail, so
        both ends keep full relative precision; :math:`\Phi^{-1}` is rescaled affinely from its computed values at
        t = 0 and 1 (the identity in exact arithmetic), which makes the endpoints exact in floating point. The
        closed-form derivative rides on :func:`jax.custom_jvp`. In float32 the endpoints must lie within 12
        standard deviations of :math:`2P_{\text{mean}}` (checked by :class:`EDM`, not here).

    Args:
        t: times in [0, 1], any shape.
        gamma_min: gamma at t = 0.
        gamma_max: gamma at t = 1.
        p_mean: EDM's :math:`P_{\text{mean}}` (default -1.2).
        p_std: EDM's :math:`P_{\text{std}} > 0` (default 1.2).

    Returns:
        gamma, of the broadcast shape of the inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import edm_gamma
        >>> print(jnp.round(edm_gamma(jnp.array([0.0, 0.5, 1.0]), gamma_min=-10.0, gamma_max=5.2), 3))
        [-10.   -2.4   5.2]

    References:
        1. Karras, Aittala, Aila, Laine. Elucidating the Design Space of Diffusion-Based Generative Models.
           https://arxiv.org/abs/2206.00364
        2. Kingma, Gao. Understanding Diffusion Objectives as the ELBO with Simple Data Augmentation, App. D.1.
           https://arxiv.org/abs/2303.00848
    """
    return _edm(*float_args("edm_gamma", t=t, gamma_min=gamma_min, gamma_max=gamma_max, p_mean=p_mean,
                                p_std=p_std))


def edm_time(gamma: jax.Array, *, gamma_min: float | jax.Array = GAMMA_MIN, gamma_max: float | jax.Array = GAMMA_MAX,
             p_mean: float | jax.Array = -1.2, p_std: float | jax.Array = 1.2) -> jax.Array:
    r"""Inverse of :func:`edm_gamma`: the time t at which the truncated schedule reaches ``gamma``.

    Mathematical details:
        :math:`t = (\Phi(z) - \Phi(z_{\min})) / (\Phi(z_{\max}) - \Phi(z_{\min}))` with
        :math:`z = (\gamma - 2P_{\text{mean}})/(2P_{\text{std}})`, evaluated on the smaller tail.

    Args:
        gamma: values in [gamma_min, gamma_max], any shape.
        gamma_min: gamma at t = 0.
        gamma_max: gamma at t = 1.
        p_mean: EDM's :math:`P_{\text{mean}}`.
        p_std: EDM's :math:`P_{\text{std}}`.

    Returns:
        t, of the broadcast shape of the inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import edm_time
        >>> print(jnp.round(edm_time(jnp.array([-10.0, -2.4, 5.2]), gamma_min=-10.0, gamma_max=5.2), 4))
        [0.  0.5 1. ]
    """
    gamma, gamma_min, gamma_max, p_mean, p_std = float_args(
        "edm_time", gamma=gamma, gamma_min=gamma_min, gamma_max=gamma_max, p_mean=p_mean, p_std=p_std)
    u_0, v_1, delta = _tails(gamma_min, gamma_max, p_mean, p_std)
    z = (gamma - 2.0 * p_mean) / (2.0 * p_std)
    return jnp.where(z <= 0, (ndtr(z) - u_0) / delta, 1.0 - (ndtr(-z) - v_1) / delta)


class EDM(nnx.Module):
    r"""EDM's training noise distribution as a scalar schedule, truncated to exact endpoints; see :func:`edm_gamma`.

    Mathematical details:
        :math:`\gamma(t) = 2P_{\text{mean}} + 2P_{\text{std}}\, \Phi^{-1}(u(t))` with :math:`u(t)` linear between
        the CDF values of ``gamma_min`` and ``gamma_max``. The implied density of :math:`\lambda = -\gamma` is
        :math:`\mathcal N(\lambda; -2P_{\text{mean}}, 4P_{\text{std}}^2)` truncated, i.e. :math:`\mathcal N(2.4,
        2.4^2)` for the defaults.

    Args:
        gamma_min: gamma at t = 0 (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).
        p_mean: EDM's :math:`P_{\text{mean}}` (default -1.2).
        p_std: EDM's :math:`P_{\text{std}}` (default 1.2).

    Raises:
        ValueError: for ``gamma_min >= gamma_max``, ``p_std <= 0``, an endpoint more than 12 standard deviations
            from :math:`2P_{\text{mean}}` (its tail probability would underflow float32), or a ``t`` not of shape
            ``(B,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import EDM
        >>> print(jnp.round(EDM()(jnp.array([0.0, 1.0]), None), 3))
        [-13.3   5. ]
    """

    def __init__(self, *, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX, p_mean: float = -1.2,
                 p_std: float = 1.2):
        where = "EDM"
        self.gamma_min, self.gamma_max = check_endpoints(where, gamma_min, gamma_max)
        for name, value in (("p_mean", p_mean), ("p_std", p_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{where}`: `{name}` must be a finite Python number; got {name}={value!r}.")
        if not p_std > 0:
            raise ValueError(f"`{where}`: `p_std` must be > 0; got p_std={p_std}.")
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        for name, value in (("gamma_min", self.gamma_min), ("gamma_max", self.gamma_max)):
            z = (value - 2.0 * self.p_mean) / (2.0 * self.p_std)
            if abs(z) > _MAX_ABS_Z:
                low = 2.0 * self.p_mean - _MAX_ABS_Z * 2.0 * self.p_std
                high = 2.0 * self.p_mean + _MAX_ABS_Z * 2.0 * self.p_std
                raise ValueError(
                    f"`{where}`: `{name}` must lie within {_MAX_ABS_Z:g} standard deviations of 2 * p_mean, i.e. in "
                    f"[{low:.4g}, {high:.4g}] (the normal tail beyond underflows float32); got {name}={value}."
                )

    def __call__(self, t: jax.Array, context=None) -> jax.Array:
        """Returns gamma of shape ``(B,)`` for ``t`` of shape ``(B,)``; ``context`` is ignored."""
        t = as_time("EDM", t)
        return edm_gamma(t, gamma_min=self.gamma_min, gamma_max=self.gamma_max, p_mean=self.p_mean,
                         p_std=self.p_std)
