"""The request model: one definition shared by the server, the RunPod handler, the CLI and /docs (the
response models are in ltx2.responses, re-exported here).

Field names, types and defaults follow the contract of the original self-hosted worker, so its
clients (curl, the Python and bash snippets in llms.txt) work unchanged.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .keyframes import MAX_KEYFRAMES, KeyframeInput, KeyframeProblem
from .keyframes import check_items as check_keyframes
from .keyframes import resolve as resolve_keyframes
from .responses import AppliedLora, GenerateResponse, StageTimings  # noqa: F401  (re-exported: one import for both)
from .extend import ExtendSpec
from .extend import problem as extend_problem
from . import video_to_video as v2v

DEFAULT_NEGATIVE_PROMPT = "blurry, low quality, distorted, glitchy, watermark"
MAX_SEED = 2**53 - 1  # the largest integer every JSON client reads back exactly

# 497 frames: the 8k+1 count nearest 20 s at 25 fps (the vendor's longest ltx-2-fast clip; 10 s at 50 fps).
# ltx-core's transformer positions time in seconds within positional_embedding_max_pos[0] = 20 (and
# audio_positional_embedding_max_pos = [20]): 497 frames at 25 fps end at 19.88 s; 505 would pass 20 s.
FRAME_MIN, FRAME_MAX = 9, 497
# temporal_upscale doubles both: the output stays within the frame limit and ltx-pipelines' 60 fps cap.
TEMPORAL_MAX_FRAMES, TEMPORAL_MAX_FPS = (FRAME_MAX - 1) // 2 + 1, 30


def temporal_problem(num_frames: int, fps: int) -> str | None:
    """Why temporal_upscale cannot double this clip, in words; None when it can."""
    if fps > TEMPORAL_MAX_FPS:
        return (f"temporal_upscale doubles fps, and ltx-pipelines conditions at most 60 fps: fps must be at most "
                f"{TEMPORAL_MAX_FPS}, got {fps}")
    if num_frames > TEMPORAL_MAX_FRAMES:
        return (f"temporal_upscale makes 2N-1 frames, at most {FRAME_MAX}: num_frames must be at most "
                f"{TEMPORAL_MAX_FRAMES}, got {num_frames} ({2 * num_frames - 1} frames)")
    return None
SIZE_MIN, SIZE_MAX = 64, 3840

# The named sizes of the hosted LTX-2 APIs (seed 004's `video_size`), width x height.
VIDEO_SIZE_PRESETS = {
    "square_hd": (1024, 1024),
    "square": (512, 512),
    "portrait_4_3": (768, 1024),
    "portrait_16_9": (576, 1024),
    "landscape_4_3": (1024, 768),
    "landscape_16_9": (1024, 576),
}
VideoSize = Literal["auto", "square_hd", "square", "portrait_4_3", "portrait_16_9", "landscape_4_3",
                    "landscape_16_9"]

# Output formats: seed 004's names and values. What each maps to is ltx2.media.encode's tables.
VideoOutputType = Literal["X264 (.mp4)", "VP9 (.webm)", "PRORES4444 (.mov)", "GIF (.gif)"]
VideoQuality = Literal["low", "medium", "high", "maximum"]
VideoWriteMode = Literal["fast", "balanced", "small"]
DEFAULT_OUTPUT_TYPE = "X264 (.mp4)"
GIF_MAX_FPS = 50  # GIF delays are in 1/100 s and browsers slow down frames shorter than 2/100 s


def _json_number(value: Any, name: str) -> Any:
    # JSON true/false and "7" are not numbers; pydantic would coerce them, the schema says no.
    if isinstance(value, (bool, str)):
        kind = "a number" if name.endswith(("scale", "strength")) else "an integer"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    if name == "fps" and isinstance(value, float) and value != int(value):  # fal takes 23.976; we do not
        raise ValueError(f"fps must be a whole number of frames per second (25.0 is 25), got {value}")
    return value


CAMERA_LORAS = ("none", "dolly_in", "dolly_out", "dolly_left", "dolly_right", "jib_up", "jib_down", "static")
MAX_LORAS = 8



# A character of text: neither whitespace nor a control character. One expression for both the check and
# the schema's `pattern`: JSON Schema's \s (ECMA-262) and Python's differ (U+001F and U+0085 are
# whitespace to Python, U+FEFF to ECMA), and the controls and U+FEFF listed here cover the difference.
PROMPT_TEXT = r"[^\s\ufeff\x00-\x1f\x7f-\x9f]"

class LoraInput(BaseModel):
    """One LoRA for this request."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        min_length=1, max_length=2048,
        description="A LoRA .safetensors file: a file name in the server's LoRA directory (<models dir>/loras/), "
        "an absolute path inside it, or an http(s) URL (public addresses, up to the server's --max-lora-mb; "
        "downloaded once and kept by content hash). Lightricks' trainer, ComfyUI, Kohya and diffusers/PEFT key "
        "styles are read.",
        examples=["my-style.safetensors"],
    )
    scale: float = Field(
        default=1.0, ge=0.0, le=4.0,
        description="How strongly the LoRA applies: 0 leaves the model as it is, 1 is as trained.",
        examples=[1.0],
    )

    @field_validator("scale", mode="before")
    @classmethod
    def _a_json_number(cls, value: Any, info) -> Any:
        return _json_number(value, info.field_name)

    @field_validator("path", mode="before")
    @classmethod
    def _names_a_file(cls, value: Any) -> Any:
        # fal's own examples send {"path": ""}: say what a path is rather than only "must not be empty".
        if isinstance(value, str) and not value.strip():
            raise ValueError("path must name a .safetensors file (a file name in the server's LoRA "
                             "directory, or an http(s) URL), got an empty string; leave the item out for no LoRA")
        return value


# fal's LTX-2 endpoints (seeds 001 and 004) name some fields differently: a request written for them runs
# here unchanged. Each name is translated before validation, so a job is stored under ours.
FAL_RENAMES = {"image_url": "image_start", "end_image_url": "image_end", "audio_url": "audio",
               "generate_audio": "include_audio"}
FAL_ACCELERATIONS = ("none", "regular", "high", "full")
_FAL_MEDIA = "an http(s) URL or a data URI"
FAL_FIELDS = {  # as /docs shows them: the schema accepts what the server accepts
    "image_url": {"type": "string", "description": f"fal's name for image_start: {_FAL_MEDIA} (or bare base64). "
                  "Give one of the two.", "examples": ["https://example.com/first-frame.jpg"]},
    "end_image_url": {"type": "string", "description": f"fal's name for image_end: {_FAL_MEDIA}. Give one of the "
                      "two.", "examples": ["https://example.com/last-frame.jpg"]},
    "audio_url": {"type": "string", "description": f"fal's name for audio: {_FAL_MEDIA}. Given without "
                  "num_frames, duration or match_audio_length, the video lasts as long as the audio (fal's "
                  "match_audio_length default, true); `audio` keeps this API's (false).",
                  "examples": ["https://example.com/speech.mp3"]},
    "generate_audio": {"type": "boolean", "description": "fal's name for include_audio. Give one of the two.",
                       "examples": [True]},
    "sync_mode": {"type": "boolean", "description": 'fal\'s switch for the file\'s delivery: true is response_format '
                  '"data_uri", false is "url". Give one of the two; left out, the route\'s default.',
                  "examples": [True]},
    "enable_safety_checker": {"type": "boolean", "const": False, "description": "fal screens its videos with a "
                              "safety checker; this server has none, so true is refused rather than ignored. "
                              "false (or leaving it out) is accepted.", "examples": [False]},
    "acceleration": {"type": "string", "const": "none", "description": "fal's speed-ups of its hosted model "
                     '("regular", "high", "full") do not exist here and are refused; "none" is accepted. '
                     "num_inference_steps sets the speed.", "examples": ["none"]},
}


def _fal_request(data: dict) -> dict:
    """`data` with fal's names and values turned into ours; a conflict or a fal option not honoured here
    is a FieldConflict naming the fal field."""
    if not (data.keys() & FAL_FIELDS.keys()) and not isinstance(data.get("video_size"), dict):
        return data
    data = dict(data)
    for name in ("generate_audio", "sync_mode", "enable_safety_checker"):
        if name in data and not isinstance(data[name], bool):
            raise FieldConflict(name, f"{name} must be true or false, got {data[name]!r}")
    for name in ("image_url", "end_image_url", "audio_url"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise FieldConflict(name, f"{name} must be a string ({_FAL_MEDIA}), got {type(data[name]).__name__}")
    if data.pop("enable_safety_checker", False):
        raise FieldConflict("enable_safety_checker", "enable_safety_checker: this server has no safety checker, so "
                            "it cannot screen the video as fal does; send false or leave it out")
    if "acceleration" in data and (value := data.pop("acceleration")) != "none":
        if value not in FAL_ACCELERATIONS:
            raise FieldConflict("acceleration", f"acceleration must be one of {', '.join(FAL_ACCELERATIONS)}, "
                                f"got {value!r}"[:MAX_MESSAGE_CHARS])
        raise FieldConflict("acceleration", f"acceleration {value!r} is a speed-up of fal's hosted model, which "
                            'this server does not have; send "none" or leave it out (num_inference_steps sets the '
                            "speed here)")
    if "sync_mode" in data:
        if "response_format" in data:
            raise FieldConflict("sync_mode", "give response_format or sync_mode (fal's name for it), not both")
        data["response_format"] = "data_uri" if data.pop("sync_mode") else "url"
    fal_audio = data.get("audio_url") is not None
    for theirs, ours in FAL_RENAMES.items():
        if theirs not in data:
            continue
        if ours in data:
            raise FieldConflict(theirs, f"give {ours} or {theirs} (fal's name for it), not both")
        data[ours] = data.pop(theirs)
    size = data.get("video_size")
    if isinstance(size, dict):  # fal's ImageSize: {"width": ..., "height": ...}
        if set(size) != {"width", "height"}:
            raise FieldConflict("video_size", f"video_size as an object takes width and height (fal's ImageSize), "
                                f"got {sorted(map(str, size))}"[:MAX_MESSAGE_CHARS])
        if "width" in data or "height" in data:
            raise FieldConflict("video_size", "give width and height or video_size, not both")
        del data["video_size"]
        data["width"], data["height"] = size["width"], size["height"]
    if fal_audio and not data.keys() & {"num_frames", "duration", "match_audio_length"}:
        data["match_audio_length"] = True  # fal's default: the video lasts as long as the audio
    return data


class RetakeSpan(BaseModel):
    """The span of the input video a retake regenerates, in seconds."""

    model_config = ConfigDict(extra="forbid")

    start: float = Field(ge=0.0, le=3600.0, description="Where the span starts, in seconds (inclusive).",
                         examples=[0.5])
    end: float = Field(gt=0.0, le=3600.0, description="Where it ends, in seconds (exclusive); after start and "
                       "within the output's num_frames / fps.", examples=[1.5])


# Fields a retake cannot take with it: the video is its only conditioning, and it runs one stage.
RETAKE_EXCLUDES = ("image_start", "image_end", "keyframes", "audio", "match_audio_length", "duration",
                   "temporal_upscale")


class GenerateRequest(BaseModel):
    """What to generate. Only `prompt` is required. fal's field names are accepted too (image_url,
    end_image_url, audio_url, generate_audio, sync_mode, video_size as {width, height})."""

    model_config = ConfigDict(
        extra="forbid",  # a misspelt or unsupported field is refused, never silently ignored
        json_schema_extra={
            "examples": [
                {"prompt": "A cat sitting calmly on a cushion, soft lighting, gentle purring sounds",
                 "width": 288, "height": 512, "num_frames": 49, "fps": 25, "seed": 42},
            ]
        },
    )

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler) -> dict[str, Any]:
        # fal's names are accepted (translated in _named_size), so the schema lists them too.
        schema = handler.resolve_ref_schema(handler(core_schema))
        schema["properties"].update(FAL_FIELDS)
        return schema

    prompt: str = Field(
        description="What the video shows and what it sounds like. Describe visuals and audio; for speech "
        'use "A person speaking: <dialogue>, <scene>".',
        min_length=1,
        max_length=10_000,
        json_schema_extra={"pattern": PROMPT_TEXT},  # not only whitespace (checked below; said here for /docs)
        examples=["A waterfall in a forest with rushing water sounds and birds chirping, camera pans slowly"],
    )
    negative_prompt: str = Field(
        default=DEFAULT_NEGATIVE_PROMPT,
        description="What to avoid. Used only with classifier-free guidance (guidance_scale or audio_guidance_scale "
        "above 1).",
        max_length=10_000,
        examples=[DEFAULT_NEGATIVE_PROMPT],
    )
    width: int = Field(
        default=288, ge=SIZE_MIN, le=SIZE_MAX, multiple_of=2,
        description="Frame width in pixels, any even number. 288x512 is 9:16 portrait; 768x432 and 1920x1080 are "
        "16:9. The model runs at the nearest multiple of 32 (of 64 for two-stage) at least as large and the frames "
        "are center-cropped "
        "to exactly this size; the response's model_resolution says which.",
        examples=[288],
    )
    height: int = Field(
        default=512, ge=SIZE_MIN, le=SIZE_MAX, multiple_of=2,
        description="Frame height in pixels, any even number (see width for how other sizes are made).",
        examples=[512],
    )
    num_frames: int = Field(
        default=49, ge=FRAME_MIN, le=FRAME_MAX,
        description=f"Number of frames, of the form 8k+1 (9, 17, 25, ..., 49, ..., 121, ..., {FRAME_MAX}): the video VAE "
        "compresses 8 frames into one latent after the first. 49 frames at 25 fps is 1.96 s.",
        examples=[49],
    )
    duration: Literal["auto"] | None = Field(
        default=None,
        description='"auto": the model picks the clip\'s length from the prompt (LTX-2.5\'s duration head), '
        "between 1 s and the frame limit; the result's num_frames says what it chose. A model without a duration "
        'head refuses it. On LTX-2.5 a request without num_frames is "auto" too.',
        examples=["auto"],
    )
    fps: int = Field(default=25, ge=1, le=60, description="Frames per second of the output video.", examples=[25])
    guidance_scale: float | None = Field(
        default=None, ge=1.0, le=20.0,
        description="Classifier-free guidance scale. 1.0 disables guidance (one transformer pass per step). "
        "Empty: the loaded model's default (1.0 for distilled checkpoints, 3.0 for dev ones).",
        examples=[1.0],
    )
    audio_guidance_scale: float | None = Field(
        default=None, ge=1.0, le=20.0,
        description="Classifier-free guidance scale of the soundtrack. Empty: the loaded model's default (7.0 for dev "
        "checkpoints; for distilled ones it follows guidance_scale).",
        examples=[7.0],
    )
    stg_scale: float | None = Field(
        default=None, ge=0.0, le=10.0,
        description="Spatio-temporal guidance of the video: steers away from a pass with self-attention skipped in "
        "stg_blocks. 0 turns it off (one pass fewer per step). Empty: the model's default (1.0 dev, 0 distilled).",
        examples=[1.0],
    )
    audio_stg_scale: float | None = Field(
        default=None, ge=0.0, le=10.0,
        description="Spatio-temporal guidance of the soundtrack (as stg_scale). Empty: the model's default.",
        examples=[1.0],
    )
    modality_scale: float | None = Field(
        default=None, ge=1.0, le=10.0,
        description="Modality guidance of the video: steers away from a pass without audio<->video cross-attention, "
        "tightening audio-video sync. 1 turns it off. Empty: the model's default (3.0 dev, 1 distilled).",
        examples=[3.0],
    )
    audio_modality_scale: float | None = Field(
        default=None, ge=1.0, le=10.0,
        description="Modality guidance of the soundtrack (as modality_scale). Empty: the model's default.",
        examples=[3.0],
    )
    guidance_rescale: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="How far the guided video prediction is rescaled back to the spread of the plain one (0: not "
        "at all). Empty: the model's default (0.7 dev, 0 distilled).",
        examples=[0.7],
    )
    audio_guidance_rescale: float | None = Field(
        default=None, ge=0.0, le=1.0,
        description="The same rescale for the soundtrack. Empty: the model's default.",
        examples=[0.7],
    )
    stg_blocks: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, min_length=1, max_length=8,
        description="Transformer blocks (0-based) whose self-attention the STG pass skips, each below the loaded "
        "model's block count (48 for LTX-2 19B; /health says). Empty: the model's default (block 29 for LTX-2 "
        "19B, the reference's choice).",
        examples=[[29]],
    )
    num_inference_steps: int | None = Field(
        default=None, ge=1, le=100,
        description="Denoising steps. Empty: the loaded model's default (8 for distilled checkpoints, with their "
        "trained sigma schedule; 40 for dev ones).",
        examples=[8],
    )
    use_multiscale: bool | None = Field(
        default=None,
        description="true: the two-stage pipeline Lightricks runs the 19B with: the video is made at half "
        "the width and height, upsampled x2 in latent space by the spatial upsampler, and refined at full size in 3 "
        "more steps (better detail for about the same time). It runs at multiples of 64 and crops to your size. "
        "A dev checkpoint guides stage 1 and refines with its distilled LoRA (GET /health, model.distilled_lora). "
        "false: one stage at full size. Empty: true when the server has the upsampler loaded (GET /health, "
        "model.upsampler) and the checkpoint is distilled or has the distilled LoRA, else false.",
        examples=[True],
    )
    temporal_upscale: bool = Field(
        default=False,
        description="true: double the frame rate after the two-stage pipeline with the x2 temporal latent upscaler "
        "(ltx-pipelines' DFR temporal round): num_frames N becomes 2N-1 and fps doubles (25 -> 50), the soundtrack "
        f"keeps its length. Needs the two-stage pipeline, fps at most {TEMPORAL_MAX_FPS} and num_frames at most "
        f"{TEMPORAL_MAX_FRAMES} (the output is at most {FRAME_MAX} frames at 60 fps), and a model with the temporal "
        "upscaler loaded (GET /health, model.temporal_upsampler: LTX-2.3 and LTX-2.5 publish one). false: the "
        "frame rate asked for.",
        examples=[False],
    )
    seed: int | None = Field(
        default=None, ge=0, le=MAX_SEED,
        description="Random seed. The same request with the same seed gives the same video. Empty: a random seed, "
        "returned in the response so a good result can be repeated.",
        examples=[1234567890],
    )
    include_audio: bool = Field(
        default=True,
        description="Put the generated soundtrack in the file (stereo AAC in MP4 and MOV, Opus in WebM; a GIF has "
        "no audio). false: a video-only file.",
        examples=[True],
    )

    image_start: str | None = Field(
        default=None,
        description="An image the video starts from (animate a picture, keep a character consistent): a data URI "
        "(data:image/png;base64,...) or bare base64 of a PNG, JPEG, WebP or GIF (first frame), up to 20 MB. It is "
        "resized to cover the frame and center-cropped, never stretched.",
        examples=["data:image/png;base64,iVBORw0KGgo..."],
    )
    image_end: str | None = Field(
        default=None,
        description="An image the video ends on (interpolate between two keyframes); same formats as image_start.",
        examples=["data:image/jpeg;base64,/9j/4AAQ..."],
    )
    image_strength: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="How strictly the first frame follows image_start: 1.0 keeps it fixed, lower values let it "
        "change in proportion, 0.0 is the same as no image.",
        examples=[1.0],
    )
    end_image_strength: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="How strictly the last frame follows image_end (as image_strength).",
        examples=[1.0],
    )
    interpolation_direction: Literal["forward", "backward"] = Field(
        default="forward",
        description="forward: from image_start to image_end. backward: from image_end to image_start (the end "
        "image opens the video and the start image closes it).",
        examples=["forward"],
    )
    keyframes: list[KeyframeInput] = Field(
        default_factory=list, max_length=MAX_KEYFRAMES,
        description=f"Images held at any frames, at most {MAX_KEYFRAMES}: each {{image, frame or time, strength}}. "
        "Frame 0 is held as the first frame (as image_start, which is the same as a frame-0 keyframe); any other "
        "frame guides the video towards its image there. image_start and image_end are shorthands for frame 0 "
        "and the last frame; two images on one frame are refused.",
        examples=[[{"image": "data:image/png;base64,iVBORw0KGgo...", "frame": 24, "strength": 1.0}]],
    )
    audio: str | None = Field(
        default=None,
        description="A soundtrack the video follows (lip sync, music): a data URI (data:audio/wav;base64,...) or "
        "bare base64 of WAV, MP3, OGG/Opus, FLAC or M4A/AAC, any sample rate, mono or stereo, up to 50 MB. It is "
        "trimmed or padded with silence to the video's length unless match_audio_length is true.",
        examples=["data:audio/wav;base64,UklGRi..."],
    )
    video: str | None = Field(
        default=None,
        description="A video to retake (see retake), or the reference video of ic_lora (video to video): a data URI "
        "(data:video/mp4;base64,...), bare base64, or an http(s) URL of an MP4/MOV or WebM/MKV, up to "
        "LTX2_MAX_VIDEO_MB (100 MB) and LTX2_MAX_VIDEO_SECONDS (30 s). Its frames are taken at this request's fps by "
        "time and resized to cover the frame and center-cropped; its soundtrack, when it has one, is kept outside "
        "the span. Empty width/height/num_frames/fps come from the video (its size rounded to multiples of 32, its "
        "length to the 8k+1 frames it covers at its own rate).",
        examples=["data:video/mp4;base64,AAAAIGZ0eXBpc29t..."],
    )
    retake: RetakeSpan | None = Field(
        default=None,
        description="Regenerate the span [start, end) seconds of video from the prompt and keep the rest: frames "
        "outside the span are the input's own (pasted back bit for bit), and so is its soundtrack outside the "
        "span; inside, video and audio are made anew (ltx-pipelines' RetakePipeline: its temporal region mask, "
        "one stage at the model size).",
        examples=[{"start": 0.5, "end": 1.5}],
    )
    extend: ExtendSpec | None = Field(
        default=None,
        description="Continue video forward (after its last frame) or backward (before its first) by seconds, with "
        "its audio: the input's frames and soundtrack are kept as they are and new ones generated in windows of "
        "num_frames frames, each conditioned on the last window's frames (see README, Extend a video).",
        examples=[{"seconds": 5.0, "direction": "forward"}],
    )
    # Video to video's fields; their descriptions are ltx2.video_to_video.DOCS.
    ic_lora: str | None = Field(default=None, min_length=1, max_length=255, description=v2v.DOCS["ic_lora"],
                                examples=["ltx-2-19b-ic-lora-canny-control.safetensors"])
    ic_lora_scale: float = Field(default=1.0, ge=0.0, le=v2v.IC_LORA_SCALE_MAX, description=v2v.DOCS["ic_lora_scale"],
                                 examples=[1.0])
    video_strength: float = Field(default=1.0, ge=0.0, le=1.0, description=v2v.DOCS["video_strength"], examples=[1.0])
    conditioning_attention_strength: float = Field(default=1.0, ge=0.0, le=1.0, examples=[1.0],
                                                   description=v2v.DOCS["conditioning_attention_strength"])
    conditioning_attention_mask: str | None = Field(default=None, description=v2v.DOCS["conditioning_attention_mask"],
                                                    examples=["data:video/mp4;base64,AAAAIGZ0eXBpc29t..."])
    control: Literal["canny", "depth", "pose"] | None = Field(default=None, description=v2v.DOCS["control"],
                                                             examples=["canny"])
    audio_strength: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="1.0: the video follows the input audio exactly and the MP4's soundtrack is the input itself. "
        "Lower: the soundtrack starts from a partly noised copy and is regenerated with the video.",
        examples=[1.0],
    )
    match_audio_length: bool = Field(
        default=False,
        description="With audio: take num_frames from the audio's duration at this fps (the nearest 8k+1 between "
        f"9 and {FRAME_MAX}) instead of the num_frames field.",
        examples=[False],
    )
    video_size: VideoSize | None = Field(
        default=None,
        description='A named size, as the hosted LTX-2 APIs take: ' + ", ".join(
            f"{name} = {w}x{h}" for name, (w, h) in VIDEO_SIZE_PRESETS.items())
        + ' (width and height, when given too, must match). "auto": take the aspect ratio of image_start and '
        "pick the nearest size in multiples of 32 with about width x height pixels. Empty: width and height "
        "as given.",
        examples=["landscape_16_9"],
        json_schema_extra={"x-sizes": {name: f"{w}x{h}" for name, (w, h) in VIDEO_SIZE_PRESETS.items()}},
    )

    preprocess_audio: bool = Field(
        default=True,
        description="With audio: before the model hears it, up to 1 s of leading silence is cut (from the MP4's "
        "soundtrack too, so they stay in sync) and its loudness is brought to -18 LUFS (the model's copy only; "
        "the MP4 keeps your level). false: the model hears the audio exactly as sent, only resampled.",
        examples=[True],
    )
    loras: list[LoraInput] = Field(
        default_factory=list, max_length=MAX_LORAS,
        description=f"Custom LoRAs (style, subject...), applied together, at most {MAX_LORAS}. The response lists "
        "each one applied with its scale and the number of layers it adapted. A LoRA that does not fit this model "
        "is refused (422) naming it, never partly applied.",
        examples=[[{"path": "my-style.safetensors", "scale": 1.0}]],
    )
    camera_lora: Literal[CAMERA_LORAS] = Field(  # type: ignore[valid-type]
        default="none",
        description="A camera move from Lightricks' LTX-2 19B camera-control LoRAs: more reliable than describing "
        "the move in the prompt. Combines with loras. The operator installs them with `ltx2 download --camera-loras`.",
        examples=["none"],
    )
    camera_lora_scale: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="How strongly the camera LoRA applies.",
        examples=[1.0],
    )
    enable_prompt_expansion: bool = Field(
        default=False,
        description="Have Gemma 3 (the text encoder) rewrite the prompt first into the detailed single-paragraph "
        "description of picture and sound LTX-2 was trained on; for image-to-video it also looks at image_start. "
        "Seeded by seed, returned as expanded_prompt. Off by default: the prompt then means exactly what you sent.",
        examples=[False],
    )
    video_output_type: VideoOutputType = Field(
        default=DEFAULT_OUTPUT_TYPE,
        description='The file to make. "X264 (.mp4)": H.264 + AAC in MP4, plays everywhere. "VP9 (.webm)": VP9 + '
        'Opus in WebM, smaller, for browsers. "PRORES4444 (.mov)": ProRes 4444 (10-bit 4:4:4) + AAC in QuickTime, '
        'for editing; large. "GIF (.gif)": an animated GIF with one palette of up to 255 colours and no audio '
        "(has_audio is false), at most 50 fps. MP4 and MOV have their index first (faststart), so playback starts "
        "before the download ends.",
        examples=[DEFAULT_OUTPUT_TYPE],
    )
    video_quality: VideoQuality = Field(
        default="high",
        description="low, medium, high or maximum: the codec's quality control. H.264 CRF 28/23/18/12 (18 is visually "
        "lossless), VP9 CRF 42/36/31/20, ProRes quantiser 12/6/3/1, GIF palette of 32/64/128/255 colours; audio "
        "AAC 96/128/192/256 kb/s or Opus 64/96/128/192 kb/s.",
        examples=["high"],
    )
    video_write_mode: VideoWriteMode = Field(
        default="balanced",
        description="fast, balanced or small: the encoder's speed preset, trading encoding time for file size. H.264: "
        "x264 preset superfast/veryfast/medium. VP9: libvpx realtime cpu-used 8 / good 5 / good 2. ProRes: no "
        "effect (intra-only, one speed). GIF: no dithering and a quicker palette / Floyd-Steinberg dithering / no "
        "dithering, so still areas stay unchanged and only the changed rectangle of each frame is stored.",
        examples=["balanced"],
    )

    response_format: Literal["data_uri", "url"] | None = Field(
        default=None,
        description='How the file comes back: "data_uri" (base64 in the response; the default for /generate) or '
        '"url" (a link to GET /jobs/{id}/video.<ext>, kept for the server\'s result time-to-live; the default for '
        "/jobs).",
        examples=["data_uri"],
    )

    @field_validator("width", "height", "num_frames", "fps", "num_inference_steps", "seed", "guidance_scale",
                     "image_strength", "end_image_strength", "audio_strength", "camera_lora_scale",
                     "audio_guidance_scale", "stg_scale", "audio_stg_scale", "modality_scale", "audio_modality_scale",
                     "guidance_rescale", "audio_guidance_rescale", mode="before")
    @classmethod
    def _a_json_number(cls, value: Any, info) -> Any:
        return _json_number(value, info.field_name)

    @field_validator("stg_blocks", mode="before")
    @classmethod
    def _block_indices(cls, value: Any) -> Any:
        if value is None:
            return value
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
            raise ValueError(f"stg_blocks must be a list of block numbers (integers), got {value!r}")
        if any(v < 0 for v in value):
            raise ValueError(f"stg_blocks must be block numbers from 0, got {value!r}")
        return value

    @field_validator("use_multiscale", mode="before")
    @classmethod
    def _a_json_boolean_or_null(cls, value: Any, info) -> Any:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{info.field_name} must be true or false, got {value!r}")
        return value

    @field_validator("include_audio", "match_audio_length", "preprocess_audio", "enable_prompt_expansion",
                     "temporal_upscale", mode="before")
    @classmethod
    def _a_json_boolean(cls, value: Any, info) -> Any:
        if not isinstance(value, bool):
            raise ValueError(f"{info.field_name} must be true or false, got {value!r}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        if not re.search(PROMPT_TEXT, value):
            raise ValueError("prompt must contain text, got only whitespace or control characters")
        return value

    @field_validator("num_frames")
    @classmethod
    def _frames_8k_plus_1(cls, value: int) -> int:
        if (value - 1) % 8:
            below = (value - 1) // 8 * 8 + 1
            raise ValueError(
                f"num_frames must be of the form 8k+1 (e.g. {below} or {below + 8}), got {value}"
            )
        return value

    @model_validator(mode="before")
    @classmethod
    def _named_size(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = _fal_request(data)
        # A named size fills width and height; given as well, they must match (checked on video_size).
        if isinstance(data, dict) and isinstance(data.get("video_size"), str) and data["video_size"] in VIDEO_SIZE_PRESETS:
            width, height = VIDEO_SIZE_PRESETS[data["video_size"]]
            data = {"width": width, "height": height, **data}
        return data

    @field_validator("video_size")
    @classmethod
    def _named_size_matches(cls, value: str | None, info) -> str | None:
        preset = VIDEO_SIZE_PRESETS.get(value or "")
        size = (info.data.get("width"), info.data.get("height"))
        if preset is not None and None not in size and size != preset:
            raise ValueError(f"video_size {value!r} is {preset[0]}x{preset[1]}; leave width and height out or make "
                             f"them match, got {size[0]}x{size[1]}")
        return value

    @field_validator("video_output_type")
    @classmethod
    def _gif_frame_rate(cls, value: str, info) -> str:
        fps = info.data.get("fps")
        if value == "GIF (.gif)" and isinstance(fps, int) and fps > GIF_MAX_FPS:
            raise ValueError(f'video_output_type "GIF (.gif)" plays at most {GIF_MAX_FPS} fps (browsers slow down '
                             f"faster GIFs), got fps {fps}; lower fps or choose another video_output_type")
        return value

    @model_validator(mode="after")
    def _one_length(self) -> GenerateRequest:
        if self.duration == "auto" and "num_frames" in self.model_fields_set:
            raise FieldConflict("duration", 'give num_frames or duration "auto", not both')
        if self.duration == "auto" and self.match_audio_length:
            raise FieldConflict("duration", 'give match_audio_length or duration "auto", not both')
        try:  # the frames are checked again at the length chosen, when the audio or the model chooses it
            check_keyframes(self)
            if not self.match_audio_length and self.duration != "auto":
                resolve_keyframes(self)
        except KeyframeProblem as exc:
            raise FieldConflict(exc.field, str(exc)) from None
        self._check_retake()
        if problem := extend_problem(self):
            raise FieldConflict(*problem)
        try:
            v2v.check(self)
        except v2v.VideoToVideoProblem as exc:
            raise FieldConflict(exc.field, str(exc)) from None
        if self.temporal_upscale and (problem := temporal_problem(self.num_frames, self.fps)):
            raise FieldConflict("temporal_upscale", problem)
        if self.temporal_upscale and self.video_output_type == "GIF (.gif)" and 2 * self.fps > GIF_MAX_FPS:
            raise FieldConflict("temporal_upscale", f'temporal_upscale doubles fps to {2 * self.fps}, and "GIF (.gif)" '
                                f"plays at most {GIF_MAX_FPS} fps: lower fps or choose another video_output_type")
        return self

    def _check_retake(self) -> None:
        if self.retake is None:
            if self.video is not None and self.ic_lora is None and self.extend is None:
                raise FieldConflict("video", "video is used by retake (regenerate a span of it), extend (continue it) "
                                             "and ic_lora (video to video): send one of them too, or leave video out")
            return
        if self.video is None:
            raise FieldConflict("retake", "retake regenerates a span of an input video: send video too")
        if self.retake.end <= self.retake.start:
            raise FieldConflict("retake.end", f"retake.end must be after retake.start, got start {self.retake.start:g} "
                                              f"and end {self.retake.end:g}")
        for name in RETAKE_EXCLUDES:
            if name in self.model_fields_set and getattr(self, name) not in (None, False, []):
                raise FieldConflict(name, f"{name} cannot be used with retake: the video (and its soundtrack) is a "
                                          "retake's only input; leave it out")
        if len({"width", "height"} & self.model_fields_set) == 1 and "video_size" not in self.model_fields_set:
            missing = "height" if "width" in self.model_fields_set else "width"
            raise FieldConflict(missing, f"with retake give width and height together, or neither (the video's own "
                                         f"size): {missing} is missing")
        if self.use_multiscale:
            raise FieldConflict("use_multiscale", "retake runs one stage at the model size (as ltx-pipelines' "
                                                  "RetakePipeline): send use_multiscale false or leave it out")
        if "num_frames" in self.model_fields_set and self.retake.start >= self.num_frames / self.fps:
            raise FieldConflict("retake.start", f"retake.start {self.retake.start:g} s is past the video's end "
                                                f"({self.num_frames} frames at {self.fps} fps last "
                                                f"{self.num_frames / self.fps:g} s)")

    @property
    def duration_seconds(self) -> float:
        return self.num_frames / self.fps


class ErrorResponse(BaseModel):
    """Every error has this shape. `error` is a sentence; `code` is stable for programs."""

    error: str = Field(description="What went wrong, naming the field and the rule.",
                       examples=["height must be an even number, got 301"])
    code: str = Field(description="Machine-readable error code.", examples=["invalid_request"])
    field: str | None = Field(default=None, description="The request field at fault, if any.", examples=["height"])
    errors: list[dict[str, Any]] = Field(default_factory=list,
                                         description="Every problem found, each with field and message.")


# ---------------------------------------------------------------------------------------------
# Validation errors as sentences that name the field and the rule.

MAX_LISTED_ERRORS = 20  # a body with a million unknown fields gets a short answer, not a 200 MB one
MAX_MESSAGE_CHARS = 300  # each message, with the value it quotes


def _field_name(loc: tuple) -> str:
    # FastAPI puts where the value came from first; later a "path" is a field (loras.0.path).
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path") else loc)]
    return ".".join(parts) if parts else "body"


def describe_error(err: dict) -> dict[str, Any]:
    """One pydantic error -> {"field": ..., "message": ...} with a message a person can act on."""
    field = _field_name(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    got = err.get("input")
    got_text = repr(got) if isinstance(got, str) else got
    if len(str(got_text)) > 60:  # quote the start of a long value, not all of it
        got_text = f"{str(got_text)[:60]}... ({len(got) if isinstance(got, (str, list, dict)) else 'long'} long)"
    if kind == "multiple_of" and ctx.get("multiple_of") == 2:
        message = f"{field} must be an even number, got {got_text}"
    elif kind == "multiple_of":
        message = f"{field} must be a multiple of {ctx.get('multiple_of')}, got {got_text}"
    elif kind in ("greater_than_equal", "greater_than"):
        bound = ctx.get("ge", ctx.get("gt"))
        op = ">=" if kind == "greater_than_equal" else ">"
        message = f"{field} must be {op} {bound}, got {got_text}"
    elif kind in ("less_than_equal", "less_than"):
        bound = ctx.get("le", ctx.get("lt"))
        op = "<=" if kind == "less_than_equal" else "<"
        message = f"{field} must be {op} {bound}, got {got_text}"
    elif kind == "missing":
        message = f"{field} is required"
    elif kind == "extra_forbidden":
        # No pointer to GET /: the RunPod handler answers with this sentence too, and it has no routes.
        close = difflib.get_close_matches(field, GenerateRequest.model_fields, n=1) if "." not in field else []
        message = f"{field} is not a field of this API" + (f" (did you mean {close[0]}?)" if close else
                                                            " (check its spelling; the README lists the fields)")
    elif kind.startswith("int_") or kind == "int_from_float":
        message = f"{field} must be an integer, got {got_text}"
    elif kind.startswith("float_"):
        message = f"{field} must be a number, got {got_text}"
    elif kind.startswith("bool_"):
        message = f"{field} must be true or false, got {got_text}"
    elif kind.startswith("string_too_short"):
        message = f"{field} must not be empty"
    elif kind.startswith("string_too_long"):
        message = f"{field} must be at most {ctx.get('max_length')} characters"
    elif kind.startswith("string_"):
        message = f"{field} must be a string, got {got_text}"
    elif kind in ("model_type", "dict_type", "model_attributes_type"):
        message = "the request body must be a JSON object"
        field = "body"
    elif kind == "json_invalid":
        message = f"the request body is not valid JSON: {ctx.get('error', err.get('msg'))}"
        field = "body"
    elif kind == "literal_error":
        message = f"{field} must be {ctx.get('expected')}, got {got_text}"
    elif kind == "value_error":
        message = str(ctx.get("error", err.get("msg")))
        if isinstance(ctx.get("error"), FieldConflict):  # a rule across fields names the one it is about
            field = ctx["error"].field
        elif "." in field and message.startswith(field.rsplit(".", 1)[1] + " "):
            message = field + message[len(field.rsplit(".", 1)[1]):]  # an item's own rule: which item
    else:
        message = f"{field}: {err.get('msg')}"
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 3] + "..."
    return {"field": field[:100], "message": message}


def validation_error_body(errors: list[dict]) -> dict[str, Any]:
    """The 422 body: every problem named, up to MAX_LISTED_ERRORS of them (then how many more)."""
    described = [describe_error(e) for e in errors[:MAX_LISTED_ERRORS]]
    first = described[0] if described else {"field": None, "message": "invalid request"}
    message = "; ".join(d["message"] for d in described[:5]) or first["message"]
    if len(errors) > 5:
        message += f"; and {len(errors) - 5} more problems"
    if len(errors) > MAX_LISTED_ERRORS:
        described.append({"field": None, "message": f"{len(errors) - MAX_LISTED_ERRORS} more problems not listed"})
    return ErrorResponse(error=message, code="invalid_request", field=first["field"], errors=described).model_dump()


class FieldConflict(ValueError):
    """A rule across several fields, raised from a model validator, naming the field it is about."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class InvalidRequest(ValueError):
    """A request well-formed for the API but not acceptable: HTTP 422, or 413 for an input too large."""

    def __init__(self, field: str, message: str, status: int = 422):
        super().__init__(message)
        self.field = field
        self.message = message
        self.status = status

    @property
    def code(self) -> str:
        return "payload_too_large" if self.status == 413 else "invalid_request"

    def body(self) -> dict[str, Any]:
        return ErrorResponse(
            error=self.message, code=self.code, field=self.field,
            errors=[{"field": self.field, "message": self.message}],
        ).model_dump()


def generation_failed_body(exc: Exception) -> dict[str, Any]:
    """The body for a job that failed inside the model (HTTP 500 on the server, an error on RunPod)."""
    return ErrorResponse(error=f"generation failed: {type(exc).__name__}: {exc}", code="generation_failed").model_dump()


def request_rules() -> dict[str, str]:
    """Each bounded field's rule as a sentence fragment, read from the request model's own schema."""
    rules = {}
    for name, prop in GenerateRequest.model_json_schema()["properties"].items():
        prop = next((p for p in prop.get("anyOf", []) if "minimum" in p), prop)  # optional fields
        if "minimum" not in prop:
            continue
        rule = f"{prop['minimum']}..{prop['maximum']}"
        if "multipleOf" in prop:
            rule = f"{'even' if prop['multipleOf'] == 2 else 'multiple of ' + str(prop['multipleOf'])}, {rule}"
        rules[name] = rule
    rules["num_frames"] = f"8k+1, {rules['num_frames']}"
    rules["guidance_scale"] += " (1.0 = no classifier-free guidance)"
    return rules


__all__ = [
    "DEFAULT_NEGATIVE_PROMPT",
    "DEFAULT_OUTPUT_TYPE",
    "ErrorResponse",
    "GenerateRequest",
    "GenerateResponse",
    "InvalidRequest",
    "RetakeSpan",
    "StageTimings",
    "ValidationError",
    "generation_failed_body",
    "request_rules",
    "validation_error_body",
]
