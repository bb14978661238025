"""VDM's learned scalar schedule: a monotone network in t, rescaled so that both endpoints are exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mulan_ppl._validation import check_positive_int
from mulan_ppl.schedules._common import GAMMA_MAX, GAMMA_MIN, as_time, check_endpoints, check_nonnegative
from mulan_ppl.schedules._monotone import endpoint_times, normal_param, rescale_to_endpoints, time_features

__all__ = ["LearnedScalar"]


class LearnedScalar(nnx.Module):
    r"""Learned scalar schedule: VDM's monotone network with endpoints exact by construction.

    Mathematical details:
        With :math:`\phi(h) = 2(\mathrm{sigmoid}(h) - \tfrac12)` and every weight taken in absolute value
        (VDM's ``DenseMonotone``),

        .. math::

            \tilde\gamma(t) &= |w_1|\, t + \frac{1}{H} \sum_{j=1}^{H} |w_{3,j}|\,
                \phi\big(|w_{2,j}|\, (2t - 1) + b_{2,j}\big), \\
            \gamma(t) &= \gamma_{\min} + (\gamma_{\max} - \gamma_{\min})
                \frac{\tilde\gamma(t) - \tilde\gamma(0)}{\tilde\gamma(1) - \tilde\gamma(0)}.

        :math:`\tilde\gamma` is increasing (strictly, while :math:`w_1 \ne 0`), so :math:`\gamma` is too, with
        :math:`\gamma(0) = \gamma_{\min}` and :math:`\gamma(1) = \gamma_{\max}` exactly. This is VDM's
        ``NoiseSchedule_NNet`` (its released code feeds :math:`l_2` the rescaled time :math:`2t - 1`; the paper
        writes :math:`l_2(l_1(t))`, which differs only by an affine change of :math:`l_2`'s input), initialised as
        there (:math:`w_1 = \gamma_{\max} - \gamma_{\min}`, :math:`w_2, w_3 \sim \mathcal N(0, s^2)` with
        :math:`s` = ``init_scale``, :math:`b_2 = 0`) so that it starts close to linear; the bias of :math:`l_1`
        cancels in the rescaling and is dropped. The rescaling fixes VDM's drifting endpoints (google-research/vdm
        issue #11). The context is ignored; the time derivative comes from autodiff.

    Args:
        hidden_width: H, the width of the sigmoid layer (1024 in VDM).
        gamma_min: gamma at t = 0 (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).
        learn_endpoints: when true, ``gamma_min`` and ``gamma_max`` are scalar ``nnx.Param`` initialised at the given
            values (VDM learns its endpoints); the endpoints are then exact for the current parameter values. Their
            order is not enforced.
        init_scale: standard deviation of the normal initialisation of :math:`w_2, w_3` (VDM: 0.01).
        param_dtype: dtype of the parameters (float32); computations follow the dtype of ``t``.
        rngs: random streams for initialisation.

    Raises:
        ValueError: for ``gamma_min >= gamma_max``, a non-positive ``hidden_width``, or a ``t`` not of shape ``(B,)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.schedules import LearnedScalar
        >>> schedule = LearnedScalar(hidden_width=16, rngs=nnx.Rngs(0))
        >>> print(jnp.round(schedule(jnp.array([0.0, 0.5, 1.0]), None), 2))
        [-13.3   -4.15   5.  ]

    References:
        1. Kingma, Salimans, Poole, Ho. Variational Diffusion Models, App. H.
           https://arxiv.org/abs/2107.00630
    """

    def __init__(self, *, hidden_width: int = 1024, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX,
                 learn_endpoints: bool = False, init_scale: float = 0.01,
                 param_dtype: jax.typing.DTypeLike = jnp.float32, rngs: nnx.Rngs):
        where = "LearnedScalar"
        gamma_min, gamma_max = check_endpoints(where, gamma_min, gamma_max)
        init_scale = check_nonnegative(where, "init_scale", init_scale)
        self.hidden_width = check_positive_int(where, "hidden_width", hidden_width)
        self.w1 = nnx.Param(jnp.asarray(gamma_max - gamma_min, param_dtype))
        self.w2 = normal_param(rngs, (self.hidden_width,), init_scale, param_dtype)
        self.b2 = nnx.Param(jnp.zeros((self.hidden_width,), param_dtype))
        self.w3 = normal_param(rngs, (self.hidden_width,), init_scale, param_dtype)
        self.learn_endpoints = bool(learn_endpoints)
        if self.learn_endpoints:
            self.gamma_min = nnx.Param(jnp.asarray(gamma_min, param_dtype))
            self.gamma_max = nnx.Param(jnp.asarray(gamma_max, param_dtype))
        else:
            self.gamma_min, self.gamma_max = gamma_min, gamma_max

    def unnormalised(self, t: jax.Array) -> jax.Array:
        r""":math:`\tilde\gamma(t)` for ``t`` of any shape (before the endpoint rescaling)."""
        h = time_features(t, self.w2[...], self.b2[...])
        return jnp.abs(self.w1[...]) * t + h @ jnp.abs(self.w3[...]) / self.hidden_width

    def __call__(self, t: jax.Array, context=None) -> jax.Array:
        """Returns gamma of shape ``(B,)`` for ``t`` of shape ``(B,)``; ``context`` is ignored."""
        t = as_time("LearnedScalar", t)
        if self.learn_endpoints:
            gamma_min, gamma_max = self.gamma_min[...], self.gamma_max[...]
        else:
            gamma_min, gamma_max = self.gamma_min, self.gamma_max
        return rescale_to_endpoints(self.unnormalised(endpoint_times(t)), t, gamma_min, gamma_max)
