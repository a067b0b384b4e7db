"""The plan stage: a request resolved against the loaded model and its decoded inputs (size and length,
guidance knobs, images in conditioning order, one or two stages, the seed) into the `Plan` every other
stage reads. Split from `stages.py`, which re-exports these names."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

from ..keyframes import KeyframeProblem
from ..keyframes import resolve as resolve_keyframes
from ..media.inputs import auto_size
from ..models.loaded import LoadedModel
from ..schema import GenerateRequest, InvalidRequest
from .conditioning import Conditioning, frames_for_duration
from .guidance import Guidance, ModalityGuidance


@dataclass(frozen=True)
class ImageCondition:
    image: object  # a PIL image, or one prepared in the sandbox
    strength: float
    frame: int = 0  # the pixel frame it is held at: 0 is the first latent frame, any other appended tokens


@dataclass(frozen=True)
class Plan:
    """A request resolved against the loaded model and the decoded inputs: what every stage reads."""

    request: GenerateRequest  # video_size "auto" and match_audio_length already applied
    conditioning: Conditioning
    seed: int
    steps: int
    guidance: Guidance
    width: int  # what the file holds
    height: int
    # Every image, in the order the pipeline conditions on them (ltx2.keyframes.resolve): the one at frame 0
    # (image_start, or image_end when backward, or a frame-0 keyframe) first; the others are appended as
    # keyframe tokens in this order.
    images: tuple[ImageCondition, ...]
    audio: np.ndarray | None  # the soundtrack to condition on, at the audio VAE's rate
    use_multiscale: bool = False  # the two-stage pipeline
    # Where num_frames came from: "request", "audio" (match_audio_length) or "duration_head" (length.py,
    # which also leaves the prompt it encoded for the pipeline, and the head's own seconds).
    length_from: str = "request"
    prompt: object | None = None  # stages.PromptEmbeddings (that module imports this one)
    predicted_seconds: float | None = None
    # Video to video (ltx2.pipelines.video_to_video.Reference): the IC-LoRA's reference tokens and the LoRAs
    # that read them, both for the first stage only (`one_stage.make_latents`).
    reference: object | None = None

    @property
    def first(self) -> ImageCondition | None:
        """The image held as the first frame, if any."""
        return next((image for image in self.images if image.frame == 0), None)

    @property
    def guided(self) -> bool:
        """Whether the negative prompt is needed (classifier-free guidance of either stream)."""
        return self.guidance.needs_negative_prompt

    @property
    def keep_input_audio(self) -> bool:
        """A soundtrack held fixed is put in the file as it came, not through the vocoder."""
        return self.conditioning.audio_for_output is not None and self.request.audio_strength == 1.0


def plan_generation(model: LoadedModel, request: GenerateRequest, cond: Conditioning) -> Plan:
    """Validate what depends on the model and the inputs; fill the model's defaults and the seed."""
    request = _resolve_size_and_length(request, cond)
    guidance = resolve_guidance(model, request)
    check_prompt_lengths(model.pipe, request, guidance.needs_negative_prompt)
    return Plan(
        request=request,
        conditioning=cond,
        seed=request.seed if request.seed is not None else secrets.randbelow(2**31),
        steps=request.num_inference_steps or model.defaults.num_inference_steps,
        guidance=guidance,
        width=request.width,
        height=request.height,
        images=image_conditions(request, cond),
        audio=cond.audio_for_vae if cond.audio_for_vae is not None and request.audio_strength > 0 else None,
        use_multiscale=resolve_multiscale(model, request),
        length_from="audio" if request.match_audio_length else "request",
    )


def image_conditions(request: GenerateRequest, cond: Conditioning) -> tuple[ImageCondition, ...]:
    """The request's images at its final length (ltx2.keyframes.resolve: by direction, strength 0 left out),
    each with its decoded picture. Frames past the clip are refused here when the length was not the
    request's (the audio's, or the duration head's)."""
    try:
        listed = resolve_keyframes(request, start=cond.image_start is not None, end=cond.image_end is not None)
    except KeyframeProblem as exc:
        raise InvalidRequest(exc.field, str(exc)) from None
    images = []
    for keyframe in listed:
        image = cond.image(keyframe.source)
        if image is None:
            raise InvalidRequest(keyframe.source, f"{keyframe.source} was not decoded: pass it in the conditioning")
        images.append(ImageCondition(image, keyframe.strength, keyframe.frame))
    return tuple(images)


def resolve_multiscale(model: LoadedModel, request: GenerateRequest) -> bool:
    """Two-stage by default where it can run: the upsampler loaded, and a distilled checkpoint or a
    dev one with the distilled LoRA its stage 2 refines with."""
    refines = model.defaults.distilled or model.distilled_lora is not None
    possible = model.upsampler is not None and refines
    if request.use_multiscale is None:
        return possible
    if request.use_multiscale and model.upsampler is None:
        raise InvalidRequest("use_multiscale", "use_multiscale needs the spatial upsampler, and this server has none "
                                               "loaded (LTX2_UPSAMPLER; `ltx2 download` fetches it): send false or "
                                               "leave it out")
    if request.use_multiscale and not refines:
        raise InvalidRequest("use_multiscale", f"use_multiscale on a dev checkpoint refines stage 2 with the distilled "
                                               f"LoRA ({model.family.files.distilled_lora}), and this server has none loaded "
                                               "(LTX2_DISTILLED_LORA / --distilled-lora; `ltx2 download "
                                               "--distilled-lora` fetches it): send false or leave it out")
    return request.use_multiscale


def _resolve_size_and_length(request: GenerateRequest, cond: Conditioning) -> GenerateRequest:
    """Apply video_size "auto" and match_audio_length; refuse them without the input they read."""
    update: dict = {}
    if request.video_size == "auto":
        if cond.image_start is None:
            raise InvalidRequest("video_size", 'video_size "auto" takes its aspect ratio from image_start; '
                                               "send image_start or leave video_size out")
        update["width"], update["height"] = auto_size(*cond.image_start.size, request.width * request.height)
    if request.match_audio_length:
        if cond.audio_for_vae is None:
            raise InvalidRequest("match_audio_length", "match_audio_length takes the length from audio; "
                                                       "send audio or leave match_audio_length out")
        update["num_frames"] = frames_for_duration(cond.audio_seconds, request.fps)
    return request.model_copy(update=update) if update else request


def resolve_guidance(model: LoadedModel, request: GenerateRequest) -> Guidance:
    """The guider's knobs: the request's where given, the loaded model's defaults elsewhere."""
    defaults = model.defaults

    def pick(name: str) -> float:
        value = getattr(request, name)
        return float(value if value is not None else getattr(defaults, name))

    cfg = pick("guidance_scale")
    if request.audio_guidance_scale is not None:
        audio_cfg = float(request.audio_guidance_scale)
    else:
        audio_cfg = float(defaults.audio_guidance_scale if defaults.audio_guidance_scale is not None else cfg)
    num_blocks = len(model.pipe.transformer.transformer_blocks)
    if request.stg_blocks is not None:
        blocks = tuple(request.stg_blocks)
        if max(blocks) >= num_blocks:
            raise InvalidRequest("stg_blocks", f"stg_blocks must be block numbers below {num_blocks} (the loaded "
                                               f"transformer has {num_blocks} blocks), got {list(blocks)}")
    else:  # the reference's block, or the last one of a smaller model (the tiny preset)
        blocks = tuple(min(b, num_blocks - 1) for b in defaults.stg_blocks)
    return Guidance(
        video=ModalityGuidance(cfg=cfg, stg=pick("stg_scale"), modality=pick("modality_scale"),
                               rescale=pick("guidance_rescale")),
        audio=ModalityGuidance(cfg=audio_cfg, stg=pick("audio_stg_scale"), modality=pick("audio_modality_scale"),
                               rescale=pick("audio_guidance_rescale")),
        stg_blocks=blocks,
    )


def check_prompt_lengths(pipe, request: GenerateRequest, guided: bool) -> None:
    """Refuse prompts longer than the text encoder reads, rather than silently cutting them."""
    limit = pipe.tokenizer_max_length
    fields = ("prompt", "negative_prompt") if guided else ("prompt",)
    for name in fields:
        count = len(pipe.tokenizer(getattr(request, name).strip(), add_special_tokens=True).input_ids)
        if count > limit:
            raise InvalidRequest(name, f"{name} is {count} tokens long; the text encoder reads at most {limit}: "
                                       "shorten it")
