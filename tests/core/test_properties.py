"""Property-based tests of the Gaussian diffusion algebra (``mulan_ppl.core``) with ``hypothesis``.

Random noise levels gamma_s < gamma_t anywhere in [-30, 30] (DESIGN.md §5), random data shapes, and noise levels that
are scalars, per example ``(B, 1, ..., 1)``, per dimension or mixed. Every property is checked against an independent
float64 NumPy/SciPy computation, never against another call of the function under test:

(a) the top-down posterior q(z_s | z_t, x) is Bayes' rule applied to q(z_s | x) = N(alpha_s x, sigma_s^2) and
    q(z_t | z_s) = N(alpha_{t|s} z_s, sigma_{t|s}^2): Gaussian conditioning for its mean and variance, and the
    pointwise identity q(z_s|z_t,x) q(z_t|x) = q(z_t|z_s) q(z_s|x) with ``scipy.stats.norm`` densities;
(b) ``gaussian_kl``, ``per_step_kl_x`` and ``per_step_kl_eps`` are >= 0, equal to their textbook formulas, and 0
    exactly where (and only where) the two distributions coincide;
(c) Chapman–Kolmogorov: transitions s -> u -> t composed in closed form give the transition s -> t, and the marginal at
    s composed with the transition s -> t gives the marginal at t;
(d) a scalar noise level and the same value broadcast per example or per dimension give identical results;
(e) in float32, values (and the posterior's gradients) are finite across the whole range, s = t included.

Runs are reproducible (``derandomize=True``, no example database).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import special, stats

from mulan_ppl import core

GAMMA_MIN, GAMMA_MAX = -30.0, 30.0
# Smallest gap gamma_t - gamma_s of the float64 comparisons. The references form sigma_{t|s}^2 = sigma_t^2 -
# alpha_{t|s}^2 sigma_s^2 as a plain difference, whose relative rounding error is about eps / (1 - exp(-gap)); with
# gap >= 1e-2 that is ~1e-14, and F64_RTOL leaves four orders of magnitude for the few float64 operations on top.
MIN_GAP = 1e-2
F64_RTOL = 1e-10
PARAMETERIZATIONS = ("eps", "v", "x", "score")
# A few data shapes of ranks 1 to 3 (each new shape costs compilations); the noise levels' layouts vary freely.
DATA_SHAPES = ((3,), (2, 3), (1, 4), (2, 1, 3), (3, 2, 2))
SETTINGS = settings(max_examples=30, deadline=None, derandomize=True, database=None)


@pytest.fixture(autouse=True)
def _no_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


# ---------------------------------------------------------------------------------------------------------------
# Strategies


def _unit(shape):
    return hnp.arrays(np.float64, shape, elements=st.floats(0.0, 1.0))


def _values(shape, bound=3.0, dtype=np.float64):
    """Floats in [-bound, bound], zero or of magnitude above 1e-30: XLA's CPU kernels flush subnormal inputs and
    results to zero, and a value near the smallest normal times a gain below one would be subnormal."""
    elements = st.floats(-bound, bound, width=np.dtype(dtype).itemsize * 8, allow_subnormal=False).filter(
        lambda v: v == 0.0 or abs(v) > 1e-30)
    return hnp.arrays(dtype, shape, elements=elements)


@st.composite
def _data_and_gamma_shapes(draw):
    """A data shape (B, *event) and a gamma shape: scalar, per example (B, 1, ..., 1), shared by the batch
    (1, *event) or per dimension (B, *event)."""
    shape = draw(st.sampled_from(DATA_SHAPES))
    layouts = {(), (shape[0],) + (1,) * (len(shape) - 1), (1,) + shape[1:], shape}
    return shape, draw(st.sampled_from(sorted(layouts)))


@st.composite
def _gamma_chain(draw, shape, num, min_gap=MIN_GAP):
    """``num`` increasing noise levels of ``shape`` in [-30, 30], consecutive ones at least ``min_gap`` apart.

    Built from uniforms so that hypothesis' favourite values 0 and 1 land on the ends of the range and on the
    smallest gaps.
    """
    lo = GAMMA_MIN + draw(_unit(shape)) * (GAMMA_MAX - GAMMA_MIN - (num - 1) * min_gap)
    chain = [lo]
    for i in range(1, num):
        room = GAMMA_MAX - (num - 1 - i) * min_gap - (chain[-1] + min_gap)
        chain.append(chain[-1] + min_gap + draw(_unit(shape)) * room)
    return tuple(chain)


@st.composite
def posterior_cases(draw):
    shape, gamma_shape = draw(_data_and_gamma_shapes())
    gs, gt = draw(_gamma_chain(gamma_shape, 2))
    return draw(_values(shape)), draw(_values(shape)), gs, gt


# ---------------------------------------------------------------------------------------------------------------
# Float64 references, written from alpha and sigma (no library call)


def ref_alpha_sq_sigma_sq(gamma):
    gamma = np.asarray(gamma, np.float64)
    return special.expit(-gamma), special.expit(gamma)


def ref_transition(gs, gt):
    """alpha_{t|s} and sigma_{t|s}^2 of q(z_t | z_s) from the marginals: alpha_t / alpha_s, sigma_t^2 - a^2 sigma_s^2."""
    a2_s, s2_s = ref_alpha_sq_sigma_sq(gs)
    a2_t, s2_t = ref_alpha_sq_sigma_sq(gt)
    a2 = a2_t / a2_s
    return np.sqrt(a2), s2_t - a2 * s2_s


def ref_bayes_posterior(gs, gt):
    """Coefficients (c_z, c_x) and variance of q(z_s | z_t, x) ∝ q(z_t | z_s) q(z_s | x) by Gaussian conditioning:
    precision = 1/sigma_s^2 + a^2/v, mean = var (alpha_s x / sigma_s^2 + a z_t / v)."""
    a2_s, s2_s = ref_alpha_sq_sigma_sq(gs)
    a, v = ref_transition(gs, gt)
    var = 1.0 / (1.0 / s2_s + a**2 / v)
    return var * a / v, var * np.sqrt(a2_s) / s2_s, var


def assert_within(actual, expected, tolerance, what=""):
    """|actual - expected| <= tolerance elementwise (an absolute error bound per element)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    error = np.abs(actual - expected)
    assert np.all(error <= tolerance), f"{what}: max error {np.max(error - tolerance)} over the bound"


def _f64(*arrays):
    return tuple(jnp.asarray(a, jnp.float64) for a in arrays)


# ---------------------------------------------------------------------------------------------------------------
# (a) the posterior is Bayes' rule


@jax.jit
def _posterior_jit(z_t, x, gs, gt):
    return core.top_down_posterior(z_t, x, gs, gt), core.top_down_posterior_coefficients(gs, gt)


@SETTINGS
@given(case=posterior_cases(), offset=st.floats(-2.0, 2.0))
def test_top_down_posterior_is_bayes_rule(case, offset):
    x, z_t, gs, gt = case
    with jax.enable_x64(True):
        (loc, log_var), (c_z, c_x, log_var_c) = _posterior_jit(*_f64(z_t, x, gs, gt))
    loc, var = np.asarray(loc), np.exp(np.asarray(log_var))
    ref_cz, ref_cx, ref_var = ref_bayes_posterior(gs, gt)
    ref_loc = ref_cz * z_t + ref_cx * x
    np.testing.assert_allclose(c_z, ref_cz, rtol=F64_RTOL)
    np.testing.assert_allclose(c_x, ref_cx, rtol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var_c), ref_var, rtol=F64_RTOL)
    np.testing.assert_allclose(var, np.broadcast_to(ref_var, loc.shape), rtol=F64_RTOL)
    # The mean is a sum of two terms that may cancel: the error is relative to their magnitudes.
    assert_within(loc, ref_loc, F64_RTOL * (np.abs(ref_cz * z_t) + np.abs(ref_cx * x)), "posterior mean")

    # Bayes' rule pointwise, at z_s = posterior mean + offset posterior std:
    # log q(z_s | z_t, x) + log q(z_t | x) = log q(z_t | z_s) + log q(z_s | x).
    a2_s, s2_s = ref_alpha_sq_sigma_sq(gs)
    a2_t, s2_t = ref_alpha_sq_sigma_sq(gt)
    a, v = ref_transition(gs, gt)
    z_s = loc + offset * np.sqrt(var)
    gaussians = (  # (point, mean, variance) of each log-density, signed
        (+1, z_s, loc, var),  # the library's posterior
        (+1, z_t, np.sqrt(a2_t) * x, s2_t),
        (-1, z_t, a * z_s, v),
        (-1, z_s, np.sqrt(a2_s) * x, s2_s),
    )
    terms = [sign * stats.norm.logpdf(point, mean, np.sqrt(variance)) for sign, point, mean, variance in gaussians]
    # Each log-density is accurate to ~F64_RTOL relative to its own size (quadratic terms up to ~1e13 at
    # sigma^2 ~ 1e-13), plus what a relative F64_RTOL perturbation of its point and mean moves it by,
    # |z - m| (|z| + |m|) / sigma^2: at sigma^2 ~ 1e-15 a residual of a few sigma is a difference of numbers near 1.
    scale = sum(np.abs(term) for term in terms) + 1.0
    conditioning = sum(np.abs(point - mean) * (np.abs(point) + np.abs(mean)) / variance
                       for _, point, mean, variance in gaussians)
    assert_within(sum(terms), 0.0, F64_RTOL * (scale + conditioning), "Bayes' rule")


# ---------------------------------------------------------------------------------------------------------------
# (b) KLs are non-negative, match their formulas, and vanish exactly when the distributions coincide


@st.composite
def kl_cases(draw, dtype):
    """Pairs of Gaussians (loc, log-variance) that coincide where ``same`` and differ by >= 1e-3 elsewhere."""
    shape = draw(st.sampled_from(DATA_SHAPES))
    loc_q = draw(_values(shape, 5.0, dtype))
    log_var_q = draw(_values(shape, 30.0, dtype))
    same = draw(hnp.arrays(bool, shape))
    which = draw(hnp.arrays(np.int8, shape, elements=st.sampled_from((0, 1, 2))))  # loc, log-variance or both differ
    d_loc = draw(_values(shape, 2.0, dtype))
    d_log_var = draw(_values(shape, 2.0, dtype))
    d_loc = np.where(which != 1, np.copysign(np.maximum(np.abs(d_loc), 1e-3), d_loc), 0.0).astype(dtype)
    d_log_var = np.where(which != 0, np.copysign(np.maximum(np.abs(d_log_var), 1e-3), d_log_var), 0.0).astype(dtype)
    loc_p = np.where(same, loc_q, loc_q + d_loc).astype(dtype)
    log_var_p = np.where(same, log_var_q, log_var_q + d_log_var).astype(dtype)
    return loc_q, log_var_q, loc_p, log_var_p, same


def ref_gaussian_kl(loc_q, log_var_q, loc_p, log_var_p):
    """KL(N(m_q, v_q) || N(m_p, v_p)) = 0.5 (log v_p/v_q + v_q/v_p + (m_q - m_p)^2 / v_p - 1), and the sum of the
    magnitudes of its terms (the scale of its rounding error)."""
    loc_q, log_var_q, loc_p, log_var_p = (np.asarray(a, np.float64) for a in (loc_q, log_var_q, loc_p, log_var_p))
    terms = (log_var_p - log_var_q, np.exp(log_var_q - log_var_p), (loc_q - loc_p) ** 2 * np.exp(-log_var_p), -1.0)
    return 0.5 * sum(terms), 0.5 * sum(np.abs(t) for t in terms)


@SETTINGS
@given(case=kl_cases(np.float64))
def test_gaussian_kl_matches_formula_and_is_zero_iff_equal_float64(case):
    loc_q, log_var_q, loc_p, log_var_p, same = case
    with jax.enable_x64(True):
        kl = np.asarray(core.gaussian_kl(*_f64(loc_q, log_var_q, loc_p, log_var_p)))
    ref, scale = ref_gaussian_kl(loc_q, log_var_q, loc_p, log_var_p)
    assert_within(kl, ref, F64_RTOL * scale, "KL")
    assert np.all(kl >= 0.0)
    np.testing.assert_array_equal(kl == 0.0, same)


@SETTINGS
@given(case=kl_cases(np.float32))
def test_gaussian_kl_is_nonnegative_and_zero_iff_equal_float32(case):
    """In float32 too: no rounding makes the KL negative, and a difference of 1e-3 in a mean or a log-variance is
    never rounded to a zero KL (the smallest such KL, ~1e-22, is far above float32's smallest normal number)."""
    loc_q, log_var_q, loc_p, log_var_p, same = case
    kl = np.asarray(core.gaussian_kl(*(jnp.asarray(a) for a in (loc_q, log_var_q, loc_p, log_var_p))))
    assert kl.dtype == np.float32
    assert np.all(kl >= 0.0)
    np.testing.assert_array_equal(kl == 0.0, same)


@st.composite
def per_step_kl_cases(draw, dtype):
    """gamma_s <= gamma_t (equal where ``equal_gamma``), and a prediction equal to its target where ``exact``."""
    shape, gamma_shape = draw(_data_and_gamma_shapes())
    gs, gt = draw(_gamma_chain(gamma_shape, 2))
    equal_gamma = draw(hnp.arrays(bool, gamma_shape))
    gt = np.where(equal_gamma, gs, gt)
    target = draw(_values(shape, 3.0, dtype))
    delta = draw(_values(shape, 1.0, dtype))
    exact = draw(hnp.arrays(bool, shape))
    prediction = np.where(exact, target, target + np.copysign(np.maximum(np.abs(delta), 1e-3), delta)).astype(dtype)
    return gs.astype(dtype), gt.astype(dtype), target, prediction, exact | equal_gamma


@SETTINGS
@given(case=per_step_kl_cases(np.float64))
def test_per_step_kls_match_formulas_and_vanish_iff_no_error_float64(case):
    """KL_x = (SNR_s - SNR_t)(x - x_hat)^2 / 2 and KL_eps = (SNR_s / SNR_t - 1)(eps - eps_hat)^2 / 2, SNR = e^-gamma."""
    gs, gt, target, prediction, zero = case
    with jax.enable_x64(True):
        kl_x = np.asarray(core.per_step_kl_x(*_f64(gs, gt, target, prediction)))
        kl_eps = np.asarray(core.per_step_kl_eps(*_f64(gs, gt, target, prediction)))
    err2 = (target - prediction) ** 2
    np.testing.assert_allclose(kl_x, 0.5 * (np.exp(-gs) - np.exp(-gt)) * err2, rtol=F64_RTOL)
    np.testing.assert_allclose(kl_eps, 0.5 * (np.exp(gt - gs) - 1.0) * err2, rtol=F64_RTOL)
    for kl in (kl_x, kl_eps):
        assert np.all(kl >= 0.0)
        np.testing.assert_array_equal(kl == 0.0, np.broadcast_to(zero, kl.shape))


@SETTINGS
@given(case=per_step_kl_cases(np.float32))
def test_per_step_kls_nonnegative_and_vanish_iff_no_error_float32(case):
    """The smallest non-zero value drawn is ~(1e-3)^2 * e^-30 * 1e-2 / 2 ~ 5e-22, far above float32's underflow."""
    gs, gt, target, prediction, zero = case
    args = tuple(jnp.asarray(a) for a in (gs, gt, target, prediction))
    for kl in (np.asarray(core.per_step_kl_x(*args)), np.asarray(core.per_step_kl_eps(*args))):
        assert kl.dtype == np.float32
        assert np.all(kl >= 0.0)
        np.testing.assert_array_equal(kl == 0.0, np.broadcast_to(zero, kl.shape))


# ---------------------------------------------------------------------------------------------------------------
# (c) Chapman–Kolmogorov


@st.composite
def chain_cases(draw):
    shape, gamma_shape = draw(_data_and_gamma_shapes())
    return draw(_values(shape)), draw(_gamma_chain(gamma_shape, 3))


def _compose(gain_1, var_1, gain_2, var_2):
    """z_2 = gain_2 z_1 + N(0, var_2) after z_1 = gain_1 z_0 + N(0, var_1): gain_2 gain_1 and gain_2^2 var_1 + var_2."""
    return gain_2 * gain_1, gain_2**2 * var_1 + var_2


@SETTINGS
@given(case=chain_cases())
def test_transitions_compose_chapman_kolmogorov(case):
    z, (gs, gu, gt) = case
    ones = np.ones(np.broadcast_shapes(z.shape, np.shape(gs)))
    with jax.enable_x64(True):
        gain_su, log_var_su = core.forward_transition(*_f64(ones, gs, gu))
        gain_ut, log_var_ut = core.forward_transition(*_f64(ones, gu, gt))
        gain_st, log_var_st = core.forward_transition(*_f64(ones, gs, gt))
        loc_st, _ = core.forward_transition(*_f64(z, gs, gt))
    gain, var = _compose(np.asarray(gain_su), np.exp(log_var_su), np.asarray(gain_ut), np.exp(log_var_ut))
    np.testing.assert_allclose(gain_st, gain, rtol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var_st), var, rtol=F64_RTOL)
    np.testing.assert_allclose(loc_st, gain * z, rtol=F64_RTOL)
    # ... and both agree with the transition written from the marginals.
    ref_gain, ref_var = ref_transition(gs, gt)
    np.testing.assert_allclose(gain_st, np.broadcast_to(ref_gain, ones.shape), rtol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var_st), np.broadcast_to(ref_var, ones.shape), rtol=F64_RTOL)


@SETTINGS
@given(case=chain_cases())
def test_marginal_composed_with_transition_is_marginal(case):
    x, (gs, _, gt) = case
    ones = np.ones(np.broadcast_shapes(x.shape, np.shape(gs)))
    with jax.enable_x64(True):
        loc_s, log_var_s = core.forward_marginal(*_f64(x, gs))
        gain_st, log_var_st = core.forward_transition(*_f64(ones, gs, gt))
        loc_t, log_var_t = core.forward_marginal(*_f64(x, gt))
    a2_s, _ = ref_alpha_sq_sigma_sq(gs)
    signal_s, var_s = np.asarray(loc_s) / np.where(x == 0, 1.0, x), np.exp(log_var_s)  # alpha_s, from the mean
    signal_s = np.where(x == 0, np.sqrt(a2_s), signal_s)
    gain, var = _compose(signal_s, var_s, np.asarray(gain_st), np.exp(log_var_st))
    np.testing.assert_allclose(loc_t, gain * x, rtol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var_t), var, rtol=F64_RTOL)
    a2_t, s2_t = ref_alpha_sq_sigma_sq(gt)
    np.testing.assert_allclose(loc_t, np.sqrt(a2_t) * x, rtol=F64_RTOL)
    np.testing.assert_allclose(np.exp(log_var_t), np.broadcast_to(s2_t, ones.shape), rtol=F64_RTOL)


# ---------------------------------------------------------------------------------------------------------------
# (d) broadcasting


F32_EPS = np.finfo(np.float32).eps
# XLA's CPU kernels of sqrt and log1p differ by up to an ulp between the scalar and the vectorised code paths (the
# other transcendental kernels agree bitwise), and fusion differs with the operands' shapes, so results agree only
# up to rounding: each function below chains at most eight elementwise operations, so 16 ulp of the magnitudes it
# combines.
LAYOUT_RTOL = 16 * F32_EPS


@st.composite
def broadcast_cases(draw):
    shape = draw(st.sampled_from(DATA_SHAPES[1:]))
    gs, gt = draw(_gamma_chain((), 2, min_gap=0.0))
    return draw(_values(shape, 3.0, np.float32)), draw(_values(shape, 3.0, np.float32)), float(gs), float(gt)


@jax.jit
def _layout_outputs(x, z, gs, gt):
    return (core.top_down_posterior_coefficients(gs, gt), core.top_down_posterior(z, x, gs, gt),
            core.forward_marginal(x, gt), core.forward_transition(z, gs, gt), core.per_step_kl_x(gs, gt, x, z),
            core.per_step_kl_eps(gs, gt, x, z))


def _layout_values(x, z, gs, gt):
    """(value, scale) pairs: each value, broadcast to x's shape, with the magnitude its rounding error is relative to."""
    full = lambda a: np.broadcast_to(np.asarray(a, np.float64), x.shape)
    (c_z, c_x, log_var), (loc, log_var_post), *others = _layout_outputs(x, z, gs, gt)
    c_z, c_x, loc = full(c_z), full(c_x), full(loc)
    values = [log_var, log_var_post, *jax.tree.leaves(others)]
    pairs = [(full(v), np.abs(full(v))) for v in (c_z, c_x, *values)]
    return pairs + [(loc, np.abs(c_z * z) + np.abs(c_x * x))]  # a sum of two terms that may cancel


@SETTINGS
@given(case=broadcast_cases())
def test_scalar_gamma_equals_broadcast_gamma(case):
    """The same noise level as a scalar, per example (B, 1, ..., 1), per dimension, or one scalar and one per
    dimension gives the same values of the forward marginal and transition, the posterior and the per-step KLs."""
    x, z, gs, gt = (jnp.asarray(a, jnp.float32) for a in case)
    per_example = (x.shape[0],) + (1,) * (x.ndim - 1)
    layouts = {
        "per_example": (jnp.full(per_example, gs), jnp.full(per_example, gt)),
        "per_dimension": (jnp.full(x.shape, gs), jnp.full(x.shape, gt)),
        "mixed": (gs, jnp.full(x.shape, gt)),
    }
    reference = _layout_values(x, z, gs, gt)
    for layout, (gs_b, gt_b) in layouts.items():
        for i, ((value, _), (ref, scale)) in enumerate(zip(_layout_values(x, z, gs_b, gt_b), reference, strict=True)):
            finite = np.isfinite(ref)  # log-variances are -inf at s = t, in every layout
            np.testing.assert_array_equal(np.isfinite(value), finite, err_msg=f"{layout}, value {i}")
            np.testing.assert_array_equal(value[~finite], ref[~finite], err_msg=f"{layout}, value {i}")
            assert_within(value[finite], ref[finite], LAYOUT_RTOL * scale[finite], f"{layout}, value {i}")


# ---------------------------------------------------------------------------------------------------------------
# (e) float32 finiteness across the range


@st.composite
def float32_cases(draw):
    """gamma_s <= gamma_t in [-30, 30] as float32 (equal where ``equal``), data and predictions in [-1, 1]."""
    shape, gamma_shape = draw(_data_and_gamma_shapes())
    gs, gt = draw(_gamma_chain(gamma_shape, 2, min_gap=0.0))
    equal = draw(hnp.arrays(bool, gamma_shape))
    gs, gt = gs.astype(np.float32), np.where(equal, gs, gt).astype(np.float32)
    x, z_t, prediction = (draw(_values(shape, 1.0, np.float32)) for _ in range(3))
    return gs, gt, x, z_t, prediction


def _float32_values(gs, gt, x, z_t, prediction):
    return {
        "alpha_sigma_s": core.alpha_sigma(gs),
        "alpha_sigma_t": core.alpha_sigma(gt),
        "forward_marginal": core.forward_marginal(x, gt),
        "forward_transition.loc": core.forward_transition(x, gs, gt)[0],
        "top_down_posterior.loc": core.top_down_posterior(z_t, x, gs, gt)[0],
        "top_down_posterior_coefficients.c": core.top_down_posterior_coefficients(gs, gt)[:2],
        "per_step_kl_x": core.per_step_kl_x(gs, gt, x, prediction),
        "per_step_kl_eps": core.per_step_kl_eps(gs, gt, x, prediction),
        **{f"per_step_kl[{p}]": core.per_step_kl(x, z_t, gs, gt, prediction, parameterization=p)
           for p in PARAMETERIZATIONS},
        **{f"convert_prediction[{p} -> x]": core.convert_prediction(prediction, z_t, gt, source=p, target="x")
           for p in PARAMETERIZATIONS},
        "forward_transition.log_variance": core.forward_transition(x, gs, gt)[1],
        "top_down_posterior.log_variance": core.top_down_posterior(z_t, x, gs, gt)[1],
    }


def _float32_total(gs, gt, x, z_t, prediction):
    loc, _ = core.top_down_posterior(z_t, x, gs, gt)
    _, log_var = core.top_down_posterior(z_t, x, gs, jnp.where(gs < gt, gt, gs + 1.0))
    kls = [core.per_step_kl(x, z_t, gs, gt, prediction, parameterization=p) for p in PARAMETERIZATIONS]
    return jnp.sum(loc) + jnp.sum(log_var) + sum(jnp.sum(kl) for kl in kls)


# Jitted once per shape (the library's own functions are what users jit); eager evaluation gives the same numbers.
_float32_values_jit = jax.jit(_float32_values)
_float32_grads_jit = jax.jit(jax.grad(_float32_total, argnums=range(5)))


@SETTINGS
@given(case=float32_cases())
def test_values_finite_in_float32(case):
    gs, gt, x, z_t, prediction = (jnp.asarray(a) for a in case)
    distinct = np.broadcast_to(np.asarray(gs) < np.asarray(gt), x.shape)
    values = _float32_values_jit(gs, gt, x, z_t, prediction)
    # The log-variances of the transition and the posterior are finite for s < t and -inf (a point mass) at s = t.
    for name in ("forward_transition.log_variance", "top_down_posterior.log_variance"):
        log_var = np.asarray(values.pop(name))
        assert log_var.dtype == np.float32, name
        assert np.all(np.isfinite(log_var[distinct])), name
        np.testing.assert_array_equal(log_var[~distinct], -np.inf, err_msg=name)
    for name, value in values.items():
        for leaf in jax.tree.leaves(value):
            assert leaf.dtype == jnp.float32, name
            assert np.all(np.isfinite(leaf)), name


@SETTINGS
@given(case=float32_cases())
def test_posterior_gradients_finite_in_float32(case):
    """Gradients in the noise levels and the data of the posterior mean and the per-step KLs (finite at s = t too),
    and of the log-variance where s < t (at s = t its derivative is infinite: log(1 - e^{gamma_s - gamma_t}))."""
    grads = _float32_grads_jit(*(jnp.asarray(a) for a in case))
    for name, grad in zip(("gamma_s", "gamma_t", "x", "z_t", "prediction"), grads, strict=True):
        assert grad.dtype == jnp.float32, name
        assert np.all(np.isfinite(grad)), name
