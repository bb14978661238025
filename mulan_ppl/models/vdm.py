"""VDM: a scalar (learned or fixed) schedule and a UNet denoiser, as a top-down HVAE without auxiliary latent."""

from __future__ import annotations

from flax import nnx

from mulan_ppl.core import default_gamma_min
from mulan_ppl.hvae import TopDownDiffusion
from mulan_ppl.nets import UNet
from mulan_ppl.schedules import FixedLinear, LearnedScalar

__all__ = ["VDM"]


class VDM(TopDownDiffusion):
    r"""Variational Diffusion Model (Kingma et al., 2021) built from the library's components.

    Mathematical details:
        The :class:`~mulan_ppl.hvae.TopDownDiffusion` ELBO with a scalar schedule :math:`\gamma(t)` shared by all
        dimensions, no auxiliary latent, and a UNet denoiser told the noise level by the normalised
        :math:`\gamma_t`. ``schedule="learned_scalar"`` is VDM's monotone network with exact endpoints;
        ``schedule_objective="variance"`` trains it to minimise the variance of the diffusion loss, as VDM does.

    Args:
        event_shape: data shape ``(H, W, C)``.
        vocab_size: integer levels of the data.
        parameterization: ``"eps"``, ``"v"`` or ``"x"``.
        gamma_min: lowest noise level; ``None`` derives it from the vocabulary (:func:`~mulan_ppl.core.default_gamma_min`).
        gamma_max: highest noise level.
        schedule: ``"learned_scalar"`` or ``"fixed_linear"``.
        learn_endpoints: learn ``gamma_min``/``gamma_max`` (learned scalar schedule only).
        schedule_objective: ``"elbo"`` or ``"variance"``.
        channels, num_blocks, dropout, attention, conditioning, fourier_exponents: the UNet (see
            :class:`~mulan_ppl.nets.UNet`).
        dtype: computation dtype of the UNet (``jnp.bfloat16`` for mixed precision).
        remat: gradient checkpointing of the UNet blocks.
        rngs: parameter initialisation streams.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> model = VDM((4, 4, 1), vocab_size=17, channels=8, num_blocks=1, rngs=nnx.Rngs(0))
        >>> model.elbo_terms(jnp.zeros((2, 4, 4, 1), jnp.int32), jax.random.key(0))["bpd"].shape
        (2,)
    """

    def __init__(self, event_shape: tuple[int, ...], vocab_size: int, *, parameterization: str = "v",
                 gamma_min: float | None = None, gamma_max: float = 5.0, schedule: str = "learned_scalar",
                 learn_endpoints: bool = False, schedule_objective: str = "elbo", channels: int = 128,
                 num_blocks: int = 32, dropout: float = 0.1, attention: bool = False,
                 conditioning: str = "mean_gamma", fourier_exponents: tuple[int, ...] | None = None,
                 dtype=None, remat: bool = False, rngs: nnx.Rngs):
        gamma_min = default_gamma_min(vocab_size) if gamma_min is None else gamma_min
        if schedule == "learned_scalar":
            gamma_fn = LearnedScalar(gamma_min=gamma_min, gamma_max=gamma_max, learn_endpoints=learn_endpoints,
                                     rngs=rngs)
        elif schedule == "fixed_linear":
            gamma_fn = FixedLinear(gamma_min=gamma_min, gamma_max=gamma_max)
        else:
            raise ValueError(f"`VDM`: `schedule` must be one of ('learned_scalar', 'fixed_linear'); got {schedule!r}.")
        denoiser = UNet(event_shape[-1], num_blocks=num_blocks, channels=channels, vocab_size=vocab_size,
                        dropout=dropout, attention=attention, conditioning=conditioning, context_dim=None,
                        gamma_min=gamma_min, gamma_max=gamma_max, fourier_exponents=fourier_exponents, dtype=dtype,
                        remat=remat, rngs=rngs)
        super().__init__(gamma_fn, denoiser, vocab_size=vocab_size, parameterization=parameterization,
                         schedule_objective=schedule_objective)
        self.event_shape = tuple(event_shape)
