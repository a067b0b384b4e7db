"""The training objective of ltx-trainer 1.2.0 (its `flexible` strategy), on diffusers' transformer.

Flow matching: x_sigma = (1 - sigma) x0 + sigma noise, and the transformer is taught the velocity
noise - x0, by the mean squared error over every token it has to generate. Video and audio each draw
their own sigma from the sampler (the strategy processes each modality with its own draw), from a
shifted logit-normal whose shift grows with the modality's token count (`ShiftedLogitNormal`, the
trainer's default `shifted_logit_normal`). The loss is video MSE + audio MSE.

First-frame conditioning (i2v): with probability p the first latent frame's tokens are given clean, at
timestep 0, and left out of the loss (ltx-trainer's `first_frame` condition; its i2v config uses 0.5).

The call follows ltx-core's conventions as `pipelines/passes.py` explains: each stream's own per-token
timesteps for scale/shift, the other stream's sigma for the cross-attention gates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..pipelines.passes import Perturbation, gate_timesteps, reference_semantics


class ShiftedLogitNormal:
    """ltx-trainer's `ShiftedLogitNormalTimestepSampler` (std 1, eps 1e-3, uniform 10% of the time),
    drawing from a given generator so that a seed fixes a training run."""

    def __init__(self, std: float = 1.0, eps: float = 1e-3, uniform_prob: float = 0.1):
        self.std, self.eps, self.uniform_prob = std, eps, uniform_prob
        self.high = 3.0902 * std  # the standard normal's 99.9th percentile, scaled
        self.low = -2.5758 * std  # its 0.5th

    @staticmethod
    def shift(tokens: int, min_tokens: int = 1024, max_tokens: int = 4096, min_shift: float = 0.95,
              max_shift: float = 2.05) -> float:
        slope = (max_shift - min_shift) / (max_tokens - min_tokens)
        return slope * tokens + (min_shift - slope * min_tokens)

    def stretch(self, normal: torch.Tensor, tokens: int, uniform: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
        """The sample from its three random draws (a standard normal, two uniforms), as the trainer maps them."""
        mu = self.shift(tokens)
        logit = torch.sigmoid(normal * self.std + mu)
        top, bottom = torch.sigmoid(torch.tensor(mu + self.high)), torch.sigmoid(torch.tensor(mu + self.low))
        raw = (logit - bottom) / (top - bottom)
        stretched = torch.where(raw >= self.eps, raw, 2 * self.eps - raw).clamp(0, 1)
        flat = (1 - self.eps) * uniform + self.eps
        return torch.where(prob > self.uniform_prob, stretched, flat)

    def sample(self, batch: int, tokens: int, generator: torch.Generator | None = None) -> torch.Tensor:
        normal = torch.randn((batch,), generator=generator)
        uniform = torch.rand((batch,), generator=generator)
        prob = torch.rand((batch,), generator=generator)
        return self.stretch(normal, tokens, uniform, prob)


@dataclass
class Draw:
    """The randomness of one step: each modality's sigma and noise, and whether frame 0 is given."""

    video_sigma: torch.Tensor  # (batch,)
    video_noise: torch.Tensor
    audio_sigma: torch.Tensor | None
    audio_noise: torch.Tensor | None
    first_frame: bool


def draw(sampler: ShiftedLogitNormal, video: torch.Tensor, audio: torch.Tensor, first_frame_p: float,
         generator: torch.Generator) -> Draw:
    """Sigmas and noise for one sample, on the CPU from `generator` (the same run on any device)."""
    video_sigma = sampler.sample(video.shape[0], video.shape[1], generator)
    video_noise = torch.randn(video.shape, generator=generator)
    audio_sigma = sampler.sample(audio.shape[0], audio.shape[1], generator)
    audio_noise = torch.randn(audio.shape, generator=generator)
    first = bool(torch.rand((), generator=generator) < first_frame_p) if first_frame_p > 0 else False
    return Draw(video_sigma, video_noise, audio_sigma, audio_noise, first)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """ltx-trainer's `_compute_modality_loss`: the squared error averaged over the kept tokens' elements."""
    mask = keep.unsqueeze(-1).float()
    return ((pred - target).pow(2) * mask).mean(dim=(-2, -1)) / mask.mean(dim=(-2, -1)).clamp(min=1e-8)


def loss(model, video: torch.Tensor, audio: torch.Tensor | None, text, grid: dict, d: Draw) -> torch.Tensor:
    """The training loss of one sample (batch 1) given its draw: video MSE + audio MSE (a clip without a
    soundtrack: its audio stream is pure noise at sigma 1, and only the video counts).

    `grid`: frames, height, width (latent), audio_frames, fps. Returns a (batch,) float32 tensor."""
    device, dtype = model.device, model.dtype
    transformer = model.pipe.transformer
    video, noise = video.to(device), d.video_noise.to(device)
    sigma = d.video_sigma.to(device)
    noisy = (1 - sigma.view(-1, 1, 1)) * video + sigma.view(-1, 1, 1) * noise
    target = noise - video
    tokens = video.shape[1]
    conditioned = torch.zeros(video.shape[0], tokens, dtype=torch.bool, device=device)
    if d.first_frame:
        conditioned[:, : tokens // grid["frames"]] = True
        noisy = torch.where(conditioned.unsqueeze(-1), video, noisy)
    video_t = sigma.view(-1, 1) * (~conditioned).float()  # per token, in sigma units

    silent = audio is None
    audio_noise = d.audio_noise.to(device)
    if silent:  # nothing to learn: the stream is noise at sigma 1, as at the start of a generation
        audio_sigma = torch.ones_like(sigma)
        audio_noisy, audio_target = audio_noise, None
    else:
        audio = audio.to(device)
        audio_sigma = d.audio_sigma.to(device)
        audio_noisy = (1 - audio_sigma.view(-1, 1, 1)) * audio + audio_sigma.view(-1, 1, 1) * audio_noise
        audio_target = audio_noise - audio
    audio_t = audio_sigma.view(-1, 1).expand(-1, audio_noisy.shape[1])

    scale = float(transformer.config.timestep_scale_multiplier)
    video_coords = transformer.rope.prepare_video_coords(video.shape[0], grid["frames"], grid["height"], grid["width"],
                                                         device, fps=grid["fps"])
    audio_coords = transformer.audio_rope.prepare_audio_coords(video.shape[0], grid["audio_frames"], device)
    mask = text.mask.to(device)
    marks = {}
    if getattr(transformer.config, "use_keyframes_abs_pos_embedding", False):
        first = torch.zeros(1, tokens, 1, device=device)
        first[:, : tokens // grid["frames"]] = 1.0
        marks["video_keyframes_mask"] = first
    with reference_semantics(transformer, video_gate=gate_timesteps(transformer, audio_sigma),
                             audio_gate=gate_timesteps(transformer, sigma), perturbations=[Perturbation()],
                             stg_blocks=()):
        video_pred, audio_pred = transformer(
            hidden_states=noisy.to(dtype), audio_hidden_states=audio_noisy.to(dtype),
            encoder_hidden_states=text.video.to(device, dtype), audio_encoder_hidden_states=text.audio.to(device, dtype),
            timestep=video_t * scale, audio_timestep=audio_t * scale,
            encoder_attention_mask=None if bool(mask.all()) else mask,
            audio_encoder_attention_mask=None if bool(mask.all()) else mask,
            num_frames=grid["frames"], height=grid["height"], width=grid["width"], fps=grid["fps"],
            audio_num_frames=grid["audio_frames"], video_coords=video_coords, audio_coords=audio_coords,
            sigma=sigma * scale, audio_sigma=audio_sigma * scale, use_cross_timestep=False, return_dict=False,
            **marks)
    total = masked_mse(video_pred.float(), target, ~conditioned)
    if audio_target is not None:
        total = total + (audio_pred.float() - audio_target).pow(2).mean(dim=(-2, -1))
    return total


def eta_seconds(elapsed: float, done: int, total: int) -> float | None:
    """What is left at the mean pace so far (None before the first step)."""
    if done <= 0:
        return None
    return max(0.0, elapsed / done * (total - done)) if math.isfinite(elapsed) else None
