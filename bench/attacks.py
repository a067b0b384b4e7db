"""Attacks on a real server process, on loopback, each measured: what the server did, and whether it
still serves afterwards. Prints one table; `--save F` keeps the figures and `--compare F` prints them
next to a saved run (how the before/after table in the project notes was made).

    python bench/attacks.py                          # every attack, ~10 minutes on 2 cores
    python bench/attacks.py --only flac_bomb,jpeg_scans --save after.json
    python bench/attacks.py --compare before.json

Attacks are scaled to run in seconds; each says how it scales (the full-size variant in brackets).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hostile  # noqa: E402
from host import cpu_model  # noqa: E402
from servers import launch, stop_server, wait_healthy  # noqa: E402

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}
DEFAULT = {"prompt": "a boat", "seed": 3}  # 288x512x49: a ~3 MB MP4 of noise
SLOW = {"prompt": "a slow boat", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 100, "seed": 2}
TERMINAL = ("succeeded", "failed", "cancelled")


class Server:
    def __init__(self, *args: str, env: dict | None = None):
        self.dir = Path(tempfile.mkdtemp(prefix="ltx2-attack-"))
        self.out = self.dir / "out"
        self.log = self.dir / "server.log"
        self.args, self.env = args, env
        self.proc, self.base = launch(self.out, self.log, *args, env=env)
        wait_healthy(self.proc, self.base, self.log, timeout=180)
        self.http = httpx.Client(base_url=self.base, timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def job(self, body: dict, **kw) -> httpx.Response:
        return self.http.post("/jobs", json=body, **kw)

    def wait(self, job_id: str, seconds: float, statuses=TERMINAL, headers=None) -> dict:
        deadline = time.monotonic() + seconds
        view = {}
        while time.monotonic() < deadline:
            try:
                view = self.http.get(f"/jobs/{job_id}", headers=headers).json()
            except (httpx.HTTPError, ValueError):
                view = {"status": "unreachable"}
            if view.get("status") in statuses:
                return view
            time.sleep(0.1)
        return view

    def health(self) -> tuple[int, str]:
        try:
            r = self.http.get("/health", timeout=5)
            return r.status_code, r.json().get("status", "?")
        except (httpx.HTTPError, ValueError) as exc:
            return 0, type(exc).__name__

    def next_job(self, seconds: float = 60) -> str:
        """Whether a new cheap job is accepted and succeeds: the figure every attack ends with."""
        try:
            r = self.job(CHEAP)
        except httpx.HTTPError as exc:
            return f"no answer ({type(exc).__name__})"
        if r.status_code != 202:
            return f"refused {r.status_code} {r.json().get('code', '')}"
        view = self.wait(r.json()["id"], seconds)
        return view.get("status", "?") if view.get("status") in TERMINAL else f"still {view.get('status')} after {seconds:.0f} s"

    def close(self) -> None:
        self.http.close()
        stop_server(self.proc)


def server_flags() -> str:
    return subprocess.run([sys.executable, "server.py", "--help"], cwd=ROOT, capture_output=True, text=True).stdout


# ---------------------------------------------------------------------------------------------- 1. the worker


def storage_attack(break_it, repair_it, name: str) -> list[tuple[str, str]]:
    server = Server("--job-timeout", "60")
    try:
        break_it(server)
        r = server.job(DEFAULT)
        job = r.json()["id"]
        view = server.wait(job, 40)
        code, status = server.health()
        rows = [(f"{name}: the job", f"{view.get('status')} {((view.get('error') or {}).get('code') or '')}".strip()),
                (f"{name}: /health", f"{code} {status}")]
        gen_start = time.monotonic()
        try:
            g = server.http.post("/generate", json=CHEAP, timeout=15)
            gen = f"{g.status_code} {g.json().get('code', 'ok') if g.headers.get('content-type', '').startswith('application/json') else g.text[:40]}"
        except httpx.TimeoutException:
            gen = f"hangs (> {time.monotonic() - gen_start:.0f} s)"
        rows.append((f"{name}: POST /generate while broken", gen))
        repair_it(server)
        rows.append((f"{name}: next job after repair", server.next_job(40)))
        return rows
    finally:
        server.close()


def attack_disk_full() -> list[tuple[str, str]]:
    """The output disk fills up (RLIMIT_FSIZE of 1 MB on the server: writes past it fail with EFBIG)."""
    def limit(server):
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))

    def free(server):
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    return storage_attack(limit, free, "disk full")


def attack_unwritable_output() -> list[tuple[str, str]]:
    """The videos folder becomes unwritable (replaced by a plain file: refused even for root)."""
    def spoil(server):
        videos = server.out / "videos"
        os.rename(videos, server.out / "videos.saved")
        videos.write_text("not a folder")

    def mend(server):
        (server.out / "videos").unlink()
        os.rename(server.out / "videos.saved", server.out / "videos")

    return storage_attack(spoil, mend, "unwritable output")


def attack_fd_exhaustion() -> list[tuple[str, str]]:
    """No key needed: idle TCP connections use up the descriptors (soft RLIMIT_NOFILE 256 here;
    [ulimit -n 1024 and 1,100 connections])."""
    server = Server("--job-timeout", "120")
    socks: list[socket.socket] = []
    try:
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
        job = server.job(SLOW).json()["id"]
        server.wait(job, 30, statuses=("running",))
        socks = hostile.open_idle(server.base, 300)
        held = len(socks)
        time.sleep(1)
        alive_after = sum(1 for s in socks if hostile.closed_within(s, 0.01) is None)
        view = server.wait(job, 60)  # the job finishes while descriptors are short
        for s in socks:
            s.close()
        socks = []
        time.sleep(1)
        code, status = server.health()
        return [("fd exhaustion: idle connections accepted / still open after 1 s", f"{held} / {alive_after}"),
                ("fd exhaustion: the running job", f"{view.get('status')} {((view.get('error') or {}).get('code') or '')}"),
                ("fd exhaustion: /health after", f"{code} {status}"),
                ("fd exhaustion: next job", server.next_job(40))]
    finally:
        for s in socks:
            s.close()
        server.close()


# ---------------------------------------------------------------------------------------------- 2. decoding


def attack_flac_bomb() -> list[tuple[str, str]]:
    """A 55-byte FLAC declaring 2 Hz [1 Hz: 4 GB per resample]."""
    server = Server()
    try:
        bomb = hostile.data_uri(hostile.flac_bomb(sample_rate=2), "audio/flac")
        hostile.reset_peak_rss(server.pid)
        base = hostile.rss_mb(server.pid)
        start = time.monotonic()
        r = server.http.post("/generate", json={**CHEAP, "audio": bomb}, timeout=120)
        took = time.monotonic() - start
        peak = hostile.peak_rss_mb(server.pid) - base
        return [("FLAC bomb (55 bytes, 2 Hz): answer", f"{r.status_code} in {took:.1f} s"),
                ("FLAC bomb: server peak RSS increase", f"{peak:.0f} MB"),
                ("FLAC bomb: next job", server.next_job())]
    finally:
        server.close()


def attack_jpeg_scans() -> list[tuple[str, str]]:
    """A 49 MP progressive JPEG with 3,000 extra scans (370 KB) [a 20 MB one: a quarter of an hour]."""
    server = Server("--job-timeout", "8")
    try:
        bomb = hostile.data_uri(hostile.jpeg_scan_bomb(3000), "image/jpeg")
        job = server.job({**CHEAP, "image_start": bomb}).json()["id"]
        behind = server.job(CHEAP).json()["id"]
        time.sleep(2)
        start = time.monotonic()
        cancel = server.http.delete(f"/jobs/{job}", timeout=120)
        cancel_s = time.monotonic() - start
        view = server.wait(behind, 120)
        waited = view.get("finished", 0) - view.get("created", 0) if view.get("finished") else float("nan")
        first = server.http.get(f"/jobs/{job}").json()
        return [("JPEG scans (370 KB): DELETE answered after", f"{cancel_s:.1f} s ({cancel.json().get('status')})"),
                ("JPEG scans: the job with --job-timeout 8", f"{first.get('status')}"),
                ("JPEG scans: the cheap job queued behind it finished after", f"{waited:.1f} s"),
                ("JPEG scans: next job", server.next_job())]
    finally:
        server.close()


def attack_slow_url() -> list[tuple[str, str]]:
    """An image URL that drips one byte every 0.5 s (the job has --job-timeout 5, --url-timeout 30)."""
    drip = hostile.DripServer(hostile.png(), interval=0.5)
    server = Server("--allow-private-urls", "true", "--job-timeout", "5")
    try:
        job = server.job({**CHEAP, "image_start": drip.url}).json()["id"]
        behind = server.job(CHEAP).json()["id"]
        time.sleep(2)
        start = time.monotonic()
        server.http.delete(f"/jobs/{job}", timeout=60)
        cancel_s = time.monotonic() - start
        view = server.wait(behind, 60)
        waited = view.get("finished", 0) - view.get("created", 0) if view.get("finished") else float("nan")
        timed = server.job({**CHEAP, "image_start": drip.url}).json()["id"]
        start = time.monotonic()
        timed_view = server.wait(timed, 60)
        return [("slow URL: DELETE answered after", f"{cancel_s:.1f} s"),
                ("slow URL: the job queued behind it finished after", f"{waited:.1f} s"),
                ("slow URL: --job-timeout 5 stopped it after",
                 f"{time.monotonic() - start:.1f} s ({timed_view.get('status')} "
                 f"{(timed_view.get('error') or {}).get('code', '')})")]
    finally:
        server.close()
        drip.close()


# ---------------------------------------------------------------------------------------------- 3. bounded


def measured_post(server: Server, name: str, body: dict) -> tuple[list[tuple[str, str]], bool]:
    """POST /generate with `body`: the answer, the seconds, the server's peak RSS growth (VmHWM, reset
    first) and whether it is alive; and whether it is."""
    hostile.reset_peak_rss(server.pid)
    base = hostile.rss_mb(server.pid)
    start = time.monotonic()
    try:
        r = server.http.post("/generate", json=body, timeout=300)
        answer = f"{r.status_code}" + (f" {r.json().get('field', '')}: {r.json().get('error', '')[:70]}"
                                       if r.status_code != 200 else "")
    except Exception as exc:  # noqa: BLE001 - a dead server is a figure
        answer = f"no answer ({type(exc).__name__})"
    took = time.monotonic() - start
    alive = server.proc.poll() is None
    peak = hostile.peak_rss_mb(server.pid) - base if alive else float("nan")
    return [(f"{name}: answer", answer), (f"{name}: seconds", f"{took:.1f}"),
            (f"{name}: server peak RSS growth", f"{peak:.0f} MB"),
            (f"{name}: server alive", "yes" if alive and server.health()[0] == 200 else "NO")], alive


def measured_posts(server: Server, cases) -> tuple[list[tuple[str, str]], bool]:
    """measured_post for each (label, body) of `cases`, in order, until the server dies; (rows, alive)."""
    rows = []
    for label, body in cases:
        found, alive = measured_post(server, label, body)
        rows += found
        if not alive:
            return rows, False
    return rows, True


def measured_cases(server: Server, cases, what: str) -> list[tuple[str, str]]:
    """An attack's whole run on its own server: each case measured, then whether a next job still runs
    (`what: next job`); the server is closed in any case."""
    try:
        rows, _ = measured_posts(server, cases)
        rows.append((f"{what}: next job", server.next_job() if server.proc.poll() is None else "-"))
        return rows
    finally:
        server.close()


def health_latency_during(server: Server, action) -> tuple[float, object]:
    """Run `action()` while pinging /health every 20 ms; the slowest ping, and what action returned."""
    worst, done = 0.0, threading.Event()

    def ping():
        nonlocal worst
        with httpx.Client(base_url=server.base, timeout=60) as http:
            while not done.is_set():
                start = time.monotonic()
                try:
                    http.get("/health")
                except httpx.HTTPError:
                    pass
                worst = max(worst, time.monotonic() - start)
                time.sleep(0.02)

    thread = threading.Thread(target=ping, daemon=True)
    thread.start()
    try:
        result = action()
    finally:
        done.set()
        thread.join()
    return worst, result


def attack_many_keys() -> list[tuple[str, str]]:
    """A 14 MB body with a million unknown keys."""
    server = Server()
    try:
        body = hostile.many_keys_body(1_000_000)

        def send():
            start = time.monotonic()
            r = server.http.post("/generate", content=body, headers={"Content-Type": "application/json"}, timeout=120)
            return r, time.monotonic() - start

        worst, (r, took) = health_latency_during(server, send)
        return [("1M unknown keys: answer", f"{r.status_code} in {took:.1f} s"),
                ("1M unknown keys: response size", f"{len(r.content) / 1e6:.1f} MB"),
                ("1M unknown keys: slowest /health meanwhile", f"{worst:.2f} s"),
                ("1M unknown keys: next job", server.next_job())]
    finally:
        server.close()


def attack_slow_result_readers() -> list[tuple[str, str]]:
    """20 clients read one finished data_uri result (3 MB MP4) at 64 KB/s [45 MB: 2.4 GB before]."""
    server = Server()
    try:
        job = server.job({**DEFAULT, "response_format": "data_uri"}).json()["id"]
        server.wait(job, 120)
        time.sleep(1)
        base = hostile.rss_mb(server.pid)
        hostile.reset_peak_rss(server.pid)
        host, port = hostile.host_port(server.base)
        socks = []
        for _ in range(20):
            s = socket.create_connection((host, port))
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(hostile.request_bytes("GET", f"/jobs/{job}"))
            socks.append(s)
        for _ in range(30):  # 3 s of slow reading
            for s in socks:
                s.settimeout(0.001)
                try:
                    s.recv(4096)
                except OSError:
                    pass
            time.sleep(0.1)
        peak = hostile.peak_rss_mb(server.pid) - base
        for s in socks:
            s.close()
        worst, _ = health_latency_during(server, lambda: time.sleep(1))
        return [("20 slow readers of a 3 MB result: peak RSS increase", f"{peak:.0f} MB"),
                ("20 slow readers: next job", server.next_job())]
    finally:
        server.close()


def attack_records() -> list[tuple[str, str]]:
    """200 finished jobs: the database, memory and the restart [3,600 jobs: 6 s and 650 MB]."""
    server = Server()
    try:
        rss0 = hostile.rss_mb(server.pid)
        ids = []
        for _ in range(200):
            r = server.job(CHEAP)
            if r.status_code == 202:
                ids.append(r.json()["id"])
            else:
                time.sleep(0.5)
        for job in ids:
            server.wait(job, 60)
        rss1 = hostile.rss_mb(server.pid)
        db = server.out / "jobs.sqlite3"
        size = sum(p.stat().st_size for p in server.out.glob("jobs.sqlite3*"))
        stop_server(server.proc)
        rows = sqlite3.connect(db).execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        start = time.monotonic()
        server.proc, server.base = launch(server.out, server.log)
        wait_healthy(server.proc, server.base, server.log, timeout=180)
        restart = time.monotonic() - start
        server.http = httpx.Client(base_url=server.base, timeout=30)
        return [("200 jobs: rows kept / database + WAL", f"{rows} / {size / 1e3:.0f} kB"),
                ("200 jobs: RSS growth", f"{rss1 - rss0:.0f} MB"),
                ("200 jobs: restart to healthy", f"{restart:.1f} s")]
    finally:
        server.close()


def attack_big_inputs() -> list[tuple[str, str]]:
    """5 jobs with 20 MB of base64 audio each (WAV): the database and WAL afterwards [100 MB: 351 + 121 MB]."""
    server = Server("--max-body-mb", "64")
    try:
        audio = hostile.data_uri(hostile.wav(150, rate=50_000), "audio/wav")
        for _ in range(5):
            r = server.http.post("/jobs", json={**CHEAP, "audio": audio}, timeout=60)
            if r.status_code == 202:
                server.wait(r.json()["id"], 60)
        time.sleep(2)
        sizes = {p.name: p.stat().st_size for p in server.out.glob("jobs.sqlite3*")}
        return [("5 x 20 MB inputs: database / WAL after the jobs",
                 f"{sizes.get('jobs.sqlite3', 0) / 1e6:.1f} MB / {sizes.get('jobs.sqlite3-wal', 0) / 1e6:.1f} MB"),
                ("5 x 20 MB inputs: next job", server.next_job())]
    finally:
        server.close()


def attack_startup() -> list[tuple[str, str]]:
    """A malformed row, then a corrupt database file, then orphan videos, at start-up."""
    rows = []
    server = Server()
    try:
        job = server.job(CHEAP).json()["id"]
        server.wait(job, 60)
        stop_server(server.proc)
        db = sqlite3.connect(server.out / "jobs.sqlite3")
        db.execute("INSERT INTO jobs (id, status, created, request) VALUES ('bad', 'queued', 1, '{\"not\": \"a request\"}')")
        db.commit()
        db.close()
        (server.out / "videos" / "orphan.mp4").write_bytes(b"x" * 1000)
        for label in ("a malformed row", "a corrupt database"):
            if label == "a corrupt database":
                stop_server(server.proc)
                for p in server.out.glob("jobs.sqlite3*"):
                    p.unlink()
                (server.out / "jobs.sqlite3").write_bytes(b"this is not a database" * 100)
            server.proc, server.base = launch(server.out, server.log)
            try:
                wait_healthy(server.proc, server.base, server.log, timeout=120)
                server.http = httpx.Client(base_url=server.base, timeout=30)
                rows.append((f"start-up with {label}", f"starts; next job {server.next_job()}"))
            except RuntimeError:
                rows.append((f"start-up with {label}", "does not start"))
        rows.append(("start-up: orphan video", "swept" if not (server.out / "videos" / "orphan.mp4").exists() else "kept"))
        return rows
    finally:
        if server.proc.poll() is None:
            server.close()


def attack_db_deleted() -> list[tuple[str, str]]:
    """jobs.sqlite3 is deleted while a job runs and another waits; then the server restarts."""
    server = Server()
    try:
        running = server.job(SLOW).json()["id"]
        server.wait(running, 30, statuses=("running",))
        queued = server.job(SLOW).json()["id"]
        for p in server.out.glob("jobs.sqlite3*"):
            p.unlink()
        time.sleep(3)
        server.http.delete(f"/jobs/{running}")
        server.wait(queued, 30, statuses=("running",))
        stop_server(server.proc)  # SIGTERM: the queued/running one is kept for the next start, if recorded
        server.proc, server.base = launch(server.out, server.log)
        wait_healthy(server.proc, server.base, server.log, timeout=120)
        server.http = httpx.Client(base_url=server.base, timeout=30)
        seen = [server.http.get(f"/jobs/{j}").status_code for j in (running, queued)]
        return [("database deleted mid-run: jobs known after restart (GET status)", f"{seen[0]}, {seen[1]}")]
    finally:
        server.close()


def attack_gc_stall() -> list[tuple[str, str]]:
    """10 cheap jobs back to back; the slowest /health ping while they finish."""
    server = Server()
    try:
        server.next_job()

        def run():
            ids = [server.job(CHEAP).json()["id"] for _ in range(8)]
            for job in ids:
                server.wait(job, 60)

        worst, _ = health_latency_during(server, run)
        return [("8 jobs finishing: slowest /health ping", f"{worst:.2f} s")]
    finally:
        server.close()


def attack_body_when_full() -> list[tuple[str, str]]:
    """A 60 MB body sent to a full queue: how much is read before the 429."""
    server = Server("--queue-size", "1")
    try:
        first = server.job(SLOW).json()["id"]
        server.wait(first, 30, statuses=("running",))
        server.job(SLOW)
        body = json.dumps({**CHEAP, "image_start": "A" * 60_000_000}).encode()
        host, port = hostile.host_port(server.base)
        with socket.create_connection((host, port)) as sock:
            head = hostile.request_bytes("POST", "/jobs", headers={"Content-Type": "application/json",
                                                                    "Content-Length": str(len(body))})
            head = head.replace(b"Content-Length: 0\r\n", b"")
            start = time.monotonic()
            sock.sendall(head)
            sent = 0
            sock.settimeout(0.05)
            answer = None
            while sent < len(body):
                try:
                    sent += sock.send(body[sent:sent + 1_000_000])
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    break
                try:
                    data = sock.recv(4096)
                    if data:
                        answer = data
                        break
                except (TimeoutError, BlockingIOError):
                    pass
                except OSError:
                    break
            if answer is None:
                sock.settimeout(30)
                try:
                    answer = sock.recv(4096)
                except OSError:
                    answer = b""
            took = time.monotonic() - start
        status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "?"
        server.http.delete(f"/jobs/{first}")
        return [("60 MB body to a full queue: answer, MB sent before it", f"{status} after {took:.1f} s, {sent / 1e6:.0f} MB")]
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------- 4. access


def attack_access() -> list[tuple[str, str]]:
    """Keys, job ids in /health, Host-header links and HEAD."""
    flags = server_flags()
    multi = "--api-keys-file" in flags
    tmp = Path(tempfile.mkdtemp())
    if multi:
        (tmp / "keys").write_text("alice:alice-key-0123456789\nbob:bob-key-0123456789\n")
        args = ["--api-keys-file", str(tmp / "keys")]
        alice, bob = {"X-API-Key": "alice-key-0123456789"}, {"X-API-Key": "bob-key-0123456789"}
    else:
        args = ["--api-key", "alice-key-0123456789"]
        alice = bob = {"X-API-Key": "alice-key-0123456789"}
    server = Server(*args)
    rows = []
    try:
        job = server.http.post("/jobs", json=SLOW, headers={**alice, "Host": "evil.example"}).json()
        rows.append(("a link in the response with Host: evil.example", job["links"]["self"].split("/jobs")[0]))
        server.wait(job["id"], 30, statuses=("running",), headers=alice)
        health = server.http.get("/health").text
        rows.append(("/health without a key shows the running job id", "yes" if job["id"] in health else "no"))
        other = server.http.get(f"/jobs/{job['id']}", headers=bob).status_code
        rows.append(("another key holder reads the job", str(other)))
        cancel = server.http.delete(f"/jobs/{job['id']}", headers=bob).status_code
        rows.append(("another key holder cancels it", str(cancel)))
        server.http.delete(f"/jobs/{job['id']}", headers=alice)
        wrong = [("X-API-Key", f"guess-{i}") for i in range(1000)] + [("X-API-Key", alice["X-API-Key"])]
        r = server.http.get("/", headers=httpx.Headers(wrong))
        rows.append(("1,000 X-API-Key headers, one of them right", str(r.status_code)))
        rows.append(("HEAD /health", str(server.http.head("/health").status_code)))
        return rows
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------- 5. connections


def sse_cpu(server: Server) -> str:
    """CPU of the server while 500 event streams wait on a queued job, and without them. The job ahead
    fetches a URL that drips (so it holds the queue without using the CPU)."""
    drip = hostile.DripServer(hostile.png(), interval=1.0)
    host, port = hostile.host_port(server.base)
    try:
        ahead = server.job({**CHEAP, "image_start": drip.url}).json()["id"]
        queued = server.job(CHEAP).json()["id"]
        streams = []
        for _ in range(500):
            s = socket.create_connection((host, port))
            s.sendall(hostile.request_bytes("GET", f"/jobs/{queued}/events"))
            streams.append(s)
        time.sleep(2)
        start = hostile.cpu_seconds(server.pid)
        time.sleep(5)
        with_streams = (hostile.cpu_seconds(server.pid) - start) / 5
        for s in streams:
            s.close()
        time.sleep(1)
        start = hostile.cpu_seconds(server.pid)
        time.sleep(5)
        without = (hostile.cpu_seconds(server.pid) - start) / 5
        for job in (ahead, queued):
            server.http.delete(f"/jobs/{job}")
        return f"{with_streams:.2f} (without them: {without:.2f})"
    finally:
        drip.close()


def attack_connections() -> list[tuple[str, str]]:
    """Idle, trickled and oversized requests; many connections; SSE clients."""
    server = Server("--allow-private-urls", "true")
    rows = []
    try:
        host, port = hostile.host_port(server.base)
        idle = socket.create_connection((host, port))
        closed = hostile.closed_within(idle, 20)
        rows.append(("an idle connection is closed after", f"{closed:.1f} s" if closed else "never (> 20 s)"))
        idle.close()

        trickler = socket.create_connection((host, port))
        until = time.monotonic() + 20
        sent = hostile.trickle(trickler, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200, 0.1, until)
        rows.append(("a header trickled 10 bytes/s: bytes accepted in 20 s", f"{sent}"))
        trickler.close()

        body = json.dumps(CHEAP).encode() + b" " * 2000
        slow = socket.create_connection((host, port))
        slow.sendall(hostile.request_bytes("POST", "/jobs", headers={"Content-Type": "application/json",
                                                                     "Content-Length": str(len(body))})
                     .replace(b"Content-Length: 0\r\n", b""))
        sent = hostile.trickle(slow, body, 0.02, time.monotonic() + 20)
        rows.append(("a body trickled 50 bytes/s: bytes accepted in 20 s", f"{sent} of {len(body)}"))
        slow.close()

        def big_header():
            with socket.create_connection((host, port)) as s:
                try:
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (64 * 1024 * 1024) + b"\r\n\r\n")
                    return hostile.read_response(s, 60)[0]
                except OSError as exc:
                    return type(exc).__name__

        worst, statuses = health_latency_during(server, lambda: [big_header() for _ in range(4)])
        rows.append(("4 x 64 MB headers: answers", ", ".join(map(str, statuses))))
        rows.append(("4 x 64 MB headers: slowest /health meanwhile", f"{worst:.2f} s"))

        socks = hostile.open_idle(server.base, 2000)
        time.sleep(1)
        open_now = sum(1 for s in socks if hostile.closed_within(s, 0.001) is None)
        rows.append(("2,000 connections: accepted and held open", f"{open_now}"))
        for s in socks:
            s.close()

        rows.append(("SSE: 500 clients on a queued job: server CPU (core-seconds per second)", sse_cpu(server)))
        rows.append(("connections: next job", server.next_job()))
        return rows
    finally:
        server.close()


ATTACKS = {
    "disk_full": attack_disk_full,
    "unwritable_output": attack_unwritable_output,
    "fd_exhaustion": attack_fd_exhaustion,
    "flac_bomb": attack_flac_bomb,
    "jpeg_scans": attack_jpeg_scans,
    "slow_url": attack_slow_url,
    "many_keys": attack_many_keys,
    "slow_result_readers": attack_slow_result_readers,
    "records": attack_records,
    "big_inputs": attack_big_inputs,
    "startup": attack_startup,
    "db_deleted": attack_db_deleted,
    "gc_stall": attack_gc_stall,
    "body_when_full": attack_body_when_full,
    "access": attack_access,
    "connections": attack_connections,
}


# Attacks kept beside this file, one module per area (`attacks_<area>.py`, each with its own ATTACKS
# dict and the harness imported from here). Merged when the script runs, not at import, because they
# import this module.
EXTRA_MODULES = ("attacks_memory", "attacks_lora", "attacks_images", "attacks_storage", "attacks_inputs",
                 "attacks_video", "attacks_v2v", "attacks_training", "attacks_extend")


def all_attacks() -> dict:
    import importlib

    attacks = dict(ATTACKS)
    for name in EXTRA_MODULES:
        if (Path(__file__).parent / f"{name}.py").exists():
            attacks.update(importlib.import_module(name).ATTACKS)
    return attacks


def main() -> None:
    ATTACKS = all_attacks()  # noqa: N806 - the full table, under the name the code below reads
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated attack names: " + ", ".join(ATTACKS))
    parser.add_argument("--save", help="write the figures to this JSON file")
    parser.add_argument("--compare", help="a saved run to print as the 'before' column")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(ATTACKS)
    results: dict[str, list] = {}
    for name in names:
        start = time.monotonic()
        try:
            results[name] = ATTACKS[name]()
        except Exception as exc:  # noqa: BLE001 - one attack's harness failure is a row, not the end
            results[name] = [(f"{name}: harness error", f"{type(exc).__name__}: {exc}"[:200])]
        print(f"# {name}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
        if args.save:
            Path(args.save).write_text(json.dumps(results, indent=1))
    before = json.loads(Path(args.compare).read_text()) if args.compare else {}
    if before:
        print("| attack | figure | before | after |\n|---|---|---|---|")
    else:
        print("| attack | figure | result |\n|---|---|---|")
    for name in names:
        old = dict(tuple(r) for r in before.get(name, []))
        for figure, value in results[name]:
            print(f"| {name} | {figure} | {old.get(figure, '') + ' | ' if before else ''}{value} |")
    print(f"\n{cpu_model()}, {os.cpu_count()} cores, no GPU; tiny preset, real `python server.py` on loopback")


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
