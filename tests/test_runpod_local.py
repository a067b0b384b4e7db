"""RunPod's job protocol locally: `python handler.py --rp_serve_api` (the RunPod SDK's local API server)
in a real process on loopback, driven as curl would: POST /runsync, and POST /run then POST /status/{id}."""

import base64
import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from servers import ROOT, free_port, stop_server

from ltx2.media.encode import probe_mp4

CHEAP = {"prompt": "a red ball bouncing, a thud", "width": 64, "height": 64, "num_frames": 9, "seed": 7,
         "num_inference_steps": 2}


@pytest.fixture(scope="module")
def runpod_api(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("runpod") / "worker.log"
    port = free_port()
    env = {**os.environ, "LTX2_MODEL": "tiny", "LTX2_DEVICE": "cpu"}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "handler.py", "--rp_serve_api", "--rp_api_host", "127.0.0.1",
             "--rp_api_port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, log_path.read_text()[-4000:]
        assert time.monotonic() < deadline, log_path.read_text()[-4000:]
        try:
            if httpx.get(f"{base}/openapi.json", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    yield base
    stop_server(proc)


def mp4_of(output: dict) -> bytes:
    assert output["video"].startswith("data:video/mp4;base64,")
    return base64.b64decode(output["video"].split(",", 1)[1])


def test_runsync_returns_the_generate_response(runpod_api):
    r = httpx.post(f"{runpod_api}/runsync", json={"input": CHEAP}, timeout=120)
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "COMPLETED", body
    output = body["output"]
    assert output["resolution"] == "64x64" and output["num_frames"] == 9 and output["seed"] == 7
    info = probe_mp4(mp4_of(output))
    assert info["video"]["frames"] == 9 and info["audio"]["channels"] == 2


def test_run_then_status(runpod_api):
    r = httpx.post(f"{runpod_api}/run", json={"input": {**CHEAP, "include_audio": False}}, timeout=30)
    assert r.status_code == 200
    queued = r.json()
    assert queued["status"] == "IN_PROGRESS" and queued["id"]
    # The local server runs a /run job when its status is asked for, and answers with the result.
    status = httpx.post(f"{runpod_api}/status/{queued['id']}", timeout=120).json()
    assert status["status"] == "COMPLETED", status
    assert status["output"]["has_audio"] is False
    assert probe_mp4(mp4_of(status["output"]))["audio"] is None


def test_bad_input_fails_the_job_with_the_servers_message(runpod_api):
    body = httpx.post(f"{runpod_api}/runsync", json={"input": {**CHEAP, "num_frames": 50}}, timeout=30).json()
    assert body["status"] == "FAILED"
    error = json.loads(body["error"])  # the SDK carries a structured error as JSON text
    assert error["error"] == "num_frames must be of the form 8k+1 (e.g. 49 or 57), got 50"
    assert error["field"] == "num_frames" and error["code"] == "invalid_request"
