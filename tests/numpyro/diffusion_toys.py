"""Small networks and draw reconstructions shared by the NumPyro program and ELBO tests."""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from numpyro import distributions as dist

from mulan_ppl import core
from mulan_ppl.distrax import ForwardMarginal
from mulan_ppl.schedules import evaluate_schedule


class MLPDenoiser(nnx.Module):
    """A tiny MLP on (z_t, t, context) for flat events ``(B, D)``."""

    def __init__(self, size: int, *, context_dim: int = 0, hidden: int = 16, rngs: nnx.Rngs):
        self.inp = nnx.Linear(size + 1 + context_dim, hidden, rngs=rngs)
        self.mid = nnx.Linear(hidden, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, size, rngs=rngs)

    def __call__(self, z, t, gamma, context):
        h = jnp.concatenate([z, t[:, None]] + ([context] if context is not None else []), axis=-1)
        return self.out(nnx.swish(self.mid(nnx.swish(self.inp(h)))))


class GaussianEncoder(nnx.Module):
    """Location and scale of a diagonal Gaussian q(c|x) = N(f W, diag(exp(f V)))."""

    def __init__(self, size: int, latent: int, *, rngs: nnx.Rngs):
        self.w = nnx.Param(0.5 * jax.random.normal(rngs.params(), (size, latent)))
        self.v = nnx.Param(0.3 * jax.random.normal(rngs.params(), (size, latent)))

    def __call__(self, f):
        return f @ self.w[...], jnp.exp(f @ self.v[...])


def gaussian_latent(encoder: GaussianEncoder, latent: int):
    """The same Gaussian latent pair in both backends: ``(distrax posterior, distrax prior, numpyro ...)``."""
    return (lambda f: distrax.MultivariateNormalDiag(*encoder(f)),
            distrax.MultivariateNormalDiag(jnp.zeros(latent), jnp.ones(latent)),
            lambda f: dist.Normal(*encoder(f)).to_event(1),
            dist.Normal(jnp.zeros(latent), 1.0).to_event(1))


def toy_grid_data(num: int, vocab_size: int, seed: int = 0) -> jax.Array:
    """2-D integer points near the four corners of a ``vocab_size`` grid."""
    rng = np.random.default_rng(seed)
    lo, hi = vocab_size // 5, vocab_size - 1 - vocab_size // 5
    centres = np.array([[lo, lo], [lo, hi], [hi, lo], [hi, hi]])
    x = centres[rng.integers(0, 4, num)] + rng.integers(-1, 2, (num, 2))
    return jnp.asarray(np.clip(x, 0, vocab_size - 1), jnp.int32)


def level_draws(f, key, gamma_fn, context, num_steps):
    """The z_t of every level of ``diffusion_term(f, key, ..., num_steps=T, all_levels=True)``, by site name.

    Mirrors its key use: ``time_key, noise_key = split(key)``, level ``i`` draws its noise from
    ``split(noise_key, T)[i - 1]`` and sets ``z_t = alpha_t f + sigma_t eps`` at ``t = i / T``.
    """
    batch, event = f.shape[0], f.shape[1:]
    _, noise_key = jax.random.split(key)
    level_keys = jax.random.split(noise_key, num_steps)
    draws = {}
    for i in range(1, num_steps + 1):
        eps = jax.random.normal(level_keys[i - 1], f.shape, f.dtype)
        gamma_t = evaluate_schedule(gamma_fn, jnp.full((batch,), i / num_steps, f.dtype), context, event)
        alpha, sigma = core.alpha_sigma(gamma_t)
        draws["z_1" if i == num_steps else f"z_{i}/{num_steps}"] = alpha * f + sigma * eps
    return draws


def elbo_terms_draws(model, x, key, num_steps=None):
    """The latent draws of ``TopDownDiffusion.elbo_terms(x, key, ...)``: ``c`` (with a latent), ``z_0`` and, with
    ``num_steps``, the level values of ``all_levels=True``.

    Mirrors its key use: ``latent_key, recon_key, diffusion_key = split(key, 3)``.
    """
    f = core.encode_integers(x, model.vocab_size)
    latent_key, recon_key, diffusion_key = jax.random.split(key, 3)
    draws, context = {}, None
    if model.latent_posterior is not None:
        context = draws["c"] = model.latent_posterior(f).sample(seed=latent_key)
    gamma_0 = evaluate_schedule(model.gamma_fn, jnp.zeros((f.shape[0],), f.dtype), context, f.shape[1:])
    draws["z_0"] = ForwardMarginal(f, gamma_0).sample(seed=recon_key)
    if num_steps is not None:
        draws.update(level_draws(f, diffusion_key, model.gamma_fn, context, num_steps))
    return draws
