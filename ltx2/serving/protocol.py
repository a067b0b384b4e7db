"""What the protocol routes (OpenAI Videos, the vendor's LTX API) share with each other and with /jobs.

Each protocol only renames: its fields become one `GenerateRequest`, which is validated by the same
rules, queued on the same job queue and refused with the same error bodies as `POST /generate`.
Here: reading a JSON or multipart body (uploaded files become data URIs, form strings become the
JSON values the request model expects), building the request with errors that name the protocol's
own field, and the model names a protocol may ask for.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from ..keyframes import MAX_KEYFRAMES
from ..media.inputs import InputLimits
from ..models.loaded import LoadedModel
from ..pipelines.conditioning import frames_for_duration
from ..schema import FAL_FIELDS, FRAME_MAX, FRAME_MIN, ErrorResponse, GenerateRequest, validation_error_body
from ..settings import Settings
from .intake import MAX_JSON_ITEMS, BodyRefused, json_items, parse_json_body
from .jobs import CANCELLED, SUCCEEDED, Job, JobManager

JSON_TYPES = ("application/json",)
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
# image_start/image_end/audio/video, ic_lora's attention mask and each keyframe's image at most; one spare for a
# clear error, not a 400
MAX_FORM_FILES = 5 + MAX_KEYFRAMES + 1
MAX_FORM_FIELDS = 64
MAX_TEXT_PART = 1024 * 1024  # any other form field (Starlette's default): a 10,000-character prompt is 40 KB at most
# Form fields that carry an image or audio input (each protocol's own names and /generate's), and the limit
# (InputLimits) that bounds it: an upload is the file itself; a text part a URL or a base64 data URI of it.
# OpenAI's input_reference may be an image or a video (a retake's), so it takes the larger of the two limits.
MEDIA_FIELDS = {"image_start": "image", "image_end": "image", "image": "image", "input_reference": "reference",
                "input_reference[image_url]": "reference", "audio": "audio", "video": "video",
                "conditioning_attention_mask": "video"}
# A keyframe's image as its own part (an upload, or a URL / data URI): `keyframes.N.image`, merged into item N
# of the `keyframes` field (JSON text), as the error messages name it.
KEYFRAME_PART = re.compile(r"keyframes\.([0-9])\.image", re.ASCII)
SIZE = re.compile(r"([0-9]{1,6})x([0-9]{1,6})", re.ASCII)  # ASCII digits only: int() also reads "١٢٨"


@dataclass
class ProtocolContext:
    """The app's own job API, handed to each protocol's routes (see app.py)."""

    settings: Settings
    model: Callable[[], LoadedModel | None]
    unavailable: Callable[[], JSONResponse | None]  # the 503 while the model loads or failed to
    # The caller's key owns what it submits and sees only that (404 for another key's job), so each of
    # these takes the request. Routes that submit use intake.SubmitRoute: capacity before the body.
    submit: Callable[[GenerateRequest, Request], Awaitable[Job | JSONResponse]]  # 429/503/507 as on /jobs
    find: Callable[[str, Request], Awaitable[Job | JSONResponse]]  # 404/503 answered as on /jobs
    video: Callable[[str, Request], Awaitable[Any]]  # GET /jobs/{id}/video: the file, or 409/410/404
    list_jobs: Callable[..., Awaitable[list[Job] | JSONResponse]]  # (request, limit, after, order): newest first
    url: Callable[..., str]  # an absolute link to a named route, under --public-url when it is set
    manager: Callable[[], JobManager | None]  # the queue itself: cancel, delete


class ProtocolError(Exception):
    """A request refused before it became a job (422, or 413 for a part over its limit); `response` is
    the JSON error to send."""

    def __init__(self, field: str | None, message: str = "", body: dict | None = None, status: int = 422,
                 code: str = "invalid_request", headers: dict | None = None):
        if body is None:
            body = ErrorResponse(error=message, code=code, field=field,
                                 errors=[{"field": field or "body", "message": message}]).model_dump()
        super().__init__(body["error"])
        self.response = JSONResponse(status_code=status, content=body, headers=headers)


def _string_fields() -> frozenset[str]:
    """Request fields whose JSON type is a string: a form value stays as sent. The others (numbers,
    booleans) arrive in a form as text and are read as JSON, so "42" is 42 and "true" is true."""
    names = set()
    for name, prop in GenerateRequest.model_json_schema()["properties"].items():
        types = {prop.get("type")} | {p.get("type") for p in prop.get("anyOf", [])}
        if "string" in types:
            names.add(name)
    return frozenset(names)


STRING_FIELDS = _string_fields()


def body_doc(own: dict[str, dict], replaced: set[str], required: list[str], example: dict,
             uploads: tuple[str, ...] = ()) -> dict:
    """The OpenAPI request body of a protocol route: its own fields, then every field of POST /generate
    that it does not replace (`replaced`, e.g. width/height by size), as JSON or as a form with uploads."""
    # Nested models (a LoRA item) point at /generate's copies in the document's components.
    ours = GenerateRequest.model_json_schema(ref_template="#/components/schemas/{model}")["properties"]
    # fal's names (schema.FAL_FIELDS) are /generate's and /jobs' affair: a protocol route has its own.
    properties = {**own, **{name: prop for name, prop in ours.items()
                            if name not in replaced and name not in own and name not in FAL_FIELDS}}
    schema = {"type": "object", "properties": properties, "required": required, "additionalProperties": False}
    form = {**schema, "properties": {**properties, **{name: {"type": "string", "format": "binary",
                                                             "description": properties[name].get("description", "")}
                                                      for name in uploads}}}
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": schema, "example": example},
        "multipart/form-data": {"schema": form},
    }}}


def form_value(name: str, value: str, budget: list[int] | None = None) -> Any:
    """A form string as the JSON value the request model expects. `budget`: JSON keys and items the form
    may still hold, all fields together (the same bound as a JSON body's)."""
    if name in STRING_FIELDS:
        return value
    budget = budget if budget is not None else [MAX_JSON_ITEMS]
    budget[0] -= json_items(value.encode(), budget[0]) + 1
    if budget[0] < 0:
        raise ProtocolError(name, f"{name}: the form holds more than {MAX_JSON_ITEMS} JSON keys and items; a "
                                  "request has at most a few dozen")
    try:
        return json.loads(value)
    except RecursionError:  # 100,000 nested brackets: no field nests more than a few levels
        raise ProtocolError(name, f"{name} is nested too deeply to be a value of this field") from None
    except ValueError:
        return value  # not JSON (or an integer of over 4,300 digits): the request model names the field


class PartTooLarge(Exception):
    def __init__(self, field: str, limit: int, what: str):
        super().__init__(f"{field} is larger than the limit of {limit / 1024 / 1024:g} MB for {what}")
        self.field = field


def part_limit(field: str, upload: bool, limits: InputLimits, content_type: str | None = None) -> tuple[int, str]:
    """The most bytes the form part `field` may hold, and what sets it (for the error). An input_reference
    upload typed image/* is held to the image limit; typed otherwise or not at all, it may be a video."""
    kind = MEDIA_FIELDS.get(field) or ("image" if KEYFRAME_PART.fullmatch(field) else None)
    if kind is None:
        return MAX_TEXT_PART, "a form field"
    if kind == "reference" and (content_type or "").lower().startswith("image/"):
        kind = "image"
    if kind == "reference":
        limit, what = max(limits.max_image_bytes, limits.max_video_bytes), \
            "an image or a video (LTX2_MAX_IMAGE_MB, LTX2_MAX_VIDEO_MB)"
    else:
        limit = {"image": limits.max_image_bytes, "audio": limits.max_audio_bytes, "video": limits.max_video_bytes}[kind]
        what = f"{'a' if kind == 'video' else 'an'} {kind} (LTX2_MAX_{kind.upper()}_MB)"
    # A text part is a URL or a base64 data URI of the file: 4/3 of it, plus its "data:...;base64," head.
    return (limit if upload else limit * 4 // 3 + 1024), what


class LimitedMultiPartParser(MultiPartParser):
    """Starlette's parser with a limit per field, checked as each part streams in: a 120 MB upload is
    refused at the field's limit (PartTooLarge), not buffered first."""

    def __init__(self, *args, limits: InputLimits, **kwargs):
        super().__init__(*args, **kwargs)
        self.limits = limits
        self._part_bytes = 0

    def on_part_begin(self) -> None:
        super().on_part_begin()
        self._part_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self._part_bytes += end - start
        part = self._current_part
        limit, what = part_limit(part.field_name, part.file is not None, self.limits,
                                 part.file.content_type if part.file is not None else None)
        if self._part_bytes > limit:
            raise PartTooLarge(part.field_name, limit, what)
        super().on_part_data(data, start, end)


async def read_form(http: Request) -> list[tuple[str, str | UploadFile]]:
    """A multipart body, parsed as it streams, each part bounded (see LimitedMultiPartParser)."""
    parser = LimitedMultiPartParser(http.headers, http.stream(), max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS,
                                    max_part_size=MAX_TEXT_PART, limits=InputLimits.from_env())
    try:
        form = await parser.parse()
    except PartTooLarge as exc:
        # The rest of the body is never read: the connection closes after the answer.
        raise ProtocolError(exc.field, str(exc), status=413, code="payload_too_large",
                            headers={"Connection": "close"}) from None
    except MultiPartException as exc:
        raise ProtocolError("body", f"the multipart body could not be read: {exc.message}") from None
    return form.multi_items()


async def upload_as_data_uri(upload: UploadFile) -> str:
    """An uploaded file as the data URI the request model takes (bare base64 when its type is unknown,
    so the decoder goes by the content). The body limit has already bounded its size."""
    data = await upload.read()
    mime = (upload.content_type or "").split(";")[0].strip().lower()
    encoded = base64.b64encode(data).decode("ascii")
    if mime in ("", "application/octet-stream"):
        return encoded
    return f"data:{mime};base64,{encoded}"


def content_type(http: Request) -> str:
    return http.headers.get("content-type", "").split(";")[0].strip().lower()


def wrong_content_type_message(got: str, accepted: tuple[str, ...]) -> str:
    sent = f"Content-Type {got!r}" if got else "no Content-Type"
    return f"the request body must be sent as {' or '.join(accepted)}; this request has {sent}"


async def read_body(http: Request) -> dict[str, Any]:
    """The body as a dict: a JSON object, or a form (multipart, with files, or urlencoded)."""
    kind = content_type(http)
    if kind in JSON_TYPES or kind.endswith("+json"):
        raw = await http.body()
        try:  # parsed off the event loop with the shape limits (SubmitRoute has done it already)
            data = http._json if hasattr(http, "_json") else await asyncio.to_thread(parse_json_body, raw)
        except BodyRefused as exc:
            raise ProtocolError("body", body=exc.body) from None
        if not isinstance(data, dict):
            raise ProtocolError("body", "the request body must be a JSON object")
        return data
    if kind not in FORM_TYPES:
        raise ProtocolError("body", wrong_content_type_message(kind, (*JSON_TYPES, *FORM_TYPES)))
    if kind == "multipart/form-data":
        try:
            items = await read_form(http)
        except ClientDisconnect:  # gone, or cut off by the body limit (which has answered already)
            raise ProtocolError("body", "the client closed the connection before the body was read",
                                status=499, code="client_closed") from None
    else:
        try:
            form = await http.form(max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FIELDS, max_part_size=MAX_TEXT_PART)
        except MultiPartException as exc:
            raise ProtocolError("body", f"the form could not be read: {exc.message}") from None
        items = form.multi_items()
    data: dict[str, Any] = {}
    budget = [MAX_JSON_ITEMS]
    try:
        for key, value in items:
            if key in data:
                raise ProtocolError(key, f"{key} is given more than once")
            data[key] = (await upload_as_data_uri(value) if isinstance(value, UploadFile)
                         else form_value(key, value, budget))
    finally:
        for _, value in items:
            if isinstance(value, UploadFile):
                await value.close()
    return merge_keyframe_parts(data)


def merge_keyframe_parts(data: dict[str, Any]) -> dict[str, Any]:
    """A form's `keyframes.N.image` parts put into item N of its `keyframes` (JSON text: frames, strengths)."""
    parts = {name: KEYFRAME_PART.fullmatch(name) for name in data}
    parts = {name: int(match[1]) for name, match in parts.items() if match}
    if not parts:
        return data
    keyframes = data.get("keyframes")
    if not isinstance(keyframes, list) or not all(isinstance(item, dict) for item in keyframes):
        raise ProtocolError("keyframes", "keyframes.N.image parts need a keyframes field: a JSON list of "
                                         '{"frame" or "time", "strength"} items, one for each image')
    for name, index in parts.items():
        if index >= len(keyframes):
            raise ProtocolError(name, f"{name} has no item {index} in keyframes, which has {len(keyframes)}")
        if "image" in keyframes[index]:
            raise ProtocolError(name, f"give keyframes.{index}.image as a part or in keyframes, not both")
        keyframes[index] = {**keyframes[index], "image": data.pop(name)}
    return data


def build_request(fields: dict[str, Any], derived: dict[str, str] | None = None) -> GenerateRequest:
    """Validate `fields` as a GenerateRequest. `derived` maps a request field that the protocol filled
    from one of its own (width <- size) to that field's name, so an error names what the client sent."""
    derived = derived or {}
    try:
        return GenerateRequest.model_validate(fields)
    except ValidationError as exc:
        body = validation_error_body(list(exc.errors()))
        for problem in body["errors"]:
            ours = problem["field"].split(".")[0]
            if ours in derived:
                problem["field"] = derived[ours]
                problem["message"] = f"{derived[ours]}: {problem['message']}"
        body["field"] = body["errors"][0]["field"]
        body["error"] = "; ".join(p["message"] for p in body["errors"])
        raise ProtocolError(body["field"], body=body) from None


def model_names(model: LoadedModel) -> list[str]:
    """What a client may put in `model`: the vendor's name for the loaded kind of checkpoint
    (a distilled one is ltx-2-fast, a dev one ltx-2-pro) and the loaded model's own name."""
    alias = "ltx-2-fast" if model.defaults.distilled else "ltx-2-pro"
    return [alias, model.name] if model.name != alias else [alias]


def check_model(requested: Any, model: LoadedModel) -> str:
    """The model name to report; a name that is not loaded is a 422 listing the ones that are."""
    names = model_names(model)
    if requested is None:
        return names[0]
    if requested not in names:
        loaded = ", ".join(repr(n) for n in names)
        raise ProtocolError("model", f"model {requested!r} is not loaded on this server; it serves {loaded}")
    return requested


def parse_size(value: Any, field: str) -> tuple[int, int]:
    """"WIDTHxHEIGHT" (1280x720) -> (width, height); the sizes' own rules are the request model's."""
    match = SIZE.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ProtocolError(field, f"{field} must be WIDTHxHEIGHT in pixels with the digits 0-9, e.g. 1280x720, "
                                   f"got {shown}")
    return int(match[1]), int(match[2])


def parse_seconds(value: Any, field: str) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if isinstance(value, bool) or not seconds > 0 or seconds == float("inf"):
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
        raise ProtocolError(field, f"{field} must be a positive number of seconds, got {shown}")
    return seconds


def frames_for_seconds(seconds: float, fps: int, field: str) -> int:
    """A duration -> the nearest valid frame count (8k+1) at `fps`; outside the frame range is a 422."""
    shortest, longest = FRAME_MIN / fps, FRAME_MAX / fps
    # Far out of range is refused before rounding: 1e308 seconds x fps is infinite, which round() refuses.
    in_range = seconds <= 2 * longest
    frames = frames_for_duration(seconds, fps) if in_range else 0
    if not in_range or frames != 8 * round((seconds * fps - 1) / 8) + 1:  # clamped: the duration is out of range
        raise ProtocolError(field, f"{field} must be between {shortest:g} and {longest:g} seconds at {fps} fps "
                                   f"({FRAME_MIN}..{FRAME_MAX} frames), got {seconds:g}")
    return frames


CANCELLED_ERROR = {"error": "the job was cancelled before it finished", "code": "cancelled"}


@dataclass
class JobSummary:
    """What every protocol's job object says: the request's length and size until the job succeeds,
    then the file's; the error body when it failed or was cancelled; the model that ran it."""

    seconds: float
    size: str
    error: dict | None
    model: str
    succeeded: bool


def summarize(job: Job, model: LoadedModel | None) -> JobSummary:
    result = job.result or {}
    if job.status == SUCCEEDED and result:
        return JobSummary(result["duration_seconds"], result["resolution"], None, result["model"], True)
    request = job.request
    error = CANCELLED_ERROR if job.status == CANCELLED else job.error
    return JobSummary(round(request.num_frames / request.fps, 4), f"{request.width}x{request.height}", error,
                      model.name if model is not None else "", False)
