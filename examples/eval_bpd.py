"""Test-set bits per dimension of a trained run: the variational bound and the probability-flow ODE bound.

    python examples/eval_bpd.py --workdir runs/demo                      # VLB and ODE side by side
    python examples/eval_bpd.py --workdir runs/c10 --method ode --importance-samples 20   # the paper's setting

The EMA parameters of the newest checkpoint in ``--workdir`` are evaluated on the run's test split, one
deterministic pass (batch ``i`` uses the key ``fold_in(key, i)``), sharded over every device JAX sees. The ODE bound
uses truncated-normal dequantization derived from the schedule's gamma_0 and the vocabulary, the auxiliary latent
sampled from q(c|x) with its exact KL, and K importance samples.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

METHODS = ("vlb", "ode")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="run directory written by train_cifar10.py")
    parser.add_argument("--method", nargs="+", default=list(METHODS), help="vlb, ode or both (default both)")
    parser.add_argument("--importance-samples", type=int, default=1, help="K for the ODE bound (paper: 20)")
    parser.add_argument("--dequantization", default="truncated_normal", help="truncated_normal or uniform")
    parser.add_argument("--latent-importance", action="store_true",
                        help="importance-weight over the auxiliary latent too")
    parser.add_argument("--trace", default="hutchinson", help="hutchinson (default) or exact")
    parser.add_argument("--rtol", type=float, default=1e-5)
    parser.add_argument("--atol", type=float, default=1e-5)
    parser.add_argument("--vlb-steps", type=int, default=None, help="T for the VLB (default: continuous time)")
    parser.add_argument("--batch-size", type=int, default=None, help="evaluation batch (default: the run's)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N test examples only")
    parser.add_argument("--seed", type=int, default=0, help="key of the evaluation pass")
    parser.add_argument("--cpu-devices", type=int, default=None, help="number of virtual CPU devices")
    parser.add_argument("--output", default=None, help="write the results as JSON to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _check_args(args) -> dict:
    """Checks everything that needs no model, so bad options fail in a second; returns the ODE options."""
    from mulan_ppl.likelihood import check_ode_bound_options

    unknown = [m for m in args.method if m not in METHODS]
    if unknown:
        raise ValueError(f"`--method` must name {' or '.join(METHODS)}; got {', '.join(unknown)}.")
    options = dict(num_importance_samples=args.importance_samples, dequantization=args.dequantization,
                   latent_importance=args.latent_importance, trace=args.trace, rtol=args.rtol, atol=args.atol)
    try:
        check_ode_bound_options(**options)
    except ValueError as err:  # name the command-line flag, not the keyword
        message = str(err).replace("`ode_bound`: ", "")
        for flag in ("importance_samples", "dequantization", "trace", "rtol", "atol"):
            message = message.replace(f"`num_{flag}`", f"`--{flag.replace('_', '-')}`")
            message = message.replace(f"`{flag}`", f"`--{flag}`")
        raise ValueError(message) from None
    if args.limit is not None and args.limit < 2:
        raise ValueError(f"`--limit` must be at least 2 (an interval needs two examples); got {args.limit}.")
    if not pathlib.Path(args.workdir).is_dir():
        raise FileNotFoundError(f"`--workdir` {args.workdir} does not exist (expected a run directory of "
                                f"train_cifar10.py).")
    return options


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax

    if args.cpu_devices is not None:
        jax.config.update("jax_num_cpu_devices", args.cpu_devices)

    from mulan_ppl.train import (CheckpointError, DatasetNotPreparedError, evaluate_split, load_dataset,
                                 ode_bpd_fn, restore_run, vlb_bpd_fn)

    try:
        options = _check_args(args)
        config, trainer, state = restore_run(args.workdir)
        test = load_dataset(config.train.dataset).test
    except (ValueError, FileNotFoundError, DatasetNotPreparedError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.limit is not None:
        test = test[: args.limit]
    batch_size = args.batch_size or config.train.eval_batch_size
    model = trainer.model(state.ema_params)
    key = jax.random.key(args.seed)
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; model {config.model.kind}, "
          f"step {int(state.step)}, {len(test)} test examples of {config.train.dataset}", flush=True)
    results = {}
    for method in dict.fromkeys(args.method):
        if method == "vlb":
            name = "vlb_continuous" if args.vlb_steps is None else f"vlb_T{args.vlb_steps}"
            fn = vlb_bpd_fn(model, num_steps=args.vlb_steps)
        else:
            name = f"ode_{args.dequantization}_K{args.importance_samples}"
            fn = ode_bpd_fn(model, **options)
        start = time.perf_counter()
        estimate = evaluate_split(fn, test, batch_size=batch_size, key=key, mesh=trainer.mesh,
                                  progress=not args.no_progress, description=name)
        results[name] = {"mean": estimate.mean, "ci95": estimate.ci95, "num_examples": estimate.num_examples,
                         "seconds": time.perf_counter() - start}
    print(f"{'bound':<32} {'bpd':>8} {'± 95% CI':>10} {'seconds':>9}")
    for name, result in results.items():
        print(f"{name:<32} {result['mean']:>8.4f} {result['ci95']:>10.4f} {result['seconds']:>9.1f}")
    if args.output:
        pathlib.Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
