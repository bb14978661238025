"""check_schedule: passes on every family and catches decreasing, drifting, non-finite or mis-derived schedules."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _schedule_utils import normal
from flax import nnx

from mulan_ppl.schedules import (
    EDM,
    Cosine,
    FixedLinear,
    LearnedScalar,
    MonotoneFiLM,
    Polynomial,
    ScheduleReport,
    ShiftedCosine,
    VPLinear,
    check_schedule,
    linear_gamma,
)

EVENT = (2, 3)
CONTEXT = normal(0, (2, 4))

FAMILIES = [
    ("FixedLinear", lambda: FixedLinear(), None, {}),
    ("Cosine", lambda: Cosine(gamma_min=-30.0, gamma_max=30.0), None, {}),
    ("ShiftedCosine", lambda: ShiftedCosine(shift=-2.0), None, {}),
    ("EDM", lambda: EDM(), None, {}),
    ("VPLinear", lambda: VPLinear(), None, {}),
    ("LearnedScalar", lambda: LearnedScalar(hidden_width=16, rngs=nnx.Rngs(0)), None, {}),
    ("MonotoneFiLM", lambda: MonotoneFiLM(EVENT, context_dim=4, hidden_width=16, film_width=8, rngs=nnx.Rngs(0)),
     CONTEXT, {}),
    ("Polynomial-free", lambda: Polynomial(EVENT, context_dim=None, rngs=nnx.Rngs(0)), None, {}),
    # MuLAN's head can put a root of the quadratic inside (0, 1), where float32 shows rounding-level ties.
    ("Polynomial", lambda: Polynomial(EVENT, context_dim=4, hidden_width=16, rngs=nnx.Rngs(0)), CONTEXT,
     dict(strict=False)),
]


@pytest.mark.parametrize("name,make,context,options", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_every_family_passes(name, make, context, options):
    schedule = make()
    gamma_min, gamma_max = float(schedule.gamma_min), float(schedule.gamma_max)
    report = check_schedule(schedule, EVENT, context=context, gamma_min=gamma_min, gamma_max=gamma_max, **options)
    assert isinstance(report, ScheduleReport)
    assert report.passed and report.failures == () and report.finite
    assert report.gamma_at_0 == pytest.approx((gamma_min, gamma_min), abs=1e-5)
    assert report.gamma_at_1 == pytest.approx((gamma_max, gamma_max), abs=1e-5)
    assert report.max_derivative_error < 1e-3
    if options.get("strict", True):
        assert report.min_increment > 0


def drifting(t, context):
    """VDM-style schedule whose endpoints moved during training (google-research/vdm issue #11)."""
    return -13.2 + 18.0 * t


@jax.custom_jvp
def _wrong_rule(t):
    return linear_gamma(t)


@_wrong_rule.defjvp
def _(primals, tangents):
    (t,), (t_dot,) = primals, tangents
    return _wrong_rule(t), 1.1 * 18.3 * t_dot  # 10% off


BAD = [
    ("decreasing", lambda t, c: linear_gamma(1.0 - t), "not increasing"),
    ("flat_middle", lambda t, c: linear_gamma(jnp.clip(t, 0.0, 0.5) + jnp.clip(t - 0.6, 0.0, 0.4)),
     "not increasing"),
    ("drifting", drifting, "gamma(t=0) differs from gamma_min=-13.3 by 0.1"),
    ("non_finite", lambda t, c: jnp.log(t), "non-finite gamma or derivative values"),
    ("wrong_custom_jvp", lambda t, c: _wrong_rule(t), "the jax.jvp derivative integrates to a gamma change off"),
]


@pytest.mark.parametrize("name,fn,message", BAD, ids=[b[0] for b in BAD])
def test_failures_raise_or_report(name, fn, message):
    pattern = r"`check_schedule`: `gamma_fn` failed \d check\(s\): .*" + re.escape(message)
    with pytest.raises(ValueError, match=pattern):
        check_schedule(fn, EVENT, gamma_min=-13.3, gamma_max=5.0)
    report = check_schedule(fn, EVENT, gamma_min=-13.3, gamma_max=5.0, raise_on_failure=False)
    assert not report.passed
    assert any(message in failure for failure in report.failures)


def test_non_strict_mode_accepts_ties_but_not_decrease():
    ties = lambda t, c: linear_gamma(jnp.round(t * 100.0) / 100.0)  # noqa: E731  (a staircase)
    assert not check_schedule(ties, (), raise_on_failure=False, derivative_rtol=np.inf).passed
    assert check_schedule(ties, (), strict=False, derivative_rtol=np.inf).passed
    report = check_schedule(lambda t, c: -t, (), strict=False, raise_on_failure=False)
    assert not report.passed and report.min_increment < 0


def test_shape_and_argument_errors():
    with pytest.raises(ValueError, match="`evaluate_schedule`: `gamma_fn` must return gamma of shape"):
        check_schedule(lambda t, c: jnp.zeros((t.shape[0], 5)), EVENT)
    with pytest.raises(ValueError, match="`check_schedule`: `num_points` must be an integer >= 3"):
        check_schedule(FixedLinear(), EVENT, num_points=2)
    with pytest.raises(ValueError, match="`Polynomial`: `context` is None"):
        check_schedule(Polynomial(EVENT, context_dim=4, hidden_width=4, rngs=nnx.Rngs(0)), EVENT)
