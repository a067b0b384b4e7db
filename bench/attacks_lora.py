"""Attacks with LoRA files (issue 21), merged into bench/attacks.py's table when it runs:

    python bench/attacks.py --only lora_shared_range,lora_hollow,lora_huge_header,lora_slow_urls

Each hostile file is made by tests/lora_files.py at the size that killed the server before the headers
were checked (the attack's own size; no scaling). Rows per attack: the answer, the seconds it took, the
server's peak RSS growth over the attack (/proc VmHWM after resetting it, against VmRSS before), whether
the server is alive and whether the next cheap job succeeds.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import httpx
from attacks import CHEAP, Server

import hostile
from lora_files import hollow, huge_header, shared_range, write_lora

_MODEL = None


def _tiny():
    """The tiny preset in this process: the hostile files name its real layers."""
    global _MODEL
    if _MODEL is None:
        from ltx2 import load_model

        _MODEL = load_model("tiny", device="cpu")
    return _MODEL


def _models_dir(make) -> Path:
    root = Path(tempfile.mkdtemp(prefix="ltx2-lora-attack-"))
    (root / "loras").mkdir()
    make(root / "loras")
    return root


def _rows(name: str, server: Server, answer: str | None, seconds: float, before_mb: float) -> list[tuple[str, str]]:
    try:
        growth = f"+{hostile.peak_rss_mb(server.pid) - before_mb:.0f} MB"
    except (OSError, KeyError):
        growth = "process gone"
    alive = server.proc.poll() is None and server.health()[0] == 200
    return [*([(f"{name}: answer", answer)] if answer else []), (f"{name}: seconds", f"{seconds:.3f}"),
            (f"{name}: server peak RSS growth", growth), (f"{name}: server alive", "yes" if alive else "no"),
            (f"{name}: next job", server.next_job() if alive else "-")]


def _file_attack(name: str, make, file_name: str) -> list[tuple[str, str]]:
    """POST /generate with the file as a LoRA (at scale 0: the old reader read it all the same)."""
    models = _models_dir(make)
    server = Server("--models-dir", str(models))
    try:
        server.http.post("/generate", json=CHEAP, timeout=120)  # warm: the baseline is a server that has run
        hostile.reset_peak_rss(server.pid)
        before = hostile.rss_mb(server.pid)
        start = time.monotonic()
        try:
            r = server.http.post("/generate", json={**CHEAP, "loras": [{"path": file_name, "scale": 0}]}, timeout=300)
            body = r.json()
            answer = f"{r.status_code} {body.get('field', '')} {body.get('code', '')}".strip()
        except (httpx.HTTPError, ValueError) as exc:
            answer = f"no answer ({type(exc).__name__})"
        return _rows(name, server, answer, time.monotonic() - start, before)
    finally:
        server.close()


def attack_lora_shared_range() -> list[tuple[str, str]]:
    """8000 header entries all pointing at the same 1 MiB of data (the old reader: ~8 GB)."""
    return _file_attack("shared range, 8000 x 1 MiB",
                        lambda d: shared_range(d / "shared.safetensors", _tiny(), entries=8000), "shared.safetensors")


def attack_lora_hollow() -> list[tuple[str, str]]:
    """Rank 600k factors declared on 82 layers with data_offsets [0, 0] (a ~22 KB file)."""
    return _file_attack("no data, rank 600k on 82 layers",
                        lambda d: hollow(d / "hollow.safetensors", _tiny(), rank=600_000, layers=82), "hollow.safetensors")


def attack_lora_huge_header() -> list[tuple[str, str]]:
    """A header of 1.3M entries (~92 MB of JSON)."""
    return _file_attack("92 MB header, 1.3M entries", lambda d: huge_header(d / "huge.safetensors"), "huge.safetensors")


def attack_lora_slow_urls() -> list[tuple[str, str]]:
    """Four LoRA URLs that drip a byte every 0.5 s, then a plain job behind them (--job-timeout 10)."""
    path = Path(tempfile.mkdtemp(prefix="ltx2-lora-attack-")) / "slow.safetensors"
    write_lora(path, _tiny())
    drip = hostile.DripServer(path.read_bytes(), interval=0.5, content_type="application/octet-stream")
    server = Server("--allow-private-urls", "true", "--job-timeout", "10")
    try:
        hostile.reset_peak_rss(server.pid)
        before = hostile.rss_mb(server.pid)
        start = time.monotonic()
        slow = server.job({**CHEAP, "loras": [{"path": f"{drip.url}?{i}"} for i in range(4)]}).json()["id"]
        behind = server.job(CHEAP).json()["id"]
        view = server.wait(behind, 120)
        waited = view["finished"] - view["created"] if view.get("finished") else float("nan")
        cancel_start = time.monotonic()
        server.http.delete(f"/jobs/{slow}", timeout=120)
        cancelled = server.wait(slow, 30)
        cancel_s = time.monotonic() - cancel_start
        timed = server.job({**CHEAP, "loras": [{"path": f"{drip.url}?t"}]}).json()["id"]
        timed_start = time.monotonic()
        timed_view = server.wait(timed, 60)
        timed_s = time.monotonic() - timed_start
        leftovers = [p.name for p in (server.out / "lora-cache").rglob("*.part")]
        rows = [("slow LoRA URLs: the job behind them finished after", f"{waited:.1f} s"),
                ("slow LoRA URLs: DELETE -> cancelled after",
                 f"{cancel_s:.1f} s ({cancelled.get('status')})"),
                ("slow LoRA URLs: --job-timeout 10 stopped the download after",
                 f"{timed_s:.1f} s ({timed_view.get('status')} {(timed_view.get('error') or {}).get('code', '')})"),
                ("slow LoRA URLs: .part files left", str(len(leftovers)))]
        return rows + _rows("slow LoRA URLs", server, None, time.monotonic() - start, before)
    finally:
        server.close()
        drip.close()


ATTACKS = {
    "lora_shared_range": attack_lora_shared_range,
    "lora_hollow": attack_lora_hollow,
    "lora_huge_header": attack_lora_huge_header,
    "lora_slow_urls": attack_lora_slow_urls,
}
