"""Extend: continue a video forward or backward by some seconds, with its audio, in chained windows.

Lightricks frames extension (ltx-trainer's video_extend / audio_extend strategies) as conditioning latents at
the start of a window, kept clean: ltx-core's `VideoConditionByLatentIndex` puts clean latents at a latent
index with denoise mask 1 - strength. Here a window (`ltx2.extend.plan`) is one one-stage generation of
`num_frames` frames whose first K latent frames (forward; its last K backward) are the existing video's, held
with strength 1, and whose other frames are new. The mechanism is retake's: `retake.hold_outside` holds every
token outside the new part's time span. Forward, the held tokens are the overlap's own encoding (the VAE is
causal, so they are what encoding the whole window would give there: the reference's condition); backward
the window's pixels are copies of the overlap's first frame and then the overlap, encoded whole, so the held
last latents are encoded where they sit. The free tokens' clean values are zeroed, so they start from noise as
the reference's do. The soundtrack over the
overlap is held the same way (retake's time region on the audio tokens); without one the first window's
audio is generated whole.

Chaining: each window after the first conditions on the last frames the previous window made, re-encoded
from its decoded pixels at the model size rather than sliced from its latents: a latent frame from the middle
of a video stands for 8 frames, while a window's first latent is the VAE's causal single frame, so a slice
would put a latent where the model was not trained to see one. Only that overlap is kept at the model size;
the output is assembled at the output size as the windows finish. The input's frames and soundtrack are
kept exactly (as retake keeps what is outside its span); the audio of a new part is the vocoder's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from .. import extend as spec_rules
from ..models.loaded import LoadedModel
from ..schema import FRAME_MAX, GenerateRequest, InvalidRequest
from . import stages
from .conditioning import Conditioning
from .result import GenerationResult, result_of
from .retake import encode_video, hold_outside, region
from .schedules import MAX_TOKENS, sigmas_for
from .stages import Plan, Run, StepCallback

NAME = "extend"


def resolve_request(request: GenerateRequest, cond: Conditioning) -> GenerateRequest:
    """The request at the size and fps the sandbox took from the video, one stage; num_frames stays each
    window's length. An output past LTX2_MAX_EXTEND_SECONDS is refused here, before any model work."""
    info = cond.video_info
    if cond.video is None or info is None:
        raise InvalidRequest("video", "extend needs video decoded in the conditioning")
    request = request.model_copy(update={"width": info["width"], "height": info["height"], "fps": info["fps"],
                                         "use_multiscale": False})
    if info["num_frames"] >= FRAME_MAX:  # the sandbox reads at most FRAME_MAX frames: the rest would be lost
        raise InvalidRequest("video", f"with extend the video is kept whole, and it is read up to {FRAME_MAX} frames "
                                      f"({FRAME_MAX / request.fps:g} s at {request.fps} fps); this one reaches that: "
                                      "send a shorter video (or a lower fps)")
    if problem := spec_rules.too_long(request.extend, info["num_frames"], request.fps):
        raise InvalidRequest("extend.seconds", problem)
    return request


def samples_at(frame: int, fps: int, rate: int) -> int:
    return round(frame * rate / fps)


def resample(wave: np.ndarray, samples: int) -> np.ndarray:
    """(channels, n) to `samples` samples by linear interpolation: only the overlap's conditioning audio passes
    through it (the vocoder's rate to the audio VAE's), never the output."""
    if wave.shape[1] == samples or wave.shape[1] == 0:
        return stages.fit_length(wave, samples)
    out = torch.nn.functional.interpolate(torch.from_numpy(np.ascontiguousarray(wave))[None], size=samples,
                                          mode="linear", align_corners=False)
    return out[0].numpy()


def extend(model: LoadedModel, plan: Plan, on_step: StepCallback | None) -> GenerationResult:
    cond, request = plan.conditioning, plan.request
    spec, fps = request.extend, request.fps
    forward = spec.direction == "forward"
    input_frames = cond.video.shape[2]
    new_frames = round(spec.seconds * fps)
    windows = spec_rules.plan(spec.direction, input_frames, new_frames, request.num_frames, fps, plan.seed)
    total = input_frames + new_frames
    first_input = 0 if forward else new_frames  # where the input's frames sit in the output
    run = Run(model, on_step, total_steps=plan.steps * len(windows))
    width, height = stages.model_size(plan.width, plan.height, model.pipe.vae_spatial_compression_ratio)
    out_rate, vae_rate = model.vocoder_rate, cond.vae_rate

    # The output, filled as the windows finish: the input's own frames and soundtrack in their place.
    frames = np.empty((total, plan.height, plan.width, 3), dtype=np.uint8)
    frames[first_input: first_input + input_frames] = cond.video_output[:input_frames]
    has_input_audio = cond.audio_for_vae is not None
    wave = np.zeros((2, samples_at(total, fps, out_rate)), dtype=np.float32) if request.include_audio else None
    vae_wave = np.zeros((2, samples_at(total, fps, vae_rate)), dtype=np.float32)  # what the overlaps hold
    a, b = first_input, first_input + input_frames
    if has_input_audio:
        span = slice(samples_at(a, fps, vae_rate), samples_at(b, fps, vae_rate))
        vae_wave[:, span] = stages.fit_length(cond.audio_for_vae, span.stop - span.start)
        if wave is not None and cond.audio_for_output is not None:
            span = slice(samples_at(a, fps, out_rate), samples_at(b, fps, out_rate))
            wave[:, span] = stages.fit_length(cond.audio_for_output, span.stop - span.start)
    audio_known = has_input_audio  # whether the overlap's soundtrack exists to be held

    with run.stage("encode_prompt"):
        prompt = plan.prompt or stages.prompt_embeddings(run, request.prompt, request.negative_prompt, plan.guided)
    sigmas = sigmas_for(plan.steps, num_tokens=MAX_TOKENS, distilled=model.defaults.distilled)
    # The existing video's edge at the model size, (1, 3, frames, H, W) in [-1, 1]: the next window's overlap.
    # Only its last (backward: first) frames are kept: a view of the input, never a copy of all of it.
    keep = spec_rules.OVERLAP_LATENTS * 8
    edge = cond.video[:, :, max(input_frames - keep, 0): input_frames] if forward else cond.video[:, :, :keep]
    video_latents = audio_latents = None
    for window in windows:
        if window.index and on_step is not None:  # between windows: a cancel or the job's time limit stops here
            on_step(run.steps_done, run.total_steps)
        n, overlap = window.num_frames, window.overlap_frames
        made = n - overlap
        wplan = replace(plan, request=request.model_copy(update={"num_frames": n}), seed=window.seed, images=(),
                        audio=None)
        grid = stages.latent_grid(model, wplan, width, height)
        # The output frame where the overlap begins, and the window's span of new time (window seconds).
        window_start = round(window.start * fps)
        o0 = window_start if forward else window_start + window.new_frames
        if forward:
            pixels = edge[:, :, -overlap:]  # the causal VAE: its latents are the window's first ones alone
            new_start, new_end = overlap / fps, n / fps + 1.0
        else:
            held = edge[:, :, :overlap]
            pixels = torch.cat([held[:, :, :1].expand(-1, -1, made, -1, -1), held], dim=2)
            new_start, new_end = -1.0, made / fps
        with run.stage("encode_conditioning"):
            video_clean = encode_video(model, pixels)
            if forward:  # the overlap's tokens first (latent frames 0..K-1), zeros for the new part's
                video_clean = torch.cat([video_clean, video_clean.new_zeros(
                    1, grid.video_tokens - video_clean.shape[1], video_clean.shape[2])], dim=1)
            audio_clean = None
            if audio_known:
                piece = vae_wave[:, samples_at(o0, fps, vae_rate): samples_at(o0 + overlap, fps, vae_rate)]
                window_wave = np.zeros((2, samples_at(n, fps, vae_rate)), dtype=np.float32)
                at = 0 if forward else samples_at(made, fps, vae_rate)
                window_wave[:, at: at + piece.shape[1]] = piece[:, : window_wave.shape[1] - at]
                audio_clean = stages.encode_soundtrack(model, replace(wplan, audio=window_wave), grid)
        with run.stage("prepare_latents"):
            generator = torch.Generator("cpu").manual_seed(window.seed)
            video, audio = stages.prepare_latents(model, wplan, grid, stages.Conditions(), sigmas[0], generator)
            # Free tokens start from noise alone (the reference's initial latent is zeros there).
            video_clean = video_clean * (1 - region(video.coords, new_start, new_end).to(video_clean.device))
            video = hold_outside(video, video_clean, new_start, new_end, sigmas[0])
            if audio_clean is not None:
                audio_clean = audio_clean * (1 - region(audio.coords, new_start, new_end).to(audio_clean.device))
                audio = hold_outside(audio, audio_clean, new_start, new_end, sigmas[0])
        with run.stage("denoise"):
            video, audio = stages.denoise(run, video, audio, prompt, sigmas, grid, plan.guidance)
        with run.stage("decode_video"):  # at the model size: its edge is the next window's overlap
            pixels_out, video_latents = stages.decode_video(model, video, grid, width, height, generator)
        with run.stage("decode_audio"):
            vocoded = replace(wplan, conditioning=replace(cond, audio_for_output=None))
            window_audio, audio_latents = stages.decode_audio(model, vocoded, audio, grid)
        # The new frames this window keeps (forward the first ones after the overlap, backward the last ones
        # before it), and where they go in the output.
        local = slice(overlap, overlap + window.new_frames) if forward else slice(made - window.new_frames, made)
        out0 = o0 + overlap if forward else window_start
        frames[out0: out0 + window.new_frames] = stages.center_crop(pixels_out[local], plan.width, plan.height)
        audio_known = window_audio is not None  # without include_audio no later window has sound to hold
        if window_audio is not None:
            for target, rate, source in ((wave, out_rate, window_audio),
                                         (vae_wave, vae_rate, resample(window_audio, samples_at(n, fps, vae_rate)))):
                if target is None:
                    continue
                first, last = samples_at(out0, fps, rate), samples_at(out0 + window.new_frames, fps, rate)
                start = samples_at(local.start, fps, rate)
                target[:, first:last] = stages.fit_length(source[:, start:], last - first)
        kept = torch.from_numpy(pixels_out[local]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        edge = torch.cat([edge, kept], dim=2) if forward else torch.cat([kept, edge], dim=2)
        edge = edge[:, :, -keep:] if forward else edge[:, :, :keep]

    # The result's latents are the last window's (each window's are its own; the file is the frames).
    final = replace(plan, request=request.model_copy(update={"num_frames": total}))
    result = result_of(run, final, NAME, (width, height), frames, wave, video_latents, audio_latents,
                       has_audio_input=has_input_audio)
    result.extend = spec_rules.report(windows, spec.direction, input_frames, fps)
    return result
