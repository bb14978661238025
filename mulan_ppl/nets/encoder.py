"""The encoder q(c | x) of the auxiliary latent: a small residual network at full resolution."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mulan_ppl._validation import as_float_array, check_one_of, check_positive_int
from mulan_ppl.nets.blocks import AttentionBlock, ResnetBlock, check_groups
from mulan_ppl.nets.fourier import check_exponents, fourier_features
from mulan_ppl.schedules._common import check_event_shape

__all__ = ["ENCODER_OUTPUTS", "Encoder"]

ENCODER_OUTPUTS = ("logits", "gaussian")


class Encoder(nnx.Module):
    r"""MuLAN's encoder of the auxiliary latent: residual blocks on the image, a one-channel map, a dense layer.

    Mathematical details:
        The data :math:`f \in [-1, 1]` (with its Fourier features :math:`\sin/\cos(2^k \cdot 2\pi f)` when
        ``vocab_size`` or ``fourier_exponents`` is given) goes through a 3x3 convolution to :math:`E` channels,
        ``num_blocks`` :class:`ResnetBlock` s, a middle block, optional single-head attention and another block,
        all at full resolution; then GroupNorm, swish, a 3x3 convolution to one channel, flattening to
        :math:`HW` numbers, swish, and a dense layer. ``output="logits"`` returns :math:`K` logits (of a
        :class:`~mulan_ppl.distrax.KHot` or perturbed top-k posterior); ``output="gaussian"`` returns a location
        and a log-scale, each of :math:`K` numbers. The one-channel convolution starts at zero, so a new encoder
        returns zero logits (the uniform posterior) or :math:`\mathcal N(0, I)` (the standard prior), whatever the
        image. This is the layout of MuLAN's ``UnetEncoder`` without its conditioning vector, which there embeds a
        constant and so only adds a bias that the first convolution already has.

    Args:
        event_shape: the image shape ``(H, W, C)``.
        latent_dim: :math:`K`, the size of the auxiliary latent (MuLAN's CIFAR-10: 50).
        num_blocks: residual blocks before the middle (MuLAN: 4).
        channels: :math:`E`, the width of the blocks (MuLAN's CIFAR-10: 128).
        output: ``"logits"`` or ``"gaussian"``.
        vocab_size: number of integer levels of the data, for the default ``fourier_exponents``; ``None`` (and no
            ``fourier_exponents``) means no Fourier features.
        fourier_exponents: the exponents ``k`` of the Fourier features, or ``None`` for the default of
            ``vocab_size``.
        attention: single-head self-attention between the two middle blocks (MuLAN has it).
        num_groups: GroupNorm groups, clipped to ``channels``, which it must divide.
        dtype: computation dtype.
        param_dtype: parameter dtype.
        rngs: random streams for initialisation.

    Raises:
        ValueError: a bad size or mode, naming the argument; at call time an ``x`` not of shape
            ``(B, *event_shape)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.nets import Encoder
        >>> encoder = Encoder((4, 4, 3), 6, num_blocks=0, channels=8, vocab_size=256, num_groups=4,
        ...                   rngs=nnx.Rngs(0))
        >>> print(encoder(jnp.zeros((2, 4, 4, 3))))            # zero logits at initialisation
        [[0. 0. 0. 0. 0. 0.]
         [0. 0. 0. 0. 0. 0.]]
        >>> gaussian = Encoder((4, 4, 3), 6, num_blocks=0, channels=8, output="gaussian", num_groups=4,
        ...                    rngs=nnx.Rngs(0))
        >>> loc, log_scale = gaussian(jnp.zeros((2, 4, 4, 3)))
        >>> loc.shape, log_scale.shape
        ((2, 6), (2, 6))

    References:
        1. Sahoo, Gokaslan, De Sa, Kuleshov. Diffusion Models With Learned Adaptive Noise (MuLAN), Suppl. E.
           https://arxiv.org/abs/2312.13236
    """

    def __init__(self, event_shape: tuple[int, int, int], latent_dim: int, *, num_blocks: int = 4,
                 channels: int = 128, output: str = "logits", vocab_size: int | None = None,
                 fourier_exponents: tuple[int, ...] | None = None, attention: bool = True, num_groups: int = 32,
                 dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
        where = "Encoder"
        self.event_shape = check_event_shape(where, event_shape)
        if len(self.event_shape) != 3:
            raise ValueError(f"`{where}`: `event_shape` must be (H, W, C); got event_shape={self.event_shape}.")
        height, width, in_channels = self.event_shape
        self.latent_dim = check_positive_int(where, "latent_dim", latent_dim)
        num_blocks = check_positive_int(where, "num_blocks", num_blocks, minimum=0)
        channels = check_positive_int(where, "channels", channels)
        self.output = check_one_of(where, "output", output, ENCODER_OUTPUTS)
        if vocab_size is None and fourier_exponents is None:
            self.fourier_exponents = ()
        else:
            if vocab_size is not None:
                vocab_size = check_positive_int(where, "vocab_size", vocab_size, minimum=2)
            elif fourier_exponents is None:
                raise ValueError(f"`{where}`: give `vocab_size` or `fourier_exponents`.")
            self.fourier_exponents = check_exponents(where, fourier_exponents, vocab_size)
        if not isinstance(attention, bool):
            raise ValueError(f"`{where}`: `attention` must be a bool; got {attention!r}.")
        num_groups = check_groups(where, num_groups, channels)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        features = in_channels * (1 + 2 * len(self.fourier_exponents))
        self.conv_in = nnx.Conv(features, channels, (3, 3), **kw)
        block = dict(num_groups=num_groups, **kw)
        self.blocks = nnx.List([ResnetBlock(channels, channels, **block) for _ in range(num_blocks)])
        self.mid1 = ResnetBlock(channels, channels, **block)
        self.mid_attention = AttentionBlock(channels, num_groups=num_groups, **kw) if attention else None
        self.mid2 = ResnetBlock(channels, channels, **block)
        self.norm_out = nnx.GroupNorm(channels, num_groups, **kw)
        self.conv_out = nnx.Conv(channels, 1, (3, 3), kernel_init=nnx.initializers.zeros_init(), **kw)
        self.heads = nnx.List([nnx.Linear(height * width, self.latent_dim, **kw)
                               for _ in range(1 if self.output == "logits" else 2)])

    def __call__(self, x: jax.Array) -> jax.Array | tuple[jax.Array, jax.Array]:
        """Logits ``(B, K)``, or ``(loc, log_scale)`` each ``(B, K)``, for data ``x`` ``(B, H, W, C)`` in [-1, 1]."""
        x = as_float_array(x, "x", "Encoder")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(f"`Encoder`: `x` must have shape (B, *event_shape) = (B, "
                             f"{', '.join(map(str, self.event_shape))}); got x.shape={tuple(x.shape)}.")
        h = self.conv_in(jnp.concatenate([x, fourier_features(x, self.fourier_exponents)], axis=-1))
        for block in self.blocks:
            h = block(h)
        h = self.mid1(h)
        if self.mid_attention is not None:
            h = self.mid_attention(h)
        h = self.mid2(h)
        h = self.conv_out(nnx.swish(self.norm_out(h)))
        h = nnx.swish(h.reshape(h.shape[0], -1))
        outputs = tuple(head(h).astype(x.dtype) for head in self.heads)
        return outputs[0] if self.output == "logits" else outputs
