"""From a validated request to the contract's response: generate, mux, base64. Shared by the
HTTP server and the RunPod handler so both answer the same request with the same bytes."""

from __future__ import annotations

import time

from .conditioning import decode_conditioning
from .inputs import InputLimits
from .media import encode_mp4, to_data_uri
from .model import LoadedModel
from .pipeline import StepCallback, generate
from .schema import GenerateRequest, GenerateResponse, StageTimings


def render(model: LoadedModel, request: GenerateRequest, on_step: StepCallback | None = None,
           limits: InputLimits | None = None) -> GenerateResponse:
    start = time.perf_counter()
    # The edges are ours: decode images and audio before the job takes the GPU.
    conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate, limits)
    result = generate(model, request, on_step=on_step, conditioning=conditioning)
    timings = dict(result.timings)

    t = time.perf_counter()
    mp4 = encode_mp4(result.frames, result.fps, result.waveform, result.sample_rate)
    timings["mux"] = time.perf_counter() - t

    t = time.perf_counter()
    video = to_data_uri(mp4)
    timings["encode_base64"] = time.perf_counter() - t

    return GenerateResponse(
        video=video,
        duration_seconds=round(result.duration_seconds, 4),
        resolution=f"{result.width}x{result.height}",
        fps=result.fps,
        seed=result.seed,
        generation_time_seconds=round(time.perf_counter() - start, 3),
        has_audio=result.waveform is not None,
        has_image_start=result.has_image_start,
        has_image_end=result.has_image_end,
        num_frames=result.num_frames,
        num_inference_steps=result.num_inference_steps,
        guidance_scale=result.guidance_scale,
        model=model.name,
        timings=StageTimings(**{k: round(v, 4) for k, v in timings.items()}),
    )
