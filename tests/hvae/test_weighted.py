"""Tests of the Kingma & Gao weightings, the weighted diffusion loss and the adaptive importance density.

References are independent of the library: NumPy/SciPy closed forms of each weighting, the truncated densities of the
cosine and EDM families, and, for Gaussian data ``x ~ N(0, v I)`` with the fixed denoiser
``eps_hat = a sigma z + b``, the expected squared error ``E(eps_i - eps_hat_i)^2 = (1 - a sigma^2)^2 + a^2 sigma^2
alpha^2 v + b^2``, integrated over log-SNR by ``scipy.integrate.quad``. Statistical bounds follow STYLE.md rule 21.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.special
import scipy.stats

from mulan_ppl.hvae.diffusion import diffusion_term
from mulan_ppl.hvae.weighted import AdaptiveImportance, AdaptiveImportanceState, weighted_diffusion_term
from mulan_ppl.hvae.weighting import (
    edm_monotone_weighting,
    edm_weighting,
    edm_weighting_peak,
    elbo_weighting,
    iddpm_weighting,
    shifted_weighting,
    sigmoid_weighting,
    v_weighting,
)
from mulan_ppl.schedules import EDM, Cosine, FixedLinear, ShiftedCosine, VPLinear

FAILURE_BUDGET = 1e-6
Z_BUDGET = float(scipy.stats.norm.isf(FAILURE_BUDGET / 2))  # 4.89: |mean - truth| <= Z * standard error

GAMMA_MIN, GAMMA_MAX = -13.3, 5.0  # library defaults: log-SNR in [-5, 13.3]
SPECIAL_LOG_SNR = [-20.0, -7.5, -3.3078, -1.0, 0.0, 0.5, 2.0, 5.0, 10.0, 20.0]
LOG_SNR_GRID = np.sort(np.concatenate([np.linspace(-30.0, 30.0, 1201), SPECIAL_LOG_SNR]))  # shared by the tests


# ---------------------------------------------------------------------------------------------- NumPy references
def _np_edm(lam, p_mean=-1.2, p_std=1.2, sigma_data=0.5):
    return scipy.stats.norm.pdf(lam, -2 * p_mean, 2 * p_std) * (np.exp(-lam) + sigma_data**2)


def _np_edm_peak(**kw):
    res = scipy.optimize.minimize_scalar(lambda lam: -_np_edm(lam, **kw), bounds=(-15.0, 5.0), method="bounded",
                                         options=dict(xatol=1e-10))
    return res.x


def _np_edm_monotone(lam, **kw):
    return _np_edm(np.maximum(lam, _np_edm_peak(**kw)), **kw)


EDM_ALT = dict(p_mean=-0.5, p_std=1.0, sigma_data=1.0)

# name -> (library weighting, NumPy reference): Table 1 and Sec. 5.1 of Kingma & Gao.
WEIGHTINGS = {
    "elbo": (elbo_weighting, lambda lam: np.ones_like(lam)),
    "sigmoid1": (sigmoid_weighting(1.0), lambda lam: scipy.special.expit(1.0 - lam)),
    "sigmoid2": (sigmoid_weighting(2.0), lambda lam: scipy.special.expit(2.0 - lam)),
    "sigmoid5": (sigmoid_weighting(5.0), lambda lam: scipy.special.expit(5.0 - lam)),
    "iddpm": (iddpm_weighting, lambda lam: 1.0 / np.cosh(lam / 2)),
    "v": (v_weighting, lambda lam: np.exp(-lam / 2)),
    "edm": (edm_weighting, _np_edm),
    "edm_alt": (functools.partial(edm_weighting, **EDM_ALT), functools.partial(_np_edm, **EDM_ALT)),
    "edm_monotone": (edm_monotone_weighting, _np_edm_monotone),
    "edm_monotone_alt": (functools.partial(edm_monotone_weighting, **EDM_ALT),
                         functools.partial(_np_edm_monotone, **EDM_ALT)),
    "shifted_sigmoid2": (shifted_weighting(sigmoid_weighting(2.0), -1.3863),
                         lambda lam: scipy.special.expit(2.0 - (lam + 1.3863))),
}
MONOTONE = ("elbo", "sigmoid1", "sigmoid2", "sigmoid5", "v", "edm_monotone", "edm_monotone_alt", "shifted_sigmoid2")
NON_MONOTONE = ("iddpm", "edm", "edm_alt")


def _mse(gamma, a, b, v):
    """E(eps - eps_hat)^2 per dimension for x ~ N(0, v), eps_hat = a sigma z + b, at noise level gamma (NumPy)."""
    sigma_sq = scipy.special.expit(gamma)
    return (1 - a * sigma_sq) ** 2 + a**2 * sigma_sq * (1 - sigma_sq) * v + b**2


def _linear_denoiser(a, b):
    def denoiser(z, t, gamma, context):
        del t, context
        return a * jnp.sqrt(jax.nn.sigmoid(gamma)) * z + b

    return denoiser


def _truth(weight_np, a, b, v, d, lam_min=-GAMMA_MAX, lam_max=-GAMMA_MIN):
    """1/2 d int w(lam) E(eps - eps_hat)^2 dlam over [lam_min, lam_max] (Kingma & Gao, Eq. 6)."""
    value, err = scipy.integrate.quad(lambda lam: weight_np(np.asarray(lam)) * _mse(-lam, a, b, v), lam_min, lam_max,
                                      epsabs=1e-12, epsrel=1e-12, limit=400, points=[-3.3, 0.0, 2.0])
    assert err < 1e-8
    return 0.5 * d * value


def _power_schedule(exponents, gamma_min=GAMMA_MIN, gamma_max=GAMMA_MAX):
    """Per-dimension schedule gamma_i(t) = gamma_min + (gamma_max - gamma_min) t**p_i, shape (B, D)."""
    p = jnp.asarray(exponents, jnp.float32)

    def gamma_fn(t, context=None):
        return gamma_min + (gamma_max - gamma_min) * jnp.power(t[:, None], p)

    return gamma_fn


class _Recorder:
    """Denoiser that remembers its inputs (eager only)."""

    def __init__(self, denoiser):
        self.denoiser, self.seen = denoiser, {}

    def __call__(self, z, t, gamma, context):
        out = self.denoiser(z, t, gamma, context)
        self.seen = dict(z=np.asarray(z, np.float64), t=np.asarray(t, np.float64),
                         gamma=np.asarray(gamma, np.float64), out=np.asarray(out, np.float64))
        return out


# ---------------------------------------------------------------------------------------------- weightings
@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_weighting_matches_closed_form(name, x64):
    weighting, reference = WEIGHTINGS[name]
    got = np.asarray(weighting(jnp.asarray(LOG_SNR_GRID)))
    want = reference(LOG_SNR_GRID)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0.0)


def test_edm_numbers_from_the_paper():
    # Kingma & Gao digest: lambda* = -3.3078, w(lambda*) = 0.27103; EDM-monotonic normalised to max 1 (Sec. 5).
    assert edm_weighting_peak() == pytest.approx(-3.3078, abs=5e-5)
    assert edm_weighting_peak(**EDM_ALT) == pytest.approx(_np_edm_peak(**EDM_ALT), abs=1e-7)
    peak_value = float(edm_weighting(jnp.asarray(edm_weighting_peak())))
    assert peak_value == pytest.approx(0.27103, abs=5e-6)
    normalised = np.asarray(edm_monotone_weighting(jnp.array([-10.0, -2.0, 0.0, 2.0, 5.0]))) / peak_value
    np.testing.assert_allclose(normalised, [1.0, 0.873, 0.465, 0.233, 0.0876], rtol=2e-3)


def test_monotone_weightings_are_monotone(x64):
    grid = jnp.asarray(LOG_SNR_GRID)
    for name in MONOTONE:
        w = np.asarray(WEIGHTINGS[name][0](grid))
        assert np.all(np.diff(w) <= 0.0), name
    for name in NON_MONOTONE:  # rises then falls: a single interior maximum
        w = np.asarray(WEIGHTINGS[name][0](grid))
        assert 0 < np.argmax(w) < grid.size - 1 and np.any(np.diff(w) > 0), name
    # EDM-monotonic is EDM right of the peak and constant left of it.
    peak = edm_weighting_peak()
    right, left = grid[grid >= peak], grid[grid < peak]
    np.testing.assert_array_equal(edm_monotone_weighting(right), edm_weighting(right))
    np.testing.assert_allclose(edm_monotone_weighting(left), float(edm_weighting(jnp.asarray(peak))), rtol=1e-12)


def test_weightings_finite_in_float32():
    lam = jnp.linspace(-30.0, 30.0, 121, dtype=jnp.float32)
    for name, (weighting, _) in WEIGHTINGS.items():
        value = weighting(lam)
        grad = jax.grad(lambda s, w=weighting: jnp.sum(w(s)))(lam)  # elementwise: the sum's gradient
        assert value.dtype == jnp.float32, name
        assert bool(jnp.all(jnp.isfinite(value)) & jnp.all(value >= 0) & jnp.all(jnp.isfinite(grad))), name


def test_weighting_bad_hyperparameters():
    with pytest.raises(ValueError, match="`bias`"):
        sigmoid_weighting(float("nan"))
    with pytest.raises(ValueError, match="`bias`"):
        sigmoid_weighting("2")
    with pytest.raises(ValueError, match="`p_std`"):
        edm_weighting(jnp.zeros(2), p_std=0.0)
    with pytest.raises(ValueError, match="`sigma_data`"):
        edm_monotone_weighting(jnp.zeros(2), sigma_data=-0.5)
    with pytest.raises(ValueError, match="`p_mean`"):
        edm_weighting_peak(p_mean=float("inf"))
    with pytest.raises(ValueError, match="`shift`"):
        shifted_weighting(v_weighting, float("inf"))
    with pytest.raises(TypeError, match="`weighting`"):
        shifted_weighting(2.0, 1.0)
    with pytest.raises(TypeError, match="`log_snr`"):
        v_weighting(object())


# ---------------------------------------------------------------------------------------------- the weighted loss
def _any_denoiser(z, t, gamma, context):
    """A fixed denoiser using all of its inputs (any parameterization)."""
    del context
    return 0.7 * z + 0.1 * jnp.sin(gamma) + 0.05 * t.reshape(t.shape + (1,) * (z.ndim - 1))


@pytest.mark.parametrize("parameterization", ["eps", "v", "x"])
@pytest.mark.parametrize("schedule", ["scalar", "per_dimension"])
def test_elbo_weighting_reproduces_diffusion_term(parameterization, schedule):
    x = jax.random.normal(jax.random.key(1), (16, 2, 3))
    gamma_fn = FixedLinear() if schedule == "scalar" else (
        lambda t, c: -12.0 + jnp.array([[14.0, 15.0, 16.0]]) * t[:, None, None] ** jnp.array([[1.0, 1.5, 0.7]]))
    key = jax.random.key(3)
    for kwargs in (dict(), dict(antithetic=False), dict(times=jnp.linspace(0.0, 1.0, 16))):
        want = diffusion_term(x, key, gamma_fn, _any_denoiser, parameterization=parameterization, **kwargs)
        got = weighted_diffusion_term(x, key, gamma_fn, _any_denoiser, weighting=elbo_weighting,
                                      parameterization=parameterization, **kwargs)
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", ["sigmoid2", "v", "edm_monotone"])
def test_per_dimension_weighting_matches_numpy(name):
    weighting, reference = WEIGHTINGS[name]
    exponents = np.array([0.5, 1.0, 2.0])
    gamma_fn = _power_schedule(exponents, -6.0, 4.0)
    x = jax.random.normal(jax.random.key(0), (32, 3))
    times = jnp.linspace(0.02, 0.98, 32)
    recorder = _Recorder(_linear_denoiser(0.8, 0.1))
    loss, aux = weighted_diffusion_term(x, jax.random.key(7), gamma_fn, recorder, weighting=weighting, times=times,
                                        return_aux=True)
    t = np.asarray(times, np.float64)[:, None]
    gamma = -6.0 + 10.0 * t**exponents
    dgamma = 10.0 * exponents * t ** (exponents - 1)
    z, eps_hat = recorder.seen["z"], recorder.seen["out"]
    eps = (z - np.sqrt(scipy.special.expit(-gamma)) * np.asarray(x, np.float64)) / np.sqrt(scipy.special.expit(gamma))
    sq = (eps - eps_hat) ** 2
    want = 0.5 * np.sum(reference(-gamma) * dgamma * sq, axis=1)
    np.testing.assert_allclose(loss, want, rtol=1e-4)
    np.testing.assert_allclose(aux["log_snr"], -gamma, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(aux["weighted_mse"], np.sum(reference(-gamma) * sq, axis=1), rtol=1e-4)
    # Per dimension, not at a summary noise level: weighting the mean log-SNR gives another number.
    at_mean = 0.5 * np.sum(reference(-gamma.mean(1, keepdims=True)) * dgamma * sq, axis=1)
    assert np.max(np.abs(at_mean - want) / want) > 1e-2


def _estimate(loss):
    loss = np.asarray(loss, np.float64)
    return loss.mean(), loss.std(ddof=1) / math.sqrt(loss.size)


def _adaptive_state():
    """A clearly non-uniform adaptive density: EMA proportional to a bump in log-SNR (bins in increasing gamma)."""
    adaptive = AdaptiveImportance(gamma_min=GAMMA_MIN, gamma_max=GAMMA_MAX, num_bins=50)
    centres = GAMMA_MIN + adaptive.bin_width * (np.arange(50) + 0.5)
    ema = 0.05 + np.exp(-0.5 * ((-centres - 2.0) / 2.0) ** 2)
    return adaptive, AdaptiveImportanceState(jnp.asarray(ema, jnp.float32))


# (importance name, weighting name) pairs; None is uniform time through the model schedule.
IMPORTANCE_CASES = [
    (None, "elbo"), (None, "sigmoid2"), (None, "edm_monotone"), (None, "v"),
    ("cosine", "sigmoid2"), ("edm", "edm_monotone"), ("shifted_cosine", "v"), ("vp_linear", "sigmoid2"),
    ("adaptive", "sigmoid2"),
]


def _importance(name):
    if name is None:
        return None
    if name == "adaptive":
        adaptive, state = _adaptive_state()
        return adaptive.schedule(state)
    return {"cosine": Cosine(), "edm": EDM(), "shifted_cosine": ShiftedCosine(shift=-1.0),
            "vp_linear": VPLinear()}[name]


@pytest.fixture(scope="module")
def importance_estimates():
    """Monte Carlo estimates (mean, standard error) of every case on Gaussian data, iid times, n = 2**15."""
    a, b, v, d, n = 0.9, 0.05, 0.5, 2, 2**15
    x = jnp.sqrt(v) * jax.random.normal(jax.random.key(11), (n, d))
    out = {}
    for i, (importance, name) in enumerate(IMPORTANCE_CASES):
        loss = weighted_diffusion_term(x, jax.random.key(100 + i), FixedLinear(), _linear_denoiser(a, b),
                                       weighting=WEIGHTINGS[name][0], importance=_importance(importance),
                                       antithetic=False)
        out[(importance, name)] = _estimate(loss)
    truths = {name: _truth(WEIGHTINGS[name][1], a, b, v, d) for name in {c[1] for c in IMPORTANCE_CASES}}
    return out, truths


@pytest.mark.parametrize("case", IMPORTANCE_CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def test_estimators_unbiased_for_the_weighted_loss(case, importance_estimates):
    estimates, truths = importance_estimates
    mean, se = estimates[case]
    truth = truths[case[1]]
    assert abs(mean - truth) <= Z_BUDGET * se, (mean, truth, se)
    assert se < 0.02 * truth  # the bound above is informative
    if case[0] is not None:  # the importance-sampled estimate equals the uniform-time one within 4 standard errors
        mean_u, se_u = estimates[(None, case[1])]
        assert abs(mean - mean_u) <= 4.0 * math.hypot(se, se_u)


def test_per_dimension_schedule_unbiased():
    # Dimensions with different paths but shared endpoints and an elementwise denoiser: the per-dimension objective
    # is the sum of the scalar one over dimensions.
    a, b, v, n = 0.9, 0.05, 0.5, 2**15
    x = jnp.sqrt(v) * jax.random.normal(jax.random.key(12), (n, 3))
    loss = weighted_diffusion_term(x, jax.random.key(13), _power_schedule([0.5, 1.0, 2.0]), _linear_denoiser(a, b),
                                   weighting=sigmoid_weighting(2.0), antithetic=False)
    mean, se = _estimate(loss)
    truth = _truth(WEIGHTINGS["sigmoid2"][1], a, b, v, 3)
    assert abs(mean - truth) <= Z_BUDGET * se, (mean, truth, se)


def _truncated_cosine_density(lam, lam_min, lam_max):
    """sech(lam/2)/(2 pi) truncated to [lam_min, lam_max] (Kingma & Gao, Table 4 and Eq. 127-132)."""
    u = lambda s: 2 / np.pi * np.arctan(np.exp(-s / 2))  # noqa: E731
    return 1 / np.cosh(lam / 2) / (2 * np.pi) / (u(lam_min) - u(lam_max))


def _truncated_edm_density(lam, lam_min, lam_max):
    """N(lam; 2.4, 2.4^2) truncated (Table 4, with erratum E4)."""
    dist = scipy.stats.norm(2.4, 2.4)
    return dist.pdf(lam) / (dist.cdf(lam_max) - dist.cdf(lam_min))


@pytest.mark.parametrize("family", ["cosine", "edm"])
def test_importance_weight_is_weighting_over_density(family):
    importance, density = {"cosine": (Cosine(), _truncated_cosine_density),
                           "edm": (EDM(), _truncated_edm_density)}[family]
    x = jax.random.normal(jax.random.key(2), (32, 3))
    u = jnp.linspace(0.01, 0.99, 32)
    recorder = _Recorder(_linear_denoiser(0.8, 0.1))
    loss = weighted_diffusion_term(x, jax.random.key(4), FixedLinear(), recorder, weighting=sigmoid_weighting(2.0),
                                   importance=importance, times=u)
    gamma = recorder.seen["gamma"][:, 0]
    lam = -gamma
    eps = (recorder.seen["z"] - np.sqrt(scipy.special.expit(-gamma))[:, None] * np.asarray(x, np.float64)
           ) / np.sqrt(scipy.special.expit(gamma))[:, None]
    sq = np.sum((eps - recorder.seen["out"]) ** 2, axis=1)
    want = 0.5 * scipy.special.expit(2.0 - lam) * sq / density(lam, -GAMMA_MAX, -GAMMA_MIN)
    np.testing.assert_allclose(loss, want, rtol=2e-4)
    # The denoiser's time is the model schedule's time of that noise level (FixedLinear: linear in gamma).
    np.testing.assert_allclose(recorder.seen["t"], (gamma - GAMMA_MIN) / (GAMMA_MAX - GAMMA_MIN), atol=1e-6)


@pytest.mark.parametrize("loss", ["iddpm_eps", "v_prediction", "edm"])
def test_implied_weightings_of_table_1(loss):
    # Per draw, the practical loss run on its schedule equals the weighted loss with its implied weighting, up to the
    # constant Kingma & Gao drop: eps-loss on cosine <-> sech(lam/2) (times 2 pi), v-loss on cosine <-> exp(-lam/2)
    # (times pi; erratum E1), EDM's x-loss on EDM's schedule <-> N(lam; 2.4, 2.4^2)(exp(-lam) + 1/4) (times
    # sigma_data^2); truncation to [lam_min, lam_max] multiplies each density by 1 / mass.
    lam_min, lam_max = -GAMMA_MAX, -GAMMA_MIN
    u = lambda s: 2 / np.pi * np.arctan(np.exp(-s / 2))  # noqa: E731
    cosine_mass = u(lam_min) - u(lam_max)
    edm_mass = np.diff(scipy.stats.norm(2.4, 2.4).cdf([lam_min, lam_max]))[0]
    schedule, weighting, parameterization, constant = {
        "iddpm_eps": (Cosine(), iddpm_weighting, "eps", 2 * np.pi * cosine_mass),
        "v_prediction": (Cosine(), v_weighting, "v", np.pi * cosine_mass),
        "edm": (EDM(), edm_weighting, "x", 0.25 * edm_mass),
    }[loss]
    x = jax.random.normal(jax.random.key(3), (32, 3))
    recorder = _Recorder(lambda z, t, g, c: 0.6 * z - 0.1)
    got = weighted_diffusion_term(x, jax.random.key(4), schedule, recorder, weighting=weighting,
                                  parameterization=parameterization, times=jnp.linspace(0.01, 0.99, 32))
    gamma, z, pred = recorder.seen["gamma"], recorder.seen["z"], recorder.seen["out"]
    x64 = np.asarray(x, np.float64)
    alpha, sigma = np.sqrt(scipy.special.expit(-gamma)), np.sqrt(scipy.special.expit(gamma))
    eps = (z - alpha * x64) / sigma
    if loss == "iddpm_eps":  # 1/2 ||eps - eps_hat||^2
        practical = 0.5 * np.sum((eps - pred) ** 2, axis=1)
    elif loss == "v_prediction":  # 1/2 ||v - v_hat||^2, v = alpha eps - sigma x
        practical = 0.5 * np.sum((alpha * eps - sigma * x64 - pred) ** 2, axis=1)
    else:  # EDM: w~(lam) ||x - x_hat||^2 with w~ = (e^{-lam} + s_d^2) / (e^{-lam} s_d^2) (their Eq. 43-45)
        lam = -gamma[:, 0]
        practical = (np.exp(-lam) + 0.25) / (np.exp(-lam) * 0.25) * np.sum((x64 - pred) ** 2, axis=1)
    np.testing.assert_allclose(got, 0.5 * constant * practical if loss == "edm" else constant * practical, rtol=5e-4)


def test_importance_equal_to_model_schedule_reproduces_uniform_time():
    x = jax.random.normal(jax.random.key(5), (32, 3))
    kwargs = dict(weighting=edm_monotone_weighting, return_aux=True)
    uniform, aux_u = weighted_diffusion_term(x, jax.random.key(6), VPLinear(), _linear_denoiser(0.8, 0.1), **kwargs)
    sampled, aux_s = weighted_diffusion_term(x, jax.random.key(6), VPLinear(), _linear_denoiser(0.8, 0.1),
                                             importance=VPLinear(), **kwargs)
    np.testing.assert_allclose(sampled, uniform, rtol=1e-6)
    np.testing.assert_allclose(aux_s["t"], aux_u["t"], atol=1e-6)
    np.testing.assert_allclose(aux_s["log_snr"], aux_u["log_snr"], rtol=1e-6)


def test_weighted_loss_finite_at_the_extremes():
    # DESIGN.md section 5: finite values and gradients in float32 for gamma in [-30, 30], at t = 0 and t = 1.
    x = jnp.array([[-1.0, 1.0], [0.5, 0.0], [1.0, -1.0]])
    gamma_fn = FixedLinear(gamma_min=-30.0, gamma_max=30.0)
    cases = [("elbo", "eps"), ("sigmoid2", "x"), ("v", "v"), ("edm", "eps"), ("edm_monotone", "v"), ("iddpm", "x")]
    for name, parameterization in cases:
        def total(scale, w=WEIGHTINGS[name][0], p=parameterization):
            den = lambda z, t, g, c: scale * z  # noqa: E731
            return weighted_diffusion_term(x, jax.random.key(0), gamma_fn, den, weighting=w, parameterization=p,
                                           times=jnp.array([0.0, 0.5, 1.0])).sum()

        value, grad = jax.value_and_grad(total)(0.5)
        assert bool(jnp.isfinite(value) & jnp.isfinite(grad)), (name, parameterization)


def test_weighted_diffusion_term_jits():
    adaptive, state = _adaptive_state()
    x = jax.random.normal(jax.random.key(8), (32, 3))

    def run(state, key):
        return weighted_diffusion_term(x, key, FixedLinear(), _linear_denoiser(0.8, 0.1), weighting=v_weighting,
                                       importance=adaptive.schedule(state))

    eager = run(state, jax.random.key(9))
    np.testing.assert_allclose(jax.jit(run)(state, jax.random.key(9)), eager, rtol=1e-5)


def test_weighted_diffusion_term_bad_input():
    x = jnp.zeros((4, 3))
    key = jax.random.key(0)
    den = _linear_denoiser(1.0, 0.0)
    call = functools.partial(weighted_diffusion_term, x, key, FixedLinear(), den)
    with pytest.raises(ValueError, match="`parameterization`"):
        call(weighting=elbo_weighting, parameterization="score")
    with pytest.raises(TypeError, match="`weighting`"):
        call(weighting=1.0)
    with pytest.raises(ValueError, match="`weighting`"):
        call(weighting=lambda lam: jnp.sum(lam))
    with pytest.raises(ValueError, match="`times`"):
        call(weighting=elbo_weighting, times=jnp.zeros(3))
    with pytest.raises(ValueError, match="`x`"):
        weighted_diffusion_term(jnp.zeros(()), key, FixedLinear(), den, weighting=elbo_weighting)
    with pytest.raises(ValueError, match="`denoiser`"):
        weighted_diffusion_term(x, key, FixedLinear(), lambda z, t, g, c: z[:, :2], weighting=elbo_weighting)
    with pytest.raises(TypeError, match="`importance`"):
        call(weighting=elbo_weighting, importance="cosine")
    with pytest.raises(ValueError, match="`importance`"):  # a per-dimension importance
        call(weighting=elbo_weighting, importance=lambda u, c: jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match="`importance` needs a scalar `gamma_fn`"):
        weighted_diffusion_term(x, key, _power_schedule([1.0, 2.0, 3.0]), den, weighting=elbo_weighting,
                                importance=Cosine())
    with pytest.raises(ValueError, match="`importance` must cover the log-SNR range"):
        call(weighting=elbo_weighting, importance=Cosine(gamma_min=-10.0))


# ---------------------------------------------------------------------------------------------- adaptive density
def test_adaptive_update_matches_numpy_ema():
    adaptive = AdaptiveImportance(gamma_min=-10.0, gamma_max=6.0, num_bins=8, decay=0.9, initial_value=2.0)
    state = adaptive.init()
    ema = np.full(8, 2.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        lam = rng.uniform(-6.0, 10.0, size=11)
        lam[0] = 11.0  # beyond the range: counts in the end bin (gamma = -11 -> bin 0)
        values = rng.exponential(size=11)
        state = adaptive.update(state, jnp.asarray(lam, jnp.float32), jnp.asarray(values, jnp.float32))
        index = np.clip(np.floor((-lam + 10.0) / 2.0).astype(int), 0, 7)
        for k in range(8):
            if np.any(index == k):
                ema[k] = 0.9 * ema[k] + 0.1 * values[index == k].mean()
    np.testing.assert_allclose(state.ema, ema, rtol=1e-5)
    np.testing.assert_allclose(adaptive.probabilities(state), ema / ema.sum(), rtol=1e-5)
    jitted = jax.jit(adaptive.update)(state, jnp.asarray(lam, jnp.float32), jnp.asarray(values, jnp.float32))
    np.testing.assert_allclose(jitted.ema, adaptive.update(state, lam, values).ema, rtol=1e-6)


@pytest.mark.parametrize("floor", [0.0, 0.2])
def test_adaptive_density_normalised_and_matches_its_schedule(floor):
    adaptive, state = _adaptive_state()
    adaptive = AdaptiveImportance(gamma_min=GAMMA_MIN, gamma_max=GAMMA_MAX, num_bins=50, floor=floor)
    mass = np.asarray(adaptive.probabilities(state), np.float64)
    assert mass.sum() == pytest.approx(1.0, abs=1e-6) and mass.min() >= floor / 50 * (1 - 1e-5)
    # Integrates to 1: midpoint rule with 20 points per bin is exact for a piecewise-constant density.
    lam_min, lam_max = -GAMMA_MAX, -GAMMA_MIN
    edges = np.linspace(lam_min, lam_max, 50 * 20 + 1)
    mid = 0.5 * (edges[1:] + edges[:-1])
    mid = jnp.asarray(mid, jnp.float32)
    density = np.exp(np.asarray(adaptive.log_density(state, mid), np.float64))
    assert np.sum(density * np.diff(edges)) == pytest.approx(1.0, abs=1e-5)
    outside = jnp.where(mid < 4.0, mid - 9.4, mid + 9.4)  # every point beyond one end of [-5, 13.3]
    assert np.all(np.exp(np.asarray(adaptive.log_density(state, outside))) == 0)
    # The schedule: exact endpoints, increasing, and d gamma / du = 1 / p(lambda).
    schedule = adaptive.schedule(state)
    u = jnp.linspace(0.0, 1.0, mid.size)
    gamma, rate = jax.jvp(lambda s: schedule(s, None), (u,), (jnp.ones_like(u),))
    np.testing.assert_allclose(gamma[jnp.array([0, -1])], [GAMMA_MIN, GAMMA_MAX], rtol=1e-6)
    assert np.all(np.diff(np.asarray(gamma)) > 0)
    np.testing.assert_allclose(rate * jnp.exp(adaptive.log_density(state, -gamma)), 1.0, rtol=1e-3)


def test_adaptive_samples_follow_the_density():
    adaptive, state = _adaptive_state()
    n = 2**16
    lam = np.sort(np.asarray(adaptive.sample(state, jax.random.key(21), n), np.float64))
    # Exact CDF of the piecewise-constant density, by bins of increasing log-SNR (= decreasing gamma).
    mass = np.asarray(adaptive.probabilities(state), np.float64)[::-1]
    width = adaptive.bin_width
    position = (lam - (-GAMMA_MAX)) / width
    k = np.clip(np.floor(position).astype(int), 0, 49)
    cdf = np.concatenate([[0.0], np.cumsum(mass)])[k] + mass[k] * (position - k)
    ks = np.max(np.maximum(np.arange(1, n + 1) / n - cdf, cdf - np.arange(n) / n))
    assert ks <= math.sqrt(math.log(2 / FAILURE_BUDGET) / (2 * n))  # DKW bound, 0.0105


def test_adaptive_density_spreads_the_loss_evenly():
    # Kingma & Gao, Eq. 136: once the EMAs track E[w ||eps - eps_hat||^2], the importance-weighted loss
    # (w / p) ||eps - eps_hat||^2 is the same in every bin.
    adaptive = AdaptiveImportance(gamma_min=-8.0, gamma_max=8.0, num_bins=16, decay=0.5)
    centres = -8.0 + (np.arange(16) + 0.5)
    target = np.exp(-0.5 * (centres / 3.0) ** 2) + 0.1
    state = adaptive.init()
    for _ in range(60):
        state = adaptive.update(state, jnp.asarray(-centres), jnp.asarray(target))
    ratio = target / np.exp(np.asarray(adaptive.log_density(state, jnp.asarray(-centres)), np.float64))
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-5)
    np.testing.assert_allclose(ratio.mean(), np.sum(target * 1.0), rtol=1e-5)  # = integral of the target


def test_adaptive_bad_input():
    with pytest.raises(ValueError, match="`num_bins`"):
        AdaptiveImportance(num_bins=0)
    with pytest.raises(ValueError, match="`decay`"):
        AdaptiveImportance(decay=1.0)
    with pytest.raises(ValueError, match="`floor`"):
        AdaptiveImportance(floor=1.0)
    with pytest.raises(ValueError, match="`initial_value`"):
        AdaptiveImportance(initial_value=0.0)
    with pytest.raises(ValueError, match="`gamma_min`"):
        AdaptiveImportance(gamma_min=5.0, gamma_max=5.0)
    adaptive = AdaptiveImportance(num_bins=4)
    state = adaptive.init()
    with pytest.raises(ValueError, match="`log_snr` and `values`"):
        adaptive.update(state, jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match="`values`"):
        adaptive.update(state, jnp.zeros(2), jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="`state.ema`"):
        adaptive.probabilities(AdaptiveImportanceState(jnp.ones(5)))
    with pytest.raises(ValueError, match="`n`"):
        adaptive.sample(state, jax.random.key(0), 0)
