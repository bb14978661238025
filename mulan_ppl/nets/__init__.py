"""Neural networks (``flax.nnx``): the denoiser, the encoder of the auxiliary latent, and schedule heads.

:class:`UNet` is VDM's and MuLAN's denoiser, called as ``denoiser(z_t, t, gamma_t, context)``; :class:`Encoder` maps
data to the parameters of q(c | x); :class:`MLPHead`, :class:`LowRankHead` and :class:`PolynomialHead` map a context
``(B, K)`` to the numbers a conditioned schedule needs (``Polynomial(event_shape, context_dim=K, head=...)``).
Every module takes keyword-only ``rngs: nnx.Rngs``; ``dtype`` is the computation dtype and ``param_dtype`` that
of the parameters.
"""

from mulan_ppl.nets.blocks import AttentionBlock, ResnetBlock, parameter_count
from mulan_ppl.nets.encoder import ENCODER_OUTPUTS, Encoder
from mulan_ppl.nets.fourier import default_fourier_exponents, fourier_features, sinusoidal_embedding
from mulan_ppl.nets.heads import LowRankHead, MLPHead, PolynomialHead
from mulan_ppl.nets.unet import CONDITIONINGS, UNet

__all__ = [
    "CONDITIONINGS",
    "ENCODER_OUTPUTS",
    "AttentionBlock",
    "Encoder",
    "LowRankHead",
    "MLPHead",
    "PolynomialHead",
    "ResnetBlock",
    "UNet",
    "default_fourier_exponents",
    "fourier_features",
    "parameter_count",
    "sinusoidal_embedding",
]
