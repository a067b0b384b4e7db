"""Jobs: one queue in front of the one GPU, records that survive a restart, cancellation.

Every video, synchronous (`POST /generate`) or not (`POST /jobs`), is a job. A job is recorded in
SQLite (standard library) under the output directory the moment it is accepted, so nothing
accepted is lost: after a restart, jobs that were queued run, a job that was running is reported
failed with the reason, and finished videos stay downloadable until their time-to-live.

One worker thread runs jobs one at a time (the transformer's activations for one video fill the
GPU). Waiting jobs are bounded: beyond `queue_size`, a submission is refused with an estimate of
when to retry. A running job is cancelled at its next denoising step.

The worker never dies silently: whatever goes wrong in a job (the model, the disk, the database, our
own code) fails that job with a JSON error and the worker takes the next one. A supervisor thread
restarts a worker that died anyway (a BaseException) and replaces one stuck past its job's deadline,
and `health()` says whether jobs can run at all.
"""

from __future__ import annotations

import errno
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


class StorageError(Exception):
    """The output directory or the job database refused a write: a full disk, a read-only or missing
    folder, no file descriptors left. `action` says what could not be done, for the client."""

    def __init__(self, action: str, cause: BaseException | str):
        self.action = action
        self.reason = cause if isinstance(cause, str) else _reason(cause)
        super().__init__(f"{action}: {self.reason}")

    def body(self) -> dict:
        return ErrorResponse(error=f"the server could not {self.action} ({self.reason}); retry when its storage "
                             "is fixed (GET /health says when)", code="storage_error").model_dump()


def _reason(exc: BaseException) -> str:
    """An OS or SQLite error without the server's paths: the client needs the kind, not our layout."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    return f"{type(exc).__name__}: {exc}"


STORAGE_ERROR_STATUS = 507  # Insufficient Storage
# Errors of the machine, not of the job or the model: wherever they strike (writing the video, or a
# library opening a file mid-generation), the job fails as a storage error naming the resource.
RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.EACCES,
                   errno.EPERM, errno.ENOTDIR, errno.EIO}


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
    """The queue, the worker thread, its supervisor and the records. `run_job(job, on_step)` does the
    work and returns (result dict without the video, MP4 bytes); it is given by the app (and by tests)."""

    def __init__(self, store: JobStore, output_dir: str, run_job, *, queue_size: int = 8,
                 job_timeout: float = 1800.0, result_ttl: float = 86400.0, output_max_bytes: int = 20 * 10**9,
                 on_finished=None, stuck_grace: float = 300.0, supervise_every: float = 1.0):
        self.store = store
        self.videos = os.path.join(output_dir, "videos")
        os.makedirs(self.videos, exist_ok=True)
        self.run_job = run_job
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self.result_ttl = result_ttl
        self.output_max_bytes = output_max_bytes
        self.on_finished = on_finished  # metrics hook: on_finished(job)
        # A job still inside a stage this long after its deadline is stuck there (a hung driver call,
        # a network file system that stopped answering): the supervisor fails it and replaces the worker.
        self.stuck_grace = stuck_grace
        self.supervise_every = supervise_every
        self.jobs: dict[str, Job] = {}
        self.waiting: deque[str] = deque()
        self.running: Job | None = None
        self.accepting = True
        self.restarts = 0  # workers replaced by the supervisor, since start
        self.storage_problem: str | None = None  # the last write that failed, until a probe succeeds
        self._failed_write_bytes = 0  # how much the failed write needed: the probe asks for as much
        self._unsaved: set[str] = set()  # jobs whose latest state is not in the database yet
        self._cv = threading.Condition()
        self._durations: deque[float] = deque(maxlen=20)
        self._thread: threading.Thread | None = None
        self._abandoned: list[threading.Thread] = []  # stuck workers, left to finish on their own
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
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
        self._start_worker()
        self._supervisor = threading.Thread(target=self._supervise, name="ltx2-supervisor", daemon=True)
        self._supervisor.start()

    def _start_worker(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="ltx2-gpu", daemon=True)
        self._thread.start()

    def stop(self, grace: float) -> None:
        """Refuse new jobs, let the running one finish for up to `grace` seconds, then cancel it.
        Queued jobs stay queued in the store and run after the next start."""
        with self._cv:
            self.accepting = False
            self._cv.notify_all()
        self._stopping.set()
        running = self.running
        if running is not None and not running.done.wait(grace):
            log.warning(json.dumps({"event": "job_cancelled_at_shutdown", "job": running.id}))
            running.cancel.set()
            running.done.wait(30)
        if self._thread is not None:
            self._thread.join(5)
        if self._supervisor is not None:
            self._supervisor.join(5)
        self._save_unsaved()

    # -- submitting and cancelling ----------------------------------------------------------

    def submit(self, request: GenerateRequest) -> Job:
        with self._cv:
            if not self.accepting:
                raise ShuttingDown("the server is shutting down; retry on another instance or later")
            if self.storage_problem is not None and not self._probe_storage():
                raise StorageError("accept the job", self.storage_problem or "storage is failing")
            if len(self.waiting) >= self.queue_size:
                raise QueueFull(self.retry_after(), len(self.waiting))
            job = Job(id=uuid.uuid4().hex, request=request)
            try:
                self.store.save(job)  # recorded before it is accepted: nothing accepted is lost
            except (sqlite3.Error, OSError) as exc:
                self._storage_failed("record a job", exc)
                raise StorageError("record the job", exc) from exc
            self.jobs[job.id] = job
            self.waiting.append(job.id)
            self._cv.notify_all()
        log.info(json.dumps({"event": "job_queued", "job": job.id, "position": self.position(job.id)}))
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return self.jobs.get(job_id)

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

    def health(self) -> dict[str, Any]:
        """Whether jobs can run now, and if not, why: the worker's liveness and the storage's state."""
        worker = self._thread
        alive = worker is not None and worker.is_alive()
        running = self.running
        stuck = self._stuck_threads()
        busy = round(time.time() - running.started, 1) if running is not None and running.started else None
        problems = []
        if not alive and not self._stopping.is_set():
            problems.append("the GPU worker is not running (the supervisor restarts it within seconds)")
        if stuck:
            problems.append("a job is stuck past its deadline and still holds its thread; new jobs wait for it")
        if self.storage_problem is not None:
            problems.append(f"storage is failing: {self.storage_problem}")
        return {
            "ready": not problems and self.accepting,
            "problems": problems,
            "worker": {"alive": alive, "restarts": self.restarts, "busy_seconds": busy, "stuck_threads": len(stuck)},
            "storage": {"ok": self.storage_problem is None, "error": self.storage_problem},
        }

    # -- the worker -------------------------------------------------------------------------

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cv:
                while self.accepting and (not self.waiting or self._stuck_threads()):
                    self._cv.wait(timeout=60 if not self._stuck_threads() else 1)
                    if not self.waiting:
                        self._cleanup_safely()
                if not self.accepting or self._thread is not me:
                    return
                job = self.jobs[self.waiting.popleft()]
                job.status, job.started = RUNNING, time.time()
                self.running = job
                job.version += 1
            try:
                self._save(job)
                log.info(json.dumps({"event": "job_started", "job": job.id}))
                self._run(job)
            except Exception as exc:  # noqa: BLE001 - our own handling failed: the job fails, the worker goes on
                log.exception("job %s: handling it failed", job.id)
                self._finish(job, FAILED, error=generation_failed_body(exc), error_status=500)
            # Not in a `finally`: a BaseException that ends this thread leaves `running` set, so the
            # supervisor knows which job died with it.
            with self._cv:
                if self.running is job:
                    self.running = None
                self._cv.notify_all()
            if self._thread is not me:  # replaced by the supervisor while stuck in this job
                log.warning(json.dumps({"event": "stuck_worker_returned", "job": job.id}))
                return
            self._cleanup_safely()

    def _run(self, job: Job) -> None:
        deadline = job.started + self.job_timeout

        def on_step(step: int, total: int) -> None:
            if job.cancel.is_set():
                raise JobCancelled()
            if time.time() > deadline:
                raise JobTimedOut()
            job.step, job.total = step, total
            job.version += 1

        failed = True
        try:
            result, mp4 = self.run_job(job, on_step)
            if job.cancel.is_set():  # a stage without steps (the VAE decode, the mux) ran past a cancel
                raise JobCancelled()
            if time.time() > deadline:
                raise JobTimedOut()
            job.video_path = self._store_video(job.id, mp4)
            job.timings = result.get("timings", {})
            self._finish(job, SUCCEEDED, result=result)
            failed = False
        except JobCancelled:
            self._finish(job, CANCELLED)
        except JobTimedOut:
            self._finish(job, FAILED, error=ErrorResponse(
                error=f"the job ran longer than {self.job_timeout:.0f} s (LTX2_JOB_TIMEOUT) and was stopped",
                code="timeout").model_dump(), error_status=504)
        except InvalidRequest as exc:
            self._finish(job, FAILED, error=exc.body(), error_status=exc.status)
        except StorageError as exc:
            self._finish(job, FAILED, error=exc.body(), error_status=STORAGE_ERROR_STATUS)
        except OSError as exc:
            if exc.errno not in RESOURCE_ERRNOS:
                log.exception("job %s failed", job.id)
                self._finish(job, FAILED, error=generation_failed_body(exc), error_status=500)
            else:
                self._storage_failed("run the job", exc)
                self._finish(job, FAILED, error=StorageError("run the job", exc).body(),
                             error_status=STORAGE_ERROR_STATUS)
        except OutputRejected as exc:
            self._finish(job, FAILED, error=ErrorResponse(error=str(exc), code="invalid_output").model_dump(),
                         error_status=500)
        except Exception as exc:  # noqa: BLE001 - a failed job must not stop the worker
            if is_out_of_memory(exc):
                self._finish(job, FAILED, error=out_of_memory_body(job.request, exc), error_status=507)
            else:
                log.exception("job %s failed", job.id)
                self._finish(job, FAILED, error=generation_failed_body(exc), error_status=500)
        if failed:
            # A failed job's traceback may hold its tensors in reference cycles: collect them so the next
            # job starts with the memory back. A success frees its tensors by reference counting alone, so
            # it pays for no full collection (hundreds of ms holding the interpreter lock).
            free_gpu_memory()

    def _store_video(self, job_id: str, mp4: bytes) -> str:
        """Write the MP4 under its served name, never half-written; a failed write leaves nothing behind."""
        path = os.path.join(self.videos, f"{job_id}.mp4")
        part = path + ".part"
        try:
            try:
                fh = open(part, "wb")
            except FileNotFoundError:  # the folder was removed under us: make it again
                os.makedirs(self.videos, exist_ok=True)
                fh = open(part, "wb")
            with fh:
                fh.write(mp4)
            os.replace(part, path)
        except OSError as exc:
            try:
                os.remove(part)
            except OSError:
                pass
            self._failed_write_bytes = len(mp4)
            self._storage_failed("store the finished video", exc)
            raise StorageError("store the finished video", exc) from exc
        self._storage_ok()
        return path

    def _finish(self, job: Job, status: str, *, error: dict | None = None, error_status: int | None = None,
                result: dict | None = None) -> None:
        """Record how a job ended. Never raises: a job that cannot be saved is still finished in memory,
        and its record is written once the database takes writes again."""
        if job.status in TERMINAL:  # ended already (a stuck job the supervisor failed, then it returned)
            return
        # A finished job is never run again: drop its inputs (up to ~100 MB of base64) from memory and disk.
        inputs = {name: None for name in ("image_start", "image_end", "audio") if getattr(job.request, name)}
        if inputs:
            job.request = job.request.model_copy(update=inputs)
        job.status, job.finished = status, time.time()
        job.error, job.error_status, job.result = error, error_status, result
        job.version += 1
        if job.started is not None and status == SUCCEEDED:
            self._durations.append(job.finished - job.started)
        self._save(job)
        job.done.set()
        log.info(json.dumps({"event": f"job_{status}", "job": job.id,
                             "seconds": round(job.finished - (job.started or job.created), 3),
                             **({"error": error.get("error")} if error else {})}))
        if self.on_finished is not None:
            try:
                self.on_finished(job)
            except Exception:  # noqa: BLE001 - metrics must not fail a job
                log.exception("on_finished hook failed for job %s", job.id)

    # -- storage ------------------------------------------------------------------------------

    def _save(self, job: Job) -> bool:
        """Write a job's record; on failure remember it for a retry and report storage as failing."""
        try:
            self.store.save(job)
        except (sqlite3.Error, OSError) as exc:
            self._unsaved.add(job.id)
            self._storage_failed("save a job record", exc)
            return False
        self._unsaved.discard(job.id)
        return True

    def _save_unsaved(self) -> None:
        for job_id in list(self._unsaved):
            job = self.jobs.get(job_id)
            if job is None or not self._save(job):
                break

    def _storage_failed(self, action: str, exc: BaseException) -> None:
        problem = f"could not {action}: {_reason(exc)}"
        if problem != self.storage_problem:
            log.error(json.dumps({"event": "storage_error", "error": problem}))
        self.storage_problem = problem

    def _storage_ok(self) -> None:
        if self.storage_problem is not None:
            log.info(json.dumps({"event": "storage_recovered", "was": self.storage_problem}))
        self.storage_problem = None

    def _probe_storage(self) -> bool:
        """After a failed write: can the videos folder take a file as big as the one that failed, and the
        database its pending records? (fallocate asks the file system for the space without writing it.)"""
        probe = os.path.join(self.videos, ".probe")
        try:
            os.makedirs(self.videos, exist_ok=True)
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, max(self._failed_write_bytes, 4096))
            finally:
                os.close(fd)
                os.remove(probe)
        except OSError as exc:
            self._storage_failed("write to the output directory", exc)
            return False
        self._save_unsaved()
        if self._unsaved:
            return False
        self._storage_ok()
        return True

    # -- the supervisor -----------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stopping.wait(self.supervise_every):
            try:
                self._check_worker()
                if self.storage_problem is not None:
                    self._probe_storage()
            except Exception:  # noqa: BLE001 - the supervisor itself must outlive any one check
                log.exception("supervisor check failed")

    def _check_worker(self) -> None:
        with self._cv:
            if not self.accepting:
                return
            worker, job = self._thread, self.running
            if worker is not None and not worker.is_alive():
                # Only a BaseException (or a bug in the loop) gets here: every job error is caught.
                self.running = None
                self.restarts += 1
                log.error(json.dumps({"event": "worker_died", "job": job.id if job else None,
                                      "restarts": self.restarts}))
                if job is not None:
                    self._finish(job, FAILED, error=ErrorResponse(
                        error="the GPU worker stopped unexpectedly while running this job; it was restarted: "
                              "submit the job again", code="worker_crashed").model_dump(), error_status=500)
                self._start_worker()
            elif job is not None and job.started is not None and \
                    time.time() > job.started + self.job_timeout + self.stuck_grace:
                # Past its deadline and the grace a stage without steps may need: stuck. Fail the job,
                # leave its thread to return on its own, and give the queue a fresh worker.
                self.running = None
                self.restarts += 1
                self._abandoned.append(worker)
                log.error(json.dumps({"event": "worker_stuck", "job": job.id, "restarts": self.restarts}))
                self._finish(job, FAILED, error=ErrorResponse(
                    error=f"the job was stuck for {self.stuck_grace:.0f} s past its {self.job_timeout:.0f} s "
                          "time limit and was abandoned; submit it again", code="timeout").model_dump(),
                    error_status=504)
                self._start_worker()
            self._cv.notify_all()

    def _stuck_threads(self) -> list[threading.Thread]:
        """Abandoned workers still running: they may hold the GPU, so a new job waits for them."""
        self._abandoned = [t for t in self._abandoned if t.is_alive()]
        return self._abandoned

    # -- files --------------------------------------------------------------------------------

    def _cleanup_safely(self) -> None:
        try:
            self.cleanup()
        except Exception:  # noqa: BLE001 - a failed sweep is retried at the next one
            log.exception("cleaning up old videos failed")

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
        self._save(job)
        log.info(json.dumps({"event": "job_video_expired", "job": job.id}))
