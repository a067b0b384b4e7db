"""From a validated request to the contract's response: generate, encode the file, deliver. Shared by
the HTTP server, the job queue and the RunPod handler, so all answer a request with the same bytes."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..keyframes import input_values
from ..media.encode import OutputFormat, VideoEncoder, output_format, to_data_uri
from ..media.inputs import InputLimits
from ..models.loaded import LoadedModel, load_from_settings
from ..pipelines import progress
from ..pipelines.conditioning import Conditioning, decode_conditioning
from ..pipelines.generate import GenerationResult, StepCallback, generate, image_targets
from ..pipelines.loras import LoraPolicy
from ..pipelines.loras import resolve as resolve_loras
from ..pipelines.progress import StageCallback
from ..pipelines.warmup import warm_up
from ..schema import GenerateRequest, GenerateResponse, StageTimings


def load_for_serving(settings) -> LoadedModel:
    """Load the model and, when its transformer is compiled, warm it up: before the server or the
    worker reports ready, so no user request pays for the compile."""
    model = load_from_settings(settings)
    warm_up(model)
    return model


# Frames handed to the encoder at a time: a stop is noticed within about this many frames' encoding.
ENCODE_CHUNK = 4


@dataclass
class Rendered:
    """A finished video: the file (`data`, in `format`) and every response field but `video` (which
    depends on delivery)."""

    data: bytes
    format: OutputFormat
    fields: dict
    started: float  # perf_counter at the start, for generation_time_seconds

    def data_uri(self) -> str:
        return to_data_uri(self.data, self.format.mime)

    def response(self, video: str, extra_timings: dict[str, float] | None = None) -> GenerateResponse:
        timings = {**self.fields["timings"], **(extra_timings or {})}
        fields = {**self.fields, "timings": StageTimings(**{k: round(v, 4) for k, v in timings.items()}),
                  "generation_time_seconds": round(time.perf_counter() - self.started, 3)}
        return GenerateResponse(video=video, **fields)


def render_mp4(model: LoadedModel, request: GenerateRequest, on_step: StepCallback | None = None,
               limits: InputLimits | None = None, fetch_policy=None, lora_policy: LoraPolicy | None = None,
               encode_threads: int = 0, on_stage: Callable[[str], None] | None = None,
               conditioning: Conditioning | None = None, check: Callable[[], None] | None = None,
               on_progress: StageCallback | None = None, generated: GenerationResult | None = None,
               started: float | None = None) -> Rendered:
    """Generate and encode the file the request asks for (`video_output_type`; the name is historical).
    `on_stage(name)` hears where the work is, for a progress display. `conditioning`: the inputs,
    already decoded (the job queue decodes them before the job takes the GPU); else they are decoded
    here. `check()` raises to stop the job: it is called between stages and between the chunks of
    frames handed to the encoder, so a cancel or time limit stops a long encode within a few frames.
    `on_progress(stage, done, total)` hears the stages without steps: decoding_video (the decoder's blocks),
    decoding_audio, then encoding (frames handed to the encoder; total once the file is complete).
    `generated`: the video, generated already (a batch, ltx2.serving.batching), to encode; `started`: when its
    work began (perf_counter)."""
    start = started if started is not None else time.perf_counter()
    on_stage = on_stage or (lambda name: None)
    fmt = output_format(request.video_output_type)
    if fmt.audio_codec is None and request.include_audio:
        request = request.model_copy(update={"include_audio": False})  # no track to put it in: don't decode it
    # The edges are ours: decode images and audio, and find, fetch and read LoRAs, before the job takes the GPU.
    if conditioning is None and generated is None:
        on_stage("decoding inputs" if input_values(request) else "encoding the prompt")
        conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate,
                                           limits, fetch_policy, targets=image_targets(model, request, lora_policy))
    if generated is None:
        adapters = resolve_loras(model, request, lora_policy)
        with progress.reporting(on_progress):
            generated = generate(model, request, on_step=on_step, conditioning=conditioning, adapters=adapters)
    result = generated
    timings = dict(result.timings)

    t = time.perf_counter()
    on_stage(f"encoding {fmt.output_type}")
    if check is not None:
        check()  # the VAE decode has no steps: a cancel that came during it stops the job here
    with VideoEncoder(result.width, result.height, result.fps, output_type=fmt.output_type,
                      quality=request.video_quality, write_mode=request.video_write_mode,
                      audio_rate=result.sample_rate if result.waveform is not None else None,
                      threads=encode_threads or None) as encoder:
        frames = len(result.frames)
        if on_progress is not None:
            on_progress(progress.ENCODING, 0, frames)
        for first in range(0, frames, ENCODE_CHUNK):
            if check is not None:
                check()
            encoder.write(result.frames[first:first + ENCODE_CHUNK])
            if on_progress is not None:  # held below total until the file is finished (the last chunks, the audio)
                on_progress(progress.ENCODING, min(first + ENCODE_CHUNK, frames - 1), frames)
        data = encoder.finish(result.waveform, result.sample_rate)
        if on_progress is not None:
            on_progress(progress.ENCODING, frames, frames)
    timings["mux"] = time.perf_counter() - t
    timings.update(transformer_passes=result.transformer_passes, host_device_bytes=result.host_device_bytes,
                   prompt_cache_hits=result.prompt_cache_hits)

    fields = dict(
        duration_seconds=round(result.duration_seconds, 4),
        resolution=f"{result.width}x{result.height}",
        fps=result.fps,
        seed=result.seed,
        has_audio=encoder.has_audio and result.waveform is not None,
        has_image_start=result.has_image_start,
        has_image_end=result.has_image_end,
        keyframes=result.keyframes,
        num_frames=result.num_frames,
        num_inference_steps=result.num_inference_steps,
        guidance_scale=result.guidance_scale,
        **result.guidance.knobs(),
        transformer_passes=result.transformer_passes,
        model=model.name,
        model_family=model.family.name,
        variant="distilled" if model.defaults.distilled else "dev",
        length_from=result.length_from,
        predicted_seconds=None if result.predicted_seconds is None else round(result.predicted_seconds, 3),
        model_resolution=f"{result.model_width}x{result.model_height}",
        pipeline=result.pipeline,
        use_multiscale=result.use_multiscale,
        timings=timings,
        loras=result.loras,
        audio_preprocessing=None if conditioning is None else conditioning.audio_preprocessing,
        expanded_prompt=result.expanded_prompt,
        retake=result.retake,
        extend=result.extend,
        reference=result.reference,
    )
    return Rendered(data=data, format=fmt, fields=fields, started=start)


def render(model: LoadedModel, request: GenerateRequest, on_step: StepCallback | None = None,
           limits: InputLimits | None = None, lora_policy: LoraPolicy | None = None,
           encode_threads: int = 0, on_progress: StageCallback | None = None,
           conditioning: Conditioning | None = None) -> GenerateResponse:
    """The seed's response: the file as a base64 data URI of its own MIME type."""
    rendered = render_mp4(model, request, on_step, limits, lora_policy=lora_policy, encode_threads=encode_threads,
                          on_progress=on_progress, conditioning=conditioning)
    t = time.perf_counter()
    video = rendered.data_uri()
    return rendered.response(video, {"encode_base64": time.perf_counter() - t})
