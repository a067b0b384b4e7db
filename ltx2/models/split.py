"""LTX-2.5's official layout: one file per component, mapped onto diffusers' components, offline and strict.

The files (Lightricks/LTX-2.5, as ltx-pipelines' split `ModelPaths` reads them):

    diffusion_models/ltx-2.5-22b-{distilled,dev}-transformer-bf16.safetensors
        model.diffusion_model.*                          the transformer and the two text connectors
        metadata: config (transformer section), gemma_source_checkpoint ({"gemma_version": ...}), model_version
    text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors
        Gemma 4 unified (ComfyUI-flat `model.layers.*`, `vision_model.*`, `multi_modal_projector.*`,
        `audio_projector.*`, or Hugging Face `model.language_model.*` names), the text projection
        `text_embedding_projection.{video,audio}_aggregate_embed.*`, the tokenizer as bytes (`tokenizer_json`) and
        Hugging Face sidecars (`hf_asset__<file name>`); metadata: gemma_config (the HF config, with gemma_version)
    vae/ltx-2.5-video-vae-bf16.safetensors       the diffusion video VAE (config.vae._class_name CausalDiffusionVAE):
                                                 encoder.*, decoder.* (neighbourhood-attention decoder),
                                                 per_channel_statistics.*
    vae/ltx-2.5-video-vae-conv-bf16.safetensors  the convolutional VAE (CausalVideoAutoencoder): encoder.*, decoder.*
    vae/ltx-2.5-audio-vae-bf16.safetensors       audio_vae.* and vocoder.* (config: audio_vae, vocoder)
    model_patches/ltx-2.5-duration-head-bf16.safetensors   duration_head.*

A video VAE file's keys may also carry the monolith's `vae.` prefix (ltx-core accepts both). The prompt
pipeline (ltx-core's EmbeddingsProcessor) is built from the transformer file *and* the text-encoder file: the
connectors come from the first, the projection in front of them from the second; diffusers keeps both in
`LTX2TextConnectors`, so that one component is filled from two files.

Strict as the single-file loader (ltx2.models.loading): every tensor of every file lands in a parameter or is
named as unused with a reason, every parameter comes from a file, shapes match; components are built on
`meta` and tensors are read one at a time into their final dtype and device. Where a diffusers parameter is a
piece of a file tensor (the diffusion decoder's and the duration head's fused q/k/v) or a product of two
(a distilled diffusion decoder's static gates folded into the linear they scale, as ltx-core and diffusers'
converter do), the plan says so per parameter.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import configs, layout
from .configs import LTX25, CheckpointError
from .safetensors_io import Header, name_list, read_header, read_tensor

log = logging.getLogger("ltx2")

# The official layout's folders (Lightricks/LTX-2.5 on the Hub, kept by `hf download --local-dir`).
FOLDERS = {"transformer": "diffusion_models", "text_encoder": "text_encoders", "video_vae": "vae",
           "audio_vae": "vae", "duration_head": "model_patches"}
REQUIRED = ("transformer", "text_encoder", "video_vae", "audio_vae")

CONV_VAE_CLASS = "CausalVideoAutoencoder"
GEMMA_CONFIG_KEY = "gemma_config"  # ltx-core gemma_assets.GEMMA_CONFIG_METADATA_KEY
TOKENIZER_TENSOR = "tokenizer_json"
ASSET_PREFIX = "hf_asset__"
TOKENIZER_MAX_LENGTH = 1024  # ltx-core gemma_assets.TOKENIZER_MAX_LENGTH
# Tokenizer-config entries that are not PreTrainedTokenizerFast keyword arguments (ltx-core's list).
_TOKENIZER_CONFIG_SKIP = frozenset({"tokenizer_class", "auto_map", "model_max_length", "backend", "is_local",
                                    "local_files_only", "processor_class", "added_tokens_decoder"})


@dataclass(frozen=True)
class Source:
    """Where one diffusers parameter comes from: a file tensor, optionally rows `rows` of it (a fused
    projection), optionally multiplied by the per-output-channel gate tensor `gate` (a folded static gate)."""

    path: str
    key: str
    rows: tuple[int, int] | None = None
    gate: str | None = None


@dataclass
class SplitFiles:
    """The files of one LTX-2.5 model (None: not there)."""

    transformer: str
    text_encoder: str
    audio_vae: str
    diffusion_vae: str | None = None
    conv_vae: str | None = None
    duration_head: str | None = None

    def as_dict(self) -> dict:
        return {"transformer": self.transformer, "text_encoder": self.text_encoder, "audio_vae": self.audio_vae,
                "video_vae": self.diffusion_vae, "video_vae_conv": self.conv_vae, "duration_head": self.duration_head}


@dataclass
class _Plan:
    """Every parameter of every component -> its Source, plus the file tensors used by nothing, with why."""

    sources: dict[tuple[str, str], Source] = field(default_factory=dict)
    unused: dict[tuple[str, str], str] = field(default_factory=dict)  # (path, key) -> reason


# --- metadata --------------------------------------------------------------------------------------------------


def metadata_json(header: Header, key: str, required: bool = True):
    raw = header.metadata.get(key)
    if raw is None:
        if required:
            raise CheckpointError(f"{header.path}: no {key!r} in the safetensors metadata; official LTX-2.5 files "
                                  "carry one")
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        if required:
            raise CheckpointError(f"{header.path}: metadata {key!r} is not valid JSON") from None
        return raw


def file_role(header: Header) -> str:
    """What an LTX-2.5 part is, from its metadata and keys (never its name): transformer, text_encoder,
    diffusion_vae, conv_vae, audio_vae, duration_head, or "unknown"."""
    if GEMMA_CONFIG_KEY in header.metadata:
        return "text_encoder"
    config = metadata_json(header, "config", required=False)
    config = config if isinstance(config, dict) else {}
    if isinstance(config.get("transformer"), dict) and any(k.startswith(layout.TRANSFORMER_PREFIX)
                                                           for k in header.tensors):
        return "transformer"
    if any(k.startswith("duration_head.") for k in header.tensors):
        return "duration_head"
    if isinstance(config.get("audio_vae"), dict):
        return "audio_vae"
    if isinstance(config.get("vae"), dict):
        return "conv_vae" if config["vae"].get("_class_name", CONV_VAE_CLASS) == CONV_VAE_CLASS else "diffusion_vae"
    return "unknown"


def transformer_metadata(header: Header) -> dict:
    """The transformer file's metadata, the JSON values parsed (as ltx-core's loader reads it)."""
    out = {}
    for key, value in header.metadata.items():
        try:
            out[key] = json.loads(value)
        except (json.JSONDecodeError, TypeError):
            out[key] = value
    return out


def declared_gemma_version(header: Header) -> str:
    """The Gemma the transformer was trained with (`gemma_source_checkpoint.gemma_version`)."""
    meta = transformer_metadata(header)
    source = meta.get("gemma_source_checkpoint")
    version = source.get("gemma_version") if isinstance(source, dict) else None
    if not version:
        raise CheckpointError(f"{header.path}: an LTX-2.5 transformer must declare gemma_source_checkpoint."
                              "gemma_version in its metadata (ltx-core requires it from model_version 2.4); it does not")
    return version


# --- finding the files -------------------------------------------------------------------------------------------


def _safetensors_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.safetensors") if p.is_file()) if folder.is_dir() else []


def is_split_root(path: str) -> bool:
    """A directory in the official LTX-2.5 layout (it has diffusion_models/ with a file in it)."""
    return os.path.isdir(path) and bool(_safetensors_in(Path(path) / FOLDERS["transformer"]))


def resolve_files(model: str, overrides: dict[str, str | None] | None = None, variant: str = "auto") -> SplitFiles:
    """The files of `model`: an official-layout directory, or a 2.5 transformer file whose siblings are found
    by that layout (../text_encoders/..., ../vae/..., ../model_patches/...). `overrides` (transformer,
    text_encoder, video_vae, audio_vae, duration_head) replace what the layout finds; `video_vae` may name either
    video VAE (its metadata says which). Missing a required part: one line naming what was looked at."""
    overrides = {k: v for k, v in (overrides or {}).items() if v}
    if os.path.isdir(model):
        root, transformer = Path(model), overrides.get("transformer")
        if transformer is None:
            found = [p for p in _safetensors_in(root / FOLDERS["transformer"]) if file_role(read_header(str(p))) == "transformer"]
            if variant in ("distilled", "dev") and len(found) > 1:  # dev and distilled side by side
                found = [p for p in found if variant in p.name.lower()] or found
            if len(found) != 1:
                raise CheckpointError(
                    f"{root}: expected one LTX-2.5 transformer in {FOLDERS['transformer']}/, found "
                    f"{[p.name for p in found] or 'none'}" + ("; set LTX2_VARIANT=distilled or dev" if found else ""))
            transformer = str(found[0])
    else:
        transformer = overrides.get("transformer", model)
        root = Path(transformer).resolve().parent.parent
    by_role: dict[str, list[str]] = {}
    for part in ("text_encoder", "video_vae", "duration_head"):
        for p in _safetensors_in(root / FOLDERS[part]):
            role = file_role(read_header(str(p)))
            by_role.setdefault(role, []).append(str(p))
    chosen: dict[str, str | None] = {}
    for role in ("text_encoder", "diffusion_vae", "conv_vae", "audio_vae", "duration_head"):
        candidates = by_role.get(role, [])
        chosen[role] = candidates[0] if len(candidates) == 1 else None
        if len(candidates) > 1:
            chosen[role] = "ambiguous:" + ", ".join(Path(c).name for c in candidates)
    for part in ("text_encoder", "audio_vae", "duration_head"):
        if part in overrides:
            chosen[part] = overrides[part]
    if "video_vae" in overrides:  # either video VAE: its metadata says which
        for path in str(overrides["video_vae"]).split(","):
            role = file_role(read_header(path))
            if role not in ("diffusion_vae", "conv_vae"):
                raise CheckpointError(f"{path}: given as the video VAE, but its metadata describes no video VAE "
                                      f"(config.vae); it looks like a {role} file")
            chosen[role] = path
    ambiguous = [f"{role} ({v.removeprefix('ambiguous:')})" for role, v in chosen.items()
                 if isinstance(v, str) and v.startswith("ambiguous:")]
    if ambiguous:
        raise CheckpointError(f"{root}: more than one file for {'; '.join(ambiguous)}: name the one to use "
                              "(--text-encoder, --video-vae, --audio-vae, --duration-head)")
    missing = [part for part, ok in (("text_encoder", chosen["text_encoder"]), ("audio_vae", chosen["audio_vae"]),
                                     ("video_vae", chosen["diffusion_vae"] or chosen["conv_vae"])) if not ok]
    if missing:
        looked = ", ".join(f"{part}: {root / FOLDERS[part]}/" for part in missing)
        raise CheckpointError(f"{transformer}: the LTX-2.5 model lacks its {', '.join(missing)} file(s) (looked in "
                              f"{looked}; or pass --{' / --'.join(m.replace('_', '-') for m in missing)})")
    return SplitFiles(transformer=transformer, text_encoder=chosen["text_encoder"], audio_vae=chosen["audio_vae"],
                      diffusion_vae=chosen["diffusion_vae"], conv_vae=chosen["conv_vae"],
                      duration_head=chosen["duration_head"])


# --- component configs -------------------------------------------------------------------------------------------


def _vae_prefix(header: Header) -> str:
    """`vae.` (monolith naming) or "" (the split files' bare encoder./decoder.)."""
    return "vae." if any(k.startswith("vae.") for k in header.tensors) else ""


def diffusion_decoder_config(vae: dict, path: str) -> dict:
    """diffusers `LTX2VideoDiffusionDecoderModel` config from ltx-core's `config.vae` of a CausalDiffusionVAE:
    read as ltx-core's `_build_diffusion_video_decoder` reads it (decoder hyperparameters under `vae.decoder`,
    `model_output_type` beside it), with ltx-core's defaults where a field is absent."""
    d = vae.get("decoder", vae)
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: config.vae.decoder is not a mapping")
    if "stage5_channels" in d and d["stage5_channels"] != list(d.get("stage_channels", [None]))[-1]:
        raise CheckpointError(f"{path}: config.vae.decoder.stage5_channels {d['stage5_channels']} differs from the "
                              "last stage's channels; diffusers' decoder cannot build that")
    upsamples = d.get("upsamples", [[[1, 2, 2], 2], [[2, 1, 1], 2], [[2, 2, 2], 1], [[2, 2, 2], 2]])
    stages = tuple(d.get("stage_channels", (1024, 512, 256, 256, 128)))
    patch = d.get("patch_size", 4)
    strides = [tuple(s) for s, _ in upsamples]
    spatial, temporal = patch, 1
    for s in strides:
        temporal, spatial = temporal * s[0], spatial * s[1]
    return {
        "out_channels": d.get("out_channels", 3),
        "latent_channels": d.get("in_channels", vae.get("latent_channels", 128)),
        "patch_size": patch,
        "decoder_head_dim": d.get("head_dim", d.get("na_head_dim", 64)),
        "decoder_stage_channels": stages,
        "decoder_stage_depths": tuple(d.get("stage_depths", (4, 6, 4, 2, 8))),
        # ltx-core's config lists one kernel per stage channel (five); its fifth is unused (stage 5 reads
        # stage5_kernel), and diffusers takes exactly one per deterministic stage, reading the last as stage 4's.
        "decoder_stage_kernels": tuple(tuple(k) for k in d.get("stage_kernels", ((3, 7, 7), (3, 7, 7), (3, 5, 5),
                                                                                   (3, 5, 5)))[:len(stages) - 1]),
        "decoder_upsample_strides": tuple(strides),
        "decoder_upsample_channel_reductions": tuple(r for _, r in upsamples),
        "decoder_stage5_kernel": tuple(d.get("stage5_kernel", (3, 7, 7))),
        "decoder_t_emb_dim": d.get("t_emb_dim", 384),
        "decoder_timestep_scale_multiplier": float(d.get("timestep_scale_multiplier", 1.0)),
        "decoder_model_output_type": vae.get("model_output_type", "v"),
        "decoder_num_inference_steps": d.get("default_num_inference_steps", 2),
        "spatial_compression_ratio": spatial,
        "temporal_compression_ratio": temporal,
    }


def _encoder_as_flat_vae(vae: dict) -> dict:
    """A CausalDiffusionVAE's nested `vae.encoder` (ltx-core: `blocks`, `out_channels` = latent width) as the flat
    CausalVideoAutoencoder config `configs.video_vae_config` reads; the decoder half is the conv one's shape
    (it is replaced by `AbsentConvDecoder`, so only the encoder's entries matter)."""
    enc = vae.get("encoder", vae)
    blocks = enc.get("blocks", enc.get("encoder_blocks", []))
    flat = {
        "_class_name": CONV_VAE_CLASS, "latent_channels": enc.get("out_channels", vae.get("latent_channels", 128)),
        "in_channels": enc.get("in_channels", 3), "patch_size": enc.get("patch_size", 4), "encoder_blocks": blocks,
        "spatial_padding_mode": enc.get("spatial_padding_mode", vae.get("encoder_spatial_padding_mode", "zeros")),
        # A decoder mirroring the encoder's levels: built on meta and dropped, never loaded.
        "decoder_blocks": [["res_x", {"num_layers": 1}]] + sum(
            ([["compress_all", {"multiplier": 1}], ["res_x", {"num_layers": 1}]] for _ in blocks[1::2]), []),
        "decoder_base_channels": 8, "timestep_conditioning": False,
    }
    return flat


class AbsentConvDecoder(torch.nn.Module):
    """Stands in for the convolutional decoder when only the diffusion video VAE file is there: the VAE then
    encodes (conditioning images, video-to-video) and carries the latent statistics; decoding goes through the
    diffusion decoder. Calling it says so rather than decoding with random weights."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("this LTX-2.5 model was loaded without the convolutional VAE file "
                           "(vae/ltx-2.5-video-vae-conv-bf16.safetensors): decode with the diffusion decoder")


# --- file keys of each component ---------------------------------------------------------------------------------

_DIFF_DECODER_RENAMES = (  # diffusers -> ltx-core file (diffusers' convert_ltx2_to_diffusers, inverted)
    ("t_embedder.timestep_embedder.linear_1.", "t_embedder.mlp.0."),
    ("t_embedder.timestep_embedder.linear_2.", "t_embedder.mlp.2."),
    (".attn.to_out.0.", ".attn.proj."),
    (".attn.norm_q.", ".attn.q_norm."),
    (".attn.norm_k.", ".attn.k_norm."),
)
# A distilled decoder's static gates, folded into the linear each scales (W <- g * W, b <- g * b).
_GATED = ((".attn.proj.weight", ".gate_msa"), (".attn.proj.bias", ".gate_msa"), (".mlp.w_down.weight", ".gate_mlp"),
          (".mlp.w_down.bias", ".gate_mlp"), (".context_proj.weight", ".gate_ctx"), (".context_proj.bias", ".gate_ctx"))
_QKV = {".attn.to_q.": 0, ".attn.to_k.": 1, ".attn.to_v.": 2}


def diffusion_decoder_sources(module: torch.nn.Module, header: Header) -> dict[str, Source]:
    prefix, path, out = _vae_prefix(header), header.path, {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        if key in ("latents_mean", "latents_std"):
            stat = "mean-of-means" if key == "latents_mean" else "std-of-means"
            out[key] = Source(path, f"{prefix}per_channel_statistics.{stat}")
            continue
        rest = key.removeprefix("decoder.")
        for ours, theirs in _DIFF_DECODER_RENAMES:
            rest = rest.replace(ours, theirs)
        rows = None
        for part, index in _QKV.items():
            if part in rest:  # one fused Linear(dim, 3 dim): q, k, v rows in that order
                rest = rest.replace(part, ".attn.qkv.")
                rows = (index * tensor.shape[0], (index + 1) * tensor.shape[0])
        file_key = f"{prefix}decoder.{rest}"
        gate = None
        for leaf, suffix in _GATED:
            if rest.endswith(leaf):
                candidate = f"{prefix}decoder.{rest.removesuffix(leaf)}{suffix}"
                gate = candidate if candidate in header.tensors else None
        out[key] = Source(path, file_key, rows, gate)
    return out


def duration_head_sources(module: torch.nn.Module, header: Header) -> dict[str, Source]:
    """ltx-core's DurationHead keeps its pooler as torch's MultiheadAttention (fused in_proj, out_proj)."""
    out = {}
    for key, tensor in module.state_dict(keep_vars=True).items():
        rows, file_key = None, key
        for index, proj in enumerate(("to_q", "to_k", "to_v")):
            if key.startswith(f"attention_pooler.{proj}."):
                leaf = key.rsplit(".", 1)[1]
                file_key = f"attention_pooler.cross_attn.in_proj_{leaf}"
                rows = (index * tensor.shape[0], (index + 1) * tensor.shape[0])
        if key.startswith("attention_pooler.to_out."):
            file_key = "attention_pooler.cross_attn.out_proj." + key.rsplit(".", 1)[1]
        out[key] = Source(header.path, "duration_head." + file_key, rows)
    return out


def gemma_style(header: Header) -> str:
    """ComfyUI-flat (`model.layers.*`, ltx-core's packer default) or Hugging Face (`model.language_model.*`)."""
    return "comfy" if any(k.startswith(("model.layers.", "model.embed_tokens.")) for k in header.tensors) else "hf"


def gemma_file_key(key: str, style: str) -> str:
    """The text-encoder file's name for parameter `key` of transformers' Gemma4UnifiedForConditionalGeneration
    (ltx-core's `_build_gemma4_unified_llm_key_ops`, inverted)."""
    projection = "model.embed_vision.multimodal_embedder.embedding_projection."
    if style == "comfy":
        if key.startswith("model.language_model."):
            return "model." + key.removeprefix("model.language_model.")
        if key.startswith(projection):
            return "multi_modal_projector.embedding_projection." + key.removeprefix(projection)
        if key.startswith("model.embed_vision."):
            return "vision_model." + key.removeprefix("model.embed_vision.")
        if key.startswith("model.embed_audio."):
            return "audio_projector." + key.removeprefix("model.embed_audio.")
        return key
    if key.startswith(projection):
        return "model.embed_vision.embedding_projection." + key.removeprefix(projection)
    if key.startswith("model.embed_vision."):
        return "model.vision_embedder." + key.removeprefix("model.embed_vision.")
    return key


# --- building ----------------------------------------------------------------------------------------------------


def build_gemma(header: Header, expected_version: str, transformer_path: str) -> torch.nn.Module:
    """Gemma 4 unified on `meta`, from the text-encoder file's embedded config, after the version check."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    config = metadata_json(header, GEMMA_CONFIG_KEY)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    version = config.get("gemma_version") if isinstance(config, dict) else None
    if version != expected_version:
        raise CheckpointError(
            f"{header.path}: Gemma version {version!r} (model_type {model_type!r}); {transformer_path} was trained "
            f"with {expected_version!r} and needs that text encoder (stock Gemma releases are not a substitute)")
    if model_type != "gemma4_unified":
        raise CheckpointError(f"{header.path}: model_type {model_type!r}; LTX-2.5 encodes prompts with Gemma 4 "
                              "unified (gemma4_unified)")
    from transformers import Gemma4UnifiedForConditionalGeneration

    hf_config = CONFIG_MAPPING[model_type].from_dict(dict(config))
    with torch.device("meta"):
        return Gemma4UnifiedForConditionalGeneration(hf_config)


def _fill_gemma_buffers(model: torch.nn.Module, device: torch.device) -> None:
    """The buffers Gemma computes at build time and never stores (rotary frequencies, the embedding scale),
    computed for real: built on `meta`, they hold nothing (ltx-core populates the same ones after loading)."""
    text = model.config.get_text_config()
    for name, module in model.named_modules():
        if type(module).__name__.endswith("RotaryEmbedding") and any(b.is_meta for b in module.buffers()):
            with torch.device("cpu"):
                fresh = type(module)(config=text)
            for buf_name, buf in fresh.named_buffers(recurse=False):
                module._buffers[buf_name] = buf.to(device)
            for attr, value in vars(fresh).items():  # per-layer-type attention scaling
                if attr.endswith("attention_scaling"):
                    setattr(module, attr, value)
        if hasattr(module, "embed_scale") and isinstance(module._buffers.get("embed_scale"), torch.Tensor) \
                and module._buffers["embed_scale"].is_meta:
            module._buffers["embed_scale"] = torch.tensor(module.embedding_dim ** 0.5, device=device,
                                                          dtype=torch.float32).to(model.dtype)


def load_tokenizer(header: Header, fd: int, tokenizer_dir: str | None):
    """The tokenizer the text-encoder file embeds (`tokenizer_json` + `hf_asset__tokenizer_config.json`, ltx-core's
    GemmaAssets), or, when it embeds none, the one in `tokenizer_dir`."""
    from transformers import PreTrainedTokenizerFast

    if TOKENIZER_TENSOR not in header.tensors:
        if tokenizer_dir is None:
            raise CheckpointError(f"{header.path}: embeds no tokenizer ({TOKENIZER_TENSOR!r}); pass a tokenizer "
                                  "directory (the Gemma 4 tokenizer files)")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    else:
        from tokenizers import Tokenizer

        raw = bytes(read_tensor(fd, header, TOKENIZER_TENSOR).to(torch.uint8).numpy().tobytes())
        asset = f"{ASSET_PREFIX}tokenizer_config.json"
        if asset in header.tensors:
            cfg = json.loads(bytes(read_tensor(fd, header, asset).to(torch.uint8).numpy().tobytes()))
        else:
            cfg = json.loads(header.metadata.get("tokenizer_config.json", "{}"))
        kwargs = {k: v for k, v in cfg.items() if k not in _TOKENIZER_CONFIG_SKIP}
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(raw.decode()), **kwargs)
    tokenizer.padding_side = "left"  # as LTX2Pipeline encodes
    # ltx-core encodes every prompt in a 1024-token window whatever the file's config says (LTXGemmaTokenizer with
    # gemma_assets.TOKENIZER_MAX_LENGTH); without it the pipeline's window would be the tokenizer's "unlimited".
    tokenizer.model_max_length = TOKENIZER_MAX_LENGTH
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@dataclass
class SplitReport:
    files: SplitFiles
    kind: str
    kind_source: str
    gemma_version: str
    tokenizer: str
    video_decoders: list[str]
    ignored: dict[str, list[str]] = field(default_factory=dict)
    tensors_loaded: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"checkpoint": self.files.transformer, "format": "split", "family": LTX25, "kind": self.kind,
                "kind_source": self.kind_source, "files": self.files.as_dict(), "gemma_version": self.gemma_version,
                "tokenizer": self.tokenizer, "video_decoders": self.video_decoders, "fp8_layers": 0,
                "fp8_compute": None, "tensors_loaded": self.tensors_loaded, "ignored_tensors": self.ignored,
                "load_seconds": round(self.seconds, 3)}


def _meta(cls, config: dict) -> torch.nn.Module:
    with torch.device("meta"):
        return cls.from_config(config)


def load_split(files: SplitFiles, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16, *,
               kind: str = "auto", homes: dict[str, torch.device] | None = None,
               tokenizer_dir: str | None = None) -> tuple[dict, SplitReport]:
    """Load every component of an LTX-2.5 model from its files (see the module docstring).

    Returns ({transformer, connectors, text_encoder, tokenizer, vae, audio_vae, vocoder, diffusion_decoder (or
    None), duration_head (or None)}, report). `dtype` is every floating tensor's dtype (the vocoder stays
    float32); `homes` says where a component rests if not on `device`.
    """
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoDiffusionDecoderModel
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    from .components import build_empty, finish_loaded, target_dtype

    start = time.perf_counter()
    device = torch.device(device)
    headers = {p: read_header(p) for p in (files.transformer, files.text_encoder, files.audio_vae, files.diffusion_vae,
                                           files.conv_vae, files.duration_head) if p}
    roles = {"transformer": files.transformer, "text_encoder": files.text_encoder, "audio_vae": files.audio_vae,
             "diffusion_vae": files.diffusion_vae, "conv_vae": files.conv_vae, "duration_head": files.duration_head}
    wrong = [f"{path} is a {file_role(headers[path])} file, given as the {role}" for role, path in roles.items()
             if path and file_role(headers[path]) != role]
    if wrong:
        raise CheckpointError("LTX-2.5 files in the wrong places: " + "; ".join(wrong))

    # The transformer says the family and the Gemma; every other part must be 2.5's.
    th = headers[files.transformer]
    tmeta = transformer_metadata(th)
    config = tmeta.get("config") if isinstance(tmeta.get("config"), dict) else {}
    if config and not configs.is_ltx25(config, tmeta):  # an older transformer: its family from its markers
        t = config.get("transformer") if isinstance(config.get("transformer"), dict) else {}
        family = configs.LTX23 if all(t.get(m) for m in configs.LTX23_MARKERS) else configs.LTX2
    else:
        family = configs.detect_family(config, th.path, tmeta) if config else None
    if family != LTX25:
        raise CheckpointError(f"{th.path}: an {family or 'unknown'} transformer, given with LTX-2.5 parts "
                              f"({', '.join(Path(p).name for p in headers if p != th.path)}); expected an LTX-2.5 "
                              "transformer (config.transformer.ff_bias false, gemma_source_checkpoint in its metadata)")
    gemma_version = declared_gemma_version(th)
    kind_name, kind_source = configs.detect_kind(files.transformer, kind)

    # Component configs: the transformer's from its file, shaped by the VAE files (compression) it works with.
    ah = headers[files.audio_vae]
    aconfig = metadata_json(ah, "config")
    audio_cfg = configs.audio_vae_config(aconfig)
    vocoder_cfg = configs.vocoder_config(aconfig, audio_cfg["mel_bins"])
    if "bwe_hidden_channels" not in vocoder_cfg:
        raise CheckpointError(f"{ah.path}: its vocoder is LTX-2's single HiFi-GAN; LTX-2.5 uses 2.3's BigVGAN v2 with "
                              "bandwidth extension (config.vocoder.bwe): a file of another family")
    dh = headers.get(files.diffusion_vae) if files.diffusion_vae else None
    ch = headers.get(files.conv_vae) if files.conv_vae else None
    diff_vae = metadata_json(dh, "config").get("vae", {}) if dh else None
    if ch is not None:
        vae_cfg = configs.video_vae_config(metadata_json(ch, "config"))
        if "timestep_conditioning" not in metadata_json(ch, "config")["vae"]:
            vae_cfg["timestep_conditioning"] = any(k.endswith("decoder.last_time_embedder.timestep_embedder.linear_1.weight")
                                                   for k in ch.tensors)
    else:
        vae_cfg = configs.video_vae_config({"vae": _encoder_as_flat_vae(diff_vae)})
    te = headers[files.text_encoder]
    projection = te.tensors.get(configs.text_projection_key(config))
    cfgs = {
        "transformer": configs.transformer_config(config, vae_cfg, audio_cfg),
        "connectors": configs.connectors_config(config, projection.shape if projection else None),
        "vae": vae_cfg, "audio_vae": audio_cfg, "vocoder": vocoder_cfg,
    }
    modules = {name: build_empty(name, cfg) for name, cfg in cfgs.items()}
    if ch is None:
        modules["vae"].decoder = AbsentConvDecoder()
    if dh is not None:
        modules["diffusion_decoder"] = _meta(LTX2VideoDiffusionDecoderModel, diffusion_decoder_config(diff_vae, dh.path))
    text_encoder = build_gemma(te, gemma_version, th.path)
    text_cfg = text_encoder.config.get_text_config()
    if (text_cfg.hidden_size, text_cfg.num_hidden_layers + 1) != (cfgs["connectors"]["caption_channels"],
                                                                   cfgs["connectors"]["text_proj_in_factor"]):
        raise CheckpointError(
            f"{te.path}: Gemma is {text_cfg.hidden_size} wide with {text_cfg.num_hidden_layers} layers; "
            f"{th.path} expects caption_channels {cfgs['connectors']['caption_channels']} and a projection over "
            f"{cfgs['connectors']['text_proj_in_factor']} hidden states")
    modules["text_encoder"] = text_encoder
    if files.duration_head:
        hh = headers[files.duration_head]
        shape = lambda k: hh.tensors[k].shape if k in hh.tensors else None  # noqa: E731
        need = ["duration_head.video_input_proj.weight", "duration_head.audio_input_proj.weight",
                "duration_head.attention_pooler.query_tokens", "duration_head.mlp_hidden.weight"]
        if absent := [k for k in need if k not in hh.tensors]:
            raise CheckpointError(f"{hh.path}: not an LTX-2.5 duration head: lacks {name_list(absent)}")
        head_cfg = (metadata_json(hh, "config", required=False) or {})
        head_cfg = head_cfg.get("duration_head", {}) if isinstance(head_cfg, dict) else {}
        modules["duration_head"] = _meta(LTX2DurationHead, {
            # ltx-core reads the widths from config.transformer (defaults 4096/2048) and the pooler from a
            # placeholder config.duration_head; the weights say the same widths, so read them from there.
            "video_cross_attention_dim": shape(need[0])[1], "audio_cross_attention_dim": shape(need[1])[1],
            "pooler_hidden_dim": shape(need[0])[0], "num_queries": shape(need[2])[0],
            "num_pooler_heads": head_cfg.get("num_pooler_heads", 4), "mlp_hidden_dim": shape(need[3])[0]})
        video_width = cfgs["connectors"]["video_hidden_dim"]
        if shape(need[0])[1] != video_width:
            raise CheckpointError(f"{hh.path}: the duration head reads {shape(need[0])[1]}-wide video text; "
                                  f"{th.path}'s connectors give {video_width}: it belongs to another model")

    # The plan: every parameter's source, every file tensor's use.
    plan = _Plan()
    num_down = len(vae_cfg["block_out_channels"])
    for key in modules["transformer"].state_dict(keep_vars=True):
        plan.sources[("transformer", key)] = Source(th.path, layout.file_key("transformer", key, num_down))
    for key in modules["connectors"].state_dict(keep_vars=True):
        file_key = layout.file_key("connectors", key, num_down)
        # The projection in front of the connectors ships in the text-encoder file ("with-proj").
        path = te.path if file_key.startswith("text_embedding_projection.") else th.path
        plan.sources[("connectors", key)] = Source(path, file_key)
    for name in ("audio_vae", "vocoder"):
        for key in modules[name].state_dict(keep_vars=True):
            plan.sources[(name, key)] = Source(ah.path, layout.file_key(name, key, num_down))
    vae_header = ch if ch is not None else dh
    vprefix = _vae_prefix(vae_header)
    for key in modules["vae"].state_dict(keep_vars=True):
        plan.sources[("vae", key)] = Source(vae_header.path, vprefix + layout.file_key("vae", key, num_down).removeprefix("vae."))
    for header in (h for h in (ch, dh) if h is not None):
        prefix = _vae_prefix(header)
        for unused, why in layout.KNOWN_UNUSED.items():
            plan.unused[(header.path, prefix + unused.removeprefix("vae."))] = why
    if dh is not None:
        for key, source in diffusion_decoder_sources(modules["diffusion_decoder"], dh).items():
            plan.sources[("diffusion_decoder", key)] = source
        dprefix = _vae_prefix(dh)
        for key in dh.tensors:
            rest = key.removeprefix(dprefix)
            if rest.startswith("decoder.") and (rest.removeprefix("decoder.").startswith("coarse_") or ".coarse_" in rest):
                plan.unused[(dh.path, key)] = "the diffusion decoder's bundled preview head (ltx-core drops it)"
            elif ch is not None and rest.startswith("encoder."):
                plan.unused[(dh.path, key)] = f"encoder also in {Path(ch.path).name}, which the VAE is loaded from"
    style = gemma_style(te)
    ties = getattr(text_cfg, "tie_word_embeddings", False) or getattr(text_encoder.config, "tie_word_embeddings", False)
    tied = set(getattr(text_encoder, "_tied_weights_keys", None) or ()) if ties else set()
    for key in text_encoder.state_dict(keep_vars=True):
        if key in tied:
            continue  # lm_head shares the embedding (re-tied after loading): one tensor in the file, one in memory
        plan.sources[("text_encoder", key)] = Source(te.path, gemma_file_key(key, style))
    for key in te.tensors:
        if key == TOKENIZER_TENSOR or key.startswith(ASSET_PREFIX):
            plan.unused[(te.path, key)] = "tokenizer and Hugging Face sidecar files, as bytes"
    if files.duration_head:
        for key, source in duration_head_sources(modules["duration_head"], headers[files.duration_head]).items():
            plan.sources[("duration_head", key)] = source

    _check(plan, headers, modules)

    # Stream: one tensor at a time into its final dtype and device.
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    targets = {name: module.state_dict(keep_vars=True) for name, module in modules.items()}
    by_component: dict[str, dict[str, torch.Tensor]] = {name: {} for name in modules}
    fds = {path: os.open(path, os.O_RDONLY) for path in headers}
    gates: dict[tuple[str, str], torch.Tensor] = {}
    try:
        for (name, key), src in plan.sources.items():
            header, fd = headers[src.path], fds[src.path]
            tensor = read_tensor(fd, header, src.key)
            if src.rows is not None:
                tensor = tensor[src.rows[0]:src.rows[1]]
            if src.gate is not None:
                gate = gates.get((src.path, src.gate))
                if gate is None:
                    gate = gates[(src.path, src.gate)] = read_tensor(fd, header, src.gate).float()
                folded = (gate.unsqueeze(1) if tensor.ndim == 2 else gate) * tensor.float()
                tensor = folded.to(tensor.dtype)
            home = (homes or {}).get(name, device)
            wanted = torch.float32 if isinstance(modules[name], LTX2VocoderWithBWE) else dtype
            by_component[name][key] = tensor.to(device=home, dtype=target_dtype(key, targets[name][key], wanted))
            del tensor
        tokenizer = load_tokenizer(te, fds[te.path], tokenizer_dir)
    finally:
        for fd in fds.values():
            os.close(fd)
    for name, module in modules.items():
        home = (homes or {}).get(name, device)
        strict = name != "text_encoder"
        missing, unexpected = module.load_state_dict(by_component.pop(name), strict=strict, assign=True)
        if name == "text_encoder":
            if unexpected or set(missing) - set(tied):
                raise RuntimeError(f"text_encoder: load mismatch {missing} {unexpected}")  # the plan is the model's
            module.tie_weights()
            _fill_gemma_buffers(module, home)
        finish_loaded(name, module, home)
    modules.setdefault("diffusion_decoder", None)
    modules.setdefault("duration_head", None)
    report = SplitReport(files=files, kind=kind_name, kind_source=kind_source, gemma_version=gemma_version,
                         tokenizer="embedded" if TOKENIZER_TENSOR in te.tensors else str(tokenizer_dir),
                         video_decoders=[d for d, ok in (("diffusion", dh is not None), ("conv", ch is not None)) if ok])
    for (path, key) in plan.unused:
        if key in headers[path].tensors:
            report.ignored.setdefault(Path(path).name, []).append(key)
    report.ignored = {name: (keys if len(keys) <= 4 else [*sorted(keys)[:3], f"... {len(keys)} in all"])
                      for name, keys in report.ignored.items()}
    report.tensors_loaded = len({(s.path, s.key) for s in plan.sources.values()})
    report.seconds = time.perf_counter() - start
    log.info("loaded LTX-2.5 %s from %s (%s) in %.1fs", kind_name, files.transformer, ", ".join(report.video_decoders),
             report.seconds)
    return {**modules, "tokenizer": tokenizer}, report


def _check(plan: _Plan, headers: dict[str, Header], modules: dict[str, torch.nn.Module]) -> None:
    """Set differences per file in both directions, then shapes; each failure one line with the names."""
    used: dict[str, set[str]] = {path: set() for path in headers}
    for src in plan.sources.values():
        used[src.path].add(src.key)
        if src.gate:
            used[src.path].add(src.gate)
    problems = []
    for path, header in headers.items():
        in_file = set(header.tensors)
        unused = {key for (p, key) in plan.unused if p == path}
        missing = used[path] - in_file
        unexpected = in_file - used[path] - unused
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing: {name_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) no component owns: {name_list(unexpected)}")
        if parts:
            problems.append(f"{path}: " + "; ".join(parts))
    if problems:
        raise CheckpointError("does not match the LTX-2.5 layout its metadata describes: " + " | ".join(problems))
    mismatched = []
    for (name, key), src in plan.sources.items():
        got = tuple(headers[src.path].tensors[src.key].shape)
        if src.rows is not None:
            got = (src.rows[1] - src.rows[0], *got[1:]) if got and got[0] >= src.rows[1] else ("fused", *got)
        mismatched.append((name, key, src, got))
    wrong = []
    states = {name: module.state_dict(keep_vars=True) for name, module in modules.items()}
    for name, key, src, got in mismatched:
        want = tuple(states[name][key].shape)
        if want != got:
            wrong.append(f"{Path(src.path).name}:{src.key} is {list(got)}, expected {list(want)} ({name}.{key})")
        elif src.gate and tuple(headers[src.path].tensors[src.gate].shape) != (want[0],):
            wrong.append(f"{Path(src.path).name}:{src.gate} is {list(headers[src.path].tensors[src.gate].shape)}, "
                         f"expected [{want[0]}]")
    if wrong:
        raise CheckpointError(f"{len(wrong)} tensor(s) with the wrong shape: " + "; ".join(sorted(wrong)[:12]))
