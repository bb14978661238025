"""NumPyro classes of the Gaussian diffusion, twins of :mod:`mulan_ppl.distrax.gaussian` (same names, arguments and
numbers; both call :mod:`mulan_ppl.core`). All are reparameterized (``has_rsample``) and their KLs are registered
with ``numpyro.distributions.kl.kl_divergence``, so ``TraceMeanField_ELBO`` uses them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, ExpandedDistribution, Independent, Normal, constraints
from numpyro.distributions.kl import kl_divergence

from mulan_ppl import _diffusion_params as dp
from mulan_ppl import core

__all__ = ["ForwardMarginal", "ForwardTransition", "ReverseTransition", "TopDownPosterior"]


class _DiffusionGaussian(Distribution):
    """Diagonal Gaussian over the data dims, built from a :class:`~mulan_ppl._diffusion_params.GaussianParams`."""

    pytree_data_fields = ("_params",)
    _params: dp.GaussianParams

    def _set_params(self, params: dp.GaussianParams) -> None:
        self._params = params
        for name, value in params.args.items():
            if name != "log_variance":  # exposed by the property of the same name
                setattr(self, name, value)
        shape = params.loc.shape
        split = len(shape) - params.event_ndims
        super().__init__(batch_shape=shape[:split], event_shape=shape[split:], validate_args=None)

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return constraints.independent(constraints.real, self.event_dim)

    @property
    def loc(self) -> jax.Array:
        return self._params.loc

    @property
    def log_variance(self) -> jax.Array:
        return self._params.log_variance

    @property
    def mean(self) -> jax.Array:
        return self._params.loc

    @property
    def mode(self) -> jax.Array:
        return self._params.loc

    @property
    def variance(self) -> jax.Array:
        return jnp.exp(self._params.log_variance)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return core.diag_normal_sample(key, self.loc, self.log_variance, sample_shape)

    def rsample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        return self.sample(key, sample_shape)

    def log_prob(self, value: jax.Array) -> jax.Array:
        """Log-density summed over the event dims; ``+inf``/``-inf`` where the variance is 0 (s = t)."""
        return dp.gaussian_log_prob(self._params, value, f"{type(self).__name__}.log_prob")

    def entropy(self) -> jax.Array:
        return dp.sum_event(core.diag_normal_entropy(self.log_variance), self._params.event_ndims)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        return dp.infer_shapes(cls.__init__, *args, **kwargs)


class ForwardMarginal(_DiffusionGaussian):
    r"""The forward marginal q(z_t | x) (NumPyro). See :class:`mulan_ppl.distrax.ForwardMarginal`.

    Mathematical details:
        .. math:: q(z_t \mid x) = \mathcal N\big(\alpha_t x,\ \mathrm{diag}(\sigma_t^2)\big), \quad
            \alpha_t^2 = \mathrm{sigmoid}(-\gamma_t),\ \sigma_t^2 = \mathrm{sigmoid}(\gamma_t).

    Args:
        x: data, shape ``(B, *event)``.
        gamma: noise level, scalar or of ``x``'s rank with dims equal or 1.
        event_ndims: trailing event dims, default ``x.ndim - 1``.
        validate_args: check values (NaN or Inf in the arguments, NaN in the values of ``log_prob``) under ``jit``
            too.

    Example:
        >>> d = ForwardMarginal(jnp.zeros((2, 3)), jnp.zeros((2, 1)))
        >>> print(d.batch_shape, d.event_shape, d.log_prob(jnp.zeros((2, 3))))
        (2,) (3,) [-1.717 -1.717]
    """

    arg_constraints = {"x": constraints.real, "gamma": constraints.real}
    reparametrized_params = ["x", "gamma"]

    def __init__(self, x, gamma, *, event_ndims: int | None = None, validate_args: bool = False):
        self._set_params(dp.build_forward_marginal(x, gamma, event_ndims=event_ndims, validate_args=validate_args))


class ForwardTransition(_DiffusionGaussian):
    r"""The forward transition q(z_t | z_s) (NumPyro). See :class:`mulan_ppl.distrax.ForwardTransition`.

    Mathematical details:
        .. math:: \mathcal N\big(\alpha_{t|s} z_s,\ -\mathrm{expm1}(\gamma_s-\gamma_t)\,\mathrm{sigmoid}(\gamma_t)\big).

    Example:
        >>> d = ForwardTransition(jnp.ones((1, 2)), jnp.asarray(-1.0), jnp.asarray(1.0))
        >>> print(d.mean, d.variance)
        [[0.607 0.607]] [[0.632 0.632]]
    """

    arg_constraints = {"z_s": constraints.real, "gamma_s": constraints.real, "gamma_t": constraints.real}
    reparametrized_params = ["z_s", "gamma_s", "gamma_t"]

    def __init__(self, z_s, gamma_s, gamma_t, *, event_ndims: int | None = None, validate_args: bool = False):
        self._set_params(dp.build_forward_transition(z_s, gamma_s, gamma_t, event_ndims=event_ndims,
                                                validate_args=validate_args))


class TopDownPosterior(_DiffusionGaussian):
    r"""The top-down posterior q(z_s | z_t, x) (NumPyro). See :class:`mulan_ppl.distrax.TopDownPosterior`.

    Mathematical details:
        .. math:: \mathcal N\big(c_z z_t + c_x x,\ -\mathrm{expm1}(\gamma_s-\gamma_t)\,\mathrm{sigmoid}(\gamma_s)\big),
            \quad c_x = -\alpha_s\,\mathrm{expm1}(\gamma_s-\gamma_t).

    Example:
        >>> q = TopDownPosterior(jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.asarray(-2.0), jnp.asarray(0.0))
        >>> print(q.mean)
        [[0.8115 0.8115]]
    """

    arg_constraints = {"z_t": constraints.real, "x": constraints.real, "gamma_s": constraints.real,
                       "gamma_t": constraints.real}
    reparametrized_params = ["z_t", "x", "gamma_s", "gamma_t"]
    pytree_data_fields = ("eps",)

    def __init__(self, z_t, x, gamma_s, gamma_t, *, eps=None, event_ndims: int | None = None,
                 validate_args: bool = False):
        self._set_params(dp.build_top_down_posterior(z_t, x, gamma_s, gamma_t, eps=eps, event_ndims=event_ndims,
                                                validate_args=validate_args))

    @classmethod
    def from_noise(cls, x, eps, gamma_s, gamma_t, *, event_ndims: int | None = None,
                   validate_args: bool = False) -> TopDownPosterior:
        r"""Builds the posterior at :math:`z_t = \alpha_t x + \sigma_t\varepsilon`, remembering ``eps``.

        ``x``, ``eps`` and the noise levels are validated (shapes, NaN, Inf) before ``z_t`` is formed.
        """
        self = cls.__new__(cls)
        self._set_params(dp.build_top_down_posterior_from_noise(x, eps, gamma_s, gamma_t, event_ndims=event_ndims,
                                                                validate_args=validate_args))
        return self


class ReverseTransition(_DiffusionGaussian):
    r"""The generative transition p(z_s | z_t) = q(z_s | z_t, x̂) (NumPyro). See
    :class:`mulan_ppl.distrax.ReverseTransition`.

    Mathematical details:
        .. math:: \mathcal N\big(c_z z_t + c_x \hat x,\ \sigma^2_{s|t}\big); built with :meth:`from_prediction`
            it keeps an ``eps``/``v`` prediction native for an exact KL at extreme noise levels.

    Example:
        >>> z_t, x = jnp.zeros((1, 2)), jnp.ones((1, 2))
        >>> q = TopDownPosterior(z_t, x, -2.0, 0.0)
        >>> p = ReverseTransition(z_t, 0.9 * x, -2.0, 0.0)
        >>> from numpyro.distributions.kl import kl_divergence
        >>> print(kl_divergence(q, p))
        [0.0639]
    """

    arg_constraints = {"z_t": constraints.real, "prediction": constraints.real, "gamma_s": constraints.real,
                       "gamma_t": constraints.real}
    reparametrized_params = ["z_t", "prediction", "gamma_s", "gamma_t"]
    pytree_aux_fields = ("parameterization",)

    def __init__(self, z_t, x_hat, gamma_s, gamma_t, *, log_variance=None, event_ndims: int | None = None,
                 validate_args: bool = False):
        self._init(z_t, x_hat, gamma_s, gamma_t, "x", log_variance, event_ndims, validate_args, "x_hat")

    def _init(self, z_t, prediction, gamma_s, gamma_t, parameterization, log_variance, event_ndims,
              validate_args, prediction_name="prediction"):
        self.parameterization = parameterization
        self._set_params(dp.build_reverse_transition(z_t, prediction, gamma_s, gamma_t,
                                                parameterization=parameterization, log_variance=log_variance,
                                                event_ndims=event_ndims, validate_args=validate_args,
                                                prediction_name=prediction_name))

    @classmethod
    def from_prediction(cls, z_t, prediction, gamma_s, gamma_t, *, parameterization: str, log_variance=None,
                        event_ndims: int | None = None, validate_args: bool = False) -> ReverseTransition:
        """Builds the transition from a prediction named by ``parameterization`` (``"eps"``, ``"v"``, ``"x"``,
        ``"score"``), kept in that form for the KL."""
        self = cls.__new__(cls)
        self._init(z_t, prediction, gamma_s, gamma_t, parameterization, log_variance, event_ndims, validate_args)
        return self

    @property
    def x_hat(self) -> jax.Array:
        return core.convert_prediction(self.prediction, self.z_t, self.gamma_t, source=self.parameterization,
                                       target="x")


@kl_divergence.register(_DiffusionGaussian, _DiffusionGaussian)
def _kl_gaussian_gaussian(q, p):
    return dp.kl_diag_gaussians(q._params, p._params)


@kl_divergence.register(TopDownPosterior, ReverseTransition)
def _kl_posterior_reverse(q, p):
    return dp.kl_posterior_reverse(q._params, p._params, p.parameterization)


@kl_divergence.register(_DiffusionGaussian, Normal)
def _kl_to_normal(q, p):
    return dp.kl_to_normal(q._params, p.loc, p.scale)


@kl_divergence.register(_DiffusionGaussian, Independent)
def _kl_to_independent_normal(q, p):
    base = p.base_dist
    if isinstance(base, ExpandedDistribution):  # Normal(0, 1).expand(shape).to_event(n), the usual prior
        base = base.base_dist
    if not isinstance(base, Normal):
        raise NotImplementedError(f"KL to Independent({type(base).__name__}) is not registered.")
    return dp.kl_to_normal(q._params, base.loc, base.scale, p.reinterpreted_batch_ndims)
