"""Write a miniature LTX-2.5 model directory in the official layout, with ltx-core 1.2.0's own classes.

Dev-only (tools/parity_ltx_core.py --family ltx-2.5 uses it; nothing in ``ltx2`` imports it). Every
component is built by ltx-core's configurator from the metadata ``config`` its file carries, at the
miniature widths of tests/miniature.py's 2.5 config, with random seeded weights; its state dict is
written under the names ltx-core's SDOps read back (each SDOps inverted, see ``FILE_NAMES``), and the
text encoder is packed by ltx-core's own packer (``gemma_assets.build_text_encoder_tensors_from_gemma_root``)
from a tiny random Gemma 4 saved as a Hugging Face root. ``written_equals_built`` then builds each part
back with ltx-core's SingleGPUModelBuilder and checks every tensor came back, so the files are what
ltx-core reads, not what we think it reads.

    PYTHONPATH=<LTX-2 checkout>/packages/ltx-core/src:/tmp/refdeps \\
        python tools/official_layout_ltx25.py --out /tmp/mini25
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]
GEMMA_VERSION = "gemma4-12b-ltx-v1"
FILES = {  # the official names (Lightricks/LTX-2.5), as ltx2.models.families.ltx25 lists them
    "transformer": "diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
    "text_encoder": "text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors",
    "diffusion_vae": "vae/ltx-2.5-video-vae-bf16.safetensors",
    "conv_vae": "vae/ltx-2.5-video-vae-conv-bf16.safetensors",
    "audio_vae": "vae/ltx-2.5-audio-vae-bf16.safetensors",
    "duration_head": "model_patches/ltx-2.5-duration-head-bf16.safetensors",
    "spatial_upscaler": "latent_upscale_models/ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors",
    "temporal_upscaler": "latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0.safetensors",
}
DURATION_HEAD = {"pooler_hidden_dim": 16, "num_queries": 1, "num_pooler_heads": 2, "mlp_hidden": 16}
UPSCALER = {"mid_channels": 32, "num_blocks_per_stage": 1, "dims": 3, "rational_resampler": False}


def import_core():
    """ltx-core's builders (its src on sys.path already). torchaudio, which only its audio front end uses,
    is a placeholder while the audio package is imported and only then (transformers probes it)."""
    from ltx_core.duration_head.model_configurator import DURATION_HEAD_KEY_OPS, DurationHeadConfigurator
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.transformer.model_configurator import LTXV_MODEL_COMFY_RENAMING_MAP, LTXModelConfigurator
    from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    from ltx_core.model.video_vae.model_configurator import (VAE_DECODER_COMFY_KEYS_FILTER,
                                                             VAE_ENCODER_COMFY_KEYS_FILTER, VideoDecoderConfigurator,
                                                             VideoEncoderConfigurator,
                                                             video_decoder_sd_ops_for_checkpoint)
    from ltx_core.text_encoders.gemma.embeddings_connector import (AudioEmbeddings1DConnectorConfigurator,
                                                                   Embeddings1DConnectorConfigurator)
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.encoders import encoder_configurator as te
    from ltx_core.text_encoders.gemma import gemma_assets

    stub = "torchaudio" not in sys.modules
    if stub:
        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
    try:
        from ltx_core.model.audio_vae import model_configurator as audio
    finally:
        if stub:
            del sys.modules["torchaudio"]
    return types.SimpleNamespace(**locals())


def mini_config() -> dict:
    """The metadata ``config`` of the miniature: tests/miniature.py's 2.5 config, with three dilations per vocoder
    residual block (ltx-core's AMP blocks have exactly three convolution pairs)."""
    sys.path.insert(0, str(ROOT / "tests"))
    import miniature

    config = copy.deepcopy(miniature.MINI_CONFIG_25)
    for generator in config["vocoder"].values():
        generator["resblock_dilation_sizes"] = [[1, 3, 5]] * len(generator["resblock_kernel_sizes"])
    config["diffusion_vae"] = miniature.diffusion_vae_config_25()
    return config


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded random weights where ltx-core initialises to a constant (zero gates, unit norms) or not at all
    (its scale-shift tables), so no part is inert; statistics that are not the identity, so a dropped one shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        buffers = {name for name, _ in module.named_buffers()}
        for name, tensor in module.state_dict(keep_vars=True).items():
            if not tensor.is_floating_point() or tensor.numel() < 2:
                continue
            if name in buffers and "per_channel_statistics" not in name:  # computed tables, not weights
                continue
            if "per_channel_statistics" in name or name.endswith(("latents_mean", "latents_std")):
                std = "std" in name
                tensor.copy_(torch.rand(tensor.shape, generator=gen) * 0.5 + (0.75 if std else -0.25))
            elif "scale_shift_table" in name:  # ltx-core leaves these torch.empty (the file fills them)
                tensor.copy_(torch.randn(tensor.shape, generator=gen) / tensor.shape[-1] ** 0.5)
            elif tensor.unique().numel() == 1:
                base = 1.0 if float(tensor.flatten()[0]) == 1.0 else 0.0
                tensor.copy_(base + torch.randn(tensor.shape, generator=gen) * (0.1 if base else 0.05))
    return module.eval().requires_grad_(False)


def build_modules(config: dict, seed: int = 0) -> dict[str, torch.nn.Module]:
    """Every component as ltx-core's configurators build it from its file's metadata, random and seeded."""
    core = import_core()
    meta = {"config": config}
    dh_meta = {"config": {"transformer": config["transformer"], "duration_head": DURATION_HEAD}}
    gemma = tiny_gemma(seed)
    text = gemma.config.get_text_config()
    builders = {
        "transformer": lambda: core.LTXModelConfigurator.from_metadata(meta),
        "embeddings": lambda: core.EmbeddingsProcessor(
            video_connector=core.Embeddings1DConnectorConfigurator.from_metadata(meta),
            audio_connector=core.AudioEmbeddings1DConnectorConfigurator.from_metadata(meta),
            feature_extractor=core.te._create_feature_extractor(config["transformer"], text)),
        "video_encoder": lambda: core.VideoEncoderConfigurator.from_metadata(meta),
        "conv_decoder": lambda: core.VideoDecoderConfigurator.from_metadata(meta),
        "diffusion_decoder": lambda: core.VideoDecoderConfigurator.from_metadata({"config": {"vae": config["diffusion_vae"]}}),
        "audio_encoder": lambda: core.audio.AudioEncoderConfigurator.from_metadata(meta),
        "audio_decoder": lambda: core.audio.AudioDecoderConfigurator.from_metadata(meta),
        "vocoder": lambda: core.audio.VocoderConfigurator.from_metadata(meta),
        "duration_head": lambda: core.DurationHeadConfigurator.from_metadata(dh_meta),
        "spatial_upscaler": lambda: core.LatentUpsamplerConfigurator.from_metadata({"config": upscaler_config(config, "x2")}),
        "temporal_upscaler": lambda: core.LatentUpsamplerConfigurator.from_metadata(
            {"config": upscaler_config(config, "temporal")}),
    }
    modules = {}
    for offset, (name, build) in enumerate(builders.items()):
        torch.manual_seed(seed + offset)
        modules[name] = _randomize(build(), seed + offset)
    # One VAE, two decoders and an encoder: the statistics are the VAE's, the same in every part.
    stats = modules["video_encoder"].per_channel_statistics.state_dict()
    for name in ("conv_decoder", "diffusion_decoder"):
        modules[name].per_channel_statistics.load_state_dict(stats)
    modules["audio_decoder"].per_channel_statistics.load_state_dict(modules["audio_encoder"].per_channel_statistics.state_dict())
    modules["gemma"] = gemma
    return modules


def upscaler_config(config: dict, kind: str) -> dict:
    temporal = kind == "temporal"
    return {"_class_name": "LatentUpsampler", "in_channels": config["vae"]["latent_channels"], **UPSCALER,
            "spatial_upsample": not temporal, "temporal_upsample": temporal, "spatial_scale": 2.0}


def tiny_gemma(seed: int):
    """A random Gemma 4 (transformers' gemma4_unified) at ltx2's tiny widths: hidden 32, two layers."""
    sys.path.insert(0, str(ROOT))
    from ltx2.models import tiny
    from ltx2.models.families import tiny25

    torch.manual_seed(seed + 100)
    model = tiny25.build_text_encoder(len(tiny.build_tokenizer()))
    tiny._randomize_zero_init(model, seed + 100)
    return model.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------ file names

def _diffusion_decoder_file(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ltx-core's DiffusionVideoDecoder state -> its file: fused qkv, t_embedder.mlp, static gates beside the linears
    they scale (powers of two, so stored W / g folds back exactly), and the preview head ltx-core drops (the inverse
    of ``_build_diffusion_vae_decoder_sd_ops``)."""
    out: dict[str, torch.Tensor] = {}
    gates: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if key.startswith("per_channel_statistics."):
            out[key] = value
            continue
        if ".qkv.to_k." in key or ".qkv.to_v." in key:
            continue
        if ".qkv.to_q." in key:
            leaf = key.rsplit(".", 1)[1]
            base = key.split(".qkv.to_q.")[0]
            value = torch.cat([sd[f"{base}.qkv.to_{p}.{leaf}"] for p in "qkv"])
            key = f"{base}.qkv.{leaf}"
        key = key.replace("t_embedder.timestep_embedder.linear_1.", "t_embedder.mlp.0.")
        key = key.replace("t_embedder.timestep_embedder.linear_2.", "t_embedder.mlp.2.")
        for leaf, suffix in ((".attn.proj.weight", ".gate_msa"), (".attn.proj.bias", ".gate_msa"),
                             (".mlp.w_down.weight", ".gate_mlp"), (".mlp.w_down.bias", ".gate_mlp"),
                             (".context_proj.weight", ".gate_ctx"), (".context_proj.bias", ".gate_ctx")):
            if key.endswith(leaf):
                gate_key = key.removesuffix(leaf) + suffix
                if gate_key not in gates:
                    gen = torch.Generator().manual_seed(len(gates))
                    gates[gate_key] = 2.0 ** torch.randint(-1, 2, (value.shape[0],), generator=gen).float()
                g = gates[gate_key]
                value = value / (g.unsqueeze(1) if value.ndim == 2 else g)
        out["decoder." + key] = value
    out.update({"decoder." + k: v for k, v in gates.items()})
    out["decoder.coarse_head.weight"] = torch.zeros(3, 8)
    return out


def _prefixed(sd: dict, prefix: str, stats_prefix: str | None = None) -> dict[str, torch.Tensor]:
    return {(stats_prefix if stats_prefix is not None and k.startswith("per_channel_statistics.") else prefix) + k: v
            for k, v in sd.items()}


def file_tensors(modules: dict[str, torch.nn.Module]) -> dict[str, dict[str, torch.Tensor]]:
    """{part: {file key: tensor}} for every file but the text encoder's Gemma (ltx-core's packer writes that)."""
    sd = {name: {k: v.detach().float().contiguous() for k, v in m.state_dict().items()}
          for name, m in modules.items() if name != "gemma"}
    emb = sd["embeddings"]
    connectors = {"model.diffusion_model.video_embeddings_connector." + k.removeprefix("video_connector."): v
                  for k, v in emb.items() if k.startswith("video_connector.")}
    connectors.update({"model.diffusion_model.audio_embeddings_connector." + k.removeprefix("audio_connector."): v
                       for k, v in emb.items() if k.startswith("audio_connector.")})
    projection = {"text_embedding_projection." + k.removeprefix("feature_extractor."): v
                  for k, v in emb.items() if k.startswith("feature_extractor.")}
    if len(connectors) + len(projection) != len(emb):
        raise SystemExit("embeddings processor: state keys outside its connectors and feature extractor")
    encoder = _prefixed(sd["video_encoder"], "encoder.", "")
    return {
        "transformer": {**_prefixed(sd["transformer"], "model.diffusion_model."), **connectors},
        "projection": projection,
        "conv_vae": {**encoder, **_prefixed(sd["conv_decoder"], "decoder.", "")},
        "diffusion_vae": {**encoder, **_diffusion_decoder_file(sd["diffusion_decoder"])},
        "audio_vae": {**_prefixed(sd["audio_encoder"], "audio_vae.encoder.", "audio_vae."),
                      **_prefixed(sd["audio_decoder"], "audio_vae.decoder.", "audio_vae."),
                      **_prefixed(sd["vocoder"], "vocoder.")},
        "duration_head": _prefixed(sd["duration_head"], "duration_head."),
        "spatial_upscaler": sd["spatial_upscaler"],
        "temporal_upscaler": sd["temporal_upscaler"],
    }


def _gemma_root(gemma, directory: Path) -> Path:
    """A Hugging Face Gemma root as Lightricks ships it to the packer: weights, config (with gemma_version),
    tokenizer and the processor sidecars ltx-core requires."""
    from ltx2.models import tiny

    root = directory / "gemma4-root"
    gemma.save_pretrained(root, safe_serialization=True)
    config = json.loads((root / "config.json").read_text())
    config["gemma_version"] = GEMMA_VERSION
    (root / "config.json").write_text(json.dumps(config))
    tokenizer = tiny.build_tokenizer()
    tokenizer.save_pretrained(root)
    (root / "processor_config.json").write_text(json.dumps({"processor_class": "Gemma4UnifiedProcessor"}))
    return root


def write_directory(root: Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[dict, dict]:
    """The miniature directory under `root`; returns ({part: path}, modules)."""
    core = import_core()
    config = mini_config()
    modules = build_modules(config, seed)
    tensors = file_tensors(modules)
    cast = lambda d: {k: v.to(dtype).contiguous() for k, v in d.items()}  # noqa: E731
    t_meta = {"config": json.dumps({"transformer": config["transformer"]}), "model_version": "2.5.0",
              "gemma_source_checkpoint": json.dumps({"gemma_version": GEMMA_VERSION})}
    metadata = {
        "transformer": t_meta,
        "conv_vae": {"config": json.dumps({"vae": config["vae"]})},
        "diffusion_vae": {"config": json.dumps({"vae": config["diffusion_vae"]})},
        "audio_vae": {"config": json.dumps({"audio_vae": config["audio_vae"], "vocoder": config["vocoder"]})},
        "duration_head": {"config": json.dumps({"transformer": config["transformer"], "duration_head": DURATION_HEAD})},
        "spatial_upscaler": {"config": json.dumps(upscaler_config(config, "x2"))},
        "temporal_upscaler": {"config": json.dumps(upscaler_config(config, "temporal"))},
    }
    paths = {part: root / name for part, name in FILES.items()}
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    for part, meta in metadata.items():
        save_file(cast(tensors[part]), str(paths[part]), metadata=meta)
    with tempfile.TemporaryDirectory() as tmp:
        te, te_meta = core.gemma_assets.build_text_encoder_tensors_from_gemma_root(
            str(_gemma_root(modules["gemma"], Path(tmp))), cast(tensors["projection"]), gemma_version=GEMMA_VERSION)
        te = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in te.items()}
        core.gemma_assets.save_text_encoder_safetensors(paths["text_encoder"], te, te_meta)
    return paths, modules


def build_theirs(core, paths, configurator, sd_ops=None, module_ops=()) -> torch.nn.Module:
    kwargs = {"model_sd_ops": sd_ops} if sd_ops is not None else {}
    path = paths if isinstance(paths, (str, Path)) else tuple(str(p) for p in paths)
    builder = core.SingleGPUModelBuilder(model_class_configurator=configurator, model_path=str(path) if isinstance(
        path, Path) else path, module_ops=module_ops, **kwargs)
    return builder.build(device=torch.device("cpu"), dtype=torch.float32).eval()


def reference_models(paths: dict) -> dict[str, torch.nn.Module]:
    """Every part built back from the directory by ltx-core, as ltx-pipelines' blocks build them."""
    from ltx_core.model.video_vae.transformer.apply import build_diffvae_mode_op
    from ltx_core.model.video_vae.transformer.config import DiffVAEMode

    core = import_core()
    te = str(paths["text_encoder"])
    gemma_sd_ops, gemma_module_ops = core.te.get_gemma_ops(te)
    # ltx-pipelines attaches the tokenizer and the multimodal processor; only the tokenizer is used to encode.
    tokenizer_ops = tuple(op for op in gemma_module_ops if "processor" not in op.name.lower())
    audio = core.audio
    return {
        "transformer": build_theirs(core, paths["transformer"], core.LTXModelConfigurator,
                                    core.LTXV_MODEL_COMFY_RENAMING_MAP),
        "embeddings": build_theirs(core, (paths["transformer"], te),
                                   core.te.EmbeddingsProcessorConfigurator.with_gemma_model_path(te),
                                   core.te.EMBEDDINGS_PROCESSOR_KEY_OPS),
        "text_encoder": build_theirs(core, core.te.resolve_gemma_weight_paths(te),
                                     core.te.GemmaTextEncoderConfigurator.with_gemma_model_path(te), gemma_sd_ops,
                                     tokenizer_ops),
        "video_encoder": build_theirs(core, paths["conv_vae"], core.VideoEncoderConfigurator,
                                      core.VAE_ENCODER_COMFY_KEYS_FILTER),
        "conv_decoder": build_theirs(core, paths["conv_vae"], core.VideoDecoderConfigurator,
                                     core.VAE_DECODER_COMFY_KEYS_FILTER),
        # ltx-pipelines' default DiffVAE mode (chunked eager): without natten, its eager tiled-SDPA attention.
        "diffusion_decoder": build_theirs(core, paths["diffusion_vae"], core.VideoDecoderConfigurator,
                                          core.video_decoder_sd_ops_for_checkpoint(str(paths["diffusion_vae"]),
                                                                                   diffusion_vae=True),
                                          (build_diffvae_mode_op(DiffVAEMode.CHUNKED_EAGER),)),
        "audio_encoder": build_theirs(core, paths["audio_vae"], audio.AudioEncoderConfigurator,
                                      audio.AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER),
        "audio_decoder": build_theirs(core, paths["audio_vae"], audio.AudioDecoderConfigurator,
                                      audio.AUDIO_VAE_DECODER_COMFY_KEYS_FILTER),
        "vocoder": build_theirs(core, paths["audio_vae"], audio.VocoderConfigurator, audio.VOCODER_COMFY_KEYS_FILTER),
        "duration_head": build_theirs(core, paths["duration_head"], core.DurationHeadConfigurator,
                                      core.DURATION_HEAD_KEY_OPS),
        "spatial_upscaler": build_theirs(core, paths["spatial_upscaler"], core.LatentUpsamplerConfigurator),
        "temporal_upscaler": build_theirs(core, paths["temporal_upscaler"], core.LatentUpsamplerConfigurator),
    }


def written_equals_built(modules: dict, theirs: dict) -> list[str]:
    """Problems (none expected): a tensor ltx-core did not read back as it was built."""
    problems = []
    for name, module in modules.items():
        if name == "gemma":
            built, want = theirs["text_encoder"].model.state_dict(), module.state_dict()
        else:
            built, want = theirs[name].state_dict(), module.state_dict()
        for key, value in want.items():
            got = built.get(key)
            if got is None:
                problems.append(f"{name}: {key} not loaded")
            elif got.is_meta or got.shape != value.shape or not torch.equal(got.float(), value.float()):
                problems.append(f"{name}: {key} differs")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths, modules = write_directory(args.out, args.seed)
    problems = written_equals_built(modules, reference_models(paths))
    for part, path in paths.items():
        print(f"{part}: {path}")
    print("ltx-core reads every tensor back as built" if not problems else "\n".join(problems[:20]))


if __name__ == "__main__":
    main()
