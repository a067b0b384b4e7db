"""LTX-2.5's diffusion video decoder, fed as ltx-core feeds its own (DiffusionVideoDecoder).

diffusers' `LTX2VideoDiffusionDecoderModel` decodes a latent whose every neighbourhood-attention
stage sees a grid at least as large as its kernel; below that it raises. ltx-core first pads the
latent up to the floor of every stage (time: copies of the last frame; height and width: the edge
replicated on both sides, the odd one after), decodes, and crops the pixels back
(`diffusion_tiling.ensure_min_latent_shape` / `crop_pixels_to_content`). We do the same, so a short
or small clip decodes as it does in the reference instead of failing.

Stage 5 also attends as ltx-pipelines 1.2.0 runs it by default (`DiffVAEMode.CHUNKED_EAGER`, which
every 2.5 pipeline passes to its `VideoDecoder`): each diffusion block's attention runs on four slabs
along the width, each with a halo of kernel//2 columns on both sides, and at the volume's left and
right edges that halo is the edge column repeated (`chunked/attn.py` `_run_w_chunked_residual`).
diffusers attends over the whole width, where NATTEN shifts the window inward at the edges instead,
so every output column within (blocks x kernel//2) patches of an edge differed by up to ~0.7. The
deterministic stages, the context injection (upsample + `context_proj`, deferred there per block;
per-token, so the same numbers) and the MLP are diffusers' own.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoVaeDiffusionNABlock

# ltx-core's `_CHUNKED_W_CHUNKS`: the number of width slabs stage 5's attention runs on in chunked modes.
W_CHUNKS = 4


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


def w_chunked(x: torch.Tensor, attend, chunks: int, halo: int) -> torch.Tensor:
    """What ltx-core's chunked residual adds to `x` (B, T, H, W, C): `attend` on `chunks` width slabs,
    each framed by `halo` columns either side, keeping each slab's own columns. As there: every slab
    reads the input (not a neighbour's result); the left halo comes from the previous slab only (so
    a slab narrower than the halo leaves zeros further left), the volume's edges repeat the edge
    column, and a right halo cut short by the edge repeats the slab's own last column."""
    width = x.shape[3]
    step = -(-width // chunks)
    extent = step + 2 * halo
    out = torch.zeros_like(x)
    for i in range(chunks):
        start, end = i * step, min(width, (i + 1) * step)
        size = end - start
        if size <= 0:
            continue  # adds nothing there either
        buf = x.new_zeros(*x.shape[:3], extent, x.shape[4])
        if i > 0:
            take = min(halo, step)  # the previous slab's width (every slab but the last is `step` wide)
            buf[:, :, :, halo - take: halo] = x[:, :, :, start - take: start]
        buf[:, :, :, halo: halo + size] = x[:, :, :, start:end]
        right = x[:, :, :, end: min(width, end + halo)] if i + 1 < chunks else x[:, :, :, :0]
        buf[:, :, :, halo + size: halo + size + right.shape[3]] = right
        if i == 0:
            buf[:, :, :, :halo] = buf[:, :, :, halo: halo + 1]
        filled = halo + size + right.shape[3]
        buf[:, :, :, filled:] = buf[:, :, :, halo + size - 1: halo + size]
        out[:, :, :, start:end] = attend(buf)[:, :, :, halo: halo + size]
    return out


class WChunkedDiffusionBlock(LTX2VideoVaeDiffusionNABlock):
    """diffusers' stage-5 block with ltx-pipelines' default attention: `w_chunked` over `W_CHUNKS` slabs."""

    def forward(self, hidden_states, latent_context, modulation, block_mask=None):
        scale_msa, shift_msa, _, scale_mlp, shift_mlp, _, _ = [
            modulation[i] + self.scale_shift_table[i].view(1, 1, 1, 1, -1) for i in range(self.num_mod_params)]
        hidden_states = hidden_states + self.context_proj(latent_context)
        masks = {}  # the whole-volume mask does not fit a slab; every slab has one shape, so one mask

        def attend(buf: torch.Tensor) -> torch.Tensor:
            if buf.shape not in masks:  # the class's method: the instance's is `_no_whole_grid_mask`
                masks[buf.shape] = type(self.attn).build_block_mask(self.attn, buf)
            return self.attn(self.norm1(buf) * (1 + scale_msa) + shift_msa, masks[buf.shape])

        hidden_states = hidden_states + w_chunked(hidden_states, attend, W_CHUNKS, self.attn.kernel_size[2] // 2)
        return hidden_states + self.mlp(self.norm2(hidden_states) * (1 + scale_mlp) + shift_mlp)


def _no_whole_grid_mask(hidden_states: torch.Tensor) -> None:
    return None


def as_pipelines_decode(decoder) -> None:
    """Stage 5's blocks attend as ltx-pipelines' default mode does (in place; the weights are untouched)."""
    blocks = decoder.decoder.diff_blocks
    for block in blocks:
        if type(block) is LTX2VideoVaeDiffusionNABlock:
            block.__class__ = WChunkedDiffusionBlock
    if all(isinstance(block, WChunkedDiffusionBlock) for block in blocks):
        # diffusers' stage-5 step builds one mask on the whole grid and hands it to every block; slabs read
        # their own, so that one would be built for nothing (with eager FlexAttention, ~11 bytes per pair of
        # the whole grid's tokens: 0.9 GiB at 64x64 pixels, terabytes at 768x512).
        blocks[0].attn.build_block_mask = _no_whole_grid_mask


def diffusion_decode(decoder, latents: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Raw (denormalised) latents (1, C, F, H, W) -> pixels (1, 3, 8(F-1)+1, 32H, 32W) in [-1, 1]."""
    frames, height, width = latents.shape[2:]
    min_t, min_h, min_w = min_latent_shape(decoder.config)
    x, _ = _pad(latents, 2, min_t, symmetric=False)
    x, top = _pad(x, 3, min_h, symmetric=True)
    x, left = _pad(x, 4, min_w, symmetric=True)
    as_pipelines_decode(decoder)
    weight = next(decoder.parameters())
    pixels = decoder.decode(x.to(weight.device, weight.dtype), generator=generator, return_dict=False)[0]
    spatial = decoder.config.spatial_compression_ratio
    temporal = decoder.config.temporal_compression_ratio
    out_frames = temporal * (frames - 1) + 1
    return pixels[:, :, :out_frames, top * spatial: (top + height) * spatial, left * spatial: (left + width) * spatial]
