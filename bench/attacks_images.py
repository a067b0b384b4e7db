"""Attacks with images on a real tiny server (merged into bench/attacks.py's table): each row set is the
answer, the seconds it took, the server process's peak RSS growth (/proc/PID/status VmHWM, reset
first), whether the server is alive, and whether the next job succeeds.

    python bench/attacks.py --only thin_image,bomb_shape_image,large_image
"""

from __future__ import annotations

import base64
import io

import numpy as np
from attacks import CHEAP, Server, measured_post
from hostile import raw_png
from PIL import Image


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
        rows, alive = measured_post(server, label, {**(body or CHEAP), "image_start": uri})
        return rows + [(f"{label}: next job", server.next_job() if alive else "-")]
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
