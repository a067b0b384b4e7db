"""From a validated request to the contract's response: generate, mux, deliver. Shared by the
HTTP server, the job queue and the RunPod handler, so all answer a request with the same bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..pipelines.conditioning import Conditioning, decode_conditioning
from ..media.inputs import InputLimits
from ..media.encode import encode_mp4, to_data_uri
from ..models.loaded import LoadedModel
from ..pipelines.generate import StepCallback, generate
from ..pipelines.loras import LoraPolicy
from ..pipelines.loras import resolve as resolve_loras
from ..schema import GenerateRequest, GenerateResponse, StageTimings


@dataclass
class Rendered:
    """A finished video: the MP4 and every response field but `video` (which depends on delivery)."""

    mp4: bytes
    fields: dict
    started: float  # perf_counter at the start, for generation_time_seconds

    def response(self, video: str, extra_timings: dict[str, float] | None = None) -> GenerateResponse:
        timings = {**self.fields["timings"], **(extra_timings or {})}
        fields = {**self.fields, "timings": StageTimings(**{k: round(v, 4) for k, v in timings.items()}),
                  "generation_time_seconds": round(time.perf_counter() - self.started, 3)}
        return GenerateResponse(video=video, **fields)


def render_mp4(model: LoadedModel, request: GenerateRequest, on_step: StepCallback | None = None,
               limits: InputLimits | None = None, fetch_policy=None, lora_policy: LoraPolicy | None = None,
               conditioning: Conditioning | None = None, check: Callable[[], None] | None = None) -> Rendered:
    """`conditioning`: the inputs, already decoded (the job queue decodes them before the job takes the
    GPU); else they are decoded here. `check()` raises to stop the job: it is called between stages and
    before each frame is muxed, so a cancel or time limit stops a long mux within a frame."""
    start = time.perf_counter()
    # The edges are ours: decode images and audio, and find, fetch and read LoRAs, before the job takes the GPU.
    if conditioning is None:
        conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate,
                                           limits, fetch_policy)
    adapters = resolve_loras(model, request, lora_policy)
    result = generate(model, request, on_step=on_step, conditioning=conditioning, adapters=adapters)
    timings = dict(result.timings)

    t = time.perf_counter()
    frames = result.frames
    if check is not None:
        check()  # the VAE decode has no steps: a cancel that came during it stops the job here
        frames = _checked(frames, check)
    mp4 = encode_mp4(frames, result.fps, result.waveform, result.sample_rate)
    timings["mux"] = time.perf_counter() - t

    fields = dict(
        duration_seconds=round(result.duration_seconds, 4),
        resolution=f"{result.width}x{result.height}",
        fps=result.fps,
        seed=result.seed,
        has_audio=result.waveform is not None,
        has_image_start=result.has_image_start,
        has_image_end=result.has_image_end,
        num_frames=result.num_frames,
        num_inference_steps=result.num_inference_steps,
        guidance_scale=result.guidance_scale,
        model=model.name,
        model_resolution=f"{result.model_width}x{result.model_height}",
        pipeline=result.pipeline,
        timings=timings,
        loras=result.loras,
        audio_preprocessing=conditioning.audio_preprocessing,
        expanded_prompt=result.expanded_prompt,
    )
    return Rendered(mp4=mp4, fields=fields, started=start)


class _CheckedFrames(np.ndarray):
    """Video frames whose every single-frame read first calls `_check`: the muxer reads them one by one."""

    _check: Callable[[], None] | None = None

    def __getitem__(self, key):
        if self._check is not None and isinstance(key, (int, np.integer)):
            self._check()
        return np.ndarray.__getitem__(self.view(np.ndarray), key)


def _checked(frames: np.ndarray, check: Callable[[], None]) -> np.ndarray:
    view = frames.view(_CheckedFrames)
    view._check = check
    return view


def render(model: LoadedModel, request: GenerateRequest, on_step: StepCallback | None = None,
           limits: InputLimits | None = None, lora_policy: LoraPolicy | None = None) -> GenerateResponse:
    """The seed's response: the MP4 as a base64 data URI."""
    rendered = render_mp4(model, request, on_step, limits, lora_policy=lora_policy)
    t = time.perf_counter()
    video = to_data_uri(rendered.mp4)
    return rendered.response(video, {"encode_base64": time.perf_counter() - t})
