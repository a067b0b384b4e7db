"""The 300-request mixed soak: a real server process on loopback takes good and hostile requests from
8 clients at once, and its memory, file descriptors, threads and database are read before and after.
Nothing should grow but the records of the jobs it ran (and the videos they made).

    python bench/soak.py                 # 300 requests, 8 clients, ~5 minutes on 2 cores
    python bench/soak.py --requests 1000 --clients 16
    python bench/soak.py --ray --replicas 2   # the same against `ltx2 serve --ray` (a local Ray cluster)
    python bench/soak.py --url http://host:8000 --key KEY   # a server already running (Ray or not)

The mix (by weight): cheap jobs and /generate calls, status polls, event streams, cancels, HEADs,
unknown ids, wrong and repeated keys, bad base64, a 1 Hz FLAC, a JPEG of thousands of scans, a body
of a million unknown fields, a 1 MB header, idle connections and trickled heads.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import json
import os
import random
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import hostile  # noqa: E402
from host import cpu_model  # noqa: E402
from servers import free_port, start_server, stop_server, wait_healthy  # noqa: E402

KEY = "soak-key-0123456789abcdef"
CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1}


def snapshot(pid: int, out: Path) -> dict:
    db = sum(p.stat().st_size for p in out.glob("jobs.sqlite3*"))
    return {"rss_mb": round(hostile.rss_mb(pid), 1), "fds": hostile.open_fds(pid), "threads": hostile.threads(pid),
            "children": len(hostile.children(pid)), "db_kb": round(db / 1024, 1),
            "videos": len(list((out / "videos").glob("*.mp4"))), "input_files": len(list((out / "inputs").iterdir()))}


class Soak:
    def __init__(self, base: str):
        self.base = base
        self.headers = {"X-API-Key": KEY}
        self.jobs: list[str] = []
        self.lock = threading.Lock()
        self.outcomes = collections.Counter()
        self.flac = hostile.data_uri(hostile.flac_bomb(1), "audio/flac")
        self.jpeg = hostile.data_uri(hostile.jpeg_scan_bomb(3000), "image/jpeg")
        self.keys_body = hostile.many_keys_body(1_000_000)
        self.generate_seconds: list[float] = []  # /generate calls answered 200: submit to video

    def note(self, kind: str, status, seconds: float) -> None:
        with self.lock:
            self.outcomes[f"{kind} -> {status}"] += 1
            if kind == "generate" and status == 200:
                self.generate_seconds.append(seconds)

    def job_id(self) -> str:
        with self.lock:
            return random.choice(self.jobs) if self.jobs else "0" * 32

    def run(self, kind: str, http: httpx.Client) -> None:
        start = time.monotonic()
        try:
            status = getattr(self, kind)(http)
        except (httpx.HTTPError, OSError) as exc:
            status = type(exc).__name__
        self.note(kind, status, time.monotonic() - start)

    # -- good requests --------------------------------------------------------------------------
    def submit(self, http):
        r = http.post("/jobs", json={**CHEAP, "seed": random.randrange(1000)}, headers=self.headers)
        if r.status_code == 202:
            with self.lock:
                self.jobs.append(r.json()["id"])
        return r.status_code

    def generate(self, http):
        return http.post("/generate", json=CHEAP, headers=self.headers, timeout=120).status_code

    def poll(self, http):
        return http.get(f"/jobs/{self.job_id()}", headers=self.headers).status_code

    def events(self, http):
        with http.stream("GET", f"/jobs/{self.job_id()}/events", headers=self.headers, timeout=60) as r:
            for line in r.iter_lines():
                if line.startswith("event: result"):
                    break
            return r.status_code

    def cancel(self, http):
        return http.delete(f"/jobs/{self.job_id()}", headers=self.headers).status_code

    def head(self, http):
        return http.head(f"/jobs/{self.job_id()}/video", headers=self.headers).status_code

    def health(self, http):
        return http.get("/health").status_code

    # -- bad and hostile requests ---------------------------------------------------------------
    def unknown(self, http):
        return http.get("/jobs/nope", headers=self.headers).status_code

    def wrong_key(self, http):
        return http.get("/", headers={"X-API-Key": "wrong"}).status_code

    def many_credentials(self, http):
        headers = httpx.Headers([("X-API-Key", f"guess-{i}") for i in range(500)] + [("X-API-Key", KEY)])
        return http.get("/", headers=headers).status_code

    def bad_base64(self, http):
        return http.post("/jobs", json={**CHEAP, "image_start": "!!not base64!!"}, headers=self.headers).status_code

    def flac_bomb(self, http):
        return http.post("/generate", json={**CHEAP, "audio": self.flac}, headers=self.headers).status_code

    def jpeg_bomb(self, http):
        return http.post("/generate", json={**CHEAP, "image_start": self.jpeg}, headers=self.headers).status_code

    def million_keys(self, http):
        return http.post("/generate", content=self.keys_body,
                         headers={**self.headers, "Content-Type": "application/json"}).status_code

    def big_header(self, http):
        with socket.create_connection(hostile.host_port(self.base), timeout=10) as sock:
            try:
                sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
                return hostile.read_response(sock)[0]
            except (OSError, ConnectionError):
                return "closed"

    def idle(self, http):
        socks = hostile.open_idle(self.base, 20)
        time.sleep(1)
        for sock in socks:
            sock.close()
        return len(socks)

    def trickle(self, http):
        with socket.create_connection(hostile.host_port(self.base), timeout=10) as sock:
            sent = hostile.trickle(sock, b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * 100, 0.05,
                                   time.monotonic() + 15)
            return f"cut after {sent} bytes"


# --mix jobs: the replicas' throughput, closed loop: each client waits for its video, then asks for the next.
JOBS_MIX = {"generate": 1}
MIX = {"submit": 30, "generate": 8, "poll": 40, "events": 10, "cancel": 8, "head": 10, "health": 20,
       "unknown": 10, "wrong_key": 10, "many_credentials": 5, "bad_base64": 8, "flac_bomb": 4, "jpeg_bomb": 3,
       "million_keys": 3, "big_header": 4, "idle": 3, "trickle": 3}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def start_ray(work: Path, replicas: str) -> tuple[subprocess.Popen, str]:
    """`ltx2 serve --ray` on a local Ray cluster of this machine's cores, tiny preset, on a free port."""
    port = free_port()
    env = {**os.environ, "LTX2_DEVICE": "cpu", "RAY_ADDRESS": "", "RAY_USAGE_STATS_ENABLED": "0"}
    with open(work / "server.log", "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ltx2.cli", "serve", "--ray", "--replicas", replicas, "--model", "tiny",
             "--host", "127.0.0.1", "--port", str(port), "--output-dir", str(work / "out"), "--api-key", KEY,
             "--queue-size", "16"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(proc, base, work / "server.log", timeout=300)
    return proc, base


def api_pid(proc: subprocess.Popen, ray: bool) -> int:
    """The process holding the queue: the server, or under Ray its API replica (a descendant)."""
    if not ray:
        return proc.pid
    todo = [proc.pid]
    while todo:
        for pid in hostile.children(todo.pop()):
            try:
                if b"ServeReplica:ltx2:API" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    return pid
            except OSError:
                continue
            todo.append(pid)
    raise RuntimeError("no API replica under the server")


def job_seconds(http: httpx.Client, headers: dict, job_ids: list[str]) -> tuple[collections.Counter, list[float]]:
    """How the submitted jobs ended, and submit-to-end seconds of the ones that succeeded."""
    ends, seconds = collections.Counter(), []
    for job_id in job_ids:
        view = http.get(f"/jobs/{job_id}", headers=headers).json()
        ends[view.get("status", "gone")] += 1
        if view.get("status") == "succeeded":
            seconds.append(view["finished"] - view["created"])
    return ends, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--url", help="soak a server already running there (no process figures)")
    target.add_argument("--ray", action="store_true", help="start `ltx2 serve --ray` (a local Ray cluster)")
    parser.add_argument("--replicas", default="2", help="with --ray: generation replicas, N or MIN-MAX")
    parser.add_argument("--key", default=KEY, help="with --url: the server's API key")
    parser.add_argument("--mix", choices=("mixed", "jobs"), default="mixed",
                        help="mixed: good and hostile requests (default); jobs: /generate calls only, each client waiting "
                             "for its video before the next")
    parser.add_argument("--steps", type=int, default=1, help="denoising steps of each job (tiny preset, 64x64x9)")
    args = parser.parse_args()
    random.seed(args.seed)
    work = Path(tempfile.mkdtemp(prefix="ltx2-soak-"))
    out = work / "out"
    proc = None
    if args.url:
        base = args.url.rstrip("/")
    elif args.ray:
        proc, base = start_ray(work, args.replicas)
    else:
        proc, base = start_server(out, work / "server.log", "--api-key", KEY, "--queue-size", "16",
                                  "--header-timeout", "5", "--body-timeout", "5")
    soak = Soak(base)
    soak.headers = {"X-API-Key": args.key}
    pid = api_pid(proc, args.ray) if proc is not None else None
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            for _ in range(3):  # warm up: the first jobs load lazily-built pieces
                http.post("/generate", json=CHEAP, headers=soak.headers, timeout=120)
        time.sleep(2)
        before = snapshot(pid, out) if pid else {}
        CHEAP["num_inference_steps"] = args.steps
        mix = JOBS_MIX if args.mix == "jobs" else MIX
        kinds = random.choices(list(mix), weights=list(mix.values()), k=args.requests)
        start = time.monotonic()
        clients = [httpx.Client(base_url=base, timeout=60) for _ in range(args.clients)]
        with ThreadPoolExecutor(args.clients) as pool:
            for i, kind in enumerate(kinds):
                pool.submit(soak.run, kind, clients[i % args.clients])
        for client in clients:
            client.close()
        took = time.monotonic() - start
        with httpx.Client(base_url=base, timeout=60) as http:  # let the queue drain
            deadline = time.monotonic() + 300
            while http.get("/health").json()["jobs_waiting_or_running"] and time.monotonic() < deadline:
                time.sleep(0.5)
            drained = time.monotonic() - start
            health = http.get("/health").json()
            after_job = http.post("/generate", json=CHEAP, headers=soak.headers, timeout=120).status_code
            ends, seconds = job_seconds(http, soak.headers, soak.jobs)
        time.sleep(6)  # idle connections past their deadlines; a sweep
        after = snapshot(pid, out) if pid else {}
    finally:
        if proc is not None:
            stop_server(proc)

    where = (f"`ltx2 serve --ray --replicas {args.replicas}`" if args.ray else args.url or "`ltx2 serve`")
    print(f"{where}, {args.mix} mix, {args.steps}-step jobs: {args.requests} requests from {args.clients} clients in {took:.0f} s (queue drained at "
          f"{drained:.0f} s); then /health {health['status']}, next /generate {after_job}\n")
    errors = sum(n for outcome, n in soak.outcomes.items()
                 if outcome.split(" -> ")[0] in ("submit", "generate", "poll", "events", "health")
                 and not outcome.split(" -> ")[1].startswith(("2", "4")))

    def fmt(value):
        return "-" if value is None else f"{value:.2f}"

    print("| jobs submitted (POST /jobs) | succeeded | failed | cancelled | p50 / p95 s (submit to end) "
          "| /generate 200s | p50 / p95 s | videos / min | errors (5xx, dropped) |\n"
          "|---:|---:|---:|---:|---|---:|---|---:|---:|")
    print(f"| {len(soak.jobs)} | {ends['succeeded']} | {ends['failed']} | {ends['cancelled']} | "
          f"{fmt(percentile(seconds, 0.5))} / {fmt(percentile(seconds, 0.95))} | {len(soak.generate_seconds)} | "
          f"{fmt(percentile(soak.generate_seconds, 0.5))} / {fmt(percentile(soak.generate_seconds, 0.95))} | "
          f"{(ends['succeeded'] + len(soak.generate_seconds)) * 60 / drained:.0f} | {errors} |\n")
    if before:
        print("| figure | before | after |\n|---|---:|---:|")
        for name in before:
            print(f"| {name} | {before[name]} | {after[name]} |")
    print("\n| request -> answer | count |\n|---|---:|")
    for outcome, count in sorted(soak.outcomes.items()):
        print(f"| {outcome} | {count} |")
    print(f"\n{cpu_model()}, {os.cpu_count()} cores, no GPU; tiny preset; jobs submitted: {len(soak.jobs)}")
    print(json.dumps({"before": before, "after": after}), file=sys.stderr)


if __name__ == "__main__":
    main()
