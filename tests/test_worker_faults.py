"""The GPU worker never dies silently: a full disk, an unwritable output folder or a broken database
fails only the job it hits (a JSON `storage_error`), /health says so with a 503, and once the fault
is gone the next job succeeds. A worker that dies anyway is restarted, and one stuck past its job's
deadline is replaced, by the supervisor."""

from __future__ import annotations

import os
import resource
import sqlite3
import threading
import time

import hostile
import httpx
import pytest
from servers import start_server, stop_server
from servers import wait_for_job as wait_for

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}
BIG = {"prompt": "a boat", "num_frames": 49, "num_inference_steps": 1, "seed": 3}  # 288x512: a ~3 MB MP4
TERMINAL = ("succeeded", "failed", "cancelled")


def wait_health(http, status: int, seconds: float = 10) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        r = http.get("/health")
        if r.status_code == status or time.monotonic() > deadline:
            return {"code": r.status_code, **r.json()}
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("worker-faults")
    proc, base = start_server(out / "output", out / "server.log")
    with httpx.Client(base_url=base, timeout=60) as http:
        yield proc, http, out / "output"
    stop_server(proc)


def storage_fault_then_repair(server, break_it, repair_it) -> tuple[dict, dict, dict]:
    proc, http, out = server
    break_it(proc, out)
    job = http.post("/jobs", json=BIG).json()["id"]
    failed = wait_for(http, job)
    health = wait_health(http, 503)
    refused = http.post("/generate", json=CHEAP)  # answers at once, no hang
    repair_it(proc, out)
    healthy = wait_health(http, 200)
    next_job = http.post("/generate", json=CHEAP)
    assert next_job.status_code == 200, next_job.text
    return failed, health, {"refused": refused, "healthy": healthy}


def test_a_full_disk_fails_the_job_with_storage_error_and_the_next_job_succeeds(server):
    # RLIMIT_FSIZE makes every write past 1 MB fail with EFBIG, as a full disk fails it with ENOSPC.
    def fill(proc, out):
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))

    def free(proc, out):
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    failed, health, after = storage_fault_then_repair(server, fill, free)
    assert failed["status"] == "failed" and failed["error"]["code"] == "storage_error", failed
    # The limit first hits the encoder's file (MP4s are written to a file for the faststart index), or the
    # store: either way the reason is named and no path is shown.
    reason = failed["error"]["error"].split("(")[1]
    assert reason.startswith("File too large)") and "/" not in reason, failed
    assert health["status"] == "unavailable" and health["storage"]["ok"] is False, health
    assert health["worker"]["alive"] is True  # the worker survived: only storage is at fault
    refused = after["refused"]
    assert refused.status_code == 507 and refused.json()["code"] == "storage_error", refused.text
    assert after["healthy"]["status"] == "healthy"
    # Nothing half-written is left under the served names.
    assert not [p for p in (server[2] / "videos").iterdir() if p.name.endswith(".part")]


def test_an_unwritable_output_folder_fails_the_job_and_recovers(server):
    def spoil(proc, out):  # a plain file where the folder was: refused even to root
        os.rename(out / "videos", out / "videos.saved")
        (out / "videos").write_text("not a folder")

    def mend(proc, out):
        (out / "videos").unlink()
        os.rename(out / "videos.saved", out / "videos")

    failed, health, after = storage_fault_then_repair(server, spoil, mend)
    assert failed["error"]["code"] == "storage_error" and "Not a directory" in failed["error"]["error"]
    assert health["code"] == 503 and "storage is failing" in health["problems"][0]
    assert after["refused"].status_code == 507


def test_idle_connections_cannot_take_the_descriptors_a_job_needs(server):
    """No key needed: idle connections try to take every descriptor while a job runs (the limit is
    lowered to 200 above what the server holds). The connection cap stays below the limit, so the job
    still stores its video, and the server keeps serving."""
    proc, http, out = server
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (len(os.listdir(f"/proc/{proc.pid}/fd")) + 200, hard))
    socks = []
    try:
        job = http.post("/jobs", json={**BIG, "num_inference_steps": 20}).json()["id"]
        wait_for(http, job, statuses=("running",))
        socks = hostile.open_idle(str(http.base_url), 400)
        time.sleep(0.5)
        held = sum(1 for sock in socks if hostile.closed_within(sock, 0.01) is None)
        view = wait_for(http, job)  # over the connection already open
        assert view["status"] == "succeeded", view
        assert held < 200, held  # the rest were answered 503 and closed at once
        for sock in socks:
            sock.close()
        socks = []
        assert wait_health(http, 200)["status"] == "healthy"
        assert http.post("/generate", json=CHEAP).status_code == 200
    finally:
        for sock in socks:
            sock.close()
        resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (soft, hard))


# ---------------------------------------------------------------------------------------------
# The supervisor, in process


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's death is the point
@pytest.mark.slow
def test_a_worker_that_dies_is_restarted_and_its_job_fails_clearly(make_client, monkeypatch):
    client = make_client()
    manager = client.app.state.ltx2.manager
    manager.supervise_every = 0.05
    real = manager.run_job
    deaths = []

    def die_once(job, on_step):
        if not deaths:
            deaths.append(job.id)
            raise SystemExit("a BaseException no job handler catches")
        return real(job, on_step)

    monkeypatch.setattr(manager, "run_job", die_once)
    response = client.post("/generate", json=CHEAP)
    assert response.status_code == 500 and response.json()["code"] == "worker_crashed", response.text
    health = client.get("/health").json()
    assert health["worker"]["alive"] is True and health["worker"]["restarts"] == 1
    assert client.post("/generate", json=CHEAP).status_code == 200


@pytest.mark.slow
def test_a_worker_stuck_past_the_deadline_is_replaced_and_health_says_so(make_client, monkeypatch):
    client = make_client(job_timeout=0.3)
    manager = client.app.state.ltx2.manager
    manager.supervise_every, manager.stuck_grace = 0.05, 0.3
    real = manager.run_job
    release = threading.Event()

    def hang_once(job, on_step):
        if not release.is_set():
            release.wait(30)  # a stage with no steps that never returns (a hung driver call)
        return real(job, on_step)

    monkeypatch.setattr(manager, "run_job", hang_once)
    stuck = client.post("/jobs", json=CHEAP).json()["id"]
    queued = client.post("/jobs", json=CHEAP).json()["id"]
    view = wait_for(client, stuck, seconds=10)
    assert view["status"] == "failed" and view["error"]["code"] == "timeout", view
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["worker"]["stuck_threads"] == 1
    assert client.get(f"/jobs/{queued}").json()["status"] == "queued"  # it waits: the GPU may still be held
    manager.job_timeout = 120  # the next job may take its time (a loaded machine is slow)
    release.set()
    assert wait_for(client, queued)["status"] == "succeeded"
    assert client.get("/health").status_code == 200


@pytest.mark.slow
def test_a_database_that_refuses_writes(make_client, monkeypatch):
    client = make_client()
    manager = client.app.state.ltx2.manager
    store = manager.store
    real_save = store.save
    broken = {"on": True}

    def save(job):
        if broken["on"]:
            raise sqlite3.OperationalError("database or disk is full")
        return real_save(job)

    monkeypatch.setattr(store, "save", save)
    refused = client.post("/jobs", json=CHEAP)
    assert refused.status_code == 507 and refused.json()["code"] == "storage_error"
    assert "record the job" in refused.json()["error"] and "database or disk is full" in refused.json()["error"]
    assert client.get("/health").status_code == 503

    broken["on"] = False
    accepted = client.post("/jobs", json=CHEAP)  # the submission re-checks storage: no wait for the supervisor
    assert accepted.status_code == 202
    job = accepted.json()["id"]
    broken["on"] = True  # fails again while the job runs: the job still ends, in memory
    view = wait_for(client, job)
    assert view["status"] == "succeeded" and job in manager._unsaved
    broken["on"] = False
    deadline = time.monotonic() + 10
    while job in manager._unsaved and time.monotonic() < deadline:
        time.sleep(0.05)  # the supervisor writes it once the database takes writes
    row = sqlite3.connect(os.path.join(manager.videos, "..", "jobs.sqlite3")).execute(
        "SELECT status FROM jobs WHERE id = ?", (job,)).fetchone()
    assert row == ("succeeded",)


def test_a_video_that_expires_before_generate_answers_is_a_json_410(make_client, monkeypatch):
    client = make_client()
    manager = client.app.state.ltx2.manager
    store = manager._store_video

    def stored_then_swept(job, data):
        path = store(job, data)
        os.remove(path)  # the size cap or time-to-live took it before the answer could be sent
        return path

    monkeypatch.setattr(manager, "_store_video", stored_then_swept)
    response = client.post("/generate", json=CHEAP)
    assert response.status_code == 410 and response.json()["code"] == "expired", response.text
    monkeypatch.undo()
    assert client.post("/generate", json=CHEAP).status_code == 200  # still serving


def test_a_successful_job_costs_no_full_garbage_collection(make_client, model, monkeypatch):
    """A full collection holds the interpreter lock for about half a second with the model loaded, which
    stalls the event loop: it runs only after a failed job, whose traceback may hold tensors in cycles,
    and the model's own objects are frozen out of collections at start-up."""
    import gc

    import torch

    from ltx2.serving import jobs

    client = make_client()
    assert gc.get_freeze_count() > 100_000  # the model's objects, set aside for good
    calls = []
    monkeypatch.setattr(jobs, "free_gpu_memory", lambda: calls.append(1))
    assert client.post("/generate", json=CHEAP).status_code == 200
    assert calls == []

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 12.00 GiB")

    with monkeypatch.context() as patch:
        patch.setattr(model.pipe.transformer, "forward", out_of_memory)
        oom = client.post("/generate", json=CHEAP)
        assert oom.status_code == 507, oom.text
    deadline = time.monotonic() + 10  # the worker collects after it has answered: wait for it
    while not calls and time.monotonic() < deadline:
        time.sleep(0.02)
    assert calls == [1]
