"""The diffusion term of the ELBO, from the pair (top-down posterior, reverse transition) of one level.

Discrete time is ``T`` times the registered KL of a randomly drawn level; continuous time is the limit of the same
KL, ``-d/ds KL(q(z_s|z_t,x) ‖ p(z_s|z_t))`` at ``s = t``, taken with :func:`jax.jvp` through the schedule. No loss
formula is written here: a new noise family or prediction target gets both losses from the distributions alone.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from mulan_ppl import core
from mulan_ppl._validation import (
    as_float_array,
    check_key,
    check_one_of,
    check_positive_int,
    check_values,
)
from mulan_ppl.distrax import ReverseTransition, TopDownPosterior
from mulan_ppl.schedules import evaluate_schedule
from mulan_ppl.schedules._common import check_times

__all__ = ["PARAMETERIZATIONS", "REVERSE_VARIANCES", "diffusion_term", "sample_times"]

PARAMETERIZATIONS = core.DENOISER_TARGETS
REVERSE_VARIANCES = ("posterior", "forward")

GammaFn = Callable[[jax.Array, object], jax.Array]
Denoiser = Callable[[jax.Array, jax.Array, jax.Array, object], jax.Array]


def sample_times(key: jax.Array, batch_size: int, *, antithetic: bool = True, num_steps: int | None = None,
                 dtype=None) -> jax.Array:
    r"""Diffusion times for a batch, low-discrepancy over the whole (global) batch as in VDM.

    Mathematical details:
        With ``antithetic`` (the default), :math:`t_i = (u + i/B) \bmod 1` for one :math:`u \sim U(0, 1)`: every
        :math:`t_i` is uniform, and the batch covers [0, 1) evenly, which lowers the variance of the batch mean.
        Computed on the global batch, a sharded step sees the same times as an unsharded one. With ``num_steps=T``
        the times are rounded up to the grid, :math:`t = \lceil uT \rceil / T` (a level in 1..T; ``u = 0`` maps to
        level 1).

    Args:
        key: a typed PRNG key.
        batch_size: number of times ``B``.
        antithetic: low-discrepancy (True) or independent uniform times.
        num_steps: discretize to a ``T``-step grid.

    Returns:
        Times of shape ``(B,)``.

    Example:
        >>> t = sample_times(jax.random.key(0), 4)
        >>> print(t.shape, bool(jnp.all((t >= 0) & (t < 1))))
        (4,) True
    """
    dtype = dtype or jnp.result_type(float)
    if antithetic:
        u0 = jax.random.uniform(key, (), dtype)
        t = jnp.mod(u0 + jnp.arange(batch_size, dtype=dtype) / batch_size, 1.0)
    else:
        t = jax.random.uniform(key, (batch_size,), dtype)
    if num_steps is not None:
        t = jnp.maximum(jnp.ceil(t * num_steps), 1.0) / num_steps
    return t


def _denoise(denoiser: Denoiser, z_t, t, gamma_t, context, parameterization: str) -> jax.Array:
    prediction = denoiser(z_t, t, jnp.broadcast_to(gamma_t, z_t.shape), context)
    if jnp.shape(prediction) != z_t.shape:
        raise ValueError(
            f"`diffusion_term`: `denoiser` must return a {parameterization!r} prediction of the shape of z_t "
            f"{z_t.shape}; got shape {jnp.shape(prediction)}."
        )
    return check_values("diffusion_term", **{"denoiser(z_t, t, gamma_t, context)": prediction})[
        "denoiser(z_t, t, gamma_t, context)"]


def _level_kl(x, eps, z_t, prediction, gamma_s, gamma_t, parameterization, reverse_variance) -> jax.Array:
    """KL(q(z_s|z_t,x) ‖ p(z_s|z_t)) per example, through the registered KL of the two distributions."""
    q = TopDownPosterior(z_t, x, gamma_s, gamma_t, eps=eps)
    log_variance = None
    if reverse_variance == "forward":
        log_variance = jnp.broadcast_to(core.log_transition_variance(gamma_s, gamma_t), z_t.shape)
    p = ReverseTransition.from_prediction(z_t, prediction, gamma_s, gamma_t, parameterization=parameterization,
                                          log_variance=log_variance)
    return q.kl_divergence(p)


def diffusion_term(
    x: jax.Array,
    key: jax.Array,
    gamma_fn: GammaFn,
    denoiser: Denoiser,
    *,
    parameterization: str = "eps",
    context=None,
    num_steps: int | None = None,
    all_levels: bool = False,
    times: jax.Array | None = None,
    antithetic: bool = True,
    reverse_variance: str = "posterior",
) -> jax.Array:
    r"""Per-example diffusion loss of the top-down HVAE, in nats.

    Mathematical details:
        With :math:`z_t = \alpha_t x + \sigma_t\varepsilon` and the pair
        :math:`q(z_s|z_t,x)` (:class:`~mulan_ppl.distrax.TopDownPosterior`),
        :math:`p(z_s|z_t) = q(z_s|z_t,\hat x)` (:class:`~mulan_ppl.distrax.ReverseTransition`):

        * ``num_steps=T``: :math:`\mathcal L_T = T\,\mathrm{KL}(q \,\|\, p)` at one level
          :math:`(s, t) = ((i-1)/T, i/T)`, an unbiased estimate of the T-step term; with ``all_levels=True`` the
          sum over all T levels (each with its own :math:`z_t`), the exact T-step term up to the draw of z.
        * ``num_steps=None``: the continuous-time limit :math:`-\partial_s \mathrm{KL}(q\|p)|_{s=t}`, computed with
          :func:`jax.jvp` through ``gamma_fn`` (tangent -1 in s, the prediction held at t). For the registered KL it
          equals :math:`\tfrac12\sum_i \gamma_i'(t)(\varepsilon_i - \hat\varepsilon_i)^2` (MuLAN eq. 11, with a
          per-dimension :math:`\gamma'`).

    Args:
        x: continuous data (images encoded to [-1, 1]), shape ``(B, *event)``.
        key: typed PRNG key; split into time and noise keys.
        gamma_fn: schedule ``gamma_fn(t, context)`` returning ``(B, *event)`` or ``(B,)``.
        denoiser: ``denoiser(z_t, t, gamma_t, context)`` returning the prediction named by ``parameterization``,
            shape ``(B, *event)``; ``gamma_t`` arrives broadcast to ``(B, *event)``.
        parameterization: ``"eps"``, ``"v"`` or ``"x"``.
        context: the auxiliary latent passed to ``gamma_fn`` and ``denoiser`` (or ``None``).
        num_steps: ``None`` for continuous time, or the number of steps ``T >= 1``.
        all_levels: with ``num_steps``, sum the KLs of all T levels (cost: T denoiser calls).
        times: optional explicit times of shape ``(B,)`` (on the grid ``i/T`` for discrete time); replaces the
            sampled ones.
        antithetic: low-discrepancy times over the batch (see :func:`sample_times`).
        reverse_variance: ``"posterior"`` (the reverse transition has the posterior's variance; the default) or
            ``"forward"`` (the forward transition's variance, DDPM's larger choice; discrete time only).

    Returns:
        Per-example loss, shape ``(B,)``.

    Raises:
        ValueError: ``num_steps < 1``; unknown ``parameterization`` or ``reverse_variance``; ``all_levels`` without
            ``num_steps``; a ``"forward"`` reverse variance in continuous time (its KL grows like ``1/(t - s)``, so
            the limit is infinite); a denoiser output of the wrong shape; a schedule output of the wrong shape, or
            one that needs a context when ``context`` is ``None``; (when concrete) NaN or Inf in ``x`` or in the
            denoiser's output, ``times`` outside [0, 1].
        TypeError: ``key`` is not a PRNG key; ``x`` is not real-valued.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> x = jnp.zeros((2, 3))
        >>> denoiser = lambda z, t, g, c: jnp.zeros_like(z)  # predicts eps = 0
        >>> loss = diffusion_term(x, jax.random.key(0), FixedLinear(), denoiser)
        >>> print(loss.shape)
        (2,)
    """
    check_one_of("diffusion_term", "parameterization", parameterization, PARAMETERIZATIONS)
    check_one_of("diffusion_term", "reverse_variance", reverse_variance, REVERSE_VARIANCES)
    check_key("diffusion_term", key)
    x = as_float_array(x, "x", "diffusion_term")
    if x.ndim < 1:
        raise ValueError(f"`diffusion_term`: `x` must have shape (batch, *event); got x.shape={x.shape}.")
    check_values("diffusion_term", x=x)
    batch, event_shape = x.shape[0], x.shape[1:]
    if num_steps is not None:
        num_steps = check_positive_int("diffusion_term", "num_steps", num_steps)
    elif all_levels:
        raise ValueError("`diffusion_term`: `all_levels=True` needs an integer `num_steps`.")
    elif reverse_variance != "posterior":
        raise ValueError(
            "`diffusion_term`: `reverse_variance='forward'` has no continuous-time limit (a reverse transition whose "
            "variance differs from the posterior's has a per-step KL of order 1/(t - s)); pass `num_steps`."
        )

    def gamma_at(t):
        return evaluate_schedule(gamma_fn, t, context, event_shape)

    time_key, noise_key = jax.random.split(key)
    if all_levels:
        level_keys = jax.random.split(noise_key, num_steps)
        total = jnp.zeros((batch,), x.dtype)
        for i in range(1, num_steps + 1):  # Python loop: T is small whenever all levels are summed
            t = jnp.full((batch,), i / num_steps, x.dtype)
            total = total + _one_level(x, level_keys[i - 1], t, num_steps, gamma_at, denoiser, context,
                                       parameterization, reverse_variance) / num_steps
        return total
    if times is None:
        t = sample_times(time_key, batch, antithetic=antithetic, num_steps=num_steps, dtype=x.dtype)
    else:
        t = as_float_array(times, "times", "diffusion_term").astype(x.dtype)
        if t.shape != (batch,):
            raise ValueError(f"`diffusion_term`: `times` must have shape ({batch},); got {t.shape}.")
        check_times("diffusion_term", t, "times")
    return _one_level(x, noise_key, t, num_steps, gamma_at, denoiser, context, parameterization, reverse_variance)


def _one_level(x, key, t, num_steps, gamma_at, denoiser, context, parameterization, reverse_variance):
    """``T · KL`` at times ``t`` (discrete) or ``-∂_s KL`` at ``s = t`` (continuous), per example."""
    eps = jax.random.normal(key, x.shape, x.dtype)
    gamma_t = gamma_at(t)
    alpha_t, sigma_t = core.alpha_sigma(gamma_t)
    z_t = alpha_t * x + sigma_t * eps
    prediction = _denoise(denoiser, z_t, t, gamma_t, context, parameterization)

    def kl_at(s):
        return _level_kl(x, eps, z_t, prediction, gamma_at(s), gamma_t, parameterization, reverse_variance)

    if num_steps is not None:
        return num_steps * kl_at(jnp.maximum(t - 1.0 / num_steps, 0.0))
    _, rate = jax.jvp(kl_at, (t,), (-jnp.ones_like(t),))
    return rate
