"""What a job record is, and the one interface every store keeps (`Store`); the stores import this.

Two stores stand behind it: SQLite under the output directory (`sqlite.py`, the default: one box, no
server to run) and PostgreSQL (`postgres.py`, for several API replicas sharing one queue). The job
manager (`jobs.py`) decides what happens to a job and speaks no SQL; a store only remembers it.
`open_store` (the package) picks one from `--database` / LTX2_DATABASE.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from ...schema import ErrorResponse, GenerateRequest

log = logging.getLogger("ltx2.jobs")


class StoreError(Exception):
    """A store's driver failed (the PostgreSQL server unreachable, a query refused): raised in place of the
    driver's own exceptions, so that the job manager catches one kind whatever the store."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


# What a store raises when it cannot do its work; the job manager catches these (and nothing wider).
DB_ERRORS = (sqlite3.Error, StoreError, OSError)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


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
    """An OS or database error without the server's paths or addresses: the client needs the kind, not
    our layout."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return os.strerror(exc.errno)
    if isinstance(exc, StoreError):
        return exc.reason
    if getattr(exc, "sqlite_errorname", None):  # SQLite's extended code says which I/O failed
        return f"{type(exc).__name__}: {exc} ({exc.sqlite_errorname})"
    return f"{type(exc).__name__}: {exc}"


@dataclass
class Job:
    id: str
    request: GenerateRequest  # without its inputs once they are stored (see `inputs_path`)
    owner: str | None = None  # the name of the API key that submitted it; None on a server without keys
    status: str = QUEUED
    created: float = field(default_factory=time.time)
    started: float | None = None  # when it took the GPU
    finished: float | None = None
    step: int = 0
    total: int = 0
    stage: str | None = None  # what an active job is doing: preparing_inputs, ..., denoising, decoding_video, ...
    progress: dict | None = None  # while it runs: its stage, done, total and fraction (`stage_progress`)
    timings: dict[str, float] = field(default_factory=dict)
    error: dict | None = None  # ErrorResponse body
    error_status: int | None = None  # the HTTP status /generate answers with for this error
    result: dict | None = None  # the response without the video
    video_path: str | None = None
    expired: bool = False
    inputs_path: str | None = None  # the file holding image_start/image_end/audio until the job ends
    input_fields: tuple[str, ...] = ()  # which of them the request had
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    done: threading.Event = field(default_factory=threading.Event, repr=False)
    version: int = 0  # bumped on every change, for event streams
    prepared: Any = field(default=None, repr=False)  # decoded inputs, in memory only, until it runs
    ready: bool = False  # inputs decoded (or none to decode): the GPU may take it
    worked: float = 0.0  # seconds spent preparing; they count against the job time limit
    check: Any = field(default=None, repr=False)  # while it runs: raises JobCancelled / JobTimedOut when due
    on_progress: Any = field(default=None, repr=False)  # while it runs: (stage, done, total) of the stages without steps
    runner: str | None = None  # shared stores: the replica that claimed it (Store.claim)
    position: int | None = None  # shared stores: its place in the shared queue when last read

    def view(self, position: int | None = None) -> dict[str, Any]:
        """What GET /jobs/{id} shows."""
        return {
            "id": self.id,
            "status": self.status,
            "stage": self.stage,
            "progress": self.progress,
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


def stage_progress(stage: str, done: int, total: int) -> dict[str, Any]:
    """A running job's `progress`: where it is within its stage, in the stage's own units (denoising
    steps, the decoder's blocks, frames encoded)."""
    return {"stage": stage, "done": done, "total": total, "fraction": round(done / total, 4) if total else 0.0}




def job_from_row(row) -> Job:
    """The job a row records (a mapping of column to value, from either store); raises when the row
    cannot be read."""
    job = Job(id=row["id"], request=GenerateRequest.model_validate_json(row["request"]), status=row["status"],
              created=row["created"], started=row["started"], finished=row["finished"], step=row["step"] or 0,
              total=row["total"] or 0, timings=json.loads(row["timings"] or "{}"),
              error=json.loads(row["error"]) if row["error"] else None, error_status=row["error_status"],
              result=json.loads(row["result"]) if row["result"] else None, video_path=row["video_path"],
              expired=bool(row["expired"]), owner=row["owner"], inputs_path=row["inputs_path"],
              input_fields=tuple(f for f in (row["input_fields"] or "").split(",") if f))
    if job.status not in (QUEUED, RUNNING, *TERMINAL) or not isinstance(job.created, (int, float)):
        raise ValueError(f"status {job.status!r}, created {job.created!r}")
    if job.status in TERMINAL:
        job.done.set()
    return job


# ---------------------------------------------------------------------------------------------- the interface


class Store(ABC):
    """What the job manager asks of a store. Every method may raise one of DB_ERRORS.

    `shared` says whether other API replicas read and write the same records (PostgreSQL): then the
    manager claims a job before it runs it (`claim`), takes jobs other replicas accepted, and follows
    cancels and ends that happen elsewhere. A store that is not shared (SQLite) belongs to one process.
    """

    shared = False

    @abstractmethod
    def save(self, job: Job) -> None: ...

    @abstractmethod
    def load(self, job_id: str) -> Job | None: ...

    @abstractmethod
    def load_active(self) -> list[Job]:
        """Jobs that were queued or running, oldest first; unreadable rows are skipped and set aside."""

    @abstractmethod
    def list(self, owner: str | None, limit: int, after: float | None = None, everyone: bool = False,
             order: str = "desc") -> list[Job]: ...

    @abstractmethod
    def delete(self, job_id: str) -> None: ...

    @staticmethod
    def list_query(owner: str | None, limit: int, after: float | None, everyone: bool, order: str,
                   owner_is: str, mark: str) -> tuple[str, tuple]:
        """`list`'s SELECT and its arguments in a driver's dialect: `owner_is` compares with NULL as a value
        ("IS" in SQLite, "IS NOT DISTINCT FROM" in PostgreSQL), `mark` is the placeholder ("?", "%s").
        Newest first ("asc": oldest first), beyond the job created at `after` in that order."""
        newest = order != "asc"
        where, args = [], []
        if not everyone:
            where.append(f"owner {owner_is} {mark}")
            args.append(owner)
        if after is not None:
            where.append(f"created {'<' if newest else '>'} {mark}")
            args.append(after)
        sql = "SELECT * FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "")
        return sql + f" ORDER BY created {'DESC' if newest else 'ASC'} LIMIT {mark}", (*args, limit)

    @abstractmethod
    def videos(self) -> list[tuple[str, str, float]]:
        """(id, path, finished) of every video still served, oldest first."""

    @abstractmethod
    def mark_expired(self, job_ids: list[str]) -> None: ...

    @abstractmethod
    def prune(self, ended_before: float) -> int:
        """Delete the records of jobs that ended before `ended_before`; returns how many."""

    @abstractmethod
    def unreadable(self) -> list[str]:
        """The ids of the rows set aside as unreadable."""

    @abstractmethod
    def known_ids(self) -> set[str]: ...

    def check(self) -> None:
        """The supervisor's periodic check of the store itself (SQLite: the file is still there)."""

    def compact(self) -> None:
        """Give free space back after a sweep, where the store can."""

    @abstractmethod
    def close(self) -> None: ...

    # -- for shared stores only: several replicas, one queue ----------------------------------------

    def claim(self, job_id: str, runner: str, started: float) -> bool:
        """Mark a queued job running on `runner`, atomically: True for exactly one caller."""
        raise NotImplementedError

    def end_queued(self, job: Job) -> bool:
        """Write a queued job's end (a cancel) only if it is still queued everywhere: True if written."""
        raise NotImplementedError

    def request_cancel(self, job_id: str) -> None:
        """Ask the replica running a job to stop it (it polls `cancel_requested`)."""
        raise NotImplementedError

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        raise NotImplementedError

    def states(self, job_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """{id: (status, runner)} of these jobs; an id with no record is left out."""
        raise NotImplementedError

    def queued_ahead(self, created: float, job_id: str) -> int:
        """How many queued jobs, on any replica, were accepted before this one."""
        raise NotImplementedError

    def count_queued(self) -> int:
        raise NotImplementedError

    def heartbeat(self, replica: str) -> None:
        """Say this replica is alive (its running jobs are its own while it says so)."""
        raise NotImplementedError

    def fail_lost(self, stale_after: float, error: dict) -> list[str]:
        """Fail the running jobs of replicas silent for `stale_after` seconds; returns their ids."""
        raise NotImplementedError
