"""Quality per compute on digits: test bpd against training steps for VDM and two MuLAN denoiser conditionings.

Three runs of the CPU preset (`examples/presets.py`) under the same budget of steps, batch and learning rate: VDM
(learned scalar schedule), MuLAN with the reference ``mean_gamma`` denoiser conditioning and MuLAN with
``gamma_map``. Each run checkpoints every ``eval_every`` steps; every checkpoint's EMA parameters are then scored on
the whole test split with the continuous-time VLB, each image averaged over ``replicates`` draws of (t, noise, c),
with a 95% interval over images (one compiled function per run, the same keys for every checkpoint and model). The training seconds at each step come from the run's ``metrics.jsonl``. The baselines are those of
``make demo`` (per-position histogram, codecs), measured on the same test images.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

from mulan_ppl.train import Checkpointer, all_baselines, load_dataset, train, vlb_bpd_fn
from mulan_ppl.train.step import Trainer, make_mesh

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
from presets import preset  # noqa: E402

VARIANTS = {
    "VDM": dict(model="vdm"),
    "MuLAN mean_gamma": dict(conditioning="mean_gamma"),
    "MuLAN gamma_map": dict(conditioning="gamma_map"),
}


def _config(variant: dict, steps: int, eval_every: int):
    config = preset("cpu", model=variant.get("model"), num_steps=steps, checkpoint_every=eval_every,
                    keep_checkpoints=steps // eval_every + 1)
    if "conditioning" in variant:
        config = dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                       conditioning=variant["conditioning"]))
    return config


def _checkpoint_bpd(config, workdir: pathlib.Path, test: np.ndarray, batch_size: int,
                    replicates: int) -> dict[int, tuple[float, float]]:
    """Test bpd (continuous VLB, EMA parameters) of every checkpoint of a run, with one compiled function: the mean
    over the test images of each image's average over ``replicates`` independent draws of (t, noise, c), and its 95%
    interval over images."""
    from flax import nnx

    from mulan_ppl.models import build_model

    trainer = Trainer(build_model(config.model, rngs=nnx.Rngs(0)), config.train, mesh=make_mesh(jax.devices()[:1]))
    like = trainer.init_state()
    key = jax.random.key(1234)  # the same draws for every checkpoint and every model

    @jax.jit
    def batch_bpd(params, batch, batch_key):
        with jax.default_matmul_precision("float32"):
            return vlb_bpd_fn(trainer.model(params))(batch, batch_key)

    checkpointer = Checkpointer(workdir / "checkpoints")
    try:
        out = {}
        for step in checkpointer.steps():
            params = checkpointer.restore(step, like).ema_params
            per_image = np.mean([np.concatenate([
                np.asarray(batch_bpd(params, jnp.asarray(test[i:i + batch_size]),
                                     jax.random.fold_in(jax.random.fold_in(key, r), i)))
                for i in range(0, len(test), batch_size)]) for r in range(replicates)], axis=0)
            out[step] = (float(per_image.mean()), float(1.96 * per_image.std(ddof=1) / math.sqrt(len(per_image))))
    finally:
        checkpointer.close()
    return out


def _seconds_at(workdir: pathlib.Path) -> dict[int, float]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return {record["step"]: record["time"] for record in map(json.loads, lines)}


def steps_to_reach(curve: list[dict], target: float) -> int | None:
    """The first evaluated step whose bpd is at or below ``target`` (``None``: never within the budget).

    Example:
        >>> steps_to_reach([{"step": 100, "bpd": 3.0}, {"step": 200, "bpd": 2.5}], 2.6)
        200
    """
    return next((point["step"] for point in curve if point["bpd"] <= target), None)


def run(*, steps: int = 600, eval_every: int = 100, replicates: int = 4, log=print,
        plot: str | pathlib.Path | None = None) -> dict:
    data = load_dataset("digits")
    test_batch = 120
    results = {"steps": steps, "eval_every": eval_every, "replicates": replicates, "test_images": len(data.test),
               "curves": {}}
    for name, variant in VARIANTS.items():
        config = _config(variant, steps, eval_every)
        log(f"  quality: training {name} for {steps} steps on digits")
        with tempfile.TemporaryDirectory() as tmp:
            workdir = pathlib.Path(tmp)
            summary = train(config, workdir, progress=False, evaluate=False, devices=jax.devices()[:1])
            bpd = _checkpoint_bpd(config, workdir, data.test, test_batch, replicates)
            seconds = _seconds_at(workdir)
        results["curves"][name] = [{"step": step, "bpd": value, "ci95": ci95,
                                    "train_seconds": seconds.get(step, math.nan)}
                                   for step, (value, ci95) in sorted(bpd.items()) if step > 0]
        results.setdefault("train_seconds", {})[name] = summary["train_seconds"]
    vdm_final = results["curves"]["VDM"][-1]["bpd"]
    results["vdm_final_bpd"] = vdm_final
    results["steps_to_vdm_final"] = {name: steps_to_reach(curve, vdm_final)
                                     for name, curve in results["curves"].items()}
    results["baselines"] = all_baselines(data.train, data.test, vocab_size=data.vocab_size)
    if plot is not None:
        _plot(results, pathlib.Path(plot))
        results["plot"] = str(plot)
    return results


def _plot(results: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in results["curves"].items():
        ax.errorbar([p["step"] for p in curve], [p["bpd"] for p in curve], yerr=[p.get("ci95", 0.0) for p in curve],
                    marker="o", capsize=3, label=name)
    for name in ("histogram", "png"):
        if name in results["baselines"]:
            ax.axhline(results["baselines"][name], linestyle="--", linewidth=1, color="grey")
            ax.annotate(name, (results["steps"], results["baselines"][name]), ha="right", va="bottom", fontsize=8)
    ax.set_xlabel("training steps (batch 64)")
    ax.set_ylabel("test bpd (continuous VLB, EMA)")
    ax.set_title(f"digits, {results['test_images']} test images")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
