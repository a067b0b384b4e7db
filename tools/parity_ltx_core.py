"""Compare one denoising call of ours with Lightricks' ltx-core 1.2.0 on the same weights (dev tool).

ltx-core is not a dependency (PyPI has 1.0.0 only, and it pins transformers < 5.15); give a checkout
of the LTX-2 repository and its `packages/ltx-core/src` is imported from there. Its transformer
needs `einops` (`pip install einops` in a scratch environment).

    git clone https://github.com/Lightricks/LTX-2 && git -C LTX-2 checkout v1.2.0
    python tools/parity_ltx_core.py --ltx-core LTX-2                # a miniature official file, written here
    python tools/parity_ltx_core.py --ltx-core LTX-2 --checkpoint ltx-2-19b-distilled.safetensors

Both sides load the same official single file (ours through ltx2's strict loader, theirs through
ltx-core's Builder) and get the same latents, positions, text context and per-token timesteps. The
table shows the largest difference of the clean estimate x0 = x - sigma_token * v for each case: the
ltx-core semantics we follow (AV gates, held soundtrack, partial strength, STG and modality passes)
should agree to float32 rounding; the "diffusers as called" rows show what calling diffusers' own
forward (`use_cross_timestep=False`, no hooks) gives instead.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def import_ltx_core(checkout: Path):
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

    return dict(Batched=BatchedPerturbationConfig, Perturbation=Perturbation, Config=PerturbationConfig,
                Type=PerturbationType, Builder=SingleGPUModelBuilder, Modality=Modality, X0Model=X0Model,
                Configurator=LTXModelConfigurator, sd_ops=LTXV_MODEL_COMFY_RENAMING_MAP, version=version)


def miniature_checkpoint(directory: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import miniature

    modules = miniature.build_components(seed=3)
    path = directory / "ltx-2-19b-distilled.safetensors"
    miniature.write_checkpoint(path, modules, dtype=torch.float32)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltx-core", required=True, type=Path, help="root of an LTX-2 repository checkout (v1.2.0)")
    parser.add_argument("--checkpoint", type=Path, help="an official single file; default: a miniature one")
    args = parser.parse_args()
    core = import_ltx_core(args.ltx_core)
    sys.path.insert(0, str(ROOT))
    from ltx2.models.loading import load_single_file
    from ltx2.pipelines.passes import Perturbation, gate_timesteps, reference_semantics

    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint or miniature_checkpoint(Path(tmp))
        ours = load_single_file(str(path), dtype=torch.float32)[0]["transformer"]
        builder = core["Builder"](model_class_configurator=core["Configurator"], model_path=str(path),
                                  model_sd_ops=core["sd_ops"])
        theirs = core["X0Model"](builder.build(device=torch.device("cpu"), dtype=torch.float32)).eval()

    g = torch.Generator().manual_seed(0)
    frames, h, w, audio_frames, batch = 2, 2, 3, 7, 1
    video_tokens = frames * h * w
    coords = ours.rope.prepare_video_coords(batch, frames, h, w, torch.device("cpu"), fps=25)
    audio_coords = ours.audio_rope.prepare_audio_coords(batch, audio_frames, torch.device("cpu"))
    x = torch.randn(batch, video_tokens, ours.config.in_channels, generator=g)
    ax = torch.randn(batch, audio_frames, ours.config.audio_in_channels, generator=g)
    ctx = torch.randn(batch, 16, ours.config.caption_channels, generator=g)
    actx = torch.randn(batch, 16, ours.config.caption_channels, generator=g)
    sigma = 0.7

    def run_theirs(video_mask, audio_mask, audio_frozen, perturbation=None):
        def modality(latent, mask, positions, context, frozen):
            s = torch.zeros(batch) if frozen else torch.full((batch,), sigma)
            return core["Modality"](latent=latent, sigma=s, timesteps=(mask * s[:, None])[..., None], positions=positions,
                                    context=context, context_mask=None)
        video = modality(x, video_mask, coords, ctx, False)
        audio = modality(ax, audio_mask, audio_coords, actx, audio_frozen)
        config = None
        if perturbation is not None:
            config = core["Batched"]([core["Config"](perturbation)], num_blocks=theirs.num_blocks,
                                     device=x.device, dtype=x.dtype)
        with torch.no_grad():
            return theirs(video, audio, config)

    def run_ours(video_mask, audio_mask, audio_frozen, perturbation=Perturbation(), hooks=True, blocks=()):
        vt, at = video_mask * sigma * 1000, audio_mask * sigma * 1000
        kwargs = dict(hidden_states=x, audio_hidden_states=ax, encoder_hidden_states=ctx,
                      audio_encoder_hidden_states=actx, timestep=vt, audio_timestep=at, num_frames=frames,
                      height=h, width=w, fps=25, audio_num_frames=audio_frames, video_coords=coords,
                      audio_coords=audio_coords, use_cross_timestep=False, return_dict=False)
        with torch.no_grad():
            if hooks:
                video_sigma = torch.full((batch,), sigma)
                audio_sigma = torch.zeros(batch) if audio_frozen else video_sigma
                with reference_semantics(ours, gate_timesteps(ours, audio_sigma), gate_timesteps(ours, video_sigma),
                                         [perturbation], blocks):
                    v, a = ours(**kwargs)
            else:
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
    print(f"ltx-core {core['version']} from {args.ltx_core}; checkpoint {args.checkpoint or 'miniature (written here)'}")
    print("\n| case | ours vs ltx-core, video x0 | audio x0 | diffusers as called, video | audio | "
          "case vs text to video (video x0) |")
    print("|---|---:|---:|---:|---:|---:|")
    baseline = run_theirs(ones_v, ones_a, False)[0]
    for name, vm, am, frozen, extra, perturbation in cases:
        ref_v, ref_a = run_theirs(vm, am, frozen, perturbation)
        ours_v, ours_a = run_ours(vm, am, frozen, **extra)
        plain_v, plain_a = run_ours(vm, am, frozen, hooks=False) if not extra else (None, None)
        plain = (f"{(plain_v - ref_v).abs().max():.2e} | {(plain_a - ref_a).abs().max():.2e}" if plain_v is not None
                 else "(one call perturbs every sample) | ")
        effect = (ref_v - baseline).abs().max()  # the case matters: a zero difference above is not vacuous
        print(f"| {name} | {(ours_v - ref_v).abs().max():.2e} | {(ours_a - ref_a).abs().max():.2e} | {plain} | "
              f"{effect:.2e} |")


if __name__ == "__main__":
    main()
