"""Samplers of the generative model.

:func:`ancestral_sample` runs the T-step top-down chain :math:`z_1 \\to z_{(T-1)/T} \\to \\dots \\to z_0` with the
reverse transitions :class:`~mulan_ppl.distrax.ReverseTransition` (any parameterization, context given);
:func:`ode_sample` integrates the probability-flow ODE from :math:`z_1` to :math:`z_0` with an adaptive solver.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mulan_ppl._ode import make_drift, pure_callable, solve_probability_flow
from mulan_ppl._validation import (
    as_float_array,
    check_key,
    check_one_of,
    check_positive_int,
    check_shape_tuple,
    check_values,
)
from mulan_ppl.core import DENOISER_TARGETS, PARAMETERIZATIONS
from mulan_ppl.distrax import ReverseTransition
from mulan_ppl.schedules import evaluate_schedule

__all__ = ["ancestral_sample", "ode_sample", "pure_callable"]


def _starting_latent(where: str, key: jax.Array, shape: tuple[int, ...], z_1) -> jax.Array:
    """``z_1 ~ N(0, I)`` of ``shape``, or the given ``z_1`` checked (float, that shape, finite)."""
    if z_1 is None:
        return jax.random.normal(key, shape, jnp.result_type(float))
    z_1 = as_float_array(z_1, "z_1", where)
    if z_1.shape != shape:
        raise ValueError(f"`{where}`: `z_1` must have shape {shape}; got {z_1.shape}.")
    check_values(where, z_1=z_1)
    return z_1


def ancestral_sample(
    key: jax.Array,
    gamma_fn,
    denoiser,
    *,
    shape: tuple[int, ...],
    num_steps: int,
    parameterization: str = "eps",
    context=None,
    z_1: jax.Array | None = None,
) -> jax.Array:
    r"""Draws :math:`z_0` from the T-step generative chain of the top-down HVAE.

    Mathematical details:
        :math:`z_1 \sim \mathcal N(0, I)`; for :math:`i = T, \dots, 1` with :math:`t = i/T`, :math:`s = (i-1)/T`:
        :math:`z_s \sim p(z_s|z_t) = q(z_s \mid z_t, \hat x(z_t, t))`, where :math:`\hat x` comes from the
        denoiser's prediction. The result is the chain's :math:`z_0`; decode it with
        :class:`~mulan_ppl.distrax.DiscretizedGaussianDecoder` for integer data (``TopDownDiffusion.sample`` does).

    Args:
        key: typed PRNG key.
        gamma_fn: schedule ``gamma_fn(t, context)``.
        denoiser: ``denoiser(z_t, t, gamma_t, context)`` returning the ``parameterization`` prediction.
        shape: ``(B, *event)`` of the samples.
        num_steps: number of steps ``T >= 1``.
        parameterization: ``"eps"``, ``"v"`` or ``"x"``.
        context: auxiliary latent for every sample (shape ``(B, ...)``), or ``None``.
        z_1: optional starting latent of shape ``shape`` (drawn from N(0, I) otherwise).

    Returns:
        :math:`z_0`, shape ``shape``.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> z0 = ancestral_sample(jax.random.key(0), FixedLinear(), lambda z, t, g, c: jnp.zeros_like(z),
        ...                       shape=(2, 3), num_steps=10)
        >>> print(z0.shape)
        (2, 3)
    """
    check_key("ancestral_sample", key)
    num_steps = check_positive_int("ancestral_sample", "num_steps", num_steps)
    check_one_of("ancestral_sample", "parameterization", parameterization, DENOISER_TARGETS)
    shape = check_shape_tuple("ancestral_sample", "shape", shape, min_ndim=1)
    batch, event_shape = shape[0], shape[1:]
    init_key, loop_key = jax.random.split(key)
    z_1 = _starting_latent("ancestral_sample", init_key, shape, z_1)
    gamma_fn, denoiser = pure_callable(gamma_fn), pure_callable(denoiser)

    def step(j, z_t):
        i = num_steps - j
        t = jnp.full((batch,), i / num_steps, z_t.dtype)
        s = jnp.full((batch,), (i - 1) / num_steps, z_t.dtype)
        gamma_t = evaluate_schedule(gamma_fn, t, context, event_shape)
        gamma_s = evaluate_schedule(gamma_fn, s, context, event_shape)
        prediction = denoiser(z_t, t, jnp.broadcast_to(gamma_t, shape), context)
        p = ReverseTransition.from_prediction(z_t, prediction, gamma_s, gamma_t, parameterization=parameterization)
        return p.sample(seed=jax.random.fold_in(loop_key, i))

    return jax.lax.fori_loop(0, num_steps, step, z_1)


def ode_sample(
    key: jax.Array,
    gamma_fn,
    denoiser,
    *,
    shape: tuple[int, ...],
    parameterization: str = "eps",
    context=None,
    z_1: jax.Array | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> tuple[jax.Array, jax.Array]:
    r"""Draws :math:`z_0` by integrating the probability-flow ODE from :math:`z_1 \sim \mathcal N(0, I)` to ``t = 0``.

    Mathematical details:
        :math:`dz/dt = h(z, t)` with the drift of :func:`~mulan_ppl.core.probability_flow_drift`, integrated
        backwards in time by :func:`~mulan_ppl.likelihood.solve_probability_flow` (adaptive Tsit5 or Dopri5, the
        tolerances held per example). With the exact denoiser the output has the law of :math:`q(z_0)`; the map
        :math:`z_1 \mapsto z_0` is deterministic, so all randomness is in :math:`z_1` (and the context).

    Args:
        key: typed PRNG key (for :math:`z_1`).
        gamma_fn: schedule ``gamma_fn(t, context)``.
        denoiser: ``denoiser(z_t, t, gamma_t, context)`` returning the ``parameterization`` prediction
            (deterministic: evaluation mode).
        shape: ``(B, *event)`` of the samples.
        parameterization: ``"eps"``, ``"v"``, ``"x"`` or ``"score"``.
        context: auxiliary latent for every sample (shape ``(B, ...)``), or ``None``.
        z_1: optional starting latent of shape ``shape``.
        rtol, atol, solver, max_steps: as :func:`~mulan_ppl.likelihood.ode_log_likelihood`.

    Returns:
        ``(z_0, nfe)``: shape ``shape`` and the number of drift evaluations.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> z0, nfe = ode_sample(jax.random.key(0), FixedLinear(), lambda z, t, g, c: jnp.zeros_like(z),
        ...                      shape=(2, 3))
        >>> print(z0.shape)
        (2, 3)
    """
    check_key("ode_sample", key)
    check_one_of("ode_sample", "parameterization", parameterization, PARAMETERIZATIONS)
    shape = check_shape_tuple("ode_sample", "shape", shape, min_ndim=2)
    z_1 = _starting_latent("ode_sample", key, shape, z_1)
    drift = make_drift(gamma_fn, denoiser, context, shape[1:], parameterization, where="ode_sample")
    return solve_probability_flow(drift, z_1, t0=1.0, t1=0.0, rtol=rtol, atol=atol, solver=solver,
                                  max_steps=max_steps)
