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

from ltx2.models import layout, loading, safetensors_io
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

# Linears the FP8 files store in float8 (attention projections and feed-forwards of every block).
FP8_LAYER = re.compile(
    r"^transformer_blocks\.\d+\.((audio_)?attn[12]|audio_to_video_attn|video_to_audio_attn)\.(to_q|to_k|to_v|to_out\.0)$"
    r"|^transformer_blocks\.\d+\.(audio_)?ff\.net\.(0\.proj|2)$"
)


def header_for(config: dict) -> safetensors_io.Header:
    """A header with just enough for `component_configs`: the metadata and the projection's shape."""
    caption = config["transformer"]["caption_channels"]
    shape = (caption, caption * (GEMMA_LAYERS + 1))
    info = safetensors_io.TensorInfo("BF16", shape, 0, 0)
    return safetensors_io.Header("<miniature>", {"text_embedding_projection.aggregate_embed.weight": info},
                          {"config": json.dumps(config)})


def build_components(config: dict | None = None, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Random, seeded components with the configuration's sizes, on the CPU in float32."""
    config = copy.deepcopy(config or MINI_CONFIG)
    cfgs = loading.component_configs(header_for(config))
    modules = {}
    for offset, (name, cfg) in enumerate(cfgs.items()):
        torch.manual_seed(seed + offset)
        module = loading.COMPONENT_CLASSES[name].from_config(cfg)
        if name == "vae":
            module.use_framewise_encoding = module.use_framewise_decoding = False
        _randomize_zero_init(module, seed + offset)
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
            for tensor in [*module.parameters(), *module.buffers()]:
                if tensor.is_floating_point():
                    tensor.copy_(tensor.to(dtype).to(tensor.dtype))


# Official (ltx-core) name fragments -> diffusers', for the two components diffusers ships no single-file
# converter for. ltx-core: Embeddings1DConnector.transformer_1d_blocks[i].attn1.{q,k}_norm, the feature
# extractor's aggregate_embed; the vocoder's conv_pre, ups, resblocks, conv_post.
_CONNECTOR_NAMES = (("model.diffusion_model.", ""), ("text_embedding_projection.aggregate_embed.", "text_proj_in."),
                    ("video_embeddings_connector.", "video_connector."),
                    ("audio_embeddings_connector.", "audio_connector."),
                    (".transformer_1d_blocks.", ".transformer_blocks."), (".q_norm.", ".norm_q."),
                    (".k_norm.", ".norm_k."))
_VOCODER_NAMES = (("vocoder.", ""), ("ups.", "upsamplers."), ("resblocks.", "resnets."), ("conv_pre.", "conv_in."),
                  ("conv_post.", "conv_out."))


def reference_key(component: str, official: str) -> str:
    """The diffusers parameter an official tensor name belongs to, by a converter that is not ours."""
    from diffusers.loaders import single_file_utils as sfu

    converters = {"transformer": sfu.convert_ltx2_transformer_to_diffusers, "vae": sfu.convert_ltx2_vae_to_diffusers,
                  "audio_vae": sfu.convert_ltx2_audio_vae_to_diffusers}
    if component in converters:
        (key,) = converters[component]({official: None})
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
                     tensors: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Write an official-layout file; returns the tensors written (tests edit and rewrite them)."""
    tensors = official_tensors(modules, dtype=dtype, fp8=fp8) if tensors is None else tensors
    save_file(tensors, str(path), metadata={"config": json.dumps(config or MINI_CONFIG)})
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
