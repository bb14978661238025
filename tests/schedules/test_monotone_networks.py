"""VDM's monotone network (LearnedScalar) and its FiLM-conditioned version (MonotoneFiLM)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _schedule_utils import apply, apply_with_rate, normal, random_param_state, set_endpoints
from flax import nnx

from mulan_ppl.schedules import LearnedScalar, MonotoneFiLM

EVENT = (2, 3)
CONTEXT_DIM = 4
GRID = 1000
NUM_DRAWS = 50


def make_scalar(**kw):
    return LearnedScalar(hidden_width=16, rngs=nnx.Rngs(0), **kw)


def make_film(event_shape=EVENT, **kw):
    return MonotoneFiLM(event_shape, context_dim=CONTEXT_DIM, hidden_width=16, film_width=8, rngs=nnx.Rngs(0), **kw)


def squash(h):
    return 2.0 / (1.0 + np.exp(-h)) - 1.0


def swish(h):
    return h / (1.0 + np.exp(-h))


def rescale(raw, gamma_min, gamma_max):
    """raw evaluated at (t, 0, 1) on the leading axis -> gamma with exact endpoints."""
    return gamma_min + (gamma_max - gamma_min) * (raw[0] - raw[1]) / (raw[2] - raw[1])


def plain_learned_scalar(m, t):
    """VDM's NoiseSchedule_NNet (abs weights) in float64 numpy, rescaled to the endpoints."""
    w1, w2, b2, w3 = (np.asarray(p[...], np.float64) for p in (m.w1, m.w2, m.b2, m.w3))
    times = np.stack([t, 0 * t, 0 * t + 1])
    h = squash(np.abs(w2) * (2 * times[..., None] - 1) + b2)
    return rescale(np.abs(w1) * times + h @ np.abs(w3) / w2.size, m.gamma_min, m.gamma_max)


def plain_film(m, t, context):
    names = ("w1", "w2", "b2", "w_int", "b_int", "w3")
    params = {name: np.asarray(getattr(m, name)[...], np.float64) for name in names}
    u = np.asarray(context, np.float64)
    for layer in m.head.hidden:
        u = swish(u @ np.asarray(layer.kernel[...], np.float64) + np.asarray(layer.bias[...], np.float64))
    out = u @ np.asarray(m.head.out.kernel[...], np.float64) + np.asarray(m.head.out.bias[...], np.float64)
    scale, shift = np.log1p(np.exp(out[:, :16])), out[:, 16:]
    times = np.stack([t, 0 * t, 0 * t + 1])
    h = squash(np.abs(params["w2"]) * (2 * times[..., None] - 1) + params["b2"]) * scale + shift
    h = squash(h @ np.abs(params["w_int"]) + params["b_int"])
    raw = np.abs(params["w1"]) * times[..., None] + h @ np.abs(params["w3"]) / 16
    return rescale(raw, m.gamma_min, m.gamma_max).reshape((t.shape[0], *m.event_shape))


def test_learned_scalar_matches_vdm_formula():
    schedule = make_scalar()
    nnx.update(schedule, random_param_state(schedule, 0, 1.0))
    t = np.linspace(0.0, 1.0, 33)
    np.testing.assert_allclose(apply(schedule, jnp.asarray(t, jnp.float32)), plain_learned_scalar(schedule, t),
                               atol=5e-5, rtol=0)


def test_film_matches_formula_and_depends_on_context():
    schedule = make_film()
    nnx.update(schedule, random_param_state(schedule, 1, 1.0))
    t = np.linspace(0.0, 1.0, 8)
    context = np.asarray(normal(2, (8, CONTEXT_DIM)))
    got = np.asarray(apply(schedule, jnp.asarray(t, jnp.float32), jnp.asarray(context, jnp.float32)))
    np.testing.assert_allclose(got, plain_film(schedule, t, context), atol=5e-5, rtol=0)
    # Input-adaptive: two contexts give different schedules at the same interior time.
    half = jnp.full((2,), 0.5)
    two = apply(schedule, half, jnp.asarray(context[:2], jnp.float32))
    assert float(jnp.max(jnp.abs(two[0] - two[1]))) > 1e-3


@pytest.mark.parametrize("kind", ["scalar", "film", "film_scalar_event"])
def test_endpoints_exact_and_strictly_increasing_for_random_draws(kind):
    if kind == "scalar":
        schedule, context, shape = make_scalar(), None, ()
    else:
        event = EVENT if kind == "film" else ()
        schedule, shape = make_film(event), event
        context = jnp.repeat(3.0 * normal(3, (3, CONTEXT_DIM)), GRID, axis=0)
    rows = 1 if context is None else 3
    t = jnp.tile(jnp.linspace(0.0, 1.0, GRID), rows)
    graphdef, _ = nnx.split(schedule)
    evaluate = jax.jit(lambda state: nnx.merge(graphdef, state)(t, context))
    for i in range(NUM_DRAWS):
        gamma = np.asarray(evaluate(random_param_state(schedule, 10 + i, 3.0)))
        gamma = gamma.reshape((rows, GRID) + shape)
        assert np.all(np.isfinite(gamma))
        np.testing.assert_allclose(gamma[:, 0], -13.3, atol=1e-5, rtol=0)
        np.testing.assert_allclose(gamma[:, -1], 5.0, atol=1e-5, rtol=0)
        assert np.all(np.diff(gamma, axis=1) > 0), f"draw {i}"


@pytest.mark.parametrize("make", [make_scalar, make_film], ids=["LearnedScalar", "MonotoneFiLM"])
def test_learned_endpoints(make):
    schedule = make(learn_endpoints=True)
    assert isinstance(schedule.gamma_min, nnx.Param) and isinstance(schedule.gamma_max, nnx.Param)
    t = jnp.array([0.0, 0.3, 1.0])
    context = jnp.ones((3, CONTEXT_DIM))
    for gamma_min, gamma_max in [(-13.3, 5.0), (-9.5, 2.25), (-17.0, 8.0)]:
        set_endpoints(schedule, gamma_min, gamma_max)
        gamma = np.asarray(apply(schedule, t, context)).reshape(3, -1)
        np.testing.assert_allclose(gamma[0], gamma_min, atol=1e-5, rtol=0)
        np.testing.assert_allclose(gamma[2], gamma_max, atol=1e-5, rtol=0)


def test_shapes_and_context_handling():
    t = jnp.array([0.1, 0.6])
    context = jnp.ones((2, CONTEXT_DIM))
    assert jax.eval_shape(make_scalar(), t, None).shape == (2,)
    assert jax.eval_shape(make_film(), t, context).shape == (2, *EVENT)
    assert jax.eval_shape(make_film(()), t, context).shape == (2,)
    scalar = make_scalar()
    np.testing.assert_array_equal(apply(scalar, t, context), apply(scalar, t, None))  # context ignored


@pytest.mark.parametrize("make", [make_scalar, make_film], ids=["LearnedScalar", "MonotoneFiLM"])
def test_finite_values_and_gradients_at_both_ends_float32(make):
    schedule = make(learn_endpoints=True, gamma_min=-30.0, gamma_max=30.0)
    params = random_param_state(schedule, 4, 3.0)
    graphdef, _ = nnx.split(schedule, nnx.Param)
    t = jnp.array([0.0, 1.0])
    context = 10.0 * normal(5, (2, CONTEXT_DIM))

    @jax.jit
    def run(params, t):
        def loss(params, t):
            gamma, rate = jax.jvp(lambda s: nnx.merge(graphdef, params)(s, context), (t,), (jnp.ones_like(t),))
            return jnp.sum(rate * jax.nn.sigmoid(gamma)), (gamma, rate)

        return jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, t)

    (_, (gamma, rate)), grads = run(params, t)
    for leaf in [gamma, rate, *jax.tree.leaves(grads)]:
        assert leaf.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(leaf)))
    gamma = np.asarray(gamma).reshape(2, -1)
    np.testing.assert_array_equal(gamma[0], -30.0)
    np.testing.assert_array_equal(gamma[1], 30.0)
    assert np.all(np.asarray(rate) > 0)


def test_errors_name_the_call_and_argument():
    film = make_film()
    t = jnp.array([0.2, 0.4])
    with pytest.raises(ValueError, match="`MonotoneFiLM`: `context` is None"):
        film(t, None)
    with pytest.raises(ValueError, match=r"`MonotoneFiLM`: `context` must have shape \(batch, context_dim\)"):
        film(t, jnp.ones((3, CONTEXT_DIM)))
    with pytest.raises(ValueError, match=r"`LearnedScalar`: `t` must have shape \(batch,\)"):
        make_scalar()(jnp.zeros(()), None)
    for make in (make_scalar, make_film):
        with pytest.raises(ValueError, match="`gamma_min` must be less than `gamma_max`"):
            make(gamma_min=5.0, gamma_max=-13.3)
    with pytest.raises(ValueError, match="`LearnedScalar`: `hidden_width`"):
        LearnedScalar(hidden_width=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`MonotoneFiLM`: `context_dim`"):
        MonotoneFiLM(EVENT, context_dim=None, rngs=nnx.Rngs(0))
    bad_head = MonotoneFiLM(EVENT, context_dim=CONTEXT_DIM, hidden_width=16,
                            head=nnx.Linear(CONTEXT_DIM, 16, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`MonotoneFiLM`: `head` must map .* \(batch, 2 \* hidden_width\)"):
        bad_head(t, jnp.ones((2, CONTEXT_DIM)))


def test_custom_film_head_is_used():
    head = nnx.Linear(CONTEXT_DIM, 2 * 16, rngs=nnx.Rngs(1))
    schedule = MonotoneFiLM(EVENT, context_dim=CONTEXT_DIM, hidden_width=16, head=head, rngs=nnx.Rngs(0))
    assert schedule.head is head
    context = normal(7, (3, CONTEXT_DIM))
    scale, shift = nnx.jit(lambda m, c: m.film(c))(schedule, context)
    raw = nnx.jit(lambda m, c: m(c))(head, context)
    np.testing.assert_allclose(scale, jax.nn.softplus(raw[:, :16]), rtol=1e-6)
    np.testing.assert_allclose(shift, raw[:, 16:], rtol=1e-6)
    gamma = np.asarray(apply(schedule, jnp.array([0.0, 0.5, 1.0]), context))
    np.testing.assert_allclose(gamma[0], -13.3, atol=1e-5, rtol=0)
    np.testing.assert_allclose(gamma[2], 5.0, atol=1e-5, rtol=0)


def test_jit_via_nnx_jit_and_split_merge():
    film = make_film()
    t = jnp.linspace(0.0, 1.0, 5)
    context = normal(6, (5, CONTEXT_DIM))
    via_split = apply(film, t, context)
    via_nnx = nnx.jit(lambda m, s, c: m(s, c))(film, t, context)
    np.testing.assert_allclose(via_nnx, via_split, rtol=0, atol=2e-5)
    gamma, rate = apply_with_rate(film, t, context)
    np.testing.assert_allclose(gamma, via_split, rtol=0, atol=2e-5)
    assert np.all(np.asarray(rate) > 0)
