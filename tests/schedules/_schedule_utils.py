"""Shared pieces of the schedule tests: compiled calls, random parameter draws, learned-endpoint overwrites.

Everything is compiled: op-by-op evaluation of a schedule costs a small compilation per primitive and shape, which
dominates the run time of these tests.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

ENDPOINT_NAMES = ("gamma_min", "gamma_max")


@functools.partial(jax.jit, static_argnums=0)
def _apply(graphdef, state, t, context):
    return nnx.merge(graphdef, state)(t, context)


@functools.partial(jax.jit, static_argnums=0)
def _apply_with_rate(graphdef, state, t, context):
    return jax.jvp(lambda s: nnx.merge(graphdef, state)(s, context), (t,), (jnp.ones_like(t),))


def apply(module, t, context=None):
    """``module(t, context)``, compiled (one compilation per module structure and input shapes)."""
    return _apply(*nnx.split(module), t, context)


def apply_with_rate(module, t, context=None):
    """``(gamma, d gamma / dt)`` by ``jax.jvp`` in ``t``, compiled."""
    return _apply_with_rate(*nnx.split(module), t, context)


def _names(path):
    return [str(getattr(k, "key", getattr(k, "name", k))) for k in path]


def random_param_state(module, seed, scale):
    """A copy of ``module``'s ``nnx.Param`` state with every non-endpoint leaf drawn from N(0, scale^2).

    Drawn with NumPy (``seed`` an int), which needs no compilation.
    """
    rng = np.random.default_rng(seed)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(nnx.state(module, nnx.Param))
    new = []
    for path, leaf in leaves:
        if any(name in ENDPOINT_NAMES for name in _names(path)):
            new.append(leaf)
        else:
            new.append(jnp.asarray(scale * rng.standard_normal(np.shape(leaf)), dtype=jnp.result_type(leaf)))
    return jax.tree_util.tree_unflatten(treedef, new)


def normal(seed, shape, dtype=jnp.float32):
    """Standard normal draws from NumPy as a JAX array (no compilation, unlike ``jax.random``)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def set_endpoints(module, gamma_min, gamma_max):
    """Overwrites learned endpoint parameters in place."""
    module.gamma_min[...] = jnp.asarray(gamma_min, module.gamma_min[...].dtype)
    module.gamma_max[...] = jnp.asarray(gamma_max, module.gamma_max[...].dtype)


def rounding_floor(values, dtype=np.float32):
    """Largest dip that rounding alone can produce between neighbouring values: 16 ulps of max |value|."""
    return 16.0 * np.finfo(dtype).eps * float(np.max(np.abs(values)))
