"""From an official checkpoint's `config` metadata to diffusers component configs.

The official files carry ltx-core's configuration (sub-dicts `transformer`, `vae`, `audio_vae`,
`vocoder`). We read the sizes from it (so a miniature file in the same layout loads the same way as
the 19B one), check the structural choices against the LTX-2 families we know, and refuse anything
else by name rather than building a model that silently computes something different.
"""

from __future__ import annotations

import re
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as it is: the message names the file and the problem."""


LTX2 = "ltx-2"  # LTX-2 (19B): ltx-2-19b-{dev,distilled}[-fp8].safetensors
LTX23 = "ltx-2.3"  # LTX-2.3 (22B): ltx-2.3-22b-dev.safetensors, ltx-2.3-22b-distilled-1.1.safetensors
LTX25 = "ltx-2.5"  # LTX-2.5 (22B): one file per component (diffusion_models/, text_encoders/, vae/, model_patches/)
LTX2_19B = LTX2  # the older name of the same constant

# Structural values every LTX-2 transformer config has, 19B and 22B alike. Sizes (layers, heads,
# widths) are free: miniature checkpoints shrink them.
LTX2_TRANSFORMER_INVARIANTS: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "rope_type": "split",
    "norm_elementwise_affine": False,
    "use_audio_video_cross_attention": True,
    "use_embeddings_connector": True,
    "use_middle_indices_grid": True,
    "share_ff": False,
}
# Present and true only in LTX-2.3 (22B) files; a 2.3 file sets all three.
LTX23_MARKERS = ("apply_gated_attention", "caption_proj_before_connector", "cross_attention_adaln")
# ltx-core's V2 text projection (per-modality Linear with bias, before the connectors): it takes this path
# when any of these keys is present and then requires all of them with exactly these values.
LTX23_TEXT_PROJECTION = {
    "caption_proj_before_connector": True,
    "caption_projection_first_linear": False,
    "caption_proj_input_norm": False,
    "caption_projection_second_linear": False,
}
# Keys newer than 2.3 (LTX-2.5 and keyframe checkpoints) that ltx-core reads with these defaults; 19B and
# 2.3 files leave them out. Another value would build a different model, so it is refused, not ignored.
LATER_KEY_DEFAULTS = {
    "use_prompt_adaln_single": True,
    "ff_bias": True,
    "audio_ff_bias": True,
    "connector_ff_bias": True,
    "use_keyframes_abs_pos_embedding": False,
}


# What makes a transformer config LTX-2.5's. ltx-core: "LTX 2.5 (gemma4) sets ff_bias=false" (the video
# feed-forward has no biases); the files' metadata also declares the Gemma the model was trained with
# (`gemma_source_checkpoint`, required by ltx-core from model_version 2.4 on). `use_prompt_adaln_single` and
# `use_keyframes_abs_pos_embedding` are free in 2.5 (diffusers' converter keeps the prompt AdaLN for the
# published 2.5 checkpoint, ltx2's tiny 2.5 drops it; 2.5.1+ carries the keyframe embedding), so they do not
# mark the family on their own: a 2.3 config with only one of them changed stays refused as 2.3.
LTX25_MARKER = ("ff_bias", False)
LTX25_SINCE_VERSION = (2, 4)
# Keys 2.5 leaves at ltx-core's defaults that diffusers' classes cannot change: refused otherwise.
LTX25_FIXED = {"audio_ff_bias": True, "connector_ff_bias": True}


def parse_model_version(version) -> tuple[int, ...]:
    """ltx-core's `parse_model_version`: dotted integers up to the first non-integer part ("2.5.0-rc1" -> (2, 5))."""
    parts = []
    for part in str(version or "").replace("-", ".").split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def is_ltx25(config: dict, metadata: dict | None = None) -> bool:
    """Whether a config (and the file's other metadata, when given) says LTX-2.5, from content only."""
    transformer = config.get("transformer") if isinstance(config, dict) else None
    if isinstance(transformer, dict) and transformer.get(LTX25_MARKER[0], True) is LTX25_MARKER[1]:
        return True
    metadata = metadata or {}
    return "gemma_source_checkpoint" in metadata or parse_model_version(
        metadata.get("model_version")) >= LTX25_SINCE_VERSION


def _detect_ltx25(config: dict, path: str) -> str:
    """LTX-2.5: 2.3's transformer (gated attention, cross-attention AdaLN, V2 text projection) with a bias-free
    video feed-forward. Its config needs no vae/audio_vae/vocoder sections: those live in their own files."""
    transformer = config.get("transformer")
    if not isinstance(transformer, dict) or not transformer:
        raise CheckpointError(f"{path}: metadata 'config' has no 'transformer' section; not an LTX-2.5 transformer file")
    wrong = [f"transformer.{key} is {transformer.get(key, '<missing>')!r} (LTX-2 19B: {want!r})"
             for key, want in LTX2_TRANSFORMER_INVARIANTS.items() if transformer.get(key, want) != want]
    wrong += [f"transformer.{key} is {transformer[key]!r} (LTX-2.5: {want!r})"
              for key, want in LTX25_FIXED.items() if transformer.get(key, want) != want]
    if wrong:
        raise CheckpointError(f"{path}: config matches no known LTX-2 variant: " + "; ".join(wrong))
    lacks = [m for m in LTX23_MARKERS if not transformer.get(m)]
    if lacks:
        raise CheckpointError(f"{path}: config mixes LTX-2.5 and older parts: config.transformer sets ff_bias false "
                              f"(LTX-2.5) but lacks {', '.join(lacks)} (which LTX-2.3 and 2.5 set)")
    wrong = [f"transformer.{k} is {transformer.get(k, '<missing>')!r} (LTX-2.5: {want!r})"
             for k, want in LTX23_TEXT_PROJECTION.items() if transformer.get(k, "<missing>") != want]
    if wrong:
        raise CheckpointError(f"{path}: config matches no known LTX-2.5 variant: " + "; ".join(wrong))
    return LTX25


def _sections(config: dict, path: str) -> dict:
    transformer = config.get("transformer")
    if not isinstance(transformer, dict) or not transformer:
        raise CheckpointError(f"{path}: metadata 'config' has no 'transformer' section; not an LTX-2 checkpoint")
    mismatches = [
        f"transformer.{key} is {transformer.get(key, '<missing>')!r} (LTX-2 19B: {want!r})"
        for key, want in LTX2_TRANSFORMER_INVARIANTS.items()
        if transformer.get(key, want) != want
    ]
    mismatches += [f"transformer.{key} is {transformer[key]!r} (LTX-2 and LTX-2.3: {want!r})"
                   for key, want in LATER_KEY_DEFAULTS.items() if transformer.get(key, want) != want]
    if mismatches:
        raise CheckpointError(f"{path}: config matches no known LTX-2 variant: " + "; ".join(mismatches))
    for section in ("vae", "audio_vae", "vocoder"):
        if not isinstance(config.get(section), dict):
            raise CheckpointError(f"{path}: metadata 'config' has no '{section}' section")
    return transformer


def detect_family(config: dict, path: str, metadata: dict | None = None) -> str:
    """`LTX2`, `LTX23` or `LTX25`, from the metadata alone (never the file name); anything else is refused in one
    line. `metadata` is the file's other metadata (`model_version`, `gemma_source_checkpoint`), when known."""
    if isinstance(config, dict) and is_ltx25(config, metadata):
        return _detect_ltx25(config, path)
    transformer = _sections(config, path)
    # Everything that makes a file 2.3's, so that a config mixing the two families is named as such.
    sets = [m for m in LTX23_MARKERS if transformer.get(m)]
    extra = [k for k in LTX23_TEXT_PROJECTION if k in transformer and k not in LTX23_MARKERS]
    bwe = "bwe" in config["vocoder"]
    parts_23 = ([f"config.transformer sets {', '.join(sets)}"] if sets else []) + (
        [f"config.transformer has {', '.join(extra)}"] if extra else []) + (
        ["config.vocoder has a bandwidth extension (bwe)"] if bwe else [])
    if not parts_23:
        return LTX2
    lacks = [m for m in LTX23_MARKERS if not transformer.get(m)]
    parts_19 = ([f"config.transformer lacks {', '.join(lacks)}"] if lacks else []) + (
        [] if bwe else ["config.vocoder is a single HiFi-GAN (no bwe)"])
    if parts_19:
        raise CheckpointError(f"{path}: config mixes LTX-2 (19B) and LTX-2.3 (22B) parts: "
                              f"{'; '.join(parts_23)}; but {'; '.join(parts_19)}")
    wrong = [f"transformer.{k} is {transformer.get(k, '<missing>')!r} (LTX-2.3: {want!r})"
             for k, want in LTX23_TEXT_PROJECTION.items() if transformer.get(k, "<missing>") != want]
    if wrong:
        raise CheckpointError(f"{path}: config matches no known LTX-2.3 variant: " + "; ".join(wrong))
    return LTX23


def detect_kind(path: str, override: str = "auto") -> tuple[str, str]:
    """Distilled or dev. The metadata does not say, the official file names do."""
    if override in ("distilled", "dev"):
        return override, "setting"
    name = path.replace("\\", "/").rstrip("/").split("/")[-1].lower()
    if "distilled" in name:
        return "distilled", "file name"
    if re.search(r"(^|[-_.])dev([-_.]|$)", name):
        return "dev", "file name"
    raise CheckpointError(
        f"{path}: cannot tell whether this checkpoint is distilled or dev (its name says neither, as the "
        "official names do); set LTX2_VARIANT=distilled or LTX2_VARIANT=dev"
    )


def _first(value, default):
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return default if value is None else value


def transformer_config(config: dict, vae: dict, audio_vae: dict) -> dict:
    """diffusers `LTX2VideoTransformer3DModel` config from `config.transformer`."""
    t = config["transformer"]
    max_pos = t.get("positional_embedding_max_pos", [20, 2048, 2048])
    return {
        "in_channels": t.get("in_channels", 128),
        "out_channels": t.get("out_channels", 128),
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": t["num_attention_heads"],
        "attention_head_dim": t["attention_head_dim"],
        "cross_attention_dim": t["cross_attention_dim"],
        "vae_scale_factors": (vae["temporal_compression_ratio"], vae["spatial_compression_ratio"],
                              vae["spatial_compression_ratio"]),
        "pos_embed_max_pos": max_pos[0],
        "base_height": max_pos[1],
        "base_width": max_pos[2],
        "audio_in_channels": t.get("audio_in_channels", 128),
        "audio_out_channels": t.get("audio_out_channels", 128),
        "audio_patch_size": 1,
        "audio_patch_size_t": 1,
        "audio_num_attention_heads": t["audio_num_attention_heads"],
        "audio_attention_head_dim": t["audio_attention_head_dim"],
        "audio_cross_attention_dim": t["audio_cross_attention_dim"],
        "audio_scale_factor": 2 ** (len(audio_vae["ch_mult"]) - 1),
        "audio_pos_embed_max_pos": _first(t.get("audio_positional_embedding_max_pos"), 20),
        "audio_sampling_rate": audio_vae["sample_rate"],
        "audio_hop_length": audio_vae["mel_hop_length"],
        "num_layers": t["num_layers"],
        "activation_fn": t.get("activation_fn", "gelu-approximate"),
        # ltx-core's "rms_norm" normalises q and k over all heads at once.
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": False,
        "norm_eps": t.get("norm_eps", 1e-6),
        "caption_channels": t["caption_channels"],
        "attention_bias": True,
        "attention_out_bias": True,
        "rope_theta": t.get("positional_embedding_theta", 10000.0),
        "rope_double_precision": t.get("frequencies_precision") == "float64",
        "causal_offset": 1 if t.get("causal_temporal_positioning", True) else 0,
        "timestep_scale_multiplier": t.get("timestep_scale_multiplier", 1000),
        "cross_attn_timestep_scale_multiplier": t.get("av_ca_timestep_scale_multiplier", 1),
        "rope_type": "split",
        # LTX-2.3. ltx-core's one `apply_gated_attention` gives every attention of both streams (self, prompt,
        # a2v, v2a) per-head gate logits; one `cross_attention_adaln` gives both streams 9 AdaLN values per
        # block instead of 6, a prompt scale/shift table per block and a prompt AdaLN of the timestep
        # (use_prompt_adaln_single, true: checked in detect_family).
        "gated_attn": bool(t.get("apply_gated_attention", False)),
        "audio_gated_attn": bool(t.get("apply_gated_attention", False)),
        "cross_attn_mod": bool(t.get("cross_attention_adaln", False)),
        "audio_cross_attn_mod": bool(t.get("cross_attention_adaln", False)),
        # 19B: the caption projection (PixArt MLP) lives in the transformer. 2.3: the text projection runs
        # before the connectors, which hand the transformer its own widths.
        "use_prompt_embeddings": not t.get("caption_proj_before_connector", False),
        # LTX-2.5 (absent, ltx-core's defaults: the 19B and 2.3 models): a bias-free video feed-forward, the
        # prompt modulation as a static per-block table instead of a prompt AdaLN, the keyframe embedding.
        "ff_bias": bool(t.get("ff_bias", True)),
        "audio_ff_bias": bool(t.get("audio_ff_bias", True)),
        "use_prompt_adaln_single": bool(t.get("use_prompt_adaln_single", True)),
        "use_keyframes_abs_pos_embedding": bool(t.get("use_keyframes_abs_pos_embedding", False)),
    }


def connectors_config(config: dict, projection_shape: tuple[int, ...] | None) -> dict:
    """diffusers `LTX2TextConnectors` config from `config.transformer`'s connector_* fields.

    How many Gemma hidden states are stacked (49 for Gemma 3 12B: 48 layers + embeddings) is not in
    the metadata; the projection's input width says it. `projection_shape` is that of
    `text_projection_key(config)`.
    """
    t = config["transformer"]
    caption = t["caption_channels"]
    v2 = bool(t.get("caption_proj_before_connector", False))
    # V1 (19B) projects to the caption width; V2 (2.3) straight to each stream's width (video shown here).
    width, width_name = ((t["num_attention_heads"] * t["attention_head_dim"], "the video width") if v2
                         else (caption, "caption_channels"))
    if projection_shape is None or len(projection_shape) != 2 or projection_shape[0] != width \
            or projection_shape[1] % caption:
        raise CheckpointError(
            f"{text_projection_key(config)} has shape {projection_shape}; expected "
            f"({width_name}={width}, caption_channels={caption} x number of Gemma hidden states)"
        )
    heads = t.get("connector_num_attention_heads", 30)
    head_dim = t.get("connector_attention_head_dim", 128)
    layers = t.get("connector_num_layers", 2)
    registers = t.get("connector_num_learnable_registers", 128)
    # ltx-core gates the attention of both connectors with one key (2.3 sets it).
    gated = bool(t.get("connector_apply_gated_attention", False))
    return {
        "caption_channels": caption,
        "text_proj_in_factor": projection_shape[1] // caption,
        "video_connector_num_attention_heads": heads,
        "video_connector_attention_head_dim": head_dim,
        "video_connector_num_layers": layers,
        "video_connector_num_learnable_registers": registers,
        "video_gated_attn": gated,
        "audio_connector_num_attention_heads": t.get("audio_connector_num_attention_heads", heads),
        "audio_connector_attention_head_dim": t.get("audio_connector_attention_head_dim", head_dim),
        "audio_connector_num_layers": t.get("audio_connector_num_layers", layers),
        "audio_connector_num_learnable_registers": registers,
        "audio_gated_attn": gated,
        "connector_rope_base_seq_len": _first(t.get("connector_positional_embedding_max_pos"), 4096),
        "rope_theta": t.get("positional_embedding_theta", 10000.0),
        "rope_double_precision": t.get("frequencies_precision") == "float64",
        "causal_temporal_positioning": False,
        "rope_type": "split",
        # V2: per-token RMS norm of the Gemma states, then one Linear (with bias) per stream, each rescaled
        # by sqrt(its width / Gemma's width) as ltx-core's FeatureExtractorV2 does.
        "per_modality_projections": v2,
        "video_hidden_dim": t["num_attention_heads"] * t["attention_head_dim"],
        "audio_hidden_dim": t["audio_num_attention_heads"] * t["audio_attention_head_dim"],
        "proj_bias": v2,
    }


def text_projection_key(config: dict) -> str:
    """The file tensor whose shape says how many Gemma hidden states the text projection stacks."""
    if config["transformer"].get("caption_proj_before_connector", False):
        return "text_embedding_projection.video_aggregate_embed.weight"
    return "text_embedding_projection.aggregate_embed.weight"


# ltx-core describes the video VAE as flat block lists; diffusers as per-level tuples.
_DOWNSAMPLE_TYPES = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal"}
_UPSAMPLE_TYPES = {"compress_space": "spatial", "compress_time": "temporal", "compress_all": "spatiotemporal"}


def _blocks(raw: list, where: str) -> list[tuple[str, dict]]:
    out = []
    for entry in raw:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise CheckpointError(f"config.vae.{where}: entry {entry!r} is not [name, params]")
        name, params = entry
        out.append((name, {"num_layers": params} if isinstance(params, int) else dict(params)))
    return out


def _alternating(blocks: list[tuple[str, dict]], kinds: dict[str, str], where: str) -> tuple[list, list]:
    """Split [res, scale, res, scale, ..., res] into the res blocks and the scaling blocks."""
    res = blocks[0::2]
    scale = blocks[1::2]
    bad = [n for n, _ in res if n != "res_x"] + [n for n, _ in scale if n not in kinds]
    if len(blocks) % 2 == 0 or bad:
        raise CheckpointError(
            f"config.vae.{where} is {[n for n, _ in blocks]}: LTX-2's VAE alternates res_x with "
            f"{'/'.join(kinds)} blocks, starting and ending with res_x (unsupported: {bad or 'an even count'})"
        )
    return res, scale


def video_vae_config(config: dict) -> dict:
    """diffusers `AutoencoderKLLTX2Video` config from ltx-core's `config.vae`."""
    v = config["vae"]
    if v.get("_class_name", "CausalVideoAutoencoder") != "CausalVideoAutoencoder":
        raise CheckpointError(f"config.vae._class_name is {v.get('_class_name')!r}; LTX-2 19B uses CausalVideoAutoencoder")
    latent = v.get("latent_channels", 128)
    patch = v.get("patch_size", 4)
    res, down = _alternating(_blocks(v.get("encoder_blocks", []), "encoder_blocks"), _DOWNSAMPLE_TYPES, "encoder_blocks")
    channels, block_out = latent, []
    for _, params in down:
        channels *= params.get("multiplier", 2)
        block_out.append(channels)
    # ltx-core lists decoder blocks from the output side; diffusers builds from the latent side too
    # but takes its tuples output-side first, so both read in the same order here.
    dres, up = _alternating(_blocks(v.get("decoder_blocks", []), "decoder_blocks"), _UPSAMPLE_TYPES, "decoder_blocks")
    base = v.get("decoder_base_channels", 128)
    factors = [params.get("multiplier", 1) for _, params in up]
    decoder_out, channels = [], base
    for factor in factors:
        channels *= factor
        decoder_out.append(channels)
    spatial = patch * 2 ** sum(_DOWNSAMPLE_TYPES[n] in ("spatial", "spatiotemporal") for n, _ in down)
    temporal = 2 ** sum(_DOWNSAMPLE_TYPES[n] in ("temporal", "spatiotemporal") for n, _ in down)
    return {
        "in_channels": v.get("in_channels", 3),
        "out_channels": v.get("out_channels", 3),
        "latent_channels": latent,
        "block_out_channels": tuple(block_out),
        "down_block_types": ("LTX2VideoDownBlock3D",) * len(down),
        "decoder_block_out_channels": tuple(decoder_out),
        "layers_per_block": tuple(p["num_layers"] for _, p in res),
        "decoder_layers_per_block": tuple(p["num_layers"] for _, p in dres),
        "spatio_temporal_scaling": (True,) * len(down),
        "decoder_spatio_temporal_scaling": (True,) * len(up),
        "decoder_inject_noise": tuple(bool(p.get("inject_noise", False)) for _, p in dres),
        "downsample_type": tuple(_DOWNSAMPLE_TYPES[n] for n, _ in down),
        # The one decoder tuple diffusers does not reverse: latent side first (LTX-2.3's decoder is
        # asymmetric, space/time/all/all from the output side; the 19B one is all/all/all either way).
        "upsample_type": tuple(_UPSAMPLE_TYPES[n] for n, _ in reversed(up)),
        "upsample_residual": tuple(bool(p.get("residual", False)) for _, p in up),
        "upsample_factor": tuple(factors),
        "timestep_conditioning": bool(v.get("timestep_conditioning", False)),
        "patch_size": patch,
        "patch_size_t": 1,
        "resnet_norm_eps": 1e-6,
        "encoder_causal": True,
        "decoder_causal": bool(v.get("causal_decoder", False)),
        # As ltx-core's encoder configurator reads the flat LTX-2 config: the shared
        # `spatial_padding_mode` first, then `encoder_spatial_padding_mode`, then zeros.
        "encoder_spatial_padding_mode": v.get("spatial_padding_mode", v.get("encoder_spatial_padding_mode", "zeros")),
        "decoder_spatial_padding_mode": v.get("spatial_padding_mode", "reflect"),
        "spatial_compression_ratio": spatial,
        "temporal_compression_ratio": temporal,
    }


def audio_vae_config(config: dict) -> dict:
    """diffusers `AutoencoderKLLTX2Audio` config from ltx-core's `config.audio_vae`."""
    a = config["audio_vae"]
    params = a.get("model", {}).get("params", {})
    dd = params.get("ddconfig", {})
    stft = a.get("preprocessing", {}).get("stft", {})
    mel = a.get("preprocessing", {}).get("mel", {})
    mel_bins = dd.get("mel_bins") or mel.get("n_mel_channels") or a.get("variables", {}).get("mel_bins")
    if not mel_bins:
        raise CheckpointError("config.audio_vae gives no mel bin count (ddconfig.mel_bins / preprocessing.mel.n_mel_channels)")
    attn = dd.get("attn_resolutions") or None
    return {
        "base_channels": dd.get("ch", 128),
        "output_channels": dd.get("out_ch", 2),
        "ch_mult": tuple(dd.get("ch_mult", (1, 2, 4))),
        "num_res_blocks": dd.get("num_res_blocks", 2),
        "attn_resolutions": tuple(attn) if attn else None,
        "in_channels": dd.get("in_channels", 2),
        "resolution": dd.get("resolution", 256),
        "latent_channels": dd.get("z_channels", 8),
        "norm_type": dd.get("norm_type", "pixel"),
        "causality_axis": dd.get("causality_axis", "height"),
        "dropout": dd.get("dropout", 0.0),
        "mid_block_add_attention": dd.get("mid_block_add_attention", True),
        "sample_rate": params.get("sampling_rate", 16000),
        "mel_hop_length": stft.get("hop_length", 160),
        "is_causal": stft.get("causal", True),
        "mel_bins": mel_bins,
        "double_z": dd.get("double_z", True),
    }


def vocoder_config(config: dict, mel_bins: int) -> dict:
    """diffusers `LTX2Vocoder` config from ltx-core's flat `config.vocoder` (HiFi-GAN, LTX-2 19B), or
    `LTX2VocoderWithBWE`'s (with `bwe_*` entries) from LTX-2.3's nested one (`vocoder` + `bwe`)."""
    c = config["vocoder"]
    if "bwe" in c:
        return _bwe_vocoder_config(c, mel_bins)
    if c.get("resblock", "1") != "1" or not c.get("stereo", True):
        raise CheckpointError(f"config.vocoder is not LTX-2 19B's stereo HiFi-GAN (resblock {c.get('resblock')!r})")
    return {
        "in_channels": 2 * mel_bins,  # stereo mel spectrogram, channels stacked
        **_generator_shape(c),
        "act_fn": "leaky_relu",
        "leaky_relu_negative_slope": 0.1,
        "antialias": False,
        "final_act_fn": "tanh" if c.get("use_tanh_at_final", True) else None,
        "final_bias": bool(c.get("use_bias_at_final", True)),
        "output_sampling_rate": c.get("output_sampling_rate", 24000),
    }


def _generator_shape(c: dict) -> dict:
    """An ltx-core vocoder generator's sizes (HiFi-GAN and BigVGAN v2 alike), as diffusers' `LTX2Vocoder` args."""
    return {
        "hidden_channels": c.get("upsample_initial_channel", 1024),
        "out_channels": 2,
        "upsample_kernel_sizes": list(c.get("upsample_kernel_sizes", [16, 15, 8, 4, 4])),
        "upsample_factors": list(c.get("upsample_rates", [6, 5, 2, 2, 2])),
        "resnet_kernel_sizes": list(c.get("resblock_kernel_sizes", [3, 7, 11])),
        "resnet_dilations": [list(d) for d in c.get("resblock_dilation_sizes", [[1, 3, 5]] * 3)],
    }


def _amp_generator(c: dict, where: str, final: str | None) -> dict:
    """One BigVGAN v2 generator (ltx-core `Vocoder` with resblock AMP1), as diffusers' `LTX2Vocoder` args."""
    if not isinstance(c, dict) or (c.get("resblock"), c.get("stereo", True), c.get("activation")) != ("AMP1", True,
                                                                                                       "snakebeta"):
        raise CheckpointError(f"config.vocoder.{where} is not LTX-2.3's stereo BigVGAN v2 (resblock AMP1, snakebeta)")
    return {
        **_generator_shape(c),
        "act_fn": "snakebeta",
        "leaky_relu_negative_slope": 0.1,
        # ltx-core's Activation1d: x2 up, SnakeBeta, x2 down, 12-tap Kaiser-sinc filters either way.
        "antialias": True,
        "antialias_ratio": 2,
        "antialias_kernel_size": 12,
        "final_act_fn": final,
        "final_bias": bool(c.get("use_bias_at_final", True)),
    }


def _bwe_vocoder_config(c: dict, mel_bins: int) -> dict:
    """LTX-2.3: a BigVGAN v2 vocoder at the BWE's input rate, then a bandwidth extender (a second generator
    fed the log-mel of that waveform, added to a sinc-resampled copy) up to the output rate."""
    bwe = c["bwe"]
    # ltx-core's last step: tanh or a clamp to [-1, 1] (use_tanh_at_final false) for the vocoder; none at
    # all for the BWE generator (its configurator forces apply_final_activation off), whose residual is
    # added to the resampled waveform and the sum clamped.
    main = _amp_generator(c.get("vocoder"), "vocoder", "tanh" if c.get("vocoder", {}).get("use_tanh_at_final", True)
                          else "clamp")
    ext = _amp_generator(bwe, "bwe", None)
    need = ("input_sampling_rate", "output_sampling_rate", "hop_length", "n_fft", "num_mels")
    if missing := [k for k in need if k not in bwe]:
        raise CheckpointError(f"config.vocoder.bwe lacks {', '.join(missing)}")
    if bwe["output_sampling_rate"] % bwe["input_sampling_rate"]:
        raise CheckpointError(f"config.vocoder.bwe: {bwe['output_sampling_rate']} Hz is not a multiple of "
                              f"{bwe['input_sampling_rate']} Hz")
    return {
        "in_channels": 2 * mel_bins,  # stereo mel spectrogram, channels stacked
        **main,
        "bwe_in_channels": 2 * bwe["num_mels"],  # the stereo log-mel of the vocoder's own output
        **{f"bwe_{k}": v for k, v in ext.items()},
        # ltx-core's causal STFT uses n_fft as its window length too (its `win_size` is not read).
        "filter_length": bwe["n_fft"],
        "hop_length": bwe["hop_length"],
        "window_length": bwe["n_fft"],
        "num_mel_channels": bwe["num_mels"],
        "input_sampling_rate": bwe["input_sampling_rate"],
        "output_sampling_rate": bwe["output_sampling_rate"],
    }
