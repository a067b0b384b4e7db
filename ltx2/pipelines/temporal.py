"""The temporal x2 round of ltx-pipelines' DFR pipeline (`DFRPipeline`, temporal_upsample_rounds=1): after
the two-stage pipeline, the video latent goes through the x2 temporal latent upsampler (F latent frames
-> 2F - 1: N pixel frames -> 2(N - 1) + 1, fps doubled), is re-noised to the first of the distilled
schedule's last four sigmas (0.975, 0.909375, 0.725, 0.421875) from the seed's generator, and denoised
at full size, unguided, with ltx-core's ancestral Euler step at eta 0.5 (noise seeded with the seed +
1000), the transformer as stage 2 had it (a dev checkpoint: with its distilled LoRA). RoPE time runs
at the doubled rate, capped at 60 fps as the reference caps its conditioning fps. The soundtrack is
stage 2's, decoded and cut to the doubled video's length, (2N - 1) / 2fps seconds, as the reference
cuts it.

Where this differs from the reference, and why: ltx-pipelines runs the round on a keyframe-slot
checkpoint in 2 tiles, anchoring each seam with keyframes carried from stage 2 and running the
transformer video-only; ltx2's transformers have no generated-keyframe slots, so the round is one tile
over the whole clip, its image conditions (the first frame, keyframes) re-applied at full size, and the
soundtrack rides along held fixed (every audio token at sigma 0, as diffusers' DFR temporal refine
pipeline passes it), since ltx2's transformer pass is always joint.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch

from ..models.loaded import LoadedModel
from ..schema import InvalidRequest, temporal_problem
from . import stages
from .conditioning import blend_velocity
from .schedules import DISTILLED_SIGMAS
from .stages import Conditions, LatentGrid, Plan, PromptEmbeddings, Run, Stream, TextContext, ancestral_step

SIGMAS = DISTILLED_SIGMAS[4:]  # ltx-pipelines: DISTILLED_SIGMAS[4:] (the scheduler appends the final 0)
ETA = 0.5  # _TEMPORAL_ANCESTRAL_ETA
MAX_CONDITIONING_FPS = 60  # _MAX_CONDITIONING_FPS: RoPE time beyond it leaves the trained distribution
NOISE_SEED_OFFSET = 1000  # the loop's noise: seed + 1000 * round + tile (round 1, tile 0)


def check(model: LoadedModel, plan: Plan) -> None:
    """Refuse temporal_upscale before any work where it cannot run (the length may come from the audio or
    the duration head, so the frame limit is checked again here)."""
    request = plan.request
    if not request.temporal_upscale:
        return
    if model.temporal_upsampler is None:
        official = model.family.files.temporal_upsampler
        where = (f"{official} in the models directory, or LTX2_TEMPORAL_UPSCALER" if official
                 else f"{model.family.title} publishes none")
        raise InvalidRequest("temporal_upscale", f"temporal_upscale needs the x2 temporal upscaler, and this server "
                                                 f"has none loaded ({where}): send false or leave it out")
    if not plan.use_multiscale:
        raise InvalidRequest("temporal_upscale", "temporal_upscale runs after the two-stage pipeline, as "
                                                 "ltx-pipelines' DFR pipeline does: send use_multiscale true or leave "
                                                 "it out")
    if (problem := temporal_problem(request.num_frames, request.fps)) is not None:
        raise InvalidRequest("temporal_upscale", problem)


def doubled(plan: Plan, grid: LatentGrid) -> tuple[Plan, LatentGrid]:
    """The plan and latent grid of the clip after the round: 2(N - 1) + 1 frames at twice the fps."""
    request = plan.request
    frames, fps = 2 * (request.num_frames - 1) + 1, 2 * request.fps
    longer = replace(plan, request=request.model_copy(update={"num_frames": frames, "fps": fps}))
    # The audio latents stay stage 2's: the same seconds of sound.
    return longer, replace(grid, frames=2 * grid.frames - 1, num_frames=frames, fps=min(fps, MAX_CONDITIONING_FPS))


def upsample_in_time(model: LoadedModel, video: Stream, grid: LatentGrid) -> torch.Tensor:
    """The video's tokens at 2F - 1 latent frames (ltx-core's `upsample_video`: un-normalise with the VAE's
    per-channel statistics, upsample, normalise again). Keyframe tokens are left behind. Packed tokens."""
    pipe, upsampler = model.pipe, model.temporal_upsampler
    (mean, std), scaling = model.video_latent_stats, pipe.vae.config.scaling_factor
    patch, patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    with model.placement.use("temporal_upsampler"):
        latents = pipe._unpack_latents(video.latents[:, : video.own_tokens], grid.frames, grid.height, grid.width,
                                       patch, patch_t)
        raw = pipe._denormalize_latents(latents, mean, std, scaling)
        weight = next(upsampler.parameters())
        longer = upsampler(raw.to(weight.device, weight.dtype)).float().to(latents.device)
        latents = pipe._normalize_latents(longer, mean, std, scaling)
    return pipe._pack_latents(latents, patch, patch_t)


def temporal_round(run: Run, plan: Plan, grid: LatentGrid, prompt: PromptEmbeddings, conditions: Conditions,
                   generator: torch.Generator, video: Stream, audio: Stream) -> tuple[Plan, LatentGrid, Stream]:
    """Upsample `video` (stage 2's, at `grid`) in time, re-noise and refine it. Returns the doubled plan and
    grid, and the refined video; `audio` (what will be decoded) only conditions it, held fixed."""
    model = run.model
    longer, fine = doubled(plan, grid)
    with run.stage("temporal_upsample"):
        start = upsample_in_time(model, video, grid)
    with run.stage("temporal_denoise"):
        # The images at the same moments of the doubled clip: frame f of N is frame 2f of 2N - 1.
        images = Conditions(images=[(replace(image, frame=2 * image.frame), tokens)
                                    for image, tokens in conditions.images])
        refined, held = stages.prepare_latents(model, longer, fine, images, SIGMAS[0], generator, video_start=start)
        held.latents = held.clean = audio.latents[:, : audio.own_tokens]
        held.strength = torch.ones(1, held.latents.shape[1], 1, device=held.latents.device)
        held.frozen = True
        refined = _denoise(run, refined, held, prompt, fine, longer.seed + NOISE_SEED_OFFSET)
    return longer, fine, refined


def _denoise(run: Run, video: Stream, audio: Stream, prompt: PromptEmbeddings, grid: LatentGrid,
             noise_seed: int) -> Stream:
    """The round's loop: unguided, video updated with the ancestral step at ETA, audio held."""
    model = run.model
    context = prompt.positive
    if context.mask is not None and bool(context.mask.all()):
        context = TextContext(context.video, context.audio, None)  # all-true mask: the same math, faster kernels
    noise = torch.Generator("cpu").manual_seed(noise_seed)
    with model.placement.use("transformer"):
        scheduler = copy.deepcopy(model.pipe.scheduler)
        scheduler.set_timesteps(sigmas=list(SIGMAS), device=model.device)
        for step, t in enumerate(scheduler.timesteps):
            sigma, sigma_next = float(scheduler.sigmas[step]), float(scheduler.sigmas[step + 1])
            velocity, _ = stages.transformer_pass(run, video, audio, t, sigma, context, grid)
            if video.strength is not None:
                velocity = blend_velocity(velocity, video.latents, video.clean, video.strength, sigma)
            video.latents = ancestral_step(video, velocity, sigma, sigma_next, noise, ETA)
            run.step_done()
    return video
