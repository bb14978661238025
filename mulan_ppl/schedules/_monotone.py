"""Pieces of VDM's monotone network shared by :class:`LearnedScalar` and :class:`MonotoneFiLM`.

Every weight enters through ``abs`` (VDM's ``DenseMonotone``) and every activation is increasing, so the network is
non-decreasing in t; the linear branch with weight ``|w1| > 0`` makes it strictly increasing. The schedules then
rescale it so that both endpoints are exact.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mulan_ppl.schedules._common import interpolate, normalised_ratio


class SwishMLP(nnx.Module):
    """``num_hidden`` swish layers of width ``hidden_width``, then a linear map to ``out_features`` numbers."""

    def __init__(self, context_dim: int, out_features: int, *, hidden_width: int, num_hidden: int,
                 param_dtype: jax.typing.DTypeLike, rngs: nnx.Rngs):
        widths = [context_dim] + [hidden_width] * num_hidden
        self.hidden = nnx.List([nnx.Linear(i, o, param_dtype=param_dtype, rngs=rngs)
                                for i, o in zip(widths[:-1], widths[1:])])
        self.out = nnx.Linear(widths[-1], out_features, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, context: jax.Array) -> jax.Array:
        h = context
        for layer in self.hidden:
            h = nnx.swish(layer(h))
        return self.out(h)


def squash(h: jax.Array) -> jax.Array:
    """VDM's ``2 (sigmoid(h) - 1/2)`` (= tanh(h/2)), increasing, in (-1, 1)."""
    return 2.0 * (jax.nn.sigmoid(h) - 0.5)


def normal_param(rngs: nnx.Rngs, shape: tuple[int, ...], scale: float, dtype) -> nnx.Param:
    """A parameter drawn from N(0, scale^2), as flax's ``initializers.normal(scale)``."""
    return nnx.Param(scale * jax.random.normal(rngs.params(), shape, dtype))


def time_features(t: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """First monotone layer on the rescaled time ``2 (t - 1/2)``: ``t`` of shape ``(...)`` to ``(..., H)``."""
    return squash(jnp.abs(kernel) * (2.0 * t - 1.0)[..., None] + bias)


def endpoint_times(t: jax.Array) -> jax.Array:
    """Stacks ``(t, 0, 1)`` on a new leading axis: shape ``(3, *t.shape)``."""
    return jnp.stack([t, jnp.zeros_like(t), jnp.ones_like(t)])


def rescale_to_endpoints(raw: jax.Array, t: jax.Array, gamma_min, gamma_max) -> jax.Array:
    """Maps ``raw`` at times ``(t, 0, 1)`` (leading axis 3) to ``gamma_min + range * (g(t) - g(0)) / (g(1) - g(0))``.

    ``t`` must broadcast against ``raw[0]``. A flat ``raw`` (all weights zero) falls back to the linear schedule.
    """
    g_t, g_0, g_1 = raw[0], raw[1], raw[2]
    return interpolate(gamma_min, gamma_max, normalised_ratio(g_t - g_0, g_1 - g_0, t))
