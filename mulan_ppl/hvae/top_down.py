"""The top-down HVAE: prior, decoder, schedule, denoiser and an optional auxiliary latent, composed into the ELBO."""

from __future__ import annotations

import math
from collections.abc import Callable

import distrax
import jax
import jax.numpy as jnp
from flax import nnx

from mulan_ppl import core
from mulan_ppl._validation import check_integer_data, check_one_of, check_positive_int
from mulan_ppl.distrax import DiscretizedGaussianDecoder, ForwardMarginal
from mulan_ppl.hvae.diffusion import PARAMETERIZATIONS, diffusion_term
from mulan_ppl.sampling import ancestral_sample, ode_sample
from mulan_ppl.schedules import evaluate_schedule

__all__ = ["TopDownDiffusion", "variance_minimizing"]

SCHEDULE_OBJECTIVES = ("elbo", "variance")
SAMPLERS = ("ancestral", "ode")


def variance_minimizing(loss_fn: Callable, params, schedule_params) -> jax.Array:
    r"""Per-example loss whose gradient is the loss's for ``params`` and the squared loss's for ``schedule_params``.

    Mathematical details:
        VDM learns its scalar schedule :math:`\eta` by minimising the variance of the diffusion-loss estimator
        (the ELBO itself does not depend on the schedule's interior): for per-example losses :math:`L_i(\theta,\eta)`
        the backward pass returns :math:`\partial L_i/\partial\theta` and :math:`\partial L_i^2/\partial\eta =
        2L_i\,\partial L_i/\partial\eta`, from one forward pass. The returned value is :math:`L` unchanged.

    Args:
        loss_fn: ``loss_fn(params, schedule_params) -> (B,)`` per-example losses.
        params: pytree of the other parameters.
        schedule_params: pytree of the schedule's parameters.

    Returns:
        The per-example losses, shape ``(B,)``.

    Example:
        >>> f = lambda a, b: a * b * jnp.ones(1)
        >>> ga, gb = jax.grad(lambda a, b: variance_minimizing(f, a, b).sum(), argnums=(0, 1))(2.0, 3.0)
        >>> print(float(ga), float(gb))  # d(ab)/da = b; d(ab)^2/db = 2 a^2 b
        3.0 24.0
    """

    @jax.custom_vjp
    def loss(p, sp):
        return loss_fn(p, sp)

    def forward(p, sp):
        value, vjp = jax.vjp(loss_fn, p, sp)
        return value, (value, vjp)

    def backward(residual, cotangent):
        value, vjp = residual
        grad_params, _ = vjp(cotangent)
        _, grad_schedule = vjp(cotangent * 2.0 * value)
        return grad_params, grad_schedule

    loss.defvjp(forward, backward)
    return loss(params, schedule_params)


class TopDownDiffusion(nnx.Module):
    r"""A diffusion model as a top-down hierarchical VAE, with an optional auxiliary latent (MuLAN).

    Mathematical details:
        For integer data :math:`x` encoded to :math:`f \in [-1, 1]` and an auxiliary latent :math:`c` (if any),

        .. math:: -\mathrm{ELBO} = \underbrace{-\mathbb E\log p(x|z_0)}_{\texttt{reconstruction}}
            + \underbrace{\mathrm{KL}(q(z_1|x,c)\,\|\,\mathcal N(0,I))}_{\texttt{prior}}
            + \underbrace{\mathcal L_{\mathrm{diff}}}_{\texttt{diffusion}}
            + \underbrace{\mathrm{KL}(q(c|x)\,\|\,p(c))}_{\texttt{latent}},

        with :math:`q(z_t|x, c) = \mathcal N(\alpha_t f, \sigma_t^2)` at the per-dimension noise level
        :math:`\gamma(t, c)` (so the schedule is part of the variational posterior), the decoder
        :class:`~mulan_ppl.distrax.DiscretizedGaussianDecoder`, and the diffusion term of :func:`diffusion_term`.
        ``bpd`` is :math:`-\mathrm{ELBO}/(D\ln 2)` with :math:`D` the number of data dimensions. With no latent and
        a scalar schedule this is VDM; with a :class:`~mulan_ppl.distrax.KHot` latent and a
        :class:`~mulan_ppl.schedules.Polynomial` schedule it is MuLAN. A latent without a registered KL but with a
        ``surrogate_kl()`` method (:class:`~mulan_ppl.distrax.PerturbedTopK`, the paper's sampler) contributes
        ``latent_surrogate`` instead of ``latent``; ``nelbo`` then is the training objective of the reference
        code, not a bound.

    Args:
        gamma_fn: schedule ``gamma_fn(t, context)``.
        denoiser: ``denoiser(z_t, t, gamma_t, context)``.
        vocab_size: number of integer levels of the data.
        parameterization: the denoiser's prediction target, ``"eps"``, ``"v"`` or ``"x"``.
        latent_posterior: optional encoder ``f -> distribution over c`` (a Distrax distribution) taking the
            encoded data ``f`` of shape ``(B, *event)``.
        latent_prior: the prior over ``c`` (a Distrax distribution), required with ``latent_posterior``.
        schedule_objective: ``"elbo"`` (every parameter follows the ELBO) or ``"variance"`` (VDM: the schedule's
            parameters follow the gradient of the squared diffusion loss; models without a latent only).
        antithetic: low-discrepancy diffusion times over the batch.

    Raises:
        ValueError: ``vocab_size < 2``, an unknown option, a latent posterior without a prior, or a variance
            objective with a latent.

    Example:
        >>> from mulan_ppl.schedules import FixedLinear
        >>> model = TopDownDiffusion(FixedLinear(gamma_min=-7.0, gamma_max=5.0), lambda z, t, g, c: jnp.zeros_like(z), vocab_size=4)
        >>> terms = model.elbo_terms(jnp.array([[0, 3], [1, 2]]), jax.random.key(0))
        >>> print(sorted(terms), terms["bpd"].shape)
        ['bpd', 'diffusion', 'nelbo', 'prior', 'reconstruction'] (2,)
    """

    def __init__(
        self,
        gamma_fn,
        denoiser,
        *,
        vocab_size: int,
        parameterization: str = "eps",
        latent_posterior: Callable | None = None,
        latent_prior=None,
        schedule_objective: str = "elbo",
        antithetic: bool = True,
    ):
        self.vocab_size = check_positive_int("TopDownDiffusion", "vocab_size", vocab_size, minimum=2)
        self.parameterization = check_one_of("TopDownDiffusion", "parameterization", parameterization,
                                             PARAMETERIZATIONS)
        self.schedule_objective = check_one_of("TopDownDiffusion", "schedule_objective", schedule_objective,
                                               SCHEDULE_OBJECTIVES)
        if (latent_posterior is None) != (latent_prior is None):
            raise ValueError("`TopDownDiffusion`: `latent_posterior` and `latent_prior` must be given together.")
        if latent_posterior is not None and schedule_objective == "variance":
            raise ValueError(
                "`TopDownDiffusion`: `schedule_objective='variance'` applies to a schedule that is not part of the "
                "variational posterior; with an auxiliary latent the schedule must follow the ELBO."
            )
        self.gamma_fn = gamma_fn
        self.denoiser = denoiser
        self.latent_posterior = latent_posterior
        self.latent_prior = nnx.data(latent_prior) if latent_prior is not None else None
        self.antithetic = antithetic

    def _latent(self, f: jax.Array, key: jax.Array):
        """Draws c ~ q(c|x) and returns (c, {term name: per-example value})."""
        if self.latent_posterior is None:
            return None, {}
        q_c = self.latent_posterior(f)
        c = q_c.sample(seed=key)
        try:
            return c, {"latent": q_c.kl_divergence(self.latent_prior)}
        except NotImplementedError:
            if hasattr(q_c, "surrogate_kl"):
                return c, {"latent_surrogate": q_c.surrogate_kl()}
            raise ValueError(
                f"`TopDownDiffusion`: no KL is registered between {type(q_c).__name__} and "
                f"{type(self.latent_prior).__name__}, and the posterior has no `surrogate_kl()`."
            ) from None

    def elbo_terms(self, x: jax.Array, key: jax.Array, *, num_steps: int | None = None,
                   all_levels: bool = False, validate_args: bool = False) -> dict[str, jax.Array]:
        """All terms of the negative ELBO by name, each per example (shape ``(B,)``), in nats (``bpd`` in bits per
        dimension).

        Args:
            x: integer data of shape ``(B, *event)`` in ``[0, vocab_size)``.
            key: typed PRNG key.
            num_steps: ``None`` for the continuous-time diffusion term, or ``T``.
            all_levels: with ``num_steps``, sum every level's KL (see :func:`diffusion_term`).
            validate_args: check the integer range of ``x`` under ``jit`` too.

        Returns:
            ``reconstruction``, ``prior``, ``diffusion``, ``latent`` or ``latent_surrogate`` (with a latent),
            ``nelbo`` and ``bpd``.
        """
        x = check_integer_data("TopDownDiffusion.elbo_terms", "x", x, self.vocab_size, validate_args=validate_args)
        if x.ndim < 1:
            raise ValueError(f"`TopDownDiffusion.elbo_terms`: `x` must be (batch, *event); got shape {x.shape}.")
        f = core.encode_integers(x, self.vocab_size)
        batch, event_shape = f.shape[0], f.shape[1:]
        latent_key, recon_key, diffusion_key = jax.random.split(key, 3)
        context, terms = self._latent(f, latent_key)

        gamma_0 = evaluate_schedule(self.gamma_fn, jnp.zeros((batch,), f.dtype), context, event_shape)
        gamma_1 = evaluate_schedule(self.gamma_fn, jnp.ones((batch,), f.dtype), context, event_shape)
        z_0 = ForwardMarginal(f, gamma_0).sample(seed=recon_key)
        decoder = DiscretizedGaussianDecoder(z_0, gamma_0, self.vocab_size)
        terms["reconstruction"] = -decoder.log_prob(x)
        terms["prior"] = ForwardMarginal(f, gamma_1).kl_divergence(distrax.Normal(0.0, 1.0))
        terms["diffusion"] = self._diffusion(f, diffusion_key, context, num_steps, all_levels)
        terms["nelbo"] = sum(terms.values())
        terms["bpd"] = terms["nelbo"] / (math.prod(event_shape) * math.log(2.0))
        return terms

    def _diffusion(self, f, key, context, num_steps, all_levels):
        def loss(denoiser, gamma_fn):
            return diffusion_term(f, key, gamma_fn, denoiser, parameterization=self.parameterization,
                                  context=context, num_steps=num_steps, all_levels=all_levels,
                                  antithetic=self.antithetic)

        if self.schedule_objective == "elbo":
            return loss(self.denoiser, self.gamma_fn)
        den_def, den_state = nnx.split(self.denoiser)
        gam_def, gam_state = nnx.split(self.gamma_fn)
        return variance_minimizing(
            lambda ds, gs: loss(nnx.merge(den_def, ds), nnx.merge(gam_def, gs)), den_state, gam_state
        )

    def sample(self, key: jax.Array, num_samples: int, *, event_shape: tuple[int, ...], num_steps: int | None = None,
               context=None, decode: str = "sample", sampler: str = "ancestral", rtol: float = 1e-5,
               atol: float = 1e-5) -> jax.Array:
        """Integer samples from the generative model.

        Args:
            key: typed PRNG key.
            num_samples: batch size ``B``.
            event_shape: the data's event shape.
            num_steps: number of steps ``T`` of the ancestral chain (required for ``sampler="ancestral"``).
            context: auxiliary latent per sample; drawn from ``latent_prior`` when the model has a latent and
                ``context`` is ``None``.
            decode: ``"sample"`` draws from the decoder, ``"mode"`` takes its most likely level.
            sampler: ``"ancestral"`` (:func:`~mulan_ppl.sampling.ancestral_sample`, T steps) or ``"ode"``
                (:func:`~mulan_ppl.sampling.ode_sample`, the adaptive probability-flow ODE with ``rtol``/``atol``).
            rtol, atol: tolerances of the ODE sampler.

        Returns:
            Integer samples of shape ``(B, *event_shape)``.

        Raises:
            ValueError: an unknown ``decode`` or ``sampler``; ``sampler="ancestral"`` without ``num_steps``.
        """
        check_one_of("TopDownDiffusion.sample", "decode", decode, ("sample", "mode"))
        check_one_of("TopDownDiffusion.sample", "sampler", sampler, SAMPLERS)
        if sampler == "ancestral" and num_steps is None:
            raise ValueError("`TopDownDiffusion.sample`: `sampler='ancestral'` needs `num_steps`.")
        context_key, chain_key, decode_key = jax.random.split(key, 3)
        if context is None and self.latent_prior is not None:
            context = self.latent_prior.sample(seed=context_key, sample_shape=(num_samples,))
        shape = (num_samples, *event_shape)
        if sampler == "ancestral":
            z_0 = ancestral_sample(chain_key, self.gamma_fn, self.denoiser, shape=shape, num_steps=num_steps,
                                   parameterization=self.parameterization, context=context)
        else:
            z_0, _ = ode_sample(chain_key, self.gamma_fn, self.denoiser, shape=shape,
                                parameterization=self.parameterization, context=context, rtol=rtol, atol=atol)
        gamma_0 = evaluate_schedule(self.gamma_fn, jnp.zeros((num_samples,), z_0.dtype), context, event_shape)
        decoder = DiscretizedGaussianDecoder(z_0, gamma_0, self.vocab_size)
        return decoder.mode() if decode == "mode" else decoder.sample(seed=decode_key)
