"""Distrax classes of mulan_ppl (imports TensorFlow Probability's JAX substrate through Distrax).

The same class names, with the same arguments, live in :mod:`mulan_ppl.numpyro`; both call :mod:`mulan_ppl.core`.
"""

from mulan_ppl.distrax.decoder import DiscretizedGaussianDecoder
from mulan_ppl.distrax.gaussian import ForwardMarginal, ForwardTransition, ReverseTransition, TopDownPosterior
from mulan_ppl.distrax.khot import KHot, PerturbedTopK, UniformKHot

__all__ = [
    "DiscretizedGaussianDecoder",
    "ForwardMarginal",
    "ForwardTransition",
    "KHot",
    "PerturbedTopK",
    "ReverseTransition",
    "TopDownPosterior",
    "UniformKHot",
]
