r"""The Kingma & Gao weighted diffusion loss, with log-SNR importance densities (fixed families and adaptive).

:func:`weighted_diffusion_term` estimates :math:`\mathcal L_w` for a weighting of :mod:`~mulan_ppl.hvae.weighting`,
drawing noise levels uniformly in time through the model's schedule or from an importance density over log-SNR;
:class:`AdaptiveImportance` is Kingma & Gao's adaptive importance density, a pure-state histogram estimator.
The weightings and densities are written in log-SNR :math:`\lambda = -\gamma`, Kingma & Gao's variable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl import core
from mulan_ppl._validation import as_float_array, check_one_of, check_positive_int, is_concrete
from mulan_ppl.hvae.diffusion import PARAMETERIZATIONS, sample_times
from mulan_ppl.schedules import evaluate_schedule, gamma_and_derivative
from mulan_ppl.schedules._common import GAMMA_MAX, GAMMA_MIN, as_time, check_endpoints, interpolate

__all__ = ["AdaptiveImportance", "AdaptiveImportanceState", "weighted_diffusion_term"]

_WHERE = "weighted_diffusion_term"
# Endpoints of `importance` and `gamma_fn` must agree to this tolerance (checked when both are concrete).
_ENDPOINT_RTOL = 1e-4


def weighted_diffusion_term(
    x: jax.Array,
    key: jax.Array,
    gamma_fn: Callable,
    denoiser: Callable,
    *,
    weighting: Callable[[jax.Array], jax.Array],
    importance: Callable | None = None,
    parameterization: str = "eps",
    context=None,
    antithetic: bool = True,
    times: jax.Array | None = None,
    return_aux: bool = False,
):
    r"""Per-example Kingma & Gao weighted diffusion loss :math:`\mathcal L_w`, in nats for the ELBO weighting.

    Mathematical details:
        With :math:`z_t = \alpha_t x + \sigma_t\varepsilon`, log-SNR :math:`\lambda_i(t) = -\gamma_i(t)` and a
        weighting :math:`w` of log-SNR (Kingma & Gao, Eq. 5, applied per dimension when the schedule is):

        .. math:: \mathcal L_w(x) = \tfrac12\,\mathbb E_{t\sim U(0,1),\,\varepsilon}\Big[\sum_i w(\lambda_i)
            \Big(-\frac{d\lambda_i}{dt}\Big)(\varepsilon_i - \hat\varepsilon_i)^2\Big].

        The per-dimension rate :math:`\tfrac12\gamma_i'(t)(\varepsilon_i - \hat\varepsilon_i)^2` is the
        continuous-time limit :math:`-\partial_s` of :func:`mulan_ppl.core.per_step_kl` at :math:`s = t`, taken by
        :func:`jax.jvp` exactly as :func:`~mulan_ppl.hvae.diffusion_term` takes it, so ``weighting=elbo_weighting``
        reproduces ``diffusion_term(..., num_steps=None)`` for the same key (or ``times``), and ``"v"`` / ``"x"``
        predictions are compared in the same stable form.

        **Importance density.** For a scalar schedule the loss is :math:`\tfrac12\int_{\lambda_{\min}}^{
        \lambda_{\max}} w(\lambda)\,\mathbb E\lVert\varepsilon - \hat\varepsilon\rVert^2 d\lambda` (their Eq. 6): it
        depends on the schedule only through its endpoints, and any density :math:`p(\lambda)` on the same interval
        gives an unbiased estimator (their Eq. 7),

        .. math:: \mathcal L_w(x) = \tfrac12\,\mathbb E_{\lambda\sim p,\,\varepsilon}\Big[\frac{w(\lambda)}{p(\lambda)}
            \lVert\varepsilon - \hat\varepsilon\rVert^2\Big].

        ``importance`` is such a density written as a scalar schedule :math:`u \mapsto \gamma(u)` (any
        :mod:`mulan_ppl.schedules` family: ``Cosine``, ``ShiftedCosine``, ``EDM``, ``FixedLinear``, ``VPLinear``, or
        :meth:`AdaptiveImportance.schedule`): :math:`u \sim U(0, 1)`, :math:`\lambda = -\gamma(u)` and
        :math:`1/p(\lambda) = d\gamma/du`, so the estimator is the uniform-time one run on the importance schedule.
        The draw and the density are constants of the loss (``stop_gradient``). The denoiser receives the time
        :math:`t = \gamma_{\text{fn}}^{-1}(\gamma)` at which the model's own schedule reaches that noise level (by
        bisection), so a time-conditioned denoiser sees consistent inputs; ``gamma_fn`` gets no gradient, as the
        loss does not depend on its interior. The change of variables needs one log-SNR per example, so
        ``importance`` requires a scalar ``gamma_fn`` (for a per-dimension schedule the path through log-SNR space
        matters).

    Args:
        x: continuous data (images encoded to [-1, 1]), shape ``(B, *event)``.
        key: typed PRNG key; split into time and noise keys as :func:`~mulan_ppl.hvae.diffusion_term` splits it.
        gamma_fn: the model's schedule ``gamma_fn(t, context)``, returning ``(B,)`` or ``(B, *event)``.
        denoiser: ``denoiser(z_t, t, gamma_t, context)`` returning the prediction named by ``parameterization``,
            shape ``(B, *event)``; ``gamma_t`` arrives broadcast to ``(B, *event)``.
        weighting: ``w(log_snr)``, elementwise (e.g. :func:`~mulan_ppl.hvae.weighting.sigmoid_weighting`).
        importance: optional scalar schedule ``importance(u, context) -> gamma`` of shape ``(B,)`` whose log-SNR
            range equals ``gamma_fn``'s; ``None`` draws t uniformly.
        parameterization: ``"eps"``, ``"v"`` or ``"x"``.
        context: the auxiliary latent passed to ``gamma_fn``, ``importance`` and ``denoiser`` (or ``None``).
        antithetic: low-discrepancy times over the batch (see :func:`~mulan_ppl.hvae.sample_times`).
        times: optional uniform variates of shape ``(B,)`` replacing the sampled ones: the model times ``t``, or
            the importance schedule's ``u`` when ``importance`` is given.
        return_aux: also return a dict with ``"t"`` (the denoiser's times, ``(B,)``), ``"log_snr"`` (``(B,)`` for
            a scalar schedule, else ``(B, *event)``) and ``"weighted_mse"`` :math:`\sum_i w(\lambda_i)
            (\varepsilon_i - \hat\varepsilon_i)^2` (``(B,)``), the quantity :meth:`AdaptiveImportance.update` tracks.

    Returns:
        Per-example loss, shape ``(B,)``; with ``return_aux`` the pair ``(loss, aux)``.

    Raises:
        ValueError: unknown ``parameterization``; ``x`` of rank 0; ``times`` not of shape ``(B,)``; a weighting that
            is not elementwise; a denoiser output of the wrong shape; a schedule output of the wrong shape;
            ``importance`` not returning ``(B,)``, combined with a per-dimension ``gamma_fn``, or (when concrete)
            with endpoints differing from ``gamma_fn``'s.
        TypeError: a non-callable ``weighting``, ``importance`` or ``gamma_fn``.

    Example:
        >>> from mulan_ppl.hvae.weighting import sigmoid_weighting
        >>> from mulan_ppl.schedules import Cosine, FixedLinear
        >>> x = jnp.zeros((2, 3))
        >>> denoiser = lambda z, t, g, c: jnp.zeros_like(z)  # predicts eps = 0
        >>> loss = weighted_diffusion_term(x, jax.random.key(0), FixedLinear(), denoiser,
        ...                                weighting=sigmoid_weighting(2.0), importance=Cosine())
        >>> print(loss.shape)
        (2,)

    References:
        1. Kingma, Gao. Understanding Diffusion Objectives as the ELBO with Simple Data Augmentation, Sec. 3,
           App. F. https://arxiv.org/abs/2303.00848
        2. Kingma, Salimans, Poole, Ho. Variational Diffusion Models. https://arxiv.org/abs/2107.00630
    """
    check_one_of(_WHERE, "parameterization", parameterization, PARAMETERIZATIONS)
    for name, value in (("weighting", weighting), ("gamma_fn", gamma_fn), ("denoiser", denoiser)):
        if not callable(value):
            raise TypeError(f"`{_WHERE}`: `{name}` must be callable; got {type(value).__name__}.")
    if importance is not None and not callable(importance):
        raise TypeError(f"`{_WHERE}`: `importance` must be a schedule callable as importance(u, context) or None; "
                        f"got {type(importance).__name__}.")
    x = as_float_array(x, "x", _WHERE)
    if x.ndim < 1:
        raise ValueError(f"`{_WHERE}`: `x` must have shape (batch, *event); got x.shape={x.shape}.")
    batch, event_shape = x.shape[0], x.shape[1:]

    time_key, noise_key = jax.random.split(key)
    if times is None:
        u = sample_times(time_key, batch, antithetic=antithetic, dtype=x.dtype)
    else:
        u = as_float_array(times, "times", _WHERE).astype(x.dtype)
        if u.shape != (batch,):
            raise ValueError(f"`{_WHERE}`: `times` must have shape ({batch},); got times.shape={u.shape}.")
    if importance is None:
        t = u
        gamma_t, dgamma_dt = gamma_and_derivative(gamma_fn, t, context, event_shape)
    else:
        t, gamma_t, dgamma_dt = _importance_levels(importance, gamma_fn, u, context, event_shape)

    eps = jax.random.normal(noise_key, x.shape, x.dtype)
    alpha_t, sigma_t = core.alpha_sigma(gamma_t)
    z_t = alpha_t * x + sigma_t * eps
    prediction = denoiser(z_t, t, jnp.broadcast_to(gamma_t, z_t.shape), context)
    if jnp.shape(prediction) != z_t.shape:
        raise ValueError(f"`{_WHERE}`: `denoiser` must return a {parameterization!r} prediction of the shape of z_t "
                         f"{z_t.shape}; got shape {jnp.shape(prediction)}.")

    def kl_at(gamma_s):  # KL(q(z_s|z_t,x) || p(z_s|z_t)) per dimension, 0 at gamma_s = gamma_t
        return core.per_step_kl(x, z_t, gamma_s, gamma_t, prediction, parameterization=parameterization, eps=eps)

    # -d/ds KL at s = t, per dimension: the tangent of gamma_s is -gamma'(t) (as diffusion_term's jvp in t).
    _, rate = jax.jvp(kl_at, (gamma_t,), (-dgamma_dt,))
    log_snr = -gamma_t
    weight = weighting(log_snr)
    if jnp.shape(weight) != log_snr.shape:
        raise ValueError(f"`{_WHERE}`: `weighting` must be elementwise, returning the shape of log_snr "
                         f"{log_snr.shape}; got shape {jnp.shape(weight)}.")
    axes = tuple(range(1, x.ndim))
    loss = jnp.sum(weight * rate, axis=axes)
    if not return_aux:
        return loss
    # d KL / d log-SNR = (eps - eps_hat)^2 / 2 per dimension (Kingma & Gao, Eq. 144).
    _, per_log_snr = jax.jvp(kl_at, (gamma_t,), (-jnp.ones_like(gamma_t),))
    scalar = all(d == 1 for d in gamma_t.shape[1:])
    aux = {
        "t": t,
        "log_snr": log_snr.reshape(batch) if scalar else jnp.broadcast_to(log_snr, x.shape),
        "weighted_mse": 2.0 * jnp.sum(weight * per_log_snr, axis=axes),
    }
    return loss, aux


def _importance_levels(importance, gamma_fn, u, context, event_shape):
    """Noise levels drawn from ``importance`` at ``u``; returns (model time, gamma, d gamma / du), gamma (B, 1..)."""
    batch = u.shape[0]

    def draw(s):
        gamma = jnp.asarray(importance(s, context))
        if gamma.shape != (batch,) or not jnp.issubdtype(gamma.dtype, jnp.floating):
            raise ValueError(f"`{_WHERE}`: `importance` must be a scalar log-SNR density, returning floating gamma of "
                             f"shape (batch,) = ({batch},); got shape {gamma.shape}, dtype {gamma.dtype}.")
        return gamma.astype(u.dtype)

    gamma, dgamma_du = jax.lax.stop_gradient(jax.jvp(draw, (u,), (jnp.ones_like(u),)))
    zeros, ones = jnp.zeros_like(u), jnp.ones_like(u)
    model_ends = [evaluate_schedule(gamma_fn, s, context, event_shape) for s in (zeros, ones)]
    if any(d != 1 for d in model_ends[0].shape[1:]):
        raise ValueError(
            f"`{_WHERE}`: `importance` needs a scalar `gamma_fn` (one log-SNR per example); got a per-dimension "
            f"schedule with gamma of shape {model_ends[0].shape}. With a per-dimension schedule use importance=None."
        )
    ends = [draw(zeros), draw(ones)]
    if is_concrete(*model_ends, *ends):
        for name, model_end, end in zip(("gamma_fn(0)", "gamma_fn(1)"), model_ends, ends):
            model_end, end = np.asarray(model_end).reshape(batch), np.asarray(end)
            if not np.allclose(end, model_end, rtol=_ENDPOINT_RTOL, atol=_ENDPOINT_RTOL):
                raise ValueError(
                    f"`{_WHERE}`: `importance` must cover the log-SNR range of `gamma_fn`, or the two estimators "
                    f"target different objectives; got importance endpoint {end.ravel()[:4]} against {name} = "
                    f"{model_end.ravel()[:4]}."
                )
    t = _schedule_time(gamma_fn, gamma, context, event_shape)
    shape = (batch,) + (1,) * len(event_shape)
    return t, gamma.reshape(shape), dgamma_du.reshape(shape)


def _schedule_time(gamma_fn, gamma, context, event_shape) -> jax.Array:
    """The time at which the scalar, increasing ``gamma_fn`` reaches ``gamma`` (B,), by bisection on [0, 1]."""
    batch = gamma.shape[0]

    def body(_, bounds):
        low, high = bounds
        mid = 0.5 * (low + high)
        below = evaluate_schedule(gamma_fn, mid, context, event_shape).reshape(batch) < gamma
        return jnp.where(below, mid, low), jnp.where(below, high, mid)

    steps = jnp.finfo(gamma.dtype).nmant + 2
    low, high = jax.lax.fori_loop(0, steps, body, (jnp.zeros_like(gamma), jnp.ones_like(gamma)))
    return jax.lax.stop_gradient(0.5 * (low + high))


class AdaptiveImportanceState(NamedTuple):
    """State of :class:`AdaptiveImportance` (a pytree of arrays).

    Example:
        >>> state = AdaptiveImportance(num_bins=3).init()
        >>> state.ema, len(jax.tree.leaves(state))
        (Array([1., 1., 1.], dtype=float32), 1)
    """

    ema: jax.Array  # (num_bins,) float: per-bin EMA of w(lambda) ||eps - eps_hat||^2; bin k in increasing gamma


class AdaptiveImportance:
    r"""Kingma & Gao's adaptive importance density over log-SNR: a histogram of the weighted loss, as pure state.

    Mathematical details:
        The target is :math:`p(\lambda) \propto \mathbb E_{x,\varepsilon}[w(\lambda)\lVert\varepsilon -
        \hat\varepsilon\rVert^2]` (Kingma & Gao, Eq. 136), under which the importance-weighted loss
        :math:`(w/p)\lVert\varepsilon - \hat\varepsilon\rVert^2` is about constant in :math:`\lambda`. As in their
        App. F/H, :math:`[\gamma_{\min}, \gamma_{\max}]` (log-SNR :math:`[-\gamma_{\max}, -\gamma_{\min}]`) is cut
        into ``num_bins`` equal bins of width :math:`\Delta`, each holding an EMA :math:`e_k` (initial value 1,
        decay 0.999) of the weighted loss of the draws that fall in it; a bin with no draw is left unchanged
        (the paper does not say). The density is piecewise constant and its schedule piecewise linear:

        .. math:: m_k = (1 - f)\,\frac{e_k}{\sum_j e_j} + \frac{f}{K}, \qquad p(\lambda) = m_k/\Delta
            \text{ on bin } k, \qquad \gamma(u) = \gamma_{\min} + \Delta\Big(k + \frac{u - C_k}{m_k}\Big)
            \text{ for } u \in [C_k, C_{k+1}),

        with :math:`C_k = \sum_{j<k} m_j` and an optional floor :math:`f` (0 in the paper) that bounds
        :math:`w/p`. Bins are indexed by increasing :math:`\gamma` (decreasing log-SNR). The object holds only
        Python configuration; every method is pure in the state, so it jits and the state can be checkpointed.

    Args:
        gamma_min: lower end of the noise range (match the model schedule's; default -13.3).
        gamma_max: upper end (default 5.0).
        num_bins: number of bins :math:`K` (default 100).
        decay: EMA decay in (0, 1) (default 0.999).
        initial_value: initial EMA of every bin, > 0 (default 1).
        floor: uniform mixing weight :math:`f \in [0, 1)` (default 0).

    Raises:
        ValueError: ``gamma_min >= gamma_max``, ``num_bins < 1``, ``decay`` outside (0, 1), ``initial_value <= 0``
            or ``floor`` outside [0, 1).

    Example:
        >>> adaptive = AdaptiveImportance(gamma_min=-10.0, gamma_max=10.0, num_bins=4, decay=0.5)
        >>> state = adaptive.init()
        >>> state = adaptive.update(state, jnp.array([-2.0, -4.5]), jnp.array([3.0, 5.0]))  # both in bin 2
        >>> print(state.ema)
        [1.  1.  2.5 1. ]
        >>> print(adaptive.probabilities(state).round(3))
        [0.182 0.182 0.455 0.182]
    """

    def __init__(self, *, gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX, num_bins: int = 100,
                 decay: float = 0.999, initial_value: float = 1.0, floor: float = 0.0):
        where = "AdaptiveImportance"
        self.gamma_min, self.gamma_max = check_endpoints(where, gamma_min, gamma_max)
        self.num_bins = check_positive_int(where, "num_bins", num_bins)
        for name, value, low, high, closed in (("decay", decay, 0.0, 1.0, False), ("floor", floor, 0.0, 1.0, True)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or not ((low <= value if closed else low < value) and value < high):
                bracket = "[" if closed else "("
                raise ValueError(f"`{where}`: `{name}` must be a number in {bracket}{low:g}, {high:g}); "
                                 f"got {name}={value!r}.")
        if isinstance(initial_value, bool) or not isinstance(initial_value, (int, float)) or not (
                math.isfinite(initial_value) and initial_value > 0):
            raise ValueError(f"`{where}`: `initial_value` must be a finite number > 0; got "
                             f"initial_value={initial_value!r}.")
        self.decay, self.floor, self.initial_value = float(decay), float(floor), float(initial_value)

    @property
    def bin_width(self) -> float:
        r"""The bin width :math:`\Delta = (\gamma_{\max} - \gamma_{\min})/K`."""
        return (self.gamma_max - self.gamma_min) / self.num_bins

    def __repr__(self) -> str:
        return (f"AdaptiveImportance(gamma_min={self.gamma_min}, gamma_max={self.gamma_max}, "
                f"num_bins={self.num_bins}, decay={self.decay}, initial_value={self.initial_value}, "
                f"floor={self.floor})")

    def init(self, dtype=None) -> AdaptiveImportanceState:
        """The initial state: every bin's EMA at ``initial_value`` (uniform density)."""
        return AdaptiveImportanceState(jnp.full((self.num_bins,), self.initial_value, dtype or jnp.result_type(float)))

    def _ema(self, where: str, state) -> jax.Array:
        ema = jnp.asarray(getattr(state, "ema", state))
        if ema.shape != (self.num_bins,):
            raise ValueError(f"`AdaptiveImportance.{where}`: `state.ema` must have shape (num_bins,) = "
                             f"({self.num_bins},); got {ema.shape}.")
        return jax.lax.stop_gradient(ema)

    def _knots(self, where: str, state) -> jax.Array:
        """Cumulative masses C_0 = 0, ..., C_K = 1, shape (K + 1,)."""
        ema = self._ema(where, state)
        mass = (1.0 - self.floor) * ema / jnp.sum(ema) + self.floor / self.num_bins
        inner = jnp.cumsum(mass)[:-1]
        return jnp.concatenate([jnp.zeros((1,), ema.dtype), inner, jnp.ones((1,), ema.dtype)])

    def probabilities(self, state: AdaptiveImportanceState) -> jax.Array:
        """Bin probabilities :math:`m_k`, shape ``(num_bins,)``, summing to 1 (bins in increasing gamma)."""
        return jnp.diff(self._knots("probabilities", state))

    def _gamma(self, knots: jax.Array, u: jax.Array) -> jax.Array:
        k = jnp.searchsorted(knots[1:-1], u, side="right", method="compare_all")
        low, high = knots[k], knots[k + 1]
        width = jnp.where(high > low, high - low, 1.0)
        ratio = (k.astype(u.dtype) + (u - low) / width) / self.num_bins
        return interpolate(self.gamma_min, self.gamma_max, ratio)

    def schedule(self, state: AdaptiveImportanceState) -> Callable:
        r"""The density as a scalar schedule ``(u, context) -> gamma`` of shape ``(B,)``, for ``importance=``.

        Piecewise linear in ``u`` with :math:`d\gamma/du = \Delta/m_k = 1/p(\lambda)`; ``context`` is ignored and
        the state is held constant (``stop_gradient``).

        Example:
            >>> adaptive = AdaptiveImportance(gamma_min=-10.0, gamma_max=10.0, num_bins=2)
            >>> print(adaptive.schedule(adaptive.init())(jnp.array([0.0, 0.25, 1.0]), None))
            [-10.  -5.  10.]
        """
        knots = self._knots("schedule", state)

        def gamma_fn(u, context=None):
            del context
            u = as_time("AdaptiveImportance.schedule", u)
            return self._gamma(knots.astype(u.dtype), u)

        return gamma_fn

    def log_density(self, state: AdaptiveImportanceState, log_snr: jax.Array) -> jax.Array:
        r"""Log-density :math:`\log p(\lambda) = \log m_k - \log\Delta` of log-SNR; ``-inf`` outside the range.

        Example:
            >>> adaptive = AdaptiveImportance(gamma_min=-10.0, gamma_max=10.0)
            >>> print(jnp.exp(adaptive.log_density(adaptive.init(), jnp.array([0.0, 11.0]))))
            [0.05 0.  ]
        """
        mass = self.probabilities(state)
        log_snr = as_float_array(log_snr, "log_snr", "AdaptiveImportance.log_density")
        gamma = -log_snr
        inside = (gamma >= self.gamma_min) & (gamma <= self.gamma_max)
        log_p = jnp.log(mass[self._bin(gamma)]).astype(log_snr.dtype) - math.log(self.bin_width)
        return jnp.where(inside, log_p, -jnp.inf)

    def sample(self, state: AdaptiveImportanceState, key: jax.Array, n: int) -> jax.Array:
        """``n`` log-SNR draws from the density (``u ~ U(0, 1)`` through :meth:`schedule`), shape ``(n,)``.

        Example:
            >>> adaptive = AdaptiveImportance()
            >>> print(adaptive.sample(adaptive.init(), jax.random.key(0), 3).shape)
            (3,)
        """
        n = check_positive_int("AdaptiveImportance.sample", "n", n)
        ema = self._ema("sample", state)
        u = jax.random.uniform(key, (n,), ema.dtype)
        return -self.schedule(state)(u)

    def _bin(self, gamma: jax.Array) -> jax.Array:
        index = jnp.floor((gamma - self.gamma_min) / self.bin_width).astype(jnp.int32)
        return jnp.clip(index, 0, self.num_bins - 1)

    def update(self, state: AdaptiveImportanceState, log_snr: jax.Array,
               values: jax.Array) -> AdaptiveImportanceState:
        r"""One EMA step per bin with the mean of the values that fall in it: :math:`e_k \leftarrow d\,e_k +
        (1 - d)\,\overline{v}_k`; bins with no value keep their EMA.

        Args:
            state: the current state.
            log_snr: log-SNR of each draw, shape ``(n,)`` (``aux["log_snr"]`` of
                :func:`weighted_diffusion_term`); values beyond the range count in the end bins.
            values: :math:`w(\lambda)\lVert\varepsilon - \hat\varepsilon\rVert^2 \ge 0` of each draw, shape ``(n,)``
                (``aux["weighted_mse"]``); held constant (``stop_gradient``).

        Returns:
            The new state.

        Raises:
            ValueError: shapes other than ``(n,)`` and ``(n,)``, a state of the wrong shape, or (when concrete)
                negative or non-finite ``values``.
        """
        where = "AdaptiveImportance.update"
        ema = self._ema("update", state)
        log_snr = as_float_array(log_snr, "log_snr", where)
        values = jax.lax.stop_gradient(as_float_array(values, "values", where))
        if log_snr.ndim != 1 or values.shape != log_snr.shape:
            raise ValueError(f"`{where}`: `log_snr` and `values` must both have shape (n,); got "
                             f"log_snr.shape={log_snr.shape}, values.shape={values.shape}.")
        if is_concrete(values):
            bad = ~np.isfinite(np.asarray(values)) | (np.asarray(values) < 0)
            if bad.any():
                raise ValueError(f"`{where}`: `values` must be finite and >= 0; got {int(bad.sum())} invalid entries.")
        index = self._bin(-log_snr)
        sums = jax.ops.segment_sum(values.astype(ema.dtype), index, self.num_bins)
        counts = jax.ops.segment_sum(jnp.ones_like(values, ema.dtype), index, self.num_bins)
        mean = sums / jnp.maximum(counts, 1.0)
        return AdaptiveImportanceState(jnp.where(counts > 0, self.decay * ema + (1.0 - self.decay) * mean, ema))
