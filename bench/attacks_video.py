"""Attacks with a video input (a retake's `video`) on a real tiny server, merged into bench/attacks.py's table:
a zero-length stream, 10^6 frames declared, a 30000x30000 frame size declared, a variable frame rate burst
(4,000 frames 1 ms apart), a file with no video stream; and, for contrast, a benign variable frame rate clip,
which is resampled by time and runs (200). Each is a few hundred bytes to ~100 KB, built here;
each row set is the answer, the seconds it took, the server process's peak RSS growth (/proc/PID/status
VmHWM, reset first), whether the server is alive, and whether the next job succeeds.

    python bench/attacks.py --only video_inputs
"""

from __future__ import annotations

import base64
import io
import struct
from fractions import Fraction

import av
import hostile
import numpy as np
from attacks import Server, measured_cases

RETAKE = {"prompt": "a boat", "retake": {"start": 0.04, "end": 0.12}, "num_inference_steps": 1, "seed": 1}


def encoded(times: list[float], fmt: str = "mp4", codec: str = "libx264", size: int = 64) -> bytes:
    """Flat grey frames shown from `times` (seconds, millisecond resolution)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 100, np.uint8), format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def zero_length() -> bytes:
    """A WebM whose header declares a 64x64 video track and whose only cluster is empty."""
    whole = encoded([0.0, 0.04], fmt="webm", codec="libvpx-vp9")
    return whole[:whole.index(b"\x1f\x43\xb6\x75")] + b"\x1f\x43\xb6\x75\x80"


def million_frames() -> bytes:
    """A 9-frame MP4 whose sample tables (stsz, stts) declare 1,000,000 frames of 1,000 bytes."""
    data = bytearray(encoded([i / 25 for i in range(9)]))
    stsz = data.index(b"stsz") - 4  # size, type, version/flags, sample_size, sample_count
    struct.pack_into(">II", data, stsz + 12, 1000, 1_000_000)
    stts = data.index(b"stts") - 4  # size, type, version/flags, entry_count, (count, delta)
    struct.pack_into(">I", data, stts + 16, 1_000_000)
    return bytes(data)


def huge_size() -> bytes:
    """A MOV of 3 MJPEG frames whose JPEG headers and sample entry declare 30000x30000 (900 MP)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mov") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuvj420p"
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), 100, np.uint8),
                                                                   format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = bytearray(buf.getvalue())
    at = 0
    while (at := data.find(b"\xff\xc0", at)) >= 0:  # SOF0: marker, length, precision, height, width
        struct.pack_into(">HH", data, at + 5, 30000, 30000)
        at += 2
    entry = data.index(b"jpeg", data.index(b"stsd"))
    struct.pack_into(">HH", data, entry + 28, 30000, 30000)  # the visual sample entry's width, height
    return bytes(data)


def vfr_burst() -> bytes:
    """A variable frame rate WebM: 4,000 16x16 frames 1 ms apart (4 s at 1,000 fps)."""
    return encoded([i / 1000 for i in range(4000)], fmt="webm", codec="libvpx-vp9", size=16)


def vfr_clip() -> bytes:
    """A benign variable frame rate MP4: 12 frames at uneven times over 0.68 s (resampled by time, not refused)."""
    return encoded([0.0, 0.04, 0.1, 0.2, 0.24, 0.3, 0.36, 0.44, 0.5, 0.56, 0.6, 0.68])


CASES = {
    "zero-length video stream": (zero_length, "video/webm"),
    "10^6 frames declared (MP4 stsz/stts)": (million_frames, "video/mp4"),
    "30000x30000 declared (MJPEG MOV)": (huge_size, "video/quicktime"),
    "variable frame rate burst (4,000 frames 1 ms apart)": (vfr_burst, "video/webm"),
    "no video stream (AAC only MP4)": (hostile.audio_only_mp4, "video/mp4"),
    "benign variable frame rate (12 frames at uneven times, 0.68 s; resampled)": (vfr_clip, "video/mp4"),
}


def attack_video_inputs() -> list[tuple[str, str]]:
    """POST /generate with each hostile file as a retake's video, on one server; five figures per file."""
    def cases():  # each file built when its turn comes
        for label, (build, mime) in CASES.items():
            data = build()
            yield f"{label}, {len(data):,} bytes", {**RETAKE, "video": f"data:{mime};base64," + base64.b64encode(data).decode()}

    return measured_cases(Server(), cases(), "video inputs")


ATTACKS = {"video_inputs": attack_video_inputs}
