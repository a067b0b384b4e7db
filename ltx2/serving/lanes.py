"""Lanes: the workers the job manager hands jobs to, one job per lane at a time.

A lane is one device's worker. The default is one in-process lane (the model this process loaded, run on
the manager's own thread, as ltx2 always did). `--devices` gives one lane per device, each backed by a
worker process (ltx2.serving.device_workers); another backend (a Ray actor, say) plugs in the same way:

    Lane(name, run_job, restart=None, describe=None)

- `run_job(job, on_step) -> (result dict, MP4 bytes)`: the in-process signature. It calls `on_step(step,
  total)` per denoising step and `job.on_progress(stage, done, total)` / `job.check()` between stages; any
  of them raises to stop the job (cancel, time limit), and the lane must stop its worker's job before
  it lets the exception out (the next job must find the device free).
- It raises `WorkerLost(reason)` when its worker died under the job (a killed process, a lost actor):
  the job fails with code `worker_lost` (HTTP 503: the request was fine, submit it again), the manager
  calls `restart(reason)` (blocking; the lane takes no job meanwhile) and the lane goes on. The other
  lanes never stop.
- It raises `JobFailed(body, status, device_fault)` for an error its worker reported (the job fails with
  that body); `device_fault` (a CUDA error, not a bad request or an out-of-memory) counts toward taking
  the device out of service and restarts its worker.
- `describe()` adds the lane's own facts (device, model, memory, pid) to /health and /metrics.
- `alive()` is asked by the supervisor every second while the lane is idle: False (its worker exited
  between jobs) counts a fault and restarts it.

A lane with a `restart` that meets `fault_limit` faults (lost workers, device faults, failed restarts)
within `fault_window` seconds is taken out of service: it takes no more jobs, and /health and /metrics
say so and why. An in-process lane (no `restart`) keeps today's behaviour: its faults fail their jobs.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from ..schema import ErrorResponse

WORKER_LOST_STATUS = 503  # the request was fine and may succeed on the next try; the worker is restarted
FAULT_LIMIT = 3  # faults of one lane within FAULT_WINDOW take it out of service
FAULT_WINDOW = 600.0


class WorkerLost(Exception):
    """A lane's worker died while it ran the job (killed, crashed, its connection gone)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class JobFailed(Exception):
    """A lane's worker reported the job failed: the error body and HTTP status it answers with."""

    def __init__(self, body: dict, status: int, device_fault: bool = False):
        super().__init__(body.get("error", "the job failed"))
        self.body, self.status, self.device_fault = body, status, device_fault


@dataclass
class Lane:
    name: str
    run_job: Callable
    restart: Callable[[str], None] | None = None
    describe: Callable[[], dict] | None = None
    alive: Callable[[], bool] | None = None  # False once its worker died while idle: the supervisor restarts it


def worker_lost_body(lane: str, reason: str) -> dict:
    return ErrorResponse(error=f"the worker on {lane} stopped while running this job ({reason}); it is being "
                         "restarted: submit the job again", code="worker_lost").model_dump()


class LaneState:
    """The manager's view of one lane: its thread, its running job, its restarts and faults."""

    def __init__(self, lane: Lane):
        self.lane = lane
        self.thread: threading.Thread | None = None
        self.running = None  # the Job it runs
        self.restarts = 0  # its worker (thread or process) replaced, since start
        self.abandoned: list[threading.Thread] = []  # stuck threads, left to return on their own
        self.faults: deque[tuple[float, str]] = deque()
        self.out_of_service: str | None = None  # why it takes no jobs, once faults reached the limit
        self.restarting = False  # its worker is being replaced: it takes no job until that ends

    @property
    def name(self) -> str:
        return self.lane.name

    def stuck_threads(self) -> list[threading.Thread]:
        """Abandoned threads still running: they may hold the device, so this lane waits for them."""
        self.abandoned = [t for t in self.abandoned if t.is_alive()]
        return self.abandoned

    def can_take(self) -> bool:
        return self.out_of_service is None and not self.restarting and not self.stuck_threads()

    def fault(self, why: str, limit: int, window: float) -> bool:
        """Count a fault; True when it takes the lane out of service."""
        now = time.monotonic()
        self.faults.append((now, why))
        while self.faults and now - self.faults[0][0] > window:
            self.faults.popleft()
        if len(self.faults) >= limit and self.out_of_service is None:
            self.out_of_service = (f"{len(self.faults)} faults within {window:.0f} s (the last: {why}); "
                                   "restart the server to use this device again")
            return True
        return False

    def view(self, admin: bool = False) -> dict:
        """/health's entry for the lane (the job's id only for the operators' key)."""
        job = self.running
        alive = self.thread is not None and self.thread.is_alive()
        out = {"name": self.name, "alive": alive, "in_service": self.out_of_service is None,
               "out_of_service_reason": self.out_of_service, "restarts": self.restarts,
               "restarting": self.restarting, "faults_recent": len(self.faults),
               "stage": job.stage if job is not None else None,
               "busy_seconds": round(time.time() - job.started, 1) if job is not None and job.started else None}
        if job is not None:
            out["progress"] = {"step": job.step, "total": job.total, **({"job": job.id} if admin else {})}
        if self.lane.describe is not None:
            try:
                out.update(self.lane.describe())
            except Exception as exc:  # noqa: BLE001 - a lane that cannot describe itself still serves
                out["describe_error"] = f"{type(exc).__name__}: {exc}"
        return out
