"""Distrax classes of the Gaussian diffusion: forward marginal, forward transition, top-down posterior, reverse
transition.

All four are diagonal Gaussians whose parameters come from :mod:`mulan_ppl.core.gaussian`; their event dims are the
data dims (images: ``(H, W, C)``) and their KLs are registered with TFP's registry, which
``distrax.Distribution.kl_divergence`` consults.
"""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
from distrax._src.distributions.distribution import to_batch_shape_index
from tensorflow_probability.substrates import jax as tfp

from mulan_ppl import _diffusion_params as dp
from mulan_ppl import core

tfd = tfp.distributions

__all__ = ["ForwardMarginal", "ForwardTransition", "ReverseTransition", "TopDownPosterior"]


class _DiffusionGaussian(distrax.Distribution):
    """Diagonal Gaussian over the data dims, built from a :class:`~mulan_ppl._diffusion_params.GaussianParams`."""

    _params: dp.GaussianParams

    def _set_params(self, params: dp.GaussianParams) -> None:
        distrax.Distribution.__init__(self)
        self._params = params

    def __getattr__(self, name: str):
        """The constructor's array arguments (``x``, ``z_t``, ``gamma_s``, ...) are readable by name."""
        if not name.startswith("_") and name in self.__dict__.get("_params", dp.GaussianParams({}, None, None, 0)).args:
            return self._params.args[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def loc(self) -> jax.Array:
        """Mean, shape ``batch_shape + event_shape``."""
        return self._params.loc

    @property
    def log_variance(self) -> jax.Array:
        """Log-variance per dimension, shape ``batch_shape + event_shape`` (``-inf`` where the variance is 0)."""
        return self._params.log_variance

    @property
    def event_shape(self) -> tuple[int, ...]:
        shape = self._params.loc.shape
        return tuple(shape[len(shape) - self._params.event_ndims:])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        shape = self._params.loc.shape
        return tuple(shape[: len(shape) - self._params.event_ndims])

    def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
        return core.diag_normal_sample(key, self.loc, self.log_variance, (n,))

    def log_prob(self, value: jax.Array) -> jax.Array:
        """Log-density summed over the event dims; ``+inf``/``-inf`` where the variance is 0 (s = t)."""
        return dp.gaussian_log_prob(self._params, value, f"{type(self).__name__}.log_prob")

    def _sample_n_and_log_prob(self, key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
        samples = self._sample_n(key, n)
        return samples, self.log_prob(samples)

    def entropy(self) -> jax.Array:
        """Entropy summed over the event dims (``-inf`` at s = t)."""
        return dp.sum_event(core.diag_normal_entropy(self.log_variance), self._params.event_ndims)

    def mean(self) -> jax.Array:
        return self.loc

    def mode(self) -> jax.Array:
        return self.loc

    def median(self) -> jax.Array:
        return self.loc

    def variance(self) -> jax.Array:
        return jnp.exp(self.log_variance)

    def stddev(self) -> jax.Array:
        return jnp.exp(0.5 * self.log_variance)

    def _indexed_args(self, index) -> dict:
        index = to_batch_shape_index(self.batch_shape, index)
        full = self._params.loc.shape
        return {k: (None if v is None else jnp.broadcast_to(v, full)[index]) for k, v in self._params.args.items()}


class ForwardMarginal(_DiffusionGaussian):
    r"""The forward marginal q(z_t | x) of the variance-preserving diffusion, with one noise level per dimension.

    Mathematical details:
        .. math:: q(z_t \mid x) = \mathcal N\big(z_t;\ \alpha_t x,\ \mathrm{diag}(\sigma_t^2)\big), \qquad
            \alpha_t^2 = \mathrm{sigmoid}(-\gamma_t),\ \sigma_t^2 = \mathrm{sigmoid}(\gamma_t),

        where ``gamma`` is :math:`\gamma_t = -\log\mathrm{SNR}` per data dimension (or a broadcast scalar).

    Args:
        x: data in the continuous scale, shape ``(B, *event)``.
        gamma: noise level, a scalar or an array of ``x``'s rank with each dimension equal to ``x``'s or 1.
        event_ndims: number of trailing event dims (keyword-only); defaults to ``x.ndim - 1``.
        validate_args: check values (NaN or Inf in the arguments, NaN in the values of ``log_prob``) under ``jit``
            too, raising at run time (``equinox.EquinoxRuntimeError`` under ``equinox.filter_jit``,
            ``jax.errors.JaxRuntimeError`` under ``jax.jit``); concrete inputs are always checked.

    Raises:
        ValueError: ``gamma`` does not broadcast to ``x`` as above, or ``x``/``gamma`` hold NaN or Inf; a
            ``log_prob`` value not of shape ``(*sample_shape, *batch_shape, *event_shape)``, or holding NaN.

    Example:
        >>> d = ForwardMarginal(jnp.zeros((2, 3)), jnp.zeros((2, 1)))
        >>> print(d.batch_shape, d.event_shape, d.log_prob(jnp.zeros((2, 3))))
        (2,) (3,) [-1.717 -1.717]
    """

    def __init__(self, x, gamma, *, event_ndims: int | None = None, validate_args: bool = False):
        self._set_params(dp.build_forward_marginal(x, gamma, event_ndims=event_ndims, validate_args=validate_args))

    def __getitem__(self, index) -> ForwardMarginal:
        return ForwardMarginal(**self._indexed_args(index), event_ndims=self._params.event_ndims,
                               validate_args=self._params.validate_args)


class ForwardTransition(_DiffusionGaussian):
    r"""The forward transition q(z_t | z_s) from a less noisy latent (``gamma_s <= gamma_t``).

    Mathematical details:
        .. math:: q(z_t \mid z_s) = \mathcal N\big(\alpha_{t|s} z_s,\ \sigma^2_{t|s}\big), \quad
            \alpha_{t|s} = \alpha_t/\alpha_s, \quad
            \sigma^2_{t|s} = -\mathrm{expm1}(\gamma_s - \gamma_t)\,\mathrm{sigmoid}(\gamma_t).

        Composing transitions gives the marginal: q(z_t|x) = ∫ q(z_t|z_s) q(z_s|x) dz_s.

    Args:
        z_s: latent at time s, shape ``(B, *event)``.
        gamma_s, gamma_t: noise levels broadcastable to ``z_s`` as in :class:`ForwardMarginal`.
        event_ndims: trailing event dims, default ``z_s.ndim - 1``.
        validate_args: as in :class:`ForwardMarginal`.

    Example:
        >>> d = ForwardTransition(jnp.ones((1, 2)), jnp.asarray(-1.0), jnp.asarray(1.0))
        >>> print(d.mean(), d.variance())
        [[0.607 0.607]] [[0.632 0.632]]
    """

    def __init__(self, z_s, gamma_s, gamma_t, *, event_ndims: int | None = None, validate_args: bool = False):
        self._set_params(dp.build_forward_transition(
            z_s, gamma_s, gamma_t, event_ndims=event_ndims, validate_args=validate_args
        ))

    def __getitem__(self, index) -> ForwardTransition:
        return ForwardTransition(**self._indexed_args(index), event_ndims=self._params.event_ndims,
                                 validate_args=self._params.validate_args)


class TopDownPosterior(_DiffusionGaussian):
    r"""The top-down posterior q(z_s | z_t, x) of the hierarchical (HVAE) view of diffusion.

    Mathematical details:
        The Bayes posterior of the forward chain, :math:`q(z_s|z_t,x) \propto q(z_t|z_s)\,q(z_s|x)`:

        .. math:: \mathcal N\big(c_z z_t + c_x x,\ \sigma^2_{s|t}\big),\quad
            c_x = -\alpha_s\,\mathrm{expm1}(\gamma_s-\gamma_t),\quad
            \sigma^2_{s|t} = -\mathrm{expm1}(\gamma_s-\gamma_t)\,\mathrm{sigmoid}(\gamma_s)

        (:func:`mulan_ppl.core.top_down_posterior_coefficients`). Its KL to :class:`ReverseTransition` built at the
        same ``(z_t, gamma_s, gamma_t)`` is the structural per-step KL
        :math:`\tfrac12\sum_i(\mathrm{SNR}_{s,i} - \mathrm{SNR}_{t,i})(x_i - \hat x_i)^2`, finite and smooth at s = t.

    Args:
        z_t: latent at time t, shape ``(B, *event)``.
        x: data, shape of ``z_t``.
        gamma_s, gamma_t: noise levels broadcastable to ``z_t``.
        eps: the noise with :math:`z_t = \alpha_t x + \sigma_t\,\varepsilon`, when the caller drew it (keyword-only,
            optional): the KL then uses it instead of recovering it from ``z_t``, exact at very low noise.
        event_ndims: trailing event dims, default ``z_t.ndim - 1``.
        validate_args: as in :class:`ForwardMarginal`.

    Raises:
        ValueError: ``x``, ``z_t`` (and ``eps``) differ in shape, a noise level does not broadcast, or an argument
            holds NaN or Inf.

    Example:
        >>> q = TopDownPosterior(jnp.zeros((1, 2)), jnp.ones((1, 2)), jnp.asarray(-2.0), jnp.asarray(0.0))
        >>> print(q.mean().round(4))
        [[0.8115 0.8115]]
    """

    def __init__(self, z_t, x, gamma_s, gamma_t, *, eps=None, event_ndims: int | None = None,
                 validate_args: bool = False):
        self._set_params(dp.build_top_down_posterior(
            z_t, x, gamma_s, gamma_t, eps=eps, event_ndims=event_ndims, validate_args=validate_args
        ))

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

    def __getitem__(self, index) -> TopDownPosterior:
        return TopDownPosterior(**self._indexed_args(index), event_ndims=self._params.event_ndims,
                                validate_args=self._params.validate_args)


class ReverseTransition(_DiffusionGaussian):
    r"""The generative transition p(z_s | z_t) = q(z_s | z_t, x̂) with the denoiser's prediction plugged in.

    Mathematical details:
        .. math:: p(z_s \mid z_t) = \mathcal N\big(c_z z_t + c_x \hat x,\ \sigma^2_{s|t}\big),

        the top-down posterior with :math:`\hat x = \hat x(z_t, t)`. Built with :meth:`from_prediction`, it keeps an
        ``eps``/``v`` prediction in its native form, so its KL to :class:`TopDownPosterior` is
        :math:`\tfrac12\sum_i \mathrm{expm1}(\gamma_{t,i}-\gamma_{s,i})(\varepsilon_i-\hat\varepsilon_i)^2` without
        a round trip through :math:`\hat x` (which loses all float32 precision near gamma = -30).

    Args:
        z_t: latent at time t, shape ``(B, *event)``.
        x_hat: predicted data, shape of ``z_t``.
        gamma_s, gamma_t: noise levels broadcastable to ``z_t``.
        log_variance: optional per-dimension log-variance replacing the posterior's (for example the forward
            transition's, :func:`mulan_ppl.core.log_transition_variance`, DDPM's larger choice). Its KL to the
            posterior is then the general Gaussian KL, which has no finite continuous-time limit.
        event_ndims: trailing event dims, default ``z_t.ndim - 1``.
        validate_args: as in :class:`ForwardMarginal`.

    Example:
        >>> z_t, x = jnp.zeros((1, 2)), jnp.ones((1, 2))
        >>> q = TopDownPosterior(z_t, x, -2.0, 0.0)
        >>> p = ReverseTransition(z_t, 0.9 * x, -2.0, 0.0)
        >>> print(q.kl_divergence(p))  # (e^2 - 1) * 0.1^2 / 2 per dimension
        [0.0639]
    """

    def __init__(self, z_t, x_hat, gamma_s, gamma_t, *, log_variance=None, event_ndims: int | None = None,
                 validate_args: bool = False):
        self._init(z_t, x_hat, gamma_s, gamma_t, "x", log_variance, event_ndims, validate_args, "x_hat")

    def _init(self, z_t, prediction, gamma_s, gamma_t, parameterization, log_variance, event_ndims,
              validate_args, prediction_name="prediction"):
        self._parameterization = parameterization
        self._set_params(dp.build_reverse_transition(
            z_t, prediction, gamma_s, gamma_t, parameterization=parameterization, log_variance=log_variance,
            event_ndims=event_ndims, validate_args=validate_args, prediction_name=prediction_name,
        ))

    @classmethod
    def from_prediction(cls, z_t, prediction, gamma_s, gamma_t, *, parameterization: str, log_variance=None,
                        event_ndims: int | None = None, validate_args: bool = False) -> ReverseTransition:
        """Builds the transition from a prediction named by ``parameterization`` (``"eps"``, ``"v"``, ``"x"``,
        ``"score"``), kept in that form for the KL."""
        self = cls.__new__(cls)
        self._init(z_t, prediction, gamma_s, gamma_t, parameterization, log_variance, event_ndims, validate_args)
        return self

    @property
    def parameterization(self) -> str:
        return self._parameterization

    @property
    def x_hat(self) -> jax.Array:
        a = self._params.args
        return core.convert_prediction(a["prediction"], a["z_t"], a["gamma_t"], source=self._parameterization,
                                       target="x")

    def __getitem__(self, index) -> ReverseTransition:
        a = self._indexed_args(index)
        return ReverseTransition.from_prediction(
            a["z_t"], a["prediction"], a["gamma_s"], a["gamma_t"], parameterization=self._parameterization,
            log_variance=a["log_variance"], event_ndims=self._params.event_ndims,
            validate_args=self._params.validate_args,
        )


_GAUSSIANS = (ForwardMarginal, ForwardTransition, TopDownPosterior, ReverseTransition)


def _kl_posterior_reverse(q: TopDownPosterior, p: ReverseTransition, name=None) -> jax.Array:
    del name
    return dp.kl_posterior_reverse(q._params, p._params, p.parameterization)


def _kl_gaussian_gaussian(q: _DiffusionGaussian, p: _DiffusionGaussian, name=None) -> jax.Array:
    del name
    return dp.kl_diag_gaussians(q._params, p._params)


def _kl_to_normal(q: _DiffusionGaussian, p, name=None) -> jax.Array:
    del name
    return dp.kl_to_normal(q._params, p.loc, p.scale)


def _kl_to_independent_normal(q: _DiffusionGaussian, p, name=None) -> jax.Array:
    del name
    base = p.distribution
    if not isinstance(base, (distrax.Normal, tfd.Normal)):
        raise NotImplementedError(f"KL to Independent({type(base).__name__}) is not registered.")
    ndims = getattr(p, "reinterpreted_batch_ndims", None)
    if ndims is None:
        ndims = len(p.event_shape)
    return dp.kl_to_normal(q._params, base.loc, base.scale, int(ndims))


tfd.RegisterKL(_DiffusionGaussian, _DiffusionGaussian)(_kl_gaussian_gaussian)
tfd.RegisterKL(TopDownPosterior, ReverseTransition)(_kl_posterior_reverse)
for _normal in (distrax.Normal, tfd.Normal):
    tfd.RegisterKL(_DiffusionGaussian, _normal)(_kl_to_normal)
for _independent in (distrax.Independent, tfd.Independent):
    tfd.RegisterKL(_DiffusionGaussian, _independent)(_kl_to_independent_normal)
