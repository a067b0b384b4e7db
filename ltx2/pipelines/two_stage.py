"""The two-stage pipelines: the video made at half the width and height, upsampled x2 in latent
space, then refined at full size with three more steps, unguided. Every block is one-stage's; the
size the model runs at is a multiple of 64 (twice the VAE's 32), and the frames are center-cropped
to the request.

With LTX-2.3's x1.5 spatial upscaler (--spatial-upscaler x1.5) stage 1 runs at two thirds of the size.
ltx-pipelines' two-stage pipelines are written for x2 only (stage 1 at width // 2); the x1.5 rule here
is ltx-core's resampler's: it makes ceil(1.5 h) latent rows from h (x3 pixel shuffle, blurred stride-2
downsample), exactly 1.5 h for an even h. So the model runs at a multiple of 96 (3 x the VAE's 32) and
stage 1 at a multiple of 64: its latent rows are even and upsample to exactly the full size's.
With a request's temporal_upscale the temporal round (temporal.py) follows stage 2.

Two checkpoints, two recipes from ltx-pipelines 1.2.0:
- distilled (`DistilledPipeline`): stage 1 on the 8 distilled sigmas; stage 2 refines video and
  audio together, and the refined audio is decoded;
- dev (`TI2VidTwoStagesPipeline`): stage 1 with the request's guidance on the dev schedule (shifted
  for the scheduler's default token count: it is built without a latent); stage 2 runs the same dev
  weights with Lightricks' distilled LoRA added (a side path for stage 2 only, nested inside the
  request's LoRAs) and decodes stage 1's audio: stage 2's audio tokens ride along for the video's
  cross-attention and are dropped, as the reference drops them.
"""

from __future__ import annotations

from contextlib import nullcontext
from fractions import Fraction

from ..models.loaded import LoadedModel
from ..models.lora import DISTILLED_LORA_STRENGTH, side_paths
from . import stages, temporal
from .guidance import Guidance, ModalityGuidance
from .one_stage import Latents, decode, make_latents
from .result import GenerationResult, result_of
from .schedules import STAGE_2_SIGMAS, unsized_sigmas
from .stages import Plan, Run, StepCallback

NAME = "two-stage"
UNGUIDED = Guidance(ModalityGuidance(), ModalityGuidance())  # stage 2: the distilled model (or LoRA) alone


def spatial_scale(model: LoadedModel) -> Fraction:
    """The loaded spatial upscaler's factor: 2, or 3/2 for LTX-2.3's x1.5."""
    return Fraction(3, 2) if model.spatial_upscaler == "x1.5" else Fraction(2)


def size_multiple(model: LoadedModel) -> int:
    """Stage 1 runs at 1 / scale of the size, which must itself be a multiple of the VAE's compression (and,
    for x1.5, have an even latent size: see the module's docstring): 64 for x2, 96 for x1.5."""
    return spatial_scale(model).numerator * model.pipe.vae_spatial_compression_ratio


def first_stage_size(model: LoadedModel, width: int, height: int) -> tuple[int, int]:
    """Stage 1's size for a model size that is a multiple of `size_multiple`."""
    scale = spatial_scale(model)
    return width * scale.denominator // scale.numerator, height * scale.denominator // scale.numerator


def two_stage(model: LoadedModel, plan: Plan, on_step: StepCallback | None) -> GenerationResult:
    dev = not model.defaults.distilled
    refine = list(STAGE_2_SIGMAS)
    doubling = plan.request.temporal_upscale
    run = Run(model, on_step, total_steps=plan.steps + len(refine) + (len(temporal.SIGMAS) if doubling else 0))
    width, height = stages.model_size(plan.width, plan.height, size_multiple(model))
    low_width, low_height = first_stage_size(model, width, height)
    low = stages.latent_grid(model, plan, low_width, low_height)
    full = stages.latent_grid(model, plan, width, height)

    # 1-4. Stage 1: the one-stage blocks at half (x1.5: two thirds) size, images encoded at that size too.
    first = make_latents(run, plan, low, low_width, low_height, denoise_stage="stage1_denoise",
                         sigmas=unsized_sigmas(plan.steps) if dev else None)
    # 5. Upsample the video latent x2 (or x1.5).
    with run.stage("upsample"):
        upsampled = stages.upsample(model, first.video, low)
    # 6. Encode the images again at full size; 7. re-noise both streams to the first stage-2 sigma,
    #    conditioned tokens restarting from their clean latents.
    with run.stage("encode_conditioning"):
        conditions = stages.encode_images(model, plan, width, height)
        conditions.audio = first.conditions.audio
    with run.stage("prepare_latents"):
        video, audio = stages.prepare_latents(model, plan, full, conditions, refine[0], first.generator,
                                              video_start=upsampled, audio_start=first.audio.latents)
    # 8. Stage 2: refine at full size, unguided; a dev checkpoint with the distilled LoRA added.
    lora = [(model.distilled_lora, DISTILLED_LORA_STRENGTH)] if dev else []
    with side_paths(model, lora) if lora else nullcontext():
        with run.stage("stage2_denoise"):
            video, audio = stages.denoise(run, video, audio, first.prompt, refine, full, UNGUIDED)
        shipped = first.audio if dev else audio  # the soundtrack that will be decoded
        # (temporal_upscale) DFR's temporal round: frames and fps doubled, the same LoRAs as stage 2.
        if doubling:
            plan, full, video = temporal.temporal_round(run, plan, full, first.prompt, conditions, first.generator,
                                                        video, shipped)
    # 9-10. Decode at full size, cropped to the request.
    second = Latents(first.prompt, conditions, first.generator, video, shipped)
    result = result_of(run, plan, NAME, (width, height), *decode(run, plan, second, full),
                       has_audio_input=conditions.audio is not None)
    result.loras = [adapter.report(scale, stage="stage2") for adapter, scale in lora]
    return result
