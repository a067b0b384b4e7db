"""Every shell and Python example in README.md and llms.txt, run as written against a live tiny server.

The examples are read from the files themselves, so they cannot drift from what is tested:
- every fenced ```bash, ```sh or ```python block is an example;
- a block that cannot run here (installs, Docker, real weights, a GPU, a server in the foreground) has
  `<!-- example: skip: <why> -->` on the line right before its fence; there are few, and each says why.

How each one runs (the only liberties taken, so that they run unattended):
- the server's address: `http://127.0.0.1:8000`, `http://localhost:8000` and `http://<SERVER>:8000` become the
  live server's (one tiny `python server.py` for the module, its `--models-dir` holding the LoRA files the
  LoRA example names);
- in a fresh folder holding what the examples name, at real sizes: `photo.jpg` (a 1 MB JPEG), `voice.wav` and
  `rain.wav` (5 s of 22.05 kHz speech-like WAV, ~220 KB, the size that broke `curl -d "...$WAV"`),
  `first.png`, `last.png`, and links to the clone's `handler.py`, `server.py` and `test_input.json`;
- shell blocks run under `bash -e -o pipefail`, with `curl` made to fail on an HTTP error (`--fail-with-body`)
  so a 4xx/5xx answer fails the example; Python blocks run in a fresh interpreter.
"""

from __future__ import annotations

import io
import math
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from servers import ROOT, start_server, stop_server

DOCS = ("README.md", "llms.txt")
LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
SKIP = re.compile(r"^<!-- example: skip: (?P<why>.+\S) -->$")
ADDRESSES = ("http://127.0.0.1:8000", "http://localhost:8000", "http://<SERVER>:8000")
MAX_SKIPPED = 12  # the blocks that cannot run here stay few
EXAMPLE_TIMEOUT = 240


@dataclass(frozen=True)
class Example:
    doc: str
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.doc}:{self.line}"


def examples(doc: str) -> list[Example]:
    found, lines = [], (ROOT / doc).read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w+)\s*$", lines[i])
        if fence is None:
            if lines[i].startswith("```"):  # an untagged or other block: skip to its end
                i += 1
                while i < len(lines) and not lines[i].startswith("```"):
                    i += 1
            i += 1
            continue
        start, lang = i, fence.group(1)
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in LANGS:
            marker = SKIP.match(lines[start - 1]) if start else None
            found.append(Example(doc, start + 1, LANGS[lang], "\n".join(body) + "\n",
                                 marker.group("why") if marker else None))
    return found


ALL = [example for doc in DOCS for example in examples(doc)]
RUNNABLE = [example for example in ALL if example.skip is None]


def test_examples_are_found_and_skips_are_few_and_explained():
    assert len(RUNNABLE) >= 15, [example.name for example in RUNNABLE]
    skipped = [example for example in ALL if example.skip]
    assert len(skipped) <= MAX_SKIPPED, [(example.name, example.skip) for example in skipped]
    for doc in DOCS:  # a marker that is not right before a fence would silently run its block
        lines = (ROOT / doc).read_text().splitlines()
        for number, line in enumerate(lines):
            if line.startswith("<!-- example"):
                assert SKIP.match(line), f"{doc}:{number + 1}: malformed marker {line!r}"
                assert number + 1 < len(lines) and lines[number + 1].startswith("```"), \
                    f"{doc}:{number + 1}: the marker is not right before a fence"


def test_no_example_passes_a_file_as_base64_on_the_command_line():
    """`curl -d "...$(base64 ...)"` or `-d "...$IMG"` fails above ~96 KB (Argument list too long): inputs go
    through a request file or a pipe."""
    for example in ALL:
        for command in re.split(r"(?<!\\)\n", example.code):  # a command with its continued lines
            if command.lstrip().startswith("curl") or " curl " in command:
                assert not re.search(r'(-d|--data[-\w]*)\s+"(?:[^"\\]|\\.)*\$', command), \
                    f"{example.name}: a file's base64 on curl's command line:\n{command}"


# ---- inputs at real sizes ------------------------------------------------------------------------


def speech_wav(seconds: float = 5.0, rate: int = 22050) -> bytes:
    """Mono 16-bit PCM with a voice's shape: a 120-220 Hz gliding fundamental with harmonics, in syllables."""
    frames = bytearray()
    for n in range(int(seconds * rate)):
        t = n / rate
        f0 = 170 + 50 * math.sin(2 * math.pi * 0.7 * t)
        envelope = max(0.0, math.sin(2 * math.pi * 3.0 * t)) ** 0.5  # ~6 syllables a second
        sample = sum(math.sin(2 * math.pi * f0 * k * t) / k for k in (1, 2, 3, 5)) * 0.3 * envelope
        frames += struct.pack("<h", int(max(-1.0, min(1.0, sample)) * 32000))
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(frames), b"WAVE", b"fmt ", 16, 1, 1, rate,
                         rate * 2, 2, 16, b"data", len(frames))
    return header + bytes(frames)


def photo_jpeg(target: int = 1_000_000) -> bytes:
    """A 1 MB JPEG: a smooth photo-like gradient with fine grain, 1600x1200, at the quality that reaches 1 MB."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:1200, 0:1600].astype(np.float32)
    base = np.stack([x / 1600 * 200, y / 1200 * 180, (x + y) / 2800 * 160], axis=-1) + 30
    pixels = np.clip(base + rng.normal(0, 18, base.shape), 0, 255).astype(np.uint8)  # one picture, each quality
    for quality in range(80, 101, 2):  # 60-78 come out well under 1 MB for this grain: not tried
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "JPEG", quality=quality)
        if out.tell() >= target:
            return out.getvalue()
    raise AssertionError("no quality reaches 1 MB")


def png(colour) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (640, 360), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, model):
    """The LoRA files the LoRA and video-to-video examples name, written for the tiny preset's layers."""
    from lora_files import write_lora

    root = tmp_path_factory.mktemp("doc-models")
    (root / "loras").mkdir()
    write_lora(root / "loras" / "my-style.safetensors", model, seed=1)
    write_lora(root / "loras" / "ltx-2-19b-lora-camera-control-dolly-in.safetensors", model, seed=2)
    write_lora(root / "loras" / "ltx-2-19b-ic-lora-canny-control.safetensors", model, seed=3)  # video to video
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory, models_dir):
    out = tmp_path_factory.mktemp("doc-server")
    proc, base = start_server(out / "output", out / "server.log", "--models-dir", str(models_dir))
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, bytes]:
    wav = speech_wav()
    return {"photo.jpg": photo_jpeg(), "voice.wav": wav, "rain.wav": wav, "first.png": png((200, 80, 40)),
            "last.png": png((40, 90, 200))}


def test_the_inputs_are_real_size(inputs):
    assert len(inputs["photo.jpg"]) >= 1_000_000
    assert len(inputs["voice.wav"]) >= 220_000  # 5 s: over curl's ~96 KB command-line limit as base64


def workdir(tmp_path: Path, inputs: dict[str, bytes]) -> Path:
    for name, data in inputs.items():
        (tmp_path / name).write_bytes(data)
    for name in ("handler.py", "server.py", "test_input.json"):
        (tmp_path / name).symlink_to(ROOT / name)
    return tmp_path


def localize(code: str, base: str) -> str:
    for address in ADDRESSES:
        code = code.replace(address, base)
    return code


PRELUDE = 'curl() { command curl --fail-with-body "$@"; }\n'


@pytest.mark.parametrize("example", RUNNABLE, ids=lambda example: example.name)
def test_example_runs_as_written(example, server, inputs, tmp_path):
    cwd = workdir(tmp_path, inputs)
    code = localize(example.code, server)
    env = {**os.environ, "LTX2_DEVICE": "cpu", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("LTX2_API_KEY", None)
    command = ["bash", "-e", "-o", "pipefail", "-c", PRELUDE + code] if example.lang == "bash" \
        else [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT)
    assert done.returncode == 0, (f"{example.name} failed (exit {done.returncode}):\n{code}\n--- stdout\n"
                                  f"{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}")
    for path in sorted(cwd.iterdir()):  # what it saved is a playable video, not an error page
        if path.suffix in (".mp4", ".webm", ".mov", ".gif"):
            import av

            with av.open(str(path)) as container:
                assert next(container.decode(video=0)).width > 0, f"{example.name}: {path.name} holds no video"
