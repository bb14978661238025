"""The four diffusion Gaussians in both backends: ForwardMarginal, ForwardTransition, TopDownPosterior,
ReverseTransition (direct constructor and ``from_prediction`` in every parameterization).

One table of cases (numpyro style, with broadcast noise levels and an image-shaped event) drives the generic tests:
shapes, ``log_prob``/``entropy``/moments against ``scipy.stats`` with parameters computed here in float64 from alpha and
sigma (the posterior by Gaussian conditioning), sample moments with bounds derived from the sample size, identical
numbers in Distrax and NumPyro, jit/vmap, and the s = t and gamma in [-30, 30] edge cases.
"""

import dataclasses
from collections.abc import Callable

import distrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

import mulan_ppl.distrax as mdx
import mulan_ppl.numpyro as mnp

BACKENDS = {"distrax": mdx, "numpyro": mnp}
F32_EPS = np.finfo(np.float32).eps
DELTA = 1e-6  # failure budget of each statistical test (STYLE rule 21)
N_SAMPLES = 100_000


# ---------------------------------------------------------------------------------------------------------------
# Float64 references


def ref_alpha_sigma(g):
    g = np.asarray(g, np.float64)
    return np.sqrt(special.expit(-g)), np.sqrt(special.expit(g))


def ref_marginal(x, gamma):
    a, s = ref_alpha_sigma(gamma)
    return a * x, np.broadcast_to(s**2, np.shape(a * x))


def ref_transition(z_s, gs, gt):
    a_s, s_s = ref_alpha_sigma(gs)
    a_t, s_t = ref_alpha_sigma(gt)
    loc = a_t / a_s * z_s
    return loc, np.broadcast_to(s_t**2 - (a_t / a_s) ** 2 * s_s**2, loc.shape)


def ref_posterior(z_t, x, gs, gt):
    """Bayes' rule for q(z_t | z_s) q(z_s | x) by Gaussian conditioning."""
    a_s, s_s = ref_alpha_sigma(gs)
    a_t, s_t = ref_alpha_sigma(gt)
    a = a_t / a_s
    v = s_t**2 - a**2 * s_s**2
    var = 1.0 / (1.0 / s_s**2 + a**2 / v)
    loc = var * (a_s * x / s_s**2 + a * z_t / v)
    return loc, np.broadcast_to(var, loc.shape)


def ref_predictions(x_hat, z_t, gt):
    a_t, s_t = ref_alpha_sigma(gt)
    eps_hat = (z_t - a_t * x_hat) / s_t
    return {"x": x_hat, "eps": eps_hat, "v": a_t * eps_hat - s_t * x_hat, "score": -eps_hat / s_t}


# ---------------------------------------------------------------------------------------------------------------
# The case table


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    make: Callable  # (backend module, dict of arrays) -> distribution
    params: Callable  # numpy Generator -> dict of float64 arrays (the constructor's arrays)
    reference: Callable  # dict of float64 arrays -> (loc, variance)
    batch_shape: tuple
    event_shape: tuple

    def __repr__(self):
        return self.name


def _steps(rng, shape, lo=-6.0, hi=4.0):
    gs = rng.uniform(lo, hi, size=shape)
    return gs, gs + rng.uniform(0.3, 3.0, size=shape)


def _marginal_params(gamma_shape, shape=(2, 3)):
    def params(rng):
        return dict(x=rng.uniform(-1, 1, size=shape), gamma=rng.uniform(-8, 4, size=gamma_shape))
    return params


def _posterior_params(gamma_shape=(2, 3)):
    def params(rng):
        gs, gt = _steps(rng, gamma_shape)
        return dict(z_t=rng.normal(size=(2, 3)), x=rng.uniform(-1, 1, size=(2, 3)), gamma_s=gs, gamma_t=gt)
    return params


def _from_noise_params(rng):
    gs, gt = _steps(rng, (2, 3))
    return dict(x=rng.uniform(-1, 1, size=(2, 3)), eps=rng.normal(size=(2, 3)), gamma_s=gs, gamma_t=gt)


def _from_noise_reference(p):
    a_t, s_t = ref_alpha_sigma(p["gamma_t"])
    return ref_posterior(a_t * p["x"] + s_t * p["eps"], p["x"], p["gamma_s"], p["gamma_t"])


def _reverse_params(parameterization):
    def params(rng):
        p = _posterior_params()(rng)
        x_hat = 0.7 * p.pop("x") + 0.1
        p["prediction"] = ref_predictions(x_hat, p["z_t"], p["gamma_t"])[parameterization]
        p["x_hat"] = x_hat  # reference only
        return p
    return params


def _reverse_make(parameterization):
    def make(mod, a):
        return mod.ReverseTransition.from_prediction(a["z_t"], a["prediction"], a["gamma_s"], a["gamma_t"],
                                                     parameterization=parameterization)
    return make


def _reverse_reference(p):
    return ref_posterior(p["z_t"], p["x_hat"], p["gamma_s"], p["gamma_t"])


def _own_variance_params(rng):
    """A reverse transition with the forward transition's (larger, DDPM-style) variance."""
    p = _reverse_params("x")(rng)
    p["log_variance"] = np.log(ref_transition(p["z_t"], p["gamma_s"], p["gamma_t"])[1])
    return p


def _own_variance_reference(p):
    loc, _ = _reverse_reference(p)
    return loc, np.exp(p["log_variance"])


CASES = [
    Case("marginal_per_dimension", lambda m, a: m.ForwardMarginal(a["x"], a["gamma"]), _marginal_params((2, 3)),
         lambda p: ref_marginal(p["x"], p["gamma"]), (2,), (3,)),
    Case("marginal_scalar_gamma", lambda m, a: m.ForwardMarginal(a["x"], a["gamma"]), _marginal_params(()),
         lambda p: ref_marginal(p["x"], p["gamma"]), (2,), (3,)),
    Case("marginal_per_example_gamma", lambda m, a: m.ForwardMarginal(a["x"], a["gamma"]),
         _marginal_params((2, 1)), lambda p: ref_marginal(p["x"], p["gamma"]), (2,), (3,)),
    Case("marginal_image", lambda m, a: m.ForwardMarginal(a["x"], a["gamma"]),
         _marginal_params((2, 1, 1, 1), shape=(2, 2, 2, 1)), lambda p: ref_marginal(p["x"], p["gamma"]),
         (2,), (2, 2, 1)),
    Case("marginal_event_ndims_0", lambda m, a: m.ForwardMarginal(a["x"], a["gamma"], event_ndims=0),
         _marginal_params((1, 3)), lambda p: ref_marginal(p["x"], p["gamma"]), (2, 3), ()),
    Case("transition", lambda m, a: m.ForwardTransition(a["z_s"], a["gamma_s"], a["gamma_t"]),
         lambda rng: dict(zip(("gamma_s", "gamma_t"), _steps(rng, (2, 3))), z_s=rng.normal(size=(2, 3))),
         lambda p: ref_transition(p["z_s"], p["gamma_s"], p["gamma_t"]), (2,), (3,)),
    Case("posterior", lambda m, a: m.TopDownPosterior(a["z_t"], a["x"], a["gamma_s"], a["gamma_t"]),
         _posterior_params(), lambda p: ref_posterior(p["z_t"], p["x"], p["gamma_s"], p["gamma_t"]), (2,), (3,)),
    Case("posterior_from_noise",
         lambda m, a: m.TopDownPosterior.from_noise(a["x"], a["eps"], a["gamma_s"], a["gamma_t"]),
         _from_noise_params, _from_noise_reference, (2,), (3,)),
    Case("reverse_x_hat", lambda m, a: m.ReverseTransition(a["z_t"], a["prediction"], a["gamma_s"], a["gamma_t"]),
         _reverse_params("x"), _reverse_reference, (2,), (3,)),
    *[Case(f"reverse_from_{p}", _reverse_make(p), _reverse_params(p), _reverse_reference, (2,), (3,))
      for p in ("eps", "v", "x", "score")],
    Case("reverse_own_log_variance",
         lambda m, a: m.ReverseTransition(a["z_t"], a["prediction"], a["gamma_s"], a["gamma_t"],
                                          log_variance=a["log_variance"]),
         _own_variance_params, _own_variance_reference, (2,), (3,)),
]
CASE_IDS = [c.name for c in CASES]


def _arrays(case, dtype, seed=0):
    p = case.params(np.random.default_rng(seed))
    return p, {k: jnp.asarray(v, dtype) for k, v in p.items() if k != "x_hat"}


def mean(d):
    return d.mean() if callable(d.mean) else d.mean


def variance(d):
    return d.variance() if callable(d.variance) else d.variance


def sample(d, key, sample_shape=()):
    if "distrax" in type(d).__module__:
        return d.sample(seed=key, sample_shape=sample_shape)
    return d.sample(key, sample_shape)


def _probe_values(loc, var):
    """Points at -2 .. 2 standard deviations around the mean, shape (5, *loc.shape)."""
    offsets = np.linspace(-2.0, 2.0, 5).reshape((5,) + (1,) * loc.ndim)
    return loc + offsets * np.sqrt(var)


def _sum_event(values, event_shape):
    return values.sum(axis=tuple(range(values.ndim - len(event_shape), values.ndim))) if event_shape else values


# ---------------------------------------------------------------------------------------------------------------
# Generic tests over the table


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_scipy(x64, case, backend):
    p, a = _arrays(case, jnp.float64)
    d = case.make(BACKENDS[backend], a)
    loc, var = case.reference(p)
    values = _probe_values(loc, var)
    lp = d.log_prob(jnp.asarray(values))
    assert lp.dtype == jnp.float64
    expected = _sum_event(stats.norm.logpdf(values, loc, np.sqrt(var)), case.event_shape)
    np.testing.assert_allclose(lp, expected, rtol=1e-6)
    np.testing.assert_allclose(d.entropy(), _sum_event(stats.norm.entropy(loc, np.sqrt(var)), case.event_shape),
                               rtol=1e-6)
    np.testing.assert_allclose(mean(d), loc, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(variance(d), var, rtol=1e-6)


def _moment_bounds(n, k):
    """z for the mean and chi-square quantile factors for the variance, Bonferroni over k comparisons each."""
    per = DELTA / (2 * k)
    z = stats.norm.isf(per / 2)
    lo = stats.chi2.ppf(per / 2, n - 1) / (n - 1)
    hi = stats.chi2.isf(per / 2, n - 1) / (n - 1)
    return z, lo, hi


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_sample_moments(case):
    """|mean_hat - mu| <= z sigma / sqrt(n); (n-1) s^2 / sigma^2 within the chi-square(n-1) quantiles."""
    p, a = _arrays(case, jnp.float32)
    d = case.make(mdx, a)
    loc, var = case.reference(p)
    draws = np.asarray(sample(d, jax.random.key(7), (N_SAMPLES,)), np.float64)
    k = loc.size
    z, lo, hi = _moment_bounds(N_SAMPLES, k)
    # The float32 parameters differ from the float64 reference by rounding; allow those few ulps on top.
    assert np.all(np.abs(draws.mean(0) - loc) <= z * np.sqrt(var / N_SAMPLES) + 16 * F32_EPS * (np.abs(loc) + 1))
    ratio = draws.var(0, ddof=1) / var
    assert np.all((ratio >= lo * (1 - 16 * F32_EPS)) & (ratio <= hi * (1 + 16 * F32_EPS))), (ratio, lo, hi)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_shapes_and_backends_give_identical_numbers(case):
    _, a = _arrays(case, jnp.float32)
    dx, dn = case.make(mdx, a), case.make(mnp, a)
    full = case.batch_shape + case.event_shape
    for d in (dx, dn):
        assert tuple(d.batch_shape) == case.batch_shape
        assert tuple(d.event_shape) == case.event_shape
        assert mean(d).shape == variance(d).shape == full
        assert d.entropy().shape == case.batch_shape
    # Distrax's fallback batch_shape runs jax.eval_shape on sample(); ours is explicit (STYLE rule 4).
    assert type(dx).batch_shape is not distrax.Distribution.batch_shape
    values = sample(dx, jax.random.key(1), (3,))
    assert values.shape == (3,) + full and values.dtype == jnp.float32
    assert dx.log_prob(values).shape == (3,) + case.batch_shape
    np.testing.assert_array_equal(dx.log_prob(values), dn.log_prob(values))
    np.testing.assert_array_equal(dx.entropy(), dn.entropy())
    np.testing.assert_array_equal(mean(dx), mean(dn))
    np.testing.assert_array_equal(variance(dx), variance(dn))
    np.testing.assert_array_equal(sample(dx, jax.random.key(2), (3,)), sample(dn, jax.random.key(2), (3,)))


JIT_CASES = [c for c in CASES if c.name in ("marginal_per_dimension", "transition", "posterior_from_noise",
                                             "reverse_x_hat", "reverse_from_v")]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", JIT_CASES, ids=lambda c: c.name)
def test_jit_argument_parity(case, backend):
    _, a = _arrays(case, jnp.float32)
    d = case.make(BACKENDS[backend], a)
    values = sample(d, jax.random.key(3), (3,))

    @jax.jit
    def evaluate(dist, values, key):
        return dist.log_prob(values), dist.entropy(), mean(dist), sample(dist, key, (3,))

    lp, ent, m, draws = evaluate(d, values, jax.random.key(4))
    # XLA may fuse and reassociate: agreement to a few float32 ulps of the summed terms.
    np.testing.assert_allclose(lp, d.log_prob(values), rtol=64 * F32_EPS, atol=64 * F32_EPS)
    np.testing.assert_allclose(ent, d.entropy(), rtol=64 * F32_EPS, atol=64 * F32_EPS)
    np.testing.assert_allclose(m, mean(d), rtol=16 * F32_EPS, atol=16 * F32_EPS)
    np.testing.assert_allclose(draws, sample(d, jax.random.key(4), (3,)), rtol=16 * F32_EPS, atol=16 * F32_EPS)


@pytest.mark.parametrize("backend", BACKENDS)
def test_constructed_inside_jit_and_vmap(backend):
    mod = BACKENDS[backend]
    rng = np.random.default_rng(5)
    z_t, x = (jnp.asarray(rng.normal(size=(2, 3)), jnp.float32) for _ in range(2))
    gs, gt = (jnp.asarray(g, jnp.float32) for g in _steps(rng, (2, 3)))
    value = jnp.asarray(rng.normal(size=(2, 3)), jnp.float32)
    batched = mod.TopDownPosterior(z_t, x, gs, gt).log_prob(value)

    jitted = jax.jit(lambda *a: mod.TopDownPosterior(*a).log_prob(value))(z_t, x, gs, gt)
    np.testing.assert_allclose(jitted, batched, rtol=64 * F32_EPS, atol=64 * F32_EPS)

    def one(z_t, x, gs, gt, v):
        return mod.TopDownPosterior(z_t, x, gs, gt, event_ndims=1).log_prob(v)

    mapped = jax.vmap(one)(z_t, x, gs, gt, value)
    assert mapped.shape == (2,)
    np.testing.assert_allclose(mapped, batched, rtol=64 * F32_EPS, atol=64 * F32_EPS)

    # A distribution passed through vmap as an argument: mapped along the leading axis of its leaves.
    d = mod.ForwardMarginal(x, gt)
    lp = jax.vmap(lambda dist, v: dist.log_prob(v))(d, value)
    assert lp.shape == (2,)
    np.testing.assert_allclose(lp, d.log_prob(value), rtol=64 * F32_EPS, atol=64 * F32_EPS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", [c for c in CASES if c.name in ("posterior", "reverse_from_eps")],
                         ids=lambda c: c.name)
def test_log_prob_gradients(x64, case, backend):
    """d log_prob / d value = -(value - mu) / sigma^2, and gradients reach every constructor array."""
    p, a = _arrays(case, jnp.float64)
    mod = BACKENDS[backend]
    loc, var = case.reference(p)
    value = jnp.asarray(loc + 0.3 * np.sqrt(var))
    grad_value = jax.grad(lambda v: jnp.sum(case.make(mod, a).log_prob(v)))(value)
    np.testing.assert_allclose(grad_value, -0.3 / np.sqrt(var), rtol=1e-6)
    grads = jax.grad(lambda a_: jnp.sum(case.make(mod, a_).log_prob(value)))(a)
    for name, g in grads.items():
        assert g.shape == a[name].shape
        assert np.all(np.isfinite(g)), name
        assert np.any(np.asarray(g) != 0), name


# ---------------------------------------------------------------------------------------------------------------
# Backend-specific protocol


GETITEM_CASES = [c for c in CASES if c.name in ("marginal_per_dimension", "marginal_event_ndims_0", "transition",
                                                 "posterior_from_noise", "reverse_from_v", "reverse_own_log_variance")]


@pytest.mark.parametrize("case", GETITEM_CASES, ids=lambda c: c.name)
def test_distrax_getitem_slices_batch_dims(case):
    _, a = _arrays(case, jnp.float32)
    d = case.make(mdx, a)
    values = sample(d, jax.random.key(5), (3,))[0]
    lp = d.log_prob(values)
    first = d[0]
    assert type(first) is type(d)
    assert first.batch_shape == case.batch_shape[1:] and first.event_shape == case.event_shape
    np.testing.assert_allclose(first.log_prob(values[0]), lp[0], rtol=16 * F32_EPS)
    head = d[:1]
    assert head.batch_shape == (1,) + case.batch_shape[1:]
    np.testing.assert_allclose(head.mean(), d.mean()[:1], rtol=16 * F32_EPS)
    np.testing.assert_allclose(head.log_prob(values[:1]), lp[:1], rtol=16 * F32_EPS)
    if isinstance(d, mdx.ReverseTransition):
        assert first.parameterization == d.parameterization


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_distrax_sample_and_log_prob(case):
    _, a = _arrays(case, jnp.float32)
    d = case.make(mdx, a)
    key = jax.random.key(6)
    draws, lp = d.sample_and_log_prob(seed=key, sample_shape=(3,))
    np.testing.assert_array_equal(draws, d.sample(seed=key, sample_shape=(3,)))
    np.testing.assert_array_equal(lp, d.log_prob(draws))
    assert lp.shape == (3,) + case.batch_shape


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_numpyro_reparameterized(case):
    _, a = _arrays(case, jnp.float32)
    d = case.make(mnp, a)
    assert d.has_rsample
    key = jax.random.key(8)
    np.testing.assert_array_equal(d.rsample(key, (3,)), d.sample(key, (3,)))


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_numpyro_pytree_round_trip(case):
    _, a = _arrays(case, jnp.float32)
    d = case.make(mnp, a)
    leaves, treedef = jax.tree.flatten(d)
    assert leaves and all(isinstance(leaf, jax.Array) for leaf in leaves)
    back = jax.tree.unflatten(treedef, leaves)
    assert type(back) is type(d)
    assert back.batch_shape == d.batch_shape and back.event_shape == d.event_shape
    values = sample(d, jax.random.key(9), (3,))
    np.testing.assert_array_equal(back.log_prob(values), d.log_prob(values))
    np.testing.assert_array_equal(back.mean, d.mean)
    if isinstance(d, mnp.ReverseTransition):
        assert back.parameterization == d.parameterization


READABLE_ARGUMENTS = [
    ("ForwardMarginal", ("x", "gamma")),
    ("ForwardTransition", ("z_s", "gamma_s", "gamma_t")),
    ("TopDownPosterior", ("z_t", "x", "gamma_s", "gamma_t")),
    ("ReverseTransition", ("z_t", "x_hat", "gamma_s", "gamma_t")),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls_name,names", READABLE_ARGUMENTS)
def test_constructor_arguments_are_readable(backend, cls_name, names):
    """Same names in both backends (DESIGN.md §4): each constructor argument reads back as an attribute, e.g. the
    z_t a ``TopDownPosterior.from_noise`` formed, which the matching ``ReverseTransition`` must be built on."""
    rng = np.random.default_rng(12)
    arrays = [jnp.asarray(rng.normal(size=(2, 3)), jnp.float32) for _ in names]
    d = getattr(BACKENDS[backend], cls_name)(*arrays)
    for name, array in zip(names, arrays):
        assert hasattr(d, name), f"{backend}.{cls_name} has no attribute `{name}`"
        np.testing.assert_allclose(getattr(d, name), array, rtol=16 * F32_EPS, atol=16 * F32_EPS, err_msg=name)


INFER_SHAPES = [
    ("ForwardMarginal", {"x": (2, 3), "gamma": (2, 1)}, (2,), (3,)),
    ("ForwardMarginal", {"x": (4, 2, 2, 1), "gamma": ()}, (4,), (2, 2, 1)),
    ("ForwardTransition", {"z_s": (2, 3), "gamma_s": (), "gamma_t": (2, 3)}, (2,), (3,)),
    ("TopDownPosterior", {"z_t": (5, 3), "x": (5, 3), "gamma_s": (5, 1), "gamma_t": (5, 1)}, (5,), (3,)),
    ("ReverseTransition", {"z_t": (5, 3), "x_hat": (5, 3), "gamma_s": (), "gamma_t": ()}, (5,), (3,)),
]


@pytest.mark.parametrize("cls_name,shapes,batch,event", INFER_SHAPES)
def test_numpyro_infer_shapes(cls_name, shapes, batch, event):
    cls = getattr(mnp, cls_name)
    assert cls.infer_shapes(*shapes.values()) == (batch, event)
    # The distribution those arguments build (traced abstractly: nothing is computed).
    d = jax.eval_shape(lambda *a: cls(*a), *(jax.ShapeDtypeStruct(s, jnp.float32) for s in shapes.values()))
    assert (d.batch_shape, d.event_shape) == (batch, event)


@pytest.mark.parametrize("cls_name,shapes,batch,event", INFER_SHAPES)
def test_numpyro_infer_shapes_keywords(cls_name, shapes, batch, event):
    """NumPyro's contract: infer_shapes takes the constructor's arguments' shapes positionally or by name."""
    assert getattr(mnp, cls_name).infer_shapes(**shapes) == (batch, event)


# ---------------------------------------------------------------------------------------------------------------
# s = t: degenerate Gaussians with finite means and samples


def _at_equal_noise(mod):
    rng = np.random.default_rng(10)
    z, x = (jnp.asarray(rng.normal(size=(2, 3)), jnp.float32) for _ in range(2))
    g = jnp.asarray([[-30.0, -13.3, 0.0], [5.0, 13.3, 30.0]], jnp.float32)
    return z, {
        "transition": mod.ForwardTransition(z, g, g),
        "posterior": mod.TopDownPosterior(z, x, g, g),
        "reverse_x": mod.ReverseTransition(z, 0.5 * x, g, g),
        "reverse_eps": mod.ReverseTransition.from_prediction(z, x, g, g, parameterization="eps"),
    }


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_noise_levels_mean_and_samples_finite(backend):
    z, dists = _at_equal_noise(BACKENDS[backend])
    for name, d in dists.items():
        m = mean(d)
        assert np.all(np.isfinite(m)), name
        # z_s = z_t at s = t, up to the rounding of c_z = 1 computed through logs.
        np.testing.assert_allclose(m, z, rtol=16 * F32_EPS, atol=16 * F32_EPS, err_msg=name)
        draws = sample(d, jax.random.key(11), (3,))
        assert np.all(np.isfinite(draws)), name
        np.testing.assert_array_equal(draws, jnp.broadcast_to(m, draws.shape), err_msg=name)
        np.testing.assert_array_equal(variance(d), 0.0, err_msg=name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_equal_noise_levels_log_prob_and_entropy_are_infinite(backend):
    _, dists = _at_equal_noise(BACKENDS[backend])
    for name, d in dists.items():
        np.testing.assert_array_equal(d.entropy(), -np.inf, err_msg=name)
        np.testing.assert_array_equal(d.log_prob(mean(d)), np.inf, err_msg=name)
        np.testing.assert_array_equal(d.log_prob(mean(d) + 0.5), -np.inf, err_msg=name)


# ---------------------------------------------------------------------------------------------------------------
# Finite values and gradients in float32 for gamma in [-30, 30]

GAMMAS = np.array([-30.0, -20.0, -13.3, -5.0, -1.0, 0.0, 1.0, 5.0, 13.3, 20.0, 30.0])
_S, _T = np.meshgrid(GAMMAS, GAMMAS, indexing="ij")
PAIRS_LT = (_S[_S < _T][:, None], _T[_S < _T][:, None])  # (P, 1) per-example noise levels


SWEEP_DISTS = {
    "marginal": lambda m, gs, gt, x, z, pred: m.ForwardMarginal(x, gt),
    "marginal_at_s": lambda m, gs, gt, x, z, pred: m.ForwardMarginal(x, gs),
    "transition": lambda m, gs, gt, x, z, pred: m.ForwardTransition(z, gs, gt),
    "posterior": lambda m, gs, gt, x, z, pred: m.TopDownPosterior(z, x, gs, gt),
    "posterior_from_noise": lambda m, gs, gt, x, z, pred: m.TopDownPosterior.from_noise(x, z, gs, gt),
    **{f"reverse_{p}": (lambda p: lambda m, gs, gt, x, z, pred: m.ReverseTransition.from_prediction(
        z, pred, gs, gt, parameterization=p))(p) for p in ("eps", "v", "x", "score")},
}


def _sweep_outputs(mod, name, *args):
    # An "rbg" key: the samplers take any key implementation, and it compiles much faster than threefry in a graph
    # this size.
    d = SWEEP_DISTS[name](mod, *args)
    m = mean(d)
    return dict(log_prob=d.log_prob(m + 0.1 * jnp.sqrt(variance(d)) + 0.01), entropy=d.entropy(), mean=m,
                sample=sample(d, jax.random.key(0, impl="rbg")))


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_and_gradients_finite_float32(backend):
    """Values of every class, and the gradient of their total, which is finite iff every summand's gradient is
    (an inf or NaN cannot cancel); on failure the per-class gradients name the culprit."""
    mod = BACKENDS[backend]
    gs, gt = (jnp.asarray(g, jnp.float32) for g in PAIRS_LT)
    n = gs.shape[0]
    x = jnp.tile(jnp.asarray([[-1.0, 0.3]], jnp.float32), (n, 1))
    z = jnp.tile(jnp.asarray([[1.5, -0.2]], jnp.float32), (n, 1))
    pred = jnp.tile(jnp.asarray([[0.8, -0.4]], jnp.float32), (n, 1))
    args = (gs, gt, x, z, pred)

    def total(names, *args):
        return sum(jnp.sum(v) for name in names for v in _sweep_outputs(mod, name, *args).values())

    def run(*args):
        out = {name: _sweep_outputs(mod, name, *args) for name in SWEEP_DISTS}
        return out, jax.grad(lambda *a: total(SWEEP_DISTS, *a), argnums=(0, 1, 2, 3, 4))(*args)

    out, grads = jax.jit(run)(*args)
    for name in out:
        for q, value in out[name].items():
            assert value.dtype == jnp.float32
            assert np.all(np.isfinite(value)), (name, q)
    if not all(np.all(np.isfinite(g)) for g in grads):
        bad = [name for name in SWEEP_DISTS if not all(
            np.all(np.isfinite(g)) for g in jax.grad(lambda *a: total((name,), *a), argnums=(0, 1, 2, 3, 4))(*args))]
        pytest.fail(f"non-finite gradients for {bad}")
