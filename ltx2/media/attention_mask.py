"""IC-LoRA's `conditioning_attention_mask`: a mask video read onto the reference video's latent grid (in the sandbox).

ltx-pipelines reads the mask as its ic_lora CLI does (`_load_mask_video`): frames fitted to stage 1's size as a
conditioning video is (`video_preprocess`: cover, centre-crop, x / 127.5 - 1, then cast to bfloat16), the channel
mean, mapped back to [0, 1] and clamped. `ICLoraPipeline` then pools it onto the reference's latent grid
(iclora_utils' `downsample_mask_video_to_latent`): an area resize of each frame to the latent height and width, the
first frame alone (the VAE's causal first latent frame), then each later latent frame the mean of the next
(F - 1) / (f - 1) mask frames, flattened frame-major as the tokens are; that times conditioning_attention_strength
is the per-token weight of the attention between the generated tokens and the reference's.

Here each frame is reduced as it is decoded (grey level, then the area resize), so the child holds one frame at
stage 1's size, not the whole mask. The arithmetic runs in `dtype`, the model's: ltx-pipelines hard-codes bfloat16
for the mask, which on a float32 CPU run reads as float32 (as the parity tool runs it), and on a GPU is bfloat16.
"""

from __future__ import annotations

import numpy as np
import torch

from ..schema import InvalidRequest
from ..video_to_video import MASK_FIELD

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def grey(pixels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(C, ..., H, W) in [-1, 1] -> (1, ..., H, W) in [0, 1]: the channel mean in `dtype`, back from the VAE's
    range, clamped."""
    mask = pixels.to(dtype).mean(dim=0, keepdim=True)
    return ((mask + 1.0) / 2.0).clamp(0.0, 1.0)


def pool_space(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, H, W) -> (N, height, width): the area resize, each of the N frames on its own."""
    return torch.nn.functional.interpolate(mask[:, None], size=(height, width), mode="area")[:, 0]


def frames_fit(frames: int, latent_frames: int) -> bool:
    """Whether `frames` mask frames pool onto `latent_frames`: the first alone, then an equal run for each other."""
    return latent_frames == 1 or (frames > 1 and (frames - 1) % (latent_frames - 1) == 0)


def pool_time(mask: torch.Tensor, latent_frames: int) -> torch.Tensor:
    """(F, h, w) -> (latent_frames, h, w): frame 0 alone, then means of (F - 1) / (latent_frames - 1) frames."""
    if latent_frames == 1 or mask.shape[0] == 1:
        return mask[:1]
    if not frames_fit(mask.shape[0], latent_frames):
        raise ValueError(f"{mask.shape[0]} mask frames do not pool onto {latent_frames} latent frames")
    run = (mask.shape[0] - 1) // (latent_frames - 1)
    rest = mask[1:].reshape(latent_frames - 1, run, *mask.shape[1:]).mean(dim=1)
    return torch.cat([mask[:1], rest])


def to_latent(mask: torch.Tensor, latent: tuple[int, int, int]) -> torch.Tensor:
    """A whole pixel-space mask (1, 1, F, H, W) in [0, 1] -> its (f * h * w,) token weights on the latent grid
    `latent` (f, h, w), in its own dtype: what `decode` gives, flattened (for library callers and the tests)."""
    frames, height, width = latent
    return pool_time(pool_space(mask[0, 0], height, width), frames).flatten()


def decode(data: bytes, mime: str | None, bounds, reference: dict | None) -> np.ndarray:
    """The mask video's (f, h, w) float32 weights on the reference's latent grid, as `reference` (what
    sandbox._reference returns: fps, frames, stage 1's size, latent grid, dtype) says. Up to the reference's
    frames are read, at its fps; a file that is no valid video, or whose frames cannot pool onto the grid, is
    refused naming the field."""
    from .video_in import decode_frames

    if reference is None:
        raise InvalidRequest(MASK_FIELD, f"{MASK_FIELD} weights ic_lora's reference video: send ic_lora and video too")
    dtype = DTYPES.get(reference["dtype"], torch.float32)
    latent_frames, height, width = reference["latent"]

    def reduce(pixels: torch.Tensor) -> torch.Tensor:  # one fitted frame (3, H, W) -> (1, h, w)
        return pool_space(grey(pixels, dtype), height, width)

    frames, _ = decode_frames(data, MASK_FIELD, mime, bounds, reference["fps"], reference["frames"],
                              (tuple(reference["size"]),), reduce=reduce)
    mask = next(iter(frames.values()))[0, 0]  # (F, h, w)
    if not frames_fit(mask.shape[0], latent_frames):
        runs = [1 + k * (latent_frames - 1) for k in range(1, 4) if 1 + k * (latent_frames - 1) <= reference["frames"]]
        raise InvalidRequest(MASK_FIELD, (
            f"{MASK_FIELD} has {mask.shape[0]} frames at {reference['fps']} fps; it needs as many as the reference "
            f"video ({reference['frames']}), or 1 + k x {latent_frames - 1} for a whole k ({', '.join(map(str, runs))}"
            f"{', ...' if runs and runs[-1] < reference['frames'] else ''}): the first frame weights the first latent "
            "frame, and each later latent frame the mean of an equal run of frames"))
    return np.ascontiguousarray(pool_time(mask, latent_frames).to(torch.float32).numpy())


__all__ = ["decode", "frames_fit", "grey", "pool_space", "pool_time", "to_latent"]
