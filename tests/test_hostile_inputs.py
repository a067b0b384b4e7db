"""Broken and hostile image/audio inputs: a clear 4xx naming the field, from the server and the
RunPod handler alike, and the next valid request is served."""

from __future__ import annotations

import base64
import io
import struct
import zlib

import pytest
from hostile import wav
from PIL import Image

from ltx2.serving.worker import make_handler

VALID = {"prompt": "a red boat on a lake", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1,
         "seed": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width=48, height=32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 32), (30, 200, 30)).save(buf, "JPEG")
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge size, with almost no pixel data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


CASES = [
    ("not base64", {"image_start": "!!! not base64 !!!"}, 422, "image_start", "image_start is not valid base64"),
    ("text, not an image", {"image_end": b64(b"just some words, not a picture at all")}, 422, "image_end",
     "image_end is not a PNG, JPEG, WebP or GIF image"),
    ("truncated PNG", {"image_start": "data:image/png;base64," + b64(png()[:60])}, 422, "image_start",
     "image_start could not be decoded"),
    ("30000x30000 header", {"image_start": "data:image/png;base64," + b64(png_header_only(30000, 30000))}, 413,
     "image_start", "the limit is 50 megapixels"),
    ("declared PNG, holds JPEG", {"image_start": "data:image/png;base64," + b64(jpeg())}, 422, "image_start",
     "image_start declares image/png but holds a JPEG"),
    ("a text data URI as an image", {"image_start": "data:text/plain;base64," + b64(png())}, 422, "image_start",
     "image_start declares text/plain, a type that is not an image"),
    ("noise, not audio", {"audio": b64(b"\x01\x02 not audio " * 64)}, 422, "audio", "audio is not a readable audio file"),
    ("an image as audio", {"audio": "data:audio/wav;base64," + b64(png())}, 422, "audio", "audio"),
    ("empty audio", {"audio": "data:audio/wav;base64," + b64(wav(0))}, 422, "audio", "audio is empty"),
    ("audio too long", {"audio": "data:audio/wav;base64," + b64(wav(61, rate=8000))}, 422, "audio", "60"),
]


@pytest.fixture(scope="module")
def handler(model):
    return make_handler(model, send_progress=lambda job, progress: None)


# One test per case for the server and the handler: each refusal decodes in a fresh sandbox child (~2 s of
# CPU for its imports), so the server's answer is asked for once and the handler's is compared with it.
@pytest.mark.parametrize(("name", "fields", "status", "field", "phrase"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.slow
def test_server_and_handler_refuse_alike_then_keep_serving(client, handler, name, fields, status, field, phrase):
    response = client.post("/generate", json={**VALID, **fields})
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field and phrase in body["error"], body
    assert body["code"] == ("payload_too_large" if status == 413 else "invalid_request")
    out = handler({"id": "j", "input": {**VALID, **fields}})  # the RunPod handler: the same message
    assert out["error"] == body["error"] and out["field"] == field
    assert client.post("/generate", json=VALID).status_code == 200


@pytest.mark.slow
def test_size_limit_is_413_before_decoding(client, handler, monkeypatch):
    monkeypatch.setenv("LTX2_MAX_IMAGE_MB", "1")
    big = "data:image/png;base64," + "A" * (2 * 1024 * 1024)  # 1.5 MB once decoded: over the limit
    response = client.post("/generate", json={**VALID, "image_start": big})
    assert response.status_code == 413
    assert response.json()["error"].startswith("image_start is 1.5 MB; the limit is 1 MB")
    assert handler({"id": "j", "input": {**VALID, "image_start": big}})["code"] == "payload_too_large"
    assert client.post("/generate", json={**VALID, "image_start": "data:image/png;base64," + b64(png())}).status_code == 200
