"""Sigma schedules against the reference's definition, written out again here.

ltx-core's `LTX2Scheduler.execute` (1.2.0): sigmas = linspace(1, 0, steps + 1); the shift is linear in
the token count through (1024, 0.95) and (4096, 2.05); each non-zero sigma becomes
exp(shift) / (exp(shift) + 1/sigma - 1); then the non-zero ones are stretched so that the last is 0.1:
1 - (1 - sigma) / ((1 - sigma_last) / (1 - 0.1)). The distilled schedule is ltx-pipelines'
DISTILLED_SIGMA_VALUES. Expectations here are computed from those definitions (in 250-digit arithmetic
where they are formulas), never read from our own output.
"""

import math

import mpmath as mp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltx2.pipelines.schedules import DISTILLED_SIGMAS, STAGE_2_SIGMAS, shifted_sigmas, sigmas_for, token_shift

# ltx-pipelines' constants.py, without the scheduler's terminal 0.
REFERENCE_DISTILLED = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875]
# ltx-pipelines' stage-2 refinement sigmas (diffusers' STAGE_2_DISTILLED_SIGMA_VALUES), without the 0.
REFERENCE_STAGE_2 = [0.909375, 0.725, 0.421875]

# The request's ranges: 1..100 steps; latent tokens = latent frames x (H / 32) x (W / 32) with
# 9..481 frames (2..61 latent frames) and 64..3840 pixels a side (2..120 latents).
STEPS = st.integers(1, 100)
TOKENS = st.integers(2 * 2 * 2, 61 * 120 * 120)


def reference_shift(tokens):
    mm = (mp.mpf("2.05") - mp.mpf("0.95")) / (4096 - 1024)
    b = mp.mpf("0.95") - mm * 1024
    return tokens * mm + b


def reference_sigmas(steps: int, tokens: int, terminal: str = "0.1") -> list[float]:
    """The reference's formula, term for term, in 250-digit arithmetic: exp(shift) reaches 1e137 at the
    most tokens a request can make, and 1 - sigma must keep its digits below that."""
    with mp.workdps(250):
        sigmas = [1 - mp.mpf(i) / steps for i in range(steps)]  # linspace(1, 0, steps + 1) without the 0
        e = mp.exp(reference_shift(tokens))
        sigmas = [e / (e + (1 / s - 1)) for s in sigmas]
        scale = (1 - sigmas[-1]) / (1 - mp.mpf(terminal))
        return [float(1 - (1 - s) / scale) for s in sigmas]


def test_distilled_schedule_is_the_reference_one():
    assert list(DISTILLED_SIGMAS) == REFERENCE_DISTILLED
    assert list(STAGE_2_SIGMAS) == REFERENCE_STAGE_2
    assert sigmas_for(8, 1008, distilled=True) == REFERENCE_DISTILLED
    # the trained schedule is for 8 steps only; another count gets the shifted schedule
    assert sigmas_for(12, 1008, distilled=True) == pytest.approx(reference_sigmas(12, 1008), abs=1e-12)


def test_dev_model_with_eight_steps_gets_the_shifted_schedule():
    assert sigmas_for(8, 1008, distilled=False) == pytest.approx(reference_sigmas(8, 1008), abs=1e-12)


def test_token_shift_anchors():
    assert token_shift(1024) == pytest.approx(0.95, abs=1e-12)
    assert token_shift(4096) == pytest.approx(2.05, abs=1e-12)
    assert token_shift(2560) == pytest.approx(1.5, abs=1e-12)  # halfway in tokens, halfway in shift
    assert token_shift(0) == pytest.approx(0.95 - 1024 * 1.1 / 3072, abs=1e-12)


def test_a_hand_computed_schedule():
    # 4 steps at 1024 tokens: shift 0.95, e = exp(0.95); raw sigmas 1, 3/4, 1/2, 1/4.
    e = math.exp(0.95)
    warped = [1.0] + [e / (e + 1 / s - 1) for s in (0.75, 0.5, 0.25)]
    scale = (1 - warped[-1]) / 0.9
    expected = [1 - (1 - w) / scale for w in warped]
    assert shifted_sigmas(4, 1024) == pytest.approx(expected, abs=1e-12)
    # the shift is exp(token_shift): at 0.95 the middle sigma is e / (e + 1) before stretching
    assert warped[2] == pytest.approx(e / (e + 1), abs=1e-15)


def test_terminal_is_a_parameter():
    assert shifted_sigmas(5, 2000, terminal=0.2)[-1] == pytest.approx(0.2, abs=1e-12)
    assert shifted_sigmas(5, 2000, terminal=0.2) == pytest.approx(reference_sigmas(5, 2000, "0.2"), abs=1e-12)


@pytest.mark.parametrize("steps", [0, -1])
def test_no_steps_is_refused(steps):
    with pytest.raises(ValueError, match=f"steps must be at least 1, got {steps}"):
        shifted_sigmas(steps, 1000)


def test_one_step_is_pure_noise():
    # The reference's stretch divides 0 by 0 at one step; one step starts from sigma 1.
    assert shifted_sigmas(1, 5000) == [1.0]
    assert sigmas_for(1, 1008, distilled=True) == [1.0] and sigmas_for(1, 1008, distilled=False) == [1.0]


@settings(max_examples=300, deadline=None)
@given(steps=STEPS, tokens=TOKENS)
def test_shifted_schedule_is_the_reference_over_the_request_range(steps, tokens):
    ours = shifted_sigmas(steps, tokens)
    assert len(ours) == steps
    assert ours[0] == pytest.approx(1.0, abs=1e-12)
    if steps == 1:
        return
    assert ours == pytest.approx(reference_sigmas(steps, tokens), rel=1e-9, abs=1e-12)
    assert ours[-1] == pytest.approx(0.1, abs=1e-12)
    assert all(a > b for a, b in zip(ours, ours[1:]))


@settings(max_examples=200, deadline=None)
@given(steps=st.integers(3, 100), tokens=TOKENS, more=st.integers(1, 100_000))
def test_more_tokens_spend_more_steps_at_high_noise(steps, tokens, more):
    fewer, many = shifted_sigmas(steps, tokens), shifted_sigmas(steps, tokens + more)
    # The end points are pinned (1 and the terminal); every sigma between them rises, towards a limit
    # that very large token counts reach to within float precision.
    assert all(m >= f - 1e-12 for f, m in zip(fewer[1:-1], many[1:-1]))
    if tokens + more <= 20_000:
        assert all(m > f for f, m in zip(fewer[1:-1], many[1:-1]))


@settings(max_examples=100, deadline=None)
@given(steps=STEPS, tokens=TOKENS, distilled=st.booleans())
def test_sigmas_for_picks_the_schedule(steps, tokens, distilled):
    expected = REFERENCE_DISTILLED if distilled and steps == 8 else shifted_sigmas(steps, tokens)
    assert sigmas_for(steps, tokens, distilled) == expected
