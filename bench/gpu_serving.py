"""bench/gpu.py's serving sections: real `server.py` processes on several GPUs (README "Several GPUs").

- devices: videos per hour of one queue served by one worker per GPU (`--devices cuda:0,...,cuda:N-1`)
  against one worker (`--devices cuda:0`): 2 jobs per worker, timed from the first submit to the last
  video, after each worker ran one job (its warm-up).
- parallel latency: one video's seconds, submit to done, on one GPU against a rank group over two
  (`--devices cuda:0,cuda:1 --parallel ulysses=2`, then `cfg=2`), a guided request (two passes a step,
  which cfg=2 splits) after one warm-up job.

With fewer than 2 GPUs visible each says "skipped: N GPU(s) visible, needs 2" and starts nothing. With
`--smoke` they run the same plumbing on the CPU (cpu,cpu; the tiny preset), but only when `--only` names
them: they start servers, so the whole smoke run leaves them to their own test (tests/test_bench_gpu.py).
"""

from __future__ import annotations

import gc
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Self

import httpx
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("devices", "parallel latency")


def _gpus() -> int:
    return torch.cuda.device_count()


def skipped(b, section: str) -> bool:
    """True (and a row saying why) when this box cannot run `section`."""
    if b.args.smoke:
        return False
    if _gpus() < 2:
        b.row(section, "skipped", f"{_gpus()} GPU(s) visible, needs 2")
        return True
    return False


def _free_model(b) -> None:
    """The servers load their own copies: the bench's model would crowd cuda:0."""
    b.model = None
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Server:
    """One `server.py` on a free loopback port with the bench's model; stopped on exit."""

    def __init__(self, b, *flags: str):
        self.b, self.flags = b, flags

    def __enter__(self) -> Self:
        from gpu import MODELS  # the bench's own module (bench/ is on sys.path)

        b = self.b
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.dir = tempfile.TemporaryDirectory()
        model = MODELS[b.args.model] if b.args.smoke else b.args.model
        argv = [sys.executable, "server.py", "--model", model, "--host", "127.0.0.1", "--port", str(port),
                "--output-dir", os.path.join(self.dir.name, "out"), *self.flags]
        argv += [] if b.args.smoke else ["--memory-policy", b.args.memory_policy]
        argv += ["--layers", str(b.args.layers)] if b.args.layers and not b.args.smoke else []
        self.log = open(os.path.join(self.dir.name, "server.log"), "w+")
        env = {**os.environ, **({"LTX2_DEVICE": "cpu"} if b.args.smoke else {})}
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        t = time.perf_counter()
        deadline = time.monotonic() + max(60.0, b.left())
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                tail = self.log.read()[-1500:]
                self.__exit__(None, None, None)
                raise RuntimeError(f"server {' '.join(self.flags)} did not come up: {tail}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.load_s = time.perf_counter() - t
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.log.close()
        self.dir.cleanup()

    def run(self, bodies: list[dict]) -> float:
        """Submit every body at once; seconds until the last one's video is done."""
        with httpx.Client(base_url=self.base, timeout=30) as http:
            t = time.perf_counter()
            ids = []
            for body in bodies:
                response = http.post("/jobs", json=body)
                if response.status_code not in (200, 201, 202):
                    raise RuntimeError(f"POST /jobs answered {response.status_code}: {response.text[:300]}")
                ids.append(response.json()["id"])
            pending = set(ids)
            deadline = time.monotonic() + max(60.0, self.b.left())
            while pending:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(pending)} jobs not done within the time budget")
                for job_id in list(pending):
                    view = http.get(f"/jobs/{job_id}").json()
                    if view["status"] in ("failed", "cancelled"):
                        raise RuntimeError(f"job {view['status']}: {view.get('error')}")
                    if view["status"] == "succeeded":
                        pending.discard(job_id)
                time.sleep(0.05)
            return time.perf_counter() - t


def _body(b, seed: int, guided: bool = False) -> dict:
    from gpu import sizes

    width, height, frames = sizes(b.args.smoke)["headline"]
    body = {"prompt": f"A red fox trotting through fresh snow at dawn ({seed})", "width": width, "height": height,
            "num_frames": frames, "num_inference_steps": 1 if b.args.smoke else 8, "seed": seed,
            "use_multiscale": False}
    return {**body, "guidance_scale": 3.0} if guided else body


def _devices(kind_count: int, smoke: bool) -> list[str]:
    return ["cpu"] * kind_count if smoke else [f"cuda:{i}" for i in range(kind_count)]


def devices_section(b) -> None:
    """Videos per hour: one worker per GPU against one."""
    if skipped(b, "devices"):
        return
    _free_model(b)
    count = 2 if b.args.smoke else _gpus()
    base = None
    for n in (1, count):
        devices = ",".join(_devices(n, b.args.smoke))
        with Server(b, "--devices", devices) as server:
            server.run([_body(b, 100 + i) for i in range(n)])  # each worker's first job: its warm-up
            jobs = 2 * n
            seconds = server.run([_body(b, 200 + i) for i in range(jobs)])
        per_hour = 3600 * jobs / seconds
        base = base or per_hour
        b.row("devices", f"{n} worker{'s' if n > 1 else ''} ({devices})", f"{per_hour:.0f} videos/h",
              f"{jobs} jobs in {seconds:.1f} s; {per_hour / base:.2f}x one worker; start {server.load_s:.0f} s; "
              "each worker holds the full weights")


def parallel_latency_section(b) -> None:
    """One guided video's seconds on one GPU, then split over a rank group of two."""
    if skipped(b, "parallel latency"):
        return
    _free_model(b)
    pair = ",".join(_devices(2, b.args.smoke))
    one = ",".join(_devices(1, b.args.smoke))
    base = None
    for spec in ("", "ulysses=2", "cfg=2"):
        if b.args.smoke and spec == "cfg=2":
            continue  # the same plumbing as ulysses=2 (another spec string): one group is enough for CI
        flags = ("--devices", pair, "--parallel", spec) if spec else ("--devices", one)
        with Server(b, *flags) as server:
            server.run([_body(b, 300, guided=True)])  # warm-up
            seconds = server.run([_body(b, 301, guided=True)])
        base = base or seconds
        b.row("parallel latency", spec or f"one device ({one})", f"{seconds:.2f} s",
              f"{base / seconds:.2f}x one device; start {server.load_s:.0f} s"
              + ("; each rank holds the full weights" if spec else ""))
