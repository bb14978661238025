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
from jax.experimental import multihost_utils
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
    """The loss became NaN or infinite; the message names the step. Checkpoints written before stay intact.

    Example:
        >>> try:  # a FloatingPointError, raised by `train`
        ...     raise NonFiniteLossError("the loss became non-finite at step 12")
        ... except FloatingPointError as err:
        ...     print(type(err).__name__, "-", err)
        NonFiniteLossError - the loss became non-finite at step 12
    """


def _append_metrics(path: pathlib.Path, first_step: int, metrics: dict, elapsed: float) -> None:
    host = {name: np.asarray(value) for name, value in metrics.items()}
    with path.open("a") as handle:
        for j in range(len(host["bpd"])):
            record = {"step": first_step + j + 1, **{k: float(v[j]) for k, v in host.items()}}
            record["time"] = elapsed
            handle.write(json.dumps(record) + "\n")


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
    """Drops metric lines past the restored step, so a resumed run's log reads like an uninterrupted one.

    A line that does not parse is the torn last write of a killed run, and is dropped too.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)  # atomic: a kill here leaves the old log or the new one


def restore_run(workdir: str | pathlib.Path, *, devices=None):
    """Rebuilds ``(config, trainer, state)`` of a run directory from its ``config.json`` and newest checkpoint.

    Raises:
        FileNotFoundError: ``workdir`` is not a run directory, or it holds no checkpoint.
        CheckpointError: it holds checkpoints, but none of them can be restored (each one's cause is warned).

    Example:
        >>> import tempfile
        >>> from mulan_ppl.train import Checkpointer, ModelConfig, TrainConfig, save_run_config
        >>> config = RunConfig(ModelConfig(kind="vdm", event_shape=(4, 4, 1), vocab_size=17, schedule="fixed_linear",
        ...                                channels=8, num_blocks=1, dropout=0.0, attention=False),
        ...                    TrainConfig(dataset="digits", batch_size=8))
        >>> with tempfile.TemporaryDirectory() as workdir:  # a run directory: config.json and a checkpoint
        ...     _ = save_run_config(config, workdir)
        ...     trainer = Trainer(build_model(config.model, rngs=nnx.Rngs(0)), config.train,
        ...                       mesh=make_mesh(jax.devices()[:1]))
        ...     checkpointer = Checkpointer(pathlib.Path(workdir) / "checkpoints")
        ...     checkpointer.save(0, trainer.init_state())
        ...     checkpointer.close()
        ...     restored, trainer, state = restore_run(workdir, devices=jax.devices()[:1])
        >>> restored == config, int(state.step), type(trainer.model(state.ema_params)).__name__
        (True, 0, 'VDM')
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
    """Test-split VLB bpd of the EMA parameters: the continuous-time bound and the ``T = eval_steps`` bound.

    Example:
        >>> from mulan_ppl.hvae import TopDownDiffusion
        >>> from mulan_ppl.schedules import FixedLinear
        >>> from mulan_ppl.train import ModelConfig, TrainConfig
        >>> class Den(nnx.Module):
        ...     def __init__(self): self.w = nnx.Param(jnp.zeros(()))
        ...     def __call__(self, z, t, g, c): return self.w * z
        >>> model = TopDownDiffusion(FixedLinear(gamma_min=-7.0, gamma_max=5.0), Den(), vocab_size=4)
        >>> config = RunConfig(ModelConfig(), TrainConfig(batch_size=4, eval_batch_size=4, eval_steps=8))
        >>> trainer = Trainer(model, config.train, mesh=make_mesh(jax.devices()[:1]))
        >>> test = np.array([[0, 3], [1, 2], [2, 2], [3, 0], [1, 1]])
        >>> results = evaluate_run(config, trainer, trainer.init_state(), test, progress=False)
        >>> sorted(results), results["vlb_T8"]["num_examples"]
        (['vlb_T8', 'vlb_continuous'], 5)
    """
    model = trainer.model(state.ema_params)
    key = jax.random.fold_in(jax.random.key(config.train.seed), 2**30)
    results = {}
    for name, num_steps in (("vlb_continuous", None), (f"vlb_T{config.train.eval_steps}", config.train.eval_steps)):
        estimate = evaluate_split(vlb_bpd_fn(model, num_steps=num_steps), test,
                                  batch_size=config.train.eval_batch_size, key=key, mesh=trainer.mesh,
                                  progress=progress, description=name)
        results[name] = dataclasses.asdict(estimate)
    return results


def _figures(config: RunConfig, trainer: Trainer, state, workdir: pathlib.Path, *, write: bool) -> None:
    # Every process computes (the parameters are global arrays); only a ``write`` process saves the figures.
    model = trainer.model(state.ema_params)
    key = jax.random.key(config.train.seed + 1)  # fixed_sample_key: the same noise in every figure of this run
    samples = model.sample(key, 64, event_shape=config.model.event_shape, num_steps=config.train.eval_steps)
    samples = np.asarray(samples)
    if write:
        save_sample_grid(samples, workdir / "samples.png", vocab_size=config.model.vocab_size)
    if model.latent_prior is not None:
        contexts = model.latent_prior.sample(seed=jax.random.fold_in(key, 1), sample_shape=(8,))
        times = jnp.linspace(0.0, 1.0, 101)
        gammas = jax.vmap(lambda t: model.gamma_fn(jnp.full((8,), t), contexts))(times)  # (T, S, *event)
        gammas = np.asarray(gammas).reshape(len(times), 8, -1).transpose(1, 0, 2)
        if write:
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
        CheckpointError: a checkpoint could not be written (disk full: the message names the step and the cause;
            the earlier checkpoints stay loadable), or, resuming, none of the existing ones can be read.

    Example:
        >>> import tempfile
        >>> from mulan_ppl.train import ModelConfig, TrainConfig
        >>> config = RunConfig(ModelConfig(kind="vdm", event_shape=(8, 8, 1), vocab_size=17, gamma_min=None,
        ...                                schedule="fixed_linear", channels=8, num_blocks=1, dropout=0.0,
        ...                                attention=False),
        ...                    TrainConfig(dataset="digits", batch_size=8, num_steps=1, warmup_steps=1))
        >>> with tempfile.TemporaryDirectory() as workdir:
        ...     summary = train(config, workdir, progress=False, evaluate=False, devices=jax.devices()[:1])
        ...     print(summary["steps"], sorted(path.name for path in pathlib.Path(workdir).iterdir()))
        1 ['checkpoints', 'config.json', 'metrics.jsonl']
    """
    workdir = pathlib.Path(workdir)
    ckpt_dir = workdir / "checkpoints"
    exists = (workdir / "config.json").exists()
    _sync_processes("mulan_ppl.train: checked the run directory")  # before process 0 writes config.json
    if exists:
        if not resume:
            raise ValueError(f"`workdir` {workdir} already holds a run; pass `--resume` or choose a new directory.")
        stored = load_run_config(workdir)
        if stored.model != config.model or stored.train.dataset != config.train.dataset:
            raise ValueError(f"`--resume`: the configuration in {workdir / 'config.json'} differs from this one.")
        config = dataclasses.replace(config, train=dataclasses.replace(stored.train,
                                                                       num_steps=config.train.num_steps))
    lead = jax.process_index() == 0  # in a multi-process run, process 0 writes the run directory's files
    if lead:
        save_run_config(config, workdir)
    train_cfg = config.train
    dataset = load_dataset(train_cfg.dataset, vocab_size=config.model.vocab_size)
    model = build_model(config.model, rngs=nnx.Rngs(train_cfg.seed))
    trainer = Trainer(model, train_cfg, mesh=make_mesh(devices))
    checkpointer, bar = Checkpointer(ckpt_dir, max_to_keep=train_cfg.keep_checkpoints), None
    try:
        state, step = trainer.init_state(), 0
        restored = checkpointer.restore_latest(state) if resume else None
        if restored is not None:
            step, state = restored
        metrics_path = workdir / "metrics.jsonl"
        if lead:
            _truncate_metrics(metrics_path, step)
        base_key = jax.random.key(train_cfg.seed)
        last = train_cfg.num_steps if stop_after is None else min(train_cfg.num_steps, stop_after)
        bar = tqdm(total=train_cfg.num_steps, initial=step, desc="train", disable=not progress, unit="step")
        start, first_step = time.perf_counter(), step
        while step < last:
            count = min(train_cfg.steps_per_call, last - step)
            batches = np.stack([get_batch(dataset.train, train_cfg.batch_size, seed=train_cfg.seed,
                                          step=step + j) for j in range(count)])
            # Every process builds the same global batch and feeds the rows its own devices hold.
            state, metrics = trainer.step(state, batches[:, trainer.process_rows(batches.shape[1])], base_key)
            bad = trainer.first_nonfinite(metrics, step + 1)
            if bad is not None:
                raise NonFiniteLossError(f"the loss became non-finite at step {bad}; the last good checkpoint "
                                         f"(steps {checkpointer.steps()}) in {ckpt_dir} is intact.")
            if lead:
                _append_metrics(metrics_path, step, metrics, time.perf_counter() - start)
            previous, step = step, step + count
            bar.update(count)
            bar.set_postfix(bpd=f"{float(metrics['bpd'][-1]):.3f}",
                            steps_per_s=f"{(step - first_step) / max(time.perf_counter() - start, 1e-9):.2f}")
            if step // train_cfg.checkpoint_every > previous // train_cfg.checkpoint_every or step == last:
                checkpointer.save(step, state)
        summary = {"steps": step, "train_seconds": time.perf_counter() - start}
        if evaluate and step >= train_cfg.num_steps:
            summary["test"] = evaluate_run(config, trainer, state, dataset.test, progress=progress)
            _figures(config, trainer, state, workdir, write=lead)
            if lead:
                (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
    finally:  # also when a step or a save fails: Orbax's threads end, the bar is closed
        if bar is not None:
            bar.close()
        checkpointer.close()
    return summary


def _sync_processes(name: str) -> None:
    """A barrier across the processes of a multi-process run (nothing in a single-process one)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)
