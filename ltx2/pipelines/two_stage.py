"""The two-stage pipelines: the video made at half the width and height, upsampled x2 in latent
space, then refined at full size with three more steps, unguided. Every block is one-stage's; the
size the model runs at is a multiple of 64 (twice the VAE's 32), and the frames are center-cropped
to the request.

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

from ..models.loaded import LoadedModel
from ..models.lora import DISTILLED_LORA_STRENGTH, side_paths
from . import stages
from .guidance import Guidance, ModalityGuidance
from .one_stage import Latents, decode, make_latents
from .result import GenerationResult, result_of
from .schedules import STAGE_2_SIGMAS, unsized_sigmas
from .stages import Plan, Run, StepCallback

NAME = "two-stage"
UNGUIDED = Guidance(ModalityGuidance(), ModalityGuidance())  # stage 2: the distilled model (or LoRA) alone


def size_multiple(model: LoadedModel) -> int:
    """Stage 1 runs at half the size, which must itself be a multiple of the VAE's compression."""
    return 2 * model.pipe.vae_spatial_compression_ratio


def two_stage(model: LoadedModel, plan: Plan, on_step: StepCallback | None) -> GenerationResult:
    dev = not model.defaults.distilled
    refine = list(STAGE_2_SIGMAS)
    run = Run(model, on_step, total_steps=plan.steps + len(refine))
    width, height = stages.model_size(plan.width, plan.height, size_multiple(model))
    low = stages.latent_grid(model, plan, width // 2, height // 2)
    full = stages.latent_grid(model, plan, width, height)

    # 1-4. Stage 1: the one-stage blocks at half size (images encoded at half size too).
    first = make_latents(run, plan, low, width // 2, height // 2, denoise_stage="stage1_denoise",
                         sigmas=unsized_sigmas(plan.steps) if dev else None)
    # 5. Upsample the video latent x2.
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
    with run.stage("stage2_denoise"), side_paths(model, lora) if lora else nullcontext():
        video, audio = stages.denoise(run, video, audio, first.prompt, refine, full, UNGUIDED)
    # 9-10. Decode at full size, cropped to the request.
    second = Latents(first.prompt, conditions, first.generator, video, first.audio if dev else audio)
    result = result_of(run, plan, NAME, (width, height), *decode(run, plan, second, full),
                       has_audio_input=conditions.audio is not None)
    result.loras = [adapter.report(scale, stage="stage2") for adapter, scale in lora]
    return result
