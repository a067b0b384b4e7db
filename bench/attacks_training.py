"""Attacks on POST /trainings (run through bench/attacks.py --only training_zips,training_cancel): hostile dataset
zips uploaded to a real server, each measured (answer, seconds, peak RSS growth, alive), and a training
cancelled mid-run with a video queued behind it."""

from __future__ import annotations

import time

import hostile
from attacks import CHEAP, Server
from test_training_clips import HOSTILE, dataset_zip

FIELDS = {"name": "attack", "resolution": "64x64", "num_frames": "9", "rank": "4"}


def _upload(server: Server, data: bytes, **fields):
    return server.http.post("/trainings", data={**FIELDS, **fields}, files={"dataset": ("d.zip", data, "application/zip")},
                            timeout=120)


def attack_training_zips() -> list[tuple[str, str]]:
    """Each hostile zip of tests/test_training_clips.py [100,000 entries; 50 MB of zeros in 50 KB; 3 GB declared]."""
    server = Server()
    rows = []
    try:
        for name, (build, _, _) in sorted(HOSTILE.items()):
            data = build()
            hostile.reset_peak_rss(server.pid)
            base = hostile.rss_mb(server.pid)
            start = time.monotonic()
            r = _upload(server, data)
            took = time.monotonic() - start
            peak = hostile.peak_rss_mb(server.pid) - base
            body = r.json()
            answer = f"{r.status_code} {body.get('field')}: {str(body.get('error') or body.get('status'))[:60]}"
            rows += [(f"{name} ({len(data) / 1024:.0f} KB): answer", answer),
                     (f"{name}: seconds, server peak RSS growth", f"{took:.2f} s, {peak:.0f} MB")]
        rows.append(("after every zip: next job", server.next_job()))
    finally:
        server.close()
    return rows


def attack_training_cancel() -> list[tuple[str, str]]:
    """A 5,000-step training, a video queued behind it, the training cancelled after its first checkpoint."""
    server = Server()
    try:
        path = server.dir / "clips.zip"
        dataset_zip(path)
        r = _upload(server, path.read_bytes(), steps="5000", checkpoint_every="3")
        training = r.json()["id"]
        job = server.job(CHEAP).json()["id"]
        deadline = time.monotonic() + 120
        while server.http.get(f"/trainings/{training}").json().get("checkpoint_step") is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        waiting = server.http.get(f"/jobs/{job}").json()
        start = time.monotonic()
        cancelled = server.http.delete(f"/trainings/{training}", timeout=90).json()
        took = time.monotonic() - start
        done = server.wait(job, 120)
        used = server.http.post("/generate", json={**CHEAP, "loras": [{"path": "attack"}]}, timeout=120)
        return [("queued video while the training runs", f"{waiting['status']} ({waiting.get('stage')})"),
                ("cancel: answer, seconds", f"{cancelled['status']} at step {cancelled['step']}, {took:.2f} s"),
                ("cancel: checkpoint kept", f"step {cancelled['lora'] and cancelled['lora'].get('steps')}"),
                ("queued video after the cancel", done.get("status", "?")),
                ("the checkpoint used by loras", f"{used.status_code}"),
                ("server alive", "yes" if server.health()[0] == 200 else "NO")]
    finally:
        server.close()


ATTACKS = {"training_zips": attack_training_zips, "training_cancel": attack_training_cancel}
