"""Video to video with an IC-LoRA, as ltx-pipelines' `ICLoraPipeline`.

The reference video (decoded in the sandbox at stage 1's size over the LoRA's `reference_downscale_factor`,
every `reference_temporal_scale_factor`-th frame, as edges for control "canny") is encoded with the video VAE
and appended to stage 1's video tokens as ltx-core's `VideoConditionByReferenceLatent` appends it: clean
tokens held at `video_strength`, after any keyframes, with RoPE positions on the target's grid (spatial
positions times the downscale factor; time on its own spacing, shifted so its last patch ends with the
target's). Stage 1 runs with the IC-LoRA and the request's LoRAs (the reference's stage 1 takes every LoRA it
is given; its stage 2 none). The rest is the one- or two-stage pipeline unchanged: the reference tokens are
dropped with the other appended ones before the upsampler and the decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..models.loaded import LoadedModel
from ..models.lora import Adapter
from ..schema import GenerateRequest, InvalidRequest
from . import stages
from .conditioning import Conditioning
from .one_stage import one_stage
from .result import GenerationResult
from .stages import LatentGrid, Plan, StepCallback
from .two_stage import two_stage

NAME = "ic-lora"


def resolve_request(request: GenerateRequest, cond: Conditioning) -> GenerateRequest:
    """The request at the size, fps and length the sandbox took from the video where the request left them."""
    info = cond.video_info
    if cond.video is None or info is None or "reference" not in info:
        raise InvalidRequest("video", "ic_lora needs its reference video decoded in the conditioning "
                                      "(decode_conditioning with generate.image_targets)")
    return request.model_copy(update={"width": info["width"], "height": info["height"], "fps": info["fps"],
                                      "num_frames": info["num_frames"]})


@dataclass
class Reference:
    """What stage 1 adds: the reference's pixels (1, 3, F, h, w) in [-1, 1], its temporal scale and strength,
    and the LoRAs stage 1 runs with (the IC-LoRA among them). Its spatial downscale is stage 1's size over its
    own (the sandbox decoded it there)."""

    pixels: torch.Tensor
    temporal: int
    strength: float
    adapters: list[tuple[Adapter, float]] = field(default_factory=list)
    downscale: int = 0  # known once encoded at a stage's grid
    # conditioning_attention_strength: the weight of the attention between the generated and the reference
    # tokens; at 1 no bias is built (ltx-pipelines wraps the conditioning only below 1) unless a mask is given.
    attention: float = 1.0
    # conditioning_attention_mask on the reference's latent grid (frames, height, width), in the model's dtype's
    # values (ltx2.media.attention_mask): its tokens' weights are it times `attention`, at any strength.
    mask: torch.Tensor | None = None

    def encode(self, model: LoadedModel, grid: LatentGrid
               ) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]:
        """(tokens, coords, strength, attention) for `stages.Conditions.reference`, at the stage's `grid`."""
        pipe, vae_ratio = model.pipe, model.pipe.vae_spatial_compression_ratio
        frames = (self.pixels.shape[2] - 1) // pipe.vae_temporal_compression_ratio + 1
        height, width = self.pixels.shape[3] // vae_ratio, self.pixels.shape[4] // vae_ratio
        self.downscale = grid.width // width
        if grid.width != width * self.downscale or grid.height != height * self.downscale:
            raise ValueError(f"the reference's latent {width}x{height} does not divide stage 1's "
                             f"{grid.width}x{grid.height}")
        with model.placement.use("vae"):
            tokens = stages.encode_pixels(model, self.pixels).to(model.device)
        attention = None if self.attention >= 1.0 else torch.full((tokens.shape[1],), self.attention)
        if self.mask is not None:
            if tuple(self.mask.shape) != (frames, height, width):
                raise ValueError(f"the attention mask was pooled onto {tuple(self.mask.shape)}, not the reference's "
                                 f"latent grid {(frames, height, width)}")
            # ltx-pipelines: latent_mask * conditioning_attention_strength, in the mask's dtype
            attention = (self.mask.to(model.dtype) * self.attention).to(torch.float32).flatten()
        return tokens, reference_coords(model, grid, frames, height, width, self.downscale, self.temporal), \
            self.strength, attention


def reference_coords(model: LoadedModel, grid: LatentGrid, frames: int, height: int, width: int, downscale: int,
                     temporal: int) -> torch.Tensor:
    """RoPE bounds (1, 3, tokens, 2) of a reference latent (frames, height, width), as
    VideoConditionByReferenceLatent places them: pixel coordinates with the causal first frame, time in seconds at
    fps / temporal, moved back by (temporal - 1) target frames and clamped at 0, height and width times
    downscale (the reference was made that much smaller than the stage it conditions)."""
    coords = model.pipe.transformer.rope.prepare_video_coords(1, frames, height, width, model.device,
                                                              fps=grid.fps / temporal).clone()
    if temporal != 1:
        coords[:, 0] = (coords[:, 0] - (temporal - 1) / grid.fps).clamp(min=0)
    coords[:, 1:] *= downscale
    return coords


def video_to_video(model: LoadedModel, plan: Plan, on_step: StepCallback | None,
                   adapters: list[tuple[Adapter, float]]) -> GenerationResult:
    info = plan.conditioning.video_info
    reference = Reference(plan.conditioning.video, info["temporal"], float(plan.request.video_strength), adapters,
                          attention=float(plan.request.conditioning_attention_strength),
                          mask=plan.conditioning.attention_mask)
    pipeline = two_stage if plan.use_multiscale else one_stage
    result = pipeline(model, replace(plan, reference=reference), on_step)
    result.pipeline = f"{NAME}-{result.pipeline}"
    stage = "stage1" if plan.use_multiscale else "all"
    result.loras = [adapter.report(scale, stage=stage) for adapter, scale in adapters] + result.loras
    result.reference = {"width": int(plan.conditioning.video.shape[4]), "height": int(plan.conditioning.video.shape[3]),
                        "frames": int(plan.conditioning.video.shape[2]), "downscale": reference.downscale,
                        "temporal": reference.temporal, "control": info.get("control"),
                        "attention_mask": None if reference.mask is None else list(reference.mask.shape)}
    return result
