"""Integer data encoding and VDM's discretized decoder logits (``mulan_ppl.core.decoder``).

The reference decoder is an independent float64 NumPy softmax over the V bin centres c_j = 2 (j + 1/2) / V - 1 of
-1/2 ((z_0 / alpha_0 - c_j) / (sigma_0 / alpha_0))^2 (DESIGN.md §4), written from alpha_0 = sigmoid(-gamma_0)^(1/2).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from mulan_ppl import core

F32_EPS = np.finfo(np.float32).eps


def ref_log_probs(z_0, gamma_0, vocab_size):
    """log p(x = j | z_0) per element, shape z_0.shape + (V,), float64."""
    z_0 = np.asarray(z_0, np.float64)[..., None]
    gamma_0 = np.broadcast_to(np.asarray(gamma_0, np.float64), np.shape(z_0)[:-1])[..., None]
    alpha = np.sqrt(special.expit(-gamma_0))
    sigma = np.sqrt(special.expit(gamma_0))
    centres = (2.0 * (np.arange(vocab_size) + 0.5) / vocab_size - 1.0)
    logits = -0.5 * ((z_0 / alpha - centres) / (sigma / alpha)) ** 2
    return logits - special.logsumexp(logits, axis=-1, keepdims=True)


@pytest.mark.parametrize("vocab_size", [2, 17, 256])
def test_encode_gives_bin_centres(vocab_size):
    f = np.asarray(core.encode_integers(jnp.arange(vocab_size), vocab_size))
    np.testing.assert_allclose(f, 2.0 * (np.arange(vocab_size) + 0.5) / vocab_size - 1.0, atol=2 * F32_EPS)
    assert f.min() > -1.0 and f.max() < 1.0
    np.testing.assert_allclose(np.diff(f), 2.0 / vocab_size, rtol=1e-5)


@pytest.mark.parametrize("vocab_size", [2, 17, 256])
def test_encode_decode_round_trip(vocab_size):
    levels = jnp.arange(vocab_size)
    f = core.encode_integers(levels, vocab_size)
    decoded = core.decode_integers(f, vocab_size)
    assert decoded.dtype == jnp.int32
    np.testing.assert_array_equal(decoded, levels)
    # Anything within 0.45 of a bin half-width 1/V of a centre decodes to that bin.
    jitter = 0.45 / vocab_size
    np.testing.assert_array_equal(core.decode_integers(f + jitter, vocab_size), levels)
    np.testing.assert_array_equal(core.decode_integers(f - jitter, vocab_size), levels)


def test_decode_clips_to_the_vocabulary():
    np.testing.assert_array_equal(core.decode_integers(jnp.asarray([-3.0, -1.0, 1.0, 3.0]), 4), [0, 0, 3, 3])


def test_default_gamma_min():
    assert core.default_gamma_min(256) == pytest.approx(-13.29, abs=0.005)
    assert core.default_gamma_min(17) == pytest.approx(-7.86, abs=0.005)
    # sigma_0 = exp(gamma_min / 2) is a third of the bin half-width 1 / V.
    for vocab_size in (2, 17, 256):
        assert np.exp(core.default_gamma_min(vocab_size) / 2) == pytest.approx(1.0 / (3 * vocab_size), rel=1e-12)


@pytest.mark.parametrize("vocab_size", [2, 17, 256])
def test_decoder_matches_independent_softmax(x64, vocab_size):
    rng = np.random.default_rng(vocab_size)
    z_0 = rng.uniform(-1.2, 1.2, size=(3, 5))
    gamma_0 = rng.choice([core.default_gamma_min(vocab_size), -5.0, -1.0, 0.0, 3.0], size=(3, 5))
    logits = core.decoder_logits(jnp.asarray(z_0), jnp.asarray(gamma_0), vocab_size)
    assert logits.shape == (3, 5, vocab_size) and logits.dtype == jnp.float64
    log_probs = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    expected = ref_log_probs(z_0, gamma_0, vocab_size)
    # Compare where the probability is not negligible: there the relative error of a float64 log-probability is
    # a few ulps of the largest logit.
    mask = expected > -50.0
    np.testing.assert_allclose(log_probs[mask], expected[mask], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(np.exp(log_probs).sum(-1), 1.0, rtol=1e-12)


def test_decoder_is_not_a_binned_cdf(x64):
    """The softmax over bin centres differs from integrating N(z_0/alpha, (sigma/alpha)^2) over bins (DESIGN.md §4)."""
    from scipy import stats

    vocab_size, gamma_0, z_0 = 4, 0.0, 0.1
    log_probs = np.asarray(jax.nn.log_softmax(core.decoder_logits(jnp.asarray([z_0]), jnp.asarray([gamma_0]),
                                                                  vocab_size)))[0]
    alpha, sigma = np.sqrt(special.expit(-gamma_0)), np.sqrt(special.expit(gamma_0))
    edges = np.linspace(-1.0, 1.0, vocab_size + 1)
    edges[0], edges[-1] = -np.inf, np.inf
    binned = np.diff(stats.norm.cdf(edges, z_0 / alpha, sigma / alpha))
    assert np.max(np.abs(np.exp(log_probs) - binned)) > 0.01


def test_decoder_logits_rank_promotion_free():
    """STYLE rule 20: core functions run under jax.numpy_rank_promotion('raise') with rank-matched inputs."""
    with jax.numpy_rank_promotion("raise"):
        logits = core.decoder_logits(jnp.zeros((2, 3)), jnp.zeros((2, 3)), 4)
    assert logits.shape == (2, 3, 4)


def test_values_and_gradients_finite_float32():
    gamma = jnp.asarray(np.repeat([-30.0, -20.0, -13.3, 0.0, 5.0, 13.3, 20.0, 30.0], 4), jnp.float32)
    z_0 = jnp.tile(jnp.asarray([-1.5, -0.3, 0.2, 1.5], jnp.float32), 8)
    x = jnp.tile(jnp.asarray([0, 100, 200, 255]), 8)

    def log_lik(z_0, gamma):
        log_probs = jax.nn.log_softmax(core.decoder_logits(z_0, gamma, 256), axis=-1)
        return jnp.take_along_axis(log_probs, x[:, None], axis=-1)[:, 0]

    values = jax.jit(log_lik)(z_0, gamma)
    grads = jax.jit(jax.grad(lambda a, b: jnp.sum(log_lik(a, b)), argnums=(0, 1)))(z_0, gamma)
    assert values.dtype == jnp.float32
    assert np.all(np.isfinite(values))
    assert all(np.all(np.isfinite(g)) for g in grads)
