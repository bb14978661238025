"""NumPyro classes of mulan_ppl: the same names and arguments as :mod:`mulan_ppl.distrax`, with KLs registered in
``numpyro.distributions.kl.kl_divergence``. Importing this package never imports TensorFlow Probability.
"""

from mulan_ppl.numpyro.decoder import DiscretizedGaussianDecoder
from mulan_ppl.numpyro.gaussian import ForwardMarginal, ForwardTransition, ReverseTransition, TopDownPosterior

__all__ = [
    "DiscretizedGaussianDecoder",
    "ForwardMarginal",
    "ForwardTransition",
    "ReverseTransition",
    "TopDownPosterior",
]
