"""The probability-flow ODE sampler against the closed-form t = 0 marginal of Gaussian data.

With data ``x ~ N(mu, cov)``, the exact posterior-mean denoiser and ``z_1`` drawn from the exact ``q(z_1)``, the
deterministic flow from t = 1 to t = 0 carries ``q(z_1)`` to ``q(z_0) = N(A_0 mu, A_0 cov A_0 + S_0)``. The sample mean
and covariance of n draws must match it within bounds from the sample size: the mean's standard error
``sqrt(C_ii / n)`` and the covariance entries' ``sqrt((C_ii C_jj + C_ij^2) / n)`` (Gaussian fourth moments), at a
Bonferroni-corrected z quantile. A control run with the wrong starting law (N(0, I), not q(z_1) here) must fail the
same comparison.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import gaussian_oracle as oracle
from mulan_ppl.sampling import ode_sample

GAMMA_MIN, GAMMA_MAX = -8.0, 6.0
N = 4000
DELTA = 1e-4  # probability that the test fails when the code is right


def _marginal(path, mu, cov, t):
    gamma = path.gamma(t, mu.shape[0])
    alpha, sigma_sq = np.sqrt(scipy.special.expit(-gamma)), scipy.special.expit(gamma)
    return alpha * mu, alpha[:, None] * cov * alpha[None, :] + np.diag(sigma_sq)


def _draw(d, exponents, parameterization, *, exact_start=True):
    mu, cov = oracle.random_gaussian(d, seed=10 + d)
    path = oracle.PowerPath(exponents, GAMMA_MIN, GAMMA_MAX, event_shape=(d,))
    denoiser = oracle.GaussianPosteriorMean(mu, cov).denoiser(parameterization)
    mean_1, cov_1 = _marginal(path, mu, cov, 1.0)
    start = (mean_1, cov_1) if exact_start else (np.zeros(d), np.eye(d))
    z_1 = oracle.sample_data(jax.random.key(d), *start, N, (d,))
    z_0, nfe = jax.jit(lambda z_1: ode_sample(jax.random.key(0), path.gamma_fn, denoiser, shape=(N, d),
                                              parameterization=parameterization, z_1=z_1))(z_1)
    return np.asarray(z_0, np.float64), int(nfe), _marginal(path, mu, cov, 0.0)


def _z_scores(samples, mean, cov):
    n, d = samples.shape
    mean_z = (samples.mean(0) - mean) / np.sqrt(np.diag(cov) / n)
    centred = samples - samples.mean(0)
    sample_cov = centred.T @ centred / (n - 1)
    cov_se = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    cov_z = (sample_cov - cov) / cov_se
    return np.concatenate([mean_z, cov_z[np.triu_indices(d)]])


@pytest.mark.parametrize("d, exponents, parameterization", [
    pytest.param(3, 1.0, "eps", id="d3-scalar-eps"),
    pytest.param(4, (1.0, 1.5, 2.0, 3.0), "v", id="d4-multivariate-v"),
])
def test_samples_have_the_t0_marginal(x64, d, exponents, parameterization):
    samples, nfe, (mean_0, cov_0) = _draw(d, exponents, parameterization)
    z = _z_scores(samples, mean_0, cov_0)
    assert np.abs(z).max() < oracle.z_quantile(DELTA, comparisons=len(z)), z
    assert nfe > 10


def test_wrong_starting_law_is_detected(x64):
    """Control: starting from N(0, I) instead of q(z_1) gives samples the comparison rejects."""
    samples, _, (mean_0, cov_0) = _draw(3, 1.0, "eps", exact_start=False)
    z = _z_scores(samples, mean_0, cov_0)
    assert np.abs(z).max() > oracle.z_quantile(DELTA, comparisons=len(z))


def test_default_start_is_a_standard_normal_and_float32_is_finite():
    z_0, _ = ode_sample(jax.random.key(3), oracle.PowerPath(1.0, GAMMA_MIN, GAMMA_MAX).gamma_fn,
                        lambda z, t, g, c: jnp.zeros_like(z), shape=(64, 2))
    assert z_0.dtype == jnp.float32 and np.isfinite(np.asarray(z_0)).all()
