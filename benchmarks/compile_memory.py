"""Compile time and memory: the first call's cost of the train step and of the likelihood solve, and the peak
resident memory of a CPU training run.

Compile times are measured on the CPU preset's MuLAN (digits, batch 64 for the step, 16 for the solve) with the
persistent compilation cache off: tracing and lowering (``jit(...).lower``) and XLA compilation (``.compile()``)
separately. The peak resident set size is that of a child ``examples/train_cifar10.py --preset cpu`` run of
``--steps`` steps (training, the final evaluation and the figures), read with ``os.wait4``.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
from flax import nnx

from mulan_ppl import core
from mulan_ppl.likelihood import ode_log_likelihood
from mulan_ppl.models import build_model
from mulan_ppl.train import Trainer, get_batch, load_dataset, make_mesh

_ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "examples"))
from presets import preset  # noqa: E402


def _lower_and_compile(jitted, *args) -> dict[str, float]:
    start = time.perf_counter()
    lowered = jitted.lower(*args)
    traced = time.perf_counter()
    lowered.compile()
    return {"trace_and_lower_s": traced - start, "compile_s": time.perf_counter() - traced}


def compile_times() -> dict:
    jax.config.update("jax_enable_compilation_cache", False)
    config = preset("cpu")
    digits = load_dataset("digits")
    trainer = Trainer(build_model(config.model, rngs=nnx.Rngs(0)), config.train, mesh=make_mesh(jax.devices()[:1]))
    batches = trainer.shard_batches(get_batch(digits.train, config.train.batch_size, seed=0, step=0)[None])
    out = {"train_step": _lower_and_compile(trainer._step, trainer.init_state(), batches, jax.random.key(0))}

    model = trainer.model(trainer.init_state().ema_params)
    x = core.encode_integers(jnp.asarray(digits.test[:16]), config.model.vocab_size)
    context = model.latent_posterior(x).sample(seed=jax.random.key(1))
    solve = jax.jit(lambda x, key: ode_log_likelihood(x, key, model.gamma_fn, model.denoiser,
                                                      parameterization=config.model.parameterization,
                                                      context=context))
    out["ode_log_likelihood"] = _lower_and_compile(solve, x, jax.random.key(2))
    return out


def peak_memory(*, steps: int = 50) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "examples/train_cifar10.py", "--preset", "cpu", "--steps", str(steps),
                   "--workdir", str(pathlib.Path(tmp) / "run"), "--no-progress"]
        env = {**os.environ, "JAX_ENABLE_COMPILATION_CACHE": "false"}
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        stderr = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"the memory benchmark's training run failed:\n{stderr.decode()[-4000:]}")
    return {"command": " ".join(command[1:6]) + " --workdir TMP --no-progress",
            "peak_rss_mib": usage.ru_maxrss / 1024.0, "wall_s": seconds}


def run(*, log=print, memory_steps: int = 50) -> dict:
    log("  compile: first-call cost of the train step and of the ODE likelihood solve (CPU preset)")
    out = {"compile": compile_times()}
    log(f"  memory: peak RSS of a {memory_steps}-step CPU-preset training run (child process)")
    out["memory"] = peak_memory(steps=memory_steps)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
