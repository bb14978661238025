"""Schedule heads: sizes, the low-rank structure, and the schedules they drive.

Heads are seeded with ``rbg`` keys, which XLA compiles much faster on CPU than the default threefry generator.
"""

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mulan_ppl.nets import LowRankHead, MLPHead, PolynomialHead, parameter_count
from mulan_ppl.schedules import MonotoneFiLM, Polynomial

K = 5
EVENT = (2, 3, 2)
SIZE = math.prod(EVENT)


def rngs(seed):
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def contexts(n, seed=0):
    return jax.random.normal(jax.random.key(seed, impl="rbg"), (n, K))


HEADS = {
    "mlp": lambda out, **kw: MLPHead(K, out, hidden_width=16, rngs=rngs(0), **kw),
    "low_rank": lambda out, **kw: LowRankHead(K, out, rank=3, hidden_width=16, rngs=rngs(0), **kw),
}


@pytest.mark.parametrize("name", sorted(HEADS))
def test_output_shape_and_zero_initialisation(name):
    c = contexts(4)
    assert HEADS[name](7)(c).shape == (4, 7)
    assert np.all(np.asarray(HEADS[name](7, zero_init=True)(c)) == 0.0)


def test_low_rank_head_outputs_lie_in_an_affine_subspace_of_dimension_rank():
    head = LowRankHead(K, 40, rank=3, hidden_width=16, rngs=rngs(0))
    outputs = np.asarray(head(contexts(20)), np.float64)
    singular = np.linalg.svd(outputs - head.up.bias[...], compute_uv=False)
    assert singular[2] > 1e-3 * singular[0]  # rank 3 is used ...
    assert singular[3] < 1e-5 * singular[0]  # ... and not exceeded (float32 round-off only)
    full = np.asarray(MLPHead(K, 40, hidden_width=16, rngs=rngs(0))(contexts(20)), np.float64)
    assert np.linalg.svd(full, compute_uv=False)[5] > 1e-3 * np.linalg.norm(full)  # the MLP is not low rank


def test_parameter_counts_of_the_paper_head_and_the_light_head():
    out = 3 * 32 * 32 * 3  # a, b, d per pixel of a CIFAR-10 image; context of 50 dims

    def count(make):
        return parameter_count(nnx.eval_shape(make))

    paper = count(lambda: MLPHead(50, out, rngs=rngs(0)))
    assert paper == (50 * 3072 + 3072) + (3072 * 3072 + 3072) + (3072 * out + out) == 37_917_696
    assert count(lambda: PolynomialHead(50, (32, 32, 3), rngs=rngs(0))) == paper
    light = count(lambda: LowRankHead(50, out, rank=64, hidden_width=512, rngs=rngs(0)))
    assert light == (50 * 512 + 512) + (512 * 512 + 512) + 512 * 64 + (64 * out + out) == 920_576
    assert paper > 40 * light


@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_drive_polynomial_with_exact_endpoints_and_monotone_context_dependent_gamma(name):
    schedule = Polynomial(EVENT, context_dim=K, head=HEADS[name](3 * SIZE), rngs=rngs(1))
    c = contexts(2)
    times = jnp.linspace(0.0, 1.0, 11)
    gamma = np.stack([np.asarray(schedule(jnp.full((2,), s), c)) for s in times])  # (11, 2, *EVENT)
    np.testing.assert_allclose(gamma[0], -13.3, rtol=0, atol=1e-5)
    np.testing.assert_allclose(gamma[-1], 5.0, rtol=0, atol=1e-5)
    assert np.all(np.diff(gamma, axis=0) >= 0)
    assert np.abs(gamma[5, 0] - gamma[5, 1]).max() > 1e-3  # the two contexts get different schedules


@pytest.mark.parametrize("name", sorted(HEADS))
def test_zero_initialised_head_starts_polynomial_at_the_linear_schedule(name):
    schedule = Polynomial(EVENT, context_dim=K, head=HEADS[name](3 * SIZE, zero_init=True), rngs=rngs(1))
    t = jnp.array([0.1, 0.6])
    expected = np.broadcast_to((-13.3 + 18.3 * np.asarray(t)).reshape(2, 1, 1, 1), (2, *EVENT))
    np.testing.assert_allclose(schedule(t, contexts(2)), expected, rtol=1e-5)


@pytest.mark.skipif("head" not in inspect.signature(MonotoneFiLM.__init__).parameters,
                    reason="MonotoneFiLM takes no `head` module yet")
@pytest.mark.parametrize("name", sorted(HEADS))
def test_heads_drive_monotone_film_with_exact_endpoints(name):
    width = 8
    schedule = MonotoneFiLM(EVENT, context_dim=K, hidden_width=width, head=HEADS[name](2 * width),
                            init_scale=1.0, rngs=rngs(1))
    c = contexts(2)
    times = jnp.linspace(0.0, 1.0, 11)
    gamma = np.stack([np.asarray(schedule(jnp.full((2,), s), c)) for s in times])
    np.testing.assert_allclose(gamma[0], -13.3, rtol=0, atol=1e-5)
    np.testing.assert_allclose(gamma[-1], 5.0, rtol=0, atol=1e-5)
    assert np.all(np.diff(gamma, axis=0) >= 0)
    assert np.abs(gamma[5, 0] - gamma[5, 1]).max() > 1e-3


@pytest.mark.parametrize("make, match", [
    (lambda: LowRankHead(K, 10, rank=12, hidden_width=16, rngs=rngs(0)), "rank"),
    (lambda: LowRankHead(K, 10, rank=0, hidden_width=16, rngs=rngs(0)), "rank"),
    (lambda: LowRankHead(K, 10, rank=2, hidden_width=16, num_hidden=0, rngs=rngs(0)), "num_hidden"),
    (lambda: MLPHead(0, 10, rngs=rngs(0)), "context_dim"),
    (lambda: MLPHead(K, 10, hidden_width=8, zero_init=1, rngs=rngs(0)), "zero_init"),
    (lambda: MLPHead(K, 10, hidden_width=8, rngs=rngs(0))(jnp.ones((2, K + 1))), "context"),
    (lambda: LowRankHead(K, 10, rank=2, hidden_width=8, rngs=rngs(0))(jnp.ones(K)), "context"),
])
def test_bad_arguments_are_rejected(make, match):
    with pytest.raises(ValueError, match=match):
        make()
