"""A checker for authors of distributions and KLs: the analytic KL against a Monte Carlo estimate.

Works with Distrax (and TFP) distributions and with NumPyro distributions; it imports neither backend itself (a
NumPyro distribution is recognised only when :mod:`numpyro.distributions` is already imported), so importing
:mod:`mulan_ppl` stays free of TensorFlow Probability.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import sys
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl._validation import check_key, check_positive_int

__all__ = ["KLCheckResult", "check_kl"]


@dataclasses.dataclass(frozen=True)
class KLCheckResult:
    """What :func:`check_kl` measured, one entry per batch element of the distributions.

    Attributes:
        passed: whether every batch element's analytic KL lies within ``tolerance`` of the Monte Carlo estimate.
        failures: one sentence per failed check (empty when ``passed``).
        analytic: the analytic KL, float64 NumPy array of the batch shape.
        monte_carlo: the Monte Carlo estimate :math:`\\frac1n\\sum_j \\log q(z_j) - \\log p(z_j)`, same shape.
        standard_error: the estimate's standard error (sample standard deviation over :math:`\\sqrt n`).
        tolerance: the allowed :math:`|\\text{analytic} - \\text{monte\\_carlo}|`, same shape.
        z: the two-sided normal quantile of the bound (see :func:`check_kl`).
        num_samples: ``n``.
        failure_probability: ``delta``, the probability that a correct KL fails the check (asymptotically).

    Example:
        >>> import numpy as np
        >>> r = KLCheckResult(True, (), np.zeros(1), np.zeros(1), np.ones(1), np.ones(1), 5.0, 100, 1e-6)
        >>> r.max_abs_error, r.max_standardized_error
        (0.0, 0.0)
    """

    passed: bool
    failures: tuple[str, ...]
    analytic: np.ndarray
    monte_carlo: np.ndarray
    standard_error: np.ndarray
    tolerance: np.ndarray
    z: float
    num_samples: int
    failure_probability: float

    @property
    def max_abs_error(self) -> float:
        """Largest :math:`|\\text{analytic} - \\text{monte\\_carlo}|` over the batch."""
        return float(np.max(np.abs(self.analytic - self.monte_carlo), initial=0.0))

    @property
    def max_standardized_error(self) -> float:
        """Largest :math:`|\\text{analytic} - \\text{monte\\_carlo}|` / standard error (``inf`` where the standard
        error is 0 and the two differ)."""
        diff = np.abs(self.analytic - self.monte_carlo)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(diff == 0.0, 0.0, diff / self.standard_error)
        return float(np.max(ratio, initial=0.0))

    def __str__(self) -> str:
        status = "passed" if self.passed else "FAILED"
        return (f"check_kl {status}: max |analytic - MC| = {self.max_abs_error:.4g} "
                f"({self.max_standardized_error:.2f} standard errors; bound {self.z:.2f} standard errors "
                f"+ rounding) over {self.analytic.size} batch element(s), n = {self.num_samples}.")


def _is_numpyro(distribution) -> bool:
    module = sys.modules.get("numpyro.distributions")
    return module is not None and isinstance(distribution, module.Distribution)


def _backend(q, p) -> str:
    kinds = {_is_numpyro(q), _is_numpyro(p)}
    if len(kinds) != 1:
        raise TypeError(f"`check_kl`: `q` and `p` must come from the same backend; got {type(q).__name__} and "
                        f"{type(p).__name__}.")
    return "numpyro" if kinds.pop() else "distrax"


def _registered_kl(backend: str) -> Callable:
    if backend == "numpyro":
        from numpyro.distributions.kl import kl_divergence

        return kl_divergence
    return lambda q, p: q.kl_divergence(p)


def _draw(backend: str, q, key: jax.Array, n: int) -> jax.Array:
    if backend == "numpyro":
        return q.sample(key, (n,))
    return q.sample(seed=key, sample_shape=(n,))


def check_kl(q, p, *, key: jax.Array, num_samples: int = 10_000, kl: Callable | None = None,
             failure_probability: float = 1e-6, num_chunks: int = 1, atol: float | None = None,
             raise_on_failure: bool = True) -> KLCheckResult:
    r"""Checks an analytic KL against the Monte Carlo estimate :math:`\mathbb E_q[\log q - \log p]`.

    Mathematical details:
        With :math:`z_1, \dots, z_n \sim q` independent and :math:`w_j = \log q(z_j) - \log p(z_j)`, the estimate
        :math:`\hat\mu = \frac1n\sum_j w_j` is unbiased for :math:`\mathrm{KL}(q\,\|\,p)` with standard error
        :math:`\hat s/\sqrt n` (:math:`\hat s` the sample standard deviation of :math:`w`). For each of the
        :math:`N` batch elements the check is

        .. math:: |\mathrm{KL}_{\text{analytic}} - \hat\mu| \le z\,\hat s/\sqrt n + \epsilon_{\text{round}},
            \qquad z = \Phi^{-1}\!\left(1 - \frac{\delta}{2N}\right),

        a two-sided normal bound with failure budget :math:`\delta` (``failure_probability``) shared over the
        batch (Bonferroni): :math:`z \approx 4.89` for :math:`\delta = 10^{-6}` and one element. The bound shrinks
        as :math:`1/\sqrt n`, so a KL that is wrong by :math:`\Delta` is caught once
        :math:`n \gtrsim (z\hat s/\Delta)^2`. :math:`\epsilon_{\text{round}}` allows for floating-point rounding:
        ``atol`` if given, else :math:`64\,\varepsilon_{\text{dtype}}\,\frac1n\sum_j(|\log q(z_j)| + |\log p(z_j)|)`.
        The normal approximation needs :math:`w` to have a finite variance (true for Gaussians and for discrete
        families with full support); with heavy-tailed log-ratios the sample standard deviation underestimates the
        error, and the check can fail for a correct KL.

        The analytic KL is the one registered for the pair (Distrax/TFP: ``q.kl_divergence(p)``, which consults
        ``tfd.RegisterKL``; NumPyro: ``numpyro.distributions.kl.kl_divergence``), or ``kl(q, p)`` when given.
        The backend is recognised from ``q``: a ``numpyro.distributions.Distribution`` is sampled as
        ``q.sample(key, (n,))``, anything else as ``q.sample(seed=key, sample_shape=(n,))``.

    Args:
        q: the first distribution (sampled), batch shape ``(*batch)``.
        p: the second distribution, of the same backend; its ``log_prob`` must accept ``q``'s samples. When its
            ``log_prob`` keeps dims that ``q``'s reduces (a scalar ``Normal(0, 1)`` against a ``q`` with event dims),
            they are summed: ``p`` is read as the product over ``q``'s event dims, as the registered KLs to a scalar
            normal read it.
        key: typed PRNG key (keyword-only).
        num_samples: ``n``, the total number of draws from ``q`` (>= 2).
        kl: optional ``kl(q, p) -> (*batch)``; default, the registered KL.
        failure_probability: ``delta`` in (0, 1), the chance that a correct KL fails.
        num_chunks: draw the samples in this many chunks (each of ``ceil(n / num_chunks)``), to bound memory.
        atol: absolute rounding allowance added to the bound; ``None`` derives it from the dtype (above).
        raise_on_failure: raise ``ValueError`` when the check fails (default); otherwise return the result.

    Returns:
        A :class:`KLCheckResult`.

    Raises:
        ValueError: when the check fails and ``raise_on_failure`` (the message gives both values and the bound);
            a bad ``num_samples``, ``num_chunks`` or ``failure_probability``; an analytic KL whose shape is not the
            batch shape of ``log_prob``.
        TypeError: ``q`` and ``p`` from different backends; a key that is not a PRNG key.
        NotImplementedError: no KL is registered for the pair and no ``kl`` is given (from the backend).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> import numpyro.distributions as dist
        >>> from mulan_ppl import check_kl
        >>> q, p = dist.Normal(jnp.array([0.0, 1.0]), 1.0), dist.Normal(0.0, 2.0)
        >>> result = check_kl(q, p, key=jax.random.key(0), num_samples=20_000)
        >>> print(result.passed, result.analytic.round(3))
        True [0.318 0.443]
        >>> wrong = lambda q, p: 1.1 * dist.kl.kl_divergence(q, p)   # 10 % too large
        >>> check_kl(q, p, key=jax.random.key(0), num_samples=20_000, kl=wrong)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: `check_kl`: the analytic KL of Normal || Normal disagrees with the Monte Carlo estimate ...
    """
    where = "check_kl"
    key = check_key(where, key)
    num_samples = check_positive_int(where, "num_samples", num_samples, minimum=2)
    num_chunks = check_positive_int(where, "num_chunks", num_chunks)
    if not (isinstance(failure_probability, (int, float)) and 0.0 < failure_probability < 1.0):
        raise ValueError(f"`{where}`: `failure_probability` must be a number in (0, 1); got "
                         f"{failure_probability!r}.")
    if atol is not None and not (isinstance(atol, (int, float)) and math.isfinite(atol) and atol >= 0.0):
        raise ValueError(f"`{where}`: `atol` must be a finite number >= 0 or None; got {atol!r}.")
    backend = _backend(q, p)
    kl_fn = _registered_kl(backend) if kl is None else kl
    analytic = np.asarray(kl_fn(q, p), np.float64)

    chunk = -(-num_samples // num_chunks)

    @jax.jit
    def log_ratios(chunk_key):
        z = _draw(backend, q, chunk_key, chunk)
        log_q, log_p = q.log_prob(z), p.log_prob(z)
        if log_p.ndim > log_q.ndim:  # a scalar-event p (e.g. Normal(0, 1)): the product over q's event dims
            log_p = jnp.sum(log_p, axis=tuple(range(log_q.ndim, log_p.ndim)))
        return log_q - log_p, jnp.abs(log_q) + jnp.abs(log_p)

    parts = [log_ratios(k) for k in jax.random.split(key, num_chunks)]
    eps = float(jnp.finfo(parts[0][0].dtype).eps)
    ratios = np.concatenate([np.asarray(r, np.float64) for r, _ in parts])[:num_samples]
    magnitude = np.concatenate([np.asarray(m, np.float64) for _, m in parts])[:num_samples]
    batch_shape = ratios.shape[1:]
    if analytic.shape != batch_shape:
        raise ValueError(f"`{where}`: the analytic KL has shape {analytic.shape}, but log q - log p of q's samples "
                         f"has batch shape {batch_shape}; a KL returns one value per batch element (summed over "
                         f"the event dims).")

    monte_carlo = ratios.mean(axis=0)
    standard_error = ratios.std(axis=0, ddof=1) / math.sqrt(num_samples)
    num_elements = max(1, int(np.prod(batch_shape, dtype=np.int64)))
    z = statistics.NormalDist().inv_cdf(1.0 - failure_probability / (2.0 * num_elements))
    rounding = 64.0 * eps * magnitude.mean(axis=0) if atol is None else np.full(batch_shape, float(atol))
    tolerance = z * standard_error + rounding

    failures = []
    finite = np.isfinite(analytic) & np.isfinite(monte_carlo) & np.isfinite(standard_error)
    if not np.all(finite):
        failures.append(f"non-finite values at {int(np.size(finite) - np.count_nonzero(finite))} batch element(s) "
                        f"(analytic {analytic[~finite][:3]}, Monte Carlo {monte_carlo[~finite][:3]}).")
    error = np.abs(analytic - monte_carlo)
    bad = finite & ~(error <= tolerance)
    if np.any(bad):
        i = np.unravel_index(np.argmax(np.where(bad, error - tolerance, -np.inf)), batch_shape) if batch_shape else ()
        failures.append(
            f"the analytic KL of {type(q).__name__} || {type(p).__name__} disagrees with the Monte Carlo estimate at "
            f"{int(np.count_nonzero(bad))} of {num_elements} batch element(s); worst at index {tuple(map(int, i))}: "
            f"analytic {float(analytic[i]):.6g}, Monte Carlo {float(monte_carlo[i]):.6g} +- "
            f"{float(standard_error[i]):.3g} (standard error), |difference| {float(error[i]):.3g} > bound "
            f"{float(tolerance[i]):.3g} (z = {z:.2f}, n = {num_samples}, failure probability {failure_probability:g})."
        )
    result = KLCheckResult(
        passed=not failures, failures=tuple(failures), analytic=analytic, monte_carlo=monte_carlo,
        standard_error=standard_error, tolerance=tolerance, z=z, num_samples=num_samples,
        failure_probability=float(failure_probability),
    )
    if failures and raise_on_failure:
        raise ValueError(f"`{where}`: " + " ".join(failures))
    return result
