"""The vendor's own LTX API (async generations with polling), served by the one job queue.

    POST /v1/generations/text-to-video    prompt
    POST /v1/generations/image-to-video   prompt + image (a file upload, an http(s) URL or a data URI)
    POST /v1/generations/audio-to-video   prompt + audio (the same)
    GET  /v1/generations/{id}             poll: queued | processing | completed | failed

Each POST takes JSON or multipart/form-data and answers 202 at once with the generation's id.
Mapping onto the one request model:
- `resolution` "WIDTHxHEIGHT" -> width, height.
- `duration` (seconds) -> num_frames: the 8k+1 count nearest to duration x fps. On audio-to-video
  without `duration` (or num_frames), the video takes the audio's length (match_audio_length).
- `fps`, `seed`: as on POST /generate. `image` -> image_start, `audio` -> audio.
- `model`: a name the server has loaded: `ltx-2-fast` for a distilled checkpoint, `ltx-2-pro` for a
  dev one, or the checkpoint's own name; any other is a 422 listing what is loaded.
- Any other field of POST /generate may be sent too. Fields left out take this server's defaults
  (288x512, 49 frames at 25 fps), not the hosted API's 1920x1080 for 6 s.
The response has the vendor's shape: id, status, video_url, duration, model, resolution (and error).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..schema import ErrorResponse
from .intake import SubmitRoute
from .jobs import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from .protocol import (
    ProtocolContext,
    ProtocolError,
    body_doc,
    build_request,
    check_model,
    frames_for_seconds,
    parse_seconds,
    parse_size,
    read_body,
    summarize,
)

TAG = "LTX API"
STATUS = {QUEUED: "queued", RUNNING: "processing", SUCCEEDED: "completed", FAILED: "failed", CANCELLED: "failed"}
MODES = {  # route -> (the input it requires, the request field it fills)
    "text-to-video": None,
    "image-to-video": ("image", "image_start"),
    "audio-to-video": ("audio", "audio"),
}


def _article(mode: str) -> str:
    """'an' before a vowel sound (an image to video, an audio to video), else 'a'."""
    return "an" if mode[0] in "aeiou" else "a"


class Generation(BaseModel):
    """The vendor's generation object."""

    id: str
    status: Literal["queued", "processing", "completed", "failed"]
    video_url: str | None = Field(description="The MP4, once completed (GET /jobs/{id}/video).")
    duration: float = Field(description="Seconds: the request's until it completes, then the file's.")
    model: str
    resolution: str = Field(examples=["1920x1080"])
    error: dict | None = Field(default=None, description="Why it failed: this server's error body.")


OWN_FIELDS = {
    "model": {"type": "string", "examples": ["ltx-2-fast"],
              "description": "ltx-2-fast (a distilled checkpoint), ltx-2-pro (dev), or the checkpoint's own name; "
                             "it must be the loaded one. Left out: the loaded model."},
    "resolution": {"type": "string", "pattern": "^[0-9]+x[0-9]+$", "examples": ["512x288"],
                   "description": "WIDTHxHEIGHT in pixels, with the rules of width and height. Left out: 288x512."},
    "duration": {"type": "number", "exclusiveMinimum": 0, "examples": [2],
                 "description": "Seconds. num_frames becomes the 8k+1 count nearest to duration x fps. Left out: "
                                "num_frames' default (49), or on audio-to-video the audio's length."},
}
INPUTS = {
    "image": {"type": "string", "description": "The start image (image_start): a file (multipart), an http(s) "
                                              "URL or a data URI. PNG, JPEG, WebP or GIF."},
    "audio": {"type": "string", "description": "The soundtrack to follow: a file (multipart), an http(s) URL or "
                                              "a data URI. WAV, MP3, OGG, FLAC, M4A/AAC."},
}


def _request_body_doc(mode: str) -> dict:
    needs = MODES[mode]
    own = dict(OWN_FIELDS)
    example: dict[str, Any] = {"prompt": "A lighthouse on a cliff at dusk, waves and gulls", "model": "ltx-2-fast",
                               "resolution": "512x288", "duration": 2, "seed": 42}
    uploads: tuple[str, ...] = ()
    if needs is not None:
        own[needs[0]] = INPUTS[needs[0]]
        example[needs[0]] = f"https://example.com/input.{'jpg' if needs[0] == 'image' else 'wav'}"
        uploads = (needs[0],)
    return body_doc(own, replaced={"width", "height", "num_frames", "image_start", "response_format"},
                    required=["prompt", *uploads], example=example, uploads=uploads)


def generation_fields(mode: str, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], float | None]:
    """The vendor's fields -> the request model's, which request fields came from which, and the duration."""
    fields = dict(fields)
    derived: dict[str, str] = {}
    if (resolution := fields.pop("resolution", None)) is not None:
        if "width" in fields or "height" in fields:
            raise ProtocolError("resolution", "give resolution or width/height, not both")
        fields["width"], fields["height"] = parse_size(resolution, "resolution")
        derived.update(width="resolution", height="resolution")
    duration = fields.pop("duration", None)
    if duration is not None:
        if "num_frames" in fields:
            raise ProtocolError("duration", "give duration or num_frames, not both")
        duration = parse_seconds(duration, "duration")
    if MODES[mode] is not None:
        name, target = MODES[mode]
        value = fields.pop(name, None)
        if value is None or value == "":
            raise ProtocolError(name, f"{name} is required for {mode}: a file upload, an http(s) URL or a data URI")
        if name != target:
            if target in fields:
                raise ProtocolError(name, f"give {name} or {target}, not both")
            derived[target] = name
        fields[target] = value
        if mode == "audio-to-video" and duration is None and "num_frames" not in fields:
            fields.setdefault("match_audio_length", True)  # the video lasts as long as the audio
    return fields, derived, duration


class LTXRoute(SubmitRoute):
    streams_forms = True  # a multipart body is parsed as it streams, each part within its limit


def install(app: FastAPI, ctx: ProtocolContext) -> None:
    errors = {status: {"model": ErrorResponse} for status in (401, 413, 422, 429, 503)}

    def view(job: Job, http: Request) -> dict:
        summary = summarize(job, ctx.model())
        return Generation(
            id=job.id, status=STATUS[job.status],
            video_url=ctx.url(http, "job_video", job_id=job.id) if summary.succeeded else None,
            duration=summary.seconds, model=summary.model, resolution=summary.size, error=summary.error,
        ).model_dump()

    def route(mode: str):
        async def create(http: Request):
            if (refusal := ctx.unavailable()) is not None:
                return refusal
            try:
                fields = await read_body(http)
                check_model(fields.pop("model", None), ctx.model())
                fields, derived, duration = generation_fields(mode, fields)
                fields.setdefault("response_format", "url")
                request = build_request(fields, derived)
                if duration is not None:
                    request = request.model_copy(
                        update={"num_frames": frames_for_seconds(duration, request.fps, "duration")})
            except ProtocolError as exc:
                return exc.response
            job = await ctx.submit(request, http)
            if isinstance(job, JSONResponse):
                return job
            return JSONResponse(status_code=202, content=view(job, http),
                                headers={"Location": ctx.url(http, "get_generation", generation_id=job.id)})

        submits.post(f"/v1/generations/{mode}", tags=[TAG], status_code=202, response_model=Generation,
                 responses=errors, openapi_extra=_request_body_doc(mode),
                 summary=f"Queue {_article(mode)} {mode.replace('-', ' ')} generation (LTX API)", name=f"ltx_{mode}")(create)

    submits = APIRouter(route_class=LTXRoute)  # capacity before the body (intake)
    for mode in MODES:
        route(mode)
    app.include_router(submits)

    @app.get("/v1/generations/{generation_id}", name="get_generation", tags=[TAG], response_model=Generation,
             responses={status: {"model": ErrorResponse} for status in (401, 404, 503)},
             summary="Poll a generation (LTX API)")
    async def get_generation(generation_id: str, http: Request):
        job = await ctx.find(generation_id, http)
        return job if isinstance(job, JSONResponse) else view(job, http)
