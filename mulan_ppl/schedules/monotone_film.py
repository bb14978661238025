"""MuLAN's FiLM-conditioned monotone network schedule, per dimension or scalar, endpoints exact."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mulan_ppl._validation import check_positive_int
from mulan_ppl.schedules._common import (
    GAMMA_MAX,
    GAMMA_MIN,
    as_time,
    check_context,
    check_endpoints,
    check_nonnegative,
    check_event_shape,
    expand_time,
)
from mulan_ppl.schedules._monotone import (
    SwishMLP,
    endpoint_times,
    normal_param,
    rescale_to_endpoints,
    squash,
    time_features,
)

__all__ = ["MonotoneFiLM"]


class MonotoneFiLM(nnx.Module):
    r"""Monotone network in t whose hidden layer is FiLM-modulated by the context; endpoints exact.

    Mathematical details:
        A FiLM head maps the context :math:`c` to :math:`2H` numbers :math:`[\tilde s(c) \mid m(c)]`, read as a
        positive scale :math:`s(c) = \mathrm{softplus}(\tilde s(c)) > 0` and a shift :math:`m(c)`; by default
        :math:`[\tilde s \mid m] = W_o\, \mathrm{swish}(V_2\, \mathrm{swish}(V_1 c))`, as in MuLAN's code. With
        :math:`\phi(h) = 2(\mathrm{sigmoid}(h) - \tfrac12)` and every weight of the time path taken in absolute
        value,

        .. math::

            h_1 &= \phi(|w_2| (2t - 1) + b_2) \odot s(c) + m(c), \\
            h_2 &= \phi(|W_{\text{int}}|^\top h_1 + b_{\text{int}}), \\
            \tilde\gamma_i(c, t) &= |w_{1,i}|\, t + \tfrac{1}{H} \textstyle\sum_j |W_{3,ji}|\, h_{2,j}, \\
            \gamma_i(c, t) &= \gamma_{\min} + (\gamma_{\max} - \gamma_{\min})
                \frac{\tilde\gamma_i(c, t) - \tilde\gamma_i(c, 0)}{\tilde\gamma_i(c, 1) - \tilde\gamma_i(c, 0)}.

        A positive scale keeps every step increasing in t, so each :math:`\gamma_i` increases (strictly, while
        :math:`w_{1,i} \ne 0`) from exactly :math:`\gamma_{\min}` to exactly :math:`\gamma_{\max}`, for every
        context. This is the "monotonic neural network with FiLM conditioning" of the MuLAN paper (Sec. 3.2),
        laid out as in the MuLAN code's FiLM variant; ``event_shape=()`` gives one scalar gamma per example. The
        time derivative comes from autodiff.

    Args:
        event_shape: the data's event shape (H, W, C) for one gamma per dimension, or ``()`` for a scalar.
        context_dim: size K of the context vector (required: the schedule needs a context).
        head: a module mapping a context ``(B, K)`` to ``(B, 2 * hidden_width)`` numbers, read as
            ``[scale_raw | shift]``; defaults to a swish MLP with two hidden layers of ``film_width``.
        hidden_width: H, the width of the monotone layers (1024 in MuLAN's code).
        film_width: width of the two swish layers of the default FiLM head (1024 in MuLAN's code).
        gamma_min: gamma at t = 0 (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).
        learn_endpoints: when true, ``gamma_min`` and ``gamma_max`` are scalar ``nnx.Param``; the endpoints are
            then exact for the current parameter values (their order is not enforced).
        init_scale: standard deviation of the normal initialisation of the time path's weights (0.01 as VDM).
        param_dtype: dtype of the parameters (float32); computations follow the dtype of ``t``.
        rngs: random streams for initialisation.

    Raises:
        ValueError: for ``gamma_min >= gamma_max``, bad sizes, and at call time a ``t`` not of shape ``(B,)``, a
            ``context`` that is ``None`` or not of shape ``(B, K)``, or a ``head`` output of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.schedules import MonotoneFiLM
        >>> schedule = MonotoneFiLM((3,), context_dim=2, hidden_width=8, film_width=8, rngs=nnx.Rngs(0))
        >>> gamma = schedule(jnp.array([0.0, 1.0]), jnp.ones((2, 2)))
        >>> gamma.shape
        (2, 3)
        >>> print(jnp.round(gamma[:, 0], 3))
        [-13.3   5. ]

    References:
        1. Sahoo, Gokaslan, De Sa, Kuleshov. Diffusion Models With Learned Adaptive Noise (MuLAN), Sec. 3.2.
           https://arxiv.org/abs/2312.13236
        2. Perez, Strub, de Vries, Dumoulin, Courville. FiLM: Visual Reasoning with a General Conditioning Layer.
           https://arxiv.org/abs/1709.07871
    """

    def __init__(self, event_shape: tuple[int, ...] = (), *, context_dim: int, head: nnx.Module | None = None,
                 hidden_width: int = 1024, film_width: int = 1024, gamma_min: float = GAMMA_MIN,
                 gamma_max: float = GAMMA_MAX, learn_endpoints: bool = False, init_scale: float = 0.01,
                 param_dtype: jax.typing.DTypeLike = jnp.float32, rngs: nnx.Rngs):
        where = "MonotoneFiLM"
        self.event_shape = check_event_shape(where, event_shape)
        self.context_dim = check_positive_int(where, "context_dim", context_dim)
        self.hidden_width = width = check_positive_int(where, "hidden_width", hidden_width)
        film_width = check_positive_int(where, "film_width", film_width)
        gamma_min, gamma_max = check_endpoints(where, gamma_min, gamma_max)
        init_scale = check_nonnegative(where, "init_scale", init_scale)
        size = int(np.prod(self.event_shape, dtype=np.int64))
        self.head = head if head is not None else SwishMLP(
            self.context_dim, 2 * width, hidden_width=film_width, num_hidden=2, param_dtype=param_dtype, rngs=rngs)
        self.w1 = nnx.Param(jnp.full((size,), gamma_max - gamma_min, param_dtype))
        self.w2 = normal_param(rngs, (width,), init_scale, param_dtype)
        self.b2 = nnx.Param(jnp.zeros((width,), param_dtype))
        self.w_int = normal_param(rngs, (width, width), init_scale, param_dtype)
        self.b_int = nnx.Param(jnp.zeros((width,), param_dtype))
        self.w3 = normal_param(rngs, (width, size), init_scale, param_dtype)
        self.learn_endpoints = bool(learn_endpoints)
        if self.learn_endpoints:
            self.gamma_min = nnx.Param(jnp.asarray(gamma_min, param_dtype))
            self.gamma_max = nnx.Param(jnp.asarray(gamma_max, param_dtype))
        else:
            self.gamma_min, self.gamma_max = gamma_min, gamma_max

    def film(self, context: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Returns the FiLM ``(scale, shift)``, each of shape ``(B, H)``; ``scale > 0``."""
        raw = jnp.asarray(self.head(context))
        if raw.shape != (context.shape[0], 2 * self.hidden_width):
            raise ValueError(f"`MonotoneFiLM`: `head` must map a context of shape {tuple(context.shape)} to shape "
                             f"(batch, 2 * hidden_width) = ({context.shape[0]}, {2 * self.hidden_width}); got "
                             f"{tuple(raw.shape)}.")
        scale, shift = jnp.split(raw, 2, axis=-1)
        return jax.nn.softplus(scale), shift

    def unnormalised(self, t: jax.Array, context: jax.Array) -> jax.Array:
        r""":math:`\tilde\gamma(c, t)` for ``t`` ``(..., B)`` and ``context`` ``(B, K)``: shape ``(..., B, D)``."""
        scale, shift = self.film(context)
        h = time_features(t, self.w2[...], self.b2[...]) * scale + shift
        h = squash(h @ jnp.abs(self.w_int[...]) + self.b_int[...])
        return jnp.abs(self.w1[...]) * t[..., None] + h @ jnp.abs(self.w3[...]) / self.hidden_width

    def __call__(self, t: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Returns gamma ``(B, *event_shape)`` (``(B,)`` when scalar) for ``t`` ``(B,)`` and ``context`` ``(B, K)``."""
        where = "MonotoneFiLM"
        t = as_time(where, t)
        batch = t.shape[0]
        context = check_context(where, context, batch, self.context_dim)
        raw = self.unnormalised(endpoint_times(t), context)  # (3, B, D)
        raw = raw.reshape((3, batch, *self.event_shape))
        if self.learn_endpoints:
            gamma_min, gamma_max = self.gamma_min[...], self.gamma_max[...]
        else:
            gamma_min, gamma_max = self.gamma_min, self.gamma_max
        return rescale_to_endpoints(raw, expand_time(t, len(self.event_shape)), gamma_min, gamma_max)
