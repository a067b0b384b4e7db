"""What a pipeline returns: frames, a waveform, and what was used to make them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .guidance import Guidance
from .stages import Plan, Run


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8, (frames, height, width, 3)
    waveform: np.ndarray | None  # float32 in [-1, 1], (channels, samples); None when include_audio is false
    sample_rate: int
    video_latents: torch.Tensor  # (1, 128, latent frames, latent height, latent width), VAE space
    audio_latents: torch.Tensor  # (1, 8, audio latent frames, 16), audio VAE space
    seed: int
    num_inference_steps: int
    guidance_scale: float
    num_frames: int
    fps: int
    width: int  # the frames' size, as requested
    height: int
    model_width: int = 0  # the size the model ran at (its last stage); the frames are its center crop
    model_height: int = 0
    pipeline: str = "one-stage"
    use_multiscale: bool = False
    guidance: Guidance | None = None  # every knob of the guider, as used
    transformer_passes: int = 0  # samples through the transformer, all steps and stages together
    prompt_cache_hits: int = 0  # prompts served from the prompt cache (Gemma not run for them)
    host_device_bytes: int = 0  # weight bytes the memory policy copied onto the device (0 under resident)
    timings: dict[str, float] = field(default_factory=dict)
    has_image_start: bool = False  # whether the start image conditioned the video (strength > 0)
    has_image_end: bool = False
    keyframes: int = 0  # images that conditioned the video (strength > 0): keyframes and the shorthands
    has_audio_input: bool = False
    loras: list[dict] = field(default_factory=list)  # each LoRA applied: path, scale, layers, ...
    expanded_prompt: str | None = None  # what Gemma wrote, when enable_prompt_expansion was on
    length_from: str = "request"  # where num_frames came from: request, audio, duration_head
    predicted_seconds: float | None = None  # the duration head's own answer, before the frame grid
    retake: dict | None = None  # a retake's span: start, end (seconds), first_frame, end_frame
    extend: dict | None = None  # an extend's window plan (ltx2.extend.report)
    reference: dict | None = None  # video to video: the IC-LoRA's reference as encoded (video_to_video.py)

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps


def result_of(run: Run, plan: Plan, pipeline: str, model_size: tuple[int, int], frames: np.ndarray,
              waveform: np.ndarray | None, video_latents: torch.Tensor, audio_latents: torch.Tensor,
              has_audio_input: bool) -> GenerationResult:
    request = plan.request
    return GenerationResult(
        frames=frames,
        waveform=waveform,
        sample_rate=run.model.vocoder_rate,
        video_latents=video_latents.float().cpu(),
        audio_latents=audio_latents.float().cpu(),
        seed=plan.seed,
        num_inference_steps=plan.steps,
        guidance_scale=plan.guidance.video.cfg,
        guidance=plan.guidance,
        num_frames=request.num_frames,
        fps=request.fps,
        width=plan.width,
        height=plan.height,
        model_width=model_size[0],
        model_height=model_size[1],
        pipeline=pipeline,
        use_multiscale=plan.use_multiscale,
        transformer_passes=run.transformer_passes,
        prompt_cache_hits=run.prompt_cache_hits,
        host_device_bytes=run.host_device_bytes,
        timings=run.watch.timings,
        has_image_start=plan.conditioning.image_start is not None and request.image_strength > 0,
        has_image_end=plan.conditioning.image_end is not None and request.end_image_strength > 0,
        keyframes=len(plan.images),
        has_audio_input=has_audio_input,
        length_from=plan.length_from,
        predicted_seconds=plan.predicted_seconds,
    )
