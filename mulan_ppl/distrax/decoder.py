"""Distrax class of VDM's discretized Gaussian decoder p(x | z_0) over integer data."""

from __future__ import annotations

import distrax
import jax
import jax.numpy as jnp
from distrax._src.distributions.distribution import to_batch_shape_index

from mulan_ppl import _diffusion_params as dp

__all__ = ["DiscretizedGaussianDecoder"]


class DiscretizedGaussianDecoder(distrax.Distribution):
    r"""VDM's decoder: independent categoricals over ``vocab_size`` integer levels per data dimension.

    Mathematical details:
        With bin centres :math:`c_j = 2(j + \tfrac12)/V - 1` in the model's ``[-1, 1]`` scale,

        .. math:: p(x_i = j \mid z_0) = \mathrm{softmax}_j\Big(-\tfrac12\Big(\frac{z_{0,i}/\alpha_0 - c_j}
            {\sigma_0/\alpha_0}\Big)^2\Big),

        a softmax over bin centres (not a Gaussian CDF integrated over bins; the two differ). ``log_prob`` sums over
        the event dims. See :func:`mulan_ppl.core.decoder_logits`.

    Args:
        z_0: latent at t = 0, shape ``(B, *event)``.
        gamma_0: noise level at t = 0, broadcastable to ``z_0`` (a scalar or of ``z_0``'s rank).
        vocab_size: number of integer levels ``V >= 2`` (256 for 8-bit images).
        event_ndims: trailing event dims, default ``z_0.ndim - 1``.
        validate_args: check the integer range of ``log_prob``'s values under ``jit`` too (raising at run time; see
            :mod:`mulan_ppl._validation`); concrete values are always checked.

    Raises:
        ValueError: ``vocab_size < 2``; ``gamma_0`` does not broadcast to ``z_0``; ``log_prob`` of integers outside
            ``[0, vocab_size)``.

    Example:
        >>> d = DiscretizedGaussianDecoder(jnp.zeros((1, 2)), -5.0, vocab_size=4)
        >>> print(d.event_shape, d.mode())
        (2,) [[1 1]]
    """

    def __init__(self, z_0, gamma_0, vocab_size: int, *, event_ndims: int | None = None,
                 validate_args: bool = False):
        super().__init__()
        args, self._vocab_size, self._log_probs, self._event_ndims = dp.build_decoder(
            z_0, gamma_0, vocab_size, event_ndims=event_ndims, validate_args=validate_args
        )
        self._args = args
        self._validate_args = validate_args

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def log_probs(self) -> jax.Array:
        """Normalised log-probabilities of every level, shape ``batch_shape + event_shape + (V,)``."""
        return self._log_probs

    @property
    def event_shape(self) -> tuple[int, ...]:
        shape = self._log_probs.shape[:-1]
        return tuple(shape[len(shape) - self._event_ndims:])

    @property
    def batch_shape(self) -> tuple[int, ...]:
        shape = self._log_probs.shape[:-1]
        return tuple(shape[: len(shape) - self._event_ndims])

    def _sample_n(self, key: jax.Array, n: int) -> jax.Array:
        shape = (n,) + self._log_probs.shape[:-1]
        return jax.random.categorical(key, self._log_probs, axis=-1, shape=shape).astype(jnp.int32)

    def log_prob(self, value: jax.Array) -> jax.Array:
        """Log-probability of integer data, summed over the event dims."""
        return dp.decoder_log_prob(self._log_probs, value, self._vocab_size, self._event_ndims,
                                   validate_args=self._validate_args)

    def entropy(self) -> jax.Array:
        probs = jnp.exp(self._log_probs)
        return dp.sum_event(-jnp.sum(probs * self._log_probs, axis=-1), self._event_ndims)

    def mean(self) -> jax.Array:
        """Expected integer level, as a float array."""
        levels = jnp.arange(self._vocab_size, dtype=self._log_probs.dtype)
        return jnp.sum(jnp.exp(self._log_probs) * levels, axis=-1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self._log_probs, axis=-1).astype(jnp.int32)

    def __getitem__(self, index) -> DiscretizedGaussianDecoder:
        index = to_batch_shape_index(self.batch_shape, index)
        full = self._log_probs.shape[:-1]
        args = {k: jnp.broadcast_to(v, full)[index] for k, v in self._args.items()}
        return DiscretizedGaussianDecoder(args["z_0"], args["gamma_0"], self._vocab_size,
                                          event_ndims=self._event_ndims, validate_args=self._validate_args)
