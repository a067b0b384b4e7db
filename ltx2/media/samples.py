"""Small, valid conditioning inputs built in code: the /docs examples and llms.txt use them, so
"Try it out" sends a request that works. Deterministic, a few KB each."""

from __future__ import annotations

import io
import math
import wave

import numpy as np
from PIL import Image

from .encode import to_data_uri


def sample_image_uri(width: int = 96, height: int = 64, flip: bool = False) -> str:
    """A PNG: a smooth colour gradient (sunset colours), as a data URI."""
    x = np.linspace(0.0, 1.0, width)[None, :, None]
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    top, bottom = np.array([255, 140, 60]), np.array([40, 40, 120])
    rgb = (top * (1 - y) + bottom * y) * (0.7 + 0.3 * (x[:, ::-1] if flip else x))
    buf = io.BytesIO()
    Image.fromarray(rgb.clip(0, 255).astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return to_data_uri(buf.getvalue(), "image/png")


def sample_audio_uri(seconds: float = 1.0, rate: int = 8000) -> str:
    """A WAV: a two-note chime, mono 8-bit, as a data URI."""
    n = int(seconds * rate)
    samples = bytearray()
    for i in range(n):
        t = i / rate
        note = 523.25 if t < seconds / 2 else 659.25
        value = 0.6 * math.sin(2 * math.pi * note * t) * math.exp(-3 * (t % (seconds / 2)))
        samples.append(int(128 + 127 * value))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(1)
        fh.setframerate(rate)
        fh.writeframes(bytes(samples))
    return to_data_uri(buf.getvalue(), "audio/wav")


def sample_video_uri(width: int = 96, height: int = 64, frames: int = 25, fps: int = 25) -> str:
    """An MP4 (H.264, no sound): the gradient of sample_image_uri panning sideways, 1 s, as a data URI."""
    import av

    x = np.linspace(0.0, 1.0, width)[None, :, None]
    y = np.linspace(0.0, 1.0, height)[:, None, None]
    top, bottom = np.array([255, 140, 60]), np.array([40, 40, 120])
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "28"}
        for i in range(frames):
            shade = 0.7 + 0.3 * ((x + i / frames) % 1.0)
            rgb = ((top * (1 - y) + bottom * y) * shade).clip(0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return to_data_uri(buf.getvalue(), "video/mp4")
