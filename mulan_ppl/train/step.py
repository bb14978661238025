"""The jitted, data-parallel train step: AdamW, EMA, optional gradient accumulation and several steps per call.

The model is split once into a static graph and its parameters (``nnx.split``); the step is a pure function of
``(state, batches, base_key)`` — the per-step key is ``fold_in(base_key, step)`` — compiled with :func:`jax.jit`
over a one-axis :class:`jax.sharding.Mesh` of every device: the batch is sharded along ``"data"``, the state is
replicated, and XLA inserts the gradient all-reduce. No ``pmap``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["TrainState", "Trainer", "ema_decay_at", "make_mesh", "make_optimizer"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """Everything a step changes: arrays only, so it checkpoints and shards as one pytree.

    Example:
        >>> state = TrainState(jnp.zeros((), jnp.int32), {"w": jnp.ones(2)}, (), {"w": jnp.ones(2)})
        >>> len(jax.tree.leaves(state)), int(jax.tree.map(lambda x: x + 1, state).step)
        (3, 1)
    """

    step: jax.Array  # int32 scalar: the number of optimiser steps taken
    params: nnx.State  # the model's nnx.Param leaves
    opt_state: optax.OptState
    ema_params: nnx.State  # exponential moving average of params (evaluation uses it)


def make_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A one-axis ``("data",)`` mesh over ``devices`` (default: every device of every process).

    Example:
        >>> mesh = make_mesh(jax.devices()[:1])
        >>> mesh.axis_names, mesh.devices.shape
        (('data',), (1,))
    """
    devices = list(jax.devices() if devices is None else devices)
    return jax.sharding.Mesh(np.asarray(devices), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW with a linear warm-up, decoupled weight decay and optional global-norm clipping (the paper's settings
    by default: lr 2e-4, betas (0.9, 0.99), weight decay 0.01, 100 warm-up steps).

    Example:
        >>> from mulan_ppl.train import TrainConfig
        >>> tx = make_optimizer(TrainConfig(learning_rate=0.1, warmup_steps=2, weight_decay=0.0))
        >>> params, grads = {"w": jnp.ones(2)}, {"w": jnp.array([1.0, -2.0])}
        >>> opt_state = tx.init(params)
        >>> for _ in range(3):  # the learning rate warms up 0, 0.05, 0.1; Adam's first step is -lr * sign(grad)
        ...     updates, opt_state = tx.update(grads, opt_state, params)
        ...     print(updates["w"].round(4))
        [-0.  0.]
        [-0.05  0.05]
        [-0.1  0.1]
    """
    warmup = max(int(config.warmup_steps), 1)
    learning_rate = optax.warmup_constant_schedule(0.0, config.learning_rate, warmup)
    adamw = optax.adamw(learning_rate, b1=config.beta1, b2=config.beta2, weight_decay=config.weight_decay)
    if config.grad_clip is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw)


def ema_decay_at(step: jax.Array, final_decay: float) -> jax.Array:
    r"""EMA decay warmed up as :math:`\min(d, (1 + n)/(10 + n))` after ``n`` steps.

    A fixed 0.9999 over a 1,000-step run would leave about 90% of the average on the initial parameters; the
    warm-up makes short runs' EMA meaningful and converges to ``final_decay`` in long ones.

    Example:
        >>> print(float(ema_decay_at(jnp.asarray(0), 0.9999)), float(ema_decay_at(jnp.asarray(10**7), 0.9999)))
        0.1 0.9999
    """
    step = jnp.asarray(step, jnp.float32)
    return jnp.minimum(final_decay, (1.0 + step) / (10.0 + step))


def _has_stream(model: nnx.Module, name: str) -> bool:
    return any(name in str(path) for path, _ in nnx.iter_graph(model) if isinstance(_, nnx.RngStream))


class Trainer:
    """Builds and runs the sharded train step of an NNX diffusion model.

    Args:
        model: an :class:`~mulan_ppl.hvae.TopDownDiffusion` (VDM, MuLAN, ...); its ``elbo_terms`` gives the loss
            (the batch mean of ``bpd``).
        config: a :class:`~mulan_ppl.train.config.TrainConfig`.
        mesh: the device mesh (default: every device).

    Raises:
        ValueError: the global batch is not divisible by the device count (times ``grad_accum``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from mulan_ppl.hvae import TopDownDiffusion
        >>> from mulan_ppl.schedules import FixedLinear
        >>> from mulan_ppl.train.config import TrainConfig
        >>> class Den(nnx.Module):
        ...     def __init__(self): self.w = nnx.Param(jnp.zeros(()))
        ...     def __call__(self, z, t, g, c): return self.w * z
        >>> model = TopDownDiffusion(FixedLinear(gamma_min=-7.0, gamma_max=5.0), Den(), vocab_size=4)
        >>> trainer = Trainer(model, TrainConfig(batch_size=8, warmup_steps=1, learning_rate=1e-2),
        ...                   mesh=make_mesh(jax.devices()[:1]))
        >>> state = trainer.init_state()
        >>> state, metrics = trainer.step(state, jnp.zeros((1, 8, 2), jnp.int32), jax.random.key(0))
        >>> int(state.step), metrics["bpd"].shape
        (1, (1,))
    """

    def __init__(self, model: nnx.Module, config, *, mesh: jax.sharding.Mesh | None = None):
        self.config = config
        self.mesh = make_mesh() if mesh is None else mesh
        num_devices = self.mesh.devices.size
        if config.batch_size % (num_devices * config.grad_accum) != 0:
            raise ValueError(
                f"`batch_size` ({config.batch_size}) must be divisible by the number of devices ({num_devices}) "
                f"times `grad_accum` ({config.grad_accum})."
            )
        self.graphdef, params, self.rest = nnx.split(model, nnx.Param, ...)
        self._initial_params = params
        self.has_dropout = _has_stream(model, "dropout")
        self.tx = make_optimizer(config)
        self.replicated = NamedSharding(self.mesh, P())
        self.data_sharding = NamedSharding(self.mesh, P(None, "data"))  # (steps_per_call, batch, ...)
        self._step = jax.jit(self._steps, in_shardings=(self.replicated, self.data_sharding, self.replicated),
                             out_shardings=(self.replicated, self.replicated), donate_argnums=0)

    # ----------------------------------------------------------------------------------------------------- state
    def init_state(self) -> TrainState:
        """The initial state (step 0, EMA equal to the parameters), replicated over the mesh."""
        params = jax.tree.map(jnp.copy, self._initial_params)  # fresh buffers: the step donates its input
        state = TrainState(jnp.zeros((), jnp.int32), params, self.tx.init(params),
                           jax.tree.map(jnp.copy, params))
        return jax.device_put(state, self.replicated)

    def model(self, params: nnx.State, *, train: bool = False) -> nnx.Module:
        """The model with ``params`` merged in, in train (dropout on) or eval mode."""
        model = nnx.merge(self.graphdef, params, self.rest, copy=True)
        model.train() if train else model.eval()
        return model

    # ------------------------------------------------------------------------------------------------------ step
    def _loss(self, params, batch, key):
        model = self.model(params, train=True)
        dropout_key, elbo_key = jax.random.split(key)
        if self.has_dropout:
            nnx.reseed(model, dropout=dropout_key)
        terms = model.elbo_terms(batch, elbo_key)
        return terms["bpd"].mean(), {name: value.mean() for name, value in terms.items()}

    def _grads(self, params, batch, key):
        def grad_fn(micro_batch, micro_key):
            (_, metrics), grads = jax.value_and_grad(self._loss, has_aux=True)(params, micro_batch, micro_key)
            return grads, metrics

        accum = self.config.grad_accum
        if accum == 1:
            return grad_fn(batch, key)
        micro = batch.reshape((accum, batch.shape[0] // accum) + batch.shape[1:])

        def body(total, inputs):
            i, micro_batch = inputs
            return jax.tree.map(jnp.add, total, grad_fn(micro_batch, jax.random.fold_in(key, i))), None

        shapes = jax.eval_shape(grad_fn, micro[0], key)
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        total, _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
        return jax.tree.map(lambda g: g / accum, total)

    def _one_step(self, state: TrainState, batch, base_key):
        key = jax.random.fold_in(base_key, state.step)
        grads, metrics = self._grads(state.params, batch, key)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        decay = ema_decay_at(state.step, self.config.ema_decay)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads))
        return TrainState(state.step + 1, params, opt_state, ema), metrics

    def _steps(self, state: TrainState, batches, base_key):
        if batches.shape[0] == 1:  # no loop: XLA:CPU runs this step body far slower inside a while loop
            state, metrics = self._one_step(state, batches[0], base_key)
            return state, jax.tree.map(lambda m: m[None], metrics)
        return jax.lax.scan(lambda s, b: self._one_step(s, b, base_key), state, batches)

    def step(self, state: TrainState, batches, base_key: jax.Array) -> tuple[TrainState, dict]:
        """Runs ``len(batches)`` optimiser steps in one call.

        Args:
            state: the current (replicated) state; donated.
            batches: integer data of shape ``(steps_per_call, batch_size, *event)``: a NumPy array (placed here,
                each process contributing its rows) or an already sharded ``jax.Array``.
            base_key: the run's key; step ``n`` uses ``fold_in(base_key, n)``.

        Returns:
            ``(new_state, metrics)`` with every metric of shape ``(steps_per_call,)``.
        """
        if not isinstance(batches, jax.Array):
            batches = self.shard_batches(np.asarray(batches))
        return self._step(state, batches, base_key)

    def process_rows(self, batch_size: int) -> slice:
        """The rows of a global batch of ``batch_size`` that this process's devices hold (all of them in a
        single-process run): a multi-process run gives each process ``batches[:, trainer.process_rows(B)]``.

        Raises:
            ValueError: this process's devices do not hold one contiguous block of rows (a mesh whose devices are
                not grouped by process).
        """
        indices = self.data_sharding.addressable_devices_indices_map((1, batch_size)).values()
        rows = sorted({index[1].indices(batch_size)[:2] for index in indices})
        if any(stop != start for (_, stop), (start, _) in itertools.pairwise(rows)):
            raise ValueError(f"`Trainer`: the devices of process {jax.process_index()} hold the rows {rows} of the "
                             "batch, not one contiguous block; order the mesh's devices by process.")
        return slice(rows[0][0], rows[-1][1])

    def shard_batches(self, local_batches: np.ndarray) -> jax.Array:
        """Places this process's rows (:meth:`process_rows`) of ``(steps, batch, ...)`` batches onto the mesh,
        sharded along the batch; the global batch is the processes' rows in process order."""
        return jax.make_array_from_process_local_data(self.data_sharding, local_batches)

    @staticmethod
    def first_nonfinite(metrics: dict, first_step: int) -> int | None:
        """The step number of the first non-finite loss in a call's metrics, or ``None``."""
        loss = np.asarray(metrics["bpd"])
        bad = np.flatnonzero(~np.isfinite(loss))
        return None if bad.size == 0 else first_step + int(bad[0])

    def num_params(self) -> int:
        return sum(math.prod(x.shape) for x in jax.tree.leaves(self._initial_params))
