"""NumPyro classes of mulan_ppl: the same names and arguments as :mod:`mulan_ppl.distrax`, with KLs registered in
``numpyro.distributions.kl.kl_divergence``, plus NumPyro programs of the top-down HVAE.

Importing this package never imports TensorFlow Probability. :class:`DiffusionELBO` (which computes the diffusion
term with :mod:`mulan_ppl.hvae`, built on the Distrax classes) is loaded on first access.
"""

import importlib

from mulan_ppl.numpyro.decoder import DiscretizedGaussianDecoder
from mulan_ppl.numpyro.gaussian import ForwardMarginal, ForwardTransition, ReverseTransition, TopDownPosterior
from mulan_ppl.numpyro.khot import KHot, KHotConstraint, PerturbedTopK, UniformKHot
from mulan_ppl.numpyro.programs import DiffusionPrograms, ReverseChain

# The distribution classes shared with mulan_ppl.distrax (same names, same arguments).
DISTRIBUTIONS = (
    "DiscretizedGaussianDecoder",
    "ForwardMarginal",
    "ForwardTransition",
    "KHot",
    "PerturbedTopK",
    "ReverseTransition",
    "TopDownPosterior",
    "UniformKHot",
)
__all__ = [*DISTRIBUTIONS, "DiffusionELBO", "DiffusionPrograms", "KHotConstraint", "ReverseChain"]

_LAZY = {"DiffusionELBO": "mulan_ppl.numpyro.elbo"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mulan_ppl.numpyro' has no attribute {name!r}")
