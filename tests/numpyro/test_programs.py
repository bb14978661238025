"""DiffusionPrograms: site order, the explicit T-level chain against TopDownDiffusion.elbo_terms, errors, imports."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffusion_toys import GaussianEncoder, MLPDenoiser, elbo_terms_draws, gaussian_latent
from flax import nnx
from numpyro import distributions as dist
from numpyro import handlers
from numpyro.infer import TraceMeanField_ELBO

from mulan_ppl import core
from mulan_ppl import distrax as mdx
from mulan_ppl import numpyro as mnp
from mulan_ppl.distrax.khot import KHot as DistraxKHot
from mulan_ppl.distrax.khot import UniformKHot as DistraxUniformKHot
from mulan_ppl.hvae import TopDownDiffusion
from mulan_ppl.numpyro.khot import KHot, UniformKHot
from mulan_ppl.numpyro.programs import DiffusionPrograms, ReverseChain
from mulan_ppl.schedules import FixedLinear, Polynomial, evaluate_schedule

B, D, M, V, T = 6, 3, 4, 16, 4  # batch, data dims, latent size, vocabulary, levels


class KHotEncoder(nnx.Module):
    """Logits of q(c|x) over 2-hot vectors of size M."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.linear = nnx.Linear(D, M, rngs=rngs)

    def __call__(self, f):
        return 3.0 * self.linear(f)


def _case(parameterization, latent):
    """The same model in both backends: ``(TopDownDiffusion, DiffusionPrograms)`` with T explicit levels."""
    rngs = nnx.Rngs(0)
    context_dim = None if latent is None else M
    schedule = Polynomial((D,), context_dim=context_dim, hidden_width=8, num_hidden=1, gamma_min=-5.0,
                          gamma_max=4.0, rngs=rngs)
    if context_dim is None:  # a non-linear, per-dimension schedule even without a context
        schedule.a[...] = jnp.array([1.0, -2.0, 0.5])
    denoiser = MLPDenoiser(D, context_dim=context_dim or 0, rngs=rngs)
    latents = {}
    if latent == "gaussian":
        dq, dp, nq, np_ = gaussian_latent(GaussianEncoder(D, M, rngs=rngs), M)
        latents = dict(distrax=dict(latent_posterior=dq, latent_prior=dp),
                       numpyro=dict(latent_posterior=nq, latent_prior=np_))
    elif latent == "khot":
        encoder = KHotEncoder(rngs=rngs)
        latents = dict(distrax=dict(latent_posterior=lambda f: DistraxKHot(encoder(f), 2),
                                    latent_prior=DistraxUniformKHot(M, 2)),
                       numpyro=dict(latent_posterior=lambda f: KHot(encoder(f), 2), latent_prior=UniformKHot(M, 2)))
    hvae = TopDownDiffusion(schedule, denoiser, vocab_size=V, parameterization=parameterization,
                            **latents.get("distrax", {}))
    programs = DiffusionPrograms(schedule, denoiser, vocab_size=V, parameterization=parameterization, num_steps=T,
                                 **latents.get("numpyro", {}))
    return hvae, programs


def _data(seed=1):
    return jax.random.randint(jax.random.key(seed), (B, D), 0, V)


@pytest.mark.parametrize("parameterization, latent", [("eps", "khot"), ("v", "gaussian"), ("x", None)])
def test_explicit_chain_reproduces_elbo_terms_term_by_term(parameterization, latent):
    """TraceMeanField_ELBO(sum_sites=False) on the T-level chain, with the latents elbo_terms drew substituted,
    gives the batch sums of elbo_terms(..., num_steps=T, all_levels=True), and each level site is the Distrax
    per-step KL of that level."""
    hvae, programs = _case(parameterization, latent)
    x, key = _data(), jax.random.key(3)
    terms = hvae.elbo_terms(x, key, num_steps=T, all_levels=True)
    draws = elbo_terms_draws(hvae, x, key, num_steps=T)
    guide = handlers.substitute(programs.guide, data=draws)
    losses = TraceMeanField_ELBO(sum_sites=False).loss(jax.random.key(11), {}, programs.model, guide, x)

    assert set(losses) == set(programs.sites)
    named = programs.named_terms(losses)
    expected_names = {"reconstruction", "prior", "diffusion", "nelbo"} | ({"latent"} if latent else set())
    assert set(named) == expected_names
    assert float(terms["reconstruction"].sum()) > 0.1  # the decoder term is not trivially zero here
    for name in expected_names:
        np.testing.assert_allclose(named[name], terms[name].sum(), rtol=1e-5, atol=1e-5, err_msg=name)

    f = core.encode_integers(x, V)
    context = draws.get("c")
    for i, site in zip(range(T, 0, -1), programs.level_sites, strict=True):
        parent = "z_1" if i == T else f"z_{i}/{T}"
        t, s = jnp.full((B,), i / T), jnp.full((B,), (i - 1) / T)
        gamma_t, gamma_s = (evaluate_schedule(hvae.gamma_fn, u, context, (D,)) for u in (t, s))
        z_t = draws[parent]
        prediction = hvae.denoiser(z_t, t, jnp.broadcast_to(gamma_t, z_t.shape), context)
        q = mdx.TopDownPosterior(z_t, f, gamma_s, gamma_t)
        p = mdx.ReverseTransition.from_prediction(z_t, prediction, gamma_s, gamma_t,
                                                  parameterization=parameterization)
        np.testing.assert_allclose(losses[site], q.kl_divergence(p).sum(), rtol=1e-5, err_msg=site)


@pytest.mark.parametrize("num_steps", [None, 3])
@pytest.mark.parametrize("latent", [None, "gaussian"])
def test_sites_run_top_down_with_the_documented_distributions(num_steps, latent):
    _, programs = _case("eps", latent)
    programs = DiffusionPrograms(programs.gamma_fn, programs.denoiser, vocab_size=V, num_steps=num_steps,
                                 latent_posterior=programs.latent_posterior, latent_prior=programs.latent_prior)
    x = _data()
    guide_trace = handlers.trace(handlers.seed(programs.guide, jax.random.key(0))).get_trace(x)
    model_trace = handlers.trace(handlers.replay(handlers.seed(programs.model, jax.random.key(1)),
                                                 guide_trace)).get_trace(x)
    guide_sites = [n for n, s in guide_trace.items() if s["type"] == "sample"]
    model_sites = [n for n, s in model_trace.items() if s["type"] == "sample"]
    levels = ["z_0"] if num_steps is None else ["z_2/3", "z_1/3", "z_0"]
    assert model_sites == (["c"] if latent else []) + ["z_1", *levels, "x"] == list(programs.sites)
    assert guide_sites == model_sites[:-1]
    assert model_trace["x"]["is_observed"]

    assert isinstance(guide_trace["z_1"]["fn"], mnp.ForwardMarginal)
    assert isinstance(model_trace["z_1"]["fn"].base_dist, dist.Normal)
    assert isinstance(model_trace["x"]["fn"], mnp.DiscretizedGaussianDecoder)
    if num_steps is None:
        assert isinstance(guide_trace["z_0"]["fn"], mnp.ForwardMarginal)
        assert isinstance(model_trace["z_0"]["fn"], ReverseChain)
    else:
        assert all(isinstance(guide_trace[n]["fn"], mnp.TopDownPosterior) for n in levels)
        assert all(isinstance(model_trace[n]["fn"], mnp.ReverseTransition) for n in levels)
    assert np.array_equal(model_trace["x"]["fn"].z_0, guide_trace["z_0"]["value"])


def test_the_guide_chain_has_the_forward_marginals():
    """Ancestral sampling of the guide's top-down posteriors leaves z_{1/2} and z_0 distributed as q(z_t | x)."""
    n, x_value = 4000, jnp.array([[3, 12]])
    schedule = FixedLinear(gamma_min=-4.0, gamma_max=3.0)
    programs = DiffusionPrograms(schedule, lambda z, t, g, c: jnp.zeros_like(z), vocab_size=V, num_steps=2)

    @jax.jit
    def draw(key):
        trace = handlers.trace(handlers.seed(programs.guide, key)).get_trace(jnp.repeat(x_value, n, 0))
        return {name: site["value"] for name, site in trace.items() if site["type"] == "sample"}

    draws = draw(jax.random.key(5))
    f = core.encode_integers(x_value, V)
    z_score = 4.89  # two-sided, failure probability 1e-6 per comparison
    for site, t in (("z_1/2", 0.5), ("z_0", 0.0)):
        alpha, sigma = core.alpha_sigma(schedule(jnp.array([t])))
        z = np.asarray(draws[site])
        mean_error = np.abs(z.mean(0) - alpha * f[0])
        assert np.all(mean_error <= z_score * sigma / np.sqrt(n)), (site, mean_error)
        var_error = np.abs(z.var(0, ddof=1) - sigma**2)
        assert np.all(var_error <= z_score * sigma**2 * np.sqrt(2.0 / (n - 1))), (site, var_error)


def test_collapsed_levels_refuse_trace_mean_field_with_a_pointer_to_the_diffusion_elbo():
    programs = DiffusionPrograms(FixedLinear(), lambda z, t, g, c: jnp.zeros_like(z), vocab_size=V)
    with pytest.raises(NotImplementedError, match="DiffusionELBO"):
        TraceMeanField_ELBO().loss(jax.random.key(0), {}, programs.model, programs.guide, _data())
    chain = ReverseChain(jnp.zeros((B, D)), FixedLinear(), lambda z, t, g, c: z)
    with pytest.raises(NotImplementedError, match="ancestral_sample"):
        chain.sample(jax.random.key(0))


def test_network_parameters_are_registered_once_per_module_and_shared_by_model_and_guide():
    _, programs = _case("eps", "gaussian")
    programs = DiffusionPrograms(programs.gamma_fn, programs.denoiser, vocab_size=V, num_steps=T,
                                 latent_posterior=GaussianEncoderDist(), latent_prior=programs.latent_prior)
    x = _data()
    guide_trace = handlers.trace(handlers.seed(programs.guide, jax.random.key(0))).get_trace(x)
    model_trace = handlers.trace(handlers.seed(programs.model, jax.random.key(0))).get_trace(x)
    guide_params = {n for n, s in guide_trace.items() if s["type"] == "param"}
    model_params = {n for n, s in model_trace.items() if s["type"] == "param"}
    assert guide_params == {"gamma_fn$params", "latent_posterior$params"}
    assert model_params == {"gamma_fn$params", "denoiser$params"}
    # a fixed callable registers nothing
    fixed = DiffusionPrograms(FixedLinear(), lambda z, t, g, c: jnp.zeros_like(z), vocab_size=V, num_steps=2)
    fixed_trace = handlers.trace(handlers.seed(fixed.model, jax.random.key(0))).get_trace(x)
    assert not [n for n, s in fixed_trace.items() if s["type"] == "param"]


class GaussianEncoderDist(nnx.Module):
    """An encoder module returning the NumPyro distribution itself (its parameters are registered)."""

    def __init__(self):
        self.encoder = GaussianEncoder(D, M, rngs=nnx.Rngs(2))

    def __call__(self, f):
        return dist.Normal(*self.encoder(f)).to_event(1)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(parameterization="score"), "parameterization"),
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=2.0), "num_steps"),
        (dict(vocab_size=1), "vocab_size"),
        (dict(latent_prior=UniformKHot(M, 2)), "latent_posterior"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(kwargs, argument):
    options = dict(vocab_size=V) | kwargs
    with pytest.raises(ValueError, match=f"`{argument}`"):
        DiffusionPrograms(FixedLinear(), lambda z, t, g, c: z, **options)


def test_bad_data_and_chain_arguments_raise_value_errors_naming_them():
    programs = DiffusionPrograms(FixedLinear(), lambda z, t, g, c: z, vocab_size=V, num_steps=2)
    with pytest.raises(ValueError, match="`x`"):
        handlers.seed(programs.guide, jax.random.key(0))(jnp.full((2, D), V))
    with pytest.raises(ValueError, match="`x`"):
        handlers.seed(programs.model, jax.random.key(0))(jnp.asarray(3))
    with pytest.raises(ValueError, match="`parameterization`"):
        ReverseChain(jnp.zeros((2, D)), FixedLinear(), lambda z, t, g, c: z, parameterization="score")
    with pytest.raises(TypeError, match="`denoiser`"):
        ReverseChain(jnp.zeros((2, D)), FixedLinear(), None)
