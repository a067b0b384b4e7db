"""Miniature LTX-2 checkpoints in the official single-file layout, for loader tests.

`write_checkpoint` writes components the way Lightricks' files are written: one safetensors file,
tensors under the official names and prefixes, ltx-core's `config` JSON in the metadata, FP8 linear
weights as float8_e4m3fn with float32 `weight_scale` / `input_scale` siblings, and the statistics
tensors the real files carry that no component uses.

Which tensor goes under which name does not come from our own mapping (`ltx2.models.layout.file_key`):
a file written by it would round-trip any mistake in it, such as two same-shaped tensors swapped. The set
of names is file_key's (tests/test_layout.py pins that set, with shapes, against the real 19B file's), but
each name gets its tensor through `reference_key`: diffusers' own single-file converters for the
transformer and both VAEs, and for the connectors and the vocoder the module names of ltx-core and
diffusers, written out below.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from ltx2.models import configs, layout, loading, safetensors_io
from ltx2.models.fp8 import quantize_per_tensor
from ltx2.models.tiny import _randomize_zero_init

REAL_CONFIG = json.loads((Path(__file__).parent / "data" / "ltx2_19b_layout.json").read_text())["config"]

# ltx-core's configuration, at miniature sizes consistent with the tiny Gemma (hidden 32, 2 layers).
MINI_CONFIG: dict = {
    # The real 19B file's transformer config with miniature sizes: every structural key as it is.
    "transformer": {
        **REAL_CONFIG["transformer"],
        "num_layers": 2,
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "cross_attention_dim": 32,
        "audio_num_attention_heads": 2,
        "audio_attention_head_dim": 8,
        "audio_cross_attention_dim": 16,
        "audio_in_channels": 32,  # 2 latent channels x 16 latent mel bins (the real file: 8 x 16)
        "audio_out_channels": 32,
        "in_channels": 16,
        "out_channels": 16,
        "caption_channels": 32,
        "connector_num_attention_heads": 2,
        "connector_attention_head_dim": 16,
        "connector_num_layers": 1,
    },
    "vae": {
        "_class_name": "CausalVideoAutoencoder",
        "dims": 3,
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 16,
        "patch_size": 4,
        "norm_layer": "pixel_norm",
        "latent_log_var": "uniform",
        "causal_decoder": False,
        "timestep_conditioning": False,
        "spatial_padding_mode": "reflect",
        "decoder_base_channels": 4,
        "encoder_blocks": [
            ["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 1}],
            ["res_x", {"num_layers": 1}],
        ],
        "decoder_blocks": [
            ["res_x", {"num_layers": 1, "inject_noise": False}], ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1, "inject_noise": False}], ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1, "inject_noise": False}], ["compress_all", {"residual": True, "multiplier": 2}],
            ["res_x", {"num_layers": 1, "inject_noise": False}],
        ],
    },
    "audio_vae": {
        "model": {"params": {
            "sampling_rate": 16000,
            "ddconfig": {
                "ch": 32, "out_ch": 2, "ch_mult": [1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [],
                "resolution": 256, "z_channels": 2, "norm_type": "pixel", "causality_axis": "height",
                "dropout": 0.0, "mid_block_add_attention": False, "in_channels": 2, "double_z": True,
                "mel_bins": 64,
            },
        }},
        "preprocessing": {"stft": {"hop_length": 160, "filter_length": 1024, "causal": True},
                          "mel": {"n_mel_channels": 64}},
    },
    "vocoder": {
        "resblock": "1", "stereo": True, "upsample_initial_channel": 32,
        "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
        "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]], "output_sampling_rate": 24000,
    },
}
GEMMA_LAYERS = 2  # the tiny Gemma: its 2 layers + embeddings = 3 stacked hidden states

REAL_CONFIG_23 = json.loads((Path(__file__).parent / "data" / "ltx23_22b_layout.json").read_text())["config"]
_AMP = {"resblock": "AMP1", "stereo": True, "activation": "snakebeta", "use_tanh_at_final": False,
        "use_bias_at_final": False, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]]}
# LTX-2.3 (22B) at miniature sizes: the real 2.3 file's transformer config (gated attention, cross-attention
# AdaLN, V2 text projection, gated connectors) with small widths; an asymmetric VAE decoder like 2.3's
# (space, time, all x1, all x2 from the output side); the BigVGAN v2 + bandwidth-extension vocoder with the
# real rates (16 kHz, hop 160 = 5 x 2^5; BWE to 48 kHz, hop 80 x 3 = 6 x 5 x 2^3) and narrow channels.
# ltx-core builds both generators with 128 input channels, so the mel bins stay 64.
MINI_CONFIG_23: dict = {
    "transformer": {
        **REAL_CONFIG_23["transformer"],
        **{k: MINI_CONFIG["transformer"][k] for k in (
            "num_layers", "num_attention_heads", "attention_head_dim", "cross_attention_dim",
            "audio_num_attention_heads", "audio_attention_head_dim", "audio_cross_attention_dim",
            "audio_in_channels", "audio_out_channels", "in_channels", "out_channels", "caption_channels",
            "connector_num_attention_heads", "connector_attention_head_dim", "connector_num_layers")},
        # The connectors hand each stream its own width (video 2 x 16, audio 2 x 8).
        "audio_connector_num_attention_heads": 2,
        "audio_connector_attention_head_dim": 8,
    },
    "vae": {
        **MINI_CONFIG["vae"],
        "spatial_padding_mode": "zeros",
        "encoder_blocks": [
            ["res_x", {"num_layers": 1}], ["compress_space_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_time_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_all_res", {"multiplier": 1}],
            ["res_x", {"num_layers": 1}],
        ],
        "decoder_blocks": [
            ["res_x", {"num_layers": 1}], ["compress_space", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_time", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 1}],
            ["res_x", {"num_layers": 1}], ["compress_all", {"multiplier": 2}],
            ["res_x", {"num_layers": 1}],
        ],
    },
    "audio_vae": MINI_CONFIG["audio_vae"],
    "vocoder": {
        "vocoder": {**_AMP, "upsample_initial_channel": 64, "upsample_rates": [5, 2, 2, 2, 2, 2],
                    "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4]},
        "bwe": {**_AMP, "upsample_initial_channel": 32, "upsample_rates": [6, 5, 2, 2, 2],
                "upsample_kernel_sizes": [12, 11, 4, 4, 4], "apply_final_activation": False,
                "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 128,
                "win_size": 128, "num_mels": 64},
    },
}
MINI_CONFIGS = {"ltx-2": MINI_CONFIG, "ltx-2.3": MINI_CONFIG_23}

# Linears the FP8 files store in float8 (attention projections and feed-forwards of every block).
FP8_LAYER = re.compile(
    r"^transformer_blocks\.\d+\.((audio_)?attn[12]|audio_to_video_attn|video_to_audio_attn)\.(to_q|to_k|to_v|to_out\.0)$"
    r"|^transformer_blocks\.\d+\.(audio_)?ff\.net\.(0\.proj|2)$"
)


def header_for(config: dict) -> safetensors_io.Header:
    """A header with just enough for `component_configs`: the metadata and the projection's shape."""
    t = config["transformer"]
    caption = t["caption_channels"]
    # 19B: one projection to the caption width; 2.3: one per stream, the video one to the video width.
    rows = t["num_attention_heads"] * t["attention_head_dim"] if t.get("caption_proj_before_connector") else caption
    info = safetensors_io.TensorInfo("BF16", (rows, caption * (GEMMA_LAYERS + 1)), 0, 0)
    return safetensors_io.Header("<miniature>", {configs.text_projection_key(config): info},
                                 {"config": json.dumps(config)})


def build_components(config: dict | None = None, seed: int = 0, family: str = "ltx-2") -> dict[str, torch.nn.Module]:
    """Random, seeded components with the configuration's sizes (or `family`'s miniature one), on the CPU
    in float32."""
    config = copy.deepcopy(config or MINI_CONFIGS[family])
    cfgs = loading.component_configs(header_for(config))
    modules = {}
    for offset, (name, cfg) in enumerate(cfgs.items()):
        torch.manual_seed(seed + offset)
        module = loading.component_class(name, cfg).from_config(cfg)
        if name == "vae":
            module.use_framewise_encoding = module.use_framewise_decoding = False
        _randomize_zero_init(module, seed + offset)
        if hasattr(module, "mel_stft"):  # LTX-2.3's BWE: its STFT and mel bases come from the file (zeros here)
            gen = torch.Generator().manual_seed(seed + offset)
            with torch.no_grad():
                for buf in (module.mel_stft.mel_basis, module.mel_stft.stft_fn.forward_basis,
                            module.mel_stft.stft_fn.inverse_basis):
                    buf.copy_(torch.rand(buf.shape, generator=gen) * 0.1)
        with torch.no_grad():  # statistics that are not the identity, so a dropped one shows
            for key in ("latents_mean", "latents_std"):
                if hasattr(module, key):
                    buf = getattr(module, key)
                    buf.copy_(torch.rand(buf.shape) * 0.5 + (0.75 if key == "latents_std" else -0.25))
        modules[name] = module.eval().requires_grad_(False)
    return modules


def round_to(modules: dict[str, torch.nn.Module], dtype: torch.dtype) -> None:
    """Round every floating tensor through `dtype`, in place: what a file in that dtype holds."""
    with torch.no_grad():
        for module in modules.values():
            # state_dict: parameters and persistent buffers, not what is computed at build time and never
            # stored (LTX-2.3's BWE resampler filter), which a loaded model computes in full precision too.
            for tensor in module.state_dict(keep_vars=True).values():
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(dtype).to(tensor.dtype))


# Official (ltx-core) name fragments -> diffusers', for the two components diffusers ships no single-file
# converter for. ltx-core: Embeddings1DConnector.transformer_1d_blocks[i].attn1.{q,k}_norm, the feature
# extractor's aggregate_embed; the vocoder's conv_pre, ups, resblocks, conv_post.
_CONNECTOR_NAMES = (("model.diffusion_model.", ""), ("text_embedding_projection.aggregate_embed.", "text_proj_in."),
                    # LTX-2.3: ltx-core's FeatureExtractorV2.{video,audio}_aggregate_embed
                    ("text_embedding_projection.video_aggregate_embed.", "video_text_proj_in."),
                    ("text_embedding_projection.audio_aggregate_embed.", "audio_text_proj_in."),
                    ("video_embeddings_connector.", "video_connector."),
                    ("audio_embeddings_connector.", "audio_connector."),
                    (".transformer_1d_blocks.", ".transformer_blocks."), (".q_norm.", ".norm_q."),
                    (".k_norm.", ".norm_k."))
_VOCODER_NAMES = (("vocoder.", ""), ("ups.", "upsamplers."), ("resblocks.", "resnets."), ("conv_pre.", "conv_in."),
                  ("conv_post.", "conv_out."),
                  # LTX-2.3's BigVGAN v2 (ltx-core Vocoder with AMP blocks; VocoderWithBWE nests it as vocoder.*
                  # beside bwe_generator.* and mel_stft.*, as diffusers' LTX2VocoderWithBWE does): act_post is
                  # diffusers' act_out, and ltx-core's DownSample1d keeps its filter in a `lowpass` child.
                  ("act_post.", "act_out."), ("downsample.lowpass.", "downsample."))
# LTX-2.3's prompt AdaLN, which diffusers' single-file transformer converter (written for 2.0) passes through
# unrenamed: ltx-core's LTXModel.{audio_,}prompt_adaln_single is diffusers' {audio_,}prompt_adaln.
_TRANSFORMER_23_NAMES = (("prompt_adaln_single.", "prompt_adaln."), ("audio_prompt_adaln_single.", "audio_prompt_adaln."))
# LTX-2.3's decoder has a fourth upsampling level, which the installed (2.0) VAE converter leaves unrenamed;
# diffusers' 2.3 conversion script maps ltx-core's flat up_blocks 7 and 8 to level 3's upsampler and resnets.
_VAE_23_NAMES = (("decoder.up_blocks.7.", "decoder.up_blocks.3.upsamplers.0."), ("decoder.up_blocks.8.", "decoder.up_blocks.3."))


def reference_key(component: str, official: str) -> str:
    """The diffusers parameter an official tensor name belongs to, by a converter that is not ours."""
    from diffusers.loaders import single_file_utils as sfu

    converters = {"transformer": sfu.convert_ltx2_transformer_to_diffusers, "vae": sfu.convert_ltx2_vae_to_diffusers,
                  "audio_vae": sfu.convert_ltx2_audio_vae_to_diffusers}
    if component in converters:
        (key,) = converters[component]({official: None})
        for before, after in {"transformer": _TRANSFORMER_23_NAMES, "vae": _VAE_23_NAMES}.get(component, ()):
            key = after + key[len(before):] if key.startswith(before) else key
        return key
    key = official
    for before, after in _CONNECTOR_NAMES if component == "connectors" else _VOCODER_NAMES:
        key = after + key[len(before):] if key.startswith(before) else key.replace(before, after)
    return key


def official_names(name: str, module: torch.nn.Module, num_down: int) -> dict[str, str]:
    """diffusers parameter -> the official name the file stores it under (see the module docstring)."""
    names = {layout.file_key(name, key, num_down) for key in module.state_dict()}
    owner = {reference_key(name, official): official for official in names}
    unowned = sorted(set(module.state_dict()) - set(owner))
    if unowned:
        raise AssertionError(f"{name}: layout.file_key names no tensor that the reference naming gives to "
                             f"{unowned[:5]} ({len(unowned)} in all)")
    return owner


def official_tensors(modules: dict[str, torch.nn.Module], dtype: torch.dtype = torch.bfloat16,
                     fp8: bool = False, input_scales: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor under its official name, as the official files store it."""
    num_down = len(modules["vae"].config.block_out_channels)
    out: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        names = official_names(name, module, num_down)
        for key, tensor in module.state_dict().items():
            tensor = tensor.detach()
            official = names[key]
            if fp8 and name == "transformer" and key.endswith(".weight") and FP8_LAYER.match(key.removesuffix(".weight")):
                weight, scale = quantize_per_tensor(tensor)
                base = official.removesuffix(".weight")  # the official files' `<layer>.weight_scale` siblings
                out[official] = weight
                out[base + ".weight_scale"] = scale
                if input_scales:
                    out[base + ".input_scale"] = torch.tensor(0.05)
                continue
            out[official] = tensor.to(dtype).contiguous()
    mean = out["vae.per_channel_statistics.mean-of-means"]
    out["vae.per_channel_statistics.channel"] = torch.arange(mean.numel(), dtype=torch.int64)
    out["vae.per_channel_statistics.mean-of-stds"] = torch.ones_like(mean)
    return out


def write_checkpoint(path, modules: dict[str, torch.nn.Module], config: dict | None = None,
                     dtype: torch.dtype = torch.bfloat16, fp8: bool = False,
                     tensors: dict[str, torch.Tensor] | None = None, family: str = "ltx-2") -> dict[str, torch.Tensor]:
    """Write an official-layout file (with `family`'s miniature config unless `config` is given); returns
    the tensors written (tests edit and rewrite them)."""
    tensors = official_tensors(modules, dtype=dtype, fp8=fp8) if tensors is None else tensors
    save_file(tensors, str(path), metadata={"config": json.dumps(config or MINI_CONFIGS[family])})
    return tensors


# The x2 spatial latent upsampler (ltx-2-spatial-upscaler-x2-1.0.safetensors), at a tiny width.
UPSAMPLER_CONFIG = {"_class_name": "LatentUpsampler", "in_channels": 128, "mid_channels": 32,
                    "num_blocks_per_stage": 1, "dims": 3, "spatial_upsample": True, "temporal_upsample": False,
                    "spatial_scale": 2.0, "rational_resampler": False}


def upsampler_shapes(config: dict = UPSAMPLER_CONFIG) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of ltx-core's `LatentUpsampler` (spatial x2, 3-D convolutions, no
    rational resampler), written out from its module definition rather than taken from diffusers."""
    c, m = config["in_channels"], config["mid_channels"]
    conv3 = lambda o, i: {"weight": (o, i, 3, 3, 3), "bias": (o,)}  # noqa: E731
    norm = {"weight": (m,), "bias": (m,)}
    parts: dict[str, dict] = {"initial_conv": conv3(m, c), "initial_norm": norm}
    for stage in ("res_blocks", "post_upsample_res_blocks"):
        for i in range(config["num_blocks_per_stage"]):
            parts.update({f"{stage}.{i}.conv1": conv3(m, m), f"{stage}.{i}.norm1": norm,
                          f"{stage}.{i}.conv2": conv3(m, m), f"{stage}.{i}.norm2": norm})
    parts["upsampler.0"] = {"weight": (4 * m, m, 3, 3), "bias": (4 * m,)}  # Conv2d, then PixelShuffle(2)
    parts["final_conv"] = conv3(c, m)
    return {f"{module}.{name}": shape for module, tensors in parts.items() for name, shape in tensors.items()}


def write_upsampler(path, config: dict = UPSAMPLER_CONFIG, seed: int = 0, dtype: torch.dtype = torch.bfloat16,
                    tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """An upsampler file in the official layout; returns the tensors written (tests edit and rewrite them)."""
    if tensors is None:
        gen = torch.Generator().manual_seed(seed)
        tensors = {name: (torch.randn(shape, generator=gen) * 0.05).to(dtype)
                   for name, shape in upsampler_shapes(config).items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(config)})
    return tensors


# --- LTX-2.5: one file per component, in the official layout ------------------------------------------------------
# Which tensor goes under which name comes from Lightricks' and diffusers' code, written out here, not from
# ltx2.models.split: the transformer, connectors, VAEs and vocoder by `official_names` above; Gemma 4 by ltx-core's
# text-encoder packer (gemma_assets.build_text_encoder_tensors_from_gemma_root, ComfyUI-flat names); the diffusion
# decoder by diffusers' convert_ltx2_to_diffusers (its 2.5 rename dict, fused qkv, static gates), inverted; the
# duration head in torch's MultiheadAttention layout, as ltx-core's DurationHead stores it.

GEMMA_VERSION = "gemma4-12b-ltx-v1"
MINI_CONFIG_25: dict = copy.deepcopy(MINI_CONFIG_23)
# 2.5's transformer switches (ltx-core's LTXModelConfigurator keys) on 2.3's miniature.
MINI_CONFIG_25["transformer"].update(ff_bias=False, use_prompt_adaln_single=False, use_keyframes_abs_pos_embedding=True)
LTX25_FILES = {  # ltx2.models.families.ltx25 FAMILY.files, the miniature's names for the same parts
    "transformer": "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
    "text_encoder": "text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors",
    "diffusion_vae": "vae/ltx-2.5-video-vae-bf16.safetensors",
    "conv_vae": "vae/ltx-2.5-video-vae-conv-bf16.safetensors",
    "audio_vae": "vae/ltx-2.5-audio-vae-bf16.safetensors",
    "duration_head": "model_patches/ltx-2.5-duration-head-bf16.safetensors",
}
# ltx-core's CausalDiffusionVAE config (nested encoder / decoder), at miniature sizes.
# ltx-core builds it only with a kernel per stage channel (the fifth unused) and a head of at least 16 (its RoPE
# splits the head over time, height and width in even parts).
MINI_DIFFUSION_DECODER = {"in_channels": 16, "out_channels": 3, "patch_size": 4, "head_dim": 16,
                          "stage_channels": [32, 16, 16, 16, 16], "stage_depths": [1, 1, 1, 1, 1],
                          "stage_kernels": [[3, 3, 3]] * 5, "stage5_kernel": [3, 3, 3],
                          "upsamples": [[[1, 2, 2], 2], [[2, 1, 1], 1], [[2, 2, 2], 1], [[2, 2, 2], 1]],
                          "t_emb_dim": 16, "default_num_inference_steps": 1, "timestep_scale_multiplier": 1000.0}


def diffusion_vae_config_25() -> dict:
    v = MINI_CONFIG_25["vae"]
    return {"_class_name": "CausalDiffusionVAE", "model_output_type": "x0", "latent_channels": v["latent_channels"],
            "encoder": {"dims": 3, "in_channels": 3, "out_channels": v["latent_channels"], "patch_size": 4,
                        "norm_layer": "pixel_norm", "latent_log_var": "uniform", "blocks": v["encoder_blocks"],
                        "spatial_padding_mode": v["spatial_padding_mode"]},
            "decoder": dict(MINI_DIFFUSION_DECODER)}


def build_components_25(seed: int = 0, vocab_size: int | None = None) -> dict[str, torch.nn.Module]:
    """The miniature 2.5's modules: the pipeline components (float32, random, seeded), Gemma 4, the diffusion
    decoder and the duration head."""
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoDiffusionDecoderModel
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    from ltx2.models import split, tiny
    from ltx2.models.families import tiny25

    modules = build_components(MINI_CONFIG_25, seed=seed)
    torch.manual_seed(seed + 10)
    text_encoder = tiny25.build_text_encoder(vocab_size or len(tiny.build_tokenizer()))
    _randomize_zero_init(text_encoder, seed + 10)
    torch.manual_seed(seed + 11)
    decoder = LTX2VideoDiffusionDecoderModel.from_config(
        split.diffusion_decoder_config(diffusion_vae_config_25(), "<miniature>"))
    _randomize_zero_init(decoder, seed + 11)
    with torch.no_grad():
        decoder.latents_mean.copy_(torch.rand(decoder.latents_mean.shape) * 0.5 - 0.25)
        decoder.latents_std.copy_(torch.rand(decoder.latents_std.shape) * 0.5 + 0.75)
    torch.manual_seed(seed + 12)
    t = MINI_CONFIG_25["transformer"]
    head = LTX2DurationHead(video_cross_attention_dim=t["num_attention_heads"] * t["attention_head_dim"],
                            audio_cross_attention_dim=t["audio_num_attention_heads"] * t["audio_attention_head_dim"],
                            pooler_hidden_dim=16, num_queries=1, num_pooler_heads=2, mlp_hidden_dim=16)
    _randomize_zero_init(head, seed + 12)
    modules.update(text_encoder=text_encoder.eval().requires_grad_(False),
                   diffusion_decoder=decoder.eval().requires_grad_(False), duration_head=head.eval().requires_grad_(False))
    return modules


def _gemma_checkpoint_key(key: str) -> str:
    """transformers' Gemma 4 unified module name -> its Hugging Face checkpoint name (the vision embedder and the
    vision projection are saved under older names: ltx-core's HF key ops map them back)."""
    projection = "model.embed_vision.multimodal_embedder.embedding_projection."
    if key.startswith(projection):
        return "model.embed_vision.embedding_projection." + key.removeprefix(projection)
    if key.startswith("model.embed_vision."):
        return "model.vision_embedder." + key.removeprefix("model.embed_vision.")
    return key


def _comfy_flat(key: str) -> str:
    """ltx-core's `_flatten_gemma4_unified_keys_for_comfy`, verbatim in effect (its packer's default)."""
    if key.startswith("model.language_model."):
        return "model." + key.removeprefix("model.language_model.")
    if key.startswith("model.vision_embedder."):
        return "vision_model." + key.removeprefix("model.vision_embedder.")
    if key.startswith("model.embed_vision."):
        return "multi_modal_projector." + key.removeprefix("model.embed_vision.")
    if key.startswith("model.embed_audio."):
        return "audio_projector." + key.removeprefix("model.embed_audio.")
    return key


_DIFF_NAMES = (("t_embedder.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
               ("t_embedder.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
               (".attn.to_out.0.", ".attn.proj."), (".attn.norm_q.", ".attn.q_norm."), (".attn.norm_k.", ".attn.k_norm."))


def diffusion_decoder_tensors(decoder, dtype=torch.bfloat16, gates: bool = False) -> dict[str, torch.Tensor]:
    """The diffusion decoder under ltx-core's names: fused qkv, `proj`, `q_norm`, `t_embedder.mlp`. With `gates`,
    a distilled file's static gates (powers of two, so W / g is exact) beside the linears they scale."""
    sd = {k: v.detach() for k, v in decoder.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    gate_values: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key in ("latents_mean", "latents_std"):
            out["per_channel_statistics." + ("mean-of-means" if key == "latents_mean" else "std-of-means")] = value
            continue
        name = key.removeprefix("decoder.")
        if ".attn.to_k." in name or ".attn.to_v." in name:
            continue
        if ".attn.to_q." in name:
            leaf = name.rsplit(".", 1)[1]
            base = name.split(".attn.to_q.")[0]
            value = torch.cat([sd[f"decoder.{base}.attn.to_{p}.{leaf}"] for p in "qkv"])
            name = f"{base}.attn.qkv.{leaf}"
        for ours, theirs in _DIFF_NAMES:
            name = name.replace(ours, theirs)
        if gates:
            for leaf, suffix in ((".attn.proj.weight", "gate_msa"), (".attn.proj.bias", "gate_msa"),
                                 (".mlp.w_down.weight", "gate_mlp"), (".context_proj.weight", "gate_ctx"),
                                 (".context_proj.bias", "gate_ctx")):
                if name.endswith(leaf):
                    gate_key = f"{name.removesuffix(leaf)}.{suffix}"
                    if gate_key not in gate_values:
                        gen = torch.Generator().manual_seed(len(gate_values))
                        gate_values[gate_key] = 2.0 ** torch.randint(-1, 2, (value.shape[0],), generator=gen).float()
                    g = gate_values[gate_key]
                    value = value / (g.unsqueeze(1) if value.ndim == 2 else g)
        out["decoder." + name] = value
    out.update({"decoder." + k: v for k, v in gate_values.items()})
    out["decoder.coarse_head.weight"] = torch.zeros(3, 8)  # the bundled preview head ltx-core drops
    return {k: v.to(dtype).contiguous() for k, v in out.items()}


def duration_head_tensors(head, dtype=torch.bfloat16) -> dict[str, torch.Tensor]:
    sd = {k: v.detach() for k, v in head.state_dict().items()}
    out = {}
    for key, value in sd.items():
        if key.startswith(("attention_pooler.to_k.", "attention_pooler.to_v.")):
            continue
        if key.startswith("attention_pooler.to_q."):
            leaf = key.rsplit(".", 1)[1]
            out[f"attention_pooler.cross_attn.in_proj_{leaf}"] = torch.cat(
                [sd[f"attention_pooler.to_{p}.{leaf}"] for p in "qkv"])
        elif key.startswith("attention_pooler.to_out."):
            out["attention_pooler.cross_attn.out_proj." + key.rsplit(".", 1)[1]] = value
        else:
            out[key] = value
    return {"duration_head." + k: v.to(dtype).contiguous() for k, v in out.items()}


def _bytes_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).clone()


def write_ltx25(root, modules: dict[str, torch.nn.Module], dtype=torch.bfloat16, *, gemma_version: str = GEMMA_VERSION,
                declared_version: str | None = GEMMA_VERSION, conv_vae: bool = True, diffusion_vae: bool = True,
                duration_head: bool = True, tokenizer: bool = True, gates: bool = False,
                extra: dict[str, dict[str, torch.Tensor]] | None = None) -> dict[str, Path]:
    """A miniature LTX-2.5 directory in the official layout; returns {part: path}. `extra` adds tensors to a
    part's file (tests of strictness)."""
    from ltx2.models import tiny

    root = Path(root)
    paths = {}
    pipe_modules = {k: modules[k] for k in ("transformer", "connectors", "vae", "audio_vae", "vocoder")}
    official = official_tensors(pipe_modules, dtype=dtype)
    t_config = {"transformer": MINI_CONFIG_25["transformer"]}
    files: dict[str, tuple[dict, dict]] = {}
    transformer_meta = {"config": json.dumps(t_config), "model_version": "2.5.0"}
    if declared_version is not None:
        transformer_meta["gemma_source_checkpoint"] = json.dumps({"gemma_version": declared_version})
    files["transformer"] = ({k: v for k, v in official.items() if k.startswith("model.diffusion_model.")},
                            transformer_meta)
    te = {_comfy_flat(_gemma_checkpoint_key(k)): v.detach().to(dtype).contiguous()
          for k, v in modules["text_encoder"].state_dict().items() if k != "lm_head.weight"}  # tied: stored once
    te.update({k: v for k, v in official.items() if k.startswith("text_embedding_projection.")})
    if tokenizer:
        tok = tiny.build_tokenizer()
        te["tokenizer_json"] = _bytes_tensor(tok.backend_tokenizer.to_str().encode())
        te["hf_asset__tokenizer_config.json"] = _bytes_tensor(json.dumps(
            {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>",
             "padding_side": "left", "tokenizer_class": "GemmaTokenizer"}).encode())
        te["hf_asset__processor_config.json"] = _bytes_tensor(b'{"processor_class": "Gemma4UnifiedProcessor"}')
    gemma_config = modules["text_encoder"].config.to_dict()
    gemma_config["gemma_version"] = gemma_version
    files["text_encoder"] = (te, {"format": "pt", "gemma_config": json.dumps(gemma_config)})
    vae_part = {k.removeprefix("vae."): v for k, v in official.items() if k.startswith("vae.")}
    if conv_vae:
        files["conv_vae"] = (vae_part, {"config": json.dumps({"vae": MINI_CONFIG_25["vae"]})})
    if diffusion_vae:
        tensors = {k: v for k, v in vae_part.items() if k.startswith("encoder.")}
        tensors.update(diffusion_decoder_tensors(modules["diffusion_decoder"], dtype, gates=gates))
        files["diffusion_vae"] = (tensors, {"config": json.dumps({"vae": diffusion_vae_config_25()})})
    files["audio_vae"] = ({k: v for k, v in official.items() if k.startswith(("audio_vae.", "vocoder."))},
                          {"config": json.dumps({"audio_vae": MINI_CONFIG_25["audio_vae"],
                                                 "vocoder": MINI_CONFIG_25["vocoder"]})})
    if duration_head:
        files["duration_head"] = (duration_head_tensors(modules["duration_head"], dtype),
                                  {"config": json.dumps({"duration_head": {"num_pooler_heads": 2}})})
    for part, (tensors, metadata) in files.items():
        tensors = {**tensors, **(extra or {}).get(part, {})}
        path = root / LTX25_FILES[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file(tensors, str(path), metadata=metadata)
        paths[part] = path
    return paths
