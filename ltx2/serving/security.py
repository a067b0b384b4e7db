"""Access and size limits at the door: an API key and a request-body cap, as pure ASGI middleware.

Pure ASGI (not BaseHTTPMiddleware) because both checks must answer before the body is read: an
unauthenticated or oversized upload is refused from its headers alone, and nothing here buffers a body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from fastapi import FastAPI

from ..schema import ErrorResponse
from ..settings import ENV, Settings

Scope = dict[str, Any]
Message = dict[str, Any]

MISSING_KEY = "this server needs an API key: send Authorization: Bearer <key> or X-API-Key: <key>"
INVALID_KEY = "the API key is not valid"
MB = 1024 * 1024


def _error_body(error: str, code: str) -> bytes:
    return json.dumps(ErrorResponse(error=error, code=code).model_dump()).encode()


def _route_path(scope: Scope) -> str:
    """The path the router matches, without a proxy's root_path (as Starlette's routing computes it)."""
    path = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root) and (path == root or path[len(root)] == "/"):
        return path[len(root):]
    return path


def _digest(value: bytes) -> bytes:
    # Comparing fixed-length digests keeps compare_digest from even revealing the key's length.
    return hashlib.sha256(value).digest()


class SecurityMiddleware:
    """Checks the API key (when one is set), then the body size, before the app sees the request."""

    def __init__(self, app, api_key: str | None = None, max_body_mb: float | None = None,
                 open_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.key_digest = _digest(api_key.encode()) if api_key else None  # "" counts as no key, like the env
        self.max_body_mb = max_body_mb
        self.max_body_bytes = None if max_body_mb is None else int(max_body_mb * MB)
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        headers = scope.get("headers") or []
        if self.key_digest is not None and _route_path(scope) not in self.open_paths:
            problem = self._key_problem(headers)
            if problem is not None:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": problem})  # policy violation
                    return
                extra = [(b"www-authenticate", b"Bearer")]
                await _respond(send, 401, _error_body(problem, "unauthorized"), extra, close=_has_body(headers))
                return
        if scope["type"] != "http" or self.max_body_bytes is None:
            await self.app(scope, receive, send)
            return

        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            # Refused from the headers; receive() is never called, so not one body byte is read.
            message = (f"the request body is {declared / MB:.1f} MB; the limit is {self.max_body_mb:g} MB "
                       f"({ENV['max_body_mb']})")
            await _respond(send, 413, _error_body(message, "payload_too_large"), close=True)
            return
        await _CountingRequest(self, scope, receive, send).run()

    def _key_problem(self, headers: list[tuple[bytes, bytes]]) -> str | None:
        """None when a presented key matches; otherwise why the request is refused."""
        presented: list[bytes] = []
        for name, value in headers:
            name = name.lower()
            if name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    presented.append(token.strip())
            elif name == b"x-api-key":
                presented.append(value.strip())
        if not presented:
            return MISSING_KEY
        # Every candidate is compared (no early exit), each in constant time.
        matched = False
        for token in presented:
            matched |= hmac.compare_digest(_digest(token), self.key_digest)
        return None if matched else INVALID_KEY


class _CountingRequest:
    """One request whose body has no (or a small) Content-Length: count bytes as the app pulls them."""

    def __init__(self, middleware: SecurityMiddleware, scope: Scope, receive, send) -> None:
        self.mw = middleware
        self.scope = scope
        self.inner_receive = receive
        self.inner_send = send
        self.received = 0
        self.app_started = False  # the app has sent http.response.start
        self.refused = False  # we answered 413 ourselves; the app is cut off from both body and client

    async def run(self) -> None:
        await self.mw.app(self.scope, self.receive, self.send)

    async def receive(self) -> Message:
        if self.refused:
            return {"type": "http.disconnect"}
        message = await self.inner_receive()
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.received <= self.mw.max_body_bytes:
            return message
        self.refused = True
        if not self.app_started:
            text = (f"the request body is larger than the limit of {self.mw.max_body_mb:g} MB "
                    f"({ENV['max_body_mb']})")
            await _respond(self.inner_send, 413, _error_body(text, "payload_too_large"), close=True)
        # The over-limit chunk is withheld and so is everything after it: to the app it looks as if the
        # client went away, which Starlette/FastAPI already handle quietly (ClientDisconnect, no traceback).
        # An app that had already started its own response cannot be turned into a 413; it just gets no
        # more body.
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if self.refused and not self.app_started:
            return  # the client already has our 413; drop what the app tries to say after it
        if message["type"] == "http.response.start":
            self.app_started = True
        await self.inner_send(message)


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server rejects malformed lengths itself; counting still guards us
    return None


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        name = name.lower()
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"0", b"")):
            return True
    return False


async def _respond(send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] = (),
                   close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    if close:
        # The body we did not read is still on the wire; closing the connection means the client stops
        # sending it and the server never parses it (uvicorn drops keep-alive on this header).
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def install_security(app: FastAPI, settings: Settings, pages: frozenset[str] = frozenset()) -> None:
    """Add the middleware and, with a key, describe it in the OpenAPI schema (Swagger's Authorize button).
    `pages`: the pages for people and their files (/docs, /playground), open like /docs."""
    open_paths = {"/health"}
    if settings.docs_public:
        open_paths |= {p for p in (app.docs_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url,
                                   app.redoc_url) if p} | pages
    app.add_middleware(SecurityMiddleware, api_key=settings.api_key, max_body_mb=settings.max_body_mb,
                       open_paths=frozenset(open_paths))
    if settings.api_key:
        _document_key(app)


def _document_key(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI caches it; the edits below are idempotent
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        schemes["BearerKey"] = {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"}
        schemes["HeaderKey"] = {"type": "apiKey", "in": "header", "name": "X-API-Key"}
        schema["security"] = [{"BearerKey": []}, {"HeaderKey": []}]  # either one
        for operation in schema.get("paths", {}).get("/health", {}).values():
            operation["security"] = []  # open without the key
        return schema

    app.openapi = openapi
