"""The ancestral sampler with the exact Gaussian denoiser against the exact law of its own T-step chain.

With an affine denoiser every reverse step z_s = c_z z_t + c_x x_hat(z_t) + sigma_{s|t} xi is affine in z_t plus
independent Gaussian noise, so the chain output z_0 is exactly Gaussian with a mean and covariance computed by the
linear-Gaussian recursion ``gaussian_oracle.ancestral_output_law`` (started from z_1 ~ N(0, I)). At finite T this
law is not the data's: with the linear schedule on [-13.3, 5] and T = 100 the output variance is about 0.91 of the
data variance. The sample mean and covariance of n chains must match the chain's exact law within bounds from n
(Gaussian sampling variances C_ii / n and (C_ii C_jj + C_ij^2) / (n - 1)), and the same statistics must reject the
data's law, so the test can tell the two apart.
"""

import jax
import numpy as np
import pytest

import gaussian_oracle as oracle
from mulan_ppl.sampling import ancestral_sample

NUM_SAMPLES = 2**15


def _moment_z_scores(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """|estimate - exact| / sampling std for the d means and the d(d+1)/2 covariance entries."""
    n, d = samples.shape
    sample_mean = samples.mean(0)
    sample_cov = np.cov(samples, rowvar=False)
    scores = list(np.abs(sample_mean - mean) / np.sqrt(np.diag(cov) / n))
    for i in range(d):
        for j in range(i, d):
            sd = np.sqrt((cov[i, i] * cov[j, j] + cov[i, j] ** 2) / (n - 1))
            scores.append(abs(sample_cov[i, j] - cov[i, j]) / sd)
    return np.asarray(scores)


@pytest.mark.parametrize(
    "exponents, endpoints, num_steps, noise, parameterization",
    [
        pytest.param(1.0, (-13.3, 5.0), 100, "full", "eps", id="linear-T100-eps"),
        pytest.param((1.0, 2.0, 3.0), (-10.0, 6.0), 30, "full", "v", id="multivariate-T30-v"),
        pytest.param((3.0, 2.0, 1.0), (-10.0, 6.0), 30, "mean", "x", id="mean-gamma-T30-x"),
    ],
)
def test_output_matches_exact_law_of_the_chain(x64, exponents, endpoints, num_steps, noise, parameterization):
    mu, cov = oracle.math_notes_gaussian()
    d = mu.shape[0]
    path = oracle.PowerPath(exponents, *endpoints, event_shape=None if np.ndim(exponents) == 0 else (d,))
    denoiser = oracle.GaussianPosteriorMean(mu, cov, noise=noise)
    law_mean, law_cov = oracle.ancestral_output_law(path, denoiser, d, num_steps)

    samples = ancestral_sample(jax.random.key(5), path.gamma_fn, denoiser.denoiser(parameterization),
                               shape=(NUM_SAMPLES, d), num_steps=num_steps, parameterization=parameterization)
    samples = np.asarray(samples)
    assert samples.shape == (NUM_SAMPLES, d) and samples.dtype == np.float64
    assert np.all(np.isfinite(samples))

    comparisons = d + d * (d + 1) // 2
    z = oracle.z_quantile(oracle.FAILURE_BUDGET, comparisons)
    scores = _moment_z_scores(samples, law_mean, law_cov)
    assert np.all(scores <= z), (scores, z)

    # The data's law at t = 0 (alpha_0 x + sigma_0 eps) is a different law, and these statistics see it.
    gamma_0 = path.gamma(0.0, d)
    alpha_0, sigma_sq_0 = np.sqrt(1 / (1 + np.exp(gamma_0))), 1 / (1 + np.exp(-gamma_0))
    data_mean = alpha_0 * mu
    data_cov = alpha_0[:, None] * cov * alpha_0[None, :] + np.diag(sigma_sq_0)
    assert np.max(_moment_z_scores(samples, data_mean, data_cov)) > z


def test_finite_t_output_variance_is_below_the_data_variance():
    """The exact chain law itself: at T = 100 on the linear schedule the variance ratio is about 0.91, -> 1 in T."""
    mu, cov = oracle.math_notes_gaussian()
    path = oracle.PowerPath(1.0, -13.3, 5.0)
    denoiser = oracle.GaussianPosteriorMean(mu, cov)
    ratios = [np.diag(oracle.ancestral_output_law(path, denoiser, 3, t)[1]) / np.diag(cov) for t in (10, 100, 1000)]
    assert np.all(ratios[0] < ratios[1]) and np.all(ratios[1] < ratios[2]) and np.all(ratios[2] < 1.0)
    assert np.all(np.abs(ratios[1] - 0.91) < 0.01), ratios[1]
