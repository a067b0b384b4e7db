"""The tiny-2.3 preset: LTX-2.3's structure (see ltx23.py) at tiny widths, random seeded weights."""

from __future__ import annotations

import torch
from diffusers import LTX2VideoTransformer3DModel
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

from .. import tiny


def _config_of(build) -> dict:
    """The config of a tiny.py component, built on meta: no memory, and the seeded generator untouched."""
    with torch.device("meta"):
        config = build().config
    return {k: v for k, v in config.items() if not k.startswith("_")}


def build_connectors() -> LTX2TextConnectors:
    # tiny.py's connectors, gated, with the projection before them: one per modality, biased, straight to
    # the tiny transformer's widths (video 2 x 16 = 32, audio 2 x 8 = 16).
    return LTX2TextConnectors(**dict(
        _config_of(tiny.build_connectors), video_gated_attn=True, audio_gated_attn=True,
        audio_connector_attention_head_dim=8, per_modality_projections=True,  # ltx-core's FeatureExtractorV2
        video_hidden_dim=32, audio_hidden_dim=16, proj_bias=True))


def build_transformer() -> LTX2VideoTransformer3DModel:
    return LTX2VideoTransformer3DModel(**dict(
        _config_of(tiny.build_transformer), gated_attn=True, audio_gated_attn=True, cross_attn_mod=True,
        audio_cross_attn_mod=True, use_prompt_embeddings=False))  # the projection sits in the connectors (V2)


def build_vocoder() -> LTX2VocoderWithBWE:
    """16 kHz from 100 mel frames a second (160x), then the bandwidth extension to 48 kHz."""
    return LTX2VocoderWithBWE(
        in_channels=2 * tiny.AUDIO_MEL_BINS,
        hidden_channels=64,  # halved at each of the six upsampling stages
        out_channels=2,
        upsample_kernel_sizes=[11, 4, 4, 4, 4, 4],
        upsample_factors=[5, 2, 2, 2, 2, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3]],
        bwe_in_channels=2 * tiny.AUDIO_MEL_BINS,
        bwe_hidden_channels=32,  # halved at each of the five stages
        bwe_upsample_kernel_sizes=[12, 11, 4, 4, 4],
        bwe_upsample_factors=[6, 5, 2, 2, 2],
        bwe_resnet_kernel_sizes=[3],
        bwe_resnet_dilations=[[1, 3]],
        hop_length=80,
        num_mel_channels=tiny.AUDIO_MEL_BINS,
        input_sampling_rate=tiny.AUDIO_SAMPLE_RATE,
        output_sampling_rate=48_000,  # ltx23.VOCODER_RATE (tests hold the two equal)
    )


BUILDERS = {**tiny.BUILDERS, "connectors": build_connectors, "transformer": build_transformer,
            "vocoder": build_vocoder}


def build_components(seed: int = 0) -> dict:
    return tiny.build_components(seed=seed, builders=BUILDERS)


def build_distilled_lora(transformer, seed: int = 0) -> dict[str, torch.Tensor]:
    return tiny.build_distilled_lora(transformer, seed=seed)


# Seeds of the upscalers after tiny.py's separate builders (its x2 upsampler at +len(BUILDERS), the
# distilled LoRA at +1 after it): adding them changes no other part of the preset.
_X1_5, _TEMPORAL = len(tiny.BUILDERS) + 2, len(tiny.BUILDERS) + 3


def build_upsampler_x1_5(seed: int = 0) -> LTX2LatentUpsamplerModel:
    """LTX-2.3's x1.5 spatial upsampler at tiny width: ltx-core's rational resampler (x3 pixel shuffle, then a
    blurred stride-2 downsample), the real 128 latent channels in and out."""
    return tiny.seeded(lambda: LTX2LatentUpsamplerModel(
        in_channels=tiny.LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=True,
        temporal_upsample=False, rational_spatial_scale=1.5, use_rational_resampler=True), seed + _X1_5)


def build_temporal_upsampler(seed: int = 0) -> LTX2LatentUpsamplerModel:
    """LTX-2.3's x2 temporal upsampler at tiny width: F latent frames in, 2F - 1 out."""
    return tiny.seeded(lambda: LTX2LatentUpsamplerModel(
        in_channels=tiny.LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3, spatial_upsample=False,
        temporal_upsample=True), seed + _TEMPORAL)
