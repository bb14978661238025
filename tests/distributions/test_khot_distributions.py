"""KHot, UniformKHot and PerturbedTopK in both backends, against NumPy float64 enumeration of all subsets.

Both backends call ``mulan_ppl.core.khot``; the tests check that they give identical numbers (samples included, with
the same key), that the KLs are registered in both registries (NumPyro's ``TraceMeanField_ELBO`` picks them up), and
the NumPyro-specific support constraint and ``enumerate_support``. Also: the Gaussian auxiliary-latent recipe with
the backends' own Normal classes against the MuLAN paper's KL formula.
"""

import itertools
import math
import subprocess
import sys
import warnings

import chex
import distrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import optax
import pytest
from numpyro.distributions.kl import kl_divergence as np_kl
from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from tensorflow_probability.substrates import jax as tfp

import mulan_ppl.distrax.khot as dx
import mulan_ppl.numpyro.khot as nx

tfd = tfp.distributions
BACKENDS = {"distrax": dx, "numpyro": nx}
TOL = 1e-5

# (name, logits shape, k): single, batched with the complement path (k > m / 2), 2-d batch with k = m, k = 0.
CASES = [
    ("single_m6_k2", (6,), 2),
    ("batch_m6_k4", (3, 6), 4),
    ("batch2d_m5_k5", (2, 2, 5), 5),
    ("batch_m4_k0", (2, 4), 0),
]
IDS = [c[0] for c in CASES]
PARITY_CASES = [CASES[1], CASES[2]]  # backend parity on the batched cases (one compilation per case)


def call(d, name, *args):
    """Distrax exposes mean/mode/variance as methods, NumPyro as properties."""
    attr = getattr(d, name)
    return attr(*args) if callable(attr) else attr


def sample(d, key, sample_shape=()):
    if isinstance(d, distrax.Distribution):
        return d.sample(seed=key, sample_shape=sample_shape)
    return d.sample(key, sample_shape)


def kl(q, p):
    return q.kl_divergence(p) if isinstance(q, distrax.Distribution) else np_kl(q, p)


def subsets(m, k):
    rows = [[1.0 if i in s else 0.0 for i in range(m)] for s in itertools.combinations(range(m), k)]
    return np.asarray(rows, np.float64).reshape(-1, m)


def reference(theta, k):
    """Per batch element: log-probs of every subset, marginals, entropy, KL to uniform (float64)."""
    theta = np.asarray(theta, np.float64)
    c = subsets(theta.shape[-1], k)
    score = theta @ c.T  # (*batch, C)
    log_p = score - np.logaddexp.reduce(score, axis=-1, keepdims=True)
    p = np.exp(log_p)
    entropy = -np.sum(p * log_p, axis=-1)
    return {"subsets": c, "log_p": log_p, "pi": p @ c, "entropy": entropy,
            "kl_uniform": math.log(len(c)) - entropy}


def _logits(shape, seed=0):
    return np.random.default_rng(seed).normal(scale=1.5, size=shape)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_khot_matches_enumeration(case, backend):
    _, shape, k = case
    theta = _logits(shape)
    mod = BACKENDS[backend]
    q = mod.KHot(jnp.asarray(theta, jnp.float32), k)
    m, batch = shape[-1], shape[:-1]
    assert tuple(q.batch_shape) == batch and tuple(q.event_shape) == (m,)
    ref = reference(theta, k)
    values = jnp.asarray(ref["subsets"].reshape((-1,) + (1,) * len(batch) + (m,)), jnp.float32)
    log_p = np.moveaxis(np.asarray(q.log_prob(values)), 0, -1)  # (*batch, C)
    np.testing.assert_allclose(log_p, ref["log_p"], atol=TOL)
    np.testing.assert_allclose(np.exp(log_p).sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(call(q, "mean"), ref["pi"], atol=TOL)
    np.testing.assert_allclose(call(q, "variance"), ref["pi"] * (1 - ref["pi"]), atol=TOL)
    np.testing.assert_allclose(q.entropy(), ref["entropy"], atol=TOL)
    np.testing.assert_allclose(kl(q, mod.UniformKHot(m, k)), ref["kl_uniform"], atol=TOL)
    mode = np.asarray(call(q, "mode"))
    best = ref["subsets"][np.argmax(ref["log_p"], axis=-1)]
    np.testing.assert_array_equal(mode, best)
    c = sample(q, jax.random.key(1), (7,))
    assert c.shape == (7,) + shape and c.dtype == jnp.float32
    assert np.all(np.asarray(c).sum(-1) == k)


@pytest.mark.parametrize("backend", BACKENDS)
def test_khot_khot_and_uniform_khot_kls(backend):
    mod = BACKENDS[backend]
    m, k = 6, 2
    tq, tp = _logits((2, m), 1), _logits((m,), 2)
    q, p = mod.KHot(jnp.asarray(tq, jnp.float32), k), mod.KHot(jnp.asarray(tp, jnp.float32), k)
    u = mod.UniformKHot(m, k)
    ref_q, ref_p = reference(tq, k), reference(tp, k)
    kl_qp = np.sum(np.exp(ref_q["log_p"]) * (ref_q["log_p"] - ref_p["log_p"]), axis=-1)
    np.testing.assert_allclose(kl(q, p), kl_qp, atol=TOL)
    kl_up = np.mean(-math.log(math.comb(m, k)) - ref_p["log_p"])
    np.testing.assert_allclose(kl(u, p), kl_up, atol=TOL)
    assert float(kl(u, mod.UniformKHot(m, k))) == 0.0
    for a, b in [(q, mod.UniformKHot(m, 3)), (q, mod.KHot(jnp.zeros(m), 3)), (u, mod.KHot(jnp.zeros(m + 1), k)),
                 (u, mod.UniformKHot(m + 1, k))]:
        with pytest.raises(ValueError, match="must have the same `num_categories` and `k`"):
            kl(a, b)


def test_distrax_kls_go_through_tfp_registry():
    q = dx.KHot(jnp.asarray(_logits((6,)), jnp.float32), 2)
    u = dx.UniformKHot(6, 2)
    np.testing.assert_allclose(tfd.kl_divergence(q, u), q.kl_divergence(u))
    np.testing.assert_allclose(q.cross_entropy(u), math.log(15), atol=TOL)  # KL + entropy = log C(6, 2)


@pytest.mark.parametrize("case", PARITY_CASES, ids=[c[0] for c in PARITY_CASES])
def test_backends_give_identical_numbers(case):
    _, shape, k = case
    theta = jnp.asarray(_logits(shape, 3), jnp.float32)
    a, b = dx.KHot(theta, k), nx.KHot(theta, k)
    m = shape[-1]
    value = sample(a, jax.random.key(5), (2, 3))
    np.testing.assert_array_equal(value, sample(b, jax.random.key(5), (2, 3)))
    np.testing.assert_array_equal(a.log_prob(value), b.log_prob(value))
    np.testing.assert_array_equal(a.entropy(), b.entropy())
    np.testing.assert_array_equal(a.mean(), b.mean)
    np.testing.assert_array_equal(a.mode(), b.mode)
    np.testing.assert_array_equal(a.kl_divergence(dx.UniformKHot(m, k)), np_kl(b, nx.UniformKHot(m, k)))
    np.testing.assert_array_equal(sample(dx.UniformKHot(m, k), jax.random.key(6), (4,)),
                                  sample(nx.UniformKHot(m, k), jax.random.key(6), (4,)))


@pytest.mark.parametrize("noise", ["gumbel", "sum_of_gamma", "sum_of_gamma_reference"])
def test_backends_give_identical_perturbed_top_k_samples(noise):
    theta = jnp.asarray(_logits((2, 6), 8), jnp.float32)
    pa = dx.PerturbedTopK(theta, 2, noise=noise, temperature=2.0)
    pb = nx.PerturbedTopK(theta, 2, noise=noise, temperature=2.0)
    np.testing.assert_array_equal(sample(pa, jax.random.key(7), (3,)), sample(pb, jax.random.key(7), (3,)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_khot(backend):
    u = BACKENDS[backend].UniformKHot(7, 3)
    assert tuple(u.batch_shape) == () and tuple(u.event_shape) == (7,)
    values = jnp.asarray(subsets(7, 3), jnp.float32)
    np.testing.assert_allclose(u.log_prob(values), np.full(35, -math.log(35)), rtol=1e-6)
    assert float(u.entropy()) == pytest.approx(math.log(35))
    np.testing.assert_allclose(call(u, "mean"), np.full(7, 3 / 7))
    np.testing.assert_array_equal(call(u, "mode"), [1, 1, 1, 0, 0, 0, 0])
    c = sample(u, jax.random.key(0), (100,))
    assert c.shape == (100, 7) and np.all(np.asarray(c).sum(-1) == 3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_perturbed_top_k_has_no_log_prob_and_no_kl(backend):
    mod = BACKENDS[backend]
    d = mod.PerturbedTopK(jnp.asarray(_logits((2, 5)), jnp.float32), 2)
    c = sample(d, jax.random.key(0), (4,))
    assert c.shape == (4, 2, 5) and np.all(np.asarray(c).sum(-1) == 2)
    assert tuple(d.batch_shape) == (2,) and tuple(d.event_shape) == (5,)
    np.testing.assert_array_equal(call(d, "mode"), dx.KHot(d.logits, 2).mode())
    with pytest.raises(NotImplementedError, match="no closed form"):
        d.log_prob(c)
    with pytest.raises(NotImplementedError):
        kl(d, mod.UniformKHot(5, 2))


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradients_through_samples(backend):
    """The estimator chosen at construction reaches the logits: "simple" gives the Jacobian of the marginals."""
    mod = BACKENDS[backend]
    theta = jnp.asarray(_logits((5,), 4), jnp.float32)
    w = jnp.asarray(_logits((5,), 5), jnp.float32)
    exact = jax.grad(lambda t: jnp.dot(w, call(mod.KHot(t, 2), "mean")))
    g = jax.grad(lambda t: jnp.dot(w, sample(mod.KHot(t, 2), jax.random.key(0))))(theta)
    np.testing.assert_allclose(g, exact(theta), atol=1e-6)
    g = jax.grad(lambda t: jnp.dot(w, sample(mod.KHot(t, 2, gradient="straight_through"), jax.random.key(0))))(theta)
    np.testing.assert_array_equal(g, w)
    g = jax.grad(lambda t: jnp.dot(w, sample(mod.KHot(t, 2, gradient="none"), jax.random.key(0))))(theta)
    np.testing.assert_array_equal(g, jnp.zeros(5))
    g = jax.grad(lambda t: jnp.dot(w, sample(mod.PerturbedTopK(t, 2, noise="gumbel", gradient="straight_through"),
                                            jax.random.key(0))))(theta)
    np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("backend", BACKENDS)
def test_pytree_leaves_and_jit(backend):
    mod = BACKENDS[backend]
    theta = jnp.asarray(_logits((3, 5)), jnp.float32)
    q = mod.KHot(theta, 2)
    leaves = jax.tree.leaves(q)
    assert len(leaves) == 1 and leaves[0] is q.logits
    assert jax.tree.leaves(mod.UniformKHot(5, 2)) == []
    ptk_leaves = sorted(jax.tree.leaves(mod.PerturbedTopK(theta, 2, temperature=3.0)), key=jnp.ndim)
    assert len(ptk_leaves) == 2 and float(ptk_leaves[0]) == 3.0 and ptk_leaves[1] is theta
    chex.clear_trace_counter()  # the counter is per code location, shared by the two parametrisations
    step = jax.jit(chex.assert_max_traces(lambda d: d.entropy(), n=1))
    np.testing.assert_allclose(step(q), q.entropy(), rtol=1e-6)
    step(mod.KHot(theta + 1.0, 2))  # new parameter values, same structure: no retrace
    over_distribution = jax.vmap(lambda d: d.entropy())(q)  # vmap over the distribution pytree itself
    np.testing.assert_allclose(over_distribution, q.entropy(), rtol=1e-6)
    rebuilt = jax.tree.unflatten(jax.tree.structure(q), [theta + 1.0])
    assert rebuilt.k == 2 and tuple(rebuilt.batch_shape) == (3,)
    np.testing.assert_allclose(call(rebuilt, "mean"), call(q, "mean"), atol=1e-5)  # shift invariance
    kl_fn = jax.jit(lambda t: kl(mod.KHot(t, 2), mod.UniformKHot(5, 2)))
    np.testing.assert_allclose(kl_fn(theta), kl(q, mod.UniformKHot(5, 2)), rtol=1e-6)
    per_row = jax.vmap(lambda t: mod.KHot(t, 2).entropy())(theta)
    np.testing.assert_allclose(per_row, q.entropy(), rtol=1e-6)


def test_distrax_getitem_slices_batch_dims():
    theta = jnp.asarray(_logits((4, 3, 6)), jnp.float32)
    q = dx.KHot(theta, 2, gradient="straight_through")
    sub = q[1:3, 0]
    assert sub.batch_shape == (2,) and sub.event_shape == (6,) and sub.gradient == "straight_through"
    np.testing.assert_array_equal(sub.logits, theta[1:3, 0])
    p = dx.PerturbedTopK(theta, 2, noise="gumbel", temperature=2.0)[..., -1]
    assert p.batch_shape == (4,) and p.noise == "gumbel" and float(p.temperature) == 2.0


# ---------------------------------------------------------------------------------------------------------------
# NumPyro: support, enumeration, SVI
# ---------------------------------------------------------------------------------------------------------------


def test_numpyro_support_constraint():
    q = nx.KHot(jnp.zeros(4), 2)
    assert q.support.event_dim == 1 and q.support.is_discrete
    check = q.support(jnp.asarray([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0], [0.5, 0.5, 1.0, 0.0]]))
    np.testing.assert_array_equal(check, [True, False, False])
    feasible = q.support.feasible_like(jnp.zeros((3, 4)))
    assert feasible.shape == (3, 4) and np.all(np.asarray(q.support(feasible)))
    assert nx.UniformKHot(4, 2).support == nx.KHotConstraint(2)
    with pytest.raises(ValueError, match="`KHotConstraint`: `k`"):
        nx.KHotConstraint(-1)


def test_numpyro_validation_masks_values_outside_the_support():
    q = nx.KHot(jnp.zeros(4), 2, validate_args=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lp = q.log_prob(jnp.asarray([[1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]]))
    assert np.isfinite(lp[0]) and lp[1] == -np.inf
    with pytest.raises(ValueError, match="logits"):
        nx.KHot(jnp.asarray([0.0, np.nan]), 1, validate_args=True)


def test_numpyro_enumerate_support():
    theta = jnp.asarray(_logits((3, 6)), jnp.float32)
    q = nx.KHot(theta, 2)
    assert q.has_enumerate_support
    values = q.enumerate_support()
    assert values.shape == (15, 3, 6)
    np.testing.assert_allclose(jnp.exp(q.log_prob(values)).sum(0), np.ones(3), atol=1e-6)
    assert q.enumerate_support(expand=False).shape == (15, 1, 6)
    assert nx.UniformKHot(16, 8).enumerate_support().shape == (12870, 16)
    big = nx.KHot(jnp.zeros(17), 2)
    assert not big.has_enumerate_support
    with pytest.raises(ValueError, match="`num_categories` must be at most 16"):
        big.enumerate_support()


def _prior_model(a):
    numpyro.sample("c", nx.UniformKHot(a.shape[-1], 3))


def _model(a):
    c = numpyro.sample("c", nx.UniformKHot(a.shape[-1], 3))
    numpyro.factor("likelihood", jnp.dot(c, a))  # p(data | c) proportional to exp(<a, c>)


def _guide(a):
    logits = numpyro.param("logits", jnp.zeros(a.shape[-1]))
    numpyro.sample("c", nx.KHot(logits, 3))


def test_trace_mean_field_elbo_uses_the_registered_kl():
    """Without observations the mean-field ELBO is exactly KL(KHot || UniformKHot) for every seed; Trace_ELBO's
    Monte Carlo estimate of the same quantity varies with the seed."""
    a = jnp.zeros(8)
    logits = jnp.asarray(_logits((8,), 7), jnp.float32)
    params = {"logits": logits}
    exact = float(np_kl(nx.KHot(logits, 3), nx.UniformKHot(8, 3)))
    mean_field = [TraceMeanField_ELBO().loss(jax.random.key(s), params, _prior_model, _guide, a) for s in range(3)]
    np.testing.assert_allclose(mean_field, exact, rtol=1e-6)
    monte_carlo = [float(Trace_ELBO().loss(jax.random.key(s), params, _prior_model, _guide, a)) for s in range(3)]
    assert len(set(monte_carlo)) > 1


def test_numpyro_svi_recovers_the_exact_posterior():
    """With a likelihood exp(<a, c>) the posterior under the uniform prior is KHot(a), inside the guide family.
    The likelihood is linear in c, so SIMPLE gradients through the guide's samples are exact, the registered KL
    is exact, and SVI with TraceMeanField_ELBO converges to logits a (up to the family's shift invariance).
    NumPyro warns that TraceMeanField_ELBO does not enumerate discrete latents; KHot supplies its own gradient."""
    a = jnp.asarray([1.6, -0.4, -2.8, -0.8, -2.0, 2.4, -1.2, 1.2], jnp.float32)
    svi = SVI(_model, _guide, optax.adam(0.1), TraceMeanField_ELBO())
    with pytest.warns(UserWarning, match="does not support models with discrete latent variables"):
        result = svi.run(jax.random.key(0), 500, a, progress_bar=False)
    logits = result.params["logits"]
    np.testing.assert_allclose(logits - logits.mean(), a - a.mean(), atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", ["KHot", "PerturbedTopK"])
def test_bad_arguments_raise_value_errors_naming_them(backend, cls):
    make = getattr(BACKENDS[backend], cls)
    for k in (6, -1, 2.0, "2"):
        with pytest.raises(ValueError, match=rf"`{cls}`: `k` must"):
            make(jnp.zeros(5), k)
    with pytest.raises(ValueError, match=rf"`{cls}`: `logits` must have rank >= 1"):
        make(jnp.asarray(0.0), 0)
    with pytest.raises(ValueError, match=rf"`{cls}`: `gradient` must be one of"):
        make(jnp.zeros(5), 2, gradient="bogus")
    if cls == "PerturbedTopK":
        with pytest.raises(ValueError, match="`PerturbedTopK`: `noise` must be one of"):
            make(jnp.zeros(5), 2, noise="gamma")
        with pytest.raises(ValueError, match="`PerturbedTopK`: `temperature` must be finite and > 0"):
            make(jnp.zeros(5), 2, temperature=-1.0)
        with pytest.raises(ValueError, match="`PerturbedTopK`: `num_terms` must be an integer >= 1"):
            make(jnp.zeros(5), 2, num_terms=0)
    else:
        with pytest.raises(ValueError, match="`khot_log_prob`: `value` must have the categories on its last axis"):
            make(jnp.zeros(5), 2).log_prob(jnp.zeros(4))


@pytest.mark.parametrize("backend", BACKENDS)
def test_uniform_khot_bad_arguments(backend):
    mod = BACKENDS[backend]
    with pytest.raises(ValueError, match="`UniformKHot`: `num_categories` must be an integer >= 1"):
        mod.UniformKHot(0, 0)
    with pytest.raises(ValueError, match="`UniformKHot`: `k` must satisfy 0 <= k <= num_categories = 4"):
        mod.UniformKHot(4, 5)
    with pytest.raises(ValueError, match="`UniformKHot`: `k` must be a Python int"):
        mod.UniformKHot(4, 1.5)
    with pytest.raises(ValueError, match=r"`UniformKHot.log_prob`: `value` must have the categories"):
        mod.UniformKHot(4, 2).log_prob(jnp.zeros(3))


# ---------------------------------------------------------------------------------------------------------------
# Gaussian auxiliary latents: the backends' own classes (documented recipe, nothing added)
# ---------------------------------------------------------------------------------------------------------------


def test_gaussian_auxiliary_latent_recipe_matches_the_paper_kl():
    """KL(N(mu, diag(s^2)) || N(0, I)) = 1/2 (mu^T mu + tr(S^2 - I) - log|S^2|) (MuLAN, continuous latents)."""
    rng = np.random.default_rng(0)
    mu, s = rng.normal(size=(2, 5)), rng.uniform(0.3, 2.0, size=(2, 5))
    paper = 0.5 * (np.sum(mu ** 2, -1) + np.sum(s ** 2 - 1, -1) - np.sum(np.log(s ** 2), -1))
    q = distrax.MultivariateNormalDiag(jnp.asarray(mu), jnp.asarray(s))
    p = distrax.MultivariateNormalDiag(jnp.zeros(5), jnp.ones(5))
    np.testing.assert_allclose(q.kl_divergence(p), paper, rtol=1e-5)
    q_np = nd.Normal(jnp.asarray(mu), jnp.asarray(s)).to_event(1)
    p_np = nd.Normal(jnp.zeros(5), 1.0).to_event(1)
    np.testing.assert_allclose(np_kl(q_np, p_np), paper, rtol=1e-5)


@pytest.mark.slow
def test_core_and_numpyro_khot_do_not_import_tfp_or_distrax():
    code = ("import sys, mulan_ppl.core.khot, mulan_ppl.numpyro.khot; "
            "bad = [m for m in ('tensorflow_probability', 'distrax') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
