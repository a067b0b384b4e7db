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


@pytest.mark.bigmem  # ~4.4 GB in this process
def test_ltx_core_reads_the_miniature_back_as_it_built_it(results):
    assert results["written"] == []


@pytest.mark.bigmem  # ~4.4 GB in this process
def test_the_transformer_matches_in_every_case(results):
    assert set(results["transformer"]) >= {"text to video", "start image held (strength 1)", "STG pass (self-attention skipped)"}
    for case, difference in results["transformer"].items():
        assert difference < TOLERANCE, case


@pytest.mark.bigmem  # ~4.4 GB in this process
def test_every_component_matches(results):
    rows = results["components"]
    assert len(rows) == 11
    assert any(name.startswith("diffusion video decoder") for name in rows)
    for name, (difference, scale) in rows.items():
        assert scale > 0.1, name  # the outputs are not trivially zero
        assert difference < TOLERANCE, name


def test_stage5_width_slabs_are_ltx_cores():
    """Our stage-5 width slabs (ltx2.models.diffusion_decode.w_chunked) against ltx-core's own loop, bit for
    bit, on every width, halo and slab count up to the production kernel's halo, with a position-dependent
    stand-in for the attention so any column out of place shows; narrow slabs included, where ltx-core
    leaves zeros in a halo wider than the previous slab."""
    if DEPS.is_dir() and str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))
    pytest.importorskip("einops")
    sys.path.insert(0, str(CHECKOUT / "packages" / "ltx-core" / "src"))
    import torch
    from ltx_core.model.video_vae.transformer.chunked.attn import _run_w_chunked_residual

    from ltx2.models.diffusion_decode import w_chunked

    attend = lambda buf: torch.tanh(buf.cumsum(3) * 0.3 + buf.flip(3))  # noqa: E731
    g = torch.Generator().manual_seed(0)
    compared = 0
    for width in range(2, 30):
        for halo in range(1, 6):
            for chunks in (1, 2, 4):
                x = torch.randn(1, 2, 3, width, 4, generator=g)
                ref = x.clone()  # ltx-core adds in place
                _run_w_chunked_residual(ref, None, None, (), chunks, halo, lambda buf, *_: attend(buf))
                assert torch.equal(x + w_chunked(x, attend, chunks, halo), ref), (width, halo, chunks)
                compared += 1
    assert compared == 28 * 5 * 3
