"""The ODE bound with an auxiliary latent (MuLAN's eq. 84) and the model-level sampler and CLI.

A schedule that reads the context but returns the same noise path for every c makes p(y|c) the same for all c, so
the bound without latent importance weighting is the latent-free bound minus the exact k-hot KL, and the joint
importance-weighted bound over (y, c) recovers the KL as K grows. A perturb-and-MAP posterior is evaluated through
the exact k-hot family with its logits. The ODE sampler's output law is checked against the t = 0 marginal on
Gaussian data (bounds from the sample size).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

import gaussian_oracle as oracle
from mulan_ppl import core
from mulan_ppl.distrax import KHot, PerturbedTopK, UniformKHot
from mulan_ppl.hvae import TopDownDiffusion
from mulan_ppl.likelihood import ode_bound
from mulan_ppl.sampling import ode_sample

VOCAB, M, K_ONES = 8, 5, 2
MU, COV = np.array([0.1, -0.2]), np.array([[0.3, 0.1], [0.1, 0.2]])
PATH = oracle.PowerPath((1.0, 1.5), core.default_gamma_min(VOCAB), 6.0, event_shape=(2,))
LOGITS = jnp.asarray([2.0, -1.0, 0.5, 0.0, 1.5])


def _gamma_with_context(t, context):
    assert context is not None and context.shape == (t.shape[0], M)
    return PATH.gamma_fn(t) + 0.0 * context.sum(-1, keepdims=True)


def _model(posterior):
    denoiser = oracle.GaussianPosteriorMean(MU, COV).denoiser("eps")
    return TopDownDiffusion(_gamma_with_context, denoiser, vocab_size=VOCAB,
                            latent_posterior=lambda f: posterior(jnp.broadcast_to(LOGITS, (f.shape[0], M)), K_ONES),
                            latent_prior=UniformKHot(M, K_ONES))


def _plain_model():
    denoiser = oracle.GaussianPosteriorMean(MU, COV).denoiser("eps")
    return TopDownDiffusion(PATH.gamma_fn, denoiser, vocab_size=VOCAB)


X = jnp.broadcast_to(jnp.asarray([[3, 5]]), (128, 2))


def _stats(values):
    values = np.asarray(values)
    return values.mean(), values.std(ddof=1) / math.sqrt(len(values))


@pytest.mark.parametrize("posterior", [KHot, PerturbedTopK])
def test_latent_term_is_the_exact_khot_kl(x64, posterior):
    out = ode_bound(_model(posterior), X[:4], jax.random.key(0), trace="exact")
    expected = core.kl_khot_uniform(LOGITS, K_ONES)
    np.testing.assert_allclose(np.asarray(out["latent"]), float(expected), rtol=1e-10)
    assert float(expected) > 0.1


def test_bound_with_latent_is_the_plain_bound_minus_the_kl_and_latent_iw_recovers_it(x64):
    kl = float(core.kl_khot_uniform(LOGITS, K_ONES))
    options = dict(trace="exact", rtol=1e-6, atol=1e-6, dequantization="uniform")
    plain = _stats(ode_bound(_plain_model(), X, jax.random.key(1), **options)["log_likelihood"])
    with_latent = _stats(ode_bound(_model(KHot), X, jax.random.key(2), **options)["log_likelihood"])
    joint = _stats(ode_bound(_model(KHot), X, jax.random.key(3), num_importance_samples=16,
                             latent_importance=True, **options)["log_likelihood"])
    z = oracle.z_quantile(oracle.FAILURE_BUDGET, 3)
    assert abs(with_latent[0] - (plain[0] - kl)) < z * math.hypot(plain[1], with_latent[1]) + 1e-6
    assert joint[0] > with_latent[0] + z * math.hypot(joint[1], with_latent[1])  # IW over c recovers part of the KL
    assert joint[0] < plain[0] + z * math.hypot(joint[1], plain[1]) + 1e-6  # but never more than p(x) allows


def test_ode_sampler_matches_the_t0_marginal(x64):
    n, d = 4096, 2
    mean_0, cov_0 = _t0_marginal()
    denoiser = oracle.GaussianPosteriorMean(MU, COV).denoiser("v")
    gamma_1 = PATH.gamma(1.0, d)
    alpha_1, sigma_1 = np.sqrt(scipy.special.expit(-gamma_1)), np.sqrt(scipy.special.expit(gamma_1))
    cov_1 = alpha_1[:, None] * COV * alpha_1[None] + np.diag(sigma_1**2)
    z_1 = jnp.asarray(np.random.default_rng(0).multivariate_normal(alpha_1 * MU, cov_1, size=n))
    z_0, nfe = ode_sample(jax.random.key(0), PATH.gamma_fn, denoiser, shape=(n, d), parameterization="v", z_1=z_1)
    samples = np.asarray(z_0)
    scores = list(np.abs(samples.mean(0) - mean_0) / np.sqrt(np.diag(cov_0) / n))
    sample_cov = np.cov(samples, rowvar=False)
    for i in range(d):
        for j in range(i, d):
            sd = math.sqrt((cov_0[i, i] * cov_0[j, j] + cov_0[i, j] ** 2) / (n - 1))
            scores.append(abs(sample_cov[i, j] - cov_0[i, j]) / sd)
    assert max(scores) < oracle.z_quantile(oracle.FAILURE_BUDGET, len(scores))
    assert int(nfe) > 10
    # control: the same statistics reject the law of z_1 (the sampler moved the samples)
    assert np.abs(samples.mean(0) - alpha_1 * MU).max() > 0 and abs(sample_cov[0, 0] - cov_1[0, 0]) > 5 * sd


def _t0_marginal():
    gamma_0 = PATH.gamma(0.0, 2)
    alpha, sigma_sq = np.sqrt(scipy.special.expit(-gamma_0)), scipy.special.expit(gamma_0)
    return alpha * MU, alpha[:, None] * COV * alpha[None] + np.diag(sigma_sq)


def test_model_sample_with_the_ode_sampler():
    model = _model(KHot)
    x = model.sample(jax.random.key(0), 3, event_shape=(2,), sampler="ode", decode="mode")
    assert x.shape == (3, 2) and x.dtype == jnp.int32 and bool(jnp.all((x >= 0) & (x < VOCAB)))
    with pytest.raises(ValueError, match="num_steps"):
        model.sample(jax.random.key(0), 3, event_shape=(2,))
    with pytest.raises(ValueError, match="sampler"):
        model.sample(jax.random.key(0), 3, event_shape=(2,), sampler="sde")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_importance_samples=0), "num_importance_samples"),
        (dict(dequantization="gaussian"), "dequantization"),
        (dict(rtol=0.0), "rtol"),
        (dict(atol=-1.0), "atol"),
    ],
)
def test_bad_bound_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ode_bound(_plain_model(), X[:2], jax.random.key(0), **kwargs)


def test_out_of_range_data_raises():
    with pytest.raises(ValueError, match=r"`x` must hold integers in \[0, 8\)"):
        ode_bound(_plain_model(), X[:2] + 7, jax.random.key(0))
