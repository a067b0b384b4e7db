"""Extend: continue an input video forward (or backward) by some seconds, with its audio, in windows.

The request's `extend` field (`ExtendSpec`), its rules, and the window plan. A window is one generation of
`num_frames` frames (8k+1) whose first latent frames (forward; its last ones backward) are the existing
video's, held clean with strength 1 as ltx-core's `VideoConditionByLatentIndex` holds a latent at an index;
the rest is new. Each window after the first continues from the last one's frames, so any length up to
`LTX2_MAX_EXTEND_SECONDS` is reached by chaining. This module imports nothing of ltx2: the request model
(schema.py) uses its field type and rules, the pipeline (pipelines/extend.py) and the protocols its plan.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Latent frames of overlap a window conditions on: 2 forward is the causal first frame plus 8 more (9 frames,
# 0.36 s at 25 fps), enough for the model to carry the motion on; backward 2 latent frames are 16 frames.
OVERLAP_LATENTS = 2
MIN_WINDOW_FRAMES = 17  # the overlap and at least one latent frame of new video
DEFAULT_MAX_SECONDS = 60.0
SETTING = "LTX2_MAX_EXTEND_SECONDS"
# Fields an extend cannot take with it: the video is its only conditioning, and it runs one stage.
EXCLUDES = ("image_start", "image_end", "keyframes", "audio", "match_audio_length", "duration",
            "temporal_upscale", "retake")


class ExtendSpec(BaseModel):
    """How far to continue the input video, and which way."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0.0, le=3600.0, description="Seconds of new video (and audio) to add; the output, "
                           "the input and this together, lasts at most LTX2_MAX_EXTEND_SECONDS (60).", examples=[5.0])
    direction: Literal["forward", "backward"] = Field(
        default="forward", description='"forward": after the video\'s last frame; "backward": before its first.')


def max_seconds() -> float:
    """The longest output an extend may make (input and new parts together), from the environment."""
    raw = os.environ.get(SETTING, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_MAX_SECONDS
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):  # checked at start-up (create_app), so a request never meets it
        raise ValueError(f"{SETTING} must be a positive number of seconds, got {raw!r}")
    return value


def problem(request) -> tuple[str, str] | None:
    """(field, sentence) for what the request alone shows is wrong with its extend, before the video is decoded.
    `request` is a GenerateRequest (not imported: schema.py imports this module)."""
    spec, given = request.extend, request.model_fields_set
    if spec is None:
        return None
    if request.video is None:
        return "extend", "extend continues an input video: send video too"
    for name in EXCLUDES:
        if name in given and getattr(request, name) not in (None, False, []):
            return name, (f"{name} cannot be used with extend: the video (and its soundtrack) is an extend's only "
                          "input; leave it out")
    if getattr(request, "ic_lora", None) is not None:
        return "ic_lora", "ic_lora cannot be used with extend: leave one of them out"
    if len({"width", "height"} & given) == 1 and "video_size" not in given:
        missing = "height" if "width" in given else "width"
        return missing, f"with extend give width and height together, or neither (the video's own size): {missing} is missing"
    if request.use_multiscale:
        return "use_multiscale", "extend runs one stage at the model size: send use_multiscale false or leave it out"
    cap = max_seconds()
    if spec.seconds > cap:
        return "extend.seconds", (f"extend.seconds is {spec.seconds:g}, and an extended video lasts at most {cap:g} s "
                                  f"in all ({SETTING}): ask for fewer seconds")
    if round(spec.seconds * request.fps) < 1:
        return "extend.seconds", f"extend.seconds {spec.seconds:g} is less than one frame at {request.fps} fps"
    if "num_frames" in given and request.num_frames < MIN_WINDOW_FRAMES:
        return "num_frames", (f"with extend, num_frames is each window's length and must be at least "
                              f"{MIN_WINDOW_FRAMES} (the overlap and new frames), got {request.num_frames}")
    return None


def too_long(spec: ExtendSpec, input_frames: int, fps: int) -> str | None:
    """Why the output would be too long once the input's length is known (refused naming extend.seconds)."""
    cap, total = max_seconds(), input_frames / fps + round(spec.seconds * fps) / fps
    if total > cap + 1e-6:
        return (f"extend.seconds {spec.seconds:g} after a video of {input_frames / fps:g} s makes {total:g} s, and an "
                f"extended video lasts at most {cap:g} s in all ({SETTING}): ask for at most "
                f"{max(cap - input_frames / fps, 0):g} s")
    return None


@dataclass(frozen=True)
class Window:
    """One generation of the chain. Frames count in the window itself; start/end in the output's seconds."""

    index: int
    num_frames: int  # the window's length, 8k+1
    overlap_frames: int  # of the existing video, held (first frames forward, last ones backward)
    overlap_latents: int
    new_frames: int  # kept in the output (the window may make up to 7 more, past the request's end: dropped)
    start: float  # seconds, the window's first frame in the output
    end: float
    seed: int


def overlap_latents(direction: str, window_latents: int, input_frames: int) -> int:
    """Latent frames held in each window: OVERLAP_LATENTS, fewer when the window or the input is short."""
    if direction == "forward":
        return max(1, min(OVERLAP_LATENTS, window_latents - 1, (input_frames - 1) // 8 + 1))
    return max(1, min(OVERLAP_LATENTS, window_latents - 2, input_frames // 8))


def plan(direction: str, input_frames: int, new_frames: int, window_frames: int, fps: int, seed: int) -> list[Window]:
    """The windows that add `new_frames` to a video of `input_frames`, each at most `window_frames` long."""
    latents = (window_frames - 1) // 8 + 1
    k = overlap_latents(direction, latents, input_frames)
    overlap = 8 * k - 7 if direction == "forward" else 8 * k  # frames the k latents cover at that end
    per_window = window_frames - overlap
    windows, done = [], 0
    while done < new_frames:
        take = min(per_window, new_frames - done)
        # The window's length: the overlap and the fewest whole latent frames that hold `take` new frames.
        made = -(-take // 8) * 8 if direction == "forward" else -(-(take - 1) // 8) * 8 + 1
        if direction == "forward":
            start = input_frames + done - overlap
            end = input_frames + done + take
        else:  # the output is the new frames then the input: this window's new part ends where the last began
            end = new_frames - done + overlap
            start = new_frames - done - take
        windows.append(Window(len(windows), overlap + made, overlap, k, take, start / fps, end / fps,
                              seed + len(windows)))
        done += take
    return windows


def report(windows: list[Window], direction: str, input_frames: int, fps: int) -> dict:
    """What the response says of the chain (result.extend)."""
    new = sum(w.new_frames for w in windows)
    return {
        "direction": direction,
        "input_frames": input_frames,
        "new_frames": new,
        "seconds": round(new / fps, 6),
        "windows": [{"index": w.index, "start": round(w.start, 6), "end": round(w.end, 6), "num_frames": w.num_frames,
                     "overlap_frames": w.overlap_frames, "overlap_seconds": round(w.overlap_frames / fps, 6),
                     "new_frames": w.new_frames, "seed": w.seed} for w in windows],
    }
