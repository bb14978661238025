"""Argument checking and parameter building shared by the Distrax and NumPyro diffusion distributions.

Each ``build_*`` function validates the public arguments of one class, converts them to a common float dtype and
returns a :class:`GaussianParams` holding the diagonal-Gaussian parameters computed by :mod:`mulan_ppl.core`. The
backends store what it returns and add only their framework's protocol on top. KLs are here too, once, so both
registries call the same function.
"""

from __future__ import annotations

import dataclasses
import inspect

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl import core
from mulan_ppl._validation import (
    as_float_array,
    check_broadcasts_to,
    check_integer_data,
    check_one_of,
    check_positive_int,
    check_same_shape,
    check_values,
    event_ndims_for,
    is_concrete,
)

__all__ = [
    "GaussianParams",
    "build_decoder",
    "build_forward_marginal",
    "build_forward_transition",
    "build_reverse_transition",
    "build_top_down_posterior",
    "kl_diag_gaussians",
    "kl_posterior_reverse",
    "kl_to_normal",
    "sum_event",
]

PREDICTIONS = ("eps", "v", "x", "score")


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class GaussianParams:
    """Validated arguments of a diffusion Gaussian and its diagonal parameters."""

    args: dict  # the constructor's array arguments, converted (None for an absent optional one)
    loc: jax.Array  # (*batch, *event)
    log_variance: jax.Array  # (*batch, *event)
    event_ndims: int = dataclasses.field(metadata=dict(static=True))
    validate_args: bool = dataclasses.field(default=False, metadata=dict(static=True))  # check log_prob values too


def infer_shapes(init, *args, **kwargs) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """NumPyro's ``infer_shapes`` for the diffusion classes: argument shapes (positional or by name) in, ``(batch_shape,
    event_shape)`` out. Non-shape arguments (``vocab_size``, ``parameterization``) are ignored; ``event_ndims``
    defaults to the rank minus one."""
    bound = inspect.signature(init).bind_partial(None, *args, **kwargs).arguments
    event_ndims = bound.pop("event_ndims", None)
    shapes = [tuple(v) for v in bound.values() if isinstance(v, (tuple, list))]
    shape = tuple(np.broadcast_shapes(*shapes))
    ndims = len(shape) - 1 if event_ndims is None else event_ndims
    return shape[: len(shape) - ndims], shape[len(shape) - ndims:]


def sum_event(values: jax.Array, event_ndims: int) -> jax.Array:
    """Sums the trailing ``event_ndims`` axes."""
    if event_ndims == 0:
        return values
    return jnp.sum(values, axis=tuple(range(values.ndim - event_ndims, values.ndim)))


def _floats(where: str, **arrays) -> dict:
    converted = {k: as_float_array(v, k, where) for k, v in arrays.items() if v is not None}
    dtype = jnp.result_type(*converted.values())
    return {k: (converted[k].astype(dtype) if k in converted else None) for k in arrays}


def _check_gammas(where: str, args: dict, data_name: str, *gamma_names: str) -> None:
    shape = args[data_name].shape
    for name in gamma_names:
        if args[name] is not None:
            check_broadcasts_to(where, name, args[name], shape, data_name)


def _check_values(where: str, validate_args: bool, args: dict) -> dict:
    """NaN and Inf check of the inputs (a ``log_variance`` of -inf, a point mass, is allowed): eager when concrete,
    under jit only with ``validate_args``."""
    return check_values(where, validate_args, allow_inf=("log_variance",), **args)


def build_forward_marginal(x, gamma, *, event_ndims=None, validate_args=False, where="ForwardMarginal"):
    args = _floats(where, x=x, gamma=gamma)
    _check_gammas(where, args, "x", "gamma")
    args = _check_values(where, validate_args, args)
    loc, log_var = core.forward_marginal(args["x"], args["gamma"])
    return GaussianParams(args, loc, log_var, event_ndims_for(where, loc.shape, event_ndims), validate_args)


def build_forward_transition(z_s, gamma_s, gamma_t, *, event_ndims=None, validate_args=False,
                             where="ForwardTransition"):
    args = _floats(where, z_s=z_s, gamma_s=gamma_s, gamma_t=gamma_t)
    _check_gammas(where, args, "z_s", "gamma_s", "gamma_t")
    args = _check_values(where, validate_args, args)
    loc, log_var = core.forward_transition(args["z_s"], args["gamma_s"], args["gamma_t"])
    return GaussianParams(args, loc, log_var, event_ndims_for(where, loc.shape, event_ndims), validate_args)


def build_top_down_posterior(z_t, x, gamma_s, gamma_t, *, eps=None, event_ndims=None, validate_args=False,
                             where="TopDownPosterior"):
    args = _floats(where, z_t=z_t, x=x, gamma_s=gamma_s, gamma_t=gamma_t, eps=eps)
    check_same_shape(where, z_t=args["z_t"], x=args["x"], eps=args["eps"])
    _check_gammas(where, args, "z_t", "gamma_s", "gamma_t")
    args = _check_values(where, validate_args, args)
    loc, log_var = core.top_down_posterior(args["z_t"], args["x"], args["gamma_s"], args["gamma_t"])
    return GaussianParams(args, loc, log_var, event_ndims_for(where, loc.shape, event_ndims), validate_args)


def build_top_down_posterior_from_noise(x, eps, gamma_s, gamma_t, *, event_ndims=None, validate_args=False,
                                        where="TopDownPosterior.from_noise"):
    """Validates ``x``, ``eps`` and the noise levels, then builds the posterior at ``z_t = alpha_t x + sigma_t eps``."""
    args = _floats(where, x=x, eps=eps, gamma_s=gamma_s, gamma_t=gamma_t)
    check_same_shape(where, x=args["x"], eps=args["eps"])
    _check_gammas(where, args, "x", "gamma_s", "gamma_t")
    args = _check_values(where, validate_args, args)
    alpha, sigma = core.alpha_sigma(args["gamma_t"])
    z_t = alpha * args["x"] + sigma * args["eps"]
    return build_top_down_posterior(z_t, args["x"], args["gamma_s"], args["gamma_t"], eps=args["eps"],
                                    event_ndims=event_ndims, validate_args=validate_args, where=where)


def build_reverse_transition(z_t, prediction, gamma_s, gamma_t, *, parameterization="x", log_variance=None,
                             event_ndims=None, validate_args=False, where="ReverseTransition",
                             prediction_name="prediction"):
    """``prediction_name`` is the public name of the prediction argument (``x_hat`` for the constructor)."""
    check_one_of(where, "parameterization", parameterization, PREDICTIONS)
    named = _floats(where, z_t=z_t, **{prediction_name: prediction}, gamma_s=gamma_s, gamma_t=gamma_t,
                    log_variance=log_variance)
    check_same_shape(where, z_t=named["z_t"], **{prediction_name: named[prediction_name]})
    _check_gammas(where, named, "z_t", "gamma_s", "gamma_t", "log_variance")
    named = _check_values(where, validate_args, named)
    args = {("prediction" if k == prediction_name else k): v for k, v in named.items()}
    x_hat = core.convert_prediction(args["prediction"], args["z_t"], args["gamma_t"], source=parameterization,
                                    target="x")
    loc, log_var = core.top_down_posterior(args["z_t"], x_hat, args["gamma_s"], args["gamma_t"])
    if args["log_variance"] is not None:
        loc, log_var = jnp.broadcast_arrays(loc, args["log_variance"])
    return GaussianParams(args, loc, log_var, event_ndims_for(where, loc.shape, event_ndims), validate_args)


def build_decoder(z_0, gamma_0, vocab_size, *, event_ndims=None, validate_args=False,
                  where="DiscretizedGaussianDecoder"):
    """Returns ``(args, vocab_size, log_probs, event_ndims)`` of the discretized decoder."""
    vocab_size = check_positive_int(where, "vocab_size", vocab_size, minimum=2)
    args = _floats(where, z_0=z_0, gamma_0=gamma_0)
    _check_gammas(where, args, "z_0", "gamma_0")
    args = _check_values(where, validate_args, args)
    logits = core.decoder_logits(args["z_0"], args["gamma_0"], vocab_size)
    return args, vocab_size, jax.nn.log_softmax(logits), event_ndims_for(where, args["z_0"].shape, event_ndims)


def check_value_shape(where: str, value, shape: tuple[int, ...]) -> None:
    """A ``log_prob`` value has shape ``(*sample_shape, *batch_shape, *event_shape)``: at least the rank of the
    distribution's ``shape = batch_shape + event_shape``, its trailing dims equal to those of ``shape`` or 1. A
    lower-rank value is refused rather than right-aligned (which would pair batch entries with event dims)."""
    value_shape = tuple(jnp.shape(value))
    trailing = value_shape[len(value_shape) - len(shape):] if len(shape) else ()
    if len(value_shape) < len(shape) or any(v not in (1, s) for v, s in zip(trailing, shape)):
        raise ValueError(
            f"`{where}`: `value` must have shape (*sample_shape, *batch_shape, *event_shape) = (..., "
            f"{', '.join(map(str, shape))}) (dims of size 1 broadcast); got value.shape={value_shape}."
        )


def gaussian_log_prob(params: GaussianParams, value, where: str) -> jax.Array:
    """Per-example log-density of a diffusion Gaussian at ``value`` (checked: float, shape, NaN)."""
    value = as_float_array(value, "value", where)
    check_value_shape(where, value, params.loc.shape)
    value = check_values(where, params.validate_args, allow_inf=("value",), value=value)["value"]
    lp = core.diag_normal_log_prob(value, params.loc, params.log_variance)
    return sum_event(lp, params.event_ndims)


def decoder_log_prob(log_probs, x, vocab_size, event_ndims, *, validate_args=False,
                     where="DiscretizedGaussianDecoder.log_prob"):
    """Per-example log p(x | z_0) for integer ``x`` of the decoder's (or a broadcastable) shape."""
    x = check_integer_data(where, "value", x, vocab_size, validate_args=validate_args)
    check_value_shape(where, x, log_probs.shape[:-1])
    x = x.astype(jnp.int32)
    log_probs = jnp.broadcast_to(log_probs, x.shape + log_probs.shape[-1:])
    picked = jnp.take_along_axis(log_probs, x[..., None], axis=-1)[..., 0]
    return sum_event(picked, event_ndims)


def _check_shared_step(q_args: dict, p_args: dict) -> None:
    """The structural KL assumes both distributions describe the same step: same ``z_t``, ``gamma_s``, ``gamma_t``."""
    names = ("z_t", "gamma_s", "gamma_t")
    arrays = [q_args[n] for n in names] + [p_args[n] for n in names]
    if not is_concrete(*arrays):
        return
    for name in names:
        try:
            same = np.array_equal(*np.broadcast_arrays(np.asarray(q_args[name]), np.asarray(p_args[name])))
        except ValueError:
            same = False
        if not same:
            raise ValueError(
                "`kl_divergence(TopDownPosterior, ReverseTransition)`: both must describe the same step, with equal "
                f"`{name}`; build the reverse transition from the posterior's z_t, gamma_s and gamma_t."
            )


def kl_posterior_reverse(q: GaussianParams, p: GaussianParams, parameterization: str) -> jax.Array:
    """KL(TopDownPosterior ‖ ReverseTransition) per example.

    With the posterior's own variance (the default reverse transition) this is the structural form, finite and
    smooth at s = t; a reverse transition given its own ``log_variance`` gets the general Gaussian KL.
    """
    _check_shared_step(q.args, p.args)
    if p.args["log_variance"] is not None:
        return kl_diag_gaussians(q, p)
    kl = core.per_step_kl(
        q.args["x"], q.args["z_t"], q.args["gamma_s"], q.args["gamma_t"], p.args["prediction"],
        parameterization=parameterization, eps=q.args["eps"],
    )
    return sum_event(jnp.broadcast_to(kl, q.loc.shape), q.event_ndims)


def kl_diag_gaussians(q: GaussianParams, p: GaussianParams) -> jax.Array:
    """KL between two diagonal diffusion Gaussians of the same event shape, per example."""
    if q.loc.shape[q.loc.ndim - q.event_ndims:] != p.loc.shape[p.loc.ndim - p.event_ndims:]:
        raise ValueError(
            f"`kl_divergence`: event shapes differ; got {q.loc.shape[q.loc.ndim - q.event_ndims:]} and "
            f"{p.loc.shape[p.loc.ndim - p.event_ndims:]}."
        )
    kl = core.gaussian_kl(q.loc, q.log_variance, p.loc, p.log_variance)
    return sum_event(kl, q.event_ndims)


def kl_to_normal(q: GaussianParams, loc, scale, reinterpreted_ndims: int = 0) -> jax.Array:
    """KL from a diffusion Gaussian to a backend ``Normal(loc, scale)`` (``Independent`` over the trailing dims).

    The Normal's parameters broadcast against ``q``'s full shape; the KL sums over ``q``'s event dims.
    """
    if reinterpreted_ndims not in (0, q.event_ndims):
        raise ValueError(
            f"`kl_divergence`: the prior's reinterpreted_batch_ndims must be {q.event_ndims} (the event rank of "
            f"the diffusion distribution) or 0; got {reinterpreted_ndims}."
        )
    loc = jnp.asarray(loc, q.loc.dtype)
    log_var = 2.0 * jnp.log(jnp.asarray(scale, q.loc.dtype))
    kl = core.gaussian_kl(q.loc, q.log_variance, loc, log_var)
    if kl.shape != q.loc.shape:
        raise ValueError(f"`kl_divergence`: the prior's shape must broadcast to {q.loc.shape}; got {kl.shape}.")
    return sum_event(kl, q.event_ndims)
