"""The one-stage pipeline: every step at the size the model runs at, then a center crop to the
requested frame. Text, image and audio conditioning all go through the same stages. Its two
halves, `make_latents` and `decode`, are also the two-stage pipeline's first and last blocks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..models.loaded import LoadedModel
from ..models.lora import side_paths
from . import stages
from .result import GenerationResult, result_of
from .schedules import MAX_TOKENS, sigmas_for
from .stages import Conditions, LatentGrid, Plan, PromptEmbeddings, Run, StepCallback, Stream

NAME = "one-stage"


def size_multiple(model: LoadedModel) -> int:
    """Width and height the model runs at must be multiples of the VAE's spatial compression."""
    return model.pipe.vae_spatial_compression_ratio


@dataclass
class Latents:
    """What `make_latents` leaves for the stages after it."""

    prompt: PromptEmbeddings
    conditions: Conditions
    generator: torch.Generator  # the seed's generator, part-way through its draws
    video: Stream
    audio: Stream


def make_latents(run: Run, plan: Plan, grid: LatentGrid, width: int, height: int,
                 denoise_stage: str = "denoise", sigmas: list[float] | None = None) -> Latents:
    model = run.model
    # 1. Encode the prompt (and the negative one, with guidance).
    with run.stage("encode_prompt"):
        prompt = plan.prompt or stages.prompt_embeddings(run, plan.request.prompt, plan.request.negative_prompt,
                                                         plan.guided)  # encoded already to choose the length
    # 2. Encode the conditions: images with the video VAE at this size, the soundtrack with the audio VAE.
    with run.stage("encode_conditioning"):
        conditions = stages.encode_conditions(model, plan, grid, width, height)
        if plan.reference is not None:  # video to video: the IC-LoRA's reference tokens (video_to_video.py)
            conditions.reference = plan.reference.encode(model, grid)
    # 3. Prepare latents: seeded noise, conditioned tokens started at their condition.
    with run.stage("prepare_latents"):
        if sigmas is None:
            # ltx-pipelines' one-stage pipeline calls its scheduler without a latent: the dev schedule's
            # shift is the one for its default 4096 tokens whatever the video's size (as two-stage's stage 1).
            sigmas = sigmas_for(plan.steps, num_tokens=MAX_TOKENS, distilled=model.defaults.distilled)
        generator = torch.Generator("cpu").manual_seed(plan.seed)
        video, audio = stages.prepare_latents(model, plan, grid, conditions, sigmas[0], generator)
    # 4. Denoise video and audio jointly, with the request's guidance; a distilled LTX-2.5 samples this
    #    first stage with the ancestral sampler (its family says so).
    #    (ICLoraPipeline keeps plain Euler for its reference-conditioned stage 1.)
    ancestral = model.defaults.distilled and model.family.ancestral_first_stage and plan.reference is None
    sampler = {"ancestral_seed": plan.seed + stages.ANCESTRAL_NOISE_SEED_OFFSET} if ancestral else {}
    with run.stage(denoise_stage), side_paths(model, plan.reference.adapters if plan.reference is not None else []):
        video, audio = stages.denoise(run, video, audio, prompt, sigmas, grid, plan.guidance, **sampler)
    return Latents(prompt, conditions, generator, video, audio)


def decode(run: Run, plan: Plan, latents: Latents, grid: LatentGrid
           ) -> tuple[np.ndarray, np.ndarray | None, torch.Tensor, torch.Tensor]:
    """5. The video, cropped to the requested frame, and 6. the soundtrack."""
    with run.stage("decode_video"):
        frames, video_latents = stages.decode_video(run.model, latents.video, grid, plan.width, plan.height,
                                                    latents.generator)
    with run.stage("decode_audio"):
        waveform, audio_latents = stages.decode_audio(run.model, plan, latents.audio, grid)
    return frames, waveform, video_latents, audio_latents


def one_stage(model: LoadedModel, plan: Plan, on_step: StepCallback | None) -> GenerationResult:
    run = Run(model, on_step, total_steps=plan.steps)
    width, height = stages.model_size(plan.width, plan.height, size_multiple(model))
    grid = stages.latent_grid(model, plan, width, height)
    latents = make_latents(run, plan, grid, width, height)
    return result_of(run, plan, NAME, (width, height), *decode(run, plan, latents, grid),
                     has_audio_input=latents.conditions.audio is not None)
