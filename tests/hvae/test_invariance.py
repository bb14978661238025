"""Where the continuous-time diffusion term is invariant to the noise schedule, and where it is not.

Setting of math-notes §3: correlated Gaussian data in d = 3, endpoints gamma in [-10, 6], per-dimension paths
gamma_i(t) = gamma_min + (gamma_max - gamma_min) t**p_i. Every expected term is checked against the quadrature of its
analytic integrand (``gaussian_oracle.continuous_loss``), and every comparison between schedules uses common random
numbers (same data, same noise, same times), so differences are estimated from paired replicate means.

- (i) scalar schedules of different shapes give equal expected terms for any denoiser that is a function of
  (z_t, gamma_t), optimal or not;
- (ii) multivariate paths give equal terms with the posterior mean that uses the full gamma_t vector (also for the
  posterior mean of a different Gaussian: it is still a gradient field);
- (iii) with the posterior mean computed from mean(gamma_t) only, multivariate paths give significantly different
  (larger) terms.
"""

import itertools

import jax
import numpy as np
import pytest

import gaussian_oracle as oracle
from mulan_ppl.hvae import diffusion_term
from mulan_ppl.schedules import FixedLinear

GAMMA_MIN, GAMMA_MAX = -10.0, 6.0
REPLICATES, BATCH = 256, 128  # 2**15 examples per estimate
DOF = REPLICATES - 1

# math-notes §3: expected continuous term by quadrature.
EXACT_ANY_PATH = 14.674
MEAN_GAMMA = {(1.0, 2.0, 3.0): 19.436, (3.0, 2.0, 1.0): 20.774, (0.5, 1.0, 2.0): 27.360}


def _setting(seed: int = 0):
    mu, cov = oracle.math_notes_gaussian()
    data_key, key, time_key = jax.random.split(jax.random.key(seed), 3)
    x = oracle.sample_data(data_key, mu, cov, REPLICATES * BATCH, (3,))
    times = oracle.lattice_times(time_key, REPLICATES, BATCH)
    return mu, cov, x, key, times


def _misspecified():
    """The posterior mean of a different Gaussian: a fixed, non-optimal function of (z_t, gamma_t)."""
    return oracle.GaussianPosteriorMean(np.array([0.0, 0.5, -0.5]), np.diag([0.5, 2.0, 1.0]))


def _path(exponents):
    return oracle.PowerPath(exponents, GAMMA_MIN, GAMMA_MAX, event_shape=None if np.ndim(exponents) == 0 else (3,))


def test_quadrature_reproduces_reference_values():
    mu, cov = oracle.math_notes_gaussian()
    exact = oracle.GaussianPosteriorMean(mu, cov)
    mean_gamma = oracle.GaussianPosteriorMean(mu, cov, noise="mean")
    closed_form = oracle.scalar_schedule_loss(cov, GAMMA_MIN, GAMMA_MAX)
    assert abs(closed_form - EXACT_ANY_PATH) < 5e-4
    for exponents in [(1.0, 1.0, 1.0), (2.0, 2.0, 2.0), (1.0, 2.0, 3.0), (3.0, 2.0, 1.0), (0.5, 1.0, 2.0),
                      (3.0, 0.3, 1.0)]:
        np.testing.assert_allclose(oracle.continuous_loss(_path(exponents), exact, mu, cov), closed_form, rtol=1e-9)
    for exponents, value in MEAN_GAMMA.items():
        assert abs(oracle.continuous_loss(_path(exponents), mean_gamma, mu, cov) - value) < 5e-4


def _check_against_quadrature(values: dict, references: dict, comparisons: int):
    """Each estimate within the bound of its quadrature value; returns {name: (estimate, se)}."""
    z = oracle.z_quantile(oracle.FAILURE_BUDGET, comparisons, dof=DOF)
    stats = {}
    for name, v in values.items():
        estimate, se = oracle.replicate_mean(v, REPLICATES)
        assert abs(estimate - references[name]) <= z * se, (name, estimate, se, references[name])
        stats[name] = (estimate, se)
    return stats


def _check_paired_differences(values: dict, references: dict, comparisons: int):
    """Each paired difference of estimates within the bound of the difference of quadrature values."""
    z = oracle.z_quantile(oracle.FAILURE_BUDGET, comparisons, dof=DOF)
    for a, b in itertools.combinations(values, 2):
        diff, se = oracle.replicate_mean(values[a] - values[b], REPLICATES)
        expected = references[a] - references[b]
        assert abs(diff - expected) <= z * se, (a, b, diff, se, expected)


@pytest.mark.parametrize("kind", ["exact", "misspecified"])
def test_scalar_schedules_of_different_shapes_give_equal_terms(x64, kind):
    mu, cov, x, key, times = _setting(1)
    denoiser = oracle.GaussianPosteriorMean(mu, cov) if kind == "exact" else _misspecified()
    shapes = {f"t^{p}": _path(p) for p in (0.75, 1.0, 2.0, 3.0)}
    references = {name: oracle.continuous_loss(path, denoiser, mu, cov) for name, path in shapes.items()}
    values = {name: np.asarray(oracle.diffusion_values(x, key, path, denoiser, times=times))
              for name, path in shapes.items()}
    # The library's own scalar family, linear in t, through its closed-form derivative.
    linear = jax.jit(lambda x, key, times: diffusion_term(x, key, FixedLinear(gamma_min=GAMMA_MIN, gamma_max=GAMMA_MAX),
                                                          denoiser.denoiser("eps"), times=times))
    values["FixedLinear"] = np.asarray(linear(x, key, times))
    references["FixedLinear"] = references["t^1.0"]

    reference = references["t^1.0"]
    for name, value in references.items():  # the invariance itself, by quadrature
        np.testing.assert_allclose(value, reference, rtol=1e-9, err_msg=name)
    if kind == "exact":
        np.testing.assert_allclose(reference, EXACT_ANY_PATH, atol=5e-4)
    else:  # a different value: the statement is not about optimality
        assert reference > EXACT_ANY_PATH + 1.0
    n = len(values)
    _check_against_quadrature(values, references, comparisons=n + n * (n - 1) // 2)
    _check_paired_differences(values, references, comparisons=n + n * (n - 1) // 2)


@pytest.mark.parametrize("kind", ["exact", "misspecified"])
def test_multivariate_paths_give_equal_terms_with_full_gamma_posterior_mean(x64, kind):
    mu, cov, x, key, times = _setting(2)
    denoiser = oracle.GaussianPosteriorMean(mu, cov) if kind == "exact" else _misspecified()
    paths = {p: _path(p) for p in [(1.0, 1.0, 1.0), (1.0, 2.0, 3.0), (3.0, 2.0, 1.0), (0.75, 1.0, 2.0)]}
    references = {p: oracle.continuous_loss(path, denoiser, mu, cov) for p, path in paths.items()}
    values = {p: np.asarray(oracle.diffusion_values(x, key, path, denoiser, times=times)) for p, path in paths.items()}

    for p, value in references.items():
        np.testing.assert_allclose(value, references[(1.0, 1.0, 1.0)], rtol=1e-9, err_msg=str(p))
    if kind == "exact":
        np.testing.assert_allclose(references[(1.0, 1.0, 1.0)], EXACT_ANY_PATH, atol=5e-4)
    n = len(values)
    _check_against_quadrature(values, references, comparisons=n + n * (n - 1) // 2)
    _check_paired_differences(values, references, comparisons=n + n * (n - 1) // 2)


def test_mean_gamma_posterior_mean_breaks_invariance_for_multivariate_paths(x64):
    mu, cov, x, key, times = _setting(3)
    denoiser = oracle.GaussianPosteriorMean(mu, cov, noise="mean")
    paths = {p: _path(p) for p in [(1.0, 1.0, 1.0), (1.0, 2.0, 3.0), (3.0, 2.0, 1.0)]}
    references = {p: oracle.continuous_loss(path, denoiser, mu, cov) for p, path in paths.items()}
    values = {p: np.asarray(oracle.diffusion_values(x, key, path, denoiser, times=times)) for p, path in paths.items()}

    np.testing.assert_allclose(references[(1.0, 1.0, 1.0)], EXACT_ANY_PATH, atol=5e-4)
    for p in [(1.0, 2.0, 3.0), (3.0, 2.0, 1.0)]:
        np.testing.assert_allclose(references[p], MEAN_GAMMA[p], atol=5e-4)
    stats = _check_against_quadrature(values, references, comparisons=6)
    _check_paired_differences(values, references, comparisons=6)

    scalar_estimate, scalar_se = stats[(1.0, 1.0, 1.0)]
    for p in [(1.0, 2.0, 3.0), (3.0, 2.0, 1.0)]:
        estimate, se = stats[p]
        # significant even without the pairing: more than 6 combined standard errors of independent estimates
        assert estimate - scalar_estimate > 6.0 * np.hypot(se, scalar_se), (p, estimate, se, scalar_estimate)
