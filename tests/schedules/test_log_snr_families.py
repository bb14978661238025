"""Fixed schedules in gamma = -log SNR: FixedLinear, Cosine, ShiftedCosine, EDM, VPLinear and their pure functions.

Each closed-form derivative (custom_jvp) is compared with forward-mode autodiff of an independently written plain
formula (no truncation rescaling, no custom_jvp), and the implied log-SNR densities with their published forms.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from flax import nnx
from jax.scipy.special import ndtr, ndtri

from mulan_ppl.schedules import (
    EDM,
    Cosine,
    FixedLinear,
    ShiftedCosine,
    VPLinear,
    cosine_gamma,
    cosine_time,
    edm_gamma,
    edm_time,
    linear_gamma,
    vp_linear_gamma,
)

# ---------------------------------------------------------------------------------------------- plain formulas


def plain_linear(t, gamma_min, gamma_max):
    return gamma_min + (gamma_max - gamma_min) * t


def plain_cosine(t, gamma_min, gamma_max, shift):
    # lambda = -2 log tan(pi u / 2) + shift  <=>  u = (2/pi) arctan(exp((gamma + shift) / 2)).
    u_0 = 2.0 / jnp.pi * jnp.arctan(jnp.exp(0.5 * (gamma_min + shift)))
    u_1 = 2.0 / jnp.pi * jnp.arctan(jnp.exp(0.5 * (gamma_max + shift)))
    u = u_0 + (u_1 - u_0) * t
    return 2.0 * jnp.log(jnp.tan(0.5 * jnp.pi * u)) - shift


def plain_edm(t, gamma_min, gamma_max, p_mean, p_std):
    u_0 = ndtr((gamma_min - 2 * p_mean) / (2 * p_std))
    u_1 = ndtr((gamma_max - 2 * p_mean) / (2 * p_std))
    return 2 * p_mean + 2 * p_std * ndtri(u_0 + (u_1 - u_0) * t)


def plain_vp(t, gamma_min, gamma_max, beta_min, beta_max):
    def root(value):
        k = beta_max - beta_min
        return (-beta_min + jnp.sqrt(beta_min**2 + 2 * k * value)) / k

    u_0, u_1 = root(jnp.log1p(jnp.exp(gamma_min))), root(jnp.log1p(jnp.exp(gamma_max)))
    u = u_0 + (u_1 - u_0) * t
    return jnp.log(jnp.expm1(beta_min * u + 0.5 * (beta_max - beta_min) * u**2))


# (name, pure function with keyword parameters, plain formula, keyword parameters)
PURE = [
    ("linear", linear_gamma, plain_linear, dict(gamma_min=-13.3, gamma_max=5.0)),
    ("cosine", cosine_gamma, plain_cosine, dict(gamma_min=-13.3, gamma_max=5.0, shift=0.0)),
    ("shifted_cosine", cosine_gamma, plain_cosine, dict(gamma_min=-12.0, gamma_max=8.0, shift=-2.7726)),
    ("edm", edm_gamma, plain_edm, dict(gamma_min=-13.3, gamma_max=5.0, p_mean=-1.2, p_std=1.2)),
    ("vp_linear", vp_linear_gamma, plain_vp, dict(gamma_min=-13.3, gamma_max=5.0, beta_min=0.1, beta_max=20.0)),
]

# Schedules with endpoints as far apart as each family allows, within gamma in [-30, 30].
WIDE = [
    ("FixedLinear", lambda: FixedLinear(gamma_min=-30.0, gamma_max=30.0)),
    ("Cosine", lambda: Cosine(gamma_min=-30.0, gamma_max=30.0)),
    ("ShiftedCosine", lambda: ShiftedCosine(shift=-3.0, gamma_min=-30.0, gamma_max=30.0)),
    ("EDM", lambda: EDM(gamma_min=-30.0, gamma_max=26.0)),
    ("VPLinear", lambda: VPLinear(gamma_min=-30.0, gamma_max=10.0)),
]
DEFAULT = [
    ("FixedLinear", FixedLinear),
    ("Cosine", Cosine),
    ("ShiftedCosine", lambda: ShiftedCosine.from_resolution(256)),
    ("EDM", EDM),
    ("VPLinear", VPLinear),
]


@pytest.mark.parametrize("name,pure,plain,params", PURE, ids=[p[0] for p in PURE])
def test_closed_form_jvp_matches_autodiff_of_plain_formula(name, pure, plain, params, x64):
    """Values and tangents w.r.t. t and every parameter agree to 1e-5 relative (float64)."""
    t = jnp.linspace(0.0, 1.0, 101)
    keys = list(params)
    values = [jnp.asarray(params[k], jnp.float64) for k in keys]
    tangent_t = jax.random.normal(jax.random.key(0), t.shape, jnp.float64)
    tangents = [jnp.asarray(v, jnp.float64) for v in jax.random.normal(jax.random.key(1), (len(keys),), jnp.float64)]

    def ours(t, *p):
        return pure(t, **dict(zip(keys, p)))

    @jax.jit
    def both(t, values, tangent_t, tangents):
        full = [jax.jvp(f, (t, *values), (tangent_t, *tangents)) for f in (ours, plain)]
        # d gamma / dt alone (the tangent the ELBO uses).
        rates = [jax.jvp(lambda s, f=f: f(s, *values), (t,), (jnp.ones_like(t),))[1] for f in (ours, plain)]
        return full, rates

    ((got, got_dot), (want, want_dot)), (rate, want_rate) = both(t, values, tangent_t, tangents)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got_dot, want_dot, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(rate, want_rate, rtol=1e-5)


@pytest.mark.parametrize("name,pure,plain,params", PURE[1:2] + PURE[3:], ids=[p[0] for p in PURE[1:2] + PURE[3:]])
def test_float32_derivative_close_to_float64_formula(name, pure, plain, params):
    t = jnp.linspace(0.0, 1.0, 101, dtype=jnp.float32)
    _, rate = jax.jit(lambda s: jax.jvp(lambda u: pure(u, **params), (s,), (jnp.ones_like(s),)))(t)
    assert rate.dtype == jnp.float32
    with jax.enable_x64(True):
        t64 = jnp.asarray(np.asarray(t), jnp.float64)
        values = [jnp.float64(v) for v in params.values()]
        _, want = jax.jit(lambda s: jax.jvp(lambda u: plain(u, *values), (s,), (jnp.ones_like(s),)))(t64)
    np.testing.assert_allclose(rate, np.asarray(want), rtol=2e-4)


@pytest.mark.parametrize("name,make", WIDE + DEFAULT, ids=[f"wide-{n}" for n, _ in WIDE] + [n for n, _ in DEFAULT])
def test_endpoints_exact_and_strictly_increasing(name, make):
    schedule = make()
    t = jnp.linspace(0.0, 1.0, 1000)
    gamma = np.asarray(jax.jit(lambda s: schedule(s, None))(t))
    assert gamma.shape == (1000,) and gamma.dtype == np.float32
    assert abs(gamma[0] - schedule.gamma_min) <= 1e-5
    assert abs(gamma[-1] - schedule.gamma_max) <= 1e-5
    assert np.all(np.diff(gamma) > 0)


@pytest.mark.parametrize("name,make", WIDE, ids=[n for n, _ in WIDE])
def test_finite_values_and_gradients_at_both_ends_float32(name, make):
    schedule = make()
    t = jnp.array([0.0, 1.0], jnp.float32)

    @jax.jit
    def run(t):
        gamma, rate = jax.jvp(lambda s: schedule(s, None), (t,), (jnp.ones_like(t),))
        return gamma, rate, jax.grad(lambda s: schedule(s, None).sum())(t)

    gamma, rate, grad_t = run(t)
    for value in (gamma, rate, grad_t):
        assert value.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(value)))
    np.testing.assert_allclose(grad_t, rate, rtol=1e-6)
    np.testing.assert_array_equal(gamma, [schedule.gamma_min, schedule.gamma_max])


def test_second_derivative_is_continuous_at_both_ends(x64):
    """Endpoint pinning (against XLA reassociation) keeps derivatives in t at t = 0 and t = 1 (float64)."""
    t = jnp.array([0.0, 1e-9, 1.0 - 1e-9, 1.0])
    for pure in (cosine_gamma, edm_gamma):
        def rate(s, pure=pure):
            return jax.jvp(pure, (s,), (jnp.ones_like(s),))[1]

        second = np.asarray(jax.jit(lambda s: jax.jvp(rate, (s,), (jnp.ones_like(s),))[1])(t))
        np.testing.assert_allclose(second[0], second[1], rtol=1e-3)
        np.testing.assert_allclose(second[3], second[2], rtol=1e-3)


def test_cosine_implied_density_is_shifted_sech():
    """1/(d gamma/dt) = p(lambda) / (u_1 - u_0) with p(lambda) = sech((lambda - s)/2) / (2 pi) (Kingma & Gao)."""
    with jax.enable_x64(True):
        shift, gamma_min, gamma_max = -1.5, -13.3, 5.0
        t = jnp.linspace(0.0, 1.0, 11)
        gamma, rate = jax.jit(lambda t: jax.jvp(
            lambda s: cosine_gamma(s, gamma_min=gamma_min, gamma_max=gamma_max, shift=shift), (t,),
            (jnp.ones_like(t),)))(t)
        lam = -np.asarray(gamma)
        u = [2 / np.pi * np.arctan(np.exp((g + shift) / 2)) for g in (gamma_min, gamma_max)]
        density = 1.0 / np.cosh((lam - shift) / 2) / (2 * np.pi)
        np.testing.assert_allclose(1.0 / np.asarray(rate), density / (u[1] - u[0]), rtol=1e-10)


def test_edm_implied_density_has_positive_log_snr_mean():
    """Kingma & Gao Table 4 prints a log-SNR mean of -2.4 (erratum E4); EDM's p(lambda) is N(2.4, 2.4^2)."""
    with jax.enable_x64(True):
        gamma_min, gamma_max = -13.3, 5.0
        t = jnp.linspace(0.0, 1.0, 11)
        gamma, rate = jax.jit(lambda t: jax.jvp(lambda s: edm_gamma(s, gamma_min=gamma_min, gamma_max=gamma_max),
                                                (t,), (jnp.ones_like(t),)))(t)
        lam = -np.asarray(gamma)
        mass = scipy.stats.norm.cdf(-gamma_min, 2.4, 2.4) - scipy.stats.norm.cdf(-gamma_max, 2.4, 2.4)
        np.testing.assert_allclose(1.0 / np.asarray(rate), scipy.stats.norm.pdf(lam, 2.4, 2.4) / mass, rtol=1e-9)
        # The median time of the untruncated law sits at lambda = 2.4 (gamma = -2.4): symmetric endpoints.
        mid = jax.jit(lambda t: edm_gamma(t, gamma_min=-2.4 - 7.0, gamma_max=-2.4 + 7.0))(jnp.array([0.5]))
        np.testing.assert_allclose(mid, [-2.4], atol=1e-12)


def test_vp_linear_matches_song_et_al_integrated_beta():
    """log(1 + e^gamma) = beta_min u + (beta_max - beta_min) u^2 / 2 along the truncated time u(t)."""
    with jax.enable_x64(True):
        t = jnp.linspace(0.0, 1.0, 11)
        gamma = np.asarray(jax.jit(lambda t: vp_linear_gamma(t, gamma_min=-13.3, gamma_max=5.0))(t))
        integrated = np.log1p(np.exp(gamma))
        u = (-0.1 + np.sqrt(0.01 + 2 * 19.9 * integrated)) / 19.9
        np.testing.assert_allclose(np.diff(u), np.full(10, (u[-1] - u[0]) / 10), rtol=1e-9)


def test_inverse_times_round_trip(x64):
    t = jnp.linspace(0.0, 1.0, 21)
    kw = dict(gamma_min=-13.3, gamma_max=5.0)
    cosine_round_trip = jax.jit(lambda t: cosine_time(cosine_gamma(t, shift=0.7, **kw), shift=0.7, **kw))
    edm_round_trip = jax.jit(lambda t: edm_time(edm_gamma(t, **kw), **kw))
    np.testing.assert_allclose(cosine_round_trip(t), t, atol=1e-12)
    np.testing.assert_allclose(edm_round_trip(t), t, atol=1e-12)


def test_shifted_cosine_from_resolution_and_shift_direction():
    assert ShiftedCosine.from_resolution(256).shift == pytest.approx(2 * math.log(64 / 256))
    assert ShiftedCosine.from_resolution(64).shift == 0.0
    t = jnp.linspace(0.05, 0.95, 19)
    plain, shifted = jax.jit(lambda t: (Cosine()(t, None), ShiftedCosine(shift=-2.0)(t, None)))(t)
    # A negative log-SNR shift means more noise (larger gamma) at every interior time.
    assert np.all(np.asarray(shifted) > np.asarray(plain))


@pytest.mark.parametrize("cls", [FixedLinear, Cosine, EDM, VPLinear])
@pytest.mark.parametrize("gamma_min,gamma_max", [(5.0, 5.0), (5.0, -13.3), (-math.inf, 5.0), (-13.3, math.nan)])
def test_gamma_min_not_below_gamma_max_raises(cls, gamma_min, gamma_max):
    with pytest.raises(ValueError, match=rf"`{cls.__name__}`: `gamma_"):
        cls(gamma_min=gamma_min, gamma_max=gamma_max)


def test_family_specific_argument_errors():
    with pytest.raises(ValueError, match="`ShiftedCosine`: `gamma_min` must be less than `gamma_max`"):
        ShiftedCosine(shift=0.0, gamma_min=1.0, gamma_max=0.0)
    with pytest.raises(ValueError, match="`ShiftedCosine`: `shift`"):
        ShiftedCosine(shift=math.inf)
    with pytest.raises(ValueError, match="`ShiftedCosine.from_resolution`: `resolution`"):
        ShiftedCosine.from_resolution(0)
    with pytest.raises(ValueError, match="`EDM`: `p_std` must be > 0"):
        EDM(p_std=0.0)
    with pytest.raises(ValueError, match=r"`EDM`: `gamma_max` must lie within 12 standard deviations"):
        EDM(gamma_max=30.0)
    with pytest.raises(ValueError, match="`VPLinear`: `gamma_max` must be at most"):
        VPLinear(gamma_max=11.0)
    with pytest.raises(ValueError, match="`VPLinear`: need 0 <= `beta_min` < `beta_max`"):
        VPLinear(beta_min=2.0, beta_max=1.0)


@pytest.mark.parametrize("name,make", DEFAULT, ids=[n for n, _ in DEFAULT])
def test_time_must_be_a_batch_vector(name, make):
    schedule = make()
    with pytest.raises(ValueError, match=rf"`{type(schedule).__name__}`: `t` must have shape \(batch,\)"):
        schedule(jnp.zeros((3, 1)), None)


def test_jit_and_nnx_jit_agree():
    t = jnp.linspace(0.0, 1.0, 7)
    for name, make in DEFAULT:
        schedule = make()
        graphdef, state = nnx.split(schedule)
        via_jax = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, None))(state, t)
        via_nnx = nnx.jit(lambda m, x: m(x, None))(schedule, t)
        np.testing.assert_allclose(via_jax, via_nnx, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(via_jax)[[0, -1]], [schedule.gamma_min, schedule.gamma_max], atol=1e-5)
    # Op-by-op evaluation agrees with the compiled one (checked on the cheapest families).
    for schedule in (FixedLinear(), Cosine()):
        np.testing.assert_allclose(schedule(t, None), nnx.jit(lambda m, x: m(x, None))(schedule, t), atol=1e-5)
