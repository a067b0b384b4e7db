"""Storage attacks (issue 21), merged into bench/attacks.py's table: a full disk at start-up, output folders
removed at run time, no file descriptors left mid-job, an unreadable record. Each row says the answer, the
seconds it took, whether the server is alive and whether the next job succeeds.

The full disk is a real 4 MB tmpfs, mounted in a user namespace of our own (`unshare -rm`) and entered
with `nsenter`; where that is not allowed the attack says so in its row.
"""

from __future__ import annotations

import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from attacks import CHEAP, Server

import hostile
from servers import ROOT, free_port, stop_server, wait_healthy


def _alive(server: Server) -> str:
    code, status = server.health()
    return f"{code} {status}"


def attack_full_disk_at_start() -> list[tuple[str, str]]:
    """A disk with one finished job is filled, the server restarted on it, then space freed and restarted."""
    holder = subprocess.Popen(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4m tmpfs /mnt && echo ready "
                               "&& exec sleep 3600"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if holder.stdout.readline().strip() != "ready":
        return [("full disk at start-up", "not run: unshare -rm is not allowed here")]
    disk, log = f"/proc/{holder.pid}/root/mnt", Path(tempfile.mkdtemp()) / "server.log"
    prefix = ["nsenter", "-t", str(holder.pid), "-U", "-m", "--preserve-credentials", f"--wd={ROOT}"]

    def start():
        port = free_port()
        with open(log, "a") as fh:
            proc = subprocess.Popen([*prefix, sys.executable, "server.py", "--model", "tiny", "--host", "127.0.0.1",
                                     "--port", str(port), "--output-dir", "/mnt/out"], cwd=ROOT,
                                    env={**os.environ, "LTX2_DEVICE": "cpu"}, stdout=fh, stderr=subprocess.STDOUT)
        return proc, f"http://127.0.0.1:{port}"

    try:
        proc, base = start()
        wait_healthy(proc, base, log, timeout=180)
        job = httpx.post(f"{base}/jobs", json=CHEAP).json()["id"]
        while httpx.get(f"{base}/jobs/{job}").json()["status"] not in ("succeeded", "failed"):
            time.sleep(0.1)
        stop_server(proc)
        with open(f"{disk}/filler", "wb", buffering=0) as fh:
            for size in (65536, 4096, 1):
                try:
                    while fh.write(b"\0" * size):
                        pass
                except OSError:
                    pass
        mark = log.stat().st_size
        began = time.monotonic()
        proc, base = start()
        code = proc.wait(timeout=120)
        took = time.monotonic() - began
        text = log.read_text()[mark:]
        last = text.strip().splitlines()[-1] if text.strip() else ""
        rows = [("full disk at start-up: answer", f"exit {code}: {last[:150]}"),
                ("full disk at start-up: seconds / traceback", f"{took:.1f} s / {'yes' if 'Traceback' in text else 'no'}"),
                ("full disk at start-up: database moved aside",
                 "yes" if any("corrupt" in n for n in os.listdir(f"{disk}/out")) else "no")]
        os.remove(f"{disk}/filler")
        proc, base = start()
        wait_healthy(proc, base, log, timeout=180)
        video = httpx.get(f"{base}/jobs/{job}/video", timeout=30)
        rows.append(("full disk at start-up: after space is freed, the old job's video", str(video.status_code)))
        next_job = httpx.post(f"{base}/jobs", json=CHEAP).json()["id"]
        while (status := httpx.get(f"{base}/jobs/{next_job}").json()["status"]) not in ("succeeded", "failed"):
            time.sleep(0.1)
        rows.append(("full disk at start-up: next job", status))
        stop_server(proc)
        return rows
    finally:
        holder.kill()
        holder.wait()


def attack_folders_removed() -> list[tuple[str, str]]:
    """inputs/, videos/ and lora-cache/ removed while the server runs; then a job with an image."""
    server = Server()
    try:
        image = hostile.data_uri(hostile.png(), "image/png")
        rows = []
        for folder in ("inputs", "videos"):
            shutil.rmtree(server.out / folder, ignore_errors=True)
            began = time.monotonic()
            r = server.job({**CHEAP, "image_start": image})
            view = server.wait(r.json()["id"], 60) if r.status_code == 202 else {"status": f"refused {r.status_code}"}
            rows.append((f"{folder}/ removed: image job answer / seconds",
                         f"{view.get('status')} {(view.get('error') or {}).get('code', '')}".strip()
                         + f" / {time.monotonic() - began:.1f} s"))
        time.sleep(2)
        rows.append(("folders removed: made again by the supervisor",
                     ", ".join(f for f in ("inputs", "videos") if (server.out / f).is_dir())))
        rows += [("folders removed: server alive", _alive(server)), ("folders removed: next job", server.next_job())]
        return rows
    finally:
        server.close()


def attack_no_descriptors() -> list[tuple[str, str]]:
    """The server's descriptor limit is lowered to what it has open while a job runs (prlimit)."""
    server = Server()
    try:
        server.http.get("/health")  # the kept-alive connection every request below reuses
        job = server.job({**CHEAP, "width": 256, "height": 256, "num_inference_steps": 6}).json()["id"]
        server.wait(job, 60, statuses=("running",))
        soft, hard = resource.prlimit(server.pid, resource.RLIMIT_NOFILE)
        began = time.monotonic()
        resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (hostile.open_fds(server.pid), hard))
        try:
            view = server.wait(job, 60)
            took = time.monotonic() - began
            health = server.http.get("/health")
        finally:
            resource.prlimit(server.pid, resource.RLIMIT_NOFILE, (soft, hard))
        error = view.get("error") or {}
        rows = [("no descriptors left: the running job", f"{view.get('status')} {error.get('code', '')}: "
                 f"{error.get('error', '')[:80]} ({took:.1f} s)"),
                ("no descriptors left: /health meanwhile", f"{health.status_code} {health.json().get('problems')}"[:160])]
        began = time.monotonic()
        while server.health()[0] != 200 and time.monotonic() - began < 20:
            time.sleep(0.2)
        rows += [("no descriptors left: /health 200 again after the limit is restored",
                  f"{time.monotonic() - began:.1f} s"),
                 ("no descriptors left: next job", server.next_job())]
        return rows
    finally:
        server.close()


def attack_unreadable_row() -> list[tuple[str, str]]:
    """A row no version can read, then two restarts: how often it is logged, where it goes."""
    server = Server()
    try:
        stop_server(server.proc)
        db = sqlite3.connect(server.out / "jobs.sqlite3")
        db.execute("INSERT INTO jobs (id, status, created, request) VALUES ('bad', 'queued', 1, 'garbage')")
        db.commit()
        db.close()
        counts = []
        for _ in range(2):
            mark = server.log.stat().st_size
            server.proc, server.base = __import__("servers").launch(server.out, server.log)
            wait_healthy(server.proc, server.base, server.log, timeout=180)
            counts.append(server.log.read_text()[mark:].count("job_record_skipped"))
            stop_server(server.proc)
        kept = sqlite3.connect(server.out / "jobs.sqlite3").execute("SELECT COUNT(*) FROM jobs_unreadable").fetchone()[0]
        server.proc, server.base = __import__("servers").launch(server.out, server.log)
        wait_healthy(server.proc, server.base, server.log, timeout=180)
        server.http = httpx.Client(base_url=server.base, timeout=30)
        return [("unreadable row: log lines at the 1st / 2nd start", f"{counts[0]} / {counts[1]}"),
                ("unreadable row: rows kept in jobs_unreadable", str(kept)),
                ("unreadable row: server alive / next job", f"{_alive(server)} / {server.next_job()}")]
    finally:
        if server.proc.poll() is None:
            server.close()


ATTACKS = {
    "full_disk_at_start": attack_full_disk_at_start,
    "folders_removed": attack_folders_removed,
    "no_descriptors": attack_no_descriptors,
    "unreadable_row": attack_unreadable_row,
}
