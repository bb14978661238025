"""Stable primitives of the variance-preserving diffusion (``mulan_ppl.core.stable``).

References are written here in NumPy/SciPy float64 from the textbook definitions (alpha**2 = 1 / (1 + e**gamma),
sigma**2 = 1 / (1 + e**-gamma)), never by calling the library. Core functions run under
``jax.numpy_rank_promotion("raise")`` (STYLE rule 20).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from mulan_ppl.core import stable

F64_EPS = np.finfo(np.float64).eps
F32_EPS = np.finfo(np.float32).eps
# A handful of float32 operations each rounding by at most half an ulp: 16 ulps covers every expression below.
F32_RTOL = 16 * F32_EPS
F64_RTOL = 16 * F64_EPS

# gamma grid of DESIGN.md §5: [-30, 30] with the default t = 0 / t = 1 endpoints -13.3 and 5.0.
GAMMAS = np.array([-30.0, -20.0, -13.3, -5.0, -1.0, 0.0, 1.0, 5.0, 13.3, 20.0, 30.0])
_S, _T = np.meshgrid(GAMMAS, GAMMAS, indexing="ij")
PAIRS_LT = (_S[_S < _T], _T[_S < _T])  # every gamma_s < gamma_t on the grid


@pytest.fixture(autouse=True)
def _no_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def ref_alpha_sq(g):
    return special.expit(-np.asarray(g, np.float64))


def ref_sigma_sq(g):
    return special.expit(np.asarray(g, np.float64))


def ref_log1mexp(x):
    """log(1 - e^x) by whichever of the two textbook forms has no cancellation at x."""
    x = np.asarray(x, np.float64)
    with np.errstate(divide="ignore"):
        return np.where(x > -np.log(2.0), np.log(-np.expm1(x)), np.log1p(-np.exp(x)))


def ref_transition_variance(gs, gt):
    """sigma_t**2 - (alpha_t**2 / alpha_s**2) sigma_s**2, the definition (a difference: fine in float64 away from
    s = t)."""
    return ref_sigma_sq(gt) - ref_alpha_sq(gt) / ref_alpha_sq(gs) * ref_sigma_sq(gs)


def test_log_alpha_sigma_match_float64_definitions(x64):
    g = jnp.asarray(GAMMAS)
    np.testing.assert_allclose(stable.log_alpha_sq(g), special.log_expit(-GAMMAS), rtol=F64_RTOL)
    np.testing.assert_allclose(stable.log_sigma_sq(g), special.log_expit(GAMMAS), rtol=F64_RTOL)
    alpha, sigma = stable.alpha_sigma(g)
    np.testing.assert_allclose(alpha, np.sqrt(ref_alpha_sq(GAMMAS)), rtol=F64_RTOL)
    np.testing.assert_allclose(sigma, np.sqrt(ref_sigma_sq(GAMMAS)), rtol=F64_RTOL)
    np.testing.assert_allclose(stable.snr(g), ref_alpha_sq(GAMMAS) / ref_sigma_sq(GAMMAS), rtol=F64_RTOL)


def test_variance_preserving_in_float32():
    alpha, sigma = stable.alpha_sigma(jnp.asarray(GAMMAS, jnp.float32))
    assert alpha.dtype == jnp.float32
    np.testing.assert_allclose(np.square(alpha) + np.square(sigma), 1.0, rtol=F32_RTOL)


def test_log1mexp_matches_float64(x64):
    x = -np.logspace(-12, 2, 57)  # both sides of Mächler's switch at -log 2
    expected = ref_log1mexp(x)
    np.testing.assert_allclose(stable.log1mexp(jnp.asarray(x)), expected, rtol=F64_RTOL)
    assert float(stable.log1mexp(jnp.asarray(0.0))) == -np.inf


def test_log1mexp_float32_accurate_and_differentiable():
    x = -np.logspace(-6, 1.5, 31).astype(np.float32)
    values = stable.log1mexp(jnp.asarray(x))
    expected = ref_log1mexp(x)
    np.testing.assert_allclose(values, expected, rtol=F32_RTOL)
    grads = jax.jit(jax.vmap(jax.grad(stable.log1mexp)))(jnp.asarray(x))
    # d/dx log(1 - e^x) = -1 / expm1(-x)
    np.testing.assert_allclose(grads, -1.0 / np.expm1(-x.astype(np.float64)), rtol=F32_RTOL)


def test_transition_variance_matches_definition(x64):
    gs, gt = PAIRS_LT
    moderate = (np.abs(gs) <= 13.3) & (np.abs(gt) <= 13.3)
    gs, gt = gs[moderate], gt[moderate]
    expected = ref_transition_variance(gs, gt)
    # The reference is a difference of nearly equal numbers when sigma_t**2 is close to alpha_{t|s}**2 sigma_s**2;
    # its own error is a few ulps of sigma_t**2, so the comparison is absolute at that scale.
    np.testing.assert_allclose(stable.transition_variance(jnp.asarray(gs), jnp.asarray(gt)), expected,
                               rtol=F64_RTOL, atol=F64_RTOL * ref_sigma_sq(gt).max())
    np.testing.assert_allclose(stable.log_transition_variance(jnp.asarray(gs), jnp.asarray(gt)), np.log(expected),
                               rtol=1e-10)


def test_transition_variance_float32_keeps_precision_for_close_noise_levels():
    """sigma_{t|s}^2 for gamma_t - gamma_s = 2^-16: the stable form stays within a few float32 ulps of float64."""
    gt = np.asarray(GAMMAS, np.float32)
    gs = (gt - np.float32(2.0**-16)).astype(np.float32)  # exact in float32 for |gamma| <= 30 (ulp(30) = 2^-19)
    stable_f32 = np.asarray(stable.transition_variance(jnp.asarray(gs), jnp.asarray(gt)))
    with jax.enable_x64(True):
        ref = -np.expm1(gs.astype(np.float64) - gt.astype(np.float64)) * special.expit(gt.astype(np.float64))
    np.testing.assert_allclose(stable_f32, ref, rtol=F32_RTOL)
    # The naive float32 difference of the definition loses every digit here (a control showing the test bites).
    naive = (special.expit(gt) - special.expit(-gt) / special.expit(-gs) * special.expit(gs)).astype(np.float32)
    assert np.max(np.abs(naive / ref - 1)) > 100 * F32_RTOL


def test_transition_variance_zero_at_equal_noise():
    g = jnp.asarray(GAMMAS, jnp.float32)
    np.testing.assert_array_equal(stable.transition_variance(g, g), 0.0)
    np.testing.assert_array_equal(stable.log_transition_variance(g, g), -np.inf)
    np.testing.assert_array_equal(stable.snr_ratio_minus_one(g, g), 0.0)


def test_snr_ratio_minus_one(x64):
    gs, gt = PAIRS_LT
    expected = (ref_alpha_sq(gs) / ref_sigma_sq(gs)) / (ref_alpha_sq(gt) / ref_sigma_sq(gt)) - 1
    np.testing.assert_allclose(stable.snr_ratio_minus_one(jnp.asarray(gs), jnp.asarray(gt)), expected, rtol=1e-12)


def ref_gaussian_kl(mq, vq, mp, vp):
    return 0.5 * (np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0)


def test_gaussian_kl_matches_closed_form(x64):
    rng = np.random.default_rng(0)
    mq, mp = rng.normal(size=(2, 50))
    lq, lp = rng.uniform(-4, 4, size=(2, 50))
    kl = stable.gaussian_kl(jnp.asarray(mq), jnp.asarray(lq), jnp.asarray(mp), jnp.asarray(lp))
    np.testing.assert_allclose(kl, ref_gaussian_kl(mq, np.exp(lq), mp, np.exp(lp)), rtol=1e-12)
    assert np.all(np.asarray(kl) >= 0)


def test_gaussian_kl_exactly_zero_for_equal_arguments():
    loc = jnp.linspace(-3.0, 3.0, 7)
    log_var = jnp.linspace(-60.0, 60.0, 7)
    np.testing.assert_array_equal(stable.gaussian_kl(loc, log_var, loc, log_var), 0.0)


def test_gaussian_kl_nearly_equal_variances_float32():
    """expm1(u) - u keeps the KL of a 1e-4 log-variance change at its u**2/4 value in float32."""
    u = np.float32(1e-4)
    kl = float(stable.gaussian_kl(jnp.float32(0.0), jnp.float32(u), jnp.float32(0.0), jnp.float32(0.0)))
    expected = 0.5 * (np.expm1(np.float64(u)) - np.float64(u))
    # expm1(u) has a relative error of ~1 ulp, i.e. an absolute error of eps * u, next to a result of size u**2 / 4.
    assert abs(kl - expected) <= 2 * F32_EPS * float(u)


def _stable_outputs(gs, gt):
    alpha, sigma = stable.alpha_sigma(gt)
    return dict(
        log_alpha_sq=stable.log_alpha_sq(gt),
        log_sigma_sq=stable.log_sigma_sq(gs),
        alpha=alpha,
        sigma=sigma,
        transition_variance=stable.transition_variance(gs, gt),
        log_transition_variance=stable.log_transition_variance(gs, gt),
        snr_ratio_minus_one=stable.snr_ratio_minus_one(gs, gt),
        gaussian_kl=stable.gaussian_kl(jnp.ones_like(gs), stable.log_sigma_sq(gs), jnp.zeros_like(gt),
                                       stable.log_sigma_sq(gt)),
    )


def test_values_and_gradients_finite_float32():
    gs, gt = (jnp.asarray(a, jnp.float32) for a in PAIRS_LT)

    def values_and_grads(a, b):
        values = _stable_outputs(a, b)
        grads = {k: jax.grad(lambda a_, b_: jnp.sum(_stable_outputs(a_, b_)[k]), argnums=(0, 1))(a, b) for k in values}
        return values, grads

    values, grads = jax.jit(values_and_grads)(gs, gt)
    for name, value in values.items():
        assert value.dtype == jnp.float32
        assert np.all(np.isfinite(value)), name
        assert all(np.all(np.isfinite(g)) for g in grads[name]), name
