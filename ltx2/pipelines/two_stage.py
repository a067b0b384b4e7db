"""The two-stage distilled pipeline, as Lightricks runs the distilled 19B (ltx-pipelines'
`DistilledPipeline`): the video made at half the width and height, upsampled x2 in latent space,
then refined at full size with three more steps. Every block is one-stage's; the size the model
runs at is a multiple of 64 (twice the VAE's 32), and the frames are center-cropped to the request."""

from __future__ import annotations

import torch

from ..models.loaded import LoadedModel
from . import stages
from .guidance import Guidance, ModalityGuidance
from .result import GenerationResult, result_of
from .schedules import STAGE_2_SIGMAS, sigmas_for
from .stages import Plan, Run, StepCallback

NAME = "two-stage"
UNGUIDED = Guidance(ModalityGuidance(), ModalityGuidance())  # stage 2: the distilled model alone


def size_multiple(model: LoadedModel) -> int:
    """Stage 1 runs at half the size, which must itself be a multiple of the VAE's compression."""
    return 2 * model.pipe.vae_spatial_compression_ratio


def two_stage(model: LoadedModel, plan: Plan, on_step: StepCallback | None) -> GenerationResult:
    refine = list(STAGE_2_SIGMAS)
    run = Run(model, on_step, total_steps=plan.steps + len(refine))
    width, height = stages.model_size(plan.width, plan.height, size_multiple(model))
    low = stages.latent_grid(model, plan, width // 2, height // 2)
    full = stages.latent_grid(model, plan, width, height)

    # 1. Encode the prompt (once: both stages attend to it).
    with run.stage("encode_prompt"):
        prompt = stages.encode_prompt(model, plan.request.prompt, plan.request.negative_prompt, plan.guided)
    # 2. Encode the conditions for stage 1: images at half size, the soundtrack.
    with run.stage("encode_conditioning"):
        conditions = stages.encode_conditions(model, plan, low, width // 2, height // 2)
    # 3. Prepare stage-1 latents.
    with run.stage("prepare_latents"):
        sigmas = sigmas_for(plan.steps, num_tokens=low.video_tokens, distilled=model.defaults.distilled)
        generator = torch.Generator("cpu").manual_seed(plan.seed)
        video, audio = stages.prepare_latents(model, plan, low, conditions, sigmas[0], generator)
    # 4. Stage 1: denoise at half size, with the request's guidance.
    with run.stage("stage1_denoise"):
        video, audio = stages.denoise(run, video, audio, prompt, sigmas, low, plan.guidance)
    # 5. Upsample the video latent x2.
    with run.stage("upsample"):
        upsampled = stages.upsample(model, video, low)
    # 6. Encode the images again at full size; 7. re-noise both streams to the first stage-2 sigma,
    #    conditioned tokens restarting from their clean latents.
    with run.stage("encode_conditioning"):
        full_conditions = stages.encode_images(model, plan, width, height)
        full_conditions.audio = conditions.audio
    with run.stage("prepare_latents"):
        video, audio = stages.prepare_latents(model, plan, full, full_conditions, refine[0], generator,
                                              video_start=upsampled, audio_start=audio.latents)
    # 8. Stage 2: refine video and audio together at full size.
    with run.stage("stage2_denoise"):
        video, audio = stages.denoise(run, video, audio, prompt, refine, full, UNGUIDED)
    # 9. Decode the video, cropped to the requested frame, and 10. the soundtrack.
    with run.stage("decode_video"):
        frames, video_latents = stages.decode_video(model, video, full, plan.width, plan.height)
    with run.stage("decode_audio"):
        waveform, audio_latents = stages.decode_audio(model, plan, audio, full)
    return result_of(run, plan, NAME, (width, height), frames, waveform, video_latents, audio_latents,
                     has_audio_input=conditions.audio is not None)
