"""The top-down hierarchical-VAE view of diffusion: the ELBO assembled from distribution pairs.

:func:`diffusion_term` is the diffusion loss of one (posterior, reverse transition) pair, in discrete time or in
its continuous-time limit; :class:`TopDownDiffusion` composes prior, decoder, schedule, denoiser and an optional
auxiliary latent into named ELBO terms.
"""

from mulan_ppl.hvae.diffusion import PARAMETERIZATIONS, diffusion_term, sample_times
from mulan_ppl.hvae.top_down import TopDownDiffusion, variance_minimizing
from mulan_ppl.hvae.weighted import AdaptiveImportance, AdaptiveImportanceState, weighted_diffusion_term
from mulan_ppl.hvae.weighting import (
    edm_monotone_weighting,
    edm_weighting,
    edm_weighting_peak,
    elbo_weighting,
    iddpm_weighting,
    shifted_weighting,
    sigmoid_weighting,
    v_weighting,
)

__all__ = [
    "PARAMETERIZATIONS",
    "AdaptiveImportance",
    "AdaptiveImportanceState",
    "TopDownDiffusion",
    "diffusion_term",
    "edm_monotone_weighting",
    "edm_weighting",
    "edm_weighting_peak",
    "elbo_weighting",
    "iddpm_weighting",
    "sample_times",
    "shifted_weighting",
    "sigmoid_weighting",
    "v_weighting",
    "variance_minimizing",
    "weighted_diffusion_term",
]
