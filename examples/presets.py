"""Named configurations of examples/train_cifar10.py (name -> RunConfig); the library itself has no registry."""

from __future__ import annotations

import dataclasses

from mulan_ppl.train.config import ModelConfig, RunConfig, TrainConfig

# The paper's CIFAR-10 MuLAN (Sahoo et al. 2024, appendix): v-parameterization, 32 blocks x 128 channels, dropout 0.1,
# polynomial schedule with the 2 x 3072 head, k-hot latent m = 50, k = 15, AdamW 2e-4, batch 128, EMA 0.9999.
PAPER = RunConfig(
    preset="paper",
    model=ModelConfig(kind="mulan", event_shape=(32, 32, 3), vocab_size=256, parameterization="v",
                      gamma_min=-13.3, gamma_max=5.0, channels=128, num_blocks=32, dropout=0.1, attention=True,
                      fourier_exponents=(6, 7), head="mlp", head_width=3072, head_depth=2, num_categories=50, k=15,
                      encoder_channels=64, encoder_blocks=4),
    train=TrainConfig(dataset="cifar10", batch_size=128, num_steps=10_000_000, checkpoint_every=10_000,
                      log_every=100, eval_batch_size=256, eval_steps=128),
)

# A small real run on 2 CPU cores: digits (8x8, 17 levels), a small UNet, MuLAN with m = 16, k = 4.
# gamma_min and the Fourier exponents are derived from the vocabulary (None).
CPU = RunConfig(
    preset="cpu",
    model=ModelConfig(kind="mulan", event_shape=(8, 8, 1), vocab_size=17, parameterization="v", gamma_min=None,
                      gamma_max=5.0, channels=32, num_blocks=2, dropout=0.0, attention=False,
                      fourier_exponents=None, head="mlp", head_width=128, head_depth=2, num_categories=16, k=4,
                      encoder_channels=16, encoder_blocks=2),
    train=TrainConfig(dataset="digits", batch_size=64, num_steps=700, learning_rate=2e-3, warmup_steps=100,
                      steps_per_call=1, checkpoint_every=500, log_every=10, eval_batch_size=120, eval_steps=128),
)

# Seconds per run: the test suite's preset (kill/resume, virtual devices, mock CIFAR-10 through the command line).
TINY = RunConfig(
    preset="tiny",
    model=ModelConfig(kind="mulan", event_shape=(8, 8, 1), vocab_size=17, parameterization="v", gamma_min=None,
                      channels=8, num_blocks=1, dropout=0.0, attention=False, head="low_rank", head_width=16,
                      head_rank=4, num_categories=6, k=2, encoder_channels=8, encoder_blocks=1),
    train=TrainConfig(dataset="digits", batch_size=8, num_steps=6, learning_rate=1e-3, warmup_steps=2,
                      checkpoint_every=2, keep_checkpoints=5, log_every=1, eval_batch_size=120, eval_steps=8),
)

PRESETS = {"paper": PAPER, "cpu": CPU, "tiny": TINY}


def preset(name: str, *, model: str | None = None, dataset: str | None = None, vocab_size: int | None = None,
           event_shape: tuple[int, ...] | None = None, **train_overrides) -> RunConfig:
    """The named preset with command-line overrides applied."""
    if name not in PRESETS:
        raise ValueError(f"`--preset` must be one of {sorted(PRESETS)}; got {name!r}.")
    config = PRESETS[name]
    model_cfg, train_cfg = config.model, config.train
    if model is not None:
        if model not in ("vdm", "mulan"):
            raise ValueError(f"`--model` must be 'vdm' or 'mulan'; got {model!r}.")
        schedule = "polynomial" if model == "mulan" else "learned_scalar"
        model_cfg = dataclasses.replace(model_cfg, kind=model, schedule=schedule)
    if dataset is not None:
        train_cfg = dataclasses.replace(train_cfg, dataset=dataset)
    if vocab_size is not None:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=vocab_size)
    if event_shape is not None:
        model_cfg = dataclasses.replace(model_cfg, event_shape=tuple(event_shape))
    overrides = {k: v for k, v in train_overrides.items() if v is not None}
    return dataclasses.replace(config, model=model_cfg, train=dataclasses.replace(train_cfg, **overrides))
