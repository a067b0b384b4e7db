"""Synthetic training clips and hostile dataset zips, for the training tests and bench/attacks.py."""

from __future__ import annotations

import io
import struct
import zipfile

import av
import numpy as np

COLOUR = (220, 40, 200)  # every training clip's background: what a LoRA trained on them should pull towards


def clip(k: int, frames: int = 12, size: int = 64, colour=COLOUR) -> bytes:
    """A small H.264 MP4: a flat `colour` wall with a white bar sliding right (clip k starts it elsewhere)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            frame = np.zeros((size, size, 3), np.uint8)
            frame[:] = colour
            x = (i * 4 + k * 16) % size
            frame[:, x:x + 8] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


CAPTION = "a magenta wall with a white bar sliding across"


def dataset_zip(path, clips: int = 4) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for k in range(clips):
            zf.writestr(f"clips/clip{k}.mp4", clip(k))
            zf.writestr(f"clips/clip{k}.txt", f"{CAPTION}, take {k}")
    return str(path)


# ------------------------------------------------------------------------------------------ hostile zips

def _zip(entries: dict[str, bytes], compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buf.getvalue()


def bomb_by_ratio() -> bytes:
    """50 MB of zeros in ~50 KB, declared honestly: refused from the declared ratio."""
    return _zip({"clip0.mp4": b"\0" * (50 * 1024 * 1024), "clip0.txt": b"x"}, zipfile.ZIP_DEFLATED)


def bomb_by_declared_size(total_mb: int = 3000) -> bytes:
    """Members whose declared sizes add up past the dataset limit (headers patched; no data behind them)."""
    data = _zip({f"clip{k}.mp4": b"v" * 1000 for k in range(40)} | {f"clip{k}.txt": b"x" for k in range(40)})
    return _patch_sizes(data, lambda name, size: total_mb * 1024 * 1024 // 40 if name.endswith(b".mp4") else size)


def bomb_by_actual_size() -> bytes:
    """A member declared as 1 KB that inflates to 20 MB: caught while reading, past its declared size."""
    data = _zip({"clip0.mp4": b"\0" * (20 * 1024 * 1024), "clip0.txt": b"x"}, zipfile.ZIP_DEFLATED)
    return _patch_sizes(data, lambda name, size: 1024 if name.endswith(b".mp4") else size)


def _patch_sizes(data: bytes, new_size) -> bytes:
    """Rewrite the uncompressed size of every member, in the local headers and the central directory."""
    out = bytearray(data)
    i = 0
    while (i := out.find(b"PK\x03\x04", i)) >= 0:  # local file header: size at 22, name length at 26
        n = struct.unpack_from("<H", out, 26 + i)[0]
        name = bytes(out[i + 30:i + 30 + n])
        struct.pack_into("<I", out, i + 22, new_size(name, struct.unpack_from("<I", out, i + 22)[0]))
        i += 30
    i = 0
    while (i := out.find(b"PK\x01\x02", i)) >= 0:  # central directory: size at 24, name length at 28
        n = struct.unpack_from("<H", out, 28 + i)[0]
        name = bytes(out[i + 46:i + 46 + n])
        struct.pack_into("<I", out, i + 24, new_size(name, struct.unpack_from("<I", out, i + 24)[0]))
        i += 46
    return bytes(out)


def traversal() -> bytes:
    return _zip({"../../etc/evil.mp4": b"v", "../../etc/evil.txt": b"x"})


def many_entries(count: int = 100_000) -> bytes:
    return _zip({f"f{k}.txt": b"" for k in range(count)})


def not_a_video() -> bytes:
    return _zip({"clip0.mp4": b"v", "clip0.txt": b"x", "payload.exe": b"MZ"})


HOSTILE = {  # name -> (builder, the file the refusal must name, status)
    "bomb_by_ratio": (bomb_by_ratio, "clip0.mp4", 413),
    "bomb_by_declared_size": (bomb_by_declared_size, "clip", 413),
    "bomb_by_actual_size": (bomb_by_actual_size, "clip0.mp4", 422),
    "path_traversal": (traversal, "../../etc/evil.mp4", 422),
    "100k_entries": (many_entries, "100000 entries", 413),
    "non_video_file": (not_a_video, "payload.exe", 422),
}
