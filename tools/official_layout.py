"""Derive the tensor layout of the official LTX-2 19B single-file checkpoint.

Dev-only tool: it is not run by CI and nothing in the ``ltx2`` package imports it.

What it does
------------
Lightricks' reference implementation (``ltx-core``) builds every component of
the 19B bundle from the JSON held under the ``config`` key of the
safetensors metadata, then loads the file through per-component ``SDOps``
(key filters/renames) with ``load_state_dict(strict=False)``.  This script

1. builds each reference module on the ``meta`` device from that config
   (``LTXModel``; the embeddings processor's two ``Embeddings1DConnector`` and
   the V1 feature extractor; ``VideoEncoder`` / ``VideoDecoder``;
   ``AudioEncoder`` / ``AudioDecoder``; ``Vocoder``),
2. turns every module state-dict key back into the key the FILE must carry,
   by inverting that component's ``SDOps``, and checks the inversion by
   running ltx-core's own ``SDOps`` forward on the produced file key,
3. writes ``tests/data/ltx2_19b_layout.json`` (file key -> shape), plus the
   config used, provenance, the tensors that would appear if the video
   decoder were timestep-conditioned, and tensors known to exist in real
   files that ltx-core never loads.

Requirements
------------
A checkout of github.com/Lightricks/LTX-2 at commit 400fd31, with
``packages/ltx-core/src`` on ``PYTHONPATH``, plus ``einops`` and ``scipy``.
``torchaudio`` is only used by ltx-core at runtime for mel spectrograms, so a
stub module is installed when it is missing.  Example::

    pip install --target /tmp/refdeps einops scipy
    PYTHONPATH=/tmp/ltx/packages/ltx-core/src:/tmp/refdeps \
        python tools/official_layout.py --out tests/data/ltx2_19b_layout.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import types
from collections.abc import Callable
from pathlib import Path

REFERENCE_REPO = "github.com/Lightricks/LTX-2"
REFERENCE_COMMIT = "400fd31"

# ---------------------------------------------------------------------------
# The metadata ``config`` the reference builds from.
# ---------------------------------------------------------------------------

# Verbatim ``config.transformer`` of the published ltx-2-19b-dev.safetensors.
TRANSFORMER = {
    "_class_name": "AVTransformer3DModel",
    "_diffusers_version": "0.25.1",
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": 128,
    "attention_type": "default",
    "audio_attention_head_dim": 64,
    "audio_cross_attention_dim": 2048,
    "audio_num_attention_heads": 32,
    "audio_out_channels": 128,
    "audio_positional_embedding_max_pos": [20],
    "av_ca_timestep_scale_multiplier": 1000.0,
    "av_cross_ada_norm": True,
    "caption_channels": 3840,
    "causal_temporal_positioning": True,
    "connector_attention_head_dim": 128,
    "connector_norm_output": True,
    "connector_num_attention_heads": 30,
    "connector_num_layers": 2,
    "connector_num_learnable_registers": 128,
    "connector_positional_embedding_max_pos": [4096],
    "cross_attention_dim": 4096,
    "cross_attention_norm": True,
    "double_self_attention": False,
    "dropout": 0.0,
    "frequencies_precision": "float64",
    "in_channels": 128,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-06,
    "norm_num_groups": 32,
    "num_attention_heads": 32,
    "num_embeds_ada_norm": 1000,
    "num_layers": 48,
    "num_vector_embeds": None,
    "only_cross_attention": False,
    "out_channels": 128,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "positional_embedding_theta": 10000.0,
    "positional_embedding_type": "rope",
    "qk_norm": "rms_norm",
    "rope_type": "split",
    "share_ff": False,
    "standardization_norm": "rms_norm",
    "timestep_scale_multiplier": 1000,
    "upcast_attention": False,
    "use_audio_video_cross_attention": True,
    "use_embeddings_connector": True,
    "use_linear_projection": False,
    "use_middle_indices_grid": True,
}

# ``config.vae``: RECONSTRUCTED (no verbatim 19B header found).  Block lists
# are those of the LTX-2 VAE config in Lightricks' own ltx-core test suite
# (and of the LTX-Video 0.9.5 header, same architecture); they agree with
# diffusers' "2.0" converter (encoder layers 4/6/6/2/2, decoder 5/5/5/5,
# patch 4).  ``timestep_conditioning`` is set explicitly because ltx-core
# defaults it to True when the key is absent; see ``--vae-timestep``.
VAE = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "encoder_blocks": [
        ["res_x", {"num_layers": 4}],
        ["compress_space_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_time_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 6}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
        ["compress_all_res", {"multiplier": 2}],
        ["res_x", {"num_layers": 2}],
    ],
    "decoder_blocks": [
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
        ["compress_all", {"residual": True, "multiplier": 2}],
        ["res_x", {"num_layers": 5, "inject_noise": False}],
    ],
    "scaling_factor": 1.0,
    "norm_layer": "pixel_norm",
    "patch_size": 4,
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": False,
    "normalize_latent_channels": False,
}

# ``config.audio_vae``: as quoted (stated verbatim from the 19B header) in a
# public repository (Kosinkadink/Dinkster, tools/gen_ltx_audio_vae_goldens.py).
AUDIO_VAE = {
    "preprocessing": {
        "audio": {
            "sampling_rate": 16000,
            "max_wav_value": 32768.0,
            "duration": 5.12,
            "stereo": True,
            "causal_padding": 3,
        },
        "stft": {
            "filter_length": 1024,
            "hop_length": 160,
            "win_length": 1024,
            "causal": True,
        },
        "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000},
    },
    "model": {
        "params": {
            "sampling_rate": 16000,
            "embed_dim": 8,
            "ddconfig": {
                "double_z": True,
                "mel_bins": 64,
                "z_channels": 8,
                "resolution": 256,
                "downsample_time": False,
                "in_channels": 2,
                "out_ch": 2,
                "ch": 128,
                "ch_mult": [1, 2, 4],
                "num_res_blocks": 2,
                "attn_resolutions": [],
                "dropout": 0.0,
                "mid_block_add_attention": False,
                "norm_type": "pixel",
                "causality_axis": "height",
            },
        }
    },
}

# ``config.vocoder``: same source as AUDIO_VAE.
VOCODER = {
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "stereo": True,
    "upsample_rates": [6, 5, 2, 2, 2],
    "resblock_kernel_sizes": [3, 7, 11],
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "resblock": "1",
    "upsample_initial_channel": 1024,
}

# Gemma-3-12B text config fields the feature extractor reads (hidden size and
# decoder layer count; the extractor concatenates layers + embeddings).
GEMMA3_12B_TEXT = {"hidden_size": 3840, "num_hidden_layers": 48}

# Tensors present in real LTX-2 single files that no ltx-core module owns.
EXTRA_FILE_TENSORS = {
    "tensors": {
        "vae.per_channel_statistics.channel": [128],
        "vae.per_channel_statistics.mean-of-stds": [128],
    },
    "note": (
        "ltx-core's PerChannelStatistics owns only 'mean-of-means' and 'std-of-means'. "
        "diffusers' LTX-2 converter (scripts/convert_ltx2_to_diffusers.py, "
        "LTX_2_0_VAE_SPECIAL_KEYS_REMAP) deletes exactly 'per_channel_statistics.channel' "
        "and 'per_channel_statistics.mean-of-stds' from the vae.* half of "
        "ltx-2-19b-dev.safetensors before a strict load, so both exist in the file and "
        "nothing else unowned does (a 'std-of-stds' would make that strict load fail). "
        "Shapes [128] are inferred from the 128 latent channels (LTX-Video 0.9.x files carry "
        "the same four statistics), not read from a header. The audio converter removes "
        "nothing before its strict load, so audio_vae.* has no unowned tensors; the same "
        "holds for vocoder.*. FP8 files additionally carry per-layer scale scalars (see "
        "'fp8' in this file)."
    ),
}


# ---------------------------------------------------------------------------
# Reference import helpers
# ---------------------------------------------------------------------------


def _stub_torchaudio() -> None:
    """ltx-core imports torchaudio at module level for its mel front end only."""
    if (
        "torchaudio" in sys.modules
        or importlib.util.find_spec("torchaudio") is not None
    ):
        return
    from importlib.machinery import ModuleSpec

    stub = types.ModuleType("torchaudio")
    stub.transforms = types.ModuleType("torchaudio.transforms")
    stub.functional = types.ModuleType("torchaudio.functional")
    for module in (stub, stub.transforms, stub.functional):
        # A spec keeps importlib.util.find_spec (used by transformers) working.
        module.__spec__ = ModuleSpec(module.__name__, None)
    sys.modules["torchaudio"] = stub
    sys.modules["torchaudio.transforms"] = stub.transforms
    sys.modules["torchaudio.functional"] = stub.functional


def _state_shapes(module) -> dict[str, list[int]]:
    return {key: list(value.shape) for key, value in module.state_dict().items()}


def _prefix_inverse(pairs: list[tuple[str, str]], default: str) -> Callable[[str], str]:
    """Inverse of a prefix-rename SDOps: first matching (module_prefix -> file_prefix)."""

    def invert(module_key: str) -> str:
        for module_prefix, file_prefix in pairs:
            if module_key.startswith(module_prefix):
                return file_prefix + module_key[len(module_prefix) :]
        return default + module_key

    return invert


def _forward_key(sd_ops, file_key: str) -> str | None:
    """Apply an ltx-core SDOps to one file key exactly as its loader does."""
    import torch

    key = sd_ops.apply_to_key(file_key)
    if key is None:
        return None
    results = sd_ops.apply_to_key_value(key, torch.empty(0))
    if len(results) != 1:
        raise RuntimeError(
            f"{sd_ops.name}: {file_key} expands to {len(results)} tensors"
        )
    return results[0].new_key


def build_layout(vae_timestep_conditioning: bool, base_config: dict | None = None,
                 gemma_text_config: dict | None = None) -> dict:
    """Every file tensor (name -> shape) for one config: the 19B one by default; tools/official_layout_ltx23.py
    passes LTX-2.3's (its V2 text projection and BWE vocoder go through the same inversion)."""
    _stub_torchaudio()
    import torch
    from ltx_core.model.audio_vae.model_configurator import (
        AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
        AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
        VOCODER_COMFY_KEYS_FILTER,
        AudioDecoderConfigurator,
        AudioEncoderConfigurator,
        VocoderConfigurator,
    )
    from ltx_core.model.transformer.model_configurator import (
        LTXV_MODEL_COMFY_RENAMING_MAP,
        LTXModelConfigurator,
    )
    from ltx_core.model.video_vae.model_configurator import (
        VAE_DECODER_COMFY_KEYS_FILTER,
        VAE_ENCODER_COMFY_KEYS_FILTER,
        VideoDecoderConfigurator,
        VideoEncoderConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_connector import (
        AudioEmbeddings1DConnectorConfigurator,
        Embeddings1DConnectorConfigurator,
    )
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import (
        EMBEDDINGS_PROCESSOR_KEY_OPS,
        _create_feature_extractor,
    )

    base = base_config or {"transformer": TRANSFORMER, "vae": VAE, "audio_vae": AUDIO_VAE, "vocoder": VOCODER}
    config = dict(base, vae=dict(base["vae"], timestep_conditioning=vae_timestep_conditioning))
    metadata = {"config": config}
    gemma_dims = gemma_text_config or GEMMA3_12B_TEXT

    def embeddings_processor():
        # EmbeddingsProcessorConfigurator reads Gemma's config from disk; build the
        # same three parts directly with the Gemma-3-12B text dimensions.
        gemma_text = types.SimpleNamespace(**gemma_dims)
        return EmbeddingsProcessor(
            video_connector=Embeddings1DConnectorConfigurator.from_metadata(metadata),
            audio_connector=AudioEmbeddings1DConnectorConfigurator.from_metadata(
                metadata
            ),
            feature_extractor=_create_feature_extractor(config["transformer"], gemma_text),
        )

    components = [
        (
            "transformer (LTXModel, AudioVideo)",
            lambda: LTXModelConfigurator.from_metadata(metadata),
            LTXV_MODEL_COMFY_RENAMING_MAP,
            _prefix_inverse([], "model.diffusion_model."),
        ),
        (
            "embeddings processor (connectors + text projection)",
            embeddings_processor,
            EMBEDDINGS_PROCESSOR_KEY_OPS,
            _prefix_inverse(
                [
                    (
                        "feature_extractor.aggregate_embed.",
                        "text_embedding_projection.aggregate_embed.",
                    ),
                    # LTX-2.3's V2 extractor: one projection per modality, before the connectors.
                    (
                        "feature_extractor.video_aggregate_embed.",
                        "text_embedding_projection.video_aggregate_embed.",
                    ),
                    (
                        "feature_extractor.audio_aggregate_embed.",
                        "text_embedding_projection.audio_aggregate_embed.",
                    ),
                    (
                        "video_connector.",
                        "model.diffusion_model.video_embeddings_connector.",
                    ),
                    (
                        "audio_connector.",
                        "model.diffusion_model.audio_embeddings_connector.",
                    ),
                ],
                "<unmapped>.",
            ),
        ),
        (
            "video VAE encoder",
            lambda: VideoEncoderConfigurator.from_metadata(metadata),
            VAE_ENCODER_COMFY_KEYS_FILTER,
            _prefix_inverse(
                [("per_channel_statistics.", "vae.per_channel_statistics.")],
                "vae.encoder.",
            ),
        ),
        (
            "video VAE decoder",
            lambda: VideoDecoderConfigurator.from_metadata(metadata),
            VAE_DECODER_COMFY_KEYS_FILTER,
            _prefix_inverse(
                [("per_channel_statistics.", "vae.per_channel_statistics.")],
                "vae.decoder.",
            ),
        ),
        (
            "audio VAE encoder",
            lambda: AudioEncoderConfigurator.from_metadata(metadata),
            AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER,
            _prefix_inverse(
                [("per_channel_statistics.", "audio_vae.per_channel_statistics.")],
                "audio_vae.encoder.",
            ),
        ),
        (
            "audio VAE decoder",
            lambda: AudioDecoderConfigurator.from_metadata(metadata),
            AUDIO_VAE_DECODER_COMFY_KEYS_FILTER,
            _prefix_inverse(
                [("per_channel_statistics.", "audio_vae.per_channel_statistics.")],
                "audio_vae.decoder.",
            ),
        ),
        (
            "vocoder",
            lambda: VocoderConfigurator.from_metadata(metadata),
            VOCODER_COMFY_KEYS_FILTER,
            _prefix_inverse([], "vocoder."),
        ),
    ]

    tensors: dict[str, list[int]] = {}
    per_component: dict[str, int] = {}
    for name, build, sd_ops, invert in components:
        with torch.device("meta"):
            module = build()
        shapes = _state_shapes(module)
        per_component[name] = len(shapes)
        for module_key, shape in shapes.items():
            file_key = invert(module_key)
            # The inversion must agree with ltx-core's loader run forward.
            if _forward_key(sd_ops, file_key) != module_key:
                raise RuntimeError(
                    f"{name}: {file_key!r} does not load into {module_key!r}"
                )
            previous = tensors.setdefault(file_key, shape)
            if previous != shape:
                raise RuntimeError(
                    f"{file_key}: shape {shape} disagrees with {previous}"
                )

    return {"config": config, "tensors": tensors, "module_state_entries": per_component}


def write_payload(payload: dict, out: Path) -> None:
    """One line per tensor (diffable), everything else as one sorted JSON line per top-level key."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["{"]
    top = sorted(payload.items())
    for index, (key, value) in enumerate(top):
        comma = "," if index < len(top) - 1 else ""
        if key in ("tensors",):
            lines.append(f"{json.dumps(key)}: {{")
            items = list(value.items())
            for j, (tkey, shape) in enumerate(items):
                tail = "," if j < len(items) - 1 else ""
                lines.append(f"  {json.dumps(tkey)}: {json.dumps(shape)}{tail}")
            lines.append("}" + comma)
        else:
            lines.append(
                f"{json.dumps(key)}: {json.dumps(value, sort_keys=True)}{comma}"
            )
    lines.append("}")
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="tests/data/ltx2_19b_layout.json")
    args = parser.parse_args()

    base = build_layout(vae_timestep_conditioning=False)
    conditioned = build_layout(vae_timestep_conditioning=True)
    added = {
        k: v for k, v in conditioned["tensors"].items() if k not in base["tensors"]
    }
    removed = [k for k in base["tensors"] if k not in conditioned["tensors"]]
    if removed:
        raise RuntimeError(f"timestep conditioning unexpectedly drops {removed}")

    tensors = base["tensors"]
    counts: dict[str, int] = {}
    for key in tensors:
        if key.startswith("model.diffusion_model.video_embeddings_connector."):
            group = "model.diffusion_model.video_embeddings_connector."
        elif key.startswith("model.diffusion_model.audio_embeddings_connector."):
            group = "model.diffusion_model.audio_embeddings_connector."
        else:
            group = key.split(".")[0] + "."
            if group in ("vae.", "audio_vae.", "model."):
                group += key.split(".")[1] + "."
        counts[group] = counts.get(group, 0) + 1

    payload = {
        "source": {
            "reference": REFERENCE_REPO,
            "commit": REFERENCE_COMMIT,
            "generator": "tools/official_layout.py",
            "method": (
                "ltx-core modules built on the meta device from 'config'; state_dict keys mapped "
                "to file keys by inverting each component's SDOps and re-checked by applying those "
                "SDOps forward. Non-persistent buffers are not part of the file."
            ),
            "cross_check": (
                "Not used to derive names: each prefix group (transformer, connectors+projection, "
                "vae incl. the two extra statistics, both vae timestep variants, audio_vae, vocoder) "
                "was also fed as meta tensors through diffusers' LTX-2 '2.0' converter, whose "
                "load_state_dict(strict=True) accepted every group."
            ),
            "components": {
                "model.diffusion_model.* (minus connectors)": (
                    "ltx_core.model.transformer.LTXModel via LTXModelConfigurator; "
                    "SDOps LTXV_MODEL_COMFY_RENAMING_MAP strips 'model.diffusion_model.'"
                ),
                "model.diffusion_model.{video,audio}_embeddings_connector.*": (
                    "ltx_core.text_encoders.gemma.embeddings_connector.Embeddings1DConnector "
                    "(inside EmbeddingsProcessor as video_connector/audio_connector); "
                    "SDOps EMBEDDINGS_PROCESSOR_KEY_OPS"
                ),
                "text_embedding_projection.*": (
                    "ltx_core.text_encoders.gemma.feature_extractor.FeatureExtractorV1.aggregate_embed "
                    "(EmbeddingsProcessor.feature_extractor); SDOps EMBEDDINGS_PROCESSOR_KEY_OPS"
                ),
                "vae.*": "VideoEncoder/VideoDecoder; VAE_ENCODER/DECODER_COMFY_KEYS_FILTER",
                "audio_vae.*": "AudioEncoder/AudioDecoder; AUDIO_VAE_ENCODER/DECODER_COMFY_KEYS_FILTER",
                "vocoder.*": "Vocoder (resblock '1'); VOCODER_COMFY_KEYS_FILTER strips 'vocoder.'",
            },
            "config_provenance": {
                "transformer": "verbatim metadata of ltx-2-19b-dev.safetensors",
                "vae": (
                    "reconstructed: block lists from Lightricks' ltx-core LTX-2 VAE test config; "
                    "timestep_conditioning=false chosen (see vae_decoder_timestep_conditioning)"
                ),
                "audio_vae": "verbatim as quoted from the 19B header by Kosinkadink/Dinkster",
                "vocoder": "verbatim as quoted from the 19B header by Kosinkadink/Dinkster",
                "gemma_text": GEMMA3_12B_TEXT,
            },
            "counts": dict(sorted(counts.items())),
            "module_state_entries": base["module_state_entries"],
        },
        "config": base["config"],
        "tensors": dict(sorted(tensors.items())),
        "vae_decoder_timestep_conditioning": {
            "tensors": dict(sorted(added.items())),
            "note": (
                "Present only if the file's VAE decoder is timestep-conditioned (ltx-core builds them "
                "when config.vae.timestep_conditioning is true, its default when the key is absent). "
                "Not established for the 19B files; a loader should accept their presence or absence."
            ),
        },
        "extra_file_tensors": EXTRA_FILE_TENSORS,
        "fp8": {
            "files": [
                "ltx-2-19b-dev-fp8.safetensors",
                "ltx-2-19b-distilled-fp8.safetensors",
            ],
            "reference_readers": (
                "ltx_core/quantization/fp8_scaled_mm.py: FP8Linear has weight float8_e4m3fn [out,in], "
                "weight_scale and input_scale as 0-d float32 Parameters; layers are swapped when "
                "'<path>.weight' is F8_E4M3 and '<path>.weight_scale' exists. "
                "ltx_core/quantization/fp8_cast.py folds '<path>.weight_scale'/'.bias_scale' "
                "(must be 0-d; all scale keys must start with 'model.diffusion_model.') into the weight; "
                "its downcast set is transformer_blocks.* to_q/to_k/to_v/to_out.0/ff.net.0.proj/ff.net.2."
            ),
            "evidence": [
                (
                    "Lightricks/LTX-2 PR #172 (about ltx-2.3-22b-dev-fp8): transformer_blocks.N.attn1.to_k.weight "
                    "float8_e4m3fn [4096, 4096] with .weight_scale and .input_scale float32 scalars beside it."
                ),
                (
                    "ltx-core fp8_scaled_mm.py comment names ltx-2-19b-dev-fp8 as a checkpoint its FP8Linear "
                    "(which consumes input_scale) runs on."
                ),
                (
                    "Comfy-Org/ComfyUI issue #11822: a converter for ltx-2-19b-distilled-fp8.safetensors reads its "
                    "'_quantization_metadata' header entry (ComfyUI mixed-precision layout) and keeps biases, "
                    "norms, embeddings and VAE unquantized."
                ),
            ],
            "note": (
                "No public listing of exactly which 19B tensors are float8_e4m3fn was found. Expected, not "
                "verified: the Linear weights under model.diffusion_model.transformer_blocks.* (the set "
                "ltx-core's fp8_cast downcasts: to_q/to_k/to_v/to_out.0/ff.net.0.proj/ff.net.2 of every "
                "attention and feed-forward), each with 0-d float32 '.weight_scale' and '.input_scale' "
                "siblings; everything else keeps its bf16/f32 dtype. A loader must discover the set from "
                "the header (dtype F8_E4M3 plus a '.weight_scale' sibling), as ltx-core does."
            ),
        },
    }

    out = Path(args.out)
    write_payload(payload, out)
    print(f"wrote {out}: {len(tensors)} tensors; counts {payload['source']['counts']}")
    print(f"timestep-conditioned decoder would add {len(added)} tensors")


if __name__ == "__main__":
    main()
