"""SIGTERM: new jobs are refused, the running job finishes, queued jobs wait for the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SLOW = {"prompt": "a boat on a lake", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 60,
        "seed": 2}
CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "seed": 1}


def start(output_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "LTX2_DEVICE": "cpu"}
    proc = subprocess.Popen(
        [sys.executable, "server.py", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port),
         "--output-dir", str(output_dir), "--shutdown-grace", "60"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("server did not start")


def test_sigterm_finishes_the_running_job_and_keeps_the_queued_one(tmp_path):
    proc, base = start(tmp_path)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            running = client.post("/jobs", json=SLOW).json()["id"]
            queued = client.post("/jobs", json=CHEAP).json()["id"]
            while client.get(f"/jobs/{running}").json()["status"] != "running":
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.3)
            try:  # the open connection may still be used: the server says it is shutting down
                refused = client.post("/jobs", json=CHEAP).status_code
            except httpx.HTTPError:
                refused = None  # or it no longer takes connections
            assert refused in (None, 503)
        # uvicorn re-raises SIGTERM once its graceful shutdown is done, so -15 is a clean exit too.
        assert proc.wait(timeout=90) in (0, -signal.SIGTERM)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, base = start(tmp_path)
    try:
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get(f"/jobs/{running}").json()["status"] == "succeeded"  # finished within the grace
            deadline = time.monotonic() + 60
            while (status := client.get(f"/jobs/{queued}").json()["status"]) != "succeeded":
                assert time.monotonic() < deadline and status in ("queued", "running"), status
                time.sleep(0.1)
            assert client.get(f"/jobs/{running}/video").content[4:8] == b"ftyp"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
