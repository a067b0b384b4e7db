"""How long a clip is when the request leaves it to the model: LTX-2.5's duration head.

ltx-pipelines (`DurationPredictor`, `seconds_to_clamped_num_frames`) encodes the prompt, lets the
head read the connectors' video and audio tokens of the positive prompt, and turns its seconds into
frames: rounded at the frame rate, clamped to [1 s, 20 s], floored onto the VAE's 8k+1 grid (or
raised onto it when the floor falls below the minimum). We do the same, with the server's own frame
limit as the top when it is lower, and keep the prompt's embeddings for the pipeline that follows.
"""

from __future__ import annotations

import dataclasses

from ..models.loaded import LoadedModel
from ..schema import FRAME_MAX, FRAME_MIN, InvalidRequest
from .stages import Plan, encode_prompt, image_conditions

MIN_SECONDS, MAX_SECONDS = 1.0, 20.0  # ltx-pipelines' AutoDuration defaults
TIME_SCALE = 8  # the video VAE's temporal compression: frame counts are 8k+1


def wants_auto_length(model: LoadedModel, plan: Plan) -> bool:
    """`duration: "auto"`, or on a model with a duration head a request that gave no length at all."""
    request = plan.request
    if request.duration == "auto":
        if model.duration_head is None:
            raise InvalidRequest("duration", f'duration "auto" needs a duration head, and {model.family.title} has '
                                             "none loaded; give num_frames instead")
        return True
    given = "num_frames" in request.model_fields_set or request.match_audio_length
    return model.duration_head is not None and not given


def seconds_to_frames(seconds: float, fps: float, min_frames: int, max_frames: int) -> int:
    """ltx-pipelines' rule, on the 8k+1 grid within [min_frames, max_frames]."""
    frames = max(min_frames, min(round(seconds * fps), max_frames))
    frames = (frames - 1) // TIME_SCALE * TIME_SCALE + 1
    if frames < min_frames:  # raised onto the grid; the reference's cap could leave it off the grid
        up = -(-(min_frames - 1) // TIME_SCALE) * TIME_SCALE + 1
        frames = up if up <= max_frames else (max_frames - 1) // TIME_SCALE * TIME_SCALE + 1
    return frames


def choose_length(model: LoadedModel, plan: Plan) -> Plan:
    """The plan with the duration head's num_frames (and the prompt, encoded for it), or as it was."""
    if not wants_auto_length(model, plan):
        return plan
    request, fps = plan.request, plan.request.fps
    prompt = encode_prompt(model, request.prompt, request.negative_prompt, plan.guided)
    with model.placement.use("duration_head"):
        head = model.duration_head
        weight = next(head.parameters())
        seconds = float(head(prompt.positive.video.to(weight.device, weight.dtype),
                             prompt.positive.audio.to(weight.device, weight.dtype)).reshape(-1)[0])
    min_frames = max(FRAME_MIN, round(MIN_SECONDS * fps))
    max_frames = min(FRAME_MAX, round(MAX_SECONDS * fps))
    frames = seconds_to_frames(seconds, fps, min_frames, max_frames)
    request = request.model_copy(update={"num_frames": frames})
    # Keyframes are checked against, and image_end placed at, the length chosen.
    return dataclasses.replace(plan, request=request, images=image_conditions(request, plan.conditioning),
                               prompt=prompt, length_from="duration_head", predicted_seconds=seconds)
