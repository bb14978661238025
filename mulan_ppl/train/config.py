"""The run directory's configuration: what a training run was, written beside its checkpoints.

Evaluation scripts and notebooks rebuild the model from ``<workdir>/config.json`` alone. The file carries a format
version; a reader refuses a version it does not know rather than guessing.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

__all__ = ["CONFIG_FORMAT_VERSION", "ModelConfig", "RunConfig", "TrainConfig", "load_run_config", "save_run_config"]

CONFIG_FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model (see :func:`mulan_ppl.models.build_model`).

    Attributes:
        kind: ``"vdm"`` or ``"mulan"``.
        event_shape: data shape ``(H, W, C)``.
        vocab_size: integer levels of the data.
        parameterization: ``"eps"``, ``"v"`` or ``"x"``.
        gamma_min, gamma_max: schedule endpoints (``None``: derived from the vocabulary for ``gamma_min``).
        channels, num_blocks, dropout, attention: denoiser size.
        conditioning: ``"mean_gamma"`` (reference) or ``"gamma_map"``.
        fourier_exponents: Fourier-feature exponents (``None``: derived from the vocabulary).
        schedule: VDM: ``"learned_scalar"`` or ``"fixed_linear"``; MuLAN: ``"polynomial"``.
        learn_endpoints: learn the schedule's endpoints (VDM's CIFAR-10 setting).
        schedule_objective: VDM: ``"elbo"`` or ``"variance"``.
        head: MuLAN schedule head, ``"mlp"`` (the paper's) or ``"low_rank"``.
        head_width, head_depth, head_rank: head size.
        num_categories, k: the k-hot latent (paper: 50, 15).
        latent: ``"khot"`` (exact) or ``"perturbed_topk"`` (the paper's sampler with the surrogate KL).
        encoder_channels, encoder_blocks: the encoder's size.
        bf16: bfloat16 computation in the networks (training speed on accelerators; evaluation of a bf16 model
            still runs the ELBO algebra in float32).
        remat: gradient checkpointing of the UNet blocks (memory of the paper-size model).

    Example:
        >>> config = ModelConfig(kind="vdm", event_shape=(8, 8, 1), vocab_size=17, schedule="fixed_linear")
        >>> config.parameterization, dataclasses.replace(config, channels=16).channels
        ('v', 16)
    """

    kind: str = "mulan"
    event_shape: tuple[int, ...] = (32, 32, 3)
    vocab_size: int = 256
    parameterization: str = "v"
    gamma_min: float | None = -13.3
    gamma_max: float = 5.0
    channels: int = 128
    num_blocks: int = 32
    dropout: float = 0.1
    attention: bool = True
    conditioning: str = "mean_gamma"
    fourier_exponents: tuple[int, ...] | None = None
    schedule: str = "polynomial"
    learn_endpoints: bool = False
    schedule_objective: str = "elbo"
    head: str = "mlp"
    head_width: int = 3072
    head_depth: int = 2
    head_rank: int = 16
    num_categories: int = 50
    k: int = 15
    latent: str = "khot"
    encoder_channels: int = 64
    encoder_blocks: int = 4
    bf16: bool = False
    remat: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping of a run.

    Attributes:
        dataset: ``"cifar10"``, ``"digits"`` or a path to an ``.npz`` file.
        batch_size: global batch size (split over every device).
        num_steps: total optimiser steps.
        learning_rate, beta1, beta2, weight_decay, warmup_steps, grad_clip: AdamW (the paper: 2e-4, 0.9, 0.99,
            0.01, 100 warm-up steps); ``grad_clip`` ``None`` disables clipping.
        ema_decay: the EMA's final decay; the decay is warmed up as ``min(ema_decay, (1 + step) / (10 + step))``.
        steps_per_call: optimiser steps per jitted call (a ``lax.scan``).
        grad_accum: micro-batches per step.
        seed: the run's seed; every key is derived from it and the step.
        checkpoint_every, keep_checkpoints, log_every: bookkeeping.
        eval_batch_size, eval_steps: evaluation batch and the discrete bound's T (the paper reports T = 128).

    Example:
        >>> config = TrainConfig(dataset="digits", batch_size=64, num_steps=700)
        >>> config.learning_rate, config.eval_steps
        (0.0002, 128)
    """

    dataset: str = "cifar10"
    batch_size: int = 128
    num_steps: int = 10_000_000
    learning_rate: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.99
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float | None = None
    ema_decay: float = 0.9999
    steps_per_call: int = 1
    grad_accum: int = 1
    seed: int = 0
    checkpoint_every: int = 10_000
    keep_checkpoints: int = 3
    log_every: int = 100
    eval_batch_size: int = 256
    eval_steps: int = 128


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """A model and its training, as stored in ``config.json``.

    Example:
        >>> config = RunConfig(ModelConfig(kind="vdm"), TrainConfig(dataset="digits"))
        >>> config.preset, config.model.kind, config.train.dataset
        ('custom', 'vdm', 'digits')
    """

    model: ModelConfig
    train: TrainConfig
    preset: str = "custom"


def _tuples(values: dict[str, Any], cls) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"`{cls.__name__}`: unknown fields {sorted(unknown)} in the run configuration.")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def save_run_config(config: RunConfig, workdir: str | pathlib.Path) -> pathlib.Path:
    """Writes ``<workdir>/config.json`` atomically (write then rename) and returns its path.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as workdir:
        ...     print(save_run_config(RunConfig(ModelConfig(), TrainConfig()), workdir).name)
        config.json
    """
    path = pathlib.Path(workdir) / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": CONFIG_FORMAT_VERSION, **dataclasses.asdict(config)}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def load_run_config(workdir: str | pathlib.Path) -> RunConfig:
    """Reads ``<workdir>/config.json``.

    Raises:
        FileNotFoundError: the directory or its ``config.json`` does not exist.
        ValueError: an unknown format version or unknown fields.

    Example:
        >>> import tempfile
        >>> config = RunConfig(ModelConfig(event_shape=(8, 8, 1), vocab_size=17), TrainConfig(dataset="digits"))
        >>> with tempfile.TemporaryDirectory() as workdir:
        ...     _ = save_run_config(config, workdir)
        ...     print(load_run_config(workdir) == config)
        True
    """
    path = pathlib.Path(workdir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"`load_run_config`: no run configuration at {path}; is `workdir` a run directory?")
    payload = json.loads(path.read_text())
    version = payload.pop("format_version", None)
    if version != CONFIG_FORMAT_VERSION:
        raise ValueError(f"`load_run_config`: {path} has format version {version!r}; this library reads "
                         f"version {CONFIG_FORMAT_VERSION}.")
    return RunConfig(
        model=ModelConfig(**_tuples(payload["model"], ModelConfig)),
        train=TrainConfig(**_tuples(payload["train"], TrainConfig)),
        preset=payload.get("preset", "custom"),
    )
