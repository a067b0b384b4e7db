"""The job API: async jobs with progress and events, cancellation, the bounded queue, faults."""

from __future__ import annotations

import json
import os
import socket
import time

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from servers import wait_for_job as wait_for

from ltx2.serving.app import create_app
from ltx2.settings import Settings

CHEAP = {"prompt": "a boat on a lake", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "seed": 1}
SLOW = {"prompt": "a boat on a lake", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 100,
        "seed": 2}


def test_async_job_runs_and_serves_its_video(make_client):
    client = make_client()
    response = client.post("/jobs", json=CHEAP)
    assert response.status_code == 202
    job = response.json()
    assert job["status"] in ("queued", "running") and response.headers["location"].endswith(f"/jobs/{job['id']}")
    view = wait_for(client, job["id"], ("succeeded",))
    # Two-stage (the tiny preset's default): 2 steps, then stage 2's 3.
    assert view["position"] is None and view["step"] == view["total"] == 2 + 3 and view["error"] is None
    assert set(view["timings"]) >= {"encode_prompt", "stage1_denoise", "upsample", "stage2_denoise", "decode_video",
                                    "mux"}
    result = view["result"]
    assert result["video"].endswith(f"/jobs/{job['id']}/video.mp4") and result["num_frames"] == 9
    video = client.get(f"/jobs/{job['id']}/video")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    # The same job can be asked for as a data URI, and /generate can answer with a URL.
    sync = client.post("/generate", json={**CHEAP, "response_format": "url"}).json()
    assert sync["video"].startswith("http") and client.get(sync["video"]).content[4:8] == b"ftyp"


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_events_stream_progress_then_the_result(make_client):
    client = make_client()
    job = client.post("/jobs", json={**CHEAP, "num_inference_steps": 4}).json()
    events = []
    with client.stream("GET", f"/jobs/{job['id']}/events") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "result" and set(kinds[:-1]) <= {"progress"}
    steps = [data["step"] for _, data in events]
    assert steps == sorted(steps) and events[-1][1]["status"] == "succeeded"
    assert events[-1][1]["result"]["video"].endswith("/video.mp4")


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_cancel_a_queued_job_and_a_running_one(make_client):
    client = make_client()
    running = client.post("/jobs", json=SLOW).json()
    queued = client.post("/jobs", json=CHEAP).json()
    view = wait_for(client, running["id"], ("running",))
    assert client.get(f"/jobs/{queued['id']}").json()["position"] == 1
    gone = client.delete(f"/jobs/{queued['id']}")
    assert gone.status_code == 200 and gone.json()["status"] == "cancelled"
    while client.get(f"/jobs/{running['id']}").json()["step"] < 1:
        time.sleep(0.02)
    stopped = client.delete(f"/jobs/{running['id']}").json()
    assert stopped["status"] == "cancelled" and stopped["step"] < 100
    assert client.delete(f"/jobs/{running['id']}").status_code == 409
    assert client.get(f"/jobs/{running['id']}/video").status_code == 404
    # The worker is free again.
    assert client.post("/generate", json=CHEAP).status_code == 200
    assert view["position"] == 0


def test_a_full_queue_is_a_429_with_retry_after(make_client):
    client = make_client(queue_size=1)
    first = client.post("/jobs", json=SLOW).json()
    wait_for(client, first["id"], ("running",))
    second = client.post("/jobs", json=CHEAP)
    assert second.status_code == 202
    third = client.post("/jobs", json=CHEAP)
    assert third.status_code == 429
    assert int(third.headers["retry-after"]) >= 1 and third.json()["code"] == "queue_full"
    assert client.post("/generate", json=CHEAP).status_code == 429
    client.delete(f"/jobs/{first['id']}")
    wait_for(client, second.json()["id"], ("succeeded",))
    metrics = client.get("/metrics").text
    assert 'ltx2_jobs_rejected_total{reason="queue_full"} 2' in metrics


def test_out_of_memory_fails_the_job_clearly_and_the_next_succeeds(make_client, model, monkeypatch):
    client = make_client()

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(model.pipe.transformer, "forward", out_of_memory)
        response = client.post("/generate", json=CHEAP)
    assert response.status_code == 507
    body = response.json()
    assert body["code"] == "out_of_memory"
    assert "out of GPU memory generating 9 frames at 64x64: lower num_frames" in body["error"]
    assert client.post("/generate", json=CHEAP).status_code == 200


def test_nan_output_is_a_failure_not_a_video(make_client, model, monkeypatch):
    client = make_client()

    def nan(hidden_states, audio_hidden_states, *args, **kwargs):
        return hidden_states * float("nan"), audio_hidden_states * float("nan")

    with monkeypatch.context() as patch:
        patch.setattr(model.pipe.transformer, "forward", nan)
        response = client.post("/generate", json=CHEAP)
        job = client.post("/jobs", json=CHEAP).json()
        view = wait_for(client, job["id"], ("failed",))
    assert response.status_code == 500 and response.json()["code"] == "invalid_output"
    assert "NaN" in response.json()["error"]
    assert view["error"]["code"] == "invalid_output" and client.get(f"/jobs/{job['id']}/video").status_code == 404
    assert client.post("/generate", json=CHEAP).status_code == 200


def test_a_model_that_fails_to_load_leaves_the_server_up_saying_why(tmp_path):
    settings = Settings(model=str(tmp_path / "missing.safetensors"), output_dir=str(tmp_path / "out"), device="cpu")
    with TestClient(create_app(settings)) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and "missing.safetensors" in health.json()["error"]
        response = client.post("/generate", json=CHEAP)
        assert response.status_code == 503 and response.json()["code"] == "model_load_failed"
        assert client.get("/").status_code == 200  # still serving


def test_a_generate_client_that_disconnects_frees_the_worker(live_server):
    host, port = live_server.removeprefix("http://").split(":")
    before = httpx.get(f"{live_server}/metrics").text
    body = json.dumps(SLOW).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 60
        while httpx.get(f"{live_server}/health").json()["progress"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # The client is gone: its job is cancelled at the next step and the worker is free.
    deadline = time.monotonic() + 30
    while httpx.get(f"{live_server}/health").json()["jobs_waiting_or_running"]:
        assert time.monotonic() < deadline, "the job kept running after its client left"
        time.sleep(0.05)
    after = httpx.get(f"{live_server}/metrics").text

    def cancelled(text):
        line = next((l for l in text.splitlines() if l.startswith('ltx2_jobs_total{outcome="cancelled"}')), None)
        return float(line.split()[-1]) if line else 0.0

    assert cancelled(after) == cancelled(before) + 1
    assert httpx.post(f"{live_server}/generate", json=CHEAP, timeout=120).status_code == 200


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_unknown_job_is_404(make_client):
    client = make_client()
    for method, path in (("GET", "/jobs/nope"), ("DELETE", "/jobs/nope"), ("GET", "/jobs/nope/video")):
        response = client.request(method, path)
        assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_job_past_its_timeout_is_stopped_and_failed(make_client):
    # SLOW runs for minutes; 1.5 s also leaves the cheap job room on a loaded machine (0.12 s alone).
    client = make_client(job_timeout=1.5)
    response = client.post("/generate", json=SLOW)
    assert response.status_code == 504
    assert response.json()["code"] == "timeout" and "LTX2_JOB_TIMEOUT" in response.json()["error"]
    assert client.post("/generate", json={**CHEAP, "num_inference_steps": 1}).status_code == 200


def test_an_all_black_video_is_a_failure(make_client, model, monkeypatch):
    client = make_client()
    decode = model.pipe.vae.decode

    def black(latents, *args, **kwargs):
        video = decode(latents, *args, **kwargs)[0]
        return (torch.full_like(video, -1.0),)

    with monkeypatch.context() as patch:
        patch.setattr(model.pipe.vae, "decode", black)
        response = client.post("/generate", json=CHEAP)
    assert response.status_code == 500 and response.json()["code"] == "invalid_output"
    assert "all-black" in response.json()["error"]


def test_videos_expire_after_their_ttl_and_under_the_size_cap(make_client):
    client = make_client()
    manager = client.app.state.ltx2.manager
    first = client.post("/jobs", json=CHEAP).json()["id"]
    wait_for(client, first, ("succeeded",))
    second = client.post("/jobs", json={**CHEAP, "seed": 2}).json()["id"]
    wait_for(client, second, ("succeeded",))
    size = os.path.getsize(manager.get(second).video_path)
    manager.output_max_bytes = size + 1  # room for one video: the older one goes
    manager.cleanup()
    assert client.get(f"/jobs/{first}/video").status_code == 410
    assert client.get(f"/jobs/{second}/video").status_code == 200
    assert client.get(f"/jobs/{first}").json()["video_available"] is False
    manager.cleanup(now=time.time() + manager.result_ttl + 1)  # a day later
    assert client.get(f"/jobs/{second}/video").status_code == 410
    assert not os.path.exists(manager.get(second).video_path)


def test_every_job_event_is_one_json_log_line_with_the_job_id(make_client, caplog):
    client = make_client()
    with caplog.at_level("INFO", logger="ltx2.jobs"):
        job = client.post("/jobs", json=CHEAP).json()["id"]
        wait_for(client, job, ("succeeded",))
    events = [json.loads(r.getMessage()) for r in caplog.records if r.name == "ltx2.jobs"]
    mine = [e["event"] for e in events if e.get("job") == job]
    assert mine[:2] == ["job_queued", "job_started"] and "job_succeeded" in mine
