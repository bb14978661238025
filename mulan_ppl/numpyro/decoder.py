"""NumPyro class of VDM's discretized Gaussian decoder, twin of :class:`mulan_ppl.distrax.DiscretizedGaussianDecoder`."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints

from mulan_ppl import _diffusion_params as dp

__all__ = ["DiscretizedGaussianDecoder"]


class DiscretizedGaussianDecoder(Distribution):
    r"""VDM's decoder p(x | z_0) over ``vocab_size`` integer levels per dimension (NumPyro).

    Mathematical details:
        .. math:: p(x_i = j \mid z_0) = \mathrm{softmax}_j\big(-\tfrac12((z_{0,i} - \alpha_0 c_j)/\sigma_0)^2\big),
            \qquad c_j = 2(j + \tfrac12)/V - 1;

        see :func:`mulan_ppl.core.decoder_logits` and :class:`mulan_ppl.distrax.DiscretizedGaussianDecoder`.

    Args:
        z_0: latent at t = 0, shape ``(B, *event)``.
        gamma_0: noise level at t = 0, broadcastable to ``z_0``.
        vocab_size: number of integer levels ``V >= 2``.
        event_ndims: trailing event dims, default ``z_0.ndim - 1``.
        validate_args: check the integer range of ``log_prob``'s values under ``jit`` too.

    Example:
        >>> d = DiscretizedGaussianDecoder(jnp.zeros((1, 2)), -5.0, vocab_size=4)
        >>> print(d.event_shape, d.mode)
        (2,) [[1 1]]
    """

    arg_constraints = {"z_0": constraints.real, "gamma_0": constraints.real}
    pytree_data_fields = ("log_probs",)
    pytree_aux_fields = ("vocab_size", "_event_ndims", "_check_values")

    def __init__(self, z_0, gamma_0, vocab_size: int, *, event_ndims: int | None = None,
                 validate_args: bool = False):
        args, self.vocab_size, self.log_probs, self._event_ndims = dp.build_decoder(
            z_0, gamma_0, vocab_size, event_ndims=event_ndims, validate_args=validate_args
        )
        self.z_0, self.gamma_0 = args["z_0"], args["gamma_0"]
        self._check_values = validate_args
        shape = self.log_probs.shape[:-1]
        split = len(shape) - self._event_ndims
        super().__init__(batch_shape=shape[:split], event_shape=shape[split:], validate_args=None)

    @classmethod
    def infer_shapes(cls, *args, **kwargs):
        return dp.infer_shapes(cls.__init__, *args, **kwargs)

    @constraints.dependent_property(is_discrete=True)
    def support(self):
        return constraints.independent(constraints.integer_interval(0, self.vocab_size - 1), self.event_dim)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        shape = tuple(sample_shape) + self.log_probs.shape[:-1]
        return jax.random.categorical(key, self.log_probs, axis=-1, shape=shape).astype(jnp.int32)

    def log_prob(self, value: jax.Array) -> jax.Array:
        return dp.decoder_log_prob(self.log_probs, value, self.vocab_size, self._event_ndims,
                                   validate_args=self._check_values)

    def entropy(self) -> jax.Array:
        probs = jnp.exp(self.log_probs)
        return dp.sum_event(-jnp.sum(probs * self.log_probs, axis=-1), self._event_ndims)

    @property
    def mean(self) -> jax.Array:
        levels = jnp.arange(self.vocab_size, dtype=self.log_probs.dtype)
        return jnp.sum(jnp.exp(self.log_probs) * levels, axis=-1)

    @property
    def mode(self) -> jax.Array:
        return jnp.argmax(self.log_probs, axis=-1).astype(jnp.int32)
