"""The cosine log-SNR family (and its shifted version), truncated to exact endpoints."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

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

__all__ = ["Cosine", "ShiftedCosine", "cosine_gamma", "cosine_time"]


def _angles(t, gamma_min, gamma_max, shift):
    """Angles theta = pi u / 2 and phi = pi / 2 - theta of the truncated time u, carried separately."""
    theta_0 = jnp.arctan(jnp.exp(0.5 * (gamma_min + shift)))
    phi_1 = jnp.arctan(jnp.exp(-0.5 * (gamma_max + shift)))
    delta = (0.5 * math.pi - phi_1) - theta_0
    theta = pin(theta_0 + delta * t, theta_0, t > 0)
    phi = pin(phi_1 + delta * (1.0 - t), phi_1, t < 1)
    return theta, phi, delta


def _log_tan(theta, phi):
    return jnp.log(jnp.sin(theta)) - jnp.log(jnp.sin(phi))


def _span(gamma_min, gamma_max, shift):
    """log tan at t = 0 and t = 1, computed as the schedule computes them."""
    zero, one = jnp.zeros_like(gamma_min), jnp.ones_like(gamma_min)
    return (_log_tan(*_angles(zero, gamma_min, gamma_max, shift)[:2]),
            _log_tan(*_angles(one, gamma_min, gamma_max, shift)[:2]))


def _cosine_value_and_rate(t, gamma_min, gamma_max, shift):
    theta, phi, delta = _angles(t, gamma_min, gamma_max, shift)
    low, high = _span(gamma_min, gamma_max, shift)
    gamma = interpolate(gamma_min, gamma_max, (_log_tan(theta, phi) - low) / (high - low))
    rate = (gamma_max - gamma_min) / (high - low) * delta / (jnp.sin(theta) * jnp.sin(phi))
    return gamma, rate


_cosine = with_time_derivative(_cosine_value_and_rate)


def cosine_gamma(t: jax.Array, *, gamma_min: float | jax.Array = GAMMA_MIN, gamma_max: float | jax.Array = GAMMA_MAX,
                 shift: float | jax.Array = 0.0) -> jax.Array:
    r"""The (shifted) cosine schedule in gamma = -log SNR, truncated so that both endpoints are exact.

    Mathematical details:
        The cosine family of Nichol & Dhariwal in log-SNR :math:`\lambda = -\gamma` is
        :math:`\lambda(u) = -2 \log \tan(\pi u / 2) + s`, with shift :math:`s` in log-SNR units (Kingma & Gao,
        Table 4, with their erratum: the inverse is :math:`u = \tfrac{2}{\pi}\arctan e^{(s - \lambda)/2}`). It
        reaches :math:`\pm\infty` at :math:`u \in \{0, 1\}`, so it is truncated to :math:`[\gamma_{\min},
        \gamma_{\max}]` (Kingma & Gao, App. E.3.1): with :math:`u_0 = u(\gamma_{\min})`, :math:`u_1 = u(\gamma_{\max})`,

        .. math::

            u(t) &= u_0 + (u_1 - u_0)\, t, \\
            \gamma(t) &= 2 \log \tan(\pi u(t) / 2) - s, \\
            \frac{d\gamma}{dt} &= \frac{\pi (u_1 - u_0)}{\sin\theta \, \cos\theta}, \qquad \theta = \pi u(t) / 2.

        The angle :math:`\theta` and its complement :math:`\pi/2 - \theta` are carried separately (no cancellation
        near :math:`u = 1`), and :math:`\log\tan` is rescaled affinely from its computed values at t = 0 and 1 to
        :math:`[\gamma_{\min}, \gamma_{\max}]`: the identity in exact arithmetic, it makes the endpoints exact in
        floating point. The closed-form derivative rides on :func:`jax.custom_jvp`. The weighting that the cosine
        schedule implies is :math:`p(\lambda) = \mathrm{sech}(\lambda/2 - s/2)/(2\pi)` before truncation.

    Args:
        t: times in [0, 1], any shape.
        gamma_min: gamma at t = 0 (broadcastable against ``t``).
        gamma_max: gamma at t = 1.
        shift: :math:`s`, added to log SNR (subtracted from gamma). For resolution :math:`d` and base resolution 64,
            the shifted cosine of Hoogeboom et al. uses :math:`s = 2 \log(64/d)`.

    Returns:
        gamma, of the broadcast shape of the inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import cosine_gamma
        >>> print(jnp.round(cosine_gamma(jnp.array([0.0, 0.5, 1.0]), gamma_min=-10.0, gamma_max=10.0), 4))
        [-10.   0.  10.]

    References:
        1. Kingma, Gao. Understanding Diffusion Objectives as the ELBO with Simple Data Augmentation.
           https://arxiv.org/abs/2303.00848
        2. Nichol, Dhariwal. Improved Denoising Diffusion Probabilistic Models. https://arxiv.org/abs/2102.09672
        3. Hoogeboom, Heek, Salimans. Simple Diffusion. https://arxiv.org/abs/2301.11093
    """
    return _cosine(*float_args("cosine_gamma", t=t, gamma_min=gamma_min, gamma_max=gamma_max, shift=shift))


def cosine_time(gamma: jax.Array, *, gamma_min: float | jax.Array = GAMMA_MIN,
                gamma_max: float | jax.Array = GAMMA_MAX, shift: float | jax.Array = 0.0) -> jax.Array:
    r"""Inverse of :func:`cosine_gamma`: the time t at which the truncated schedule reaches ``gamma``.

    Mathematical details:
        :math:`t = (\theta(\gamma) - \theta_0) / (\theta_1 - \theta_0)` with
        :math:`\theta(\gamma) = \arctan e^{(\gamma + s)/2}` (exact-arithmetic inverse).

    Args:
        gamma: values in [gamma_min, gamma_max], any shape.
        gamma_min: gamma at t = 0.
        gamma_max: gamma at t = 1.
        shift: the log-SNR shift :math:`s`.

    Returns:
        t, of the broadcast shape of the inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import cosine_time
        >>> print(jnp.round(cosine_time(jnp.array([-10.0, 0.0, 10.0]), gamma_min=-10.0, gamma_max=10.0), 4))
        [0.  0.5 1. ]
    """
    gamma, gamma_min, gamma_max, shift = float_args(
        "cosine_time", gamma=gamma, gamma_min=gamma_min, gamma_max=gamma_max, shift=shift)
    theta_0 = jnp.arctan(jnp.exp(0.5 * (gamma_min + shift)))
    phi_1 = jnp.arctan(jnp.exp(-0.5 * (gamma_max + shift)))
    delta = (0.5 * math.pi - phi_1) - theta_0
    return (jnp.arctan(jnp.exp(0.5 * (gamma + shift))) - theta_0) / delta


class ShiftedCosine(nnx.Module):
    r"""Shifted cosine schedule (scalar), truncated to exact endpoints; see :func:`cosine_gamma`.

    Mathematical details:
        :math:`\gamma(t) = 2 \log \tan(\pi u(t)/2) - s` with :math:`u(t)` rescaled so that
        :math:`\gamma(0) = \gamma_{\min}`, :math:`\gamma(1) = \gamma_{\max}`. Kingma & Gao (erratum E12) never define
        the shift of their shifted weightings; here ``shift`` is :math:`s` in log-SNR units, so Simple Diffusion's
        resolution shift is ``ShiftedCosine.from_resolution(d)`` (:math:`s = 2\log(64/d)`).

    Args:
        shift: :math:`s`, added to log SNR (negative for resolutions above 64).
        gamma_min: gamma at t = 0 (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).

    Raises:
        ValueError: for ``gamma_min >= gamma_max``, a non-finite ``shift``, or a ``t`` not of shape ``(B,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import ShiftedCosine
        >>> schedule = ShiftedCosine(shift=-2.0)
        >>> print(jnp.round(schedule(jnp.array([0.0, 0.5, 1.0]), None), 3))
        [-13.3   2.    5. ]
    """

    def __init__(self, *, shift: float, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX):
        where = type(self).__name__
        self.gamma_min, self.gamma_max = check_endpoints(where, gamma_min, gamma_max)
        if isinstance(shift, bool) or not isinstance(shift, (int, float)) or not math.isfinite(shift):
            raise ValueError(f"`{where}`: `shift` must be a finite Python number; got shift={shift!r}.")
        self.shift = float(shift)

    @classmethod
    def from_resolution(cls, resolution: int, *, base_resolution: int = 64, gamma_min: float = GAMMA_MIN,
                        gamma_max: float = GAMMA_MAX) -> "ShiftedCosine":
        """Simple Diffusion's shift for images of side ``resolution``: ``shift = 2 log(base / resolution)``."""
        for name, value in (("resolution", resolution), ("base_resolution", base_resolution)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`ShiftedCosine.from_resolution`: `{name}` must be a positive int; got {value!r}.")
        return cls(shift=2.0 * math.log(base_resolution / resolution), gamma_min=gamma_min, gamma_max=gamma_max)

    def __call__(self, t: jax.Array, context=None) -> jax.Array:
        """Returns gamma of shape ``(B,)`` for ``t`` of shape ``(B,)``; ``context`` is ignored."""
        t = as_time(type(self).__name__, t)
        return cosine_gamma(t, gamma_min=self.gamma_min, gamma_max=self.gamma_max, shift=self.shift)


class Cosine(ShiftedCosine):
    r"""Cosine schedule (scalar), truncated to exact endpoints; the unshifted :class:`ShiftedCosine`.

    Mathematical details:
        :math:`\gamma(t) = 2 \log \tan(\pi u(t)/2)`, with :math:`u(t) = u_0 + (u_1 - u_0) t` running between the
        times at which the untruncated schedule reaches ``gamma_min`` and ``gamma_max`` (see :func:`cosine_gamma`).

    Args:
        gamma_min: gamma at t = 0 (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).

    Raises:
        ValueError: for ``gamma_min >= gamma_max`` or a ``t`` not of shape ``(B,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import Cosine
        >>> print(jnp.round(Cosine()(jnp.array([0.0, 0.5, 1.0]), None), 3))
        [-13.3   0.    5. ]
    """

    def __init__(self, *, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX):
        super().__init__(shift=0.0, gamma_min=gamma_min, gamma_max=gamma_max)
