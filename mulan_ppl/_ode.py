"""The probability-flow ODE machinery shared by the likelihood and the sampler: drift closure and adaptive solve."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mulan_ppl import core
from mulan_ppl._validation import check_one_of, check_positive_int
from mulan_ppl.schedules import gamma_and_derivative

__all__ = ["SOLVERS", "check_tolerance", "make_augmented_drift", "make_drift", "pure_callable", "solve_probability_flow"]

# The solves are never differentiated, so the stages run in a plain `lax.scan` rather than Diffrax's default
# checkpointed scan (same run time here, about 40% less compile time: benchmarks/ode.py).
SOLVERS = {"tsit5": functools.partial(diffrax.Tsit5, scan_kind="lax"),
           "dopri5": functools.partial(diffrax.Dopri5, scan_kind="lax")}
# Both are 7-stage first-same-as-last methods: 6 new evaluations per attempted step and one before the first
# (tests/likelihood/test_ode_likelihood.py counts the evaluations Diffrax makes with a callback).
_EVALUATIONS_PER_STEP = 6
_INITIAL_EVALUATIONS = 1


def pure_callable(fn):
    """Returns ``fn`` as a function safe to call inside ``jax.lax`` loops.

    An ``nnx.Module`` is split once into its graph and state and merged inside each call, so no module state is
    shared across JAX trace levels; any other callable is returned unchanged.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> f = lambda t, c: t
        >>> pure_callable(f) is f
        True
        >>> gamma_fn = pure_callable(FixedLinear(gamma_min=-1.0, gamma_max=1.0))
        >>> print(jax.lax.fori_loop(0, 2, lambda i, g: g + gamma_fn(jnp.ones(1), None), jnp.zeros(1)))
        [2.]
    """
    if isinstance(fn, nnx.Module):
        graphdef, state = nnx.split(fn)
        return lambda *args: nnx.merge(graphdef, state)(*args)
    return fn


def check_tolerance(where: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"`{where}`: `{name}` must be a positive float; got {value!r}.")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{where}`: `{name}` must be a positive finite float; got {name}={value}.")
    return float(value)


def _max_example_rms(tree) -> jax.Array:
    """Error norm of a batched state: the largest per-example RMS, so each example meets the tolerance."""
    leaves = jax.tree.leaves(tree)
    squares = sum(jnp.sum(jnp.square(leaf.reshape(leaf.shape[0], -1)), axis=1) for leaf in leaves)
    size = sum(math.prod(leaf.shape[1:]) for leaf in leaves)
    return jnp.sqrt(jnp.max(squares) / size)


def make_drift(gamma_fn, denoiser, context, event_shape, parameterization, *, where: str = "make_drift"):
    """``drift(t, z)`` of the probability-flow ODE, ``t`` a scalar time and ``z`` of shape ``(B, *event)``; errors
    name the public function ``where``."""
    gamma_fn, denoiser = pure_callable(gamma_fn), pure_callable(denoiser)

    def drift(t, z):
        times = jnp.full((z.shape[0],), t, z.dtype)
        gamma, rate = gamma_and_derivative(gamma_fn, times, context, event_shape)
        prediction = denoiser(z, times, jnp.broadcast_to(gamma, z.shape), context)
        if jnp.shape(prediction) != z.shape:
            raise ValueError(
                f"`{where}`: `denoiser` must return a {parameterization!r} prediction of the shape of z {z.shape}; got shape "
                f"{jnp.shape(prediction)}."
            )
        return core.probability_flow_drift(z, prediction, gamma, rate, parameterization=parameterization)

    return drift


def make_augmented_drift(drift: Callable, x: jax.Array, key: jax.Array, *, trace: str, probe: str) -> Callable:
    """``augmented(t, (z, _)) -> (drift, divergence)`` for the change of variables, from one VJP per evaluation.

    ``trace="exact"`` sums the diagonal of each example's Jacobian (``d`` cotangents); ``"hutchinson"`` uses
    ``eps^T J eps`` with **one** probe ``eps`` (``"rademacher"`` or ``"gaussian"``, drawn from ``key`` with the shape
    of ``x``) for the whole solve, so the solver integrates a fixed smooth function.
    """
    batch, event_shape = x.shape[0], x.shape[1:]
    dim = math.prod(event_shape)
    if trace == "exact":
        basis = jnp.broadcast_to(jnp.eye(dim, dtype=x.dtype).reshape(dim, 1, *event_shape), (dim, *x.shape))

        def divergence(vjp):
            rows = jax.vmap(lambda cotangent: vjp(cotangent)[0])(basis)  # (d, B, *event): rows of each Jacobian
            return jnp.einsum("ibi->b", rows.reshape(dim, batch, dim))
    else:
        draw = jax.random.rademacher if probe == "rademacher" else jax.random.normal
        eps = draw(key, x.shape, x.dtype)

        def divergence(vjp):
            return jnp.sum((vjp(eps)[0] * eps).reshape(batch, -1), axis=1)

    def augmented(t, state):
        z, _ = state
        h, vjp = jax.vjp(lambda zz: drift(t, zz), z)
        return h, divergence(vjp)

    return augmented


def solve_probability_flow(
    drift: Callable,
    y0,
    *,
    t0: float,
    t1: float,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
):
    """Solves ``dy/dt = drift(t, y)`` for a batched pytree state with an adaptive Runge-Kutta method.

    The error of every example (the leading axis of every leaf) is held to the tolerances separately; the step is
    shared by the batch. Used by :func:`ode_log_likelihood` (data to noise) and
    :func:`~mulan_ppl.sampling.ode_sample` (noise to data).

    Args:
        drift: ``drift(t, y) -> dy/dt`` with ``t`` a scalar.
        y0: the initial state, a pytree of arrays with a common leading batch axis.
        t0, t1: integration interval (``t1 < t0`` integrates backwards).
        rtol, atol: relative and absolute tolerances (> 0).
        solver: ``"tsit5"`` or ``"dopri5"``.
        max_steps: step budget; exceeding it raises at run time.

    Returns:
        ``(y1, nfe)``: the state at ``t1`` and the number of drift evaluations (a scalar ``int32``).

    Example:
        >>> y1, nfe = solve_probability_flow(lambda t, y: -y, jnp.ones((2, 1)), t0=0.0, t1=1.0)
        >>> print(jnp.round(y1[:, 0], 5), int(nfe) > 0)
        [0.36788 0.36788] True
    """
    rtol = check_tolerance("solve_probability_flow", "rtol", rtol)
    atol = check_tolerance("solve_probability_flow", "atol", atol)
    check_one_of("solve_probability_flow", "solver", solver, tuple(SOLVERS))
    max_steps = check_positive_int("solve_probability_flow", "max_steps", max_steps)
    dtype = jax.tree.leaves(y0)[0].dtype
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(lambda t, y, args: drift(t, y)),
        SOLVERS[solver](),
        t0=jnp.asarray(t0, dtype),
        t1=jnp.asarray(t1, dtype),
        dt0=None,
        y0=y0,
        stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol, norm=_max_example_rms),
        saveat=diffrax.SaveAt(t1=True),
        max_steps=max_steps,
    )
    y1 = jax.tree.map(lambda leaf: leaf[-1], solution.ys)
    nfe = _INITIAL_EVALUATIONS + _EVALUATIONS_PER_STEP * solution.stats["num_steps"]
    return y1, jnp.asarray(nfe, jnp.int32)
