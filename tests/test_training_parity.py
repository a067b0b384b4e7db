"""ltx2's training loss against ltx-trainer 1.2.0's (tools/parity_trainer.py) on the LTX-2 miniature: the same
latents, noise, sigmas and text give the same loss within 1e-4 in float32, for t2v, distinct sigmas per
modality and first-frame (i2v) conditioning; and the model's output matters to each case.

Needs an LTX-2 checkout at 1.2.0 (LTX_CORE_CHECKOUT, default /tmp/ref) and einops/scipy (LTX_CORE_DEPS,
default /tmp/refdeps); skipped without them. ltx-trainer is imported from the checkout, never installed."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKOUT = Path(os.environ.get("LTX_CORE_CHECKOUT", "/tmp/ref"))
DEPS = Path(os.environ.get("LTX_CORE_DEPS", "/tmp/refdeps"))
TOLERANCE = 1e-4

pytestmark = pytest.mark.skipif(not (CHECKOUT / "packages" / "ltx-trainer" / "src").is_dir(),
                                reason=f"no ltx-trainer checkout at {CHECKOUT}")


@pytest.fixture(scope="module")
def rows():
    if DEPS.is_dir() and str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))
    pytest.importorskip("einops")
    sys.path.insert(0, str(ROOT / "tools"))
    import parity_trainer

    return parity_trainer.compare(CHECKOUT)


def test_the_loss_matches_ltx_trainer(rows):
    assert len(rows) == 4
    for name, reference, ours, blind in rows:
        assert abs(reference - ours) <= TOLERANCE, (name, reference, ours)
        assert abs(reference - blind) > 100 * TOLERANCE, (name, "the model's output must matter")
