"""Cost of ``validate_args=True`` under ``jit``: ``ForwardMarginal(x, gamma).log_prob(z)`` with and without it.

With ``validate_args=True`` the compiled function also reduces ``x``, ``gamma`` and ``z`` with ``isfinite`` and
carries an ``equinox`` runtime check; without it nothing is added (static checks run at trace time only). Both
variants are jitted once and timed in interleaved rounds whose order alternates (A B, B A, ...), so neither always
runs first; a sample is ``--calls`` back-to-back calls. The reported number is the median of the per-round ratios
True / False, with its range. Run: ``python -m benchmarks.validation_cost [--repeats N] [--calls K]``.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from benchmarks.timing import fmt, ratio, summary
from mulan_ppl.distrax import ForwardMarginal

SHAPES = {"digits batch (64, 8, 8, 1)": (64, 8, 8, 1), "CIFAR-10 batch (128, 32, 32, 3)": (128, 32, 32, 3)}


def _log_prob(validate_args: bool):
    @jax.jit
    def fn(x, gamma, z):
        return ForwardMarginal(x, gamma, validate_args=validate_args).log_prob(z)

    return fn


def _alternating(candidates: dict, repeats: int, calls: int, warmup: int = 5) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one sample of ``calls`` calls per round, the order reversed every round."""
    def sample(fn):
        start = time.perf_counter()
        for _ in range(calls):
            out = fn()
        jax.block_until_ready(out)
        return (time.perf_counter() - start) / calls

    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            sample(candidates[name])
    times = {name: [] for name in names}
    for i in range(repeats):
        for name in (names if i % 2 == 0 else names[::-1]):
            times[name].append(sample(candidates[name]))
    return times


def run(*, repeats: int = 200, calls: int = 10, log=print) -> dict:
    results = {}
    for name, shape in SHAPES.items():
        kx, kz = jax.random.split(jax.random.key(0))
        x = jax.random.uniform(kx, shape, minval=-1.0, maxval=1.0)
        gamma = jnp.full(shape[:1] + (1,) * (len(shape) - 1), -3.0)
        z = jax.random.normal(kz, shape)
        plain, checked = _log_prob(False), _log_prob(True)
        args = (x, gamma, z)
        times = _alternating({"off": lambda f=plain, a=args: f(*a), "on": lambda f=checked, a=args: f(*a)}, repeats,
                             calls)
        results[name] = {"off": summary(times["off"]), "on": summary(times["on"]),
                         "ratio": ratio(times["on"], times["off"])}
        log(f"{name}: validate_args=False {1e6 * results[name]['off']['median']:.1f} us, "
            f"True {1e6 * results[name]['on']['median']:.1f} us per call (medians of {repeats} x {calls}); "
            f"ratio True/False {fmt(results[name]['ratio'])}")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args(argv)
    log = print
    log(f"jax {jax.__version__}, backend {jax.default_backend()}, {jax.device_count()} device(s)")
    run(repeats=args.repeats, calls=args.calls, log=log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
