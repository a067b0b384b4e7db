"""/trainings on a real server process: upload, progress events, the LoRA used by the next job with nothing
restarted, a generation job waiting its turn behind a training, cancel, ownership, refusals in the native shape."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from servers import start_server, stop_server
from test_training_clips import HOSTILE, dataset_zip

JOB_TIMEOUT = 20
TINY = {"resolution": "64x64", "num_frames": "9", "rank": "4", "learning_rate": "0.01"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("training-server")
    (root / "models" / "datasets").mkdir(parents=True)
    zip_path = dataset_zip(root / "clips.zip")
    dataset_zip(root / "models" / "datasets" / "named.zip")
    # A 20 s job time limit: a video that waits longer than that behind a training must still run (its limit
    # counts from when it gets the device).
    proc, base = start_server(root / "out", root / "server.log", "--models-dir", str(root / "models"),
                              "--job-timeout", str(JOB_TIMEOUT),
                              env={"LTX2_API_KEYS": "alice:key-a,bob:key-b"})
    yield base, zip_path, root
    stop_server(proc)


def _auth(key="key-a"):
    return {"Authorization": f"Bearer {key}"}


def _upload(base, zip_path, key="key-a", **fields):
    with open(zip_path, "rb") as fh:
        return httpx.post(f"{base}/trainings", data={**TINY, **fields}, files={"dataset": ("clips.zip", fh, "application/zip")},
                          headers=_auth(key), timeout=60)


def _wait(base, training_id, key="key-a", timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/trainings/{training_id}", headers=_auth(key), timeout=10).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"training {training_id} did not end: {body}")


def test_train_then_generate_with_the_lora(server):
    base, zip_path, _ = server
    created = _upload(base, zip_path, name="my-style", steps="12", checkpoint_every="4", trigger="mgnt")
    assert created.status_code == 202, created.text
    training = created.json()
    # A video submitted now waits for the device behind the training, then runs.
    job = httpx.post(f"{base}/jobs", json={"prompt": "a cat", "width": 64, "height": 64, "num_frames": 9,
                                           "num_inference_steps": 1}, headers=_auth(), timeout=30).json()
    events = []
    with httpx.stream("GET", f"{base}/trainings/{training['id']}/events", headers=_auth(), timeout=300) as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
                if kind == "result":
                    break
    done = events[-1][1]
    assert done["status"] == "succeeded", done
    steps = [e["step"] for k, e in events if k == "progress" and e["stage"] == "training"]
    assert steps and steps[-1] <= 12 and all(e["loss"] is not None for k, e in events if e["step"])
    assert done["step"] == 12 and len(done["losses"]) == 12 and done["lora"]["name"] == "my-style"
    assert done["memory"]["mode"] == "full"
    # The video queued behind it ran after it (its turn came when the training released the device).
    job_done = _wait_job(base, job["id"])
    assert job_done["status"] == "succeeded" and job_done["started"] >= done["started"]
    # The LoRA is used by the next request at once, by name.
    used = httpx.post(f"{base}/generate", json={"prompt": "mgnt a magenta wall", "width": 64, "height": 64,
                                                "num_frames": 9, "num_inference_steps": 1,
                                                "loras": [{"path": "my-style"}]}, headers=_auth(), timeout=120)
    assert used.status_code == 200, used.text
    # Ownership: bob sees no such training.
    assert httpx.get(f"{base}/trainings/{training['id']}", headers=_auth("key-b")).status_code == 404


def _wait_job(base, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = httpx.get(f"{base}/jobs/{job_id}", headers=_auth(), timeout=10).json()
        if body["status"] in ("succeeded", "failed", "cancelled"):
            return body
        time.sleep(0.3)
    raise AssertionError(body)


def test_cancel_keeps_the_last_checkpoint(server):
    base, _, root = server
    created = httpx.post(f"{base}/trainings", json={"dataset": "named.zip", "name": "stopped", "steps": 5000,
                                                    "checkpoint_every": 3, "resolution": "64x64", "num_frames": 9,
                                                    "rank": 4}, headers=_auth(), timeout=30)
    assert created.status_code == 202, created.text
    training_id = created.json()["id"]
    deadline = time.monotonic() + 120
    while httpx.get(f"{base}/trainings/{training_id}", headers=_auth()).json()["checkpoint_step"] is None:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    # A video queued behind the training waits past its own time limit without failing.
    job = httpx.post(f"{base}/jobs", json={"prompt": "a cat", "width": 64, "height": 64, "num_frames": 9,
                                           "num_inference_steps": 1}, headers=_auth(), timeout=30).json()
    time.sleep(JOB_TIMEOUT + 3)
    waiting = httpx.get(f"{base}/jobs/{job['id']}", headers=_auth(), timeout=10).json()
    assert waiting["status"] in ("queued", "running"), waiting
    cancelled = httpx.delete(f"{base}/trainings/{training_id}", headers=_auth(), timeout=90).json()
    assert cancelled["status"] == "cancelled" and cancelled["lora"]["steps"] >= 3
    assert _wait_job(base, job["id"])["status"] == "succeeded"
    used = httpx.post(f"{base}/generate", json={"prompt": "x", "width": 64, "height": 64, "num_frames": 9,
                                                "num_inference_steps": 1, "loras": [{"path": "stopped"}]},
                      headers=_auth(), timeout=120)
    assert used.status_code == 200, used.text


@pytest.mark.parametrize("fields, field", [
    ({"rank": "0"}, "rank"), ({"resolution": "100x64"}, "resolution"), ({"num_frames": "10"}, "num_frames"),
    ({"name": "../evil"}, "name"), ({"mode": "v2v"}, "mode"), ({"steps": "-1"}, "steps"),
])
def test_bad_fields_are_422_naming_the_field(server, fields, field):
    base, zip_path, _ = server
    response = _upload(base, zip_path, **{"name": "x", **fields})
    assert response.status_code == 422 and response.json()["field"] == field, response.text


def test_a_dataset_name_outside_the_folder_is_refused(server):
    base, *_ = server
    response = httpx.post(f"{base}/trainings", json={"dataset": "../../etc", "name": "x"}, headers=_auth())
    assert response.status_code == 422 and response.json()["field"] == "dataset", response.text


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_hostile_zips_are_refused_at_submission(server, tmp_path, kind):
    base, *_ = server
    build, named, status = HOSTILE[kind]
    path = tmp_path / "bad.zip"
    path.write_bytes(build())
    response = _upload(base, path, name="x")
    assert response.status_code == status and named in response.json()["error"], response.text
    assert response.json()["field"] == "dataset"
