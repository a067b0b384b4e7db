"""Connection limits on a real server: idle and trickled requests are cut off at their deadlines,
oversized headers are refused before they are buffered, connections beyond the cap are refused at
once, and through all of it /health answers and the next job succeeds."""

from __future__ import annotations

import socket
import threading
import time

import hostile
import httpx
import pytest
from servers import start_server, stop_server

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}
LIMITS = ("--max-connections", "40", "--header-timeout", "2", "--body-timeout", "2", "--min-body-kbps", "1",
          "--keep-alive", "2", "--max-header-kb", "16")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("connections")
    proc, base = start_server(out / "output", out / "server.log", *LIMITS)
    yield proc, base
    stop_server(proc)


def connect(base: str) -> socket.socket:
    return socket.create_connection(hostile.host_port(base), timeout=5)


def health_ok(base: str) -> bool:
    return httpx.get(f"{base}/health", timeout=10).status_code == 200


def test_an_idle_connection_is_closed_at_the_header_deadline(server):
    proc, base = server
    with connect(base) as sock:
        closed = hostile.closed_within(sock, 6)
    assert closed is not None and 1.5 < closed < 4, closed


def test_a_trickled_request_head_is_cut_off(server):
    proc, base = server
    with connect(base) as sock:
        start = time.monotonic()
        sent = hostile.trickle(sock, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 500, 0.05, start + 10)
        took = time.monotonic() - start
    assert sent < 100 and took < 4, (sent, took)  # 20 bytes/s: cut off at 2 s, not served at 25 s
    assert health_ok(base)


def test_a_trickled_body_is_cut_off_at_its_minimum_rate(server):
    proc, base = server
    body = b'{"prompt": "a boat"' + b" " * 20_000 + b"}"
    with connect(base) as sock:
        sock.sendall(f"POST /jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode())
        start = time.monotonic()
        sent = hostile.trickle(sock, body, 0.01, start + 15)  # 100 bytes/s, against 1 KB/s after 2 s
        took = time.monotonic() - start
    assert sent < 1000 and took < 5, (sent, took)
    assert health_ok(base)


def test_oversized_headers_are_refused_and_do_not_stall_the_server(server):
    proc, base = server
    slowest, done = 0.0, threading.Event()

    def ping():
        nonlocal slowest
        while not done.is_set():
            start = time.monotonic()
            health_ok(base)
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.05)

    pinger = threading.Thread(target=ping)
    pinger.start()
    statuses = []
    try:
        for size in (20_000, 200_000, 64 * 1024 * 1024):  # in one read, in a few, and the 64 MB attack
            with connect(base) as sock:
                try:
                    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n")
                except OSError:
                    pass  # the server hung up mid-send: also a refusal
                try:
                    statuses.append(hostile.read_response(sock, 10)[0])
                except (OSError, ConnectionError):
                    statuses.append("closed")
    finally:
        done.set()
        pinger.join()
    assert all(s in (431, 400, "closed") for s in statuses), statuses
    assert statuses[0] == 431 and slowest < 1.5, (statuses, slowest)
    with connect(base) as sock:  # a head just under the limit is fine
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 15_000 + b"\r\n\r\n")
        assert hostile.read_response(sock)[0] == 200


def test_connections_beyond_the_cap_are_refused_at_once(server):
    proc, base = server
    socks = hostile.open_idle(base, 200)
    try:
        time.sleep(0.5)
        open_now = [s for s in socks if hostile.closed_within(s, 0.01) is None]
        assert len(open_now) <= 40, len(open_now)
        refused = next(s for s in socks if s not in open_now)
        del refused
    finally:
        for s in socks:
            s.close()
    time.sleep(0.5)
    assert health_ok(base)  # the idle ones are gone (closed by us, or by their header deadline)
    assert httpx.post(f"{base}/generate", json=CHEAP, timeout=60).status_code == 200


def test_a_keep_alive_connection_is_closed_after_its_idle_time(server):
    proc, base = server
    with connect(base) as sock:
        sock.sendall(hostile.request_bytes("GET", "/health"))
        assert hostile.read_response(sock)[0] == 200
        closed = hostile.closed_within(sock, 6)
    assert closed is not None and closed < 3.5, closed
