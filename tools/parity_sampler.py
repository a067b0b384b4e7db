"""The sampler against ltx-pipelines 1.2.0: sigmas, transformer inputs and latents per step (dev tool).

ltx-pipelines' own pipeline objects (DistilledPipeline, ...) run on a miniature LTX-2.5 directory written
by ltx-core itself (tools/official_layout_ltx25.py); ltx2's `generate()` runs on the same directory, loaded
as a user's is. Each side's transformer is its own (built from the same files; tools/parity_ltx_core.py
shows they agree to ~1e-6), wrapped so that every call is recorded: the latents it is given, the
per-token timesteps (sigma units), the RoPE positions, the step's sigma. Every denoising stage is recorded
too: its sigmas, its starting latents (the seeded noise, conditioned tokens) and its final latents. The
table is the largest difference per stage and quantity; the latents given to call k + 1 are the latents
after sampler step k.

ltx-pipelines runs in bfloat16 (DistilledPipeline hard-codes it); here its module's `torch.bfloat16` reads
float32, so the whole reference runs in float32 as ltx2 does on the CPU. Its media package imports
OpenImageIO (EXR stills only) and ltx-core's audio package torchaudio: placeholders stand in for them.

    PYTHONPATH=/tmp/refdeps python tools/parity_sampler.py --ltx-core /tmp/ref
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A red fox runs across a snowy field at dawn, its breath steaming; wind hisses over the snow."
SEED = 42
WIDTH = HEIGHT = 128  # stage 1 at 64 x 64 (2 x 2 latents), stage 2 at 4 x 4
FRAMES, FPS = 9, 25  # 2 latent frames
IMAGE_CRF = 18  # LTX-2.5's (ltx-pipelines' LTX_2_4_IMAGE_CRF)


def import_pipelines(checkout: Path) -> types.SimpleNamespace:
    packages = checkout / "packages"
    for name in ("ltx-core", "ltx-pipelines"):
        src = str(packages / name / "src")
        if src not in sys.path:
            sys.path.insert(0, src)
    import transformers  # noqa: F401  (probes torchaudio once, before any placeholder exists)

    placeholders = []
    for name in ("torchaudio", "OpenImageIO"):
        try:
            __import__(name)
        except ImportError:
            module = types.ModuleType(name)
            module.__spec__ = importlib.machinery.ModuleSpec(name, None)
            sys.modules[name] = module
            placeholders.append(name)
    try:
        from ltx_pipelines import distilled
        from ltx_pipelines.utils import blocks
        from ltx_pipelines.utils.args import ImageConditioningInput
        from ltx_pipelines.utils.model_paths import ModelPaths
    finally:
        for name in placeholders:
            if name == "torchaudio":  # transformers must not see it later
                del sys.modules[name]
    return types.SimpleNamespace(distilled=distilled, blocks=blocks, ModelPaths=ModelPaths,
                                 Image=ImageConditioningInput)


class _Float32Torch(types.ModuleType):
    """`torch` for an ltx-pipelines module, with bfloat16 read as float32."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


@contextlib.contextmanager
def float32(*modules):
    saved = [m.torch for m in modules]
    for m in modules:
        m.torch = _Float32Torch()
    try:
        yield
    finally:
        for m, t in zip(modules, saved):
            m.torch = t


# ------------------------------------------------------------------------------------ recordings

class Recording:
    """What one side did: per stage, its sigmas, starting and final latents and every transformer call."""

    def __init__(self):
        self.stages: list[dict] = []

    def begin(self, sigmas, video, audio):
        self.stages.append({"sigmas": torch.as_tensor(sigmas, dtype=torch.float64).clone(),
                            "start": (video.detach().float().clone(), audio.detach().float().clone()),
                            "calls": []})

    def call(self, **tensors):
        self.stages[-1]["calls"].append({k: v.detach().float().clone() for k, v in tensors.items()})

    def output(self, **tensors):
        self.stages[-1]["calls"][-1].update({k: v.detach().float().clone() for k, v in tensors.items()})

    def end(self, video, audio):
        self.stages[-1]["final"] = (video.detach().float().clone(), audio.detach().float().clone())


def record_reference(ref, pipeline, rec: Recording, channels: tuple[int, int]):
    """Wrap the pipeline's DiffusionStage (stage boundaries) and ltx-core's X0Model (every call)."""
    blocks = ref.blocks
    stage = pipeline.stage

    class Stage:
        def __getattr__(self, name):
            return getattr(stage, name)

        def __call__(self, *args, **kwargs):
            loop = kwargs.get("loop") or blocks.euler_denoising_loop

            def recorded(*, sigmas, video_state, audio_state, **rest):
                rec.begin(sigmas, video_state.latent, audio_state.latent)
                video, audio = loop(sigmas=sigmas, video_state=video_state, audio_state=audio_state, **rest)
                rec.end(video.latent, audio.latent)
                return video, audio

            return stage(*args, **{**kwargs, "loop": recorded})

    base = blocks.X0Model

    class RecordingX0(base):
        def forward(self, video, audio, perturbations=None):
            rec.call(video_latent=video.latent, audio_latent=audio.latent,
                     video_timesteps=video.timesteps.reshape(video.latent.shape[:2]),
                     audio_timesteps=audio.timesteps.reshape(audio.latent.shape[:2]),
                     video_positions=video.positions, audio_positions=audio.positions,
                     video_sigma=video.sigma, audio_sigma=audio.sigma, video_context=video.context,
                     audio_context=audio.context)
            x0_video, x0_audio = super().forward(video, audio, perturbations)
            rec.output(video_x0=x0_video, audio_x0=x0_audio)
            return x0_video, x0_audio

    # DiffusionStage sizes its empty latents with the full models' channels (128 video, 8 audio); the
    # miniature's are fewer. Only the channel count is changed; frames, rows, mel bins are its own.
    video_shape, audio_shape = blocks.VideoLatentShape, blocks.AudioLatentShape
    blocks.VideoLatentShape = types.SimpleNamespace(
        from_pixel_shape=lambda shape, **kw: video_shape.from_pixel_shape(shape, latent_channels=channels[0], **kw))
    blocks.AudioLatentShape = types.SimpleNamespace(
        from_video_pixel_shape=lambda shape, **kw: audio_shape.from_video_pixel_shape(shape, channels=channels[1], **kw))

    def restore():
        blocks.X0Model, blocks.VideoLatentShape, blocks.AudioLatentShape = base, video_shape, audio_shape

    pipeline.stage = Stage()
    blocks.X0Model = RecordingX0
    return restore


@contextlib.contextmanager
def record_ours(model, rec: Recording):
    from ltx2.pipelines import stages

    transformer = model.pipe.transformer
    scale = float(transformer.config.timestep_scale_multiplier)
    denoise = stages.denoise

    def hook(module, args, kwargs):
        video, audio = kwargs["hidden_states"], kwargs["audio_hidden_states"]
        # A timestep per sample, or per token where tokens are conditioned; the reference's are per token.
        token = lambda t, x: (t / scale).reshape(x.shape[0], -1).expand(x.shape[:2])  # noqa: E731
        rec.call(video_latent=video, audio_latent=audio, video_timesteps=token(kwargs["timestep"], video),
                 audio_timesteps=token(kwargs["audio_timestep"], audio),
                 video_positions=kwargs["video_coords"], audio_positions=kwargs["audio_coords"],
                 video_sigma=kwargs["sigma"] / scale, audio_sigma=kwargs["audio_sigma"] / scale,
                 video_context=kwargs["encoder_hidden_states"], audio_context=kwargs["audio_encoder_hidden_states"])

    def output(module, args, kwargs, out):
        """The clean estimates, x0 = x - (per-token sigma) v, as ltx-core's X0Model returns them."""
        call = rec.stages[-1]["calls"][-1]
        rec.output(video_x0=call["video_latent"] - call["video_timesteps"][..., None] * out[0].float(),
                   audio_x0=call["audio_latent"] - call["audio_timesteps"][..., None] * out[1].float())

    def recorded(run, video, audio, prompt, sigmas, *args, **kwargs):
        rec.begin(list(sigmas) + [0.0], video.latents, audio.latents)
        video, audio = denoise(run, video, audio, prompt, sigmas, *args, **kwargs)
        rec.end(video.latents, audio.latents)
        return video, audio

    handles = [transformer.register_forward_pre_hook(hook, with_kwargs=True),
               transformer.register_forward_hook(output, with_kwargs=True)]
    stages.denoise = recorded
    try:
        yield
    finally:
        stages.denoise = denoise
        for handle in handles:
            handle.remove()


# ------------------------------------------------------------------------------------------ runs

def image_file(directory: Path) -> Path:
    """A smooth, deterministic test picture (gradients and a disc), as PNG."""
    from PIL import Image

    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    disc = ((x - 70) ** 2 + (y - 40) ** 2 < 600).astype(np.float32)
    rgb = np.stack([x / 127 * 255, y / 95 * 255, 255 * disc], axis=-1).astype(np.uint8)
    path = directory / "start.png"
    Image.fromarray(rgb).save(path)
    return path


def run_reference(ref, paths: dict, image: Path | None, channels: tuple[int, int]) -> Recording:
    """DistilledPipeline's own __call__; `channels`: the miniature's (video, audio) latent channels."""
    distilled = ref.distilled
    rec = Recording()
    with float32(distilled):
        model_paths = ref.ModelPaths.from_split(
            transformer_path=str(paths["transformer"]), text_encoder_path=str(paths["text_encoder"]),
            video_vae_path=str(paths["conv_vae"]), audio_vae_path=str(paths["audio_vae"]),
            duration_head_path=str(paths["duration_head"]))
        pipeline = distilled.DistilledPipeline(model_paths, str(paths["spatial_upscaler"]), [],
                                               device=torch.device("cpu"))
        # ltx-core attaches Gemma 4's multimodal processor too, which needs sidecars the miniature's tiny Gemma
        # has not; only the tokenizer encodes a prompt, so the processor's op is left out.
        encoder = pipeline.prompt_encoder
        builder = encoder._text_encoder_builder
        encoder._text_encoder_builder = builder.with_module_ops(
            tuple(op for op in builder.module_ops if "processor" not in op.name.lower()))
        restore = record_reference(ref, pipeline, rec, channels)
        try:
            # ltx-pipelines reads the CRF from the video VAE file's model_version, which the miniature's VAE files
            # do not carry (only its transformer's does): the 2.5 CRF (18, ltx2's family value) is given.
            images = [ref.Image(str(image), 0, 1.0, IMAGE_CRF)] if image else []
            with torch.inference_mode():
                pipeline(prompt=PROMPT, seed=SEED, height=HEIGHT, width=WIDTH, frame_rate=FPS, images=images,
                         num_frames=FRAMES)
        finally:
            restore()
    return rec


def run_ours(model, image: Path | None) -> Recording:
    from PIL import Image

    from ltx2.pipelines.conditioning import Conditioning
    from ltx2.pipelines.generate import generate

    rec = Recording()
    request = {"prompt": PROMPT, "seed": SEED, "width": WIDTH, "height": HEIGHT, "num_frames": FRAMES, "fps": FPS,
               "use_multiscale": True}
    conditioning = Conditioning()
    if image:
        conditioning = Conditioning(image_start=Image.open(image).convert("RGB"))
    with record_ours(model, rec):
        generate(model, request, conditioning=conditioning)
    return rec


# ---------------------------------------------------------------------------------------- compare

def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        a, b = a.squeeze(), b.squeeze()
    return float("inf") if a.shape != b.shape else float((a - b).abs().max())


def compare(ours: Recording, ref: Recording) -> dict[str, float]:
    """{row: largest difference}; inf where the shapes or counts differ."""
    rows: dict[str, float] = {}
    rows["stages"] = 0.0 if len(ours.stages) == len(ref.stages) else float("inf")
    for i, (o, r) in enumerate(zip(ours.stages, ref.stages), start=1):
        name = f"stage {i}"
        rows[f"{name}: sigmas"] = _diff(o["sigmas"], r["sigmas"])
        rows[f"{name}: transformer calls"] = 0.0 if len(o["calls"]) == len(r["calls"]) else float("inf")
        rows[f"{name}: starting video latents (seeded noise)"] = _diff(o["start"][0], r["start"][0])
        rows[f"{name}: starting audio latents"] = _diff(o["start"][1], r["start"][1])
        for key in ("video_latent", "audio_latent", "video_timesteps", "audio_timesteps", "video_positions",
                    "audio_positions", "video_sigma", "audio_sigma", "video_context", "audio_context", "video_x0", "audio_x0"):
            worst = max((_diff(oc[key], rc[key]) for oc, rc in zip(o["calls"], r["calls"])), default=float("inf"))
            rows[f"{name}: transformer input {key.replace('_', ' ')}"] = worst
        rows[f"{name}: final video latents"] = _diff(o["final"][0], r["final"][0])
        rows[f"{name}: final audio latents"] = _diff(o["final"][1], r["final"][1])
    return rows


def distilled_cases(checkout: Path, directory: Path | None = None) -> dict[str, dict[str, float]]:
    """The distilled LTX-2.5 two-stage pipeline, text to video and with a start image: {case: rows}."""
    ref = import_pipelines(checkout)
    sys.path.insert(0, str(ROOT / "tools"))
    import official_layout_ltx25 as layout

    from ltx2.models.loaded import load_model

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = directory or Path(tmp)
        paths, _ = layout.write_directory(root, seed=0)
        model = load_model(str(root), device="cpu", models_dir=str(root))
        image = image_file(Path(tmp))
        channels = (model.pipe.vae.config.latent_channels, model.pipe.audio_vae.config.latent_channels)
        for case, picture in (("distilled two-stage, text to video", None),
                              ("distilled two-stage, start image", image)):
            results[case] = compare(run_ours(model, picture), run_reference(ref, paths, picture, channels))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltx-core", type=Path, default=Path("/tmp/ref"), help="an LTX-2 checkout at v1.2.0")
    parser.add_argument("--keep", type=Path, help="write the miniature directory here and keep it")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    results = distilled_cases(args.ltx_core, args.keep)
    for case, rows in results.items():
        print(f"\n{case} (ltx2 generate() vs ltx-pipelines 1.2.0), largest |difference|:\n")
        print("| quantity | largest |diff| |")
        print("|---|---:|")
        for name, value in rows.items():
            print(f"| {name} | {value:.2e} |")


if __name__ == "__main__":
    main()
