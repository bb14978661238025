"""VDM's denoiser: a UNet without down- or up-sampling, conditioned on the noise level and the auxiliary latent."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from mulan_ppl._validation import as_float_array, check_broadcasts_to, check_one_of, check_positive_int
from mulan_ppl.nets.blocks import AttentionBlock, ResnetBlock, check_groups, check_rate
from mulan_ppl.nets.fourier import check_exponents, fourier_features, sinusoidal_embedding
from mulan_ppl.schedules._common import GAMMA_MAX, GAMMA_MIN, check_endpoints, check_optional_dim

__all__ = ["CONDITIONINGS", "UNet"]

CONDITIONINGS = ("mean_gamma", "gamma_map")


def _checkpointed_block(block: ResnetBlock, h, cond, deterministic):
    """``block(h, cond)`` under :func:`jax.checkpoint`: recomputed in the backward pass, not stored.

    The dropout key is drawn from the block's stream here, at the caller's trace level, exactly as the block
    itself would draw it, and passed in; the checkpointed function is then a pure function of the block's state,
    which it leaves unchanged. So masks, outputs and gradients equal those without remat, and (unlike
    ``nnx.remat``) this also works for a module merged inside a pure JAX transformation.
    """
    key = None
    if block.dropout is not None:
        active = not (block.dropout.deterministic if deterministic is None else deterministic)
        key = block.dropout.rngs() if active else None
    graphdef, state = nnx.split(block)

    def pure(state, h, cond, key):
        return nnx.merge(graphdef, state)(h, cond, deterministic=deterministic, dropout_key=key)

    return jax.checkpoint(pure)(state, h, cond, key)


def _checkpointed_attention(block: AttentionBlock, h):
    """``block(h)`` under :func:`jax.checkpoint` (the block holds parameters only)."""
    graphdef, state = nnx.split(block)
    return jax.checkpoint(lambda state, h: nnx.merge(graphdef, state)(h))(state, h)


class UNet(nnx.Module):
    r"""VDM's score network: residual blocks at full resolution with skip connections, conditioned on gamma and c.

    Mathematical details:
        The noise level enters in one of two ways (``conditioning``), both through the normalised
        :math:`\tilde\gamma = (\gamma - \gamma_{\min})/(\gamma_{\max} - \gamma_{\min})`:

        * ``"mean_gamma"`` (the reference): only the mean of :math:`\tilde\gamma` over the pixels is seen, as the
          "time" of the conditioning vector;
        * ``"gamma_map"``: the per-pixel map :math:`\tilde\gamma` is also concatenated to the input channels, so
          the network knows the noise level of every pixel (useful for a multivariate schedule); the conditioning
          vector still carries the mean.

        With :math:`E` = ``channels`` and :math:`L` = ``num_blocks``, the conditioning vector is
        :math:`e = \mathrm{swish}(W_2\, \mathrm{swish}(W_1\, \mathrm{emb}(1000\, \bar\gamma) + W_c\, c + b_1) + b_2)`
        (:math:`4E` numbers; the sinusoidal embedding has :math:`E`; the context term, present with
        ``context_dim``, is the reference's concatenation of :math:`c` to the embedding). The body is: the input
        :math:`z` with its Fourier features :math:`\sin/\cos(2^k\cdot 2\pi z)` (and the γ map), a 3x3 convolution
        to :math:`E` channels, :math:`L` :class:`ResnetBlock` s whose outputs are kept, a middle block, optional
        single-head attention and another block, then :math:`L + 1` blocks each taking the concatenation of the
        running features and one kept output (last in, first out), GroupNorm, swish and a 3x3 convolution to the
        input's channels. There is no down- or up-sampling: every block works at full resolution. The output
        convolution, each block's second convolution and conditioning projection, and the attention output start
        at zero, so a new network returns exactly 0 (``input_skip=False``). With ``input_skip=True`` it returns
        the network output plus :math:`z`, as the reference's "base measure" does for an ε prediction.
        The time ``t`` is not an input: the noise level is.

    Args:
        in_channels: channels ``C`` of ``z``; the output has the same shape as ``z``.
        num_blocks: :math:`L`, residual blocks on the way "down" (the paper's CIFAR-10 network: 32).
        channels: :math:`E`, the width of every block (CIFAR-10: 128).
        vocab_size: number of integer levels of the data; sets the default ``fourier_exponents``.
        dropout: dropout rate inside each block (CIFAR-10: 0.1).
        attention: single-head self-attention between the two middle blocks (the reference always has it).
        conditioning: ``"mean_gamma"`` or ``"gamma_map"`` (see above).
        context_dim: size ``K`` of the auxiliary latent ``c``, or ``None`` for an unconditioned network.
        gamma_min: gamma at t = 0, for the normalisation (default -13.3).
        gamma_max: gamma at t = 1 (default 5.0).
        fourier_exponents: the exponents ``k`` of the input's Fourier features; ``None`` derives them from
            ``vocab_size`` (:func:`default_fourier_exponents`: 6, 7 at V = 256), ``()`` turns them off.
        num_groups: GroupNorm groups, clipped to ``channels``, which it must divide.
        input_skip: add ``z`` to the output.
        dtype: computation dtype (e.g. ``jnp.bfloat16``); the Fourier features, the embedding and the attention
            softmax stay in float32, and the output has ``z``'s dtype.
        param_dtype: parameter dtype.
        remat: recompute every block in the backward pass (:func:`jax.checkpoint`), trading compute for memory.
        rngs: random streams: ``params`` for initialisation, ``dropout`` (falling back to ``default``) seeds the
            dropout masks.

    Raises:
        ValueError: a bad size, rate or mode (naming the argument), ``channels`` not divisible by ``num_groups``,
            ``gamma_min >= gamma_max``; at call time a ``z`` that is not ``(B, H, W, in_channels)``, a ``gamma``
            that does not broadcast to it, a ``t`` that is not ``(B,)``, or a ``context`` missing, unexpected or
            not ``(B, context_dim)``.

    Dropout follows the NNX convention: a new module is in training mode; ``model.eval()`` turns dropout off and
    ``model.train()`` on again, and ``deterministic=`` overrides both for one call. The masks come from the
    module's own ``dropout`` stream: ``nnx.reseed(model, dropout=key)`` at the start of a train step makes the
    loss a function of the step's key.

    Example:
        >>> import jax
        >>> import jax.numpy as jnp
        >>> from flax import nnx
        >>> from mulan_ppl.nets import UNet
        >>> unet = UNet(3, num_blocks=1, channels=8, vocab_size=256, context_dim=5, num_groups=4,
        ...             rngs=nnx.Rngs(0))
        >>> z = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
        >>> out = unet(z, jnp.array([0.1, 0.9]), jnp.full((2, 4, 4, 3), -3.0), jnp.ones((2, 5)))
        >>> out.shape, float(jnp.abs(out).max())        # zero-initialised output layer
        ((2, 4, 4, 3), 0.0)

    References:
        1. Kingma, Salimans, Poole, Ho. Variational Diffusion Models, App. B. https://arxiv.org/abs/2107.00630
        2. Sahoo, Gokaslan, De Sa, Kuleshov. Diffusion Models With Learned Adaptive Noise (MuLAN).
           https://arxiv.org/abs/2312.13236
    """

    def __init__(self, in_channels: int, *, num_blocks: int, channels: int, vocab_size: int, dropout: float = 0.0,
                 attention: bool = True, conditioning: str = "mean_gamma", context_dim: int | None = None,
                 gamma_min: float = GAMMA_MIN, gamma_max: float = GAMMA_MAX,
                 fourier_exponents: tuple[int, ...] | None = None, num_groups: int = 32, input_skip: bool = False,
                 dtype=None, param_dtype=jnp.float32, remat: bool = False, rngs: nnx.Rngs):
        where = "UNet"
        self.in_channels = check_positive_int(where, "in_channels", in_channels)
        self.num_blocks = check_positive_int(where, "num_blocks", num_blocks, minimum=0)
        self.channels = width = check_positive_int(where, "channels", channels, minimum=2)
        self.vocab_size = check_positive_int(where, "vocab_size", vocab_size, minimum=2)
        dropout = check_rate(where, "dropout", dropout)
        self.conditioning = check_one_of(where, "conditioning", conditioning, CONDITIONINGS)
        self.context_dim = check_optional_dim(where, "context_dim", context_dim)
        self.gamma_min, self.gamma_max = check_endpoints(where, gamma_min, gamma_max)
        self.fourier_exponents = check_exponents(where, fourier_exponents, self.vocab_size)
        num_groups = check_groups(where, num_groups, width)
        for name, flag in (("attention", attention), ("input_skip", input_skip), ("remat", remat)):
            if not isinstance(flag, bool):
                raise ValueError(f"`{where}`: `{name}` must be a bool; got {flag!r}.")
        self.input_skip, self.remat = input_skip, remat
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        cond_dim = 4 * width
        self.time_in = nnx.Linear(width, cond_dim, **kw)
        self.context_in = None if self.context_dim is None else nnx.Linear(
            self.context_dim, cond_dim, use_bias=False, **kw)
        self.time_hidden = nnx.Linear(cond_dim, cond_dim, **kw)
        extra = self.in_channels if self.conditioning == "gamma_map" else 0
        features = self.in_channels * (1 + 2 * len(self.fourier_exponents)) + extra
        self.conv_in = nnx.Conv(features, width, (3, 3), **kw)
        block = dict(dropout=dropout, num_groups=num_groups, **kw)
        self.down = nnx.List([ResnetBlock(width, width, cond_dim, **block) for _ in range(self.num_blocks)])
        self.mid1 = ResnetBlock(width, width, cond_dim, **block)
        self.mid_attention = AttentionBlock(width, num_groups=num_groups, **kw) if attention else None
        self.mid2 = ResnetBlock(width, width, cond_dim, **block)
        self.up = nnx.List([ResnetBlock(2 * width, width, cond_dim, **block) for _ in range(self.num_blocks + 1)])
        self.norm_out = nnx.GroupNorm(width, num_groups, **kw)
        self.conv_out = nnx.Conv(width, self.in_channels, (3, 3), kernel_init=nnx.initializers.zeros_init(), **kw)

    def _check_inputs(self, z, t, gamma, context):
        where = "UNet"
        z = as_float_array(z, "z", where)
        if z.ndim != 4 or z.shape[-1] != self.in_channels:
            raise ValueError(f"`{where}`: `z` must have shape (B, H, W, in_channels={self.in_channels}); "
                             f"got z.shape={tuple(z.shape)}.")
        batch = z.shape[0]
        if t is not None and jnp.shape(t) != (batch,):
            raise ValueError(f"`{where}`: `t` must have shape (B,) = ({batch},) or be None; "
                             f"got t.shape={jnp.shape(t)}.")
        gamma = as_float_array(gamma, "gamma", where)
        if gamma.shape == (batch,):
            gamma = gamma.reshape(batch, 1, 1, 1)
        check_broadcasts_to(where, "gamma", gamma, z.shape, "z")
        gamma = jnp.broadcast_to(gamma, z.shape)
        if self.context_dim is None:
            if context is not None:
                raise ValueError(f"`{where}`: got a `context` of shape {jnp.shape(context)}, but the network was "
                                 f"built without `context_dim`; pass context=None or build it with context_dim.")
        else:
            if context is None:
                raise ValueError(f"`{where}`: `context` is None, but the network was built with "
                                 f"context_dim={self.context_dim}; pass the auxiliary latent of shape (B, K).")
            context = as_float_array(context, "context", where)
            if context.shape != (batch, self.context_dim):
                raise ValueError(f"`{where}`: `context` must have shape (B, context_dim) = ({batch}, "
                                 f"{self.context_dim}); got context.shape={tuple(context.shape)}.")
        return z, gamma, context

    def __call__(self, z: jax.Array, t: jax.Array | None, gamma: jax.Array, context: jax.Array | None = None, *,
                 deterministic: bool | None = None) -> jax.Array:
        """The prediction for ``z`` ``(B, H, W, C)`` at noise level ``gamma``, of the shape and dtype of ``z``.

        Args:
            z: the noisy data ``z_t``, shape ``(B, H, W, C)``.
            t: the times ``(B,)`` or ``None``; checked and not used (the network sees ``gamma``).
            gamma: the noise levels, ``(B, H, W, C)``, or anything of that rank broadcastable to it, or ``(B,)``.
            context: the auxiliary latent ``(B, K)``, or ``None`` for a network built without ``context_dim``.
            deterministic: overrides the train/eval mode of the dropout layers for this call.
        """
        z, gamma, context = self._check_inputs(z, t, gamma, context)
        span = self.gamma_max - self.gamma_min
        mean_level = (jnp.mean(gamma, axis=(1, 2, 3)) - self.gamma_min) / span
        cond = self.time_in(sinusoidal_embedding(mean_level, self.channels))
        if self.context_in is not None:
            cond = cond + self.context_in(context)
        cond = nnx.swish(self.time_hidden(nnx.swish(cond)))

        inputs = [z, fourier_features(z, self.fourier_exponents)]
        if self.conditioning == "gamma_map":
            inputs.append((gamma - self.gamma_min) / span)
        elif self.conditioning != "mean_gamma":
            raise ValueError(f"`UNet`: unknown conditioning {self.conditioning!r}; expected one of {CONDITIONINGS}.")
        h = self.conv_in(jnp.concatenate(inputs, axis=-1))

        if self.remat:
            apply_block, apply_attention = _checkpointed_block, _checkpointed_attention
        else:
            def apply_block(block, h, cond, deterministic):
                return block(h, cond, deterministic=deterministic)

            def apply_attention(block, h):
                return block(h)
        kept = [h]
        for block in self.down:
            h = apply_block(block, h, cond, deterministic)
            kept.append(h)
        h = apply_block(self.mid1, h, cond, deterministic)
        if self.mid_attention is not None:
            h = apply_attention(self.mid_attention, h)
        h = apply_block(self.mid2, h, cond, deterministic)
        for block in self.up:
            h = apply_block(block, jnp.concatenate([h, kept.pop()], axis=-1), cond, deterministic)
        out = self.conv_out(nnx.swish(self.norm_out(h)))
        if self.input_skip:
            out = out + z
        return out.astype(z.dtype)
