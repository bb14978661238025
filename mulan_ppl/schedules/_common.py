"""Argument checks and small numerical pieces shared by the schedule families.

Every check raises ``ValueError`` naming the public call and the argument in backticks (DESIGN.md §5).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from mulan_ppl._validation import (
    as_float_array,
    check_broadcastable,
    check_positive_int,
    check_values,
    is_concrete,
)

GAMMA_MIN = -13.3
GAMMA_MAX = 5.0


def check_endpoints(where: str, gamma_min, gamma_max) -> tuple[float, float]:
    """Checks two Python numbers ``gamma_min < gamma_max`` (both finite); returns them as floats."""
    for name, value in (("gamma_min", gamma_min), ("gamma_max", gamma_max)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"`{where}`: `{name}` must be a Python number; got {type(value).__name__}.")
        if not math.isfinite(float(value)):
            raise ValueError(f"`{where}`: `{name}` must be finite; got {name}={value}.")
    if not float(gamma_min) < float(gamma_max):
        raise ValueError(
            f"`{where}`: `gamma_min` must be less than `gamma_max` (gamma increases from t=0 to t=1); "
            f"got gamma_min={gamma_min}, gamma_max={gamma_max}."
        )
    return float(gamma_min), float(gamma_max)


def check_nonnegative(where: str, name: str, value) -> float:
    """Checks a finite Python number ``>= 0``; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not (
            math.isfinite(float(value)) and value >= 0):
        raise ValueError(f"`{where}`: `{name}` must be a finite number >= 0; got {name}={value!r}.")
    return float(value)


def check_event_shape(where: str, event_shape) -> tuple[int, ...]:
    """Checks a tuple of positive ints (``()`` for a scalar schedule)."""
    if isinstance(event_shape, (int, np.integer)) and not isinstance(event_shape, bool):
        event_shape = (event_shape,)
    if not isinstance(event_shape, Sequence):
        raise ValueError(f"`{where}`: `event_shape` must be a tuple of positive ints; got {event_shape!r}.")
    for size in event_shape:
        check_positive_int(where, "event_shape", size)
    return tuple(int(s) for s in event_shape)


def check_times(where: str, t: jax.Array, name: str = "t") -> None:
    """When concrete, checks that the times ``t`` are in [0, 1] (and not NaN)."""
    check_values(where, **{name: t})
    if is_concrete(t) and t.size:
        values = np.asarray(t)
        if not (values.min() >= 0.0 and values.max() <= 1.0):
            raise ValueError(f"`{where}`: `{name}` must lie in [0, 1]; got min({name})={values.min()}, "
                             f"max({name})={values.max()}.")


def as_time(where: str, t) -> jax.Array:
    """Converts ``t`` to a float array and checks it has shape ``(batch,)`` and, when concrete, values in [0, 1]."""
    t = as_float_array(t, "t", where)
    if t.ndim != 1:
        raise ValueError(f"`{where}`: `t` must have shape (batch,); got t.shape={tuple(t.shape)}.")
    check_times(where, t)
    return t


def check_context(where: str, context, batch: int, context_dim: int) -> jax.Array:
    """Checks a context of shape ``(batch, context_dim)``; ``None`` is refused."""
    if context is None:
        raise ValueError(
            f"`{where}`: `context` is None, but this schedule is conditioned on a context of shape "
            f"(batch, {context_dim}); pass the auxiliary latent as `context`."
        )
    context = as_float_array(context, "context", where)
    if context.shape != (batch, context_dim):
        raise ValueError(
            f"`{where}`: `context` must have shape (batch, context_dim) = ({batch}, {context_dim}); "
            f"got context.shape={tuple(context.shape)}."
        )
    check_values(where, context=context)
    return context


def check_optional_dim(where: str, name: str, value) -> int | None:
    """``None`` or a positive int."""
    if value is None:
        return None
    return check_positive_int(where, name, value)


def expand_time(t: jax.Array, event_ndim: int) -> jax.Array:
    """Reshapes ``t`` of shape ``(batch,)`` to ``(batch, 1, ..., 1)`` with ``event_ndim`` trailing ones."""
    return t.reshape(t.shape + (1,) * event_ndim)


def normalised_ratio(numerator: jax.Array, denominator: jax.Array, t: jax.Array) -> jax.Array:
    """``numerator / denominator``, falling back to ``t`` (a linear schedule) where the denominator is 0.

    Both branches stay finite, so gradients are finite too (the double-``where`` pattern).
    """
    positive = denominator > 0
    safe = jnp.where(positive, denominator, jnp.ones_like(denominator))
    return jnp.where(positive, numerator / safe, jnp.broadcast_to(t, jnp.broadcast_shapes(t.shape, safe.shape)))


def pin(value: jax.Array, anchor: jax.Array, keep: jax.Array) -> jax.Array:
    """``value`` where ``keep``; elsewhere exactly ``anchor``, still carrying the derivative of ``value``.

    Keeps an endpoint exact when XLA reassociates a sum such as ``c + 1 * (1 - t)`` into ``(c + 1) - t`` (which loses
    a ``c`` below float32's epsilon), without zeroing derivatives in ``t`` at that endpoint.
    """
    sg = jax.lax.stop_gradient
    # Forward: anchor + 0 - 0 = anchor exactly; derivative: d anchor + d value - d anchor = d value.
    return jnp.where(keep, value, anchor + (value - sg(value)) - (anchor - sg(anchor)))


def interpolate(gamma_min, gamma_max, ratio: jax.Array) -> jax.Array:
    """``gamma_min + (gamma_max - gamma_min) * ratio``, exact at both ``ratio = 0`` and ``ratio = 1``.

    The upper half is written from ``gamma_max`` down (``1 - ratio`` is exact there), so ``gamma(1) == gamma_max``
    holds in floating point, not only ``gamma(0) == gamma_min``; each half is monotone in ``ratio``.
    """
    span = gamma_max - gamma_min
    return jnp.where(ratio < 0.5, gamma_min + span * ratio, gamma_max - span * (1.0 - ratio))


def with_time_derivative(value_and_rate: Callable) -> Callable:
    """A :func:`jax.custom_jvp` function of ``(t, *params)`` whose ``t`` tangent is a closed form.

    ``value_and_rate(t, *params)`` returns ``(gamma, dgamma_dt)`` from shared intermediate values. The tangents with
    respect to ``params`` are those of ``gamma`` itself (forward-mode autodiff with ``t`` held fixed), so derivatives
    with respect to learned coefficients and endpoints stay exact, and the rule can be differentiated again (the
    closed form is plain JAX). Symbolic-zero tangents (constant parameters, an undifferentiated ``t``) are skipped.
    """
    fn = jax.custom_jvp(lambda t, *params: value_and_rate(t, *params)[0])

    def _jvp(primals, tangents):
        t, *params = primals
        t_dot, *param_dots = tangents
        if all(isinstance(d, SymbolicZero) for d in param_dots):
            gamma, rate = value_and_rate(t, *params)
            gamma_dot = jnp.zeros_like(gamma)
        else:
            param_dots = [jnp.zeros_like(p) if isinstance(d, SymbolicZero) else d
                          for p, d in zip(params, param_dots)]
            (gamma, rate), (gamma_dot, _) = jax.jvp(lambda *p: value_and_rate(t, *p), tuple(params),
                                                    tuple(param_dots))
        if not isinstance(t_dot, SymbolicZero):
            gamma_dot = gamma_dot + jnp.broadcast_to(rate * t_dot, gamma.shape).astype(gamma.dtype)
        return gamma, gamma_dot

    fn.defjvp(_jvp, symbolic_zeros=True)
    return fn


def float_args(where: str, **values) -> tuple[jax.Array, ...]:
    """The arguments of a pure schedule function: floating arrays of one common dtype (float32 unless float64 is on
    and asked for) that broadcast together and, when concrete, hold no NaN or Inf, with times ``t`` in [0, 1] and
    ``gamma_min < gamma_max``. Returns them in the order given."""
    arrays = {k: as_float_array(v, k, where) for k, v in values.items()}
    check_broadcastable(where, **arrays)
    check_values(where, **arrays)
    if "t" in arrays:
        check_times(where, arrays["t"])
    low, high = arrays.get("gamma_min"), arrays.get("gamma_max")
    if low is not None and high is not None and is_concrete(low, high) and not np.all(
            np.asarray(low) < np.asarray(high)):
        raise ValueError(f"`{where}`: `gamma_min` must be less than `gamma_max` (gamma increases from t=0 to t=1); "
                         f"got gamma_min={np.asarray(low)}, gamma_max={np.asarray(high)}.")
    dtype = jnp.result_type(*arrays.values(), float)
    return tuple(a.astype(dtype) for a in arrays.values())
