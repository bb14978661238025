"""Registered KL divergences in both backends: against Monte Carlo, non-negative, identical across backends,
structural at s = t (value 0, derivative -1/2 gamma'(t) SNR_t (x - x_hat)^2), precise at gamma = -30 through
``ReverseTransition.from_prediction``, and picked up by NumPyro's ``TraceMeanField_ELBO``.

Distrax KLs are reached through ``q.kl_divergence(p)`` (TFP's registry), NumPyro KLs through
``numpyro.distributions.kl.kl_divergence``.
"""

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as nd
import optax
import pytest
from numpyro.distributions.kl import kl_divergence as numpyro_kl
from numpyro.infer import SVI, TraceMeanField_ELBO
from scipy import special
from tensorflow_probability.substrates import jax as tfp

import mulan_ppl.distrax as mdx
import mulan_ppl.numpyro as mnp

tfd = tfp.distributions
BACKENDS = {"distrax": mdx, "numpyro": mnp}
N_MC = 100_000
Z_MC = 4.0  # Monte Carlo estimate within 4 standard errors of the analytic KL
F32_EPS = np.finfo(np.float32).eps


def kl(q, p):
    if isinstance(q, distrax.Distribution):
        return q.kl_divergence(p)
    return numpyro_kl(q, p)


def sample(d, key, sample_shape=()):
    if isinstance(d, (distrax.Distribution, tfd.Distribution)):
        return d.sample(seed=key, sample_shape=sample_shape)
    return d.sample(key, sample_shape)


def ref_alpha_sigma(g):
    g = np.asarray(g, np.float64)
    return np.sqrt(special.expit(-g)), np.sqrt(special.expit(g))


def _step(seed=0, shape=(2, 3)):
    """A diffusion step with per-dimension noise levels, data, noise and an imperfect denoiser, in float64."""
    rng = np.random.default_rng(seed)
    gs = rng.uniform(-5.0, 2.0, size=shape)
    gt = gs + rng.uniform(0.5, 2.5, size=shape)
    x = rng.uniform(-1.0, 1.0, size=shape)
    eps = rng.normal(size=shape)
    a_t, s_t = ref_alpha_sigma(gt)
    z_t = a_t * x + s_t * eps
    x_hat = 0.75 * x + 0.1 * rng.normal(size=shape)
    eps_hat = (z_t - a_t * x_hat) / s_t
    preds = {"x": x_hat, "eps": eps_hat, "v": a_t * eps_hat - s_t * x_hat, "score": -eps_hat / s_t}
    return dict(gs=gs, gt=gt, x=x, eps=eps, z_t=z_t, preds=preds)


def _pairs(mod, normal, independent_normal):
    """(name, q, p) for every registered pair, built in ``mod``'s backend (float64 under the x64 fixture)."""
    s = {k: (jnp.asarray(v) if not isinstance(v, dict) else {p: jnp.asarray(a) for p, a in v.items()})
         for k, v in _step().items()}
    gs, gt, x, eps, z_t, preds = s["gs"], s["gt"], s["x"], s["eps"], s["z_t"], s["preds"]
    post = mod.TopDownPosterior(z_t, x, gs, gt)
    post_noise = mod.TopDownPosterior.from_noise(x, eps, gs, gt)
    pairs = [("posterior_vs_reverse_x_hat", post, mod.ReverseTransition(z_t, preds["x"], gs, gt))]
    for p in ("x", "eps", "v", "score"):
        rev = mod.ReverseTransition.from_prediction(z_t, preds[p], gs, gt, parameterization=p)
        pairs.append((f"posterior_vs_reverse_{p}", post, rev))
        # The reverse transition must be built on the posterior's own z_t (the one from_noise formed).
        rev_noise = mod.ReverseTransition.from_prediction(_z_t(post_noise), preds[p], gs, gt, parameterization=p)
        pairs.append((f"posterior_from_noise_vs_reverse_{p}", post_noise, rev_noise))
    marginal = mod.ForwardMarginal(x, gt)
    pairs += [
        ("marginal_vs_standard_normal", marginal, normal(0.0, 1.0)),
        ("marginal_vs_independent_normal", marginal, independent_normal(jnp.zeros((2, 3)), jnp.ones((2, 3)))),
        ("marginal_vs_independent_normal_scaled", marginal,
         independent_normal(jnp.full((2, 3), 0.2), jnp.full((2, 3), 1.5))),
        ("marginal_vs_marginal", marginal, mod.ForwardMarginal(0.5 * x, gs)),
        ("transition_vs_posterior", mod.ForwardTransition(z_t, gs, gt), post),
        ("posterior_vs_marginal", post, mod.ForwardMarginal(x, gs)),
        ("reverse_vs_posterior", mod.ReverseTransition(z_t, preds["x"], gs, gt), post),
        # A reverse transition with its own variance (the forward transition's) gets the general Gaussian KL.
        ("posterior_vs_reverse_own_variance", post,
         mod.ReverseTransition(z_t, preds["x"], gs, gt, log_variance=mod.ForwardTransition(z_t, gs, gt).log_variance)),
    ]
    return pairs


def _z_t(d):
    """The z_t a posterior was built at (NumPyro exposes it as ``d.z_t``; the Distrax class only privately)."""
    return d._params.args["z_t"]


def _distrax_pairs(lib=distrax):
    return _pairs(mdx, lambda m, s: lib.Normal(m, s), lambda m, s: lib.Independent(lib.Normal(m, s), 1))


def _numpyro_pairs():
    return _pairs(mnp, lambda m, s: nd.Normal(m, s), lambda m, s: nd.Normal(m, s).to_event(1))


@pytest.mark.parametrize("backend", ["distrax", "tfp", "numpyro"])
def test_kl_matches_monte_carlo(x64, backend):
    """|KL - mean(log q - log p)| <= 4 standard errors of the mean, 1e5 draws from q; KL >= 0."""
    pairs = {"distrax": _distrax_pairs, "tfp": lambda: _distrax_pairs(tfd), "numpyro": _numpyro_pairs}[backend]()
    if backend == "tfp":
        pairs = [pr for pr in pairs if "normal" in pr[0]]  # the TFP twins of the backend Normal
    for i, (name, q, p) in enumerate(pairs):
        analytic = np.asarray(kl(q, p))
        assert analytic.shape == tuple(q.batch_shape), name
        assert np.all(analytic >= 0), name
        draws = sample(q, jax.random.key(i), (N_MC,))
        log_p = np.asarray(p.log_prob(draws))
        if log_p.ndim == draws.ndim:  # an unreduced scalar Normal prior: sum its per-dimension log-densities
            log_p = log_p.sum(-1)
        log_ratio = np.asarray(q.log_prob(draws)) - log_p
        mc, se = log_ratio.mean(0), log_ratio.std(0, ddof=1) / np.sqrt(N_MC)
        assert np.all(np.abs(mc - analytic) <= Z_MC * se + 1e-12), (name, mc, analytic, se)


def test_backends_give_identical_kls(x64):
    for (name, qx, px), (_, qn, pn) in zip(_distrax_pairs(), _numpyro_pairs(), strict=True):
        np.testing.assert_array_equal(kl(qx, px), kl(qn, pn), err_msg=name)


def test_posterior_reverse_kl_routes_agree(x64):
    """Every parameterization, with and without the drawn noise, gives the generic Gaussian KL."""
    for name, q, p in _distrax_pairs():
        if name.startswith("posterior") and "reverse" in name and "own_variance" not in name:
            # Equal variances: KL = 1/2 sum (mu_q - mu_p)^2 / sigma^2.
            generic = 0.5 * np.sum((np.asarray(q.mean()) - np.asarray(p.mean())) ** 2 / np.asarray(p.variance()), -1)
            np.testing.assert_allclose(kl(q, p), generic, rtol=1e-8, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("field", ["z_t", "gamma_s", "gamma_t"])
def test_posterior_reverse_must_share_the_step(backend, field):
    mod = BACKENDS[backend]
    s = _step()
    args = {"z_t": s["z_t"], "gamma_s": s["gs"], "gamma_t": s["gt"]}
    q = mod.TopDownPosterior(args["z_t"], s["x"], args["gamma_s"], args["gamma_t"])
    other = dict(args)
    other[field] = args[field] + 0.25
    p = mod.ReverseTransition(other["z_t"], s["preds"]["x"], other["gamma_s"], other["gamma_t"])
    with pytest.raises(ValueError, match=f"`{field}`"):
        kl(q, p)


@pytest.mark.parametrize("backend", BACKENDS)
def test_kl_to_prior_with_wrong_reinterpreted_ndims_raises(backend):
    q = BACKENDS[backend].ForwardMarginal(jnp.zeros((2, 3, 4)), 0.0)  # event (3, 4)
    if backend == "distrax":
        p = distrax.Independent(distrax.Normal(jnp.zeros((2, 3, 4)), 1.0), 1)
    else:
        p = nd.Normal(jnp.zeros((2, 3, 4)), 1.0).to_event(1)
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
        kl(q, p)


# ---------------------------------------------------------------------------------------------------------------
# s = t and the continuous-time limit


@pytest.mark.parametrize("backend", BACKENDS)
def test_structural_kl_zero_and_finite_at_equal_noise(backend):
    mod = BACKENDS[backend]
    g = jnp.asarray([[-30.0, -13.3, 0.0], [5.0, 13.3, 30.0]], jnp.float32)
    x = jnp.asarray([[0.5, -0.2, 0.9], [-1.0, 0.1, 0.3]], jnp.float32)
    eps = jnp.asarray([[1.0, -0.5, 0.2], [0.3, -1.2, 2.0]], jnp.float32)
    q = mod.TopDownPosterior.from_noise(x, eps, g, g)
    for p in ("x", "eps", "v", "score"):
        rev = mod.ReverseTransition.from_prediction(_z_t(q), 0.5 * x, g, g, parameterization=p)
        value = kl(q, rev)
        np.testing.assert_array_equal(value, 0.0, err_msg=p)

    def total_kl(gs):
        q = mod.TopDownPosterior.from_noise(x, eps, gs, g)
        return jnp.sum(kl(q, mod.ReverseTransition.from_prediction(_z_t(q), 0.5 * eps, gs, g,
                                                                   parameterization="eps")))

    grads = jax.grad(total_kl)(g)
    assert np.all(np.isfinite(grads))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("parameterization", ["x", "eps", "v", "score"])
def test_kl_derivative_at_s_equals_t(x64, backend, parameterization):
    """d/ds KL(q(z_s|z_t,x) || p(z_s|z_t))|_{s=t} = -1/2 gamma'(t) SNR_t (x - x_hat)^2, summed over the event."""
    mod = BACKENDS[backend]
    s = _step(seed=3)
    g0 = jnp.asarray(s["gs"] - 3.0)
    g1 = jnp.asarray(s["gt"] + 2.0)
    t = 0.4
    gamma_t = g0 + (g1 - g0) * t
    a_t, s_t = ref_alpha_sigma(gamma_t)
    x, eps = s["x"], s["eps"]
    z_t = a_t * x + s_t * eps
    x_hat = 0.75 * x + 0.05
    eps_hat = (z_t - a_t * x_hat) / s_t
    pred = {"x": x_hat, "eps": eps_hat, "v": a_t * eps_hat - s_t * x_hat, "score": -eps_hat / s_t}[parameterization]

    def kl_at(u):
        gs = g0 + (g1 - g0) * u
        q = mod.TopDownPosterior.from_noise(jnp.asarray(x), jnp.asarray(eps), gs, gamma_t)
        p = mod.ReverseTransition.from_prediction(_z_t(q), jnp.asarray(pred), gs, gamma_t,
                                                  parameterization=parameterization)
        return kl(q, p)

    value, deriv = jax.jvp(kl_at, (jnp.asarray(t),), (jnp.asarray(1.0),))
    np.testing.assert_allclose(value, 0.0, atol=1e-15)
    expected = (-0.5 * np.asarray(g1 - g0) * np.exp(-np.asarray(gamma_t)) * (x - x_hat) ** 2).sum(-1)
    np.testing.assert_allclose(deriv, expected, rtol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_from_prediction_keeps_precision_at_gamma_minus_30(backend):
    """Float32 at gamma_s = -30, gamma_t = -29.5: an eps (or v, score) prediction kept native gives the KL to float32
    rounding of the float64 value 1/2 expm1(gamma_t - gamma_s) sum (eps - eps_hat)^2; the same prediction routed
    through x_hat = (z_t - sigma_t eps_hat) / alpha_t cannot resolve x - x_hat and is wrong by O(1)."""
    mod = BACKENDS[backend]
    rng = np.random.default_rng(4)
    f32 = lambda a: np.asarray(a, np.float32)  # noqa: E731
    x, eps = f32(rng.uniform(-1, 1, (2, 16))), f32(rng.normal(size=(2, 16)))
    eps_hat = f32(eps + 0.1 * rng.normal(size=(2, 16)))
    gs, gt = np.float32(-30.0), np.float32(-29.5)
    reference = (0.5 * np.expm1(np.float64(gt) - np.float64(gs))
                 * (eps.astype(np.float64) - eps_hat.astype(np.float64)) ** 2).sum(-1)
    q = mod.TopDownPosterior.from_noise(x, eps, gs, gt)
    z_t = _z_t(q)
    alpha, sigma = np.sqrt(special.expit(-np.float64(gt))), np.sqrt(special.expit(np.float64(gt)))
    native = {"eps": eps_hat, "v": f32(alpha * eps_hat - sigma * (z_t - sigma * eps_hat) / alpha),
              "score": f32(-eps_hat / sigma)}
    for p, pred in native.items():
        value = kl(q, mod.ReverseTransition.from_prediction(z_t, pred, gs, gt, parameterization=p))
        assert value.dtype == jnp.float32
        # eps_hat from v or score is itself rounded to float32 (relative 2^-24 of |eps_hat|) before differencing.
        bound = 16 * F32_EPS * reference + 4 * F32_EPS * np.abs(eps_hat).max() * np.abs(eps - eps_hat).sum(-1)
        assert np.all(np.abs(np.asarray(value, np.float64) - reference) <= bound), (p, value, reference)
    x_hat = mod.ReverseTransition.from_prediction(z_t, eps_hat, gs, gt, parameterization="eps").x_hat
    via_x = kl(q, mod.ReverseTransition(z_t, x_hat, gs, gt))
    assert np.all(np.abs(np.asarray(via_x) / reference - 1) > 0.05), (via_x, reference)


# ---------------------------------------------------------------------------------------------------------------
# NumPyro inference: TraceMeanField_ELBO uses the registered KL


def _model():
    numpyro.sample("z", nd.Normal(jnp.zeros((2, 3)), jnp.ones((2, 3))).to_event(1))


def _guide():
    x = numpyro.param("x", jnp.asarray([[0.5, -0.25, 1.0], [0.0, 0.75, -1.0]]))
    gamma = numpyro.param("gamma", jnp.asarray([[-1.0], [0.5]]))
    numpyro.sample("z", mnp.ForwardMarginal(x, gamma))


def _analytic_prior_kl(x, gamma):
    a, s = ref_alpha_sigma(gamma)
    return float((0.5 * (s**2 + (a * x) ** 2 - 1.0 - np.log(s**2))).sum())


def test_trace_mean_field_elbo_uses_registered_kl():
    elbo = TraceMeanField_ELBO(sum_sites=False)
    params = {"x": jnp.asarray([[0.5, -0.25, 1.0], [0.0, 0.75, -1.0]]), "gamma": jnp.asarray([[-1.0], [0.5]])}
    expected = _analytic_prior_kl(np.asarray(params["x"]), np.asarray(params["gamma"]))
    for seed in (0, 1):  # a Monte Carlo estimate would change with the key; the analytic KL does not
        per_site = elbo.loss(jax.random.key(seed), params, _model, _guide)
        np.testing.assert_allclose(float(per_site["z"]), expected, rtol=16 * F32_EPS)
    svi = SVI(_model, _guide, optax.adam(0.05), TraceMeanField_ELBO())
    state = svi.init(jax.random.key(0))
    first = float(svi.evaluate(state))
    np.testing.assert_allclose(first, expected, rtol=16 * F32_EPS)
    update = jax.jit(svi.update)
    for _ in range(20):
        state, loss = update(state)
    learned = svi.get_params(state)
    assert float(svi.evaluate(state)) < first
    np.testing.assert_allclose(float(svi.evaluate(state)),
                               _analytic_prior_kl(np.asarray(learned["x"]), np.asarray(learned["gamma"])),
                               rtol=16 * F32_EPS)


def test_trace_mean_field_elbo_with_expanded_standard_normal_prior():
    """The common prior idiom Normal(0, 1).expand(shape).to_event(1) must also use the analytic KL, not fall back
    to a Monte Carlo estimate."""

    def model():
        numpyro.sample("z", nd.Normal(0.0, 1.0).expand([2, 3]).to_event(1))

    params = {"x": jnp.asarray([[0.5, -0.25, 1.0], [0.0, 0.75, -1.0]]), "gamma": jnp.asarray([[-1.0], [0.5]])}
    expected = _analytic_prior_kl(np.asarray(params["x"]), np.asarray(params["gamma"]))
    per_site = TraceMeanField_ELBO(sum_sites=False).loss(jax.random.key(0), params, model, _guide)
    np.testing.assert_allclose(float(per_site["z"]), expected, rtol=16 * F32_EPS)
