"""Job records stay bounded and start-up survives what it finds on disk: only active jobs in memory,
inputs in files of their own, records pruned after their retention, free pages given back; a bad row
skipped, a corrupt database moved aside, a database deleted while running recreated, orphans swept."""

from __future__ import annotations

import json
import os
import sqlite3
import time

import hostile
import httpx
import pytest
from servers import start_server, stop_server
from servers import wait_for_job as wait_for

from ltx2.schema import GenerateRequest
from ltx2.serving.jobs import JobManager, JobStore

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}
SLOW = {"prompt": "a slow boat", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 100, "seed": 2}


def db_files(out) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in out.glob("jobs.sqlite3*")}


@pytest.mark.slow
def test_only_active_jobs_stay_in_memory_and_old_records_are_pruned(make_client, tmp_path):
    client = make_client()
    manager = client.app.state.ltx2.manager
    ids = []
    for i in range(12):
        ids.append(client.post("/jobs", json={**CHEAP, "seed": i}).json()["id"])
        wait_for(client, ids[-1])
    assert manager.jobs == {}  # finished jobs are read back from their records when asked for
    view = client.get(f"/jobs/{ids[0]}").json()
    assert view["status"] == "succeeded" and client.get(f"/jobs/{ids[0]}/video").status_code == 200

    manager.record_ttl = manager.result_ttl = 0.0  # a week later, as far as these records are concerned
    manager.sweep(now=time.time() + 1)
    assert client.get(f"/jobs/{ids[0]}").status_code == 404
    assert not any((tmp_path / "out" / "videos").iterdir())
    db = sqlite3.connect(tmp_path / "out" / "jobs.sqlite3")
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
    assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0  # the pages went back to the file system


@pytest.mark.slow
def test_inputs_wait_in_a_file_and_leave_no_trace_in_the_database(make_client, tmp_path):
    client = make_client(max_body_mb=64)
    out = tmp_path / "out"
    running = client.post("/jobs", json=SLOW).json()["id"]  # holds the worker, so the next one waits
    wait_for(client, running, ("running",))
    audio = hostile.data_uri(hostile.wav(150, rate=50_000), "audio/wav")  # 15 MB, 20 MB as base64
    queued = client.post("/jobs", json={**CHEAP, "audio": audio}).json()["id"]
    inputs = out / "inputs" / f"{queued}.json"
    assert inputs.stat().st_size > 19_000_000
    row = sqlite3.connect(out / "jobs.sqlite3").execute("SELECT request FROM jobs WHERE id = ?", (queued,)).fetchone()
    assert json.loads(row[0])["audio"] is None and len(row[0]) < 2000
    assert client.app.state.ltx2.manager.jobs[queued].request.audio is None  # not held in memory either
    client.delete(f"/jobs/{running}")
    view = wait_for(client, queued)
    assert view["status"] == "failed" and "60 s" in view["error"]["error"]  # 150 s of audio: refused
    assert not inputs.exists()
    client.app.state.ltx2.manager.sweep()
    sizes = db_files(out)
    assert sum(sizes.values()) < 2_000_000, sizes


def test_a_bad_row_is_skipped_and_the_rest_recovered(tmp_path):
    path = str(tmp_path / "jobs.sqlite3")
    store = JobStore(path)
    manager = JobManager(store, str(tmp_path), run_job=None)
    good = manager.submit(GenerateRequest(**CHEAP))
    store.close()
    db = sqlite3.connect(path)
    db.execute("INSERT INTO jobs (id, status, created, request) VALUES ('bad1', 'queued', 1, '{\"not\": \"a request\"}')")
    db.execute("INSERT INTO jobs (id, status, created, request) VALUES ('bad2', 'weird', 'x', 'garbage')")
    db.execute("ALTER TABLE jobs ADD COLUMN from_a_newer_version TEXT")  # an unknown column is no problem
    db.commit()
    db.close()
    again = JobManager(JobStore(path), str(tmp_path), run_job=None)
    assert list(again.waiting) == [good.id] and again.get("bad1") is None


def test_a_corrupt_database_is_moved_aside_and_a_fresh_one_started(tmp_path, caplog):
    path = tmp_path / "jobs.sqlite3"
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))  # a header, then garbage
    with caplog.at_level("ERROR", logger="ltx2.jobs"):
        store = JobStore(str(path))
    moved = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(moved) == 1 and moved[0].stat().st_size > 8000
    assert any("job_database_moved_aside" in r.getMessage() for r in caplog.records)
    manager = JobManager(store, str(tmp_path), run_job=None)
    assert manager.submit(GenerateRequest(**CHEAP)).status == "queued"


def test_a_database_deleted_while_running_is_recreated_with_its_records(tmp_path, caplog):
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(str(path))
    manager = JobManager(store, str(tmp_path), run_job=None)
    queued = [manager.submit(GenerateRequest(**{**CHEAP, "seed": i})).id for i in range(3)]
    for p in tmp_path.glob("jobs.sqlite3*"):
        p.unlink()
    with caplog.at_level("ERROR", logger="ltx2.jobs"):
        store.check()  # what the supervisor does every second
    assert path.exists() and any("job_database_recreated" in r.getMessage() for r in caplog.records)
    rows = sqlite3.connect(path).execute("SELECT id FROM jobs WHERE status = 'queued'").fetchall()
    assert sorted(r[0] for r in rows) == sorted(queued)
    later = manager.submit(GenerateRequest(**{**CHEAP, "seed": 9}))
    store.close()
    assert [j.id for j in JobStore(str(path)).load_active()] == [*queued, later.id]


def test_a_real_server_starts_on_a_corrupt_database_and_sweeps_orphans(tmp_path):
    out = tmp_path / "out"
    (out / "videos").mkdir(parents=True)
    (out / "inputs").mkdir()
    (out / "jobs.sqlite3").write_bytes(b"this is not a database" * 100)
    (out / "videos" / "0123abcd.mp4").write_bytes(b"x" * 1000)  # no record claims it
    (out / "videos" / "4567cdef.mp4.part").write_bytes(b"x" * 1000)  # half-written before a crash
    (out / "inputs" / "89abcdef.json").write_text("{}")
    proc, base = start_server(out, tmp_path / "server.log")
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.get("/health").json()["status"] == "healthy"
            assert http.post("/generate", json=CHEAP).status_code == 200
        assert not any(p.name.startswith(("0123", "4567")) for p in (out / "videos").iterdir())
        assert not (out / "inputs" / "89abcdef.json").exists()
        assert [p for p in out.iterdir() if ".corrupt-" in p.name]
        assert "job_database_moved_aside" in (tmp_path / "server.log").read_text()
    finally:
        stop_server(proc)
