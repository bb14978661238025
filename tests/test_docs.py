"""The documentation: the Sphinx build has no warning (``make docs``), the API reference covers the public names,
and the code on the extension guide runs (``slow``: they start fresh interpreters)."""

import importlib
import pathlib
import re
import subprocess
import sys

import pytest
from test_docstrings import PUBLIC_MODULES, documentable

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def test_the_pages_are_in_the_toctree():
    index = (DOCS / "index.md").read_text()
    for page in ("architecture", "math", "khot", "extending", "notebooks", "api/index"):
        assert (DOCS / page).with_suffix(".md").exists() or (DOCS / page).with_suffix(".rst").exists(), page
        assert f"\n{page}\n" in index, f"{page} is not in the toctree of docs/index.md"


@pytest.mark.slow
def test_sphinx_build_has_no_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    out = tmp_path / "html"
    result = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q", "-b", "html",
                             str(DOCS), str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-5000:]
    api = {page.stem: page.read_text() for page in (out / "api").glob("*.html")}
    assert 'id="mulan_ppl.check_kl"' in api["package"]
    assert 'id="mulan_ppl.distrax.KHot"' in api["distrax"] and 'id="mulan_ppl.numpyro.DiffusionELBO"' in api["numpyro"]
    assert 'id="mulan_ppl.hvae.TopDownDiffusion"' in api["hvae"]
    assert "Mathematical details" in api["core"] and 'class="math' in api["core"]   # napoleon + MathJax
    for page in ("architecture", "math", "khot", "extending", "notebooks"):
        assert (out / f"{page}.html").exists(), page
    # Every public class and function has its entry in the API reference (nets.PolynomialHead is the schedules'
    # PolynomialHead, documented there).
    missing = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        page = api["package" if module_name == "mulan_ppl" else module_name.split(".")[1]]
        for name in module.__all__:
            if documentable(getattr(module, name)) and f'id="{module_name}.{name}"' not in page:
                missing.append(f"{module_name}.{name}")
    assert missing == ["mulan_ppl.nets.PolynomialHead"]


@pytest.mark.slow
def test_extension_guide_code_runs(tmp_path):
    """The ```python blocks of docs/extending.md, in order, as one script (they assert their own results)."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "extending.md").read_text(), flags=re.S)
    assert len(blocks) >= 8
    script = tmp_path / "extending.py"
    script.write_text("\n\n".join(blocks))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
