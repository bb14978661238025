"""Pure ``jax.numpy`` mathematics of the library: no Distrax, NumPyro or TFP imports.

Modules: :mod:`~mulan_ppl.core.stable` (stable primitives), :mod:`~mulan_ppl.core.gaussian` (diffusion algebra),
:mod:`~mulan_ppl.core.parameterization` (eps / v / x / score), :mod:`~mulan_ppl.core.decoder` (integer data and the
discretized decoder).
"""

from mulan_ppl.core.decoder import decode_integers, decoder_logits, default_gamma_min, encode_integers
from mulan_ppl.core.gaussian import (
    diag_normal_entropy,
    diag_normal_log_prob,
    diag_normal_sample,
    forward_marginal,
    forward_transition,
    per_step_kl,
    per_step_kl_eps,
    per_step_kl_x,
    top_down_posterior,
    top_down_posterior_coefficients,
)
from mulan_ppl.core.parameterization import DENOISER_TARGETS, PARAMETERIZATIONS, convert_prediction, score_from_eps
from mulan_ppl.core.stable import (
    alpha_sigma,
    gaussian_kl,
    log1mexp,
    log_alpha_sq,
    log_sigma_sq,
    log_transition_variance,
    snr,
    snr_ratio_minus_one,
    transition_variance,
)

__all__ = [
    "DENOISER_TARGETS",
    "PARAMETERIZATIONS",
    "alpha_sigma",
    "convert_prediction",
    "decode_integers",
    "diag_normal_entropy",
    "diag_normal_log_prob",
    "diag_normal_sample",
    "decoder_logits",
    "default_gamma_min",
    "encode_integers",
    "forward_marginal",
    "forward_transition",
    "gaussian_kl",
    "log1mexp",
    "log_alpha_sq",
    "log_sigma_sq",
    "log_transition_variance",
    "per_step_kl",
    "per_step_kl_eps",
    "per_step_kl_x",
    "score_from_eps",
    "snr",
    "snr_ratio_minus_one",
    "top_down_posterior",
    "top_down_posterior_coefficients",
    "transition_variance",
]
