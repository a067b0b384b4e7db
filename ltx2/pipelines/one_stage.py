"""The one-stage pipeline: every step at the size the model runs at, then a center crop to the
requested frame. Text, image and audio conditioning all go through the same stages."""

from __future__ import annotations

import torch

from ..models.loaded import LoadedModel
from . import stages
from .result import GenerationResult, result_of
from .schedules import sigmas_for
from .stages import Plan, Run, StepCallback

NAME = "one-stage"


def size_multiple(model: LoadedModel) -> int:
    """Width and height the model runs at must be multiples of the VAE's spatial compression."""
    return model.pipe.vae_spatial_compression_ratio


def one_stage(model: LoadedModel, plan: Plan, on_step: StepCallback | None) -> GenerationResult:
    run = Run(model, on_step, total_steps=plan.steps)
    width, height = stages.model_size(plan.width, plan.height, size_multiple(model))
    grid = stages.latent_grid(model, plan, width, height)

    # 1. Encode the prompt (and the negative one, with guidance).
    with run.stage("encode_prompt"):
        prompt = stages.prompt_embeddings(run, plan.request.prompt, plan.request.negative_prompt, plan.guided)
    # 2. Encode the conditions: images with the video VAE, the soundtrack with the audio VAE.
    with run.stage("encode_conditioning"):
        conditions = stages.encode_conditions(model, plan, grid, width, height)
    # 3. Prepare latents: seeded noise, conditioned tokens started at their condition.
    with run.stage("prepare_latents"):
        sigmas = sigmas_for(plan.steps, num_tokens=grid.video_tokens, distilled=model.defaults.distilled)
        generator = torch.Generator("cpu").manual_seed(plan.seed)
        video, audio = stages.prepare_latents(model, plan, grid, conditions, sigmas[0], generator)
    # 4. Denoise video and audio jointly.
    with run.stage("denoise"):
        video, audio = stages.denoise(run, video, audio, prompt, sigmas, grid, plan.guidance)
    # 5. Decode the video, cropped to the requested frame, and 6. the soundtrack.
    with run.stage("decode_video"):
        frames, video_latents = stages.decode_video(model, video, grid, plan.width, plan.height)
    with run.stage("decode_audio"):
        waveform, audio_latents = stages.decode_audio(model, plan, audio, grid)
    return result_of(run, plan, NAME, (width, height), frames, waveform, video_latents, audio_latents,
                     has_audio_input=conditions.audio is not None)
