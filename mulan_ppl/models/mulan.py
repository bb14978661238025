"""MuLAN: a per-dimension polynomial schedule conditioned on a k-hot auxiliary latent, as a top-down HVAE."""

from __future__ import annotations

import math

import jax
from flax import nnx

from mulan_ppl._validation import check_one_of, check_positive_int
from mulan_ppl.core import default_gamma_min
from mulan_ppl.distrax import KHot, PerturbedTopK, UniformKHot
from mulan_ppl.hvae import TopDownDiffusion
from mulan_ppl.nets import Encoder, LowRankHead, UNet
from mulan_ppl.schedules import Polynomial, PolynomialHead

__all__ = ["KHotEncoder", "MuLAN"]

LATENTS = ("khot", "perturbed_topk")
HEADS = ("mlp", "low_rank")


class KHotEncoder(nnx.Module):
    r"""The auxiliary-latent posterior q(c | x): an encoder's logits turned into a k-hot distribution.

    Mathematical details:
        ``latent="khot"``: the exact exponential family :math:`q(c|x) \propto \exp\langle\theta(x), c\rangle` over
        k-hot :math:`c` (:class:`~mulan_ppl.distrax.KHot`), whose KL to the uniform prior is exact.
        ``latent="perturbed_topk"``: the paper's perturb-and-MAP sampler (:class:`~mulan_ppl.distrax.PerturbedTopK`,
        sum-of-gamma noise, identity gradient), whose ELBO term is the categorical surrogate.

    Args:
        encoder: module mapping encoded data ``(B, *event)`` to logits ``(B, m)``.
        k: number of ones.
        latent: ``"khot"`` or ``"perturbed_topk"``.

    Example:
        >>> import jax.numpy as jnp
        >>> posterior = KHotEncoder(nnx.Linear(4, 6, rngs=nnx.Rngs(0)), 2)       # logits of m = 6 items, k = 2
        >>> q = posterior(jnp.ones((3, 4)))
        >>> type(q).__name__, q.batch_shape, q.sample(seed=jax.random.key(0)).sum(-1).tolist()
        ('KHot', (3,), [2.0, 2.0, 2.0])
    """

    def __init__(self, encoder: nnx.Module, k: int, *, latent: str = "khot"):
        self.encoder = encoder
        self.k = k
        self.latent = check_one_of("KHotEncoder", "latent", latent, LATENTS)

    def __call__(self, f: jax.Array):
        logits = self.encoder(f)
        if self.latent == "khot":
            return KHot(logits, self.k)
        return PerturbedTopK(logits, self.k)


class MuLAN(TopDownDiffusion):
    r"""MuLAN (Sahoo et al., 2024): learned, multivariate, input-adaptive noise, built from the library's components.

    Mathematical details:
        The :class:`~mulan_ppl.hvae.TopDownDiffusion` ELBO with an auxiliary latent :math:`c \in \{0,1\}^m`,
        :math:`\sum c = k`, posterior :math:`q(c|x)` from an encoder and uniform prior, and the per-dimension
        schedule :math:`\gamma(t, c)` of :class:`~mulan_ppl.schedules.Polynomial` whose coefficients come from a
        head on :math:`c`. The denoiser is conditioned on :math:`c` and on :math:`\gamma_t` (``conditioning``).

    Args:
        event_shape: data shape ``(H, W, C)``.
        vocab_size: integer levels of the data.
        parameterization: ``"eps"``, ``"v"`` (the paper) or ``"x"``.
        gamma_min: lowest noise level; ``None`` derives it from the vocabulary.
        gamma_max: highest noise level.
        num_categories, k: the k-hot latent (paper: m = 50, k = 15).
        latent: ``"khot"`` (exact, the default) or ``"perturbed_topk"`` (the paper's sampler and surrogate KL).
        head: ``"mlp"`` (the paper's 2 × 3072 swish MLP) or ``"low_rank"``.
        head_width, head_depth, head_rank: head size.
        channels, num_blocks, dropout, attention, conditioning, fourier_exponents: the UNet.
        encoder_channels, encoder_blocks: the encoder (paper: 4 ResNet blocks).
        dtype: computation dtype of the networks (``jnp.bfloat16`` for mixed precision; the ELBO algebra stays in
            the data's float dtype).
        remat: recompute UNet blocks in the backward pass (gradient checkpointing) to save memory.
        rngs: parameter initialisation streams.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> model = MuLAN((4, 4, 1), vocab_size=17, channels=8, num_blocks=1, num_categories=6, k=2,
        ...               head_width=16, encoder_channels=8, encoder_blocks=1, rngs=nnx.Rngs(0))
        >>> sorted(model.elbo_terms(jnp.zeros((2, 4, 4, 1), jnp.int32), jax.random.key(0)))
        ['bpd', 'diffusion', 'latent', 'nelbo', 'prior', 'reconstruction']
    """

    def __init__(self, event_shape: tuple[int, ...], vocab_size: int, *, parameterization: str = "v",
                 gamma_min: float | None = None, gamma_max: float = 5.0, num_categories: int = 50, k: int = 15,
                 latent: str = "khot", head: str = "mlp", head_width: int = 3072, head_depth: int = 2,
                 head_rank: int = 16, channels: int = 128, num_blocks: int = 32, dropout: float = 0.1,
                 attention: bool = False, conditioning: str = "mean_gamma",
                 fourier_exponents: tuple[int, ...] | None = None, encoder_channels: int = 64,
                 encoder_blocks: int = 4, dtype=None, remat: bool = False, rngs: nnx.Rngs):
        check_one_of("MuLAN", "head", head, HEADS)
        num_categories = check_positive_int("MuLAN", "num_categories", num_categories)
        event_shape = tuple(event_shape)
        gamma_min = default_gamma_min(vocab_size) if gamma_min is None else gamma_min
        if head == "mlp":
            schedule_head = PolynomialHead(num_categories, event_shape, hidden_width=head_width,
                                           num_hidden=head_depth, rngs=rngs)
        else:
            schedule_head = LowRankHead(num_categories, 3 * math.prod(event_shape), rank=head_rank,
                                        hidden_width=head_width, rngs=rngs)
        gamma_fn = Polynomial(event_shape, context_dim=num_categories, head=schedule_head, gamma_min=gamma_min,
                              gamma_max=gamma_max, rngs=rngs)
        denoiser = UNet(event_shape[-1], num_blocks=num_blocks, channels=channels, vocab_size=vocab_size,
                        dropout=dropout, attention=attention, conditioning=conditioning,
                        context_dim=num_categories, gamma_min=gamma_min, gamma_max=gamma_max,
                        fourier_exponents=fourier_exponents, dtype=dtype, remat=remat, rngs=rngs)
        encoder = Encoder(event_shape, num_categories, num_blocks=encoder_blocks, channels=encoder_channels,
                          vocab_size=vocab_size, fourier_exponents=fourier_exponents, attention=False,
                          dtype=dtype, rngs=rngs)
        super().__init__(gamma_fn, denoiser, vocab_size=vocab_size, parameterization=parameterization,
                         latent_posterior=KHotEncoder(encoder, k, latent=latent),
                         latent_prior=UniformKHot(num_categories, k))
        self.event_shape = event_shape
