"""A loaded model: the components (in a diffusers `LTX2Pipeline`, used as a container and for its
helpers), where they live, and the defaults that depend on which checkpoint was loaded."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field, replace

import torch
from diffusers import LTX2Pipeline

from . import families, fp8
from .families import DEV_DEFAULTS, DISTILLED_DEFAULTS, Family, ModelDefaults  # noqa: F401 (re-exported)
from .lora import Adapter, AdapterCache
from .memory import Placement, pipe_components, place

log = logging.getLogger("ltx2")



@dataclass
class LoadedModel:
    name: str
    pipe: LTX2Pipeline
    defaults: ModelDefaults
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    loaded_at: float = field(default_factory=time.time)  # wall clock, for /v1/models' `created`
    # One job at a time per device: the transformer's activations for one video fill the GPU.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # What the stages ask about this generation of the model (its defaults, CRF, vocoder, presets).
    family: Family = field(default_factory=lambda: families.by_name(families.DEFAULT), repr=False)
    checkpoint: dict = field(default_factory=dict)  # what was loaded from where (empty for tiny)
    # What rests on the device between requests (ltx2.models.memory). None: resident, where the loader put it.
    placement: Placement | None = field(default=None, repr=False)
    adapter_cache: AdapterCache = field(default_factory=AdapterCache, repr=False)  # LoRAs bound to this model
    prompt_expansion_tokens: int = 512  # the most tokens enable_prompt_expansion lets Gemma write
    # (digest, scale) of the LoRAs adapting the text connectors while a request runs; () otherwise.
    # Prompt embeddings depend on them: a prompt cache keys on this as well as on the prompts.
    text_adapters: tuple = ()
    # Start-up speed choices for /health: attention kernel, compilation, Gemma's weight dtype (ltx2.models.speed).
    speed: dict = field(default_factory=dict)
    # The x2 spatial latent upsampler of the two-stage pipeline; None: one-stage only.
    upsampler: torch.nn.Module | None = field(default=None, repr=False)
    upsampler_file: str | None = None  # where it came from ("tiny" for the tiny preset)
    spatial_upscaler: str = "x2"  # which one it is: "x2", or "x1.5" (LTX-2.3)
    # The x2 temporal upsampler a request's temporal_upscale runs (ltx2.pipelines.temporal); None: not loaded.
    temporal_upsampler: torch.nn.Module | None = field(default=None, repr=False)
    temporal_upsampler_file: str | None = None
    # A dev checkpoint's two-stage pipeline refines stage 2 with Lightricks' distilled LoRA, bound at
    # start-up; None: a dev checkpoint runs one stage (a distilled checkpoint never needs it).
    distilled_lora: Adapter | None = field(default=None, repr=False)
    distilled_lora_file: str | None = None  # where it came from ("tiny" for the tiny preset)
    # LTX-2.5's diffusion video decoder (None: the family has none, or it was not loaded) and which
    # decoder turns latents into frames: "diffusion" or "conv" (the VAE's own).
    diffusion_decoder: torch.nn.Module | None = field(default=None, repr=False)
    video_decoder: str = "conv"

    def __post_init__(self) -> None:
        # The video VAE's per-channel latent statistics, copied once: the upsample stage un-normalises
        # with them while the VAE itself may rest off the device (they are 2 x 128 numbers).
        vae = self.pipe.vae
        self.video_latent_stats = (vae.latents_mean.detach().clone(), vae.latents_std.detach().clone())
        if self.placement is None:
            self.placement = Placement(self.components(), "resident", self.device,
                                       reason="resident: where the loader put it")
        # The family's STG block (29 of LTX-2's 48) may not exist in a smaller model (the tiny preset
        # has 2): its defaults become the last block, so what /health and GET / advertise is accepted.
        blocks = len(getattr(self.pipe.transformer, "transformer_blocks", ()))
        if blocks and max(self.defaults.stg_blocks) >= blocks:
            self.defaults = replace(self.defaults, stg_blocks=tuple(sorted({min(b, blocks - 1)
                                                                            for b in self.defaults.stg_blocks})))

    def components(self) -> dict[str, torch.nn.Module]:
        """Every weight-carrying component by the name the stages use (the upsampler too, when loaded)."""
        extra = {"upsampler": self.upsampler, "diffusion_decoder": self.diffusion_decoder,
                 "temporal_upsampler": self.temporal_upsampler}
        return {**pipe_components(self.pipe), **{name: m for name, m in extra.items() if m is not None}}

    @property
    def duration_head(self) -> torch.nn.Module | None:
        """What predicts a clip's length from the prompt (LTX-2.5); None: lengths come from requests."""
        return getattr(self.pipe, "duration_head", None)

    @property
    def vocoder_rate(self) -> int:
        return int(self.pipe.vocoder.config.output_sampling_rate)

    def describe(self) -> dict:
        """What /health and GET / report about the model."""
        # Every parameter dtype a component holds: an FP8 transformer is "bfloat16+float8_e4m3fn".
        dtypes = {
            name: "+".join(sorted({str(p.dtype).removeprefix("torch.") for p in getattr(self.pipe, name).parameters()}))
            for name in ("transformer", "text_encoder", "connectors", "vae", "audio_vae", "vocoder")
        }
        for name, module in (("upsampler", self.upsampler), ("diffusion_decoder", self.diffusion_decoder),
                             ("duration_head", self.duration_head), ("temporal_upsampler", self.temporal_upsampler)):
            if module is not None:
                dtypes[name] = "+".join(sorted({str(p.dtype).removeprefix("torch.") for p in module.parameters()}))
        return {
            "name": self.name,
            "model_family": self.family.name,
            "family_title": self.family.title,
            "variant": "distilled" if self.defaults.distilled else "dev",
            "device": str(self.device),
            "dtypes": dtypes,
            "defaults": self.defaults.as_dict(),
            "audio_sample_rate": self.vocoder_rate,
            "load_seconds": round(self.load_seconds, 3),
            "checkpoint": self.checkpoint or None,
            # The two-stage pipeline's upsampler: which file, or null (then use_multiscale defaults to false).
            "upsampler": self.upsampler_file,
            "spatial_upscaler": self.spatial_upscaler if self.upsampler is not None else None,
            # The temporal x2 upsampler: which file, or null (then temporal_upscale is refused).
            "temporal_upsampler": self.temporal_upsampler_file,
            # The dev two-stage pipeline's distilled LoRA: which file, or null (a dev checkpoint runs one stage).
            "distilled_lora": self.distilled_lora_file,
            # The video decoder in use ("diffusion" or "conv"), and whether a duration head picks lengths.
            "quantize": self.speed.get("quantize", {"setting": "none"}),
            "video_decoder": self.video_decoder,
            "decoder_attention": self.speed.get("decoder_attention"),  # natten on a GPU that has it
            "duration_head": self.duration_head is not None,
            "memory": self.placement.memory_report(),
            "attention": self.speed.get("attention"),
            "compile": self.speed.get("compile", {"enabled": False}),
            # Gemma's weights as held (the same string as dtypes.text_encoder), whether its linears are FP8, and why.
            "text_encoder_dtype": self._text_encoder_dtype(dtypes["text_encoder"]),
            "prompt_cache": cache.stats() if (cache := self.speed.get("prompt_cache")) is not None else
            {"entries": 0, "max_bytes": int(self.speed.get("prompt_cache_mb", 0) * 1e6)},
        }

    def _text_encoder_dtype(self, held: str) -> dict | None:
        choice = self.speed.get("text_encoder_dtype")
        if choice is None:
            return None
        # The choice says "bf16" for "not FP8", even where Gemma computes in float32 (the CPU): report
        # the dtype it holds, so this and dtypes.text_encoder never disagree.
        return {**choice, "dtype": held, "fp8": choice.get("dtype") == "fp8"}


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_dtype(device: torch.device) -> torch.dtype:
    # bf16 is what the checkpoints hold; CPUs (tests, the tiny preset) compute in float32.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def load_model(
    name: str = "tiny",
    device: str | torch.device | None = None,
    seed: int = 0,
    *,
    models_dir: str | None = None,
    gemma_dir: str | None = None,
    memory_policy: str = "auto",
    fp8_compute: str = "auto",
    variant: str = "auto",
    layers: int | None = None,
    text_encoder_dtype: str = "auto",
    attention: str = "auto",
    compile: str = "off",
    prompt_cache_mb: float = 512.0,
    upsampler: str = "auto",
    distilled_lora: str = "auto",
    spatial_upscaler: str = "x2",
    temporal_upscaler: str = "auto",
    vae_decoder: str = "auto",
    quantize: str = "none",
    parts: dict[str, str | None] | None = None,
) -> LoadedModel:
    """Load a model once; every request reuses it. Never downloads.

    `tiny`, `tiny-2.3`, `tiny-2.5`: a family's random-weight preset with its real geometry (ltx2.models.tiny,
    ltx2.models.families), float32.
    `random-19b`: LTX-2 19B and Gemma 3 12B at full size (or `layers` deep) with random weights
    (ltx2.models.random19b), bfloat16 with FP8 blocks. `random-22b`: LTX-2.5 and Gemma 4 12B likewise
    (ltx2.models.random22b), bfloat16, with its duration head and diffusion decoder.
    Otherwise `name` is an official LTX-2 single file (a path, or a file name in `models_dir`) or a
    diffusers-format directory; the single file's Gemma 3 comes from `gemma_dir`.
    `text_encoder_dtype` fp8 stores Gemma's linears in FP8 (auto: only when nothing fits otherwise);
    `attention` and `compile` are ltx2.models.speed's choices. A compiled model is warmed up by
    ltx2.pipelines.warmup, not here.
    `upsampler`: the two-stage pipeline's x2 spatial upsampler: "auto" (the tiny one for `tiny`,
    else the official file in `models_dir` if it is there), "none", or a file; `spatial_upscaler` says which
    kind: "x2", or "x1.5" (LTX-2.3). `temporal_upscaler`: the x2 temporal upsampler, chosen the same way.
    An upscaler file published for another family is refused.
    `distilled_lora`: what a dev checkpoint's two-stage pipeline refines stage 2 with: "auto" (the tiny
    one for `tiny --variant dev`, else the official file in `models_dir` or its loras/ if it is there),
    "none", or a file. Bound only for a dev checkpoint with an upsampler.
    `vae_decoder`: LTX-2.5's video decoder: "auto" (the diffusion decoder when loaded), "diffusion", "conv".
    `parts`: LTX-2.5's per-component files ({text_encoder, video_vae, audio_vae, duration_head}), overriding what
    the official layout around `name` (a 2.5 directory or transformer file) provides; `gemma_dir` is then only
    where a tokenizer comes from if the text-encoder file embeds none.
    """
    from . import random19b, random22b

    randoms = {preset.NAME: preset for preset in (random19b, random22b)}
    start = time.perf_counter()
    if quantize not in ("none", "fp8"):
        raise ValueError(f"--quantize must be none or fp8, got {quantize!r}")
    if spatial_upscaler not in ("x2", "x1.5"):
        raise ValueError(f"--spatial-upscaler must be x2 or x1.5, got {spatial_upscaler!r}")
    if vae_decoder not in ("auto", "diffusion", "conv"):
        raise ValueError(f"--vae-decoder must be auto, diffusion or conv, got {vae_decoder!r}")
    device = torch.device(device) if device is not None else default_device()
    extras: dict = {}  # the family's parts beyond LTX2Pipeline's: duration head, diffusion decoder
    if layers is not None and name not in randoms:
        raise ValueError(f"--layers builds a shallower {' or '.join(randoms)}; it does not apply to model {name!r}")
    checkpoint: dict = {}
    upsampler_module, upsampler_file = None, None
    temporal_module, temporal_file = None, None
    lora_file = None  # the distilled LoRA's file, resolved before the long load: fail fast
    tiny_family = families.preset(name)
    family = tiny_family or families.by_name(families.DEFAULT)  # a checkpoint's: read from its files below
    if tiny_family is None and name not in randoms:
        family = checkpoint_family(name, models_dir)  # from the file's metadata: its upsampler's and LoRA's names
    if tiny_family is None and name not in randoms and variant != "distilled":
        from .lora import resolve_distilled_lora_path

        lora_file = resolve_distilled_lora_path(distilled_lora, models_dir, family.files.distilled_lora)
    if tiny_family is not None:
        components = tiny_family.tiny.components(seed)
        dtype = torch.float32
        defaults = tiny_family.defaults(distilled=variant != "dev")  # `--variant dev`: the dev pipelines
        policy = memory_policy
        from .upsampler import tiny_upscaler

        every = tuple(families.FAMILIES.values())
        upsampler_module, upsampler_file = tiny_upscaler(upsampler, tiny_family, every, spatial_upscaler, seed, device)
        temporal_module, temporal_file = tiny_upscaler(temporal_upscaler, tiny_family, every, "temporal", seed, device)
        if tiny_family.tiny.extras is not None:
            extras = {name: module.to(device) for name, module in tiny_family.tiny.extras(seed).items()}
    elif (random := randoms.get(name)) is not None:
        dtype = torch.bfloat16  # the real model's dtype on every device: bf16 matmuls are native on recent CPUs too
        components, checkpoint, policy = random.load(
            device, dtype, layers=random.FULL_LAYERS if layers is None else layers, seed=seed,
            memory_policy=memory_policy, fp8_compute=fp8_compute, text_encoder_dtype=text_encoder_dtype,
            upsampler=upsampler == "auto",  # a random one at the official size: two-stage runs and is benchmarked
            vae_decoder=vae_decoder)
        if spatial_upscaler != "x2" or temporal_upscaler not in ("auto", "none"):
            raise ValueError(f"model {name} builds its own x2 spatial upscaler and no temporal one; "
                             "--spatial-upscaler x1.5 and --temporal-upscaler files need a checkpoint")
        if (upsampler_module := components.pop("upsampler", None)) is not None:
            upsampler_file = name
        extras = {key: components.pop(key) for key in ("duration_head", "diffusion_decoder") if key in components}
        family = families.by_name(checkpoint["family"])
        defaults = family.defaults(distilled=True)
    else:
        from . import loading
        from .upsampler import load_upsampler, resolve_upscaler

        dtype = default_dtype(device)
        every = tuple(families.FAMILIES.values())
        # Fail fast, before the long load: a missing file, or another family's.
        upsampler_file = resolve_upscaler(upsampler, models_dir, family, every, spatial_upscaler)
        temporal_file = resolve_upscaler(temporal_upscaler, models_dir, family, every, "temporal")
        components, report, policy = loading.load_pipeline_components(
            name, device, dtype, models_dir=models_dir, gemma_dir=gemma_dir,
            memory_policy=memory_policy, fp8_compute=fp8_compute, variant=variant,
            text_encoder_dtype=text_encoder_dtype, upsampler_path=upsampler_file, lora_path=lora_file,
            parts=parts,
        )
        checkpoint = report
        # LTX-2.5's parts beyond LTX2Pipeline's (None when its file is absent), as the tiny branch's extras.
        extras = {key: module for key in ("duration_head", "diffusion_decoder")
                  if (module := components.pop(key, None)) is not None}
        if vae_decoder == "conv" and "conv" not in report.get("video_decoders", ["conv"]):
            raise ValueError(f"--vae-decoder conv: model {name} was loaded without the convolutional video VAE file; "
                             "use auto or diffusion, or pass --video-vae with the conv VAE file")
        family = families.by_name(report["family"])
        defaults = family.defaults(distilled=report["kind"] == "distilled")
        # Loaded on the host; the placement moves them where the policy says.
        for kind, file in ((spatial_upscaler, upsampler_file), ("temporal", temporal_file)):
            if file is None:
                continue
            module = load_upsampler(file, "cpu", dtype, kind)
            channels, latent = module.config.in_channels, components["vae"].config.latent_channels
            if channels != latent:
                from .configs import CheckpointError

                raise CheckpointError(f"{file}: the upsampler works on {channels} latent channels; the video "
                                      f"VAE has {latent}: it belongs to another model")
            if kind == "temporal":
                temporal_module = module
            else:
                upsampler_module = module
    text_encoder_choice = checkpoint.pop("text_encoder_dtype", None)
    if text_encoder_choice is None:  # tiny: nothing to fit on a CPU, quantize only when asked
        text_encoder_choice = quantize_text_encoder(components["text_encoder"], text_encoder_dtype, fp8_compute,
                                                    device)
    pipe = LTX2Pipeline(**components, processor=None, prompt_enhancer=None, duration_head=extras.get("duration_head"))
    if tiny_family is not None:
        pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    quantized = fp8.quantize_transformer(pipe.transformer, quantize, fp8_compute, device)
    if quantized:
        checkpoint.pop("memory_reason", None)  # chosen for the bf16 sizes: choose again for the FP8 ones
        policy = memory_policy
    diffusion_decoder = extras.get("diffusion_decoder")
    if vae_decoder == "diffusion" and diffusion_decoder is None:
        raise ValueError(f"--vae-decoder diffusion: model {name} ({family.title}) has no diffusion video decoder "
                         "loaded; use auto or conv")
    model = LoadedModel(name=name, pipe=pipe, defaults=defaults, device=device, dtype=dtype, checkpoint=checkpoint,
                        upsampler=upsampler_module, upsampler_file=upsampler_file, family=family,
                        spatial_upscaler=spatial_upscaler, temporal_upsampler=temporal_module,
                        temporal_upsampler_file=temporal_file,
                        diffusion_decoder=diffusion_decoder if vae_decoder != "conv" else None,
                        video_decoder="diffusion" if diffusion_decoder is not None and vae_decoder != "conv" else "conv")
    model.placement = place(model.components(), device, policy, reason=checkpoint.pop("memory_reason", None))
    model.speed["text_encoder_dtype"] = text_encoder_choice
    model.speed["quantize"] = {"setting": quantize, "fp8_layers": quantized}
    model.speed["prompt_cache_mb"] = prompt_cache_mb  # the cache itself: ltx2.pipelines.prompt_cache
    if not defaults.distilled and model.upsampler is not None:  # only the dev two-stage pipeline uses it
        attach_distilled_lora(model, distilled_lora, lora_file, seed)
    apply_speed_settings(model, attention, compile)
    model.load_seconds = time.perf_counter() - start
    log.info("loaded model %s on %s in %.2fs (memory policy %s)", name, device, model.load_seconds,
             model.placement.policy)
    return model


def checkpoint_family(name: str, models_dir: str | None) -> Family:
    """The family of checkpoint `name`, read from its header before anything is loaded (a diffusers
    directory is LTX-2 19B); a missing or unreadable file is left for the loader to report."""
    import os

    from . import loading
    from .configs import CheckpointError
    from .safetensors_io import read_header

    try:
        path = loading.resolve_checkpoint(name, models_dir)
        from . import split

        if split.is_split_root(path):  # LTX-2.5's official layout (one file per component)
            return families.by_name("ltx-2.5")
        if os.path.isfile(path):
            return families.by_name(loading.checkpoint_family(read_header(path)))
    except (CheckpointError, OSError):
        pass
    return families.by_name(families.DEFAULT)


def attach_distilled_lora(model: LoadedModel, setting: str, path: str | None, seed: int) -> None:
    """Bind the distilled LoRA to a dev model: the file at `path`, or for the tiny preset with "auto"
    the tiny one (`tiny.build_distilled_lora`)."""
    from .lora import bind_distilled_lora, load_distilled_lora, resolve_distilled_lora_path

    if families.preset(model.name) is not None:
        if setting == "auto":
            tensors = model.family.tiny.distilled_lora(model.pipe.transformer, seed)
            digest = hashlib.sha256()  # of its content, as a file's would be
            for key in sorted(tensors):
                digest.update(key.encode() + tensors[key].numpy().tobytes())
            model.distilled_lora = bind_distilled_lora(model, tensors, {}, label="tiny", digest=digest.hexdigest())
            model.distilled_lora_file = "tiny"
            return
        path = resolve_distilled_lora_path(setting, None)
    if path is not None:
        model.distilled_lora = load_distilled_lora(model, path)
        model.distilled_lora_file = path
        log.info("distilled LoRA %s: %d layers for the dev two-stage pipeline", path, len(model.distilled_lora.layers))


def quantize_text_encoder(text_encoder, setting: str, fp8_compute: str, device: torch.device) -> dict:
    """Gemma's decoder linears to FP8 when `setting` is fp8; what was chosen and why, for /health."""
    from .memory import choose_text_encoder_dtype
    from .text_encoder import quantize_gemma

    choice = choose_text_encoder_dtype(setting, 1 << 62, {}, {}, 0, device.type)  # a model this small always fits
    if choice["dtype"] == "fp8":
        choice["fp8_layers"] = quantize_gemma(text_encoder, fp8_compute, device)
    return choice


def apply_speed_settings(model: LoadedModel, attention: str = "auto", compile: str = "off") -> None:
    """The attention kernel, and regional compilation of the transformer block (warmed up by the caller)."""
    from . import speed

    choice, reason = speed.apply_attention([model.pipe.transformer], attention, model.device, model.dtype)
    model.speed["attention"] = {"backend": choice, "reason": reason}
    if model.diffusion_decoder is not None:
        model.speed["decoder_attention"] = speed.apply_decoder_attention(model.diffusion_decoder, model.device)
    enabled = speed.compile_enabled(compile, model.device)
    model.speed["compile"] = {"enabled": enabled, "setting": compile}
    if enabled:
        speed.compile_blocks(model.pipe.transformer)
        model.speed["compile"].update(warmed_up=False, warmup_seconds=None)


def load_from_settings(settings) -> LoadedModel:
    """`load_model` with everything a `Settings` says."""
    model = load_model(
        settings.model, device=settings.device, models_dir=settings.models_dir, gemma_dir=settings.resolved_gemma_dir,
        memory_policy=settings.memory_policy, fp8_compute=settings.fp8_compute, variant=settings.variant,
        layers=settings.layers, text_encoder_dtype=settings.text_encoder_dtype, attention=settings.attention,
        compile=settings.compile, prompt_cache_mb=settings.prompt_cache_mb, upsampler=settings.upsampler,
        spatial_upscaler=settings.spatial_upscaler, temporal_upscaler=settings.temporal_upscaler,
        distilled_lora=settings.distilled_lora, vae_decoder=settings.vae_decoder, quantize=settings.quantize,
        parts={"text_encoder": getattr(settings, "text_encoder", None), "video_vae": getattr(settings, "video_vae", None),
               "audio_vae": getattr(settings, "audio_vae", None),
               "duration_head": getattr(settings, "duration_head", None)},
    )
    model.prompt_expansion_tokens = settings.prompt_expansion_tokens
    return model
