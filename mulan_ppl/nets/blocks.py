"""Building blocks of the denoiser and the encoder: a conditioned residual block and a self-attention block."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from mulan_ppl._validation import check_positive_int

__all__ = ["AttentionBlock", "ResnetBlock", "parameter_count"]

_zeros = nnx.initializers.zeros_init()


def parameter_count(module: nnx.Module) -> int:
    """Number of scalars held in ``nnx.Param`` variables of ``module`` (works on ``nnx.eval_shape`` results).

    Example:
        >>> from flax import nnx
        >>> from mulan_ppl.nets import parameter_count
        >>> parameter_count(nnx.Linear(3, 4, rngs=nnx.Rngs(0)))
        16
        >>> parameter_count(nnx.eval_shape(lambda: nnx.Linear(3000, 4000, rngs=nnx.Rngs(0))))  # no memory used
        12004000
    """
    return int(sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(module, nnx.Param))))


def check_groups(where: str, num_groups, channels: int, name: str = "channels") -> int:
    """Clips ``num_groups`` to ``channels`` and checks that it divides ``channels``."""
    num_groups = min(check_positive_int(where, "num_groups", num_groups), channels)
    if channels % num_groups:
        raise ValueError(f"`{where}`: `{name}` must be divisible by `num_groups` (GroupNorm); got "
                         f"{name}={channels}, num_groups={num_groups}.")
    return num_groups


def check_rate(where: str, name: str, value) -> float:
    """A probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"`{where}`: `{name}` must be a number in [0, 1); got {name}={value!r}.")
    return float(value)


class ResnetBlock(nnx.Module):
    r"""Residual block of two 3x3 convolutions with GroupNorm, swish, dropout and an additive conditioning vector.

    Mathematical details:
        .. math::

            h &= \mathrm{conv}_1(\mathrm{swish}(\mathrm{GN}_1(x))) + W_c\, e, \\
            y &= S x + \mathrm{conv}_2(\mathrm{dropout}(\mathrm{swish}(\mathrm{GN}_2(h)))),

        with :math:`e` the conditioning vector (broadcast over the pixels) and :math:`S` the identity, or a 1x1
        projection when the channel counts differ. :math:`\mathrm{conv}_2` and :math:`W_c` start at zero, so a new
        block is the identity (or :math:`S`) on its input. This is the block of VDM's and MuLAN's score network.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        cond_dim: size of the conditioning vector, or ``None`` for an unconditioned block.
        dropout: dropout rate before the second convolution.
        num_groups: GroupNorm groups (clipped to the channel count, which it must divide).
        dtype: computation dtype (``None``: that of the inputs and parameters).
        param_dtype: parameter dtype.
        rngs: random streams: ``params`` for initialisation, and ``dropout`` (falling back to ``default``) seeds the
            block's own stream tagged ``dropout`` (reseed it with ``nnx.reseed(module, dropout=key)``).

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.nets import ResnetBlock
        >>> block = ResnetBlock(4, 8, 16, num_groups=2, rngs=nnx.Rngs(0))
        >>> block(jnp.ones((2, 5, 5, 4)), jnp.ones((2, 16))).shape
        (2, 5, 5, 8)
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int | None = None, *, dropout: float = 0.0,
                 num_groups: int = 32, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        where = "ResnetBlock"
        in_channels = check_positive_int(where, "in_channels", in_channels)
        out_channels = check_positive_int(where, "out_channels", out_channels)
        dropout = check_rate(where, "dropout", dropout)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = nnx.GroupNorm(in_channels, check_groups(where, num_groups, in_channels, "in_channels"), **kw)
        self.conv1 = nnx.Conv(in_channels, out_channels, (3, 3), **kw)
        self.cond_proj = None if cond_dim is None else nnx.Linear(
            check_positive_int(where, "cond_dim", cond_dim), out_channels, use_bias=False, kernel_init=_zeros, **kw)
        self.norm2 = nnx.GroupNorm(out_channels, check_groups(where, num_groups, out_channels, "out_channels"), **kw)
        # A stream tagged 'dropout' whatever streams ``rngs`` has, so `nnx.reseed(model, dropout=key)` reaches it.
        self.dropout = nnx.Dropout(dropout, rngs=nnx.Rngs(dropout=rngs.dropout())) if dropout > 0 else None
        self.conv2 = nnx.Conv(out_channels, out_channels, (3, 3), kernel_init=_zeros, **kw)
        self.shortcut = None if in_channels == out_channels else nnx.Linear(in_channels, out_channels, **kw)

    def __call__(self, x: jax.Array, cond: jax.Array | None = None, *, deterministic: bool | None = None,
                 dropout_key: jax.Array | None = None) -> jax.Array:
        """Maps ``x`` ``(B, H, W, in_channels)`` and ``cond`` ``(B, cond_dim)`` to ``(B, H, W, out_channels)``.

        ``deterministic`` overrides the train/eval mode of the dropout layer; ``dropout_key`` draws its mask from
        this key instead of the block's stream (which is then left as it is).
        """
        h = self.conv1(nnx.swish(self.norm1(x)))
        if self.cond_proj is not None:
            if cond is None:
                raise ValueError("`ResnetBlock`: this block was built with a `cond_dim`; pass `cond`.")
            h = h + self.cond_proj(cond)[:, None, None, :]
        h = nnx.swish(self.norm2(h))
        if self.dropout is not None:
            h = self.dropout(h, deterministic=deterministic, rngs=dropout_key)
        h = self.conv2(h)
        skip = x if self.shortcut is None else self.shortcut(x)
        return skip + h


class AttentionBlock(nnx.Module):
    r"""Single-head self-attention over the pixels, residual, with a zero-initialised output projection.

    Mathematical details:
        With :math:`u = \mathrm{GN}(x)` flattened to :math:`N = HW` tokens of :math:`C` channels,
        :math:`y = x + W_o\, \mathrm{softmax}(Q K^\top / \sqrt{C})\, V` with :math:`Q, K, V = u W_q, u W_k, u W_v`.
        :math:`W_o` starts at zero, so a new block is the identity. The logits and the softmax are computed in
        float32 whatever the computation dtype.

    Args:
        channels: channels :math:`C` of the input and output.
        num_groups: GroupNorm groups (clipped to ``channels``, which it must divide).
        dtype: computation dtype.
        param_dtype: parameter dtype.
        rngs: random streams for initialisation.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.nets import AttentionBlock
        >>> x = jnp.ones((2, 3, 3, 4))
        >>> bool(jnp.all(AttentionBlock(4, num_groups=2, rngs=nnx.Rngs(0))(x) == x))   # identity at init
        True
    """

    def __init__(self, channels: int, *, num_groups: int = 32, dtype=None, param_dtype=jnp.float32,
                 rngs: nnx.Rngs):
        where = "AttentionBlock"
        channels = check_positive_int(where, "channels", channels)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm = nnx.GroupNorm(channels, check_groups(where, num_groups, channels), **kw)
        self.qkv = nnx.Linear(channels, 3 * channels, **kw)
        self.proj_out = nnx.Linear(channels, channels, kernel_init=_zeros, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """Maps ``x`` ``(B, H, W, C)`` to the same shape."""
        batch, height, width, channels = x.shape
        q, k, v = jnp.split(self.qkv(self.norm(x)).reshape(batch, height * width, 3 * channels), 3, axis=-1)
        logits = jnp.einsum("bqc,bkc->bqk", q.astype(jnp.float32), k.astype(jnp.float32)) / math.sqrt(channels)
        weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
        h = jnp.einsum("bqk,bkc->bqc", weights, v).reshape(batch, height, width, channels)
        return x + self.proj_out(h)
