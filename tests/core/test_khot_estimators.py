"""Gradient estimators through k-hot samples, measured on toy objectives against the enumerated exact gradient.

Toy problem: m = 10 items, k = 3, logits and weights drawn once with a fixed seed. For the objective E[f(c)] under
KHot(theta) the exact gradient is computed by enumerating all C(10, 3) = 120 subsets in NumPy float64:
d/d theta E[f(c)] = Cov(c, f(c)). Each estimator is evaluated on 1000 independent draws; the table (bias and spread
relative to the exact gradient's norm, and the cosine of the mean estimate with it) is printed with ``pytest -s``
and quoted in docs/khot.md.

PerturbedTopK's estimators target the gradient of its own expectation, which is not KHot's (its samples follow
another distribution): the table measures how far they are from the gradient of the exact family's expectation.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulan_ppl.core import khot

M, K, N_DRAWS = 10, 3, 1000
RNG = np.random.default_rng(2024)
THETA = RNG.normal(size=M)
W = RNG.normal(size=M)


def subsets():
    return np.asarray([[1.0 if i in s else 0.0 for i in range(M)] for s in itertools.combinations(range(M), K)])


def exact_gradient(f_values):
    """d/d theta E_theta[f(c)] = Cov(c, f(c)) by enumeration (float64)."""
    c = subsets()
    score = c @ THETA
    p = np.exp(score - np.logaddexp.reduce(score))
    pi = p @ c
    return p @ (c * f_values[:, None]) - pi * (p @ f_values)


OBJECTIVES = {
    "linear <w,c>": (lambda c: jnp.sum(c * W.astype(np.float32), axis=-1), lambda c: c @ W),
    "quadratic <w,c>^2": (lambda c: jnp.sum(c * W.astype(np.float32), axis=-1) ** 2, lambda c: (c @ W) ** 2),
}


def estimators():
    def sampler(name):
        if name == "KHot simple":
            return lambda t, key: khot.khot_sample(t, key, K, gradient="simple")
        if name == "KHot straight_through":
            return lambda t, key: khot.khot_sample(t, key, K, gradient="straight_through")
        if name == "PerturbedTopK identity (SoG, tau=1)":
            return lambda t, key: khot.perturbed_top_k(t, key, K, temperature=1.0, gradient="identity")
        if name == "PerturbedTopK identity (SoG, tau=10)":
            return lambda t, key: khot.perturbed_top_k(t, key, K, temperature=10.0, gradient="identity")
        if name == "PerturbedTopK identity (Gumbel, tau=1)":
            return lambda t, key: khot.perturbed_top_k(t, key, K, noise="gumbel", temperature=1.0,
                                                       gradient="identity")
        if name == "PerturbedTopK straight_through (SoG, tau=1)":
            return lambda t, key: khot.perturbed_top_k(t, key, K, temperature=1.0, gradient="straight_through")
        raise AssertionError(name)

    names = ["KHot simple", "KHot straight_through", "PerturbedTopK identity (SoG, tau=1)",
             "PerturbedTopK identity (SoG, tau=10)", "PerturbedTopK identity (Gumbel, tau=1)",
             "PerturbedTopK straight_through (SoG, tau=1)"]
    return {name: sampler(name) for name in names}


def per_draw_gradients(sample_fn, f):
    theta = jnp.asarray(THETA, jnp.float32)
    keys = jax.random.split(jax.random.key(7), N_DRAWS)
    grad = jax.grad(lambda t, key: f(sample_fn(t, key)))
    return np.asarray(jax.jit(jax.vmap(grad, in_axes=(None, 0)))(theta, keys), np.float64)


def score_function_gradients(f):
    """REINFORCE with the exact log-prob: f(c) * grad log p(c) = f(c) (c - pi), unbiased."""
    theta = jnp.asarray(THETA, jnp.float32)
    keys = jax.random.split(jax.random.key(7), N_DRAWS)
    c = jax.vmap(lambda key: khot.khot_sample(theta, key, K, gradient="none"))(keys)
    score = jax.vmap(jax.grad(lambda t, v: khot.khot_log_prob(v, t, K)), in_axes=(None, 0))(theta, c)
    return np.asarray(f(c)[:, None] * score, np.float64)


def summarise(g, exact):
    norm = np.linalg.norm(exact)
    mean = g.mean(0)
    bias = np.linalg.norm(mean - exact) / norm
    spread = np.sqrt(np.sum(g.var(0, ddof=1))) / norm
    cosine = mean @ exact / (np.linalg.norm(mean) * norm)
    return bias, spread, cosine


@pytest.fixture(scope="module")
def table():
    rows = {}
    for obj_name, (f_jax, f_np) in OBJECTIVES.items():
        exact = exact_gradient(f_np(subsets()))
        grads = {name: per_draw_gradients(fn, f_jax) for name, fn in estimators().items()}
        grads["KHot score function (REINFORCE)"] = score_function_gradients(f_jax)
        rows[obj_name] = {"exact": exact, "grads": grads}
    return rows


def test_exact_expectation_path_matches_enumeration(table):
    """d/d theta f(pi(theta)) through the marginals is the exact gradient of E[<w, c>] (float32 vs float64)."""
    grad = jax.grad(lambda t: jnp.dot(jnp.asarray(W, jnp.float32), khot.khot_marginals(t, K)))
    np.testing.assert_allclose(grad(jnp.asarray(THETA, jnp.float32)), table["linear <w,c>"]["exact"], atol=1e-5)


def test_simple_is_exact_on_linear_objectives_and_straight_through_is_the_identity(table):
    linear = table["linear <w,c>"]
    # SIMPLE backpropagates through pi, so on a linear objective every single draw is the exact gradient.
    np.testing.assert_allclose(linear["grads"]["KHot simple"], np.broadcast_to(linear["exact"], (N_DRAWS, M)),
                               atol=1e-5)
    np.testing.assert_allclose(linear["grads"]["KHot straight_through"], np.broadcast_to(W, (N_DRAWS, M)),
                               atol=1e-6)


@pytest.mark.parametrize("objective", sorted(OBJECTIVES))
def test_score_function_is_unbiased(table, objective):
    g = table[objective]["grads"]["KHot score function (REINFORCE)"]
    se = g.std(0, ddof=1) / np.sqrt(N_DRAWS)
    assert np.all(np.abs(g.mean(0) - table[objective]["exact"]) <= 4.89 * se + 1e-6)


def test_identity_estimators_point_along_the_exact_gradient_of_the_linear_objective(table):
    """Measured: the identity-with-projection estimator's mean has cosine > 0.5 with the exact gradient (it
    passes w projected onto the tangent space of the sphere at the centred perturbed logits)."""
    linear = table["linear <w,c>"]
    for name, g in linear["grads"].items():
        if "identity" in name:
            assert summarise(g, linear["exact"])[2] > 0.5, name


def test_print_table(table, capsys):
    lines = ["", f"Gradient estimators, m={M}, k={K}, {N_DRAWS} draws; bias and spread relative to |exact gradient|"]
    for obj_name, entry in table.items():
        lines.append(f"objective E[{obj_name}]")
        lines.append(f"  {'estimator':46s} {'rel. bias':>10s} {'rel. std':>10s} {'cosine':>8s}")
        for name, g in entry["grads"].items():
            bias, spread, cosine = summarise(g, entry["exact"])
            lines.append(f"  {name:46s} {bias:10.3f} {spread:10.3f} {cosine:8.3f}")
    with capsys.disabled():
        print("\n".join(lines))
    simple = summarise(table["linear <w,c>"]["grads"]["KHot simple"], table["linear <w,c>"]["exact"])
    assert simple[0] < 1e-5 and simple[1] < 1e-5
