"""Hostile inputs and hostile clients, shared by the attack tests and bench/attacks.py / bench/soak.py.

Media that is small on the wire and expensive to decode, raw-socket clients that trickle or hold
connections, a loopback HTTP server that drips its body, and readings of a server process's
memory, file descriptors, threads and CPU time from /proc.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import threading
import time
import wave
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---------------------------------------------------------------------------------------------- media


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def flac_bomb(sample_rate: int = 1, frames: int = 1, block: int = 65535) -> bytes:
    """A valid FLAC of ~55 bytes: a STREAMINFO declaring `sample_rate` Hz and no length, then
    `frames` CONSTANT frames of `block` samples each. At 1 Hz one frame is 18 hours of audio, which
    resampled to 16 kHz is a billion samples (4 GB of float32) from 55 bytes."""
    info = struct.pack(">HH", 16, 65535) + b"\0" * 6  # block sizes; frame sizes unknown
    info += ((sample_rate << 44) | (15 << 36)).to_bytes(8, "big") + b"\0" * 16  # mono, 16 bit, length unknown
    out = b"fLaC" + bytes([0x80, 0, 0, len(info)]) + info
    for n in range(frames):
        head = bytes([0xFF, 0xF8, 0x70, 0x00, n]) + (block - 1).to_bytes(2, "big")
        frame = head + bytes([_crc8(head)]) + b"\x00" + (1000).to_bytes(2, "big")  # one constant subframe
        out += frame + _crc16(frame).to_bytes(2, "big")
    return out


def jpeg_scan_bomb(scans: int, side: int = 7000) -> bytes:
    """A progressive grayscale JPEG of side x side pixels (49 MP by default) with `scans` extra AC
    scans. Each scan is ~120 bytes on the wire and makes the decoder visit every 8x8 block again,
    so decoding time grows linearly with the scan count (about 5 ms a scan at 49 MP here)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (side, side), 128).save(buf, "JPEG", progressive=True, quality=50)
    data = buf.getvalue()
    segments = _jpeg_segments(data)
    # The first AC scan that starts a band (Ah = 0), with the Huffman table segment just before it.
    for index, (marker, start, end) in enumerate(segments):
        if marker == 0xDA and data[start + 5 + 2 * data[start + 4]] > 0:
            table_start = segments[index - 1][1] if segments[index - 1][0] == 0xC4 else start
            block = data[table_start:end]
            return data[:end] + block * scans + data[end:]
    raise AssertionError("no AC scan found")


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append((marker, i, i + 2))
            break
        end = i + 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker == 0xDA:  # entropy-coded data runs to the next marker that is not a stuffed 0xFF00 or RSTn
            while not (data[end] == 0xFF and data[end + 1] != 0 and not 0xD0 <= data[end + 1] <= 0xD7):
                end += 1
        out.append((marker, i, end))
        i = end
    return out


def png(width: int = 48, height: int = 32, color=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, "PNG")
    return buf.getvalue()


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


def audio_only_mp4() -> bytes:
    """An MP4 holding one AAC stream and no video stream."""
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        sound = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        frame.sample_rate, frame.pts = 48000, 0
        for packet in [*sound.encode(frame), *sound.encode()]:
            out.mux(packet)
    return buf.getvalue()


def wav(seconds: float, rate: int = 16_000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(b"\x10\x00" * int(seconds * rate))
    return buf.getvalue()


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def many_keys_body(keys: int) -> bytes:
    """A JSON request with a valid prompt and `keys` unknown fields."""
    body = {f"k{i}": 1 for i in range(keys)}
    body["prompt"] = "x"
    return json.dumps(body).encode()


# ---------------------------------------------------------------------------------------------- clients


def host_port(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def open_idle(base: str, count: int) -> list[socket.socket]:
    """`count` connections that send nothing; stops early (returning what it has) when refused."""
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(host_port(base), timeout=5))
        except OSError:
            break
    return socks


def closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closes `sock` (reading and discarding what it sends), or None."""
    start = time.monotonic()
    deadline = start + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return None
        except OSError:
            return time.monotonic() - start
        if chunk == b"":
            return time.monotonic() - start
    return None


def trickle(sock: socket.socket, data: bytes, interval: float, until: float) -> int:
    """Send `data` one byte every `interval` s until sent, the server hangs up, or `until` (monotonic)."""
    sent = 0
    for byte in data:
        if time.monotonic() > until:
            break
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            break
        sent += 1
        time.sleep(interval)
    return sent


def read_response(sock: socket.socket, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length body: (status, headers, body)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", 0))
    while len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


# ---------------------------------------------------------------------------------------------- a dripping URL


class DripServer:
    """A loopback HTTP server whose every GET answers a body one byte every `interval` seconds."""

    def __init__(self, body: bytes, interval: float = 0.5, content_type: str = "image/png"):
        drip = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for byte in body:
                    if drip.stopped.is_set():
                        return
                    try:
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    except OSError:
                        return
                    drip.stopped.wait(interval)

        self.stopped = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slow.png"

    def close(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()


# ---------------------------------------------------------------------------------------------- the process


def status_field(pid: int, name: str) -> int:
    """A /proc/<pid>/status value in kB (VmHWM, VmRSS) or a count (Threads)."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM afresh from the current RSS (Linux 4.0+, needs to own the process)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb(pid: int) -> float:
    return status_field(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return status_field(pid, "VmRSS") / 1024


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    return status_field(pid, "Threads")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process (all threads) so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []
