"""What a model family is: the one place that knows how LTX-2, LTX-2.3 and LTX-2.5 differ.

A family's description is built once and handed to the loaded model; the stages ask it (its
defaults, its conditioning-image CRF, its tiny preset) and never test a family's name, so a new
family is one new file beside this one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class ModelDefaults:
    """What an empty request field means for this checkpoint."""

    num_inference_steps: int
    guidance_scale: float
    distilled: bool  # a distilled checkpoint uses its trained sigma schedule at its trained step count
    # The reference's multi-modal guider (ltx-pipelines' LTX_2_PARAMS for dev checkpoints); neutral
    # values mean one transformer pass per step.
    audio_guidance_scale: float | None = None  # None: the same as guidance_scale
    stg_scale: float = 0.0
    audio_stg_scale: float = 0.0
    modality_scale: float = 1.0
    audio_modality_scale: float = 1.0
    guidance_rescale: float = 0.0
    audio_guidance_rescale: float = 0.0
    stg_blocks: tuple[int, ...] = (29,)  # the reference's STG block for LTX-2.0 (of 48)

    def as_dict(self) -> dict:
        return {"num_inference_steps": self.num_inference_steps, "guidance_scale": self.guidance_scale,
                "audio_guidance_scale": self.audio_guidance_scale, "stg_scale": self.stg_scale,
                "audio_stg_scale": self.audio_stg_scale, "modality_scale": self.modality_scale,
                "audio_modality_scale": self.audio_modality_scale, "guidance_rescale": self.guidance_rescale,
                "audio_guidance_rescale": self.audio_guidance_rescale, "stg_blocks": list(self.stg_blocks)}


# ltx-pipelines 1.2.0: the distilled schedule needs no guidance; LTX_2_PARAMS is the dev guider.
DISTILLED_DEFAULTS = ModelDefaults(num_inference_steps=8, guidance_scale=1.0, distilled=True)
DEV_DEFAULTS = ModelDefaults(num_inference_steps=40, guidance_scale=3.0, distilled=False, audio_guidance_scale=7.0,
                             stg_scale=1.0, audio_stg_scale=1.0, modality_scale=3.0, audio_modality_scale=3.0,
                             guidance_rescale=0.7, audio_guidance_rescale=0.7)


def dev_defaults(steps: int, stg_block: int) -> ModelDefaults:
    """A later generation's dev guider: LTX_2_PARAMS with its own step count and STG block."""
    return replace(DEV_DEFAULTS, num_inference_steps=steps, stg_blocks=(stg_block,))


@dataclass(frozen=True)
class TinyPreset:
    """Random weights at the family's real structure, tiny widths (the whole product runs on CPU)."""

    name: str  # what --model takes: "tiny", "tiny-2.3"
    components: Callable[[int], dict]  # seed -> the pipeline's components
    upsampler: Callable[[int], Any]  # seed -> the x2 spatial latent upsampler
    distilled_lora: Callable[..., dict]  # (transformer, seed) -> LoRA tensors in the official key style
    # seed -> the family's optional parts beyond LTX2Pipeline's: "duration_head", "diffusion_decoder"
    extras: Callable[[int], dict] | None = None
    # seed -> the x1.5 spatial upsampler (None: the family publishes none)
    upsampler_x1_5: Callable[[int], Any] | None = None
    # seed -> the x2 temporal upsampler (F latent frames -> 2F - 1); None: the family publishes none
    temporal_upsampler: Callable[[int], Any] | None = None


@dataclass(frozen=True)
class OfficialFiles:
    """The published files, by the names ltx2 looks for in the models directory and downloads."""

    repo: str  # the Hugging Face repository
    distilled: str
    dev: str
    checkpoints: tuple[str, ...]  # what `ltx2 download --checkpoint` offers, the default first
    upsampler: str  # spatial x2, the two-stage default
    distilled_lora: str  # what a dev checkpoint's stage 2 refines with
    # The other files a run needs when the family ships one file per component (LTX-2.5), by their
    # paths in the repository (the models directory keeps the same layout).
    parts: tuple[str, ...] = ()
    gemma_repo: str | None = None  # a separate text encoder download (None: bundled with the family)
    camera_loras: bool = False  # Lightricks' seven camera-control LoRAs are published for this family
    upsampler_x1_5: str | None = None  # spatial x1.5 (--spatial-upscaler x1.5); None: not published
    temporal_upsampler: str | None = None  # temporal x2 (a request's temporal_upscale); None: not published

    def upscalers(self) -> dict[str, str]:
        """Every upscaler file this family publishes, by kind: "x2", "x1.5", "temporal"."""
        named = {"x2": self.upsampler, "x1.5": self.upsampler_x1_5, "temporal": self.temporal_upsampler}
        return {kind: path for kind, path in named.items() if path}


@dataclass(frozen=True)
class Family:
    name: str  # "ltx-2", "ltx-2.3", "ltx-2.5": what /health and every result report
    title: str  # for people: "LTX-2 19B"
    distilled: ModelDefaults
    dev: ModelDefaults
    # ltx-pipelines re-compresses a conditioning image with H.264 at this CRF before encoding it
    # (the compression the generation was trained against; PipelineParams.default_image_crf).
    image_crf: int
    vocoder_rate: int  # Hz of the soundtrack the family's vocoder writes
    tiny: TinyPreset
    files: OfficialFiles
    # ltx-pipelines samples a distilled model's first stage with the ancestral (SDE) Euler sampler from
    # LTX-2.5 on (distilled.py: ANCESTRAL_SAMPLER_SINCE_VERSION); earlier generations with plain Euler.
    ancestral_first_stage: bool = False
    # Fragments of layer names that this family's transformer has and some other family's lacks (in
    # ltx-core's and diffusers' names alike). A LoRA key holding one tells which families it can fit;
    # keys of layers every family shares (attention, feed-forward: the same shapes in 19B and 22B) tell
    # nothing, so such a LoRA is taken by any family.
    lora_markers: frozenset[str] = field(default=frozenset())
    notes: tuple[str, ...] = field(default=())

    def defaults(self, distilled: bool) -> ModelDefaults:
        return self.distilled if distilled else self.dev
