"""Train VDM or MuLAN: the paper's CIFAR-10 experiment (``--preset paper``) or a small CPU run (``--preset cpu``).

    python examples/train_cifar10.py                                   # the paper's MuLAN on CIFAR-10
    python examples/train_cifar10.py --preset cpu --workdir runs/demo  # digits, a few minutes on a CPU
    python examples/train_cifar10.py --workdir runs/c10 --resume       # continue a run where it stopped

Every device JAX sees trains data-parallel (the global batch is split over them). CIFAR-10 is read with
``tfds.data_source`` from a prepared ``TFDS_DATA_DIR``; see the README for the preparation steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper", help="paper (default) or cpu")
    parser.add_argument("--model", default=None, help="vdm or mulan (default: the preset's)")
    parser.add_argument("--dataset", default=None, help="cifar10, digits or PATH.npz (default: the preset's)")
    parser.add_argument("--vocab-size", type=int, default=None, help="levels of an .npz dataset (default 256)")
    parser.add_argument("--workdir", default="runs/train", help="run directory (config, checkpoints, figures)")
    parser.add_argument("--steps", type=int, default=None, help="total training steps")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch size")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --workdir")
    parser.add_argument("--cpu-devices", type=int, default=None,
                        help="number of virtual CPU devices (testing data parallelism on one machine)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    group = parser.add_argument_group("multi-process training (one process per host; see the README)")
    group.add_argument("--coordinator", default=os.environ.get("JAX_COORDINATOR_ADDRESS"),
                       help="HOST:PORT of process 0 (default $JAX_COORDINATOR_ADDRESS); starts jax.distributed")
    group.add_argument("--num-processes", type=int, default=_env_int("JAX_NUM_PROCESSES"),
                       help="number of processes (default $JAX_NUM_PROCESSES, else detected from SLURM/Open MPI)")
    group.add_argument("--process-id", type=int, default=_env_int("JAX_PROCESS_ID"),
                       help="this process's index, 0 .. num_processes - 1 (default $JAX_PROCESS_ID, else detected)")
    return parser.parse_args(argv)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return None if value in (None, "") else int(value)


def _start_distributed(args, jax) -> None:
    """Joins the multi-process run named by the flags (or a SLURM job); nothing for a single process."""
    if args.coordinator is None and args.num_processes is None and not os.environ.get("SLURM_JOB_ID"):
        return
    # Collectives between the CPU devices of different processes (GPUs use NCCL). JAX 0.10 defaults to gloo too.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)
    if jax.default_backend() == "cpu":
        # Gloo gives up when the processes reach a collective more than 30 s apart, and JAX's persistent
        # compilation cache serves only process 0: with it, process 0 would start a step while the others compile.
        jax.config.update("jax_enable_compilation_cache", False)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    if args.cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)
    _start_distributed(args, jax)

    from presets import preset

    from mulan_ppl.train import CheckpointError, DatasetNotPreparedError, NonFiniteLossError, load_dataset, train

    try:
        config = preset(args.preset, model=args.model, dataset=args.dataset, batch_size=args.batch_size,
                        num_steps=args.steps, seed=args.seed)
        if args.dataset is not None or args.vocab_size is not None:
            data = load_dataset(config.train.dataset, vocab_size=args.vocab_size)
            config = dataclasses.replace(config, model=dataclasses.replace(
                config.model, event_shape=tuple(data.train.shape[1:]), vocab_size=data.vocab_size))
        print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; preset {config.preset}, "
              f"model {config.model.kind}, dataset {config.train.dataset}", flush=True)
        summary = train(config, args.workdir, resume=args.resume, progress=not args.no_progress)
    except (ValueError, FileNotFoundError, DatasetNotPreparedError, NonFiniteLossError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"training time: {summary['train_seconds']:.1f} s for {summary['steps']} steps")
    for name, result in summary.get("test", {}).items():
        print(f"test {name}: {result['mean']:.4f} ± {result['ci95']:.4f} bpd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
