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
- `--max-connections`: connections beyond it are answered 503 and closed at once. A connection is also
  refused while fewer than FD_RESERVE descriptors would be left free, counted from the descriptors the
  process has open now (sockets, the jobs' files, pipes, libraries), so idle connections can never take
  the descriptors a job needs;
- `--max-connections-per-client`: open connections from one client address; beyond it, 503 and closed,
  so one address holding idle connections does not crowd out everyone else (0: no per-address cap,
  e.g. behind a reverse proxy, where every client has the proxy's address).
"""

from __future__ import annotations

import json
import os
import resource
from collections import Counter
from dataclasses import dataclass, field

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
    max_per_client: int = 64  # 0: no per-address cap
    per_client: Counter = field(default_factory=Counter)  # open connections by client address

    @classmethod
    def from_settings(cls, settings) -> ConnectionLimits:
        for name in ("max_connections", "header_timeout", "body_timeout", "min_body_kbps", "keep_alive",
                     "max_header_kb"):
            value = getattr(settings, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        per_client = settings.max_connections_per_client
        if per_client < 0:
            raise ValueError(f"max_connections_per_client must be 0 (no cap) or more, got {per_client!r}")
        return cls(max_connections=int(settings.max_connections), header_timeout=settings.header_timeout,
                   body_timeout=settings.body_timeout, min_body_bytes_per_s=settings.min_body_kbps * 1024,
                   max_header_bytes=int(settings.max_header_kb * 1024), max_per_client=int(per_client))

    def descriptors_short(self) -> bool:
        """Whether fewer than FD_RESERVE descriptors are free now (a just-accepted socket counted). Read from
        the descriptors open now, not a count of sockets: a job's files, pipes and the sandbox use them too,
        and the limit itself (`ulimit -n`, prlimit) may change while we run."""
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return False
        return soft - open_fds() < FD_RESERVE


def open_fds() -> int:
    """Descriptors this process has open (about 0.1 ms for a thousand)."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # no /proc: count the way the limit is checked, by trying to use one
        return 0


def _refusal(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps({"error": message, "code": code, "field": None, "errors": []}).encode()
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode() + body


TOO_MANY = _refusal(503, "Service Unavailable", "the server has too many open connections; retry shortly",
                    "too_many_connections")
TOO_MANY_FROM_CLIENT = _refusal(503, "Service Unavailable", "this address has too many open connections to the "
                                "server (LTX2_MAX_CONNECTIONS_PER_CLIENT); close some or reuse them",
                                "too_many_connections_from_client")
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
        self._address = None  # counted in limits.per_client while set
        limits = self.limits
        if len(self.connections) > limits.max_connections or limits.descriptors_short():
            self._refuse(TOO_MANY)
            return
        address = self.client[0] if self.client else None
        if limits.max_per_client and address is not None:
            if limits.per_client[address] >= limits.max_per_client:
                self._refuse(TOO_MANY_FROM_CLIENT)
                return
            limits.per_client[address] += 1
            self._address = address
        self._expect_head()

    def _refuse(self, answer: bytes) -> None:
        self.transport.write(answer)
        self.transport.close()

    def connection_lost(self, exc) -> None:
        self._set(None)
        if getattr(self, "_address", None) is not None:
            counts = self.limits.per_client
            counts[self._address] -= 1
            if counts[self._address] <= 0:
                del counts[self._address]
            self._address = None
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
