"""Gaussian diffusion algebra (``mulan_ppl.core.gaussian``) against float64 references written from alpha and sigma.

The posterior is checked against Bayes' rule applied to q(z_t | z_s) q(z_s | x) by Gaussian conditioning, the
per-step KL against the generic Gaussian KL and against its closed-form derivative at s = t, and everything for finite
values and gradients in float32 over gamma in [-30, 30].
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from mulan_ppl import core

F32_EPS = np.finfo(np.float32).eps
F32_RTOL = 16 * F32_EPS  # a handful of float32 operations, each within half an ulp
F64_RTOL = 1e-10  # references below are differences/quotients of float64 numbers away from their singular points

GAMMAS = np.array([-30.0, -20.0, -13.3, -5.0, -1.0, 0.0, 1.0, 5.0, 13.3, 20.0, 30.0])
_S, _T = np.meshgrid(GAMMAS, GAMMAS, indexing="ij")
PAIRS_LT = (_S[_S < _T], _T[_S < _T])
PARAMETERIZATIONS = ("eps", "v", "x", "score")


@pytest.fixture(autouse=True)
def _no_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def ref_alpha_sigma(g):
    g = np.asarray(g, np.float64)
    return np.sqrt(special.expit(-g)), np.sqrt(special.expit(g))


def ref_posterior(z_t, x, gs, gt):
    """Bayes posterior of z_s given (z_t, x) by Gaussian conditioning in float64.

    Prior z_s | x ~ N(alpha_s x, sigma_s^2); likelihood z_t | z_s ~ N(a z_s, v) with a = alpha_t / alpha_s and
    v = sigma_t^2 - a^2 sigma_s^2. The posterior precision is 1/sigma_s^2 + a^2/v and the mean is the
    precision-weighted sum of the prior mean and z_t / a.
    """
    a_s, s_s = ref_alpha_sigma(gs)
    a_t, s_t = ref_alpha_sigma(gt)
    a = a_t / a_s
    v = s_t**2 - a**2 * s_s**2
    precision = 1.0 / s_s**2 + a**2 / v
    var = 1.0 / precision
    mean = var * (a_s * x / s_s**2 + a * z_t / v)
    return mean, var


@pytest.fixture
def moderate_case():
    """Per-dimension noise levels (MuLAN) with gaps >= 0.25 so the float64 references keep ~12 digits."""
    rng = np.random.default_rng(1)
    shape = (3, 4)
    gs = rng.uniform(-8.0, 6.0, size=shape)
    gt = gs + rng.uniform(0.25, 4.0, size=shape)
    x = rng.uniform(-1.0, 1.0, size=shape)
    z_t = rng.normal(size=shape)
    return x, z_t, gs, gt


def test_forward_marginal_matches_float64(x64, moderate_case):
    x, _, _, gt = moderate_case
    loc, log_var = core.forward_marginal(jnp.asarray(x), jnp.asarray(gt))
    a_t, s_t = ref_alpha_sigma(gt)
    np.testing.assert_allclose(loc, a_t * x, rtol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var), s_t**2, rtol=F64_RTOL)


def test_forward_marginal_broadcasts_scalar_gamma(x64):
    x = jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)
    loc, log_var = core.forward_marginal(x, jnp.full((2, 1), 0.5))
    assert loc.shape == log_var.shape == (2, 3)
    np.testing.assert_allclose(np.exp(log_var), special.expit(0.5), rtol=F64_RTOL)


def test_forward_transition_matches_definition(x64, moderate_case):
    x, _, gs, gt = moderate_case
    loc, log_var = core.forward_transition(jnp.asarray(x), jnp.asarray(gs), jnp.asarray(gt))
    a_s, s_s = ref_alpha_sigma(gs)
    a_t, s_t = ref_alpha_sigma(gt)
    np.testing.assert_allclose(loc, a_t / a_s * x, rtol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var), s_t**2 - (a_t / a_s) ** 2 * s_s**2, rtol=F64_RTOL)


def test_transition_composes_marginals(x64, moderate_case):
    """q(z_t|x) = ∫ q(z_t|z_s) q(z_s|x) dz_s: alpha_{t|s} alpha_s = alpha_t and
    alpha_{t|s}^2 sigma_s^2 + sigma_{t|s}^2 = sigma_t^2."""
    x, _, gs, gt = moderate_case
    loc_s, log_var_s = core.forward_marginal(jnp.asarray(x), jnp.asarray(gs))
    loc_t, log_var_t = core.forward_marginal(jnp.asarray(x), jnp.asarray(gt))
    loc_ts, log_var_ts = core.forward_transition(loc_s, jnp.asarray(gs), jnp.asarray(gt))
    gain, _ = core.forward_transition(jnp.ones_like(loc_s), jnp.asarray(gs), jnp.asarray(gt))
    np.testing.assert_allclose(loc_ts, loc_t, rtol=F64_RTOL)
    np.testing.assert_allclose(gain**2 * np.exp(log_var_s) + np.exp(log_var_ts), np.exp(log_var_t), rtol=F64_RTOL)


def test_posterior_is_bayes_conditioning(x64, moderate_case):
    x, z_t, gs, gt = moderate_case
    loc, log_var = core.top_down_posterior(*(jnp.asarray(a) for a in (z_t, x, gs, gt)))
    mean, var = ref_posterior(z_t, x, gs, gt)
    np.testing.assert_allclose(loc, mean, rtol=F64_RTOL, atol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var), var, rtol=F64_RTOL)
    c_z, c_x, log_var_c = core.top_down_posterior_coefficients(jnp.asarray(gs), jnp.asarray(gt))
    np.testing.assert_allclose(c_z * z_t + c_x * x, mean, rtol=F64_RTOL, atol=F64_RTOL)
    np.testing.assert_array_equal(log_var_c, log_var)


def test_diag_normal_log_prob_and_entropy_match_scipy(x64):
    rng = np.random.default_rng(2)
    value, loc = rng.normal(size=(2, 20))
    log_var = rng.uniform(-20.0, 5.0, size=20)
    scale = np.exp(0.5 * log_var)
    lp = core.diag_normal_log_prob(jnp.asarray(value), jnp.asarray(loc), jnp.asarray(log_var))
    np.testing.assert_allclose(lp, stats.norm.logpdf(value, loc, scale), rtol=1e-12)
    np.testing.assert_allclose(core.diag_normal_entropy(jnp.asarray(log_var)), stats.norm.entropy(loc, scale),
                               rtol=1e-12)


def test_diag_normal_degenerate_variance():
    loc = jnp.asarray([0.5, -1.0, 2.0])
    log_var = jnp.full(3, -jnp.inf)
    lp = core.diag_normal_log_prob(jnp.asarray([0.5, -1.5, 2.0]), loc, log_var)
    np.testing.assert_array_equal(lp, [np.inf, -np.inf, np.inf])
    np.testing.assert_array_equal(core.diag_normal_entropy(log_var), -np.inf)
    np.testing.assert_array_equal(core.diag_normal_sample(jax.random.key(0), loc, log_var), loc)


def test_diag_normal_sample_shape_and_reparameterization():
    loc, log_var = jnp.asarray([[0.0, 1.0, 2.0]]), jnp.asarray([[0.0, -2.0, 2.0]])
    key = jax.random.key(3)
    draws = core.diag_normal_sample(key, loc, log_var, (5,))
    assert draws.shape == (5, 1, 3)
    noise = (draws - loc[None]) / jnp.exp(0.5 * log_var[None])
    np.testing.assert_allclose(noise, jax.random.normal(key, (5, 1, 3)), rtol=F32_RTOL, atol=F32_RTOL)


def test_per_step_kl_x_equals_gaussian_kl_of_posterior_and_reverse(x64, moderate_case):
    x, z_t, gs, gt = moderate_case
    x_hat = 0.8 * x + 0.1
    mq, vq = ref_posterior(z_t, x, gs, gt)
    mp, vp = ref_posterior(z_t, x_hat, gs, gt)
    expected = 0.5 * (np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0)
    kl = core.per_step_kl_x(*(jnp.asarray(a) for a in (gs, gt, x, x_hat)))
    np.testing.assert_allclose(kl, expected, rtol=1e-8)
    assert np.all(np.asarray(kl) >= 0)


def _predictions_from_x_hat(x_hat, z_t, gt):
    """eps, v and score predictions equivalent to x_hat at (z_t, gamma_t), in float64 NumPy."""
    a_t, s_t = ref_alpha_sigma(gt)
    eps_hat = (z_t - a_t * x_hat) / s_t
    return {"x": x_hat, "eps": eps_hat, "v": a_t * eps_hat - s_t * x_hat, "score": -eps_hat / s_t}


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_per_step_kl_routes_agree(x64, moderate_case, parameterization):
    """per_step_kl in every parameterization, per_step_kl_x and per_step_kl_eps are one quantity."""
    x, _, gs, gt = moderate_case
    rng = np.random.default_rng(4)
    eps = rng.normal(size=x.shape)
    a_t, s_t = ref_alpha_sigma(gt)
    z_t = a_t * x + s_t * eps
    x_hat = 0.8 * x + 0.1
    eps_hat = (z_t - a_t * x_hat) / s_t
    kl_x = core.per_step_kl_x(*(jnp.asarray(a) for a in (gs, gt, x, x_hat)))
    kl_eps = core.per_step_kl_eps(*(jnp.asarray(a) for a in (gs, gt, eps, eps_hat)))
    np.testing.assert_allclose(kl_eps, kl_x, rtol=1e-9)
    pred = jnp.asarray(_predictions_from_x_hat(x_hat, z_t, gt)[parameterization])
    args = tuple(jnp.asarray(a) for a in (x, z_t, gs, gt))
    np.testing.assert_allclose(core.per_step_kl(*args, pred, parameterization=parameterization), kl_x, rtol=1e-9)
    np.testing.assert_allclose(
        core.per_step_kl(*args, pred, parameterization=parameterization, eps=jnp.asarray(eps)), kl_x, rtol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# s = t and the continuous-time limit


def test_equal_noise_levels_are_finite_and_degenerate():
    g = jnp.asarray(GAMMAS, jnp.float32)
    x = jnp.linspace(-1.0, 1.0, g.size, dtype=jnp.float32)
    z = jnp.linspace(2.0, -2.0, g.size, dtype=jnp.float32)
    loc_ft, log_var_ft = core.forward_transition(z, g, g)
    np.testing.assert_array_equal(loc_ft, z)
    np.testing.assert_array_equal(log_var_ft, -np.inf)
    loc_q, log_var_q = core.top_down_posterior(z, x, g, g)
    np.testing.assert_allclose(loc_q, z, rtol=F32_RTOL)
    np.testing.assert_array_equal(log_var_q, -np.inf)
    np.testing.assert_array_equal(core.diag_normal_sample(jax.random.key(0), loc_q, log_var_q), loc_q)
    np.testing.assert_array_equal(core.diag_normal_entropy(log_var_q), -np.inf)
    x_hat = 0.5 * x
    np.testing.assert_array_equal(core.per_step_kl_x(g, g, x, x_hat), 0.0)
    np.testing.assert_array_equal(core.per_step_kl_eps(g, g, x, x_hat), 0.0)
    for parameterization in PARAMETERIZATIONS:
        kl = core.per_step_kl(x, z, g, g, x_hat, parameterization=parameterization)
        np.testing.assert_array_equal(kl, 0.0)


def _kl_at_s(s, t, g0, g1, x, x_hat, z_t, route):
    """Per-step KL with a linear schedule gamma(u) = g0 + (g1 - g0) u, per dimension."""
    gs, gt = g0 + (g1 - g0) * s, g0 + (g1 - g0) * t
    if route == "x_core":
        return core.per_step_kl_x(gs, gt, x, x_hat)
    if route == "eps_core":
        alpha, sigma = core.alpha_sigma(gt)
        return core.per_step_kl_eps(gs, gt, (z_t - alpha * x) / sigma, (z_t - alpha * x_hat) / sigma)
    pred = core.convert_prediction(x_hat, z_t, gt, source="x", target=route)
    return core.per_step_kl(x, z_t, gs, gt, pred, parameterization=route)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_per_step_kl_derivative_at_s_equals_t(dtype):
    """d/ds KL(s, t)|_{s=t} = -1/2 gamma'(t) SNR_t (x - x_hat)^2 per dimension, through jax.jvp."""
    with jax.enable_x64(dtype == jnp.float64):
        g0 = np.array([-13.3, -10.0, -6.0, -2.0, 0.0])
        g1 = np.array([5.0, 8.0, 2.0, 3.0, 1.0])
        t = 0.6
        x = np.array([0.9, -0.5, 0.25, -0.75, 0.1])
        x_hat = np.array([0.8, -0.45, 0.3, -0.6, 0.2])
        gamma_t, slope = g0 + (g1 - g0) * t, g1 - g0
        z_t = ref_alpha_sigma(gamma_t)[0] * x + ref_alpha_sigma(gamma_t)[1] * 0.3
        expected = -0.5 * slope * np.exp(-gamma_t) * (x - x_hat) ** 2
        arrays = [jnp.asarray(a, dtype) for a in (g0, g1, x, x_hat, z_t)]
        rtol = 1e-9 if dtype == jnp.float64 else 64 * F32_EPS
        for route in ("x_core", "eps_core", *PARAMETERIZATIONS):
            kl, dkl = jax.jvp(lambda s: _kl_at_s(s, jnp.asarray(t, dtype), *arrays, route),
                              (jnp.asarray(t, dtype),), (jnp.asarray(1.0, dtype),))
            np.testing.assert_array_equal(kl, 0.0)
            assert dkl.dtype == dtype
            np.testing.assert_allclose(dkl, expected, rtol=rtol, err_msg=route)


def test_eps_form_keeps_precision_where_x_form_fails():
    """gamma near -30 in float32: z_t = alpha x + sigma eps rounds sigma eps away, so a data-space prediction
    x_hat = (z_t - sigma eps_hat) / alpha cannot resolve x - x_hat; the eps form is exact to float32 rounding."""
    rng = np.random.default_rng(5)
    # Inputs are float32 numbers; the reference is float64 arithmetic on exactly those numbers.
    x = rng.uniform(-1.0, 1.0, 64).astype(np.float32).astype(np.float64)
    eps = rng.normal(size=64).astype(np.float32).astype(np.float64)
    eps_hat = (eps + 0.1 * rng.normal(size=64)).astype(np.float32).astype(np.float64)
    gs, gt = -30.0, -29.5
    reference = 0.5 * np.expm1(gt - gs) * (eps - eps_hat) ** 2  # per dimension
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    kl_eps = core.per_step_kl_eps(f32(gs), f32(gt), f32(eps), f32(eps_hat))
    np.testing.assert_allclose(kl_eps, reference, rtol=F32_RTOL)
    alpha, sigma = core.alpha_sigma(f32(gt))
    z_t = alpha * f32(x) + sigma * f32(eps)
    x_hat = core.convert_prediction(f32(eps_hat), z_t, f32(gt), source="eps", target="x")
    kl_x = core.per_step_kl_x(f32(gs), f32(gt), f32(x), x_hat)
    assert np.median(np.abs(np.asarray(kl_x) / reference - 1)) > 0.1


# ---------------------------------------------------------------------------------------------------------------
# Finite values and gradients in float32 over gamma in [-30, 30]


SWEEP = {
    "forward_marginal": lambda gs, gt, x, z_t, pred: core.forward_marginal(x, gt),
    "forward_transition": lambda gs, gt, x, z_t, pred: core.forward_transition(x, gs, gt),
    "top_down_posterior": lambda gs, gt, x, z_t, pred: core.top_down_posterior(z_t, x, gs, gt),
    "coefficients": lambda gs, gt, x, z_t, pred: core.top_down_posterior_coefficients(gs, gt),
    "posterior_log_prob_entropy_sample": lambda gs, gt, x, z_t, pred: _posterior_functionals(
        *core.top_down_posterior(z_t, x, gs, gt)),
    "per_step_kl_x": lambda gs, gt, x, z_t, pred: core.per_step_kl_x(gs, gt, x, pred),
    "per_step_kl_eps": lambda gs, gt, x, z_t, pred: core.per_step_kl_eps(gs, gt, x, pred),
    **{f"per_step_kl_{p}_route": (lambda p: lambda gs, gt, x, z_t, pred: core.per_step_kl(
        x, z_t, gs, gt, pred, parameterization=p))(p) for p in PARAMETERIZATIONS},
}


def _posterior_functionals(loc, log_var):
    return (core.diag_normal_log_prob(loc + 0.1, loc, log_var), core.diag_normal_entropy(log_var),
            core.diag_normal_sample(jax.random.key(0, impl="rbg"), loc, log_var))  # rbg: cheap to compile


def _sweep_args(gs):
    n = gs.shape[0]
    x = jnp.linspace(-1.0, 1.0, n, dtype=jnp.float32)
    z_t = jnp.linspace(1.5, -1.5, n, dtype=jnp.float32)
    return x, z_t, 0.9 * x + 0.05


def _total(names, *args):
    return sum(jnp.sum(v) for k in names for v in jax.tree.leaves(SWEEP[k](*args)))


def test_values_and_gradients_finite_float32():
    """Values of every function, and the gradient of their total (finite iff every summand's gradient is: an inf or
    NaN cannot cancel); on failure the per-function gradients name the culprit."""
    gs, gt = (jnp.asarray(a, jnp.float32) for a in PAIRS_LT)
    args = (gs, gt, *_sweep_args(gs))

    def run(*args):
        return {k: f(*args) for k, f in SWEEP.items()}, jax.grad(lambda *a: _total(SWEEP, *a), argnums=range(5))(*args)

    values, grads = jax.jit(run)(*args)
    for name in values:
        for leaf in jax.tree.leaves(values[name]):
            assert leaf.dtype == jnp.float32
            assert np.all(np.isfinite(leaf)), name
    if not all(np.all(np.isfinite(g)) for g in grads):
        bad = [k for k in SWEEP if not all(np.all(np.isfinite(g)) for g in jax.grad(
            lambda *a: _total((k,), *a), argnums=range(5))(*args))]
        pytest.fail(f"non-finite gradients for {bad}")
