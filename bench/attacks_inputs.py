"""Attacks through the request itself (issue 21): hostile numbers and nesting in forms, non-ASCII digits,
an oversized multipart part, a key in the URL, one address holding every connection, SIGTERM under a
waiting /generate. Each row: the attack, the answer, seconds, whether the server is alive, the next job.
Merged into bench/attacks.py's table when it runs (`--only inputs_forms,...`)."""

from __future__ import annotations

import json
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx

import hostile
from attacks import CHEAP, SLOW, Server

KEY = "attack-key-0123456789abcdef"


def _answer(r: httpx.Response) -> str:
    kind = "JSON" if r.headers.get("content-type", "").startswith("application/json") else "text"
    return f"{r.status_code} {kind}"


def _after(server: Server) -> str:
    code, status = server.health()
    return f"alive: {code} {status}; next job {server.next_job(60)}"


def attack_forms() -> list[tuple[str, str]]:
    """Forms and JSON bodies with 100,000-deep brackets, 1e308 and 5,000-digit numbers; non-ASCII digits."""
    server = Server()
    rows = []
    try:
        values = {"100k-deep JSON": "[" * 100_000 + "]" * 100_000, "1e308": "1e308", "5000 digits": "9" * 5000}
        for route, seconds in (("/v1/videos", "seconds"), ("/v1/generations/text-to-video", "duration")):
            for name, value in values.items():
                for kind in ("form", "JSON"):
                    statuses, start = set(), time.monotonic()
                    for field in ("seed", "fps", "loras", seconds):
                        if kind == "form":
                            r = server.http.post(route, files={"prompt": (None, "a"), field: (None, value)})
                        else:
                            r = server.http.post(route, content=f'{{"prompt": "a", "{field}": {value}}}',
                                                 headers={"Content-Type": "application/json"})
                        statuses.add(_answer(r))
                    rows.append((f"{route} {kind}, {name} in seed/fps/loras/{seconds}",
                                 f"{', '.join(sorted(statuses))} in {time.monotonic() - start:.2f} s"))
        for text in ("１９２０x１０８０", "٦٤x٦٤"):
            r = server.http.post("/v1/generations/text-to-video", json={"prompt": "a", "resolution": text})
            rows.append((f"resolution {text!r}", f"{_answer(r)} field={r.json().get('field')}"))
        rows.append(("forms: after", _after(server)))
        return rows
    finally:
        server.close()


def attack_big_part() -> list[tuple[str, str]]:
    """A 120 MB multipart upload as `image` (the limit 20 MB): how much is read before the answer."""
    server = Server()
    try:
        total, boundary = 120 * 1024 * 1024, "xyz"
        head = (f"POST /v1/generations/image-to-video HTTP/1.1\r\nHost: x\r\nContent-Length: {total}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
                f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\na\r\n'
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n').encode()
        filler = b"\0" * (1024 * 1024)
        hostile.reset_peak_rss(server.pid)
        rss = hostile.rss_mb(server.pid)
        start, sent, answer = time.monotonic(), 0, b""
        with socket.create_connection(hostile.host_port(server.base)) as sock:
            sock.sendall(head)
            sock.settimeout(0.05)
            while sent < total and not answer:
                try:
                    sent += sock.send(filler)
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    break
                try:
                    answer = sock.recv(65536)
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    break
            if not answer:
                sock.settimeout(30)
                try:
                    answer = sock.recv(65536)
                except OSError:
                    answer = b""
        took = time.monotonic() - start
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "none"
        return [("120 MB image part (limit 20 MB): answer, MB sent before it",
                 f"{status} after {took:.1f} s, {sent / 1e6:.0f} MB"),
                ("120 MB image part: server peak RSS increase", f"{hostile.peak_rss_mb(server.pid) - rss:.0f} MB"),
                ("120 MB image part: after", _after(server))]
    finally:
        server.close()


def attack_keys_and_connections() -> list[tuple[str, str]]:
    """A key in the URL; 1,000 idle connections from one address, then /health from another."""
    tmp = Path(tempfile.mkdtemp())
    (tmp / "key").write_text(KEY)
    server = Server("--api-key-file", str(tmp / "key"))
    server.http.headers["X-API-Key"] = KEY
    rows = []
    socks: list[socket.socket] = []
    try:
        r = httpx.get(f"{server.base}/v1/videos?api_key={KEY}", timeout=10)
        time.sleep(0.5)
        log = server.log.read_text()
        rows.append(("GET /v1/videos?api_key=<key>: answer; key in the access log",
                     f"{_answer(r)}; {'yes' if KEY in log else 'no'}"))
        cmdline = Path(f"/proc/{server.pid}/cmdline").read_bytes()
        rows.append(("--api-key-file: key in /proc/PID/cmdline", "yes" if KEY.encode() in cmdline else "no"))
        start = time.monotonic()
        socks = hostile.open_idle(server.base, 1000)
        time.sleep(1)
        held = sum(1 for s in socks if hostile.closed_within(s, 0.001) is None)
        host, port = hostile.host_port(server.base)
        with socket.create_connection((host, port), source_address=("127.0.0.2", 0)) as other:
            other.sendall(hostile.request_bytes("GET", "/health"))
            other.settimeout(10)
            health = other.recv(4096).split(b"\r\n", 1)[0].decode()
        rows.append(("1,000 idle connections from 127.0.0.1: held open", f"{held}"))
        rows.append(("... then GET /health from 127.0.0.2", f"{health} after {time.monotonic() - start:.1f} s"))
        for s in socks:
            s.close()
        socks = []
        time.sleep(0.5)
        rows.append(("keys and connections: after", _after(server)))
        return rows
    finally:
        for s in socks:
            s.close()
        server.close()


def attack_shutdown_generate() -> list[tuple[str, str]]:
    """SIGTERM (--shutdown-grace 3) while one /generate runs and another waits in the queue."""
    server = Server("--shutdown-grace", "3")
    answers: dict[str, object] = {}

    def generate(name: str, body: dict) -> None:
        try:
            answers[name] = httpx.post(f"{server.base}/generate", json=body, timeout=60)
        except httpx.HTTPError as exc:
            answers[name] = exc

    try:
        threads = [threading.Thread(target=generate, args=("running", SLOW))]
        threads[0].start()
        deadline = time.monotonic() + 30
        while not server.http.get("/health").json().get("progress") and time.monotonic() < deadline:
            time.sleep(0.05)
        threads.append(threading.Thread(target=generate, args=("queued", CHEAP)))
        threads[1].start()
        while server.http.get("/health").json()["queue"]["waiting"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        rows = []
        for name in ("queued", "running"):
            r = answers.get(name)
            if isinstance(r, httpx.Response):
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
                rows.append((f"SIGTERM: the {name} /generate's answer",
                             f"{_answer(r)} {body.get('code', '')} job_id={'yes' if body.get('job_id') else 'no'}"))
            else:
                rows.append((f"SIGTERM: the {name} /generate's answer", f"none ({type(r).__name__})"))
        rows.append(("SIGTERM: both answered within", f"{time.monotonic() - start:.1f} s"))
        return rows
    finally:
        server.close()


ATTACKS = {
    "inputs_forms": attack_forms,
    "inputs_big_part": attack_big_part,
    "inputs_keys_connections": attack_keys_and_connections,
    "inputs_shutdown_generate": attack_shutdown_generate,
}
