"""Start-up warm-up: a compiled transformer builds its graph on the first call, so the server makes
that call before it reports ready, with a request of the default size (the size most requests have)."""

from __future__ import annotations

import logging
import time

from ..models.loaded import LoadedModel
from ..schema import GenerateRequest
from .generate import generate

log = logging.getLogger("ltx2")


def warm_up(model: LoadedModel, request: GenerateRequest | None = None) -> float | None:
    """Run one request when the transformer is compiled; the seconds it took (None: not compiled).

    `request` defaults to one of the default size, what the server warms up with. The seconds are
    reported in /health as the compile time: almost all of it is torch.compile tracing and building
    the block's kernels, the rest one ordinary generation.
    """
    state = model.speed.get("compile", {})
    if not state.get("enabled"):
        return None
    request = request or GenerateRequest(prompt="warm-up", seed=0)
    start = time.perf_counter()
    generate(model, request)
    seconds = time.perf_counter() - start
    state.update(warmed_up=True, warmup_seconds=round(seconds, 3),
                 warmup_request=f"{request.width}x{request.height}x{request.num_frames}")
    log.info("compiled transformer block warmed up in %.1fs (%s)", seconds, state["warmup_request"])
    return seconds
