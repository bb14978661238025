"""Conversions between the denoiser's prediction targets: data ``x``, noise ``eps``, velocity ``v`` and score.

For the variance-preserving latent :math:`z = \\alpha x + \\sigma\\varepsilon` (per dimension):

.. math::
    v = \\alpha\\varepsilon - \\sigma x, \\qquad x = \\alpha z - \\sigma v, \\qquad \\varepsilon = \\sigma z + \\alpha v,
    \\qquad \\nabla_z \\log q(z) = -\\varepsilon/\\sigma .

The ``v`` forms use no division, so they are exact at both ends of the noise range; ``x`` from ``eps`` divides by
``alpha`` and ``eps`` from ``x`` divides by ``sigma``, which is why the distributions keep a prediction in its native
form as long as they can (``ReverseTransition.from_prediction``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mulan_ppl._validation import check_one_of, float_inputs
from mulan_ppl.core import stable

__all__ = [
    "DENOISER_TARGETS",
    "PARAMETERIZATIONS",
    "convert_prediction",
    "score_from_eps",
]

PARAMETERIZATIONS = ("eps", "v", "x", "score")
# The targets a denoiser may be trained to predict (the score is derived, never a training target here).
DENOISER_TARGETS = ("eps", "v", "x")


def score_from_eps(gamma: jax.Array, eps: jax.Array) -> jax.Array:
    r""":math:`s = -\hat\varepsilon/\sigma`, the score of the forward marginal.

    Example:
        >>> print(score_from_eps(jnp.asarray(0.0), jnp.array([1.0, -0.5])))  # sigma^2 = sigmoid(0) = 1/2
        [-1.4142135  0.70710677]
    """
    gamma, eps = float_inputs("score_from_eps", gamma=gamma, eps=eps)
    return -eps * jnp.exp(-0.5 * stable.log_sigma_sq(gamma))


def convert_prediction(
    prediction: jax.Array, z: jax.Array, gamma: jax.Array, *, source: str, target: str
) -> jax.Array:
    r"""Converts a denoiser prediction between parameterizations.

    Mathematical details:
        With :math:`z = \alpha x + \sigma \varepsilon`, :math:`v = \alpha\varepsilon - \sigma x` and
        score :math:`= -\varepsilon/\sigma`; every conversion goes through ``eps`` or ``x`` by the closed forms in the
        module docstring.

    Args:
        prediction: the denoiser's output, shape ``(B, *event)``.
        z: the latent it was computed from, same shape.
        gamma: the latent's noise level, broadcastable to ``z``.
        source: the prediction's parameterization, one of ``"eps"``, ``"v"``, ``"x"``, ``"score"``.
        target: the wanted parameterization, same choices.

    Returns:
        The prediction in the ``target`` parameterization, shape of ``prediction``.

    Raises:
        ValueError: an unknown ``source`` or ``target``.

    Example:
        >>> z, g = jnp.asarray([0.3]), jnp.asarray([0.5])
        >>> eps = convert_prediction(jnp.asarray([0.2]), z, g, source="x", target="eps")
        >>> x = convert_prediction(eps, z, g, source="eps", target="x")
        >>> print(x.round(5))
        [0.2]
    """
    check_one_of("convert_prediction", "source", source, PARAMETERIZATIONS)
    check_one_of("convert_prediction", "target", target, PARAMETERIZATIONS)
    prediction, z, gamma = float_inputs("convert_prediction", prediction=prediction, z=z, gamma=gamma)
    if jnp.shape(z) != jnp.shape(prediction):
        raise ValueError(f"`convert_prediction`: `z` must have the shape of `prediction`; got "
                         f"prediction.shape={jnp.shape(prediction)}, z.shape={jnp.shape(z)}.")
    if source == target:
        return prediction
    alpha, sigma = stable.alpha_sigma(gamma)
    if target == "score":
        eps = convert_prediction(prediction, z, gamma, source=source, target="eps")
        return score_from_eps(gamma, eps)
    if source == "score":
        prediction, source = -sigma * prediction, "eps"
        if target == "eps":
            return prediction
    # One closed form per (source, target) pair; each divides at most once.
    forms = {
        ("eps", "x"): lambda p: (z - sigma * p) / alpha,
        ("eps", "v"): lambda p: (p - sigma * z) / alpha,
        ("x", "eps"): lambda p: (z - alpha * p) / sigma,
        ("x", "v"): lambda p: (alpha * z - p) / sigma,
        ("v", "eps"): lambda p: sigma * z + alpha * p,
        ("v", "x"): lambda p: alpha * z - sigma * p,
    }
    return forms[(source, target)](prediction)
