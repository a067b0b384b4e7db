"""Attacks on memory (issue 21), merged into bench/attacks.py's table when it runs:

    python bench/attacks.py --only too_large,memory_calibration

A request larger than the machine, on a server told by a cgroup directory of its own that it may use
6 GiB (0.5 GiB in use), as an attacker's server was held in a 6 GiB memory cgroup; the server is also
held by RLIMIT_AS to its size at rest + 3 GiB, so a request admitted by mistake fails its allocation
instead of exhausting this machine.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import httpx

from attacks import Server

GiB = 1024**3
SIZES = ((3840, 3840, 9), (1280, 720, 241))


def _status(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as file:
        return next(int(line.split()[1]) * 1024 for line in file if line.startswith(key + ":"))


def attack_too_large() -> list[tuple[str, str]]:
    """3840x3840x9 and 1280x720x241 on /jobs: the answer, its seconds, VmHWM growth, /health, the next job."""
    cgroup = Path(tempfile.mkdtemp(prefix="ltx2-cgroup-"))
    (cgroup / "memory.max").write_text(str(6 * GiB))
    (cgroup / "memory.current").write_text(str(GiB // 2))
    server = Server(env={"LTX2_MEMORY_CGROUP": str(cgroup)})
    rows = []
    try:
        size = _status(server.pid, "VmSize")
        resource.prlimit(server.pid, resource.RLIMIT_AS, (size + 3 * GiB, size + 3 * GiB))
        for width, height, frames in SIZES:
            name = f"{width}x{height}x{frames}"
            before = _status(server.pid, "VmHWM")
            start = time.monotonic()
            try:
                r = server.http.post("/jobs", json={"prompt": "a boat", "width": width, "height": height,
                                                    "num_frames": frames, "seed": 1}, timeout=300)
                answer = f"{r.status_code} {r.json().get('code', '')}".strip()
                if r.status_code == 202:
                    view = server.wait(r.json()["id"], 300)
                    answer += f", then {view.get('status')} {(view.get('error') or {}).get('code', '')}".rstrip()
            except httpx.HTTPError as exc:
                answer = f"no answer ({type(exc).__name__})"
            seconds = time.monotonic() - start
            growth = (_status(server.pid, "VmHWM") - before) / 2**20 if server.proc.poll() is None else float("nan")
            code, status = server.health()
            rows += [(f"{name}: answer", answer), (f"{name}: seconds", f"{seconds:.3f}"),
                     (f"{name}: peak RSS growth (VmHWM)", f"{growth:.0f} MiB"),
                     (f"{name}: server alive", f"{code} {status}"), (f"{name}: next job", server.next_job())]
        return rows
    finally:
        server.close()


def attack_memory_calibration() -> list[tuple[str, str]]:
    """Admission's predicted host peak (margin 1) against a fresh tiny server's VmHWM growth, per size."""
    from memory_model import calibrate

    return [(f"{size}: predicted / measured", f"{predicted:.0f} / {measured:.0f} MiB ({predicted / measured:.2f}x)")
            for size, predicted, measured in calibrate()]


ATTACKS = {"too_large": attack_too_large, "memory_calibration": attack_memory_calibration}
