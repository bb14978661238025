"""Bad input gets a ValueError naming the argument (DESIGN.md §5), in both backends and in ``core``.

Static facts (shapes, ranks, Python hyper-parameters) are checked always; data values (NaN, integers outside
[0, V)) eagerly when concrete, and under ``jit`` only with ``validate_args=True``, through ``equinox.error_if``.
What reaches the caller of a plain ``jax.jit`` function is ``jax.errors.JaxRuntimeError`` (a ``RuntimeError``)
carrying the message when the failing call compiles, and possibly a ``ValueError`` with the same message when a cached
executable fails on JAX's fast path; under ``equinox.filter_jit`` it is always ``equinox.EquinoxRuntimeError``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mulan_ppl.distrax as mdx
import mulan_ppl.numpyro as mnp
from mulan_ppl import _validation as v
from mulan_ppl import core

BACKENDS = {"distrax": mdx, "numpyro": mnp}
B, D = 2, 3
DATA = jnp.linspace(-1.0, 1.0, B * D).reshape(B, D)


def _build(mod, cls_name, **overrides):
    """Builds ``cls_name`` with valid (B, D) arguments, replacing those in ``overrides``."""
    z, g0, g1 = DATA, jnp.asarray(-1.0), jnp.asarray(1.0)
    defaults = {
        "ForwardMarginal": dict(x=DATA, gamma=g1),
        "ForwardTransition": dict(z_s=z, gamma_s=g0, gamma_t=g1),
        "TopDownPosterior": dict(z_t=z, x=0.5 * DATA, gamma_s=g0, gamma_t=g1),
        "ReverseTransition": dict(z_t=z, x_hat=0.5 * DATA, gamma_s=g0, gamma_t=g1),
        "from_prediction": dict(z_t=z, prediction=0.5 * DATA, gamma_s=g0, gamma_t=g1),
        "from_noise": dict(x=DATA, eps=0.5 * DATA, gamma_s=g0, gamma_t=g1),
        "DiscretizedGaussianDecoder": dict(z_0=DATA, gamma_0=jnp.asarray(-5.0), vocab_size=4),
    }[cls_name]
    kwargs = {**defaults, **overrides}
    validate_args = kwargs.pop("validate_args", False)
    if cls_name == "from_prediction":
        return mod.ReverseTransition.from_prediction(*kwargs.values(), parameterization="eps",
                                                     validate_args=validate_args)
    if cls_name == "from_noise":
        return mod.TopDownPosterior.from_noise(*kwargs.values())
    return getattr(mod, cls_name)(*kwargs.values(), validate_args=validate_args)


# ---------------------------------------------------------------------------------------------------------------
# Shapes

SHAPE_ERRORS = [
    # (class, argument, bad value)
    ("ForwardMarginal", "gamma", jnp.zeros(B)),  # a per-example (batch,) gamma against (batch, D) data
    ("ForwardMarginal", "gamma", jnp.zeros(D)),  # right-aligned broadcasting is refused too
    ("ForwardMarginal", "gamma", jnp.zeros((B, 2))),
    ("ForwardMarginal", "gamma", jnp.zeros((1, B, D))),
    ("ForwardTransition", "gamma_s", jnp.zeros(B)),
    ("ForwardTransition", "gamma_t", jnp.zeros(B)),
    ("TopDownPosterior", "x", jnp.zeros((B, 2))),
    ("TopDownPosterior", "x", jnp.zeros(D)),
    ("TopDownPosterior", "gamma_s", jnp.zeros(B)),
    ("TopDownPosterior", "gamma_t", jnp.zeros((B, D, 1))),
    ("ReverseTransition", "x_hat", jnp.zeros((B, 2))),
    ("ReverseTransition", "gamma_t", jnp.zeros(B)),
    ("from_prediction", "prediction", jnp.zeros((B, 1))),
    ("from_prediction", "gamma_s", jnp.zeros(B)),
    ("from_noise", "eps", jnp.zeros((1, D))),
    ("from_noise", "gamma_t", jnp.zeros(B)),
    ("DiscretizedGaussianDecoder", "gamma_0", jnp.zeros(B)),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls_name,arg,bad", SHAPE_ERRORS,
                         ids=[f"{c}-{a}-{tuple(b.shape)}" for c, a, b in SHAPE_ERRORS])
def test_mismatched_shapes_raise_naming_the_argument(backend, cls_name, arg, bad):
    with pytest.raises(ValueError, match=rf"`{arg}`.*{arg}\.shape="):
        _build(BACKENDS[backend], cls_name, **{arg: bad})


@pytest.mark.parametrize("backend", BACKENDS)
def test_eps_shape_checked_by_posterior(backend):
    with pytest.raises(ValueError, match=r"`eps`.*eps\.shape=\(2,\)"):
        BACKENDS[backend].TopDownPosterior(DATA, DATA, -1.0, 1.0, eps=jnp.zeros(B))


@pytest.mark.parametrize("backend", BACKENDS)
def test_shape_checks_hold_under_jit(backend):
    """Shapes are static facts: checked at trace time as well."""
    mod = BACKENDS[backend]
    with pytest.raises(ValueError, match="`gamma`"):
        jax.jit(lambda x, g: mod.ForwardMarginal(x, g).mean)(DATA, jnp.zeros(B))


@pytest.mark.parametrize("backend", BACKENDS)
def test_broadcastable_noise_levels_accepted(backend):
    mod = BACKENDS[backend]
    for gamma in (jnp.asarray(0.3), jnp.full((B, 1), 0.3), jnp.full((1, D), 0.3), jnp.full((B, D), 0.3)):
        d = mod.ForwardMarginal(DATA, gamma)
        assert (tuple(d.batch_shape), tuple(d.event_shape)) == ((B,), (D,))


# ---------------------------------------------------------------------------------------------------------------
# Python hyper-parameters


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("vocab_size", [1, 0, -3, 2.5, True, "256", None])
def test_vocab_size_must_be_an_integer_at_least_two(backend, vocab_size):
    with pytest.raises(ValueError, match="`vocab_size` must be an integer >= 2"):
        _build(BACKENDS[backend], "DiscretizedGaussianDecoder", vocab_size=vocab_size)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls_name", ["ForwardMarginal", "TopDownPosterior", "DiscretizedGaussianDecoder"])
@pytest.mark.parametrize("event_ndims", [3, -1])
def test_bad_event_ndims(backend, cls_name, event_ndims):
    mod = BACKENDS[backend]
    args = {"ForwardMarginal": (DATA, 0.0), "TopDownPosterior": (DATA, DATA, -1.0, 1.0),
            "DiscretizedGaussianDecoder": (DATA, -5.0, 4)}[cls_name]
    with pytest.raises(ValueError, match=rf"`event_ndims` must be in \[0, 2\].*event_ndims={event_ndims}"):
        getattr(mod, cls_name)(*args, event_ndims=event_ndims)


@pytest.mark.parametrize("backend", BACKENDS)
def test_event_ndims_must_be_an_int(backend):
    with pytest.raises(TypeError, match="`event_ndims` must be an int"):
        BACKENDS[backend].ForwardMarginal(DATA, 0.0, event_ndims=1.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("parameterization", ["noise", "X", "", None])
def test_unknown_parameterization(backend, parameterization):
    with pytest.raises(ValueError, match=r"`parameterization` must be one of \('eps', 'v', 'x', 'score'\)"):
        BACKENDS[backend].ReverseTransition.from_prediction(DATA, DATA, -1.0, 1.0, parameterization=parameterization)


def test_core_per_step_kl_unknown_parameterization():
    with pytest.raises(ValueError, match="`parameterization`"):
        core.per_step_kl(DATA, DATA, -1.0, 1.0, DATA, parameterization="noise")


# ---------------------------------------------------------------------------------------------------------------
# Types


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", [jnp.zeros((B, D), jnp.complex64), jnp.zeros((B, D), bool), "data"])
def test_non_real_arrays_raise_type_error(backend, bad):
    with pytest.raises(TypeError, match="`x`"):
        BACKENDS[backend].ForwardMarginal(bad, 0.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_integer_arrays_become_float(backend):
    d = BACKENDS[backend].ForwardMarginal(jnp.arange(B * D).reshape(B, D), 0)
    m = d.mean() if callable(d.mean) else d.mean
    assert m.dtype == jnp.float32


# ---------------------------------------------------------------------------------------------------------------
# Values: NaN inputs

NAN_ARGS = [
    ("ForwardMarginal", "x"), ("ForwardMarginal", "gamma"),
    ("ForwardTransition", "z_s"), ("ForwardTransition", "gamma_s"), ("ForwardTransition", "gamma_t"),
    ("TopDownPosterior", "z_t"), ("TopDownPosterior", "x"), ("TopDownPosterior", "gamma_s"),
    ("TopDownPosterior", "gamma_t"),
    ("ReverseTransition", "z_t"), ("ReverseTransition", "x_hat"), ("ReverseTransition", "gamma_t"),
    ("from_prediction", "prediction"), ("from_prediction", "gamma_s"),
    ("from_noise", "x"), ("from_noise", "eps"), ("from_noise", "gamma_t"),
    ("DiscretizedGaussianDecoder", "z_0"), ("DiscretizedGaussianDecoder", "gamma_0"),
]


def _with_nan(cls_name, arg):
    value = {"gamma": 1.0, "gamma_s": -1.0, "gamma_t": 1.0, "gamma_0": -5.0}.get(arg)
    if value is None:
        return DATA.at[1, 2].set(jnp.nan)
    return jnp.full((B, 1), value).at[B - 1, 0].set(jnp.nan)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls_name,arg", NAN_ARGS, ids=[f"{c}-{a}" for c, a in NAN_ARGS])
def test_nan_input_raises_eagerly(backend, cls_name, arg):
    with pytest.raises(ValueError, match=f"`{arg}` contains NaN"):
        _build(BACKENDS[backend], cls_name, **{arg: _with_nan(cls_name, arg)})


# One data array and one noise level per constructor (from_noise takes no validate_args).
JIT_NAN_ARGS = [("ForwardMarginal", "x"), ("ForwardTransition", "gamma_t"), ("TopDownPosterior", "z_t"),
                ("ReverseTransition", "x_hat"), ("from_prediction", "gamma_s"), ("DiscretizedGaussianDecoder", "z_0")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls_name,arg", JIT_NAN_ARGS, ids=[f"{c}-{a}" for c, a in JIT_NAN_ARGS])
def test_nan_input_under_jit_with_validate_args(backend, cls_name, arg):
    mod = BACKENDS[backend]

    def mean_of(value):
        d = _build(mod, cls_name, **{arg: value}, validate_args=True)
        return d.mean() if callable(d.mean) else d.mean

    with pytest.raises(jax.errors.JaxRuntimeError, match=f"`{arg}` contains NaN"):
        jax.block_until_ready(jax.jit(mean_of)(_with_nan(cls_name, arg)))


def test_nan_under_equinox_filter_jit_raises_equinox_runtime_error():
    with pytest.raises(eqx.EquinoxRuntimeError, match="`x` contains NaN"):
        jax.block_until_ready(eqx.filter_jit(lambda x: mdx.ForwardMarginal(x, 0.0, validate_args=True).mean())(
            DATA.at[0, 0].set(jnp.nan)))


# ---------------------------------------------------------------------------------------------------------------
# Values: integer data of the decoder


BAD_INTEGERS = [jnp.full((B, D), 4), jnp.full((B, D), -1), jnp.full((B, D), 1.5), jnp.full((B, D), jnp.nan),
                jnp.zeros((B, D), int).at[B - 1, 2].set(7)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bad", BAD_INTEGERS, ids=["V", "-1", "1.5", "nan", "one_entry"])
def test_decoder_value_outside_vocabulary_raises_eagerly(backend, bad):
    d = _build(BACKENDS[backend], "DiscretizedGaussianDecoder")
    with pytest.raises(ValueError, match=r"`value` must hold integers in \[0, 4\)"):
        d.log_prob(bad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_value_outside_vocabulary_under_jit_with_validate_args(backend):
    """What a caller catches: under ``jax.jit`` a ``JaxRuntimeError`` when the failing call is the one that compiles,
    and either that or a ``ValueError`` (same message) once the executable is cached, depending on JAX's dispatch
    path; under ``equinox.filter_jit`` always ``equinox.EquinoxRuntimeError``."""
    message = r"`value` must hold integers in \[0, 4\)"
    d = _build(BACKENDS[backend], "DiscretizedGaussianDecoder", validate_args=True)
    first_call_fails = jax.jit(lambda dist, x: dist.log_prob(x))
    with pytest.raises(jax.errors.JaxRuntimeError, match=message):
        jax.block_until_ready(first_call_fails(d, jnp.full((B, D), 4)))
    log_prob = jax.jit(lambda dist, x: dist.log_prob(x))
    assert log_prob(d, jnp.full((B, D), 3)).shape == (B,)  # in range: runs (and caches the executable)
    for bad in (jnp.full((B, D), 4), jnp.zeros((B, D), int).at[0, 1].set(-2), jnp.full((B, D), 5)):
        with pytest.raises((ValueError, jax.errors.JaxRuntimeError), match=message):
            jax.block_until_ready(log_prob(d, bad))
    filtered = eqx.filter_jit(lambda dist, x: dist.log_prob(x))
    for x in (jnp.full((B, D), 4), jnp.full((B, D), 2), jnp.full((B, D), -1)):
        if int(x[0, 0]) == 2:
            assert filtered(d, x).shape == (B,)
            continue
        with pytest.raises(eqx.EquinoxRuntimeError, match=message):
            jax.block_until_ready(filtered(d, x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_decoder_value_type(backend):
    d = _build(BACKENDS[backend], "DiscretizedGaussianDecoder")
    with pytest.raises(TypeError, match="`value`"):
        d.log_prob(jnp.zeros((B, D), bool))


# ---------------------------------------------------------------------------------------------------------------
# The shared checks in mulan_ppl._validation


def test_check_broadcasts_to():
    v.check_broadcasts_to("f", "g", jnp.zeros(()), (2, 3), "x")
    v.check_broadcasts_to("f", "g", jnp.zeros((2, 1)), (2, 3), "x")
    v.check_broadcasts_to("f", "g", jnp.zeros((1, 3)), (2, 3), "x")
    with pytest.raises(ValueError, match=r"^`f`: `g` must be a scalar.*g\.shape=\(2,\), x\.shape=\(2, 3\)"):
        v.check_broadcasts_to("f", "g", jnp.zeros(2), (2, 3), "x")
    with pytest.raises(ValueError, match="Reshape a per-example `g` of shape"):
        v.check_broadcasts_to("f", "g", jnp.zeros(3), (2, 3), "x")


def test_check_same_shape():
    assert v.check_same_shape("f", a=jnp.zeros((2, 3)), b=jnp.ones((2, 3)), c=None) == (2, 3)
    with pytest.raises(ValueError, match=r"`b` must have the same shape as `a`; got a\.shape=\(2, 3\), "
                                         r"b\.shape=\(3,\)"):
        v.check_same_shape("f", a=jnp.zeros((2, 3)), b=jnp.zeros(3))


def test_event_ndims_for():
    assert v.event_ndims_for("f", (2, 3, 4), None) == 2
    assert v.event_ndims_for("f", (), None) == 0
    assert v.event_ndims_for("f", (2, 3), np.int64(1)) == 1
    with pytest.raises(ValueError, match="event_ndims"):
        v.event_ndims_for("f", (2, 3), 3)
    with pytest.raises(TypeError, match="event_ndims"):
        v.event_ndims_for("f", (2, 3), True)


def test_check_positive_int_and_one_of_and_in_range():
    assert v.check_positive_int("f", "k", np.int32(3)) == 3
    with pytest.raises(ValueError, match="`k` must be an integer >= 1; got k=0"):
        v.check_positive_int("f", "k", 0)
    with pytest.raises(ValueError, match=r"`mode` must be one of \('a', 'b'\); got 'c'"):
        v.check_one_of("f", "mode", "c", ("a", "b"))
    v.check_in_range("f", "range", -1.0, 1.0)
    for low, high in ((1.0, 1.0), (2.0, 1.0), (-np.inf, 1.0), (0.0, np.nan)):
        with pytest.raises(ValueError, match="`range` must satisfy low < high"):
            v.check_in_range("f", "range", low, high)


def test_is_concrete_and_integer_data_under_tracing():
    x = jnp.asarray([0, 1, 2])
    assert v.is_concrete(x, None)
    assert jax.jit(lambda a: jnp.asarray(v.is_concrete(a)))(x).item() is False
    # Traced without validate_args: returned unchanged and unchecked (the documented fast path).
    out = jax.jit(lambda a: v.check_integer_data("f", "x", a, 2))(jnp.asarray([5]))
    np.testing.assert_array_equal(out, [5])
    with pytest.raises(jax.errors.JaxRuntimeError, match=r"`x` must hold integers in \[0, 2\)"):
        jax.block_until_ready(jax.jit(lambda a: v.check_integer_data("f", "x", a, 2, validate_args=True))(
            jnp.asarray([5])))


def test_as_float_array():
    assert v.as_float_array(3, "a", "f").dtype == jnp.float32
    assert v.as_float_array(jnp.zeros(2, jnp.float16), "a", "f").dtype == jnp.float16
    with jax.enable_x64(True):
        assert v.as_float_array(np.zeros(2), "a", "f").dtype == jnp.float64
    with pytest.raises(TypeError, match="`a` must be real-valued; got dtype bool"):
        v.as_float_array(np.zeros(2, bool), "a", "f")
    with pytest.raises(TypeError, match="`a` must be an array; got object"):
        v.as_float_array(object(), "a", "f")
