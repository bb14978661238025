"""DiscretizedGaussianDecoder in both backends against an independent float64 NumPy softmax over bin centres.

p(x = j | z_0) = softmax_j(-1/2 ((z_0 / alpha_0 - c_j) / (sigma_0 / alpha_0))^2), c_j = 2 (j + 1/2) / V - 1
(DESIGN.md §4), independently per data dimension; log_prob sums over the event dims.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import mulan_ppl.distrax as mdx
import mulan_ppl.numpyro as mnp
from mulan_ppl import core

BACKENDS = {"distrax": mdx, "numpyro": mnp}
F32_EPS = np.finfo(np.float32).eps
DELTA = 1e-6


def ref_log_probs(z_0, gamma_0, vocab_size):
    """Independent NumPy float64 decoder: log-softmax over bin centres, shape z_0.shape + (V,)."""
    z = np.asarray(z_0, np.float64)[..., None]
    g = np.broadcast_to(np.asarray(gamma_0, np.float64), np.shape(z_0))[..., None]
    alpha, sigma = np.sqrt(special.expit(-g)), np.sqrt(special.expit(g))
    centres = 2.0 * (np.arange(vocab_size) + 0.5) / vocab_size - 1.0
    logits = -0.5 * ((z / alpha - centres) / (sigma / alpha)) ** 2
    return logits - special.logsumexp(logits, axis=-1, keepdims=True)


def _ref_log_prob(ref, x, event_ndims):
    picked = np.take_along_axis(ref, np.asarray(x)[..., None], axis=-1)[..., 0]
    return picked.sum(axis=tuple(range(picked.ndim - event_ndims, picked.ndim))) if event_ndims else picked


# (name, z_0 shape, gamma_0 shape, vocab_size, batch_shape, event_shape, event_ndims)
CASES = [
    ("image_256_per_example_gamma", (2, 2, 3, 1), (2, 1, 1, 1), 256, (2,), (2, 3, 1), None),
    ("vector_17_per_dim_gamma", (3, 4), (3, 4), 17, (3,), (4,), None),
    ("binary_event_ndims_0", (2, 3), (1, 3), 2, (2, 3), (), 0),
]
IDS = [c[0] for c in CASES]


def _case(case, dtype, seed=0):
    _, z_shape, g_shape, vocab_size, _, _, event_ndims = case
    rng = np.random.default_rng(seed)
    z_0 = rng.uniform(-1.1, 1.1, size=z_shape)
    # Near the default gamma_min of the vocabulary, where the decoder is used, and a noisier level.
    gamma_0 = rng.uniform(core.default_gamma_min(vocab_size), -2.0, size=g_shape)
    x = rng.integers(0, vocab_size, size=z_shape)
    return z_0, gamma_0, x, jnp.asarray(z_0, dtype), jnp.asarray(gamma_0, dtype), vocab_size, event_ndims


def _make(mod, z_0, gamma_0, vocab_size, event_ndims, **kwargs):
    return mod.DiscretizedGaussianDecoder(z_0, gamma_0, vocab_size, event_ndims=event_ndims, **kwargs)


def mean(d):
    return d.mean() if callable(d.mean) else d.mean


def mode(d):
    return d.mode() if callable(d.mode) else d.mode


def sample(d, key, sample_shape=()):
    if isinstance(d, mdx.DiscretizedGaussianDecoder):
        return d.sample(seed=key, sample_shape=sample_shape)
    return d.sample(key, sample_shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_independent_softmax(x64, case, backend):
    z_np, g_np, x, z_0, gamma_0, vocab_size, event_ndims = _case(case, jnp.float64)
    d = _make(BACKENDS[backend], z_0, gamma_0, vocab_size, event_ndims)
    assert tuple(d.batch_shape) == case[4] and tuple(d.event_shape) == case[5]
    ref = ref_log_probs(z_np, g_np, vocab_size)
    ev = len(case[5])
    lp = d.log_prob(jnp.asarray(x))
    assert lp.shape == case[4] and lp.dtype == jnp.float64
    np.testing.assert_allclose(lp, _ref_log_prob(ref, x, ev), rtol=1e-6)
    # The levels nearest each z_0 (where the mass is): the decoder's table matches to 1e-6 relative.
    probs = np.exp(ref)
    np.testing.assert_allclose(np.exp(np.asarray(d.log_probs)).sum(-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.exp(np.asarray(d.log_probs)), probs, rtol=1e-6, atol=1e-12)
    entropy = -(probs * np.where(probs > 0, ref, 0.0)).sum(-1)
    np.testing.assert_allclose(d.entropy(), entropy.sum(axis=tuple(range(entropy.ndim - ev, entropy.ndim))),
                               rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(mean(d), (probs * np.arange(vocab_size)).sum(-1), rtol=1e-6, atol=1e-12)
    np.testing.assert_array_equal(mode(d), np.argmax(ref, -1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_log_prob_accepts_integer_valued_floats_and_sample_dims(backend):
    _, _, x, z_0, gamma_0, vocab_size, event_ndims = _case(CASES[0], jnp.float32)
    d = _make(BACKENDS[backend], z_0, gamma_0, vocab_size, event_ndims)
    lp = d.log_prob(jnp.asarray(x))
    np.testing.assert_array_equal(d.log_prob(jnp.asarray(x, jnp.float32)), lp)
    stacked = jnp.stack([jnp.asarray(x), jnp.zeros_like(jnp.asarray(x))])
    lp2 = d.log_prob(stacked)
    assert lp2.shape == (2,) + d.batch_shape
    np.testing.assert_array_equal(lp2[0], lp)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backends_give_identical_numbers(case):
    _, _, x, z_0, gamma_0, vocab_size, event_ndims = _case(case, jnp.float32)
    dx = _make(mdx, z_0, gamma_0, vocab_size, event_ndims)
    dn = _make(mnp, z_0, gamma_0, vocab_size, event_ndims)
    np.testing.assert_array_equal(dx.log_prob(jnp.asarray(x)), dn.log_prob(jnp.asarray(x)))
    np.testing.assert_array_equal(dx.entropy(), dn.entropy())
    np.testing.assert_array_equal(mean(dx), mean(dn))
    np.testing.assert_array_equal(mode(dx), mode(dn))



def test_backends_draw_identical_samples():
    """Same key, same draws (one shape: each new shape compiles a categorical sampler)."""
    _, _, _, z_0, gamma_0, vocab_size, event_ndims = _case(CASES[0], jnp.float32)
    dx = _make(mdx, z_0, gamma_0, vocab_size, event_ndims)
    dn = _make(mnp, z_0, gamma_0, vocab_size, event_ndims)
    key = jax.random.key(1)
    draws = sample(dx, key, (3,))
    assert draws.shape == (3,) + CASES[0][4] + CASES[0][5] and draws.dtype == jnp.int32
    assert draws.min() >= 0 and draws.max() < vocab_size
    np.testing.assert_array_equal(draws, sample(dn, key, (3,)))


def test_sample_frequencies_match_probabilities():
    """|p_hat - p| <= z sqrt(p (1 - p) / n) per level and dimension, z Bonferroni-corrected for delta = 1e-6."""
    n, vocab_size = 100_000, 5
    z_0 = jnp.asarray([[-0.6, 0.1, 0.45]], jnp.float32)
    d = mdx.DiscretizedGaussianDecoder(z_0, -1.5, vocab_size)
    draws = np.asarray(d.sample(seed=jax.random.key(2), sample_shape=(n,)))
    assert draws.shape == (n, 1, 3) and draws.dtype == np.int32
    assert draws.min() >= 0 and draws.max() < vocab_size
    p = np.exp(ref_log_probs(np.asarray(z_0), -1.5, vocab_size))[0]  # (3, V)
    freq = np.stack([(draws[:, 0] == j).mean(0) for j in range(vocab_size)], axis=-1)
    z = stats.norm.isf(DELTA / (2 * p.size))
    assert np.all(np.abs(freq - p) <= z * np.sqrt(p * (1 - p) / n) + 1.0 / n), np.abs(freq - p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_jit_argument_and_construction_inside_jit_and_vmap(backend):
    mod = BACKENDS[backend]
    _, _, x, z_0, gamma_0, vocab_size, _ = _case(CASES[1], jnp.float32)
    x = jnp.asarray(x)
    d = mod.DiscretizedGaussianDecoder(z_0, gamma_0, vocab_size)
    eager = d.log_prob(x)
    np.testing.assert_allclose(jax.jit(lambda dist, v: dist.log_prob(v))(d, x), eager, rtol=64 * F32_EPS)
    built = jax.jit(lambda z, g, v: mod.DiscretizedGaussianDecoder(z, g, vocab_size).log_prob(v))(z_0, gamma_0, x)
    np.testing.assert_allclose(built, eager, rtol=64 * F32_EPS)
    mapped = jax.vmap(lambda z, g, v: mod.DiscretizedGaussianDecoder(z, g, vocab_size, event_ndims=1).log_prob(v))(
        z_0, gamma_0, x)
    np.testing.assert_allclose(mapped, eager, rtol=64 * F32_EPS)


def test_distrax_getitem_and_sample_and_log_prob():
    _, _, x, z_0, gamma_0, vocab_size, event_ndims = _case(CASES[0], jnp.float32)
    d = mdx.DiscretizedGaussianDecoder(z_0, gamma_0, vocab_size)
    x = jnp.asarray(x)
    lp = d.log_prob(x)
    first = d[1]
    assert isinstance(first, mdx.DiscretizedGaussianDecoder)
    assert first.batch_shape == () and first.event_shape == d.event_shape and first.vocab_size == vocab_size
    np.testing.assert_allclose(first.log_prob(x[1]), lp[1], rtol=16 * F32_EPS)
    assert d[:1].batch_shape == (1,)
    key = jax.random.key(3)
    draws, lp_draws = d.sample_and_log_prob(seed=key, sample_shape=(3,))
    np.testing.assert_array_equal(draws, d.sample(seed=key, sample_shape=(3,)))
    np.testing.assert_array_equal(lp_draws, d.log_prob(draws))


def test_numpyro_pytree_round_trip_and_support():
    _, _, x, z_0, gamma_0, vocab_size, event_ndims = _case(CASES[0], jnp.float32)
    d = mnp.DiscretizedGaussianDecoder(z_0, gamma_0, vocab_size)
    leaves, treedef = jax.tree.flatten(d)
    back = jax.tree.unflatten(treedef, leaves)
    assert type(back) is type(d) and back.vocab_size == vocab_size
    assert back.batch_shape == d.batch_shape and back.event_shape == d.event_shape
    np.testing.assert_array_equal(back.log_prob(jnp.asarray(x)), d.log_prob(jnp.asarray(x)))
    assert not d.has_rsample
    assert d.support.event_dim == 3
    assert bool(jnp.all(d.support.check(jnp.asarray(x))))
    assert not bool(jnp.any(d.support.check(jnp.full(x.shape, vocab_size))))


def test_numpyro_infer_shapes():
    assert mnp.DiscretizedGaussianDecoder.infer_shapes((2, 4, 4, 3), (), 256) == ((2,), (4, 4, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_and_gradients_finite_float32(backend):
    mod = BACKENDS[backend]
    gamma = jnp.asarray(np.repeat([-30.0, -20.0, -13.3, 0.0, 5.0, 13.3, 20.0, 30.0], 4)[:, None], jnp.float32)
    z_0 = jnp.tile(jnp.asarray([[-1.5], [-0.3], [0.2], [1.5]], jnp.float32), (8, 1))
    x = jnp.tile(jnp.asarray([[0], [100], [200], [255]]), (8, 1))

    def total(z, g):
        d = mod.DiscretizedGaussianDecoder(z, g, 256)
        return jnp.sum(d.log_prob(x)) + jnp.sum(d.entropy()) + jnp.sum(mean(d))

    def run(z, g):
        d = mod.DiscretizedGaussianDecoder(z, g, 256)
        return (d.log_prob(x), d.entropy(), mean(d)), jax.grad(total, argnums=(0, 1))(z, g)

    values, grads = jax.jit(run)(z_0, gamma)
    for v in values:
        assert v.dtype == jnp.float32 and np.all(np.isfinite(v))
    assert all(np.all(np.isfinite(g)) for g in grads)
