"""Connection limits: what a client may cost the server before it has sent a whole request.

uvicorn and h11 have some of these limits as settings, and they are used as such:
- `--max-header-kb`: h11's `max_incomplete_event_size` (the request line and headers together); a
  larger head is answered 400 and the connection closed. h11 is used rather than httptools for this:
  httptools has no limit on header size.
- `--keep-alive`: uvicorn's `timeout_keep_alive`, how long an idle connection is kept between requests.
- `backlog`: uvicorn's listen backlog, kept at its default.

uvicorn has no limit on the time to send a request head, on the rate of a body, or on the number of
connections, so `LimitedH11Protocol` (uvicorn's own h11 protocol, given to it with `http=`) adds them:
- `--header-timeout`: the request line and headers must be complete this many seconds after the
  connection opens or the previous response ends (a client trickling a byte a second is cut off: 408);
- `--body-timeout` and `--min-body-kbps`: a body gets `body-timeout` seconds plus one second for every
  `min-body-kbps` KB received (Apache's mod_reqtimeout rule); a body slower than that is cut off. Time
  the server itself is not reading (its buffers full) does not count;
- `--max-connections`: connections beyond it are answered 503 and closed at once. The cap is also kept
  below the process's file-descriptor limit, leaving a reserve for the job worker: idle connections
  can never starve the worker of descriptors.
"""

from __future__ import annotations

import json
import os
import resource
from dataclasses import dataclass

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

FD_RESERVE = 128  # descriptors kept for the worker: the database, videos, the decoding sandbox's pipes, libraries


@dataclass
class ConnectionLimits:
    max_connections: int = 1000
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    min_body_bytes_per_s: float = 64 * 1024
    max_header_bytes: int = 32 * 1024
    fds_at_start: int = 0  # descriptors the process held before serving (libraries, the model, the database)

    @classmethod
    def from_settings(cls, settings) -> ConnectionLimits:
        for name in ("max_connections", "header_timeout", "body_timeout", "min_body_kbps", "keep_alive",
                     "max_header_kb"):
            value = getattr(settings, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        return cls(max_connections=int(settings.max_connections), header_timeout=settings.header_timeout,
                   body_timeout=settings.body_timeout, min_body_bytes_per_s=settings.min_body_kbps * 1024,
                   max_header_bytes=int(settings.max_header_kb * 1024), fds_at_start=_open_fds())

    def cap(self) -> int:
        """The connection cap now: the setting, or fewer when the descriptor limit (which `ulimit -n` or
        prlimit may change while we run) leaves less room."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - self.fds_at_start - FD_RESERVE))


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


def _refusal(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": message, "code": code, "field": None, "errors": []}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


TOO_MANY = _refusal(503, "Service Unavailable", "the server has too many open connections; retry shortly",
                    "too_many_connections")
HEAD_TOO_LARGE = _refusal(431, "Request Header Fields Too Large", "the request line and headers are larger than "
                          "the server's limit (LTX2_MAX_HEADER_KB)", "headers_too_large")
HEAD_TIMEOUT = _refusal(408, "Request Timeout", "the request line and headers took too long to arrive",
                        "request_timeout")


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap, a deadline for the request head and a minimum body
    rate. `limits` is set on a subclass made by `uvicorn_config`."""

    limits: ConnectionLimits = ConnectionLimits()

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._deadline: float | None = None  # in the loop's clock
        self._timer = None
        self._timer_at = 0.0
        self._body_start = 0.0
        self._body_bytes = 0
        self._head_bytes = 0
        if len(self.connections) > self.limits.cap():
            transport.write(TOO_MANY)
            transport.close()
            return
        self._expect_head()

    def connection_lost(self, exc) -> None:
        self._set(None)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self.conn.their_state
        if before is h11.IDLE:
            # h11 bounds only a head that arrives in pieces; one read holds up to 256 KB, so count here too.
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end
            if self._head_bytes > self.limits.max_header_bytes:
                self._set(None)
                self.transport.write(HEAD_TOO_LARGE)
                self.transport.close()
                return
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            if before is not h11.SEND_BODY:  # the head just completed: the body's clock starts
                self._body_start, self._body_bytes = self.loop.time(), 0
            self._body_bytes += len(data)
            limits = self.limits
            self._set(self._body_start + limits.body_timeout + self._body_bytes / limits.min_body_bytes_per_s)
        elif state is not h11.IDLE:
            self._set(None)  # the request is in: the app may take as long as the job does

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._expect_head()

    def _expect_head(self) -> None:
        self._head_bytes = 0
        self._set(self.loop.time() + self.limits.header_timeout)

    def _set(self, deadline: float | None) -> None:
        """Move the deadline. Later deadlines only update a number (the timer looks again when it fires);
        an earlier one, or none, replaces the timer."""
        self._deadline = deadline
        if self._timer is not None and (deadline is None or deadline < self._timer_at):
            self._timer.cancel()
            self._timer = None
        if deadline is not None and self._timer is None:
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._expired)

    def _expired(self) -> None:
        self._timer = None
        if self._deadline is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if now < self._deadline or self.flow.read_paused:
            # Moved later since the timer was set, or the server is the one not reading: look again.
            self._set(max(self._deadline, now + 1.0))
            return
        if self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            self.transport.write(HEAD_TIMEOUT)  # no app is answering this connection: say why it closes
        self.transport.close()


def uvicorn_config(app, settings, **kwargs):
    """The uvicorn Config for `settings`, with every connection limit in place."""
    import uvicorn

    limits = ConnectionLimits.from_settings(settings)
    protocol = type("LimitedH11Protocol", (LimitedH11Protocol,), {"limits": limits})
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level,
        http=protocol, h11_max_incomplete_event_size=int(settings.max_header_kb * 1024),
        timeout_keep_alive=max(1, int(round(settings.keep_alive))), **kwargs,
    )
