"""Multi-process data parallelism with JAX's distributed runtime, on one machine (slow: fresh interpreters).

``examples/train_cifar10.py`` runs as two processes (``--coordinator localhost:PORT --num-processes 2 --process-id
i``, two virtual CPU devices each, gloo collectives), each feeding its half of the same global batch. Checked: the
metrics and the parameters after 4 steps equal those of one process training over four virtual devices on the same
global batches (to 1e-5); both processes write their part of the Orbax checkpoints, and process 0 alone the run
directory's files (one metrics line per step); a second 2-process launch, configured through the environment
variables instead of the flags, resumes from the checkpoint to step 6 and evaluates, again equal to the
single-process run.

The two runs sum the per-device gradients in different orders (gloo between processes, XLA within one), so they
agree only up to float32 rounding, and AdamW turns a gradient that is rounding noise (a bias whose exact gradient
is about zero) into a step of the order of the learning rate. Such an element can differ by 5e-5 after 6 steps,
so the parameters are compared as one vector (relative L2 distance of the parameters, their EMA and the optimiser
state), the per-step metrics element by element.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from mulan_ppl.train import Checkpointer, restore_run, train

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_cifar10.py"
CACHE = os.environ.get("MULAN_PPL_JAX_CACHE", str(ROOT / ".jax_cache"))
sys.path.insert(0, str(ROOT / "examples"))

from presets import preset

FOUR_DEVICES = jax.devices()[:4]
RTOL, ATOL = 1e-5, 1e-7


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _two_processes(workdir: pathlib.Path, *args: str, via_environment: bool = False) -> None:
    """Runs the tiny preset as two processes of two virtual CPU devices each and waits for both."""
    port, procs = _free_port(), []
    base = {k: v for k, v in os.environ.items()
            if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_JOB_ID")}
    base.update(JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    try:
        for i in range(2):
            command = [sys.executable, str(SCRIPT), "--preset", "tiny", "--workdir", str(workdir), "--cpu-devices",
                       "2", "--no-progress", *args]
            env = dict(base)
            if via_environment:
                env.update(JAX_COORDINATOR_ADDRESS=f"localhost:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i))
            else:
                command += ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)]
            log = (workdir.parent / f"{workdir.name}-{'env' if via_environment else 'flags'}-{i}.log").open("w")
            procs.append((subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log))
        for proc, log in procs:
            proc.wait(timeout=900)
            log.close()
            output = pathlib.Path(log.name).read_text()
            assert proc.returncode == 0, output[-5000:]
            assert "devices: 4 x cpu" in output
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _log(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _assert_close_states(actual, expected):
    """Parameters, EMA and optimiser state each within relative L2 distance ``RTOL``; the step equal."""
    assert int(actual.step) == int(expected.step)
    for part in ("params", "ema_params", "opt_state"):
        a, b = (np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(getattr(state, part))])
                for state in (actual, expected))
        assert np.linalg.norm(a - b) <= RTOL * np.linalg.norm(b), part


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume_like_one_process_on_four_devices(tmp_path):
    reference = tmp_path / "one_process"
    expected_summary = train(preset("tiny", num_steps=6), reference, progress=False, devices=FOUR_DEVICES)
    run = tmp_path / "two_processes"

    _two_processes(run, "--steps", "4")
    checkpoints = run / "checkpoints"
    assert Checkpointer(checkpoints).steps() == [2, 4]
    assert (checkpoints / "4" / "default" / "ocdbt.process_1" / "manifest.ocdbt").exists()  # process 1 wrote too
    _, _, like = restore_run(reference, devices=FOUR_DEVICES)
    _assert_close_states(Checkpointer(checkpoints).restore(4, like),
                         Checkpointer(reference / "checkpoints").restore(4, like))

    _two_processes(run, "--steps", "6", "--resume", via_environment=True)
    assert Checkpointer(checkpoints).steps() == [2, 4, 6]
    _assert_close_states(restore_run(run, devices=FOUR_DEVICES)[2], like)
    log, expected_log = _log(run), _log(reference)
    assert [line["step"] for line in log] == list(range(1, 7))  # written once, by process 0, and resumed cleanly
    for line, expected in zip(log, expected_log, strict=True):
        for name, value in expected.items():
            if name != "time":
                assert line[name] == pytest.approx(value, rel=RTOL, abs=ATOL), (line["step"], name)
    summary = json.loads((run / "summary.json").read_text())
    for name, result in expected_summary["test"].items():
        assert summary["test"][name]["mean"] == pytest.approx(result["mean"], rel=RTOL)
        assert summary["test"][name]["num_examples"] == result["num_examples"] == 360
