"""Derive the tensor layout of the official LTX-2.3 (22B) single-file checkpoint.

Dev-only, like tools/official_layout.py (whose ``build_layout`` does the work: ltx-core modules built
on ``meta`` from the ``config`` below, module keys turned into file keys by inverting ltx-core's SDOps,
and each inversion re-checked by running those SDOps forward). Writes
``tests/data/ltx23_22b_layout.json``. Same requirements::

    pip install --target /tmp/refdeps einops scipy
    PYTHONPATH=<LTX-2 checkout>/packages/ltx-core/src:/tmp/refdeps \\
        python tools/official_layout_ltx23.py --out tests/data/ltx23_22b_layout.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from official_layout import (  # noqa: E402
    AUDIO_VAE,
    EXTRA_FILE_TENSORS,
    GEMMA3_12B_TEXT,
    REFERENCE_COMMIT,
    REFERENCE_REPO,
    build_layout,
    write_payload,
)

# ``config.transformer`` of ltx-2.3-22b-*.safetensors. The 2.3-only keys (gated attention in the
# transformer and the connectors, cross-attention AdaLN, the V2 text projection before the connectors)
# and the 22B sizes; everything else as in the 19B header.
TRANSFORMER = {
    "_class_name": "AVTransformer3DModel",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_type": "default",
    "caption_channels": 3840,
    "cross_attention_dim": 4096,
    "double_self_attention": False,
    "dropout": 0.0,
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 48,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "cross_attention_norm": True,
    "out_channels": 128,
    "upcast_attention": False,
    "use_linear_projection": False,
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000.0,
    "causal_temporal_positioning": True,
    "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64,
    "use_audio_video_cross_attention": True,
    "share_ff": False,
    "audio_out_channels": 128,
    "audio_cross_attention_dim": 2048,
    "audio_positional_embedding_max_pos": [20],
    "av_cross_ada_norm": True,
    "use_embeddings_connector": True,
    "connector_attention_head_dim": 128,
    "connector_num_attention_heads": 32,
    "connector_num_layers": 8,
    "connector_positional_embedding_max_pos": [4096],
    "connector_num_learnable_registers": 128,
    "connector_norm_output": True,
    "use_middle_indices_grid": True,
    "apply_gated_attention": True,
    "connector_apply_gated_attention": True,
    "caption_projection_first_linear": False,
    "caption_projection_second_linear": False,
    "caption_proj_input_norm": False,
    "connector_learnable_registers_std": 1,
    "caption_proj_before_connector": True,
    "audio_connector_attention_head_dim": 64,
    "audio_connector_num_attention_heads": 32,
    "cross_attention_adaln": True,
    "text_encoder_norm_type": "per_token_rms",
    "rope_type": "split",
    "frequencies_precision": "float64",
}

# ``config.vae``: the 2.3 VAE is asymmetric (decoder: space, time, all x1, all x2 upsamplers, no residual
# upsampling, zero padding), unlike the 19B one.
VAE = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}], ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}], ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 4}], ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}], ["compress_all_res", {"multiplier": 1}],
        ["res_x", {"num_layers": 2}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 4}], ["compress_space", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}], ["compress_time", {"multiplier": 2}],
        ["res_x", {"num_layers": 4}], ["compress_all", {"multiplier": 1}],
        ["res_x", {"num_layers": 2}], ["compress_all", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": False,
    "normalize_latent_channels": False,
    "encoder_base_channels": 128,
    "decoder_base_channels": 128,
    "spatial_padding_mode": "zeros",
}

# ``config.vocoder``: nested, BigVGAN v2 (AMP blocks, SnakeBeta) at 16 kHz plus a bandwidth extender to
# 48 kHz; ltx-core's VocoderConfigurator builds VocoderWithBWE exactly when "bwe" is present.
_AMP = {"resblock": "AMP1", "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
        "stereo": True, "use_tanh_at_final": False, "activation": "snakebeta", "use_bias_at_final": False}
VOCODER = {
    "vocoder": {**_AMP, "upsample_initial_channel": 1536, "upsample_rates": [5, 2, 2, 2, 2, 2],
                "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4]},
    "bwe": {**_AMP, "upsample_initial_channel": 512, "upsample_rates": [6, 5, 2, 2, 2],
            "upsample_kernel_sizes": [12, 11, 4, 4, 4], "apply_final_activation": False,
            "input_sampling_rate": 16000, "output_sampling_rate": 48000, "hop_length": 80, "n_fft": 512,
            "win_size": 512, "num_mels": 64},
}

CONFIG = {"transformer": TRANSFORMER, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}

PROVENANCE = {
    "transformer": (
        "the metadata config as quoted in full (an ORIGINAL_CONFIG_JSON constant) by a public fork of ltx-core's "
        "safetensors loader, keys reordered here. Cross-checked: every 2.3 key and size agrees with the "
        "'released_header' test fixture of a public Rust port (apply_gated_attention, cross_attention_adaln, "
        "caption_proj_before_connector, 48 layers, 32x128 video / 32x64 audio) and with diffusers' "
        "scripts/convert_ltx2_to_diffusers.py version '2.3' (transformer gated_attn/cross_attn_mod true, "
        "use_prompt_embeddings false; connectors 8 layers, 32x128 video / 32x64 audio heads, gated, "
        "per_modality_projections with bias, video 4096 / audio 2048)"
    ),
    "vae": (
        "same quoted config; decoder_blocks identical in the Rust port's released_header; diffusers' 2.3 "
        "converter agrees (block_out_channels 256/512/1024/1024, decoder 256/512/512/1024, layers 4/6/4/2/2, "
        "upsample factors 2/2/1/2, no residual, zero padding)"
    ),
    "audio_vae": "same quoted config; equal to the 19B audio VAE (diffusers' 2.3 converter: 'Same config as LTX-2.0')",
    "vocoder": (
        "same quoted config; diffusers' 2.3 converter's LTX2VocoderWithBWE config has the same sizes "
        "(1536 hidden, rates 5/2/2/2/2/2, BWE 512 hidden, rates 6/5/2/2/2, STFT 512/80, 64 mels, 16 -> 48 kHz)"
    ),
    "gemma_text": GEMMA3_12B_TEXT,
    "gemma_note": "Gemma 3 12B as for the 19B (MODELS-LTX-2.3.md lists google/gemma-3-12b-it-qat-q4_0-unquantized)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/data/ltx23_22b_layout.json")
    args = parser.parse_args()

    base = build_layout(vae_timestep_conditioning=False, base_config=CONFIG)
    conditioned = build_layout(vae_timestep_conditioning=True, base_config=CONFIG)
    added = {k: v for k, v in conditioned["tensors"].items() if k not in base["tensors"]}
    counts: dict[str, int] = {}
    for key in base["tensors"]:
        parts = key.split(".")
        connector = parts[0] == "model" and parts[2].endswith("_embeddings_connector")
        group = ".".join(parts[:3 if connector else 2]) + "."
        counts[group] = counts.get(group, 0) + 1
    payload = {
        "source": {
            "reference": REFERENCE_REPO,
            "commit": REFERENCE_COMMIT,
            "generator": "tools/official_layout_ltx23.py (build_layout of tools/official_layout.py)",
            "method": (
                "ltx-core modules built on the meta device from 'config' (LTXModelConfigurator; EmbeddingsProcessor "
                "with the V2 feature extractor chosen by _create_feature_extractor; video/audio VAE configurators; "
                "VocoderConfigurator, which returns VocoderWithBWE); state_dict keys mapped to file keys by "
                "inverting each component's SDOps and re-checked by applying those SDOps forward. Non-persistent "
                "buffers (the BWE resampler's filter) are not part of the file."
            ),
            "files": ["ltx-2.3-22b-dev.safetensors", "ltx-2.3-22b-distilled-1.1.safetensors"],
            "config_provenance": PROVENANCE,
            "counts": dict(sorted(counts.items())),
            "module_state_entries": base["module_state_entries"],
        },
        "config": base["config"],
        "tensors": dict(sorted(base["tensors"].items())),
        "vae_decoder_timestep_conditioning": {
            "tensors": dict(sorted(added.items())),
            "note": "Present only if config.vae.timestep_conditioning is true (false in the 2.3 config).",
        },
        "extra_file_tensors": {
            **EXTRA_FILE_TENSORS,
            "note_2_3": (
                "Assumed as for the 19B files (same PerChannelStatistics block), not read from a 2.3 header: "
                "a loader accepts these two and nothing else unowned."
            ),
        },
    }
    out = Path(args.out)
    write_payload(payload, out)
    print(f"wrote {out}: {len(base['tensors'])} tensors; counts {payload['source']['counts']}")
    print(f"timestep-conditioned decoder would add {len(added)} tensors")


if __name__ == "__main__":
    main()
