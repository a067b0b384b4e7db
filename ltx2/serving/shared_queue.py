"""One queue for several API replicas: the job manager's part when its store is shared (PostgreSQL).

Each replica keeps its in-memory view of the queue (`jobs`, `waiting`) and brings it into line with the
records every second (`_sync_shared`, from the supervisor):
- queued jobs another replica accepted join this replica's view, so any idle worker may take them;
- a job is run only after `store.claim` marks it running here; the replica that loses the race follows
  it instead (`runner` set to the winner), and a synchronous `/generate` waiting on it there is answered
  with the record the runner writes;
- a cancel received by any replica ends a queued job in the records at once (conditionally: if it was
  claimed meanwhile, the runner is asked to stop through `cancel_requested`);
- each replica says it is alive; the running jobs of one that went silent fail `worker_lost`.
A single-box store (SQLite) never reaches this code.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid

from .store import CANCELLED, DB_ERRORS, QUEUED, RUNNING, TERMINAL, Job
from ..schema import ErrorResponse

log = logging.getLogger("ltx2.jobs")

# A replica silent this long (no heartbeat; it beats every supervise_every, 1 s) lost its running jobs.
REPLICA_GRACE = 15.0
ADOPT_LIMIT = 256  # queued jobs read per sync; the rest join as the oldest are taken


def replica_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def lost_body() -> dict:
    return ErrorResponse(error="the replica running this job stopped answering (crashed, killed or cut off); "
                         "submit the job again", code="worker_lost").model_dump()


class SharedQueue:
    """Mixed into JobManager; used only when `self.store.shared`."""

    def _follow(self, job: Job, runner: str | None) -> None:
        """Another replica runs (or ended) this job: keep it in view so its waiters hear how it ends."""
        if job.id in self.waiting:
            self.waiting.remove(job.id)
        job.status, job.runner, job.stage, job.prepared = RUNNING, runner, "running_elsewhere", None

    def _claim(self, job: Job) -> bool:
        """Claim the job picked from the queue; on losing it (or a failing store) follow it instead."""
        try:
            won = self.store.claim(job.id, self.replica, job.started)
        except DB_ERRORS as exc:
            self._storage_failed("claim a job", exc)
            won = False
        if won:
            job.runner = self.replica
            return True
        with self._cv:
            self._clear_running(job)  # the lane that picked it takes the next one
            self._follow(job, None)
            self._cv.notify_all()
        log.info(json.dumps({"event": "job_taken_elsewhere", "job": job.id}))
        return False

    def _cancel_shared(self, job_id: str) -> Job | None:
        """Cancel a job this replica does not run: end it in the records if it is still queued anywhere,
        else ask its runner to stop it."""
        with self._cv:
            job = self.jobs.get(job_id)
        record = job if job is not None and job.status == QUEUED else self.store.load(job_id)
        if record is None:
            return None
        if record.status in TERMINAL:
            return self.get(job_id)
        if record.status == QUEUED:
            ended = Job(id=record.id, request=record.request, status=CANCELLED, finished=time.time())
            if self.store.end_queued(ended):
                if job is not None:
                    job.cancel.set()
                    with self._cv:
                        if job.status == QUEUED and job_id in self.waiting:
                            self.waiting.remove(job_id)
                            self._finish(job, CANCELLED)  # its record is written already; this saves nothing
                log.info(json.dumps({"event": "job_cancel_requested", "job": job_id, "status": QUEUED}))
                return job if job is not None else self.store.load(job_id)
        self.store.request_cancel(job_id)  # claimed meanwhile, or running elsewhere
        log.info(json.dumps({"event": "job_cancel_requested", "job": job_id, "status": RUNNING}))
        if job is not None and job.status == QUEUED:  # claimed elsewhere before this replica's view knew
            with self._cv:
                self._follow(job, None)
        if job is None:  # followed from now on, so that whoever waits here hears how it ends
            job = self.store.load(job_id) or record
            with self._cv:
                job = self.jobs.setdefault(job_id, job)
                if job.status not in TERMINAL:
                    self._follow(job, job.runner)
        return job

    def _refresh_shared(self, job: Job) -> Job:
        """A job read through this replica: if its record ended elsewhere (a cancel through another
        replica, a run there) since the last sync, it ends here now, so that both answer alike."""
        if job.status in TERMINAL or self._runs_here(job):
            return job
        status, _ = self.store.states([job.id]).get(job.id, (None, None))
        if status == QUEUED:
            self._measure_position(job)
        if status in TERMINAL and (record := self.store.load(job.id)) is not None:
            with self._cv:
                if job.status not in TERMINAL and not self._runs_here(job):
                    if job.id in self.waiting:
                        self.waiting.remove(job.id)
                    if job is self.preparing:
                        job.cancel.set()
                    self._adopt_end(job, record)
        return job

    def _take_in_view(self, record: Job) -> Job:
        """An active record this replica had not seen: queued here too, or followed if it runs elsewhere."""
        with self._cv:
            if record.id in self.jobs:
                return self.jobs[record.id]
            self.jobs[record.id] = record
            if record.status == RUNNING:
                self._follow(record, record.runner)
            else:
                record.ready = not self._needs_preparing(record) or self.prepare_job is None
                record.stage = "queued"
                self._enqueue(record)
            self._cv.notify_all()
        self._measure_position(record)
        return record

    def _measure_position(self, job: Job) -> None:
        """Where a queued job stands in the shared queue, from the records (blocking)."""
        if job.status == QUEUED:
            try:
                job.position = self.store.queued_ahead(job.created, job.id) + 1
            except DB_ERRORS:
                job.position = None  # this replica's view answers instead

    def _sync_shared(self) -> None:
        """The supervisor's step: heartbeat, lost replicas, then this replica's view against the records.
        A store that does not answer is storage failing (/health says so), not a crash of the supervisor."""
        try:
            self._sync_once()
        except DB_ERRORS as exc:
            self._storage_failed("reach the shared job store", exc)

    def _sync_once(self) -> None:
        store = self.store
        store.heartbeat(self.replica)
        lost = store.fail_lost(REPLICA_GRACE, lost_body())
        if lost:
            log.error(json.dumps({"event": "jobs_worker_lost", "jobs": lost}))
        with self._cv:
            known = list(self.jobs)
            running = {job.id: job for job in self.running_jobs.values()}  # every lane's
        states = store.states(known)
        asked = store.cancel_requested(list(running)) if running else set()
        for job_id, job in running.items():
            if job_id in asked or states.get(job_id, (RUNNING,))[0] in TERMINAL:
                job.cancel.set()  # cancelled through another replica (or declared lost): stop it here
        ended = [i for i in known if states.get(i, (None,))[0] in TERMINAL and i not in running]
        records = {i: store.load(i) for i in ended}
        queued = store.load_queued(ADOPT_LIMIT)
        with self._cv:
            for job_id in ended:
                job, record = self.jobs.get(job_id), records.get(job_id)
                if job is None or record is None or job.status in TERMINAL or self._runs_here(job):
                    continue
                if job is self.preparing:
                    job.cancel.set()
                if job_id in self.waiting:
                    self.waiting.remove(job_id)
                self._adopt_end(job, record)
            for job_id in known:
                job = self.jobs.get(job_id)
                status, runner = states.get(job_id, (None, None))
                if job is None or self._runs_here(job):
                    continue
                if status == RUNNING and runner != self.replica and job.status == QUEUED:
                    if job is self.preparing:
                        job.cancel.set()
                    self._follow(job, runner)
                elif status == QUEUED and job.status == RUNNING and job.runner != self.replica:
                    job.status, job.runner, job.started, job.stage = QUEUED, None, None, "queued"
                    self._enqueue(job)  # a claim that failed on a storage error: it waits again
                elif status == RUNNING and job.runner != runner:
                    job.runner = runner
            for record in queued:
                if record.id in self.jobs or record.id in self._submitting:
                    continue
                record.ready = not self._needs_preparing(record) or self.prepare_job is None
                record.stage = "queued"
                self.jobs[record.id] = record
                self._enqueue(record)
            self._cv.notify_all()

    def _enqueue(self, job: Job) -> None:
        """Into `waiting` in the order the records give (when it was accepted)."""
        if job.id in self.waiting:
            return
        order = list(self.waiting)
        at = len(order)
        for index, other in enumerate(order):
            ahead = self.jobs.get(other)
            if ahead is not None and (ahead.created, ahead.id) > (job.created, job.id):
                at = index
                break
        self.waiting.insert(at, job.id)

    def _adopt_end(self, job: Job, record: Job) -> None:
        """A job that ended on another replica (or was cancelled there) ends here as its record says."""
        for name in ("status", "started", "finished", "step", "total", "timings", "error", "error_status",
                     "result", "video_path", "expired", "runner"):
            setattr(job, name, getattr(record, name))
        job.stage, job.progress, job.prepared, job.inputs_path = None, None, None, None
        self.jobs.pop(job.id, None)
        job.done.set()
        self._changed(job)
