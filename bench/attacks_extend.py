"""Attacks on extend (a `video` and `extend`) on a real tiny server, merged into bench/attacks.py's table: seconds
far past any bound, a 29 s input (within LTX2_MAX_VIDEO_SECONDS, past the 497 frames the sandbox reads), a
19 s input that takes the output past LTX2_MAX_EXTEND_SECONDS, the longest chain the rules allow (59 s in
17-frame windows at 60 fps: 443 windows) cancelled while it runs and again left to the job's time limit (--job-timeout 20); and, for contrast, a benign
9-frame clip extended by 1 s, which runs (200). Each row set is the answer, the seconds it took, the server
process's peak RSS growth and whether it is alive; then whether the next job succeeds.

    python bench/attacks.py --only extend
"""

from __future__ import annotations

import base64
import time

from attacks import Server, measured_posts
from attacks_video import encoded
from test_retake import clip

BODY = {"prompt": "a boat drifts on", "num_frames": 17, "num_inference_steps": 1, "seed": 1}


def uri(data: bytes) -> str:
    return "data:video/mp4;base64," + base64.b64encode(data).decode()


def chain_rows(server: Server, label: str, body: dict, cancel_after: float | None) -> list[tuple[str, str]]:
    """Submit `body` as a job; cancel it after `cancel_after` seconds of running (or let it run out): how it
    ended, after how long, and the step it had reached."""
    r = server.job(body)
    if r.status_code != 202:
        return [(f"{label}: answer", f"{r.status_code} {r.text[:80]}")]
    job = r.json()["id"]
    start = time.monotonic()
    view = server.wait(job, 120, statuses=("running",))
    if cancel_after is not None:
        time.sleep(cancel_after)
        asked = time.monotonic()
        server.http.delete(f"/jobs/{job}", timeout=90)
        view = server.wait(job, 90)
        return [(f"{label}: answer", f"{view.get('status')} {str(view.get('error') or '')[:60]}"),
                (f"{label}: steps done of total", f"{view.get('step')} of {view.get('total')}"),
                (f"{label}: seconds from cancel to stopped", f"{time.monotonic() - asked:.1f}"),
                (f"{label}: server alive", "yes" if server.health()[0] == 200 else "NO")]
    view = server.wait(job, 180)
    error = view.get("error") or {}
    return [(f"{label}: answer", f"{view.get('status')} {str(error.get('code', '') if isinstance(error, dict) else error)}"),
            (f"{label}: steps done of total", f"{view.get('step')} of {view.get('total')}"),
            (f"{label}: seconds from submission to end", f"{time.monotonic() - start:.1f}"),
            (f"{label}: server alive", "yes" if server.health()[0] == 200 else "NO")]


def attack_extend() -> list[tuple[str, str]]:
    small = uri(clip(9, 64, 64, 25, audio=True))
    long = uri(encoded([i / 25 for i in range(29 * 25)]))
    medium = uri(encoded([i / 25 for i in range(19 * 25)]))
    server = Server("--job-timeout", "20")
    try:
        rows, alive = measured_posts(server, {
            "extend.seconds 1e9": {**BODY, "video": small, "extend": {"seconds": 1e9}},
            "29 s input (past the 497 frames read) + 5 s": {**BODY, "video": long, "extend": {"seconds": 5}},
            "19 s input + extend 45 s (output over 60 s)": {**BODY, "video": medium, "extend": {"seconds": 45}},
            "benign 9-frame clip + 1 s (runs)": {**BODY, "video": small, "extend": {"seconds": 1}},
        }.items())
        if not alive:
            return rows
        longest = {**BODY, "video": small, "fps": 60, "extend": {"seconds": 59}}
        rows += chain_rows(server, "443-window chain, cancelled after 3 s", longest, cancel_after=3)
        rows += chain_rows(server, "443-window chain, --job-timeout 20", longest, cancel_after=None)
        rows.append(("extend: next job", server.next_job() if server.proc.poll() is None else "-"))
        return rows
    finally:
        server.close()


ATTACKS = {"extend": attack_extend}
