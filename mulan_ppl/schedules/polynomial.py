"""MuLAN's polynomial schedule: per-dimension degree-5 polynomials in t, monotone by construction."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mulan_ppl._validation import check_positive_int
from mulan_ppl.schedules._common import (
    GAMMA_MAX,
    GAMMA_MIN,
    as_time,
    check_context,
    check_endpoints,
    check_nonnegative,
    check_event_shape,
    check_optional_dim,
    expand_time,
    float_args,
    interpolate,
    normalised_ratio,
    with_time_derivative,
)

__all__ = ["Polynomial", "PolynomialHead", "polynomial_gamma"]

# Three-point Gauss-Legendre rule on [0, 1]: exact for polynomials of degree <= 5, so for the degree-4 integrand
# (a s^2 + b s + d)^2. Every term is a non-negative weight times a square: no cancellation.
_GL_NODES = (0.5 - math.sqrt(15.0) / 10.0, 0.5, 0.5 + math.sqrt(15.0) / 10.0)
_GL_WEIGHTS = (5.0 / 18.0, 8.0 / 18.0, 5.0 / 18.0)


def _quadratic(s, a, b, d):
    return (a * s + b) * s + d


def _integral(t, a, b, d):
    """f(t) = int_0^t (a s^2 + b s + d)^2 ds, by the exact quadrature rule."""
    total = sum(w * jnp.square(_quadratic(x * t, a, b, d)) for x, w in zip(_GL_NODES, _GL_WEIGHTS))
    return t * total


def _polynomial_value_and_rate(t, a, b, d, gamma_min, gamma_max):
    f_t = _integral(t, a, b, d)
    f_1 = _integral(jnp.ones((), f_t.dtype), a, b, d)
    gamma = interpolate(gamma_min, gamma_max, normalised_ratio(f_t, f_1, t))
    rate = (gamma_max - gamma_min) * normalised_ratio(jnp.square(_quadratic(t, a, b, d)), f_1, jnp.ones_like(t))
    return gamma, rate


_polynomial = with_time_derivative(_polynomial_value_and_rate)


def polynomial_gamma(t: jax.Array, a: jax.Array, b: jax.Array, d: jax.Array, *,
                     gamma_min: float | jax.Array = GAMMA_MIN,
                     gamma_max: float | jax.Array = GAMMA_MAX) -> jax.Array:
    r"""MuLAN's polynomial schedule for given coefficients, as a pure function.

    Mathematical details:
        The derivative of :math:`f` is the square of a quadratic, so :math:`f` is non-decreasing, and it is strictly
        increasing unless the quadratic vanishes identically (its zeros are isolated points):

        .. math::

            f'(t) &= (a t^2 + b t + d)^2, \\
            f(t) &= \tfrac{a^2}{5} t^5 + \tfrac{ab}{2} t^4 + \tfrac{b^2 + 2ad}{3} t^3 + b d\, t^2 + d^2 t, \\
            \gamma(t) &= \gamma_{\min} + (\gamma_{\max} - \gamma_{\min})\, f(t) / f(1), \\
            \frac{d\gamma}{dt} &= (\gamma_{\max} - \gamma_{\min})\, (a t^2 + b t + d)^2 / f(1).

        So :math:`\gamma(0) = \gamma_{\min}` and :math:`\gamma(1) = \gamma_{\max}` exactly, per dimension. ``f`` is
        evaluated as :math:`t \sum_i w_i\, q(x_i t)^2` with the three-point Gauss-Legendre rule on [0, 1] (exact
        for this degree-4 integrand), a sum of non-negative terms, instead of the monomial form, whose terms cancel
        when ``a`` and ``b`` are large. :math:`f(1) = 0` only when ``a = b = d = 0``; there the schedule falls back
        to the linear one (the limit of adding :math:`\epsilon t` to :math:`f`), so no epsilon perturbs the
        endpoints. The MuLAN paper (Suppl. E.2) has no guard; its code keeps :math:`d \ge 10^{-3}` (see
        :class:`Polynomial`), which bounds :math:`f(1) \ge d^2/9 > 0`. The closed-form time derivative rides on
        :func:`jax.custom_jvp`; tangents with respect to the coefficients and endpoints are exact too.

    Args:
        t: times in [0, 1], broadcastable against the coefficients, e.g. shape ``(B, 1, ..., 1)``.
        a: coefficient of :math:`t^2` in the square root of the derivative, e.g. shape ``(B, *event)``.
        b: coefficient of :math:`t`, same shape as ``a`` (or broadcastable).
        d: constant coefficient, same shape as ``a`` (or broadcastable).
        gamma_min: gamma at t = 0, a scalar or an array broadcastable against the coefficients.
        gamma_max: gamma at t = 1.

    Returns:
        gamma, of the broadcast shape of all inputs.

    Example:
        >>> import jax.numpy as jnp
        >>> from mulan_ppl.schedules import polynomial_gamma
        >>> t = jnp.array([[0.0], [0.5], [1.0]])                # (3, 1): three times, one dimension
        >>> a, b, d = jnp.array([0.0]), jnp.array([0.0]), jnp.array([2.0])
        >>> polynomial_gamma(t, a, b, d, gamma_min=-10.0, gamma_max=6.0)   # f'(t) constant: linear
        Array([[-10.],
               [ -2.],
               [  6.]], dtype=float32)

    References:
        1. Sahoo, Gokaslan, De Sa, Kuleshov. Diffusion Models With Learned Adaptive Noise (MuLAN), Suppl. E.2.
           https://arxiv.org/abs/2312.13236
    """
    return _polynomial(*float_args("polynomial_gamma", t=t, a=a, b=b, d=d, gamma_min=gamma_min,
                                   gamma_max=gamma_max))


class PolynomialHead(nnx.Module):
    r"""MLP mapping a context to the raw coefficients of :class:`Polynomial` (MuLAN's CIFAR-10 head).

    Mathematical details:
        :math:`h_0 = c`, :math:`h_{k} = \mathrm{swish}(W_k h_{k-1} + b_k)` for ``num_hidden`` layers of width
        ``hidden_width``, then a linear layer to :math:`3D` numbers laid out as ``[a | b | d_raw]`` with
        :math:`D` = ``prod(event_shape)``. As in MuLAN's code, the ``a`` block of the last layer starts at zero.

    Args:
        context_dim: size K of the context vector.
        event_shape: the data's event shape (H, W, C); the head returns 3 * prod(event_shape) numbers.
        hidden_width: width of the hidden layers (3072 in MuLAN's CIFAR-10 configuration).
        num_hidden: number of hidden layers (2 in MuLAN).
        param_dtype: dtype of the parameters (float32).
        rngs: random streams for initialisation.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.schedules import PolynomialHead
        >>> head = PolynomialHead(4, (2, 2), hidden_width=8, rngs=nnx.Rngs(0))
        >>> head(jnp.ones((5, 4))).shape
        (5, 12)
    """

    def __init__(self, context_dim: int, event_shape: tuple[int, ...], *, hidden_width: int = 3072,
                 num_hidden: int = 2, param_dtype: jax.typing.DTypeLike = jnp.float32, rngs: nnx.Rngs):
        where = "PolynomialHead"
        context_dim = check_positive_int(where, "context_dim", context_dim)
        self.event_shape = check_event_shape(where, event_shape)
        hidden_width = check_positive_int(where, "hidden_width", hidden_width)
        num_hidden = check_positive_int(where, "num_hidden", num_hidden, minimum=0)
        size = int(np.prod(self.event_shape, dtype=np.int64))
        widths = [context_dim] + [hidden_width] * num_hidden
        self.hidden = nnx.List([nnx.Linear(i, o, param_dtype=param_dtype, rngs=rngs)
                                for i, o in zip(widths[:-1], widths[1:])])
        self.out = nnx.Linear(widths[-1], 3 * size, param_dtype=param_dtype, rngs=rngs)
        self.out.kernel[...] = self.out.kernel[...].at[:, :size].set(0.0)

    def __call__(self, context: jax.Array) -> jax.Array:
        """Maps a context of shape ``(B, K)`` to raw coefficients of shape ``(B, 3 * prod(event_shape))``."""
        h = context
        for layer in self.hidden:
            h = nnx.swish(layer(h))
        return self.out(h)


class Polynomial(nnx.Module):
    r"""MuLAN's multivariate polynomial schedule, conditioned on a context (or not), endpoints exact.

    Mathematical details:
        For each data dimension, :math:`\gamma(t) = \gamma_{\min} + (\gamma_{\max} - \gamma_{\min}) f(t)/f(1)` with
        :math:`f'(t) = (a t^2 + b t + d)^2` (see :func:`polynomial_gamma`). The coefficients come from
        ``head(context)``, read as ``[a | b | d_raw]`` blocks of ``prod(event_shape)`` numbers, with
        :math:`d = d_{\min} + \mathrm{softplus}(d_{\text{raw}})` as in MuLAN's code (so :math:`f(1) \ge d_{\min}^2/9`).
        With ``context_dim=None`` the coefficients are free learned parameters of the event shape (a learned,
        non-adaptive multivariate schedule); they start at :math:`a = b = 0`, i.e. the linear schedule.

        The derivative vanishes where the quadratic has a root in (0, 1) (MuLAN's "zero twice" property). There the
        increments of gamma between nearby times fall below float32 resolution, so consecutive values on a fine
        float32 grid can tie or differ by a few ulps either way; in float64 the schedule is strictly increasing
        (use ``check_schedule(..., strict=False)`` in float32).

    Args:
        event_shape: the data's event shape (H, W, C); gamma has shape ``(B, *event_shape)``.
        context_dim: size K of the context, or ``None`` for free (context-independent) coefficients.
        head: a module mapping a context ``(B, K)`` to ``(B, 3 * prod(event_shape))`` numbers; defaults to
            :class:`PolynomialHead` with ``hidden_width`` and ``num_hidden``. Needs ``context_dim``.
        hidden_width: hidden width of the default head (3072 in MuLAN's CIFAR-10 configuration).
        num_hidden: number of hidden layers of the default head (2).
        gamma_min: gamma at t = 0 (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).
        d_min: lower bound on the constant coefficient ``d`` (MuLAN: 1e-3).
        learn_endpoints: when true, ``gamma_min`` and ``gamma_max`` are scalar ``nnx.Param`` initialised at the given
            values; the endpoints are then exact for the current parameter values (their order is not enforced).
        param_dtype: dtype of the parameters (float32); computations follow the dtype of ``t``.
        rngs: random streams for initialisation.

    Raises:
        ValueError: for ``gamma_min >= gamma_max``, a bad ``event_shape`` or ``context_dim``, a ``head`` without a
            ``context_dim``, and at call time a ``t`` not of shape ``(B,)``, a missing or misshapen ``context``, or a
            ``head`` output of the wrong shape.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.schedules import Polynomial
        >>> schedule = Polynomial((2, 2), context_dim=3, hidden_width=8, rngs=nnx.Rngs(0))
        >>> gamma = schedule(jnp.array([0.0, 1.0]), jnp.ones((2, 3)))
        >>> gamma.shape
        (2, 2, 2)
        >>> print(jnp.round(gamma[:, 0, 0], 3))
        [-13.3   5. ]

    References:
        1. Sahoo, Gokaslan, De Sa, Kuleshov. Diffusion Models With Learned Adaptive Noise (MuLAN).
           https://arxiv.org/abs/2312.13236
    """

    def __init__(self, event_shape: tuple[int, ...], *, context_dim: int | None, head: nnx.Module | None = None,
                 hidden_width: int = 3072, num_hidden: int = 2, gamma_min: float = GAMMA_MIN,
                 gamma_max: float = GAMMA_MAX, d_min: float = 1e-3, learn_endpoints: bool = False,
                 param_dtype: jax.typing.DTypeLike = jnp.float32, rngs: nnx.Rngs):
        where = "Polynomial"
        self.event_shape = check_event_shape(where, event_shape)
        self.context_dim = check_optional_dim(where, "context_dim", context_dim)
        gamma_min, gamma_max = check_endpoints(where, gamma_min, gamma_max)
        self.d_min = check_nonnegative(where, "d_min", d_min)
        size = int(np.prod(self.event_shape, dtype=np.int64))
        if self.context_dim is None:
            if head is not None:
                raise ValueError(f"`{where}`: a `head` maps a context to coefficients; give `context_dim` with it "
                                 f"(got context_dim=None).")
            self.head = None
            self.a = nnx.Param(jnp.zeros(self.event_shape, param_dtype))
            self.b = nnx.Param(jnp.zeros(self.event_shape, param_dtype))
            self.d_raw = nnx.Param(jnp.zeros(self.event_shape, param_dtype))
        else:
            self.head = head if head is not None else PolynomialHead(
                self.context_dim, self.event_shape, hidden_width=hidden_width, num_hidden=num_hidden,
                param_dtype=param_dtype, rngs=rngs)
        self._size = size
        self.learn_endpoints = bool(learn_endpoints)
        if self.learn_endpoints:
            self.gamma_min = nnx.Param(jnp.asarray(gamma_min, param_dtype))
            self.gamma_max = nnx.Param(jnp.asarray(gamma_max, param_dtype))
        else:
            self.gamma_min, self.gamma_max = gamma_min, gamma_max

    def coefficients(self, context: jax.Array | None, batch: int) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Returns ``(a, b, d)``, each of shape ``(batch, *event_shape)``, with ``d >= d_min``."""
        where = "Polynomial"
        if self.head is None:
            shape = (batch, *self.event_shape)
            a, b, d_raw = (jnp.broadcast_to(p[...], shape) for p in (self.a, self.b, self.d_raw))
        else:
            context = check_context(where, context, batch, self.context_dim)
            raw = jnp.asarray(self.head(context))
            if raw.shape != (batch, 3 * self._size):
                raise ValueError(f"`{where}`: `head` must map a context of shape {tuple(context.shape)} to shape "
                                 f"(batch, 3 * prod(event_shape)) = ({batch}, {3 * self._size}); got "
                                 f"{tuple(raw.shape)}.")
            a, b, d_raw = (r.reshape((batch, *self.event_shape)) for r in jnp.split(raw, 3, axis=-1))
        return a, b, self.d_min + jax.nn.softplus(d_raw)

    def _endpoints(self):
        if self.learn_endpoints:
            return self.gamma_min[...], self.gamma_max[...]
        return self.gamma_min, self.gamma_max

    def __call__(self, t: jax.Array, context: jax.Array | None = None) -> jax.Array:
        """Returns gamma of shape ``(B, *event_shape)`` for ``t`` of shape ``(B,)`` and ``context`` ``(B, K)``."""
        t = as_time("Polynomial", t)
        a, b, d = self.coefficients(context, t.shape[0])
        gamma_min, gamma_max = self._endpoints()
        return polynomial_gamma(expand_time(t, len(self.event_shape)), a, b, d,
                                gamma_min=gamma_min, gamma_max=gamma_max)
