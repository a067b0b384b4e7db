"""The sampler against ltx-pipelines 1.2.0 (tools/parity_sampler.py): its own pipeline objects' __call__ and
ltx2's generate() on one miniature checkpoint ltx-core reads, for every pipeline ltx2 runs:

- LTX-2.5 (a directory ltx-core writes): the distilled two-stage pipeline (ancestral stage 1) for text to video,
  a start image, and start and end images; the dev one-stage pipeline with the multi-modal guider (CFG, STG,
  modality isolation, rescale) for text to video and a start image; the dev two-stage pipeline with the
  distilled LoRA in stage 2;
- LTX-2.3 (a single file with a Gemma 3 root): the distilled two-stage pipeline (Euler, CRF 33), text to video
  and with start and end images.

Per stage and per transformer pass: the sigmas, the seeded noise, the latents, per-token timesteps, positions
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
              pytest.mark.bigmem]  # ~4 GB in this process: both sides' pipelines on the miniatures


def _parity():
    if DEPS.is_dir() and str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))
    pytest.importorskip("einops")
    sys.path.insert(0, str(ROOT / "tools"))
    import parity_sampler

    return parity_sampler


@pytest.fixture(scope="module")
def results():
    parity_sampler = _parity()
    return {**parity_sampler.cases(CHECKOUT), **parity_sampler.ltx23_cases(CHECKOUT)}


def _case_names():
    sys.path.insert(0, str(ROOT / "tools"))
    import parity_sampler  # imports nothing from the reference until a case runs

    return [case.name for case in parity_sampler.CASES] + ["LTX-2.3 distilled two-stage, text to video",
                                                           "LTX-2.3 distilled two-stage, start and end images"]


@pytest.mark.parametrize("case", _case_names())
def test_every_step_matches(results, case):
    rows = results[case]
    stages = 1 if "one-stage" in case else 2
    assert rows["stages"] == 0 and len(rows) == 1 + stages * 18, sorted(rows)
    for name, difference in rows.items():
        assert difference < TOLERANCE, f"{case}: {name} differs by {difference}"


def test_the_noise_is_the_references_bit_for_bit(results):
    """The seed's generator draws in ltx-pipelines' order and shapes (token order, video then audio); with an
    image, the first latent frame's tokens start from its encoding instead (equal to ~1e-7)."""
    for case, rows in results.items():
        assert rows["stage 1: starting audio latents"] == 0.0, case
        if "text to video" in case:
            assert rows["stage 1: starting video latents (seeded noise)"] == 0.0, case
