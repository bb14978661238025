"""MuLAN's polynomial schedule: exact endpoints, monotonicity, closed-form derivatives, shapes, errors, jit."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _schedule_utils import apply, normal, random_param_state, rounding_floor, set_endpoints
from flax import nnx

from mulan_ppl.schedules import FixedLinear, Polynomial, PolynomialHead, polynomial_gamma

EVENT = (2, 3)
CONTEXT_DIM = 4
NUM_DRAWS = 50
GRID = 1000


def plain_polynomial(t, a, b, d, gamma_min, gamma_max):
    """MuLAN's monomial form (Suppl. E.2, Eq. 62-63), written independently of the library."""

    def f(s):
        return a**2 * s**5 / 5 + a * b * s**4 / 2 + (b**2 + 2 * a * d) * s**3 / 3 + b * d * s**2 + d**2 * s

    return gamma_min + (gamma_max - gamma_min) * f(t) / f(1.0)


def plain_schedule(schedule, t, context):
    """The module's coefficients pushed through the plain formula (no custom_jvp)."""
    a, b, d = schedule.coefficients(context, t.shape[0])
    gamma_min, gamma_max = schedule._endpoints()
    return plain_polynomial(t.reshape((-1,) + (1,) * len(EVENT)), a, b, d, gamma_min, gamma_max)


def make(**kw):
    kw.setdefault("context_dim", CONTEXT_DIM)
    kw.setdefault("hidden_width", 16)
    return Polynomial(EVENT, rngs=nnx.Rngs(0), **kw)


@pytest.fixture(scope="module")
def schedule():
    """One default schedule shared by the tests that do not modify it."""
    return make()


def grid_and_contexts(seed, rows):
    """Every context row on the whole grid: t of shape (rows * GRID,), contexts repeated to match."""
    t = jnp.tile(jnp.linspace(0.0, 1.0, GRID), rows)
    context = jnp.repeat(normal(seed, (rows, CONTEXT_DIM)), GRID, axis=0)
    return t, context


def draws_on_grid(schedule, scale, dtype=jnp.float32):
    """gamma on the grid for NUM_DRAWS random parameter draws (3 contexts each): (draws, 3, GRID, *EVENT)."""
    graphdef, _ = nnx.split(schedule)
    t, context = grid_and_contexts(7, 3)

    @jax.jit
    def evaluate(state):
        return nnx.merge(graphdef, state)(t.astype(dtype), context.astype(dtype))

    out = []
    for i in range(NUM_DRAWS):
        state = random_param_state(schedule, 100 + i, scale)
        out.append(np.asarray(evaluate(state)).reshape((3, GRID) + EVENT))
    return np.stack(out)


def test_endpoints_exact_for_random_parameter_draws(schedule):
    gamma = draws_on_grid(schedule, scale=3.0)
    assert np.all(np.isfinite(gamma))
    np.testing.assert_allclose(gamma[:, :, 0], -13.3, atol=1e-5, rtol=0)
    np.testing.assert_allclose(gamma[:, :, -1], 5.0, atol=1e-5, rtol=0)
    # float32 monotone up to rounding: the derivative vanishes where the quadratic has a root in (0, 1).
    assert np.min(np.diff(gamma, axis=2)) >= -rounding_floor(gamma)


def test_strictly_increasing_for_random_parameter_draws(schedule, x64):
    """In float64 the construction is strictly increasing on the grid (zeros of f' are isolated points)."""
    gamma = draws_on_grid(schedule, scale=3.0, dtype=jnp.float64)
    assert gamma.dtype == np.float64
    assert np.all(np.diff(gamma, axis=2) > 0)
    np.testing.assert_allclose(gamma[:, :, 0], -13.3, atol=1e-12, rtol=0)
    np.testing.assert_allclose(gamma[:, :, -1], 5.0, atol=1e-12, rtol=0)


def test_learned_endpoints_are_params_and_exact():
    schedule = make(learn_endpoints=True, gamma_min=-10.0, gamma_max=7.0)
    assert isinstance(schedule.gamma_min, nnx.Param) and isinstance(schedule.gamma_max, nnx.Param)
    np.testing.assert_allclose([schedule.gamma_min[...], schedule.gamma_max[...]], [-10.0, 7.0])
    t, context = grid_and_contexts(1, 2)
    for gamma_min, gamma_max in [(-10.0, 7.0), (-12.25, 3.5), (-20.0, 11.0)]:
        set_endpoints(schedule, gamma_min, gamma_max)
        gamma = np.asarray(apply(schedule, t, context)).reshape((2, GRID) + EVENT)
        np.testing.assert_allclose(gamma[:, 0], gamma_min, atol=1e-5, rtol=0)
        np.testing.assert_allclose(gamma[:, -1], gamma_max, atol=1e-5, rtol=0)
    # The endpoints receive gradients; the fixed-endpoint version has no such parameters.
    grads = nnx.jit(nnx.grad(lambda m: m(t[:5], context[:5]).sum()))(schedule)
    assert float(grads["gamma_max"][...]) != 0.0
    fixed = make()
    assert not any("gamma" in str(path) for path, _ in jax.tree_util.tree_flatten_with_path(nnx.state(fixed))[0])


def test_closed_form_jvp_matches_plain_formula_in_every_argument(x64):
    """Tangents w.r.t. t, a, b, d, gamma_min and gamma_max agree with autodiff of the monomial form."""
    rng = np.random.default_rng(3)
    shape = (64, 5)
    t = np.concatenate([[[0.0], [1.0]], rng.uniform(size=(62, 1))])
    primals = [jnp.asarray(x) for x in [t] + [2.0 * rng.standard_normal(shape) for _ in range(3)] + [-13.3, 5.0]]
    tangents = [jnp.asarray(rng.standard_normal(np.shape(p))) for p in primals]

    def ours(t, a, b, d, lo, hi):
        return polynomial_gamma(t, a, b, d, gamma_min=lo, gamma_max=hi)

    @jax.jit
    def compare(primals, tangents):
        return jax.jvp(ours, primals, tangents), jax.jvp(plain_polynomial, primals, tangents)

    (got, got_dot), (want, want_dot) = compare(primals, tangents)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got_dot, want_dot, rtol=1e-5, atol=1e-9)
    # The time derivative alone is the closed form (gamma_max - gamma_min) q(t)^2 / f(1).
    a, b, d = primals[1:4]
    _, rate = jax.jit(lambda t: jax.jvp(lambda s: ours(s, a, b, d, -13.3, 5.0), (t,), (jnp.ones_like(t),)))(t)
    f1 = a**2 / 5 + a * b / 2 + (b**2 + 2 * a * d) / 3 + b * d + d**2
    np.testing.assert_allclose(rate, 18.3 * (a * t**2 + b * t + d) ** 2 / f1, rtol=1e-10)


def test_module_tangents_and_gradients_wrt_network_parameters(x64):
    """jvp w.r.t. the head's parameters, and the gradient of a loss built from d gamma/dt, match the plain form."""
    schedule = make(learn_endpoints=True, param_dtype=jnp.float64)
    graphdef, params = nnx.split(schedule, nnx.Param)
    t = jnp.linspace(0.0, 1.0, 9, dtype=jnp.float64)
    context = normal(2, (9, CONTEXT_DIM), jnp.float64)
    direction = random_param_state(schedule, 4, 1.0)

    def gamma_of(params, plain):
        module = nnx.merge(graphdef, params)
        return plain_schedule(module, t, context) if plain else module(t, context)

    def rate_loss(params, plain):
        module = nnx.merge(graphdef, params)
        fn = (lambda s: plain_schedule(module, s, context)) if plain else (lambda s: module(s, context))
        gamma, rate = jax.jvp(fn, (t,), (jnp.ones_like(t),))
        return jnp.sum(rate * jnp.cos(gamma))

    @jax.jit
    def run(params, direction):
        tangents = [jax.jvp(lambda p, plain=plain: gamma_of(p, plain), (params,), (direction,)) for plain in (0, 1)]
        grads = [jax.grad(rate_loss)(params, plain) for plain in (0, 1)]
        return tangents, grads

    ((got, got_dot), (want, want_dot)), (got_grad, want_grad) = run(params, direction)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(got_dot, want_dot, rtol=1e-5, atol=1e-9)
    for g, w in zip(jax.tree.leaves(got_grad), jax.tree.leaves(want_grad)):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-9)


def test_output_shape_is_the_data_shape_and_scalar_event_is_per_example(schedule):
    t = jnp.array([0.1, 0.5, 0.9])
    context = normal(0, (3, CONTEXT_DIM))
    assert jax.eval_shape(schedule, t, context).shape == (3, *EVENT)
    scalar = Polynomial((), context_dim=CONTEXT_DIM, hidden_width=8, rngs=nnx.Rngs(0))
    assert jax.eval_shape(scalar, t, context).shape == (3,)
    a, b, d = jax.jit(lambda c: schedule.coefficients(c, 3))(context)
    assert a.shape == b.shape == d.shape == (3, *EVENT)
    assert float(jnp.min(d)) >= schedule.d_min


def test_finite_values_and_gradients_at_both_ends_float32():
    schedule = make(learn_endpoints=True, gamma_min=-30.0, gamma_max=30.0)
    graphdef, params = nnx.split(schedule, nnx.Param)
    params = random_param_state(schedule, 5, 3.0)
    t = jnp.array([0.0, 1.0, 0.0, 1.0])
    context = 10.0 * normal(6, (4, CONTEXT_DIM))

    @jax.jit
    def run(params, t):
        def loss(params, t):
            gamma, rate = jax.jvp(lambda s: nnx.merge(graphdef, params)(s, context), (t,), (jnp.ones_like(t),))
            return jnp.sum(rate * jax.nn.sigmoid(gamma)), (gamma, rate)

        (_, (gamma, rate)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, t)
        return gamma, rate, grads

    gamma, rate, grads = run(params, t)
    for leaf in [gamma, rate, *jax.tree.leaves(grads)]:
        assert leaf.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(leaf)))
    np.testing.assert_array_equal(np.asarray(gamma)[::2], -30.0)
    np.testing.assert_array_equal(np.asarray(gamma)[1::2], 30.0)


def test_degenerate_coefficients_fall_back_to_linear_with_finite_gradients():
    zeros = jnp.zeros((3, 2))
    t = jnp.array([[0.0], [0.25], [1.0]])

    @jax.jit
    def run(a, b, d):
        gamma = polynomial_gamma(t, a, b, d)
        return gamma, jax.grad(lambda *c: polynomial_gamma(t, *c).sum(), argnums=(0, 1, 2))(a, b, d)

    gamma, grads = run(zeros, zeros, zeros)
    np.testing.assert_allclose(gamma, np.broadcast_to(-13.3 + 18.3 * np.asarray(t), (3, 2)), atol=1e-5)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_free_coefficients_without_context_start_linear():
    schedule = Polynomial(EVENT, context_dim=None, rngs=nnx.Rngs(0))
    assert schedule.a[...].shape == schedule.b[...].shape == schedule.d_raw[...].shape == EVENT
    t = jnp.linspace(0.0, 1.0, 5)
    gamma = apply(schedule, t, None)  # no context needed; one is ignored if given
    np.testing.assert_allclose(gamma, np.broadcast_to(apply(FixedLinear(), t)[:, None, None], (5, *EVENT)),
                               atol=1e-5)
    np.testing.assert_array_equal(apply(schedule, t, jnp.ones((5, 7))), gamma)


def test_default_head_matches_mulan_layout_and_size():
    """Two swish layers of 3072 and a linear map to 3 x 3072 numbers: ~37.9M parameters for CIFAR-10."""
    abstract = nnx.eval_shape(lambda: PolynomialHead(50, (32, 32, 3), rngs=nnx.Rngs(0)))
    count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
    assert count == (50 * 3072 + 3072) + (3072 * 3072 + 3072) + (3072 * 9216 + 9216)
    head = PolynomialHead(CONTEXT_DIM, EVENT, hidden_width=8, rngs=nnx.Rngs(0))
    raw = nnx.jit(lambda m, c: m(c))(head, normal(0, (5, CONTEXT_DIM)))
    assert raw.shape == (5, 3 * 6)
    np.testing.assert_array_equal(raw[:, :6], 0.0)  # the `a` block starts at zero (MuLAN's init)
    assert float(jnp.std(raw[:, 6:])) > 0.0


def test_custom_head_is_used():
    head = nnx.Linear(CONTEXT_DIM, 3 * 6, rngs=nnx.Rngs(1))
    schedule = Polynomial(EVENT, context_dim=CONTEXT_DIM, head=head, rngs=nnx.Rngs(0))
    assert schedule.head is head
    context = normal(0, (4, CONTEXT_DIM))
    t = jnp.linspace(0.0, 1.0, 4)
    raw = nnx.jit(lambda m, c: m(c))(head, context).reshape(4, 3, *EVENT)
    want = jax.jit(polynomial_gamma)(t[:, None, None], raw[:, 0], raw[:, 1], 1e-3 + jax.nn.softplus(raw[:, 2]))
    np.testing.assert_allclose(apply(schedule, t, context), want, rtol=1e-6)


def test_errors_name_the_call_and_argument(schedule):
    t = jnp.array([0.2, 0.4])
    with pytest.raises(ValueError, match="`Polynomial`: `context` is None"):
        schedule(t, None)
    with pytest.raises(ValueError, match=r"`Polynomial`: `context` must have shape \(batch, context_dim\) = \(2, 4\)"):
        schedule(t, jnp.ones((2, 5)))
    with pytest.raises(ValueError, match=r"`Polynomial`: `t` must have shape \(batch,\)"):
        schedule(t[:, None], jnp.ones((2, CONTEXT_DIM)))
    with pytest.raises(ValueError, match="`Polynomial`: `gamma_min` must be less than `gamma_max`"):
        make(gamma_min=5.0, gamma_max=-13.3)
    with pytest.raises(ValueError, match="`Polynomial`: `gamma_min` must be less than `gamma_max`"):
        make(gamma_min=1.0, gamma_max=1.0)
    with pytest.raises(ValueError, match="`Polynomial`: a `head` maps a context"):
        Polynomial(EVENT, context_dim=None, head=nnx.Linear(2, 18, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(0))
    bad_head = Polynomial(EVENT, context_dim=CONTEXT_DIM, head=nnx.Linear(CONTEXT_DIM, 5, rngs=nnx.Rngs(0)),
                          rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`Polynomial`: `head` must map .* to shape \(batch, 3 \* prod"):
        bad_head(t, jnp.ones((2, CONTEXT_DIM)))
    with pytest.raises(ValueError, match="`Polynomial`: `event_shape`"):
        Polynomial((2, 0), context_dim=None, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`Polynomial`: `d_min`"):
        make(d_min=-1.0)


def test_jit_via_nnx_jit_and_split_merge(schedule):
    t = jnp.linspace(0.0, 1.0, 6)
    context = normal(0, (6, CONTEXT_DIM))
    eager = schedule(t, context)
    graphdef, state = nnx.split(schedule)
    # Compiled and op-by-op float32 differ by rounding (a few ulps of |gamma_min|).
    np.testing.assert_allclose(jax.jit(lambda s, x, c: nnx.merge(graphdef, s)(x, c))(state, t, context), eager,
                               rtol=0, atol=2e-5)
    np.testing.assert_allclose(nnx.jit(lambda m, x, c: m(x, c))(schedule, t, context), eager, rtol=0, atol=2e-5)
