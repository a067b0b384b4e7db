"""`generate()`: decode the inputs if the caller has not, plan the request against the loaded
model, and run the pipeline that serves it.

The pipelines are compositions of the stages in `stages.py`: `one_stage.py` and `two_stage.py`
(the request's `use_multiscale`; for a dev checkpoint, its stage 2 with the distilled LoRA); more
pick the same blocks with other sizes and sigmas.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from ..models.loaded import LoadedModel
from ..models.lora import Adapter, side_paths
from ..schema import GenerateRequest
from .conditioning import Conditioning, decode_conditioning
from .expansion import expand_plan
from .length import choose_length
from .loras import resolve as resolve_loras
from .one_stage import one_stage
from .two_stage import two_stage
from .result import GenerationResult
from . import temporal
from .stages import OutputRejected, StepCallback, fit_length, plan_generation

__all__ = ["GenerationResult", "OutputRejected", "StepCallback", "fit_length", "generate"]


@torch.inference_mode()
def generate(
    model: LoadedModel,
    request: GenerateRequest | Mapping[str, Any],
    on_step: StepCallback | None = None,
    conditioning: Conditioning | None = None,
    adapters: list[tuple[Adapter, float]] | None = None,
) -> GenerationResult:
    """Generate one video with its soundtrack. Thread-safe: jobs on one model run one at a time.

    `conditioning` holds the request's images and audio, decoded (`decode_conditioning`); when it
    is not given and the request has any, they are decoded here with the default limits.
    `adapters` are its LoRAs, bound (`ltx2.pipelines.loras.resolve`); likewise found here when not given.
    """
    if not isinstance(request, GenerateRequest):
        request = GenerateRequest.model_validate(request)
    if conditioning is None:
        conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate)
    if adapters is None:
        adapters = resolve_loras(model, request)
    # The LoRAs' side paths exist only inside this block: a request without LoRAs runs the bare model.
    with model.lock, side_paths(model, adapters):
        plan = plan_generation(model, request, conditioning)
        # Before every pipeline: what is encoded (and any prompt cache's key) is the expanded prompt.
        plan, expanded, seconds = expand_plan(model, plan)
        started = time.perf_counter()
        plan = choose_length(model, plan)  # LTX-2.5's duration head, when the request leaves the length open
        length_seconds = time.perf_counter() - started
        temporal.check(model, plan)  # temporal_upscale: refused before any work where it cannot run
        pipeline = two_stage if plan.use_multiscale else one_stage
        result = pipeline(model, plan, on_step)
    chosen = {"choose_length": length_seconds} if plan.length_from == "duration_head" else {}
    result.timings = {"expand_prompt": seconds, **chosen, **result.timings}
    result.expanded_prompt = expanded
    # The request's LoRAs, then any a pipeline adds for one stage (the dev two-stage's distilled LoRA).
    result.loras = [adapter.report(scale) for adapter, scale in adapters] + result.loras
    return result
