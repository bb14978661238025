r"""Weighting functions :math:`w(\lambda)` of the Kingma & Gao weighted diffusion loss.

Every weighting here is a function of the **log-SNR** :math:`\lambda = -\gamma` (Kingma & Gao's variable; the rest of
the library uses :math:`\gamma = -\log\mathrm{SNR}`): a callable ``w(log_snr) -> weight``, elementwise, of the shape
and floating dtype of ``log_snr``. The weighted loss (:func:`~mulan_ppl.hvae.weighted_diffusion_term`) is

.. math:: \mathcal L_w(x) = \tfrac12\,\mathbb E_{t\sim U(0,1),\,\varepsilon}\Big[w(\lambda_t)\,
    \Big(-\frac{d\lambda}{dt}\Big)\,\lVert\varepsilon - \hat\varepsilon\rVert^2\Big]
    = \tfrac12\int_{\lambda_{\min}}^{\lambda_{\max}} w(\lambda)\,
    \mathbb E_\varepsilon\lVert\varepsilon - \hat\varepsilon\rVert^2\, d\lambda

(Kingma & Gao, Eq. 5–6), so ``w = 1`` is the continuous-time ELBO and a weighting is defined up to a positive
constant (which scales the loss). A monotone weighting is non-increasing in :math:`\lambda` (increasing in
:math:`\gamma` and in t); by their Theorem 1 it makes :math:`\mathcal L_w` an ELBO of noise-augmented data.

Parameter-free weightings are plain functions (:func:`elbo_weighting`, :func:`iddpm_weighting`,
:func:`v_weighting`); the EDM pair take keyword-only hyper-parameters (bind them with :func:`functools.partial`);
:func:`sigmoid_weighting` and :func:`shifted_weighting` are factories returning a weighting.

References:
    1. Kingma, Gao. Understanding Diffusion Objectives as the ELBO with Simple Data Augmentation (VDM++).
       https://arxiv.org/abs/2303.00848
    2. Karras, Aittala, Aila, Laine. Elucidating the Design Space of Diffusion-Based Generative Models.
       https://arxiv.org/abs/2206.00364
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl._validation import as_float_array

__all__ = [
    "Weighting",
    "edm_monotone_weighting",
    "edm_weighting",
    "edm_weighting_peak",
    "elbo_weighting",
    "iddpm_weighting",
    "shifted_weighting",
    "sigmoid_weighting",
    "v_weighting",
]

Weighting = Callable[[jax.Array], jax.Array]
"""A weighting function: ``w(log_snr) -> weight``, elementwise."""

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _log_snr(where: str, log_snr) -> jax.Array:
    return as_float_array(log_snr, "log_snr", where)


def _finite_number(where: str, name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{where}`: `{name}` must be a finite Python number; got {type(value).__name__}.")
    if not math.isfinite(float(value)) or (positive and not float(value) > 0):
        expected = "a finite number > 0" if positive else "finite"
        raise ValueError(f"`{where}`: `{name}` must be {expected}; got {name}={value!r}.")
    return float(value)


def elbo_weighting(log_snr: jax.Array) -> jax.Array:
    r"""The ELBO weighting, :math:`w(\lambda) = 1` (Kingma & Gao, Eq. 4 and Table 1; monotone).

    Args:
        log_snr: :math:`\lambda = -\gamma`, any shape.

    Returns:
        Ones of the shape and dtype of ``log_snr``.

    Example:
        >>> print(elbo_weighting(jnp.array([-5.0, 0.0, 5.0])))
        [1. 1. 1.]
    """
    return jnp.ones_like(_log_snr("elbo_weighting", log_snr))


def sigmoid_weighting(bias: float = 2.0) -> Weighting:
    r"""The sigmoid weighting :math:`w(\lambda) = \mathrm{sigmoid}(b - \lambda)` (Kingma & Gao, Sec. 5.1).

    Mathematical details:
        .. math:: w(\lambda) = \mathrm{sigmoid}(-\lambda + b) = \frac{1}{1 + e^{\lambda - b}} .

        Monotone: it decreases from 1 (:math:`\lambda \to -\infty`, pure noise) to 0, and
        :math:`-w'(\lambda)` is the Logistic(b, 1) density, the noise-augmentation density of their Theorem 1. The
        paper tries :math:`b \in \{1, \dots, 5\}`; :math:`b = 2` is best on ImageNet 64 (Table 2).

    Args:
        bias: :math:`b`, a finite Python number (default 2).

    Returns:
        The weighting ``w(log_snr)``.

    Raises:
        ValueError: a non-finite or non-numeric ``bias``.

    Example:
        >>> w = sigmoid_weighting(2.0)
        >>> print(w(jnp.array([2.0, 22.0])).round(4))
        [0.5 0. ]
    """
    bias = _finite_number("sigmoid_weighting", "bias", bias)

    def weighting(log_snr: jax.Array) -> jax.Array:
        return jax.nn.sigmoid(bias - _log_snr("sigmoid_weighting", log_snr))

    weighting.__name__ = weighting.__qualname__ = f"sigmoid_weighting(bias={bias:g})"
    return weighting


def iddpm_weighting(log_snr: jax.Array) -> jax.Array:
    r"""The weighting implied by IDDPM's eps-prediction loss with the cosine schedule, :math:`\mathrm{sech}(\lambda/2)`.

    Mathematical details:
        The eps-prediction loss :math:`\tfrac12\mathbb E_t\lVert\varepsilon - \hat\varepsilon\rVert^2` is
        :math:`\mathcal L_w` with :math:`w(\lambda) = -dt/d\lambda = p(\lambda)`, the training schedule's density
        (Kingma & Gao, Sec. 3.1; their App. D.5 drops the minus sign, erratum E7). For the cosine schedule
        :math:`p(\lambda) = \mathrm{sech}(\lambda/2)/(2\pi)`; Table 1 drops the :math:`1/(2\pi)`:

        .. math:: w(\lambda) = \mathrm{sech}(\lambda/2) = \frac{2 e^{-|\lambda|/2}}{1 + e^{-|\lambda|}},

        evaluated in the second form (no overflow). Not monotone: it peaks at :math:`\lambda = 0` with value 1.

    Args:
        log_snr: :math:`\lambda`, any shape.

    Returns:
        :math:`w(\lambda)`, shape of ``log_snr``.

    Example:
        >>> print(iddpm_weighting(jnp.array([0.0, 2.0, -2.0])).round(4))
        [1.     0.6481 0.6481]
    """
    a = jnp.abs(_log_snr("iddpm_weighting", log_snr))
    return 2.0 * jnp.exp(-0.5 * a) / (1.0 + jnp.exp(-a))


def v_weighting(log_snr: jax.Array) -> jax.Array:
    r"""The weighting of v-prediction with the cosine schedule (and of flow matching), :math:`e^{-\lambda/2}`.

    Mathematical details:
        The v-prediction loss (VP) has :math:`\lVert v - \hat v\rVert^2 = (1 + e^{-\lambda})\lVert\varepsilon -
        \hat\varepsilon\rVert^2`, so with the cosine schedule :math:`w = (1 + e^{-\lambda})\,\mathrm{sech}(\lambda/2)
        /(2\pi) = e^{-\lambda/2}/\pi` (Kingma & Gao, App. D.2; their Eq. 57 prints :math:`\pi e^{-\lambda/2}`,
        erratum E1). Dropping the constant (their Eq. 58):

        .. math:: w(\lambda) = e^{-\lambda/2},

        which is also the weighting of flow matching with the optimal-transport path (App. D.3). Monotone. With the
        *shifted* cosine schedule the v-loss is **not** this weighting, despite the paper's Eq. 60 (erratum E2):
        it is :math:`(1 + e^{-\lambda})\,\mathrm{sech}(\lambda/2 - s)/(2\pi)`.

    Args:
        log_snr: :math:`\lambda`, any shape.

    Returns:
        :math:`w(\lambda)`, shape of ``log_snr``.

    Example:
        >>> print(v_weighting(jnp.array([0.0, -2.0])).round(4))
        [1.     2.7183]
    """
    return jnp.exp(-0.5 * _log_snr("v_weighting", log_snr))


@functools.lru_cache(maxsize=64)
def _edm_peak(p_mean: float, p_std: float, sigma_data: float) -> float:
    loc, scale = -2.0 * p_mean, 2.0 * p_std
    log_sd2 = 2.0 * math.log(sigma_data)

    def log_w(lam):  # numpy float64, up to a constant
        return -0.5 * ((lam - loc) / scale) ** 2 + np.logaddexp(-lam, log_sd2)

    def slope(lam):  # d/dlam log w = -(lam - loc)/scale^2 - sigmoid(-lam - log sigma_d^2)
        return -(lam - loc) / scale**2 - 1.0 / (1.0 + math.exp(min(lam + log_sd2, 700.0)))

    # The weighting is a mixture of N(loc - scale^2, scale^2) and N(loc, scale^2): its maxima lie between the means.
    grid = np.linspace(loc - scale**2 - 1.0, loc + 1.0, 20001)
    i = int(np.argmax(log_w(grid)))
    low, high = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    for _ in range(100):  # bisection on the slope: positive left of the peak, negative right of it
        mid = 0.5 * (low + high)
        low, high = (mid, high) if slope(mid) > 0 else (low, mid)
    return 0.5 * (low + high)


def _edm_args(where: str, p_mean, p_std, sigma_data) -> tuple[float, float, float]:
    return (_finite_number(where, "p_mean", p_mean), _finite_number(where, "p_std", p_std, positive=True),
            _finite_number(where, "sigma_data", sigma_data, positive=True))


def edm_weighting_peak(*, p_mean: float = -1.2, p_std: float = 1.2, sigma_data: float = 0.5) -> float:
    r"""The log-SNR :math:`\lambda^*` at which the EDM weighting :func:`edm_weighting` is largest.

    Mathematical details:
        :math:`\lambda^* = \arg\max_\lambda \tilde w(\lambda)` solves
        :math:`(\lambda - \mu)/s^2 + \mathrm{sigmoid}(-\lambda - \log\tilde\sigma_{\text{data}}^2) = 0` with
        :math:`\mu = -2P_{\text{mean}}`, :math:`s = 2P_{\text{std}}`; found in float64 by a grid search between the
        two mixture means followed by bisection. For EDM's defaults :math:`\lambda^* \approx -3.3078`.

    Args:
        p_mean, p_std, sigma_data: EDM's hyper-parameters (finite; ``p_std`` and ``sigma_data`` positive).

    Returns:
        :math:`\lambda^*` as a Python float.

    Raises:
        ValueError: a non-finite hyper-parameter, or ``p_std <= 0`` / ``sigma_data <= 0``.

    Example:
        >>> print(round(edm_weighting_peak(), 4))
        -3.3078
    """
    return _edm_peak(*_edm_args("edm_weighting_peak", p_mean, p_std, sigma_data))


def _edm_log_weight(log_snr, p_mean, p_std, sigma_data):
    loc, scale = -2.0 * p_mean, 2.0 * p_std
    log_normal = -0.5 * jnp.square((log_snr - loc) / scale) - math.log(scale) - _HALF_LOG_2PI
    return log_normal + jnp.logaddexp(-log_snr, 2.0 * math.log(sigma_data))


def edm_weighting(log_snr: jax.Array, *, p_mean: float = -1.2, p_std: float = 1.2,
                  sigma_data: float = 0.5) -> jax.Array:
    r"""The weighting implied by the EDM loss, :math:`\mathcal N(\lambda; 2.4, 2.4^2)(e^{-\lambda} + 0.5^2)`.

    Mathematical details:
        EDM draws :math:`\log\tilde\sigma \sim \mathcal N(P_{\text{mean}}, P_{\text{std}}^2)` with
        :math:`\tilde\sigma^2 = e^{-\lambda}` (the variance-exploding noise of the same log-SNR, not the VP
        :math:`\sigma^2`, erratum E10) and weights the x-loss by :math:`(\tilde\sigma^2 + \tilde\sigma_d^2) /
        (\tilde\sigma^2\tilde\sigma_d^2)`. In log-SNR (Kingma & Gao, App. D.1, Eq. 44–48, dropping the constant
        :math:`1/\tilde\sigma_d^2`):

        .. math:: w(\lambda) = \mathcal N(\lambda;\, -2P_{\text{mean}},\, 4P_{\text{std}}^2)\,
            \big(e^{-\lambda} + \tilde\sigma_{\text{data}}^2\big),

        i.e. :math:`\mathcal N(\lambda; 2.4, 2.4^2)(e^{-\lambda} + 0.25)` for the defaults (Table 1). Evaluated in log
        space (``logaddexp``), so it is finite for any finite :math:`\lambda`. Not monotone: it peaks at
        :math:`\lambda^* \approx -3.3078` (:func:`edm_weighting_peak`). (The EDM *schedule* of Table 4 has a sign
        error in its inverse, erratum E4; the weighting is unaffected.)

    Args:
        log_snr: :math:`\lambda`, any shape.
        p_mean: :math:`P_{\text{mean}}` (default -1.2).
        p_std: :math:`P_{\text{std}} > 0` (default 1.2).
        sigma_data: :math:`\tilde\sigma_{\text{data}} > 0` (default 0.5).

    Returns:
        :math:`w(\lambda)`, shape of ``log_snr``.

    Raises:
        ValueError: a non-finite hyper-parameter, or ``p_std <= 0`` / ``sigma_data <= 0``.

    Example:
        >>> print(edm_weighting(jnp.array([-3.3078, 2.4])).round(4))
        [0.271  0.0566]
    """
    args = _edm_args("edm_weighting", p_mean, p_std, sigma_data)
    return jnp.exp(_edm_log_weight(_log_snr("edm_weighting", log_snr), *args))


def edm_monotone_weighting(log_snr: jax.Array, *, p_mean: float = -1.2, p_std: float = 1.2,
                           sigma_data: float = 0.5) -> jax.Array:
    r"""EDM-monotonic: the EDM weighting held at its maximum left of its peak (Kingma & Gao, Sec. 5.1).

    Mathematical details:
        With :math:`\tilde w` the EDM weighting (:func:`edm_weighting`) and
        :math:`\lambda^* = \arg\max\tilde w` (:func:`edm_weighting_peak`),

        .. math:: w(\lambda) = \begin{cases} \tilde w(\lambda^*) & \lambda < \lambda^* \\
            \tilde w(\lambda) & \lambda \ge \lambda^* \end{cases} \;=\; \tilde w(\max(\lambda, \lambda^*)),

        monotone (non-increasing in :math:`\lambda`). For the defaults :math:`\lambda^* \approx -3.3078` and
        :math:`\tilde w(\lambda^*) \approx 0.27103`.

    Args:
        log_snr: :math:`\lambda`, any shape.
        p_mean, p_std, sigma_data: EDM's hyper-parameters, as in :func:`edm_weighting`.

    Returns:
        :math:`w(\lambda)`, shape of ``log_snr``.

    Raises:
        ValueError: as :func:`edm_weighting`.

    Example:
        >>> print(edm_monotone_weighting(jnp.array([-10.0, -3.3078, 2.4])).round(4))
        [0.271  0.271  0.0566]
    """
    args = _edm_args("edm_monotone_weighting", p_mean, p_std, sigma_data)
    log_snr = _log_snr("edm_monotone_weighting", log_snr)
    peak = jnp.asarray(_edm_peak(*args), log_snr.dtype)
    return jnp.exp(_edm_log_weight(jnp.maximum(log_snr, peak), *args))


def shifted_weighting(weighting: Weighting, shift: float) -> Weighting:
    r"""A weighting moved along the log-SNR axis: :math:`w_s(\lambda) = w(\lambda - s)`.

    Mathematical details:
        Kingma & Gao train their high-resolution models with "shifted versions" of their weightings but never
        define the shift (erratum E12): the shifted cosine schedule moves :math:`\lambda` by :math:`2\log(64/d)`,
        their App. H moves the :math:`\lambda` range by :math:`\log(64/d)`. Here the shift :math:`s` is explicit, in
        log-SNR units, matching ``ShiftedCosine(shift=s)`` (whose density is the cosine one moved by :math:`s`).

    Args:
        weighting: a weighting ``w(log_snr)``.
        shift: :math:`s`, a finite Python number (negative for resolutions above 64).

    Returns:
        The weighting :math:`\lambda \mapsto w(\lambda - s)`.

    Raises:
        TypeError: a non-callable ``weighting``.
        ValueError: a non-finite ``shift``.

    Example:
        >>> w = shifted_weighting(sigmoid_weighting(2.0), -1.0)
        >>> print(w(jnp.array([1.0])).round(4))
        [0.5]
    """
    if not callable(weighting):
        raise TypeError(f"`shifted_weighting`: `weighting` must be callable as w(log_snr); got "
                        f"{type(weighting).__name__}.")
    shift = _finite_number("shifted_weighting", "shift", shift)

    def shifted(log_snr: jax.Array) -> jax.Array:
        return weighting(_log_snr("shifted_weighting", log_snr) - shift)

    name = getattr(weighting, "__name__", type(weighting).__name__)
    shifted.__name__ = shifted.__qualname__ = f"shifted_weighting({name}, shift={shift:g})"
    return shifted
