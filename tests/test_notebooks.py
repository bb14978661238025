"""The notebooks in ``examples/notebooks``: stored without outputs (fast test), and executed top to bottom in a fresh
Jupyter kernel with a time limit per notebook (``slow``: ``make test-slow``).

Each notebook asserts its own results (the hand-written ELBO terms against ``TopDownDiffusion``, the T-step term
against the continuous one, ``check_schedule`` and ``check_kl`` verdicts, the NumPyro latent KL against the Distrax
one), so executing it without an error is a check of those numbers, not only of the code running.
"""

import asyncio
import os
import pathlib
import time

import nbformat
import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "examples" / "notebooks"
NOTEBOOKS = (
    "01_compose_elbo.ipynb",
    "02_numpyro_svi.ipynb",
    "03_new_noise_family.ipynb",
    "04_new_latent_family.ipynb",
    "05_learned_schedules.ipynb",
)
# Each notebook runs in under 2 minutes on a 2-core CPU by itself; the limit leaves room for the second xdist worker
# of `make test-slow` sharing the cores. MULAN_PPL_NOTEBOOK_TIME_LIMIT overrides it (seconds).
TIME_LIMIT_S = float(os.environ.get("MULAN_PPL_NOTEBOOK_TIME_LIMIT", "300"))


def test_the_notebooks_are_the_documented_ones():
    assert sorted(path.name for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
    """Outputs are stripped in git: no outputs, no execution counts, valid nbformat 4."""
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code, "a notebook with no code"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "starts with a title"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"cell {cell.get('id')} keeps its outputs"
    assert nb.metadata["kernelspec"]["name"] == "python3"


def _execute(path: pathlib.Path, time_limit: float) -> None:
    """Runs every cell in a fresh kernel started in the notebook's folder; the whole notebook must finish within
    ``time_limit`` seconds (the kernel is shut down on timeout)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=time_limit, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    asyncio.run(asyncio.wait_for(client.async_execute(), timeout=time_limit))


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, monkeypatch, tmp_path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    # The kernel inherits the environment: JAX's persistent compilation cache as the tests use it, and, for notebook
    # 05, no run directory (it trains its own tiny model), and temporary files under this test's directory.
    cache = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", os.environ.get("MULAN_PPL_JAX_CACHE", str(cache)))
    monkeypatch.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    monkeypatch.delenv("MULAN_PPL_RUN_DIR", raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend renders the figures
    start = time.perf_counter()
    try:
        _execute(NOTEBOOK_DIR / name, TIME_LIMIT_S)
    except TimeoutError:
        pytest.fail(f"{name} did not finish within {TIME_LIMIT_S:.0f} s")
    elapsed = time.perf_counter() - start
    print(f"{name}: {elapsed:.0f} s")
    assert elapsed < TIME_LIMIT_S
