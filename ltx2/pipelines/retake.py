"""Retake: regenerate a time span of a video from the prompt and keep the rest, as ltx-pipelines'
`RetakePipeline` does.

One stage at the model size. The input's frames are encoded with the video VAE and its soundtrack (when
it has one) with the audio VAE; those latents are every token's clean value. ltx-core's
`TemporalRegionMask(start, end, fps)` regenerates exactly the tokens whose time bounds overlap
[start, end) (a video token's pixel frames in seconds with the causal first frame, an audio token's own
seconds): here they have strength 0 and start from noise, (1 - sigma0) latent + sigma0 noise; every other
token has strength 1 and never moves. Without a soundtrack the audio is generated whole, as the reference
does. The sampler is Euler with the distilled sigmas or the dev schedule (the reference passes no stepper).

After the decode, frames outside the span are the input's own (fitted to the output size in the sandbox)
and the soundtrack outside the span is the input's own samples: the VAE round trip would otherwise blur
what the user asked to keep.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..models.loaded import LoadedModel
from ..schema import GenerateRequest, InvalidRequest
from . import stages
from .conditioning import Conditioning, start_from
from .result import GenerationResult, result_of
from .schedules import MAX_TOKENS, sigmas_for
from .stages import LatentGrid, Plan, Run, StepCallback, Stream

NAME = "retake"
TIME_TOLERANCE_S = 1e-6


def resolve_request(request: GenerateRequest, cond: Conditioning) -> GenerateRequest:
    """The request at the size, fps and length the sandbox took from the video (those the request left
    empty), one stage; a span that does not lie within the output is refused naming the field."""
    info = cond.video_info
    if cond.video is None or info is None:
        raise InvalidRequest("video", "retake needs video decoded in the conditioning")
    update = {"width": info["width"], "height": info["height"], "fps": info["fps"],
              "num_frames": info["num_frames"], "use_multiscale": False}
    request = request.model_copy(update=update)
    seconds = request.num_frames / request.fps
    span = request.retake
    for name, value in (("retake.start", span.start), ("retake.end", span.end)):
        if value > seconds + TIME_TOLERANCE_S or (name == "retake.start" and value >= seconds):
            raise InvalidRequest(name, f"{name} is {value:g} s, outside the video: {request.num_frames} frames at "
                                       f"{request.fps} fps last {seconds:g} s (send a span within it)")
    return request


def region(coords: torch.Tensor, start: float, end: float) -> torch.Tensor:
    """(1, tokens, 1): 1 for a token whose [t0, t1) seconds overlap [start, end), as TemporalRegionMask."""
    t0, t1 = coords[0, 0, :, 0], coords[0, 0, :, 1]
    return ((t1 > start) & (t0 < end)).to(torch.float32)[None, :, None]


def encode_video(model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, F, H, W) in [-1, 1] -> the video VAE's latent tokens, on the model's device."""
    with model.placement.use("vae"):
        return stages.encode_pixels(model, pixels).to(model.device)


def hold_outside(stream: Stream, clean: torch.Tensor, start: float, end: float, sigma0: float) -> Stream:
    """The stream conditioned on `clean` outside the span: held tokens start (and stay) at it, the span's
    start at (1 - sigma0) clean + sigma0 noise, as ltx-core's noiser on an initial latent."""
    inside = region(stream.coords, start, end).to(clean.device)
    stream.strength = 1 - inside
    stream.clean = clean
    stream.latents = start_from(stream.latents, clean, stream.strength, sigma0,
                                free=stages.renoise(clean, stream.latents, sigma0))
    stream.frozen = bool(inside.sum() == 0)
    return stream


def paste_kept(frames: np.ndarray, kept: np.ndarray, fps: int, start: float, end: float) -> tuple[int, int]:
    """Frames outside [start, end) become the input's (in place); returns the span's [first, end) frames."""
    times = np.arange(frames.shape[0]) / fps
    outside = (times < start - TIME_TOLERANCE_S) | (times >= end - TIME_TOLERANCE_S)
    frames[outside] = kept[: frames.shape[0]][outside]
    inside = np.flatnonzero(~outside)
    return (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)


def keep_audio(wave: np.ndarray, source: np.ndarray, rate: int, start: float, end: float) -> np.ndarray:
    """The generated waveform with the input's own samples outside [start, end)."""
    source = stages.fit_length(source, wave.shape[1])
    first, last = (min(max(round(t * rate), 0), wave.shape[1]) for t in (start, end))
    out = source.copy()
    out[:, first:last] = wave[:, first:last]
    return out


def retake(model: LoadedModel, plan: Plan, on_step: StepCallback | None) -> GenerationResult:
    cond, request = plan.conditioning, plan.request
    span = request.retake
    run = Run(model, on_step, total_steps=plan.steps)
    width, height = stages.model_size(plan.width, plan.height, model.pipe.vae_spatial_compression_ratio)
    grid = stages.latent_grid(model, plan, width, height)
    with run.stage("encode_prompt"):
        prompt = plan.prompt or stages.prompt_embeddings(run, request.prompt, request.negative_prompt, plan.guided)
    with run.stage("encode_conditioning"):
        video_clean = encode_video(model, cond.video[:, :, : grid.num_frames])
        soundtrack = cond.audio_for_vae
        audio_clean = None if soundtrack is None else stages.encode_soundtrack(model, replace(plan, audio=soundtrack),
                                                                               grid)
    with run.stage("prepare_latents"):
        sigmas = sigmas_for(plan.steps, num_tokens=MAX_TOKENS, distilled=model.defaults.distilled)
        generator = torch.Generator("cpu").manual_seed(plan.seed)
        video, audio = stages.prepare_latents(model, replace(plan, images=(), audio=None), grid, stages.Conditions(),
                                              sigmas[0], generator)
        video = hold_outside(video, video_clean, span.start, span.end, sigmas[0])
        if audio_clean is not None:
            audio = hold_outside(audio, audio_clean, span.start, span.end, sigmas[0])
    with run.stage("denoise"):
        video, audio = stages.denoise(run, video, audio, prompt, sigmas, grid, plan.guidance)
    frames, waveform, video_latents, audio_latents = decode(run, plan, video, audio, grid, generator)
    first, last = paste_kept(frames, cond.video_output, request.fps, span.start, span.end)
    if waveform is not None and cond.audio_for_output is not None:
        waveform = keep_audio(waveform, cond.audio_for_output, model.vocoder_rate, span.start, span.end)
    result = result_of(run, plan, NAME, (width, height), frames, waveform, video_latents, audio_latents,
                       has_audio_input=cond.audio_for_output is not None)
    result.retake = {"start": span.start, "end": span.end, "first_frame": first, "end_frame": last}
    return result


def decode(run: Run, plan: Plan, video: Stream, audio: Stream, grid: LatentGrid, generator: torch.Generator):
    """The VAE decodes, the soundtrack vocoded whole (the kept part is replaced after)."""
    with run.stage("decode_video"):
        frames, video_latents = stages.decode_video(run.model, video, grid, plan.width, plan.height, generator)
    with run.stage("decode_audio"):
        vocoded = replace(plan, conditioning=replace(plan.conditioning, audio_for_output=None))
        waveform, audio_latents = stages.decode_audio(run.model, vocoded, audio, grid)
    return frames, waveform, video_latents, audio_latents
