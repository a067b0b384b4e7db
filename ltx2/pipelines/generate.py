"""`generate()`: decode the inputs if the caller has not, plan the request against the loaded
model, and run the pipeline that serves it.

The pipelines are compositions of the stages in `stages.py`: `one_stage.py` today; more (two-stage,
LoRA stages) pick the same blocks with other sizes and sigmas.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..models.loaded import LoadedModel
from ..schema import GenerateRequest
from .conditioning import Conditioning, decode_conditioning
from .one_stage import one_stage
from .result import GenerationResult
from .stages import OutputRejected, StepCallback, fit_length, plan_generation

__all__ = ["GenerationResult", "OutputRejected", "StepCallback", "fit_length", "generate"]


@torch.inference_mode()
def generate(
    model: LoadedModel,
    request: GenerateRequest | Mapping[str, Any],
    on_step: StepCallback | None = None,
    conditioning: Conditioning | None = None,
) -> GenerationResult:
    """Generate one video with its soundtrack. Thread-safe: jobs on one model run one at a time.

    `conditioning` holds the request's images and audio, decoded (`decode_conditioning`); when it
    is not given and the request has any, they are decoded here with the default limits.
    """
    if not isinstance(request, GenerateRequest):
        request = GenerateRequest.model_validate(request)
    if conditioning is None:
        conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate)
    with model.lock:
        plan = plan_generation(model, request, conditioning)
        return one_stage(model, plan, on_step)
