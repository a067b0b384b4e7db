"""Jobs: one queue in front of the GPU (or one worker per device, `--devices`), records that survive a restart, cancellation.

Every video, synchronous (`POST /generate`) or not (`POST /jobs`), is a job. A job is recorded in
its store (`store/`: SQLite under the output directory by default, or PostgreSQL) the moment it is accepted, so nothing
accepted is lost: after a restart, jobs that were queued run, a job that was running is reported
failed with the reason, and finished videos stay downloadable until their time-to-live. A job's
inputs (images, audio: up to ~100 MB of base64) wait in a file of their own, not in the database
and not in memory, and are deleted when the job ends.

Only active jobs (queued, preparing, running) live in memory; finished ones are read back from the
database when asked for, and pruned from it `record_ttl` seconds after they end. Videos go after
`result_ttl` seconds, or sooner when they exceed `output_max_bytes` (oldest first).

A job has two stages. A preparing thread fetches and decodes its inputs (`prepare_job`, given by the
app; it runs them in a sandboxed child process), off the GPU workers and ahead of them. Each lane
(ltx2.serving.lanes: one per device, by default the one in-process worker) runs prepared jobs one at
a time (the transformer's activations for one video fill its GPU); the first ready job in queue order
goes to the first free lane, and a job whose inputs are still being fetched does not hold up the ones
behind it. Waiting jobs are bounded: beyond `queue_size`, a submission is refused with an estimate of
when to retry.
`cancel` and the job time limit reach every stage: the sandbox is killed, the denoising loop stops at
its next step, and the stages without steps (VAE decode, mux) are followed by a check.

The worker never dies silently: whatever goes wrong in a job (the model, the disk, the database, our
own code) fails that job with a JSON error and the worker takes the next one. A supervisor thread
restarts a worker that died anyway (a BaseException), replaces one stuck past its job's deadline,
notices a database file deleted under it, and sweeps old videos and records; `health()` says whether
jobs can run at all.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque

from .job_store import (  # noqa: F401 - re-exported: the routes read statuses and jobs from here
    CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, JobStore, StorageError, _reason, stage_progress,
)
from .store import DB_ERRORS, Store
from .shared_queue import SharedQueue, replica_name
from .supervision import Supervision
from .storage import (  # noqa: F401 - STORAGE_ERROR_STATUS re-exported for the routes
    STORAGE_ERROR_STATUS, UNKNOWN_WRITE_BYTES, descriptors_short, probe_folder, resource_error,
)
from .faults import free_gpu_memory, is_out_of_memory, out_of_memory_body
from .lanes import (
    FAULT_LIMIT, FAULT_WINDOW, WORKER_LOST_STATUS, JobFailed, Lane, LaneState, WorkerLost, worker_lost_body,
)
from ..keyframes import input_values, with_inputs
from ..media.encode import output_format
from ..pipelines.generate import OutputRejected
from ..pipelines.progress import DENOISING
from ..schema import (
    ErrorResponse,
    GenerateRequest,
    InvalidRequest,
    generation_failed_body,
)

log = logging.getLogger("ltx2.jobs")

INPUT_FIELDS = ("image_start", "image_end", "audio", "video")  # and each keyframe's image (ltx2.keyframes.input_values)


def needs_preparing(job: Job) -> bool:
    """Inputs to decode or LoRAs to find, fetch and read: the preparer's work, never the GPU worker's."""
    return bool(job.input_fields) or bool(job.request.loras) or job.request.camera_lora != "none"


class QueueFull(Exception):
    def __init__(self, retry_after: int, waiting: int):
        super().__init__(f"the queue is full ({waiting} jobs waiting); retry in about {retry_after} s")
        self.retry_after = retry_after


class ShuttingDown(Exception):
    pass


class JobCancelled(Exception):
    """Raised from the step callback (or any stage's check): the job stops there."""


class JobTimedOut(Exception):
    pass


def timeout_body(limit: float) -> dict:
    return ErrorResponse(error=f"the job ran longer than {limit:.0f} s (LTX2_JOB_TIMEOUT) and was stopped",
                         code="timeout").model_dump()


# ---------------------------------------------------------------------------------------------- the manager


class Reservation:
    """A queue slot held for a submission whose body is still being read (`JobManager.reservation`)."""

    def __init__(self, manager: JobManager):
        self._manager = manager
        self.held = True

    def consume(self) -> None:
        """The job took its place in the queue (call under the manager's lock)."""
        if self.held:
            self.held = False
            self._manager._reserved -= 1

    def release(self) -> None:
        with self._manager._cv:
            self.consume()


class JobManager(Supervision, SharedQueue):
    """The queue, the preparing thread, the GPU worker, their supervisor and the records.

    `run_job(job, on_step)` does the GPU work and returns (result dict without the video, MP4 bytes);
    `prepare_job(job, check)` fetches and decodes the job's inputs (None when it has none to decode)
    and must call `check()` often, or stop when `job.cancel` is set. Both are given by the app (and by
    tests). `on_change(job)` is called from the worker threads after every change of a job (progress,
    status): the app wakes event streams with it.
    """

    _needs_preparing = staticmethod(needs_preparing)  # for shared_queue, which cannot import this module

    def __init__(self, store: Store, output_dir: str, run_job, *, prepare_job=None, queue_size: int = 8,
                 job_timeout: float = 1800.0, result_ttl: float = 86400.0, output_max_bytes: int = 20 * 10**9,
                 record_ttl: float = 7 * 86400.0, on_finished=None, on_change=None, stuck_grace: float = 300.0,
                 supervise_every: float = 1.0, sweep_every: float = 60.0, prepare_ahead: int = 1,
                 lanes: list[Lane] | None = None, fault_limit: int = FAULT_LIMIT, fault_window: float = FAULT_WINDOW):
        self.store = store
        self.videos = os.path.join(output_dir, "videos")
        self.inputs = os.path.join(output_dir, "inputs")
        try:
            self._make_folders()
        except OSError as exc:
            raise StorageError("create the output folders", exc) from exc
        self.run_job = run_job
        # One lane per device (ltx2.serving.lanes); by default one in-process lane running `run_job`.
        self.lanes = [LaneState(lane) for lane in (lanes or [Lane("main", lambda job, on_step: self.run_job(job, on_step))])]
        self.fault_limit, self.fault_window = fault_limit, fault_window
        self.prepare_job = prepare_job
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self.result_ttl = result_ttl
        self.output_max_bytes = output_max_bytes
        self.record_ttl = max(record_ttl, result_ttl)  # a record outlives its video
        self.on_finished = on_finished  # metrics hook: on_finished(job)
        self.on_change = on_change
        # A job still inside a stage this long after its deadline is stuck there (a hung driver call,
        # a network file system that stopped answering): the supervisor fails it and replaces the worker.
        self.stuck_grace = stuck_grace
        self.supervise_every = supervise_every
        self.sweep_every = sweep_every
        self.prepare_ahead = prepare_ahead  # decoded inputs held for jobs not yet on the GPU
        self.batching = None  # --max-batch (ltx2.serving.batching.QueueBatching): companions run with a lane's job
        self.jobs: dict[str, Job] = {}  # active jobs only
        self.waiting: deque[str] = deque()
        self.preparing: Job | None = None
        self.accepting = True
        self.restarts = 0  # workers replaced by the supervisor, since start
        self.storage_problem: str | None = None  # the last write that failed, until a probe succeeds
        self._failed_write_bytes = 0  # how much the failed write needed: the probe asks for as much
        self._unsaved: dict[str, Job] = {}  # ended jobs whose final state is not in the database yet
        self._reserved = 0  # submissions let in whose bodies are still being read
        self._cv = threading.Condition()
        self._durations: deque[float] = deque(maxlen=20)
        self._preparer: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None
        self._stopping = threading.Event()
        self._last_sweep = 0.0
        self._started = False  # a folder made again after start-up is logged
        # Shared store (PostgreSQL): this replica's name on the jobs it claims; ids being submitted here,
        # which the sync must not adopt as another replica's.
        self.replica = replica_name()
        self._submitting: set[str] = set()
        self._recover()
        self._started = True

    # -- lifecycle ---------------------------------------------------------------------------

    def _make_folders(self) -> None:
        """videos/ and inputs/, made again if they were removed while the server ran."""
        for folder in (self.videos, self.inputs):
            if not os.path.isdir(folder):
                os.makedirs(folder, exist_ok=True)
                if getattr(self, "_started", False):
                    log.warning(json.dumps({"event": "output_folder_recreated", "folder": os.path.basename(folder)}))

    def _recover(self) -> None:
        """Load the active records: queued jobs queue again; a job that was running did not finish.
        Then sweep what no record claims: half-written and orphan videos, orphan input files. Records that
        cannot be read raise StorageError, before anything is swept: a file is an orphan only when the
        records were read and none claims it."""
        try:
            if self.store.shared:  # alive before it claims anything, so no replica takes it for lost
                self.store.heartbeat(self.replica)
            active = self.store.load_active()
            served = {job_id for job_id, _, _ in self.store.videos()}
        except DB_ERRORS as exc:
            raise StorageError("read the job records", exc) from exc
        for job in active:
            if job.status == RUNNING and self.store.shared:
                continue  # another replica's, or a dead one's: the heartbeats decide (shared_queue)
            if job.status == RUNNING:
                self._finish(job, FAILED, error=ErrorResponse(
                    error="the server stopped while this job was running (restart or crash); submit it again",
                    code="interrupted").model_dump(), error_status=500)
            else:
                inline = tuple(input_values(job.request))
                job.input_fields = job.input_fields or inline  # a record from before inputs had files
                job.ready = not needs_preparing(job) or self.prepare_job is None
                job.stage = "queued"
                self.jobs[job.id] = job
                self.waiting.append(job.id)
        self._sweep_orphans(served, {job.id for job in active})
        self.sweep()
        if self.waiting:
            log.info(json.dumps({"event": "jobs_recovered", "queued": len(self.waiting)}))

    def _sweep_orphans(self, served: set[str], active: set[str]) -> None:
        removed = 0
        shared = self.store.shared  # another replica may be writing a .part in the same folder now
        for folder, keep in ((self.videos, served), (self.inputs, active)):
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                job_id = entry.name.split(".", 1)[0]
                if (entry.name.endswith(".part") and not shared) or entry.name.startswith(".") or \
                        (job_id not in keep and not entry.name.endswith(".part")):
                    try:
                        os.remove(entry.path)
                        removed += 1
                    except OSError:
                        pass
        if removed:
            log.info(json.dumps({"event": "orphan_files_swept", "files": removed}))

    def start(self) -> None:
        for lane in self.lanes:
            self._start_worker(lane)
        self._start_preparer()
        self._supervisor = threading.Thread(target=self._supervise, name="ltx2-supervisor", daemon=True)
        self._supervisor.start()

    def _start_worker(self, lane: LaneState) -> None:
        name = "ltx2-gpu" if len(self.lanes) == 1 else f"ltx2-gpu-{lane.name}"
        lane.thread = threading.Thread(target=self._loop, args=(lane,), name=name, daemon=True)
        lane.thread.start()

    # -- the lanes' running jobs ---------------------------------------------------------------

    @property
    def running(self) -> Job | None:
        """A running job (the first lane's that runs one): for readers that knew one worker."""
        return next((lane.running for lane in self.lanes if lane.running is not None), None)

    @property
    def running_jobs(self) -> dict[str, Job]:
        """Lane name -> the job it runs, for every busy lane."""
        return {lane.name: lane.running for lane in self.lanes if lane.running is not None}

    @property
    def _thread(self) -> threading.Thread | None:
        return self.lanes[0].thread

    def _runs_here(self, job: Job | None) -> bool:
        return job is not None and any(lane.running is job for lane in self.lanes)

    def _clear_running(self, job: Job) -> None:
        for lane in self.lanes:
            if lane.running is job:
                lane.running = None

    def admission_running(self) -> Job | None:
        """The running job whose memory admission counts as held: none while a lane in service is idle
        (a new job can go there), else a running one (each lane's device holds its own)."""
        if any(lane.running is None and lane.can_take() for lane in self.lanes):
            return None
        return self.running

    def _start_preparer(self) -> None:
        self._preparer = threading.Thread(target=self._prepare_loop, name="ltx2-prepare", daemon=True)
        self._preparer.start()

    def stop(self, grace: float) -> None:
        """Refuse new jobs, let the running one finish for up to `grace` seconds, then cancel it.
        Queued jobs stay queued in the store and run after the next start."""
        with self._cv:
            self.accepting = False
            self._cv.notify_all()
        self._stopping.set()
        preparing = self.preparing
        if preparing is not None:
            preparing.cancel.set()  # its preparation is redone at the next start; the job stays queued
        deadline = time.monotonic() + grace  # one grace for every lane's running job, counted together
        running = list(self.running_jobs.values())
        for job in running:
            job.done.wait(max(0.0, deadline - time.monotonic()))
        for job in running:
            if not job.done.is_set():
                log.warning(json.dumps({"event": "job_cancelled_at_shutdown", "job": job.id}))
                job.cancel.set()
        stop_by = time.monotonic() + 30
        for job in running:
            job.done.wait(max(0.0, stop_by - time.monotonic()))
        for thread in (*(lane.thread for lane in self.lanes), self._preparer, self._supervisor):
            if thread is not None:
                thread.join(5)
        self._save_unsaved()

    # -- submitting, finding and cancelling ---------------------------------------------------

    def reservation(self) -> Reservation:
        """Hold a queue slot while a submission's body is read: raises QueueFull (or ShuttingDown)
        before any of it is, so a full queue costs a large upload nothing. Pass it to `submit`, and
        release it in any case (a no-op once `submit` has used it)."""
        with self._cv:
            self._check_open(1)
            self._reserved += 1
            return Reservation(self)

    def _check_open(self, extra: int) -> None:
        """Raise unless `extra` more jobs fit behind the waiting ones and the reserved slots."""
        if not self.accepting:
            raise ShuttingDown("the server is shutting down; retry on another instance or later")
        if len(self.waiting) + self._reserved + extra > self.queue_size:
            raise QueueFull(self.retry_after(), len(self.waiting))

    def submit(self, request: GenerateRequest, owner: str | None = None,
               reservation: Reservation | None = None) -> Job:
        """Queue a job; its inputs go to a file first (blocking: call it from a thread). Raises QueueFull,
        ShuttingDown or StorageError. `owner`: the API key's name; `reservation`: a slot already held."""
        if reservation is None or not reservation.held:
            reservation = self.reservation()
        try:
            with self._cv:
                self._check_open(0)  # the slot is counted; only a shutdown can refuse now
                if self.storage_problem is not None and not self._probe_storage():
                    raise StorageError("accept the job", self.storage_problem or "storage is failing")
            job = Job(id=uuid.uuid4().hex, request=request, owner=owner)
            inputs = input_values(request)
            self._submitting.add(job.id)
            try:
                if inputs:
                    job.inputs_path = self._write_inputs(job.id, inputs)
                    job.input_fields = tuple(inputs)
                    job.request = with_inputs(request, dict.fromkeys(inputs))
                self.store.save(job)  # recorded before it is accepted: nothing accepted is lost
            except DB_ERRORS as exc:
                self._submitting.discard(job.id)
                self._remove(job.inputs_path)
                self._remove(os.path.join(self.inputs, f"{job.id}.json.part"))
                self._storage_failed("record a job", exc)
                raise StorageError("record the job", exc) from exc
            with self._cv:
                self.jobs[job.id] = job
                self.waiting.append(job.id)
                reservation.consume()  # in the same step as the append: the count never dips
                self._submitting.discard(job.id)
                job.ready = not needs_preparing(job) or self.prepare_job is None
                job.stage = "queued"
                self._cv.notify_all()
        finally:
            reservation.release()
        if self.store.shared:
            self._measure_position(job)
        log.info(json.dumps({"event": "job_queued", "job": job.id, "position": self.position(job.id)}))
        return job

    def _write_inputs(self, job_id: str, inputs: dict[str, str]) -> str:
        path = os.path.join(self.inputs, f"{job_id}.json")
        try:
            fh = open(path + ".part", "w")
        except FileNotFoundError:  # the folder was removed under us: make it again
            self._make_folders()
            fh = open(path + ".part", "w")
        with fh:
            json.dump(inputs, fh)
        os.replace(path + ".part", path)
        return path

    def inputs_of(self, job: Job) -> dict[str, str]:
        """The job's image_start/image_end/audio and keyframe images (as ltx2.keyframes.input_values names
        them), from its inputs file (or its record, if it is older)."""
        inline = input_values(job.request)
        if not job.inputs_path:
            return inline
        try:
            with open(job.inputs_path) as fh:
                return {**json.load(fh), **inline}
        except (OSError, ValueError) as exc:
            raise StorageError("read the job's inputs back", exc) from exc

    def full_request(self, job: Job) -> GenerateRequest:
        """The request as submitted, inputs included."""
        return with_inputs(job.request, self.inputs_of(job))

    def get(self, job_id: str) -> Job | None:
        """The job with this id: an active one from memory, an ended one from its record; else None."""
        job = self.jobs.get(job_id) or self._unsaved.get(job_id)
        if job is not None and self.store.shared:
            try:
                return self._refresh_shared(job)
            except DB_ERRORS as exc:
                self._storage_failed("read a job record", exc)
                return job  # this replica's view, as it stands
        if job is not None:
            return job
        try:
            job = self.store.load(job_id)
        except DB_ERRORS as exc:
            self._storage_failed("read a job record", exc)
            raise StorageError("read the job's record", exc) from exc
        if job is not None and self.store.shared and job.status not in TERMINAL:
            job = self._take_in_view(job)  # another replica's: followed here, so its waiters hear its end
        return job

    def list(self, owner: str | None, limit: int = 20, after: float | None = None,
             everyone: bool = False, order: str = "desc") -> list[Job]:
        """The jobs of one owner (or of all), newest first (see JobStore.list); active ones with their
        live state."""
        try:
            jobs = self.store.list(owner, limit, after, everyone, order)
        except DB_ERRORS as exc:
            self._storage_failed("read job records", exc)
            raise StorageError("list the jobs", exc) from exc
        return [self.jobs.get(job.id) or self._unsaved.get(job.id) or job for job in jobs]

    def delete(self, job_id: str) -> None:
        """Forget an ended job: its record and its video go (DELETE /v1/videos/{id}). Blocking."""
        job = self.get(job_id)
        if job is None or job.status not in TERMINAL:
            raise ValueError(f"job {job_id} is not an ended job")
        self._unsaved.pop(job_id, None)
        self._remove(job.video_path)
        try:
            self.store.delete(job_id)
        except DB_ERRORS as exc:
            self._storage_failed("delete a job record", exc)
            raise StorageError("delete the job's record", exc) from exc

    def video_expired(self, job: Job) -> bool:
        """Checked when a video is served: past its time-to-live it expires now, not at the next sweep."""
        if not job.expired and job.finished is not None and time.time() - job.finished > self.result_ttl:
            self._remove(job.video_path)
            job.expired = True
            try:
                self.store.mark_expired([job.id])
            except DB_ERRORS as exc:
                self._storage_failed("mark a video expired", exc)
        return job.expired

    def cancel(self, job_id: str) -> Job:
        """Cancel an active job. A queued one ends at once (its preparation, if any, is killed); a
        running one stops at its next step or stage boundary."""
        if self.store.shared and not self._runs_here(self.jobs.get(job_id)):
            return self._cancel_shared(job_id)
        with self._cv:
            job = self.jobs.get(job_id)
            if job is None:  # ended already
                return self.get(job_id)
            job.cancel.set()
            if job.status == QUEUED:
                self.waiting.remove(job_id)
                self._finish(job, CANCELLED)
        log.info(json.dumps({"event": "job_cancel_requested", "job": job_id, "status": job.status}))
        return job

    def position(self, job_id: str) -> int | None:
        """0 for the running job (here or, with a shared store, elsewhere), 1.. for waiting ones, None when
        finished. Never asks the database (routes call it on the event loop): with a shared store the count
        of every replica's queued jobs ahead is read on other threads (`_measure_position`) into
        `job.position`; until then, and on one box, this replica's queue answers."""
        with self._cv:
            job = self.jobs.get(job_id)
            if job is None or job.status in TERMINAL:
                return None
            if job.status == RUNNING:
                return 0
            if self.store.shared and job.position is not None:
                return job.position
            return self.waiting.index(job_id) + 1 if job_id in self.waiting else None

    def retry_after(self) -> int:
        """Seconds until a waiting slot frees up: when the first of the running jobs ends (each lane
        runs one), the first waiting one starts. Estimated from the recent average job time and how long
        each running one has run."""
        average = sum(self._durations) / len(self._durations) if self._durations else 30.0
        now = time.time()
        left = [average - (now - job.started) for job in self.running_jobs.values() if job.started]
        return max(1, int(round(min(left) if left else average)))

    @property
    def depth(self) -> int:
        return len(self.waiting)

    def _changed(self, job: Job) -> None:
        job.version += 1
        if self.on_change is not None:
            try:
                self.on_change(job)
            except Exception:  # noqa: BLE001 - a listener must not fail a job
                log.exception("on_change hook failed for job %s", job.id)

    # -- preparing: fetch and decode inputs, ahead of the GPU ---------------------------------

    def _prepare_loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._cv:
                while self.accepting and self._preparer is me and (job := self._next_to_prepare()) is None:
                    self._cv.wait(timeout=5)
                if not self.accepting or self._preparer is not me:
                    return
                self.preparing = job
                job.stage = "preparing_inputs"
            self._changed(job)
            try:
                self._prepare(job)
            except Exception as exc:  # noqa: BLE001 - our own handling failed: the job fails, the thread goes on
                if (cause := resource_error(exc)) is not None:
                    self._storage_failed("prepare a job's inputs", cause)
                    self._end_queued(job, FAILED, error=StorageError("prepare the job's inputs", cause).body(),
                                     error_status=STORAGE_ERROR_STATUS)
                else:
                    log.exception("job %s: preparing it failed", job.id)
                    self._end_queued(job, FAILED, error=generation_failed_body(exc), error_status=500)
            with self._cv:
                if self.preparing is job:
                    self.preparing = None
                self._cv.notify_all()

    def _next_to_prepare(self) -> Job | None:
        """The first waiting job with inputs still to decode, while fewer than `prepare_ahead` prepared
        jobs wait for the GPU (each holds its decoded inputs in memory)."""
        ahead = 0
        for job_id in self.waiting:
            job = self.jobs[job_id]
            if job.ready:
                ahead += needs_preparing(job)  # it holds decoded inputs or read LoRAs
            elif ahead < self.prepare_ahead:
                return job
            else:
                return None
        return None

    def _prepare(self, job: Job) -> None:
        start = time.monotonic()
        deadline = start + self.job_timeout

        def check() -> None:
            if job.cancel.is_set():
                raise JobCancelled()
            if time.monotonic() > deadline:
                raise JobTimedOut()

        try:
            check()
            prepared = self.prepare_job(job, check)
            check()
        except JobCancelled:
            if self._stopping.is_set():  # shutting down: the job stays queued for the next start
                return
            self._end_queued(job, CANCELLED)
        except JobTimedOut:
            self._end_queued(job, FAILED, error=timeout_body(self.job_timeout), error_status=504)
        except InvalidRequest as exc:  # a bad input: the client hears at once, without waiting for the GPU
            self._end_queued(job, FAILED, error=exc.body(), error_status=exc.status)
        except StorageError as exc:
            self._end_queued(job, FAILED, error=exc.body(), error_status=STORAGE_ERROR_STATUS)
        except Exception as exc:  # noqa: BLE001
            if (cause := resource_error(exc)) is not None:  # e.g. the sandbox could not start: no descriptors
                self._storage_failed("prepare a job's inputs", cause)
                self._end_queued(job, FAILED, error=StorageError("prepare the job's inputs", cause).body(),
                                 error_status=STORAGE_ERROR_STATUS)
            else:
                log.exception("job %s: preparing its inputs failed", job.id)
                self._end_queued(job, FAILED, error=generation_failed_body(exc), error_status=500)
        else:
            with self._cv:
                if job.status == QUEUED:
                    job.prepared, job.ready, job.stage = prepared, True, "waiting_for_gpu"
                    job.worked = time.monotonic() - start
                self._cv.notify_all()
            self._changed(job)

    def _end_queued(self, job: Job, status: str, **kw) -> None:
        with self._cv:
            if job.status != QUEUED:
                return
            try:
                self.waiting.remove(job.id)
            except ValueError:
                pass
            self._finish(job, status, **kw)
            self._cv.notify_all()

    # -- the GPU worker ----------------------------------------------------------------------

    def _next_to_run(self) -> Job | None:
        """The first waiting job whose inputs are ready: one still fetching does not hold up the rest."""
        for job_id in self.waiting:
            job = self.jobs[job_id]
            if job.ready:
                return job
        return None

    def _loop(self, lane: LaneState) -> None:
        """One lane's worker thread: the first ready job goes to the first free lane."""
        me = threading.current_thread()
        while True:
            with self._cv:
                while self.accepting and lane.thread is me and (not lane.can_take() or
                                                                (job := self._next_to_run()) is None):
                    self._cv.wait(timeout=1 if not lane.can_take() else 60)
                if not self.accepting or lane.thread is not me:
                    return
                self.waiting.remove(job.id)
                job.status, job.started, job.stage = RUNNING, time.time(), "generating"
                lane.running = job
                batch = self.batching.take(self, job, lane) if self.batching is not None else []
            if self.store.shared and not self._claim(job):
                continue  # another replica took it first: this one follows it (shared_queue)
            self._changed(job)
            try:
                self._save(job)
                log.info(json.dumps({"event": "job_started", "job": job.id,
                                     **({"lane": lane.name} if len(self.lanes) > 1 else {})}))
                if batch:
                    self.batching.run(self, lane, [job, *batch])
                else:
                    self._run(job, lane)
            except Exception as exc:  # noqa: BLE001 - our own handling failed: the job fails, the worker goes on
                if (cause := resource_error(exc)) is not None:
                    self._resource_failed(job, "run the job", cause)
                else:
                    log.exception("job %s: handling it failed", job.id)
                    self._finish(job, FAILED, error=generation_failed_body(exc), error_status=500)
            # Not in a `finally`: a BaseException that ends this thread leaves `running` set, so the
            # supervisor knows which job died with it.
            with self._cv:
                if lane.running is job:
                    lane.running = None
                self._cv.notify_all()
            self._last_sweep = 0.0  # the supervisor sweeps within a second: the size cap sees the new video
            if lane.thread is not me:  # replaced by the supervisor while stuck in this job
                log.warning(json.dumps({"event": "stuck_worker_returned", "job": job.id}))
                return

    def _run(self, job: Job, lane: LaneState) -> None:
        def check() -> None:
            if job.cancel.is_set():
                raise JobCancelled()
            # Read each time: a job that waits for the device (a training holds it) starts when it gets it.
            if time.time() > job.started + self.job_timeout - job.worked:
                raise JobTimedOut()

        def on_step(step: int, total: int) -> None:
            check()
            job.step, job.total = step, total
            job.stage, job.progress = DENOISING, stage_progress(DENOISING, step, total)
            self._changed(job)

        def on_progress(stage: str, done: int, total: int) -> None:
            check()  # a decode reports each block of its decoder: a stop reaches it there
            job.stage, job.progress = stage, stage_progress(stage, done, total)
            self._changed(job)

        failed = True
        job.check = check  # for the stages without steps: run_job calls it between them (and per muxed frame)
        job.on_progress = on_progress  # run_job hands it to the decodes and the encoder
        try:
            result, mp4 = lane.lane.run_job(job, on_step)
            check()  # a stage without steps (the VAE decode, the mux) ran past a stop
            job.stage, job.progress = "storing", None
            job.video_path = self._store_video(job, mp4)
            # Stages a pipeline did not run (two-stage's, for a one-stage video) are null in the response.
            job.timings = {k: v for k, v in result.get("timings", {}).items() if v is not None}
            self._finish(job, SUCCEEDED, result=result)
            failed = False
        except JobCancelled:
            self._finish(job, CANCELLED)
        except JobTimedOut:
            self._finish(job, FAILED, error=timeout_body(self.job_timeout), error_status=504)
        except InvalidRequest as exc:
            self._finish(job, FAILED, error=exc.body(), error_status=exc.status)
        except StorageError as exc:
            self._finish(job, FAILED, error=exc.body(), error_status=STORAGE_ERROR_STATUS)
        except WorkerLost as exc:  # its process died under it: the job fails, the lane restarts it
            log.error(json.dumps({"event": "worker_lost", "lane": lane.name, "job": job.id, "reason": exc.reason}))
            self._finish(job, FAILED, error=worker_lost_body(lane.name, exc.reason), error_status=WORKER_LOST_STATUS)
            self._lane_fault(lane, f"worker lost: {exc.reason}")
        except JobFailed as exc:  # the lane's worker reported how the job failed
            self._finish(job, FAILED, error=exc.body, error_status=exc.status)
            if exc.device_fault:
                self._lane_fault(lane, f"device fault: {exc.body.get('error')}")
        except OutputRejected as exc:
            self._finish(job, FAILED, error=ErrorResponse(error=str(exc), code="invalid_output").model_dump(),
                         error_status=500)
        except Exception as exc:  # noqa: BLE001 - a failed job must not stop the worker
            if (cause := resource_error(exc)) is not None:
                # A write of unknown size failed (the encoder's file, say): the probe asks for a long clip's room.
                self._failed_write_bytes = max(self._failed_write_bytes, UNKNOWN_WRITE_BYTES)
                self._resource_failed(job, "run the job", cause)
            elif is_out_of_memory(exc):
                self._finish(job, FAILED, error=out_of_memory_body(job.request, exc), error_status=507)
            else:
                log.exception("job %s failed", job.id)
                self._finish(job, FAILED, error=generation_failed_body(exc), error_status=500)
        if failed:
            # A failed job's traceback may hold its tensors in reference cycles: collect them so the next
            # job starts with the memory back. A success frees its tensors by reference counting alone, so
            # it pays for no full collection (hundreds of ms holding the interpreter lock).
            free_gpu_memory()

    def _store_video(self, job: Job, data: bytes) -> str:
        """Write the file under its served name (with its format's extension), never half-written; a
        failed write leaves nothing behind."""
        path = os.path.join(self.videos, job.id + output_format(job.request.video_output_type).extension)
        part = path + ".part"
        try:
            try:
                fh = open(part, "wb")
            except FileNotFoundError:  # the folder was removed under us: make it again
                self._make_folders()
                fh = open(part, "wb")
            with fh:
                fh.write(data)
            os.replace(part, path)
        except OSError as exc:
            self._remove(part)
            self._failed_write_bytes = len(data)
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
        # A finished job is never run again: drop its inputs from memory and disk.
        inline = dict.fromkeys(input_values(job.request))
        if inline:
            job.request = with_inputs(job.request, inline)
        self._remove(job.inputs_path)
        job.inputs_path, job.prepared, job.check, job.on_progress = None, None, None, None
        job.status, job.finished, job.stage, job.progress = status, time.time(), None, None
        job.error, job.error_status, job.result = error, error_status, result
        if job.started is not None and status == SUCCEEDED:
            self._durations.append(job.finished - job.started)
        if not self._save(job):
            self._unsaved[job.id] = job  # kept in memory until its record is written
        self.jobs.pop(job.id, None)
        job.done.set()
        self._changed(job)
        log.info(json.dumps({"event": f"job_{status}", "job": job.id,
                             "seconds": round(job.finished - (job.started or job.created), 3),
                             **({"error": error.get("error")} if error else {})}))
        if self.on_finished is not None:
            try:
                self.on_finished(job)
            except Exception:  # noqa: BLE001 - metrics must not fail a job
                log.exception("on_finished hook failed for job %s", job.id)


__all__ = [
    "CANCELLED", "FAILED", "QUEUED", "RUNNING", "SUCCEEDED", "TERMINAL", "Job", "JobCancelled", "JobManager",
    "JobStore", "JobTimedOut", "QueueFull", "ShuttingDown", "StorageError", "STORAGE_ERROR_STATUS",
]

