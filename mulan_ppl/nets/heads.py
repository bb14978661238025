"""Context heads for the conditioned noise schedules: the paper's wide MLP and a low-rank alternative."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mulan_ppl._validation import as_float_array, check_positive_int
from mulan_ppl.schedules.polynomial import PolynomialHead

__all__ = ["LowRankHead", "MLPHead", "PolynomialHead"]


def _check_bool(where: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"`{where}`: `{name}` must be a bool; got {value!r}.")
    return value


def _hidden_layers(context_dim: int, hidden_width: int, num_hidden: int, kw) -> nnx.List:
    widths = [context_dim] + [hidden_width] * num_hidden
    return nnx.List([nnx.Linear(i, o, **kw) for i, o in zip(widths[:-1], widths[1:])])


def _check_context(where: str, context, context_dim: int) -> jax.Array:
    context = as_float_array(context, "context", where)
    if context.ndim != 2 or context.shape[-1] != context_dim:
        raise ValueError(f"`{where}`: `context` must have shape (B, context_dim) = (B, {context_dim}); "
                         f"got context.shape={tuple(context.shape)}.")
    return context


class MLPHead(nnx.Module):
    r"""Swish MLP from a context to ``out_features`` numbers (MuLAN's schedule head: 2 hidden layers of 3072).

    Mathematical details:
        :math:`h_0 = c`, :math:`h_k = \mathrm{swish}(W_k h_{k-1} + b_k)` for ``num_hidden`` layers of width
        ``hidden_width``, and the output :math:`W_o h + b_o`. With ``out_features = 3 * prod(event_shape)`` it is
        the coefficient network of :class:`~mulan_ppl.schedules.Polynomial`; for 32x32x3 images and a 50-dim
        context it has 37,917,696 parameters, more than the paper's denoiser.
        :class:`~mulan_ppl.schedules.PolynomialHead` is the same network with the ``a`` block of the output started
        at zero, as in MuLAN's code; ``zero_init=True`` here starts the whole output layer at zero (a
        :class:`~mulan_ppl.schedules.Polynomial` schedule then starts linear for every context).

    Args:
        context_dim: size K of the context.
        out_features: number of outputs.
        hidden_width: width of the hidden layers.
        num_hidden: number of hidden layers (0: a linear map).
        zero_init: start the output layer (kernel and bias) at zero.
        dtype: computation dtype.
        param_dtype: parameter dtype.
        rngs: random streams for initialisation.

    Raises:
        ValueError: a bad size, naming it; at call time a ``context`` not of shape ``(B, context_dim)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.nets import MLPHead
        >>> head = MLPHead(4, 12, hidden_width=8, rngs=nnx.Rngs(0))
        >>> head(jnp.ones((5, 4))).shape
        (5, 12)
    """

    def __init__(self, context_dim: int, out_features: int, *, hidden_width: int = 3072, num_hidden: int = 2,
                 zero_init: bool = False, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        where = "MLPHead"
        self.context_dim = check_positive_int(where, "context_dim", context_dim)
        self.out_features = check_positive_int(where, "out_features", out_features)
        hidden_width = check_positive_int(where, "hidden_width", hidden_width)
        num_hidden = check_positive_int(where, "num_hidden", num_hidden, minimum=0)
        _check_bool(where, "zero_init", zero_init)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.hidden = _hidden_layers(self.context_dim, hidden_width, num_hidden, kw)
        last = hidden_width if num_hidden else self.context_dim
        init = dict(kernel_init=nnx.initializers.zeros_init()) if zero_init else {}
        self.out = nnx.Linear(last, self.out_features, **init, **kw)

    def __call__(self, context: jax.Array) -> jax.Array:
        """Maps a context ``(B, K)`` to ``(B, out_features)``."""
        h = _check_context("MLPHead", context, self.context_dim)
        for layer in self.hidden:
            h = nnx.swish(layer(h))
        return self.out(h)


class LowRankHead(nnx.Module):
    r"""A light schedule head: a narrow swish MLP and a rank-``r`` output layer.

    Mathematical details:
        :math:`h_0 = c`, :math:`h_k = \mathrm{swish}(W_k h_{k-1} + b_k)` for ``num_hidden`` layers of width
        ``hidden_width`` (:math:`w`), then :math:`U (V h) + b_o` with :math:`V \in \mathbb R^{r \times w}` and
        :math:`U \in \mathbb R^{D_o \times r}`: the output lives in an :math:`r`-dimensional affine subspace,
        which for a schedule means :math:`r` learned per-pixel "noise patterns" mixed by the context. The output
        layer has :math:`r (w + D_o) + D_o` parameters instead of :math:`w D_o + D_o`: for 32x32x3 images
        (:math:`D_o = 3 \cdot 3072` polynomial coefficients), a 50-dim context, :math:`w = 512` and
        :math:`r = 64`, the whole head has 920,576 parameters, 41 times fewer than MuLAN's 2 x 3072 MLP
        (:class:`MLPHead`). ``zero_init=True`` starts :math:`U` and :math:`b_o` at zero.

    Args:
        context_dim: size K of the context.
        out_features: :math:`D_o`, the number of outputs.
        rank: :math:`r`, at most ``min(hidden_width, out_features)``.
        hidden_width: :math:`w`.
        num_hidden: number of hidden layers (at least 1).
        zero_init: start the output factor :math:`U` and the bias at zero.
        dtype: computation dtype.
        param_dtype: parameter dtype.
        rngs: random streams for initialisation.

    Raises:
        ValueError: a bad size, naming it (a ``rank`` above ``min(hidden_width, out_features)`` is not low rank);
            at call time a ``context`` not of shape ``(B, context_dim)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.nets import LowRankHead, parameter_count
        >>> head = LowRankHead(4, 30, rank=2, hidden_width=8, rngs=nnx.Rngs(0))
        >>> head(jnp.ones((5, 4))).shape
        (5, 30)
        >>> parameter_count(head)      # (4*8 + 8) + (8*8 + 8) + 8*2 + (2*30 + 30)
        218
    """

    def __init__(self, context_dim: int, out_features: int, *, rank: int = 64, hidden_width: int = 512,
                 num_hidden: int = 2, zero_init: bool = False, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        where = "LowRankHead"
        self.context_dim = check_positive_int(where, "context_dim", context_dim)
        self.out_features = check_positive_int(where, "out_features", out_features)
        hidden_width = check_positive_int(where, "hidden_width", hidden_width)
        num_hidden = check_positive_int(where, "num_hidden", num_hidden, minimum=1)
        self.rank = check_positive_int(where, "rank", rank)
        if self.rank > min(hidden_width, self.out_features):
            raise ValueError(f"`{where}`: `rank` must be at most min(hidden_width, out_features) = "
                             f"{min(hidden_width, self.out_features)}; got rank={rank}.")
        _check_bool(where, "zero_init", zero_init)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.hidden = _hidden_layers(self.context_dim, hidden_width, num_hidden, kw)
        self.down = nnx.Linear(hidden_width, self.rank, use_bias=False, **kw)
        init = dict(kernel_init=nnx.initializers.zeros_init()) if zero_init else {}
        self.up = nnx.Linear(self.rank, self.out_features, **init, **kw)

    def __call__(self, context: jax.Array) -> jax.Array:
        """Maps a context ``(B, K)`` to ``(B, out_features)``."""
        h = _check_context("LowRankHead", context, self.context_dim)
        for layer in self.hidden:
            h = nnx.swish(layer(h))
        return self.up(self.down(h))
