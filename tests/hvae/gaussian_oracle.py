"""Closed-form references for diffusion losses on Gaussian data, and the Monte Carlo plumbing to check against them.

Data ``x ~ N(mu, cov)`` in ``d`` dimensions, noised per dimension as ``z_i = alpha_i x_i + sigma_i eps_i`` with
``alpha_i**2 = sigmoid(-gamma_i)``, ``sigma_i**2 = sigmoid(gamma_i)``. Every denoiser used here predicts ``x`` as an
affine function of ``z``, ``x_hat = m + K z``, so the squared error of every dimension has a closed-form
expectation and the whole T-step chain of ancestral sampling is linear-Gaussian. The references:

- :class:`PowerPath`: ``gamma_i(t) = gamma_min + (gamma_max - gamma_min) t**p_i`` (a scalar family for one ``p``),
  as a ``gamma_fn`` for the library and in NumPy with its exact derivative.
- :class:`GaussianPosteriorMean`: the Bayes posterior mean ``E[x | z]`` of ``N(mu, cov)``, computed with
  ``jnp.linalg.solve`` from the full gamma vector (``noise="full"``) or as if every dimension had noise level
  ``mean(gamma)`` (``noise="mean"``); a JAX denoiser in any parameterization and the NumPy ``(m, K)`` pair.
- :func:`continuous_loss`: ``1/2 int_0^1 sum_i gamma_i'(t) SNR_i(t) E[(x_i - x_hat_i)^2] dt`` by ``scipy`` quadrature.
- :func:`discrete_loss`: the expected T-step term
  ``1/2 sum_k sum_i (SNR_i(s_k) - SNR_i(t_k)) E[(x_i - x_hat_i(t_k))^2]`` with ``t_k = k/T``, ``s_k = (k-1)/T``, in
  closed form.
- :func:`ancestral_output_law`: mean and covariance of ``z_0`` after ``T`` reverse steps
  ``z_s = c_z z_t + c_x x_hat(z_t) + sigma_{s|t} xi`` started from ``N(0, I)`` at ``t = 1``.
- :func:`scalar_schedule_loss`: the path-independent value ``1/2 sum_j log((1 + l_j e^{-gamma_min}) /
  (1 + l_j e^{-gamma_max}))`` over the eigenvalues ``l_j`` of ``cov`` (exact denoiser, any path).

NumPy parts run in float64; the JAX parts use the dtype of the arrays they are given. The references use no library
code; only :func:`diffusion_values` (the Monte Carlo side) calls ``mulan_ppl.hvae.diffusion_term``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import scipy.special
import scipy.stats

PARAMETERIZATIONS = ("eps", "v", "x")

FAILURE_BUDGET = 1e-6
"""Probability that a statistical test fails when the code is right (STYLE.md rule 21), split over its comparisons."""


def z_quantile(delta: float, comparisons: int = 1, dof: int | None = None) -> float:
    """Two-sided quantile for a per-test failure budget ``delta`` split over ``comparisons`` (Bonferroni).

    With ``dof`` the Student-t quantile (standard error estimated from ``dof + 1`` replicate means).
    """
    tail = delta / (2 * comparisons)
    if dof is None:
        return float(scipy.stats.norm.isf(tail))
    return float(scipy.stats.t.isf(tail, dof))


class PowerPath:
    """Noise path ``gamma_i(t) = gamma_min + (gamma_max - gamma_min) * t**p_i`` sharing its endpoints.

    Args:
        exponents: one exponent (a scalar schedule: ``gamma_fn`` returns shape ``(B,)``) or one per data dimension
            (``gamma_fn`` returns ``(B, *event_shape)``).
        gamma_min, gamma_max: the endpoints.
        event_shape: the data event shape (needed for per-dimension exponents).
    """

    def __init__(self, exponents, gamma_min: float, gamma_max: float, event_shape=None):
        self.exponents = np.asarray(exponents, dtype=np.float64)
        self.scalar = self.exponents.ndim == 0
        self.gamma_min = float(gamma_min)
        self.gamma_max = float(gamma_max)
        if self.scalar:
            self.event_shape = tuple(event_shape) if event_shape is not None else None
        else:
            self.event_shape = tuple(event_shape) if event_shape is not None else self.exponents.shape
            if math.prod(self.event_shape) != self.exponents.size:
                raise ValueError(f"{self.exponents.size} exponents for event shape {self.event_shape}")

    def __repr__(self):
        return f"PowerPath({self.exponents.tolist()})"

    def gamma_fn(self, t, context=None):
        """The library-facing schedule: ``t`` of shape ``(B,)`` to ``(B,)`` or ``(B, *event_shape)``."""
        del context
        return power_gamma(t, jnp.asarray(self.exponents, t.dtype), self.gamma_min, self.gamma_max,
                           self.event_shape if not self.scalar else None)

    def _flat_exponents(self, d: int) -> np.ndarray:
        return np.broadcast_to(self.exponents.reshape(-1), (d,))

    def gamma(self, t, d: int) -> np.ndarray:
        """NumPy gamma at times ``t`` (any shape): shape ``t.shape + (d,)``."""
        t = np.asarray(t, dtype=np.float64)[..., None]
        return self.gamma_min + (self.gamma_max - self.gamma_min) * t ** self._flat_exponents(d)

    def dgamma(self, t, d: int) -> np.ndarray:
        """NumPy ``d gamma / dt`` at times ``t > 0``: shape ``t.shape + (d,)``."""
        t = np.asarray(t, dtype=np.float64)[..., None]
        p = self._flat_exponents(d)
        return (self.gamma_max - self.gamma_min) * p * t ** (p - 1.0)


class GaussianPosteriorMean:
    """The posterior mean ``E[x | z]`` of the Gaussian prior ``N(mu, cov)`` under per-dimension noise.

    Args:
        mu: prior mean, shape ``(d,)``.
        cov: prior covariance, shape ``(d, d)``.
        noise: ``"full"`` uses the whole gamma vector of ``z``; ``"mean"`` computes the Bayes posterior mean as if
            every dimension had the noise level ``mean(gamma)`` (a denoiser told only the mean noise level).
        event_shape: the data event shape (``(d,)`` by default); the denoiser flattens it.
    """

    def __init__(self, mu, cov, *, noise: str = "full", event_shape=None):
        if noise not in ("full", "mean"):
            raise ValueError(f"noise must be 'full' or 'mean'; got {noise!r}")
        self.mu = np.asarray(mu, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self.d = self.mu.shape[0]
        self.noise = noise
        self.event_shape = tuple(event_shape) if event_shape is not None else (self.d,)

    # ---------------------------------------------------------------- NumPy: x_hat = m + K z
    def _assumed_gamma(self, gamma: np.ndarray) -> np.ndarray:
        if self.noise == "mean":
            return np.broadcast_to(gamma.mean(-1, keepdims=True), gamma.shape)
        return gamma

    def coefficients(self, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(m, K)`` with ``x_hat = m + K z`` for true noise levels ``gamma`` of shape ``(..., d)``."""
        g = self._assumed_gamma(np.asarray(gamma, dtype=np.float64))
        alpha = np.sqrt(scipy.special.expit(-g))
        sigma_sq = scipy.special.expit(g)
        # M = A cov A + S (symmetric), K = cov A M^{-1}  =>  K^T = M^{-1} A cov.
        m_mat = alpha[..., :, None] * self.cov * alpha[..., None, :] + sigma_sq[..., None] * np.eye(self.d)
        k_t = np.linalg.solve(m_mat, alpha[..., :, None] * self.cov)
        k = np.swapaxes(k_t, -1, -2)
        m = self.mu - np.einsum("...ij,...j->...i", k, alpha * self.mu)
        return m, k

    # ---------------------------------------------------------------- JAX denoiser
    def posterior_mean(self, z: jax.Array, gamma: jax.Array) -> jax.Array:
        """``E[x | z]`` for ``z`` and ``gamma`` of shape ``(B, *event_shape)``, by ``jnp.linalg.solve``."""
        return posterior_mean(z, gamma, jnp.asarray(self.mu, z.dtype), jnp.asarray(self.cov, z.dtype),
                              noise=self.noise)

    def denoiser(self, parameterization: str = "x"):
        """A library denoiser ``(z_t, t, gamma_t, context) -> prediction`` in the named parameterization.

        ``eps`` and ``v`` are converted from ``x_hat`` with the true per-dimension noise level ``gamma_t`` of
        ``z_t``: ``eps_hat = (z - alpha x_hat) / sigma``, ``v_hat = alpha eps_hat - sigma x_hat``.
        """
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")

        def fn(z_t, t, gamma_t, context):
            del t, context
            return prediction_from_x(self.posterior_mean(z_t, gamma_t), z_t, gamma_t, parameterization)

        return fn


def power_gamma(t: jax.Array, exponents: jax.Array, gamma_min, gamma_max, event_shape=None) -> jax.Array:
    """JAX ``gamma_min + (gamma_max - gamma_min) t**p``: ``(B,)`` for scalar ``exponents`` (``event_shape=None``),
    else ``(B, *event_shape)`` with ``exponents`` of ``event_shape`` elements."""
    if event_shape is None:
        return gamma_min + (gamma_max - gamma_min) * jnp.power(t, exponents)
    p = exponents.reshape(event_shape)
    t = t.reshape(t.shape + (1,) * len(event_shape))
    return gamma_min + (gamma_max - gamma_min) * jnp.power(t, p)


def posterior_mean(z: jax.Array, gamma: jax.Array, mu: jax.Array, cov: jax.Array, *, noise: str) -> jax.Array:
    """JAX ``E[x | z]`` of the prior ``N(mu, cov)`` for ``z`` of shape ``(B, *event)`` with noise ``gamma``.

    ``noise="full"`` uses ``gamma`` per dimension; ``noise="mean"`` uses ``mean(gamma)`` for every dimension.
    """
    batch, d = z.shape[0], mu.shape[0]
    zf = z.reshape(batch, d)
    g = jnp.broadcast_to(gamma, z.shape).reshape(batch, d)
    if noise == "mean":
        g = jnp.broadcast_to(g.mean(-1, keepdims=True), g.shape)
    elif noise != "full":
        raise ValueError(f"noise must be 'full' or 'mean'; got {noise!r}")
    alpha = jnp.sqrt(jax.nn.sigmoid(-g))
    sigma_sq = jax.nn.sigmoid(g)
    m_mat = alpha[:, :, None] * cov * alpha[:, None, :] + sigma_sq[:, :, None] * jnp.eye(d, dtype=z.dtype)
    sol = jnp.linalg.solve(m_mat, (zf - alpha * mu)[:, :, None])[:, :, 0]
    x_hat = mu + jnp.einsum("ij,bj->bi", cov, alpha * sol)
    return x_hat.reshape(z.shape)


def prediction_from_x(x_hat: jax.Array, z: jax.Array, gamma: jax.Array, parameterization: str) -> jax.Array:
    """``x_hat`` as an ``eps``, ``v`` or ``x`` prediction.

    ``eps = (z - alpha x) / sigma`` and ``v = alpha eps - sigma x``, with the true noise level ``gamma`` of ``z``.
    """
    if parameterization == "x":
        return x_hat
    alpha = jnp.sqrt(jax.nn.sigmoid(-gamma))
    sigma = jnp.sqrt(jax.nn.sigmoid(gamma))
    eps_hat = (z - alpha * x_hat) / sigma
    if parameterization == "eps":
        return eps_hat
    if parameterization == "v":
        return alpha * eps_hat - sigma * x_hat
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}; got {parameterization!r}")


# -------------------------------------------------------------------- expected errors
def expected_sq_error(denoiser: GaussianPosteriorMean, mu, cov, gamma) -> np.ndarray:
    """``E[(x_i - x_hat_i(z))^2]`` for ``x ~ N(mu, cov)``, ``z = alpha x + sigma eps`` at ``gamma`` ``(..., d)``."""
    mu = np.asarray(mu, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    gamma = np.asarray(gamma, dtype=np.float64)
    d = mu.shape[0]
    alpha = np.sqrt(scipy.special.expit(-gamma))
    sigma_sq = scipy.special.expit(gamma)
    m, k = denoiser.coefficients(gamma)
    # e = x - m - K (A x + S^{1/2} eps) = (I - K A) x - m - K S^{1/2} eps
    resid = np.eye(d) - k * alpha[..., None, :]
    mean_e = np.einsum("...ij,j->...i", resid, mu) - m
    var_e = np.einsum("...ij,jk,...ik->...i", resid, cov, resid) + np.einsum("...ij,...j->...i", k**2, sigma_sq)
    return mean_e**2 + var_e


def continuous_integrand(t, path: PowerPath, denoiser: GaussianPosteriorMean, mu, cov) -> np.ndarray:
    """``1/2 sum_i gamma_i'(t) SNR_i(t) E[(x_i - x_hat_i)^2]`` at times ``t`` (array), shape ``t.shape``."""
    d = np.asarray(mu).shape[0]
    gamma = path.gamma(t, d)
    mse = expected_sq_error(denoiser, mu, cov, gamma)
    return 0.5 * np.sum(path.dgamma(t, d) * np.exp(-gamma) * mse, axis=-1)


def continuous_loss(path: PowerPath, denoiser: GaussianPosteriorMean, mu, cov, *, substitution_power: int = 4) -> float:
    """Expected continuous-time diffusion loss in nats by adaptive quadrature (``scipy.integrate.quad``).

    The substitution ``t = u**k`` (``k = substitution_power``) removes the endpoint singularity of ``t**(p - 1)``
    for ``p > 1/k``.
    """
    k = substitution_power

    def integrand(u):
        t = u**k
        return float(continuous_integrand(np.asarray([t]), path, denoiser, mu, cov)[0]) * k * u ** (k - 1)

    value, abserr = scipy.integrate.quad(integrand, 0.0, 1.0, epsabs=1e-11, epsrel=1e-11, limit=500)
    if not abserr < 1e-7 * max(1.0, abs(value)):
        raise RuntimeError(f"quadrature did not converge: {value=} {abserr=}")
    return float(value)


def discrete_levels(path: PowerPath, denoiser: GaussianPosteriorMean, mu, cov, num_steps: int) -> np.ndarray:
    """Expected KL(q(z_s|z_t,x) || p(z_s|z_t)) of each level k = 1..T, shape ``(T,)``."""
    d = np.asarray(mu).shape[0]
    t = np.arange(1, num_steps + 1, dtype=np.float64) / num_steps
    s = np.arange(0, num_steps, dtype=np.float64) / num_steps
    gamma_t = path.gamma(t, d)
    gamma_s = path.gamma(s, d)
    mse = expected_sq_error(denoiser, mu, cov, gamma_t)
    # SNR_s - SNR_t = SNR_t * expm1(gamma_t - gamma_s)
    return 0.5 * np.sum(np.exp(-gamma_t) * np.expm1(gamma_t - gamma_s) * mse, axis=-1)


def discrete_loss(path: PowerPath, denoiser: GaussianPosteriorMean, mu, cov, num_steps: int) -> float:
    """Expected T-step diffusion term ``T * E_k[KL_k] = sum_k KL_k`` in closed form (nats)."""
    return float(np.sum(discrete_levels(path, denoiser, mu, cov, num_steps)))


def scalar_schedule_loss(cov, gamma_min: float, gamma_max: float) -> float:
    """Path-independent expected loss of the exact posterior mean (multivariate I-MMSE identity)."""
    lam = np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64))
    return float(0.5 * np.sum(np.log1p(lam * np.exp(-gamma_min)) - np.log1p(lam * np.exp(-gamma_max))))


def ancestral_output_law(path: PowerPath, denoiser: GaussianPosteriorMean, d: int, num_steps: int,
                         init_mean=None, init_cov=None) -> tuple[np.ndarray, np.ndarray]:
    """Exact mean and covariance of the chain output ``z_0`` (linear-Gaussian recursion).

    ``z_1 ~ N(init_mean, init_cov)`` (default ``N(0, I)``); for ``k = T..1``, ``t = k/T``, ``s = (k-1)/T``:
    ``z_s = c_z z_t + c_x x_hat(z_t) + sqrt(v) xi`` with ``alpha_{t|s} = alpha_t / alpha_s``,
    ``sigma^2_{t|s} = sigma_t^2 - alpha_{t|s}^2 sigma_s^2``, ``c_z = alpha_{t|s} sigma_s^2 / sigma_t^2``,
    ``c_x = alpha_s sigma^2_{t|s} / sigma_t^2``, ``v = sigma^2_{t|s} sigma_s^2 / sigma_t^2``.
    """
    mean = np.zeros(d) if init_mean is None else np.asarray(init_mean, dtype=np.float64)
    cov = np.eye(d) if init_cov is None else np.asarray(init_cov, dtype=np.float64)
    for k in range(num_steps, 0, -1):
        gamma_t = path.gamma(k / num_steps, d)
        gamma_s = path.gamma((k - 1) / num_steps, d)
        a_t_sq, a_s_sq = scipy.special.expit(-gamma_t), scipy.special.expit(-gamma_s)
        s_t_sq, s_s_sq = scipy.special.expit(gamma_t), scipy.special.expit(gamma_s)
        var_ts = -np.expm1(gamma_s - gamma_t) * s_t_sq
        c_z = np.sqrt(a_t_sq / a_s_sq) * s_s_sq / s_t_sq
        c_x = np.sqrt(a_s_sq) * var_ts / s_t_sq
        var = var_ts * s_s_sq / s_t_sq
        m, kk = denoiser.coefficients(gamma_t)
        g = np.diag(c_z) + c_x[:, None] * kk
        mean = g @ mean + c_x * m
        cov = g @ cov @ g.T + np.diag(var)
    return mean, cov


# -------------------------------------------------------------------- Monte Carlo plumbing
def math_notes_gaussian() -> tuple[np.ndarray, np.ndarray]:
    """The correlated 3-d Gaussian of math-notes §3: ``mu = (0.3, -0.2, 0.1)``, ``cov = L L^T``."""
    mu = np.array([0.3, -0.2, 0.1])
    chol = 1.2 * np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.4, 0.7]])
    return mu, chol @ chol.T


def random_gaussian(d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed correlated Gaussian in ``d`` dims (eigenvalues bounded away from 0)."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(scale=0.5, size=d)
    a = rng.normal(size=(d, d))
    return mu, 0.6 * a @ a.T / d + 0.2 * np.eye(d)


def sample_data(key: jax.Array, mu, cov, n: int, event_shape) -> jax.Array:
    """``n`` draws of ``N(mu, cov)`` reshaped to ``(n, *event_shape)``, in the current default float dtype."""
    dtype = jnp.result_type(float)
    chol = jnp.asarray(np.linalg.cholesky(np.asarray(cov, dtype=np.float64)), dtype)
    noise = jax.random.normal(key, (n, chol.shape[0]), dtype)
    return (jnp.asarray(mu, dtype) + noise @ chol.T).reshape((n, *event_shape))


def lattice_times(key: jax.Array, replicates: int, batch: int, num_steps: int | None = None) -> jax.Array:
    """Independent low-discrepancy batches ``t = (u_r + i/B) mod 1``, flattened to ``(replicates * batch,)``.

    With ``num_steps=T`` the times are rounded up to the grid, ``t = max(ceil(uT), 1)/T``. Each replicate is one
    batch of the library's own time sampling with an independent shift ``u_r``, so replicate means are i.i.d.
    """
    dtype = jnp.result_type(float)
    u = jax.random.uniform(key, (replicates, 1), dtype)
    t = jnp.mod(u + jnp.arange(batch, dtype=dtype) / batch, 1.0).reshape(-1)
    if num_steps is not None:
        t = jnp.maximum(jnp.ceil(t * num_steps), 1.0) / num_steps
    return t


def replicate_mean(values, replicates: int) -> tuple[float, float]:
    """Grand mean and its standard error from ``replicates`` i.i.d. replicate means (``dof = replicates - 1``)."""
    means = np.asarray(values, dtype=np.float64).reshape(replicates, -1).mean(axis=1)
    return float(means.mean()), float(means.std(ddof=1) / np.sqrt(replicates))


def iid_mean(values) -> tuple[float, float]:
    """Mean and standard error of i.i.d. values."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(values.size))


def _diffusion_values(x, key, times, exponents, gamma_min, gamma_max, prior_mu, prior_cov, *, path_event_shape,
                      noise, parameterization, num_steps, all_levels):
    from mulan_ppl.hvae import diffusion_term

    def gamma_fn(t, context):
        del context
        return power_gamma(t, exponents, gamma_min, gamma_max, path_event_shape)

    def denoiser(z_t, t, gamma_t, context):
        del t, context
        x_hat = posterior_mean(z_t, gamma_t, prior_mu, prior_cov, noise=noise)
        return prediction_from_x(x_hat, z_t, gamma_t, parameterization)

    return diffusion_term(x, key, gamma_fn, denoiser, parameterization=parameterization, num_steps=num_steps,
                          all_levels=all_levels, times=times)


_STATIC = ("path_event_shape", "noise", "parameterization", "num_steps", "all_levels")
_diffusion_values_jit = jax.jit(_diffusion_values, static_argnames=_STATIC)


def diffusion_values(x, key, path: PowerPath, denoiser: GaussianPosteriorMean, *, times=None,
                     parameterization: str = "eps", num_steps: int | None = None, all_levels: bool = False,
                     jit: bool = True) -> jax.Array:
    """Per-example ``mulan_ppl.hvae.diffusion_term`` with ``path`` and ``denoiser`` as JAX functions.

    The path exponents, endpoints and the denoiser's Gaussian are traced arguments, so one compilation serves every
    path and prior of the same shapes. ``jit=False`` runs op by op (cheap when only ``num_steps`` changes).
    """
    dtype = x.dtype
    fn = _diffusion_values_jit if jit else _diffusion_values
    return fn(x, key, times, jnp.asarray(path.exponents, dtype), jnp.asarray(path.gamma_min, dtype),
              jnp.asarray(path.gamma_max, dtype), jnp.asarray(denoiser.mu, dtype), jnp.asarray(denoiser.cov, dtype),
              path_event_shape=None if path.scalar else path.event_shape, noise=denoiser.noise,
              parameterization=parameterization, num_steps=num_steps, all_levels=all_levels)
