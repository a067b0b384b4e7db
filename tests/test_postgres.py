"""The PostgreSQL job store, on a real PostgreSQL server started here (Debian's `postgresql` package: CI
installs it, see .ci/run), and two real API processes sharing it: one queue, one set of records, no job
run twice."""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from servers import free_port, launch, stop_server, wait_for_job, wait_healthy

pytestmark = pytest.mark.slow

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (pip install -e '.[test]')")


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))  # Debian keeps them off PATH
    return versions[-1] if versions else None


INITDB, PG_CTL = _bin("initdb"), _bin("pg_ctl")


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: CI's root runs it as the package's `postgres` user."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL on a free loopback port; yields its URL. Torn down (and deleted) after."""
    if INITDB is None or PG_CTL is None:
        pytest.skip("PostgreSQL's binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
    root = tempfile.mkdtemp(prefix="ltx2-pg-")
    data, port = os.path.join(root, "data"), free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(_as_owner([INITDB, "-D", data, "-A", "trust", "-U", "ltx2", "-E", "UTF8", "--no-sync"]),
                   check=True, capture_output=True)
    started = subprocess.run(_as_owner([PG_CTL, "-D", data, "-l", os.path.join(root, "log"), "-w", "-t", "30",
                                        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                                              "-c max_connections=50", "start"]), capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr + Path(root, "log").read_text()
    try:
        yield f"postgresql://ltx2@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_owner([PG_CTL, "-D", data, "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def database(postgres):
    """A fresh database on the server for one test."""
    name = f"t{random.getrandbits(40):x}"
    with psycopg.connect(postgres, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    return postgres.rsplit("/", 1)[0] + "/" + name


# -- the store itself ---------------------------------------------------------------------------


def _job(n: int = 0):
    from ltx2.schema import GenerateRequest
    from ltx2.serving.store import Job

    return Job(id=f"job{n:04d}", request=GenerateRequest(prompt="a boat"), created=1000.0 + n, owner="alice")


def test_migrations_run_once_and_two_stores_claim_each_job_exactly_once(database):
    from ltx2.serving.store import open_store

    stores = [open_store(database, "unused") for _ in range(2)]  # the second finds the schema made
    with psycopg.connect(database) as db:
        assert db.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 1
    jobs = [_job(n) for n in range(100)]
    for job in jobs:
        stores[0].save(job)
    won: dict[str, list[str]] = {job.id: [] for job in jobs}
    start = threading.Barrier(4)

    def race(store, name):
        start.wait()
        for job in jobs:
            if store.claim(job.id, name, time.time()):
                won[job.id].append(name)

    # Four claimers on two connections each: a claim must hold against another process's, not only a lock.
    threads = [threading.Thread(target=race, args=(open_store(database, "unused"), f"r{i}")) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(len(names) == 1 for names in won.values()), {k: v for k, v in won.items() if len(v) != 1}
    record = stores[1].load("job0000")
    assert record.status == "running" and record.runner == won["job0000"][0] and record.owner == "alice"
    # A claimed row is its runner's: another replica's stale write of it changes nothing.
    stale = _job(0)
    stale.status = "cancelled"
    stores[1].save(stale)
    assert stores[0].load("job0000").status == "running"
    assert stores[0].list("alice", 3)[0].id == "job0099" and stores[0].list("bob", 3) == []


def test_a_silent_replica_loses_its_running_job_and_a_queued_one_is_cancelled_once(database):
    from ltx2.serving.store import open_store

    store = open_store(database, "unused")
    running, queued = _job(1), _job(2)
    store.save(running)
    store.save(queued)
    store.heartbeat("gone")
    assert store.claim(running.id, "gone", time.time())
    assert store.fail_lost(60, {"error": "lost", "code": "worker_lost"}) == []  # it spoke just now
    with psycopg.connect(database, autocommit=True) as db:
        db.execute("UPDATE store_replicas SET seen = seen - 120")
    assert store.fail_lost(60, {"error": "lost", "code": "worker_lost"}) == [running.id]
    assert store.load(running.id).error["code"] == "worker_lost"
    queued.status, queued.finished = "cancelled", time.time()
    assert store.end_queued(queued) and not store.end_queued(queued)
    assert not store.claim(queued.id, "late", time.time())


def test_an_unreachable_database_is_a_storage_error_without_its_password():
    from ltx2.serving.store import StorageError, open_store

    port = free_port()  # nothing listens there
    with pytest.raises(StorageError) as caught:
        open_store(f"postgresql://u:secret@127.0.0.1:{port}/x", "unused", wait=0.5)
    assert caught.value.action == "open the job database" and "secret" not in str(caught.value)
    assert "Connection refused" in caught.value.reason or "connection" in caught.value.reason.lower()


# -- two API processes, one database ------------------------------------------------------------

TINY = {"prompt": "a boat on a lake", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1,
        "seed": 1}


@pytest.fixture(scope="module")
def replicas(postgres, tmp_path_factory):
    """Two tiny servers on one PostgreSQL database and one output folder (the shared volume); started
    once for this file's tests (each start costs seconds of both cores)."""
    name = "replicas"
    with psycopg.connect(postgres, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")
    database = postgres.rsplit("/", 1)[0] + "/" + name
    tmp_path = tmp_path_factory.mktemp("replicas")
    out = tmp_path / "shared"
    env = {"LTX2_DATABASE": database, "LTX2_QUEUE_SIZE": "200",
           "LTX2_API_KEYS": "alice:alice-key-123456,bob:bob-key-12345678"}
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    started = [launch(out, log, env=env) for log in logs]
    try:
        for (proc, base), log in zip(started, logs):
            wait_healthy(proc, base, log)
        yield [base for _, base in started], logs, database
    finally:
        for proc, _ in started:
            stop_server(proc)


def _client(base: str, key: str = "alice-key-123456") -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def test_replicas_agree_on_owner_position_and_cancel(replicas):
    (a_url, b_url), _, _ = replicas
    a, b, bob = _client(a_url), _client(b_url), _client(b_url, "bob-key-12345678")
    # ~60 s here when left to run (they are cancelled within seconds): long enough that a loaded machine's
    # slower test steps never let one finish before its cancel arrives.
    slow = {**TINY, "num_inference_steps": 100, "width": 384, "height": 384, "num_frames": 49}
    # Both workers busy (each replica's idle worker takes the job submitted to it), so jobs wait.
    busy = [a.post("/jobs", json=slow).json()["id"], b.post("/jobs", json=slow).json()["id"]]
    for job_id in busy:
        wait_for_job(a, job_id, statuses=("running",), seconds=30)
    waiting = [a.post("/jobs", json=TINY).json()["id"] for _ in range(3)]
    seen = b.get(f"/jobs/{waiting[-1]}").json()  # submitted to A, read through B
    assert seen["status"] == "queued" and seen["position"] == 3, seen
    assert a.get(f"/jobs/{waiting[-1]}").json()["position"] == 3
    assert bob.get(f"/jobs/{waiting[0]}").status_code == 404  # bob sees none of alice's jobs, on either replica
    assert bob.delete(f"/jobs/{waiting[0]}").status_code == 404
    for hostile in ("' OR '1'='1", "x'; DROP TABLE jobs; --"):  # ids are parameters, never SQL
        assert b.get(f"/jobs/{hostile}").status_code == 404 and b.delete(f"/jobs/{hostile}").status_code == 404
    assert b.delete(f"/jobs/{waiting[-1]}").json()["status"] == "cancelled"  # queued: ended at once
    assert a.get(f"/jobs/{waiting[-1]}").json()["status"] == "cancelled"
    # Running ones, each through the replica that does not run it: the runner stops it.
    assert b.delete(f"/jobs/{busy[0]}").json()["status"] == "cancelled"
    assert a.delete(f"/jobs/{busy[1]}").json()["status"] == "cancelled"
    assert a.get(f"/jobs/{busy[0]}").json()["status"] == b.get(f"/jobs/{busy[1]}").json()["status"] == "cancelled"
    for job_id in waiting[:-1]:
        assert wait_for_job(b, job_id, seconds=90)["status"] == "succeeded"
        assert a.get(f"/jobs/{job_id}/video").status_code == 200 and b.get(f"/jobs/{job_id}/video").status_code == 200


def test_a_race_of_100_submissions_and_100_cancels_runs_no_job_twice(replicas):
    (a_url, b_url), logs, database = replicas
    clients = [_client(a_url), _client(b_url)]
    ids: list[str] = []
    lock = threading.Lock()

    def submit(n: int) -> None:
        job_id = clients[n % 2].post("/jobs", json={**TINY, "seed": n}).json()["id"]
        with lock:
            ids.append(job_id)
        time.sleep(random.random() * 2.5)  # long enough for both replicas' queues to hold it
        # Cancelled through the other replica, while it is queued, claimed or running, or after it ended.
        clients[(n + 1) % 2].delete(f"/jobs/{job_id}")

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(submit, range(100)))
    assert len(set(ids)) == 100
    ends = {job_id: wait_for_job(clients[0], job_id, seconds=90)["status"] for job_id in ids}
    assert set(ends.values()) <= {"succeeded", "cancelled"}, ends
    for job_id in ids:  # both replicas tell the same story
        assert clients[1].get(f"/jobs/{job_id}").json()["status"] == ends[job_id]
    # The workers' logs: each job started at most once, across both processes.
    started = [json.loads(line.split(": ", 1)[1])["job"] for log in logs for line in log.read_text().splitlines()
               if '"event": "job_started"' in line]
    assert len(started) == len(set(started)), [j for j in set(started) if started.count(j) > 1]
    assert {j for j, status in ends.items() if status == "succeeded"} <= set(started)
    # The records: nothing left queued or running, and each ran job names the one replica that ran it.
    with psycopg.connect(database) as db:
        rows = db.execute("SELECT status, runner, started FROM jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    assert len(rows) == 100 and not [r for r in rows if r[0] in ("queued", "running")]
    assert all(r[1] is not None for r in rows if r[0] == "succeeded")
    # The race was real: the replicas' workers reached for the same queued jobs, and the records turned
    # one of them away each time (50 of 100 when measured).
    contested = sum(log.read_text().count('"event": "job_taken_elsewhere"') for log in logs)
    assert contested > 0
    ran = sum(status == "succeeded" for status in ends.values())
    print(f"\n100 submissions, 100 cancels: {ran} ran once, {100 - ran} cancelled, {contested} claims lost "
          f"to the other replica, {len({r[1] for r in rows if r[1]})} replicas ran jobs")


def test_a_replica_killed_mid_job_fails_that_job_worker_lost_and_the_other_runs_the_queue(replicas):
    """Last in this file: it kills replica B."""
    (a_url, b_url), logs, database = replicas
    a, b = _client(a_url), _client(b_url)
    slow = {**TINY, "num_inference_steps": 100, "width": 256, "height": 256, "num_frames": 33}
    running = None
    for _ in range(5):  # B's idle worker usually claims a job submitted to B before A hears of it
        job_id = b.post("/jobs", json=slow).json()["id"]
        view = wait_for_job(b, job_id, statuses=("running", "succeeded", "failed", "cancelled"), seconds=60)
        with psycopg.connect(database) as db:
            runner = db.execute("SELECT runner FROM jobs WHERE id = %s", (job_id,)).fetchone()[0]
        if view["status"] == "running" and runner and b.get("/health").status_code == 200 and \
                f":{_pid(logs[1])}:" in runner:
            running = job_id
            break
        wait_for_job(a, job_id, seconds=120)
    assert running is not None, "no slow job ever ran on replica B"
    queued = [b.post("/jobs", json=TINY).json()["id"] for _ in range(2)]
    os.kill(_pid(logs[1]), 9)  # SIGKILL: no goodbye, no record written
    lost = wait_for_job(a, running, seconds=60)
    assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost", lost
    for job_id in queued:  # accepted by B, run by A
        assert wait_for_job(a, job_id, seconds=60)["status"] == "succeeded"
    assert a.get("/health").status_code == 200


def _pid(log: Path) -> int:
    """The server process's id, from uvicorn's 'Started server process [N]' line."""
    for line in log.read_text().splitlines():
        if "Started server process [" in line:
            return int(line.split("[", 1)[1].split("]", 1)[0])
    raise AssertionError(f"no process id in {log}")
