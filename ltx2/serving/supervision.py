"""The job manager's other half: its storage's health and its supervisor.

Whatever fails in storage (a full disk, a deleted folder, a database that refuses writes) is remembered
here, probed until it works again, and reported by `health()`. The supervisor thread, for each lane,
restarts a worker thread that died, replaces one stuck past its job's deadline (and its worker process,
if the lane has one), restarts a worker process that exited while idle, and counts faults (enough take
the lane out of service); it also notices a database file deleted under it, and sweeps old videos and
records. `JobManager` (jobs.py) inherits this; it is apart only to keep each
file about one thing.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from typing import Any

from .lanes import LaneState
from .storage import STORAGE_ERROR_STATUS, descriptors_short, probe_folder
from .store import DB_ERRORS, FAILED, QUEUED, Job, StorageError, _reason
from ..schema import ErrorResponse

log = logging.getLogger("ltx2.jobs")


class Supervision:
    """Mixed into JobManager: needs its store, folders, threads, `_cv`, `_finish` and `_start_worker`."""

    def health(self, admin: bool = False) -> dict[str, Any]:
        """Whether jobs can run now, and if not, why: the workers' liveness and the storage's state.
        Several lanes (--devices): `lanes` lists each; jobs can run while one is alive and in service."""
        lanes = self.lanes
        serving = [lane for lane in lanes if lane.out_of_service is None]
        alive = any(lane.thread is not None and lane.thread.is_alive() for lane in serving)
        preparer = self._preparer is not None and self._preparer.is_alive()
        running = self.running
        stuck = self._stuck_threads()
        busy = round(time.time() - running.started, 1) if running is not None and running.started else None
        problems = []
        if not (alive and preparer) and not self._stopping.is_set():
            problems.append("no device is in service: every one has faulted repeatedly (see lanes)" if not serving
                            else "a worker thread is not running (the supervisor restarts it within seconds)")
        if stuck and all(lane.stuck_threads() or lane.out_of_service for lane in lanes):
            problems.append("a job is stuck past its deadline and still holds its thread; new jobs wait for it")
        if self.storage_problem is not None:
            problems.append(f"storage is failing: {self.storage_problem}")
        elif (short := descriptors_short()) is not None:
            problems.append(short)
        return {
            "ready": not problems and self.accepting,
            "problems": problems,
            "worker": {"alive": alive, "preparer_alive": preparer, "restarts": self.restarts, "busy_seconds": busy,
                       "stage": running.stage if running is not None else None, "stuck_threads": len(stuck),
                       "running": len(self.running_jobs), "lanes": len(lanes), "in_service": len(serving)},
            "storage": {"ok": self.storage_problem is None, "error": self.storage_problem},
            **({"lanes": [lane.view(admin) for lane in lanes]} if len(lanes) > 1 else {}),
            "out_of_service": [f"{lane.name}: {lane.out_of_service}" for lane in lanes if lane.out_of_service],
        }

    # -- storage ------------------------------------------------------------------------------

    @staticmethod
    def _remove(path: str | None) -> None:
        if path:
            try:
                os.remove(path)
            except OSError:
                pass

    def _save(self, job: Job) -> bool:
        """Write a job's record; on failure, report storage as failing (the caller keeps the job)."""
        try:
            self.store.save(job)
        except DB_ERRORS as exc:
            self._storage_failed("save a job record", exc)
            return False
        return True

    def _save_unsaved(self) -> None:
        for job in list(self._unsaved.values()):
            if not self._save(job):
                break
            self._unsaved.pop(job.id, None)

    def _resource_failed(self, job: Job, action: str, exc: OSError) -> None:
        """The job met a full disk, no descriptors left...: it fails with 507 and /health says why until the
        supervisor's probe succeeds."""
        self._storage_failed(action, exc)
        self._finish(job, FAILED, error=StorageError(action, exc).body(), error_status=STORAGE_ERROR_STATUS)

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
        try:
            self._make_folders()
            probe_folder(self.videos, max(self._failed_write_bytes, 4096))
            probe_folder(self.inputs, 4096)
            self.store.check()
        except DB_ERRORS as exc:
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
            checks = (self._check_workers, self._check_storage, self._maybe_sweep)
            if self.store.shared:  # several replicas: agree with the records every tick (shared_queue)
                checks = (self._sync_shared, *checks)
            for check in checks:
                try:
                    check()
                except Exception:  # noqa: BLE001 - the supervisor itself must outlive any one check
                    log.exception("supervisor check %s failed", check.__name__)

    def _check_storage(self) -> None:
        if self.storage_problem is not None:
            self._probe_storage()
        else:
            try:
                self._make_folders()  # a folder removed while idle is made again before it is needed
            except OSError as exc:
                self._storage_failed("recreate the output folders", exc)
            try:
                self.store.check()  # a database deleted while idle is recreated before it is needed
            except DB_ERRORS as exc:
                self._storage_failed("recreate the job database", exc)

    def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep >= self.sweep_every:
            self.sweep()

    def _check_workers(self) -> None:
        with self._cv:
            if not self.accepting:
                return
            for lane in self.lanes:
                self._check_lane(lane)
            preparer, job = self._preparer, self.preparing
            if preparer is not None and not preparer.is_alive():
                self.preparing = None
                self.restarts += 1
                log.error(json.dumps({"event": "preparer_died", "job": job.id if job else None}))
                if job is not None and job.status == QUEUED:
                    if job.id in self.waiting:
                        self.waiting.remove(job.id)
                    self._finish(job, FAILED, error=ErrorResponse(
                        error="preparing this job's inputs stopped unexpectedly; submit the job again",
                        code="worker_crashed").model_dump(), error_status=500)
                self._start_preparer()
            self._cv.notify_all()

    def _check_lane(self, lane) -> None:
        """One lane's worker thread (under the lock): restarted if it died, replaced if stuck in a job."""
        worker, job = lane.thread, lane.running
        if worker is not None and not worker.is_alive():
            # Only a BaseException (or a bug in the loop) gets here: every job error is caught.
            lane.running = None
            self.restarts += 1
            lane.restarts += 1
            log.error(json.dumps({"event": "worker_died", "lane": lane.name, "job": job.id if job else None,
                                  "restarts": self.restarts}))
            if job is not None:
                self._finish(job, FAILED, error=ErrorResponse(
                    error="the GPU worker stopped unexpectedly while running this job; it was restarted: "
                          "submit the job again", code="worker_crashed").model_dump(), error_status=500)
            self._start_worker(lane)
        elif job is None and lane.lane.alive is not None and lane.lane.restart is not None and \
                lane.out_of_service is None and not lane.restarting and not lane.lane.alive():
            # Its worker exited between jobs (killed, out of host memory): a fault, and a fresh worker.
            why = "its worker exited while idle"
            log.error(json.dumps({"event": "worker_exited_idle", "lane": lane.name}))
            lane.restarting = True
            if lane.fault(why, self.fault_limit, self.fault_window):
                lane.restarting = False
                log.error(json.dumps({"event": "lane_out_of_service", "lane": lane.name, "reason": lane.out_of_service}))
            else:
                threading.Thread(target=self.restart_lane, args=(lane, why), name=f"ltx2-restart-{lane.name}",
                                 daemon=True).start()
        elif job is not None and job.started is not None and \
                time.time() > job.started + self.job_timeout + self.stuck_grace:
            # Past its deadline and the grace a stage without steps may need: stuck. Fail the job,
            # leave its thread to return on its own, and give the lane a fresh worker thread.
            lane.running = None
            self.restarts += 1
            lane.restarts += 1
            lane.abandoned.append(worker)
            log.error(json.dumps({"event": "worker_stuck", "lane": lane.name, "job": job.id, "restarts": self.restarts}))
            self._finish(job, FAILED, error=ErrorResponse(
                error=f"the job was stuck for {self.stuck_grace:.0f} s past its {self.job_timeout:.0f} s "
                      "time limit and was abandoned; submit it again", code="timeout").model_dump(),
                error_status=504)
            self._start_worker(lane)
            if lane.lane.restart is not None:
                # A worker process stuck in a job is replaced: that ends the abandoned thread's wait too.
                lane.restarting = True
                threading.Thread(target=self.restart_lane, args=(lane, "stuck past its job's time limit"),
                                 name=f"ltx2-restart-{lane.name}", daemon=True).start()

    def _lane_fault(self, lane: LaneState, why: str) -> None:
        """A lane with a restartable worker faulted: counted (enough of them take it out of service), then
        its worker is replaced on this thread (the lane takes no job meanwhile; the others go on)."""
        if lane.lane.restart is None or lane.thread is not threading.current_thread():
            return  # in-process (as before), or a stuck thread that returned: its replacement owns the lane
        with self._cv:
            if lane.fault(why, self.fault_limit, self.fault_window):
                log.error(json.dumps({"event": "lane_out_of_service", "lane": lane.name, "reason": lane.out_of_service}))
                return
        self.restart_lane(lane, why)

    def restart_lane(self, lane: LaneState, why: str) -> None:
        """Replace a lane's worker (blocking); a restart that fails is a fault too, and is tried again
        until the faults take the lane out of service."""
        while self.accepting and not self._stopping.is_set():  # at shutdown the workers end; none starts
            with self._cv:
                lane.restarting = True
                lane.restarts += 1
                self.restarts += 1
            log.warning(json.dumps({"event": "lane_restarting", "lane": lane.name, "reason": why}))
            try:
                lane.lane.restart(why)
                break
            except Exception as exc:  # noqa: BLE001 - a worker that will not start
                why = f"restart failed: {type(exc).__name__}: {exc}"
                log.error(json.dumps({"event": "lane_restart_failed", "lane": lane.name, "error": why}))
                with self._cv:
                    if lane.fault(why, self.fault_limit, self.fault_window):
                        log.error(json.dumps({"event": "lane_out_of_service", "lane": lane.name,
                                              "reason": lane.out_of_service}))
                        break
        with self._cv:
            lane.restarting = False
            self._cv.notify_all()

    def _stuck_threads(self) -> list[threading.Thread]:
        """Abandoned workers still running, on any lane: they may hold their device."""
        return [thread for lane in self.lanes for thread in lane.stuck_threads()]

    # -- sweeping videos and records ------------------------------------------------------------

    def sweep(self, now: float | None = None) -> None:
        """Expire videos past their time-to-live, then the oldest while over the size cap; prune records
        past `record_ttl`; give the database's free pages back. Runs in the supervisor (never in a
        request), every `sweep_every` seconds and after each job."""
        self._last_sweep = time.monotonic()
        now = time.time() if now is None else now
        try:
            videos = self.store.videos()
            expired, kept = [], []
            for job_id, path, finished in videos:
                if now - finished > self.result_ttl or not os.path.exists(path):
                    expired.append((job_id, path))
                else:
                    kept.append((job_id, path, os.path.getsize(path)))
            total = sum(size for _, _, size in kept)
            while kept and total > self.output_max_bytes:
                job_id, path, size = kept.pop(0)
                total -= size
                expired.append((job_id, path))
            for job_id, path in expired:
                self._remove(path)
            if expired:
                self.store.mark_expired([job_id for job_id, _ in expired])
                for job_id, _ in expired:
                    job = self._unsaved.get(job_id)
                    if job is not None:
                        job.expired = True
                log.info(json.dumps({"event": "job_videos_expired", "jobs": len(expired)}))
            pruned = self.store.prune(now - self.record_ttl)
            if pruned or expired:
                self.store.compact()
            if pruned:
                log.info(json.dumps({"event": "job_records_pruned", "records": pruned}))
        except DB_ERRORS as exc:
            self._storage_failed("sweep old videos and records", exc)

    # Kept for callers of the first version: a sweep.
    cleanup = sweep
