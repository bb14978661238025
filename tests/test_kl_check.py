"""``mulan_ppl.check_kl``: registered KLs pass in both backends; wrong KLs (passed in, or registered) are caught;
the standard error and the bound follow from the sample size."""

import statistics

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.distributions.kl import kl_divergence
from tensorflow_probability.substrates import jax as tfp

import mulan_ppl
import mulan_ppl.distrax as mdx
import mulan_ppl.numpyro as mnp
from mulan_ppl import KLCheckResult, check_kl

KEY = jax.random.key(0)
NORMAL = statistics.NormalDist()


def _diffusion_pair(backend):
    """A TopDownPosterior / ReverseTransition pair of batch shape (3,), event (2, 2)."""
    z_t = jnp.linspace(-1.0, 1.0, 12).reshape(3, 2, 2)
    x = jnp.cos(jnp.arange(12.0)).reshape(3, 2, 2)
    gamma_s, gamma_t = jnp.full((3, 2, 2), -2.0), jnp.linspace(-1.0, 1.0, 12).reshape(3, 2, 2)
    return (backend.TopDownPosterior(z_t, x, gamma_s, gamma_t),
            backend.ReverseTransition(z_t, 0.7 * x, gamma_s, gamma_t))


@pytest.mark.parametrize("backend", [mdx, mnp], ids=["distrax", "numpyro"])
def test_registered_diffusion_kl_passes(backend):
    q, p = _diffusion_pair(backend)
    result = check_kl(q, p, key=KEY, num_samples=20_000)
    assert isinstance(result, KLCheckResult)
    assert result.passed and result.failures == ()
    assert result.analytic.shape == result.monte_carlo.shape == result.standard_error.shape == (3,)
    assert np.all(result.analytic > 0.0)
    assert np.all(np.abs(result.analytic - result.monte_carlo) <= result.tolerance)


@pytest.mark.parametrize("backend", [mdx, mnp], ids=["distrax", "numpyro"])
def test_registered_khot_kl_passes(backend):
    logits = jnp.array([[2.0, 0.0, -1.0, 0.5, 1.5, -0.3], [0.1, 0.2, 0.3, -2.0, 3.0, 0.0]])
    result = check_kl(backend.KHot(logits, 3), backend.UniformKHot(6, 3), key=KEY, num_samples=20_000)
    assert result.passed and result.analytic.shape == (2,)


@pytest.mark.parametrize("backend, normal", [(mdx, distrax.Normal), (mnp, dist.Normal)], ids=["distrax", "numpyro"])
def test_forward_marginal_to_scalar_standard_normal_passes(backend, normal):
    """A scalar-event p is the product over q's event dims, as the registered prior KL reads it."""
    q = backend.ForwardMarginal(jnp.array([[0.5, -0.5, 0.9]]), jnp.array([[1.0, -1.0, 0.0]]))
    result = check_kl(q, normal(0.0, 1.0), key=KEY, num_samples=5_000)
    assert result.passed and result.analytic.shape == (1,)


@pytest.mark.parametrize("backend", [mdx, mnp], ids=["distrax", "numpyro"])
def test_wrong_kl_passed_in_is_detected(backend):
    """The per-step KL with its 1/2 factor dropped (a classic slip) fails; so does one 10% too small (the KLs are
    ~0.5 nats, the bound at n = 50000 ~ 0.025)."""
    q, p = _diffusion_pair(backend)
    registered = (lambda a, b: a.kl_divergence(b)) if backend is mdx else kl_divergence
    for wrong in (lambda a, b: 2.0 * registered(a, b), lambda a, b: 0.9 * registered(a, b)):
        with pytest.raises(ValueError, match="disagrees with the Monte Carlo estimate"):
            check_kl(q, p, key=KEY, num_samples=50_000, kl=wrong)
        result = check_kl(q, p, key=KEY, num_samples=50_000, kl=wrong, raise_on_failure=False)
        assert not result.passed and len(result.failures) == 1
        assert result.max_standardized_error > result.z


class _WrongNormalDistrax(distrax.Normal):
    """A Normal whose registered KL forgets the log-scale term."""


class _WrongNormalNumpyro(dist.Normal):
    """A Normal whose registered KL forgets the log-scale term."""


def _kl_without_log_term(q, p):
    return 0.5 * (jnp.square(q.scale / p.scale) + jnp.square((q.loc - p.loc) / p.scale) - 1.0)


tfp.distributions.RegisterKL(_WrongNormalDistrax, _WrongNormalDistrax)(lambda q, p, name=None:
                                                                      _kl_without_log_term(q, p))
kl_divergence.register(_WrongNormalNumpyro, _WrongNormalNumpyro)(_kl_without_log_term)


@pytest.mark.parametrize("cls", [_WrongNormalDistrax, _WrongNormalNumpyro], ids=["distrax", "numpyro"])
def test_wrong_registered_kl_is_detected(cls):
    q, p = cls(jnp.array([0.0, 0.5]), jnp.array([1.0, 0.8])), cls(0.2, 1.5)
    with pytest.raises(ValueError, match=r"_WrongNormal\w+ \|\| _WrongNormal\w+ disagrees"):
        check_kl(q, p, key=KEY, num_samples=10_000)


def test_standard_error_and_bound_follow_from_the_sample_size():
    """For N(m1, 1) against N(m2, 1), log q - log p = (m1 - m2)(z - (m1 + m2)/2) has standard deviation |m1 - m2|;
    the reported standard error is that over sqrt(n) (its relative error is ~ 1/sqrt(2n), bounded at 5 sigma), and
    the bound is z * SE with z = Phi^{-1}(1 - delta / (2N)) for N batch elements."""
    m1, m2, n = jnp.array([0.3, 1.0, -2.0]), 0.0, 40_000
    result = check_kl(dist.Normal(m1, 1.0), dist.Normal(m2, 1.0), key=KEY, num_samples=n)
    expected_se = np.abs(np.asarray(m1) - m2) / np.sqrt(n)
    np.testing.assert_allclose(result.standard_error, expected_se, rtol=5.0 / np.sqrt(2 * n))
    np.testing.assert_allclose(result.analytic, 0.5 * np.square(np.asarray(m1) - m2), rtol=1e-6)
    assert result.z == pytest.approx(NORMAL.inv_cdf(1.0 - 1e-6 / 6.0)) == pytest.approx(5.1036, abs=1e-4)
    rounding = result.tolerance - result.z * result.standard_error  # 64 eps E|log q| + |log p|: ~2e-5 here
    assert np.all(rounding > 0.0) and np.all(rounding < 64 * np.finfo(np.float32).eps * 10.0)
    exact = check_kl(dist.Normal(m1, 1.0), dist.Normal(m2, 1.0), key=KEY, num_samples=n, atol=0.0)
    np.testing.assert_allclose(exact.tolerance, exact.z * exact.standard_error, rtol=1e-12)
    single = check_kl(dist.Normal(0.3, 1.0), dist.Normal(0.0, 1.0), key=KEY, num_samples=n)
    assert single.z == pytest.approx(4.8916, abs=1e-4)  # Phi^{-1}(1 - 1e-6 / 2)


def test_detection_needs_enough_samples():
    """A KL wrong by 0.02 nats at log-ratio standard deviation 0.3 passes at n = 100 (bound ~ 0.15) and fails at
    n = 10^5 (bound ~ 0.0046): the bound shrinks as 1 / sqrt(n)."""
    q, p = dist.Normal(0.3, 1.0), dist.Normal(0.0, 1.0)
    off = lambda a, b: kl_divergence(a, b) + 0.02  # noqa: E731
    assert check_kl(q, p, key=KEY, num_samples=100, kl=off).passed
    with pytest.raises(ValueError, match="disagrees"):
        check_kl(q, p, key=KEY, num_samples=100_000, kl=off)


def test_chunks_give_the_requested_number_of_samples():
    q, p = dist.Normal(0.3, 1.0), dist.Normal(0.0, 1.0)
    result = check_kl(q, p, key=KEY, num_samples=1001, num_chunks=4)
    assert result.num_samples == 1001 and result.passed
    np.testing.assert_allclose(result.standard_error, 0.3 / np.sqrt(1001), rtol=0.2)


def test_exact_match_with_zero_variance_passes():
    """q = p: every log-ratio is 0, the standard error is 0, and the rounding allowance keeps the check exact."""
    q = mnp.UniformKHot(5, 2)
    result = check_kl(q, mnp.UniformKHot(5, 2), key=KEY, num_samples=100)
    assert result.passed and float(result.standard_error) == 0.0 and float(result.analytic) == 0.0


def test_kl_of_the_wrong_shape_is_an_error():
    q, p = _diffusion_pair(mnp)
    per_dimension = lambda a, b: jnp.zeros((3, 2, 2))  # noqa: E731  (not summed over the event dims)
    with pytest.raises(ValueError, match=r"analytic KL has shape \(3, 2, 2\).*batch shape \(3,\)"):
        check_kl(q, p, key=KEY, num_samples=10, kl=per_dimension)


def test_bad_arguments():
    q, p = dist.Normal(0.0, 1.0), dist.Normal(1.0, 1.0)
    with pytest.raises(TypeError, match="same backend"):
        check_kl(q, distrax.Normal(0.0, 1.0), key=KEY)
    with pytest.raises(TypeError, match="PRNG key"):
        check_kl(q, p, key=0)
    with pytest.raises(ValueError, match="num_samples"):
        check_kl(q, p, key=KEY, num_samples=1)
    with pytest.raises(ValueError, match="failure_probability"):
        check_kl(q, p, key=KEY, failure_probability=1.5)
    with pytest.raises(NotImplementedError):
        check_kl(dist.Gamma(2.0, 1.0), dist.LogNormal(0.0, 1.0), key=KEY, num_samples=10)


def test_exported_from_the_package():
    assert mulan_ppl.check_kl is check_kl
    assert "check_kl" in mulan_ppl.__all__ and "KLCheckResult" in mulan_ppl.__all__
