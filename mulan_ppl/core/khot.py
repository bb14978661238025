r"""The k-subset exponential family and perturb-and-MAP k-hot samplers, in pure ``jax.numpy``.

A k-hot vector :math:`c \in \{0, 1\}^m` with :math:`\sum_i c_i = k` is MuLAN's discrete auxiliary latent (m = 50,
k = 15 in the paper). This module holds every formula the two distribution backends need:

* the exact family :math:`p(c) \propto \exp\langle\theta, c\rangle` (``khot_*`` functions): normaliser, log-prob,
  exact sampling, inclusion marginals, entropy and the closed-form KLs to the uniform prior and to another member;
* the uniform prior over the :math:`\binom{m}{k}` subsets (``uniform_khot_*``, ``log_num_khot``);
* perturb-and-MAP sampling :math:`\mathrm{topk}(\theta + \varepsilon)` with Gumbel or sum-of-gamma noise
  (:func:`perturbed_top_k`, :func:`sum_of_gamma_noise`) and the reference code's categorical surrogate KL
  (:func:`categorical_surrogate_kl`).

Numerics. In float32 at m = 3072, log e_k and the KL to the uniform prior agree with float64 to 1e-5 relative and
sum(pi) = k to 2e-5 (docs/khot.md). The normaliser :math:`\log e_k(e^\theta)` is one ``lax.scan`` over the m items
carrying the *log-ratios* :math:`r_i[j] = E_i[j] - E_i[j-1]` of :math:`E_i[j] = \log e_j(w_1, \dots, w_i)`,
j = 1..k, not the table :math:`E_i[j]` itself (whose gradient, the marginals, is wrong in float32 at large m·k).
Impossible entries are padded with a large *finite* number, so no value or derivative is ever ``nan``. For k > m/2
the complement identity :math:`e_k(w) = \prod_i w_i\, e_{m-k}(1/w)` is used. The marginals come from a
forward-backward pass over the exact sampler's chain in probability space; entropy and KLs are sums of non-negative
per-decision terms (chain rule) rather than differences of large numbers. Time and memory O(m·k).

Shapes: ``logits`` is ``(*batch, m)``; ``k`` is a static Python int with ``0 <= k <= m``; results per distribution
have shape ``batch``; samples have shape ``(*sample_shape, *batch, m)`` and the dtype of ``logits``.

References:
    1. Sahoo, Gokaslan, De Sa, Kuleshov. Diffusion Models With Learned Adaptive Noise (MuLAN), 2024.
       https://arxiv.org/abs/2312.13236 (appendix F, eq. 71: sum-of-gamma noise).
    2. Ahmed, Zeng, Niepert, Van den Broeck. SIMPLE: A Gradient Estimator for k-Subset Sampling, 2023.
       https://arxiv.org/abs/2210.01941
    3. Niepert, Minervini, Franceschi. Implicit MLE: Backpropagating Through Discrete Exponential Family
       Distributions, 2021. https://arxiv.org/abs/2106.01798
    4. Sahoo, Paulus, Vlastelica, Musil, Kuleshov, Martius. Backpropagation through Combinatorial Algorithms:
       Identity with Projection Works, 2023. https://arxiv.org/abs/2205.15213
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl import _validation

__all__ = [
    "KHOT_GRADIENTS",
    "MAX_ENUMERATE_CATEGORIES",
    "PERTURBATION_NOISES",
    "PERTURBED_TOP_K_GRADIENTS",
    "categorical_surrogate_kl",
    "enumerate_khot",
    "kl_khot_khot",
    "kl_khot_uniform",
    "kl_uniform_khot",
    "khot_entropy",
    "khot_log_normalizer",
    "khot_log_prob",
    "khot_marginals",
    "khot_mode",
    "khot_sample",
    "log_num_khot",
    "perturbed_top_k",
    "sum_of_gamma_noise",
    "top_k_mask",
    "uniform_khot_sample",
]

#: Gradient estimators of :func:`khot_sample`.
KHOT_GRADIENTS = ("simple", "straight_through", "none")
#: Gradient estimators of :func:`perturbed_top_k`.
PERTURBED_TOP_K_GRADIENTS = ("identity", "straight_through", "none")
#: Noise families of :func:`perturbed_top_k`.
PERTURBATION_NOISES = ("sum_of_gamma", "gumbel", "sum_of_gamma_reference")
#: Largest number of categories for which :func:`enumerate_khot` lists all subsets (C(16, 8) = 12870).
MAX_ENUMERATE_CATEGORIES = 16


# ---------------------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------------------


def _check_k(where: str, k, num_categories: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"`{where}`: `k` must be a Python int with 0 <= k <= {num_categories}; got {k!r}.")
    if not 0 <= k <= num_categories:
        raise ValueError(
            f"`{where}`: `k` must satisfy 0 <= k <= num_categories = {num_categories}; got k={int(k)}."
        )
    return int(k)


def _check_logits(where: str, logits, k, name: str = "logits") -> tuple[jax.Array, int]:
    logits = _validation.as_float_array(logits, name, where)
    if logits.ndim < 1:
        raise ValueError(
            f"`{where}`: `{name}` must have rank >= 1 with the categories on the last axis, shape (*batch, m); "
            f"got {name}.shape={tuple(logits.shape)}."
        )
    if logits.shape[-1] < 1:
        raise ValueError(f"`{where}`: `{name}` must have at least one category; got {name}.shape={logits.shape}.")
    # Finite logits (DESIGN.md §5); scores of a top-k may be -inf (excluded items) but not NaN.
    _validation.check_values(where, allow_inf=(name,) if name == "scores" else (), **{name: logits})
    return logits, _check_k(where, k, logits.shape[-1])


def _check_num_categories(where: str, num_categories) -> int:
    return _validation.check_positive_int(where, "num_categories", num_categories, minimum=1)


def _check_sample_shape(where: str, sample_shape) -> tuple[int, ...]:
    if isinstance(sample_shape, (int, np.integer)):
        sample_shape = (int(sample_shape),)
    try:
        shape = tuple(int(s) for s in sample_shape)
    except TypeError as err:
        raise ValueError(f"`{where}`: `sample_shape` must be a tuple of ints; got {sample_shape!r}.") from err
    if any(s < 0 for s in shape):
        raise ValueError(f"`{where}`: `sample_shape` must hold non-negative ints; got {shape}.")
    return shape


def _check_value(where: str, value, num_categories: int, dtype) -> jax.Array:
    value = jnp.asarray(value)
    if value.ndim < 1 or value.shape[-1] != num_categories:
        raise ValueError(
            f"`{where}`: `value` must have the categories on its last axis, shape (..., {num_categories}); "
            f"got value.shape={tuple(value.shape)}."
        )
    return value.astype(dtype)


def _check_temperature(where: str, temperature, dtype) -> jax.Array:
    temperature = _validation.as_float_array(temperature, "temperature", where).astype(dtype)
    if temperature.ndim != 0:
        raise ValueError(f"`{where}`: `temperature` must be a scalar; got temperature.shape={temperature.shape}.")
    if _validation.is_concrete(temperature) and not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"`{where}`: `temperature` must be finite and > 0; got temperature={float(temperature)}.")
    return temperature


def _lift(x: jax.Array, ndim: int) -> jax.Array:
    """Adds leading unit dims up to ``ndim`` (explicit, so no implicit rank promotion happens)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape) if x.ndim < ndim else x


def _pad_values(dtype) -> tuple[float, float]:
    """Finite stand-ins for -inf / +inf log-ratios: far beyond any logit, yet safe to add and subtract."""
    big = float(np.sqrt(np.finfo(dtype).max))
    return -big, big


# ---------------------------------------------------------------------------------------------------------------
# The exact family
# ---------------------------------------------------------------------------------------------------------------


def log_num_khot(num_categories: int, k: int) -> float:
    r"""The log number of k-subsets of m items, :math:`\log\binom{m}{k}`, as a Python float.

    Args:
        num_categories: m, a Python int >= 1.
        k: a Python int in [0, m].

    Returns:
        :math:`\log\binom{m}{k}` (computed in float64 with ``math.lgamma``).

    Raises:
        ValueError: ``num_categories`` or ``k`` out of range or not an int.

    Example:
        >>> print(round(log_num_khot(50, 15), 4), round(math.log(math.comb(50, 15)), 4))
        28.4423 28.4423
    """
    m = _check_num_categories("log_num_khot", num_categories)
    k = _check_k("log_num_khot", k, m)
    return math.lgamma(m + 1) - math.lgamma(k + 1) - math.lgamma(m - k + 1)


def _canonical(logits: jax.Array, k: int) -> tuple[jax.Array, int, bool]:
    # e_k(w) = prod(w) e_{m-k}(1/w): a subset of size k > m/2 is the complement of one of size m - k, so the
    # recurrences below always run with k <= m/2 (k = m and k = m - 1 become the exact cases 0 and 1).
    m = logits.shape[-1]
    if 2 * k > m:
        return -logits, m - k, True
    return logits, k, False


def _ratio_scan(theta: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The log-ratio recurrence; returns (r_m, stacked r_0..r_{m-1}) of shapes (*B, k) and (m, *B, k)."""
    neg, pos = _pad_values(theta.dtype)
    batch = theta.shape[:-1]
    r0 = jnp.full(batch + (k,), neg, theta.dtype)
    top = jnp.full(batch + (1,), pos, theta.dtype)

    def step(r, theta_i):
        theta_i = theta_i[..., None]
        r_below = jnp.concatenate([top, r[..., :-1]], axis=-1)  # r_{i-1}[j-1], with r_{i-1}[0] = +inf
        r_new = jnp.logaddexp(r, theta_i) - jax.nn.softplus(theta_i - r_below)
        return r_new, r

    return jax.lax.scan(step, r0, jnp.moveaxis(theta, -1, 0))


def _inclusion_logits(theta: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """log e_k and x_i[j] = theta_i - r_{i-1}[j], the log-odds of including item i with j ones left, j = 0..k.

    Returns ``(log_z, x)`` with ``x`` of shape (m, *B, k + 1). Forced moves come out of the padding: x is about
    -1.8e19 at j = 0 (never include) and +1.8e19 where j >= i (always include), so sigmoid(x) is exactly 0 or 1 there
    and every derivative is finite.
    """
    r_m, ratios = _ratio_scan(theta, k)
    _, pos = _pad_values(theta.dtype)
    ratios = jnp.concatenate([jnp.full(ratios.shape[:-1] + (1,), pos, ratios.dtype), ratios], axis=-1)
    x = jnp.moveaxis(theta, -1, 0)[..., None] - ratios
    return jnp.sum(r_m, axis=-1), x


def _state_occupancy(x: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """Forward-backward in probability space: P(j ones left before item i) and the marginals.

    Runs the exact sampler's Markov chain (items m..1, state j) on distributions instead of draws; every quantity
    is a probability in [0, 1] and the total mass stays 1, so sum(pi) = k holds to rounding.
    Returns ``(occupancy, pi)`` of shapes (m, *B, k + 1) and (m, *B).
    """
    q0 = jnp.zeros(x.shape[1:], x.dtype).at[..., k].set(1.0)

    def step(q, x_i):
        moved = q * jax.nn.sigmoid(x_i)  # include item i: j -> j - 1
        q_new = q * jax.nn.sigmoid(-x_i) + jnp.concatenate([moved[..., 1:], jnp.zeros_like(moved[..., :1])], -1)
        # The mass is 1 exactly (for every theta, so this changes no derivative); renormalising keeps float32
        # rounding from accumulating over the m steps (sum(pi) - k drifts by ~1e-3 at m = 3072, k = 1536 without).
        q_new = q_new / jnp.sum(q_new, axis=-1, keepdims=True)
        return q_new, (q, jnp.sum(moved, axis=-1))

    _, (occupancy, pi) = jax.lax.scan(step, q0, x, reverse=True)
    return occupancy, pi


def _binary_entropy_from_logit(x: jax.Array) -> jax.Array:
    # H(Bernoulli(sigmoid(x))) = softplus(-|x|) + |x| sigmoid(-|x|): a sum of non-negative terms.
    a = jnp.abs(x)
    return jax.nn.softplus(-a) + a * jax.nn.sigmoid(-a)


def _binary_kl_from_logits(x: jax.Array, y: jax.Array) -> jax.Array:
    # KL(Bernoulli(sigmoid(x)) || Bernoulli(sigmoid(y))).
    return jax.nn.sigmoid(x) * (jax.nn.log_sigmoid(x) - jax.nn.log_sigmoid(y)) + jax.nn.sigmoid(-x) * (
        jax.nn.log_sigmoid(-x) - jax.nn.log_sigmoid(-y)
    )


def _marginals_canonical(theta: jax.Array, k: int) -> jax.Array:
    _, x = _inclusion_logits(theta, k)
    _, pi = _state_occupancy(x, k)
    return jnp.moveaxis(pi, 0, -1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _log_normalizer_canonical(theta: jax.Array, k: int) -> jax.Array:
    r_m, _ = _ratio_scan(theta, k)
    return jnp.sum(r_m, axis=-1)


@_log_normalizer_canonical.defjvp
def _log_normalizer_canonical_jvp(k, primals, tangents):
    # d log e_k = <pi, d theta>, with pi from the forward-backward pass (reverse-mode through the ratio
    # recurrence carries adjoints up to k and loses about log2(k) bits of the marginals in float32).
    (theta,), (d_theta,) = primals, tangents
    log_z = _log_normalizer_canonical(theta, k)
    return log_z, jnp.sum(_marginals_canonical(theta, k) * d_theta, axis=-1)


def _log_normalizer(logits: jax.Array, k: int) -> jax.Array:
    theta, kc, flipped = _canonical(logits, k)
    log_z = _log_normalizer_canonical(theta, kc)
    return log_z + jnp.sum(logits, axis=-1) if flipped else log_z


def _marginals(logits: jax.Array, k: int) -> jax.Array:
    theta, kc, flipped = _canonical(logits, k)
    pi = _marginals_canonical(theta, kc)
    return 1.0 - pi if flipped else pi


# The public functions check their arguments in Python and call these jitted bodies (k and the other mode arguments
# static): repeated eager calls reuse one compilation instead of re-tracing every scan, and inside a caller's jit
# they are inlined.


@functools.partial(jax.jit, static_argnums=(1,))
def _log_normalizer_jit(logits, k):
    return _log_normalizer(logits, k)


@functools.partial(jax.jit, static_argnums=(1,))
def _marginals_jit(logits, k):
    return _marginals(logits, k)


@functools.partial(jax.jit, static_argnums=(2,))
def _log_prob_jit(value, logits, k):
    ndim = max(value.ndim, logits.ndim)
    log_z = _lift(_log_normalizer(logits, k), ndim - 1)
    return jnp.sum(_lift(value, ndim) * _lift(logits, ndim), axis=-1) - log_z


@functools.partial(jax.jit, static_argnums=(1,))
def _entropy_jit(logits, k):
    theta, kc, _ = _canonical(logits, k)
    _, x = _inclusion_logits(theta, kc)
    occupancy, _ = _state_occupancy(x, kc)
    return jnp.sum(occupancy * _binary_entropy_from_logit(x), axis=(0, -1))


@functools.partial(jax.jit, static_argnums=(2,))
def _kl_khot_khot_jit(logits_q, logits_p, k):
    logits_q, logits_p = jnp.broadcast_arrays(logits_q, logits_p)
    theta_q, kc, _ = _canonical(logits_q, k)
    theta_p, _, _ = _canonical(logits_p, k)
    _, x_q = _inclusion_logits(theta_q, kc)
    _, x_p = _inclusion_logits(theta_p, kc)
    occupancy, _ = _state_occupancy(x_q, kc)
    return jnp.sum(occupancy * _binary_kl_from_logits(x_q, x_p), axis=(0, -1))


@functools.partial(jax.jit, static_argnums=(1,))
def _kl_uniform_khot_jit(logits, k):
    theta = logits - jnp.mean(logits, axis=-1, keepdims=True)
    return _log_normalizer(theta, k) - log_num_khot(logits.shape[-1], k)


def khot_log_normalizer(logits: jax.Array, k: int) -> jax.Array:
    r"""Log normaliser of the k-subset family, :math:`\log e_k(e^{\theta_1}, \dots, e^{\theta_m})`.

    Mathematical details:
        .. math:: \log Z(\theta) = \log e_k(w) = \log \sum_{|S| = k} \prod_{i \in S} w_i, \qquad w_i = e^{\theta_i}.

        With :math:`E_i[j] = \log e_j(w_1..w_i)` the log-ratios :math:`r_i[j] = E_i[j] - E_i[j-1]` obey

        .. math:: r_i[j] = \mathrm{logaddexp}(r_{i-1}[j], \theta_i) - \mathrm{softplus}(\theta_i - r_{i-1}[j-1]),
            \qquad r_{i-1}[0] = +\infty,

        and :math:`\log e_k = \sum_{j=1}^k r_m[j]`. One ``lax.scan`` over i: O(m·k) time and memory. For
        k > m/2 it uses :math:`e_k(w) = \prod_i w_i \, e_{m-k}(1/w)`. Its gradient is :func:`khot_marginals`.

    Args:
        logits: :math:`\theta`, shape ``(*batch, m)``, finite, floating.
        k: subset size, a Python int with ``0 <= k <= m``.

    Returns:
        :math:`\log e_k`, shape ``batch``.

    Raises:
        ValueError: ``k`` not an int in [0, m]; ``logits`` of rank 0, or (when concrete) holding NaN or Inf.

    Example:
        >>> lz = khot_log_normalizer(jnp.log(jnp.asarray([1.0, 2.0, 3.0])), 2)  # e_2 = 1*2 + 1*3 + 2*3 = 11
        >>> print(round(float(jnp.exp(lz)), 4))
        11.0
    """
    logits, k = _check_logits("khot_log_normalizer", logits, k)
    return _log_normalizer_jit(logits, k)


def khot_marginals(logits: jax.Array, k: int) -> jax.Array:
    r"""Inclusion probabilities :math:`\pi_i = P(c_i = 1)`, the mean of the k-subset family.

    Mathematical details:
        .. math:: \pi_i = \frac{\partial \log e_k(e^\theta)}{\partial \theta_i}
            = \sum_{j} P(j \text{ ones left before item } i)\,\mathrm{sigmoid}(\theta_i - r_{i-1}[j]),
            \qquad \sum_i \pi_i = k,

        computed by a forward-backward pass over the exact sampler's chain (see :func:`khot_sample`), in
        probability space. It is differentiable again: the Jacobian of :math:`\pi` is the covariance of c.

    Args:
        logits: shape ``(*batch, m)``.
        k: a Python int in [0, m].

    Returns:
        :math:`\pi`, shape ``(*batch, m)``, entries in [0, 1].

    Raises:
        ValueError: as :func:`khot_log_normalizer`.

    Example:
        >>> pi = khot_marginals(jnp.log(jnp.asarray([1.0, 2.0, 3.0])), 2)  # subsets 12, 13, 23 with weights 2, 3, 6
        >>> print(pi.round(4), float(pi.sum()))
        [0.4545 0.7273 0.8182] 2.0
    """
    logits, k = _check_logits("khot_marginals", logits, k)
    return _marginals_jit(logits, k)


def khot_log_prob(value: jax.Array, logits: jax.Array, k: int) -> jax.Array:
    r"""Log-probability of a k-hot vector under :math:`p(c) = \exp(\langle\theta, c\rangle) / e_k(e^\theta)`.

    Mathematical details:
        .. math:: \log p(c) = \langle \theta, c \rangle - \log e_k(e^\theta).

        ``value`` is assumed to be k-hot (the formula is evaluated as is; the NumPyro class checks the support when
        validation is on).

    Args:
        value: k-hot vectors, shape ``(..., m)`` broadcastable against ``logits``.
        logits: shape ``(*batch, m)``.
        k: a Python int in [0, m].

    Returns:
        Shape ``broadcast(value.shape[:-1], batch)``.

    Raises:
        ValueError: ``value`` without m on its last axis; as :func:`khot_log_normalizer`.

    Example:
        >>> lp = khot_log_prob(jnp.asarray([1.0, 0.0, 1.0]), jnp.log(jnp.asarray([1.0, 2.0, 3.0])), 2)
        >>> print(round(float(jnp.exp(lp)), 4))  # 1*3 / 11
        0.2727
    """
    logits, k = _check_logits("khot_log_prob", logits, k)
    value = _check_value("khot_log_prob", value, logits.shape[-1], logits.dtype)
    _validation.check_broadcastable("khot_log_prob", logits=logits, value=value)
    return _log_prob_jit(value, logits, k)


def khot_entropy(logits: jax.Array, k: int) -> jax.Array:
    r"""Entropy of the k-subset family.

    Mathematical details:
        .. math:: H(p) = \log e_k(e^\theta) - \langle \pi, \theta \rangle
            = \sum_i \mathbb E_j\big[h\big(\mathrm{sigmoid}(\theta_i - r_{i-1}[j])\big)\big],

        where h is the binary entropy: by the chain rule, the entropy of a k-subset is the expected entropy of the
        exact sampler's include/exclude decisions (a subset and its decision path determine each other). The
        second form is a sum of non-negative terms and keeps full float32 precision where the first is a
        difference of two large numbers.

    Args:
        logits: shape ``(*batch, m)``.
        k: a Python int in [0, m].

    Returns:
        Entropy in nats, shape ``batch``, in :math:`[0, \log\binom{m}{k}]`.

    Raises:
        ValueError: as :func:`khot_log_normalizer`.

    Example:
        >>> print(round(float(khot_entropy(jnp.zeros(5), 2)), 4), round(math.log(10), 4))
        2.3026 2.3026
    """
    logits, k = _check_logits("khot_entropy", logits, k)
    return _entropy_jit(logits, k)


def kl_khot_uniform(logits: jax.Array, k: int) -> jax.Array:
    r"""Exact KL from the k-subset family to the uniform distribution over k-subsets.

    Mathematical details:
        .. math:: \mathrm{KL}(p_\theta \,\|\, U) = \langle \pi, \theta\rangle - \log e_k(e^\theta)
            + \log\binom{m}{k} = \log\binom{m}{k} - H(p_\theta),

        evaluated through the entropy of :func:`khot_entropy`.

    Args:
        logits: shape ``(*batch, m)``.
        k: a Python int in [0, m].

    Returns:
        KL in nats, shape ``batch``.

    Raises:
        ValueError: as :func:`khot_log_normalizer`.

    Example:
        >>> print(round(float(kl_khot_uniform(jnp.zeros(5), 2)), 6))
        0.0
    """
    logits, k = _check_logits("kl_khot_uniform", logits, k)
    return log_num_khot(logits.shape[-1], k) - khot_entropy(logits, k)


def kl_khot_khot(logits_q: jax.Array, logits_p: jax.Array, k: int) -> jax.Array:
    r"""Exact KL between two k-subset distributions with the same m and k.

    Mathematical details:
        .. math:: \mathrm{KL}(q \,\|\, p) = \langle \pi_q, \theta_q - \theta_p \rangle
            - \log e_k(e^{\theta_q}) + \log e_k(e^{\theta_p})
            = \sum_i \mathbb E^q_j\big[\mathrm{KL}\big(\mathrm{Bern}(\mathrm{sigmoid}(x^q_i[j]))
            \,\|\, \mathrm{Bern}(\mathrm{sigmoid}(x^p_i[j]))\big)\big],

        with :math:`x_i[j] = \theta_i - r_{i-1}[j]` the include log-odds of each distribution's exact sampler: the
        chain rule of the KL over the (bijective) decision paths. The second form is a sum of non-negative terms.

    Args:
        logits_q: shape ``(*batch_q, m)``.
        logits_p: shape ``(*batch_p, m)``, broadcastable against ``logits_q``.
        k: a Python int in [0, m].

    Returns:
        KL in nats, shape ``broadcast(batch_q, batch_p)``.

    Raises:
        ValueError: different m; as :func:`khot_log_normalizer`.

    Example:
        >>> theta = jnp.asarray([0.5, -1.0, 2.0])
        >>> print(float(kl_khot_khot(theta, theta, 2)), round(float(kl_khot_khot(theta, jnp.zeros(3), 2)), 3))
        0.0 0.477
    """
    logits_q, k = _check_logits("kl_khot_khot", logits_q, k, "logits_q")
    logits_p, _ = _check_logits("kl_khot_khot", logits_p, k, "logits_p")
    if logits_q.shape[-1] != logits_p.shape[-1]:
        raise ValueError(
            "`kl_khot_khot`: `logits_q` and `logits_p` must have the same number of categories; got "
            f"logits_q.shape={tuple(logits_q.shape)}, logits_p.shape={tuple(logits_p.shape)}."
        )
    _validation.check_broadcastable("kl_khot_khot", logits_q=logits_q, logits_p=logits_p)
    if logits_q.ndim != logits_p.ndim:  # explicit, so no implicit rank promotion happens
        ndim = max(logits_q.ndim, logits_p.ndim)
        logits_q, logits_p = _lift(logits_q, ndim), _lift(logits_p, ndim)
    return _kl_khot_khot_jit(logits_q, logits_p, k)


def kl_uniform_khot(logits: jax.Array, k: int) -> jax.Array:
    r"""Exact KL from the uniform distribution over k-subsets to the k-subset family.

    Mathematical details:
        .. math:: \mathrm{KL}(U \,\|\, p_\theta) = -\log\binom{m}{k} - \frac{k}{m}\sum_i \theta_i
            + \log e_k(e^\theta),

        since every item has inclusion probability k/m under U (evaluated on logits centred to mean 0, where the
        two terms involving θ are smallest; the KL is invariant to a shift of θ).

    Args:
        logits: the logits of :math:`p_\theta`, shape ``(*batch, m)``.
        k: a Python int in [0, m].

    Returns:
        KL in nats, shape ``batch``.

    Raises:
        ValueError: as :func:`khot_log_normalizer`.

    Example:
        >>> print(round(float(kl_uniform_khot(jnp.asarray([0.0, 0.0, 30.0]), 1)), 3))
        18.901
    """
    logits, k = _check_logits("kl_uniform_khot", logits, k)
    return _kl_uniform_khot_jit(logits, k)


def top_k_mask(scores: jax.Array, k: int) -> jax.Array:
    r"""The k-hot indicator of the k largest entries on the last axis (ties: lower index first).

    Args:
        scores: shape ``(..., m)``.
        k: a Python int in [0, m].

    Returns:
        k-hot array of ``scores``'s shape and floating dtype.

    Raises:
        ValueError: ``k`` out of range; ``scores`` of rank 0.

    Example:
        >>> print(top_k_mask(jnp.asarray([0.1, 3.0, -2.0, 3.0]), 2))
        [0. 1. 0. 1.]
    """
    scores, k = _check_logits("top_k_mask", scores, k, "scores")
    return _top_k_mask(scores, k)


@functools.partial(jax.jit, static_argnums=(1,))
def _top_k_mask(scores, k):
    order = jnp.argsort(-scores, axis=-1, stable=True)
    ranks = jnp.argsort(order, axis=-1, stable=True)
    return (ranks < k).astype(scores.dtype)


def khot_mode(logits: jax.Array, k: int) -> jax.Array:
    r"""The most probable k-hot vector: the indicator of the k largest logits.

    Args:
        logits: shape ``(*batch, m)``.
        k: a Python int in [0, m].

    Returns:
        Shape ``(*batch, m)``, dtype of ``logits``.

    Example:
        >>> print(khot_mode(jnp.asarray([0.3, -1.0, 2.0]), 2))
        [1. 0. 1.]
    """
    logits, k = _check_logits("khot_mode", logits, k)
    return _top_k_mask(logits, k)


def _attach_gradient(where: str, hard: jax.Array, logits: jax.Array, k: int, gradient: str) -> jax.Array:
    hard = jax.lax.stop_gradient(hard)
    if gradient == "simple":
        pi = _marginals(logits, k)
        return hard + _lift(pi - jax.lax.stop_gradient(pi), hard.ndim)
    elif gradient == "straight_through":
        return hard + _lift(logits - jax.lax.stop_gradient(logits), hard.ndim)
    elif gradient == "none":
        return hard
    else:
        raise ValueError(f"`{where}`: `gradient` must be one of {KHOT_GRADIENTS}; got {gradient!r}.")


def khot_sample(
    logits: jax.Array, key: jax.Array, k: int, sample_shape: Sequence[int] = (), *, gradient: str = "simple"
) -> jax.Array:
    r"""Exact samples from the k-subset family, with a chosen gradient estimator.

    Mathematical details:
        Sequential conditional draws from the last item to the first: with j ones still to place among items
        1..i, item i is included with probability

        .. math:: P(c_i = 1 \mid j) = \frac{w_i\, e_{j-1}(w_{1..i-1})}{e_j(w_{1..i})}
            = \mathrm{sigmoid}(\theta_i - r_{i-1}[j]),

        the share of size-j subsets of items 1..i that contain i (1 when j = i, 0 when j = 0). Every draw has
        exactly k ones and the law is exactly :math:`p(c)`. The logistic noise is drawn up front; the backward
        pass over the stored log-ratios is one ``lax.scan``, vectorised over sample and batch dims.

        Gradient estimators (the forward value is always the exact sample c):

        * ``"simple"``: :math:`c + \pi - \mathrm{sg}(\pi)`, so :math:`\partial c / \partial\theta := \partial\pi /
          \partial\theta` (SIMPLE, Ahmed et al. 2023); exact for objectives linear in c.
        * ``"straight_through"``: :math:`c + \theta - \mathrm{sg}(\theta)`, the identity Jacobian.
        * ``"none"``: no gradient.

    Args:
        logits: shape ``(*batch, m)``.
        key: a typed ``jax.random.key``.
        k: a Python int in [0, m].
        sample_shape: leading sample dims.
        gradient: one of :data:`KHOT_GRADIENTS`.

    Returns:
        k-hot samples, shape ``(*sample_shape, *batch, m)``, dtype of ``logits``.

    Raises:
        ValueError: unknown ``gradient``; as :func:`khot_log_normalizer`.

    Example:
        >>> c = khot_sample(jnp.zeros((2, 5)), jax.random.key(0), 3, (4,))
        >>> print(c.shape, c.sum(-1))
        (4, 2, 5) [[3. 3.]
         [3. 3.]
         [3. 3.]
         [3. 3.]]
    """
    where = "khot_sample"
    _validation.check_key(where, key)
    logits, k = _check_logits(where, logits, k)
    sample_shape = _check_sample_shape(where, sample_shape)
    _validation.check_one_of(where, "gradient", gradient, KHOT_GRADIENTS)
    return _khot_sample_jit(logits, key, k, sample_shape, gradient)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _khot_sample_jit(logits, key, k, sample_shape, gradient):
    theta, kc, flipped = _canonical(jax.lax.stop_gradient(logits), k)
    m = theta.shape[-1]
    batch = theta.shape[:-1]
    _, x = _inclusion_logits(theta, kc)  # (m, *batch, kc + 1)
    noise = jax.random.logistic(key, (m,) + sample_shape + batch, theta.dtype)

    def step(j, inputs):
        x_i, noise_i = inputs  # (*batch, kc + 1), (*sample, *batch)
        x_ij = jnp.take_along_axis(jnp.broadcast_to(x_i, sample_shape + x_i.shape), j[..., None], axis=-1)[..., 0]
        include = noise_i < x_ij  # x_ij is about -1.8e19 / +1.8e19 (padding) where the move is forced
        return j - include.astype(j.dtype), include

    j0 = jnp.full(sample_shape + batch, kc, jnp.int32)
    _, included = jax.lax.scan(step, j0, (x, noise), reverse=True)
    hard = jnp.moveaxis(included, 0, -1)
    hard = (~hard if flipped else hard).astype(logits.dtype)
    return _attach_gradient("khot_sample", hard, logits, k, gradient)


def enumerate_khot(num_categories: int, k: int, dtype=None) -> jax.Array:
    r"""All :math:`\binom{m}{k}` k-hot vectors, in ``itertools.combinations`` order.

    Args:
        num_categories: m, at most :data:`MAX_ENUMERATE_CATEGORIES`.
        k: a Python int in [0, m].
        dtype: floating dtype of the result (default: JAX's default float).

    Returns:
        Shape ``(C(m, k), m)``.

    Raises:
        ValueError: m above :data:`MAX_ENUMERATE_CATEGORIES`; ``k`` out of range.

    Example:
        >>> print(enumerate_khot(3, 2))
        [[1. 1. 0.]
         [1. 0. 1.]
         [0. 1. 1.]]
    """
    m = _check_num_categories("enumerate_khot", num_categories)
    k = _check_k("enumerate_khot", k, m)
    if m > MAX_ENUMERATE_CATEGORIES:
        raise ValueError(
            f"`enumerate_khot`: `num_categories` must be at most {MAX_ENUMERATE_CATEGORIES} to enumerate all "
            f"subsets; got num_categories={m} (C({m}, {k}) = {math.comb(m, k)} subsets)."
        )
    table = np.zeros((math.comb(m, k), m), dtype=np.float64)
    for row, subset in enumerate(itertools.combinations(range(m), k)):
        table[row, list(subset)] = 1.0
    return jnp.asarray(table, dtype=dtype if dtype is not None else jnp.result_type(float))


def uniform_khot_sample(
    key: jax.Array, num_categories: int, k: int, sample_shape: Sequence[int] = (), dtype=None
) -> jax.Array:
    r"""Exact uniform samples over the k-subsets of m items.

    Mathematical details:
        Selection sampling (Knuth's Algorithm S): scanning the items in order, with j ones still to place among the
        n remaining items, include the current one with probability j / n. Every subset has probability
        :math:`1/\binom{m}{k}`.

    Args:
        key: a typed ``jax.random.key``.
        num_categories: m.
        k: a Python int in [0, m].
        sample_shape: leading sample dims.
        dtype: floating dtype of the result (default: JAX's default float).

    Returns:
        k-hot samples, shape ``(*sample_shape, m)``.

    Raises:
        ValueError: ``num_categories`` or ``k`` out of range.

    Example:
        >>> print(uniform_khot_sample(jax.random.key(1), 6, 2, (3,)).sum(-1))
        [2. 2. 2.]
    """
    where = "uniform_khot_sample"
    _validation.check_key(where, key)
    m = _check_num_categories(where, num_categories)
    k = _check_k(where, k, m)
    sample_shape = _check_sample_shape(where, sample_shape)
    dtype = jnp.dtype(dtype if dtype is not None else jnp.result_type(float))
    return _uniform_khot_sample_jit(key, m, k, sample_shape, dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _uniform_khot_sample_jit(key, m, k, sample_shape, dtype):
    u = jax.random.uniform(key, (m,) + sample_shape, dtype)

    def step(j, inputs):
        u_i, remaining = inputs
        include = u_i * remaining.astype(dtype) < j.astype(dtype)
        return j - include.astype(j.dtype), include

    remaining = jnp.arange(m, 0, -1, dtype=jnp.int32)
    _, included = jax.lax.scan(step, jnp.full(sample_shape, k, jnp.int32), (u, remaining))
    return jnp.moveaxis(included, 0, -1).astype(dtype)


# ---------------------------------------------------------------------------------------------------------------
# Perturb-and-MAP
# ---------------------------------------------------------------------------------------------------------------


def _gamma_sum(key: jax.Array, shape: tuple[int, ...], k: int, num_terms: int, dtype, *, paper: bool) -> jax.Array:
    i = jnp.arange(1, num_terms + 1, dtype=dtype)
    scale = k / i if paper else i / k
    g = jax.random.gamma(key, jnp.asarray(1.0 / k, dtype), (num_terms,) + shape, dtype)
    scale = scale.reshape((num_terms,) + (1,) * len(shape))
    return jnp.sum(g * scale, axis=0)


def sum_of_gamma_noise(
    key: jax.Array,
    shape: Sequence[int],
    k: int,
    *,
    temperature: float | jax.Array = 10.0,
    num_terms: int = 10,
    dtype=None,
) -> jax.Array:
    r"""Sum-of-gamma noise SoG(k, τ, s) of MuLAN's eq. 71 (after Niepert et al.'s I-MLE).

    Mathematical details:
        .. math:: \mathrm{SoG}(k, \tau, s) = \frac{\tau}{k}\Big(\sum_{i=1}^{s}
            \mathrm{Gamma}\big(\text{shape}=\tfrac1k, \text{scale}=\tfrac{k}{i}\big) - \log s\Big).

        The sum of k independent SoG(k, 1, s) draws is :math:`\sum_{i \le s} E_i / i - \log s` with
        :math:`E_i \sim \mathrm{Exp}(1)`, which tends to Gumbel(0, 1) as s grows (mean
        :math:`H_s - \log s \to 0.5772`, variance :math:`\sum_{i \le s} i^{-2} \to \pi^2/6`): every k-subset's
        total perturbation is then close to Gumbel. The perturbations of different subsets share items, so
        :math:`\mathrm{topk}(\theta + \mathrm{SoG})` is *not* the k-subset family with logits θ/τ for k >= 2
        (measured total variation 0.2-0.4 at m = 6, k = 2, 3; see docs/khot.md).

        The reference code of MuLAN divides by k/i (scale i/k); that variant is reachable only as
        ``perturbed_top_k(..., noise="sum_of_gamma_reference")``.

    Args:
        key: a typed ``jax.random.key``.
        shape: shape of the result.
        k: subset size, a Python int >= 1.
        temperature: τ > 0 (a scalar).
        num_terms: s, a Python int >= 1.
        dtype: floating dtype (default: JAX's default float).

    Returns:
        Noise of shape ``shape``.

    Raises:
        ValueError: ``k`` or ``num_terms`` not an int >= 1.

    Example:
        >>> eps = sum_of_gamma_noise(jax.random.key(0), (10000,), 15)  # tau = 10, s = 10
        >>> print(eps.shape, round(float(eps.std()), 1))  # (tau^2 / k) sum_i 1 / i^2 = 3.21^2
        (10000,) 3.2
    """
    where = "sum_of_gamma_noise"
    _validation.check_key(where, key)
    k = _validation.check_positive_int(where, "k", k, minimum=1)
    num_terms = _validation.check_positive_int(where, "num_terms", num_terms, minimum=1)
    shape = _check_sample_shape(where, shape)
    dtype = jnp.dtype(dtype if dtype is not None else jnp.result_type(float))
    temperature = _check_temperature(where, temperature, dtype)
    return _perturbation(key, shape, k, "sum_of_gamma", temperature, num_terms, dtype)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 5, 6))
def _perturbation(key, shape, k, noise, temperature, num_terms, dtype):
    """The additive noise of :func:`perturbed_top_k` (``noise`` already validated)."""
    if noise == "gumbel":
        return temperature * jax.random.gumbel(key, shape, dtype)
    k = max(k, 1)  # k = 0 has a deterministic (empty) top-k; any finite noise will do
    if noise == "sum_of_gamma":
        total = _gamma_sum(key, shape, k, num_terms, dtype, paper=True)
    elif noise == "sum_of_gamma_reference":
        total = _gamma_sum(key, shape, k, num_terms, dtype, paper=False)
    else:
        raise ValueError(f"`perturbed_top_k`: `noise` must be one of {PERTURBATION_NOISES}; got {noise!r}.")
    return temperature / k * (total - math.log(num_terms))


def perturbed_top_k(
    logits: jax.Array,
    key: jax.Array,
    k: int,
    sample_shape: Sequence[int] = (),
    *,
    noise: str = "sum_of_gamma",
    temperature: float | jax.Array = 10.0,
    num_terms: int = 10,
    gradient: str = "identity",
) -> jax.Array:
    r"""Perturb-and-MAP k-hot samples :math:`c = \mathrm{topk}(\theta + \varepsilon)` with a gradient estimator.

    Mathematical details:
        The perturbed logits are :math:`\tilde\theta = \theta + \varepsilon` with

        * ``"sum_of_gamma"``: :math:`\varepsilon \sim \mathrm{SoG}(k, \tau, s)` (MuLAN eq. 71,
          :func:`sum_of_gamma_noise`); for k = 1 close to softmax(θ/τ), for k >= 2 not the k-subset family;
        * ``"gumbel"``: :math:`\varepsilon = \tau G`, :math:`G \sim \mathrm{Gumbel}(0, 1)`: exact weighted sampling
          without replacement (Plackett–Luce with logits θ/τ, order ignored), which is *not* the k-subset family;
        * ``"sum_of_gamma_reference"``: the MuLAN reference code's noise, Gamma scale i/k instead of k/i (about 14×
          less noise at τ = 10); only for reproducing the reference runs.

        The forward value is the exact top-k indicator c. Gradient estimators:

        * ``"identity"``: identity with projection (Sahoo et al. 2023), as in the reference code:
          :math:`u = (\tilde\theta - \overline{\tilde\theta}) / \lVert\tilde\theta - \overline{\tilde\theta}\rVert`,
          :math:`c + u - \mathrm{sg}(u)`, so :math:`\partial c/\partial\theta := \partial u/\partial\tilde\theta`;
        * ``"straight_through"``: :math:`c + \tilde\theta - \mathrm{sg}(\tilde\theta)`, the identity Jacobian;
        * ``"none"``: no gradient.

        The subset probabilities have no closed form, so no log-prob or KL is offered; use
        :func:`categorical_surrogate_kl` to reproduce the paper's KL term, or :func:`khot_sample` for the exact
        family.

    Args:
        logits: shape ``(*batch, m)``.
        key: a typed ``jax.random.key``.
        k: a Python int in [0, m].
        sample_shape: leading sample dims.
        noise: one of :data:`PERTURBATION_NOISES`.
        temperature: τ > 0, a scalar (the noise scale).
        num_terms: s, the number of Gamma terms of the sum-of-gamma noise.
        gradient: one of :data:`PERTURBED_TOP_K_GRADIENTS`.

    Returns:
        k-hot samples, shape ``(*sample_shape, *batch, m)``, dtype of ``logits``.

    Raises:
        ValueError: unknown ``noise`` or ``gradient``; ``num_terms`` < 1; as :func:`khot_log_normalizer`.

    Example:
        >>> c = perturbed_top_k(jnp.asarray([5.0, 0.0, 0.0, -5.0]), jax.random.key(0), 2, (1000,))
        >>> print(c.shape, bool((c.sum(-1) == 2).all()))
        (1000, 4) True
    """
    where = "perturbed_top_k"
    _validation.check_key(where, key)
    logits, k = _check_logits(where, logits, k)
    sample_shape = _check_sample_shape(where, sample_shape)
    _validation.check_one_of(where, "noise", noise, PERTURBATION_NOISES)
    _validation.check_one_of(where, "gradient", gradient, PERTURBED_TOP_K_GRADIENTS)
    num_terms = _validation.check_positive_int(where, "num_terms", num_terms, minimum=1)
    temperature = _check_temperature(where, temperature, logits.dtype)
    return _perturbed_top_k_jit(logits, key, temperature, k, sample_shape, noise, num_terms, gradient)


@functools.partial(jax.jit, static_argnums=(3, 4, 5, 6, 7))
def _perturbed_top_k_jit(logits, key, temperature, k, sample_shape, noise, num_terms, gradient):
    eps = _perturbation(key, sample_shape + logits.shape, k, noise, temperature, num_terms, logits.dtype)
    perturbed = _lift(logits, eps.ndim) + jax.lax.stop_gradient(eps)
    hard = jax.lax.stop_gradient(_top_k_mask(perturbed, k))
    if gradient == "identity":
        centred = perturbed - jnp.mean(perturbed, axis=-1, keepdims=True)
        norm = jnp.sqrt(jnp.sum(jnp.square(centred), axis=-1, keepdims=True))
        soft = centred / jnp.maximum(norm, jnp.finfo(logits.dtype).tiny)
        return hard + (soft - jax.lax.stop_gradient(soft))
    elif gradient == "straight_through":
        return hard + (perturbed - jax.lax.stop_gradient(perturbed))
    elif gradient == "none":
        return hard
    else:
        raise ValueError(f"`perturbed_top_k`: `gradient` must be one of {PERTURBED_TOP_K_GRADIENTS}; got {gradient!r}.")


def categorical_surrogate_kl(logits: jax.Array) -> jax.Array:
    r"""The MuLAN paper's KL term for k-hot latents: a categorical softmax against the uniform over m.

    Mathematical details:
        .. math:: \mathrm{KL}(\mathrm{Cat}(\mathrm{softmax}\,\theta) \,\|\, \mathrm{Unif}(m))
            = \sum_i q_i (\log q_i + \log m), \qquad q = \mathrm{softmax}(\theta)

        (the paper's eq. 72, the reference code's ``_gumbel_kl_loss``). It is a surrogate: it does not depend on k
        and is not the KL of any k-subset distribution; :func:`kl_khot_uniform` is the exact KL of the k-subset
        family. Both are 0 at constant logits.

    Args:
        logits: shape ``(*batch, m)``.

    Returns:
        Shape ``batch``, in nats, in [0, log m].

    Raises:
        ValueError: ``logits`` of rank 0.

    Example:
        >>> print(float(categorical_surrogate_kl(jnp.zeros(4))), round(float(categorical_surrogate_kl(
        ...     jnp.asarray([0.0, -1e4, -1e4, -1e4]))), 4))
        0.0 1.3863
    """
    logits, _ = _check_logits("categorical_surrogate_kl", logits, 0)
    log_q = jax.nn.log_softmax(logits, axis=-1)
    return jnp.sum(jnp.exp(log_q) * (log_q + math.log(logits.shape[-1])), axis=-1)
