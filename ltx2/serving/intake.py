"""Taking in a submission: capacity first, then the body, then its JSON, each bounded.

A route that queues a job uses `SubmitRoute` (`@app.post(..., route_class_override=SubmitRoute)`, or
an `APIRouter(route_class=SubmitRoute)`). Before one byte of the body is read it holds a queue slot
(`JobManager.reservation`): a full queue or a server shutting down answers 429 / 503 from the
headers alone, and closes the connection so the unread upload is never parsed. Then the body is read
while holding one of a few body slots (`MAX_BODIES_IN_FLIGHT`: the memory of large uploads is
bounded), and JSON is parsed in a thread after a cheap check of its size in keys and items, so a body
of a million fields is refused in microseconds instead of occupying pydantic for seconds.

The route's handler then calls `state.submit(request, http)`, which uses the slot held for it.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect

from ..schema import ErrorResponse
from .jobs import QueueFull, ShuttingDown

MAX_JSON_ITEMS = 1024  # keys and array items in one JSON body, all levels together; a request has ~25
MAX_BODIES_IN_FLIGHT = 4  # submissions whose bodies are read and parsed at once
# A JSON string (escapes included) or one comma/colon outside strings.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|([,:])')


class BodyRefused(Exception):
    def __init__(self, status: int, body: dict):
        super().__init__(body["error"])
        self.status, self.body = status, body


def json_items(body: bytes, limit: int) -> int:
    """How many keys and array items `body` holds (counting stops once past `limit`)."""
    # Every key is followed by a colon and every further item by a comma. Counting them over the raw
    # bytes over-counts (strings hold them too) and never under-counts: when that bound is within the
    # limit, nothing more is needed. Only then are strings skipped, by a scan that stops early.
    if body.count(b":") + body.count(b",") <= limit:
        return body.count(b":") + body.count(b",")
    count = 0
    for match in _TOKENS.finditer(body):
        if match.group(1):
            count += 1
            if count > limit:
                break
    return count


def parse_json_body(body: bytes, limit: int = MAX_JSON_ITEMS):
    """The body's JSON, or BodyRefused (422) naming what is wrong with it. Runs in a thread."""
    items = json_items(body, limit)
    if items > limit:
        raise BodyRefused(422, ErrorResponse(
            error=f"the request body has more than {limit} JSON keys and items; a request has at most a few "
                  "dozen (see GET / for the fields)", code="invalid_request", field="body").model_dump())
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, digits, nesting
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
        raise BodyRefused(422, ErrorResponse(
            error=f"the request body is not valid JSON: {reason}", code="invalid_request",
            field="body").model_dump()) from None


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind in ("", "application/json") or kind.endswith("+json")


def _has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or request.headers.get("content-length", "0").strip() not in ("0", "")


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "multipart/form-data"


class SubmitRoute(APIRoute):
    """A route that queues a job: capacity before the body, the body bounded, JSON parsed off the loop."""

    streams_forms = False  # True: the handler reads a multipart body itself, while holding the body slot

    def get_route_handler(self) -> Callable:
        inner = super().get_route_handler()
        if "POST" not in (self.methods or ()):  # a router's other routes (GET, DELETE) pass as they are
            return inner

        async def handler(request: Request) -> Response:
            state = request.app.state.ltx2
            close = {"Connection": "close"} if _has_body(request) else {}
            refusal = state.unavailable()
            if refusal is not None:
                refusal.headers.update(close)
                return refusal
            try:
                reservation = state.manager.reservation()
            except QueueFull as exc:
                state.metrics.job_rejected("queue_full")
                return JSONResponse(status_code=429, content=ErrorResponse(error=str(exc), code="queue_full")
                                    .model_dump(), headers={"Retry-After": str(exc.retry_after), **close})
            except ShuttingDown as exc:
                state.metrics.job_rejected("shutting_down")
                return JSONResponse(status_code=503, content=ErrorResponse(error=str(exc), code="shutting_down")
                                    .model_dump(), headers={"Retry-After": "30", **close})
            try:
                request.state.ltx2_reservation = reservation
                async with state.body_slots:
                    if self.streams_forms and _is_multipart(request):
                        # The route parses the form as it streams, each part within its own limit
                        # (protocol.read_form): a part over it is refused before the rest is read.
                        return await inner(request)
                    try:
                        body = await request.body()
                    except ClientDisconnect:  # gone, or cut off by the body limit (which already answered)
                        return Response(status_code=499)
                    if body and _is_json(request):
                        try:
                            request._json = await asyncio.to_thread(parse_json_body, body)
                        except BodyRefused as exc:
                            return JSONResponse(status_code=exc.status, content=exc.body)
                return await inner(request)
            finally:
                reservation.release()

        return handler
