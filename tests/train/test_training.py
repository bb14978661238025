"""The train step, checkpoints and the run loop: sharding equivalence, resumption, NaN stops, fallbacks."""

import dataclasses
import json
import pathlib
import warnings

import jax
import numpy as np
import pytest
from flax import nnx

from mulan_ppl.models import build_model
from mulan_ppl.train import (
    Checkpointer,
    ModelConfig,
    NonFiniteLossError,
    RunConfig,
    TrainConfig,
    Trainer,
    ema_decay_at,
    get_batch,
    load_dataset,
    load_run_config,
    make_mesh,
    restore_run,
    train,
)
from mulan_ppl.train import loop as loop_module

TINY = RunConfig(
    preset="test",
    model=ModelConfig(kind="vdm", event_shape=(8, 8, 1), vocab_size=17, parameterization="v", gamma_min=None,
                      channels=8, num_blocks=1, dropout=0.0, attention=False, schedule="fixed_linear"),
    train=TrainConfig(dataset="digits", batch_size=8, num_steps=6, learning_rate=1e-3, warmup_steps=2,
                      checkpoint_every=2, keep_checkpoints=5, eval_batch_size=120, eval_steps=8),
)


def _params(state):
    return [np.asarray(x) for x in jax.tree.leaves(state.params)]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_sharded_step_equals_single_device_step(digits):
    batches = np.stack([get_batch(digits.train, 8, seed=0, step=j) for j in range(2)])
    results = []
    for devices in (jax.devices()[:1], jax.devices()[:4]):
        model = build_model(TINY.model, rngs=nnx.Rngs(0))
        trainer = Trainer(model, dataclasses.replace(TINY.train, steps_per_call=2), mesh=make_mesh(devices))
        state, metrics = trainer.step(trainer.init_state(), batches, jax.random.key(0))
        results.append((_params(state), np.asarray(metrics["bpd"])))
    (single, single_bpd), (sharded, sharded_bpd) = results
    np.testing.assert_allclose(sharded_bpd, single_bpd, rtol=1e-5)
    for a, b in zip(single, sharded):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(a, p) for a, p in
               zip(single, _params(Trainer(build_model(TINY.model, rngs=nnx.Rngs(0)), TINY.train,
                                           mesh=make_mesh(jax.devices()[:1])).init_state())))


def test_batch_not_divisible_by_devices_is_a_value_error():
    model = build_model(TINY.model, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(model, dataclasses.replace(TINY.train, batch_size=6), mesh=make_mesh(jax.devices()[:4]))


def test_ema_decay_warms_up():
    decays = np.asarray([ema_decay_at(np.asarray(n), 0.9999) for n in (0, 1, 10, 10**6)])
    np.testing.assert_allclose(decays[:3], [1 / 10, 2 / 11, 11 / 20], rtol=1e-6)
    assert decays[3] == pytest.approx(0.9999)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny trained run directory shared by the tests that need a checkpoint."""
    workdir = tmp_path_factory.mktemp("tiny_run")
    summary = train(TINY, workdir, progress=False, devices=jax.devices()[:1])
    return workdir, summary


def test_run_directory_holds_everything(tiny_run):
    workdir, summary = tiny_run
    assert load_run_config(workdir) == TINY
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 7))
    assert (workdir / "samples.png").stat().st_size > 0
    test = summary["test"]
    assert set(test) == {"vlb_continuous", "vlb_T8"}
    for result in test.values():
        assert result["num_examples"] == 360 and np.isfinite(result["mean"]) and result["ci95"] > 0
    assert json.loads((workdir / "summary.json").read_text())["steps"] == 6
    assert Checkpointer(workdir / "checkpoints").steps() == [2, 4, 6]


def test_resumed_run_equals_uninterrupted_run(tiny_run, tmp_path):
    workdir, _ = tiny_run
    interrupted = tmp_path / "interrupted"
    train(TINY, interrupted, progress=False, devices=jax.devices()[:1], stop_after=4, evaluate=False)
    train(TINY, interrupted, resume=True, progress=False, devices=jax.devices()[:1], evaluate=False)
    _, _, full = restore_run(workdir, devices=jax.devices()[:1])
    _, _, resumed = restore_run(interrupted, devices=jax.devices()[:1])
    assert int(resumed.step) == int(full.step) == 6
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-6, atol=0)
    full_log = (workdir / "metrics.jsonl").read_text().splitlines()
    resumed_log = (interrupted / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "time"}  # noqa: E731
    assert [strip(x) for x in resumed_log] == [strip(x) for x in full_log]


def test_half_written_and_corrupted_steps_are_skipped(tiny_run, tmp_path):
    workdir, _ = tiny_run
    copy = tmp_path / "ckpt"
    import shutil

    shutil.copytree(workdir / "checkpoints", copy)
    (copy / "8.orbax-checkpoint-tmp-123").mkdir()  # a write killed before its rename
    newest = copy / "6"
    for path in newest.rglob("*"):
        if path.is_file() and path.stat().st_size > 0 and "metadata" not in path.name:
            path.write_bytes(b"garbage")  # corrupt the newest complete step
    _, trainer, state = restore_run(workdir, devices=jax.devices()[:1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        step, restored = Checkpointer(copy).restore_latest(state)
    assert step == 4
    assert any("step 6" in str(w.message) for w in caught)


def test_nonfinite_loss_stops_naming_the_step_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    original = loop_module.Trainer.step

    def poisoned(self, state, batches, base_key):
        state, metrics = original(self, state, batches, base_key)
        if int(state.step) == 3:
            metrics = dict(metrics, bpd=metrics["bpd"] * np.nan)
        return state, metrics

    monkeypatch.setattr(loop_module.Trainer, "step", poisoned)
    with pytest.raises(NonFiniteLossError, match="step 3"):
        train(TINY, tmp_path / "nan", progress=False, devices=jax.devices()[:1])
    assert Checkpointer(tmp_path / "nan" / "checkpoints").steps() == [2]


def test_existing_run_without_resume_is_refused(tiny_run):
    workdir, _ = tiny_run
    with pytest.raises(ValueError, match="resume"):
        train(TINY, workdir, progress=False)


def test_restore_run_of_a_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config"):
        restore_run(pathlib.Path(tmp_path) / "nothing")
