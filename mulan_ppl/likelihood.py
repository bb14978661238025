r"""Exact likelihood through the probability-flow ODE, and the dequantized bound on integer data.

:func:`ode_log_likelihood` integrates the probability-flow ODE of a (per-dimension, context-conditioned) schedule
from the data at ``t = 0`` to ``t = 1`` with Diffrax inside ``jit``, carrying the log-density change; drift and
divergence come from one vector-Jacobian product per evaluation, with one fixed Hutchinson probe per solve (or the
exact trace). :func:`dequantize` and :func:`dequantization_entropy` give the continuous density over each integer
bin; :func:`ode_bound` composes both with the auxiliary latent into a bound on :math:`\log P(x)` of a
:class:`~mulan_ppl.hvae.TopDownDiffusion` (MuLAN's eq. 84), optionally importance weighted.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from mulan_ppl import core
from mulan_ppl._ode import (
    SOLVERS,
    check_tolerance,
    make_augmented_drift,
    make_drift,
    solve_probability_flow,
)
from mulan_ppl._validation import (
    as_float_array,
    check_broadcasts_to,
    check_integer_data,
    check_key,
    check_one_of,
    check_positive_int,
    check_values,
)
from mulan_ppl.core.dequantization import DEQUANTIZATIONS
from mulan_ppl.schedules import evaluate_schedule

__all__ = [
    "DEQUANTIZATIONS",
    "PROBES",
    "SOLVERS",
    "TRACE_ESTIMATORS",
    "check_ode_bound_options",
    "dequantization_entropy",
    "dequantize",
    "ode_bound",
    "ode_log_likelihood",
    "solve_probability_flow",
]

TRACE_ESTIMATORS = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")


def _sum_event(values: jax.Array) -> jax.Array:
    return values.reshape(values.shape[0], -1).sum(axis=1)


def _standard_normal_log_prob(z: jax.Array) -> jax.Array:
    return _sum_event(-0.5 * jnp.square(z) - 0.5 * math.log(2.0 * math.pi))


def _prior_log_prob(prior, z_1: jax.Array) -> jax.Array:
    if prior is None:
        return _standard_normal_log_prob(z_1)
    log_prob = prior.log_prob(z_1)
    if log_prob.shape == z_1.shape:
        return _sum_event(log_prob)
    if log_prob.shape != z_1.shape[:1]:
        raise ValueError(
            f"`ode_log_likelihood`: `prior.log_prob(z_1)` must have shape {z_1.shape[:1]} (per example) or "
            f"{z_1.shape} (per dimension); got {log_prob.shape}."
        )
    return log_prob


def ode_log_likelihood(
    x: jax.Array,
    key: jax.Array,
    gamma_fn,
    denoiser,
    *,
    parameterization: str = "eps",
    context=None,
    prior=None,
    trace: str = "hutchinson",
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> tuple[jax.Array, jax.Array]:
    r"""Log-density of continuous data under the probability-flow ODE model, per example, in nats.

    Mathematical details:
        With the drift :math:`h(z, t)` of :func:`~mulan_ppl.core.probability_flow_drift` (per-dimension
        :math:`\gamma(t, c)`, the context :math:`c` held fixed) the ODE maps :math:`z_0 = x` to :math:`z_1`, and

        .. math:: \log p_0(x) = \log p_1(z_1) + \int_0^1 \operatorname{tr}\nabla_z h(z_t, t)\,dt

        (MuLAN's eq. 83 has the opposite sign; math-notes §6). The trace is exact (``trace="exact"``: one
        vector-Jacobian product per dimension) or Hutchinson's :math:`\epsilon^\top(\nabla_z h)\epsilon` with **one**
        probe :math:`\epsilon` drawn per solve, so the right-hand side is a fixed smooth function under the adaptive
        step-size control. Drift and divergence come from one ``jax.vjp`` per evaluation.

    Args:
        x: continuous data (the ``[-1, 1]`` scale for images), shape ``(B, *event)``.
        key: typed PRNG key (the Hutchinson probe).
        gamma_fn: schedule ``gamma_fn(t, context)``, as in :func:`~mulan_ppl.hvae.diffusion_term`.
        denoiser: ``denoiser(z_t, t, gamma_t, context)`` returning the ``parameterization`` prediction; it must be
            deterministic (evaluation mode).
        parameterization: ``"eps"``, ``"v"``, ``"x"`` or ``"score"``.
        context: the auxiliary latent passed to both (or ``None``).
        prior: distribution over :math:`z_1` with a ``log_prob`` (per example or per dimension); default
            :math:`\mathcal N(0, I)`.
        trace: ``"hutchinson"`` or ``"exact"``.
        probe: Hutchinson probe, ``"rademacher"`` or ``"gaussian"``.
        rtol, atol: tolerances of the adaptive solver (> 0).
        solver: ``"tsit5"`` or ``"dopri5"``.
        max_steps: step budget of the solver.

    Returns:
        ``(log_prob, nfe)``: shape ``(B,)`` and the number of drift evaluations (a scalar).

    Raises:
        ValueError: non-positive tolerances, an unknown option, ``x`` without a batch axis, a denoiser or prior of
            the wrong shape.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> schedule = FixedLinear(gamma_min=-5.0, gamma_max=5.0)
        >>> exact = lambda z, t, g, c: jnp.sqrt(jax.nn.sigmoid(g)) * z  # eps-hat for N(0, 1) data
        >>> log_p, nfe = ode_log_likelihood(jnp.zeros((1, 2)), jax.random.key(0), schedule, exact, trace="exact")
        >>> print(jnp.round(log_p, 4))  # log N(0; 0, I_2) = -log(2 pi)
        [-1.8379]
    """
    where = "ode_log_likelihood"
    check_one_of(where, "parameterization", parameterization, core.PARAMETERIZATIONS)
    check_one_of(where, "trace", trace, TRACE_ESTIMATORS)
    check_one_of(where, "probe", probe, PROBES)
    rtol = check_tolerance(where, "rtol", rtol)
    atol = check_tolerance(where, "atol", atol)
    check_one_of(where, "solver", solver, tuple(SOLVERS))
    check_key(where, key)
    x = as_float_array(x, "x", where)
    if x.ndim < 2:
        raise ValueError(f"`{where}`: `x` must have shape (batch, *event); got x.shape={x.shape}.")
    check_values(where, x=x)
    batch, event_shape = x.shape[0], x.shape[1:]
    drift = make_drift(gamma_fn, denoiser, context, event_shape, parameterization, where=where)
    augmented = make_augmented_drift(drift, x, key, trace=trace, probe=probe)
    (z_1, delta), nfe = solve_probability_flow(augmented, (x, jnp.zeros((batch,), x.dtype)), t0=0.0, t1=1.0,
                                               rtol=rtol, atol=atol, solver=solver, max_steps=max_steps)
    return _prior_log_prob(prior, z_1) + delta, nfe


def _integer_batch(where: str, x, vocab_size: int) -> jax.Array:
    """Integer data of shape ``(batch, *event)`` in ``[0, vocab_size)``."""
    x = check_integer_data(where, "x", x, vocab_size)
    if x.ndim < 1:
        raise ValueError(f"`{where}`: `x` must have shape (batch, *event); got x.shape={x.shape}.")
    return x


def _dequantization_scale(where: str, method: str, x: jax.Array, vocab_size: int, gamma_0):
    """Returns ``(log_scale, tau)`` of the bin noise ``w = exp(log_scale) u``, each broadcast to ``x``."""
    if method == "uniform":
        return jnp.full(x.shape, -math.log(vocab_size), x.dtype), None
    if gamma_0 is None:
        raise ValueError(f"`{where}`: `dequantization='truncated_normal'` needs `gamma_0` (the schedule at t = 0).")
    gamma_0 = as_float_array(gamma_0, "gamma_0", where, dtype=x.dtype)
    check_broadcasts_to(where, "gamma_0", gamma_0, x.shape, "x")
    gamma_0 = jnp.broadcast_to(check_values(where, gamma_0=gamma_0)["gamma_0"], x.shape)
    return 0.5 * gamma_0, core.truncation_bound(gamma_0, vocab_size)


def dequantize(key: jax.Array, x: jax.Array, *, vocab_size: int, method: str = "truncated_normal",
               gamma_0=None) -> tuple[jax.Array, jax.Array]:
    r"""Draws continuous :math:`y \sim q(y|x)` inside each integer's bin, with :math:`\log q(y|x)` per example.

    Mathematical details:
        ``"uniform"``: :math:`y = f + u/V`, :math:`u \sim U(-1, 1)`, :math:`\log q = d\log(V/2)`.
        ``"truncated_normal"``: :math:`y = f + e^{\gamma_0/2}u`, :math:`u \sim \mathcal N(0,1)` truncated to
        :math:`\pm\tau` with :math:`\tau = e^{-\gamma_0/2}/V` (the bin edge; the same :math:`\tau` for sampling
        and for the normaliser), :math:`\log q(y|x) = \sum_i[\log q(u_i) - \gamma_{0,i}/2]`. Here
        :math:`f = 2(x + \tfrac12)/V - 1` and :math:`\gamma_0` is the schedule at ``t = 0``
        (:mod:`mulan_ppl.core.dequantization`).

    Args:
        key: typed PRNG key.
        x: integer data of shape ``(B, *event)`` in ``[0, vocab_size)``.
        vocab_size: number of levels ``V``.
        method: ``"truncated_normal"`` or ``"uniform"``.
        gamma_0: :math:`\gamma(0)`, broadcastable to ``x`` (truncated normal only).

    Returns:
        ``(y, log_q)`` of shapes ``x.shape`` and ``(B,)``.

    Example:
        >>> y, log_q = dequantize(jax.random.key(0), jnp.array([[0, 3]]), vocab_size=4, method="uniform")
        >>> print(bool(jnp.all(jnp.abs(y - jnp.array([-0.75, 0.75])) <= 0.25)), jnp.round(log_q, 4))
        True [1.3863]
    """
    where = "dequantize"
    check_key(where, key)
    check_one_of(where, "method", method, DEQUANTIZATIONS)
    vocab_size = check_positive_int(where, "vocab_size", vocab_size, minimum=2)
    x = _integer_batch(where, x, vocab_size)
    f = core.encode_integers(x, vocab_size)
    log_scale, tau = _dequantization_scale(where, method, f, vocab_size, gamma_0)
    if method == "uniform":
        u = jax.random.uniform(key, f.shape, f.dtype, -1.0, 1.0)
        return f + jnp.exp(log_scale) * u, jnp.full(f.shape[:1], math.prod(f.shape[1:]) * math.log(vocab_size / 2.0),
                                                    f.dtype)
    u = jax.random.truncated_normal(key, -tau, tau, f.shape, f.dtype)
    log_q = _sum_event(core.truncated_normal_log_prob(u, tau) - log_scale)
    return f + jnp.exp(log_scale) * u, log_q


def dequantization_entropy(x: jax.Array, *, vocab_size: int, method: str = "truncated_normal",
                           gamma_0=None) -> jax.Array:
    r"""The entropy of :math:`q(y|x)` of :func:`dequantize`, per example, in nats (analytic).

    Mathematical details:
        Uniform: :math:`-d\log(V/2)`. Truncated normal: :math:`\sum_i [H_\tau(u) + \gamma_{0,i}/2]` with
        :func:`~mulan_ppl.core.truncated_normal_entropy`.

    Example:
        >>> print(jnp.round(dequantization_entropy(jnp.zeros((1, 2), jnp.int32), vocab_size=4, method="uniform"), 4))
        [-1.3863]
    """
    where = "dequantization_entropy"
    check_one_of(where, "method", method, DEQUANTIZATIONS)
    vocab_size = check_positive_int(where, "vocab_size", vocab_size, minimum=2)
    x = _integer_batch(where, x, vocab_size)
    f = core.encode_integers(x, vocab_size)
    log_scale, tau = _dequantization_scale(where, method, f, vocab_size, gamma_0)
    if method == "uniform":
        return _sum_event(log_scale + math.log(2.0))
    return _sum_event(core.truncated_normal_entropy(tau) + log_scale)


def _evaluation_posterior(q_c):
    """The posterior used for the bound: one with a log-density (a perturb-and-MAP sampler has none, so the exact
    k-hot family with the same logits stands in; any q(c|x) gives a bound)."""
    if hasattr(q_c, "surrogate_kl"):
        from mulan_ppl.distrax import KHot

        return KHot(q_c.logits, q_c.k)
    return q_c


def check_ode_bound_options(*, num_importance_samples: int = 1, dequantization: str = "truncated_normal",
                            latent_importance: bool = False, analytic_entropy: bool = True, prior=None,
                            trace: str = "hutchinson", probe: str = "rademacher", rtol: float = 1e-5,
                            atol: float = 1e-5, solver: str = "tsit5", max_steps: int = 4096) -> None:
    """Checks the options of :func:`ode_bound` without running anything (a command line calls it first).

    Raises:
        ValueError: naming the offending option.

    Example:
        >>> check_ode_bound_options(num_importance_samples=0)
        Traceback (most recent call last):
        ...
        ValueError: `ode_bound`: `num_importance_samples` must be an integer >= 1; got num_importance_samples=0.
    """
    where = "ode_bound"
    check_positive_int(where, "num_importance_samples", num_importance_samples)
    check_one_of(where, "dequantization", dequantization, DEQUANTIZATIONS)
    check_one_of(where, "trace", trace, TRACE_ESTIMATORS)
    check_one_of(where, "probe", probe, PROBES)
    check_one_of(where, "solver", solver, tuple(SOLVERS))
    check_tolerance(where, "rtol", rtol)
    check_tolerance(where, "atol", atol)
    check_positive_int(where, "max_steps", max_steps)
    del latent_importance, analytic_entropy, prior


def ode_bound(
    model,
    x: jax.Array,
    key: jax.Array,
    *,
    num_importance_samples: int = 1,
    dequantization: str = "truncated_normal",
    latent_importance: bool = False,
    analytic_entropy: bool = True,
    prior=None,
    trace: str = "hutchinson",
    probe: str = "rademacher",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    solver: str = "tsit5",
    max_steps: int = 4096,
) -> dict[str, jax.Array]:
    r"""A lower bound on :math:`\log P(x)` of integer data under a model's probability-flow ODE, per example.

    Mathematical details:
        For a :class:`~mulan_ppl.hvae.TopDownDiffusion` with an auxiliary latent (MuLAN's eq. 84, :math:`c` sampled
        from :math:`q(c|x)`, not its mode),

        .. math:: \log P(x) \ge \mathbb E_{q(c|x)}\Big[\log\frac1K\sum_{k=1}^K
            \frac{p_{\mathrm{ODE}}(y_k|c)}{q(y_k|x)}\Big] - \mathrm{KL}(q(c|x)\,\|\,p(c)),
            \qquad y_k \sim q(y|x)

        with the exact KL, or with ``latent_importance=True`` the joint bound
        :math:`\log\frac1K\sum_k p_{\mathrm{ODE}}(y_k|c_k)p(c_k)/(q(y_k|x)q(c_k|x))` over pairs
        :math:`(y_k, c_k)`. Without a latent the KL is absent. With ``K = 1`` and ``analytic_entropy`` the term
        :math:`-\log q(y|x)` is replaced by its expectation, the entropy (:func:`dequantization_entropy`). A
        perturb-and-MAP posterior (:class:`~mulan_ppl.distrax.PerturbedTopK`) has no density; the exact
        :class:`~mulan_ppl.distrax.KHot` with its logits is used (any :math:`q(c|x)` gives a bound).

    Args:
        model: a :class:`~mulan_ppl.hvae.TopDownDiffusion` in evaluation mode.
        x: integer data ``(B, *event)``.
        key: typed PRNG key.
        num_importance_samples: ``K >= 1``.
        dequantization: ``"truncated_normal"`` (the paper's) or ``"uniform"``.
        latent_importance: importance-weight over the latent too.
        analytic_entropy: with ``K = 1``, use the entropy of :math:`q(y|x)` instead of :math:`-\log q(y|x)`.
        prior, trace, probe, rtol, atol, solver, max_steps: as :func:`ode_log_likelihood` (the model's prior over
            :math:`z_1` is :math:`\mathcal N(0, I)`, the default).

    Returns:
        Per-example arrays ``(B,)``: ``log_likelihood`` (the bound, nats), ``bpd``
        (:math:`-\text{bound}/(d\ln2)`), ``nfe`` (mean drift evaluations per solve), and ``latent`` (the KL, when
        the model has a latent and ``latent_importance`` is false).

    Raises:
        ValueError: ``K < 1``, an unknown dequantization or option, integer data out of range, a ``model`` that is
            not a :class:`~mulan_ppl.hvae.TopDownDiffusion`.

    Example:
        >>> from mulan_ppl.hvae import TopDownDiffusion
        >>> from mulan_ppl.schedules import FixedLinear
        >>> model = TopDownDiffusion(FixedLinear(gamma_min=-6.0, gamma_max=6.0),
        ...                          lambda z, t, g, c: jnp.zeros_like(z), vocab_size=4)
        >>> out = ode_bound(model, jnp.array([[0, 3]]), jax.random.key(0), num_importance_samples=2)
        >>> print(sorted(out), out["bpd"].shape)
        ['bpd', 'log_likelihood', 'nfe'] (1,)
    """
    where = "ode_bound"
    check_ode_bound_options(num_importance_samples=num_importance_samples, dequantization=dequantization, trace=trace,
                            probe=probe, rtol=rtol, atol=atol, solver=solver, max_steps=max_steps)
    check_key(where, key)
    missing = [name for name in ("vocab_size", "parameterization", "gamma_fn", "denoiser", "latent_posterior")
               if not hasattr(model, name)]
    if missing:
        raise ValueError(f"`{where}`: `model` must be a TopDownDiffusion (VDM or MuLAN); got {type(model).__name__}, "
                         f"which lacks {', '.join(missing)}.")
    num_samples = num_importance_samples
    vocab_size = model.vocab_size
    x = check_integer_data(where, "x", x, vocab_size)
    if x.ndim < 2:
        raise ValueError(f"`{where}`: `x` must have shape (batch, *event); got x.shape={x.shape}.")
    f = core.encode_integers(x, vocab_size)
    batch, event_shape = f.shape[0], f.shape[1:]
    latent_key, sample_key = jax.random.split(key)
    solve_options = dict(parameterization=model.parameterization, prior=prior, trace=trace, probe=probe, rtol=rtol, atol=atol,
                         solver=solver, max_steps=max_steps)
    out = {}

    q_c = None if model.latent_posterior is None else _evaluation_posterior(model.latent_posterior(f))
    shared_c = None
    if q_c is not None and not latent_importance:
        shared_c = q_c.sample(seed=latent_key)
        out["latent"] = q_c.kl_divergence(model.latent_prior)

    def one_sample(sample_key):
        c_key, y_key, ode_key = jax.random.split(sample_key, 3)
        context, log_ratio_c = shared_c, 0.0
        if q_c is not None and latent_importance:
            context = q_c.sample(seed=c_key)
            log_ratio_c = model.latent_prior.log_prob(context) - q_c.log_prob(context)
        gamma_0 = evaluate_schedule(model.gamma_fn, jnp.zeros((batch,), f.dtype), context, event_shape)
        y, log_q = dequantize(y_key, x, vocab_size=vocab_size, method=dequantization, gamma_0=gamma_0)
        if num_samples == 1 and analytic_entropy:
            log_q = -dequantization_entropy(x, vocab_size=vocab_size, method=dequantization, gamma_0=gamma_0)
        log_p, nfe = ode_log_likelihood(y, ode_key, model.gamma_fn, model.denoiser, context=context,
                                        **solve_options)
        return log_p - log_q + log_ratio_c, nfe

    log_weights, nfe = jax.lax.map(one_sample, jax.random.split(sample_key, num_samples))  # (K, B), (K,)
    bound = jax.nn.logsumexp(log_weights, axis=0) - math.log(num_samples)
    if "latent" in out:
        bound = bound - out["latent"]
    out["log_likelihood"] = bound
    out["bpd"] = -bound / (math.prod(event_shape) * math.log(2.0))
    out["nfe"] = jnp.broadcast_to(jnp.mean(nfe.astype(f.dtype)), (batch,))
    return out
