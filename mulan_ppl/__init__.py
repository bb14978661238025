"""mulan_ppl: composable probabilistic components for diffusion models with learned adaptive noise (MuLAN).

Subpackages: :mod:`mulan_ppl.core` (pure JAX maths), :mod:`mulan_ppl.schedules` (noise-schedule families),
:mod:`mulan_ppl.numpyro` and :mod:`mulan_ppl.distrax` (the same distributions in both backends). The Distrax adapter
is imported lazily, on first access of ``mulan_ppl.distrax``, so importing ``mulan_ppl`` never imports TensorFlow
Probability.
"""

import importlib

__version__ = "0.1.0"

_LAZY = ("core", "distrax", "hvae", "models", "nets", "numpyro", "sampling", "schedules", "train")
__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(f"mulan_ppl.{name}")
    raise AttributeError(f"module 'mulan_ppl' has no attribute {name!r}")
