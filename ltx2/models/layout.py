"""The official LTX-2 single-file layout, mapped onto diffusers' components.

One `.safetensors` file (e.g. `ltx-2-19b-distilled-fp8.safetensors`, `ltx-2.3-22b-dev.safetensors`) holds
every LTX-2 component except Gemma, each under its own prefix, with the model configuration as JSON in the file's
metadata under `config`:

    model.diffusion_model.*                              the transformer (ltx-core's LTXModel)
    model.diffusion_model.{video,audio}_embeddings_connector.*   the text connectors
    text_embedding_projection.*                           Gemma features -> caption width (19B); 2.3:
                                                          {video,audio}_aggregate_embed, one per stream
    vae.*                                                 video VAE (encoder, decoder, statistics)
    audio_vae.*                                           audio VAE (encoder, decoder, statistics)
    vocoder.*                                             HiFi-GAN vocoder (19B); LTX-2.3: vocoder.vocoder.*
                                                          BigVGAN v2, vocoder.bwe_generator.* + vocoder.mel_stft.*
                                                          its bandwidth extension to 48 kHz

diffusers names the same tensors differently (e.g. `patchify_proj` is `proj_in`, the VAE's flat
block list is nested into blocks with down/upsamplers). This module says, for every parameter of a
diffusers component, which tensor of the official file it comes from (`file_key`). The loader
inverts that per component, so a file tensor with no owner and an owner with no file tensor are both
found by set difference, with names. Checked-in lists of the real 19B and 2.3 files' tensor names, built
from Lightricks' reference code (tests/data), pin this mapping at full size.
"""

from __future__ import annotations

import re

COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder")

TRANSFORMER_PREFIX = "model.diffusion_model."

# Tensors the official files carry that no diffusers component owns. Each is named with why.
KNOWN_UNUSED = {
    # The video VAE's statistics block also stores a channel index and the mean of the per-channel
    # stds; latents are normalised with mean-of-means and std-of-means only (ltx-core owns only
    # those two, and diffusers' converter drops exactly these two before its strict load).
    "vae.per_channel_statistics.channel": "channel index of the latent statistics",
    "vae.per_channel_statistics.mean-of-stds": "statistic not used for latent normalisation",
}
# ComfyUI's mixed-precision files mark each quantised layer with `<layer>.comfy_quant` (its format
# as JSON bytes). We read the format from the weight's dtype instead, so the marker is not needed.
QUANT_MARKER_SUFFIX = ".comfy_quant"

# Transformer: names that differ between ltx-core (file) and diffusers, as (diffusers, file)
# fragments. Whole dotted segments only, so `proj_in` never matches inside `audio_proj_in`.
_TRANSFORMER_SEGMENTS = {
    "proj_in": "patchify_proj",
    "audio_proj_in": "audio_patchify_proj",
    "time_embed": "adaln_single",
    "audio_time_embed": "audio_adaln_single",
    "av_cross_attn_video_scale_shift": "av_ca_video_scale_shift_adaln_single",
    "av_cross_attn_video_a2v_gate": "av_ca_a2v_gate_adaln_single",
    "av_cross_attn_audio_scale_shift": "av_ca_audio_scale_shift_adaln_single",
    "av_cross_attn_audio_v2a_gate": "av_ca_v2a_gate_adaln_single",
    "video_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_video",
    "audio_a2v_cross_attn_scale_shift_table": "scale_shift_table_a2v_ca_audio",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
    # LTX-2.3's prompt AdaLN (timestep -> scale/shift of the text the prompt cross-attention reads).
    "prompt_adaln": "prompt_adaln_single",
    "audio_prompt_adaln": "audio_prompt_adaln_single",
}

_CONNECTOR_SEGMENTS = {
    "video_connector": "video_embeddings_connector",
    "audio_connector": "audio_embeddings_connector",
    "transformer_blocks": "transformer_1d_blocks",
    "norm_q": "q_norm",
    "norm_k": "k_norm",
}

_VOCODER_SEGMENTS = {
    "upsamplers": "ups",
    "resnets": "resblocks",
    "conv_in": "conv_pre",
    "conv_out": "conv_post",
    "act_out": "act_post",  # LTX-2.3's BigVGAN: its anti-aliased SnakeBeta before conv_post
}
# LTX-2.3's text projection (V2): one Linear per stream where the 19B has one shared one.
_TEXT_PROJECTIONS = {
    "text_proj_in.": "text_embedding_projection.aggregate_embed.",
    "video_text_proj_in.": "text_embedding_projection.video_aggregate_embed.",
    "audio_text_proj_in.": "text_embedding_projection.audio_aggregate_embed.",
}

_STATISTICS = {"latents_mean": "per_channel_statistics.mean-of-means", "latents_std": "per_channel_statistics.std-of-means"}


def _rename_segments(key: str, table: dict[str, str]) -> str:
    return ".".join(table.get(part, part) for part in key.split("."))


def file_key(component: str, key: str, num_down_blocks: int = 4) -> str:
    """The official file's name for parameter `key` of diffusers component `component`."""
    if component == "transformer":
        return TRANSFORMER_PREFIX + _rename_segments(key, _TRANSFORMER_SEGMENTS)
    if component == "connectors":
        for ours, theirs in _TEXT_PROJECTIONS.items():
            if key.startswith(ours):
                return theirs + key.removeprefix(ours)
        return TRANSFORMER_PREFIX + _rename_segments(key, _CONNECTOR_SEGMENTS)
    if component == "vocoder":
        # LTX-2.3's vocoder with bandwidth extension nests its parts as ltx-core's VocoderWithBWE does
        # (vocoder., bwe_generator., mel_stft.), so one prefix serves both files: `vocoder.vocoder.ups.0...`.
        # ltx-core's anti-aliasing down-sampler keeps its filter one module deeper than diffusers'.
        renamed = _rename_segments(key, _VOCODER_SEGMENTS)
        if renamed.endswith(".downsample.filter"):
            renamed = renamed.removesuffix("filter") + "lowpass.filter"
        return "vocoder." + renamed
    if component == "audio_vae":
        return "audio_vae." + _STATISTICS.get(key, key)
    if component == "vae":
        if key in _STATISTICS:
            return "vae." + _STATISTICS[key]
        return "vae." + _video_vae_file_key(key, num_down_blocks)
    raise ValueError(f"unknown component {component!r}")


# The reference video VAE keeps one flat list of blocks per side, where diffusers nests a
# down/upsampler inside each block: encoder [res0, down0, res1, down1, ..., mid] and decoder
# [mid, up0, res0, up1, res1, ...].
_ENC = re.compile(r"^encoder\.down_blocks\.(\d+)\.(.*)$")
_DEC = re.compile(r"^decoder\.up_blocks\.(\d+)\.(.*)$")


def _video_vae_file_key(key: str, num_down_blocks: int) -> str:
    if m := _ENC.match(key):
        block, rest = int(m[1]), m[2]
        if rest.startswith("downsamplers.0."):
            return f"encoder.down_blocks.{2 * block + 1}.{rest.removeprefix('downsamplers.0.')}"
        return f"encoder.down_blocks.{2 * block}.{_res_blocks(rest)}"
    if key.startswith("encoder.mid_block."):
        return f"encoder.down_blocks.{2 * num_down_blocks}." + _res_blocks(key.removeprefix("encoder.mid_block."))
    if m := _DEC.match(key):
        block, rest = int(m[1]), m[2]
        if rest.startswith("upsamplers.0."):
            return f"decoder.up_blocks.{2 * block + 1}.{rest.removeprefix('upsamplers.0.')}"
        return f"decoder.up_blocks.{2 * block + 2}.{_res_blocks(rest)}"
    if key.startswith("decoder.mid_block."):
        return "decoder.up_blocks.0." + _res_blocks(key.removeprefix("decoder.mid_block."))
    if key.startswith("decoder.time_embedder."):
        return "decoder.last_time_embedder." + key.removeprefix("decoder.time_embedder.")
    if key == "decoder.scale_shift_table":
        return "decoder.last_scale_shift_table"
    return key


def _res_blocks(rest: str) -> str:
    return "res_blocks." + rest.removeprefix("resnets.") if rest.startswith("resnets.") else rest


def component_of(file_key_: str) -> str | None:
    """Which component a file tensor belongs to, from its prefix (None: no known prefix)."""
    if file_key_.startswith(TRANSFORMER_PREFIX):
        rest = file_key_.removeprefix(TRANSFORMER_PREFIX)
        if rest.startswith(("video_embeddings_connector.", "audio_embeddings_connector.")):
            return "connectors"
        return "transformer"
    if file_key_.startswith("text_embedding_projection."):
        return "connectors"
    for component in ("vae", "audio_vae", "vocoder"):
        if file_key_.startswith(component + "."):
            return component
    return None
