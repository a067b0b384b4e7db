"""The vendor's own LTX API (async generations with polling), served by the one job queue.

    POST /v1/generations/text-to-video    prompt
    POST /v1/generations/image-to-video   prompt + image (a file upload, an http(s) URL or a data URI)
    POST /v1/generations/audio-to-video   prompt + audio (the same)
    POST /v1/generations/retake           prompt + video + start_time + duration (regenerate that span)
    POST /v1/generations/extend           prompt + video + duration (+ direction): continue the video
    GET  /v1/generations/{id}             poll: processing | completed | failed

Each POST takes JSON or multipart/form-data and answers 202 at once with the generation's id.
Statuses are the vendor document's: a queued generation is `processing` too; `failed` (with `error`)
is the one it does not name, since a generation can fail. Errors follow its table: invalid parameters
are 400, an uploaded file that is not an image of a supported format 422, a file too large 413, the
queue full 429 with Retry-After, unavailable 503; bodies are {"type": "error", "error": {"type",
"message", "code", "param"}} (ltx_body), `param` naming the vendor's field (`image`, `duration`).
Mapping onto the one request model:
- `resolution` "WIDTHxHEIGHT" -> width, height.
- `duration` (seconds) -> num_frames: the 8k+1 count nearest to duration x fps. On audio-to-video
  without `duration` (or num_frames), the video takes the audio's length (match_audio_length).
- `fps`, `seed`: as on POST /generate. `image` -> image_start, `audio` -> audio.
- `model`: a name the server has loaded: `ltx-2-fast` for a distilled checkpoint, `ltx-2-pro` for a
  dev one, or the checkpoint's own name; any other is a 422 listing what is loaded.
- Any other field of POST /generate may be sent too. Fields left out take this server's defaults
  (288x512, 49 frames at 25 fps), not the hosted API's 1920x1080 for 6 s.
- retake and extend (ours: the vendor document has no video routes; the same conventions): `video` (a file,
  an http(s) URL or a data URI of an MP4/MOV or WebM/MKV) -> video. retake: `start_time` and `duration`
  (seconds) -> retake {start, end = start + duration}. extend: `duration` (seconds to add) and `direction`
  ("forward", the default, or "backward") -> extend {seconds, direction}. An upload that is not such a
  container is a 422 at submission; an error names `start_time`, `duration` or `direction`.
The response has the vendor's shape: id, status, video_url, duration, model, resolution (and error).
`duration` is the length asked for (num_frames / fps) from submission to completion; when it follows
the audio, the audio's length once the audio has been read (null until then).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from ..media.fetch import is_url
from ..media.inputs import IMAGE_FORMATS_TEXT, InputLimits, decode_base64_field
from ..pipelines.conditioning import frames_for_duration
from ..schema import InvalidRequest
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
# The vendor's statuses: processing until it ends (queued included), then completed, or failed.
STATUS = {QUEUED: "processing", RUNNING: "processing", SUCCEEDED: "completed", FAILED: "failed", CANCELLED: "failed"}
PREFIX = "/v1/generations"  # the paths whose every error is in the LTX API's shape
# The vendor's error table: 400 invalid params, 401 key, 413 file too large, 422 invalid file format,
# 429 rate limited, 500 server error, 503 unavailable (404/405 for paths and ids that do not exist).
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 405: "invalid_request_error", 413: "request_too_large",
               422: "invalid_file_format", 429: "rate_limit_error", 500: "api_error", 503: "service_unavailable"}
FILE_FORMAT = "invalid_file_format"  # the one code that stays 422: an uploaded file we cannot use
# MP4/MOV (an ISO box type at 4), WebM/MKV (EBML): the containers the sandbox opens for `video`.
VIDEO_SIGNATURES = ((b"ftyp", 4), (b"\x1a\x45\xdf\xa3", 0))
IMAGE_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", 0), (b"\xff\xd8\xff", 0), (b"GIF8", 0), (b"WEBP", 8))
MODES = {  # route -> (the input it requires, the request field it fills)
    "text-to-video": None,
    "image-to-video": ("image", "image_start"),
    "audio-to-video": ("audio", "audio"),
}
VIDEO_MODES = ("retake", "extend")  # prompt + video, and the span or the seconds in the vendor's style
# The request field an error names -> the field the client sent on a video route.
VIDEO_PARAMS = {"retake": {"retake.start": "start_time", "retake.end": "duration", "retake": "start_time"},
                "extend": {"extend.seconds": "duration", "extend.direction": "direction", "extend": "duration"}}


def _article(mode: str) -> str:
    """'an' before a vowel sound (an image to video, an audio to video), else 'a'."""
    return "an" if mode[0] in "aeiou" else "a"


class LTXErrorDetail(BaseModel):
    type: str = Field(examples=["invalid_request_error"], description="The kind of error, by HTTP status.")
    message: str = Field(examples=["duration must be between 0.36 and 19.88 seconds at 25 fps (9..497 frames), "
                                   "got 30"])
    code: str | None = Field(description="This server's error code.", examples=["invalid_request"])
    param: str | None = Field(description="The field at fault, by the vendor's name.", examples=["duration"])


class LTXError(BaseModel):
    """Errors on /v1/generations: the status from the vendor's table, this body."""

    type: Literal["error"] = "error"
    error: LTXErrorDetail


def error_type(status: int) -> str:
    return ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def vendor_status(status: int, body: dict) -> int:
    """The vendor's code for ours: a 422 is 400 (invalid parameters) unless a file was unusable; the
    storage's 507 is 503 (the vendor has no 507)."""
    if status == 422 and body.get("code") != FILE_FORMAT:
        return 400
    return 503 if status == 507 else status


def error_detail(status: int, body: dict, mode: str | None = None) -> dict:
    """Our error body -> the vendor's error object, naming `image` where the request field is image_start
    (and on a video route, `start_time`, `duration` or `direction` for the field they filled)."""
    field, message = body.get("field"), body["error"]
    if field == "image_start":
        field, message = "image", message.replace("image_start", "image")
    if (name := VIDEO_PARAMS.get(mode, {}).get(field)) is not None:
        field, message = name, f"{name}: {message}"
    return {"type": error_type(status), "message": message, "code": body.get("code"), "param": field}


def ltx_body(status: int, body: dict, mode: str | None = None) -> dict:
    """Our error body ({"error": sentence, "code", "field"}) -> the LTX API's; anything else as it is."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return body
    return {"type": "error", "error": error_detail(status, body, mode)}


def as_ltx_error(response: Response, mode: str | None = None) -> Response:
    if response.status_code < 400 or response.media_type != "application/json":
        return response
    body = json.loads(response.body)
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return response
    status = vendor_status(response.status_code, body)
    headers = {k: v for k, v in response.headers.items()
               if k.lower() in ("retry-after", "location", "www-authenticate", "connection")}
    if status == 503 and response.status_code == 507:
        headers.setdefault("retry-after", "60")
    return JSONResponse(status_code=status, content=ltx_body(status, body, mode), headers=headers)


def check_image(value: Any, field: str = "image") -> None:
    """An uploaded image (a data URI or base64: a URL is fetched when the job runs) must be one of the
    vendor's formats, checked at submission from its first bytes; decoding it stays in the sandbox."""
    if not isinstance(value, str) or is_url(value):
        return
    limits = InputLimits.from_env()
    try:
        data, _ = decode_base64_field(value, field, limits.max_image_bytes, "image")
    except InvalidRequest as exc:
        code = "payload_too_large" if exc.status == 413 else FILE_FORMAT
        raise ProtocolError(field, exc.message, status=exc.status, code=code) from None
    if not any(data[at:at + len(magic)] == magic for magic, at in IMAGE_SIGNATURES) or (
            data[8:12] == b"WEBP" and data[:4] != b"RIFF"):
        raise ProtocolError(field, f"{field} is not a {IMAGE_FORMATS_TEXT} image (its first bytes are "
                                   f"{data[:8]!r})", code=FILE_FORMAT)


def check_video(value: Any, field: str = "video") -> None:
    """An uploaded video (a data URI or base64; a URL is fetched when the job runs) must be in a container the
    sandbox opens, checked at submission from its first bytes; decoding it stays in the sandbox."""
    if not isinstance(value, str) or is_url(value):
        return
    try:
        data, _ = decode_base64_field(value, field, InputLimits.from_env().max_video_bytes, "video")
    except InvalidRequest as exc:
        code = "payload_too_large" if exc.status == 413 else FILE_FORMAT
        raise ProtocolError(field, exc.message, status=exc.status, code=code) from None
    if not any(data[at:at + len(magic)] == magic for magic, at in VIDEO_SIGNATURES):
        raise ProtocolError(field, f"{field} is not an MP4/MOV or WebM/MKV video (its first bytes are "
                                   f"{data[:8]!r})", code=FILE_FORMAT)


class Generation(BaseModel):
    """The vendor's generation object."""

    id: str
    status: Literal["processing", "completed", "failed"]
    video_url: str | None = Field(description="The MP4, once completed (GET /jobs/{id}/video).")
    duration: float | None = Field(description="Seconds asked for (num_frames / fps), the same from submission to "
                                   "completion; following the audio: its length once read, null before.")
    model: str
    resolution: str = Field(examples=["1920x1080"])
    error: LTXErrorDetail | None = Field(default=None, description="Why it failed.")


def video_mode(job: Job) -> str | None:
    request = job.request
    return "retake" if request.retake is not None else "extend" if request.extend is not None else None


def video_info(job: Job) -> dict | None:
    """What the sandbox took from a job's video (size, fps, frames), once its inputs are read."""
    conditioning = job.prepared[0] if isinstance(job.prepared, tuple) and job.prepared else None
    return getattr(conditioning, "video_info", None)


def duration_of(job: Job) -> float | None:
    request = job.request
    if video_mode(job) is not None:  # the output's length follows the video: known once it is read
        if job.status == SUCCEEDED and job.result:
            return job.result["duration_seconds"]
        info = video_info(job)
        if info is None:
            return None
        if request.extend is not None:
            return round((info["num_frames"] + round(request.extend.seconds * info["fps"])) / info["fps"], 4)
        return round((request.num_frames if "num_frames" in request.model_fields_set else info["num_frames"])
                     / info["fps"], 4)
    if not request.match_audio_length:
        return round(request.num_frames / request.fps, 4)
    if job.status == SUCCEEDED and job.result:  # the audio's length, as the file holds it
        return job.result["duration_seconds"]
    conditioning = job.prepared[0] if isinstance(job.prepared, tuple) and job.prepared else None
    if conditioning is not None and getattr(conditioning, "audio_for_vae", None) is not None:
        return round(frames_for_duration(conditioning.audio_seconds, request.fps) / request.fps, 4)
    return None  # not read yet


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
                                              "URL or a data URI. PNG, JPEG, WebP or GIF: an upload that is not "
                                              "is a 422 at submission."},
    "audio": {"type": "string", "description": "The soundtrack to follow: a file (multipart), an http(s) URL or "
                                              "a data URI. WAV, MP3, OGG, FLAC, M4A/AAC."},
}


VIDEO_FIELDS = {
    "video": {"type": "string", "description": "The video: a file (multipart), an http(s) URL or a data URI of an "
                                              "MP4/MOV or WebM/MKV (an upload in another container is a 422)."},
    "retake": {
        "start_time": {"type": "number", "minimum": 0, "examples": [0.5],
                       "description": "Where the span to regenerate starts, in seconds."},
        "duration": {"type": "number", "exclusiveMinimum": 0, "examples": [1],
                     "description": "The span's length in seconds; it ends within the video."},
    },
    "extend": {
        "duration": {"type": "number", "exclusiveMinimum": 0, "examples": [2],
                     "description": "Seconds to add; the output lasts at most LTX2_MAX_EXTEND_SECONDS in all."},
        "direction": {"type": "string", "enum": ["forward", "backward"], "examples": ["forward"],
                      "description": "forward (the default): after the last frame; backward: before the first."},
    },
}


def _video_body_doc(mode: str) -> dict:
    own = {"model": OWN_FIELDS["model"], "resolution": OWN_FIELDS["resolution"], "video": VIDEO_FIELDS["video"],
           **VIDEO_FIELDS[mode]}
    example: dict[str, Any] = {"prompt": "The ball bounces off the wall", "video": "https://example.com/clip.mp4",
                               "seed": 42, **({"start_time": 0.5, "duration": 1} if mode == "retake" else
                                              {"duration": 2, "direction": "forward"})}
    return body_doc(own, replaced={"width", "height", "response_format", "retake", "extend"},
                    required=["prompt", "video", *(("start_time", "duration") if mode == "retake" else ("duration",))],
                    example=example, uploads=("video",))


def _with_resolution(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A copy of the fields with the vendor's "WxH" resolution as width and height, and which came from it."""
    fields = dict(fields)
    derived: dict[str, str] = {}
    if (resolution := fields.pop("resolution", None)) is not None:
        if "width" in fields or "height" in fields:
            raise ProtocolError("resolution", "give resolution or width/height, not both")
        fields["width"], fields["height"] = parse_size(resolution, "resolution")
        derived.update(width="resolution", height="resolution")
    return fields, derived


def video_fields(mode: str, fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """retake / extend's fields -> the request model's (video, retake or extend), and which came from which."""
    fields, derived = _with_resolution(fields)
    if fields.get("video") in (None, ""):
        raise ProtocolError("video", f"video is required for {mode}: a file upload, an http(s) URL or a data URI")
    if mode in fields:
        raise ProtocolError(mode, f"give {mode}'s own fields ("
                                  f"{'start_time and duration' if mode == 'retake' else 'duration, direction'}), "
                                  f"not {mode}")
    duration = fields.pop("duration", None)
    if duration is None:
        raise ProtocolError("duration", f"duration is required for {mode}: "
                                        f"{'the span' if mode == 'retake' else 'the seconds to add'}, in seconds")
    duration = parse_seconds(duration, "duration")
    if mode == "retake":
        start = fields.pop("start_time", None)
        if start is None:
            raise ProtocolError("start_time", "start_time is required for retake: where the span starts, in seconds")
        try:
            start = float(start)
        except (TypeError, ValueError):
            raise ProtocolError("start_time", f"start_time must be a number of seconds, got {start!r}") from None
        fields["retake"] = {"start": start, "end": start + duration}
    else:
        fields["extend"] = {"seconds": duration, **({"direction": fields.pop("direction")}
                                                    if "direction" in fields else {})}
    return fields, derived


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
    fields, derived = _with_resolution(fields)
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

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            return as_ltx_error(await handler(request))

        return route


def install(app: FastAPI, ctx: ProtocolContext) -> None:
    errors = {status: {"model": LTXError} for status in (400, 401, 413, 422, 429, 503)}

    def view(job: Job, http: Request) -> dict:
        summary = summarize(job, ctx.model())
        error = summary.error and error_detail(vendor_status(job.error_status or 500, summary.error), summary.error,
                                               video_mode(job))
        return Generation(
            id=job.id, status=STATUS[job.status],
            video_url=ctx.url(http, "job_video", job_id=job.id) if summary.succeeded else None,
            duration=duration_of(job), model=summary.model, error=error,
            # A video route's size is the video's (unless given): known once it is read, as its duration.
            resolution=summary.size if summary.succeeded or not (info := video_mode(job) and video_info(job))
            else f"{info['width']}x{info['height']}",
        ).model_dump()

    async def queue(request, http: Request, refused=lambda response: response) -> Response:
        """Submit the job: 202 with its view and Location, or the refusal (capacity, admission) as `refused` shapes it."""
        job = await ctx.submit(request, http)
        if isinstance(job, JSONResponse):
            return refused(job)
        return JSONResponse(status_code=202, content=view(job, http),
                            headers={"Location": ctx.url(http, "get_generation", generation_id=job.id)})

    def route(mode: str):
        async def create(http: Request):
            if (refusal := ctx.unavailable()) is not None:
                return refusal
            try:
                fields = await read_body(http)
                check_model(fields.pop("model", None), ctx.model())
                fields, derived, duration = generation_fields(mode, fields)
                if mode == "image-to-video":
                    await asyncio.to_thread(check_image, fields.get("image_start"))
                fields.setdefault("response_format", "url")
                request = build_request(fields, derived)
                if duration is not None:
                    request = request.model_copy(
                        update={"num_frames": frames_for_seconds(duration, request.fps, "duration")})
            except ProtocolError as exc:
                return exc.response
            return await queue(request, http)

        submits.post(f"/v1/generations/{mode}", tags=[TAG], status_code=202, response_model=Generation,
                 responses=errors, openapi_extra=_request_body_doc(mode),
                 summary=f"Queue {_article(mode)} {mode.replace('-', ' ')} generation (LTX API)", name=f"ltx_{mode}")(create)

    def video_route(mode: str):
        async def create(http: Request):
            if (refusal := ctx.unavailable()) is not None:
                return refusal
            try:
                fields = await read_body(http)
                check_model(fields.pop("model", None), ctx.model())
                fields, derived = video_fields(mode, fields)
                await asyncio.to_thread(check_video, fields.get("video"))
                fields.setdefault("response_format", "url")
                request = build_request(fields, derived)
            except ProtocolError as exc:
                return as_ltx_error(exc.response, mode)
            return await queue(request, http, lambda refused: as_ltx_error(refused, mode))

        what = "Queue a retake of a video's span" if mode == "retake" else "Queue an extension of a video"
        submits.post(f"/v1/generations/{mode}", tags=[TAG], status_code=202, response_model=Generation,
                     responses=errors, openapi_extra=_video_body_doc(mode), summary=f"{what} (LTX API)",
                     name=f"ltx_{mode}")(create)

    submits = APIRouter(route_class=LTXRoute)  # capacity before the body (intake)
    for mode in MODES:
        route(mode)
    for mode in VIDEO_MODES:
        video_route(mode)
    app.include_router(submits)

    @app.get("/v1/generations/{generation_id}", name="get_generation", tags=[TAG], response_model=Generation,
             responses={status: {"model": LTXError} for status in (401, 404, 503)},
             summary="Poll a generation (LTX API)")
    async def get_generation(generation_id: str, http: Request):
        job = await ctx.find(generation_id, http)
        return as_ltx_error(job) if isinstance(job, JSONResponse) else view(job, http)
