"""The k-subset family against brute-force enumeration of all C(m, k) subsets, for every m <= 10 and k <= m.

The reference enumerates ``itertools.combinations`` in NumPy float64 and derives everything from the subset
probabilities by definition (normaliser = log-sum-exp of subset scores, marginals = probability-weighted subset
indicators, entropy = -sum p log p, KLs = sum p log(p / p')); it never calls the library. The library runs in
float32, the dtype users train in. One jitted function per (m, k) evaluates every public quantity.
"""

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mulan_ppl.core import khot

CASES = [(m, k) for m in range(1, 11) for k in range(0, m + 1)]
TOL = 1e-5  # the bound for entropy, marginals, KLs and gradients (float32 library vs float64 reference)


def subsets(m, k):
    """All k-hot vectors of length m, one per row, in float64."""
    rows = [[1.0 if i in s else 0.0 for i in range(m)] for s in itertools.combinations(range(m), k)]
    return np.asarray(rows, np.float64).reshape(-1, m)


def reference(theta_q, theta_p, w, m, k):
    c = subsets(m, k)
    score_q, score_p = c @ theta_q, c @ theta_p
    log_z_q = np.logaddexp.reduce(score_q)
    log_z_p = np.logaddexp.reduce(score_p)
    log_q, log_p = score_q - log_z_q, score_p - log_z_p
    q = np.exp(log_q)
    log_u = -math.log(math.comb(m, k))
    pi = q @ c
    f = c @ w  # the toy objective <w, c> on every subset
    return {
        "log_z": log_z_q,
        "log_prob": log_q,
        "pi": pi,
        "entropy": -np.sum(q * log_q),
        "kl_uniform": np.sum(q * (log_q - log_u)),
        "kl_qp": np.sum(q * (log_q - log_p)),
        "kl_uniform_p": np.sum(np.exp(log_u) * (log_u - log_p)),
        # d/d theta E_q[<w, c>] = Cov_q(c, <w, c>), by enumeration
        "grad_expectation": q @ (c * f[:, None]) - pi * (q @ f),
        "subsets": c,
    }


def library(theta_q, theta_p, values, k):
    return {
        "log_z": khot.khot_log_normalizer(theta_q, k),
        "log_prob": khot.khot_log_prob(values, theta_q, k),
        "pi": khot.khot_marginals(theta_q, k),
        "entropy": khot.khot_entropy(theta_q, k),
        "kl_uniform": khot.kl_khot_uniform(theta_q, k),
        "kl_qp": khot.kl_khot_khot(theta_q, theta_p, k),
        "kl_uniform_p": khot.kl_uniform_khot(theta_p, k),
    }


def gradients(theta, w, k):
    return {
        "grad_expectation": jax.grad(lambda t: jnp.dot(w, khot.khot_marginals(t, k)))(theta),
        "grad_log_z": jax.grad(lambda t: khot.khot_log_normalizer(t, k))(theta),
    }


def draw(m, seed):
    rng = np.random.default_rng(seed)
    return [tuple(rng.normal(scale=2.0, size=m) for _ in range(3)) for _ in range(m + 1)]


def float32_ulp(x):
    return float(np.spacing(np.float32(abs(x))))


# m = 8, 9, 10 compile 30 of the 65 (m, k) programs and take about half of the file's time: slow tier.
SWEEP = [m if m <= 7 else pytest.param(m, marks=pytest.mark.slow) for m in range(1, 11)]


@pytest.mark.parametrize("m", SWEEP)
def test_every_quantity_matches_enumeration(m):
    draws = draw(m, 1000 + m)
    refs = [reference(*draws[k], m, k) for k in range(m + 1)]
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    args = [(f32(tq), f32(tp), f32(ref["subsets"])) for (tq, tp, _), ref in zip(draws, refs)]
    # One compilation per m, holding every k (each k is a static shape).
    with jax.numpy_rank_promotion("raise"):
        results = jax.jit(lambda a: [library(*a[k], k) for k in range(m + 1)])(args)
    for k, (got, ref) in enumerate(zip(results, refs)):
        got = {name: np.asarray(v, np.float64) for name, v in got.items()}
        where = f"m={m}, k={k}"
        for name, value in got.items():
            # Padding with finite numbers: no nan anywhere (a direct table with -inf padding gives nan marginals
            # in 45 of these 65 cases).
            assert np.all(np.isfinite(value)), (where, name, value)
        np.testing.assert_allclose(got["log_z"], ref["log_z"], rtol=1e-6, atol=TOL, err_msg=where)
        np.testing.assert_allclose(got["log_prob"], ref["log_prob"], rtol=1e-6, atol=TOL, err_msg=where)
        for name in ("pi", "entropy", "kl_uniform", "kl_qp", "kl_uniform_p"):
            np.testing.assert_allclose(got[name], ref[name], rtol=0, atol=TOL, err_msg=f"{name}, {where}")
        assert abs(got["pi"].sum() - k) <= TOL, where
        # exp(log_prob) sums to 1 up to the float32 rounding of log e_k and of <theta, c> (half an ulp each, plus
        # one for the subtraction); the 1e-6 bound itself is checked in float64 below.
        bound = 2 * max(float32_ulp(ref["log_z"]), max(float32_ulp(s) for s in ref["log_prob"] + ref["log_z"]))
        assert abs(np.exp(got["log_prob"]).sum() - 1.0) <= bound, (where, np.exp(got["log_prob"]).sum(), bound)


@pytest.mark.parametrize("m", [3, 6, pytest.param(10, marks=pytest.mark.slow)])
def test_gradient_of_exact_expectation_matches_enumeration(m):
    """d/d theta <w, pi(theta)> (the exact expectation of the toy objective <w, c>) and d log e_k / d theta = pi."""
    draws = draw(m, 2000 + m)
    refs = [reference(*draws[k], m, k) for k in range(m + 1)]
    f32 = functools.partial(jnp.asarray, dtype=jnp.float32)
    args = [(f32(tq), f32(w)) for tq, _, w in draws]
    with jax.numpy_rank_promotion("raise"):
        results = jax.jit(lambda a: [gradients(*a[k], k) for k in range(m + 1)])(args)
    for k, (got, ref) in enumerate(zip(results, refs)):
        for name, value in got.items():
            assert np.all(np.isfinite(np.asarray(value))), (m, k, name)
        np.testing.assert_allclose(got["grad_expectation"], ref["grad_expectation"], rtol=0, atol=TOL,
                                   err_msg=f"m={m}, k={k}")
        np.testing.assert_allclose(got["grad_log_z"], ref["pi"], rtol=0, atol=TOL, err_msg=f"m={m}, k={k}")


@pytest.mark.parametrize("m", range(1, 11))
def test_log_normalizer_and_normalisation_in_float64(m, x64):
    """log e_k against the literal sum over itertools.combinations of prod(w_i); exp(log_prob) sums to 1."""
    rng = np.random.default_rng(7 + m)
    w = [rng.uniform(0.05, 5.0, size=m) for _ in range(m + 1)]
    values = [jnp.asarray(subsets(m, k)) for k in range(m + 1)]
    args = [(jnp.log(jnp.asarray(w[k])), values[k]) for k in range(m + 1)]
    results = jax.jit(lambda a: [(khot.khot_log_normalizer(a[k][0], k), khot.khot_log_prob(a[k][1], a[k][0], k))
                                 for k in range(m + 1)])(args)
    for k, (log_z, log_prob) in enumerate(results):
        assert log_z.dtype == jnp.float64
        e_k = sum(math.prod(w[k][i] for i in s) for s in itertools.combinations(range(m), k))
        assert float(log_z) == pytest.approx(math.log(e_k), rel=1e-12, abs=1e-12), (m, k)
        assert abs(float(jnp.exp(log_prob).sum()) - 1.0) <= 1e-6, (m, k)
