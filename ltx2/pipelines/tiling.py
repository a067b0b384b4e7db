"""Video VAE decoding in overlapping tiles, chosen from the device's free memory.

At 1080p x 121 frames the decoder's activations are tens of GB. `plan_for` picks the largest tiles
whose activations fit the budget: the whole video when it fits, else temporal tiles of fewer latent
frames, and spatial tiles on top only when the smallest temporal tile is still too big.

Temporal tiles are ours (`temporal_tiles`, `decode`), laid out as ltx-core lays them: a tile of
latent frames [s, e) decodes to video frames [8s, 8(e-1)] (its first latent frame yields one video
frame, as the video's first does), neighbours share OVERLAP latent frames, and the 9 video frames
they share are cross-faded linearly. diffusers' own temporal tiling (`use_framewise_decoding`)
places every tile after the first one frame late (it drops a tile's last frame where the first is
the one that duplicates its neighbour), so past the first seam its video lags the soundtrack by a
frame and the clip's last frame is lost. Spatial tiles are diffusers' (`use_tiling`: 512-pixel
tiles, 64 pixels blended), whose placement is right.

The activation bytes come from the decoder itself: its decode of a small latent is counted once on
`meta` tensors (ltx2.models.memory_model), and activations grow with the pixels decoded at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import memory, memory_model, parallel

SAFETY = 0.8  # of the free memory: the allocator's fragmentation and library workspaces need the rest
SPATIAL_TILE = 512  # pixels: diffusers' default tile, with a 64-pixel overlap
SPATIAL_STRIDE = 448
OVERLAP = 2  # latent frames neighbouring temporal tiles share: 9 video frames cross-faded
MIN_TILE_FRAMES = OVERLAP + 1  # a tile must reach past its overlap


@dataclass(frozen=True)
class TilePlan:
    """Temporal tiles of `frames` latent frames overlapping by OVERLAP; spatial tiles if `spatial`."""

    frames: int  # latent frames per temporal tile (>= MIN_TILE_FRAMES, or the whole video when shorter)
    spatial: bool
    estimate_bytes: int  # the decoder's activations for one tile, from the meta count

    def __str__(self) -> str:
        return f"{self.frames}-latent-frame tiles{' x 512 px' if self.spatial else ''}, ~{self.estimate_bytes / 1e9:.1f} GB"


def bytes_per_pixel(vae) -> float:
    """Activation bytes per decoded pixel-frame, counted once per VAE on a meta copy of its decoder."""
    cached = getattr(vae, "_ltx2_bytes_per_pixel", None)
    if cached is None:
        with torch.device("meta"):
            copy = type(vae).from_config(vae.config).to(vae.dtype)
        spatial, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
        latent = torch.empty(1, vae.config.latent_channels, 2, 4, 4, device="meta", dtype=vae.dtype)
        peak = memory_model.count(lambda: copy.decoder(latent, None))
        pixels = (1 + temporal) * (4 * spatial) ** 2
        cached = peak / pixels
        vae._ltx2_bytes_per_pixel = cached
    return cached


def estimate(vae, latent_frames: int, latent_height: int, latent_width: int) -> int:
    """Decoder activation bytes for one decode of that many latent frames and that latent size."""
    spatial, temporal = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    pixels = ((latent_frames - 1) * temporal + 1) * latent_height * spatial * latent_width * spatial
    return int(bytes_per_pixel(vae) * pixels)


def plan_for(vae, shape: tuple[int, ...] | torch.Size, budget_bytes: int | None) -> TilePlan | None:
    """None (decode at once) when the whole video fits `budget_bytes`; else the largest tiles that do."""
    _, _, frames, height, width = shape
    if budget_bytes is None or estimate(vae, frames, height, width) <= budget_bytes:
        return None
    spatial_latent = SPATIAL_TILE // vae.spatial_compression_ratio
    for tile_frames in range(frames - 1, MIN_TILE_FRAMES - 1, -1):
        if estimate(vae, tile_frames, height, width) <= budget_bytes:
            return TilePlan(tile_frames, False, estimate(vae, tile_frames, height, width))
    spatial = height > spatial_latent or width > spatial_latent
    smallest = min(frames, MIN_TILE_FRAMES)
    for tile_frames in range(frames, smallest - 1, -1):
        need = estimate(vae, tile_frames, min(height, spatial_latent), min(width, spatial_latent))
        if need <= budget_bytes or tile_frames == smallest:
            return TilePlan(tile_frames, spatial, need)  # the smallest tiles there are, even if over
    raise AssertionError("unreachable: the loop returns at its smallest tile")


def free_bytes(device: torch.device) -> int | None:
    """What a decode may use on `device`: free memory (and the caching allocator's unused blocks) under any
    per-process cap, times SAFETY. None on a CPU: host memory is not planned for."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, total = memory.device_memory(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    if fraction is not None:  # set_per_process_memory_fraction caps the allocator below what the driver reports
        free = min(free, int(fraction(device) * total) - torch.cuda.memory_allocated(device))
    return max(0, int(free * SAFETY))


def temporal_tiles(latent_frames: int, tile_frames: int) -> list[tuple[int, int]]:
    """[start, end) latent-frame ranges of tiles of `tile_frames`, neighbours sharing OVERLAP frames."""
    if latent_frames <= tile_frames:
        return [(0, latent_frames)]
    stride = tile_frames - OVERLAP
    return [(start, min(start + tile_frames, latent_frames)) for start in range(0, latent_frames - OVERLAP, stride)]


def decode(vae, latents: torch.Tensor, plan: TilePlan | None, timestep: torch.Tensor | None = None) -> torch.Tensor:
    """(1, C, F, H, W) latents -> (1, 3, frames, H', W') in [-1, 1], whole or in `plan`'s tiles, every
    tile at the same decode `timestep` (a timestep-conditioned decoder only; default 0)."""
    decode_timestep = timestep
    if decode_timestep is None and vae.config.timestep_conditioning:
        decode_timestep = torch.zeros(1, device=latents.device)
    latents = latents.to(vae.dtype)
    if plan is None:
        return vae.decode(latents, decode_timestep, return_dict=False)[0]
    saved = {name: getattr(vae, name) for name in (
        "use_framewise_decoding", "use_tiling", "tile_sample_min_height", "tile_sample_min_width",
        "tile_sample_stride_height", "tile_sample_stride_width")}
    scale = vae.temporal_compression_ratio
    blend = (OVERLAP - 1) * scale + 1  # video frames two neighbouring tiles both decode
    # The later tile's weight across them: 0 on its first frame (the lone first frame of its first latent),
    # 1 on the earlier tile's last; the two weights sum to 1 on every frame.
    fade = torch.linspace(0.0, 1.0, blend, device=latents.device).view(1, 1, blend, 1, 1)
    out = None
    try:
        vae.use_framewise_decoding = False  # temporal tiles are ours, below
        vae.use_tiling = plan.spatial
        vae.tile_sample_min_height = vae.tile_sample_min_width = SPATIAL_TILE
        vae.tile_sample_stride_height = vae.tile_sample_stride_width = SPATIAL_STRIDE
        frames = (latents.shape[2] - 1) * scale + 1
        spans = temporal_tiles(latents.shape[2], plan.frames)
        # In a rank group (--parallel) the tiles are decoded round robin across the ranks and shared.
        decoded = parallel.decode_tiles(len(spans), lambda i: vae.decode(
            latents[:, :, spans[i][0]:spans[i][1]], decode_timestep, return_dict=False)[0], latents.device, vae.dtype)
        for (start, end), tile in zip(spans, decoded):
            if out is None:
                out = tile.new_empty(*tile.shape[:2], frames, *tile.shape[3:])
            first = start * scale  # tile frames land at [first, first + len): frame 0 is latent `start`'s last
            if start == 0:
                out[:, :, : tile.shape[2]] = tile
            else:
                shared = out[:, :, first : first + blend]
                out[:, :, first : first + blend] = torch.lerp(shared, tile[:, :, :blend], fade.to(out.dtype))
                out[:, :, first + blend : first + tile.shape[2]] = tile[:, :, blend:]
        return out
    finally:
        for name, value in saved.items():
            setattr(vae, name, value)


def tiles(frames: int, plan: TilePlan | None) -> int:
    """How many temporal tiles a plan decodes `frames` latent frames in."""
    return 1 if plan is None else len(temporal_tiles(frames, plan.frames))
