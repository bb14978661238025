r"""NumPyro classes of the k-hot auxiliary latents, twins of :mod:`mulan_ppl.distrax.khot` (same names, arguments and
numbers; both call :mod:`mulan_ppl.core.khot`).

The KLs of :class:`KHot` and :class:`UniformKHot` are registered with ``numpyro.distributions.kl.kl_divergence``, so
``TraceMeanField_ELBO`` uses the exact KL for a guide ``KHot`` against a model ``UniformKHot``. Importing this module
never imports TensorFlow Probability.

Gaussian auxiliary latents need no class of their own: use ``numpyro.distributions.Normal(loc, scale).to_event(1)``
for the encoder and ``Normal(jnp.zeros(m), 1.0).to_event(1)`` for the prior; NumPyro registers their KL.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.util import validate_sample

from mulan_ppl import _validation
from mulan_ppl.core import khot as core_khot

__all__ = ["KHot", "KHotConstraint", "PerturbedTopK", "UniformKHot"]


class KHotConstraint(constraints.Constraint):
    r"""The support of k-hot vectors: :math:`c \in \{0, 1\}^m` with :math:`\sum_i c_i = k` (event dim 1).

    Args:
        k: the number of ones, a Python int >= 0.

    Example:
        >>> print(KHotConstraint(2)(jnp.asarray([[1.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.5, 0.5, 1.0]])))
        [ True False False]
    """

    is_discrete = True
    event_dim = 1

    def __init__(self, k: int) -> None:
        self.k = _validation.check_positive_int("KHotConstraint", "k", k, minimum=0)

    def __call__(self, x):
        xp = jnp if isinstance(x, jax.Array) else np
        binary = ((x == 0) | (x == 1)).all(axis=-1)
        return binary & xp.equal(x.sum(axis=-1), self.k)

    def feasible_like(self, prototype):
        m = prototype.shape[-1]
        value = (jnp.arange(m) < self.k).astype(jnp.result_type(prototype.dtype, float))
        return jnp.broadcast_to(value, prototype.shape)

    def tree_flatten(self):
        return (), ((), {"k": self.k})

    def eq(self, other: object, static: bool = False):
        return isinstance(other, KHotConstraint) and other.k == self.k

    def __repr__(self) -> str:
        return f"KHotConstraint(k={self.k})"


class KHot(Distribution):
    r"""The exact exponential family over k-hot vectors (NumPyro). See :class:`mulan_ppl.distrax.KHot`.

    Mathematical details:
        .. math:: p(c) = \frac{\exp\langle\theta, c\rangle}{e_k(e^{\theta})}, \qquad
            c \in \{0, 1\}^m,\ \textstyle\sum_i c_i = k.

        Exact samples, mean :math:`\pi = \nabla_\theta\log e_k`, closed-form KLs to :class:`UniformKHot` and
        :class:`KHot`; ``gradient`` picks the estimator attached to samples (``"simple"``, ``"straight_through"``,
        ``"none"``). The support is :class:`KHotConstraint`; with validation on, ``log_prob`` of a value outside it is
        ``-inf``. ``enumerate_support`` lists all :math:`\binom{m}{k}` subsets for m <= 16.

    Args:
        logits: θ, shape ``(*batch, m)``.
        k: number of ones, a Python int with ``0 <= k <= m``.
        gradient: ``"simple"`` (default), ``"straight_through"`` or ``"none"`` (keyword-only).
        validate_args: NumPyro's switch for argument and support checks.

    Raises:
        ValueError: ``k`` not an int in [0, m]; ``logits`` of rank 0; unknown ``gradient``.

    Example:
        >>> q = KHot(jnp.asarray([[2.0, 0.0, -1.0, 0.5]]), 2)
        >>> c = q.sample(jax.random.key(0), (3,))
        >>> print(q.batch_shape, q.event_shape, c.shape, c.sum(-1).ravel())
        (1,) (4,) (3, 1, 4) [2. 2. 2.]
        >>> print(q.mean.sum(-1), kl_divergence(q, UniformKHot(4, 2)).round(3))  # sum(pi) = k; the exact KL
        [2.] [0.507]
    """

    arg_constraints = {"logits": constraints.real_vector}
    pytree_data_fields = ("logits",)
    pytree_aux_fields = ("k", "gradient")

    def __init__(self, logits, k: int, *, gradient: str = "simple", validate_args=None):
        self.logits, self.k = core_khot._check_logits("KHot", logits, k)
        self.gradient = _validation.check_one_of("KHot", "gradient", gradient, core_khot.KHOT_GRADIENTS)
        super().__init__(
            batch_shape=tuple(self.logits.shape[:-1]), event_shape=tuple(self.logits.shape[-1:]),
            validate_args=validate_args,
        )

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return KHotConstraint(self.k)

    @property
    def num_categories(self) -> int:
        return self.logits.shape[-1]

    @property
    def has_enumerate_support(self) -> bool:
        return self.num_categories <= core_khot.MAX_ENUMERATE_CATEGORIES

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return core_khot.khot_sample(self.logits, key, self.k, sample_shape, gradient=self.gradient)

    @validate_sample
    def log_prob(self, value: jax.Array) -> jax.Array:
        return core_khot.khot_log_prob(value, self.logits, self.k)

    def log_normalizer(self) -> jax.Array:
        r""":math:`\log e_k(e^\theta)`, shape ``batch_shape``."""
        return core_khot.khot_log_normalizer(self.logits, self.k)

    def entropy(self) -> jax.Array:
        return core_khot.khot_entropy(self.logits, self.k)

    @property
    def mean(self) -> jax.Array:
        return core_khot.khot_marginals(self.logits, self.k)

    @property
    def variance(self) -> jax.Array:
        pi = self.mean
        return pi * (1.0 - pi)

    @property
    def mode(self) -> jax.Array:
        return core_khot.khot_mode(self.logits, self.k)

    def enumerate_support(self, expand: bool = True) -> jax.Array:
        """All k-hot vectors, shape ``(C(m, k),) + batch_shape + (m,)`` (batch dims of size 1 if not ``expand``)."""
        values = core_khot.enumerate_khot(self.num_categories, self.k, self.logits.dtype)
        values = values.reshape((values.shape[0],) + (1,) * len(self.batch_shape) + (self.num_categories,))
        if expand:
            values = jnp.broadcast_to(values, (values.shape[0],) + self.batch_shape + self.event_shape)
        return values

    @classmethod
    def infer_shapes(cls, logits, k=None, **kwargs):
        return tuple(logits[:-1]), tuple(logits[-1:])


class UniformKHot(Distribution):
    r"""The uniform distribution over the k-subsets of m items (NumPyro). See :class:`mulan_ppl.distrax.UniformKHot`.

    Mathematical details:
        .. math:: p(c) = \binom{m}{k}^{-1}, \qquad c \in \{0, 1\}^m,\ \textstyle\sum_i c_i = k.

    Args:
        num_categories: m, a Python int >= 1.
        k: a Python int with ``0 <= k <= m``.
        validate_args: NumPyro's switch for support checks.

    Raises:
        ValueError: ``num_categories`` or ``k`` not an int in range.

    Example:
        >>> p = UniformKHot(50, 15)
        >>> print(p.event_shape, round(float(p.log_prob(jnp.zeros(50).at[:15].set(1.0))), 4))
        (50,) -28.4423
    """

    arg_constraints: dict = {}
    pytree_data_fields = ()
    pytree_aux_fields = ("num_categories", "k")

    def __init__(self, num_categories: int, k: int, *, validate_args=None):
        self.num_categories = core_khot._check_num_categories("UniformKHot", num_categories)
        self.k = core_khot._check_k("UniformKHot", k, self.num_categories)
        super().__init__(batch_shape=(), event_shape=(self.num_categories,), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return KHotConstraint(self.k)

    @property
    def has_enumerate_support(self) -> bool:
        return self.num_categories <= core_khot.MAX_ENUMERATE_CATEGORIES

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return core_khot.uniform_khot_sample(key, self.num_categories, self.k, sample_shape)

    @validate_sample
    def log_prob(self, value: jax.Array) -> jax.Array:
        value = core_khot._check_value("UniformKHot.log_prob", value, self.num_categories, jnp.result_type(float))
        return jnp.full(value.shape[:-1], -core_khot.log_num_khot(self.num_categories, self.k), value.dtype)

    def entropy(self) -> jax.Array:
        return jnp.asarray(core_khot.log_num_khot(self.num_categories, self.k), jnp.result_type(float))

    @property
    def mean(self) -> jax.Array:
        return jnp.full((self.num_categories,), self.k / self.num_categories, jnp.result_type(float))

    @property
    def variance(self) -> jax.Array:
        p = self.k / self.num_categories
        return jnp.full((self.num_categories,), p * (1.0 - p), jnp.result_type(float))

    @property
    def mode(self) -> jax.Array:
        """Every subset is a mode; returns the first k items."""
        return (jnp.arange(self.num_categories) < self.k).astype(jnp.result_type(float))

    def enumerate_support(self, expand: bool = True) -> jax.Array:
        """All k-hot vectors, shape ``(C(m, k), m)``."""
        return core_khot.enumerate_khot(self.num_categories, self.k)


class PerturbedTopK(Distribution):
    r"""Perturb-and-MAP k-hot sampler (NumPyro). See :class:`mulan_ppl.distrax.PerturbedTopK`.

    Mathematical details:
        :math:`c = \mathrm{topk}(\theta + \varepsilon)` with sum-of-gamma (MuLAN eq. 71), Gumbel, or the reference
        code's sum-of-gamma noise; gradient ``"identity"`` (with projection), ``"straight_through"`` or ``"none"``
        (:func:`mulan_ppl.core.perturbed_top_k`). No closed-form ``log_prob`` and no registered KL; use
        :func:`mulan_ppl.core.categorical_surrogate_kl` for the paper's surrogate, or :class:`KHot`.

    Args:
        logits: θ, shape ``(*batch, m)``.
        k: number of ones, a Python int with ``0 <= k <= m``.
        noise: ``"sum_of_gamma"`` (default), ``"gumbel"`` or ``"sum_of_gamma_reference"`` (keyword-only).
        temperature: τ > 0, a scalar (default 10).
        gradient: ``"identity"`` (default), ``"straight_through"`` or ``"none"``.
        num_terms: s, the number of Gamma terms (default 10).
        validate_args: NumPyro's switch for argument checks.

    Example:
        >>> d = PerturbedTopK(jnp.asarray([3.0, 1.0, 0.0, -2.0]), 2, temperature=1.0)
        >>> c = d.sample(jax.random.key(0), (5,))
        >>> print(c.shape, c.sum(-1), d.mode)
        (5, 4) [2. 2. 2. 2. 2.] [1. 1. 0. 0.]
    """

    arg_constraints = {"logits": constraints.real_vector, "temperature": constraints.positive}
    pytree_data_fields = ("logits", "temperature")
    pytree_aux_fields = ("k", "noise", "gradient", "num_terms")

    def __init__(self, logits, k: int, *, noise: str = "sum_of_gamma", temperature=10.0,
                 gradient: str = "identity", num_terms: int = 10, validate_args=None):
        where = "PerturbedTopK"
        self.logits, self.k = core_khot._check_logits(where, logits, k)
        self.noise = _validation.check_one_of(where, "noise", noise, core_khot.PERTURBATION_NOISES)
        self.gradient = _validation.check_one_of(where, "gradient", gradient, core_khot.PERTURBED_TOP_K_GRADIENTS)
        self.temperature = core_khot._check_temperature(where, temperature, self.logits.dtype)
        self.num_terms = _validation.check_positive_int(where, "num_terms", num_terms, minimum=1)
        super().__init__(
            batch_shape=tuple(self.logits.shape[:-1]), event_shape=tuple(self.logits.shape[-1:]),
            validate_args=validate_args,
        )

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self) -> constraints.Constraint:
        return KHotConstraint(self.k)

    @property
    def num_categories(self) -> int:
        return self.logits.shape[-1]

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return core_khot.perturbed_top_k(
            self.logits, key, self.k, sample_shape, noise=self.noise, temperature=self.temperature,
            num_terms=self.num_terms, gradient=self.gradient,
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
        return core_khot.categorical_surrogate_kl(self.logits)

    @property
    def mode(self) -> jax.Array:
        return core_khot.khot_mode(self.logits, self.k)


def _check_pair(where: str, q, p) -> None:
    if q.num_categories != p.num_categories or q.k != p.k:
        raise ValueError(
            f"`{where}`: both distributions must have the same `num_categories` and `k`; got "
            f"({q.num_categories}, {q.k}) and ({p.num_categories}, {p.k})."
        )


@kl_divergence.register(KHot, UniformKHot)
def _kl_khot_uniform(q: KHot, p: UniformKHot) -> jax.Array:
    _check_pair("kl_divergence(KHot, UniformKHot)", q, p)
    return core_khot.kl_khot_uniform(q.logits, q.k)


@kl_divergence.register(KHot, KHot)
def _kl_khot_khot(q: KHot, p: KHot) -> jax.Array:
    _check_pair("kl_divergence(KHot, KHot)", q, p)
    return core_khot.kl_khot_khot(q.logits, p.logits, q.k)


@kl_divergence.register(UniformKHot, KHot)
def _kl_uniform_khot(q: UniformKHot, p: KHot) -> jax.Array:
    _check_pair("kl_divergence(UniformKHot, KHot)", q, p)
    return core_khot.kl_uniform_khot(p.logits, p.k)


@kl_divergence.register(UniformKHot, UniformKHot)
def _kl_uniform_uniform(q: UniformKHot, p: UniformKHot) -> jax.Array:
    _check_pair("kl_divergence(UniformKHot, UniformKHot)", q, p)
    return jnp.zeros((), jnp.result_type(float))
