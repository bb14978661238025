r"""Distrax classes of the k-hot auxiliary latents: the exact k-subset family, its uniform prior and perturb-and-MAP.

:class:`KHot` and :class:`UniformKHot` have their KLs registered with TFP's registry (which
``distrax.Distribution.kl_divergence`` consults) for every pair of the two; :class:`PerturbedTopK` has no closed-form
probabilities and no KL (use :func:`mulan_ppl.core.categorical_surrogate_kl` to reproduce the MuLAN paper's term).
All maths lives in :mod:`mulan_ppl.core.khot`; the NumPyro twins are in :mod:`mulan_ppl.numpyro.khot`.

Gaussian auxiliary latents need no class of their own: use ``distrax.MultivariateNormalDiag(loc, scale)`` for the
encoder and ``distrax.MultivariateNormalDiag(jnp.zeros(m), jnp.ones(m))`` for the prior; Distrax registers their KL.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
from distrax._src.distributions.distribution import to_batch_shape_index
from tensorflow_probability.substrates import jax as tfp

from mulan_ppl import _validation
from mulan_ppl.core import khot as core_khot

tfd = tfp.distributions

__all__ = ["KHot", "PerturbedTopK", "UniformKHot"]


class KHot(distrax.Distribution):
    r"""The exact exponential family over k-hot vectors, :math:`p(c) \propto \exp\langle\theta, c\rangle`.

    Mathematical details:
        .. math:: p(c) = \frac{\exp\langle\theta, c\rangle}{e_k(e^{\theta})}, \qquad
            c \in \{0, 1\}^m,\ \textstyle\sum_i c_i = k,

        where :math:`e_k` is the k-th elementary symmetric polynomial (:func:`mulan_ppl.core.khot_log_normalizer`).
        ``logits`` is θ; ``k`` the number of ones. Samples are exact (:func:`mulan_ppl.core.khot_sample`), the mean
        is the vector of inclusion probabilities :math:`\pi = \nabla_\theta \log e_k`, and the KLs to
        :class:`UniformKHot` and to another :class:`KHot` are closed-form.

        Gradients through samples (``gradient``): ``"simple"`` (the exact sample forward, the Jacobian of
        :math:`\pi` backward: SIMPLE), ``"straight_through"`` (identity Jacobian), ``"none"``.

    Args:
        logits: θ, shape ``(*batch, m)``, floating, finite.
        k: number of ones, a Python int with ``0 <= k <= m``.
        gradient: one of ``"simple"``, ``"straight_through"``, ``"none"`` (keyword-only).

    Raises:
        ValueError: ``k`` not an int in [0, m]; ``logits`` of rank 0; unknown ``gradient``.

    Example:
        >>> q = KHot(jnp.asarray([[2.0, 0.0, -1.0, 0.5]]), 2)
        >>> c = q.sample(seed=jax.random.key(0), sample_shape=(3,))
        >>> print(q.batch_shape, q.event_shape, c.shape, c.sum(-1).ravel())
        (1,) (4,) (3, 1, 4) [2. 2. 2.]
        >>> print(q.mean().sum(-1), q.kl_divergence(UniformKHot(4, 2)).round(3))  # sum(pi) = k; the exact KL
        [2.] [0.507]
    """

    def __init__(self, logits, k: int, *, gradient: str = "simple"):
        super().__init__()
        self._logits, self._k = core_khot._check_logits("KHot", logits, k)
        self._gradient = _validation.check_one_of("KHot", "gradient", gradient, core_khot.KHOT_GRADIENTS)

    @property
    def logits(self) -> jax.Array:
        """θ, shape ``batch_shape + (m,)``."""
        return self._logits

    @property
    def k(self) -> int:
        """Number of ones."""
        return self._k

    @property
    def num_categories(self) -> int:
        """m."""
        return self._logits.shape[-1]

    @property
    def gradient(self) -> str:
        """The gradient estimator of :meth:`sample`."""
        return self._gradient

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.num_categories,)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self._logits.shape[:-1])

    def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
        return core_khot.khot_sample(self._logits, key, self._k, (n,), gradient=self._gradient)

    def log_prob(self, value: jax.Array) -> jax.Array:
        r""":math:`\langle\theta, c\rangle - \log e_k(e^\theta)` for k-hot ``value`` of shape ``(..., m)``."""
        return core_khot.khot_log_prob(value, self._logits, self._k)

    def log_normalizer(self) -> jax.Array:
        r""":math:`\log e_k(e^\theta)`, shape ``batch_shape``."""
        return core_khot.khot_log_normalizer(self._logits, self._k)

    def entropy(self) -> jax.Array:
        return core_khot.khot_entropy(self._logits, self._k)

    def mean(self) -> jax.Array:
        r"""Inclusion probabilities :math:`\pi`, shape ``batch_shape + (m,)``, summing to k."""
        return core_khot.khot_marginals(self._logits, self._k)

    def variance(self) -> jax.Array:
        r"""Per-item variance :math:`\pi(1 - \pi)`."""
        pi = self.mean()
        return pi * (1.0 - pi)

    def mode(self) -> jax.Array:
        """The indicator of the k largest logits."""
        return core_khot.khot_mode(self._logits, self._k)

    def __getitem__(self, index) -> KHot:
        index = to_batch_shape_index(self.batch_shape, index)
        return KHot(self._logits[index], self._k, gradient=self._gradient)


class UniformKHot(distrax.Distribution):
    r"""The uniform distribution over the k-subsets of m items (MuLAN's prior on the auxiliary latent).

    Mathematical details:
        .. math:: p(c) = \binom{m}{k}^{-1}, \qquad c \in \{0, 1\}^m,\ \textstyle\sum_i c_i = k;

        it is the member of :class:`KHot` with θ = 0. Sampling is exact (selection sampling).

    Args:
        num_categories: m, a Python int >= 1.
        k: a Python int with ``0 <= k <= m``.

    Raises:
        ValueError: ``num_categories`` or ``k`` not an int in range.

    Example:
        >>> p = UniformKHot(50, 15)
        >>> print(p.event_shape, round(float(p.log_prob(jnp.zeros(50).at[:15].set(1.0))), 4))
        (50,) -28.4423
    """

    def __init__(self, num_categories: int, k: int):
        super().__init__()
        self._num_categories = core_khot._check_num_categories("UniformKHot", num_categories)
        self._k = core_khot._check_k("UniformKHot", k, self._num_categories)

    @property
    def num_categories(self) -> int:
        return self._num_categories

    @property
    def k(self) -> int:
        return self._k

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self._num_categories,)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return ()

    def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
        return core_khot.uniform_khot_sample(key, self._num_categories, self._k, (n,))

    def log_prob(self, value: jax.Array) -> jax.Array:
        r""":math:`-\log\binom{m}{k}` for every k-hot ``value`` of shape ``(..., m)``."""
        value = core_khot._check_value("UniformKHot.log_prob", value, self._num_categories, jnp.result_type(float))
        return jnp.full(value.shape[:-1], -core_khot.log_num_khot(self._num_categories, self._k), value.dtype)

    def entropy(self) -> jax.Array:
        return jnp.asarray(core_khot.log_num_khot(self._num_categories, self._k), jnp.result_type(float))

    def mean(self) -> jax.Array:
        return jnp.full((self._num_categories,), self._k / self._num_categories, jnp.result_type(float))

    def variance(self) -> jax.Array:
        p = self._k / self._num_categories
        return jnp.full((self._num_categories,), p * (1.0 - p), jnp.result_type(float))

    def mode(self) -> jax.Array:
        """Every subset is a mode; returns the first k items."""
        return (jnp.arange(self._num_categories) < self._k).astype(jnp.result_type(float))


class PerturbedTopK(distrax.Distribution):
    r"""Perturb-and-MAP k-hot sampler :math:`c = \mathrm{topk}(\theta + \varepsilon)` (MuLAN's reference sampler).

    Mathematical details:
        :math:`\varepsilon` is sum-of-gamma noise SoG(k, τ, s) of MuLAN's eq. 71 (``noise="sum_of_gamma"``; for
        k >= 2 its top-k is not the k-subset family of θ/τ), τ·Gumbel (``"gumbel"``: weighted sampling without
        replacement, a different distribution), or the reference code's Gamma scale i/k
        (``"sum_of_gamma_reference"``, about 14× less noise at τ = 10; only for reproducing its runs). See
        :func:`mulan_ppl.core.perturbed_top_k`.

        Gradients through samples (``gradient``): ``"identity"`` (identity with projection: the Jacobian of the
        centred perturbed logits projected to the unit sphere, as in the reference code), ``"straight_through"``
        (identity Jacobian), ``"none"``.

        Its subset probabilities have no closed form: ``log_prob``, ``entropy`` and ``mean`` raise
        ``NotImplementedError`` and no KL is registered. The paper's KL term is the categorical surrogate
        :func:`mulan_ppl.core.categorical_surrogate_kl`; for an exact KL use :class:`KHot`.

    Args:
        logits: θ, shape ``(*batch, m)``.
        k: number of ones, a Python int with ``0 <= k <= m``.
        noise: ``"sum_of_gamma"`` (default), ``"gumbel"`` or ``"sum_of_gamma_reference"`` (keyword-only).
        temperature: τ > 0, a scalar (default 10, the reference value).
        gradient: ``"identity"`` (default), ``"straight_through"`` or ``"none"``.
        num_terms: s, the number of Gamma terms (default 10).

    Raises:
        ValueError: ``k`` out of range; ``logits`` of rank 0; unknown ``noise`` or ``gradient``; ``temperature`` not
            a positive scalar; ``num_terms`` < 1.

    Example:
        >>> d = PerturbedTopK(jnp.asarray([3.0, 1.0, 0.0, -2.0]), 2, temperature=1.0)
        >>> c = d.sample(seed=jax.random.key(0), sample_shape=(5,))
        >>> print(c.shape, c.sum(-1), d.mode())
        (5, 4) [2. 2. 2. 2. 2.] [1. 1. 0. 0.]
    """

    def __init__(self, logits, k: int, *, noise: str = "sum_of_gamma", temperature=10.0,
                 gradient: str = "identity", num_terms: int = 10):
        super().__init__()
        where = "PerturbedTopK"
        self._logits, self._k = core_khot._check_logits(where, logits, k)
        self._noise = _validation.check_one_of(where, "noise", noise, core_khot.PERTURBATION_NOISES)
        self._gradient = _validation.check_one_of(
            where, "gradient", gradient, core_khot.PERTURBED_TOP_K_GRADIENTS
        )
        self._temperature = core_khot._check_temperature(where, temperature, self._logits.dtype)
        self._num_terms = _validation.check_positive_int(where, "num_terms", num_terms, minimum=1)

    @property
    def logits(self) -> jax.Array:
        return self._logits

    @property
    def k(self) -> int:
        return self._k

    @property
    def num_categories(self) -> int:
        return self._logits.shape[-1]

    @property
    def noise(self) -> str:
        return self._noise

    @property
    def temperature(self) -> jax.Array:
        return self._temperature

    @property
    def gradient(self) -> str:
        return self._gradient

    @property
    def num_terms(self) -> int:
        return self._num_terms

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.num_categories,)

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self._logits.shape[:-1])

    def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
        return core_khot.perturbed_top_k(
            self._logits, key, self._k, (n,), noise=self._noise, temperature=self._temperature,
            num_terms=self._num_terms, gradient=self._gradient,
        )

    def log_prob(self, value: jax.Array) -> jax.Array:
        raise NotImplementedError(
            "`PerturbedTopK.log_prob`: the subset probabilities of top-k of perturbed logits have no closed form; "
            "use `KHot` for an exact log-probability."
        )

    def surrogate_kl(self) -> jax.Array:
        """The paper's categorical surrogate of the KL to the uniform k-subset prior (not a KL), shape ``batch``.

        :class:`~mulan_ppl.hvae.TopDownDiffusion` reports it as ``latent_surrogate``; see
        :func:`mulan_ppl.core.categorical_surrogate_kl`.
        """
        return core_khot.categorical_surrogate_kl(self._logits)

    def mode(self) -> jax.Array:
        """The indicator of the k largest logits."""
        return core_khot.khot_mode(self._logits, self._k)

    def __getitem__(self, index) -> PerturbedTopK:
        index = to_batch_shape_index(self.batch_shape, index)
        return PerturbedTopK(self._logits[index], self._k, noise=self._noise, temperature=self._temperature,
                             gradient=self._gradient, num_terms=self._num_terms)


def _check_pair(where: str, q, p) -> None:
    if q.num_categories != p.num_categories or q.k != p.k:
        raise ValueError(
            f"`{where}`: both distributions must have the same `num_categories` and `k`; got "
            f"({q.num_categories}, {q.k}) and ({p.num_categories}, {p.k})."
        )


def _kl_khot_uniform(q: KHot, p: UniformKHot, name=None) -> jax.Array:
    del name
    _check_pair("kl_divergence(KHot, UniformKHot)", q, p)
    return core_khot.kl_khot_uniform(q.logits, q.k)


def _kl_khot_khot(q: KHot, p: KHot, name=None) -> jax.Array:
    del name
    _check_pair("kl_divergence(KHot, KHot)", q, p)
    return core_khot.kl_khot_khot(q.logits, p.logits, q.k)


def _kl_uniform_khot(q: UniformKHot, p: KHot, name=None) -> jax.Array:
    del name
    _check_pair("kl_divergence(UniformKHot, KHot)", q, p)
    return core_khot.kl_uniform_khot(p.logits, p.k)


def _kl_uniform_uniform(q: UniformKHot, p: UniformKHot, name=None) -> jax.Array:
    del name
    _check_pair("kl_divergence(UniformKHot, UniformKHot)", q, p)
    return jnp.zeros((), jnp.result_type(float))


tfd.RegisterKL(KHot, UniformKHot)(_kl_khot_uniform)
tfd.RegisterKL(KHot, KHot)(_kl_khot_khot)
tfd.RegisterKL(UniformKHot, KHot)(_kl_uniform_khot)
tfd.RegisterKL(UniformKHot, UniformKHot)(_kl_uniform_uniform)
