"""The benchmark suite: ``python -m benchmarks`` (or ``python benchmarks/run.py``).

Runs the selected sections in one process, prints a markdown table per section, writes everything measured to
``benchmarks/results/latest.json`` and the tables to ``benchmarks/results/latest.md``, and regenerates the results
block of ``benchmarks/README.md`` from that JSON. Every ratio comes from interleaved repetitions in this run.

    python -m benchmarks                                    # the default suite (about 15 minutes on 2 CPU cores)
    python -m benchmarks --only ode sharding                # selected sections
    python -m benchmarks --config paper --only train_step   # the paper-size denoiser (accelerators)
    python -m benchmarks --render-only                      # rewrite the tables from latest.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import sys
import time

_ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # `python benchmarks/run.py`
    sys.path.insert(0, str(_ROOT))

from benchmarks.timing import fmt  # noqa: E402

SECTIONS = ("train_step", "ode", "quality", "compile_memory", "sharding", "validation")
RESULTS = _ROOT / "benchmarks" / "results"
README = _ROOT / "benchmarks" / "README.md"
BEGIN, END = "<!-- results: begin (written by python -m benchmarks) -->", "<!-- results: end -->"


def _machine() -> dict:
    import jax

    cpu = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if pathlib.Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"date": datetime.date.today().isoformat(), "platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "python": platform.python_version(), "jax": jax.__version__,
            "backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()]}


def run_sections(sections, *, config: str, log=print) -> dict:
    results = {}
    for section in sections:
        start = time.perf_counter()
        log(f"[{section}]")
        if section == "train_step":
            from benchmarks import train_step

            if config == "paper":
                results[section] = train_step.run(denoisers=("paper",), batch_size=128, repeats=5, log=log)
            else:
                results[section] = train_step.run(log=log)
            results[section]["peak"] = train_step.peak()
        elif section == "ode":
            from benchmarks import ode

            results[section] = ode.run(log=log)
        elif section == "quality":
            from benchmarks import quality

            results[section] = quality.run(log=log, plot=RESULTS / "quality.png")
        elif section == "compile_memory":
            from benchmarks import compile_memory

            results[section] = compile_memory.run(log=log)
        elif section == "sharding":
            from benchmarks import sharding

            results[section] = sharding.run(log=log)
        elif section == "validation":
            from benchmarks import validation_cost

            results[section] = validation_cost.run(repeats=100, calls=10, log=lambda *a: None)
        results[section]["section_s"] = time.perf_counter() - start
        log(f"  ({results[section]['section_s']:.0f} s)")
    return results


# ------------------------------------------------------------------------------------------------------ rendering


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _render_train_step(r: dict) -> str:
    peak = r["peak"]
    rows = []
    for c in r["configs"]:
        split = ", ".join(f"{name} {v['median'] * 1e3:.0f}" for name, v in c["split_s"].items())
        rows.append([c["denoiser"], c["head"], f"{c['mulan_params'] / 1e6:.2f}M / {c['vdm_params'] / 1e6:.2f}M",
                     f"{c['mulan_step_s']['median'] * 1e3:.0f}", f"{c['vdm_step_s']['median'] * 1e3:.0f}",
                     fmt(c["ratio_mulan_over_vdm"], 2), split,
                     f"{c['mulan_flops'] / 1e9:.1f}",
                     f"{c['mulan_flops_per_s'] / 1e9:.1f} ({c['mulan_flops_per_s'] / peak['conv_flops_per_s']:.0%})"])
    head = ["denoiser", "schedule head", "params MuLAN / VDM", "MuLAN step ms", "VDM step ms",
            "MuLAN / VDM [min, max]", "split ms (fwd+bwd)", "MuLAN GFLOP/step", "GFLOP/s (of conv peak)"]
    return (f"**Train step**, batch {r['batch_size']}, 32×32×3, V = 256, m = 50, k = 15, one device "
            "(paper: MuLAN 2.24 vs VDM 2.6 steps/s on 4 V100s, ratio 1.16).\n\n" + _table(head, rows)
            + f"\n\nMeasured peak: matmul {peak['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s, 3×3 convolution "
              f"{peak['conv_flops_per_s'] / 1e9:.1f} GFLOP/s.")


def _render_ode(r: dict) -> str:
    rows = [["Diffrax Tsit5 in jit (library)", f"{r['diffrax_s']['median']:.2f}", str(r["nfe_diffrax"]),
             f"{r['diffrax_s_per_evaluation'] * 1e3:.1f}", f"{r['bpd_diffrax']:.5f}"],
            ["SciPy RK45 on the host (reference method)", f"{r['scipy_s']['median']:.2f}", str(r["nfe_scipy"]),
             f"{r['scipy_s_per_evaluation'] * 1e3:.1f}", f"{r['bpd_scipy']:.5f}"]]
    return (f"**ODE likelihood**, batch {r['batch_size']}, rtol = atol = {r['rtol']:g}, same model, probe and "
            "tolerances.\n\n" + _table(["solver", "seconds", "NFE", "ms per evaluation", "bpd"], rows)
            + f"\n\nSciPy / Diffrax time {fmt(r['ratio_scipy_over_diffrax'], 2)}; largest per-example bpd "
              f"difference {r['max_abs_bpd_difference']:.1e}. One standalone call of the jitted drift and "
              f"divergence: {r['one_evaluation_s']['median'] * 1e3:.1f} ms (on XLA:CPU the same work inside the "
              "solver's compiled loop costs more; see `ode.py`).")


def _render_quality(r: dict) -> str:
    names = list(r["curves"])
    steps = [p["step"] for p in r["curves"][names[0]]]
    def cell(point):
        return f"{point['bpd']:.3f} ± {point['ci95']:.3f}" if "ci95" in point else f"{point['bpd']:.3f}"

    rows = [[str(s)] + [cell(next(p for p in r["curves"][n] if p["step"] == s)) for n in names] for s in steps]
    rows.append(["train seconds"] + [f"{r['train_seconds'][n]:.0f}" for n in names])
    rows.append([f"steps to VDM's final {r['vdm_final_bpd']:.3f}"]
                + [str(r["steps_to_vdm_final"][n] or f"> {r['steps']}") for n in names])
    baselines = ", ".join(f"{k} {v:.3f}" for k, v in r["baselines"].items())
    return (f"**Quality per compute**, digits ({r['test_images']} test images, 17 levels), test bpd (continuous "
            f"VLB, EMA parameters, each image averaged over {r.get('replicates', 1)} draws; ± a 95% interval over "
            "images) against training steps, CPU preset, same budget, one training seed.\n\n"
            + _table(["step"] + names, rows) + f"\n\nBaselines on the same images: {baselines}. "
            "Plot: `benchmarks/results/quality.png`.")


def _render_compile_memory(r: dict) -> str:
    rows = [[name, f"{v['trace_and_lower_s']:.1f}", f"{v['compile_s']:.1f}"] for name, v in r["compile"].items()]
    m = r["memory"]
    return ("**Compile time** (CPU preset MuLAN, no persistent cache).\n\n"
            + _table(["function", "trace + lower s", "XLA compile s"], rows)
            + f"\n\n**Peak memory** of `{m['command']}`: {m['peak_rss_mib']:.0f} MiB resident ({m['wall_s']:.0f} s).")


def _render_sharding(r: dict) -> str:
    rows = [[n, f"{r['step_s'][n]['median'] * 1e3:.0f}", fmt(r["ratio_to_one_device"][n], 2),
             f"{r['param_difference_over_update'][n]:.1e}" if n != "1" else "—"]
            for n in r["step_s"]]
    return (f"**Sharding overhead**, virtual CPU devices sharing the cores, global batch {r['global_batch']}.\n\n"
            + _table(["devices", "step ms", "ratio to 1 device [min, max]", "‖p_n − p_1‖ / ‖p_1 − p_0‖"], rows)
            + "\n\nThe parameters after two steps from the same state p_0, batch and key on n devices against one "
              f"device, relative to what the steps changed (‖p_1 − p_0‖ / ‖p_0‖ = {r['update_over_params']:.1e}).")


def _render_validation(r: dict) -> str:
    rows = [[name, f"{v['off']['median'] * 1e6:.0f}", f"{v['on']['median'] * 1e6:.0f}", fmt(v["ratio"], 2)]
            for name, v in r.items() if isinstance(v, dict)]
    return ("**`validate_args=True` under jit**, `ForwardMarginal.log_prob`.\n\n"
            + _table(["shape", "off µs", "on µs", "on / off [min, max]"], rows))


RENDER = {"train_step": _render_train_step, "ode": _render_ode, "quality": _render_quality,
          "compile_memory": _render_compile_memory, "sharding": _render_sharding, "validation": _render_validation}


def render(report: dict) -> str:
    m = report["machine"]
    parts = [f"Measured {m['date']} with `{report['command']}`: {m['cpu']}, {m['cores']} cores, {m['backend']} "
             f"backend, jax {m['jax']}, Python {m['python']}; the suite took {report['total_s'] / 60:.1f} min."]
    parts += [RENDER[name](result) for name, result in report["sections"].items() if name in RENDER]
    return "\n\n".join(parts) + "\n"


def write_readme(markdown: str, readme: pathlib.Path = README) -> None:
    """Replaces the text between the results markers of ``readme`` with ``markdown``."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} lacks the markers {BEGIN!r} and {END!r}.")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + BEGIN + "\n" + markdown + END + tail)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="sections to run (default: all)")
    parser.add_argument("--config", choices=("default", "paper"), default="default",
                        help="paper: the paper-size denoiser in the train-step section (for accelerators)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the tables from latest.json")
    args = parser.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        report = json.loads((RESULTS / "latest.json").read_text())
    else:
        sections = args.only or list(SECTIONS)
        command = "python -m benchmarks" + (f" --only {' '.join(args.only)}" if args.only else "") \
            + (" --config paper" if args.config == "paper" else "")
        start = time.perf_counter()
        report = {"command": command, "machine": _machine(),
                  "sections": run_sections(sections, config=args.config)}
        report["total_s"] = time.perf_counter() - start
        (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report)
    (RESULTS / "latest.md").write_text(markdown)
    write_readme(markdown)
    print()
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
