"""Keyframes: images held at any frame of the clip, and how a request's images become one list.

A request names its images three ways: `keyframes` (each at a `frame` or a `time`), and the shorthands
`image_start` (frame 0) and `image_end` (the last frame). `resolve()` turns them into one list of
`Keyframe`s in the order the pipeline conditions on them, as ltx-pipelines' `combined_image_conditionings`
takes its `images`: a frame-0 image replaces the first latent frame; every other one is appended as
keyframe tokens placed in time at its frame, in list order (image_start, then `keyframes` as sent, then
image_end). This module imports nothing of ltx2: the request model (schema.py) uses its item type, and the
pipeline, the job queue and the protocols its helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_KEYFRAMES = 8  # each appended one adds a latent frame of tokens to every transformer pass
# What a queued job's record holds in place of a keyframe's image, kept in the job's inputs file instead
# (the record is validated when read back, so it must be a string; as an image it is refused, never decoded).
STORED_APART = "(kept in the job's inputs file)"
# The request fields that carry a file (besides each keyframe's image); conditioning_attention_mask is ic_lora's.
INPUTS = ("image_start", "image_end", "audio", "video", "conditioning_attention_mask")


class KeyframeInput(BaseModel):
    """One image held at one frame."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(
        min_length=1,
        description="The image: a data URI, bare base64 or an http(s) URL of a PNG, JPEG, WebP or GIF, as "
        "image_start (same limits). Resized to cover the frame and center-cropped.",
        examples=["data:image/png;base64,iVBORw0KGgo..."],
    )
    frame: int | None = Field(
        default=None, ge=0,
        description="The frame it is held at, 0 to num_frames - 1. Give frame or time, not both.",
        examples=[24],
    )
    time: float | None = Field(
        default=None, ge=0,
        description="Or the time it is held at, in seconds: the frame round(time x fps).",
        examples=[0.96],
    )
    strength: float = Field(
        default=1.0, ge=0.0, le=1.0,
        description="How strictly that frame follows the image: 1.0 holds it, lower lets it change, 0.0 is the "
        "same as leaving the keyframe out.",
        examples=[1.0],
    )

    @field_validator("frame", mode="before")
    @classmethod
    def _an_integer(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, float) and value != int(value)) or isinstance(value, str):
            raise ValueError(f"frame must be an integer frame number, got {value!r}")
        return value

    @field_validator("time", "strength", mode="before")
    @classmethod
    def _a_number(cls, value: Any, info) -> Any:
        if isinstance(value, (bool, str)):
            raise ValueError(f"{info.field_name} must be a number, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{info.field_name} must be a finite number, got {value}")
        return value

    def frame_at(self, fps: int) -> int:
        return self.frame if self.frame is not None else round(self.time * fps)


class KeyframeProblem(ValueError):
    """A request's images that cannot all be held: two on one frame, or one past the clip."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Keyframe:
    """One image in the order the pipeline conditions on it: `source` is the request field holding it
    (`image_start`, `image_end`, `keyframes.2.image`), its key in the decoded images."""

    source: str
    frame: int  # pixel frame
    strength: float


def image_field(index: int) -> str:
    return f"keyframes.{index}.image"


def check_items(request) -> None:
    """Each keyframe gives exactly one of frame and time (its other rules are the item model's)."""
    for i, item in enumerate(request.keyframes):
        if (item.frame is None) == (item.time is None):
            field = f"keyframes.{i}.{'frame' if item.frame is not None else 'time'}"
            raise KeyframeProblem(field, f"keyframes.{i} must give frame (a frame number) or time (seconds), "
                                         "exactly one of the two")


def resolve(request, num_frames: int | None = None, start: bool | None = None, end: bool | None = None
            ) -> list[Keyframe]:
    """The request's images as one list (see the module); strength 0 is no condition and is left out.
    `num_frames`: the clip's final length (the request's unless the audio or the duration head set it).
    `start`, `end`: whether there is an image_start / image_end (by default: the request has one; a queued
    job's request has its inputs apart). Raises KeyframeProblem naming the field at fault."""
    check_items(request)
    frames = num_frames or request.num_frames
    last = frames - 1
    start = (request.image_start is not None if start is None else start, request.image_strength, "image_start")
    end = (request.image_end is not None if end is None else end, request.end_image_strength, "image_end")
    if request.interpolation_direction == "backward":  # the shorthands swap ends; keyframes stay where they are
        start, end = end, start
    listed: list[tuple[str, int, float, str]] = []  # (source, frame, strength, field named on a problem)
    if start[0]:
        listed.append((start[2], 0, start[1], start[2]))
    for i, item in enumerate(request.keyframes):
        named = f"keyframes.{i}.{'frame' if item.frame is not None else 'time'}"
        frame = item.frame_at(request.fps)
        if frame > last:
            given = f"frame {item.frame}" if item.frame is not None else f"time {item.time:g} s (frame {frame} at " \
                                                                         f"{request.fps} fps)"
            raise KeyframeProblem(named, f"{named} must be within the clip, frames 0..{last} (num_frames {frames}), "
                                         f"got {given}")
        listed.append((image_field(i), frame, item.strength, named))
    if end[0]:
        listed.append((end[2], last, end[1], end[2]))
    held: dict[int, str] = {}
    for source, frame, _, named in listed:
        if frame in held:
            raise KeyframeProblem(named, f"{named}: frame {frame} already has an image ({held[frame]}); one image "
                                         "per frame")
        held[frame] = source if not source.startswith("keyframes.") else source.rsplit(".", 1)[0]
    return [Keyframe(source, frame, strength) for source, frame, strength, _ in listed if strength > 0]


def appended_keyframes(request, num_frames: int | None = None) -> int:
    """How many images are appended as keyframe tokens (each one latent frame of tokens); 0 when the
    request's images cannot be resolved (it is refused when it runs)."""
    try:
        return sum(1 for k in resolve(request, num_frames) if k.frame != 0)
    except KeyframeProblem:
        return 0


def input_values(request) -> dict[str, str]:
    """Every input the request carries ({field: data URI, base64 or URL}), keyframe images under
    `keyframes.N.image`: what the sandbox decodes and what a job keeps out of its record."""
    values = {name: getattr(request, name) for name in INPUTS if getattr(request, name) not in (None, STORED_APART)}
    for i, item in enumerate(request.keyframes):
        if item.image != STORED_APART:
            values[image_field(i)] = item.image
    return values


def with_inputs(request, inputs: dict[str, str | None]):
    """The request with `inputs` (as `input_values` names them) put back, or taken out when None (a
    keyframe's image is then STORED_APART: the request is kept without it)."""
    update: dict[str, Any] = {name: value for name, value in inputs.items() if not name.startswith("keyframes.")}
    for name in ("video", "conditioning_attention_mask"):  # a record must still say it has a video (retake) or mask
        if name in update and update[name] is None:
            update[name] = STORED_APART
    if any(name.startswith("keyframes.") for name in inputs):
        keyframes = list(request.keyframes)
        for i, item in enumerate(keyframes):
            if image_field(i) in inputs:
                keyframes[i] = item.model_copy(update={"image": inputs[image_field(i)] or STORED_APART})
        update["keyframes"] = keyframes
    return request.model_copy(update=update)
