"""Gaussian diffusion algebra with a per-dimension noise level.

Every function returns the parameters of a diagonal Gaussian as ``(loc, log_variance)`` and broadcasts its
arguments elementwise, so ``gamma`` may carry one value per data dimension (MuLAN) or be a broadcast scalar (VDM).
The two distribution backends build their classes on these functions; no formula is written twice.

Notation (DESIGN.md §2): ``gamma = -log SNR``, ``alpha**2 = sigmoid(-gamma)``, ``sigma**2 = sigmoid(gamma)``,
``s <= t`` with ``t`` nearer the noise. Arguments are checked as in :mod:`mulan_ppl.core.stable`: real dtypes,
shapes that broadcast, no NaN in concrete inputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mulan_ppl._validation import (
    check_key,
    check_one_of,
    check_shape_tuple,
    float_inputs,
)
from mulan_ppl.core import stable
from mulan_ppl.core.parameterization import PARAMETERIZATIONS, convert_prediction

__all__ = [
    "diag_normal_entropy",
    "diag_normal_log_prob",
    "diag_normal_sample",
    "forward_marginal",
    "forward_transition",
    "per_step_kl",
    "per_step_kl_eps",
    "per_step_kl_x",
    "top_down_posterior",
    "top_down_posterior_coefficients",
]


def forward_marginal(x: jax.Array, gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Parameters of the forward marginal q(z_t | x).

    Mathematical details:
        .. math:: q(z_t \mid x) = \mathcal N(\alpha_t x, \sigma_t^2 I), \quad
            \log\sigma_t^2 = \log\mathrm{sigmoid}(\gamma_t).

    Args:
        x: data in the continuous scale, shape ``(B, *event)``.
        gamma: noise level broadcastable to ``x``.

    Returns:
        ``(loc, log_variance)`` broadcast to the common shape.

    Example:
        >>> loc, log_var = forward_marginal(jnp.ones(2), jnp.zeros(2))
        >>> print(loc.round(4), jnp.exp(log_var))
        [0.7071 0.7071] [0.5 0.5]
    """
    x, gamma = float_inputs("forward_marginal", x=x, gamma=gamma)
    loc = jnp.exp(0.5 * stable.log_alpha_sq(gamma)) * x
    log_var = stable.log_sigma_sq(gamma)
    return jnp.broadcast_arrays(loc, log_var)


def forward_transition(
    z_s: jax.Array, gamma_s: jax.Array, gamma_t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Parameters of the forward transition q(z_t | z_s) for ``gamma_s <= gamma_t``.

    Mathematical details:
        .. math:: q(z_t \mid z_s) = \mathcal N(\alpha_{t|s} z_s, \sigma^2_{t|s} I), \quad
            \alpha^2_{t|s} = \frac{\mathrm{sigmoid}(-\gamma_t)}{\mathrm{sigmoid}(-\gamma_s)}, \quad
            \sigma^2_{t|s} = -\mathrm{expm1}(\gamma_s - \gamma_t)\,\mathrm{sigmoid}(\gamma_t).

        At ``s = t`` the variance is 0 (``log_variance = -inf``) and the mean is ``z_s``.

    Args:
        z_s: the less noisy latent, shape ``(B, *event)``.
        gamma_s, gamma_t: noise levels broadcastable to ``z_s``.

    Returns:
        ``(loc, log_variance)``.

    Example:
        >>> loc, log_var = forward_transition(jnp.ones(1), jnp.zeros(1), jnp.zeros(1))
        >>> print(loc, log_var)
        [1.] [-inf]
    """
    z_s, gamma_s, gamma_t = float_inputs("forward_transition", z_s=z_s, gamma_s=gamma_s, gamma_t=gamma_t)
    log_alpha_ts = 0.5 * (stable.log_alpha_sq(gamma_t) - stable.log_alpha_sq(gamma_s))
    loc = jnp.exp(log_alpha_ts) * z_s
    log_var = stable.log_transition_variance(gamma_s, gamma_t)
    return jnp.broadcast_arrays(loc, log_var)


def top_down_posterior_coefficients(
    gamma_s: jax.Array, gamma_t: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    r"""Coefficients of the top-down posterior mean ``c_z * z_t + c_x * x`` and its log-variance.

    Mathematical details:
        .. math::
            c_z = \frac{\alpha_{t|s}\sigma_s^2}{\sigma_t^2}
                = \exp\!\big(\tfrac12(\log\alpha_t^2 - \log\alpha_s^2) + \log\sigma_s^2 - \log\sigma_t^2\big), \quad
            c_x = \frac{\alpha_s\sigma^2_{t|s}}{\sigma_t^2} = -\alpha_s\,\mathrm{expm1}(\gamma_s - \gamma_t),

        .. math:: \sigma^2_{s|t} = \frac{\sigma^2_{t|s}\sigma_s^2}{\sigma_t^2}
            = -\mathrm{expm1}(\gamma_s - \gamma_t)\,\mathrm{sigmoid}(\gamma_s).

    Returns:
        ``(c_z, c_x, log_variance)``, broadcast against each other.

    Example:
        >>> c_z, c_x, log_variance = top_down_posterior_coefficients(jnp.asarray(-2.0), jnp.asarray(0.0))
        >>> print(round(float(c_z), 4), round(float(c_x), 4), round(float(jnp.exp(log_variance)), 4))
        0.1796 0.8115 0.1031
    """
    gamma_s, gamma_t = float_inputs("top_down_posterior_coefficients", gamma_s=gamma_s, gamma_t=gamma_t)
    c_z = jnp.exp(
        0.5 * (stable.log_alpha_sq(gamma_t) - stable.log_alpha_sq(gamma_s))
        + stable.log_sigma_sq(gamma_s)
        - stable.log_sigma_sq(gamma_t)
    )
    one_minus_ratio = -jnp.expm1(gamma_s - gamma_t)
    c_x = jnp.exp(0.5 * stable.log_alpha_sq(gamma_s)) * one_minus_ratio
    log_var = stable.log1mexp(gamma_s - gamma_t) + stable.log_sigma_sq(gamma_s)
    return c_z, c_x, log_var


def top_down_posterior(
    z_t: jax.Array, x: jax.Array, gamma_s: jax.Array, gamma_t: jax.Array
) -> tuple[jax.Array, jax.Array]:
    r"""Parameters of the top-down posterior q(z_s | z_t, x), the Bayes posterior of the forward chain.

    Mathematical details:
        .. math:: q(z_s \mid z_t, x) = \mathcal N(c_z z_t + c_x x, \sigma^2_{s|t} I)

        with the coefficients of :func:`top_down_posterior_coefficients`. The reverse transition of the generative
        model is the same function with ``x`` replaced by the denoiser's data prediction ``x_hat``.

    Args:
        z_t: the noisier latent, shape ``(B, *event)``.
        x: data (or its prediction), shape of ``z_t``.
        gamma_s, gamma_t: noise levels broadcastable to ``z_t``, ``gamma_s <= gamma_t``.

    Returns:
        ``(loc, log_variance)``.

    Example:
        >>> loc, log_var = top_down_posterior(jnp.zeros(1), jnp.ones(1), jnp.asarray([-2.0]), jnp.asarray([0.0]))
        >>> print(round(float(loc[0]), 4), round(float(jnp.exp(log_var[0])), 4))
        0.8115 0.1031
    """
    z_t, x, gamma_s, gamma_t = float_inputs("top_down_posterior", z_t=z_t, x=x, gamma_s=gamma_s, gamma_t=gamma_t)
    c_z, c_x, log_var = top_down_posterior_coefficients(gamma_s, gamma_t)
    loc = c_z * z_t + c_x * x
    return jnp.broadcast_arrays(loc, log_var)


def per_step_kl_x(gamma_s: jax.Array, gamma_t: jax.Array, x: jax.Array, x_hat: jax.Array) -> jax.Array:
    r"""Per-dimension KL between the top-down posterior and the reverse transition, in data space.

    Mathematical details:
        For ``q(z_s|z_t, x)`` and ``p(z_s|z_t) = q(z_s|z_t, \hat x)`` (same variance),

        .. math:: \mathrm{KL} = \tfrac12(\mathrm{SNR}_s - \mathrm{SNR}_t)(x - \hat x)^2
            = -\tfrac12 e^{-\gamma_s}\,\mathrm{expm1}(\gamma_s - \gamma_t)\,(x - \hat x)^2 .

        It is 0 at ``s = t`` and smooth there, so its derivative in ``s`` gives the continuous-time loss:
        :math:`\partial_s \mathrm{KL}|_{s=t} = -\tfrac12 \gamma'(t)\,\mathrm{SNR}_t (x - \hat x)^2`.

    Args:
        gamma_s, gamma_t: noise levels.
        x: data, shape ``(B, *event)``.
        x_hat: the denoiser's data prediction, shape of ``x``.

    Returns:
        The KL per element (sum it over the event dims for a per-example value).

    Example:
        >>> print(float(per_step_kl_x(jnp.asarray(0.0), jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(0.0))))
        0.316...
    """
    gamma_s, gamma_t, x, x_hat = float_inputs("per_step_kl_x", gamma_s=gamma_s, gamma_t=gamma_t, x=x, x_hat=x_hat)
    return -0.5 * jnp.exp(-gamma_s) * jnp.expm1(gamma_s - gamma_t) * jnp.square(x - x_hat)


def per_step_kl_eps(gamma_s: jax.Array, gamma_t: jax.Array, eps: jax.Array, eps_hat: jax.Array) -> jax.Array:
    r"""The per-step KL of :func:`per_step_kl_x` written with noise predictions.

    Mathematical details:
        With :math:`z_t = \alpha_t x + \sigma_t\varepsilon` and :math:`x - \hat x = (\sigma_t/\alpha_t)(\hat\varepsilon
        - \varepsilon)`,

        .. math:: \mathrm{KL} = \tfrac12\,\mathrm{expm1}(\gamma_t - \gamma_s)\,(\varepsilon - \hat\varepsilon)^2,

        which keeps full precision at very low noise, where ``x - x_hat`` underflows the float32 resolution of x.

    Example:
        >>> print(float(per_step_kl_eps(jnp.asarray(0.0), jnp.asarray(1.0), jnp.asarray(1.0), jnp.asarray(0.0))))
        0.859...
    """
    gamma_s, gamma_t, eps, eps_hat = float_inputs("per_step_kl_eps", gamma_s=gamma_s, gamma_t=gamma_t, eps=eps,
                                                  eps_hat=eps_hat)
    return 0.5 * stable.snr_ratio_minus_one(gamma_s, gamma_t) * jnp.square(eps - eps_hat)


def per_step_kl(
    x: jax.Array,
    z_t: jax.Array,
    gamma_s: jax.Array,
    gamma_t: jax.Array,
    prediction: jax.Array,
    *,
    parameterization: str,
    eps: jax.Array | None = None,
) -> jax.Array:
    r"""Per-dimension KL(q(z_s|z_t,x) ‖ p(z_s|z_t)) with the prediction kept in its native parameterization.

    Mathematical details:
        An ``"x"`` prediction uses :func:`per_step_kl_x`. Any other prediction is converted to a noise prediction
        :math:`\hat\varepsilon` (exact for ``"eps"``, division-free for ``"v"``) and compared with the true noise
        :math:`\varepsilon` through :func:`per_step_kl_eps`; ``eps`` is that noise when the caller drew it,
        otherwise it is recovered as :math:`(z_t - \alpha_t x)/\sigma_t`. Converting to :math:`\hat x` first would
        round :math:`\sigma_t\hat\varepsilon` away against :math:`z_t` at very low noise (gamma near -30 in float32).

    Args:
        x: data, shape ``(B, *event)``.
        z_t: the latent the prediction was computed from, shape of ``x``.
        gamma_s, gamma_t: noise levels broadcastable to ``x``.
        prediction: the denoiser's output at ``(z_t, gamma_t)``.
        parameterization: ``"eps"``, ``"v"``, ``"x"`` or ``"score"``.
        eps: optional true noise with :math:`z_t = \alpha_t x + \sigma_t\varepsilon`.

    Returns:
        The KL per element.

    Example:
        >>> x, eps = jnp.array([[1.0, -1.0]]), jnp.array([[0.5, 0.0]])
        >>> gamma_s, gamma_t = jnp.asarray(-2.0), jnp.asarray(0.0)
        >>> z_t = jnp.sqrt(jax.nn.sigmoid(-gamma_t)) * x + jnp.sqrt(jax.nn.sigmoid(gamma_t)) * eps
        >>> kl = per_step_kl(x, z_t, gamma_s, gamma_t, jnp.zeros_like(x), parameterization="eps", eps=eps)
        >>> print(kl, 0.5 * jnp.expm1(2.0) * 0.5**2)  # 1/2 expm1(gamma_t - gamma_s) (eps - eps_hat)^2
        [[0.798632 0.      ]] 0.798632
    """
    check_one_of("per_step_kl", "parameterization", parameterization, PARAMETERIZATIONS)
    x, z_t, gamma_s, gamma_t, prediction, eps = float_inputs(
        "per_step_kl", x=x, z_t=z_t, gamma_s=gamma_s, gamma_t=gamma_t, prediction=prediction, eps=eps)
    if parameterization == "x":
        return per_step_kl_x(gamma_s, gamma_t, x, prediction)
    if eps is None:
        eps = convert_prediction(x, z_t, gamma_t, source="x", target="eps")
    eps_hat = convert_prediction(prediction, z_t, gamma_t, source=parameterization, target="eps")
    return per_step_kl_eps(gamma_s, gamma_t, eps, eps_hat)


def diag_normal_log_prob(value: jax.Array, loc: jax.Array, log_variance: jax.Array) -> jax.Array:
    r"""Elementwise log-density of :math:`\mathcal N(\mathrm{loc}, e^{\mathrm{log\_variance}})`.

    A zero variance (``log_variance = -inf``, the transitions at s = t) gives ``+inf`` at ``value == loc`` and
    ``-inf`` elsewhere.

    Example:
        >>> print(round(float(diag_normal_log_prob(jnp.asarray(0.0), jnp.asarray(0.0), jnp.asarray(0.0))), 4))
        -0.9189
    """
    value, loc, log_variance = float_inputs("diag_normal_log_prob", value=value, loc=loc, log_variance=log_variance)
    diff = value - loc
    standardized = jnp.where(diff == 0, 0.0, diff * jnp.exp(-0.5 * log_variance))
    log_prob = -0.5 * (_LOG_2PI + log_variance + jnp.square(standardized))
    return jnp.where(jnp.isneginf(log_variance) & (diff != 0), -jnp.inf, log_prob)


def diag_normal_entropy(log_variance: jax.Array) -> jax.Array:
    r"""Elementwise entropy :math:`\tfrac12(\log 2\pi e + \log\sigma^2)`.

    Example:
        >>> print(diag_normal_entropy(jnp.array([0.0, 2.0])))  # log-variances 0 and 2
        [1.4189385 2.4189386]
    """
    (log_variance,) = float_inputs("diag_normal_entropy", log_variance=log_variance)
    return 0.5 * (_LOG_2PI + 1.0 + log_variance)


def diag_normal_sample(key: jax.Array, loc: jax.Array, log_variance: jax.Array, sample_shape=()) -> jax.Array:
    r"""Reparameterized draws :math:`\mathrm{loc} + e^{\mathrm{log\_variance}/2}\,\varepsilon`, shape ``sample_shape + loc.shape``.

    Example:
        >>> z = diag_normal_sample(jax.random.key(0), jnp.ones(3), jnp.full(3, -jnp.inf), (2,))  # zero variance
        >>> print(z.shape, z.tolist())
        (2, 3) [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]
    """
    where = "diag_normal_sample"
    check_key(where, key)
    loc, log_variance = float_inputs(where, loc=loc, log_variance=log_variance)
    if jnp.shape(log_variance) != loc.shape:
        raise ValueError(f"`{where}`: `log_variance` must have the shape of `loc`; got loc.shape={loc.shape}, "
                         f"log_variance.shape={jnp.shape(log_variance)}.")
    sample_shape = check_shape_tuple(where, "sample_shape", sample_shape, min_ndim=0, minimum=0)
    noise = jax.random.normal(key, sample_shape + loc.shape, loc.dtype)
    lead = (1,) * len(sample_shape)
    return loc.reshape(lead + loc.shape) + jnp.exp(0.5 * log_variance).reshape(lead + loc.shape) * noise


_LOG_2PI = 1.8378770664093453
