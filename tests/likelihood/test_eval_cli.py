"""examples/eval_bpd.py on a tiny trained run: the VLB and the ODE bound side by side, and one-line errors."""

import json
import pathlib
import sys

import jax
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))

import eval_bpd  # noqa: E402
from presets import TINY  # noqa: E402

from mulan_ppl.train import train  # noqa: E402


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("tiny_run")
    train(TINY, workdir, progress=False, devices=jax.devices()[:1], evaluate=False)
    return workdir


def test_prints_vlb_and_ode_bounds(tiny_run, capsys, tmp_path):
    output = tmp_path / "bpd.json"
    assert eval_bpd.main(["--workdir", str(tiny_run), "--limit", "8", "--batch-size", "8", "--no-progress",
                          "--importance-samples", "2", "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    results = json.loads(output.read_text())
    assert set(results) == {"vlb_continuous", "ode_truncated_normal_K2"}
    for name, result in results.items():
        assert name in printed
        assert result["num_examples"] == 8 and np.isfinite(result["mean"]) and result["ci95"] > 0
        assert 0.5 < result["mean"] < 20.0  # 17 levels: log2(17) = 4.1 bits is the uniform model


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--importance-samples", "0"], "--importance-samples"),
        (["--dequantization", "gaussian"], "--dequantization"),
        (["--rtol", "0"], "--rtol"),
        (["--method", "sde"], "--method"),
        (["--limit", "1"], "--limit"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_run, argv, match, capsys):
    assert eval_bpd.main(["--workdir", str(tiny_run), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and match in err and "\n" not in err


def test_missing_run_directory_is_a_one_line_error(tmp_path, capsys):
    missing = tmp_path / "no_such_run"
    assert eval_bpd.main(["--workdir", str(missing), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and str(missing) in err and "\n" not in err


def test_directory_without_checkpoint_is_a_one_line_error(tmp_path, capsys):
    assert eval_bpd.main(["--workdir", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
