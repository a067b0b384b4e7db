"""The sampler against ltx-pipelines 1.2.0: sigmas, transformer inputs and latents per pass (dev tool).

ltx-pipelines' own pipeline objects run on a miniature checkpoint ltx-core reads, and ltx2's `generate()` on
the same files, loaded as a user's are:

- LTX-2.5, a directory written by ltx-core itself (tools/official_layout_ltx25.py), plus a dev transformer
  (the same weights under the dev name) and a distilled LoRA in the official key style: DistilledPipeline
  (text to video, start image, start and end images), TI2VidOneStagePipeline with the multi-modal guider
  (text to video, start image) and TI2VidTwoStagesPipeline with the distilled LoRA in stage 2;
- LTX-2.3, a single file (tools/parity_ltx_core.py's miniature) with a tiny Gemma 3 root in the published
  key layout: DistilledPipeline (text to video, start and end images).

Each side's transformer is its own (built from the same files; tools/parity_ltx_core.py shows they agree to
~1e-6), wrapped so that every call is recorded: the latents it is given, the per-token timesteps (sigma units),
the RoPE positions, the step's sigma, the contexts, the clean estimates. A guided step's passes (cond, uncond,
STG, modality) are compared one sample at a time, in that order. Every denoising stage is recorded too: its
sigmas, its starting latents (the seeded noise, conditioned tokens) and its final latents. The table is the
largest difference per stage and quantity; the latents given to pass k + 1 are the latents after step k.

ltx-pipelines runs in bfloat16 (its pipelines hard-code it); here their modules' `torch.bfloat16` reads
float32, and LoRAs are fused in float32 (see `float32`), so the whole reference runs in float32 as ltx2 does
on the CPU. Its media package imports OpenImageIO (EXR stills only) and ltx-core's audio package torchaudio:
placeholders stand in for them. The dev cases run 4 steps (the family's 30 would take minutes here) and
perturb the miniature's last block with STG (the family's block 28 is past it); both sides are given the same.

    PYTHONPATH=/tmp/refdeps python tools/parity_sampler.py --ltx-core /tmp/ref [--case NAME ...]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.machinery
import shutil
import sys
import tempfile
import types
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "A red fox runs across a snowy field at dawn, its breath steaming; wind hisses over the snow."
SEED = 42
WIDTH = HEIGHT = 128  # stage 1 at 64 x 64 (2 x 2 latents), stage 2 at 4 x 4
FRAMES, FPS = 9, 25  # 2 latent frames
IMAGE_CRF = 18  # LTX-2.5's (ltx-pipelines' LTX_2_4_IMAGE_CRF)
NEGATIVE = "blurry, distorted, low quality, still frame"
DEV_STEPS = 4  # the dev cases' stage-1 steps, given to both sides (the family's 30 would take minutes here)
DISTILLED = ("distilled", "retake", "ic-lora", "extend")  # the pipelines that run the distilled transformer


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
        from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, LoraPathStrengthAndSDOps, fuse_loras
        from ltx_pipelines import distilled, ic_lora, retake, ti2vid_one_stage, ti2vid_two_stages
        from ltx_pipelines.utils import blocks
        from ltx_pipelines.utils.constants import LTX_2_4_PARAMS
        from ltx_pipelines.utils.args import ImageConditioningInput
        from ltx_pipelines.utils.model_paths import ModelPaths
    finally:
        for name in placeholders:
            if name == "torchaudio":  # transformers must not see it later
                del sys.modules[name]
    return types.SimpleNamespace(distilled=distilled, one_stage=ti2vid_one_stage, two_stages=ti2vid_two_stages,
                                 retake=retake, ic_lora=ic_lora,
                                 blocks=blocks, ModelPaths=ModelPaths, Image=ImageConditioningInput,
                                 Lora=lambda path: LoraPathStrengthAndSDOps(str(path), 1.0, LTXV_LORA_COMFY_RENAMING_MAP),
                                 params=LTX_2_4_PARAMS, fuse_loras=fuse_loras)


class _Float32Torch(types.ModuleType):
    """`torch` for an ltx-pipelines module, with bfloat16 read as float32."""

    def __init__(self):
        super().__init__("torch")

    def __getattr__(self, name):
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


@contextlib.contextmanager
def float32(fuse_loras, *modules):
    """The pipeline `modules` with bfloat16 read as float32, and LoRAs fused in float32: ltx-core fuses in
    bfloat16 (its bf16_fuse_rule adds the delta to the weight in bf16, so a fused float32 weight comes back
    rounded to bf16, ~1e-3 off here) except on MPS, where its own `device_fuse_rule` fuses in float32; that
    switch is taken on the CPU too."""
    saved = [m.torch for m in modules]
    rule = fuse_loras.device_fuse_rule
    for m in modules:
        m.torch = _Float32Torch()
    fuse_loras.device_fuse_rule = lambda device, base: replace(base, aggregation_dtype=torch.float32)
    try:
        yield
    finally:
        for m, t in zip(modules, saved):
            m.torch = t
        fuse_loras.device_fuse_rule = rule


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
    """Wrap the pipeline's DiffusionStages (stage boundaries) and ltx-core's X0Model (every call)."""
    blocks = ref.blocks

    class Stage:
        def __init__(self, stage):
            self.stage = stage

        def __getattr__(self, name):
            return getattr(self.stage, name)

        def __call__(self, *args, **kwargs):
            loop = kwargs.get("loop") or blocks.euler_denoising_loop

            def recorded(*, sigmas, video_state, audio_state, **rest):
                rec.begin(sigmas, video_state.latent, audio_state.latent)
                video, audio = loop(sigmas=sigmas, video_state=video_state, audio_state=audio_state, **rest)
                rec.end(video.latent, audio.latent)
                return video, audio

            return self.stage(*args, **{**kwargs, "loop": recorded})

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

    stages = {name: getattr(pipeline, name) for name in ("stage", "stage_1", "stage_2") if hasattr(pipeline, name)}

    def restore():
        blocks.X0Model, blocks.VideoLatentShape, blocks.AudioLatentShape = base, video_shape, audio_shape
        for name, stage in stages.items():
            setattr(pipeline, name, stage)

    for name, stage in stages.items():
        setattr(pipeline, name, Stage(stage))
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


@dataclass(frozen=True)
class Case:
    """One pipeline run on both sides."""

    name: str
    pipeline: str  # "distilled" (DistilledPipeline), "dev one-stage" (TI2VidOneStagePipeline),
    #                "dev two-stage" (TI2VidTwoStagesPipeline with the distilled LoRA in stage 2)
    start_image: bool = False
    end_image: bool = False
    size: int = WIDTH  # width = height of the output
    keyframes: tuple[tuple[int, float], ...] = ()  # (frame, strength) of each image, in order: the request's keyframes
    retake: tuple[float, float] | None = None  # "retake" (RetakePipeline, distilled): the span of video_file's clip
    # "ic-lora" (ICLoraPipeline, distilled): video_file's clip as the reference of an IC-LoRA written on the
    # miniature (ic_lora_file) with this reference_downscale_factor in its metadata
    reference_downscale: int = 1
    attention_strength: float = 1.0  # "ic-lora": conditioning_attention_strength (below 1: the attention bias)
    attention_mask: bool = False  # "ic-lora": mask_file's video as conditioning_attention_mask
    extend: float | None = None  # "extend" (ltx2's own; VideoConditionByLatentIndex): seconds added to video_file's clip


CASES = (
    Case("distilled two-stage, text to video", "distilled"),
    Case("distilled two-stage, start image", "distilled", start_image=True),
    Case("distilled two-stage, start and end images", "distilled", start_image=True, end_image=True),
    Case("dev one-stage (guided), text to video", "dev one-stage", size=64),
    Case("dev one-stage (guided), start image", "dev one-stage", start_image=True, size=64),
    Case("dev two-stage (guided, distilled LoRA), start image", "dev two-stage", start_image=True),
    Case("distilled two-stage, keyframes at frames 0, 4 and 8", "distilled", keyframes=((0, 1.0), (4, 0.7), (8, 1.0))),
    Case("distilled one-stage retake of 0.12-0.28 s, with sound", "retake", size=64, retake=(0.12, 0.28)),
    Case("distilled two-stage IC-LoRA, reference video at half stage 1's size", "ic-lora", reference_downscale=2),
    Case("distilled two-stage IC-LoRA, conditioning_attention_strength 0.5", "ic-lora", attention_strength=0.5),
    Case("distilled two-stage IC-LoRA, conditioning_attention_mask at strength 0.5", "ic-lora", attention_strength=0.5,
         attention_mask=True),
    Case("distilled one-stage extend by 0.32 s (first window), with sound", "extend", size=64, extend=0.32),
)
EXTEND_WINDOW, EXTEND_HELD = 17, 9  # the extend case's window: 2 latent frames held (the clip's last 9 frames), 1 new
IC_LORA = "ic-lora-mini.safetensors"  # the IC-LoRA case's file, in the directory's loras/
RETAKE_FRAMES = 17  # the retake case's clip: 3 latent frames, the middle one regenerated


def video_file(directory: Path, size: int = 64) -> Path:
    """The retake case's clip, a MOV: RETAKE_FRAMES smooth moving frames at FPS (lossless H.264 4:4:4) and a
    stereo 16-bit PCM tone as long at 16 kHz, the audio VAE's rate (so neither side resamples it: the
    reference resamples with torchaudio, which has no build for this torch), written with PyAV."""
    from fractions import Fraction

    import av

    path = directory / "clip.mov"
    y, x = np.mgrid[0:size, 0:size]
    with av.open(str(path), "w", format="mov") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width = stream.height = size
        stream.pix_fmt, stream.options = "yuv444p", {"crf": "0", "bf": "0"}
        sound = out.add_stream("pcm_s16le", rate=16000, layout="stereo")
        for i in range(RETAKE_FRAMES):
            rgb = np.stack([(x * 3 + i * 11) % 256, (y * 3) % 256, 0 * x + 30 + 12 * i], -1).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
        samples = round(RETAKE_FRAMES / FPS * 16000)
        wave = (9000 * np.sin(np.arange(samples) * 2 * np.pi * 330 / 16000)).astype(np.int16)[None].repeat(2, 0)
        for start in range(0, samples, 1024):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 1024].T.reshape(1, -1)),
                                               format="s16", layout="stereo")
            chunk.sample_rate, chunk.pts, chunk.time_base = 16000, start, Fraction(1, 16000)
            out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    return path


def mask_file(directory: Path) -> Path:
    """The mask case's conditioning_attention_mask: RETAKE_FRAMES grey frames at FPS, 96x80 (so both sides resize
    and crop it to stage 1's 64x64), levels varying over space and time within 40..239 (lossless H.264 4:4:4)."""
    import av

    path = directory / "mask.mov"
    y, x = np.mgrid[0:80, 0:96]
    with av.open(str(path), "w", format="mov") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height = 96, 80
        stream.pix_fmt, stream.options = "yuv444p", {"crf": "0", "bf": "0"}
        for i in range(RETAKE_FRAMES):
            grey = (40 + (x * 2 + y + i * 23) % 200).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.stack([grey] * 3, -1), format="rgb24")))
        out.mux(stream.encode())
    return path


def ic_lora_file(root: Path, model, downscale: int) -> Path:
    """An IC-LoRA for the miniature: a random rank-2 update (its gate logits have 2 outputs) of every linear in
    its blocks in the official key style (as the distilled LoRA's stand-in), with the reference_downscale_factor
    ltx-pipelines reads."""
    from safetensors.torch import save_file

    from ltx2.models import tiny

    path = root / "loras" / IC_LORA
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny.build_distilled_lora(model.pipe.transformer, seed=11, rank=2).items()},
              str(path), metadata={"reference_downscale_factor": str(downscale)})
    return path


def reference_images(ref, case: Case, image: Path) -> list:
    # ltx-pipelines reads the CRF from the video VAE file's model_version, which the miniature's VAE files
    # do not carry (only its transformer's does): the 2.5 CRF (18, ltx2's family value) is given.
    images = [ref.Image(str(image), 0, 1.0, IMAGE_CRF)] if case.start_image else []
    if case.end_image:
        images.append(ref.Image(str(image), FRAMES - 1, 1.0, IMAGE_CRF))
    return images + [ref.Image(str(image), frame, strength, IMAGE_CRF) for frame, strength in case.keyframes]


@contextlib.contextmanager
def torchaudio_mel():
    """ltx-core's audio front end calls torchaudio's MelSpectrogram (periodic Hann, centred reflect padding,
    magnitude, Slaney mel scale and norm), and torchaudio has no build for this torch: its placeholder gets that
    transform, written with ltx2's filterbank (tests/test_audio_features.py checks it against a third
    implementation of the definitions). Resampling is not given: the clip is at the VAE's rate already."""
    from ltx_core.model.audio_vae import ops

    from ltx2.media.audio_features import MelConfig, slaney_mel_filterbank

    class MelSpectrogram(torch.nn.Module):
        def __init__(self, sample_rate, n_fft, win_length, hop_length, f_min, f_max, n_mels, **_):
            super().__init__()
            self.cfg = MelConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, win_length=win_length,
                                 n_mels=n_mels, f_min=f_min, f_max=f_max)

        def forward(self, wave):  # (..., samples) -> (..., n_mels, frames)
            cfg, shape = self.cfg, wave.shape
            spec = torch.stft(wave.reshape(-1, shape[-1]), cfg.n_fft, hop_length=cfg.hop_length,
                              win_length=cfg.win_length, window=torch.hann_window(cfg.win_length, periodic=True),
                              center=True, pad_mode="reflect", return_complex=True)
            mel = slaney_mel_filterbank(cfg) @ spec.abs()
            return mel.reshape(*shape[:-1], *mel.shape[-2:])

    saved = getattr(ops.torchaudio, "transforms", None)
    ops.torchaudio.transforms = types.SimpleNamespace(MelSpectrogram=MelSpectrogram)
    try:
        yield
    finally:
        ops.torchaudio.transforms = saved


def extend_reference(pipeline, directory: Path, case: Case) -> None:
    """The first window of an extend, built from ltx-core's pieces (ltx-pipelines has no extend pipeline), as ltx2
    composes it: the clip's last EXTEND_HELD frames encoded (video_latent_from_file from their start time) and
    held at latent index 0 with strength 1 (VideoConditionByLatentIndex); the window's soundtrack (those frames'
    sound, then silence: a WAV of the clip's own samples) encoded whole and held outside the new part
    (TemporalRegionMask from the overlap's end); RetakePipeline's distilled stage, sigmas and noiser."""
    from fractions import Fraction

    import av
    from ltx_core.components.noisers import GaussianNoiser
    from ltx_core.conditioning.types.latent_cond import VideoConditionByLatentIndex
    from ltx_core.conditioning.types.noise_mask_cond import TemporalRegionMask
    from ltx_core.types import VideoPixelShape
    from ltx_pipelines.utils.constants import DISTILLED_SIGMAS
    from ltx_pipelines.utils.denoisers import SimpleDenoiser
    from ltx_pipelines.utils.helpers import audio_latent_from_file, video_latent_from_file
    from ltx_pipelines.utils.types import ModalitySpec

    first = RETAKE_FRAMES - EXTEND_HELD  # the held frames' first, in the clip
    wav = directory / "extend_window.wav"  # the clip's tone from `first` on (video_file's formula), then silence
    samples = round(RETAKE_FRAMES / FPS * 16000)
    tone = (9000 * np.sin(np.arange(samples) * 2 * np.pi * 330 / 16000)).astype(np.int16)
    held = tone[round(first / FPS * 16000):]
    wave = np.concatenate([held, np.zeros(round(EXTEND_WINDOW / FPS * 16000) - held.size, np.int16)])[None].repeat(2, 0)
    with av.open(str(wav), "w", format="wav") as out:
        sound = out.add_stream("pcm_s16le", rate=16000, layout="stereo")
        chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave.T.reshape(1, -1)), format="s16", layout="stereo")
        chunk.sample_rate, chunk.pts, chunk.time_base = 16000, 0, Fraction(1, 16000)
        out.mux(sound.encode(chunk))
        out.mux(sound.encode())
    device, dtype = pipeline.device, pipeline.dtype
    overlap = VideoPixelShape(batch=1, frames=EXTEND_HELD, height=case.size, width=case.size, fps=float(FPS))
    window = overlap._replace(frames=EXTEND_WINDOW)
    video_latent = pipeline.image_conditioner(lambda enc: video_latent_from_file(
        video_encoder=enc, file_path=str(directory / "clip.mov"), output_shape=overlap, dtype=dtype, device=device,
        start_time=first / FPS))
    audio_latent = pipeline.audio_conditioner(lambda enc: audio_latent_from_file(
        audio_encoder=enc, file_path=str(wav), output_shape=window, dtype=dtype, device=device))
    contexts = pipeline.prompt_encoder([PROMPT], enhance_first_prompt=False, enhance_static_cache=False,
                                       enhance_prompt_seed=SEED)
    video_context, audio_context = contexts[0].video_encoding, contexts[0].audio_encoding
    new = TemporalRegionMask(start_time=EXTEND_HELD / FPS, end_time=EXTEND_WINDOW / FPS + 1.0, fps=float(FPS))
    pipeline.stage(
        denoiser=SimpleDenoiser(v_context=video_context, a_context=audio_context),
        sigmas=DISTILLED_SIGMAS.to(dtype=torch.float32, device=device),
        noiser=GaussianNoiser(generator=torch.Generator(device=device).manual_seed(SEED)),
        width=case.size, height=case.size, frames=EXTEND_WINDOW, fps=float(FPS),
        video=ModalitySpec(context=video_context, conditionings=[VideoConditionByLatentIndex(video_latent, 1.0, 0)]),
        audio=ModalitySpec(context=audio_context, conditionings=[new], initial_latent=audio_latent),
        max_batch_size=1)


def run_reference(ref, paths: dict, case: Case, image: Path, channels: tuple[int, int], stg_block: int) -> Recording:
    """The case's ltx-pipelines pipeline, its own __call__; `channels`: the miniature's (video, audio) latent
    channels; `stg_block`: the block the dev guider's STG pass perturbs (the family's, 28, is past the
    miniature's last)."""
    module = {"distilled": ref.distilled, "dev one-stage": ref.one_stage, "dev two-stage": ref.two_stages,
              "retake": ref.retake, "ic-lora": ref.ic_lora, "extend": ref.retake}[case.pipeline]
    rec = Recording()
    with float32(ref.fuse_loras, module):
        transformer = paths.get("transformer") if case.pipeline in DISTILLED else paths["dev_transformer"]
        model_paths = ref.ModelPaths.from_monolith(str(paths["monolith"]), str(paths["gemma"])) if "monolith" in paths \
            else ref.ModelPaths.from_split(
            transformer_path=str(transformer), text_encoder_path=str(paths["text_encoder"]),
            video_vae_path=str(paths["conv_vae"]), audio_vae_path=str(paths["audio_vae"]),
            duration_head_path=str(paths["duration_head"]))
        cpu = torch.device("cpu")
        if case.pipeline == "distilled":
            pipeline = module.DistilledPipeline(model_paths, str(paths["spatial_upscaler"]), [], device=cpu)
        elif case.pipeline in ("retake", "extend"):  # extend: RetakePipeline's blocks, called as extend_reference
            pipeline = module.RetakePipeline(model_paths, [], device=cpu, distilled=True)
        elif case.pipeline == "ic-lora":
            pipeline = module.ICLoraPipeline(model_paths, str(paths["spatial_upscaler"]), [ref.Lora(paths["ic_lora"])],
                                             device=cpu)
        elif case.pipeline == "dev one-stage":
            pipeline = module.TI2VidOneStagePipeline(model_paths, [], device=cpu)
        else:
            pipeline = module.TI2VidTwoStagesPipeline(model_paths, [ref.Lora(paths["distilled_lora"])],
                                                      str(paths["spatial_upscaler"]), [], device=cpu)
        # ltx-core attaches Gemma 4's multimodal processor too, which needs sidecars the miniature's tiny Gemma
        # has not; only the tokenizer encodes a prompt, so the processor's op is left out.
        encoder = pipeline.prompt_encoder
        builder = encoder._text_encoder_builder
        encoder._text_encoder_builder = builder.with_module_ops(
            tuple(op for op in builder.module_ops if "processor" not in op.name.lower()))
        restore = record_reference(ref, pipeline, rec, channels)
        try:
            images = reference_images(ref, case, image)
            common = {"prompt": PROMPT, "seed": SEED, "height": case.size, "width": case.size, "frame_rate": FPS,
                      "images": images, "num_frames": FRAMES}
            with torch.inference_mode():
                if case.pipeline == "retake":
                    with torchaudio_mel():
                        pipeline(video_path=str(image.parent / "clip.mov"), prompt=PROMPT,
                                 start_time=case.retake[0], end_time=case.retake[1], seed=SEED)
                elif case.pipeline == "extend":
                    with torchaudio_mel():
                        extend_reference(pipeline, image.parent, case)
                elif case.pipeline == "distilled":
                    pipeline(**common)
                elif case.pipeline == "ic-lora":
                    # the mask as ic_lora's CLI reads it (at stage 1's size, half the output's)
                    mask = module._load_mask_video(str(image.parent / "mask.mov"), case.size // 2, case.size // 2,
                                                   FRAMES) if case.attention_mask else None
                    pipeline(**common, video_conditioning=[(str(image.parent / "clip.mov"), 1.0)],
                             conditioning_attention_strength=case.attention_strength,
                             conditioning_attention_mask=mask)
                else:
                    params = ref.params  # LTX_2_4_PARAMS, what ltx-pipelines detects for a 2.5 checkpoint
                    video = replace(params.video_guider_params, stg_blocks=[stg_block])
                    audio = replace(params.audio_guider_params, stg_blocks=[stg_block])
                    pipeline(**common, negative_prompt=NEGATIVE, num_inference_steps=DEV_STEPS,
                             video_guider_params=video, audio_guider_params=audio)
        finally:
            restore()
    return rec


def run_ours(model, case: Case, image: Path, stg_block: int) -> Recording:
    """ltx2's generate() with the request a user would send for the case; the guidance is the model's defaults
    but for the STG block (as the reference is given)."""
    from PIL import Image

    from ltx2.pipelines.conditioning import Conditioning
    from ltx2.pipelines.generate import generate

    rec = Recording()
    request = {"prompt": PROMPT, "seed": SEED, "width": case.size, "height": case.size, "num_frames": FRAMES,
               "fps": FPS, "use_multiscale": case.pipeline != "dev one-stage"}
    if case.pipeline != "distilled":
        request.update(negative_prompt=NEGATIVE, num_inference_steps=DEV_STEPS, stg_blocks=[stg_block])
    picture = Image.open(image).convert("RGB")
    conditioning = Conditioning(image_start=picture if case.start_image else None,
                                image_end=picture if case.end_image else None,
                                keyframes={i: picture for i in range(len(case.keyframes))})
    if case.keyframes:  # the images are given decoded; the request says where and how strongly
        request["keyframes"] = [{"image": "given", "frame": frame, "strength": strength}
                                for frame, strength in case.keyframes]
    if case.retake is not None:  # the clip through the sandbox, as a user's file: size, fps and length from it
        import base64

        data = (image.parent / "clip.mov").read_bytes()
        request = {"prompt": PROMPT, "seed": SEED, "retake": dict(zip(("start", "end"), case.retake)),
                   "video": "data:video/quicktime;base64," + base64.b64encode(data).decode()}
        conditioning = None
    if case.extend is not None:  # the clip through the sandbox as a user's file; windows of EXTEND_WINDOW frames
        import base64

        data = (image.parent / "clip.mov").read_bytes()
        request = {"prompt": PROMPT, "seed": SEED, "extend": {"seconds": case.extend}, "num_frames": EXTEND_WINDOW,
                   "video": "data:video/quicktime;base64," + base64.b64encode(data).decode()}
        conditioning = None
    if case.pipeline == "ic-lora":  # the clip through the sandbox as a user's file; the IC-LoRA from loras/
        import base64

        data = (image.parent / "clip.mov").read_bytes()
        request = {"prompt": PROMPT, "seed": SEED, "width": case.size, "height": case.size, "num_frames": FRAMES,
                   "fps": FPS, "ic_lora": IC_LORA, "video_strength": 1.0,
                   "conditioning_attention_strength": case.attention_strength,
                   "video": "data:video/quicktime;base64," + base64.b64encode(data).decode()}
        if case.attention_mask:  # through the sandbox as a user's file too
            mask = (image.parent / "mask.mov").read_bytes()
            request["conditioning_attention_mask"] = "data:video/quicktime;base64," + base64.b64encode(mask).decode()
        conditioning = None
    with record_ours(model, rec):
        generate(model, request, conditioning=conditioning)
    return rec


# ---------------------------------------------------------------------------------------- compare

def _diff(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        a, b = a.squeeze(), b.squeeze()
    return float("inf") if a.shape != b.shape else float((a - b).abs().max())


def per_sample(calls: list[dict]) -> list[dict]:
    """Every call split into one entry per sample: a guided step's passes are one batched call on our side
    and, in ltx-pipelines, one batch that its BatchSplitAdapter hands the X0Model a sample at a time (its
    default max_batch_size 1); either way the passes come in the same order (cond, uncond, STG, modality)."""
    return [{k: v[i:i + 1] for k, v in call.items()} for call in calls
            for i in range(call["video_latent"].shape[0])]


def compare(ours: Recording, ref: Recording) -> dict[str, float]:
    """{row: largest difference}; inf where the shapes or counts differ."""
    rows: dict[str, float] = {}
    rows["stages"] = 0.0 if len(ours.stages) == len(ref.stages) else float("inf")
    for i, (o, r) in enumerate(zip(ours.stages, ref.stages), start=1):
        name = f"stage {i}"
        o, r = {**o, "calls": per_sample(o["calls"])}, {**r, "calls": per_sample(r["calls"])}
        rows[f"{name}: sigmas"] = _diff(o["sigmas"], r["sigmas"])
        rows[f"{name}: transformer passes (one per sample)"] = 0.0 if len(o["calls"]) == len(r["calls"]) else float("inf")
        rows[f"{name}: starting video latents (seeded noise)"] = _diff(o["start"][0], r["start"][0])
        rows[f"{name}: starting audio latents"] = _diff(o["start"][1], r["start"][1])
        for key in ("video_latent", "audio_latent", "video_timesteps", "audio_timesteps", "video_positions",
                    "audio_positions", "video_sigma", "audio_sigma", "video_context", "audio_context", "video_x0", "audio_x0"):
            worst = max((_diff(oc[key], rc[key]) for oc, rc in zip(o["calls"], r["calls"])), default=float("inf"))
            rows[f"{name}: transformer input {key.replace('_', ' ')}"] = worst
        rows[f"{name}: final video latents"] = _diff(o["final"][0], r["final"][0])
        rows[f"{name}: final audio latents"] = _diff(o["final"][1], r["final"][1])
    return rows


def write_dev_parts(root: Path, paths: dict, model) -> None:
    """The dev transformer (the miniature's weights under the official dev name: the pipelines differ, the
    weights need not) and a distilled LoRA in the official key style (a random rank-4 update of every linear
    in the blocks), beside the directory's other files."""
    from safetensors.torch import save_file

    from ltx2.models import tiny
    from ltx2.models.families import ltx25

    paths["dev_transformer"] = root / ltx25.FAMILY.files.dev
    shutil.copyfile(paths["transformer"], paths["dev_transformer"])
    paths["distilled_lora"] = root / ltx25.FAMILY.files.distilled_lora
    paths["distilled_lora"].parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tiny.build_distilled_lora(model.pipe.transformer, seed=7).items()},
              str(paths["distilled_lora"]))


def cases(checkout: Path, directory: Path | None = None, only: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    """Every case of CASES (or those named in `only`) on one miniature LTX-2.5 directory: {case: rows}."""
    ref = import_pipelines(checkout)
    sys.path.insert(0, str(ROOT / "tools"))
    import official_layout_ltx25 as layout

    from ltx2.models.loaded import load_model

    results = {}
    chosen = [case for case in CASES if only is None or case.name in only]
    with tempfile.TemporaryDirectory() as tmp:
        root = directory or Path(tmp)
        paths, _ = layout.write_directory(root, seed=0)
        models = {"distilled": load_model(str(root), device="cpu", models_dir=str(root), variant="distilled")}
        write_dev_parts(root, paths, models["distilled"])
        if any(case.pipeline not in DISTILLED for case in chosen):
            models["dev"] = load_model(str(root), device="cpu", models_dir=str(root), variant="dev")
            assert models["dev"].distilled_lora is not None, "the dev model found no distilled LoRA"
        image = image_file(Path(tmp))
        if any(case.retake or case.pipeline in ("ic-lora", "extend") for case in chosen):
            video_file(Path(tmp))
        if any(case.attention_mask for case in chosen):
            mask_file(Path(tmp))
        some = models["distilled"]
        channels = (some.pipe.vae.config.latent_channels, some.pipe.audio_vae.config.latent_channels)
        stg_block = some.pipe.transformer.config.num_layers - 1
        for case in chosen:
            if case.pipeline == "ic-lora":  # written for each case: the IC-LoRA cases differ in its metadata
                import os

                paths["ic_lora"] = ic_lora_file(root, models["distilled"], case.reference_downscale)
                os.environ["LTX2_MODELS_DIR"] = str(root)  # where generate() finds ic_lora, as a server's loras/
            model = models["distilled" if case.pipeline in DISTILLED else "dev"]
            results[case.name] = compare(run_ours(model, case, image, stg_block),
                                         run_reference(ref, paths, case, image, channels, stg_block))
    return results


def write_ltx23(root: Path) -> tuple[Path, Path, Path]:
    """A miniature LTX-2.3 distilled single file (tools/parity_ltx_core.py's, which ltx-core builds back tensor for
    tensor), its x2 upsampler (ltx-core's LatentUpsampler layout, tests/miniature.py) and a tiny Gemma 3 root with
    the sidecars ltx-core's asset loader requires: (checkpoint, gemma root, upsampler)."""
    import json

    import parity_ltx_core
    from miniature import UPSAMPLER_CONFIG, write_upsampler
    from safetensors import safe_open
    from safetensors.torch import save_file

    from ltx2.models.families import ltx23
    from ltx2.models.tiny import build_text_encoder, build_tokenizer

    checkpoint = parity_ltx_core.miniature_checkpoint(root, "ltx-2.3")
    from ltx2.models.safetensors_io import read_header

    latent = json.loads(read_header(str(checkpoint)).metadata["config"])["vae"]["latent_channels"]
    upsampler = root / ltx23.FAMILY.files.upsampler
    write_upsampler(upsampler, config={**UPSAMPLER_CONFIG, "in_channels": latent}, dtype=torch.float32)
    gemma = root / "gemma-3"
    tokenizer = build_tokenizer()
    torch.manual_seed(5)
    build_text_encoder(len(tokenizer)).save_pretrained(gemma)
    # The published Gemma 3 root names its vision tower `vision_tower.vision_model.*` (transformers 5 saves it
    # flattened); ltx-core reads only the published names, and places the encoder's inputs on the device of the
    # model's first parameter, which is the vision tower's.
    weights = gemma / "model.safetensors"
    with safe_open(str(weights), "pt") as f:
        tensors = {k.replace("vision_tower.", "vision_tower.vision_model.", 1): f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(weights), metadata={"format": "pt"})
    tokenizer.save_pretrained(gemma)
    (gemma / "processor_config.json").write_text(json.dumps({"processor_class": "Gemma3Processor"}))
    return checkpoint, gemma, upsampler


def ltx23_cases(checkout: Path, directory: Path | None = None) -> dict[str, dict[str, float]]:
    """The distilled LTX-2.3 two-stage pipeline (Euler in both stages, CRF 33, Gemma 3 from its own root), text
    to video and with start and end images, on a miniature single file: {case: rows}."""
    global IMAGE_CRF
    ref = import_pipelines(checkout)
    sys.path.insert(0, str(ROOT / "tools"))
    sys.path.insert(0, str(ROOT / "tests"))
    from ltx2.models.loaded import load_model

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = directory or Path(tmp)
        checkpoint, gemma, upsampler = write_ltx23(root)
        model = load_model(str(checkpoint), device="cpu", models_dir=str(root), gemma_dir=str(gemma))
        image = image_file(Path(tmp))
        channels = (model.pipe.vae.config.latent_channels, model.pipe.audio_vae.config.latent_channels)
        paths = {"monolith": checkpoint, "gemma": gemma, "spatial_upscaler": upsampler}
        saved, IMAGE_CRF = IMAGE_CRF, 33  # ltx-pipelines' DEFAULT_IMAGE_CRF, which LTX_2_3_PARAMS keeps
        try:
            for case in (Case("LTX-2.3 distilled two-stage, text to video", "distilled"),
                         Case("LTX-2.3 distilled two-stage, start and end images", "distilled", start_image=True,
                              end_image=True)):
                results[case.name] = compare(run_ours(model, case, image, 0),
                                             run_reference(ref, paths, case, image, channels, 0))
        finally:
            IMAGE_CRF = saved
    return results


SUMMARY = {  # README column: the rows it takes the largest of, over every stage
    "sigmas": ("sigmas",),
    "seeded noise (video, audio)": ("starting video latents (seeded noise)", "starting audio latents"),
    "transformer input latents": ("transformer input video latent", "transformer input audio latent"),
    "timesteps, positions, sigmas, contexts": tuple(
        f"transformer input {m} {q}" for m in ("video", "audio") for q in ("timesteps", "positions", "sigma", "context")),
    "clean estimates x0": ("transformer input video x0", "transformer input audio x0"),
    "final latents": ("final video latents", "final audio latents"),
}


def summary(results: dict[str, dict[str, float]]) -> str:
    """One markdown row per case: the largest difference per column, over both modalities and every stage."""
    lines = ["| case | " + " | ".join(SUMMARY) + " |", "|---|" + "---:|" * len(SUMMARY)]
    for case, rows in results.items():
        cells = []
        for parts in SUMMARY.values():
            values = [v for name, v in rows.items() if name.split(": ", 1)[-1] in parts]
            cells.append(f"{max(values):.1e}" if values else "n/a")
        if rows["stages"] or any(v for k, v in rows.items() if "passes" in k):
            cells = ["count differs"] * len(cells)
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ltx-core", type=Path, default=Path("/tmp/ref"), help="an LTX-2 checkout at v1.2.0")
    parser.add_argument("--keep", type=Path, help="write the miniature directory here and keep it")
    parser.add_argument("--case", action="append", default=[], choices=[case.name for case in CASES] + ["ltx-2.3"],
                        help="run only this case (repeatable); default: every case")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    results = {} if args.case == ["ltx-2.3"] else cases(args.ltx_core, args.keep,
                                                         tuple(c for c in args.case if c != "ltx-2.3") or None)
    if not args.case or "ltx-2.3" in args.case:
        results.update(ltx23_cases(args.ltx_core))
    for case, rows in results.items():
        print(f"\n{case} (ltx2 generate() vs ltx-pipelines 1.2.0), largest |difference|:\n")
        print("| quantity | largest |diff| |")
        print("|---|---:|")
        for name, value in rows.items():
            print(f"| {name} | {value:.2e} |")
    print("\nAll cases, largest |difference| over both modalities and every stage:\n")
    print(summary(results))


if __name__ == "__main__":
    main()
