"""A crash and a restart on the same output directory: what the job records promise.

A real server process is killed with SIGKILL (no shutdown code runs) while one job is running and
one is queued; a new process on the same --output-dir must report the running one failed with the
code "interrupted" and a reason, run the queued one, and still serve a video finished before the crash.
"""

from __future__ import annotations

import signal
import subprocess
import time

import httpx
from servers import start_server

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "seed": 1}
# About 6 s on a 2-core CPU box with the tiny preset: long enough to be caught running.
SLOW = {"prompt": "a slow boat", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 100,
        "seed": 2}
TERMINAL = ("succeeded", "failed", "cancelled")


def wait_for(http: httpx.Client, job_id: str, done, seconds: float) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        view = http.get(f"/jobs/{job_id}").json()
        if done(view) or time.monotonic() > deadline:
            return view
        time.sleep(0.05)


def is_mp4(data: bytes) -> bool:
    return b"ftyp" in data[:12]


def test_sigkill_mid_job_then_restart_on_the_same_output_dir(tmp_path):
    output_dir, log_path = tmp_path / "out", tmp_path / "server.log"
    first, base = start_server(output_dir, log_path)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            # A job that finishes before the crash.
            finished_id = http.post("/jobs", json=CHEAP).json()["id"]
            view = wait_for(http, finished_id, lambda v: v["status"] in TERMINAL, 60)
            assert view["status"] == "succeeded", view
            before = http.get(f"/jobs/{finished_id}/video")
            assert before.status_code == 200 and is_mp4(before.content)

            # One running, one waiting behind it.
            slow = http.post("/jobs", json=SLOW)
            queued = http.post("/jobs", json=CHEAP)
            assert slow.status_code == 202 and queued.status_code == 202, (slow.text, queued.text)
            slow_id, queued_id = slow.json()["id"], queued.json()["id"]
            view = wait_for(http, slow_id, lambda v: v["status"] in TERMINAL or v["step"] >= 1, 60)
            assert view["status"] == "running" and view["step"] >= 1, (
                f"the slow job was not seen running before it ended; make SLOW slower: {view}")
            waiting = http.get(f"/jobs/{queued_id}").json()
            assert waiting["status"] == "queued" and waiting["position"] == 1, waiting
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert first.returncode == -signal.SIGKILL
    killed_at = time.time()

    second, base = start_server(output_dir, log_path)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            interrupted = http.get(f"/jobs/{slow_id}").json()
            assert interrupted["status"] == "failed", interrupted
            assert interrupted["error"]["code"] == "interrupted", interrupted
            assert len(interrupted["error"]["error"]) > 20, interrupted  # a sentence, not just a code
            assert interrupted["position"] is None and interrupted["video_available"] is False
            assert interrupted["finished"] is not None and interrupted["finished"] >= killed_at - 1
            no_video = http.get(f"/jobs/{slow_id}/video")
            assert no_video.status_code == 404 and no_video.json()["code"] == "no_video", no_video.text
            # The interrupted job is no longer cancellable: it has ended.
            assert http.delete(f"/jobs/{slow_id}").status_code == 409

            resumed = wait_for(http, queued_id, lambda v: v["status"] in TERMINAL, 60)
            assert resumed["status"] == "succeeded", resumed
            assert resumed["result"]["resolution"] == "64x64" and resumed["result"]["seed"] == 1
            video = http.get(f"/jobs/{queued_id}/video")
            assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
            assert is_mp4(video.content)

            kept = http.get(f"/jobs/{finished_id}")
            assert kept.json()["status"] == "succeeded" and kept.json()["video_available"] is True
            after = http.get(f"/jobs/{finished_id}/video")
            assert after.status_code == 200 and after.content == before.content

            metrics = http.get("/metrics").text
            assert 'ltx2_jobs_total{outcome="failed"} 1' in metrics.splitlines(), metrics
            assert http.get("/health").json()["jobs_waiting_or_running"] == 0
    finally:
        second.terminate()
        try:
            second.wait(timeout=20)
        except subprocess.TimeoutExpired:
            second.kill()
    print(f"\nrestart: killed with job {slow_id[:8]} at step {view['step']}/{view['total']}; after restart it "
          f"reads {interrupted['status']}/{interrupted['error']['code']}; the queued job {resumed['status']}; "
          "the video finished before the kill is byte-identical")
