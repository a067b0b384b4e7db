"""Compare ltx2 with Lightricks' ltx-core 1.2.0 on the same weights (dev tool).

ltx-core is not a dependency (PyPI has 1.0.0 only, and it pins transformers < 5.15); give a checkout
of the LTX-2 repository and its `packages/ltx-core/src` is imported from there. It needs `einops` (and
`scipy`), e.g. `pip install --target /tmp/refdeps einops scipy` and PYTHONPATH=/tmp/refdeps for this run;
without torchaudio a placeholder module stands in for it (only ltx-core's audio encoder front end uses it).

    git clone https://github.com/Lightricks/LTX-2 && git -C LTX-2 checkout v1.2.0
    python tools/parity_ltx_core.py --ltx-core LTX-2                     # LTX-2 19B miniature, written here
    python tools/parity_ltx_core.py --ltx-core LTX-2 --family ltx-2.3    # LTX-2.3 (22B) miniature
    python tools/parity_ltx_core.py --ltx-core LTX-2 --checkpoint ltx-2-19b-distilled.safetensors

`--family` picks the miniature official file written here; with `--checkpoint` the family comes from the
file's config metadata. Both sides load the same official single file (ours through ltx2's strict loader,
theirs through ltx-core's SingleGPUModelBuilder and configurators, which read the same metadata).

1. The transformer: one call, ours through `ltx2.pipelines.stages.transformer_pass` (what the pipelines
   call: AV gates, per-token timesteps, perturbations, and for 2.3 the prompt AdaLN's sigma), theirs
   through ltx-core's X0Model, on the same latents, positions, text context and per-token timesteps.
   The table shows the largest difference of the clean estimate x0 = x - sigma_token * v per case; the
   "diffusers as called" columns call diffusers' own forward (`use_cross_timestep=False`, no hooks, the
   step's sigma for the prompt AdaLN) instead.
2. The text connectors: ltx-core's EmbeddingsProcessor (feature extractor V1 or V2 and both connectors)
   against ltx2's `connectors(...)` on the same stacked, left-padded hidden states.
3. The vocoder (2.3: with bandwidth extension): ltx-core's Vocoder / VocoderWithBWE against ltx2's
   loaded vocoder on the same mel input.

Everything runs on the CPU in float32 (a full-size checkpoint needs the memory for that). The miniature
is tests/miniature.py's, with three dilations per vocoder residual block (ltx-core's blocks need three).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("ltx-2", "ltx-2.3", "ltx-2.5")


def import_ltx_core(checkout: Path) -> dict:
    src = checkout / "packages" / "ltx-core" / "src"
    if not src.is_dir():
        raise SystemExit(f"{checkout}: no packages/ltx-core/src; give the root of an LTX-2 checkout")
    version = next((line.split('"')[1] for line in (src.parent / "pyproject.toml").read_text().splitlines()
                    if line.startswith("version")), "?")
    if version != "1.2.0":
        print(f"warning: ltx-core {version}, not 1.2.0", file=sys.stderr)
    sys.path.insert(0, str(src))
    from ltx_core.guidance.perturbations import (BatchedPerturbationConfig, Perturbation, PerturbationConfig,
                                                 PerturbationType)
    from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder
    from ltx_core.model.transformer.modality import Modality
    from ltx_core.model.transformer.model import X0Model
    from ltx_core.model.transformer.model_configurator import LTXModelConfigurator, LTXV_MODEL_COMFY_RENAMING_MAP
    from ltx_core.text_encoders.gemma.embeddings_connector import (AudioEmbeddings1DConnectorConfigurator,
                                                                   Embeddings1DConnectorConfigurator)
    from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor
    from ltx_core.text_encoders.gemma.encoders import encoder_configurator

    try:
        import torchaudio  # noqa: F401
        stub = False
    except ImportError:
        # ltx-core's audio_vae package imports torchaudio at the top for its waveform -> mel front end
        # (AudioProcessor), which nothing compared here uses; PyPI has no torchaudio for every torch. A
        # placeholder stands in while it is imported, and only then (transformers must not see it).
        import types

        sys.modules["torchaudio"] = types.ModuleType("torchaudio")
        stub = True
    try:
        from ltx_core.model.audio_vae.model_configurator import VOCODER_COMFY_KEYS_FILTER, VocoderConfigurator
    finally:
        if stub:
            del sys.modules["torchaudio"]

    class EmbeddingsProcessorFromFile(encoder_configurator.EmbeddingsProcessorConfigurator):
        """ltx-core's EmbeddingsProcessorConfigurator.from_metadata without the Gemma directory it reads
        only for Gemma's hidden size and layer count (and a version check); those are set from the file."""

        gemma_text_config = None  # SimpleNamespace(hidden_size, num_hidden_layers), set before building

        @classmethod
        def from_metadata(cls, metadata: dict) -> EmbeddingsProcessor:
            transformer_config = metadata.get("config", {}).get("transformer", {})
            return EmbeddingsProcessor(
                video_connector=Embeddings1DConnectorConfigurator.from_metadata(metadata),
                audio_connector=AudioEmbeddings1DConnectorConfigurator.from_metadata(metadata),
                feature_extractor=encoder_configurator._create_feature_extractor(transformer_config,
                                                                                 cls.gemma_text_config),
            )

    return dict(Batched=BatchedPerturbationConfig, Perturbation=Perturbation, Config=PerturbationConfig,
                Type=PerturbationType, Builder=SingleGPUModelBuilder, Modality=Modality, X0Model=X0Model,
                Configurator=LTXModelConfigurator, sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP,
                EmbeddingsConfigurator=EmbeddingsProcessorFromFile,
                embeddings_sd_ops=encoder_configurator.EMBEDDINGS_PROCESSOR_KEY_OPS,
                VocoderConfigurator=VocoderConfigurator, vocoder_sd_ops=VOCODER_COMFY_KEYS_FILTER, version=version)


def miniature_checkpoint(directory: Path, family: str) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import miniature

    # tests/miniature.py's config, with three dilations per vocoder residual block: ltx-core's ResBlock1 and
    # AMPBlock1 have exactly three convolution pairs (the real files' [1, 3, 5]); the miniature's two
    # ([1, 3]) build in diffusers only.
    config = copy.deepcopy(miniature.MINI_CONFIGS[family])
    for generator in ([config["vocoder"]] if family == "ltx-2" else config["vocoder"].values()):
        generator["resblock_dilation_sizes"] = [[1, 3, 5]] * len(generator["resblock_kernel_sizes"])
    modules = miniature.build_components(config=config, seed=3)
    name = "ltx-2.3-22b-distilled.safetensors" if family == "ltx-2.3" else "ltx-2-19b-distilled.safetensors"
    path = directory / name
    miniature.write_checkpoint(path, modules, config=config, dtype=torch.float32)
    return path


def file_family(path: Path) -> str:
    from ltx2.models import configs
    from ltx2.models.safetensors_io import read_header

    family = configs.detect_family(json.loads(read_header(str(path)).metadata["config"]), str(path))
    return "ltx-2.3" if family == configs.LTX23 else "ltx-2"


def build_theirs(core: dict, path: Path, configurator, sd_ops) -> torch.nn.Module:
    builder = core["Builder"](model_class_configurator=configurator, model_path=str(path), model_sd_ops=sd_ops)
    return builder.build(device=torch.device("cpu"), dtype=torch.float32).eval()


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float("inf") if a.shape != b.shape else float((a.float() - b.float()).abs().max())


def largest(a: torch.Tensor, b: torch.Tensor) -> str:
    if a.shape != b.shape:
        return f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    return f"{(a.float() - b.float()).abs().max():.2e}"


# ------------------------------------------------------------------------------------------ transformer

def transformer_table(core: dict, ours, theirs, family: str) -> None:
    from ltx2.pipelines.passes import Perturbation
    from ltx2.pipelines.stages import LatentGrid, Stream, TextContext, transformer_pass

    g = torch.Generator().manual_seed(0)
    frames, h, w, audio_frames, batch = 2, 2, 3, 7, 1
    video_tokens = frames * h * w
    coords = ours.rope.prepare_video_coords(batch, frames, h, w, torch.device("cpu"), fps=25)
    audio_coords = ours.audio_rope.prepare_audio_coords(batch, audio_frames, torch.device("cpu"))
    x = torch.randn(batch, video_tokens, ours.config.in_channels, generator=g)
    ax = torch.randn(batch, audio_frames, ours.config.audio_in_channels, generator=g)
    # The text context as the connectors hand it over: the caption width for the 19B (its transformer
    # projects it), each stream's own width for 2.3 (projected before the connectors).
    v2 = not ours.config.use_prompt_embeddings
    video_width = ours.config.num_attention_heads * ours.config.attention_head_dim
    audio_width = ours.config.audio_num_attention_heads * ours.config.audio_attention_head_dim
    ctx = torch.randn(batch, 16, video_width if v2 else ours.config.caption_channels, generator=g)
    actx = torch.randn(batch, 16, audio_width if v2 else ours.config.caption_channels, generator=g)
    sigma = 0.7
    scale = float(ours.config.timestep_scale_multiplier)

    def run_theirs(video_mask, audio_mask, audio_frozen, perturbation=None):
        def modality(latent, mask, positions, context, frozen):
            s = torch.zeros(batch) if frozen else torch.full((batch,), sigma)
            return core["Modality"](latent=latent, sigma=s, timesteps=(mask * s[:, None])[..., None],
                                    positions=positions, context=context, context_mask=None)
        video = modality(x, video_mask, coords, ctx, False)
        # As ltx-core's VideoLatentTools state: the first latent frame's tokens marked (the keyframe embedding).
        keyframes = torch.zeros(batch, video_tokens, 1)
        keyframes[:, : h * w] = 1.0
        video = dataclasses.replace(video, keyframes_mask=keyframes)
        audio = modality(ax, audio_mask, audio_coords, actx, audio_frozen)
        config = None
        if perturbation is not None:
            config = core["Batched"]([core["Config"](perturbation)], num_blocks=theirs.num_blocks,
                                     device=x.device, dtype=x.dtype)
        with torch.no_grad():
            return theirs(video, audio, config)

    def run_ours(video_mask, audio_mask, audio_frozen, perturbation=Perturbation(), blocks=()):
        """Through the pipelines' own transformer_pass (strength = 1 - mask)."""
        run = SimpleNamespace(model=SimpleNamespace(pipe=SimpleNamespace(transformer=ours), dtype=torch.float32),
                              transformer_passes=0)
        video = Stream(x, coords, video_tokens, strength=(1 - video_mask)[..., None])
        audio = Stream(ax, audio_coords, audio_frames, strength=(1 - audio_mask)[..., None], frozen=audio_frozen)
        context = TextContext(ctx, actx, torch.ones(batch, ctx.shape[1]))
        grid = LatentGrid(frames, h, w, audio_frames, 0, 0, 25)
        with torch.no_grad():
            v, a = transformer_pass(run, video, audio, torch.tensor([sigma * scale]), sigma, context, grid,
                                    [perturbation], blocks)
        return x - video_mask[..., None] * sigma * v, ax - audio_mask[..., None] * sigma * a

    def run_diffusers(video_mask, audio_mask):
        """diffusers' forward as it is: no hooks, each stream's own timesteps, the step's sigma."""
        s = torch.full((batch,), sigma * scale)
        kwargs = dict(hidden_states=x, audio_hidden_states=ax, encoder_hidden_states=ctx,
                      audio_encoder_hidden_states=actx, timestep=video_mask * sigma * scale,
                      audio_timestep=audio_mask * sigma * scale, num_frames=frames, height=h, width=w, fps=25,
                      audio_num_frames=audio_frames, video_coords=coords, audio_coords=audio_coords,
                      sigma=s, audio_sigma=s, use_cross_timestep=False, return_dict=False)
        with torch.no_grad():
            v, a = ours(**kwargs)
        return x - video_mask[..., None] * sigma * v, ax - audio_mask[..., None] * sigma * a

    ones_v, ones_a = torch.ones(batch, video_tokens), torch.ones(batch, audio_frames)
    image = ones_v.clone()
    image[:, : h * w] = 0.0  # first latent frame held (strength 1)
    partial = ones_v.clone()
    partial[:, : h * w] = 0.5  # strength 0.5
    block = theirs.num_blocks - 1
    T = core["Type"]
    stg = [core["Perturbation"](type=T.SKIP_VIDEO_SELF_ATTN, blocks=[block]),
           core["Perturbation"](type=T.SKIP_AUDIO_SELF_ATTN, blocks=[block])]
    mod = [core["Perturbation"](type=T.SKIP_A2V_CROSS_ATTN, blocks=None),
           core["Perturbation"](type=T.SKIP_V2A_CROSS_ATTN, blocks=None)]
    cases = [
        ("text to video", ones_v, ones_a, False, {}, None),
        ("start image held (strength 1)", image, ones_a, False, {}, None),
        ("image at strength 0.5", partial, ones_a, False, {}, None),
        ("soundtrack held (audio to video)", ones_v, torch.zeros_like(ones_a), True, {}, None),
        ("STG pass (self-attention skipped)", ones_v, ones_a, False,
         dict(perturbation=Perturbation(True, True, False), blocks=(block,)), stg),
        ("modality pass (no AV cross-attention)", ones_v, ones_a, False,
         dict(perturbation=Perturbation(isolate_modalities=True)), mod),
    ]
    print(f"\nTransformer ({family}; ours = stages.transformer_pass), largest |x0| difference:\n")
    print("| case | ours vs ltx-core, video x0 | audio x0 | diffusers as called, video | audio | "
          "case vs text to video (video x0) |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline = run_theirs(ones_v, ones_a, False)[0]
    results = {}
    for name, vm, am, frozen, extra, perturbation in cases:
        ref_v, ref_a = run_theirs(vm, am, frozen, perturbation)
        ours_v, ours_a = run_ours(vm, am, frozen, **extra)
        plain_v, plain_a = run_diffusers(vm, am) if not extra else (None, None)
        plain = (f"{largest(plain_v, ref_v)} | {largest(plain_a, ref_a)}" if plain_v is not None
                 else "(one call perturbs every sample) | ")
        effect = (ref_v - baseline).abs().max()  # the case matters: a zero difference above is not vacuous
        print(f"| {name} | {largest(ours_v, ref_v)} | {largest(ours_a, ref_a)} | {plain} | {effect:.2e} |")
        results[name] = max(diff(ours_v, ref_v), diff(ours_a, ref_a))
    return results


# ------------------------------------------------------------------------------------------ connectors

def connectors_table(core: dict, path: Path | None, ours, theirs=None) -> None:
    caption = ours.config.caption_channels
    layers = ours.config.text_proj_in_factor  # Gemma's layers + its embeddings
    if theirs is None:
        configurator = core["EmbeddingsConfigurator"]
        configurator.gemma_text_config = SimpleNamespace(hidden_size=caption, num_hidden_layers=layers - 1)
        theirs = build_theirs(core, path, configurator, core["embeddings_sd_ops"])

    g = torch.Generator().manual_seed(1)
    seq = ours.config.video_connector_num_learnable_registers or 128  # the registers tile the sequence
    # Two prompts, left-padded as Gemma's tokenizer pads: 37 and `seq` real tokens; layers of unlike scale.
    hidden = [torch.randn(2, seq, caption, generator=g) * (1 + 3 * i) + i for i in range(layers)]
    mask = torch.ones(2, seq, dtype=torch.int64)
    mask[0, : seq - 37] = 0
    with torch.no_grad():
        ref = theirs.process_hidden_states(tuple(hidden), mask, padding_side="left")
        stacked = torch.stack(hidden, dim=-1).flatten(2)  # as diffusers' pipeline hands them over
        video, audio, out_mask = ours(stacked, mask, padding_side="left")
    kind = type(theirs.feature_extractor).__name__
    print(f"\nText connectors (ltx-core EmbeddingsProcessor with {kind} vs ltx2 connectors), 2 prompts of "
          f"{seq} tokens (one left-padded):\n")
    print("| output | largest |diff| | largest |value| |")
    print("|---|---:|---:|")
    print(f"| video context | {largest(video, ref.video_encoding)} | {ref.video_encoding.abs().max():.2e} |")
    print(f"| audio context | {largest(audio, ref.audio_encoding)} | {ref.audio_encoding.abs().max():.2e} |")
    print(f"| mask | {largest(out_mask, ref.attention_mask)} | |")


# ------------------------------------------------------------------------------------------ vocoder

def vocoder_table(core: dict, path: Path | None, ours, theirs=None) -> None:
    if theirs is None:
        theirs = build_theirs(core, path, core["VocoderConfigurator"], core["vocoder_sd_ops"])
    # VocoderWithBWE asks for float32 autocast, which the CPU does not have (it warns, runs as it is: fp32).
    warnings.filterwarnings("ignore", message="In CPU autocast, but the target dtype is not supported")
    g = torch.Generator().manual_seed(2)
    mel = torch.randn(1, 2, 25, 64, generator=g) * 2 - 4  # (batch, stereo, mel frames, mel bins), log-mel-like
    with torch.no_grad():
        ref = theirs(mel)
        wav = ours(mel)
    print(f"\nVocoder (ltx-core {type(theirs).__name__} vs ltx2 {type(ours).__name__}), mel {tuple(mel.shape)} "
          f"-> waveform {tuple(ref.shape)}:\n")
    print("| output | largest |diff| | largest |value| |")
    print("|---|---:|---:|")
    print(f"| waveform | {largest(wav, ref)} | {ref.abs().max():.2e} |")
    if hasattr(theirs, "bwe_generator"):  # the stages of the bandwidth extension, to place a difference
        with torch.no_grad():
            low_ref, low = theirs.vocoder(mel), ours.vocoder(mel)
            print(f"| stage 1 (16 kHz vocoder) | {largest(low, low_ref)} | {low_ref.abs().max():.2e} |")
            mel_ref = theirs._compute_mel(low_ref)
            mel_ours = ours.mel_stft(low_ref.flatten(0, 1))[0].unflatten(0, (low_ref.shape[0], -1))
            print(f"| log-mel of stage 1 (same input) | {largest(mel_ours, mel_ref)} | {mel_ref.abs().max():.2e} |")
            res_ref = theirs.bwe_generator(mel_ref.transpose(2, 3))
            res = ours.bwe_generator(mel_ref.transpose(2, 3))
            print(f"| BWE generator (same input) | {largest(res, res_ref)} | {res_ref.abs().max():.2e} |")
            print(f"| resampler (same input) | {largest(ours.resampler(low_ref), theirs.resampler(low_ref))} | |")

# ------------------------------------------------------------------------------------------ LTX-2.5

PROMPT = "A red fox runs across a snowy field at dawn, its breath steaming; wind hisses over the snow."


def ltx25_components(model, theirs: dict) -> dict[str, tuple[float, float]]:
    """Each LTX-2.5 component, ours as the pipelines call it, against ltx-core's on the same input:
    {row: (largest |diff|, largest |value| of ltx-core's output)}."""
    from ltx2.models.diffusion_decode import diffusion_decode
    from ltx2.pipelines import stages, temporal

    pipe = model.pipe
    rows: dict[str, tuple[float, float]] = {}
    row = lambda name, ours, ref: rows.__setitem__(name, (diff(ours, ref), float(ref.abs().max())))  # noqa: E731
    with torch.no_grad():
        # Gemma 4: ltx-core's encoder (its tokenizer: <bos> first, left-padded to 1024) and its embeddings
        # processor, against the features our pipeline hands its connectors and the contexts it gets back.
        hidden, mask = theirs["text_encoder"].encode([PROMPT])[0]
        ref = theirs["embeddings"].process_hidden_states(hidden, mask)
        embeds, our_mask, _, _ = pipe.encode_prompt(prompt=PROMPT, do_classifier_free_guidance=False,
                                                    max_sequence_length=pipe.tokenizer_max_length,
                                                    device=torch.device("cpu"), dtype=torch.float32)
        row("Gemma 4 features (every hidden state, 1024 tokens)", embeds, torch.stack(hidden, dim=-1).flatten(2))
        row("Gemma 4 attention mask", our_mask.float(), mask.float())
        context = stages.encode_prompt(model, PROMPT, "", guided=False).positive
        row("video context (Gemma 4 + projection + connector)", context.video, ref.video_encoding)
        row("audio context", context.audio, ref.audio_encoding)
        # The duration head on the contexts (the pipelines: the positive prompt's connector outputs).
        row("duration head (seconds)", model.duration_head(context.video, context.audio),
            theirs["duration_head"](ref.video_encoding, ref.audio_encoding))

        g = torch.Generator().manual_seed(4)
        z = torch.randn(1, pipe.vae.config.latent_channels, 2, 3, 3, generator=g)  # normalised, as denoised
        mean, std, scaling = pipe.vae.latents_mean, pipe.vae.latents_std, pipe.vae.config.scaling_factor
        raw = pipe._denormalize_latents(z, mean, std, scaling)
        # ltx-core's decoders take the normalised latent and un-normalise it with their own statistics.
        # Stage 5 starts from noise: both draw it from a generator seeded alike. Besides 2x3x3: the size
        # floor (2x1x1, padded), one latent frame, and a grid wider than tall (stage 5's width slabs);
        # the row is the largest difference of the four.
        worst = (0.0, 0.0)
        for shape in ((2, 3, 3), (2, 1, 1), (1, 3, 3), (3, 4, 5)):
            zd = z if shape == (2, 3, 3) else torch.randn(1, z.shape[1], *shape, generator=torch.Generator().manual_seed(6))
            ours = diffusion_decode(model.diffusion_decoder, pipe._denormalize_latents(zd, mean, std, scaling),
                                    torch.Generator().manual_seed(5))
            ref = theirs["diffusion_decoder"](zd, generator=torch.Generator().manual_seed(5))
            worst = max(worst, (diff(ours, ref), float(ref.abs().max())))
        rows["diffusion video decoder (pixels; latents 2x3x3, 2x1x1, 1x3x3, 3x4x5)"] = worst
        row("conv video decoder (pixels)", stages.vae_decode(pipe.vae, raw), theirs["conv_decoder"](z))

        grid = stages.LatentGrid(2, 3, 3, 0, 0, 9, 25)
        video = stages.Stream(pipe._pack_latents(z), None, 18)
        unpack = lambda tokens, f, h, w: pipe._unpack_latents(tokens, f, h, w, 1, 1)  # noqa: E731
        from ltx_core.model.upsampler.model import upsample_video

        row("spatial upscaler x2 (normalised latent)", unpack(stages.upsample(model, video, grid), 2, 6, 6),
            upsample_video(z, theirs["video_encoder"], theirs["spatial_upscaler"]))
        row("temporal upscaler x2 (normalised latent)", unpack(temporal.upsample_in_time(model, video, grid), 3, 3, 3),
            upsample_video(z, theirs["video_encoder"], theirs["temporal_upscaler"]))

        audio_vae = pipe.audio_vae
        za = torch.randn(1, audio_vae.config.latent_channels, 7, audio_vae.config.mel_bins // 4, generator=g)
        packed = pipe._denormalize_audio_latents(pipe._pack_audio_latents(za), audio_vae.latents_mean,
                                                 audio_vae.latents_std)
        mel = audio_vae.decode(pipe._unpack_audio_latents(packed, 7, num_mel_bins=za.shape[-1]), return_dict=False)[0]
        ref_mel = theirs["audio_decoder"](za)
        row("audio VAE decoder (mel)", mel, ref_mel)
        row("vocoder with bandwidth extension (48 kHz)", pipe.vocoder(ref_mel), theirs["vocoder"](ref_mel))
    return rows


def ltx25(core: dict, root: Path | None) -> dict:
    """The LTX-2.5 comparison on a miniature directory written by ltx-core (tools/official_layout_ltx25.py),
    loaded by ltx2 as a user's directory is. Returns {"written": problems, "transformer": {case: diff},
    "components": rows}."""
    sys.path.insert(0, str(ROOT / "tools"))
    import official_layout_ltx25 as layout

    from ltx2.models.loaded import load_model

    with tempfile.TemporaryDirectory() as tmp:
        directory = root or Path(tmp)
        paths, modules = layout.write_directory(directory, seed=0)
        theirs = layout.reference_models(paths)
        written = layout.written_equals_built(modules, theirs)
        print(f"miniature LTX-2.5 written by ltx-core {core['version']} in {directory}: "
              + ("ltx-core reads every tensor back as built" if not written else "; ".join(written[:5])))
        model = load_model(str(directory), device="cpu", models_dir=str(directory))
    x0 = core["X0Model"](theirs["transformer"]).eval()
    transformer = transformer_table(core, model.pipe.transformer, x0, "ltx-2.5")
    connectors_table(core, None, model.pipe.connectors, theirs["embeddings"])
    vocoder_table(core, None, model.pipe.vocoder, theirs["vocoder"])
    rows = ltx25_components(model, theirs)
    print("\nLTX-2.5 components (ours as the pipelines call them vs ltx-core):\n")
    print("| component | largest |diff| | largest |value| |")
    print("|---|---:|---:|")
    for name, (d, v) in rows.items():
        print(f"| {name} | {d:.2e} | {v:.2e} |")
    return {"written": written, "transformer": transformer, "components": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltx-core", required=True, type=Path, help="root of an LTX-2 repository checkout (v1.2.0)")
    parser.add_argument("--checkpoint", type=Path, help="an official single file; default: a miniature one")
    parser.add_argument("--family", choices=FAMILIES,
                        help="the miniature to write (default ltx-2); with --checkpoint, read from the file")
    parser.add_argument("--only", choices=("transformer", "connectors", "vocoder"), action="append",
                        help="compare only these parts (repeatable; default: all three)")
    parser.add_argument("--keep", type=Path, help="ltx-2.5: write the miniature directory here and keep it")
    args = parser.parse_args()
    core = import_ltx_core(args.ltx_core)
    sys.path.insert(0, str(ROOT))
    if args.family == "ltx-2.5":
        if args.checkpoint:
            raise SystemExit("--family ltx-2.5 compares a miniature directory written here; --checkpoint is one file")
        print(f"ltx-core {core['version']} from {args.ltx_core}; ltx-2.5; CPU, float32")
        ltx25(core, args.keep)
        return
    from ltx2.models.loading import load_single_file

    parts = args.only or ["transformer", "connectors", "vocoder"]
    with tempfile.TemporaryDirectory() as tmp:
        if args.checkpoint:
            family = file_family(args.checkpoint)
            if args.family and args.family != family:
                raise SystemExit(f"{args.checkpoint}: its config says {family}, not {args.family}")
            path = args.checkpoint
        else:
            family = args.family or "ltx-2"
            path = miniature_checkpoint(Path(tmp), family)
        print(f"ltx-core {core['version']} from {args.ltx_core}; {family}; checkpoint "
              f"{args.checkpoint or 'miniature (written here)'}; CPU, float32")
        # The kind (distilled or dev) only labels the load report; a file named neither way loads too.
        ours = load_single_file(str(path), dtype=torch.float32, kind="distilled")[0]
        if "transformer" in parts:
            theirs = core["X0Model"](build_theirs(core, path, core["Configurator"], core["sd_ops"])).eval()
            transformer_table(core, ours["transformer"], theirs, family)
            del theirs
        if "connectors" in parts:
            connectors_table(core, path, ours["connectors"])
        if "vocoder" in parts:
            vocoder_table(core, path, ours["vocoder"])


if __name__ == "__main__":
    main()
