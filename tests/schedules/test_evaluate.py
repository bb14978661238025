"""evaluate_schedule and gamma_and_derivative: the shape contract for any schedule callable, and jvp derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from mulan_ppl.schedules import FixedLinear, Polynomial, evaluate_schedule, gamma_and_derivative

B = 3
EVENT = (2, 4)
T = jnp.array([0.0, 0.5, 1.0])


def constant_shape(shape, dtype=jnp.float32):
    """A callable returning zeros of a fixed shape, whatever t is."""
    return lambda t, context: jnp.zeros(shape, dtype)


@pytest.mark.parametrize("out_shape,want", [
    ((B,), (B, 1, 1)),
    ((B, *EVENT), (B, *EVENT)),
    ((B, 1, 4), (B, 1, 4)),
    ((B, 2, 1), (B, 2, 1)),
    ((B, 1, 1), (B, 1, 1)),
])
def test_accepted_output_shapes(out_shape, want):
    gamma = evaluate_schedule(constant_shape(out_shape), T, None, EVENT)
    assert gamma.shape == want


def test_scalar_output_is_reshaped_not_broadcast():
    gamma = evaluate_schedule(FixedLinear(), T, None, EVENT)
    assert gamma.shape == (B, 1, 1)
    np.testing.assert_allclose(gamma[:, 0, 0], [-13.3, -4.15, 5.0], rtol=1e-6)
    assert evaluate_schedule(FixedLinear(), T, None, ()).shape == (B,)


@pytest.mark.parametrize("out_shape", [(B, 8), (B + 1,), (B, 2, 3), (B, 2, 4, 1), (1, 2, 4), (), (B, 4, 2)])
def test_rejected_output_shapes_name_gamma_fn(out_shape):
    with pytest.raises(ValueError, match=r"`evaluate_schedule`: `gamma_fn` must return gamma of shape \(batch,\)"):
        evaluate_schedule(constant_shape(out_shape), T, None, EVENT)


def test_other_errors():
    with pytest.raises(ValueError, match="`evaluate_schedule`: `gamma_fn` must return floating gamma"):
        evaluate_schedule(constant_shape((B,), jnp.int32), T, None, EVENT)
    with pytest.raises(ValueError, match=r"`evaluate_schedule`: `t` must have shape \(batch,\)"):
        evaluate_schedule(FixedLinear(), T[:, None], None, EVENT)
    with pytest.raises(ValueError, match=r"`gamma_and_derivative`: `t` must have shape \(batch,\)"):
        gamma_and_derivative(FixedLinear(), jnp.float32(0.5), None, EVENT)
    with pytest.raises(TypeError, match="`evaluate_schedule`: `gamma_fn` must be callable"):
        evaluate_schedule("linear", T, None, EVENT)
    with pytest.raises(ValueError, match="`evaluate_schedule`: `event_shape`"):
        evaluate_schedule(FixedLinear(), T, None, (2, -1))
    # A conditioned schedule's own context check surfaces unchanged.
    schedule = Polynomial(EVENT, context_dim=2, hidden_width=4, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="`Polynomial`: `context` is None"):
        evaluate_schedule(schedule, T, None, EVENT)


def test_gamma_and_derivative_uses_the_custom_jvp_rule():
    """A closed form attached with custom_jvp is what the ELBO sees, not autodiff of the values."""

    @jax.custom_jvp
    def marked(t):
        return -13.3 + 18.3 * t

    @marked.defjvp
    def _(primals, tangents):
        (t,), (t_dot,) = primals, tangents
        return marked(t), 42.0 * t_dot  # deliberately not the autodiff derivative 18.3

    gamma, rate = gamma_and_derivative(lambda t, c: marked(t), T, None, EVENT)
    assert gamma.shape == rate.shape == (B, 1, 1)
    np.testing.assert_allclose(rate, 42.0)
    _, linear_rate = gamma_and_derivative(FixedLinear(), T, None, EVENT)
    np.testing.assert_allclose(linear_rate, 18.3, rtol=1e-6)


def test_gamma_and_derivative_per_dimension_under_jit():
    schedule = Polynomial(EVENT, context_dim=2, hidden_width=4, rngs=nnx.Rngs(0))
    context = jnp.ones((B, 2))
    gamma, rate = nnx.jit(lambda m, t, c: gamma_and_derivative(m, t, c, EVENT))(schedule, T, context)
    assert gamma.shape == rate.shape == (B, *EVENT)
    a, b, d = schedule.coefficients(context, B)
    f1 = a**2 / 5 + a * b / 2 + (b**2 + 2 * a * d) / 3 + b * d + d**2
    t = T[:, None, None]
    np.testing.assert_allclose(rate, 18.3 * (a * t**2 + b * t + d) ** 2 / f1, rtol=1e-4)
