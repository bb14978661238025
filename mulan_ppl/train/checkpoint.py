"""Atomic, resumable checkpoints of a :class:`~mulan_ppl.train.step.TrainState` with Orbax.

Orbax writes each step into a temporary directory and renames it when complete, so a run killed mid-write leaves
no step that looks finished. Restoring walks the steps from the newest down and falls back past any step that fails
to load (a corrupted or half-copied directory), naming it in a warning.
"""

from __future__ import annotations

import pathlib
import warnings

import jax
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpointer"]


class CheckpointError(RuntimeError):
    """Saving a checkpoint failed (disk full, permissions); the previous checkpoints are untouched."""


def _as_items(state) -> dict:
    return {f"{i:05d}": leaf for i, leaf in enumerate(jax.tree.leaves(state))}


class Checkpointer:
    """Saves and restores the train state under ``<workdir>/checkpoints/<step>``.

    The state is stored as its flat list of leaves; restoring needs a state of the same structure (the run's
    ``config.json`` rebuilds it), whose shardings the restored arrays take.

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
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        """Completed steps, oldest first."""
        return sorted(self.manager.all_steps(read=True))

    def save(self, step: int, state) -> None:
        """Writes ``state`` as step ``step`` and waits until it is complete.

        Raises:
            CheckpointError: the write failed (the message names the step); earlier checkpoints stay loadable.
        """
        try:
            self.manager.save(int(step), args=ocp.args.StandardSave(_as_items(state)), force=True)
            self.manager.wait_until_finished()
        except OSError as err:
            raise CheckpointError(f"saving the checkpoint of step {step} in {self.directory} failed: {err}") from err

    def restore(self, step: int, like):
        """Restores step ``step`` into the structure (and shardings) of ``like``."""
        leaves, treedef = jax.tree.flatten(like)
        abstract = {f"{i:05d}": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
                    for i, x in enumerate(leaves)}
        restored = self.manager.restore(int(step), args=ocp.args.StandardRestore(abstract))
        return jax.tree.unflatten(treedef, [restored[k] for k in sorted(restored)])

    def restore_latest(self, like):
        """``(step, state)`` of the newest step that loads, or ``None`` when there is none.

        A step that fails to load is skipped with a warning naming it; the next older one is tried.
        """
        for step in reversed(self.steps()):
            try:
                return step, self.restore(step, like)
            except Exception as err:  # noqa: BLE001 (any failure to read a step means: fall back to an older one)
                warnings.warn(f"checkpoint step {step} in {self.directory} could not be restored ({err!r}); "
                              f"falling back to an older step.", RuntimeWarning, stacklevel=2)
        return None

    def close(self) -> None:
        self.manager.close()
