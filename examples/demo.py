"""`make demo`: MuLAN's CPU preset on scikit-learn's digits, then its test bpd beside baselines measured here.

The baselines are measured on the same test images in the same run: a per-position histogram model fitted on the
training split, and general-purpose codecs of the tiled test images (PNG, WebP lossless, bz2, lzma).
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the cpu preset's)")
    args = parser.parse_args(argv)

    from presets import preset

    from mulan_ppl.train import all_baselines, format_bpd_table, load_dataset, train

    workdir = pathlib.Path(args.workdir)
    if workdir.exists():
        shutil.rmtree(workdir)  # the demo always starts fresh
    config = preset("cpu", num_steps=args.steps)
    start = time.perf_counter()
    summary = train(config, workdir, progress=True)
    total = time.perf_counter() - start
    data = load_dataset(config.train.dataset)
    rows = {}
    for name, result in summary["test"].items():
        rows[f"MuLAN {name.replace('vlb_', 'VLB ')} (±{result['ci95']:.3f})"] = result["mean"]
    rows.update(all_baselines(data.train, data.test, vocab_size=data.vocab_size))
    print()
    print(f"training time: {summary['train_seconds']:.1f} s ({summary['steps']} steps); with evaluation and "
          f"figures: {total:.1f} s")
    print(format_bpd_table(rows, title=f"test bits per dimension, digits ({len(data.test)} test images)"))
    print(f"figures and metrics: {workdir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
