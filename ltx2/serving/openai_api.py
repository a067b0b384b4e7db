"""The OpenAI Videos API (`client.videos` in the official SDK; vLLM-Omni and SGLang serve LTX-2 behind it).

    POST   /v1/videos               JSON or multipart (input_reference as a file upload)
    GET    /v1/videos               list, newest first (after, limit, order)
    GET    /v1/videos/{id}          the Video object
    GET    /v1/videos/{id}/content  the video file (MP4, WebM, MOV or GIF)
    DELETE /v1/videos/{id}          cancel if unfinished, then forget the job and its video

Mapping onto the one request model:
- `size` "WIDTHxHEIGHT" -> width, height.
- `seconds` -> num_frames: the frame count of the form 8k+1 nearest to seconds x fps (fps 25 unless
  given), so "4" at 25 fps is 97 frames, 3.88 s. The Video object's `seconds` is what the file holds.
- `input_reference` (a file, or {"image_url": URL or data URL}) -> image_start; a video file or a
  data:video/ URL -> video (a retake's, with `retake` sent alongside, an extend's, with `extend`, or an IC-LoRA's
  reference, with `ic_lora`). ic_lora's `conditioning_attention_mask` is a multipart part of its own (a video
  file), or a URL / data URL as text.
- `model`: a name the server has loaded (see protocol.model_names); left out, the loaded model.
- Every other field of POST /generate (seed, num_inference_steps, include_audio, audio, ...) may be
  sent alongside (`extra_body` in the SDK) and follows the same rules. Left out, `size` and `seconds`
  are this server's defaults (288x512, 49 frames at 25 fps), not Sora's.
The job is an ordinary job: its id works on /jobs/{id} as well, and the other way round.
Errors have the same statuses and sentences as everywhere else, in OpenAI's shape
({"error": {"message", "type", "param", "code"}}), so the SDK's exceptions carry them.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from ..media.encode import FORMATS
from ..schema import ErrorResponse, validation_error_body
from .intake import SubmitRoute
from .jobs import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    STORAGE_ERROR_STATUS,
    SUCCEEDED,
    TERMINAL,
    Job,
    StorageError,
)
from .protocol import (
    ProtocolContext,
    ProtocolError,
    body_doc,
    build_request,
    check_model,
    model_names,
    frames_for_seconds,
    parse_seconds,
    parse_size,
    read_body,
    summarize,
)

TAG = "OpenAI Videos API"
CANCEL_WAIT = 60.0  # seconds DELETE waits for a running job to stop before answering 409
STATUS = {QUEUED: "queued", RUNNING: "in_progress", SUCCEEDED: "completed", FAILED: "failed", CANCELLED: "failed"}


class OpenAIErrorDetail(BaseModel):
    message: str = Field(description="This server's error sentence, naming the field and the rule.",
                         examples=["size: height must be an even number, got 301"])
    type: str = Field(examples=["invalid_request_error"])
    param: str | None = Field(description="The field at fault.", examples=["size"])
    code: str | None = Field(description="This server's error code.", examples=["invalid_request"])


class OpenAIError(BaseModel):
    """Errors on /v1/videos come in OpenAI's shape, so the SDK's exceptions carry the message, param and code."""

    error: OpenAIErrorDetail


PREFIXES = ("/v1/videos", "/v1/models")  # the paths whose every error is in OpenAI's shape


def openai_body(status: int, body: dict) -> dict:
    """Our error body ({"error": sentence, "code", "field"}) -> OpenAI's ({"error": {message, type, param,
    code}}); anything else (already OpenAI's) as it is."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return body
    return {"error": {"message": body["error"], "type": "invalid_request_error" if status < 500 else "server_error",
                      "param": body.get("field"), "code": body.get("code")}}


def as_openai_error(response: Response) -> Response:
    """An error response of ours in OpenAI's shape, with the headers a client acts on."""
    if response.status_code < 400 or response.media_type != "application/json":
        return response
    body = json.loads(response.body)
    shaped = openai_body(response.status_code, body)
    if shaped is body:
        return response
    keep = ("retry-after", "location", "www-authenticate", "connection")
    headers = {k: v for k, v in response.headers.items() if k.lower() in keep}
    return JSONResponse(status_code=response.status_code, content=shaped, headers=headers)


class OpenAIRoute(SubmitRoute):  # POST /v1/videos: capacity before the body (intake)
    streams_forms = True  # a multipart body is parsed as it streams, each part within its limit

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except RequestValidationError as exc:  # query parameters (limit, order)
                response = JSONResponse(status_code=422, content=validation_error_body(list(exc.errors())))
            return as_openai_error(response)

        return route


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    """OpenAI's Video object."""

    id: str
    object: Literal["video"] = "video"
    status: Literal["queued", "in_progress", "completed", "failed"]
    progress: int = Field(description="0..100: denoising steps done.")
    created_at: int
    completed_at: int | None
    expires_at: int | None = Field(description="When the MP4 stops being downloadable (the result time-to-live).")
    error: VideoError | None
    model: str
    seconds: str = Field(description="The duration: the request's until it finishes, then the file's.")
    size: str
    prompt: str | None


class VideoList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ModelCard(BaseModel):
    id: str = Field(description="A name `model` may take on this server.", examples=["ltx-2-fast"])
    object: Literal["model"] = "model"
    created: int = Field(description="When the model was loaded (Unix seconds).")
    owned_by: str = Field(examples=["lightricks"])
    model_family: str = Field(description='"ltx-2", "ltx-2.3" or "ltx-2.5".', examples=["ltx-2.3"])


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"] = "video.deleted"
    deleted: bool


REQUEST_BODY = body_doc(
    own={
        "model": {"type": "string", "examples": ["ltx-2-fast"],
                  "description": "A loaded model: ltx-2-fast (a distilled checkpoint), ltx-2-pro (dev), or the "
                                 "checkpoint's own name. Left out: the loaded model."},
        "seconds": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$", "examples": ["4"],
                    "description": "Duration. num_frames becomes the 8k+1 count nearest to seconds x fps "
                                   "(4 at 25 fps: 97 frames, 3.88 s). Left out: num_frames' default (49)."},
        "size": {"type": "string", "pattern": "^[0-9]+x[0-9]+$", "examples": ["512x288"],
                 "description": "WIDTHxHEIGHT in pixels, with the rules of width and height. Left out: 288x512."},
        "input_reference": {"type": "object", "properties": {"image_url": {"type": "string"}},
                            "required": ["image_url"], "additionalProperties": False,
                            "description": "The first frame (image_start): an image file upload (multipart), "
                                           'or {"image_url": an http(s) URL or a data URL}. A video upload (or '
                                           "a data:video/ URL) is the video of a retake, an extend or ic_lora "
                                           "instead (send retake, extend or ic_lora too); a video by http(s) URL goes in the "
                                           "video field."},
    },
    replaced={"width", "height", "num_frames", "image_start", "response_format"},
    required=["prompt"],
    example={"prompt": "A paper boat drifting down a rainy street, soft rain sounds", "seconds": "2",
             "size": "512x288", "seed": 42},
    uploads=("input_reference", "conditioning_attention_mask"),
)


def video_fields(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """OpenAI's fields -> the request model's; also which request fields came from which OpenAI field."""
    fields = dict(fields)
    derived: dict[str, str] = {}
    if (size := fields.pop("size", None)) is not None:
        if "width" in fields or "height" in fields:
            raise ProtocolError("size", "give size or width/height, not both")
        fields["width"], fields["height"] = parse_size(size, "size")
        derived.update(width="size", height="size")
    reference = fields.pop("input_reference", None)
    url = fields.pop("input_reference[image_url]", None)  # the SDK's form encoding of {"image_url": ...}
    if fields.pop("input_reference[file_id]", None) is not None or (
            isinstance(reference, dict) and "file_id" in reference):
        raise ProtocolError("input_reference", "input_reference.file_id: this server keeps no files; upload the "
                                               "image, or give input_reference.image_url")
    if isinstance(reference, dict):
        url = reference.get("image_url")
        if url is None:
            raise ProtocolError("input_reference", "input_reference must be a file upload or {\"image_url\": ...}")
    elif reference is not None:
        url = reference  # an upload (already a data URI), or a URL / data URL sent as a plain string
    if url is not None:
        # A video (its upload's type, or a data URL's) is the retake's video; anything else the first frame.
        target = "video" if isinstance(url, str) and (url[:11].lower() == "data:video/" or _video_bytes(url)) \
            else "image_start"
        if target in fields:
            raise ProtocolError("input_reference", f"give input_reference or {target}, not both")
        fields[target] = url
        derived[target] = "input_reference"
    return fields, derived


def _video_bytes(value: str) -> bool:
    """Whether bare base64 (an upload sent without a type, as curl sends .mp4 files) starts like an MP4/MOV
    (an ftyp or moov box) or a WebM/MKV (EBML): read from its first 12 bytes only."""
    if value[:5].lower() == "data:" or value[:8].lower().startswith(("http://", "https://")):
        return False
    try:
        head = base64.b64decode(value[:16], validate=True)
    except ValueError:
        return False
    return head[4:8] in (b"ftyp", b"moov") and not head[8:12].startswith((b"avif", b"heic", b"mif1")) \
        or head[:4] == b"\x1a\x45\xdf\xa3"


def install(app: FastAPI, ctx: ProtocolContext) -> None:
    router = APIRouter(route_class=OpenAIRoute, tags=[TAG])
    errors = {status: {"model": OpenAIError} for status in (401, 413, 422, 429, 503)}
    found = {status: {"model": OpenAIError} for status in (401, 404, 503)}
    deleted = {**found, 409: {"model": OpenAIError, "description": "The job was cancelled but has not stopped yet."}}

    def view(job: Job) -> dict:
        summary = summarize(job, ctx.model())
        if job.status == RUNNING:
            progress = min(99, 100 * job.step // max(job.total, 1))
        else:
            progress = 100 if summary.succeeded else 0
        error = summary.error and {"code": summary.error.get("code", "error"), "message": summary.error["error"]}
        return Video(
            id=job.id, status=STATUS[job.status], progress=progress, created_at=int(job.created),
            completed_at=int(job.finished) if job.status in TERMINAL else None,
            expires_at=int(job.finished + ctx.settings.result_ttl) if summary.succeeded else None,
            error=error, model=summary.model, seconds=f"{summary.seconds:g}", size=summary.size,
            prompt=job.request.prompt,
        ).model_dump()

    @router.post("/v1/videos", summary="Create a video (OpenAI Videos API)", response_model=Video,
              responses=errors, openapi_extra=REQUEST_BODY)
    async def create_video(http: Request):
        if (refusal := ctx.unavailable()) is not None:
            return refusal
        try:
            fields = await read_body(http)
            check_model(fields.pop("model", None), ctx.model())
            seconds = fields.pop("seconds", None)
            if seconds is not None and "num_frames" in fields:
                raise ProtocolError("seconds", "give seconds or num_frames, not both")
            fields, derived = video_fields(fields)
            fields.setdefault("response_format", "url")
            request = build_request(fields, derived)
            if seconds is not None:
                frames = frames_for_seconds(parse_seconds(seconds, "seconds"), request.fps, "seconds")
                request = request.model_copy(update={"num_frames": frames})
        except ProtocolError as exc:
            return exc.response
        job = await ctx.submit(request, http)
        return job if isinstance(job, JSONResponse) else JSONResponse(view(job))

    @router.get("/v1/videos", summary="List videos, newest first (OpenAI Videos API)",
             response_model=VideoList, responses={401: {"model": OpenAIError}, 503: {"model": OpenAIError}})
    async def list_videos(http: Request, after: str | None = None, limit: int = Query(20, ge=1, le=100),
                          order: Literal["asc", "desc"] = "desc"):
        if (refusal := ctx.unavailable()) is not None:
            return refusal
        cursor = None
        if after is not None:  # the page after one of the caller's videos; after an unknown one, none
            anchor = await ctx.find(after, http)
            if isinstance(anchor, JSONResponse):
                return {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
            cursor = anchor.created
        jobs = await ctx.list_jobs(http, limit + 1, cursor, order)  # one more: is there a next page?
        if isinstance(jobs, JSONResponse):
            return jobs
        page = [view(j) for j in jobs[:limit]]
        return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None, "has_more": len(jobs) > limit}

    @router.get("/v1/models", summary="The loaded model, by each name `model` takes (OpenAI Models API)",
                response_model=ModelList, responses={401: {"model": OpenAIError}, 503: {"model": OpenAIError}})
    async def list_models():
        if (refusal := ctx.unavailable()) is not None:
            return refusal
        model = ctx.model()
        loaded = int(model.loaded_at)
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": loaded, "owned_by": "lightricks",
             "model_family": model.family.name} for name in model_names(model)]}

    @router.get("/v1/videos/{video_id}", summary="A video's status and progress (OpenAI Videos API)",
             response_model=Video, responses=found)
    async def retrieve_video(video_id: str, http: Request):
        job = await ctx.find(video_id, http)
        return job if isinstance(job, JSONResponse) else view(job)

    @router.get("/v1/videos/{video_id}/content", summary="Download the video file (OpenAI Videos API)",
             response_class=FileResponse,  # the 200 is the file alone in /docs, not JSON
             description="The finished file in the request's video_output_type: MP4 (video/mp4), WebM "
                         "(video/webm), MOV (video/quicktime) or GIF (image/gif); its Content-Type says which.",
             responses={200: {"content": {f.mime: {} for f in FORMATS.values()}}, **found,
                        409: {"model": OpenAIError, "description": "Not finished yet."},
                        410: {"model": OpenAIError, "description": "Expired."}})
    async def video_content(video_id: str, http: Request, variant: Literal["video"] = Query(
            "video", description="Only the video file is kept: no thumbnail or spritesheet.")):
        return await ctx.video(video_id, http)

    @router.delete("/v1/videos/{video_id}", response_model=VideoDeleted, responses=deleted,
                summary="Delete a video: an unfinished one is cancelled first (OpenAI Videos API)")
    async def delete_video(video_id: str, http: Request):
        job = await ctx.find(video_id, http)
        if isinstance(job, JSONResponse):
            return job
        manager = ctx.manager()
        if job.status not in TERMINAL:
            manager.cancel(job.id)
            await asyncio.to_thread(job.done.wait, CANCEL_WAIT)  # a running job stops at its next step
        try:
            await asyncio.to_thread(manager.delete, job.id)  # its record and its file
        except ValueError:  # still running: a stage that does not look at the cancel flag for a while
            return JSONResponse(status_code=409, content=ErrorResponse(
                error=f"video {job.id} is still stopping after {CANCEL_WAIT:g} s; it has been cancelled and "
                      "can be deleted once it has ended (GET /v1/videos/{id} says failed)",
                code="still_running", field="video_id").model_dump())
        except StorageError as exc:
            return JSONResponse(status_code=STORAGE_ERROR_STATUS, content=exc.body())
        return {"id": job.id, "object": "video.deleted", "deleted": True}

    app.include_router(router)
