"""Handing results out: streamed from the file, never copied per client; event streams woken on change.

A finished video lives in one file. A response that carries it as a data URI (`/generate`, a job's
view, its last server-sent event) is streamed: the JSON around it is written as usual, and the video
goes out as base64 encoded chunk by chunk as it is read (in a thread), so twenty slow clients of a
45 MB result hold twenty 48 KB chunks, not twenty copies of the file and its encoding. The file is
opened before the response starts: a video that expires meanwhile is still sent whole (the open file
outlives its name), and one already gone is a JSON 410, never a broken response.

`Changes` wakes coroutines waiting on a job when a worker thread changes it (a step, a status):
waiting event streams and `/generate` calls cost nothing between changes, however many there are.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
import time
from collections.abc import AsyncIterator

from fastapi.responses import JSONResponse, StreamingResponse

from ..media.encode import FORMATS
from .jobs import Job

VIDEO = "\x00ltx2-video\x00"  # stands for the job's video (as a data URI) in a view until it is streamed
# Stands for the seconds spent encoding that video, known only once it is streamed (after it in the JSON).
ENCODE_SECONDS = "\x00ltx2-encode-seconds\x00"
CHUNK = 3 * 16 * 1024  # a multiple of 3: each chunk's base64 stands alone; small, so a client holds little
MIMES = {f.extension: f.mime for f in FORMATS.values()}  # a stored video's type, from its file name


def video_mime(path: str) -> str:
    return MIMES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")


def _dumps(content) -> str:
    # As JSONResponse renders: compact, UTF-8.
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class StreamedJSON:
    """`content` rendered as JSON, with its one VIDEO placeholder replaced by the video file as a data
    URI, in parts. `open()` first (it may raise OSError: the video is gone), then iterate `parts()`.
    An ENCODE_SECONDS placeholder after the video becomes the seconds spent base64-encoding it; the
    length is then not known in advance (`length` is None)."""

    def __init__(self, content, video_path: str | None):
        self.text = _dumps(content)
        self.video_path = video_path
        self.file = None
        self.length: int | None = len(self.text.encode())

    async def open(self) -> StreamedJSON:
        marker = _dumps(VIDEO)
        if marker in self.text:
            self.file = await asyncio.to_thread(open, self.video_path, "rb")
            size = os.fstat(self.file.fileno()).st_size
            head, _, tail = self.text.partition(marker)
            self.prefix = f'{head}"data:{video_mime(self.video_path)};base64,'.encode()
            self.suffix = f'"{tail}'
            timed = _dumps(ENCODE_SECONDS) in self.suffix
            self.length = None if timed else len(self.prefix) + 4 * ((size + 2) // 3) + len(self.suffix.encode())
        return self

    async def parts(self) -> AsyncIterator[bytes]:
        if self.file is None:
            yield self.text.encode()
            return
        spent = 0.0
        try:
            yield self.prefix
            while chunk := await asyncio.to_thread(self.file.read, CHUNK):
                start = time.perf_counter()
                encoded = base64.b64encode(chunk)
                spent += time.perf_counter() - start
                yield encoded
            yield self.suffix.replace(_dumps(ENCODE_SECONDS), repr(round(spent, 4))).encode()
        finally:
            self.file.close()


async def json_response(content, job: Job | None = None, status_code: int = 200, headers: dict | None = None,
                        gone=None):
    """A JSONResponse, or (when `content` holds VIDEO) a streamed one of exactly the same bytes.
    `gone(job)` answers when the video is no longer there."""
    if job is None or _dumps(VIDEO) not in _dumps(content):
        return JSONResponse(status_code=status_code, content=content, headers=headers)
    body = StreamedJSON(content, job.video_path)
    try:
        await body.open()
    except OSError:
        return gone(job)
    length = {"Content-Length": str(body.length)} if body.length is not None else {}
    return StreamingResponse(body.parts(), status_code=status_code, media_type="application/json",
                             headers={**length, **(headers or {})})


class Changes:
    """Wakes coroutines waiting on a job when a worker thread changes it. `notify` is the JobManager's
    `on_change` hook; notifications for a job nobody waits on cost a dictionary lookup."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def notify(self, job: Job) -> None:
        """From any thread. Bursts (a step every few ms) become one wake-up per loop iteration."""
        if self.loop is None or job.id not in self._waiters:
            return
        with self._lock:
            if job.id in self._pending:
                return
            self._pending.add(job.id)
        try:
            self.loop.call_soon_threadsafe(self._wake, job.id)
        except RuntimeError:  # the loop has closed: the server is stopping
            pass

    def _wake(self, job_id: str) -> None:
        with self._lock:
            self._pending.discard(job_id)
        for event in self._waiters.get(job_id, ()):
            event.set()

    async def changed(self, job: Job, seen: int, timeout: float | None) -> bool:
        """Wait until `job.version` is no longer `seen`; False if `timeout` passed first."""
        if job.version != seen:
            return True
        event = asyncio.Event()
        waiters = self._waiters.setdefault(job.id, set())
        waiters.add(event)
        try:
            if job.version != seen:  # changed between the first look and registering
                return True
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                return False
            return True
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(job.id, None)

    async def until_done(self, job: Job) -> None:
        while True:
            seen = job.version  # read before `done`: the manager sets `done`, then bumps the version
            if job.done.is_set():
                return
            await self.changed(job, seen, 60)
