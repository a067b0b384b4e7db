"""LTX-2.5's sampler against ltx-pipelines 1.2.0 (tools/parity_sampler.py): DistilledPipeline's own __call__
and ltx2's generate() on one miniature directory ltx-core writes, text to video and with a start image.
Per stage and per transformer call: the sigmas, the seeded noise, the latents, per-token timesteps, positions
and contexts the transformer is given, its clean estimates, and the latents each stage ends with, all within
1e-4 in float32.

Needs an LTX-2 checkout at 1.2.0 (LTX_CORE_CHECKOUT, default /tmp/ref) and ltx-core's extra deps (einops,
scipy; LTX_CORE_DEPS, default /tmp/refdeps); skipped without them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = Path(os.environ.get("LTX_CORE_CHECKOUT", "/tmp/ref"))
DEPS = Path(os.environ.get("LTX_CORE_DEPS", "/tmp/refdeps"))
TOLERANCE = 1e-4

pytestmark = [pytest.mark.skipif(not (CHECKOUT / "packages" / "ltx-pipelines" / "src").is_dir(),
                                 reason=f"no ltx-pipelines checkout at {CHECKOUT}"),
              pytest.mark.bigmem]  # ~3.8 GB in this process: both pipelines on the miniature

CASES = ("distilled two-stage, text to video", "distilled two-stage, start image")


@pytest.fixture(scope="module")
def results():
    if DEPS.is_dir() and str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))
    pytest.importorskip("einops")
    sys.path.insert(0, str(ROOT / "tools"))
    import parity_sampler

    return parity_sampler.distilled_cases(CHECKOUT)


@pytest.mark.parametrize("case", CASES)
def test_every_step_matches(results, case):
    rows = results[case]
    # Two stages (8 ancestral steps, then 3 Euler steps), each with every quantity compared.
    assert rows["stages"] == 0 and len(rows) == 1 + 2 * 18
    for name, difference in rows.items():
        assert difference < TOLERANCE, f"{case}: {name} differs by {difference}"


def test_the_noise_is_the_references_bit_for_bit(results):
    """The seed's generator draws in ltx-pipelines' order and shapes (token order, video then audio)."""
    for case in CASES:
        assert results[case]["stage 1: starting audio latents"] == 0.0
    assert results[CASES[0]]["stage 1: starting video latents (seeded noise)"] == 0.0
