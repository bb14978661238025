"""The VP "linear beta" schedule of DDPM / Song et al. in gamma = -log SNR, truncated to exact endpoints."""

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
    with_time_derivative,
)

__all__ = ["VPLinear", "vp_linear_gamma"]

_LOG_EXPM1_SWITCH = 20.0


def _log_expm1(x):
    """log(exp(x) - 1) for x > 0 without overflow: x + log(1 - exp(-x)) for large x."""
    small = x < _LOG_EXPM1_SWITCH
    return jnp.where(small, jnp.log(jnp.expm1(jnp.where(small, x, 1.0))),
                     x + jnp.log1p(-jnp.exp(-jnp.where(small, _LOG_EXPM1_SWITCH, x))))


def _integrated_beta(u, beta_min, beta_max):
    return (beta_min + 0.5 * (beta_max - beta_min) * u) * u


def _time_of_integrated_beta(value, beta_min, beta_max):
    """Positive root u of beta_min u + (beta_max - beta_min) u^2 / 2 = value, without cancellation."""
    return 2.0 * value / (beta_min + jnp.sqrt(jnp.square(beta_min) + 2.0 * (beta_max - beta_min) * value))


def _vp_value_and_rate(t, gamma_min, gamma_max, beta_min, beta_max):
    u_0 = _time_of_integrated_beta(jax.nn.softplus(gamma_min), beta_min, beta_max)
    u_1 = _time_of_integrated_beta(jax.nn.softplus(gamma_max), beta_min, beta_max)
    u = u_0 + (u_1 - u_0) * t
    integrated = _integrated_beta(u, beta_min, beta_max)
    h = _log_expm1(integrated)
    h_0 = _log_expm1(_integrated_beta(u_0, beta_min, beta_max))
    h_1 = _log_expm1(_integrated_beta(u_0 + (u_1 - u_0), beta_min, beta_max))
    gamma = interpolate(gamma_min, gamma_max, (h - h_0) / (h_1 - h_0))
    beta = beta_min + (beta_max - beta_min) * u
    rate = (gamma_max - gamma_min) / (h_1 - h_0) * beta * (u_1 - u_0) / -jnp.expm1(-integrated)
    return gamma, rate


_vp_linear = with_time_derivative(_vp_value_and_rate)


def vp_linear_gamma(t: jax.Array, *, gamma_min: float | jax.Array = GAMMA_MIN,
                    gamma_max: float | jax.Array = GAMMA_MAX, beta_min: float | jax.Array = 0.1,
                    beta_max: float | jax.Array = 20.0) -> jax.Array:
    r"""The variance-preserving "linear beta" schedule in gamma = -log SNR, truncated to exact endpoints.

    Mathematical details:
        With :math:`\beta(u) = \beta_{\min} + (\beta_{\max} - \beta_{\min}) u` and
        :math:`B(u) = \int_0^u \beta = \beta_{\min} u + \tfrac12 (\beta_{\max} - \beta_{\min}) u^2`, the VP SDE has
        :math:`\log(1 + e^{\gamma}) = B(u)`, so :math:`\gamma(u) = \log(e^{B(u)} - 1)` (Song et al.; Kingma & Gao's
        Table 4 prints the schematic :math:`-\log(e^{t^2} - 1)` without the constants, erratum E13). It starts at
        :math:`-\infty`, so it is truncated: :math:`u_i = B^{-1}(\mathrm{softplus}(\gamma_i))` and

        .. math::

            u(t) &= u_{\min} + (u_{\max} - u_{\min})\, t, \qquad \gamma(t) = \log\big(e^{B(u(t))} - 1\big), \\
            \frac{d\gamma}{dt} &= \frac{\beta(u)\, (u_{\max} - u_{\min})}{1 - e^{-B(u)}}.

        :math:`\log(e^B - 1)` is evaluated without overflow, rescaled affinely from its computed values at t = 0
        and 1 (the identity in exact arithmetic) so that the endpoints are exact. The closed-form derivative rides
        on :func:`jax.custom_jvp`. ``gamma_max`` can be at most :math:`\log(e^{B(1)} - 1)`, checked by
        :class:`VPLinear` (not here).

    Args:
        t: times in [0, 1], any shape.
        gamma_min: gamma at t = 0.
        gamma_max: gamma at t = 1.
        beta_min: :math:`\beta_{\min} \ge 0` (0.1 in DDPM / Song et al.).
        beta_max: :math:`\beta_{\max} > \beta_{\min}` (20).

    Returns:
        gamma, of the broadcast shape of the inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> import numpy as np
        >>> from mulan_ppl.schedules import vp_linear_gamma
        >>> print(np.round(np.asarray(vp_linear_gamma(jnp.array([0.0, 0.5, 1.0]))), 3))
        [-13.3    0.939  5.   ]

    References:
        1. Song, Sohl-Dickstein, Kingma, Kumar, Ermon, Poole. Score-Based Generative Modeling through Stochastic
           Differential Equations. https://arxiv.org/abs/2011.13456
        2. Ho, Jain, Abbeel. Denoising Diffusion Probabilistic Models. https://arxiv.org/abs/2006.11239
    """
    return _vp_linear(*float_args("vp_linear_gamma", t=t, gamma_min=gamma_min, gamma_max=gamma_max,
                                     beta_min=beta_min, beta_max=beta_max))


class VPLinear(nnx.Module):
    r"""The VP "linear beta" schedule (scalar), truncated to exact endpoints; see :func:`vp_linear_gamma`.

    Mathematical details:
        :math:`\gamma(t) = \log(e^{B(u(t))} - 1)` with
        :math:`B(u) = \beta_{\min} u + \tfrac12 (\beta_{\max} - \beta_{\min}) u^2` and :math:`u(t)` linear between the
        times at which the untruncated schedule reaches ``gamma_min`` and ``gamma_max``.

    Args:
        gamma_min: gamma at t = 0 (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).
        beta_min: :math:`\beta_{\min} \ge 0` (default 0.1).
        beta_max: :math:`\beta_{\max} > \beta_{\min}` (default 20).

    Raises:
        ValueError: for ``gamma_min >= gamma_max``, bad betas, a ``gamma_max`` beyond the untruncated schedule's
            value at u = 1, or a ``t`` not of shape ``(B,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import VPLinear
        >>> print(jnp.round(VPLinear()(jnp.array([0.0, 1.0]), None), 3))
        [-13.3   5. ]
    """

    def __init__(self, *, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX, beta_min: float = 0.1,
                 beta_max: float = 20.0):
        where = "VPLinear"
        self.gamma_min, self.gamma_max = check_endpoints(where, gamma_min, gamma_max)
        for name, value in (("beta_min", beta_min), ("beta_max", beta_max)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{where}`: `{name}` must be a finite Python number; got {name}={value!r}.")
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"`{where}`: need 0 <= `beta_min` < `beta_max`; got beta_min={beta_min}, "
                             f"beta_max={beta_max}.")
        self.beta_min, self.beta_max = float(beta_min), float(beta_max)
        total = 0.5 * (self.beta_min + self.beta_max)  # B(1)
        largest = total + math.log(-math.expm1(-total))  # log(exp(B(1)) - 1)
        if self.gamma_max > largest:
            raise ValueError(f"`{where}`: `gamma_max` must be at most log(exp(B(1)) - 1) = {largest:.4g} for "
                             f"beta_min={beta_min}, beta_max={beta_max}; got gamma_max={gamma_max}.")

    def __call__(self, t: jax.Array, context=None) -> jax.Array:
        """Returns gamma of shape ``(B,)`` for ``t`` of shape ``(B,)``; ``context`` is ignored."""
        t = as_time("VPLinear", t)
        return vp_linear_gamma(t, gamma_min=self.gamma_min, gamma_max=self.gamma_max, beta_min=self.beta_min,
                               beta_max=self.beta_max)
