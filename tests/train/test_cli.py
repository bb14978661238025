"""examples/train_cifar10.py end to end: one-line errors in process; the multi-process flags and their environment
variables; fresh interpreters (slow) for SIGKILL and resume, eight virtual devices, and CIFAR-10 under
tfds.testing.mock_data or missing (two processes: test_multiprocess.py)."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "train_cifar10.py"
sys.path.insert(0, str(ROOT / "examples"))

import train_cifar10  # noqa: E402


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--preset", "huge"], "--preset"),
        (["--preset", "tiny", "--dataset", "/nonexistent/data.npz"], "/nonexistent/data.npz"),
        (["--preset", "tiny", "--batch-size", "12"], "divisible"),
        (["--preset", "tiny", "--model", "gan"], "--model"),
    ],
)
def test_bad_command_line_input_is_a_one_line_error(argv, match, capsys, tmp_path):
    assert train_cifar10.main([*argv, "--workdir", str(tmp_path / "run"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and match in err and "\n" not in err and "Traceback" not in err


def test_multiprocess_flags_fall_back_to_the_environment_variables(monkeypatch):
    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    args = train_cifar10.parse_args([])
    assert (args.coordinator, args.num_processes, args.process_id) == (None, None, None)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "host0:1234")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("JAX_PROCESS_ID", "3")
    args = train_cifar10.parse_args([])
    assert (args.coordinator, args.num_processes, args.process_id) == ("host0:1234", 4, 3)
    args = train_cifar10.parse_args(["--coordinator", "host1:99", "--num-processes", "2", "--process-id", "0"])
    assert (args.coordinator, args.num_processes, args.process_id) == ("host1:99", 2, 0)


def _cli(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, str(SCRIPT), "--no-progress", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **(env or {})},
                            **kwargs)


def _params(workdir):
    from mulan_ppl.train import restore_run

    _, _, state = restore_run(workdir, devices=jax.devices()[:1])
    return int(state.step), [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.mark.slow
def test_sigkill_after_a_checkpoint_then_resume_equals_an_uninterrupted_run(tmp_path):
    full = _cli("--preset", "tiny", "--workdir", str(tmp_path / "full"), "--cpu-devices", "1")
    assert full.wait(timeout=900) == 0, full.stderr.read()
    run = tmp_path / "killed"
    proc = _cli("--preset", "tiny", "--workdir", str(run), "--cpu-devices", "1")
    deadline = time.time() + 900
    while not (run / "checkpoints" / "2").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    resumed = _cli("--preset", "tiny", "--workdir", str(run), "--cpu-devices", "1", "--resume")
    out, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err
    step_full, leaves_full = _params(tmp_path / "full")
    step_resumed, leaves_resumed = _params(run)
    assert step_full == step_resumed == 6
    for a, b in zip(leaves_full, leaves_resumed):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_cli_trains_on_eight_virtual_devices(tmp_path):
    proc = _cli("--preset", "tiny", "--workdir", str(tmp_path / "run"), "--cpu-devices", "8", "--steps", "2")
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert "devices: 8 x cpu" in out and "test vlb_continuous" in out


@pytest.mark.slow
def test_cifar10_under_mock_data_trains_two_steps_and_evaluates(tmp_path):
    code = (
        "import sys, tensorflow_datasets as tfds; sys.argv = sys.argv[:1]; sys.path.insert(0, 'examples');"
        "import train_cifar10;"
        "ctx = tfds.testing.mock_data(num_examples=16);"
        "ctx.__enter__();"
        f"rc = train_cifar10.main(['--preset', 'tiny', '--dataset', 'cifar10', '--steps', '2', '--no-progress',"
        f" '--cpu-devices', '1', '--workdir', r'{tmp_path / 'run'}']);"
        "sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    assert "dataset cifar10" in proc.stdout and "test vlb_continuous" in proc.stdout


@pytest.mark.slow
def test_missing_cifar10_exits_nonzero_with_the_preparation_message(tmp_path):
    proc = _cli("--preset", "tiny", "--dataset", "cifar10", "--workdir", str(tmp_path / "run"),
                env={"TFDS_DATA_DIR": str(tmp_path / "empty")})
    out, err = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "TFDS_DATA_DIR" in err and "Traceback" not in err
