"""One worker per device, one queue (issue 24 item 1): the job manager's lanes, and `--devices cpu,cpu`
served by two real worker processes behind one real server."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
from servers import start_server, stop_server, wait_for_job

from ltx2.schema import GenerateRequest
from ltx2.serving.jobs import FAILED, RUNNING, SUCCEEDED, JobManager
from ltx2.serving.lanes import Lane, WorkerLost
from ltx2.serving.store import open_store

# Long enough (tens of tiny steps) that two jobs overlap on two single-thread workers, short enough to keep
# the file well under a minute.
LONG = {"prompt": "a boat on a lake", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 40, "seed": 1}


# -- the manager's lanes, in-process (a lane is any callable: the Ray app plugs its own in) ------------------


def _manager(tmp_path, lanes, **kw) -> JobManager:
    manager = JobManager(open_store(None, str(tmp_path)), str(tmp_path), None, lanes=lanes, supervise_every=0.05, **kw)
    manager.start()
    return manager


def _wait(predicate, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_lanes_run_jobs_side_by_side_and_a_third_waits(tmp_path):
    release = threading.Event()

    def run(job, on_step):
        on_step(1, 2)
        release.wait(10)
        return {"timings": {}}, b"\x00\x00\x00\x18ftypmp42"

    manager = _manager(tmp_path, [Lane("a", run), Lane("b", run)])
    try:
        jobs = [manager.submit(GenerateRequest(prompt=f"job {i}")) for i in range(3)]
        _wait(lambda: len(manager.running_jobs) == 2)
        assert sorted(manager.running_jobs) == ["a", "b"]
        assert [j.status for j in jobs[:2]] == [RUNNING, RUNNING] and manager.position(jobs[2].id) == 1
        # Two running, one waiting: a slot frees when the first of the two ends.
        assert manager.health()["worker"]["running"] == 2 and len(manager.health()["lanes"]) == 2
        release.set()
        for job in jobs:
            assert job.done.wait(10) and job.status == SUCCEEDED
    finally:
        release.set()
        manager.stop(1)


def test_a_lost_worker_fails_its_job_restarts_its_lane_and_repeated_faults_take_it_out(tmp_path):
    restarts, other_ran = [], threading.Event()

    def lost(job, on_step):
        raise WorkerLost("killed by SIGKILL")

    def steady(job, on_step):
        other_ran.set()
        return {"timings": {}}, b"video"

    manager = _manager(tmp_path, [Lane("bad", lost, restart=restarts.append), Lane("good", steady)],
                       fault_limit=2, fault_window=60)
    try:
        bad = manager.lanes[0]
        first = manager.submit(GenerateRequest(prompt="one"))
        _wait(lambda: first.done.is_set())
        if first.status == SUCCEEDED:  # the good lane took it: send more until the bad lane has one
            others = [manager.submit(GenerateRequest(prompt=f"more {i}")) for i in range(6)]
            _wait(lambda: all(j.done.is_set() for j in others))
            first = next(j for j in others if j.status == FAILED)
        assert first.status == FAILED and first.error_status == 503 and first.error["code"] == "worker_lost"
        assert "killed by SIGKILL" in first.error["error"] and "bad" in first.error["error"]
        assert restarts and "killed by SIGKILL" in restarts[0]
        # The second fault within the window takes the lane out of service; the other lane goes on.
        while bad.out_of_service is None:
            job = manager.submit(GenerateRequest(prompt="again"))
            _wait(lambda: job.done.is_set())
        assert "2 faults" in bad.out_of_service
        health = manager.health()
        assert health["ready"] and health["worker"]["in_service"] == 1
        assert health["out_of_service"] and health["out_of_service"][0].startswith("bad:")
        later = [manager.submit(GenerateRequest(prompt=f"after {i}")) for i in range(3)]
        _wait(lambda: all(j.done.is_set() for j in later))
        assert [j.status for j in later] == [SUCCEEDED] * 3 and other_ran.is_set()
    finally:
        manager.stop(1)


# -- two worker processes on cpu,cpu behind a real server ---------------------------------------------------


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    folder = tmp_path_factory.mktemp("workers")
    proc, base = start_server(folder / "out", folder / "server.log", "--devices", "cpu,cpu", timeout=180)
    yield base, folder / "server.log"
    workers = [d["pid"] for d in httpx.get(f"{base}/health", timeout=10).json()["devices"]]
    stop_server(proc)
    time.sleep(0.5)
    for pid in workers:  # SIGTERM's shutdown ends the workers too: none is left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def _devices(http) -> list[dict]:
    return http.get("/health").json()["devices"]


def _statuses(http, ids) -> list[dict]:
    return [http.get(f"/jobs/{i}").json() for i in ids]


def _submit(http, n: int) -> list[str]:
    return [http.post("/jobs", json={**LONG, "seed": i}).json()["id"] for i in range(n)]


def _until_two_run(http, ids, seconds: float = 60) -> list[dict]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        views = _statuses(http, ids)
        if sum(v["status"] == "running" for v in views) == 2:
            return views
        time.sleep(0.05)
    raise AssertionError(f"two jobs never ran at once: {[v['status'] for v in views]}")


@pytest.mark.slow
def test_two_replicas_run_two_jobs_at_once_and_a_third_waits(two_workers):
    base, _ = two_workers
    with httpx.Client(base_url=base, timeout=30) as http:
        devices = _devices(http)
        assert [d["name"] for d in devices] == ["cpu#0", "cpu#1"]
        assert all(d["model"] == "tiny" and d["process_alive"] and d["pid"] != os.getpid() for d in devices)
        assert devices[0]["pid"] != devices[1]["pid"] and all(d["threads"] >= 1 for d in devices)
        assert all(d["memory"]["process_rss_bytes"] > 0 for d in devices)
        ids = _submit(http, 3)
        views = _until_two_run(http, ids)
        waiting = [v for v in views if v["status"] == "queued"]
        assert len(waiting) == 1 and waiting[0]["position"] == 1
        health = http.get("/health").json()
        assert health["jobs_waiting_or_running"] == 3 and health["worker"]["running"] == 2
        assert {d["stage"] is not None for d in health["devices"]} == {True}
        metrics = http.get("/metrics").text
        assert "ltx2_job_running 2" in metrics
        assert 'ltx2_device_job_running{device="cpu#0"} 1' in metrics
        assert 'ltx2_device_in_service{device="cpu#1"} 1' in metrics
        for job_id in ids:
            view = wait_for_job(http, job_id, seconds=60)
            assert view["status"] == "succeeded", view["error"]
        assert http.get(f"/jobs/{ids[2]}/video").content[4:8] == b"ftyp"
        # A training needs a device the workers do not lend: refused, saying why.
        refused = http.post("/trainings", json={"name": "style", "dataset": "clips"})
        assert refused.status_code == 409 and refused.json()["code"] == "training_unavailable"


@pytest.mark.slow
def test_a_killed_worker_fails_its_job_restarts_and_the_other_goes_on(two_workers):
    base, log = two_workers
    with httpx.Client(base_url=base, timeout=30) as http:
        before = _devices(http)
        ids = _submit(http, 2)
        _until_two_run(http, ids)
        victim = before[0]
        os.kill(victim["pid"], signal.SIGKILL)
        views = [wait_for_job(http, job_id, seconds=60) for job_id in ids]
        failed = [v for v in views if v["status"] == "failed"]
        assert len(failed) == 1, [v["status"] for v in views]
        assert failed[0]["error"]["code"] == "worker_lost"
        assert "SIGKILL" in failed[0]["error"]["error"] and str(victim["pid"]) in failed[0]["error"]["error"]
        assert [v["status"] for v in views if v is not failed[0]] == ["succeeded"]  # the other replica's job
        deadline = time.monotonic() + 60
        while True:
            after = _devices(http)
            if after[0]["process_alive"] and after[0]["pid"] != victim["pid"] and not after[0]["restarting"]:
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.1)
        assert after[0]["restarts"] == 1 and after[0]["last_exit"] == "killed by SIGKILL" and after[0]["in_service"]
        assert after[1]["pid"] == before[1]["pid"] and after[1]["restarts"] == 0  # never stopped
        assert http.get("/health").json()["out_of_service"] == []  # one fault is not enough
        # The restarted replica serves again: two jobs run at once.
        ids = _submit(http, 2)
        _until_two_run(http, ids)
        assert all(wait_for_job(http, i, seconds=60)["status"] == "succeeded" for i in ids)
        assert 'ltx2_device_restarts_total{device="cpu#0"} 1' in http.get("/metrics").text


def test_devices_are_read_strictly():
    from types import SimpleNamespace

    from ltx2.serving.device_workers import DevicesError, lane_names, parse_devices, worker_devices

    assert parse_devices(" cpu , cpu ") == ["cpu", "cpu"] and lane_names(["cpu", "cpu"]) == ["cpu#0", "cpu#1"]
    for spec, words in (("tpu:0", "'tpu:0' is not a device"), ("meta", "only cuda:N and cpu"),
                        ("cuda:9", "CUDA devices are visible")):
        with pytest.raises(DevicesError, match=words):
            parse_devices(spec)
    if not __import__("torch").cuda.is_available():
        with pytest.raises(DevicesError, match="no CUDA device is visible"):
            parse_devices("all")
    # With --parallel the list is the rank group's, not one worker per device.
    assert worker_devices(SimpleNamespace(devices="cpu,cpu", parallel="ulysses=2")) == []
    assert worker_devices(SimpleNamespace(devices="", parallel="")) == []


@pytest.mark.slow
def test_a_cancel_reaches_the_worker_and_its_lane_goes_on(two_workers):
    base, _ = two_workers
    with httpx.Client(base_url=base, timeout=30) as http:
        pids = [d["pid"] for d in _devices(http)]
        job_id = _submit(http, 1)[0]
        deadline = time.monotonic() + 60
        while (view := http.get(f"/jobs/{job_id}").json())["step"] in (None, 0):  # a step came over the pipe
            assert time.monotonic() < deadline, view
            time.sleep(0.02)
        assert http.delete(f"/jobs/{job_id}").status_code == 200
        view = wait_for_job(http, job_id, seconds=30)
        assert view["status"] == "cancelled" and view["step"] < view["total"]
        after = _devices(http)
        assert [d["pid"] for d in after] == pids and all(d["stage"] is None for d in after)  # stopped, not killed
        done = wait_for_job(http, http.post("/jobs", json={**LONG, "num_inference_steps": 2}).json()["id"])
        assert done["status"] == "succeeded"
