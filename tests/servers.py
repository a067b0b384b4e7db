"""Real `python server.py` processes for tests that need uvicorn itself (signals, sockets, restarts)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(output_dir, log_path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """Start a tiny-preset server on a free loopback port; do not wait for it (see `wait_healthy`).
    `env` adds environment variables (limits, keys) to this process's own."""
    port = free_port()
    env = {**os.environ, "LTX2_DEVICE": "cpu", **(env or {})}
    with open(log_path, "a") as log:  # a file, not a pipe: a pipe nobody reads blocks the server once full
        proc = subprocess.Popen(
            [sys.executable, "server.py", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port),
             "--output-dir", str(output_dir), *args],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    return proc, f"http://127.0.0.1:{port}"


def wait_healthy(proc: subprocess.Popen, base: str, log_path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{Path(log_path).read_text()[-4000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not become healthy within {timeout:.0f} s:\n{Path(log_path).read_text()[-4000:]}")


def start_server(output_dir, log_path, *args: str, env: dict | None = None,
                 timeout: float = 120) -> tuple[subprocess.Popen, str]:
    proc, base = launch(output_dir, log_path, *args, env=env)
    wait_healthy(proc, base, log_path, timeout)
    return proc, base


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


JOB_ENDS = ("succeeded", "failed", "cancelled")


def wait_for_job(http, job_id: str, statuses=JOB_ENDS, seconds: float = 120) -> dict:
    """Poll GET /jobs/{id} (an httpx client on a real server, or a TestClient) until the job's status is
    one of `statuses`; its view then. Past `seconds` it is a test failure that shows the last view."""
    deadline = time.monotonic() + seconds
    while True:
        view = http.get(f"/jobs/{job_id}").json()
        if view["status"] in statuses:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} never reached {statuses} in {seconds:g} s: {view}")
        time.sleep(0.05)
