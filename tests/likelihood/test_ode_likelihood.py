"""The probability-flow ODE likelihood against the closed-form density of Gaussian data.

For data ``x ~ N(mu, cov)`` and the exact posterior-mean denoiser, the probability-flow ODE transports the t = 0
marginal ``q(z_0) = N(A_0 mu, A_0 cov A_0 + S_0)`` to ``q(z_1)``; with ``q(z_1)`` as the prior, the ODE
log-likelihood of ``x`` must equal the analytic ``log q(z_0 = x)`` (scipy) to 1e-3 nats per dimension, for scalar and
per-dimension schedules and every parameterization, with the exact trace; with Hutchinson's estimator (one probe per
solve) its mean over independent probes must match within 4 standard errors. The drift is checked against the
definition ``f z - g^2/2 score`` and across parameterizations, the NFE count against a callback counter.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

import gaussian_oracle as oracle
from mulan_ppl import core
from mulan_ppl.likelihood import ode_log_likelihood, solve_probability_flow

GAMMA_MIN, GAMMA_MAX = -8.0, 6.0


def _marginal(path, mu, cov, t):
    """Exact N(A mu, A cov A + S) of z_t at time t (NumPy, float64)."""
    d = mu.shape[0]
    gamma = path.gamma(t, d)
    alpha, sigma_sq = np.sqrt(scipy.special.expit(-gamma)), scipy.special.expit(gamma)
    return alpha * mu, alpha[:, None] * cov * alpha[None, :] + np.diag(sigma_sq)


def _setup(d, exponents, seed):
    mu, cov = oracle.random_gaussian(d, seed)
    path = oracle.PowerPath(exponents, GAMMA_MIN, GAMMA_MAX, event_shape=(d,))
    mean_1, cov_1 = _marginal(path, mu, cov, 1.0)
    prior = distrax.MultivariateNormalFullCovariance(jnp.asarray(mean_1), jnp.asarray(cov_1))
    return mu, cov, path, prior


def _reference(path, mu, cov, x):
    mean_0, cov_0 = _marginal(path, mu, cov, 0.0)
    return scipy.stats.multivariate_normal(mean_0, cov_0).logpdf(np.asarray(x))


CASES = [
    pytest.param(2, 1.0, "eps", id="d2-scalar-eps"),
    pytest.param(5, 1.0, "v", id="d5-scalar-v"),
    pytest.param(3, (1.0, 1.5, 2.5), "x", id="d3-multivariate-x"),
    pytest.param(8, tuple(np.linspace(1.0, 3.0, 8)), "v", id="d8-multivariate-v"),
    pytest.param(16, tuple(np.linspace(1.0, 2.0, 16)), "eps", id="d16-multivariate-eps"),
]


@pytest.mark.parametrize("d, exponents, parameterization", CASES)
def test_exact_trace_recovers_the_gaussian_density(x64, d, exponents, parameterization):
    mu, cov, path, prior = _setup(d, exponents, seed=d)
    x = oracle.sample_data(jax.random.key(d), mu, 1.5 * cov, 6, (d,))  # also off the bulk of the data
    denoiser = oracle.GaussianPosteriorMean(mu, cov).denoiser(parameterization)
    log_p, nfe = jax.jit(lambda x, key: ode_log_likelihood(
        x, key, path.gamma_fn, denoiser, parameterization=parameterization, prior=prior, trace="exact"))(
        x, jax.random.key(0))
    error = np.abs(np.asarray(log_p) - _reference(path, mu, cov, x)) / d
    assert error.max() < 1e-3, error
    assert int(nfe) > 10


def test_wrong_prior_is_detected(x64):
    """Control: the same comparison fails with the N(0, I) prior, which is not q(z_1) here."""
    d = 3
    mu, cov, path, _ = _setup(d, 1.0, seed=1)
    x = oracle.sample_data(jax.random.key(1), mu, cov, 4, (d,))
    denoiser = oracle.GaussianPosteriorMean(mu, cov).denoiser("eps")
    log_p, _ = ode_log_likelihood(x, jax.random.key(0), path.gamma_fn, denoiser, trace="exact")
    error = np.abs(np.asarray(log_p) - _reference(path, mu, cov, x)) / d
    assert error.max() > 1e-2


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_with_one_probe_per_solve(x64, probe):
    """One x repeated R times in the batch: each copy has its own probe, so the R values are independent draws."""
    d, replicates = 4, 256
    mu, cov, path, prior = _setup(d, (1.0, 2.0, 1.5, 1.2), seed=3)
    x = jnp.broadcast_to(oracle.sample_data(jax.random.key(3), mu, cov, 1, (d,)), (replicates, d))
    denoiser = oracle.GaussianPosteriorMean(mu, cov).denoiser("v")
    log_p, _ = ode_log_likelihood(x, jax.random.key(7), path.gamma_fn, denoiser, parameterization="v",
                                  prior=prior, trace="hutchinson", probe=probe)
    values = np.asarray(log_p)
    exact = float(np.atleast_1d(_reference(path, mu, cov, x[:1]))[0])
    mean, se = values.mean(), values.std(ddof=1) / np.sqrt(replicates)
    assert se > 0  # the probes differ, so this is an estimate and not the exact trace
    assert abs(mean - exact) < oracle.z_quantile(oracle.FAILURE_BUDGET, 2) * se + 1e-3 * d


def test_float32_matches_float64():
    d = 4
    mu, cov = oracle.random_gaussian(d, 5)
    path = oracle.PowerPath(1.0, -13.3, 5.0, event_shape=(d,))
    denoiser = oracle.GaussianPosteriorMean(mu, cov).denoiser("eps")
    x = np.asarray(oracle.sample_data(jax.random.key(5), mu, cov, 4, (d,)), np.float32)

    def run(x):
        return ode_log_likelihood(x, jax.random.key(0), path.gamma_fn, denoiser, trace="exact")[0]

    low = np.asarray(jax.jit(run)(jnp.asarray(x)))
    with jax.enable_x64(True):
        high = np.asarray(run(jnp.asarray(x, jnp.float64)))
    assert low.dtype == np.float32 and np.all(np.isfinite(low))
    assert np.max(np.abs(low - high)) / d < 5e-3


@pytest.mark.parametrize("parameterization", ["eps", "v", "x", "score"])
def test_drift_matches_the_definition_in_every_parameterization(x64, parameterization):
    """h = f z - g^2/2 * score with f = -sigma^2 gamma'/2, g^2 = sigma^2 gamma', written out in NumPy."""
    rng = np.random.default_rng(0)
    z, eps = rng.normal(size=(2, 50))
    gamma = rng.uniform(-25.0, 25.0, size=50)
    rate = rng.uniform(0.1, 30.0, size=50)
    alpha, sigma = np.sqrt(scipy.special.expit(-gamma)), np.sqrt(scipy.special.expit(gamma))
    x = (z - sigma * eps) / alpha
    prediction = {"eps": eps, "v": alpha * eps - sigma * x, "x": x, "score": -eps / sigma}[parameterization]
    expected = -0.5 * sigma**2 * rate * z + 0.5 * sigma**2 * rate * eps / sigma
    drift = core.probability_flow_drift(jnp.asarray(z), jnp.asarray(prediction), jnp.asarray(gamma),
                                        jnp.asarray(rate), parameterization=parameterization)
    np.testing.assert_allclose(np.asarray(drift), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("parameterization", ["eps", "v", "x", "score"])
def test_drift_is_finite_in_float32_across_the_noise_range(parameterization):
    gamma = jnp.linspace(-30.0, 30.0, 121)
    z = jnp.full_like(gamma, 3.0)
    prediction = jnp.full_like(gamma, -2.0)

    def total(z, prediction, gamma):
        return core.probability_flow_drift(z, prediction, gamma, jnp.ones_like(gamma),
                                           parameterization=parameterization).sum()

    value = core.probability_flow_drift(z, prediction, gamma, jnp.ones_like(gamma), parameterization=parameterization)
    grads = jax.grad(total, argnums=(0, 1, 2))(z, prediction, gamma)
    assert bool(jnp.all(jnp.isfinite(value)))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)


def test_nfe_counts_every_drift_evaluation():
    count = []

    def drift(t, y):
        jax.debug.callback(lambda: count.append(1))
        return -y * (1.0 + 3.0 * t)

    _, nfe = jax.jit(lambda y: solve_probability_flow(drift, y, t0=0.0, t1=1.0, rtol=1e-6, atol=1e-6))(
        jnp.ones((3, 2)))
    jax.effects_barrier()
    assert int(nfe) == len(count) > 20


def test_tolerance_holds_for_every_example():
    """Examples of very different scale in one batch: each meets its own tolerance (per-example error norm)."""
    rates = jnp.asarray([0.1, 1.0, 10.0])
    y1, _ = solve_probability_flow(lambda t, y: -rates[:, None] * y, jnp.ones((3, 1)), t0=0.0, t1=1.0,
                                   rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(np.asarray(y1[:, 0]), np.exp(-np.asarray(rates)), rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(rtol=0.0), "rtol"),
        (dict(atol=-1e-5), "atol"),
        (dict(rtol=float("nan")), "rtol"),
        (dict(trace="hessian"), "trace"),
        (dict(probe="uniform"), "probe"),
        (dict(solver="euler"), "solver"),
        (dict(parameterization="noise"), "parameterization"),
    ],
)
def test_bad_options_raise(kwargs, match):
    den = lambda z, t, g, c: jnp.zeros_like(z)  # noqa: E731
    with pytest.raises(ValueError, match=match):
        ode_log_likelihood(jnp.zeros((2, 3)), jax.random.key(0), oracle.PowerPath(1.0, -5, 5).gamma_fn, den,
                           **kwargs)


def test_bad_shapes_raise():
    path = oracle.PowerPath(1.0, -5, 5)
    with pytest.raises(ValueError, match="`x` must have shape"):
        ode_log_likelihood(jnp.zeros(3), jax.random.key(0), path.gamma_fn, lambda z, t, g, c: z)
    with pytest.raises(ValueError, match="denoiser"):
        ode_log_likelihood(jnp.zeros((2, 3)), jax.random.key(0), path.gamma_fn, lambda z, t, g, c: z[:, :2])

    class BadPrior:
        def log_prob(self, z):
            return jnp.zeros((7,))

    with pytest.raises(ValueError, match="prior.log_prob"):
        ode_log_likelihood(jnp.zeros((2, 3)), jax.random.key(0), path.gamma_fn, lambda z, t, g, c: z,
                           prior=BadPrior())
