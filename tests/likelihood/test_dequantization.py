"""Dequantization densities against scipy, and the dequantized ODE bound against the discrete likelihood.

The truncated normal's log-density, normaliser and entropy are compared with ``scipy.stats.truncnorm`` and with Monte
Carlo; draws stay inside their bin, and ``log q(y|x)`` follows the change of variables (the sign the paper's
appendix gets wrong). In one dimension with Gaussian data and the exact denoiser, the ODE density of ``z_0`` is
analytic, so the discrete probability of an integer bin is a difference of normal CDFs: the dequantized bound must
lie below it, and its importance-weighted version must not decrease with K (K = 1, 4, 16) on average.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

import gaussian_oracle as oracle
from mulan_ppl import core
from mulan_ppl.hvae import TopDownDiffusion
from mulan_ppl.likelihood import dequantization_entropy, dequantize, ode_bound


@pytest.mark.parametrize("tau", [0.05, 0.7, 1.0, 3.0187, 8.0])
def test_truncated_normal_matches_scipy(x64, tau):
    u = np.linspace(-tau, tau, 9)
    reference = scipy.stats.truncnorm(-tau, tau)
    np.testing.assert_allclose(np.asarray(core.truncated_normal_log_prob(jnp.asarray(u), tau)), reference.logpdf(u),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(float(core.truncated_normal_entropy(jnp.asarray(tau))), reference.entropy(),
                               rtol=1e-9)
    assert float(core.truncated_normal_log_prob(jnp.asarray(tau * 1.01), tau)) == -np.inf


def test_reference_constants():
    """gamma_0 = -13.3, V = 256 gives the bound 3.0187 and Z = 0.9974613 of the reference implementation."""
    tau = core.truncation_bound(jnp.asarray(-13.3, jnp.float32), 256)
    assert abs(float(tau) - 3.0187) < 1e-4
    assert abs(math.exp(float(core.truncated_normal_log_normalizer(tau))) - 0.9974613) < 1e-6


def test_entropy_matches_monte_carlo(x64):
    tau, n = 1.3, 200_000
    u = jax.random.truncated_normal(jax.random.key(0), -tau, tau, (n,), jnp.float64)
    neg_log_q = -np.asarray(core.truncated_normal_log_prob(u, tau))
    bound = oracle.z_quantile(oracle.FAILURE_BUDGET) * neg_log_q.std() / math.sqrt(n)
    assert abs(neg_log_q.mean() - float(core.truncated_normal_entropy(jnp.asarray(tau)))) < bound


@pytest.mark.parametrize("method", ["truncated_normal", "uniform"])
def test_dequantized_draws_stay_in_their_bin_with_the_right_density(x64, method):
    vocab, gamma_0 = 8, -5.0
    x = jnp.asarray(np.arange(vocab).reshape(2, 4))
    y, log_q = dequantize(jax.random.key(1), x, vocab_size=vocab, method=method, gamma_0=gamma_0)
    f = np.asarray(core.encode_integers(x, vocab))
    assert np.all(np.abs(np.asarray(y) - f) <= 1.0 / vocab + 1e-12)
    np.testing.assert_array_equal(np.asarray(core.decode_integers(y, vocab)), np.asarray(x))
    if method == "uniform":
        expected = np.full(2, 4 * math.log(vocab / 2.0))
    else:  # y = f + s u with s = sigma_0/alpha_0 = exp(gamma_0/2): log q(y) = log q(u) - log s
        scale = math.exp(gamma_0 / 2.0)
        tau = 1.0 / (vocab * scale)
        expected = (scipy.stats.truncnorm(-tau, tau).logpdf((np.asarray(y) - f) / scale) - math.log(scale)).sum(1)
    np.testing.assert_allclose(np.asarray(log_q), expected, rtol=1e-10)


@pytest.mark.parametrize("method", ["truncated_normal", "uniform"])
def test_entropy_is_the_mean_of_minus_log_q(x64, method):
    n, vocab = 50_000, 16
    x = jnp.zeros((n, 1), jnp.int32) + 3
    _, log_q = dequantize(jax.random.key(2), x, vocab_size=vocab, method=method, gamma_0=-6.0)
    entropy = float(dequantization_entropy(x[:1], vocab_size=vocab, method=method, gamma_0=-6.0)[0])
    values = -np.asarray(log_q)
    bound = oracle.z_quantile(oracle.FAILURE_BUDGET) * values.std() / math.sqrt(n) + 1e-12
    assert abs(values.mean() - entropy) <= bound


# ------------------------------------------------------------------------------------------------ 1-D bound
VOCAB, MU, VAR = 8, 0.1, 0.3
PATH = oracle.PowerPath(1.0, core.default_gamma_min(VOCAB), 6.0, event_shape=(1,))


def _exact_prior():
    import distrax

    gamma_1 = PATH.gamma(1.0, 1)[0]
    alpha_sq, sigma_sq = scipy.special.expit(-gamma_1), scipy.special.expit(gamma_1)
    return distrax.MultivariateNormalFullCovariance(jnp.asarray([math.sqrt(alpha_sq) * MU]),
                                                    jnp.asarray([[alpha_sq * VAR + sigma_sq]]))


def _discrete_log_prob(x: int) -> float:
    """log P(x) = log of the t = 0 marginal's mass on bin x, by normal CDFs."""
    gamma_0 = PATH.gamma(0.0, 1)[0]
    alpha_sq, sigma_sq = scipy.special.expit(-gamma_0), scipy.special.expit(gamma_0)
    mean, sd = math.sqrt(alpha_sq) * MU, math.sqrt(alpha_sq * VAR + sigma_sq)
    low, high = 2.0 * x / VOCAB - 1.0, 2.0 * (x + 1) / VOCAB - 1.0
    if x == 0:
        low = -np.inf
    if x == VOCAB - 1:
        high = np.inf
    return float(np.log(scipy.stats.norm.cdf(high, mean, sd) - scipy.stats.norm.cdf(low, mean, sd)))


def _bounds(x_value, method, k, replicates):
    denoiser = oracle.GaussianPosteriorMean(np.array([MU]), np.array([[VAR]])).denoiser("eps")
    model = TopDownDiffusion(PATH.gamma_fn, denoiser, vocab_size=VOCAB)
    x = jnp.full((replicates, 1), x_value, jnp.int32)
    out = ode_bound(model, x, jax.random.key(k), num_importance_samples=k, dequantization=method, trace="exact",
                    prior=_exact_prior(), rtol=1e-6, atol=1e-6)
    return np.asarray(out["log_likelihood"])


@pytest.mark.parametrize("method", ["truncated_normal", "uniform"])
@pytest.mark.parametrize("x_value", [0, 4])
def test_bound_is_below_the_discrete_likelihood_and_tightens_with_k(x64, method, x_value):
    replicates = 256
    exact = _discrete_log_prob(x_value)
    means, ses = [], []
    for k in (1, 4, 16):
        values = _bounds(x_value, method, k, replicates)
        means.append(values.mean())
        ses.append(values.std(ddof=1) / math.sqrt(replicates))
    z = oracle.z_quantile(oracle.FAILURE_BUDGET, 6)
    for mean, se in zip(means, ses):
        assert mean <= exact + z * se + 1e-6
    for (m_a, s_a), (m_b, s_b) in zip(zip(means, ses), zip(means[1:], ses[1:])):
        assert m_b >= m_a - z * math.hypot(s_a, s_b) - 1e-6
    if method == "truncated_normal":  # a narrow q inside a wide bin: K = 16 recovers a visible part of the gap
        assert means[2] - means[0] > z * math.hypot(ses[0], ses[2])

