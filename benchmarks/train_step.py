"""Train-step cost of MuLAN against VDM with the same denoiser, its split, and the FLOP utilisation.

MuLAN adds an encoder, a k-hot latent and a per-pixel schedule head to VDM's step. Both models train on the same
batch of 32x32x3 images (V = 256, v-parameterization, m = 50, k = 15) on one device; step times are interleaved
(MuLAN, VDM, MuLAN, ...) and the ratio is taken per round. The split times the parts of MuLAN's step on their own
(forward and backward): denoiser, encoder, schedule (polynomial with its head), and the optimiser update.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from benchmarks.timing import interleaved, ratio, summary
from mulan_ppl.models import build_model
from mulan_ppl.train import ModelConfig, TrainConfig, Trainer, make_mesh

DENOISERS = {
    "small": dict(num_blocks=4, channels=32, attention=False),
    "medium": dict(num_blocks=8, channels=64, attention=False),
    "paper": dict(num_blocks=32, channels=128, attention=True),
}
HEADS = {
    "mlp 2x3072": dict(head="mlp", head_width=3072, head_depth=2),
    "low-rank": dict(head="low_rank", head_width=256, head_depth=2, head_rank=16),
}
BASE = ModelConfig(kind="mulan", event_shape=(32, 32, 3), vocab_size=256, parameterization="v", gamma_min=-13.3,
                   gamma_max=5.0, dropout=0.1, fourier_exponents=(6, 7), num_categories=50, k=15,
                   encoder_channels=64, encoder_blocks=4)


def _trainer(model_config: ModelConfig, batch_size: int) -> Trainer:
    model = build_model(model_config, rngs=nnx.Rngs(0))
    config = TrainConfig(batch_size=batch_size, warmup_steps=10, steps_per_call=1)
    return Trainer(model, config, mesh=make_mesh(jax.devices()[:1]))


def _step_fn(trainer: Trainer, batch_size: int):
    images = np.random.default_rng(0).integers(0, 256, (1, batch_size, 32, 32, 3), dtype=np.uint8)
    batches = trainer.shard_batches(images)
    key = jax.random.key(0)
    holder = {"state": trainer.init_state()}

    def call():
        holder["state"], metrics = trainer.step(holder["state"], batches, key)
        return metrics

    return call, holder, batches, key


def _flops(trainer: Trainer, holder, batches, key) -> float:
    analysis = trainer._step.lower(holder["state"], batches, key).compile().cost_analysis()
    if isinstance(analysis, list):
        analysis = analysis[0]
    return float(analysis.get("flops", float("nan")))


def _grad_time_fn(module: nnx.Module, apply):
    """A jitted forward+backward of ``apply(module)`` summed, as a zero-argument callable."""
    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    @jax.jit
    def grad(params):
        return jax.grad(lambda p: jnp.sum(jnp.square(apply(nnx.merge(graphdef, p, rest)))))(params)

    return lambda: grad(params)


def _split(model, trainer: Trainer, batch_size: int) -> dict[str, callable]:
    model.eval()
    key = jax.random.key(1)
    z = jax.random.normal(key, (batch_size, 32, 32, 3))
    t = jnp.linspace(0.05, 0.95, batch_size)
    context = jnp.zeros((batch_size, 50)).at[:, :15].set(1.0)
    gamma = jnp.zeros((batch_size, 32, 32, 3))
    parts = {
        "denoiser": _grad_time_fn(model.denoiser, lambda d: d(z, t, gamma, context)),
        "encoder": _grad_time_fn(model.latent_posterior.encoder, lambda e: e(z)),
        "schedule head": _grad_time_fn(model.gamma_fn, lambda g: g(t, context)),
    }
    params = trainer.init_state().params
    opt_state = trainer.tx.init(params)
    grads = jax.tree.map(jnp.ones_like, params)
    update = jax.jit(lambda g, o, p: trainer.tx.update(g, o, p))
    parts["optimiser"] = lambda: update(grads, opt_state, params)
    return parts


def run(*, denoisers=("small", "medium"), batch_size: int = 16, repeats: int = 5, log=print) -> dict:
    results = {"batch_size": batch_size, "configs": []}
    for den_name in denoisers:
        den = DENOISERS[den_name]
        vdm_config = dataclasses.replace(BASE, kind="vdm", schedule="learned_scalar", **den)
        vdm = _trainer(vdm_config, batch_size)
        vdm_call, vdm_holder, vdm_batches, vdm_key = _step_fn(vdm, batch_size)
        for head_name, head in HEADS.items():
            mulan_config = dataclasses.replace(BASE, **den, **head)
            mulan = _trainer(mulan_config, batch_size)
            mulan_call, holder, batches, key = _step_fn(mulan, batch_size)
            log(f"  train step: {den_name} denoiser, {head_name} head: timing MuLAN vs VDM ({repeats} rounds)")
            times = interleaved({"mulan": mulan_call, "vdm": vdm_call}, repeats)
            model = build_model(mulan_config, rngs=nnx.Rngs(0))
            part_times = interleaved(_split(model, mulan, batch_size), repeats)
            flops = _flops(mulan, holder, batches, key)
            vdm_flops = _flops(vdm, vdm_holder, vdm_batches, vdm_key)
            step = summary(times["mulan"])
            results["configs"].append({
                "denoiser": den_name, "head": head_name,
                "mulan_params": mulan.num_params(), "vdm_params": vdm.num_params(),
                "mulan_step_s": step, "vdm_step_s": summary(times["vdm"]),
                "ratio_mulan_over_vdm": ratio(times["mulan"], times["vdm"]),
                "split_s": {name: summary(values) for name, values in part_times.items()},
                "mulan_flops": flops, "vdm_flops": vdm_flops,
                "mulan_flops_per_s": flops / step["median"],
                "vdm_flops_per_s": vdm_flops / summary(times["vdm"])["median"],
            })
    return results


def peak(*, repeats: int = 5) -> dict:
    """The machine's float32 throughput on a large matmul and a 3x3 convolution, timed in the same run."""
    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n))
    b = jax.random.normal(jax.random.key(1), (n, n))
    matmul = jax.jit(lambda a, b: a @ b)
    x = jax.random.normal(jax.random.key(2), (16, 32, 32, 128))
    w = jax.random.normal(jax.random.key(3), (3, 3, 128, 128))
    conv = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                             dimension_numbers=("NHWC", "HWIO", "NHWC")))
    times = interleaved({"matmul": lambda: matmul(a, b), "conv": lambda: conv(x, w)}, repeats)
    matmul_flops = 2.0 * n**3
    conv_flops = 2.0 * 16 * 32 * 32 * 128 * 128 * 9
    return {
        "matmul_flops_per_s": matmul_flops / summary(times["matmul"])["median"],
        "conv_flops_per_s": conv_flops / summary(times["conv"])["median"],
        "matmul_s": summary(times["matmul"]), "conv_s": summary(times["conv"]),
    }
