"""VDM and MuLAN assembled from the library's components (Flax NNX modules).

:func:`build_model` rebuilds either from a :class:`~mulan_ppl.train.config.ModelConfig` (the run directory's
``config.json``).
"""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from mulan_ppl.models.mulan import KHotEncoder, MuLAN
from mulan_ppl.models.vdm import VDM

__all__ = ["KHotEncoder", "MuLAN", "VDM", "build_model"]


def build_model(config, *, rngs: nnx.Rngs) -> VDM | MuLAN:
    """Builds the model a :class:`~mulan_ppl.train.config.ModelConfig` describes.

    Raises:
        ValueError: an unknown ``config.kind``.

    Example:
        >>> from mulan_ppl.train import ModelConfig
        >>> config = ModelConfig(kind="vdm", event_shape=(4, 4, 1), vocab_size=17, schedule="fixed_linear", channels=8,
        ...                      num_blocks=1, dropout=0.0, attention=False)
        >>> model = build_model(config, rngs=nnx.Rngs(0))
        >>> type(model).__name__, model.event_shape, model.vocab_size
        ('VDM', (4, 4, 1), 17)
    """
    common = dict(parameterization=config.parameterization, gamma_min=config.gamma_min,
                  gamma_max=config.gamma_max, channels=config.channels, num_blocks=config.num_blocks,
                  dropout=config.dropout, attention=config.attention, conditioning=config.conditioning,
                  fourier_exponents=config.fourier_exponents, remat=config.remat,
                  dtype=jnp.bfloat16 if config.bf16 else None, rngs=rngs)
    if config.kind == "vdm":
        return VDM(config.event_shape, config.vocab_size, schedule=config.schedule,
                   learn_endpoints=config.learn_endpoints, schedule_objective=config.schedule_objective, **common)
    if config.kind == "mulan":
        return MuLAN(config.event_shape, config.vocab_size, num_categories=config.num_categories, k=config.k,
                     latent=config.latent, head=config.head, head_width=config.head_width,
                     head_depth=config.head_depth, head_rank=config.head_rank,
                     encoder_channels=config.encoder_channels, encoder_blocks=config.encoder_blocks, **common)
    raise ValueError(f"`build_model`: `kind` must be 'vdm' or 'mulan'; got {config.kind!r}.")
