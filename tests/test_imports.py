"""Import hygiene (DESIGN.md §3): ``mulan_ppl``, ``mulan_ppl.core`` and the NumPyro distributions never import
TensorFlow Probability or Distrax, so they keep working if a JAX release breaks TFP. Checked in fresh interpreters.
"""

import json
import subprocess
import sys

import pytest

TFP_AND_DISTRAX = ("tensorflow_probability", "distrax", "tensorflow")

_PROBE = """
import json, sys
for name in {modules!r}:
    __import__(name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {watched!r})))
"""


def _imported_after(modules, watched=TFP_AND_DISTRAX) -> list[str]:
    """Top-level packages among ``watched`` loaded by importing ``modules`` in a fresh interpreter."""
    result = subprocess.run([sys.executable, "-c", _PROBE.format(modules=tuple(modules), watched=tuple(watched))],
                            capture_output=True, text=True, timeout=120, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_package_and_core_import_no_backend():
    assert _imported_after(["mulan_ppl", "mulan_ppl.core"], watched=(*TFP_AND_DISTRAX, "numpyro")) == []


def test_check_kl_is_lazy_and_imports_no_backend():
    """``mulan_ppl.check_kl`` is reachable from the package without importing a backend."""
    probe = "import mulan_ppl; mulan_ppl.check_kl; from mulan_ppl import KLCheckResult"
    result = subprocess.run([sys.executable, "-c", probe + "; import sys; print(sorted(m for m in sys.modules if "
                             f"m.split('.')[0] in {(*TFP_AND_DISTRAX, 'numpyro')!r}))"],
                            capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_numpyro_adapter_does_not_import_tfp_or_distrax():
    assert _imported_after(["mulan_ppl.numpyro"]) == []


def test_distrax_adapter_does_import_tfp():
    """Control: the probe sees an import when there is one."""
    found = _imported_after(["mulan_ppl.distrax"])
    assert "distrax" in found and "tensorflow_probability" in found


@pytest.mark.parametrize("name", ["ForwardMarginal", "ForwardTransition", "TopDownPosterior", "ReverseTransition",
                                  "DiscretizedGaussianDecoder"])
def test_both_backends_export_the_class(name):
    """The same class names in both backends (DESIGN.md §4)."""
    import distrax
    import numpyro.distributions

    import mulan_ppl.distrax as mdx
    import mulan_ppl.numpyro as mnp

    assert name in mdx.__all__ and name in mnp.__all__
    assert issubclass(getattr(mdx, name), distrax.Distribution)
    assert issubclass(getattr(mnp, name), numpyro.distributions.Distribution)


def test_lazy_submodules():
    import mulan_ppl

    assert mulan_ppl.core.forward_marginal is not None
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        mulan_ppl.nope  # noqa: B018
