"""LTX-2.5's diffusion video decoder, fed as ltx-core feeds its own (DiffusionVideoDecoder).

diffusers' `LTX2VideoDiffusionDecoderModel` decodes a latent whose every neighbourhood-attention
stage sees a grid at least as large as its kernel; below that it raises. ltx-core first pads the
latent up to the floor of every stage (time: copies of the last frame; height and width: the edge
replicated on both sides, the odd one after), decodes, and crops the pixels back
(`diffusion_tiling.ensure_min_latent_shape` / `crop_pixels_to_content`). We do the same, so a short
or small clip decodes as it does in the reference instead of failing.
"""

from __future__ import annotations

import math

import torch


def min_latent_shape(config) -> tuple[int, int, int]:
    """The smallest (frames, height, width) latent grid every stage of the decoder accepts: at stage i
    the grid is the latent's times the strides of the upsamplers before it, and must be >= its kernel."""
    kernels = [tuple(k) for k in config.decoder_stage_kernels] + [tuple(config.decoder_stage5_kernel)]
    strides = [(1, 1, 1)]
    for stride in config.decoder_upsample_strides:
        strides.append(tuple(a * b for a, b in zip(strides[-1], stride)))
    return tuple(max(1, *(math.ceil(kernel[axis] / stride[axis]) for kernel, stride in zip(kernels, strides)))
                 for axis in range(3))


def _pad(x: torch.Tensor, dim: int, size: int, symmetric: bool) -> tuple[torch.Tensor, int]:
    """`x` grown along `dim` to `size` with edge copies; returns it and how many were put before."""
    need = size - x.shape[dim]
    if need <= 0:
        return x, 0
    before = need // 2 if symmetric else 0
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, x.shape[dim] - 1, 1)
    parts = [first.expand(*[before if d == dim else -1 for d in range(x.ndim)])] if before else []
    parts += [x, last.expand(*[need - before if d == dim else -1 for d in range(x.ndim)])]
    return torch.cat(parts, dim=dim), before


def diffusion_decode(decoder, latents: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Raw (denormalised) latents (1, C, F, H, W) -> pixels (1, 3, 8(F-1)+1, 32H, 32W) in [-1, 1]."""
    frames, height, width = latents.shape[2:]
    min_t, min_h, min_w = min_latent_shape(decoder.config)
    x, _ = _pad(latents, 2, min_t, symmetric=False)
    x, top = _pad(x, 3, min_h, symmetric=True)
    x, left = _pad(x, 4, min_w, symmetric=True)
    weight = next(decoder.parameters())
    pixels = decoder.decode(x.to(weight.device, weight.dtype), generator=generator, return_dict=False)[0]
    spatial = decoder.config.spatial_compression_ratio
    temporal = decoder.config.temporal_compression_ratio
    out_frames = temporal * (frames - 1) + 1
    return pixels[:, :, :out_frames, top * spatial: (top + height) * spatial, left * spatial: (left + width) * spatial]
