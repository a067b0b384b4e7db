"""Jobs: one queue in front of the one GPU, records that survive a restart, cancellation.

Every video, synchronous (`POST /generate`) or not (`POST /jobs`), is a job. A job is recorded in
SQLite (standard library) under the output directory the moment it is accepted, so nothing
accepted is lost: after a restart, jobs that were queued run, a job that was running is reported
failed with the reason, and finished videos stay downloadable until their time-to-live.

One worker thread runs jobs one at a time (the transformer's activations for one video fill the
GPU). Waiting jobs are bounded: beyond `queue_size`, a submission is refused with an estimate of
when to retry. A running job is cancelled at its next denoising step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .faults import free_gpu_memory, is_out_of_memory, out_of_memory_body
from ..media.encode import output_format
from ..pipelines.generate import OutputRejected
from ..schema import (
    ErrorResponse,
    GenerateRequest,
    InvalidRequest,
    generation_failed_body,
)

log = logging.getLogger("ltx2.jobs")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


class QueueFull(Exception):
    def __init__(self, retry_after: int, waiting: int):
        super().__init__(f"the queue is full ({waiting} jobs waiting); retry in about {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    pass


class JobCancelled(Exception):
    """Raised from the step callback: the job stops at the next denoising step."""


class JobTimedOut(Exception):
    pass


@dataclass
class Job:
    id: str
    request: GenerateRequest
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    step: int = 0
    total: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    error: dict | None = None  # ErrorResponse body
    error_status: int | None = None  # the HTTP status /generate answers with for this error
    result: dict | None = None  # the response without the video
    video_path: str | None = None
    expired: bool = False
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    version: int = 0  # bumped on every change, for event streams

    def view(self, position: int | None = None) -> dict[str, Any]:
        """What GET /jobs/{id} shows."""
        return {
            "id": self.id,
            "status": self.status,
            "position": position,
            "step": self.step,
            "total": self.total,
            "created": self.created,
            "started": self.started,
            "finished": self.finished,
            "timings": self.timings,
            "error": self.error,
            "result": self.result,
            "video_available": self.status == SUCCEEDED and not self.expired and self.video_path is not None,
        }


class JobStore:
    """SQLite records of every job. Writes are few (state changes, not every step) and serialised."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # a reader never waits for the worker's write
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT, created REAL, started REAL,"
            " finished REAL, request TEXT, step INTEGER, total INTEGER, timings TEXT, error TEXT,"
            " error_status INTEGER, result TEXT, video_path TEXT, expired INTEGER DEFAULT 0)"
        )
        self._lock = threading.Lock()

    def save(self, job: Job) -> None:
        row = (job.id, job.status, job.created, job.started, job.finished,
               job.request.model_dump_json(), job.step, job.total, json.dumps(job.timings),
               json.dumps(job.error) if job.error else None, job.error_status,
               json.dumps(job.result) if job.result else None, job.video_path, int(job.expired))
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", row)

    def load_all(self) -> list[Job]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created").fetchall()
        jobs = []
        for r in rows:
            job = Job(id=r[0], request=GenerateRequest.model_validate_json(r[5]), status=r[1], created=r[2],
                      started=r[3], finished=r[4], step=r[6] or 0, total=r[7] or 0,
                      timings=json.loads(r[8] or "{}"), error=json.loads(r[9]) if r[9] else None,
                      error_status=r[10], result=json.loads(r[11]) if r[11] else None, video_path=r[12],
                      expired=bool(r[13]))
            if job.status in TERMINAL:
                job.done.set()
            jobs.append(job)
        return jobs

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class JobManager:
    """The queue, the worker thread and the records. `run_job(job, on_step)` does the work and
    returns (result dict without the video, MP4 bytes); it is given by the app (and by tests)."""

    def __init__(self, store: JobStore, output_dir: str, run_job, *, queue_size: int = 8,
                 job_timeout: float = 1800.0, result_ttl: float = 86400.0, output_max_bytes: int = 20 * 10**9,
                 on_finished=None):
        self.store = store
        self.videos = os.path.join(output_dir, "videos")
        os.makedirs(self.videos, exist_ok=True)
        self.run_job = run_job
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self.result_ttl = result_ttl
        self.output_max_bytes = output_max_bytes
        self.on_finished = on_finished  # metrics hook: on_finished(job)
        self.jobs: dict[str, Job] = {}
        self.waiting: deque[str] = deque()
        self.running: Job | None = None
        self.accepting = True
        self._cv = threading.Condition()
        self._durations: deque[float] = deque(maxlen=20)
        self._thread: threading.Thread | None = None
        self._recover()

    # -- lifecycle ---------------------------------------------------------------------------

    def _recover(self) -> None:
        """Load the records: queued jobs queue again; a job that was running did not finish."""
        for job in self.store.load_all():
            self.jobs[job.id] = job
            if job.status == RUNNING:
                self._finish(job, FAILED, error=ErrorResponse(
                    error="the server stopped while this job was running (restart or crash); submit it again",
                    code="interrupted").model_dump(), error_status=500)
            elif job.status == QUEUED:
                self.waiting.append(job.id)
        if self.jobs:
            log.info(json.dumps({"event": "jobs_recovered", "queued": len(self.waiting), "known": len(self.jobs)}))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ltx2-gpu", daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Refuse new jobs, let the running one finish for up to `grace` seconds, then cancel it.
        Queued jobs stay queued in the store and run after the next start."""
        with self._cv:
            self.accepting = False
            self._cv.notify_all()
        running = self.running
        if running is not None and not running.done.wait(grace):
            log.warning(json.dumps({"event": "job_cancelled_at_shutdown", "job": running.id}))
            running.cancel.set()
            running.done.wait(30)
        if self._thread is not None:
            self._thread.join(5)

    # -- submitting and cancelling ----------------------------------------------------------

    def submit(self, request: GenerateRequest) -> Job:
        with self._cv:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down; retry on another instance or later")
            if len(self.waiting) >= self.queue_size:
                raise QueueFull(self.retry_after(), len(self.waiting))
            job = Job(id=uuid.uuid4().hex, request=request)
            self.jobs[job.id] = job
            self.store.save(job)
            self.waiting.append(job.id)
            self._cv.notify_all()
        log.info(json.dumps({"event": "job_queued", "job": job.id, "position": self.position(job.id)}))
        return job

    def cancel(self, job_id: str) -> Job:
        with self._cv:
            job = self.jobs[job_id]
            if job.status == QUEUED:
                self.waiting.remove(job_id)
                self._finish(job, CANCELLED)
            elif job.status == RUNNING:
                job.cancel.set()  # the worker stops it at the next step
        log.info(json.dumps({"event": "job_cancel_requested", "job": job_id, "status": job.status}))
        return job

    def delete(self, job_id: str) -> None:
        """Forget a finished job: its record and its video go (DELETE /v1/videos/{id})."""
        with self._cv:
            job = self.jobs.pop(job_id)
        if job.video_path:
            with contextlib.suppress(FileNotFoundError):
                os.remove(job.video_path)
        self.store.delete(job_id)

    def position(self, job_id: str) -> int | None:
        """0 for the running job, 1.. for waiting ones, None when finished."""
        with self._cv:
            job = self.jobs.get(job_id)
            if job is None or job.status in TERMINAL:
                return None
            if job.status == RUNNING:
                return 0
            try:
                return self.waiting.index(job_id) + 1
            except ValueError:
                return None

    def retry_after(self) -> int:
        """Seconds until a waiting slot frees up: when the running job ends, the first waiting one
        starts. Estimated from the recent average job time and how long the running one has run."""
        average = sum(self._durations) / len(self._durations) if self._durations else 30.0
        running = self.running
        left = average - (time.time() - running.started) if running and running.started else average
        return max(1, int(round(left)))

    @property
    def depth(self) -> int:
        return len(self.waiting)

    # -- the worker -------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self.waiting and self.accepting:
                    self._cv.wait(timeout=60)
                    if not self.waiting:
                        self.cleanup()
                if not self.accepting:
                    return
                job = self.jobs[self.waiting.popleft()]
                job.status, job.started = RUNNING, time.time()
                self.running = job
                job.version += 1
            self.store.save(job)
            log.info(json.dumps({"event": "job_started", "job": job.id}))
            try:
                self._run(job)
            finally:
                with self._cv:
                    self.running = None
                self.cleanup()

    def _run(self, job: Job) -> None:
        deadline = job.started + self.job_timeout

        def on_step(step: int, total: int) -> None:
            if job.cancel.is_set():
                raise JobCancelled()
            if time.time() > deadline:
                raise JobTimedOut()
            job.step, job.total = step, total
            job.version += 1

        try:
            result, mp4 = self.run_job(job, on_step)
        except JobCancelled:
            self._finish(job, CANCELLED)
        except JobTimedOut:
            self._finish(job, FAILED, error=ErrorResponse(
                error=f"the job ran longer than {self.job_timeout:.0f} s (LTX2_JOB_TIMEOUT) and was stopped",
                code="timeout").model_dump(), error_status=504)
        except InvalidRequest as exc:
            self._finish(job, FAILED, error=exc.body(), error_status=exc.status)
        except OutputRejected as exc:
            self._finish(job, FAILED, error=ErrorResponse(error=str(exc), code="invalid_output").model_dump(),
                         error_status=500)
        except Exception as exc:  # noqa: BLE001 - a failed job must not stop the worker
            if is_out_of_memory(exc):
                self._finish(job, FAILED, error=out_of_memory_body(job.request, exc), error_status=507)
            else:
                log.exception("job %s failed", job.id)
                self._finish(job, FAILED, error=generation_failed_body(exc), error_status=500)
        else:
            path = os.path.join(self.videos, job.id + output_format(job.request.video_output_type).extension)
            with open(path + ".part", "wb") as fh:
                fh.write(mp4)
            os.replace(path + ".part", path)  # never a half-written file under the served name
            job.video_path = path
            # Stages a pipeline did not run (two-stage's, for a one-stage video) are null in the response.
            job.timings = {k: v for k, v in result.get("timings", {}).items() if v is not None}
            self._finish(job, SUCCEEDED, result=result)
        finally:
            free_gpu_memory()  # after a failure especially: the next job starts with the memory back

    def _finish(self, job: Job, status: str, *, error: dict | None = None, error_status: int | None = None,
                result: dict | None = None) -> None:
        # A finished job is never run again: drop its inputs (up to ~100 MB of base64) from memory and disk.
        inputs = {name: None for name in ("image_start", "image_end", "audio") if getattr(job.request, name)}
        if inputs:
            job.request = job.request.model_copy(update=inputs)
        job.status, job.finished = status, time.time()
        job.error, job.error_status, job.result = error, error_status, result
        job.version += 1
        if job.started is not None and status == SUCCEEDED:
            self._durations.append(job.finished - job.started)
        self.store.save(job)
        job.done.set()
        log.info(json.dumps({"event": f"job_{status}", "job": job.id,
                             "seconds": round(job.finished - (job.started or job.created), 3),
                             **({"error": error.get("error")} if error else {})}))
        if self.on_finished is not None:
            self.on_finished(job)

    # -- files --------------------------------------------------------------------------------

    def cleanup(self, now: float | None = None) -> None:
        """Remove videos past their time-to-live, then the oldest while over the size cap."""
        now = time.time() if now is None else now
        kept = []
        for job in list(self.jobs.values()):
            if job.status != SUCCEEDED or job.expired or not job.video_path:
                continue
            if job.finished is not None and now - job.finished > self.result_ttl:
                self._expire(job)
            elif os.path.exists(job.video_path):
                kept.append(job)
            else:
                self._expire(job)
        kept.sort(key=lambda j: j.finished or 0)
        total = sum(os.path.getsize(j.video_path) for j in kept)
        while kept and total > self.output_max_bytes:
            oldest = kept.pop(0)
            total -= os.path.getsize(oldest.video_path)
            self._expire(oldest)

    def video_expired(self, job: Job) -> bool:
        """Checked when a video is served: past its time-to-live it expires now, not at the next sweep."""
        if not job.expired and job.finished is not None and time.time() - job.finished > self.result_ttl:
            self._expire(job)
        return job.expired

    def _expire(self, job: Job) -> None:
        if job.video_path:
            # The sweep (worker thread) and a download (event loop) may both get here.
            with contextlib.suppress(FileNotFoundError):
                os.remove(job.video_path)
        job.expired = True
        job.version += 1
        self.store.save(job)
        log.info(json.dumps({"event": "job_video_expired", "job": job.id}))
