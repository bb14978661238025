"""Evaluating any schedule callable with the library's shape contract, and its time derivative by ``jax.jvp``."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mulan_ppl._validation import check_values
from mulan_ppl.schedules._common import as_time, check_event_shape

__all__ = ["evaluate_schedule", "gamma_and_derivative"]


def evaluate_schedule(gamma_fn: Callable, t: jax.Array, context, event_shape: tuple[int, ...]) -> jax.Array:
    r"""Calls ``gamma_fn(t, context)`` and returns gamma with the rank of the data, ready to broadcast against it.

    Mathematical details:
        A schedule is any callable :math:`(t, c) \mapsto \gamma` with :math:`\gamma = -\log \mathrm{SNR}` increasing in
        :math:`t`. It returns one gamma per data dimension, shape ``(B, *event_shape)`` (or with some event
        dimensions of size 1), or one per example, shape ``(B,)``, which is reshaped to ``(B, 1, ..., 1)``.

    Args:
        gamma_fn: the schedule, called as ``gamma_fn(t, context)``.
        t: times in [0, 1], shape ``(B,)``.
        context: the auxiliary latent of shape ``(B, K)``, or ``None``; passed through unchanged.
        event_shape: the data's event shape (H, W, C).

    Returns:
        gamma, floating, of shape ``(B, *event_shape)`` or ``(B, e_1, ..., e_n)`` with each ``e_i`` 1 or the
        event size (``(B, 1, ..., 1)`` for a scalar schedule).

    Raises:
        ValueError: when ``t`` is not of shape ``(B,)``, or the output of ``gamma_fn`` is not floating or has none
            of the accepted shapes (naming ``gamma_fn`` and the shapes).
        TypeError: when ``gamma_fn`` is not callable.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import FixedLinear, evaluate_schedule
        >>> evaluate_schedule(FixedLinear(), jnp.array([0.0, 1.0]), None, (2, 3)).shape
        (2, 1, 1)
    """
    where = "evaluate_schedule"
    event_shape = check_event_shape(where, event_shape)
    if not callable(gamma_fn):
        raise TypeError(f"`{where}`: `gamma_fn` must be callable as gamma_fn(t, context); got "
                         f"{type(gamma_fn).__name__}.")
    t = as_time(where, t)
    batch = t.shape[0]
    gamma = jnp.asarray(gamma_fn(t, context))
    if not jnp.issubdtype(gamma.dtype, jnp.floating):
        raise ValueError(f"`{where}`: `gamma_fn` must return floating gamma; got dtype {gamma.dtype}.")
    check_values(where, **{"gamma_fn(t, context)": gamma})
    if gamma.shape == (batch,):
        return gamma.reshape((batch,) + (1,) * len(event_shape))
    if (gamma.ndim == len(event_shape) + 1 and gamma.shape[0] == batch
            and all(g in (1, e) for g, e in zip(gamma.shape[1:], event_shape))):
        return gamma
    raise ValueError(
        f"`{where}`: `gamma_fn` must return gamma of shape (batch,) = ({batch},) for a scalar schedule or "
        f"(batch, *event_shape) = {(batch, *event_shape)} (event dimensions may be 1); got gamma.shape="
        f"{tuple(gamma.shape)} for t.shape={tuple(t.shape)}."
    )


def gamma_and_derivative(gamma_fn: Callable, t: jax.Array, context,
                         event_shape: tuple[int, ...]) -> tuple[jax.Array, jax.Array]:
    r"""Returns gamma and :math:`d\gamma/dt` by one forward-mode pass (``jax.jvp`` in ``t``, tangent ones).

    Mathematical details:
        :math:`\dot\gamma = \partial_t \gamma(t, c)`, per example and dimension. Families with a closed-form
        derivative attach it with :func:`jax.custom_jvp`, which ``jax.jvp`` uses; others are differentiated.

    Args:
        gamma_fn: the schedule, called as ``gamma_fn(t, context)``.
        t: times in [0, 1], shape ``(B,)``.
        context: the auxiliary latent of shape ``(B, K)``, or ``None`` (held fixed).
        event_shape: the data's event shape (H, W, C).

    Returns:
        ``(gamma, dgamma_dt)``, both of the shape :func:`evaluate_schedule` returns.

    Raises:
        ValueError: as :func:`evaluate_schedule`.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import FixedLinear, gamma_and_derivative
        >>> gamma, rate = gamma_and_derivative(FixedLinear(), jnp.array([0.25, 0.5]), None, (1,))
        >>> print(rate[:, 0])
        [18.3 18.3]
    """
    t = as_time("gamma_and_derivative", t)
    return jax.jvp(lambda s: evaluate_schedule(gamma_fn, s, context, event_shape), (t,), (jnp.ones_like(t),))
