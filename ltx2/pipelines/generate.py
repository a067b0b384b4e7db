"""`generate()`: the one text-to-audio+video pipeline, in stages that read top to bottom.

The network code is diffusers' (transformer, VAEs, vocoder, connectors, scheduler) and
transformers' Gemma 3; this module owns the order of operations, the seeding, the sigma schedule,
progress reporting and per-stage timing. Conditioning on images and audio slots in at stage 3
(prepare latents) and stage 4 (per-token timesteps), which is why the loop is ours and not
`LTX2Pipeline.__call__`.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..media.audio_features import encode_audio
from .conditioning import (
    Conditioning,
    blend_velocity,
    decode_conditioning,
    frames_for_duration,
    image_pixels,
    keyframe_coords,
    start_from,
)
from ..models.geometry import audio_latent_frames, latent_video_shape
from ..media.inputs import auto_size
from ..models.loaded import LoadedModel
from .schedules import sigmas_for
from ..schema import GenerateRequest, InvalidRequest

StepCallback = Callable[[int, int], None]
"""Called as `on_step(step, total)` after each denoising step. Raising from it stops the job."""


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
    width: int
    height: int
    timings: dict[str, float] = field(default_factory=dict)
    has_image_start: bool = False  # whether the start image conditioned the video (strength > 0)
    has_image_end: bool = False
    has_audio_input: bool = False

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps


class _Stopwatch:
    """Times named stages; waits for the GPU so a stage's time is its own."""

    def __init__(self, device: torch.device):
        self.device = device
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] = time.perf_counter() - start


@torch.inference_mode()
def generate(
    model: LoadedModel,
    request: GenerateRequest | Mapping[str, Any],
    on_step: StepCallback | None = None,
    conditioning: Conditioning | None = None,
) -> GenerationResult:
    """Generate one video with its soundtrack. Thread-safe: jobs on one model run one at a time.

    `conditioning` holds the request's images and audio, decoded (`decode_conditioning`); when it
    is not given and the request has any, they are decoded here with the default limits.
    """
    if not isinstance(request, GenerateRequest):
        request = GenerateRequest.model_validate(request)
    if conditioning is None:
        conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate)
    with model.lock:
        return _generate(model, request, on_step, conditioning)


def _generate(model: LoadedModel, request: GenerateRequest, on_step: StepCallback | None,
              cond: Conditioning) -> GenerationResult:
    pipe, device, dtype = model.pipe, model.device, model.dtype
    watch = _Stopwatch(device)
    # Each stage runs inside `placement.use(...)` of its components: under an offloading memory
    # policy that is when they are on the device (ltx2.models.memory); outside it they may not be.
    placement = model.placement

    # 1. Validate the request and resolve what depends on the loaded model and the inputs.
    request = _resolve_size_and_length(request, cond)
    steps = request.num_inference_steps or model.defaults.num_inference_steps
    guidance = request.guidance_scale if request.guidance_scale is not None else model.defaults.guidance_scale
    seed = request.seed if request.seed is not None else secrets.randbelow(2**31)
    do_cfg = guidance > 1.0
    spatial, temporal = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
    lat_frames, lat_height, lat_width = latent_video_shape(
        request.num_frames, request.height, request.width, spatial, temporal
    )
    audio_vae = pipe.audio_vae
    audio_frames = audio_latent_frames(
        request.num_frames, request.fps, audio_vae.config.sample_rate,
        audio_vae.config.mel_hop_length, pipe.audio_vae_temporal_compression_ratio,
    )
    lat_mel_bins = audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio
    _check_prompt_lengths(pipe, request, do_cfg)
    # The first and the last frame's image, by direction; a condition at strength 0 is no condition.
    first, last = (cond.image_start, request.image_strength), (cond.image_end, request.end_image_strength)
    if request.interpolation_direction == "backward":
        first, last = last, first
    first = first if first[0] is not None and first[1] > 0 else None
    last = last if last[0] is not None and last[1] > 0 else None
    audio_in = cond.audio_for_vae if request.audio_strength > 0 else None

    # 2. Encode the prompt: Gemma 3 hidden states of every layer -> video and audio text connectors.
    #    `device` is explicit: diffusers' default, `_execution_device`, follows where modules rest.
    with watch.stage("encode_prompt"), placement.use("text_encoder", "connectors"):
        prompt_embeds, prompt_mask, negative_embeds, negative_mask = pipe.encode_prompt(
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            do_classifier_free_guidance=do_cfg,
            max_sequence_length=pipe.tokenizer_max_length,
            device=device,
            dtype=dtype,
        )
        if do_cfg:  # one batched pass per step: [unconditional, conditional]
            prompt_embeds = torch.cat([negative_embeds, prompt_embeds])
            prompt_mask = torch.cat([negative_mask, prompt_mask])
        video_context, audio_context, context_mask = pipe.connectors(
            prompt_embeds.to(pipe.connectors.dtype), prompt_mask, padding_side=pipe.tokenizer.padding_side
        )

    # 3. Encode the conditions: images with the video VAE, the soundtrack with the audio VAE, into the
    #    normalised, packed latent space the transformer denoises in.
    patch, patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    with watch.stage("encode_conditioning"):
        image_tokens = {}
        if first or last:
            with placement.use("vae"):
                for where, item in (("first", first), ("last", last)):
                    if item is not None:
                        image_tokens[where] = _encode_image(pipe, item[0], request.width, request.height, patch, patch_t)
        audio_clean = None
        if audio_in is not None:
            with placement.use("audio_vae"):
                raw = encode_audio(audio_vae, torch.from_numpy(audio_in), audio_frames)
                audio_clean = pipe._normalize_audio_latents(
                    pipe._pack_audio_latents(raw.float()), audio_vae.latents_mean, audio_vae.latents_std
                ).to(device)

    # 4. Prepare latents: seeded noise, drawn on the CPU so a seed means the same video on any device;
    #    conditioned tokens start nearer their condition, keyframe tokens are appended at the end.
    with watch.stage("prepare_latents"):
        generator = torch.Generator("cpu").manual_seed(seed)
        video_noise = torch.randn(
            (1, pipe.transformer.config.in_channels, lat_frames, lat_height, lat_width), generator=generator
        )
        audio_noise = torch.randn(
            (1, audio_vae.config.latent_channels, audio_frames, lat_mel_bins), generator=generator
        )
        latents = pipe._pack_latents(video_noise, patch, patch_t).to(device)
        audio_latents = pipe._pack_audio_latents(audio_noise).to(device)
        base_tokens = latents.shape[1]
        batch = 2 if do_cfg else 1
        video_coords = pipe.transformer.rope.prepare_video_coords(
            batch, lat_frames, lat_height, lat_width, device, fps=request.fps
        )
        audio_coords = pipe.transformer.audio_rope.prepare_audio_coords(batch, audio_frames, device)
        sigmas = sigmas_for(steps, num_tokens=base_tokens, distilled=model.defaults.distilled)

        video_mask = video_clean = audio_mask = None
        if image_tokens:
            video_mask = torch.zeros(1, base_tokens, 1, device=device)
            video_clean = torch.zeros_like(latents)
            if "first" in image_tokens:  # the first latent frame is the image itself (a causal VAE)
                tokens = image_tokens["first"]
                video_clean[:, : tokens.shape[1]] = tokens
                video_mask[:, : tokens.shape[1]] = first[1]
            if "last" in image_tokens:  # a keyframe: extra tokens placed in time at the last frame
                tokens = image_tokens["last"]
                extra_noise = torch.randn(tokens.shape, generator=generator).to(device)
                latents = torch.cat([latents, extra_noise], dim=1)
                video_clean = torch.cat([video_clean, tokens], dim=1)
                video_mask = torch.cat([video_mask, torch.full((1, tokens.shape[1], 1), last[1], device=device)], dim=1)
                coords = keyframe_coords(pipe.transformer.rope, lat_height, lat_width, request.num_frames - 1,
                                         request.fps, device)
                video_coords = torch.cat([video_coords, coords.expand(batch, -1, -1, -1)], dim=2)
            latents = start_from(latents, video_clean, video_mask, float(sigmas[0]))
        if audio_clean is not None:
            audio_mask = torch.full((1, audio_latents.shape[1], 1), float(request.audio_strength), device=device)
            audio_latents = start_from(audio_latents, audio_clean, audio_mask, float(sigmas[0]))

    # 5. Denoise video and audio jointly, one transformer pass per step (two halves of a batch with CFG).
    with watch.stage("denoise"), placement.use("transformer"):
        video_scheduler = copy.deepcopy(pipe.scheduler)
        video_scheduler.set_timesteps(sigmas=sigmas, device=device)
        audio_scheduler = copy.deepcopy(video_scheduler)  # schedulers keep a step index: one per stream
        for step, t in enumerate(video_scheduler.timesteps):
            video_in = torch.cat([latents] * batch) if do_cfg else latents
            audio_in_latents = torch.cat([audio_latents] * batch) if do_cfg else audio_latents
            timestep = t.expand(batch)
            # A conditioned token is told it is less noisy, in proportion to its strength.
            video_t = timestep if video_mask is None else timestep[:, None] * (1 - video_mask[..., 0])
            audio_t = timestep if audio_mask is None else timestep[:, None] * (1 - audio_mask[..., 0])
            video_velocity, audio_velocity = pipe.transformer(
                hidden_states=video_in.to(dtype),
                audio_hidden_states=audio_in_latents.to(dtype),
                encoder_hidden_states=video_context,
                audio_encoder_hidden_states=audio_context,
                timestep=video_t,
                audio_timestep=audio_t,
                encoder_attention_mask=context_mask,
                audio_encoder_attention_mask=context_mask,
                num_frames=lat_frames,
                height=lat_height,
                width=lat_width,
                fps=request.fps,
                audio_num_frames=audio_frames,
                video_coords=video_coords,
                audio_coords=audio_coords,
                use_cross_timestep=False,  # LTX-2.0 semantics
                return_dict=False,
            )
            video_velocity, audio_velocity = video_velocity.float(), audio_velocity.float()
            if do_cfg:
                video_velocity = _guide(video_velocity, guidance)
                audio_velocity = _guide(audio_velocity, guidance)
            sigma = float(video_scheduler.sigmas[step])
            if video_mask is not None:
                video_velocity = blend_velocity(video_velocity, latents, video_clean, video_mask, sigma)
            if audio_mask is not None:
                audio_velocity = blend_velocity(audio_velocity, audio_latents, audio_clean, audio_mask, sigma)
            latents = video_scheduler.step(video_velocity, t, latents, return_dict=False)[0]
            audio_latents = audio_scheduler.step(audio_velocity, t, audio_latents, return_dict=False)[0]
            if on_step is not None:
                on_step(step + 1, steps)
        latents = latents[:, :base_tokens]  # keyframe tokens guided the video; they are not frames of it

    # 6. Decode video: unpack the tokens, undo the latent normalisation, run the VAE decoder.
    with watch.stage("decode_video"), placement.use("vae"):
        latents = pipe._unpack_latents(latents, lat_frames, lat_height, lat_width, patch, patch_t)
        vae = pipe.vae
        video_latents = pipe._denormalize_latents(
            latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor
        )
        decode_timestep = torch.zeros(1, device=device) if vae.config.timestep_conditioning else None
        video = vae.decode(video_latents.to(vae.dtype), decode_timestep, return_dict=False)[0]
        _check_output(video_latents, video)
        frames = _to_uint8_frames(video[0])

    # 7. Decode audio: audio VAE -> stereo mel spectrogram -> vocoder -> waveform of the video's length.
    #    With the input soundtrack held fixed (audio_strength 1) the MP4 carries the input itself.
    #    The latents are returned even without audio, and their denormalisation reads the audio VAE.
    keep_input_audio = cond.audio_for_output is not None and request.audio_strength == 1.0
    audio_parts = ("audio_vae", "vocoder") if request.include_audio and not keep_input_audio else ("audio_vae",)
    with watch.stage("decode_audio"), placement.use(*audio_parts):
        audio_latents = pipe._denormalize_audio_latents(audio_latents, audio_vae.latents_mean, audio_vae.latents_std)
        audio_latents = pipe._unpack_audio_latents(audio_latents, audio_frames, num_mel_bins=lat_mel_bins)
        waveform = None
        samples = round(request.duration_seconds * model.vocoder_rate)
        if request.include_audio and keep_input_audio:
            waveform = fit_length(cond.audio_for_output, samples)
        elif request.include_audio:
            mel = audio_vae.decode(audio_latents.to(audio_vae.dtype), return_dict=False)[0]
            wave = pipe.vocoder(mel.to(pipe.vocoder.dtype))[0].float().clamp(-1, 1).cpu().numpy()
            waveform = fit_length(wave, samples)

    return GenerationResult(
        frames=frames,
        waveform=waveform,
        sample_rate=model.vocoder_rate,
        video_latents=video_latents.float().cpu(),
        audio_latents=audio_latents.float().cpu(),
        seed=seed,
        num_inference_steps=steps,
        guidance_scale=float(guidance),
        num_frames=request.num_frames,
        fps=request.fps,
        width=request.width,
        height=request.height,
        timings=watch.timings,
        has_image_start=cond.image_start is not None and request.image_strength > 0,
        has_image_end=cond.image_end is not None and request.end_image_strength > 0,
        has_audio_input=audio_clean is not None,
    )


class OutputRejected(RuntimeError):
    """The model produced something that is not a video (NaN, or nothing but black): a failure."""


def _check_output(latents: torch.Tensor, video: torch.Tensor) -> None:
    if not torch.isfinite(latents).all() or not torch.isfinite(video).all():
        raise OutputRejected("the model produced NaN or infinite values (a numerical failure, e.g. in reduced "
                             "precision); no video was made")
    if video.float().max() <= -0.97:  # every pixel at most 1 of 255: black, not a dark scene
        raise OutputRejected("the model produced an all-black video; no video was made")


def _resolve_size_and_length(request: GenerateRequest, cond: Conditioning) -> GenerateRequest:
    """Apply video_size "auto" and match_audio_length; refuse them without the input they read."""
    update: dict[str, Any] = {}
    if request.video_size == "auto":
        if cond.image_start is None:
            raise InvalidRequest("video_size", 'video_size "auto" takes its aspect ratio from image_start; '
                                               "send image_start or leave video_size out")
        update["width"], update["height"] = auto_size(*cond.image_start.size, request.width * request.height)
    if request.match_audio_length:
        if cond.audio_for_vae is None:
            raise InvalidRequest("match_audio_length", "match_audio_length takes the length from audio; "
                                                       "send audio or leave match_audio_length out")
        update["num_frames"] = frames_for_duration(cond.audio_seconds, request.fps)
    return request.model_copy(update=update) if update else request


def _encode_image(pipe, image, width: int, height: int, patch: int, patch_t: int) -> torch.Tensor:
    """One image -> its video-VAE latent (the mode, not a sample), normalised and packed into tokens."""
    vae = pipe.vae
    pixels = image_pixels(image, width, height).to(device=vae.device, dtype=vae.dtype)
    latent = vae.encode(pixels).latent_dist.mode()
    latent = pipe._normalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return pipe._pack_latents(latent.float(), patch, patch_t)


def _check_prompt_lengths(pipe, request: GenerateRequest, do_cfg: bool) -> None:
    """Refuse prompts longer than the text encoder reads, rather than silently cutting them."""
    limit = pipe.tokenizer_max_length
    fields = ("prompt", "negative_prompt") if do_cfg else ("prompt",)
    for name in fields:
        count = len(pipe.tokenizer(getattr(request, name).strip(), add_special_tokens=True).input_ids)
        if count > limit:
            raise InvalidRequest(name, f"{name} is {count} tokens long; the text encoder reads at most {limit}: "
                                       "shorten it")


def _guide(velocity: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on a [uncond, cond] batch."""
    uncond, cond = velocity.chunk(2)
    return uncond + scale * (cond - uncond)


def _to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """(3, F, H, W) in [-1, 1] -> (F, H, W, 3) uint8."""
    video = ((video.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).contiguous().cpu().numpy()


def fit_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """Trim or zero-pad (channels, n) to exactly `samples`: the soundtrack lasts as long as the video.

    The causal audio VAE yields a few hops less than the video's duration (4 latent frames make
    13 mel frames after the first, not 16); the tail is silence, never stretched audio.
    """
    if wave.shape[1] >= samples:
        return np.ascontiguousarray(wave[:, :samples])
    return np.pad(wave, ((0, 0), (0, samples - wave.shape[1])))
