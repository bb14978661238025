"""TopDownDiffusion and diffusion_term: closed forms, gradients, transforms and argument errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import special, stats

from mulan_ppl import core
from mulan_ppl.hvae import TopDownDiffusion, diffusion_term, sample_times, variance_minimizing
from mulan_ppl.schedules import FixedLinear, LearnedScalar, Polynomial


class LinearDenoiser(nnx.Module):
    """eps_hat = w * z + b per dimension; a tiny learnable denoiser."""

    def __init__(self, size: int):
        self.w = nnx.Param(jnp.full((size,), 0.5))
        self.b = nnx.Param(jnp.zeros((size,)))

    def __call__(self, z, t, gamma, context):
        return self.w[...] * z + self.b[...]


class Encoder(nnx.Module):
    """q(c|x) = N(W f, 0.5²) with a learnable W."""

    def __init__(self, size: int, latent: int, *, rngs: nnx.Rngs):
        self.w = nnx.Param(0.1 * jax.random.normal(rngs.params(), (size, latent)))

    def __call__(self, f):
        import distrax

        return distrax.MultivariateNormalDiag(f @ self.w[...], 0.5 * jnp.ones(self.w.shape[1]))


def test_continuous_term_equals_mulan_eq11_with_per_dimension_schedule(x64):
    x = jax.random.normal(jax.random.key(1), (5, 3))
    schedule = Polynomial((3,), context_dim=None, rngs=nnx.Rngs(0))
    schedule.a[...] = jnp.array([1.0, -2.0, 0.5])
    schedule.b[...] = jnp.array([0.3, 1.0, -1.0])
    denoiser = lambda z, t, g, c: 0.4 * z - 0.1  # noqa: E731
    key = jax.random.key(7)
    loss = diffusion_term(x, key, schedule, denoiser)

    time_key, noise_key = jax.random.split(key)
    t = sample_times(time_key, 5)
    eps = jax.random.normal(noise_key, x.shape, x.dtype)
    gamma, tangent = jax.jvp(lambda s: schedule(s), (t,), (jnp.ones_like(t),))
    alpha, sigma = core.alpha_sigma(gamma)
    z = alpha * x + sigma * eps
    expected = 0.5 * np.sum(np.asarray(tangent) * np.square(np.asarray(eps - denoiser(z, t, gamma, None))), -1)
    np.testing.assert_allclose(loss, expected, rtol=1e-10)


def test_discrete_term_is_T_times_the_per_step_kl(x64):
    x = jax.random.normal(jax.random.key(1), (4, 2))
    schedule, T = FixedLinear(gamma_min=-6.0, gamma_max=4.0), 8
    denoiser = lambda z, t, g, c: 0.3 * z  # noqa: E731
    key = jax.random.key(3)
    loss = diffusion_term(x, key, schedule, denoiser, num_steps=T)
    time_key, noise_key = jax.random.split(key)
    t = sample_times(time_key, 4, num_steps=T)
    np.testing.assert_allclose(np.asarray(t) * T, np.round(np.asarray(t) * T), atol=1e-9)
    eps = jax.random.normal(noise_key, x.shape, x.dtype)
    g_t, g_s = -6.0 + 10.0 * t[:, None], -6.0 + 10.0 * (t[:, None] - 1 / T)
    alpha, sigma = core.alpha_sigma(g_t)
    z = alpha * x + sigma * eps
    eps_hat = 0.3 * z
    expected = T * 0.5 * np.sum(np.expm1(g_t - g_s) * np.square(eps - eps_hat), -1)
    np.testing.assert_allclose(loss, expected, rtol=1e-10)


def test_sample_times_are_stratified_and_on_the_grid():
    t = np.asarray(sample_times(jax.random.key(0), 8))
    np.testing.assert_allclose(np.sort(np.mod(t - t.min(), 1.0)), np.arange(8) / 8, atol=1e-6)
    td = np.asarray(sample_times(jax.random.key(0), 1000, num_steps=4, antithetic=False))
    assert set(np.round(td * 4).astype(int)) == {1, 2, 3, 4}


def _vdm_model(vocab_size=8, size=3, **kwargs):
    return TopDownDiffusion(FixedLinear(gamma_min=-6.0, gamma_max=4.0), LinearDenoiser(size), vocab_size=vocab_size, **kwargs)


def test_terms_are_per_example_and_bpd_is_nelbo_over_d_ln2():
    model = _vdm_model()
    x = jnp.array([[0, 3, 7], [1, 2, 5]])
    terms = model.elbo_terms(x, jax.random.key(0))
    assert set(terms) == {"reconstruction", "prior", "diffusion", "nelbo", "bpd"}
    for value in terms.values():
        assert value.shape == (2,)
    total = terms["reconstruction"] + terms["prior"] + terms["diffusion"]
    np.testing.assert_allclose(terms["nelbo"], total, rtol=1e-6)
    np.testing.assert_allclose(terms["bpd"], terms["nelbo"] / (3 * math.log(2)), rtol=1e-6)


def test_prior_term_matches_vdm_closed_form(x64):
    model = _vdm_model()
    x = jnp.array([[0, 3, 7], [1, 2, 5]])
    terms = model.elbo_terms(x, jax.random.key(0))
    f = (2 * (np.asarray(x) + 0.5) / 8 - 1)
    sigma2 = special.expit(4.0)
    alpha2 = 1 - sigma2
    expected = 0.5 * np.sum(sigma2 + alpha2 * f**2 - 1 - np.log(sigma2), -1)
    np.testing.assert_allclose(terms["prior"], expected, rtol=1e-10)


def test_reconstruction_term_matches_quadrature_in_expectation(x64):
    # One dimension, V = 4, gamma_0 = -3 (noisy enough that the term is far from 0).
    vocab, gamma_0, level = 4, -3.0, 1
    model = TopDownDiffusion(FixedLinear(gamma_min=gamma_0, gamma_max=4.0), LinearDenoiser(1), vocab_size=vocab)
    n = 20000
    terms = model.elbo_terms(jnp.full((n, 1), level), jax.random.key(2))
    recon = np.asarray(terms["reconstruction"])
    alpha, sigma = math.sqrt(special.expit(-gamma_0)), math.sqrt(special.expit(gamma_0))
    centres = 2 * (np.arange(vocab) + 0.5) / vocab - 1
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    z = alpha * centres[level] + sigma * nodes
    logits = -0.5 * ((z[:, None] - alpha * centres[None, :]) / sigma) ** 2
    nll = -(logits[:, level] - special.logsumexp(logits, axis=1))
    expected = np.sum(weights * nll) / np.sqrt(2 * np.pi)
    assert abs(recon.mean() - expected) < 4.89 * recon.std() / math.sqrt(n)


def test_gradients_reach_denoiser_schedule_and_encoder():
    size, latent = 3, 2
    schedule = Polynomial((size,), context_dim=latent, hidden_width=8, num_hidden=1, rngs=nnx.Rngs(1))
    import distrax

    model = TopDownDiffusion(schedule, LinearDenoiser(size), vocab_size=8,
                             latent_posterior=Encoder(size, latent, rngs=nnx.Rngs(2)),
                             latent_prior=distrax.MultivariateNormalDiag(jnp.zeros(latent), jnp.ones(latent)))
    x = jnp.array([[0, 3, 7], [1, 2, 5], [4, 4, 4]])

    @nnx.jit
    def loss_and_grad(model, key):
        return nnx.value_and_grad(lambda m: m.elbo_terms(x, key)["nelbo"].mean())(model)

    value, grads = loss_and_grad(model, jax.random.key(0))
    assert np.isfinite(value)
    assert "latent" in model.elbo_terms(x, jax.random.key(0))
    for part in ("denoiser", "gamma_fn", "latent_posterior"):
        leaves = jax.tree.leaves(nnx.state(getattr(grads, part) if hasattr(grads, part) else grads[part]))
        assert leaves and all(np.all(np.isfinite(g)) for g in leaves)
        assert any(np.any(np.asarray(g) != 0) for g in leaves), part


def test_vmap_over_examples_matches_batched_call():
    model = _vdm_model()
    x = jnp.array([[0, 3, 7], [1, 2, 5]])
    keys = jax.random.split(jax.random.key(0), 2)
    per_example = jax.vmap(lambda xi, k: model.elbo_terms(xi[None], k, num_steps=4)["nelbo"][0])(x, keys)
    direct = jnp.stack([model.elbo_terms(x[i:i + 1], keys[i], num_steps=4)["nelbo"][0] for i in range(2)])
    np.testing.assert_allclose(per_example, direct, rtol=1e-5)


def test_variance_minimizing_gradient_is_that_of_the_squared_loss():
    def loss_fn(theta, eta):
        return jnp.array([theta * eta, theta + eta**2])

    theta, eta = 1.5, -0.7
    g_theta, g_eta = jax.grad(lambda a, b: variance_minimizing(loss_fn, a, b).sum(), argnums=(0, 1))(theta, eta)
    assert np.isclose(g_theta, eta + 1.0)
    l1, l2 = theta * eta, theta + eta**2
    assert np.isclose(g_eta, 2 * l1 * theta + 2 * l2 * 2 * eta)
    np.testing.assert_allclose(variance_minimizing(loss_fn, theta, eta), loss_fn(theta, eta))


def test_variance_objective_changes_only_the_schedule_gradient():
    x = jnp.array([[0, 3, 7], [1, 2, 5]])
    grads = {}
    for objective in ("elbo", "variance"):
        model = TopDownDiffusion(LearnedScalar(hidden_width=8, gamma_min=-6.0, gamma_max=4.0, rngs=nnx.Rngs(0)),
                                 LinearDenoiser(3), vocab_size=8, schedule_objective=objective)
        grads[objective] = nnx.grad(lambda m: m.elbo_terms(x, jax.random.key(1))["diffusion"].sum())(model)
    same = jax.tree.leaves(nnx.state(grads["elbo"]["denoiser"] if isinstance(grads["elbo"], dict)
                                     else grads["elbo"].denoiser))
    other = jax.tree.leaves(nnx.state(grads["variance"]["denoiser"] if isinstance(grads["variance"], dict)
                                      else grads["variance"].denoiser))
    for a, b in zip(same, other):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    sched_a = jax.tree.leaves(nnx.state(grads["elbo"].gamma_fn))
    sched_b = jax.tree.leaves(nnx.state(grads["variance"].gamma_fn))
    assert any(not np.allclose(a, b) for a, b in zip(sched_a, sched_b))


def test_ancestral_samples_are_integer_images_in_range():
    model = _vdm_model()
    samples = model.sample(jax.random.key(0), 5, event_shape=(3,), num_steps=16)
    assert samples.shape == (5, 3) and samples.dtype == jnp.int32
    assert np.all((np.asarray(samples) >= 0) & (np.asarray(samples) < 8))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_steps=0), "num_steps"),
        (dict(num_steps=2.5), "num_steps"),
        (dict(parameterization="score"), "parameterization"),
        (dict(all_levels=True), "all_levels"),
        (dict(reverse_variance="forward"), "reverse_variance"),
        (dict(reverse_variance="bogus"), "reverse_variance"),
    ],
)
def test_diffusion_term_rejects_bad_options(kwargs, match):
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match=match):
        diffusion_term(x, jax.random.key(0), FixedLinear(), lambda z, t, g, c: z, **kwargs)


def test_forward_reverse_variance_works_in_discrete_time_and_exceeds_posterior_variance_kl():
    x = jax.random.normal(jax.random.key(1), (16, 3))
    den = lambda z, t, g, c: 0.3 * z  # noqa: E731
    post = diffusion_term(x, jax.random.key(0), FixedLinear(), den, num_steps=10)
    fwd = diffusion_term(x, jax.random.key(0), FixedLinear(), den, num_steps=10, reverse_variance="forward")
    assert np.all(np.isfinite(fwd)) and not np.allclose(post, fwd)


def test_denoiser_of_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match="denoiser"):
        diffusion_term(jnp.zeros((2, 3)), jax.random.key(0), FixedLinear(), lambda z, t, g, c: z[:, :2])


def test_missing_context_for_a_conditioned_schedule_is_rejected():
    schedule = Polynomial((3,), context_dim=2, hidden_width=4, num_hidden=1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="context"):
        diffusion_term(jnp.zeros((2, 3)), jax.random.key(0), schedule, lambda z, t, g, c: z)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vocab_size=1), "vocab_size"),
        (dict(parameterization="score"), "parameterization"),
        (dict(schedule_objective="bogus"), "schedule_objective"),
    ],
)
def test_top_down_diffusion_rejects_bad_options(kwargs, match):
    options = dict(vocab_size=8) | kwargs
    with pytest.raises(ValueError, match=match):
        TopDownDiffusion(FixedLinear(), LinearDenoiser(3), **options)


def test_integer_data_out_of_range_is_rejected():
    with pytest.raises(ValueError, match="`x`"):
        _vdm_model().elbo_terms(jnp.array([[0, 8, 1]]), jax.random.key(0))


def test_chi2_sanity_of_stratified_times():
    # Stratified times are uniform marginally: a KS test over many independent batches.
    keys = jax.random.split(jax.random.key(5), 2000)
    first = np.asarray(jax.vmap(lambda k: sample_times(k, 4)[1])(keys))
    assert stats.kstest(first, "uniform").pvalue > 1e-3


@pytest.mark.parametrize("latent, term", [("khot", "latent"), ("perturbed_topk", "latent_surrogate")])
def test_khot_latents_report_the_exact_kl_or_the_named_surrogate(latent, term):
    from mulan_ppl.core import categorical_surrogate_kl, kl_khot_uniform
    from mulan_ppl.models import MuLAN

    model = MuLAN((4, 4, 1), vocab_size=5, channels=8, num_blocks=1, attention=False, num_categories=6, k=2,
                  latent=latent, head="low_rank", head_width=8, head_rank=2, encoder_channels=8, encoder_blocks=1,
                  rngs=nnx.Rngs(0))
    encoder = model.latent_posterior.encoder
    encoder_out = jax.random.normal(jax.random.key(3), (2, 6))
    model.latent_posterior.encoder = lambda f: encoder_out  # noqa: E731 (fixed logits: a known latent term)
    terms = model.elbo_terms(jnp.zeros((2, 4, 4, 1), jnp.int32), jax.random.key(0))
    other = {"latent", "latent_surrogate"} - {term}
    assert term in terms and not other & set(terms)
    expected = kl_khot_uniform(encoder_out, 2) if latent == "khot" else categorical_surrogate_kl(encoder_out)
    np.testing.assert_allclose(terms[term], expected, rtol=1e-5)
    assert encoder is not None
