"""Noise-schedule families: callables ``gamma_fn(t, context) -> gamma`` with ``gamma = -log SNR`` increasing in t.

``t`` has shape ``(batch,)`` and runs from data (0) to noise (1); a schedule returns one gamma per data dimension,
``(batch, *event_shape)``, or one per example, ``(batch,)`` (DESIGN.md §2, §4). Every family here is a
``flax.nnx.Module`` whose endpoints ``gamma(0) = gamma_min`` and ``gamma(1) = gamma_max`` hold exactly. Closed-form
time derivatives ride on :func:`jax.custom_jvp`, so :func:`gamma_and_derivative` (``jax.jvp``) uses them.
"""

from mulan_ppl.schedules._check import ScheduleReport, check_schedule
from mulan_ppl.schedules._evaluate import evaluate_schedule, gamma_and_derivative
from mulan_ppl.schedules.cosine import Cosine, ShiftedCosine, cosine_gamma, cosine_time
from mulan_ppl.schedules.edm import EDM, edm_gamma, edm_time
from mulan_ppl.schedules.fixed_linear import FixedLinear, linear_gamma
from mulan_ppl.schedules.learned_scalar import LearnedScalar
from mulan_ppl.schedules.monotone_film import MonotoneFiLM
from mulan_ppl.schedules.polynomial import Polynomial, PolynomialHead, polynomial_gamma
from mulan_ppl.schedules.vp_linear import VPLinear, vp_linear_gamma

__all__ = [
    "EDM",
    "Cosine",
    "FixedLinear",
    "LearnedScalar",
    "MonotoneFiLM",
    "Polynomial",
    "PolynomialHead",
    "ScheduleReport",
    "ShiftedCosine",
    "VPLinear",
    "check_schedule",
    "cosine_gamma",
    "cosine_time",
    "edm_gamma",
    "edm_time",
    "evaluate_schedule",
    "gamma_and_derivative",
    "linear_gamma",
    "polynomial_gamma",
    "vp_linear_gamma",
]
