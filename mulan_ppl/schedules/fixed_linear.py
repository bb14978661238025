"""The fixed linear schedule: gamma linear in t (VDM's ``NoiseSchedule_FixedLinear``)."""

from __future__ import annotations

import jax
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

__all__ = ["FixedLinear", "linear_gamma"]


def _linear_value_and_rate(t, gamma_min, gamma_max):
    return interpolate(gamma_min, gamma_max, t), gamma_max - gamma_min


_linear = with_time_derivative(_linear_value_and_rate)


def linear_gamma(t: jax.Array, *, gamma_min: float | jax.Array = GAMMA_MIN,
                 gamma_max: float | jax.Array = GAMMA_MAX) -> jax.Array:
    r"""Linear noise schedule, gamma = gamma_min + (gamma_max - gamma_min) t, as a pure function.

    Mathematical details:
        .. math::

            \gamma(t) = \gamma_{\min} + (\gamma_{\max} - \gamma_{\min})\, t, \qquad
            \frac{d\gamma}{dt} = \gamma_{\max} - \gamma_{\min}.

        ``gamma`` is ``-log SNR``; ``t`` runs from data (0) to noise (1). The derivative rides on
        :func:`jax.custom_jvp`.

    Args:
        t: times in [0, 1], any shape (broadcast against the endpoints).
        gamma_min: gamma at t = 0, a scalar or an array broadcastable against ``t``.
        gamma_max: gamma at t = 1.

    Returns:
        gamma, of the broadcast shape of ``t`` and the endpoints.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import linear_gamma
        >>> linear_gamma(jnp.array([0.0, 0.5, 1.0]), gamma_min=-10.0, gamma_max=6.0)
        Array([-10.,  -2.,   6.], dtype=float32)
    """
    return _linear(*float_args("linear_gamma", t=t, gamma_min=gamma_min, gamma_max=gamma_max))


class FixedLinear(nnx.Module):
    r"""Fixed scalar schedule linear in t (no parameters).

    Mathematical details:
        .. math::

            \gamma(t) = \gamma_{\min} + (\gamma_{\max} - \gamma_{\min})\, t,

        shared by every data dimension and every example; the context is ignored. The derivative
        :math:`\gamma_{\max} - \gamma_{\min}` rides on :func:`jax.custom_jvp`.

    Args:
        gamma_min: gamma at t = 0 (a Python float; default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).

    Raises:
        ValueError: when ``gamma_min >= gamma_max`` or either is not finite.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import FixedLinear
        >>> schedule = FixedLinear()
        >>> schedule(jnp.array([0.0, 1.0]), None)
        Array([-13.3,   5. ], dtype=float32)

    References:
        1. Kingma, Salimans, Poole, Ho. Variational Diffusion Models. https://arxiv.org/abs/2107.00630
    """

    def __init__(self, *, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX):
        self.gamma_min, self.gamma_max = check_endpoints("FixedLinear", gamma_min, gamma_max)

    def __call__(self, t: jax.Array, context=None) -> jax.Array:
        """Returns gamma of shape ``(batch,)`` for ``t`` of shape ``(batch,)``; ``context`` is ignored."""
        t = as_time("FixedLinear", t)
        return linear_gamma(t, gamma_min=self.gamma_min, gamma_max=self.gamma_max)
