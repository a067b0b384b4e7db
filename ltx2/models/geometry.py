"""Compression ratios and latent sizes, derived once from the component configs.

diffusers' video VAE derives both ratios as `patch * 2 ** (number of scaling blocks)`, which
counts a spatial-only or temporal-only block in both directions: for LTX-2 it would say 64x/16x
where the truth is 32x/8x, and the pipeline would silently make fewer, smaller frames. We count
by block type instead and pass the result in.
"""

from __future__ import annotations

from collections.abc import Mapping


def video_vae_compression(config: Mapping) -> tuple[int, int]:
    """(spatial, temporal) compression of an LTX-2 video VAE encoder config."""
    scaling = config.get("spatio_temporal_scaling", (True,) * len(config["downsample_type"]))
    if isinstance(scaling, bool):
        scaling = (scaling,) * len(config["downsample_type"])
    spatial = int(config.get("patch_size", 1))
    temporal = int(config.get("patch_size_t", 1))
    for kind, scales in zip(config["downsample_type"], scaling):
        if not scales:
            continue
        if kind in ("spatial", "spatiotemporal"):
            spatial *= 2
        if kind in ("temporal", "spatiotemporal"):
            temporal *= 2
    return spatial, temporal


def latent_video_shape(num_frames: int, height: int, width: int, spatial: int, temporal: int) -> tuple[int, int, int]:
    """(latent frames, latent height, latent width): the first frame is encoded alone (causal VAE)."""
    return (num_frames - 1) // temporal + 1, height // spatial, width // spatial


def audio_latent_frames(num_frames: int, fps: float, sample_rate: int, hop_length: int, compression: int) -> int:
    """Audio latent frames spanning the video's duration (25 per second for LTX-2).

    Computed in the reference's order (duration x latents per second) so that a duration whose exact
    count ends in .5 rounds the same way: 337 frames at 10 fps is 843 latents there, not 842.
    """
    return round(num_frames / fps * (sample_rate / hop_length / compression))
