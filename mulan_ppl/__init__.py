"""mulan_ppl: composable probabilistic components for diffusion models with learned adaptive noise (MuLAN).

Subpackages: :mod:`mulan_ppl.core` (pure JAX maths), :mod:`mulan_ppl.schedules` (noise-schedule families),
:mod:`mulan_ppl.numpyro` and :mod:`mulan_ppl.distrax` (the same distributions in both backends). The Distrax adapter
is imported lazily, on first access of ``mulan_ppl.distrax``, so importing ``mulan_ppl`` never imports TensorFlow
Probability. :func:`check_kl` (an analytic KL against its Monte Carlo estimate, in either backend) is loaded on
first access too.
"""

import importlib

__version__ = "0.1.0"

_LAZY = ("core", "distrax", "hvae", "likelihood", "models", "nets", "numpyro", "sampling", "schedules", "train")
# Public functions and classes defined in private modules, loaded on first access (name -> module).
_LAZY_NAMES = {"KLCheckResult": "mulan_ppl._kl_check", "check_kl": "mulan_ppl._kl_check"}
__all__ = ["KLCheckResult", "__version__", "check_kl", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"mulan_ppl.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'mulan_ppl' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
