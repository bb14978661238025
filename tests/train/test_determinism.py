"""Determinism on CPU: the same seed and configuration give bitwise-identical runs.

Two runs of the tiny configuration, data-parallel over four virtual devices (so the gradient all-reduce is part of
it), write identical ``metrics.jsonl`` files (every logged value, all but the wall-clock field), return identical
test-bpd summaries and end in bitwise-identical parameters; a different seed changes them. (Across fresh
interpreters the slow kill/resume tests of ``test_faults.py`` compare a subprocess's log and state bitwise with an
in-process run.) Which settings break this on GPUs is documented in the README ("Determinism").
"""

import dataclasses
import json

import jax
import numpy as np

from mulan_ppl.train import ModelConfig, RunConfig, TrainConfig, restore_run, train

CONFIG = RunConfig(
    preset="test",
    model=ModelConfig(kind="vdm", event_shape=(8, 8, 1), vocab_size=17, parameterization="v", gamma_min=None,
                      channels=8, num_blocks=1, dropout=0.0, attention=False, schedule="fixed_linear"),
    train=TrainConfig(dataset="digits", batch_size=8, num_steps=3, learning_rate=1e-3, warmup_steps=2,
                      checkpoint_every=3, eval_batch_size=120, eval_steps=8),
)
DEVICES = jax.devices()[:4]


def _log(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time"} for line in lines]


def _run(workdir):
    summary = train(CONFIG, workdir, progress=False, devices=DEVICES)
    _, _, state = restore_run(workdir, devices=DEVICES)
    return summary["test"], _log(workdir), [np.asarray(x) for x in jax.tree.leaves(state)]


def test_same_seed_and_config_give_bitwise_identical_metrics_summary_and_parameters(tmp_path):
    first_test, first_log, first_state = _run(tmp_path / "first")
    second_test, second_log, second_state = _run(tmp_path / "second")
    assert [line["step"] for line in first_log] == [1, 2, 3]
    assert second_log == first_log  # JSON writes floats with repr, which round-trips: equal means bitwise equal
    assert second_test == first_test
    for a, b in zip(first_state, second_state, strict=True):
        np.testing.assert_array_equal(b, a)

    other_seed = dataclasses.replace(CONFIG, train=dataclasses.replace(CONFIG.train, seed=1))
    train(other_seed, tmp_path / "other", progress=False, devices=DEVICES, evaluate=False, stop_after=1)
    assert _log(tmp_path / "other")[0]["bpd"] != first_log[0]["bpd"]
