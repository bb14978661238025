"""Fault injection into training runs: kills, half-written and corrupted checkpoints, a full disk.

Checked: a run killed (SIGKILL) at seeded random points five times in a row and resumed each time ends in exactly
the state of an uninterrupted run (slow: fresh interpreters); a step whose write was killed before Orbax's rename is
ignored, both simulated (a temporary directory holding a partial copy) and real (SIGKILL while a patched finalizer
sleeps, slow); a corrupted checkpoint file, including a single flipped byte that Orbax itself restores without
complaint, is reported by a warning naming the step and the cause and the run falls back to the previous step; when
every step is unreadable the resume stops with a ``CheckpointError`` instead of silently starting over; a full disk
while saving (``OSError(ENOSPC)``, and the ``ValueError`` TensorStore really raises) stops the run with a
``CheckpointError`` naming the step and the cause, and the previous checkpoint stays loadable; a metrics line torn
by a kill is dropped on resume.
"""

import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.serialization import serialization as orbax_serialization

from mulan_ppl.train import (
    Checkpointer,
    CheckpointError,
    restore_run,
    save_run_config,
    train,
)
from test_training import TINY  # the same run configuration, so the persistent compilation cache serves both files

# After a failed read or write, Orbax's abandoned coroutines report "Event loop is closed" when collected.
pytestmark = pytest.mark.filterwarnings("ignore:Exception ignored in:pytest.PytestUnraisableExceptionWarning")

ROOT = pathlib.Path(__file__).resolve().parents[2]
CACHE = os.environ.get("MULAN_PPL_JAX_CACHE", str(ROOT / ".jax_cache"))

ONE_DEVICE = jax.devices()[:1]


def _train(workdir, **kwargs):
    return train(TINY, workdir, progress=False, devices=ONE_DEVICE, evaluate=False, **kwargs)


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(state)]


def _log(workdir):
    """metrics.jsonl without the wall-clock field."""
    lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def _assert_same_run(workdir, reference):
    """The final state and the metrics log of ``workdir`` equal the uninterrupted ``reference`` run's, bitwise."""
    checkpointer = Checkpointer(pathlib.Path(workdir) / "checkpoints")
    assert checkpointer.steps()[-1] == TINY.train.num_steps
    state = checkpointer.restore(TINY.train.num_steps, reference.like)
    assert int(state.step) == TINY.train.num_steps
    for a, b in zip(reference.final, _leaves(state), strict=True):
        np.testing.assert_array_equal(b, a)
    assert _log(workdir) == _log(reference.workdir)


class Reference:
    """An uninterrupted run (checkpoints at steps 2, 4 and 6), its final leaves, and a state to restore into."""

    def __init__(self, workdir: pathlib.Path):
        self.workdir = workdir
        _train(workdir)
        self.like = restore_run(workdir, devices=ONE_DEVICE)[2]
        self.final = _leaves(self.like)

    def leaves_at(self, step: int) -> list[np.ndarray]:
        return _leaves(Checkpointer(self.workdir / "checkpoints").restore(step, self.like))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return Reference(tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def interrupted(reference, tmp_path_factory):
    """The directory the same run leaves when stopped after step 4 (``stop_after=4``: checkpoints 2 and 4, metrics
    of steps 1-4), cut from the reference run; tests work on copies (:func:`_copy`)."""
    workdir = pathlib.Path(shutil.copytree(reference.workdir, tmp_path_factory.mktemp("interrupted") / "run"))
    shutil.rmtree(workdir / "checkpoints" / "6")
    metrics = workdir / "metrics.jsonl"
    metrics.write_text("".join(line + "\n" for line in metrics.read_text().splitlines()[:4]))
    return workdir


def _copy(run: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(shutil.copytree(run, tmp_path / "run"))


def _data_files(step_dir: pathlib.Path) -> list[pathlib.Path]:
    """The files of a step's TensorStore databases (array values and B-tree nodes)."""
    return sorted(p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d")


def _flip_byte(path: pathlib.Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: pathlib.Path, offset: int) -> None:
    path.write_bytes(path.read_bytes()[:offset])


def _damage_step(step_dir: pathlib.Path) -> None:
    """Flips the first and the middle byte of every data file of a step. (Some files hold only superseded B-tree
    nodes that a restore never reads, so one flipped byte somewhere need not matter; every file that is read
    fails at its first byte.)"""
    for path in _data_files(step_dir):
        for offset in {0, path.stat().st_size // 2}:
            _flip_byte(path, offset)


# --------------------------------------------------------------------------------------------- half-written steps
def test_half_written_step_is_ignored_and_the_run_resumes_from_the_one_before(reference, interrupted, tmp_path):
    run = _copy(interrupted, tmp_path)
    # What a kill during the write of step 6 leaves: the step's temporary directory, complete up to a partial data
    # file (it even holds Orbax's commit_success.txt files), never renamed to "6".
    tmp_step = run / "checkpoints" / "6.orbax-checkpoint-tmp-1700000000"
    shutil.copytree(run / "checkpoints" / "4", tmp_step)
    for path in _data_files(tmp_step):
        _truncate(path, path.stat().st_size // 3)
    assert Checkpointer(run / "checkpoints").steps() == [2, 4]
    _train(run, resume=True)
    _assert_same_run(run, reference)
    assert not list((run / "checkpoints").glob("*tmp*")), "the half-written step was not cleaned up"


def test_torn_metrics_line_of_a_killed_run_is_dropped_on_resume(reference, interrupted, tmp_path):
    run = _copy(interrupted, tmp_path)
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 5, "bpd": 4.91')  # killed in the middle of writing the line of step 5
    summary = _train(run, resume=True, stop_after=4)  # restores step 4, rewrites the log, trains nothing
    assert summary["steps"] == 4
    assert _log(run) == _log(reference.workdir)[:4]


# ------------------------------------------------------------------------------------------------------ corruption
@pytest.fixture
def two_steps(tmp_path):
    """A checkpoint directory with steps 1 and 2 of a state whose large array is random bits, which TensorStore
    stores verbatim (they do not compress); returns the directory and the two states."""
    rng = np.random.default_rng(0)
    states = [{"step": np.int32(step), "w": rng.integers(0, 2**32, 100_000, dtype=np.uint32)} for step in (1, 2)]
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    for step, state in zip((1, 2), states, strict=True):
        checkpointer.save(step, jax.tree.map(jax.numpy.asarray, state))
    checkpointer.close()
    return tmp_path / "checkpoints", states


def _stored_bytes_of(directory: pathlib.Path, values: np.ndarray) -> tuple[pathlib.Path, int]:
    """The file holding ``values`` verbatim, and the offset of a byte in the middle of them."""
    raw = values.tobytes()
    needle = raw[len(raw) // 2: len(raw) // 2 + 64]
    for path in _data_files(directory):
        offset = path.read_bytes().find(needle)
        if offset >= 0:
            return path, offset + len(needle) // 2
    raise AssertionError(f"the values are not stored verbatim under {directory}")


@pytest.mark.parametrize("corrupt", [_flip_byte, _truncate], ids=["flipped-byte", "truncated"])
def test_corrupted_checkpoint_file_names_the_step_and_falls_back_to_the_previous_one(two_steps, corrupt):
    directory, (first, second) = two_steps
    corrupt(*_stored_bytes_of(directory / "2", second["w"]))
    like = {"step": jax.numpy.zeros((), jax.numpy.int32), "w": jax.numpy.zeros(100_000, jax.numpy.uint32)}
    checkpointer = Checkpointer(directory)
    with pytest.raises(CheckpointError, match=r"checkpoint step 2 .*(corrupted: the values of \['w'\]|could not be "
                                              r"restored \(\w+: .+\))"):
        checkpointer.restore(2, like)
    with pytest.warns(RuntimeWarning, match=r"checkpoint step 2 .*Falling back to an older step") as caught:
        step, state = checkpointer.restore_latest(like)
    assert len(caught) == 1
    assert step == 1
    np.testing.assert_array_equal(np.asarray(state["w"]), first["w"])


def test_a_flipped_byte_orbax_restores_silently_is_caught_by_the_fingerprints(two_steps):
    directory, (_, second) = two_steps
    _flip_byte(*_stored_bytes_of(directory / "2", second["w"]))
    checkpointer = Checkpointer(directory)
    stored = {"00000": jax.ShapeDtypeStruct((), jax.numpy.int32), "00001": jax.ShapeDtypeStruct((100_000,), "uint32"),
              "fingerprint": np.zeros((2, 2), np.uint32)}
    unchecked = checkpointer.manager.restore(2, args=ocp.args.StandardRestore(stored))  # Orbax alone: no error
    assert (np.asarray(unchecked["00001"]) != second["w"]).sum() == 1
    with pytest.raises(CheckpointError, match=r"step 2 .* is corrupted: the values of \['w'\] do not match"):
        checkpointer.restore(2, jax.tree.map(jax.numpy.asarray, second))


def test_resume_after_a_corrupted_newest_step_continues_from_the_previous_one(reference, interrupted, tmp_path):
    run = _copy(interrupted, tmp_path)
    _damage_step(run / "checkpoints" / "4")
    with pytest.warns(RuntimeWarning, match="step 4"):
        _train(run, resume=True)
    _assert_same_run(run, reference)


def test_resume_with_every_step_corrupted_is_a_checkpoint_error_not_a_fresh_start(interrupted, tmp_path):
    run = _copy(interrupted, tmp_path)
    for step in (2, 4):
        _damage_step(run / "checkpoints" / str(step))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(CheckpointError, match=r"none of the checkpoints \[2, 4\]"):
            _train(run, resume=True)
    assert Checkpointer(run / "checkpoints").steps() == [2, 4]  # nothing overwritten


# ------------------------------------------------------------------------------------------------------- disk full
def _fail_writes_of_step(monkeypatch, step: int, error: Exception) -> None:
    """Makes Orbax's array writer raise ``error`` for the arrays of step ``step``."""
    original = orbax_serialization.async_serialize_from_host

    async def failing(slices, tensorstore_spec, **kwargs):
        if f"/{step}.orbax-checkpoint-tmp" in json.dumps(tensorstore_spec):
            raise error
        return await original(slices, tensorstore_spec, **kwargs)

    monkeypatch.setattr(orbax_serialization, "async_serialize_from_host", failing)


def test_disk_full_while_saving_stops_the_run_naming_the_step_and_keeps_the_previous_checkpoint(
        reference, interrupted, tmp_path, monkeypatch):
    run = _copy(interrupted, tmp_path)
    error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _fail_writes_of_step(monkeypatch, 6, error)
    with pytest.raises(CheckpointError, match=r"step 6 .*No space left on device") as caught:
        _train(run, resume=True)
    assert caught.value.__cause__ is error
    monkeypatch.undo()
    checkpointer = Checkpointer(run / "checkpoints")
    assert checkpointer.steps() == [2, 4]
    for a, b in zip(reference.leaves_at(4), _leaves(checkpointer.restore(4, reference.like)), strict=True):
        np.testing.assert_array_equal(b, a)
    _train(run, resume=True)  # once there is space again, the run continues as if nothing had happened
    _assert_same_run(run, reference)


def test_disk_full_as_tensorstore_reports_it_is_a_checkpoint_error(tmp_path, monkeypatch):
    # TensorStore raises ValueError, not OSError, on a really full file system (measured on a 200 KB tmpfs).
    error = ValueError('RESOURCE_EXHAUSTED: Error writing "00000/0" in OCDBT database: Failed to write 970058 bytes '
                       "to file 7: No space left on device [os_error_code='28']")
    checkpointer = Checkpointer(tmp_path)
    checkpointer.save(1, {"w": jax.numpy.ones(3)})
    _fail_writes_of_step(monkeypatch, 2, error)
    with pytest.raises(CheckpointError, match=r"step 2 .*No space left on device") as caught:
        checkpointer.save(2, {"w": jax.numpy.zeros(3)})
    assert caught.value.__cause__ is error
    assert checkpointer.steps() == [1]
    assert checkpointer.restore_latest({"w": jax.numpy.zeros(3)})[1]["w"].tolist() == [1.0, 1.0, 1.0]


# ------------------------------------------------------------------------------------------- real kills (slow)
# The driver sees as many virtual devices as this process (conftest.py) and trains on the first, like `_train`:
# XLA:CPU's numerics depend on the client's device count even for a one-device mesh.
_DRIVER = """
import sys, pathlib, time
import jax
config_dir, workdir, sleep_at, num_devices = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
jax.config.update("jax_num_cpu_devices", num_devices)
from mulan_ppl.train import load_run_config, train
if sleep_at:
    from orbax.checkpoint._src.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize

    async def sleepy_finalize(self):  # the step's files are written; it sleeps before the rename that commits it
        if self.get_final().name == str(sleep_at):
            (pathlib.Path(workdir) / "writer_sleeps").touch()
            time.sleep(600)
        return await finalize(self)

    atomicity.AtomicRenameTemporaryPath.finalize = sleepy_finalize
train(load_run_config(config_dir), workdir, resume=True, progress=False, evaluate=False, devices=jax.devices()[:1])
"""


def _launch(config_dir, workdir, *, sleep_at=0):
    """Starts the driver; its output goes to a file (a full pipe would stall it), read back by :func:`_output`."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": CACHE,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
    log = pathlib.Path(config_dir) / f"driver-{time.time_ns()}.log"
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-c", _DRIVER, str(config_dir), str(workdir), str(sleep_at),
                                 str(jax.device_count())], cwd=ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT)
    proc.log = log
    return proc


def _output(proc) -> str:
    return proc.log.read_text()[-5000:]


def _kill(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended on its own:\n{_output(proc)}"


def _last_logged_step(path: pathlib.Path, since: float) -> int:
    """The newest step in ``metrics.jsonl`` written by the current process (0 while there is none)."""
    try:
        if path.stat().st_mtime < since:
            return 0
        lines = path.read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, ValueError, KeyError):  # not there yet, or a line half written
        return 0


@pytest.mark.slow
def test_five_sigkills_at_random_points_then_resumes_equal_an_uninterrupted_run(reference, tmp_path):
    config_dir, run = tmp_path / "config", tmp_path / "run"
    save_run_config(TINY, config_dir)
    rng = np.random.default_rng(20240611)
    kills = []
    for _ in range(5):
        # A random point: a random delay after a random logged step, i.e. inside a step, a metrics write, a
        # checkpoint write or the start-up of the next call.
        after_step, delay = int(rng.integers(1, 5)), float(rng.uniform(0.0, 0.4))
        started, proc = time.time(), _launch(config_dir, run)
        deadline = started + 600
        while _last_logged_step(run / "metrics.jsonl", started) < after_step:
            assert proc.poll() is None, f"the run ended before it could be killed:\n{_output(proc)}"
            assert time.time() < deadline, "no progress within 600 s"
            time.sleep(0.01)
        time.sleep(delay)
        _kill(proc)
        kills.append((after_step, round(delay, 3), Checkpointer(run / "checkpoints").steps()))
    proc = _launch(config_dir, run)
    assert proc.wait(timeout=600) == 0, _output(proc)
    assert any(steps for *_, steps in kills), f"no kill came after a checkpoint: {kills}"
    _assert_same_run(run, reference)


@pytest.mark.slow
def test_sigkill_while_a_checkpoint_is_written_leaves_no_step_and_the_run_resumes(reference, tmp_path):
    config_dir, run = tmp_path / "config", tmp_path / "run"
    save_run_config(TINY, config_dir)
    proc = _launch(config_dir, run, sleep_at=4)
    deadline = time.time() + 600
    while not (run / "writer_sleeps").exists():
        assert proc.poll() is None, _output(proc)
        assert time.time() < deadline, "the writer did not reach step 4 within 600 s"
        time.sleep(0.02)
    _kill(proc)
    (half_written,) = (run / "checkpoints").glob("4.orbax-checkpoint-tmp*")
    assert (half_written / "default" / "commit_success.txt").exists()  # every file there, only the rename missing
    assert Checkpointer(run / "checkpoints").steps() == [2]
    _train(run, resume=True)
    _assert_same_run(run, reference)
