"""DiffusionELBO: term-by-term agreement with the Distrax path, keys, gradients, SVI on a 2-D toy set, errors."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from diffusion_toys import GaussianEncoder, MLPDenoiser, elbo_terms_draws, gaussian_latent, level_draws, toy_grid_data
from flax import nnx
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.infer import SVI, TraceMeanField_ELBO

from mulan_ppl import core
from mulan_ppl.hvae import TopDownDiffusion, diffusion_term
from mulan_ppl.numpyro.elbo import DiffusionELBO
from mulan_ppl.numpyro.programs import DiffusionPrograms
from mulan_ppl.schedules import FixedLinear, LearnedScalar, Polynomial

B, D, M, V, T = 6, 3, 4, 16, 4  # batch, data dims, latent size, vocabulary, levels


def _case(parameterization="eps", num_steps=None):
    """The same MuLAN-style model (Gaussian latent, context-conditioned schedule) in both backends."""
    rngs = nnx.Rngs(0)
    schedule = Polynomial((D,), context_dim=M, hidden_width=8, num_hidden=1, gamma_min=-5.0, gamma_max=4.0,
                          rngs=rngs)
    denoiser = MLPDenoiser(D, context_dim=M, rngs=rngs)
    dq, dp, nq, np_ = gaussian_latent(GaussianEncoder(D, M, rngs=rngs), M)
    hvae = TopDownDiffusion(schedule, denoiser, vocab_size=V, parameterization=parameterization, latent_posterior=dq,
                            latent_prior=dp)
    programs = DiffusionPrograms(schedule, denoiser, vocab_size=V, parameterization=parameterization,
                                 num_steps=num_steps, latent_posterior=nq, latent_prior=np_)
    return hvae, programs


def _data(seed=1):
    return jax.random.randint(jax.random.key(seed), (B, D), 0, V)


def _levels_key(rng_key, particle=0, site=0):
    """The key DiffusionELBO documents for the ``site``-th levels site of particle ``particle``."""
    return jax.random.fold_in(jax.random.fold_in(rng_key, particle), 2 + site)


@pytest.mark.parametrize("num_steps, parameterization", [(None, "eps"), (T, "v")])
def test_site_terms_agree_with_elbo_terms_term_by_term(num_steps, parameterization):
    """With the latent c and z_0 that elbo_terms drew substituted into the guide, the latent KL, prior KL and
    reconstruction equal elbo_terms', and the levels site is diffusion_term at the documented key."""
    hvae, programs = _case(parameterization)
    x, key, rng_key = _data(), jax.random.key(3), jax.random.key(4)
    terms = hvae.elbo_terms(x, key, num_steps=num_steps)
    draws = elbo_terms_draws(hvae, x, key)
    guide = handlers.substitute(programs.guide, data=draws)
    elbo = DiffusionELBO(num_steps)
    site = elbo.site_terms(rng_key, {}, programs.model, guide, x)

    assert set(site) == {"c", "z_1", "z_0", "x"}
    named = programs.named_terms(site)
    for name in ("reconstruction", "prior", "latent"):
        assert named[name].shape == (B,)
        np.testing.assert_allclose(named[name], terms[name], rtol=1e-5, atol=1e-5, err_msg=name)
    f = core.encode_integers(x, V)
    expected = diffusion_term(f, _levels_key(rng_key), hvae.gamma_fn, hvae.denoiser, context=draws["c"],
                              parameterization=parameterization, num_steps=num_steps)
    np.testing.assert_allclose(named["diffusion"], expected, rtol=1e-5)
    # the loss is the batch sum of the site terms of particle 0
    loss = elbo.loss(rng_key, {}, programs.model, guide, x)
    np.testing.assert_allclose(loss, sum(v.sum() for v in site.values()), rtol=1e-6)


def test_all_levels_equals_trace_mean_field_on_the_explicit_chain():
    """DiffusionELBO(T, all_levels=True) on the collapsed programs is TraceMeanField_ELBO on the T-level chain whose
    level values are the ones diffusion_term drew (the same z_t at every level)."""
    hvae, collapsed = _case("x", num_steps=None)
    _, explicit = _case("x", num_steps=T)
    x, key, rng_key = _data(), jax.random.key(3), jax.random.key(8)
    draws = elbo_terms_draws(hvae, x, key)
    f = core.encode_integers(x, V)
    chain_draws = draws | level_draws(f, _levels_key(rng_key), hvae.gamma_fn, draws["c"], T)

    site = DiffusionELBO(T, all_levels=True).site_terms(rng_key, {}, collapsed.model,
                                                        handlers.substitute(collapsed.guide, data=draws), x)
    losses = TraceMeanField_ELBO(sum_sites=False).loss(jax.random.key(0), {}, explicit.model,
                                                       handlers.substitute(explicit.guide, data=chain_draws), x)
    grouped = explicit.named_terms(losses)
    for name, value in collapsed.named_terms(site).items():
        np.testing.assert_allclose(value.sum(), grouped[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_randomness_comes_only_from_the_key_and_sum_sites_splits_the_loss():
    _, programs = _case()
    x = _data()
    elbo = DiffusionELBO()
    a, b, c = (elbo.loss(jax.random.key(i), {}, programs.model, programs.guide, x) for i in (1, 1, 2))
    assert float(a) == float(b) and float(a) != float(c)
    assert vars(elbo) == vars(DiffusionELBO())  # evaluating the loss left no state behind
    per_site = DiffusionELBO(sum_sites=False).loss(jax.random.key(1), {}, programs.model, programs.guide, x)
    assert set(per_site) == {"c", "z_1", "z_0", "x"}
    np.testing.assert_allclose(sum(per_site.values()), a, rtol=1e-5)



def test_particles_average_estimates_from_folded_keys():
    """With P particles the levels site is the mean over p of diffusion_term at fold_in(fold_in(key, p), 2)."""
    denoiser = MLPDenoiser(D, rngs=nnx.Rngs(0))
    programs = DiffusionPrograms(FixedLinear(gamma_min=-5.0, gamma_max=4.0), denoiser, vocab_size=V)
    x, rng_key = _data(), jax.random.key(6)
    elbo = DiffusionELBO(num_particles=3, sum_sites=False)
    losses = jax.jit(lambda key: elbo.loss(key, {}, programs.model, programs.guide, x))(rng_key)
    f = core.encode_integers(x, V)
    expected = np.mean([diffusion_term(f, _levels_key(rng_key, particle=p), programs.gamma_fn, denoiser).sum()
                        for p in range(3)])
    np.testing.assert_allclose(losses["z_0"], expected, rtol=1e-5)


class _CountingDenoiser(nnx.Module):
    """A denoiser with non-parameter state: it counts its calls."""

    def __init__(self):
        self.w = nnx.Param(jnp.asarray(0.5))
        self.calls = nnx.BatchStat(jnp.asarray(0.0))

    def __call__(self, z, t, gamma, context):
        self.calls[...] = self.calls[...] + 1.0
        return self.w[...] * z


def test_module_state_written_by_the_diffusion_term_is_returned_as_mutable_state():
    programs = DiffusionPrograms(FixedLinear(gamma_min=-5.0, gamma_max=4.0), _CountingDenoiser(), vocab_size=V)
    elbo, x = DiffusionELBO(), _data()
    out = elbo.loss_with_mutable_state(jax.random.key(0), {}, programs.model, programs.guide, x)
    assert float(out["mutable_state"]["denoiser$state"]["state"]["calls"]) == 1.0  # one call in continuous time
    again = elbo.loss_with_mutable_state(jax.random.key(0), out["mutable_state"], programs.model, programs.guide, x)
    assert float(again["mutable_state"]["denoiser$state"]["state"]["calls"]) == 2.0
    np.testing.assert_allclose(again["loss"], out["loss"], rtol=1e-6)


def test_svi_lowers_the_nelbo_on_a_2d_toy_dataset():
    """A tiny MLP denoiser and a learned scalar schedule, trained with SVI, Adam and the continuous-time ELBO on
    2-D points of a 16 x 16 grid: the mean loss of the last 50 steps is below that of the first 50 by more than
    z = 4.89 standard errors of the difference (failure probability 1e-6 for a loss that does not go down)."""
    x = toy_grid_data(256, 16)
    rngs = nnx.Rngs(0)
    programs = DiffusionPrograms(LearnedScalar(hidden_width=8, gamma_min=-8.0, gamma_max=6.0, rngs=rngs),
                                 MLPDenoiser(2, hidden=32, rngs=rngs), vocab_size=16)
    svi = SVI(programs.model, programs.guide, optax.adam(3e-3), DiffusionELBO())
    initial = svi.get_params(svi.init(jax.random.key(0), x))
    result = svi.run(jax.random.key(0), 300, x, progress_bar=False)
    losses = np.asarray(result.losses) / x.shape[0]  # nats per example
    first, last = losses[:50], losses[-50:]
    margin = 4.89 * np.sqrt(first.var(ddof=1) / 50 + last.var(ddof=1) / 50)
    assert np.all(np.isfinite(losses))
    assert last.mean() < first.mean() - margin, (first.mean(), last.mean(), margin)
    # both networks were trained through the one diffusion formula: their parameters moved
    for name in ("gamma_fn$params", "denoiser$params"):
        moved = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), initial[name], result.params[name])
        assert max(jax.tree.leaves(moved)) > 1e-4, name


class _SurrogateNormal(dist.Normal):
    """A Normal with a ``surrogate_kl()``, standing in for a latent family without a registered KL."""

    def surrogate_kl(self):
        return jnp.full(self.batch_shape, 0.25)


def _latent_only(guide_fn):
    def model():
        with numpyro.plate("data", 2):
            numpyro.sample("c", dist.Laplace(0.0, 1.0))

    def guide():
        with numpyro.plate("data", 2):
            numpyro.sample("c", guide_fn)

    return model, guide


def test_latents_without_a_registered_kl_use_a_surrogate_or_the_opt_in_monte_carlo_estimate():
    q = dist.Normal(jnp.array([0.3, -0.2]), 0.5)
    model, guide = _latent_only(q)
    with pytest.raises(ValueError, match="no KL is registered .* site 'c'"):
        DiffusionELBO().loss(jax.random.key(0), {}, model, guide)

    value = jnp.array([0.7, 0.1])
    fixed_guide = handlers.substitute(guide, data={"c": value})
    mc = DiffusionELBO(allow_mc_kl=True).loss(jax.random.key(0), {}, model, fixed_guide)
    expected = jnp.sum(q.log_prob(value) - dist.Laplace(0.0, 1.0).log_prob(value))
    np.testing.assert_allclose(mc, expected, rtol=1e-6)

    surrogate_model, surrogate_guide = _latent_only(_SurrogateNormal(jnp.zeros(2), 1.0))
    np.testing.assert_allclose(DiffusionELBO().loss(jax.random.key(0), {}, surrogate_model, surrogate_guide), 0.5)


def test_a_reverse_chain_needs_a_forward_marginal_guide():
    programs = DiffusionPrograms(FixedLinear(), lambda z, t, g, c: jnp.zeros_like(z), vocab_size=V)

    def guide(x):
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("z_1", dist.Normal(jnp.zeros((x.shape[0], D)), 1.0).to_event(1))
            numpyro.sample("z_0", dist.Normal(jnp.zeros((x.shape[0], D)), 1.0).to_event(1))

    with pytest.raises(ValueError, match="ForwardMarginal"):
        DiffusionELBO().loss(jax.random.key(0), {}, programs.model, guide, _data())


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=1.5), "num_steps"),
        (dict(num_particles=0), "num_particles"),
        (dict(all_levels=True), "all_levels"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        DiffusionELBO(**kwargs)


def test_diffusion_elbo_is_exported_lazily_from_mulan_ppl_numpyro():
    """``import mulan_ppl.numpyro`` (and its programs) imports no TensorFlow Probability; ``DiffusionELBO``, which
    calls ``hvae``, is reached as ``mulan_ppl.numpyro.DiffusionELBO`` on first access."""
    code = ("import sys, mulan_ppl.numpyro as m, mulan_ppl.numpyro.programs; "
            "print(any(n.startswith('tensorflow_probability') for n in sys.modules)); "
            "from mulan_ppl.numpyro.elbo import DiffusionELBO; "
            "print(getattr(m, 'DiffusionELBO', None) is DiffusionELBO)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imports_tfp, exported = result.stdout.split()
    assert imports_tfp == "False"
    assert exported == "True"
