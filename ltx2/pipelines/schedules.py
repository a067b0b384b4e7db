"""Sigma schedules for LTX-2, written from their definitions.

Distilled checkpoints were trained for one fixed 8-step schedule; dev checkpoints use a linear
schedule warped by a shift that grows with the number of latent tokens (more tokens: more time at
high noise), then stretched so the last non-zero sigma lands on a terminal value.
"""

from __future__ import annotations

import math

# The distilled model's trained schedule (the terminal 0 is appended by the scheduler).
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875)

# The two-stage pipeline's refinement at full size: the distilled schedule's last three sigmas.
STAGE_2_SIGMAS = (0.909375, 0.725, 0.421875)

BASE_SHIFT, MAX_SHIFT = 0.95, 2.05
BASE_TOKENS, MAX_TOKENS = 1024, 4096
TERMINAL = 0.1


def token_shift(num_tokens: int) -> float:
    """The shift for a latent of `num_tokens` tokens: linear in tokens through the two anchors."""
    slope = (MAX_SHIFT - BASE_SHIFT) / (MAX_TOKENS - BASE_TOKENS)
    return BASE_SHIFT + slope * (num_tokens - BASE_TOKENS)


def shifted_sigmas(steps: int, num_tokens: int, terminal: float = TERMINAL) -> list[float]:
    """`steps` decreasing sigmas from 1.0 (the scheduler appends the final 0)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps == 1:
        return [1.0]
    shift = math.exp(token_shift(num_tokens))
    raw = [1.0 - i / steps for i in range(steps)]  # 1.0 ... 1/steps; 0 excluded
    # Each sigma becomes shift / (shift + 1/s - 1). We keep 1 minus it, (1/s - 1) / (shift + 1/s - 1),
    # rather than subtracting from 1: past ~100k tokens (a dev model at 1080p, 8 s) the warped sigmas
    # round to 1.0 and the stretch below would divide by zero (the reference's float32 gives NaN there).
    one_minus = [(1.0 / s - 1.0) / (shift + (1.0 / s - 1.0)) for s in raw]
    # Stretch so that the smallest sigma becomes `terminal` while 1.0 stays 1.0.
    scale = one_minus[-1] / (1.0 - terminal)
    return [1.0 - m / scale for m in one_minus]


def unsized_sigmas(steps: int) -> list[float]:
    """The schedule ltx-pipelines' two-stage dev pipeline gives stage 1: `LTX2Scheduler` called without a
    latent shifts for its default token count (the upper anchor, MAX_TOKENS), whatever the size."""
    return shifted_sigmas(steps, MAX_TOKENS)


def sigmas_for(steps: int, num_tokens: int, distilled: bool) -> list[float]:
    if distilled and steps == len(DISTILLED_SIGMAS):
        return list(DISTILLED_SIGMAS)
    return shifted_sigmas(steps, num_tokens)
