"""A checker for schedule authors: endpoints, monotonicity, finiteness and the consistency of the time derivative."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl._validation import check_positive_int
from mulan_ppl.schedules._common import check_event_shape
from mulan_ppl.schedules._evaluate import gamma_and_derivative

__all__ = ["ScheduleReport", "check_schedule"]

# Five-point Gauss-Legendre rule on [0, 1], used to integrate the jvp derivative between grid points.
_GL_X, _GL_W = np.polynomial.legendre.leggauss(5)
_GL_X, _GL_W = 0.5 * (_GL_X + 1.0), 0.5 * _GL_W


@dataclasses.dataclass(frozen=True)
class ScheduleReport:
    """What :func:`check_schedule` measured.

    Attributes:
        passed: whether every check passed.
        failures: one sentence per failed check (empty when ``passed``).
        gamma_at_0: (smallest, largest) gamma at t = 0 over examples and dimensions.
        gamma_at_1: (smallest, largest) gamma at t = 1.
        min_increment: smallest gamma(t_{i+1}) - gamma(t_i) on the uniform grid (> 0 for a strictly increasing one).
        max_derivative_error: largest absolute difference between the integral of the jvp derivative and the
            increment of gamma along the clustered grid, relative to the range of gamma over the grid.
        finite: whether every gamma and derivative value was finite.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> report = check_schedule(FixedLinear(gamma_min=-5.0, gamma_max=5.0), (2,), num_points=11)
        >>> report.gamma_at_0, report.gamma_at_1, round(report.min_increment, 4), report.finite
        ((-5.0, -5.0), (5.0, 5.0), 1.0, True)
    """

    passed: bool
    failures: tuple[str, ...]
    gamma_at_0: tuple[float, float]
    gamma_at_1: tuple[float, float]
    min_increment: float
    max_derivative_error: float
    finite: bool


def _evaluate_on(gamma_fn, times, context, event_shape):
    """gamma and its jvp derivative at every time of ``times`` (shape (N,)) for every context row, in one compiled
    call (``gamma_fn`` and the context are closed over; the schedule is read, not updated).

    Returns two float64 NumPy arrays of shape ``(rows, N, *gamma dims)``.
    """
    n = times.shape[0]
    if context is None:
        rows, t, ctx = 1, times, None
    else:
        rows = context.shape[0]
        t = jnp.tile(times, rows)
        ctx = jnp.repeat(context, n, axis=0)
    gamma, rate = jax.jit(lambda s: gamma_and_derivative(gamma_fn, s, ctx, event_shape))(t)
    return (np.asarray(gamma, np.float64).reshape((rows, n) + gamma.shape[1:]),
            np.asarray(rate, np.float64).reshape((rows, n) + rate.shape[1:]))


def check_schedule(gamma_fn: Callable, shape: tuple[int, ...], *, context: jax.Array | None = None,
                   gamma_min: float | None = None, gamma_max: float | None = None, num_points: int = 1000,
                   atol: float = 1e-5, derivative_rtol: float = 1e-3, strict: bool = True,
                   raise_on_failure: bool = True) -> ScheduleReport:
    r"""Checks that a schedule callable keeps the library's contract; for authors of new schedule families.

    Mathematical details:
        On a uniform grid of ``num_points`` times in [0, 1], and for each context row, the checks are:

        * **shape**: ``gamma_fn(t, context)`` has shape ``(B,)`` or ``(B, *shape)`` (see :func:`evaluate_schedule`);
        * **finite**: gamma and :math:`d\gamma/dt` (by ``jax.jvp``) are finite;
        * **endpoints**: :math:`|\gamma(0) - \gamma_{\min}| \le` ``atol`` and :math:`|\gamma(1) - \gamma_{\max}|
          \le` ``atol`` where those are given;
        * **monotone**: :math:`\gamma(t_{i+1}) - \gamma(t_i) > 0`; with ``strict=False``, ties and dips of a few
          ulps of :math:`\max|\gamma|` are accepted, for families whose derivative vanishes at isolated times
          (:class:`Polynomial` where its quadratic has a root in (0, 1) shows such rounding noise in float32);
        * **derivative**: on a grid clustered at both ends (:math:`t_k = (1 - \cos(\pi k / (N-1)))/2`), the
          integral of the ``jax.jvp`` derivative over each step (five-point Gauss-Legendre), summed, matches
          :math:`\gamma(t_k) - \gamma(t_1)` to ``derivative_rtol`` relative to the range of gamma. The outermost
          step at each end (:math:`|t - \text{end}| < 2.5/N^2`) is left out: a log SNR that diverges at an end
          (truncated cosine or EDM with far endpoints) is resolved there by no floating-point grid. This catches
          a ``custom_jvp`` rule that disagrees with the values it decorates.

        Everything is evaluated in one compiled ``jax.jvp`` call at about ``7 * num_points`` times per context
        row.

    Args:
        gamma_fn: the schedule, called as ``gamma_fn(t, context)`` with ``t`` of shape ``(B,)``.
        shape: the data's event shape (H, W, C), without the batch dimension.
        context: contexts of shape ``(R, K)``; each row is checked on the whole grid. ``None`` for schedules
            without a context.
        gamma_min: expected gamma at t = 0, or ``None`` to skip that check.
        gamma_max: expected gamma at t = 1, or ``None``.
        num_points: grid size (>= 3).
        atol: absolute tolerance of the endpoint check.
        derivative_rtol: relative tolerance of the derivative check.
        strict: require strictly increasing values on the grid (default) rather than non-decreasing up to
            rounding.
        raise_on_failure: raise ``ValueError`` when a check fails (default); otherwise return the report.

    Returns:
        A :class:`ScheduleReport`.

    Raises:
        ValueError: when a check fails and ``raise_on_failure``; for a malformed output shape (always); for
            ``num_points < 3`` or a context that is not of shape ``(R, ...)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import FixedLinear, check_schedule
        >>> report = check_schedule(FixedLinear(), (2,), gamma_min=-13.3, gamma_max=5.0)
        >>> report.passed, report.failures
        (True, ())
        >>> check_schedule(lambda t, c: jnp.square(t - 0.5), (2,))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `check_schedule`: `gamma_fn` failed 1 check(s): not increasing: ... at t_i = 0 (need > 0).
    """
    where = "check_schedule"
    event_shape = check_event_shape(where, shape)
    num_points = check_positive_int(where, "num_points", num_points, minimum=3)
    if context is not None:
        context = jnp.asarray(context)
        if context.ndim < 1:
            raise ValueError(f"`{where}`: `context` must have a leading row dimension; got shape {context.shape}.")
    dtype = jnp.result_type(float)
    grid = np.asarray(np.linspace(0.0, 1.0, num_points), dtype=dtype)
    k = np.arange(num_points)
    # Knots rounded to the working dtype first, so that step lengths match the times actually evaluated.
    knots = np.asarray(0.5 * (1.0 - np.cos(np.pi * k / (num_points - 1))), dtype=dtype).astype(np.float64)
    steps = np.diff(knots)
    nodes = (knots[:-1, None] + steps[:, None] * _GL_X[None, :]).reshape(-1)
    times = jnp.asarray(np.concatenate([grid, knots, nodes]), dtype)
    values, rates = _evaluate_on(gamma_fn, times, context, event_shape)
    gamma = values[:, :num_points]
    knot_gamma = values[:, num_points:2 * num_points]
    rate = rates[:, 2 * num_points:]

    failures = []
    finite = bool(np.all(np.isfinite(values)) and np.all(np.isfinite(rates)))
    if not finite:
        failures.append("non-finite gamma or derivative values on the grid.")
    low, high = gamma[:, 0], gamma[:, -1]
    for name, expected, values in (("gamma_min", gamma_min, low), ("gamma_max", gamma_max, high)):
        if expected is not None:
            error = float(np.nanmax(np.abs(values - expected))) if values.size else 0.0
            if not error <= atol:
                at = "0" if name == "gamma_min" else "1"
                failures.append(f"gamma(t={at}) differs from {name}={expected} by {error:.3g} (atol={atol}).")
    increments = np.diff(gamma, axis=1)
    min_increment = float(np.nanmin(increments))
    # Non-strict: ties and rounding-level dips (a few ulps of the largest |gamma|) are accepted.
    rounding = 16.0 * float(jnp.finfo(dtype).eps) * float(np.nanmax(np.abs(gamma)))
    threshold = 0.0 if strict else -rounding
    if not (min_increment > threshold if strict else min_increment >= threshold):
        i = int(np.unravel_index(np.nanargmin(increments), increments.shape)[1])
        need = "> 0" if strict else f">= -{rounding:.3g} (rounding)"
        failures.append(f"not increasing: gamma(t_{{i+1}}) - gamma(t_i) = {min_increment:.4g} at t_i = "
                        f"{float(grid[i]):.4g} (need {need}).")
    rate = rate.reshape((rate.shape[0], num_points - 1, _GL_X.size) + rate.shape[2:])
    weights = (steps[:, None] * _GL_W[None, :]).reshape((1, num_points - 1, _GL_X.size) + (1,) * (rate.ndim - 3))
    # The outermost step at each end (|t - end| < 2.5 / num_points**2) is left out: where log SNR diverges at an end
    # (truncated cosine, EDM with far endpoints) no floating-point grid resolves it.
    integral = np.cumsum(np.sum(rate * weights, axis=2)[:, 1:-1], axis=1)
    change = knot_gamma[:, 2:-1] - knot_gamma[:, 1:2]
    span = np.maximum(np.ptp(knot_gamma[:, 1:-1], axis=1, keepdims=True), np.finfo(np.float32).tiny)
    max_derivative_error = float(np.nanmax(np.abs(integral - change) / span)) if finite else math.inf
    if not max_derivative_error <= derivative_rtol:
        failures.append(f"the jax.jvp derivative integrates to a gamma change off by {max_derivative_error:.3g} of "
                        f"the range of gamma (derivative_rtol={derivative_rtol}).")
    report = ScheduleReport(
        passed=not failures, failures=tuple(failures),
        gamma_at_0=(float(np.nanmin(low)), float(np.nanmax(low))),
        gamma_at_1=(float(np.nanmin(high)), float(np.nanmax(high))),
        min_increment=min_increment, max_derivative_error=max_derivative_error, finite=finite,
    )
    if failures and raise_on_failure:
        raise ValueError(f"`{where}`: `gamma_fn` failed {len(failures)} check(s): " + " ".join(failures))
    return report
