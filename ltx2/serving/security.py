"""Access and size limits at the door: API keys and a request-body cap, as pure ASGI middleware.

Pure ASGI (not BaseHTTPMiddleware) because both checks must answer before the body is read: an
unauthenticated or oversized upload is refused from its headers alone, and nothing here buffers a body.

Keys are named: `--api-key` (one key, named "default"), `--api-keys-file` / LTX2_API_KEYS (many, one
`name:key` each) and `--admin-key` (the operators' key, named "admin", which sees every job). A request
carries exactly one credential: several (a key-guessing oracle if any match passed) are refused. The
caller's identity goes into the request's scope (`scope["state"]["ltx2_caller"]`), where the job routes
read it: a job belongs to the key that submitted it, and other keys get 404 for it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

from fastapi import FastAPI

from ..schema import ErrorResponse
from ..settings import ENV, Settings

Scope = dict[str, Any]
Message = dict[str, Any]

MISSING_KEY = "this server needs an API key: send Authorization: Bearer <key> or X-API-Key: <key>"
QUERY_KEY = ("API keys are not read from the URL (a URL ends up in logs and browser histories): send "
             "Authorization: Bearer <key> or X-API-Key: <key>")
# Query parameters that look like credentials (compared lower-case, without - and _): the access log
# never shows their values, whatever they hold.
CREDENTIAL_PARAMS = frozenset({"apikey", "key", "token", "accesstoken", "auth", "authorization", "bearer",
                               "xapikey", "password", "secret", "adminkey", "sig", "signature"})
REDACTED = "[redacted]"
INVALID_KEY = "the API key is not valid"
ONE_KEY = "send exactly one credential (one Authorization: Bearer header or one X-API-Key header), not {n}"
MB = 1024 * 1024
NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
log = logging.getLogger("ltx2.security")


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the name of its key (None on a server without keys), and whether it is the
    admin key. Anonymous callers of open routes (/health) are Caller(None, False)."""

    name: str | None
    admin: bool = False

    def sees(self, owner: str | None, keys_configured: bool) -> bool:
        """Whether this caller may see a job submitted by `owner`."""
        return not keys_configured or self.admin or (self.name is not None and self.name == owner)


ANONYMOUS = Caller(None)


def parse_keys(text: str, source: str) -> dict[str, str]:
    """`name:key` entries, one per line or comma-separated; blank lines and # comments are skipped."""
    keys: dict[str, str] = {}
    for number, raw in enumerate(re.split(r"[\n,]", text), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, key = (part.strip() for part in line.partition(":"))
        if not sep or not NAME.match(name) or not key or any(c.isspace() for c in key):
            raise ValueError(f"{source}: entry {number} must be name:key (a name of letters, digits, _.@-, and a "
                             "key without spaces)")
        if name in keys:
            raise ValueError(f"{source}: the name {name!r} appears twice")
        keys[name] = key
    return keys


def load_keys(settings: Settings) -> dict[bytes, Caller]:
    """Every configured key, by its SHA-256 digest. Empty: the server is open."""
    named: dict[str, tuple[str, bool]] = {}

    def add(name: str, key: str, admin: bool, source: str) -> None:
        if name in named:
            raise ValueError(f"{source}: the key name {name!r} is already used")
        if any(key == other for other, _ in named.values()):
            raise ValueError(f"{source}: the key named {name!r} is the same as another key")
        if len(key) < 16:
            log.warning(json.dumps({"event": "short_api_key", "name": name, "length": len(key),
                                    "advice": "use 16 or more random characters"}))
        named[name] = (key, admin)

    if settings.api_key and settings.api_key_file:
        raise ValueError(f"give {ENV['api_key']} or {ENV['api_key_file']}, not both")
    if settings.admin_key and settings.admin_key_file:
        raise ValueError(f"give {ENV['admin_key']} or {ENV['admin_key_file']}, not both")
    if settings.api_key:
        add("default", settings.api_key, False, ENV["api_key"])
    if settings.api_key_file:
        add("default", read_key_file(settings.api_key_file, ENV["api_key_file"]), False, settings.api_key_file)
    if settings.api_keys:
        for name, key in parse_keys(settings.api_keys, ENV["api_keys"]).items():
            add(name, key, False, ENV["api_keys"])
    if settings.api_keys_file:
        try:
            with open(settings.api_keys_file) as fh:
                text = fh.read()
        except OSError as exc:
            raise ValueError(f"{ENV['api_keys_file']}: cannot read {settings.api_keys_file}: {exc.strerror}") from None
        for name, key in parse_keys(text, settings.api_keys_file).items():
            add(name, key, False, settings.api_keys_file)
    if settings.admin_key:
        add("admin", settings.admin_key, True, ENV["admin_key"])
    if settings.admin_key_file:
        add("admin", read_key_file(settings.admin_key_file, ENV["admin_key_file"]), True, settings.admin_key_file)
    _warn_keys_on_command_line([key for key, _ in named.values()])
    return {_digest(key.encode()): Caller(name, admin) for name, (key, admin) in named.items()}


def read_key_file(path: str, setting: str) -> str:
    """One key, the whole file (a trailing newline dropped): kept off the command line that every local user can
    read in /proc/<pid>/cmdline."""
    try:
        with open(path) as fh:
            key = fh.read().strip()
    except OSError as exc:
        raise ValueError(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if not key or any(c.isspace() for c in key):
        raise ValueError(f"{setting}: {path} must hold one key, without spaces")
    return key


def _warn_keys_on_command_line(keys: list[str]) -> None:
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return
    if any(key.encode() in arg for key in keys for arg in argv):
        log.warning(json.dumps({"event": "api_key_on_command_line", "advice": (
            "every local user can read a process's command line: pass keys in LTX2_API_KEY / LTX2_ADMIN_KEY, or in "
            "files (--api-key-file, --admin-key-file, --api-keys-file)")}))


def redact_target(target: str, keys: frozenset[bytes] = frozenset()) -> str:
    """A request's path and query as the access log shows it: the value of every credential-like query
    parameter, and any part equal to a configured key (by digest), replaced by [redacted]."""
    path, sep, query = target.partition("?")
    segments = [REDACTED if keys and _digest(unquote_plus(part).encode()) in keys else part
                for part in path.split("/")]
    if not sep:
        return "/".join(segments)
    params = []
    for param in query.split("&"):
        name, eq, value = param.partition("=")
        plain = unquote_plus(name).lower().replace("-", "").replace("_", "")
        secret = plain in CREDENTIAL_PARAMS or (keys and _digest(unquote_plus(value or name).encode()) in keys)
        params.append(f"{name}{eq}{REDACTED}" if secret and eq else REDACTED if secret else param)
    return "/".join(segments) + "?" + "&".join(params)


class RedactAccessLog(logging.Filter):
    """On uvicorn's access logger: its records carry (client, method, path with query, version, status)."""

    def __init__(self, keys: frozenset[bytes] = frozenset()) -> None:
        super().__init__()
        self.keys = keys

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2], self.keys), *args[3:])
        return True


def install_log_redaction(keys: dict[bytes, Caller]) -> None:
    """Redact keys from uvicorn's access log. A logger's filters outlive uvicorn's logging set-up (dictConfig
    replaces handlers, not filters); one filter, replaced on each call (tests build several apps)."""
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, RedactAccessLog)]:
        access.removeFilter(old)
    access.addFilter(RedactAccessLog(frozenset(keys)))


def _error_body(error: str, code: str, scope: Scope | None = None, status: int = 400,
                shape: Callable[[str, int, dict], dict] | None = None) -> bytes:
    """Our error body; with `shape`, in the shape of the protocol that `scope`'s path belongs to."""
    body = ErrorResponse(error=error, code=code).model_dump()
    if shape is not None and scope is not None:
        body = shape(_route_path(scope), status, body)
    return json.dumps(body).encode()


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
                 open_paths: frozenset[str] = frozenset(), keys: dict[bytes, Caller] | None = None,
                 shape: Callable[[str, int, dict], dict] | None = None) -> None:
        self.app = app
        self.shape = shape  # (path, status, our body) -> the body in that path's protocol shape
        self.keys = dict(keys or {})
        if api_key:  # "" counts as no key, like the env
            self.keys[_digest(api_key.encode())] = Caller("default")
        self.max_body_mb = max_body_mb
        self.max_body_bytes = None if max_body_mb is None else int(max_body_mb * MB)
        self.open_paths = open_paths

    async def __call__(self, scope: Scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan
            return
        headers = scope.get("headers") or []
        if self.keys:
            caller, problem = self._identify(headers, scope.get("query_string", b""))
            scope.setdefault("state", {})["ltx2_caller"] = caller
            if problem is not None and _route_path(scope) not in self.open_paths:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008, "reason": problem})  # policy violation
                    return
                extra = [(b"www-authenticate", b"Bearer")]
                body = _error_body(problem, "unauthorized", scope, 401, self.shape)
                await _respond(send, 401, body, extra, close=_has_body(headers))
                return
        if scope["type"] != "http" or self.max_body_bytes is None:
            await self.app(scope, receive, send)
            return

        declared = _content_length(headers)
        if declared is not None and declared > self.max_body_bytes:
            # Refused from the headers; receive() is never called, so not one body byte is read.
            message = (f"the request body is {declared / MB:.1f} MB; the limit is {self.max_body_mb:g} MB "
                       f"({ENV['max_body_mb']})")
            await _respond(send, 413, _error_body(message, "payload_too_large", scope, 413, self.shape), close=True)
            return
        await _CountingRequest(self, scope, receive, send).run()

    def _identify(self, headers: list[tuple[bytes, bytes]], query: bytes = b"") -> tuple[Caller, str | None]:
        """(the caller, None) when exactly one credential is sent and it is a configured key; otherwise
        (ANONYMOUS, why the request is refused)."""
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
            return ANONYMOUS, MISSING_KEY if not _query_has_key(query) else QUERY_KEY
        if len(presented) > 1:  # several guesses in one request would each be tried: refuse them all
            return ANONYMOUS, ONE_KEY.format(n=len(presented))
        # Every configured key is compared (no early exit), each in constant time.
        digest, found = _digest(presented[0]), None
        for key, caller in self.keys.items():
            if hmac.compare_digest(digest, key):
                found = caller
        return (found, None) if found is not None else (ANONYMOUS, INVALID_KEY)


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
            body = _error_body(text, "payload_too_large", self.scope, 413, self.mw.shape)
            await _respond(self.inner_send, 413, body, close=True)
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


def _query_has_key(query: bytes) -> bool:
    for param in query.decode("latin-1").split("&"):
        name = unquote_plus(param.partition("=")[0]).lower().replace("-", "").replace("_", "")
        if name in CREDENTIAL_PARAMS:
            return True
    return False


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


def install_security(app: FastAPI, settings: Settings, pages: frozenset[str] = frozenset(),
                     shape: Callable[[str, int, dict], dict] | None = None) -> dict[bytes, Caller]:
    """Add the middleware and, with keys, describe them in the OpenAPI schema (Swagger's Authorize
    button). `pages`: the pages for people and their files (/docs, /playground), open like /docs.
    `shape`: puts the middleware's 401/413 bodies in each protocol's shape. Returns the keys (empty: an
    open server)."""
    keys = load_keys(settings)
    install_log_redaction(keys)
    open_paths = {"/health"}
    if settings.docs_public:
        open_paths |= {p for p in (app.docs_url, app.openapi_url, app.swagger_ui_oauth2_redirect_url,
                                   app.redoc_url) if p} | pages
    app.add_middleware(SecurityMiddleware, keys=keys, max_body_mb=settings.max_body_mb,
                       open_paths=frozenset(open_paths), shape=shape)
    if keys:
        _document_key(app)
    return keys


def caller_of(scope_or_request) -> Caller:
    """The caller the middleware identified (ANONYMOUS on an open server or an open route)."""
    scope = getattr(scope_or_request, "scope", scope_or_request)
    return scope.get("state", {}).get("ltx2_caller", ANONYMOUS)


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
