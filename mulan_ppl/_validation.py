"""Argument checks shared by every public entry point.

Three tiers (see DESIGN.md §5):

* static facts — shapes, ranks, dtypes, Python hyper-parameters — are checked always, at construction or trace
  time, and raise :class:`ValueError` (or :class:`TypeError` for a wrong type) naming the public call and the argument;
* data values — integers outside ``[0, V)``, NaN (and Inf where it is no valid limit), times outside [0, 1] — are
  checked eagerly when the array is concrete;
* under ``jit`` the same value checks run only with ``validate_args=True``, through :func:`equinox.error_if`. The
  error comes when the compiled function runs: ``equinox.EquinoxRuntimeError`` under ``equinox.filter_jit`` (the
  readable form), ``jax.errors.JaxRuntimeError`` (or a ``ValueError`` carrying the same message) under ``jax.jit``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "as_float_array",
    "check_broadcastable",
    "check_broadcasts_to",
    "check_in_range",
    "check_integer_data",
    "check_key",
    "check_one_of",
    "check_positive_int",
    "check_same_shape",
    "check_shape_tuple",
    "check_values",
    "event_ndims_for",
    "float_inputs",
    "is_concrete",
]


def is_concrete(*arrays) -> bool:
    """True when none of ``arrays`` is a tracer (the values can be inspected now)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays if a is not None)


def as_float_array(value, name: str, where: str, dtype=None) -> jax.Array:
    """Converts ``value`` to a floating jnp array (keeping float64 when enabled), or raises ``TypeError``."""
    try:
        array = jnp.asarray(value)
    except TypeError as err:
        raise TypeError(f"`{where}`: `{name}` must be an array; got {type(value).__name__}.") from err
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)):
        raise TypeError(f"`{where}`: `{name}` must be real-valued; got dtype {array.dtype}.")
    if dtype is not None:
        return array.astype(dtype)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.result_type(float))
    return array


def check_broadcastable(where: str, **arrays) -> tuple[int, ...]:
    """Checks that the named arrays broadcast together (NumPy rules); returns the broadcast shape.

    The message names the first argument that does not broadcast against the ones before it.
    """
    items = [(k, tuple(jnp.shape(v))) for k, v in arrays.items() if v is not None]
    shape: tuple[int, ...] = ()
    for i, (name, value_shape) in enumerate(items):
        try:
            shape = tuple(np.broadcast_shapes(shape, value_shape))
        except ValueError:
            others = " and ".join(f"`{k}`" for k, _ in items[:i])
            listing = ", ".join(f"{k}.shape={s}" for k, s in items[: i + 1])
            raise ValueError(f"`{where}`: `{name}` must broadcast against {others}; got {listing}.") from None
    return shape


def check_values(where: str, validate_args: bool = False, *, allow_inf: Sequence[str] = (), **arrays) -> dict:
    """Checks that the named arrays hold no NaN and, except those named in ``allow_inf``, no +-Inf.

    Eager (``ValueError``) when every array is concrete; under tracing only with ``validate_args``, through one
    :func:`equinox.branched_error_if` (module docstring) tied to every returned array, so that using any of them runs
    the check of all (the message names the first bad argument). ``None`` entries pass through.
    """
    present = {k: v for k, v in arrays.items() if v is not None}
    if is_concrete(*present.values()):
        for name, value in present.items():
            values = np.asarray(value)
            if not np.issubdtype(values.dtype, np.inexact):
                continue
            if np.isnan(values).any():
                raise ValueError(f"`{where}`: `{name}` contains NaN.")
            if name not in allow_inf and np.isinf(values).any():
                raise ValueError(
                    f"`{where}`: `{name}` must be finite; got {int(np.isinf(values).sum())} infinite entries."
                )
        return arrays
    if not validate_args or not present:
        return arrays
    flags, messages = [], []
    for name, value in present.items():
        if name in allow_inf:
            flags.append(jnp.any(jnp.isnan(value)))
            messages.append(f"`{where}`: `{name}` contains NaN.")
        else:
            flags.append(jnp.any(~jnp.isfinite(value)))
            messages.append(f"`{where}`: `{name}` contains NaN or Inf; it must be finite.")
    flags = jnp.stack(flags)
    checked = eqx.branched_error_if(present, jnp.any(flags), jnp.argmax(flags), messages)
    return {k: checked.get(k) for k in arrays}


def float_inputs(where: str, **arrays) -> tuple[jax.Array, ...]:
    """The inputs of an elementwise ``core`` function: floating arrays (``TypeError`` otherwise) that broadcast
    together and, when concrete, hold no NaN (Inf is a legitimate limit there, e.g. a log-variance of -inf).

    Returns the converted arrays in the order given (``None`` for an absent optional one).
    """
    converted = {k: (None if v is None else as_float_array(v, k, where)) for k, v in arrays.items()}
    check_broadcastable(where, **converted)
    check_values(where, allow_inf=tuple(converted), **converted)
    return tuple(converted.values())


def check_key(where: str, key, name: str = "key"):
    """Checks a PRNG key: a typed key from ``jax.random.key`` (or a raw ``uint32`` key of shape ``(..., 2)``)."""
    dtype = getattr(key, "dtype", None)
    if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
        return key
    if dtype == jnp.uint32 and tuple(jnp.shape(key))[-1:] == (2,):
        return key
    got = type(key).__name__ if dtype is None else f"an array of dtype {dtype} and shape {tuple(jnp.shape(key))}"
    raise TypeError(f"`{where}`: `{name}` must be a PRNG key from jax.random.key(seed); got {got}.")


def check_shape_tuple(where: str, name: str, shape, *, min_ndim: int = 1, minimum: int = 1) -> tuple[int, ...]:
    """Checks a shape argument: a sequence of at least ``min_ndim`` Python ints ``>= minimum``; returns a tuple."""
    ok = isinstance(shape, Sequence) and not isinstance(shape, str) and len(shape) >= min_ndim and all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= minimum for s in shape)
    if not ok:
        raise ValueError(
            f"`{where}`: `{name}` must be a tuple of at least {min_ndim} ints >= {minimum}; got {name}={shape!r}."
        )
    return tuple(int(s) for s in shape)


def check_same_shape(where: str, **arrays) -> tuple[int, ...]:
    """Checks that every named array has the same shape; returns it."""
    items = [(k, tuple(jnp.shape(v))) for k, v in arrays.items() if v is not None]
    first_name, first_shape = items[0]
    for name, shape in items[1:]:
        if shape != first_shape:
            listing = ", ".join(f"{k}.shape={s}" for k, s in items)
            raise ValueError(
                f"`{where}`: `{name}` must have the same shape as `{first_name}`; got {listing}."
            )
    return first_shape


def check_broadcasts_to(where: str, name: str, value, shape: Sequence[int], target_name: str) -> None:
    """Checks that ``value`` is a scalar or has the rank of ``shape`` with each dimension equal or 1.

    Right-aligned broadcasting of a lower-rank array is refused on purpose: a ``(batch,)`` noise level against
    ``(batch, D)`` data would silently pair batch entries with data dimensions.
    """
    value_shape = tuple(jnp.shape(value))
    shape = tuple(shape)
    ok = value_shape == () or (
        len(value_shape) == len(shape) and all(v in (1, s) for v, s in zip(value_shape, shape))
    )
    if not ok:
        raise ValueError(
            f"`{where}`: `{name}` must be a scalar or have the rank of `{target_name}` with each dimension equal "
            f"to it or 1; got {name}.shape={value_shape}, {target_name}.shape={shape}. Reshape a per-example "
            f"`{name}` of shape (batch,) to (batch, 1, ..., 1)."
        )


def event_ndims_for(where: str, shape: Sequence[int], event_ndims: int | None) -> int:
    """Default ``event_ndims = ndim - 1``; checks an explicit one against the rank."""
    ndim = len(shape)
    if event_ndims is None:
        return max(ndim - 1, 0)
    if not isinstance(event_ndims, (int, np.integer)) or isinstance(event_ndims, bool):
        raise TypeError(f"`{where}`: `event_ndims` must be an int; got {type(event_ndims).__name__}.")
    if not 0 <= event_ndims <= ndim:
        raise ValueError(f"`{where}`: `event_ndims` must be in [0, {ndim}] for an array of shape {tuple(shape)}; "
                         f"got event_ndims={event_ndims}.")
    return int(event_ndims)


def check_positive_int(where: str, name: str, value, minimum: int = 1) -> int:
    """Checks a Python integer hyper-parameter ``value >= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{where}`: `{name}` must be an integer >= {minimum}; got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{where}`: `{name}` must be an integer >= {minimum}; got {name}={value}.")
    return int(value)


def check_one_of(where: str, name: str, value, options: Sequence[str]) -> str:
    """Checks a string mode against its closed set of values."""
    if value not in options:
        raise ValueError(f"`{where}`: `{name}` must be one of {tuple(options)}; got {value!r}.")
    return value


def check_in_range(where: str, name: str, low: float, high: float) -> None:
    """Checks two Python floats ``low < high`` (e.g. ``gamma_min < gamma_max``)."""
    if not (math.isfinite(low) and math.isfinite(high)) or not low < high:
        raise ValueError(f"`{where}`: `{name}` must satisfy low < high with finite values; got ({low}, {high}).")


def check_integer_data(where: str, name: str, x, vocab_size: int, *, validate_args: bool = False):
    """Checks integer data lies in ``[0, vocab_size)``.

    Eager for concrete input (``ValueError``); under tracing only when ``validate_args`` is true, through
    :func:`equinox.error_if`, which raises at run time (module docstring). Returns ``x`` (use the
    returned array, so the traced check is not dropped).
    """
    x = jnp.asarray(x)
    if not (jnp.issubdtype(x.dtype, jnp.integer) or jnp.issubdtype(x.dtype, jnp.floating)):
        raise TypeError(f"`{where}`: `{name}` must be integer pixel values; got dtype {x.dtype}.")
    if is_concrete(x):
        xs = np.asarray(x)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(xs) | (xs < 0) | (xs >= vocab_size) | (xs != np.round(xs))
        if bad.any():
            xs = np.where(np.isfinite(xs), xs, 0)
            raise ValueError(
                f"`{where}`: `{name}` must hold integers in [0, {vocab_size}); got min={np.nanmin(xs)}, "
                f"max={np.nanmax(xs)} ({int(bad.sum())} invalid entries)."
            )
        return x
    if validate_args:
        bad = (x < 0) | (x >= vocab_size) | (x != jnp.round(x))
        x = eqx.error_if(x, jnp.any(bad), f"`{where}`: `{name}` must hold integers in [0, {vocab_size}).")
    return x
