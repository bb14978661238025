"""ODE likelihood: the library's jitted Diffrax solve against a host-side SciPy RK45 loop (the reference method).

Both integrate the same probability-flow ODE of the same model, batch and probe at the same tolerances. The SciPy
loop calls one jitted drift-and-divergence function per evaluation and moves the state between host and device each
time, as the reference implementations do; the library's solve runs entirely inside one compiled program. Reported:
the time ratio (interleaved rounds), the NFE of each, and the difference of the resulting bpd.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
from flax import nnx

from benchmarks.timing import interleaved, ratio, summary
from mulan_ppl import core
from mulan_ppl._ode import make_augmented_drift, make_drift
from mulan_ppl.likelihood import ode_log_likelihood
from mulan_ppl.models import build_model
from mulan_ppl.train import ModelConfig, load_dataset

CONFIG = ModelConfig(kind="mulan", event_shape=(8, 8, 1), vocab_size=17, parameterization="v", gamma_min=None,
                     gamma_max=5.0, channels=32, num_blocks=2, dropout=0.0, attention=False, head="mlp",
                     head_width=128, head_depth=2, num_categories=16, k=4, encoder_channels=16, encoder_blocks=2)


def run(*, batch_size: int = 16, repeats: int = 3, rtol: float = 1e-5, atol: float = 1e-5, log=print) -> dict:
    model = build_model(CONFIG, rngs=nnx.Rngs(0))
    model.eval()
    digits = load_dataset("digits")
    x = core.encode_integers(jnp.asarray(digits.test[:batch_size]), CONFIG.vocab_size)
    context = model.latent_posterior(x).sample(seed=jax.random.key(1))
    event_shape, dim = x.shape[1:], math.prod(x.shape[1:])

    library = jax.jit(lambda x, key: ode_log_likelihood(x, key, model.gamma_fn, model.denoiser,
                                                        parameterization="v", context=context, rtol=rtol,
                                                        atol=atol))
    key = jax.random.key(2)  # the Rademacher probe of both solves is drawn from this key
    drift = make_drift(model.gamma_fn, model.denoiser, context, event_shape, "v")
    augmented = make_augmented_drift(drift, x, key, trace="hutchinson", probe="rademacher")  # the library's own
    drift_and_divergence = jax.jit(lambda t, z: augmented(t, (z, None)))

    count = {"nfe": 0}

    def host_solve():
        count["nfe"] = 0
        size = x.size

        def rhs(t, state):
            count["nfe"] += 1
            z = jnp.asarray(state[:size].reshape(x.shape), jnp.float32)
            h, div = drift_and_divergence(jnp.float32(t), z)
            return np.concatenate([np.asarray(h, np.float64).ravel(), np.asarray(div, np.float64)])

        y0 = np.concatenate([np.asarray(x, np.float64).ravel(), np.zeros(x.shape[0])])
        solution = scipy.integrate.solve_ivp(rhs, (0.0, 1.0), y0, method="RK45", rtol=rtol, atol=atol)
        z_1, delta = solution.y[:size, -1].reshape(x.shape), solution.y[size:, -1]
        prior = -0.5 * (z_1**2).reshape(x.shape[0], -1).sum(1) - 0.5 * dim * math.log(2 * math.pi)
        return prior + delta

    log(f"  ODE likelihood: Diffrax in jit vs SciPy RK45 on the host, batch {batch_size}, rtol={rtol}")
    host_log_p = host_solve()
    host_nfe = count["nfe"]
    lib_log_p, lib_nfe = library(x, key)
    t_half = jnp.float32(0.5)
    times = interleaved({"diffrax": lambda: library(x, key), "scipy": host_solve,
                         "one_evaluation": lambda: drift_and_divergence(t_half, x)}, repeats)
    to_bpd = -1.0 / (dim * math.log(2.0))
    bpd_difference = np.abs(np.asarray(lib_log_p, np.float64) - host_log_p) * abs(to_bpd)
    return {
        "batch_size": batch_size, "rtol": rtol, "atol": atol,
        "diffrax_s": summary(times["diffrax"]), "scipy_s": summary(times["scipy"]),
        "ratio_scipy_over_diffrax": ratio(times["scipy"], times["diffrax"]),
        "nfe_diffrax": int(lib_nfe), "nfe_scipy": host_nfe,
        "one_evaluation_s": summary(times["one_evaluation"]),
        "diffrax_s_per_evaluation": summary(times["diffrax"])["median"] / int(lib_nfe),
        "scipy_s_per_evaluation": summary(times["scipy"])["median"] / host_nfe,
        "max_abs_bpd_difference": float(bpd_difference.max()),
        "bpd_diffrax": float(np.mean(np.asarray(lib_log_p)) * to_bpd),
        "bpd_scipy": float(np.mean(host_log_p) * to_bpd),
    }
