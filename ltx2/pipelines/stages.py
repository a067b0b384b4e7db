"""The named stages every pipeline composes: plan, encode prompt, encode conditions, prepare
latents, denoise, decode video, decode audio.

Each stage is a plain function of the loaded model and what earlier stages produced, and it moves
its own components onto the device (`placement.use`), so a pipeline is a few readable lines
(`one_stage.py`) and another pipeline reuses the same blocks with other sizes and sigmas. The
network code is diffusers' and transformers'; this module owns the order of operations, the
seeding and the conditioning arithmetic.

Hooks other pipelines and features use:
- `encode_prompt(model, prompt, negative_prompt, guided)` is a pure function of its arguments: its
  `PromptEmbeddings` may be cached under them.
- `decode_video` calls `vae_decode` for the VAE itself, the one place a tiled decoder replaces.
- `transformer_pass` is the only call of the transformer: `Run.transformer_passes` counts there.
- `denoise` is the one loop: any sigmas, any conditioning, any guidance (`guidance.py`); a second
  stage calls it again on the upsampled latents.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from ..media.audio_features import encode_audio
from ..models.diffusion_decode import diffusion_decode
from ..models.geometry import audio_latent_frames, latent_video_shape
from ..models import parallel
from ..models.loaded import LoadedModel
from . import progress
from .conditioning import blend_velocity, image_pixels, keyframe_coords, start_from
from .guidance import Guidance, ModalityGuidance, combine
from . import attention_strength
from .passes import Perturbation, gate_timesteps, reference_semantics
from .plan import (ImageCondition, Plan, check_prompt_lengths, image_conditions,  # noqa: F401  (re-exported)
                   plan_generation, resolve_guidance, resolve_multiscale)

StepCallback = Callable[[int, int], None]
"""Called as `on_step(step, total)` after each denoising step. Raising from it stops the job."""


# ------------------------------------------------------------------------------------------- sizes

def model_size(width: int, height: int, multiple: int) -> tuple[int, int]:
    """The smallest (width, height) in multiples of `multiple` that covers the requested frame."""
    return math.ceil(width / multiple) * multiple, math.ceil(height / multiple) * multiple


def center_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """(F, H, W, C) frames cut to their central (height, width); the one crop any pipeline uses."""
    top = (frames.shape[1] - height) // 2
    left = (frames.shape[2] - width) // 2
    if top == 0 and left == 0 and frames.shape[1:3] == (height, width):
        return frames
    return np.ascontiguousarray(frames[:, top: top + height, left: left + width])


# --------------------------------------------------------------------------------------------- run

class Stopwatch:
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
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


@dataclass
class Run:
    """One generation in progress: its timings, its progress across every denoising stage, and the
    transformer passes it has made (one pass = one sample of a batch through the transformer)."""

    model: LoadedModel
    on_step: StepCallback | None
    total_steps: int
    watch: Stopwatch = field(init=False)
    steps_done: int = 0
    transformer_passes: int = 0
    prompt_cache_hits: int = 0
    moved_at_start: int = field(init=False)

    def __post_init__(self) -> None:
        self.watch = Stopwatch(self.model.device)
        self.moved_at_start = self.model.placement.moved_bytes

    @property
    def host_device_bytes(self) -> int:
        """Weight bytes the memory policy copied onto the device during this run (0 under resident)."""
        return self.model.placement.moved_bytes - self.moved_at_start

    def stage(self, name: str):
        return self.watch.stage(name)

    def step_done(self) -> None:
        self.steps_done += 1
        if self.on_step is not None:
            self.on_step(self.steps_done, self.total_steps)


# ---------------------------------------------------------------------------------- encode prompt

@dataclass
class TextContext:
    """One prompt after Gemma 3 and the connectors: what the transformer cross-attends to."""

    video: torch.Tensor  # (batch, tokens, video dim)
    audio: torch.Tensor  # (batch, tokens, audio dim)
    mask: torch.Tensor  # (batch, tokens)

    @staticmethod
    def cat(*contexts: TextContext) -> TextContext:
        return TextContext(*(torch.cat([getattr(c, n) for c in contexts]) for n in ("video", "audio", "mask")))


@dataclass
class PromptEmbeddings:
    positive: TextContext
    negative: TextContext | None  # only for guided runs


def encode_prompt(model: LoadedModel, prompt: str, negative_prompt: str, guided: bool) -> PromptEmbeddings:
    """Gemma 3 hidden states of every layer -> the video and audio text connectors.

    With guidance both prompts go through as one batch [negative, positive]; the result depends on
    nothing but the arguments and the model, so it may be cached under them.
    """
    pipe, device = model.pipe, model.device
    # `device` is explicit: diffusers' default, `_execution_device`, follows where modules rest.
    # Only Gemma's hidden states are used: its output head is asked for one position's logits, not
    # 1024 x 262k of them (about 1 TMAC and 0.5 GB a prompt that diffusers' call would compute and drop).
    with model.placement.use("text_encoder", "connectors"), _one_logit(pipe.text_encoder):
        embeds, mask, negative_embeds, negative_mask = pipe.encode_prompt(
            prompt=prompt,
            negative_prompt=negative_prompt,
            do_classifier_free_guidance=guided,
            max_sequence_length=pipe.tokenizer_max_length,
            device=device,
            dtype=model.dtype,
        )
        if guided:
            embeds, mask = torch.cat([negative_embeds, embeds]), torch.cat([negative_mask, mask])
        video, audio, mask = pipe.connectors(embeds.to(pipe.connectors.dtype), mask,
                                             padding_side=pipe.tokenizer.padding_side)
    both = TextContext(video, audio, mask)
    if not guided:
        return PromptEmbeddings(positive=both, negative=None)
    pick = lambda rows: TextContext(both.video[rows], both.audio[rows], both.mask[rows])  # noqa: E731
    return PromptEmbeddings(positive=pick(slice(1, 2)), negative=pick(slice(0, 1)))


@contextmanager
def _one_logit(text_encoder):
    def pre_hook(module, args, kwargs):
        return args, {**kwargs, "logits_to_keep": 1}

    handle = text_encoder.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def prompt_embeddings(run: Run, prompt: str, negative_prompt: str, guided: bool) -> PromptEmbeddings:
    """`encode_prompt` through the model's prompt cache: a repeated pair skips Gemma altogether."""
    from .prompt_cache import cache_for

    cache = cache_for(run.model)
    key = (prompt, negative_prompt if guided else None, run.model.text_adapters)
    if cache is not None and (hit := cache.get(key, run.model.device)) is not None:
        run.prompt_cache_hits += 1
        return hit
    embeddings = encode_prompt(run.model, prompt, negative_prompt, guided)
    if cache is not None:
        cache.put(key, embeddings)
    return embeddings


# --------------------------------------------------------------------------------- latent shapes

@dataclass(frozen=True)
class LatentGrid:
    """The latent sizes of one video at the size a stage runs at."""

    frames: int  # latent frames
    height: int  # latent rows
    width: int  # latent columns
    audio_frames: int
    mel_bins: int  # latent mel bins
    num_frames: int  # pixel frames
    fps: int

    @property
    def video_tokens(self) -> int:
        return self.frames * self.height * self.width


def latent_grid(model: LoadedModel, plan: Plan, width: int, height: int) -> LatentGrid:
    pipe, request = model.pipe, plan.request
    frames, lat_h, lat_w = latent_video_shape(request.num_frames, height, width, pipe.vae_spatial_compression_ratio,
                                              pipe.vae_temporal_compression_ratio)
    audio_vae = pipe.audio_vae
    audio_frames = audio_latent_frames(request.num_frames, request.fps, audio_vae.config.sample_rate,
                                       audio_vae.config.mel_hop_length, pipe.audio_vae_temporal_compression_ratio)
    return LatentGrid(frames, lat_h, lat_w, audio_frames, audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio,
                      request.num_frames, request.fps)


# ----------------------------------------------------------------------------- encode conditions

@dataclass
class Conditions:
    """The inputs in the transformer's token space (normalised, packed latents)."""

    # (plan's image, its tokens), in the plan's order: a frame-0 image's tokens are the first latent frame's,
    # every other image's are appended as keyframe tokens at its frame.
    images: list[tuple[ImageCondition, torch.Tensor]] = field(default_factory=list)
    audio: torch.Tensor | None = None  # audio tokens, the whole soundtrack
    # An IC-LoRA's reference video (video_to_video.Reference.encode): (tokens, RoPE coords, strength, attention),
    # appended after the keyframes as ltx-core's VideoConditionByReferenceLatent appends it after the image
    # conditionings; attention: None, or each reference token's weight (M,) toward the generated ones
    # (conditioning_attention_strength, attention_strength.py).
    reference: tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None] | None = None

    @property
    def appended(self) -> list[tuple[ImageCondition, torch.Tensor]]:
        return [(image, tokens) for image, tokens in self.images if image.frame != 0]


def encode_images(model: LoadedModel, plan: Plan, width: int, height: int) -> Conditions:
    """The plan's images, each covering (width, height), through the video VAE."""
    out = Conditions()
    if plan.images:
        with model.placement.use("vae"):
            out.images = [(image, _encode_image(model, image.image, width, height)) for image in plan.images]
    return out


def encode_soundtrack(model: LoadedModel, plan: Plan, grid: LatentGrid) -> torch.Tensor | None:
    """The plan's soundtrack through the audio VAE, fitted to the video's length."""
    if plan.audio is None:
        return None
    pipe = model.pipe
    audio_vae = pipe.audio_vae
    with model.placement.use("audio_vae"):
        raw = encode_audio(audio_vae, torch.from_numpy(plan.audio), grid.audio_frames)
        return pipe._normalize_audio_latents(
            pipe._pack_audio_latents(raw.float()), audio_vae.latents_mean, audio_vae.latents_std
        ).to(model.device)


def encode_conditions(model: LoadedModel, plan: Plan, grid: LatentGrid, width: int, height: int) -> Conditions:
    """Images with the video VAE at (width, height), the soundtrack with the audio VAE."""
    conditions = encode_images(model, plan, width, height)
    conditions.audio = encode_soundtrack(model, plan, grid)
    return conditions


def _encode_image(model: LoadedModel, image, width: int, height: int) -> torch.Tensor:
    """One image -> its video-VAE latent tokens (`encode_pixels`)."""
    return encode_pixels(model, image_pixels(image, width, height, model.family.image_crf))


def encode_pixels(model: LoadedModel, pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, F, H, W) in [-1, 1] -> the video VAE's latent (its mode, not a sample), normalised and packed
    into tokens (on the VAE's device; the caller holds the VAE where its memory policy puts it)."""
    pipe, vae = model.pipe, model.pipe.vae
    latent = vae.encode(pixels.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
    latent = pipe._normalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    return pipe._pack_latents(latent.float(), pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)


# ------------------------------------------------------------------------------- prepare latents

@dataclass
class Stream:
    """One modality's tokens while they are denoised, with what holds the conditioned ones."""

    latents: torch.Tensor  # (1, tokens, channels), keyframe tokens appended after the video's own
    coords: torch.Tensor  # (1, axes, tokens, 2) RoPE positions
    own_tokens: int  # tokens that are the video (or audio) itself; the rest are keyframe tokens
    clean: torch.Tensor | None = None  # conditioned tokens' clean latents (zeros elsewhere)
    strength: torch.Tensor | None = None  # (1, tokens, 1): 1 holds a token, 0 leaves it free
    frozen: bool = False  # every token held (a soundtrack at strength 1): the stream's sigma counts as 0
    # (1, 1, tokens, tokens) additive bias on the video self-attention (an IC-LoRA's attention strength)
    attention_bias: torch.Tensor | None = None

    def token_sigma(self, sigma: float) -> torch.Tensor | float:
        """Each token's own noise level: the step's sigma times one minus its strength."""
        return sigma if self.strength is None else sigma * (1 - self.strength)


def prepare_latents(model: LoadedModel, plan: Plan, grid: LatentGrid, conditions: Conditions, sigma0: float,
                    generator: torch.Generator, video_start: torch.Tensor | None = None,
                    audio_start: torch.Tensor | None = None) -> tuple[Stream, Stream]:
    """Seeded noise, drawn on the CPU so a seed means the same video on any device; conditioned
    tokens start nearer their condition, keyframe tokens are appended at the end.

    Without a start the free tokens are pure noise (sigma0 is 1). With one (a second stage: the
    upsampled video, the first stage's audio) they are re-noised to sigma0,
    (1 - sigma0) start + sigma0 noise, while conditioned tokens restart from their clean latents.
    """
    pipe, device = model.pipe, model.device
    patch, patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    # Drawn in token order, as ltx-pipelines' GaussianNoiser draws it (on the patchified state): the video's
    # own tokens, then a keyframe's tokens, then the audio's, so that a seed gives the reference's noise.
    video_shape = pipe._pack_latents(torch.empty(1, pipe.transformer.config.in_channels, grid.frames, grid.height,
                                                 grid.width), patch, patch_t).shape
    keyframe_tokens = sum(tokens.shape[1] for _, tokens in conditions.appended)
    keyframe_tokens += 0 if conditions.reference is None else conditions.reference[0].shape[1]
    drawn = torch.randn((1, video_shape[1] + keyframe_tokens, video_shape[2]), generator=generator).to(device)
    latents, extra_noise = drawn[:, : video_shape[1]], drawn[:, video_shape[1]:]
    audio_shape = pipe._pack_audio_latents(torch.empty(1, pipe.audio_vae.config.latent_channels, grid.audio_frames,
                                                       grid.mel_bins)).shape
    audio_latents = torch.randn(audio_shape, generator=generator).to(device)
    video_base = None if video_start is None else renoise(video_start, latents, sigma0)
    audio_base = None if audio_start is None else renoise(audio_start, audio_latents, sigma0)
    video = Stream(latents if video_base is None else video_base, pipe.transformer.rope.prepare_video_coords(
        1, grid.frames, grid.height, grid.width, device, fps=grid.fps), latents.shape[1])
    audio = Stream(audio_latents if audio_base is None else audio_base,
                   pipe.transformer.audio_rope.prepare_audio_coords(1, grid.audio_frames, device),
                   audio_latents.shape[1])

    if conditions.images or conditions.reference is not None:
        mask = torch.zeros(1, video.own_tokens, 1, device=device)
        clean = torch.zeros_like(latents)
        taken = 0  # of extra_noise, by the keyframes appended so far
        for image, tokens in conditions.images:
            if image.frame == 0:  # the first latent frame is the image itself (a causal VAE)
                clean[:, : tokens.shape[1]] = tokens
                mask[:, : tokens.shape[1]] = image.strength
                continue
            # A keyframe: extra tokens placed in time at its frame (grid.num_frames - 1 for the last), with the
            # noise drawn for them in their place in the token order.
            noise = extra_noise[:, taken: taken + tokens.shape[1]]
            taken += tokens.shape[1]
            latents = torch.cat([latents, noise], dim=1)
            if video_base is not None:  # a keyframe has no start of its own: its base is zeros, renoised
                video_base = torch.cat([video_base, renoise(torch.zeros_like(noise), noise, sigma0)], dim=1)
            clean = torch.cat([clean, tokens], dim=1)
            mask = torch.cat([mask, torch.full((1, tokens.shape[1], 1), image.strength, device=device)], dim=1)
            coords = keyframe_coords(pipe.transformer.rope, grid.height, grid.width, image.frame, grid.fps, device)
            video.coords = torch.cat([video.coords, coords], dim=2)
        if conditions.reference is not None:  # last, with the rest of the noise drawn for the appended tokens
            tokens, coords, strength, attention = conditions.reference
            if attention is not None:  # ltx-core's block mask; the keyframes end where the reference starts
                video.attention_bias = attention_strength.self_attention_bias(
                    video.own_tokens, latents.shape[1], attention, model.dtype, device)
            latents = torch.cat([latents, extra_noise[:, taken:]], dim=1)
            if video_base is not None:
                video_base = torch.cat([video_base, renoise(torch.zeros_like(tokens), extra_noise[:, taken:], sigma0)],
                                       dim=1)
            clean = torch.cat([clean, tokens], dim=1)
            mask = torch.cat([mask, torch.full((1, tokens.shape[1], 1), strength, device=device)], dim=1)
            video.coords = torch.cat([video.coords, coords], dim=2)
        if video_base is None:
            video.latents = start_from(latents, clean, mask, sigma0)
        else:  # ltx-core's GaussianNoiser on a later stage: each token's renoised start, pulled to its condition
            video.latents = clean * mask + video_base * (1 - mask)
        video.clean, video.strength = clean, mask
    if conditions.audio is not None:
        audio.strength = torch.full((1, audio.latents.shape[1], 1), float(plan.request.audio_strength), device=device)
        audio.clean = conditions.audio
        audio.latents = start_from(audio_latents, audio.clean, audio.strength, sigma0, audio_base)
        audio.frozen = plan.request.audio_strength == 1.0
    return video, audio


def renoise(start: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """Latents brought back to noise level `sigma`: (1 - sigma) start + sigma noise."""
    return start * (1 - sigma) + noise * sigma


# ---------------------------------------------------------------------------------------- upsample

def upsample(model: LoadedModel, video: Stream, grid: LatentGrid) -> torch.Tensor:
    """The video's tokens at twice the width and height, through the x2 spatial latent upsampler.

    The upsampler works on raw VAE latents: un-normalise with the VAE's per-channel statistics,
    upsample, normalise again (ltx-core's `upsample_video`). Keyframe tokens are left behind; the
    next stage appends them again at its own size. Returns packed tokens.
    """
    pipe, upsampler = model.pipe, model.upsampler
    (mean, std), scaling = model.video_latent_stats, pipe.vae.config.scaling_factor  # not the VAE: it may be off
    patch, patch_t = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    with model.placement.use("upsampler"):
        latents = pipe._unpack_latents(video.latents[:, : video.own_tokens], grid.frames, grid.height, grid.width,
                                       patch, patch_t)
        raw = pipe._denormalize_latents(latents, mean, std, scaling)
        weight = next(upsampler.parameters())
        larger = upsampler(raw.to(weight.device, weight.dtype)).float().to(latents.device)
        latents = pipe._normalize_latents(larger, mean, std, scaling)
    return pipe._pack_latents(latents, patch, patch_t)


# ----------------------------------------------------------------------------------------- denoise

def denoise(run: Run, video: Stream, audio: Stream, prompt: PromptEmbeddings, sigmas: list[float],
            grid: LatentGrid, guidance: Guidance, ancestral_seed: int | None = None) -> tuple[Stream, Stream]:
    """The one denoising loop: video and audio jointly, every kind of conditioning, any sigmas.

    One transformer call per step, a batch of the passes the guidance asks for (one without
    guidance). A token conditioned with strength s turns velocity into a clean estimate at its own
    sigma, x0 = x - (1 - s) sigma v, and that estimate is pulled to its condition by s. Reports
    progress after every step. Each step is an Euler step, or with `ancestral_seed` an ancestral one
    (`ancestral_step`) whose noise comes from a generator seeded with it.
    """
    model = run.model
    pipe, device = model.pipe, model.device
    passes = guidance.passes
    by_pass = {"cond": prompt.positive, "uncond": prompt.negative, "ptb": prompt.positive, "mod": prompt.positive}
    context = TextContext.cat(*(by_pass[p] for p in passes)) if len(passes) > 1 else prompt.positive
    if bool(context.mask.all()):
        # The connectors replace padding with registers, so the mask masks nothing; passed on it would be an
        # all-zero additive bias that keeps fused attention kernels (flash) from running. None is the same math.
        context = TextContext(context.video, context.audio, None)
    perturbations = [Perturbation(skip_video_self_attention=p == "ptb" and guidance.video.stg != 0,
                                  skip_audio_self_attention=p == "ptb" and guidance.audio.stg != 0,
                                  isolate_modalities=p == "mod") for p in passes]
    noise = None if ancestral_seed is None else torch.Generator("cpu").manual_seed(ancestral_seed)
    with model.placement.use("transformer"):
        video_scheduler = copy.deepcopy(pipe.scheduler)
        video_scheduler.set_timesteps(sigmas=sigmas, device=device)
        audio_scheduler = copy.deepcopy(video_scheduler)  # schedulers keep a step index: one per stream
        for step, t in enumerate(video_scheduler.timesteps):
            sigma = float(video_scheduler.sigmas[step])
            video_out, audio_out = transformer_pass(run, video, audio, t, sigma, context, grid, perturbations,
                                                    guidance.stg_blocks)
            video_velocity = _guided(guidance.video, passes, video_out, video, sigma)
            audio_velocity = _guided(guidance.audio, passes, audio_out, audio, sigma)
            if video.strength is not None:
                video_velocity = blend_velocity(video_velocity, video.latents, video.clean, video.strength, sigma)
            if audio.strength is not None:
                audio_velocity = blend_velocity(audio_velocity, audio.latents, audio.clean, audio.strength, sigma)
            if noise is None:
                video.latents = video_scheduler.step(video_velocity, t, video.latents, return_dict=False)[0]
                audio.latents = audio_scheduler.step(audio_velocity, t, audio.latents, return_dict=False)[0]
            else:  # video's noise first, then audio's, from the one generator (ltx-pipelines' order)
                sigma_next = float(video_scheduler.sigmas[step + 1])
                video.latents = ancestral_step(video, video_velocity, sigma, sigma_next, noise)
                audio.latents = ancestral_step(audio, audio_velocity, sigma, sigma_next, noise)
            run.step_done()
    return video, audio


ANCESTRAL_ETA = 1.0  # ltx-pipelines' distilled.py: fully ancestral
ANCESTRAL_S_NOISE = 1.0
ANCESTRAL_NOISE_SEED_OFFSET = 10_000  # its loop's generator: the request's seed plus this


def ancestral_step(stream: Stream, velocity: torch.Tensor, sigma: float, sigma_next: float,
                   noise: torch.Generator, eta: float = ANCESTRAL_ETA) -> torch.Tensor:
    """ltx-core's EulerAncestralDiffusionStep (rectified flow, alpha = 1 - sigma) on one stream.

    The clean estimate is x0 = x - sigma v (conditioned tokens already pulled to their condition by
    `blend_velocity`). A step goes deterministically to sigma_down <= sigma_next, then renoises back
    up to sigma_next, keeping the variance; a held token is put back to its condition afterwards, as
    ltx-pipelines' post_process_latent does. At sigma_next = 0 the step is the clean estimate.
    """
    x = stream.latents.float()
    x0 = x - sigma * velocity.float()
    if sigma_next == 0:
        return x0.to(stream.latents.dtype)
    sigma_down = sigma_next * (1.0 + (sigma_next / sigma - 1.0) * eta)
    ratio = sigma_down / sigma
    x_next = ratio * x + (1.0 - ratio) * x0
    alpha_next, alpha_down = 1.0 - sigma_next, 1.0 - sigma_down
    renoise = max(sigma_next ** 2 - sigma_down ** 2 * alpha_next ** 2 / alpha_down ** 2, 0.0) ** 0.5
    drawn = torch.randn(x.shape, generator=noise).to(x.device)  # on the CPU: a seed means the same video anywhere
    x_next = (alpha_next / alpha_down) * x_next + drawn * ANCESTRAL_S_NOISE * renoise
    if stream.strength is not None:
        keep = 1 - stream.strength
        x_next = x_next * keep + stream.clean.float() * stream.strength
    return x_next.to(stream.latents.dtype)


def _guided(knobs: ModalityGuidance, passes: tuple[str, ...], output: torch.Tensor, stream: Stream,
            sigma: float) -> torch.Tensor:
    if len(passes) == 1:
        return output
    outputs = dict(zip(passes, output.chunk(len(passes))))
    token_sigma = stream.token_sigma(sigma)
    if not torch.is_tensor(token_sigma):
        token_sigma = torch.full((1, 1, 1), token_sigma, device=output.device)
    return combine(knobs, outputs, stream.latents, token_sigma)


def _token_timesteps(timestep: torch.Tensor, stream: Stream) -> torch.Tensor:
    """A conditioned token is told it is less noisy, in proportion to its strength."""
    if stream.strength is None:
        return timestep
    return timestep[:, None] * (1 - stream.strength[..., 0])


def transformer_pass(run: Run, video: Stream, audio: Stream, t: torch.Tensor, sigma: float, context: TextContext,
                     grid: LatentGrid, perturbations: list[Perturbation] | None = None,
                     stg_blocks: tuple[int, ...] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """One call of the transformer on a batch as wide as `context` (one sample per pass): the
    velocities, in float32. The audio<->video gates and the perturbations follow ltx-core (`passes.py`)."""
    pipe, dtype = run.model.pipe, run.model.dtype
    transformer = pipe.transformer
    batch = passes = context.video.shape[0]
    perturbations = perturbations or [Perturbation()] * batch
    rows = parallel.pass_rows(batch)  # --parallel cfg: the passes this rank runs (None: all)
    if rows is not None:
        mask = None if context.mask is None else context.mask[rows]
        context, perturbations, batch = TextContext(context.video[rows], context.audio[rows], mask), \
            [perturbations[i] for i in rows], len(rows)
    widen = (lambda x: torch.cat([x] * batch)) if batch > 1 else (lambda x: x)
    timestep = t.expand(batch)
    sigmas = torch.full((batch,), sigma, device=timestep.device)
    # ltx-core marks the first latent frame's tokens (one pixel frame, the VAE being causal) on every call,
    # and a transformer with the keyframe embedding (LTX-2.5.1 and later) adds it to them; appended keyframe
    # tokens are not marked. diffusers applies it only when asked.
    marks = {}
    if getattr(transformer.config, "use_keyframes_abs_pos_embedding", False):
        mask = torch.zeros(1, video.latents.shape[1], 1, device=video.latents.device)
        mask[:, : video.own_tokens // grid.frames] = 1.0
        marks["video_keyframes_mask"] = widen(mask)
    # A stream held fixed counts as sigma 0 for the other stream's gate.
    video_sigma = torch.zeros_like(sigmas) if video.frozen else sigmas
    audio_sigma = torch.zeros_like(sigmas) if audio.frozen else sigmas
    with reference_semantics(transformer, video_gate=gate_timesteps(transformer, audio_sigma),
                             audio_gate=gate_timesteps(transformer, video_sigma),
                             perturbations=perturbations, stg_blocks=stg_blocks), \
            attention_strength.applied(transformer, video.attention_bias), \
            parallel.sequence_parallel(transformer):  # --parallel ulysses: tokens split, attention exchanged
        video_velocity, audio_velocity = transformer(
            hidden_states=widen(video.latents).to(dtype),
            audio_hidden_states=widen(audio.latents).to(dtype),
            encoder_hidden_states=context.video,
            audio_encoder_hidden_states=context.audio,
            timestep=_token_timesteps(timestep, video),
            audio_timestep=_token_timesteps(timestep, audio),
            encoder_attention_mask=context.mask,
            audio_encoder_attention_mask=context.mask,
            num_frames=grid.frames,
            height=grid.height,
            width=grid.width,
            fps=grid.fps,
            audio_num_frames=grid.audio_frames,
            video_coords=widen(video.coords),
            audio_coords=widen(audio.coords),
            # The prompt AdaLN (LTX-2.3 and later) reads each stream's own sigma in timestep units,
            # 0 for a stream held fixed (ltx-pipelines' modality_from_latent_state); 2.0 ignores it.
            sigma=video_sigma * transformer.config.timestep_scale_multiplier,
            audio_sigma=audio_sigma * transformer.config.timestep_scale_multiplier,
            use_cross_timestep=False,  # scale/shift from each stream's own timesteps; the gates are hooked
            return_dict=False,
            **marks,
        )
    run.transformer_passes += passes
    return parallel.gather_passes(video_velocity.float(), passes), parallel.gather_passes(audio_velocity.float(), passes)


# ------------------------------------------------------------------------------------------ decode

class OutputRejected(RuntimeError):
    """The model produced something that is not a video (NaN, or nothing but black): a failure."""


# A timestep-conditioned decoder (ltx-core's ConvVideoDecoder) decodes at t = 0.05 after mixing
# 2.5% noise into the normalised latent; one that is not conditioned decodes the latent as it is.
DECODE_TIMESTEP = 0.05
DECODE_NOISE_SCALE = 0.025


def decode_video(model: LoadedModel, video: Stream, grid: LatentGrid, width: int, height: int,
                 generator: torch.Generator | None = None) -> tuple[np.ndarray, torch.Tensor]:
    """Tokens -> frames: unpack, (for a timestep-conditioned decoder: mix in the decode noise,)
    undo the latent normalisation, run the VAE decoder, and center-crop to (width, height).
    Returns uint8 frames (F, height, width, 3) and the VAE-space latents the model made."""
    pipe = model.pipe
    vae = pipe.vae
    diffusion = model.video_decoder == "diffusion"
    with model.placement.use("diffusion_decoder" if diffusion else "vae"):
        latents = video.latents[:, : video.own_tokens]  # keyframe tokens guided the video; they are not frames
        latents = pipe._unpack_latents(latents, grid.frames, grid.height, grid.width,
                                       pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)
        # The VAE's statistics, moved where the latents are (it may rest off the device while the other decodes).
        denormalize = lambda x: pipe._denormalize_latents(  # noqa: E731
            x, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        video_latents = denormalize(latents)
        timestep = None
        if diffusion:  # LTX-2.5: the diffusion decoder denoises pixels from noise drawn from the seed's generator
            with progress.counting(progress.DECODING_VIDEO, [model.diffusion_decoder], 1, finish=False):
                pixels = diffusion_decode(model.diffusion_decoder, video_latents, generator).float()
            _check_output(video_latents, pixels)
            frames = center_crop(_to_uint8_frames(pixels[0]), width, height)
            progress.finished(progress.DECODING_VIDEO)
            return frames, video_latents
        if vae.config.timestep_conditioning:
            noise = torch.randn(latents.shape, generator=generator).to(latents.device)
            latents = noise * DECODE_NOISE_SCALE + latents * (1 - DECODE_NOISE_SCALE)
            timestep = torch.full((latents.shape[0],), DECODE_TIMESTEP, device=latents.device)
        pixels = vae_decode(vae, denormalize(latents) if timestep is not None else video_latents, timestep)
        _check_output(video_latents, pixels)
        frames = center_crop(_to_uint8_frames(pixels[0]), width, height)
    progress.finished(progress.DECODING_VIDEO)
    return frames, video_latents


def vae_decode(vae, latents: torch.Tensor, timestep: torch.Tensor | None = None) -> torch.Tensor:
    """The video VAE's decoder on (1, C, F, H, W) raw latents -> (1, 3, frames, H', W') in [-1, 1]; in
    overlapping tiles when the whole video would not fit in the device's free memory (`tiling`).
    `timestep` (a timestep-conditioned decoder only) is in 0..1; the decoder scales it by its own
    multiplier (1000)."""
    from . import tiling

    plan = tiling.plan_for(vae, latents.shape, tiling.free_bytes(latents.device))
    # Progress by the decoder's blocks (its mid block, then each up block) in every tile it decodes.
    decoder = vae.decoder
    blocks = [getattr(decoder, "mid_block", None), *getattr(decoder, "up_blocks", ())]
    blocks = [b for b in blocks if b is not None] or [decoder]
    passes = decoder_passes(vae, latents.shape, plan)
    with progress.counting(progress.DECODING_VIDEO, blocks, len(blocks) * passes, finish=False):
        return tiling.decode(vae, latents, plan, timestep)  # decode_video reports the end, with the frames out


def decoder_passes(vae, shape, plan) -> int:
    """How many times the decoder runs for latents of `shape` under `plan`: once per temporal tile, times
    the spatial tiles diffusers' tiled_decode cuts each into (its loop's count) when the plan tiles space."""
    from . import tiling

    passes = tiling.tiles(shape[2], plan)
    if plan is not None and plan.spatial:
        ratio = vae.spatial_compression_ratio
        stride, least = tiling.SPATIAL_STRIDE // ratio, tiling.SPATIAL_TILE // ratio
        height, width = shape[3], shape[4]
        if height > least or width > least:
            passes *= -(-height // stride) * -(-width // stride)
    return passes


def decode_audio(model: LoadedModel, plan: Plan, audio: Stream, grid: LatentGrid
                 ) -> tuple[np.ndarray | None, torch.Tensor]:
    """Audio VAE -> stereo mel spectrogram -> vocoder -> a waveform of the video's length.

    With the input soundtrack held fixed the file carries the input itself. The latents are
    returned even without audio, and their denormalisation reads the audio VAE.
    """
    pipe, request = model.pipe, plan.request
    audio_vae = pipe.audio_vae
    vocode = request.include_audio and not plan.keep_input_audio
    with model.placement.use(*(("audio_vae", "vocoder") if vocode else ("audio_vae",))):
        latents = pipe._denormalize_audio_latents(audio.latents, audio_vae.latents_mean, audio_vae.latents_std)
        latents = pipe._unpack_audio_latents(latents, grid.audio_frames, num_mel_bins=grid.mel_bins)
        samples = round(request.duration_seconds * model.vocoder_rate)
        waveform = None
        if request.include_audio and plan.keep_input_audio:
            waveform = fit_length(plan.conditioning.audio_for_output, samples)
        elif vocode:
            parts = [m for m in (getattr(audio_vae, "decoder", None), pipe.vocoder) if m is not None]
            with progress.counting(progress.DECODING_AUDIO, parts, len(parts) + 1):  # + 1: the waveform out
                mel = audio_vae.decode(latents.to(audio_vae.dtype), return_dict=False)[0]
                wave = pipe.vocoder(mel.to(pipe.vocoder.dtype))[0].float().clamp(-1, 1).cpu().numpy()
            waveform = fit_length(wave, samples)
    return waveform, latents


def _check_output(latents: torch.Tensor, video: torch.Tensor) -> None:
    if not torch.isfinite(latents).all() or not torch.isfinite(video).all():
        raise OutputRejected("the model produced NaN or infinite values (a numerical failure, e.g. in reduced "
                             "precision); no video was made")
    if video.float().max() <= -0.97:  # every pixel at most 1 of 255: black, not a dark scene
        raise OutputRejected("the model produced an all-black video; no video was made")


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
