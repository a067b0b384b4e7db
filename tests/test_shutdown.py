"""SIGTERM: new jobs are refused, the running job finishes, queued jobs wait for the next start."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
from servers import start_server

SLOW = {"prompt": "a boat on a lake", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 60,
        "seed": 2}
CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "seed": 1}


def start(output_dir: Path) -> tuple[subprocess.Popen, str]:
    return start_server(output_dir, output_dir / "server.log", "--shutdown-grace", "60")

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
