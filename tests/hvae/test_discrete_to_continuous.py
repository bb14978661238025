"""The T-step diffusion term approaches the continuous-time term as T doubles.

On the correlated Gaussian of math-notes §3 (d = 3, gamma in [-10, 6]) with affine denoisers, the expected T-step
term is a finite sum (``gaussian_oracle.discrete_loss``) and the continuous term a quadrature
(``gaussian_oracle.continuous_loss``):

- with the exact posterior mean, the expected T-step term decreases as T doubles, L_2T <= L_T, and stays above
  L_inf (VDM, appendix: the per-dimension error of the optimal denoiser grows along every path, so L_T is an upper
  Riemann-Stieltjes sum that refinement lowers); asserted exactly on the closed form;
- with common random numbers (same data, noise and uniform u for every T; t = ceil(uT)/T), the paired Monte Carlo
  difference L_T - L_inf from ``diffusion_term`` matches the closed-form gap for T = 2 ... 1024, for the optimal and
  for a fixed non-optimal denoiser, and each single-level estimate of L_T matches its closed form.
"""

import jax
import numpy as np
import pytest

import gaussian_oracle as oracle

GAMMA_MIN, GAMMA_MAX = -10.0, 6.0
REPLICATES, BATCH = 256, 128  # 2**15 examples per estimate
DOF = REPLICATES - 1
STEPS = [2**k for k in range(1, 11)]  # 2 ... 1024


def _path(exponents):
    return oracle.PowerPath(exponents, GAMMA_MIN, GAMMA_MAX, event_shape=None if np.ndim(exponents) == 0 else (3,))


@pytest.mark.parametrize("exponents", [1.0, 2.0, (1.0, 2.0, 3.0), (3.0, 2.0, 1.0), (0.75, 1.0, 2.0), (3.0, 0.3, 1.0)])
def test_exact_t_step_term_decreases_as_t_doubles(exponents):
    mu, cov = oracle.math_notes_gaussian()
    denoiser = oracle.GaussianPosteriorMean(mu, cov)
    path = _path(exponents)
    limit = oracle.continuous_loss(path, denoiser, mu, cov)
    losses = np.array([oracle.discrete_loss(path, denoiser, mu, cov, 2**k) for k in range(0, 13)])  # T = 1 ... 4096
    assert np.all(np.diff(losses) < 0), losses
    assert np.all(losses > limit)
    if np.min(exponents) >= 1.0:  # a smooth path: first order, the gap halves when T doubles
        gaps = losses - limit
        np.testing.assert_allclose(gaps[-1] / gaps[-2], 0.5, atol=0.01)


def test_gap_of_non_optimal_denoiser_shrinks_as_t_doubles():
    """The mean(gamma) posterior mean on a multivariate path: the closed-form gap still shrinks at every doubling."""
    mu, cov = oracle.math_notes_gaussian()
    denoiser = oracle.GaussianPosteriorMean(mu, cov, noise="mean")
    path = _path((1.0, 2.0, 3.0))
    limit = oracle.continuous_loss(path, denoiser, mu, cov)
    gaps = np.abs([oracle.discrete_loss(path, denoiser, mu, cov, t) - limit for t in [1, *STEPS, 2048]])
    assert np.all(np.diff(gaps) < 0), gaps


@pytest.mark.parametrize("noise, exponents", [("full", (1.0, 2.0, 3.0)), ("mean", (1.0, 2.0, 3.0))])
def test_monte_carlo_gap_matches_closed_form_with_common_random_numbers(x64, noise, exponents):
    mu, cov = oracle.math_notes_gaussian()
    denoiser = oracle.GaussianPosteriorMean(mu, cov, noise=noise)
    path = _path(exponents)
    limit = oracle.continuous_loss(path, denoiser, mu, cov)

    data_key, key, time_key = jax.random.split(jax.random.key(7), 3)
    x = oracle.sample_data(data_key, mu, cov, REPLICATES * BATCH, (3,))
    # Op by op: every T reuses the same compiled operations (under jit each T would compile anew).
    continuous = np.asarray(oracle.diffusion_values(
        x, key, path, denoiser, times=oracle.lattice_times(time_key, REPLICATES, BATCH), jit=False))
    z = oracle.z_quantile(oracle.FAILURE_BUDGET, comparisons=2 * len(STEPS) + 1, dof=DOF)
    estimate, se = oracle.replicate_mean(continuous, REPLICATES)
    assert abs(estimate - limit) <= z * se, (estimate, se, limit)

    previous_se = np.inf
    for num_steps in STEPS:
        exact = oracle.discrete_loss(path, denoiser, mu, cov, num_steps)
        times = oracle.lattice_times(time_key, REPLICATES, BATCH, num_steps=num_steps)  # the same u for every T
        discrete = np.asarray(oracle.diffusion_values(x, key, path, denoiser, times=times, num_steps=num_steps,
                                                      jit=False))
        estimate, se = oracle.replicate_mean(discrete, REPLICATES)
        assert abs(estimate - exact) <= z * se, (num_steps, estimate, se, exact)
        gap, gap_se = oracle.replicate_mean(discrete - continuous, REPLICATES)
        assert abs(gap - (exact - limit)) <= z * gap_se, (num_steps, gap, gap_se, exact - limit)
        # common random numbers: the per-example difference itself shrinks with T
        assert gap_se < previous_se, (num_steps, gap_se, previous_se)
        previous_se = gap_se
