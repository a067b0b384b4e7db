"""`generate()`: decode the inputs if the caller has not, plan the request against the loaded
model, and run the pipeline that serves it.

The pipelines are compositions of the stages in `stages.py`: `one_stage.py` and `two_stage.py`
(the request's `use_multiscale`; for a dev checkpoint, its stage 2 with the distilled LoRA); more
pick the same blocks with other sizes and sigmas.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import torch

from ..models.loaded import LoadedModel
from ..models.lora import Adapter, side_paths
from ..schema import GenerateRequest, InvalidRequest
from . import one_stage as one_stage_module
from . import two_stage as two_stage_module
from .conditioning import Conditioning, decode_conditioning, request_targets
from .expansion import expand_plan
from .length import choose_length
from .loras import ic_lora_scales
from .loras import resolve as resolve_loras
from .one_stage import one_stage
from .extend import extend
from .extend import resolve_request as resolve_extend
from .retake import resolve_request as resolve_retake
from .retake import retake
from .two_stage import two_stage
from .video_to_video import resolve_request as resolve_video_to_video
from .video_to_video import video_to_video
from .result import GenerationResult
from . import rank_group, temporal
from .stages import OutputRejected, StepCallback, fit_length, plan_generation, resolve_multiscale

__all__ = ["GenerationResult", "OutputRejected", "StepCallback", "fit_length", "generate", "image_targets"]


def image_targets(model: LoadedModel, request: GenerateRequest, lora_policy=None):
    """Every size and setting the pipeline serving `request` will encode its images at, for the sandbox
    to prepare them there (ltx2.media.conditioning_image): the one-stage size, or two-stage's first
    stage (half, or two thirds for x1.5) and full sizes; the family's CRF; Gemma's preview when the
    prompt is expanded. With ic_lora, where its reference video is decoded: stage 1's size over the
    IC-LoRA's downscale factor (read from the file in `lora_policy`'s LoRA directory, the environment's by
    default), the model size a multiple that keeps the reference a whole number of latent pixels."""
    # a retake and an extend run one stage
    two = request.retake is None and request.extend is None and resolve_multiscale(model, request)
    multiple = (two_stage_module if two else one_stage_module).size_multiple(model)
    scale = two_stage_module.spatial_scale(model)
    scales = ((scale.numerator, scale.denominator), (1, 1)) if two else ((1, 1),)
    reference = None
    if request.ic_lora is not None:
        downscale, temporal = ic_lora_scales(model, request, lora_policy)
        multiple *= downscale
        sized = {"width", "height"} <= request.model_fields_set or "video_size" in request.model_fields_set
        for name in ("width", "height") if downscale > 1 and sized else ():
            if getattr(request, name) % multiple:  # else stage 1 would not be a whole number of references
                raise InvalidRequest(name, f"{name} must be a multiple of {multiple} with this ic_lora (its reference "
                                           f"is 1/{downscale} of stage 1's size), got {getattr(request, name)}")
        first = (scale.numerator, scale.denominator) if two else (1, 1)
        # then where a conditioning_attention_mask is read (stage 1's size) and pooled (the VAE's grid, the dtype)
        pipe = model.pipe
        reference = (first[1], first[0] * downscale, temporal, downscale,
                     (pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio),
                     str(model.dtype).removeprefix("torch."))
    vision = getattr(model.pipe.text_encoder.config, "vision_config", None) if request.enable_prompt_expansion else None
    return replace(request_targets(request, multiple, scales, model.family.image_crf,
                                   getattr(vision, "image_size", None)), reference=reference)


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
        conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate,
                                           targets=image_targets(model, request))
    if adapters is None:
        adapters = resolve_loras(model, request)
    # --parallel: the leader of a served rank group hands the job to its followers (a no-op otherwise).
    request, on_step = rank_group.lead(request, conditioning, on_step)
    # The LoRAs' side paths exist only inside this block: a request without LoRAs runs the bare model. Video to
    # video runs them in stage 1 only, with its IC-LoRA (video_to_video.py).
    with model.lock, side_paths(model, adapters if request.ic_lora is None else []):
        if request.retake is not None:  # its size, fps and length from the video where the request left them
            request = resolve_retake(request, conditioning)
        if request.extend is not None:  # its size and fps from the video; num_frames stays each window's length
            request = resolve_extend(request, conditioning)
        if request.ic_lora is not None:
            request = resolve_video_to_video(request, conditioning)
        plan = plan_generation(model, request, conditioning)
        # Before every pipeline: what is encoded (and any prompt cache's key) is the expanded prompt.
        plan, expanded, seconds = expand_plan(model, plan)
        started = time.perf_counter()
        plan = choose_length(model, plan)  # LTX-2.5's duration head, when the request leaves the length open
        length_seconds = time.perf_counter() - started
        temporal.check(model, plan)  # temporal_upscale: refused before any work where it cannot run
        pipeline = (retake if request.retake is not None else extend if request.extend is not None
                    else two_stage if plan.use_multiscale else one_stage)
        if request.ic_lora is not None:
            pipeline = partial(video_to_video, adapters=adapters)
        result = pipeline(model, plan, on_step)
    chosen = {"choose_length": length_seconds} if plan.length_from == "duration_head" else {}
    result.timings = {"expand_prompt": seconds, **chosen, **result.timings}
    result.expanded_prompt = expanded
    # The request's LoRAs, then any a pipeline adds for one stage (the dev two-stage's distilled LoRA).
    if request.ic_lora is None:  # video_to_video reports its own, with their stage
        result.loras = [adapter.report(scale) for adapter, scale in adapters] + result.loras
    return result
