"""Atomic, verified, resumable checkpoints of a :class:`~mulan_ppl.train.step.TrainState` with Orbax.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed mid-write leaves
no step that looks finished (the temporary directory is ignored, and removed when the next run opens the
directory). Each step also stores a fingerprint of every leaf, checked on restore: Orbax keeps no checksums, and a
flipped byte in a data file otherwise restores silently as a wrong value. Restoring walks the steps from the newest
down and falls back past any step that fails to load or to verify, naming it and the cause in a warning.

In a multi-process run every process calls :meth:`Checkpointer.save` and :meth:`Checkpointer.restore` with its
part of the same global arrays; Orbax coordinates the writes (the directory must be shared by all hosts).
"""

from __future__ import annotations

import hashlib
import pathlib
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

__all__ = ["CheckpointError", "Checkpointer"]

_FINGERPRINT = "fingerprint"  # the item holding the (num_leaves, 2) uint32 fingerprints of a step


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (disk full, permissions: the earlier checkpoints are untouched) or read
    back (corrupted, truncated, or written by another model); the message names the step and the cause.

    Example:
        >>> try:  # a RuntimeError: catch it to fall back, e.g., to an earlier run directory
        ...     raise CheckpointError("step 10: could not write the checkpoint (No space left on device)")
        ... except RuntimeError as err:
        ...     print(type(err).__name__, "-", err)
        CheckpointError - step 10: could not write the checkpoint (No space left on device)
    """


def _as_items(leaves) -> dict:
    return {f"{i:05d}": leaf for i, leaf in enumerate(leaves)}


def _host_value(x) -> np.ndarray:
    """The whole value of a leaf on this host (every process gets the same bytes)."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        if x.is_fully_replicated:
            return np.asarray(x.addressable_data(0))
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def _fingerprints(leaves) -> np.ndarray:
    """The first 8 bytes of each leaf's BLAKE2b digest, as ``uint32`` of shape ``(len(leaves), 2)``.

    Orbax keeps no checksums: a flipped byte in a data file restores silently as a wrong value. The digests,
    stored in the same step, catch that on restore.
    """
    rows = [np.frombuffer(hashlib.blake2b(np.ascontiguousarray(_host_value(x)).reshape(-1).view(np.uint8),
                                          digest_size=8).digest(), np.uint32) for x in leaves]
    return np.stack(rows) if rows else np.zeros((0, 2), np.uint32)


def _cause(err: BaseException) -> str:
    """A one-line description of ``err`` (Orbax appends the whole TensorStore spec to read errors)."""
    text = str(err).split(" See full TensorStore details", 1)[0].split(" [tensorstore_spec=", 1)[0]
    text = text.strip().splitlines()
    text = text[0] if text else ""
    return f"{type(err).__name__}: {text[:300]}"


class Checkpointer:
    """Saves and restores the train state under ``<workdir>/checkpoints/<step>``.

    The state is stored as its flat list of leaves with their fingerprints; restoring needs a state of the same
    structure (the run's ``config.json`` rebuilds it), whose shardings the restored arrays take.

    Args:
        directory: the checkpoint directory.
        max_to_keep: number of newest checkpoints kept.

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> ckpt = Checkpointer(tempfile.mkdtemp(), max_to_keep=2)
        >>> ckpt.save(3, {"w": jnp.ones(2)})
        >>> step, state = ckpt.restore_latest({"w": jnp.zeros(2)})
        >>> step, state["w"].tolist()
        (3, [1.0, 1.0])
    """

    def __init__(self, directory: str | pathlib.Path, *, max_to_keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_handlers=ocp.StandardCheckpointHandler())  # reads metadata

    def steps(self) -> list[int]:
        """Completed steps, oldest first (a step whose write did not finish is not one)."""
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def save(self, step: int, state) -> None:
        """Writes ``state`` as step ``step`` and waits until it is complete.

        A step of that number already there (one skipped as unreadable when the run resumed) is replaced.

        Raises:
            CheckpointError: the write failed (the message names the step and the cause, e.g. "No space left on
                device"); the step is not recorded and earlier checkpoints stay loadable.
        """
        leaves = jax.tree.leaves(state)
        try:
            items = {**_as_items(leaves), _FINGERPRINT: _fingerprints(leaves)}
            if int(step) in self.steps():
                self.manager.delete(int(step))
            self.manager.save(int(step), args=ocp.args.StandardSave(items), force=True)
            self.manager.wait_until_finished()
        except Exception as err:  # TensorStore reports a full disk as ValueError, not OSError
            raise CheckpointError(f"saving the checkpoint of step {step} in {self.directory} failed "
                                  f"({_cause(err)}); the earlier steps are intact.") from err

    def restore(self, step: int, like):
        """Restores step ``step`` into the structure (and shardings) of ``like`` and verifies its fingerprints.

        Raises:
            CheckpointError: the step is missing, unreadable, does not fit ``like``, or does not match the
                fingerprints written with it; the message names the step and the cause.
        """
        paths, treedef = jax.tree_util.tree_flatten_with_path(like)
        leaves = [leaf for _, leaf in paths]
        abstract = {name: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
                    for name, x in _as_items(leaves).items()}
        try:
            stored = self.manager.item_metadata(int(step))
            verified = stored is None or _FINGERPRINT in stored.tree  # False: written before fingerprints existed
            if verified:
                abstract[_FINGERPRINT] = np.zeros((len(leaves), 2), np.uint32)  # read as NumPy, on every process
            restored = self.manager.restore(int(step), args=ocp.args.StandardRestore(abstract))
        except Exception as err:  # Orbax and TensorStore raise bare Exception, ValueError, ...
            raise CheckpointError(f"checkpoint step {step} in {self.directory} could not be restored "
                                  f"({_cause(err)}).") from err
        values = [restored[name] for name in sorted(restored) if name != _FINGERPRINT]
        if verified:
            expected = np.asarray(restored[_FINGERPRINT])
            actual = _fingerprints(values)
            bad = [jax.tree_util.keystr(paths[i][0]) for i in np.flatnonzero((expected != actual).any(axis=1))]
            if bad:
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                raise CheckpointError(f"checkpoint step {step} in {self.directory} is corrupted: the values of "
                                      f"{shown} do not match the fingerprints written with them.")
        return jax.tree.unflatten(treedef, values)

    def restore_latest(self, like):
        """``(step, state)`` of the newest step that loads and verifies, or ``None`` when there is no step.

        A step that fails is skipped with a ``RuntimeWarning`` naming it and the cause; the next older one is tried.

        Raises:
            CheckpointError: there are steps, but none of them can be restored.
        """
        steps = self.steps()
        for step in reversed(steps):
            try:
                return step, self.restore(step, like)
            except CheckpointError as err:
                warnings.warn(f"{err} Falling back to an older step.", RuntimeWarning, stacklevel=2)
        if steps:
            raise CheckpointError(f"none of the checkpoints {steps} in {self.directory} can be restored (see the "
                                  "warnings above); move the directory aside to start the run afresh.")
        return None

    def close(self) -> None:
        self.manager.close()
