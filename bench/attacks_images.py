"""Attacks with images on a real tiny server (merged into bench/attacks.py's table): each row set is the
answer, the seconds it took, the server process's peak RSS growth (/proc/PID/status VmHWM, reset
first), whether the server is alive, and whether the next job succeeds.

    python bench/attacks.py --only thin_image,bomb_shape_image,large_image
"""

from __future__ import annotations

import base64
import io
import struct
import time
import zlib

import hostile
import numpy as np
from attacks import CHEAP, Server
from PIL import Image


def raw_png(width: int, height: int, channels: int = 1) -> bytes:
    """A flat PNG of any size, compressed as it is built (a 2x24,999,999 one is 73 KB)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" + b"\x80" * (width * channels)
    rows_per_block = max(1, (1 << 20) // len(row))
    compressor, parts, left = zlib.compressobj(9), [], height
    while left > 0:
        n = min(left, rows_per_block)
        parts.append(compressor.compress(row * n))
        left -= n
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def gradient_png(width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], axis=-1)
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def image_attack(label: str, image: bytes, body: dict | None = None) -> list[tuple[str, str]]:
    """POST /generate with `image` as image_start; the five figures."""
    server = Server()
    try:
        uri = "data:image/png;base64," + base64.b64encode(image).decode()
        hostile.reset_peak_rss(server.pid)
        base = hostile.rss_mb(server.pid)
        start = time.monotonic()
        try:
            r = server.http.post("/generate", json={**(body or CHEAP), "image_start": uri}, timeout=300)
            answer = f"{r.status_code}" + (f" {r.json().get('field', '')}: {r.json().get('error', '')[:70]}"
                                           if r.status_code != 200 else "")
        except Exception as exc:  # noqa: BLE001 - a dead server is a figure
            answer = f"no answer ({type(exc).__name__})"
        took = time.monotonic() - start
        alive = server.proc.poll() is None
        peak = hostile.peak_rss_mb(server.pid) - base if alive else float("nan")
        return [(f"{label}: answer", answer), (f"{label}: seconds", f"{took:.1f}"),
                (f"{label}: server peak RSS growth", f"{peak:.0f} MB"),
                (f"{label}: server alive", "yes" if alive and server.health()[0] == 200 else "NO"),
                (f"{label}: next job", server.next_job() if alive else "-")]
    finally:
        server.close()


def attack_thin_image() -> list[tuple[str, str]]:
    """A ~100-byte 1x9000 PNG: covering the frame used to scale it 288 times, in the server."""
    return image_attack("thin 1x9000 PNG", raw_png(1, 9000), {**CHEAP, "width": 768, "height": 512})


def attack_bomb_shape_image() -> list[tuple[str, str]]:
    """A 73 KB 2x24,999,999 PNG, just under the 50 MP limit (used to be a 500)."""
    return image_attack("2x24,999,999 PNG", raw_png(2, 24_999_999))


def attack_large_image() -> list[tuple[str, str]]:
    """A plausible 48 MP PNG (8000x6000), just under the limit: decoded and prepared in the sandbox."""
    return image_attack("48 MP PNG", gradient_png(8000, 6000))


ATTACKS = {
    "thin_image": attack_thin_image,
    "bomb_shape_image": attack_bomb_shape_image,
    "large_image": attack_large_image,
}
