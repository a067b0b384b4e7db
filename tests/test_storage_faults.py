"""Storage faults lose nothing: an I/O error at start-up leaves the database (and the videos it claims)
where they are, only a database SQLite reports damaged is moved aside, a full disk at start-up is one
line and a non-zero exit, an output folder removed at run time is made again, running out of file
descriptors is a 507 with /health saying so, and an unreadable row is logged once then set aside.

The full disk is real: a 4 MB tmpfs mounted in a user namespace (`unshare -rm`), the server run inside it
with `nsenter`; those tests are skipped where unprivileged user namespaces are not allowed."""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import time

import hostile
import httpx
import pytest
from servers import ROOT, free_port, stop_server, wait_healthy
from servers import wait_for_job as wait_for

from ltx2.schema import GenerateRequest
from ltx2.serving import job_store
from ltx2.serving.job_store import JobStore, StorageError
from ltx2.serving.jobs import JobManager

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}


def finished_job(out) -> tuple[str, str]:
    """A records file with one succeeded job and its video, as a server leaves them; (id, video path)."""
    store = JobStore(str(out / "jobs.sqlite3"))
    manager = JobManager(store, str(out), run_job=lambda job, on_step: ({"seed": 1}, b"\x00\x00\x00\x18ftypmp42"))
    job = manager.submit(GenerateRequest(**CHEAP))
    manager.waiting.remove(job.id)
    job.status, job.started = "running", time.time()
    manager._run(job, manager.lanes[0])  # the one lane's step, without its thread
    store.close()
    assert job.status == "succeeded" and os.path.exists(job.video_path)
    return job.id, job.video_path


def test_an_io_error_at_start_up_leaves_the_database_and_its_videos_alone(tmp_path, monkeypatch, caplog):
    job_id, video = finished_job(tmp_path)
    real_connect, failures = sqlite3.connect, [0]

    def failing_connect(*args, **kw):  # the disk answers EIO for a while (a flaky volume, a network disk)
        if failures[0] < 3:
            failures[0] += 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_connect(*args, **kw)

    monkeypatch.setattr(job_store.sqlite3, "connect", failing_connect)
    with caplog.at_level("ERROR", logger="ltx2.jobs"), pytest.raises(StorageError, match="disk I/O error"):
        JobStore(str(tmp_path / "jobs.sqlite3"))  # no wait: the error is reported, nothing is touched
    assert not [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert "job_database_moved_aside" not in caplog.text and "job_database_unavailable" in caplog.text

    store = JobStore(str(tmp_path / "jobs.sqlite3"), wait=10)  # retried until the disk answers
    assert failures[0] == 3
    manager = JobManager(store, str(tmp_path), run_job=None)  # recovery sweeps orphans: this video is not one
    assert os.path.exists(video) and manager.get(job_id).status == "succeeded"


def test_records_that_cannot_be_read_at_start_up_sweep_nothing(tmp_path, monkeypatch):
    job_id, video = finished_job(tmp_path)
    store = JobStore(str(tmp_path / "jobs.sqlite3"))

    def unreadable(*args, **kw):
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store, "videos", unreadable)
    with pytest.raises(StorageError, match="read the job records"):
        JobManager(store, str(tmp_path), run_job=None)
    assert os.path.exists(video)  # not an orphan: its record exists, it just could not be read


def test_only_a_database_sqlite_reports_damaged_is_moved_aside(tmp_path, monkeypatch):
    damaged = tmp_path / "jobs.sqlite3"
    damaged.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))
    JobStore(str(damaged)).close()
    assert len([p for p in tmp_path.iterdir() if ".corrupt-" in p.name]) == 1

    locked = tmp_path / "locked" / "jobs.sqlite3"
    JobStore(str(locked)).close()
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock past the busy timeout
    connect = sqlite3.connect

    def impatient(*args, **kwargs):  # the store's 10 s busy timeout, shortened for the test (its first
        return connect(*args, **{**kwargs, "timeout": 0.1})  # PRAGMA already waits on the lock)

    monkeypatch.setattr(job_store.sqlite3, "connect", impatient)
    try:
        with pytest.raises(StorageError, match="locked"):
            JobStore(str(locked))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [p.name for p in locked.parent.iterdir() if ".corrupt-" in p.name] == []
    JobStore(str(locked)).close()


def test_an_unreadable_row_is_logged_once_and_set_aside(tmp_path, caplog):
    path = str(tmp_path / "jobs.sqlite3")
    JobStore(path).close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO jobs (id, status, created, request) VALUES ('bad', 'queued', 1, '{\"not\": \"a request\"}')")
    db.commit()
    db.close()
    for start in range(2):
        caplog.clear()
        with caplog.at_level("ERROR", logger="ltx2.jobs"):
            store = JobStore(path)
            JobManager(store, str(tmp_path), run_job=None)
        assert caplog.text.count("job_record_skipped") == (1 if start == 0 else 0)
        assert store.unreadable() == ["bad"]
        store.close()
    row = sqlite3.connect(path).execute("SELECT row, error FROM jobs_unreadable").fetchone()
    assert "a request" in row[0]
    assert "ValidationError" in row[1]


@pytest.mark.slow
def test_an_inputs_or_videos_folder_removed_at_run_time_is_made_again(make_client, tmp_path):
    client = make_client()
    image = hostile.data_uri(hostile.png(), "image/png")
    for folder in ("inputs", "videos"):
        shutil.rmtree(tmp_path / "out" / folder)
        job = client.post("/jobs", json={**CHEAP, "image_start": image})
        assert job.status_code == 202, job.text
        view = wait_for(client, job.json()["id"])
        assert view["status"] == "succeeded", view
        assert client.get("/health").status_code == 200
    time.sleep(1.5)  # the supervisor's check makes a folder removed while idle again, before it is needed
    shutil.rmtree(tmp_path / "out" / "inputs")
    deadline = time.monotonic() + 5
    while not (tmp_path / "out" / "inputs").is_dir() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (tmp_path / "out" / "inputs").is_dir()


def test_no_file_descriptors_left_is_a_507_and_health_says_so(tmp_path):
    out, log = tmp_path / "out", tmp_path / "server.log"
    proc, base = launch_cmd([], out, log)
    try:
        wait_healthy(proc, base, log)
        with httpx.Client(base_url=base, timeout=30) as http:
            http.get("/health")  # the connection every request below reuses: it needs no new descriptor
            job = http.post("/jobs", json={**CHEAP, "width": 256, "height": 256, "num_inference_steps": 6}).json()
            wait_for(http, job["id"], ("running",))
            soft, hard = resource.prlimit(proc.pid, resource.RLIMIT_NOFILE)
            resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (hostile.open_fds(proc.pid), hard))
            try:
                view = wait_for(http, job["id"])
                health = http.get("/health")
            finally:
                resource.prlimit(proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
            assert view["status"] == "failed" and view["error"]["code"] == "storage_error", view
            assert "Too many open files" in view["error"]["error"], view  # not "generation failed"
            assert health.status_code == 503 and "open files" in " ".join(health.json()["problems"])
            deadline = time.monotonic() + 10
            while http.get("/health").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert http.get("/health").status_code == 200
            again = http.post("/jobs", json=CHEAP).json()
            assert wait_for(http, again["id"])["status"] == "succeeded"
    finally:
        stop_server(proc)


# ---------------------------------------------------------------------------------------------- a full disk


def launch_cmd(prefix: list[str], out, log) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with open(log, "a") as fh:
        proc = subprocess.Popen([*prefix, sys.executable, "server.py", "--model", "tiny", "--host", "127.0.0.1",
                                 "--port", str(port), "--output-dir", str(out)],
                                cwd=ROOT, env={**os.environ, "LTX2_DEVICE": "cpu"}, stdout=fh, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture
def small_disk():
    """A 4 MB tmpfs at /mnt of a mount namespace of our own; (the nsenter prefix, its path from here)."""
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs unshare and nsenter")
    holder = subprocess.Popen(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4m tmpfs /mnt && echo ready "
                               "&& exec sleep 3600"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if holder.stdout.readline().strip() != "ready":
        holder.wait()
        pytest.skip("unprivileged user namespaces (unshare -rm) are not allowed here")
    prefix = ["nsenter", "-t", str(holder.pid), "-U", "-m", "--preserve-credentials", f"--wd={ROOT}"]
    yield prefix, f"/proc/{holder.pid}/root/mnt"
    holder.kill()
    holder.wait()


def fill(path: str) -> None:
    """Write until the disk is full (unbuffered: a failed write leaves nothing to flush at close)."""
    with open(path, "wb", buffering=0) as fh:
        for size in (65536, 4096, 1):
            try:
                while fh.write(b"\0" * size):
                    pass
            except OSError:
                pass


def test_a_full_disk_at_start_up_is_one_line_and_loses_nothing(small_disk, tmp_path):
    prefix, disk = small_disk
    log = tmp_path / "server.log"
    proc, base = launch_cmd(prefix, "/mnt/out", log)
    try:
        wait_healthy(proc, base, log)
        job = httpx.post(f"{base}/jobs", json=CHEAP).json()
        assert wait_for(httpx.Client(base_url=base), job["id"])["status"] == "succeeded"
    finally:
        stop_server(proc)
    videos = sorted(os.listdir(f"{disk}/out/videos"))
    assert len(videos) == 1

    fill(f"{disk}/filler")
    failed = tmp_path / "failed.log"
    proc, base = launch_cmd(prefix, "/mnt/out", failed)
    assert proc.wait(timeout=90) != 0
    text = failed.read_text()
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    # SQLite's words for it vary (disk I/O error, database or disk is full): the free space says it.
    assert last.startswith("ltx2: cannot start:") and "0.0 MB free on its disk" in last, text
    assert os.path.exists(f"{disk}/out/jobs.sqlite3") and not [n for n in os.listdir(f"{disk}/out") if "corrupt" in n]

    os.remove(f"{disk}/filler")  # space again: the same records, the same video
    proc, base = launch_cmd(prefix, "/mnt/out", log)
    try:
        wait_healthy(proc, base, log)
        assert sorted(os.listdir(f"{disk}/out/videos")) == videos
        video = httpx.get(f"{base}/jobs/{job['id']}/video", timeout=30)
        assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    finally:
        stop_server(proc)
