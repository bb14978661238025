"""Training utilities: data sources, the sharded train step, checkpoints, evaluation, baselines and figures.

:func:`train` runs a whole experiment into a run directory (``examples/train_cifar10.py`` is its command line);
the pieces are usable on their own: :class:`Trainer` (jitted data-parallel step with AdamW and EMA),
:class:`Checkpointer` (atomic Orbax checkpoints with fallback), :func:`evaluate_split` (one deterministic pass over a
split), :func:`load_dataset` (CIFAR-10 through ``tfds.data_source``, scikit-learn's digits, ``.npz`` files).
"""

from mulan_ppl.train.baselines import all_baselines, format_bpd_table, histogram_bpd
from mulan_ppl.train.checkpoint import CheckpointError, Checkpointer
from mulan_ppl.train.config import ModelConfig, RunConfig, TrainConfig, load_run_config, save_run_config
from mulan_ppl.train.data import DataSource, DatasetNotPreparedError, eval_batches, get_batch, load_dataset
from mulan_ppl.train.evaluate import BpdEstimate, evaluate_split, ode_bpd_fn, vlb_bpd_fn
from mulan_ppl.train.loop import NonFiniteLossError, evaluate_run, restore_run, train
from mulan_ppl.train.plots import save_sample_grid, save_snr_curves
from mulan_ppl.train.step import TrainState, Trainer, ema_decay_at, make_mesh, make_optimizer

__all__ = [
    "BpdEstimate",
    "CheckpointError",
    "Checkpointer",
    "DataSource",
    "DatasetNotPreparedError",
    "ModelConfig",
    "NonFiniteLossError",
    "RunConfig",
    "TrainConfig",
    "TrainState",
    "Trainer",
    "all_baselines",
    "ema_decay_at",
    "eval_batches",
    "evaluate_run",
    "evaluate_split",
    "format_bpd_table",
    "get_batch",
    "histogram_bpd",
    "load_dataset",
    "load_run_config",
    "make_mesh",
    "make_optimizer",
    "ode_bpd_fn",
    "restore_run",
    "save_run_config",
    "save_sample_grid",
    "save_snr_curves",
    "train",
    "vlb_bpd_fn",
]
