"""Sharding overhead: the train step over 1, 2, 4 and 8 virtual CPU devices at a fixed global batch.

Virtual CPU devices share the machine's cores, so this measures what data parallelism costs (partitioning, the
gradient all-reduce, per-device dispatch), not how it scales. The step is the CPU preset's MuLAN on digits with a
global batch of 32; the times are interleaved across device counts and reported as ratios to one device. Alongside:
two steps from the same initial state, batch and key on n devices against one device (the L2 norm of the parameter
difference over that of the change the steps make), the equivalence the tests assert. Runs in a child interpreter
that sets ``jax_num_cpu_devices``.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys

DEVICE_COUNTS = (1, 2, 4, 8)
_ROOT = pathlib.Path(__file__).resolve().parents[1]


def run(*, repeats: int = 7, batch_size: int = 32, log=print) -> dict:
    log(f"  sharding: train step on {', '.join(map(str, DEVICE_COUNTS))} virtual CPU devices, global batch "
        f"{batch_size} ({repeats} rounds, child process)")
    out = subprocess.run([sys.executable, "-m", "benchmarks.sharding", "--child", str(repeats), str(batch_size)],
                         cwd=_ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"the sharding benchmark's child process failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(repeats: int, batch_size: int) -> dict:
    import jax

    jax.config.update("jax_num_cpu_devices", max(DEVICE_COUNTS))
    import numpy as np
    from flax import nnx

    from benchmarks.timing import interleaved, ratio, summary
    from mulan_ppl.models import build_model
    from mulan_ppl.train import Trainer, get_batch, load_dataset, make_mesh

    sys.path.insert(0, str(_ROOT / "examples"))
    from presets import preset

    config = preset("cpu")
    train_config = dataclasses.replace(config.train, batch_size=batch_size, steps_per_call=1)
    digits = load_dataset("digits")
    batches = get_batch(digits.train, batch_size, seed=0, step=0)[None]
    key = jax.random.key(0)
    calls, first, initial = {}, {}, None
    for n in DEVICE_COUNTS:
        trainer = Trainer(build_model(config.model, rngs=nnx.Rngs(0)), train_config,
                          mesh=make_mesh(jax.devices()[:n]))
        sharded = trainer.shard_batches(batches)
        if initial is None:
            initial = [np.asarray(x) for x in jax.tree.leaves(trainer.init_state().params)]
        state, _ = trainer.step(trainer.init_state(), sharded, key)  # the warm-up's first step has rate 0
        state, _ = trainer.step(state, sharded, key)
        first[n] = [np.asarray(x) for x in jax.tree.leaves(state.params)]
        holder = {"state": state}

        def call(trainer=trainer, holder=holder, sharded=sharded):
            holder["state"], metrics = trainer.step(holder["state"], sharded, key)
            return metrics

        calls[n] = call
    times = interleaved({str(n): calls[n] for n in DEVICE_COUNTS}, repeats)

    def norm(tree):
        return float(np.sqrt(sum(np.sum(np.square(x.astype(np.float64))) for x in tree)))

    def difference(a, b):
        return norm([x - y for x, y in zip(a, b, strict=True)])

    update = difference(first[1], initial)
    return {
        "global_batch": batch_size, "repeats": repeats,
        "step_s": {str(n): summary(times[str(n)]) for n in DEVICE_COUNTS},
        "ratio_to_one_device": {str(n): ratio(times[str(n)], times["1"]) for n in DEVICE_COUNTS},
        # ||p_n - p_1|| / ||p_1 - p_0||: the discrepancy against what the two steps changed
        "param_difference_over_update": {str(n): difference(first[n], first[1]) / update
                                         for n in DEVICE_COUNTS[1:]},
        "update_over_params": update / norm(initial),
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(_child(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print(json.dumps(run(), indent=2))
