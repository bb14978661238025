"""Conversions between the denoiser's prediction targets (``mulan_ppl.core.parameterization``).

The reference is the definition: for z = alpha x + sigma eps, v = alpha eps - sigma x and score = -eps / sigma,
written here in float64 NumPy. All 12 directed (source, target) pairs are checked against it, round-tripped, and
swept for finite float32 values and gradients at extreme noise levels.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from mulan_ppl import core

PARAMETERIZATIONS = ("eps", "v", "x", "score")
PAIRS = [(a, b) for a, b in itertools.product(PARAMETERIZATIONS, repeat=2) if a != b]
F32_EPS = np.finfo(np.float32).eps
F64_EPS = np.finfo(np.float64).eps
# Each conversion is at most ~6 rounded operations and divides at most once by alpha or sigma; a round trip
# a -> b -> a multiplies the error of its inputs by at most 1 / min(alpha, sigma)^2 <= 1 + e^|gamma|.
OPS_ULPS = 16


@pytest.fixture(autouse=True)
def _no_rank_promotion():
    with jax.numpy_rank_promotion("raise"):
        yield


def test_parameterization_names():
    assert core.PARAMETERIZATIONS == PARAMETERIZATIONS
    assert len(PAIRS) == 12


def _reference(gamma, x, eps):
    alpha, sigma = np.sqrt(special.expit(-gamma)), np.sqrt(special.expit(gamma))
    z = alpha * x + sigma * eps
    return z, {"x": x, "eps": eps, "v": alpha * eps - sigma * x, "score": -eps / sigma}


def _case(gamma_values, n_per_gamma=8, seed=0):
    rng = np.random.default_rng(seed)
    gamma = np.repeat(np.asarray(gamma_values, np.float64), n_per_gamma)
    x = rng.uniform(-1.0, 1.0, gamma.size)
    eps = rng.normal(size=gamma.size)
    return gamma, x, eps


@pytest.mark.parametrize("source,target", PAIRS)
def test_conversion_matches_float64_closed_form(x64, source, target):
    gamma, x, eps = _case(np.linspace(-10.0, 10.0, 9))
    z, ref = _reference(gamma, x, eps)
    out = core.convert_prediction(jnp.asarray(ref[source]), jnp.asarray(z), jnp.asarray(gamma), source=source,
                                  target=target)
    assert out.dtype == jnp.float64
    # Error of a single conversion: a few ulps of the largest term, amplified by at most two divisions by
    # min(alpha, sigma) (score targets divide by sigma after recovering eps), i.e. by at most 1 + e^|gamma|.
    scale = np.abs(ref[target]) + (np.abs(z) + np.abs(ref[source])) * (1.0 + np.exp(np.abs(gamma)))
    np.testing.assert_array_less(np.abs(np.asarray(out) - ref[target]), OPS_ULPS * F64_EPS * scale)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("source,target", PAIRS)
def test_round_trip(source, target, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        gamma, x, eps = _case(np.linspace(-6.0, 6.0, 7), seed=1)
        z, ref = _reference(gamma, x, eps)
        z_, gamma_, pred = (jnp.asarray(a, dtype) for a in (z, gamma, ref[source]))
        there = core.convert_prediction(pred, z_, gamma_, source=source, target=target)
        back = core.convert_prediction(there, z_, gamma_, source=target, target=source)
        assert back.dtype == dtype
        eps_d = float(jnp.finfo(dtype).eps)
        bound = OPS_ULPS * eps_d * (1.0 + np.exp(np.abs(gamma))) * (np.abs(z) + np.abs(ref[source]) + 1.0)
        np.testing.assert_array_less(np.abs(np.asarray(back, np.float64) - np.asarray(pred, np.float64)), bound)


@pytest.mark.parametrize("p", PARAMETERIZATIONS)
def test_identity_conversion_returns_input(p):
    pred = jnp.asarray([0.3, -0.2])
    out = core.convert_prediction(pred, jnp.asarray([1.0, 0.5]), jnp.asarray([0.0, 1.0]), source=p, target=p)
    np.testing.assert_array_equal(out, pred)


def test_score_from_eps(x64):
    gamma, _, eps = _case([-5.0, 0.0, 5.0])
    np.testing.assert_allclose(core.score_from_eps(jnp.asarray(gamma), jnp.asarray(eps)),
                               -eps / np.sqrt(special.expit(gamma)), rtol=OPS_ULPS * F64_EPS)


def test_v_conversions_are_exact_at_both_ends_in_float32():
    """The division-free v forms keep float32 accuracy at gamma = +-30, where alpha or sigma is 3e-7."""
    gamma, x, eps = _case([-30.0, 30.0], seed=2)
    gamma = gamma.astype(np.float32).astype(np.float64)
    x = x.astype(np.float32).astype(np.float64)
    eps = eps.astype(np.float32).astype(np.float64)
    z, ref = _reference(gamma, x, eps)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    for target in ("x", "eps"):
        out = core.convert_prediction(f32(ref["v"]), f32(z), f32(gamma), source="v", target=target)
        # alpha z - sigma v (or sigma z + alpha v): two products and a sum, each within half an ulp of its size.
        scale = np.abs(z) + np.abs(ref["v"]) + np.abs(ref[target])
        np.testing.assert_array_less(np.abs(np.asarray(out, np.float64) - ref[target]), OPS_ULPS * F32_EPS * scale)


def _sweep(pred, z, gamma):
    return {f"{a}->{b}": core.convert_prediction(pred, z, gamma, source=a, target=b) for a, b in PAIRS}


def test_values_and_gradients_finite_float32_at_extreme_gamma():
    gamma = jnp.asarray(np.repeat([-30.0, -20.0, -13.3, 0.0, 5.0, 13.3, 20.0, 30.0], 3), jnp.float32)
    z = jnp.tile(jnp.asarray([-1.5, 0.0, 1.5], jnp.float32), 8)
    pred = jnp.tile(jnp.asarray([0.7, -0.3, 1.2], jnp.float32), 8)

    def values_and_grads(pred, z, gamma):
        values = _sweep(pred, z, gamma)
        grads = {k: jax.grad(lambda *a: jnp.sum(_sweep(*a)[k]), argnums=(0, 1, 2))(pred, z, gamma) for k in values}
        return values, grads

    values, grads = jax.jit(values_and_grads)(pred, z, gamma)
    assert len(values) == 12
    for name, value in values.items():
        assert value.dtype == jnp.float32
        assert np.all(np.isfinite(value)), name
        assert all(np.all(np.isfinite(g)) for g in grads[name]), name


@pytest.mark.parametrize("kwargs,name", [(dict(source="noise", target="x"), "source"),
                                         (dict(source="x", target="velocity"), "target")])
def test_unknown_parameterization_raises(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}` must be one of \('eps', 'v', 'x', 'score'\)"):
        core.convert_prediction(jnp.zeros(2), jnp.zeros(2), jnp.zeros(2), **kwargs)
