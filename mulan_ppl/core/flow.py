"""The probability-flow ODE of the forward process with a per-dimension noise level.

For :math:`q(z_t|x) = \\mathcal N(\\alpha_t x, \\sigma_t^2)` with :math:`\\gamma = \\gamma(t, c)` per dimension, the
forward SDE :math:`dz = f z\\,dt + g\\,dW` has :math:`f = -\\tfrac12\\sigma^2\\gamma'` and :math:`g^2 = \\sigma^2\\gamma'`
(both per dimension), and the ODE :math:`dz/dt = f z - \\tfrac12 g^2 \\nabla_z\\log q_t(z)` has the same marginals.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mulan_ppl._validation import check_one_of, float_inputs
from mulan_ppl.core import stable
from mulan_ppl.core.parameterization import PARAMETERIZATIONS

__all__ = ["probability_flow_drift"]


def probability_flow_drift(
    z: jax.Array, prediction: jax.Array, gamma: jax.Array, gamma_rate: jax.Array, *, parameterization: str
) -> jax.Array:
    r"""Drift :math:`dz/dt` of the probability-flow ODE, from a prediction in its native parameterization.

    Mathematical details:
        With :math:`f = -\tfrac12\sigma^2\dot\gamma`, :math:`g^2 = \sigma^2\dot\gamma` and the score
        :math:`-\hat\varepsilon/\sigma`, the drift :math:`f z - \tfrac12 g^2\,\mathrm{score}` is, per dimension,

        .. math::
            h = \tfrac12\dot\gamma\,\sigma(\hat\varepsilon - \sigma z)
              = \tfrac12\dot\gamma\,\alpha\sigma\,\hat v
              = \tfrac12\dot\gamma\,\alpha(\alpha z - \hat x)
              = -\tfrac12\dot\gamma\,\sigma^2(\hat s + z),

        for an ``eps``, ``v``, ``x`` or ``score`` prediction. No form divides, so the drift is finite across the
        whole noise range in float32 (the reference code's ``x`` route divides by :math:`\sigma`).

    Args:
        z: the latent, shape ``(B, *event)``.
        prediction: the denoiser's output at ``z``, same shape.
        gamma: :math:`\gamma(t)`, broadcastable to ``z``.
        gamma_rate: :math:`d\gamma/dt`, broadcastable to ``z``.
        parameterization: ``"eps"``, ``"v"``, ``"x"`` or ``"score"``.

    Returns:
        :math:`dz/dt`, shape of ``z``.

    Example:
        >>> z, gamma, rate = jnp.ones(2), jnp.zeros(2), jnp.ones(2)
        >>> eps_hat = jnp.sqrt(0.5) * z  # the exact eps of N(0, 1) data at gamma = 0
        >>> print(probability_flow_drift(z, eps_hat, gamma, rate, parameterization="eps"))
        [0. 0.]
    """
    where = "probability_flow_drift"
    check_one_of(where, "parameterization", parameterization, PARAMETERIZATIONS)
    z, prediction, gamma, gamma_rate = float_inputs(where, z=z, prediction=prediction, gamma=gamma,
                                                    gamma_rate=gamma_rate)
    if jnp.shape(prediction) != jnp.shape(z):
        raise ValueError(f"`{where}`: `prediction` must have the shape of `z`; got z.shape={jnp.shape(z)}, "
                         f"prediction.shape={jnp.shape(prediction)}.")
    alpha, sigma = stable.alpha_sigma(gamma)
    half_rate = 0.5 * gamma_rate
    if parameterization == "eps":
        return half_rate * sigma * (prediction - sigma * z)
    if parameterization == "v":
        return half_rate * alpha * sigma * prediction
    if parameterization == "x":
        return half_rate * alpha * (alpha * z - prediction)
    return -half_rate * jnp.square(sigma) * (prediction + z)
