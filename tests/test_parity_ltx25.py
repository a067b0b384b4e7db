"""LTX-2.5 against Lightricks' ltx-core 1.2.0 on a miniature directory ltx-core writes itself
(tools/parity_ltx_core.py --family ltx-2.5): every component within 1e-4 in float32.

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

pytestmark = pytest.mark.skipif(not (CHECKOUT / "packages" / "ltx-core" / "src").is_dir(),
                                reason=f"no ltx-core checkout at {CHECKOUT}")


@pytest.fixture(scope="module")
def results():
    if DEPS.is_dir() and str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))
    pytest.importorskip("einops")
    sys.path.insert(0, str(ROOT / "tools"))
    import parity_ltx_core

    return parity_ltx_core.ltx25(parity_ltx_core.import_ltx_core(CHECKOUT), None)


def test_ltx_core_reads_the_miniature_back_as_it_built_it(results):
    assert results["written"] == []


def test_the_transformer_matches_in_every_case(results):
    assert set(results["transformer"]) >= {"text to video", "start image held (strength 1)", "STG pass (self-attention skipped)"}
    for case, difference in results["transformer"].items():
        assert difference < TOLERANCE, case


DECODER = "diffusion video decoder (pixels)"


def test_every_other_component_matches(results):
    rows = results["components"]
    assert len(rows) == 11
    for name, (difference, scale) in rows.items():
        if name == DECODER:
            continue
        assert scale > 0.1, name  # the outputs are not trivially zero
        assert difference < TOLERANCE, name


@pytest.mark.xfail(strict=True, reason="stage 5 of diffusers' decoder differs from ltx-core's on latents above the "
                                       "size floor (README, Matching ltx-core 1.2.0)")
def test_the_diffusion_decoder_matches(results):
    assert results["components"][DECODER][0] < TOLERANCE
