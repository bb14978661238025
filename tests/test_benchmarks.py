"""The benchmark suite's bookkeeping: the README's results block is the rendering of the committed JSON."""

import json
import pathlib

import pytest

from benchmarks import run
from benchmarks.quality import steps_to_reach
from benchmarks.timing import ratio, summary

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_readme_block_is_the_rendering_of_latest_json():
    report = json.loads((ROOT / "benchmarks" / "results" / "latest.json").read_text())
    text = (ROOT / "benchmarks" / "README.md").read_text()
    block = text.split(run.BEGIN, 1)[1].split(run.END, 1)[0]
    assert block == "\n" + run.render(report)
    assert set(report["sections"]) == set(run.SECTIONS)  # the committed results are of the whole suite


def test_write_readme_replaces_only_the_block_and_is_idempotent(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{run.BEGIN}\nold\n{run.END}\n\ntail\n")
    run.write_readme("new table\n", readme)
    once = readme.read_text()
    run.write_readme("new table\n", readme)
    assert readme.read_text() == once == f"# title\n\n{run.BEGIN}\nnew table\n{run.END}\n\ntail\n"
    readme.write_text("no markers\n")
    with pytest.raises(ValueError, match="markers"):
        run.write_readme("x", readme)


def test_ratios_are_per_round_and_summaries_report_the_spread():
    stats = ratio([2.0, 3.0, 8.0], [1.0, 1.0, 2.0])
    assert (stats["median"], stats["min"], stats["max"], stats["n"]) == (3.0, 2.0, 4.0, 3)
    assert summary([4.0, 1.0, 3.0, 2.0])["iqr"] > 0


def test_steps_to_reach():
    curve = [{"step": 100, "bpd": 3.0}, {"step": 200, "bpd": 2.5}, {"step": 300, "bpd": 2.4}]
    assert steps_to_reach(curve, 2.5) == 200
    assert steps_to_reach(curve, 2.0) is None
