"""The training run: data, model, sharded steps, checkpoints, metrics, evaluation and figures in one directory.

Layout of a run directory::

    config.json           the model and training configuration (format-versioned; rebuilds the model)
    checkpoints/<step>/   Orbax checkpoints of the train state (atomic; the newest complete one is resumed)
    metrics.jsonl         one JSON line per logged step
    samples.png           a grid of ancestral samples from the EMA model
    snr_curves.png        MuLAN: per-dimension log-SNR curves for several c ~ p(c) (the paper's Figure 3)
    summary.json          final test bpd (continuous-time and T-step bounds) with 95% intervals
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm.auto import tqdm

from mulan_ppl.models import build_model
from mulan_ppl.train.checkpoint import Checkpointer
from mulan_ppl.train.config import RunConfig, load_run_config, save_run_config
from mulan_ppl.train.data import get_batch, load_dataset
from mulan_ppl.train.evaluate import evaluate_split, vlb_bpd_fn
from mulan_ppl.train.plots import save_sample_grid, save_snr_curves
from mulan_ppl.train.step import Trainer, make_mesh

__all__ = ["NonFiniteLossError", "evaluate_run", "restore_run", "train"]


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step. Checkpoints written before stay intact."""


def _append_metrics(path: pathlib.Path, first_step: int, metrics: dict, elapsed: float) -> None:
    host = {name: np.asarray(value) for name, value in metrics.items()}
    with path.open("a") as handle:
        for j in range(len(host["bpd"])):
            record = {"step": first_step + j + 1, **{k: float(v[j]) for k, v in host.items()}}
            record["time"] = elapsed
            handle.write(json.dumps(record) + "\n")


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
    """Drops metric lines past the restored step, so a resumed run's log reads like an uninterrupted one."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


def restore_run(workdir: str | pathlib.Path, *, devices=None):
    """Rebuilds ``(config, trainer, state)`` of a run directory from its ``config.json`` and newest checkpoint.

    Raises:
        FileNotFoundError: ``workdir`` is not a run directory, or it holds no checkpoint.
    """
    workdir = pathlib.Path(workdir)
    config = load_run_config(workdir)
    model = build_model(config.model, rngs=nnx.Rngs(config.train.seed))
    trainer = Trainer(model, config.train, mesh=make_mesh(devices))
    restored = Checkpointer(workdir / "checkpoints").restore_latest(trainer.init_state())
    if restored is None:
        raise FileNotFoundError(f"`restore_run`: no checkpoint in {workdir / 'checkpoints'}.")
    return config, trainer, restored[1]


def evaluate_run(config: RunConfig, trainer: Trainer, state, test: np.ndarray, *, progress: bool = True) -> dict:
    """Test-split VLB bpd of the EMA parameters: the continuous-time bound and the ``T = eval_steps`` bound."""
    model = trainer.model(state.ema_params)
    key = jax.random.fold_in(jax.random.key(config.train.seed), 2**30)
    results = {}
    for name, num_steps in (("vlb_continuous", None), (f"vlb_T{config.train.eval_steps}", config.train.eval_steps)):
        estimate = evaluate_split(vlb_bpd_fn(model, num_steps=num_steps), test,
                                  batch_size=config.train.eval_batch_size, key=key, mesh=trainer.mesh,
                                  progress=progress, description=name)
        results[name] = dataclasses.asdict(estimate)
    return results


def _figures(config: RunConfig, trainer: Trainer, state, workdir: pathlib.Path) -> None:
    model = trainer.model(state.ema_params)
    key = jax.random.key(config.train.seed + 1)  # fixed_sample_key: the same noise in every figure of this run
    samples = model.sample(key, 64, event_shape=config.model.event_shape, num_steps=config.train.eval_steps)
    save_sample_grid(np.asarray(samples), workdir / "samples.png", vocab_size=config.model.vocab_size)
    if model.latent_prior is not None:
        contexts = model.latent_prior.sample(seed=jax.random.fold_in(key, 1), sample_shape=(8,))
        times = jnp.linspace(0.0, 1.0, 101)
        gammas = jax.vmap(lambda t: model.gamma_fn(jnp.full((8,), t), contexts))(times)  # (T, S, *event)
        gammas = np.asarray(gammas).reshape(len(times), 8, -1).transpose(1, 0, 2)
        save_snr_curves(np.asarray(times), gammas, workdir / "snr_curves.png")


def train(config: RunConfig, workdir: str | pathlib.Path, *, resume: bool = False, progress: bool = True,
          devices=None, evaluate: bool = True, stop_after: int | None = None) -> dict:
    """Trains (or resumes) a run and returns its summary.

    Args:
        config: model and training configuration (written to ``<workdir>/config.json``).
        workdir: the run directory.
        resume: continue from the newest complete checkpoint (the stored configuration must match ``config``).
        progress: tqdm bars.
        devices: devices of the data-parallel mesh (default: all).
        evaluate: evaluate on the test split and draw figures at the end.
        stop_after: stop (after checkpointing) once this many steps are done, without evaluating.

    Returns:
        ``{"steps", "train_seconds", "test": {...}}``.

    Raises:
        ValueError: the directory holds another run (without ``resume``), or its configuration differs.
        NonFiniteLossError: the loss became NaN or infinite (the message names the step).
    """
    workdir = pathlib.Path(workdir)
    ckpt_dir = workdir / "checkpoints"
    if (workdir / "config.json").exists():
        if not resume:
            raise ValueError(f"`workdir` {workdir} already holds a run; pass `--resume` or choose a new directory.")
        stored = load_run_config(workdir)
        if stored.model != config.model or stored.train.dataset != config.train.dataset:
            raise ValueError(f"`--resume`: the configuration in {workdir / 'config.json'} differs from this one.")
        config = dataclasses.replace(config, train=dataclasses.replace(stored.train,
                                                                       num_steps=config.train.num_steps))
    save_run_config(config, workdir)
    train_cfg = config.train
    dataset = load_dataset(train_cfg.dataset, vocab_size=config.model.vocab_size)
    model = build_model(config.model, rngs=nnx.Rngs(train_cfg.seed))
    trainer = Trainer(model, train_cfg, mesh=make_mesh(devices))
    checkpointer = Checkpointer(ckpt_dir, max_to_keep=train_cfg.keep_checkpoints)
    state, step = trainer.init_state(), 0
    restored = checkpointer.restore_latest(state) if resume else None
    if restored is not None:
        step, state = restored
    metrics_path = workdir / "metrics.jsonl"
    _truncate_metrics(metrics_path, step)
    base_key = jax.random.key(train_cfg.seed)
    last = train_cfg.num_steps if stop_after is None else min(train_cfg.num_steps, stop_after)
    bar = tqdm(total=train_cfg.num_steps, initial=step, desc="train", disable=not progress, unit="step")
    start, first_step = time.perf_counter(), step
    while step < last:
        count = min(train_cfg.steps_per_call, last - step)
        batches = np.stack([get_batch(dataset.train, train_cfg.batch_size, seed=train_cfg.seed, step=step + j)
                            for j in range(count)])
        process_rows = _process_rows(batches.shape[1])
        state, metrics = trainer.step(state, batches[:, process_rows], base_key)
        bad = trainer.first_nonfinite(metrics, step + 1)
        if bad is not None:
            raise NonFiniteLossError(f"the loss became non-finite at step {bad}; the last good checkpoint "
                                     f"(steps {checkpointer.steps()}) in {ckpt_dir} is intact.")
        _append_metrics(metrics_path, step, metrics, time.perf_counter() - start)
        previous, step = step, step + count
        bar.update(count)
        bar.set_postfix(bpd=f"{float(metrics['bpd'][-1]):.3f}",
                        steps_per_s=f"{(step - first_step) / max(time.perf_counter() - start, 1e-9):.2f}")
        if step // train_cfg.checkpoint_every > previous // train_cfg.checkpoint_every or step == last:
            checkpointer.save(step, state)
    bar.close()
    summary = {"steps": step, "train_seconds": time.perf_counter() - start}
    if evaluate and step >= train_cfg.num_steps:
        summary["test"] = evaluate_run(config, trainer, state, dataset.test, progress=progress)
        _figures(config, trainer, state, workdir)
        (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    checkpointer.close()
    return summary


def _process_rows(batch_size: int) -> slice:
    """This process's contiguous rows of a global batch (all rows in a single-process run)."""
    per_process = batch_size // jax.process_count()
    return slice(jax.process_index() * per_process, (jax.process_index() + 1) * per_process)
