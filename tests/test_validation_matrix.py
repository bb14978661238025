"""One table of bad inputs for every public entry point: each raises an error that names the call and the argument.

DESIGN.md §5: bad input gets a ``ValueError`` naming the argument and the expected shape or range (a ``TypeError``
for a wrong type), never a silent broadcast or a NaN. The table covers the public functions and constructors of
``mulan_ppl.core``, ``mulan_ppl.distrax`` and ``mulan_ppl.numpyro`` (the same cases for both backends),
``mulan_ppl.schedules``, ``mulan_ppl.hvae.diffusion_term``, the samplers and ``mulan_ppl.likelihood``, with wrong
shapes, wrong dtypes, NaN and Inf inputs, out-of-range integers and hyper-parameters, mismatched batch dims and
non-key keys. Every case is checked with the error type and a regular expression on the message, which starts with
the public call in backticks followed by the argument in backticks. Value checks run eagerly here (the inputs are
concrete); a second table checks the ``jit`` path, where value checks run only with ``validate_args=True`` and fail
at run time (``jax.errors.JaxRuntimeError``, or a ``ValueError`` with the same message once the executable is cached,
under ``jax.jit``; ``equinox.EquinoxRuntimeError`` under ``equinox.filter_jit``; see ``mulan_ppl/_validation.py``).
``tests/test_validation.py`` keeps the per-class checks of the distributions and of the helpers themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import mulan_ppl.distrax as mdx
import mulan_ppl.numpyro as mnp
from mulan_ppl import core, likelihood, sampling, schedules
from mulan_ppl.hvae import TopDownDiffusion, diffusion_term

B, D = 2, 3
X = jnp.linspace(-1.0, 1.0, B * D).reshape(B, D)
NAN = X.at[1, 2].set(jnp.nan)
INF = X.at[0, 1].set(jnp.inf)
BOOL = jnp.zeros((B, D), bool)
COMPLEX = jnp.zeros((B, D), jnp.complex64)
PIXELS = jnp.asarray([[0, 1, 3], [2, 2, 0]])  # integer data with vocab_size 4
KEY = jax.random.key(0)
LOGITS = jnp.asarray([0.5, -1.0, 2.0, 0.0])
T = jnp.asarray([0.2, 0.7])
CONTEXT_DIM = 2


def zeros_denoiser(z, t, gamma, context):
    return jnp.zeros_like(z)


def nan_denoiser(z, t, gamma, context):
    return jnp.full_like(z, jnp.nan)


def narrow_denoiser(z, t, gamma, context):  # drops a data dimension
    return z[:, :-1]


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[], object]
    error: type[Exception]
    match: str


def case(id_: str, error: type[Exception], match: str, call: Callable[[], object]) -> Case:
    return Case(id_, call, error, match)


def _mean(d):
    return d.mean() if callable(d.mean) else d.mean


def _with(value, index=(0, 0), entry=jnp.nan):
    return jnp.asarray(value, jnp.float32).at[index].set(entry)


# ---------------------------------------------------------------------------------------------------------------
# mulan_ppl.core


CORE_CASES = [
    # stable primitives: real dtypes, NumPy broadcasting, no NaN
    case("core.log_alpha_sq/gamma-bool", TypeError, r"^`log_alpha_sq`: `gamma` must be real-valued; got dtype bool",
         lambda: core.log_alpha_sq(BOOL)),
    case("core.log_alpha_sq/gamma-nan", ValueError, r"^`log_alpha_sq`: `gamma` contains NaN",
         lambda: core.log_alpha_sq(NAN)),
    case("core.log_sigma_sq/gamma-str", TypeError, r"^`log_sigma_sq`: `gamma` must be an array; got str",
         lambda: core.log_sigma_sq("0.5")),
    case("core.log_sigma_sq/gamma-nan", ValueError, r"^`log_sigma_sq`: `gamma` contains NaN",
         lambda: core.log_sigma_sq(NAN)),
    case("core.alpha_sigma/gamma-complex", TypeError, r"^`alpha_sigma`: `gamma` must be real-valued",
         lambda: core.alpha_sigma(COMPLEX)),
    case("core.alpha_sigma/gamma-nan", ValueError, r"^`alpha_sigma`: `gamma` contains NaN",
         lambda: core.alpha_sigma(NAN)),
    case("core.snr/gamma-nan", ValueError, r"^`snr`: `gamma` contains NaN", lambda: core.snr(NAN)),
    case("core.snr/gamma-bool", TypeError, r"^`snr`: `gamma` must be real-valued", lambda: core.snr(BOOL)),
    case("core.log1mexp/x-nan", ValueError, r"^`log1mexp`: `x` contains NaN", lambda: core.log1mexp(-jnp.abs(NAN))),
    case("core.transition_variance/gamma_t-shape", ValueError,
         r"^`transition_variance`: `gamma_t` must broadcast against `gamma_s`; got gamma_s\.shape=\(2, 3\), "
         r"gamma_t\.shape=\(2,\)", lambda: core.transition_variance(X, jnp.ones(B))),
    case("core.transition_variance/gamma_t-nan", ValueError, r"^`transition_variance`: `gamma_t` contains NaN",
         lambda: core.transition_variance(X, NAN)),
    case("core.log_transition_variance/gamma_s-shape", ValueError,
         r"^`log_transition_variance`: `gamma_t` must broadcast against `gamma_s`",
         lambda: core.log_transition_variance(jnp.zeros((B, 2)), X)),
    case("core.log_transition_variance/gamma_s-bool", TypeError, r"^`log_transition_variance`: `gamma_s` must be real",
         lambda: core.log_transition_variance(BOOL, X)),
    case("core.snr_ratio_minus_one/gamma_s-nan", ValueError, r"^`snr_ratio_minus_one`: `gamma_s` contains NaN",
         lambda: core.snr_ratio_minus_one(NAN, X)),
    case("core.snr_ratio_minus_one/gamma_t-shape", ValueError, r"^`snr_ratio_minus_one`: `gamma_t` must broadcast",
         lambda: core.snr_ratio_minus_one(X, jnp.zeros((3, 3)))),
    case("core.gaussian_kl/loc_p-shape", ValueError,
         r"^`gaussian_kl`: `loc_p` must broadcast against `loc_q` and `log_var_q`; got .*loc_p\.shape=\(2, 2\)",
         lambda: core.gaussian_kl(X, X, jnp.zeros((B, 2)), X)),
    case("core.gaussian_kl/log_var_q-nan", ValueError, r"^`gaussian_kl`: `log_var_q` contains NaN",
         lambda: core.gaussian_kl(X, NAN, X, X)),
    case("core.gaussian_kl/loc_q-bool", TypeError, r"^`gaussian_kl`: `loc_q` must be real-valued",
         lambda: core.gaussian_kl(BOOL, X, X, X)),
    # Gaussian diffusion algebra
    case("core.forward_marginal/gamma-batch", ValueError,
         r"^`forward_marginal`: `gamma` must broadcast against `x`; got x\.shape=\(2, 3\), gamma\.shape=\(2,\)",
         lambda: core.forward_marginal(X, jnp.zeros(B))),
    case("core.forward_marginal/x-nan", ValueError, r"^`forward_marginal`: `x` contains NaN",
         lambda: core.forward_marginal(NAN, 0.0)),
    case("core.forward_marginal/x-bool", TypeError, r"^`forward_marginal`: `x` must be real-valued",
         lambda: core.forward_marginal(BOOL, 0.0)),
    case("core.forward_transition/gamma_t-batch", ValueError, r"^`forward_transition`: `gamma_t` must broadcast",
         lambda: core.forward_transition(X, -1.0, jnp.ones(B))),
    case("core.forward_transition/z_s-nan", ValueError, r"^`forward_transition`: `z_s` contains NaN",
         lambda: core.forward_transition(NAN, -1.0, 1.0)),
    case("core.forward_transition/gamma_s-complex", TypeError, r"^`forward_transition`: `gamma_s` must be real",
         lambda: core.forward_transition(X, COMPLEX, 1.0)),
    case("core.top_down_posterior_coefficients/gamma_t-shape", ValueError,
         r"^`top_down_posterior_coefficients`: `gamma_t` must broadcast against `gamma_s`",
         lambda: core.top_down_posterior_coefficients(X, jnp.ones(B))),
    case("core.top_down_posterior_coefficients/gamma_s-nan", ValueError,
         r"^`top_down_posterior_coefficients`: `gamma_s` contains NaN",
         lambda: core.top_down_posterior_coefficients(NAN, 1.0)),
    case("core.top_down_posterior/x-batch", ValueError,
         r"^`top_down_posterior`: `x` must broadcast against `z_t`; got z_t\.shape=\(2, 3\), x\.shape=\(3, 3\)",
         lambda: core.top_down_posterior(X, jnp.zeros((3, D)), -1.0, 1.0)),
    case("core.top_down_posterior/gamma_s-nan", ValueError, r"^`top_down_posterior`: `gamma_s` contains NaN",
         lambda: core.top_down_posterior(X, X, NAN, 1.0)),
    case("core.per_step_kl_x/x_hat-shape", ValueError, r"^`per_step_kl_x`: `x_hat` must broadcast",
         lambda: core.per_step_kl_x(-1.0, 1.0, X, jnp.zeros((B, 2)))),
    case("core.per_step_kl_x/x-nan", ValueError, r"^`per_step_kl_x`: `x` contains NaN",
         lambda: core.per_step_kl_x(-1.0, 1.0, NAN, X)),
    case("core.per_step_kl_eps/eps_hat-shape", ValueError, r"^`per_step_kl_eps`: `eps_hat` must broadcast",
         lambda: core.per_step_kl_eps(-1.0, 1.0, X, jnp.zeros((B, 2)))),
    case("core.per_step_kl_eps/eps-nan", ValueError, r"^`per_step_kl_eps`: `eps` contains NaN",
         lambda: core.per_step_kl_eps(-1.0, 1.0, NAN, X)),
    case("core.per_step_kl/prediction-shape", ValueError, r"^`per_step_kl`: `prediction` must broadcast",
         lambda: core.per_step_kl(X, X, -1.0, 1.0, jnp.zeros((B, 2)), parameterization="eps")),
    case("core.per_step_kl/eps-shape", ValueError, r"^`per_step_kl`: `eps` must broadcast",
         lambda: core.per_step_kl(X, X, -1.0, 1.0, X, parameterization="eps", eps=jnp.zeros(B))),
    case("core.per_step_kl/prediction-nan", ValueError, r"^`per_step_kl`: `prediction` contains NaN",
         lambda: core.per_step_kl(X, X, -1.0, 1.0, NAN, parameterization="v")),
    case("core.per_step_kl/parameterization", ValueError,
         r"^`per_step_kl`: `parameterization` must be one of \('eps', 'v', 'x', 'score'\); got 'noise'",
         lambda: core.per_step_kl(X, X, -1.0, 1.0, X, parameterization="noise")),
    case("core.diag_normal_log_prob/value-shape", ValueError,
         r"^`diag_normal_log_prob`: `loc` must broadcast against `value`",
         lambda: core.diag_normal_log_prob(jnp.zeros((B, 2)), X, X)),
    case("core.diag_normal_log_prob/value-nan", ValueError, r"^`diag_normal_log_prob`: `value` contains NaN",
         lambda: core.diag_normal_log_prob(NAN, X, X)),
    case("core.diag_normal_log_prob/value-bool", TypeError, r"^`diag_normal_log_prob`: `value` must be real",
         lambda: core.diag_normal_log_prob(BOOL, X, X)),
    case("core.diag_normal_entropy/log_variance-nan", ValueError,
         r"^`diag_normal_entropy`: `log_variance` contains NaN", lambda: core.diag_normal_entropy(NAN)),
    case("core.diag_normal_sample/key-int", TypeError,
         r"^`diag_normal_sample`: `key` must be a PRNG key from jax.random.key\(seed\); got int",
         lambda: core.diag_normal_sample(0, X, X)),
    case("core.diag_normal_sample/log_variance-shape", ValueError,
         r"^`diag_normal_sample`: `log_variance` must have the shape of `loc`",
         lambda: core.diag_normal_sample(KEY, X, jnp.zeros((B, 1)))),
    case("core.diag_normal_sample/sample_shape", ValueError, r"^`diag_normal_sample`: `sample_shape` must be a tuple",
         lambda: core.diag_normal_sample(KEY, X, X, (-1,))),
    case("core.diag_normal_sample/loc-nan", ValueError, r"^`diag_normal_sample`: `loc` contains NaN",
         lambda: core.diag_normal_sample(KEY, NAN, X)),
    # parameterizations
    case("core.convert_prediction/source", ValueError, r"^`convert_prediction`: `source` must be one of",
         lambda: core.convert_prediction(X, X, 0.0, source="noise", target="x")),
    case("core.convert_prediction/target", ValueError, r"^`convert_prediction`: `target` must be one of",
         lambda: core.convert_prediction(X, X, 0.0, source="eps", target="X")),
    case("core.convert_prediction/z-shape", ValueError,
         r"^`convert_prediction`: `z` must have the shape of `prediction`; got prediction\.shape=\(2, 3\), "
         r"z\.shape=\(1, 3\)", lambda: core.convert_prediction(X, jnp.zeros((1, D)), 0.0, source="eps", target="x")),
    case("core.convert_prediction/gamma-shape", ValueError, r"^`convert_prediction`: `gamma` must broadcast",
         lambda: core.convert_prediction(X, X, jnp.zeros(B), source="eps", target="x")),
    case("core.convert_prediction/prediction-nan", ValueError, r"^`convert_prediction`: `prediction` contains NaN",
         lambda: core.convert_prediction(NAN, X, 0.0, source="eps", target="x")),
    case("core.score_from_eps/eps-nan", ValueError, r"^`score_from_eps`: `eps` contains NaN",
         lambda: core.score_from_eps(0.0, NAN)),
    case("core.score_from_eps/eps-shape", ValueError, r"^`score_from_eps`: `eps` must broadcast against `gamma`",
         lambda: core.score_from_eps(jnp.zeros(B), X)),
    # integer data and the decoder
    case("core.encode_integers/vocab_size", ValueError, r"^`encode_integers`: `vocab_size` must be an integer >= 2",
         lambda: core.encode_integers(PIXELS, 1)),
    case("core.encode_integers/x-out-of-range", ValueError,
         r"^`encode_integers`: `x` must hold integers in \[0, 4\); got min=0, max=4 \(1 invalid entries\)",
         lambda: core.encode_integers(PIXELS.at[0, 0].set(4), 4)),
    case("core.encode_integers/x-bool", TypeError, r"^`encode_integers`: `x` must be integer pixel values",
         lambda: core.encode_integers(BOOL, 4)),
    case("core.decode_integers/vocab_size", ValueError, r"^`decode_integers`: `vocab_size` must be an integer >= 2",
         lambda: core.decode_integers(X, 0)),
    case("core.decode_integers/f-nan", ValueError, r"^`decode_integers`: `f` contains NaN",
         lambda: core.decode_integers(NAN, 4)),
    case("core.default_gamma_min/vocab_size", ValueError,
         r"^`default_gamma_min`: `vocab_size` must be an integer >= 2; got vocab_size=0",
         lambda: core.default_gamma_min(0)),
    case("core.decoder_logits/vocab_size", ValueError, r"^`decoder_logits`: `vocab_size` must be an integer >= 2",
         lambda: core.decoder_logits(X, -5.0, 2.5)),
    case("core.decoder_logits/gamma_0-batch", ValueError,
         r"^`decoder_logits`: `gamma_0` must broadcast against `z_0`",
         lambda: core.decoder_logits(X, jnp.zeros(B), 4)),
    case("core.decoder_logits/gamma_0-rank", ValueError,
         r"^`decoder_logits`: `gamma_0` must broadcast to the shape of `z_0`",
         lambda: core.decoder_logits(X, jnp.zeros((1, B, D)), 4)),
    case("core.decoder_logits/z_0-nan", ValueError, r"^`decoder_logits`: `z_0` contains NaN",
         lambda: core.decoder_logits(NAN, -5.0, 4)),
    # dequantization densities
    case("core.truncation_bound/vocab_size", ValueError, r"^`truncation_bound`: `vocab_size` must be an integer >= 2",
         lambda: core.truncation_bound(-13.3, 1)),
    case("core.truncation_bound/gamma_0-nan", ValueError, r"^`truncation_bound`: `gamma_0` contains NaN",
         lambda: core.truncation_bound(NAN, 4)),
    case("core.truncated_normal_log_normalizer/tau-negative", ValueError,
         r"^`truncated_normal_log_normalizer`: `tau` must be > 0; got min\(tau\)=-1\.0",
         lambda: core.truncated_normal_log_normalizer(jnp.asarray([2.0, -1.0]))),
    case("core.truncated_normal_log_normalizer/tau-nan", ValueError,
         r"^`truncated_normal_log_normalizer`: `tau` contains NaN",
         lambda: core.truncated_normal_log_normalizer(jnp.asarray([2.0, jnp.nan]))),
    case("core.truncated_normal_log_prob/u-shape", ValueError,
         r"^`truncated_normal_log_prob`: `tau` must broadcast against `u`",
         lambda: core.truncated_normal_log_prob(X, jnp.ones(B))),
    case("core.truncated_normal_log_prob/u-nan", ValueError, r"^`truncated_normal_log_prob`: `u` contains NaN",
         lambda: core.truncated_normal_log_prob(NAN, 3.0)),
    case("core.truncated_normal_log_prob/tau-zero", ValueError, r"^`truncated_normal_log_prob`: `tau` must be > 0",
         lambda: core.truncated_normal_log_prob(X, 0.0)),
    case("core.truncated_normal_entropy/tau-bool", TypeError, r"^`truncated_normal_entropy`: `tau` must be real",
         lambda: core.truncated_normal_entropy(jnp.ones(2, bool))),
    case("core.truncated_normal_entropy/tau-negative", ValueError, r"^`truncated_normal_entropy`: `tau` must be > 0",
         lambda: core.truncated_normal_entropy(-0.5)),
    # the probability-flow drift
    case("core.probability_flow_drift/parameterization", ValueError,
         r"^`probability_flow_drift`: `parameterization` must be one of",
         lambda: core.probability_flow_drift(X, X, 0.0, 1.0, parameterization="noise")),
    case("core.probability_flow_drift/prediction-shape", ValueError,
         r"^`probability_flow_drift`: `prediction` must have the shape of `z`",
         lambda: core.probability_flow_drift(X, jnp.zeros((1, D)), 0.0, 1.0, parameterization="eps")),
    case("core.probability_flow_drift/gamma_rate-nan", ValueError,
         r"^`probability_flow_drift`: `gamma_rate` contains NaN",
         lambda: core.probability_flow_drift(X, X, 0.0, NAN, parameterization="eps")),
    # the k-subset family and perturb-and-MAP
    case("core.khot_log_normalizer/k-above-m", ValueError,
         r"^`khot_log_normalizer`: `k` must satisfy 0 <= k <= num_categories = 4; got k=5",
         lambda: core.khot_log_normalizer(LOGITS, 5)),
    case("core.khot_log_normalizer/k-float", ValueError, r"^`khot_log_normalizer`: `k` must be a Python int",
         lambda: core.khot_log_normalizer(LOGITS, 1.5)),
    case("core.khot_log_normalizer/logits-scalar", ValueError,
         r"^`khot_log_normalizer`: `logits` must have rank >= 1 .* got logits\.shape=\(\)",
         lambda: core.khot_log_normalizer(jnp.zeros(()), 0)),
    case("core.khot_log_normalizer/logits-nan", ValueError, r"^`khot_log_normalizer`: `logits` contains NaN",
         lambda: core.khot_log_normalizer(_with(LOGITS, 1), 2)),
    case("core.khot_log_normalizer/logits-inf", ValueError,
         r"^`khot_log_normalizer`: `logits` must be finite; got 1 infinite entries",
         lambda: core.khot_log_normalizer(_with(LOGITS, 1, jnp.inf), 2)),
    case("core.khot_log_normalizer/logits-bool", TypeError, r"^`khot_log_normalizer`: `logits` must be real",
         lambda: core.khot_log_normalizer(jnp.ones(4, bool), 2)),
    case("core.khot_marginals/k-negative", ValueError, r"^`khot_marginals`: `k` must satisfy 0 <= k",
         lambda: core.khot_marginals(LOGITS, -1)),
    case("core.khot_marginals/logits-nan", ValueError, r"^`khot_marginals`: `logits` contains NaN",
         lambda: core.khot_marginals(_with(LOGITS, 0), 2)),
    case("core.khot_log_prob/value-categories", ValueError,
         r"^`khot_log_prob`: `value` must have the categories on its last axis, shape \(\.\.\., 4\)",
         lambda: core.khot_log_prob(jnp.ones(3), LOGITS, 2)),
    case("core.khot_log_prob/value-batch", ValueError,
         r"^`khot_log_prob`: `value` must broadcast against `logits`; got logits\.shape=\(2, 4\), "
         r"value\.shape=\(3, 4\)",
         lambda: core.khot_log_prob(jnp.zeros((3, 4)).at[:, :2].set(1.0), jnp.zeros((2, 4)), 2)),
    case("core.khot_entropy/k-bool", ValueError, r"^`khot_entropy`: `k` must be a Python int",
         lambda: core.khot_entropy(LOGITS, True)),
    case("core.kl_khot_uniform/logits-inf", ValueError, r"^`kl_khot_uniform`: `logits` must be finite",
         lambda: core.kl_khot_uniform(_with(LOGITS, 2, -jnp.inf), 2)),
    case("core.kl_khot_khot/categories", ValueError,
         r"^`kl_khot_khot`: `logits_q` and `logits_p` must have the same number of categories",
         lambda: core.kl_khot_khot(LOGITS, jnp.zeros(5), 2)),
    case("core.kl_khot_khot/batch", ValueError,
         r"^`kl_khot_khot`: `logits_p` must broadcast against `logits_q`; got logits_q\.shape=\(2, 4\), "
         r"logits_p\.shape=\(3, 4\)", lambda: core.kl_khot_khot(jnp.zeros((2, 4)), jnp.zeros((3, 4)), 2)),
    case("core.kl_khot_khot/logits_p-nan", ValueError, r"^`kl_khot_khot`: `logits_p` contains NaN",
         lambda: core.kl_khot_khot(LOGITS, _with(LOGITS, 3), 2)),
    case("core.kl_uniform_khot/k-above-m", ValueError, r"^`kl_uniform_khot`: `k` must satisfy",
         lambda: core.kl_uniform_khot(LOGITS, 7)),
    case("core.top_k_mask/scores-nan", ValueError, r"^`top_k_mask`: `scores` contains NaN",
         lambda: core.top_k_mask(_with(LOGITS, 0), 2)),
    case("core.top_k_mask/k-above-m", ValueError, r"^`top_k_mask`: `k` must satisfy", lambda: core.top_k_mask(LOGITS, 9)),
    case("core.khot_mode/logits-scalar", ValueError, r"^`khot_mode`: `logits` must have rank >= 1",
         lambda: core.khot_mode(1.0, 1)),
    case("core.khot_sample/key-int", TypeError, r"^`khot_sample`: `key` must be a PRNG key",
         lambda: core.khot_sample(LOGITS, 0, 2)),
    case("core.khot_sample/key-float", TypeError,
         r"^`khot_sample`: `key` must be a PRNG key .* got an array of dtype float32 and shape \(2,\)",
         lambda: core.khot_sample(LOGITS, jnp.zeros(2), 2)),
    case("core.khot_sample/gradient", ValueError, r"^`khot_sample`: `gradient` must be one of",
         lambda: core.khot_sample(LOGITS, KEY, 2, gradient="identity")),
    case("core.khot_sample/sample_shape", ValueError, r"^`khot_sample`: `sample_shape` must hold non-negative ints",
         lambda: core.khot_sample(LOGITS, KEY, 2, (-2,))),
    case("core.khot_sample/logits-nan", ValueError, r"^`khot_sample`: `logits` contains NaN",
         lambda: core.khot_sample(_with(LOGITS, 0), KEY, 2)),
    case("core.enumerate_khot/num_categories-large", ValueError,
         r"^`enumerate_khot`: `num_categories` must be at most 16", lambda: core.enumerate_khot(17, 2)),
    case("core.enumerate_khot/k-above-m", ValueError, r"^`enumerate_khot`: `k` must satisfy",
         lambda: core.enumerate_khot(3, 4)),
    case("core.log_num_khot/num_categories", ValueError,
         r"^`log_num_khot`: `num_categories` must be an integer >= 1", lambda: core.log_num_khot(0, 0)),
    case("core.uniform_khot_sample/key-int", TypeError, r"^`uniform_khot_sample`: `key` must be a PRNG key",
         lambda: core.uniform_khot_sample(1, 4, 2)),
    case("core.uniform_khot_sample/k-above-m", ValueError, r"^`uniform_khot_sample`: `k` must satisfy",
         lambda: core.uniform_khot_sample(KEY, 4, 5)),
    case("core.sum_of_gamma_noise/k", ValueError, r"^`sum_of_gamma_noise`: `k` must be an integer >= 1; got k=0",
         lambda: core.sum_of_gamma_noise(KEY, (3,), 0)),
    case("core.sum_of_gamma_noise/temperature", ValueError,
         r"^`sum_of_gamma_noise`: `temperature` must be finite and > 0", lambda: core.sum_of_gamma_noise(
             KEY, (3,), 2, temperature=-1.0)),
    case("core.sum_of_gamma_noise/num_terms", ValueError, r"^`sum_of_gamma_noise`: `num_terms` must be an integer",
         lambda: core.sum_of_gamma_noise(KEY, (3,), 2, num_terms=0)),
    case("core.sum_of_gamma_noise/key-int", TypeError, r"^`sum_of_gamma_noise`: `key` must be a PRNG key",
         lambda: core.sum_of_gamma_noise(3, (3,), 2)),
    case("core.perturbed_top_k/noise", ValueError, r"^`perturbed_top_k`: `noise` must be one of",
         lambda: core.perturbed_top_k(LOGITS, KEY, 2, noise="gauss")),
    case("core.perturbed_top_k/gradient", ValueError, r"^`perturbed_top_k`: `gradient` must be one of",
         lambda: core.perturbed_top_k(LOGITS, KEY, 2, gradient="simple")),
    case("core.perturbed_top_k/temperature-nan", ValueError, r"^`perturbed_top_k`: `temperature` must be finite",
         lambda: core.perturbed_top_k(LOGITS, KEY, 2, temperature=float("nan"))),
    case("core.perturbed_top_k/temperature-shape", ValueError, r"^`perturbed_top_k`: `temperature` must be a scalar",
         lambda: core.perturbed_top_k(LOGITS, KEY, 2, temperature=jnp.ones(4))),
    case("core.perturbed_top_k/key-int", TypeError, r"^`perturbed_top_k`: `key` must be a PRNG key",
         lambda: core.perturbed_top_k(LOGITS, 7, 2)),
    case("core.perturbed_top_k/logits-inf", ValueError, r"^`perturbed_top_k`: `logits` must be finite",
         lambda: core.perturbed_top_k(_with(LOGITS, 0, jnp.inf), KEY, 2)),
    case("core.categorical_surrogate_kl/logits-scalar", ValueError,
         r"^`categorical_surrogate_kl`: `logits` must have rank >= 1", lambda: core.categorical_surrogate_kl(0.0)),
    case("core.categorical_surrogate_kl/logits-nan", ValueError, r"^`categorical_surrogate_kl`: `logits` contains NaN",
         lambda: core.categorical_surrogate_kl(_with(LOGITS, 2))),
]


# ---------------------------------------------------------------------------------------------------------------
# mulan_ppl.distrax and mulan_ppl.numpyro: the same cases for both backends


def _kl(mod, q, p):
    if mod is mdx:
        return q.kl_divergence(p)
    from numpyro.distributions.kl import kl_divergence

    return kl_divergence(q, p)


def _distribution_cases(backend: str, mod) -> list[Case]:
    fm = lambda *a, **k: mod.ForwardMarginal(*a, **k)
    ft = lambda *a, **k: mod.ForwardTransition(*a, **k)
    tdp = lambda *a, **k: mod.TopDownPosterior(*a, **k)
    rt = lambda *a, **k: mod.ReverseTransition(*a, **k)
    dec = lambda *a, **k: mod.DiscretizedGaussianDecoder(*a, **k)
    cases = [
        # ForwardMarginal
        ("ForwardMarginal/x-bool", TypeError, r"^`ForwardMarginal`: `x` must be real-valued",
         lambda: fm(BOOL, 0.0)),
        ("ForwardMarginal/gamma-batch", ValueError, r"^`ForwardMarginal`: `gamma` must be a scalar or have the rank",
         lambda: fm(X, jnp.zeros(B))),
        ("ForwardMarginal/x-inf", ValueError, r"^`ForwardMarginal`: `x` must be finite; got 1 infinite entries",
         lambda: fm(INF, 0.0)),
        ("ForwardMarginal/gamma-inf", ValueError, r"^`ForwardMarginal`: `gamma` must be finite",
         lambda: fm(X, jnp.inf)),
        ("ForwardMarginal/gamma-nan", ValueError, r"^`ForwardMarginal`: `gamma` contains NaN",
         lambda: fm(X, jnp.nan)),
        ("ForwardMarginal/event_ndims", ValueError, r"^`ForwardMarginal`: `event_ndims` must be in \[0, 2\]",
         lambda: fm(X, 0.0, event_ndims=3)),
        ("ForwardMarginal.log_prob/value-shape", ValueError,
         (r"^`ForwardMarginal\.log_prob`: `value` must have shape \(\*sample_shape, \*batch_shape, \*event_shape\) "
          r"= \(\.\.\., 2, 3\) .* got value\.shape=\(2, 2\)"), lambda: fm(X, 0.0).log_prob(jnp.zeros((B, 2)))),
        ("ForwardMarginal.log_prob/value-rank", ValueError,
         r"^`ForwardMarginal\.log_prob`: `value` must have shape .* got value\.shape=\(3,\)",
         lambda: fm(X, 0.0).log_prob(jnp.zeros(D))),
        ("ForwardMarginal.log_prob/value-batch", ValueError,
         r"^`ForwardMarginal\.log_prob`: `value` must have shape .* got value\.shape=\(5, 3, 3\)",
         lambda: fm(X, 0.0).log_prob(jnp.zeros((5, 3, D)))),
        ("ForwardMarginal.log_prob/value-nan", ValueError, r"^`ForwardMarginal\.log_prob`: `value` contains NaN",
         lambda: fm(X, 0.0).log_prob(NAN)),
        ("ForwardMarginal.log_prob/value-bool", TypeError, r"^`ForwardMarginal\.log_prob`: `value` must be real",
         lambda: fm(X, 0.0).log_prob(BOOL)),
        # ForwardTransition
        ("ForwardTransition/z_s-complex", TypeError, r"^`ForwardTransition`: `z_s` must be real-valued",
         lambda: ft(COMPLEX, -1.0, 1.0)),
        ("ForwardTransition/gamma_t-batch", ValueError, r"^`ForwardTransition`: `gamma_t` must be a scalar",
         lambda: ft(X, -1.0, jnp.zeros(B))),
        ("ForwardTransition/gamma_s-inf", ValueError, r"^`ForwardTransition`: `gamma_s` must be finite",
         lambda: ft(X, -jnp.inf, 1.0)),
        ("ForwardTransition/z_s-nan", ValueError, r"^`ForwardTransition`: `z_s` contains NaN",
         lambda: ft(NAN, -1.0, 1.0)),
        ("ForwardTransition.log_prob/value-shape", ValueError, r"^`ForwardTransition\.log_prob`: `value` must have",
         lambda: ft(X, -1.0, 1.0).log_prob(jnp.zeros((B, D, 1)))),
        # TopDownPosterior (and from_noise)
        ("TopDownPosterior/x-shape", ValueError,
         r"^`TopDownPosterior`: `x` must have the same shape as `z_t`; got z_t\.shape=\(2, 3\), x\.shape=\(2, 2\)",
         lambda: tdp(X, jnp.zeros((B, 2)), -1.0, 1.0)),
        ("TopDownPosterior/x-batch", ValueError, r"^`TopDownPosterior`: `x` must have the same shape as `z_t`",
         lambda: tdp(X, jnp.zeros((3, D)), -1.0, 1.0)),
        ("TopDownPosterior/eps-shape", ValueError, r"^`TopDownPosterior`: `eps` must have the same shape as `z_t`",
         lambda: tdp(X, X, -1.0, 1.0, eps=jnp.zeros(D))),
        ("TopDownPosterior/z_t-inf", ValueError, r"^`TopDownPosterior`: `z_t` must be finite",
         lambda: tdp(INF, X, -1.0, 1.0)),
        ("TopDownPosterior/gamma_t-nan", ValueError, r"^`TopDownPosterior`: `gamma_t` contains NaN",
         lambda: tdp(X, X, -1.0, jnp.full((B, 1), jnp.nan))),
        ("TopDownPosterior/x-bool", TypeError, r"^`TopDownPosterior`: `x` must be real-valued",
         lambda: tdp(X, BOOL, -1.0, 1.0)),
        ("TopDownPosterior.from_noise/eps-shape", ValueError,
         r"^`TopDownPosterior\.from_noise`: `eps` must have the same shape as `x`",
         lambda: mod.TopDownPosterior.from_noise(X, jnp.zeros((1, D)), -1.0, 1.0)),
        ("TopDownPosterior.from_noise/x-inf", ValueError, r"^`TopDownPosterior\.from_noise`: `x` must be finite",
         lambda: mod.TopDownPosterior.from_noise(INF, X, -1.0, 1.0)),
        ("TopDownPosterior.log_prob/value-nan", ValueError, r"^`TopDownPosterior\.log_prob`: `value` contains NaN",
         lambda: tdp(X, X, -1.0, 1.0).log_prob(NAN)),
        # ReverseTransition (and from_prediction)
        ("ReverseTransition/x_hat-shape", ValueError,
         r"^`ReverseTransition`: `x_hat` must have the same shape as `z_t`", lambda: rt(X, jnp.zeros((B, 2)), -1.0, 1.0)),
        ("ReverseTransition/log_variance-batch", ValueError,
         r"^`ReverseTransition`: `log_variance` must be a scalar or have the rank of `z_t`",
         lambda: rt(X, X, -1.0, 1.0, log_variance=jnp.zeros(B))),
        ("ReverseTransition/log_variance-nan", ValueError, r"^`ReverseTransition`: `log_variance` contains NaN",
         lambda: rt(X, X, -1.0, 1.0, log_variance=NAN)),
        ("ReverseTransition/z_t-inf", ValueError, r"^`ReverseTransition`: `z_t` must be finite",
         lambda: rt(INF, X, -1.0, 1.0)),
        ("ReverseTransition/x_hat-bool", TypeError, r"^`ReverseTransition`: `x_hat` must be real-valued",
         lambda: rt(X, BOOL, -1.0, 1.0)),
        ("ReverseTransition.from_prediction/parameterization", ValueError,
         r"^`ReverseTransition`: `parameterization` must be one of \('eps', 'v', 'x', 'score'\); got 'noise'",
         lambda: mod.ReverseTransition.from_prediction(X, X, -1.0, 1.0, parameterization="noise")),
        ("ReverseTransition.from_prediction/prediction-inf", ValueError,
         r"^`ReverseTransition`: `prediction` must be finite",
         lambda: mod.ReverseTransition.from_prediction(X, INF, -1.0, 1.0, parameterization="eps")),
        ("kl(TopDownPosterior, ReverseTransition)/z_t", ValueError,
         (r"^`kl_divergence\(TopDownPosterior, ReverseTransition\)`: both must describe the same step, with "
          r"equal `z_t`"), lambda: _kl(mod, tdp(X, X, -1.0, 1.0), rt(0.5 * X, X, -1.0, 1.0))),
        ("kl(ForwardMarginal, ForwardMarginal)/event-shape", ValueError, r"^`kl_divergence`: event shapes differ",
         lambda: _kl(mod, fm(X, 0.0), fm(X, 0.0, event_ndims=2))),
        # DiscretizedGaussianDecoder
        ("DiscretizedGaussianDecoder/vocab_size-1", ValueError,
         r"^`DiscretizedGaussianDecoder`: `vocab_size` must be an integer >= 2; got vocab_size=1",
         lambda: dec(X, -5.0, 1)),
        ("DiscretizedGaussianDecoder/vocab_size-str", ValueError,
         r"^`DiscretizedGaussianDecoder`: `vocab_size` must be an integer >= 2; got '256'", lambda: dec(X, -5.0, "256")),
        ("DiscretizedGaussianDecoder/gamma_0-batch", ValueError,
         r"^`DiscretizedGaussianDecoder`: `gamma_0` must be a scalar or have the rank of `z_0`",
         lambda: dec(X, jnp.zeros(B), 4)),
        ("DiscretizedGaussianDecoder/z_0-inf", ValueError, r"^`DiscretizedGaussianDecoder`: `z_0` must be finite",
         lambda: dec(INF, -5.0, 4)),
        ("DiscretizedGaussianDecoder/z_0-bool", TypeError, r"^`DiscretizedGaussianDecoder`: `z_0` must be real",
         lambda: dec(BOOL, -5.0, 4)),
        ("DiscretizedGaussianDecoder.log_prob/value-V", ValueError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must hold integers in \[0, 4\); got min=0, max=4",
         lambda: dec(X, -5.0, 4).log_prob(PIXELS.at[1, 1].set(4))),
        ("DiscretizedGaussianDecoder.log_prob/value-negative", ValueError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must hold integers in \[0, 4\); got min=-1",
         lambda: dec(X, -5.0, 4).log_prob(PIXELS.at[0, 0].set(-1))),
        ("DiscretizedGaussianDecoder.log_prob/value-fraction", ValueError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must hold integers in \[0, 4\)",
         lambda: dec(X, -5.0, 4).log_prob(jnp.full((B, D), 1.5))),
        ("DiscretizedGaussianDecoder.log_prob/value-nan", ValueError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must hold integers in \[0, 4\)",
         lambda: dec(X, -5.0, 4).log_prob(PIXELS.astype(jnp.float32).at[0, 0].set(jnp.nan))),
        ("DiscretizedGaussianDecoder.log_prob/value-shape", ValueError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must have shape .* got value\.shape=\(2, 2\)",
         lambda: dec(X, -5.0, 4).log_prob(PIXELS[:, :2])),
        ("DiscretizedGaussianDecoder.log_prob/value-rank", ValueError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must have shape .* got value\.shape=\(3,\)",
         lambda: dec(X, -5.0, 4).log_prob(PIXELS[0])),
        ("DiscretizedGaussianDecoder.log_prob/value-bool", TypeError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must be integer pixel values",
         lambda: dec(X, -5.0, 4).log_prob(BOOL)),
        # KHot, UniformKHot, PerturbedTopK
        ("KHot/k-above-m", ValueError, r"^`KHot`: `k` must satisfy 0 <= k <= num_categories = 4; got k=5",
         lambda: mod.KHot(LOGITS, 5)),
        ("KHot/k-float", ValueError, r"^`KHot`: `k` must be a Python int", lambda: mod.KHot(LOGITS, 2.0)),
        ("KHot/logits-scalar", ValueError, r"^`KHot`: `logits` must have rank >= 1", lambda: mod.KHot(0.0, 0)),
        ("KHot/logits-nan", ValueError, r"^`KHot`: `logits` contains NaN", lambda: mod.KHot(_with(LOGITS, 1), 2)),
        ("KHot/logits-inf", ValueError, r"^`KHot`: `logits` must be finite",
         lambda: mod.KHot(_with(LOGITS, 1, jnp.inf), 2)),
        ("KHot/logits-bool", TypeError, r"^`KHot`: `logits` must be real-valued",
         lambda: mod.KHot(jnp.ones(4, bool), 2)),
        ("KHot/gradient", ValueError, r"^`KHot`: `gradient` must be one of \('simple', 'straight_through', 'none'\)",
         lambda: mod.KHot(LOGITS, 2, gradient="identity")),
        ("KHot.log_prob/value-categories", ValueError, r"^`khot_log_prob`: `value` must have the categories",
         lambda: mod.KHot(LOGITS, 2).log_prob(jnp.ones(3))),
        ("UniformKHot/num_categories", ValueError, r"^`UniformKHot`: `num_categories` must be an integer >= 1",
         lambda: mod.UniformKHot(0, 0)),
        ("UniformKHot/k-above-m", ValueError, r"^`UniformKHot`: `k` must satisfy 0 <= k <= num_categories = 3",
         lambda: mod.UniformKHot(3, 4)),
        ("UniformKHot.log_prob/value-categories", ValueError,
         r"^`UniformKHot\.log_prob`: `value` must have the categories on its last axis",
         lambda: mod.UniformKHot(4, 2).log_prob(jnp.ones(5))),
        ("kl(KHot, UniformKHot)/num_categories", ValueError,
         r"^`kl_divergence\(KHot, UniformKHot\)`: both distributions must have the same `num_categories` and `k`",
         lambda: _kl(mod, mod.KHot(LOGITS, 2), mod.UniformKHot(5, 2))),
        ("kl(KHot, KHot)/k", ValueError, r"^`kl_divergence\(KHot, KHot\)`: both distributions must have the same",
         lambda: _kl(mod, mod.KHot(LOGITS, 2), mod.KHot(LOGITS, 1))),
        ("PerturbedTopK/temperature-zero", ValueError, r"^`PerturbedTopK`: `temperature` must be finite and > 0",
         lambda: mod.PerturbedTopK(LOGITS, 2, temperature=0.0)),
        ("PerturbedTopK/temperature-shape", ValueError, r"^`PerturbedTopK`: `temperature` must be a scalar",
         lambda: mod.PerturbedTopK(LOGITS, 2, temperature=jnp.ones(2))),
        ("PerturbedTopK/noise", ValueError, r"^`PerturbedTopK`: `noise` must be one of",
         lambda: mod.PerturbedTopK(LOGITS, 2, noise="gauss")),
        ("PerturbedTopK/gradient", ValueError, r"^`PerturbedTopK`: `gradient` must be one of",
         lambda: mod.PerturbedTopK(LOGITS, 2, gradient="simple")),
        ("PerturbedTopK/num_terms", ValueError, r"^`PerturbedTopK`: `num_terms` must be an integer >= 1",
         lambda: mod.PerturbedTopK(LOGITS, 2, num_terms=0)),
        ("PerturbedTopK/logits-nan", ValueError, r"^`PerturbedTopK`: `logits` contains NaN",
         lambda: mod.PerturbedTopK(_with(LOGITS, 0), 2)),
        ("PerturbedTopK/k-above-m", ValueError, r"^`PerturbedTopK`: `k` must satisfy",
         lambda: mod.PerturbedTopK(LOGITS, 6)),
    ]
    return [case(f"{backend}.{id_}", error, match, call) for id_, error, match, call in cases]


def _numpyro_program_cases() -> list[Case]:
    chain = lambda *a, **k: mnp.ReverseChain(*a, **k)
    programs = lambda **k: mnp.DiffusionPrograms(schedules.FixedLinear(), zeros_denoiser, **k)
    return [
        case("numpyro.ReverseChain/parameterization", ValueError, r"^`ReverseChain`: `parameterization` must be one of",
             lambda: chain(X, schedules.FixedLinear(), zeros_denoiser, parameterization="noise")),
        case("numpyro.ReverseChain/denoiser", TypeError, r"^`ReverseChain`: `denoiser` must be callable; got NoneType",
             lambda: chain(X, schedules.FixedLinear(), None)),
        case("numpyro.ReverseChain/z_1-bool", TypeError, r"^`ReverseChain`: `z_1` must be real-valued",
             lambda: chain(BOOL, schedules.FixedLinear(), zeros_denoiser)),
        case("numpyro.ReverseChain/z_1-nan", ValueError, r"^`ReverseChain`: `z_1` contains NaN",
             lambda: chain(NAN, schedules.FixedLinear(), zeros_denoiser)),
        case("numpyro.ReverseChain/event_ndims", ValueError, r"^`ReverseChain`: `event_ndims` must be in \[0, 2\]",
             lambda: chain(X, schedules.FixedLinear(), zeros_denoiser, event_ndims=5)),
        case("numpyro.DiffusionPrograms/vocab_size", ValueError,
             r"^`DiffusionPrograms`: `vocab_size` must be an integer >= 2", lambda: programs(vocab_size=1)),
        case("numpyro.DiffusionPrograms/num_steps", ValueError,
             r"^`DiffusionPrograms`: `num_steps` must be an integer >= 1", lambda: programs(vocab_size=4, num_steps=0)),
        case("numpyro.DiffusionPrograms/latent_prior", ValueError,
             r"^`DiffusionPrograms`: `latent_posterior` and `latent_prior` must be given together",
             lambda: programs(vocab_size=4, latent_prior=mnp.UniformKHot(4, 2))),
        case("numpyro.DiffusionPrograms.model/x-out-of-range", ValueError,
             r"^`DiffusionPrograms\.model`: `x` must hold integers in \[0, 4\)",
             lambda: programs(vocab_size=4).model(PIXELS.at[0, 2].set(9))),
        case("numpyro.DiffusionELBO/num_particles", ValueError,
             r"^`DiffusionELBO`: `num_particles` must be an integer >= 1", lambda: mnp.DiffusionELBO(num_particles=0)),
        case("numpyro.DiffusionELBO/all_levels", ValueError, r"^`DiffusionELBO`: `all_levels` needs an integer",
             lambda: mnp.DiffusionELBO(all_levels=True)),
        case("numpyro.KHotConstraint/k", ValueError, r"^`KHotConstraint`: `k` must be an integer >= 0",
             lambda: mnp.KHotConstraint(-1)),
    ]


# ---------------------------------------------------------------------------------------------------------------
# mulan_ppl.schedules


def _polynomial(**kwargs):
    return schedules.Polynomial((D,), context_dim=CONTEXT_DIM, hidden_width=4, rngs=nnx.Rngs(0), **kwargs)


def _film(**kwargs):
    return schedules.MonotoneFiLM((D,), context_dim=CONTEXT_DIM, hidden_width=4, film_width=4, rngs=nnx.Rngs(0),
                                  **kwargs)


def decreasing_schedule(t, context):
    return -t


SCHEDULE_CASES = [
    case("schedules.FixedLinear/gamma_min-above-gamma_max", ValueError,
         r"^`FixedLinear`: `gamma_min` must be less than `gamma_max`",
         lambda: schedules.FixedLinear(gamma_min=1.0, gamma_max=0.0)),
    case("schedules.FixedLinear/gamma_max-str", ValueError, r"^`FixedLinear`: `gamma_max` must be a Python number",
         lambda: schedules.FixedLinear(gamma_max="5")),
    case("schedules.FixedLinear/gamma_min-inf", ValueError, r"^`FixedLinear`: `gamma_min` must be finite",
         lambda: schedules.FixedLinear(gamma_min=-float("inf"))),
    case("schedules.FixedLinear.__call__/t-rank", ValueError,
         r"^`FixedLinear`: `t` must have shape \(batch,\); got t\.shape=\(2, 1\)",
         lambda: schedules.FixedLinear()(T[:, None])),
    case("schedules.FixedLinear.__call__/t-nan", ValueError, r"^`FixedLinear`: `t` contains NaN",
         lambda: schedules.FixedLinear()(T.at[1].set(jnp.nan))),
    case("schedules.FixedLinear.__call__/t-above-1", ValueError,
         r"^`FixedLinear`: `t` must lie in \[0, 1\]; got min\(t\)=0\.2.*, max\(t\)=1\.5",
         lambda: schedules.FixedLinear()(T.at[1].set(1.5))),
    case("schedules.FixedLinear.__call__/t-bool", TypeError, r"^`FixedLinear`: `t` must be real-valued",
         lambda: schedules.FixedLinear()(jnp.ones(2, bool))),
    case("schedules.Cosine/gamma_min-nan", ValueError, r"^`Cosine`: `gamma_min` must be finite",
         lambda: schedules.Cosine(gamma_min=float("nan"))),
    case("schedules.Cosine.__call__/t-negative", ValueError, r"^`Cosine`: `t` must lie in \[0, 1\]",
         lambda: schedules.Cosine()(T.at[0].set(-0.1))),
    case("schedules.ShiftedCosine/shift-inf", ValueError, r"^`ShiftedCosine`: `shift` must be a finite Python number",
         lambda: schedules.ShiftedCosine(shift=float("inf"))),
    case("schedules.ShiftedCosine.from_resolution/resolution", ValueError,
         r"^`ShiftedCosine\.from_resolution`: `resolution` must be a positive int",
         lambda: schedules.ShiftedCosine.from_resolution(0)),
    case("schedules.EDM/p_std", ValueError, r"^`EDM`: `p_std` must be > 0", lambda: schedules.EDM(p_std=0.0)),
    case("schedules.EDM.__call__/t-nan", ValueError, r"^`EDM`: `t` contains NaN",
         lambda: schedules.EDM()(T.at[0].set(jnp.nan))),
    case("schedules.VPLinear/beta_min", ValueError, r"^`VPLinear`: need 0 <= `beta_min` < `beta_max`",
         lambda: schedules.VPLinear(beta_min=2.0, beta_max=1.0)),
    case("schedules.VPLinear.__call__/t-above-1", ValueError, r"^`VPLinear`: `t` must lie in \[0, 1\]",
         lambda: schedules.VPLinear()(T + 1.0)),
    case("schedules.LearnedScalar/hidden_width", ValueError,
         r"^`LearnedScalar`: `hidden_width` must be an integer >= 1; got hidden_width=0",
         lambda: schedules.LearnedScalar(hidden_width=0, rngs=nnx.Rngs(0))),
    case("schedules.LearnedScalar/init_scale", ValueError, r"^`LearnedScalar`: `init_scale` must be a finite number",
         lambda: schedules.LearnedScalar(hidden_width=4, init_scale=-1.0, rngs=nnx.Rngs(0))),
    case("schedules.LearnedScalar.__call__/t-nan", ValueError, r"^`LearnedScalar`: `t` contains NaN",
         lambda: schedules.LearnedScalar(hidden_width=4, rngs=nnx.Rngs(0))(T.at[0].set(jnp.nan))),
    case("schedules.Polynomial/event_shape", ValueError, r"^`Polynomial`: `event_shape` must be an integer >= 1",
         lambda: schedules.Polynomial((0,), context_dim=None, rngs=nnx.Rngs(0))),
    case("schedules.Polynomial/context_dim", ValueError, r"^`Polynomial`: `context_dim` must be an integer >= 1",
         lambda: schedules.Polynomial((D,), context_dim=0, rngs=nnx.Rngs(0))),
    case("schedules.Polynomial/d_min", ValueError, r"^`Polynomial`: `d_min` must be a finite number >= 0",
         lambda: schedules.Polynomial((D,), context_dim=None, d_min=-1.0, rngs=nnx.Rngs(0))),
    case("schedules.Polynomial/head-without-context_dim", ValueError,
         r"^`Polynomial`: a `head` maps a context to coefficients",
         lambda: schedules.Polynomial((D,), context_dim=None, head=zeros_denoiser, rngs=nnx.Rngs(0))),
    case("schedules.Polynomial.__call__/context-none", ValueError, r"^`Polynomial`: `context` is None",
         lambda: _polynomial()(T, None)),
    case("schedules.Polynomial.__call__/context-shape", ValueError,
         r"^`Polynomial`: `context` must have shape \(batch, context_dim\) = \(2, 2\); got context\.shape=\(2, 3\)",
         lambda: _polynomial()(T, jnp.zeros((B, 3)))),
    case("schedules.Polynomial.__call__/context-batch", ValueError,
         r"^`Polynomial`: `context` must have shape \(batch, context_dim\) = \(2, 2\); got context\.shape=\(3, 2\)",
         lambda: _polynomial()(T, jnp.zeros((3, CONTEXT_DIM)))),
    case("schedules.Polynomial.__call__/context-nan", ValueError, r"^`Polynomial`: `context` contains NaN",
         lambda: _polynomial()(T, jnp.zeros((B, CONTEXT_DIM)).at[0, 1].set(jnp.nan))),
    case("schedules.Polynomial.__call__/context-bool", TypeError, r"^`Polynomial`: `context` must be real-valued",
         lambda: _polynomial()(T, jnp.zeros((B, CONTEXT_DIM), bool))),
    case("schedules.PolynomialHead/num_hidden", ValueError, r"^`PolynomialHead`: `num_hidden` must be an integer >= 0",
         lambda: schedules.PolynomialHead(CONTEXT_DIM, (D,), num_hidden=-1, rngs=nnx.Rngs(0))),
    case("schedules.PolynomialHead/context_dim", ValueError, r"^`PolynomialHead`: `context_dim` must be an integer",
         lambda: schedules.PolynomialHead(0, (D,), rngs=nnx.Rngs(0))),
    case("schedules.MonotoneFiLM/film_width", ValueError, r"^`MonotoneFiLM`: `film_width` must be an integer >= 1",
         lambda: schedules.MonotoneFiLM((D,), context_dim=CONTEXT_DIM, film_width=0, rngs=nnx.Rngs(0))),
    case("schedules.MonotoneFiLM.__call__/context-none", ValueError, r"^`MonotoneFiLM`: `context` is None",
         lambda: _film()(T, None)),
    case("schedules.MonotoneFiLM.__call__/context-inf", ValueError, r"^`MonotoneFiLM`: `context` must be finite",
         lambda: _film()(T, jnp.zeros((B, CONTEXT_DIM)).at[1, 0].set(jnp.inf))),
    case("schedules.linear_gamma/t-nan", ValueError, r"^`linear_gamma`: `t` contains NaN",
         lambda: schedules.linear_gamma(T.at[0].set(jnp.nan))),
    case("schedules.linear_gamma/t-above-1", ValueError, r"^`linear_gamma`: `t` must lie in \[0, 1\]",
         lambda: schedules.linear_gamma(T * 2.0)),
    case("schedules.linear_gamma/gamma_min-above-gamma_max", ValueError,
         r"^`linear_gamma`: `gamma_min` must be less than `gamma_max`",
         lambda: schedules.linear_gamma(T, gamma_min=6.0, gamma_max=-10.0)),
    case("schedules.linear_gamma/gamma_min-shape", ValueError,
         r"^`linear_gamma`: `gamma_min` must broadcast against `t`; got t\.shape=\(2,\), gamma_min\.shape=\(3,\)",
         lambda: schedules.linear_gamma(T, gamma_min=jnp.full(3, -10.0))),
    case("schedules.linear_gamma/t-bool", TypeError, r"^`linear_gamma`: `t` must be real-valued",
         lambda: schedules.linear_gamma(jnp.ones(2, bool))),
    case("schedules.cosine_gamma/shift-nan", ValueError, r"^`cosine_gamma`: `shift` contains NaN",
         lambda: schedules.cosine_gamma(T, shift=float("nan"))),
    case("schedules.cosine_gamma/t-negative", ValueError, r"^`cosine_gamma`: `t` must lie in \[0, 1\]",
         lambda: schedules.cosine_gamma(-T)),
    case("schedules.cosine_time/gamma-nan", ValueError, r"^`cosine_time`: `gamma` contains NaN",
         lambda: schedules.cosine_time(jnp.asarray([0.0, jnp.nan]))),
    case("schedules.cosine_time/gamma_min-above-gamma_max", ValueError,
         r"^`cosine_time`: `gamma_min` must be less than `gamma_max`",
         lambda: schedules.cosine_time(jnp.zeros(2), gamma_min=5.0, gamma_max=-5.0)),
    case("schedules.edm_gamma/p_std-shape", ValueError, r"^`edm_gamma`: `p_std` must broadcast",
         lambda: schedules.edm_gamma(T, p_std=jnp.ones(3))),
    case("schedules.edm_gamma/t-inf", ValueError, r"^`edm_gamma`: `t` must be finite",
         lambda: schedules.edm_gamma(T.at[0].set(jnp.inf))),
    case("schedules.edm_time/gamma-nan", ValueError, r"^`edm_time`: `gamma` contains NaN",
         lambda: schedules.edm_time(jnp.asarray([jnp.nan]))),
    case("schedules.vp_linear_gamma/beta_min-shape", ValueError, r"^`vp_linear_gamma`: `beta_min` must broadcast",
         lambda: schedules.vp_linear_gamma(T, beta_min=jnp.full(3, 0.1))),
    case("schedules.vp_linear_gamma/t-nan", ValueError, r"^`vp_linear_gamma`: `t` contains NaN",
         lambda: schedules.vp_linear_gamma(T.at[1].set(jnp.nan))),
    case("schedules.polynomial_gamma/d-shape", ValueError, r"^`polynomial_gamma`: `d` must broadcast against",
         lambda: schedules.polynomial_gamma(T[:, None], X, X, jnp.ones((B, 2)))),
    case("schedules.polynomial_gamma/a-nan", ValueError, r"^`polynomial_gamma`: `a` contains NaN",
         lambda: schedules.polynomial_gamma(T[:, None], NAN, X, X)),
    case("schedules.polynomial_gamma/t-above-1", ValueError, r"^`polynomial_gamma`: `t` must lie in \[0, 1\]",
         lambda: schedules.polynomial_gamma(T[:, None] + 1.0, X, X, X)),
    case("schedules.evaluate_schedule/gamma_fn-not-callable", TypeError,
         r"^`evaluate_schedule`: `gamma_fn` must be callable", lambda: schedules.evaluate_schedule(3.0, T, None, (D,))),
    case("schedules.evaluate_schedule/gamma_fn-output-shape", ValueError,
         r"^`evaluate_schedule`: `gamma_fn` must return gamma of shape \(batch,\) = \(2,\) .* got gamma\.shape=\(2, 5\)",
         lambda: schedules.evaluate_schedule(lambda t, c: jnp.zeros((B, 5)), T, None, (D,))),
    case("schedules.evaluate_schedule/gamma_fn-output-dtype", ValueError,
         r"^`evaluate_schedule`: `gamma_fn` must return floating gamma; got dtype int32",
         lambda: schedules.evaluate_schedule(lambda t, c: jnp.zeros(B, jnp.int32), T, None, (D,))),
    case("schedules.evaluate_schedule/gamma_fn-output-nan", ValueError,
         r"^`evaluate_schedule`: `gamma_fn\(t, context\)` contains NaN",
         lambda: schedules.evaluate_schedule(lambda t, c: jnp.log(t - 0.5), T, None, (D,))),
    case("schedules.evaluate_schedule/event_shape", ValueError, r"^`evaluate_schedule`: `event_shape` must be",
         lambda: schedules.evaluate_schedule(schedules.FixedLinear(), T, None, (-1,))),
    case("schedules.evaluate_schedule/t-rank", ValueError, r"^`evaluate_schedule`: `t` must have shape \(batch,\)",
         lambda: schedules.evaluate_schedule(schedules.FixedLinear(), jnp.zeros((B, 1)), None, (D,))),
    case("schedules.gamma_and_derivative/t-rank", ValueError,
         r"^`gamma_and_derivative`: `t` must have shape \(batch,\)",
         lambda: schedules.gamma_and_derivative(schedules.FixedLinear(), jnp.zeros(()), None, (D,))),
    case("schedules.gamma_and_derivative/t-above-1", ValueError, r"^`gamma_and_derivative`: `t` must lie in \[0, 1\]",
         lambda: schedules.gamma_and_derivative(schedules.FixedLinear(), T + 1.0, None, (D,))),
    case("schedules.check_schedule/num_points", ValueError, r"^`check_schedule`: `num_points` must be an integer >= 3",
         lambda: schedules.check_schedule(schedules.FixedLinear(), (D,), num_points=1)),
    case("schedules.check_schedule/context-rank", ValueError,
         r"^`check_schedule`: `context` must have a leading row dimension",
         lambda: schedules.check_schedule(schedules.FixedLinear(), (D,), context=jnp.zeros(()))),
    case("schedules.check_schedule/decreasing", ValueError,
         r"^`check_schedule`: `gamma_fn` failed 1 check\(s\): not increasing",
         lambda: schedules.check_schedule(decreasing_schedule, (D,))),
]


# ---------------------------------------------------------------------------------------------------------------
# mulan_ppl.hvae.diffusion_term, the samplers, mulan_ppl.likelihood

LINEAR = schedules.FixedLinear(gamma_min=-6.0, gamma_max=6.0)


def _diffusion(x=X, key=KEY, gamma_fn=LINEAR, denoiser=zeros_denoiser, **kwargs):
    return diffusion_term(x, key, gamma_fn, denoiser, **kwargs)


def _ancestral(key=KEY, gamma_fn=LINEAR, denoiser=zeros_denoiser, shape=(B, D), num_steps=2, **kwargs):
    return sampling.ancestral_sample(key, gamma_fn, denoiser, shape=shape, num_steps=num_steps, **kwargs)


def _ode_sample(key=KEY, gamma_fn=LINEAR, denoiser=zeros_denoiser, shape=(B, D), **kwargs):
    return sampling.ode_sample(key, gamma_fn, denoiser, shape=shape, **kwargs)


def _log_likelihood(x=X, key=KEY, gamma_fn=LINEAR, denoiser=zeros_denoiser, **kwargs):
    return likelihood.ode_log_likelihood(x, key, gamma_fn, denoiser, **kwargs)


def _dequantize(x=PIXELS, key=KEY, **kwargs):
    kwargs = {"vocab_size": 4, "method": "uniform", **kwargs}
    return likelihood.dequantize(key, x, **kwargs)


MODEL = TopDownDiffusion(LINEAR, zeros_denoiser, vocab_size=4)


class WrongShapePrior:
    def log_prob(self, z):
        return jnp.zeros(5)


ELBO_SAMPLER_LIKELIHOOD_CASES = [
    # diffusion_term
    case("hvae.diffusion_term/key-int", TypeError, r"^`diffusion_term`: `key` must be a PRNG key",
         lambda: _diffusion(key=0)),
    case("hvae.diffusion_term/x-bool", TypeError, r"^`diffusion_term`: `x` must be real-valued",
         lambda: _diffusion(x=BOOL)),
    case("hvae.diffusion_term/x-scalar", ValueError,
         r"^`diffusion_term`: `x` must have shape \(batch, \*event\); got x\.shape=\(\)", lambda: _diffusion(x=0.5)),
    case("hvae.diffusion_term/x-nan", ValueError, r"^`diffusion_term`: `x` contains NaN", lambda: _diffusion(x=NAN)),
    case("hvae.diffusion_term/x-inf", ValueError, r"^`diffusion_term`: `x` must be finite", lambda: _diffusion(x=INF)),
    case("hvae.diffusion_term/num_steps", ValueError, r"^`diffusion_term`: `num_steps` must be an integer >= 1",
         lambda: _diffusion(num_steps=0)),
    case("hvae.diffusion_term/parameterization", ValueError,
         r"^`diffusion_term`: `parameterization` must be one of \('eps', 'v', 'x'\); got 'score'",
         lambda: _diffusion(parameterization="score")),
    case("hvae.diffusion_term/reverse_variance", ValueError, r"^`diffusion_term`: `reverse_variance` must be one of",
         lambda: _diffusion(reverse_variance="ddpm")),
    case("hvae.diffusion_term/all_levels", ValueError, r"^`diffusion_term`: `all_levels=True` needs an integer",
         lambda: _diffusion(all_levels=True)),
    case("hvae.diffusion_term/reverse_variance-continuous", ValueError,
         r"^`diffusion_term`: `reverse_variance='forward'` has no continuous-time limit",
         lambda: _diffusion(reverse_variance="forward")),
    case("hvae.diffusion_term/denoiser-shape", ValueError,
         r"^`diffusion_term`: `denoiser` must return a 'eps' prediction of the shape of z_t \(2, 3\); got shape "
         r"\(2, 2\)", lambda: _diffusion(denoiser=narrow_denoiser)),
    case("hvae.diffusion_term/denoiser-nan", ValueError,
         r"^`diffusion_term`: `denoiser\(z_t, t, gamma_t, context\)` contains NaN",
         lambda: _diffusion(denoiser=nan_denoiser)),
    case("hvae.diffusion_term/times-shape", ValueError, r"^`diffusion_term`: `times` must have shape \(2,\)",
         lambda: _diffusion(times=jnp.zeros(3))),
    case("hvae.diffusion_term/times-nan", ValueError, r"^`diffusion_term`: `times` contains NaN",
         lambda: _diffusion(times=T.at[0].set(jnp.nan))),
    case("hvae.diffusion_term/times-above-1", ValueError, r"^`diffusion_term`: `times` must lie in \[0, 1\]",
         lambda: _diffusion(times=T + 0.5)),
    case("hvae.diffusion_term/context-batch", ValueError,
         r"^`Polynomial`: `context` must have shape \(batch, context_dim\) = \(2, 2\); got context\.shape=\(3, 2\)",
         lambda: _diffusion(gamma_fn=_polynomial(), context=jnp.zeros((3, CONTEXT_DIM)))),
    case("hvae.diffusion_term/gamma_fn-shape", ValueError, r"^`evaluate_schedule`: `gamma_fn` must return gamma",
         lambda: _diffusion(gamma_fn=lambda t, c: jnp.zeros((B, 5)))),
    # ancestral_sample
    case("sampling.ancestral_sample/key-int", TypeError, r"^`ancestral_sample`: `key` must be a PRNG key",
         lambda: _ancestral(key=0)),
    case("sampling.ancestral_sample/num_steps", ValueError, r"^`ancestral_sample`: `num_steps` must be an integer",
         lambda: _ancestral(num_steps=0)),
    case("sampling.ancestral_sample/parameterization", ValueError,
         r"^`ancestral_sample`: `parameterization` must be one of \('eps', 'v', 'x'\)",
         lambda: _ancestral(parameterization="score")),
    case("sampling.ancestral_sample/shape-empty", ValueError,
         r"^`ancestral_sample`: `shape` must be a tuple of at least 1 ints >= 1; got shape=\(\)",
         lambda: _ancestral(shape=())),
    case("sampling.ancestral_sample/shape-negative", ValueError, r"^`ancestral_sample`: `shape` must be a tuple",
         lambda: _ancestral(shape=(B, -D))),
    case("sampling.ancestral_sample/shape-float", ValueError, r"^`ancestral_sample`: `shape` must be a tuple",
         lambda: _ancestral(shape=(B, 3.0))),
    case("sampling.ancestral_sample/z_1-shape", ValueError,
         r"^`ancestral_sample`: `z_1` must have shape \(2, 3\); got \(2, 2\)", lambda: _ancestral(z_1=jnp.zeros((B, 2)))),
    case("sampling.ancestral_sample/z_1-nan", ValueError, r"^`ancestral_sample`: `z_1` contains NaN",
         lambda: _ancestral(z_1=NAN)),
    case("sampling.ancestral_sample/z_1-bool", TypeError, r"^`ancestral_sample`: `z_1` must be real-valued",
         lambda: _ancestral(z_1=BOOL)),
    case("sampling.ancestral_sample/denoiser-shape", ValueError,
         r"^`ReverseTransition`: `prediction` must have the same shape as `z_t`",
         lambda: _ancestral(denoiser=narrow_denoiser)),
    case("sampling.ancestral_sample/context-batch", ValueError, r"^`Polynomial`: `context` must have shape",
         lambda: _ancestral(gamma_fn=_polynomial(), context=jnp.zeros((3, CONTEXT_DIM)))),
    # ode_sample
    case("sampling.ode_sample/key-int", TypeError, r"^`ode_sample`: `key` must be a PRNG key",
         lambda: _ode_sample(key=0)),
    case("sampling.ode_sample/shape-rank", ValueError,
         r"^`ode_sample`: `shape` must be a tuple of at least 2 ints >= 1; got shape=\(2,\)",
         lambda: _ode_sample(shape=(B,))),
    case("sampling.ode_sample/z_1-shape", ValueError, r"^`ode_sample`: `z_1` must have shape \(2, 3\)",
         lambda: _ode_sample(z_1=jnp.zeros((B, 2)))),
    case("sampling.ode_sample/z_1-inf", ValueError, r"^`ode_sample`: `z_1` must be finite",
         lambda: _ode_sample(z_1=INF)),
    case("sampling.ode_sample/rtol", ValueError, r"^`solve_probability_flow`: `rtol` must be a positive finite float",
         lambda: _ode_sample(rtol=0.0)),
    case("sampling.ode_sample/solver", ValueError, r"^`solve_probability_flow`: `solver` must be one of",
         lambda: _ode_sample(solver="euler")),
    case("sampling.ode_sample/parameterization", ValueError, r"^`ode_sample`: `parameterization` must be one of",
         lambda: _ode_sample(parameterization="noise")),
    case("sampling.ode_sample/denoiser-shape", ValueError,
         r"^`ode_sample`: `denoiser` must return a 'eps' prediction of the shape of z \(2, 3\)",
         lambda: _ode_sample(denoiser=narrow_denoiser)),
    # ode_log_likelihood
    case("likelihood.ode_log_likelihood/x-nan", ValueError, r"^`ode_log_likelihood`: `x` contains NaN",
         lambda: _log_likelihood(x=NAN)),
    case("likelihood.ode_log_likelihood/x-inf", ValueError, r"^`ode_log_likelihood`: `x` must be finite",
         lambda: _log_likelihood(x=INF)),
    case("likelihood.ode_log_likelihood/x-rank", ValueError,
         r"^`ode_log_likelihood`: `x` must have shape \(batch, \*event\); got x\.shape=\(3,\)",
         lambda: _log_likelihood(x=jnp.zeros(D))),
    case("likelihood.ode_log_likelihood/x-bool", TypeError, r"^`ode_log_likelihood`: `x` must be real-valued",
         lambda: _log_likelihood(x=BOOL)),
    case("likelihood.ode_log_likelihood/denoiser-shape", ValueError,
         r"^`ode_log_likelihood`: `denoiser` must return a 'eps' prediction of the shape of z \(2, 3\)",
         lambda: _log_likelihood(denoiser=narrow_denoiser)),
    case("likelihood.ode_log_likelihood/key-int", TypeError, r"^`ode_log_likelihood`: `key` must be a PRNG key",
         lambda: _log_likelihood(key=0)),
    case("likelihood.ode_log_likelihood/trace", ValueError, r"^`ode_log_likelihood`: `trace` must be one of",
         lambda: _log_likelihood(trace="skilling")),
    case("likelihood.ode_log_likelihood/probe", ValueError, r"^`ode_log_likelihood`: `probe` must be one of",
         lambda: _log_likelihood(probe="uniform")),
    case("likelihood.ode_log_likelihood/rtol-nan", ValueError,
         r"^`ode_log_likelihood`: `rtol` must be a positive finite float; got rtol=nan",
         lambda: _log_likelihood(rtol=float("nan"))),
    case("likelihood.ode_log_likelihood/atol-negative", ValueError, r"^`ode_log_likelihood`: `atol` must be a positive",
         lambda: _log_likelihood(atol=-1.0)),
    case("likelihood.ode_log_likelihood/solver", ValueError, r"^`ode_log_likelihood`: `solver` must be one of",
         lambda: _log_likelihood(solver="euler")),
    case("likelihood.ode_log_likelihood/parameterization", ValueError,
         r"^`ode_log_likelihood`: `parameterization` must be one of", lambda: _log_likelihood(parameterization="y")),
    case("likelihood.ode_log_likelihood/max_steps", ValueError,
         r"^`solve_probability_flow`: `max_steps` must be an integer >= 1", lambda: _log_likelihood(max_steps=0)),
    case("likelihood.ode_log_likelihood/prior-shape", ValueError,
         r"^`ode_log_likelihood`: `prior\.log_prob\(z_1\)` must have shape \(2,\) \(per example\) or \(2, 3\)",
         lambda: _log_likelihood(prior=WrongShapePrior(), trace="exact")),
    case("likelihood.ode_log_likelihood/context-batch", ValueError, r"^`Polynomial`: `context` must have shape",
         lambda: _log_likelihood(gamma_fn=_polynomial(), context=jnp.zeros((3, CONTEXT_DIM)))),
    # dequantize, dequantization_entropy
    case("likelihood.dequantize/x-V", ValueError,
         r"^`dequantize`: `x` must hold integers in \[0, 4\); got min=0, max=4 \(1 invalid entries\)",
         lambda: _dequantize(x=PIXELS.at[0, 0].set(4))),
    case("likelihood.dequantize/x-negative", ValueError, r"^`dequantize`: `x` must hold integers in \[0, 4\); got min=-1",
         lambda: _dequantize(x=PIXELS.at[1, 0].set(-1))),
    case("likelihood.dequantize/x-fraction", ValueError, r"^`dequantize`: `x` must hold integers in \[0, 4\)",
         lambda: _dequantize(x=PIXELS.astype(jnp.float32).at[0, 1].set(0.5))),
    case("likelihood.dequantize/x-nan", ValueError, r"^`dequantize`: `x` must hold integers in \[0, 4\)",
         lambda: _dequantize(x=PIXELS.astype(jnp.float32).at[0, 1].set(jnp.nan))),
    case("likelihood.dequantize/x-bool", TypeError, r"^`dequantize`: `x` must be integer pixel values",
         lambda: _dequantize(x=BOOL)),
    case("likelihood.dequantize/x-scalar", ValueError, r"^`dequantize`: `x` must have shape \(batch, \*event\)",
         lambda: _dequantize(x=jnp.asarray(1))),
    case("likelihood.dequantize/vocab_size", ValueError, r"^`dequantize`: `vocab_size` must be an integer >= 2",
         lambda: _dequantize(vocab_size=1)),
    case("likelihood.dequantize/method", ValueError, r"^`dequantize`: `method` must be one of",
         lambda: _dequantize(method="gaussian")),
    case("likelihood.dequantize/gamma_0-missing", ValueError,
         r"^`dequantize`: `dequantization='truncated_normal'` needs `gamma_0`",
         lambda: _dequantize(method="truncated_normal")),
    case("likelihood.dequantize/gamma_0-batch", ValueError,
         r"^`dequantize`: `gamma_0` must be a scalar or have the rank of `x` .* got gamma_0\.shape=\(2,\)",
         lambda: _dequantize(method="truncated_normal", gamma_0=jnp.full(B, -6.0))),
    case("likelihood.dequantize/gamma_0-right-aligned", ValueError,
         r"^`dequantize`: `gamma_0` must be a scalar or have the rank of `x` .* got gamma_0\.shape=\(3,\)",
         lambda: _dequantize(method="truncated_normal", gamma_0=jnp.full(D, -6.0))),
    case("likelihood.dequantize/gamma_0-nan", ValueError, r"^`dequantize`: `gamma_0` contains NaN",
         lambda: _dequantize(method="truncated_normal", gamma_0=jnp.full((B, 1), -6.0).at[0, 0].set(jnp.nan))),
    case("likelihood.dequantize/gamma_0-bool", TypeError, r"^`dequantize`: `gamma_0` must be real-valued",
         lambda: _dequantize(method="truncated_normal", gamma_0=True)),
    case("likelihood.dequantize/key-int", TypeError, r"^`dequantize`: `key` must be a PRNG key",
         lambda: _dequantize(key=0)),
    case("likelihood.dequantization_entropy/x-V", ValueError,
         r"^`dequantization_entropy`: `x` must hold integers in \[0, 4\)",
         lambda: likelihood.dequantization_entropy(PIXELS + 1, vocab_size=4, method="uniform")),
    case("likelihood.dequantization_entropy/gamma_0-inf", ValueError,
         r"^`dequantization_entropy`: `gamma_0` must be finite",
         lambda: likelihood.dequantization_entropy(PIXELS, vocab_size=4, gamma_0=jnp.inf)),
    case("likelihood.dequantization_entropy/method", ValueError,
         r"^`dequantization_entropy`: `method` must be one of",
         lambda: likelihood.dequantization_entropy(PIXELS, vocab_size=4, method="normal")),
    # ode_bound and its options
    case("likelihood.check_ode_bound_options/num_importance_samples-zero", ValueError,
         r"^`ode_bound`: `num_importance_samples` must be an integer >= 1; got num_importance_samples=0",
         lambda: likelihood.check_ode_bound_options(num_importance_samples=0)),
    case("likelihood.check_ode_bound_options/num_importance_samples-float", ValueError,
         r"^`ode_bound`: `num_importance_samples` must be an integer >= 1; got 1\.5",
         lambda: likelihood.check_ode_bound_options(num_importance_samples=1.5)),
    case("likelihood.check_ode_bound_options/dequantization", ValueError,
         r"^`ode_bound`: `dequantization` must be one of", lambda: likelihood.check_ode_bound_options(
             dequantization="gaussian")),
    case("likelihood.check_ode_bound_options/probe", ValueError, r"^`ode_bound`: `probe` must be one of",
         lambda: likelihood.check_ode_bound_options(probe="sphere")),
    case("likelihood.check_ode_bound_options/atol", ValueError, r"^`ode_bound`: `atol` must be a positive finite",
         lambda: likelihood.check_ode_bound_options(atol=float("inf"))),
    case("likelihood.check_ode_bound_options/max_steps", ValueError, r"^`ode_bound`: `max_steps` must be an integer",
         lambda: likelihood.check_ode_bound_options(max_steps=0)),
    case("likelihood.ode_bound/x-V", ValueError, r"^`ode_bound`: `x` must hold integers in \[0, 4\)",
         lambda: likelihood.ode_bound(MODEL, PIXELS.at[0, 0].set(4), KEY)),
    case("likelihood.ode_bound/model", ValueError,
         r"^`ode_bound`: `model` must be a TopDownDiffusion \(VDM or MuLAN\); got object, which lacks vocab_size",
         lambda: likelihood.ode_bound(object(), PIXELS, KEY)),
    case("likelihood.ode_bound/x-rank", ValueError, r"^`ode_bound`: `x` must have shape \(batch, \*event\)",
         lambda: likelihood.ode_bound(MODEL, PIXELS[0], KEY)),
    case("likelihood.ode_bound/x-nan", ValueError, r"^`ode_bound`: `x` must hold integers in \[0, 4\)",
         lambda: likelihood.ode_bound(MODEL, PIXELS.astype(jnp.float32).at[0, 0].set(jnp.nan), KEY)),
    case("likelihood.ode_bound/num_importance_samples", ValueError,
         r"^`ode_bound`: `num_importance_samples` must be an integer >= 1",
         lambda: likelihood.ode_bound(MODEL, PIXELS, KEY, num_importance_samples=0)),
    case("likelihood.ode_bound/trace", ValueError, r"^`ode_bound`: `trace` must be one of",
         lambda: likelihood.ode_bound(MODEL, PIXELS, KEY, trace="skilling")),
    case("likelihood.ode_bound/key-int", TypeError, r"^`ode_bound`: `key` must be a PRNG key",
         lambda: likelihood.ode_bound(MODEL, PIXELS, 0)),
]


CASES = [
    *CORE_CASES,
    *_distribution_cases("distrax", mdx),
    *_distribution_cases("numpyro", mnp),
    *_numpyro_program_cases(),
    *SCHEDULE_CASES,
    *ELBO_SAMPLER_LIKELIHOOD_CASES,
]


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_naming_the_argument(case):
    with pytest.raises(case.error, match=case.match) as info:
        jax.block_until_ready(case.call())
    assert type(info.value) is case.error  # not a subclass (JAX's and NumPyro's own errors subclass these)


# ---------------------------------------------------------------------------------------------------------------
# The jit path: value checks with validate_args=True raise when the compiled function runs


def _jit_cases(backend: str, mod) -> list[Case]:
    cases = [
        ("ForwardMarginal/x-inf", "x", lambda v: mod.ForwardMarginal(INF + v, 0.0, validate_args=True),
         r"`ForwardMarginal`: `x` contains NaN or Inf"),
        ("ForwardTransition/gamma_s-inf", "gamma_s",
         lambda v: mod.ForwardTransition(X + v, -jnp.inf, 1.0, validate_args=True),
         r"`ForwardTransition`: `gamma_s` contains NaN or Inf"),
        ("TopDownPosterior/eps-nan", "eps", lambda v: mod.TopDownPosterior(X, X, -1.0, 1.0, eps=NAN + v,
                                                                             validate_args=True),
         r"`TopDownPosterior`: `eps` contains NaN or Inf"),
        ("TopDownPosterior.from_noise/x-inf", "x",
         lambda v: mod.TopDownPosterior.from_noise(INF + v, X, -1.0, 1.0, validate_args=True),
         r"`TopDownPosterior\.from_noise`: `x` contains NaN or Inf"),
        ("ReverseTransition/log_variance-nan", "log_variance",
         lambda v: mod.ReverseTransition(X + v, X, -1.0, 1.0, log_variance=NAN, validate_args=True),
         r"`ReverseTransition`: `log_variance` contains NaN"),
        ("ReverseTransition.from_prediction/prediction-inf", "prediction",
         lambda v: mod.ReverseTransition.from_prediction(X, INF + v, -1.0, 1.0, parameterization="v",
                                                         validate_args=True),
         r"`ReverseTransition`: `prediction` contains NaN or Inf"),
        ("DiscretizedGaussianDecoder/z_0-inf", "z_0",
         lambda v: mod.DiscretizedGaussianDecoder(INF + v, -5.0, 4, validate_args=True),
         r"`DiscretizedGaussianDecoder`: `z_0` contains NaN or Inf"),
    ]
    return [case(f"{backend}.{id_}", jax.errors.JaxRuntimeError, match, build) for id_, _, build, match in cases]


JIT_CASES = [*_jit_cases("distrax", mdx), *_jit_cases("numpyro", mnp)]


@pytest.mark.parametrize("case", JIT_CASES, ids=[c.id for c in JIT_CASES])
def test_jit_with_validate_args_raises_at_run_time(case):
    """The bad value enters as a concrete constant made traced by adding a traced zero, so only the traced check can
    catch it; under ``jax.jit`` the error is ``JaxRuntimeError`` when the failing call compiles, or a ``ValueError``
    with the same message on a cached executable (module docstring)."""
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError), match=case.match):
        jax.block_until_ready(jax.jit(lambda v: _mean(case.call(v)))(jnp.zeros(())))


LOG_PROB_JIT_CASES = [
    # (backend, distribution builder given validate_args, bad value, message)
    ("distrax", lambda mod, v: mod.ForwardMarginal(X, 0.5, validate_args=v), NAN,
     r"`ForwardMarginal\.log_prob`: `value` contains NaN"),
    ("numpyro", lambda mod, v: mod.ForwardMarginal(X, 0.5, validate_args=v), NAN,
     r"`ForwardMarginal\.log_prob`: `value` contains NaN"),
    ("distrax", lambda mod, v: mod.TopDownPosterior(X, X, -1.0, 1.0, validate_args=v)[0], NAN[1],
     r"`TopDownPosterior\.log_prob`: `value` contains NaN"),
    ("numpyro", lambda mod, v: mod.ReverseTransition(X, X, -1.0, 1.0, validate_args=v), NAN,
     r"`ReverseTransition\.log_prob`: `value` contains NaN"),
    ("distrax", lambda mod, v: mod.DiscretizedGaussianDecoder(X, -5.0, 4, validate_args=v), PIXELS.at[0, 0].set(4),
     r"`DiscretizedGaussianDecoder\.log_prob`: `value` must hold integers in \[0, 4\)"),
    ("numpyro", lambda mod, v: mod.DiscretizedGaussianDecoder(X, -5.0, 4, validate_args=v), PIXELS.at[1, 2].set(-3),
     r"`DiscretizedGaussianDecoder\.log_prob`: `value` must hold integers in \[0, 4\)"),
]


@pytest.mark.parametrize("backend,build,value,match", LOG_PROB_JIT_CASES,
                         ids=[f"{b}.{m.split('`')[1]}" for b, _, _, m in LOG_PROB_JIT_CASES])
def test_log_prob_under_jit_with_validate_args(backend, build, value, match):
    """Values of ``log_prob`` are data: checked under jit with the distribution's ``validate_args``; the same call
    without it runs (the fast path, with no value check compiled in)."""
    mod = {"distrax": mdx, "numpyro": mnp}[backend]
    log_prob = jax.jit(lambda dist, v: dist.log_prob(v))
    with pytest.raises((jax.errors.JaxRuntimeError, ValueError), match=match):
        jax.block_until_ready(log_prob(build(mod, True), value))
    fast = build(mod, False)
    assert log_prob(fast, value).shape == tuple(fast.batch_shape)


FILTER_JIT_CASES = [
    case("distrax.ForwardMarginal/gamma-nan", eqx.EquinoxRuntimeError, r"`ForwardMarginal`: `gamma` contains NaN",
         lambda v: mdx.ForwardMarginal(X, jnp.nan + v, validate_args=True).mean()),
    case("numpyro.TopDownPosterior/x-inf", eqx.EquinoxRuntimeError, r"`TopDownPosterior`: `x` contains NaN or Inf",
         lambda v: mnp.TopDownPosterior(X, INF + v, -1.0, 1.0, validate_args=True).mean),
    case("numpyro.ReverseTransition.log_prob/value-nan", eqx.EquinoxRuntimeError,
         r"`ReverseTransition\.log_prob`: `value` contains NaN",
         lambda v: mnp.ReverseTransition(X, X, -1.0, 1.0, validate_args=True).log_prob(NAN + v)),
    case("distrax.DiscretizedGaussianDecoder.log_prob/value-V", eqx.EquinoxRuntimeError,
         r"`DiscretizedGaussianDecoder\.log_prob`: `value` must hold integers in \[0, 4\)",
         lambda v: mdx.DiscretizedGaussianDecoder(X, -5.0, 4, validate_args=True).log_prob(PIXELS + 1 + v)),
]


@pytest.mark.parametrize("case", FILTER_JIT_CASES, ids=[c.id for c in FILTER_JIT_CASES])
def test_filter_jit_with_validate_args_raises_equinox_runtime_error(case):
    with pytest.raises(case.error, match=case.match):
        jax.block_until_ready(eqx.filter_jit(case.call)(jnp.zeros((), jnp.int32)))


def test_jit_without_validate_args_skips_value_checks():
    """The documented fast path: without ``validate_args`` no value check is compiled in, and NaN flows through."""
    out = jax.jit(lambda x: mdx.ForwardMarginal(x, 0.0).log_prob(x))(NAN)
    assert np.isnan(np.asarray(out)[1]) and np.isfinite(np.asarray(out)[0])


STATIC_UNDER_JIT_CASES = [
    case("core.forward_marginal/gamma-batch", ValueError, r"^`forward_marginal`: `gamma` must broadcast against `x`",
         lambda x: core.forward_marginal(x, jnp.zeros(B))),
    case("core.khot_log_prob/value-batch", ValueError, r"^`khot_log_prob`: `value` must broadcast against `logits`",
         lambda x: core.khot_log_prob(jnp.zeros((3, 4)), x[:, :1] + jnp.zeros((B, 4)), 2)),
    case("distrax.ForwardMarginal.log_prob/value-rank", ValueError, r"^`ForwardMarginal\.log_prob`: `value` must",
         lambda x: mdx.ForwardMarginal(x, 0.0).log_prob(x[0])),
    case("numpyro.DiscretizedGaussianDecoder.log_prob/value-shape", ValueError,
         r"^`DiscretizedGaussianDecoder\.log_prob`: `value` must have shape",
         lambda x: mnp.DiscretizedGaussianDecoder(x, -5.0, 4).log_prob(PIXELS[:, :2])),
    case("hvae.diffusion_term/denoiser-shape", ValueError, r"^`diffusion_term`: `denoiser` must return",
         lambda x: _diffusion(x=x, denoiser=narrow_denoiser)),
    case("core.diag_normal_sample/key-float", TypeError, r"^`diag_normal_sample`: `key` must be a PRNG key",
         lambda x: core.diag_normal_sample(x[0, :2], x, x)),
]


@pytest.mark.parametrize("case", STATIC_UNDER_JIT_CASES, ids=[c.id for c in STATIC_UNDER_JIT_CASES])
def test_static_checks_raise_at_trace_time_under_jit(case):
    """Shapes, dtypes and keys are static facts: the same errors come from tracing, whatever validate_args says."""
    with pytest.raises(case.error, match=case.match):
        jax.jit(case.call)(X)
