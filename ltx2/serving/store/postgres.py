"""The PostgreSQL job store: one queue and one set of records for several API replicas.

Chosen with `--database postgresql://...` (psycopg 3: `pip install 'ltx2[postgres]'`). Every replica
reads and writes the same rows, so the rules that keep them agreeing live in the SQL here:
- a queued job is claimed by exactly one replica (`claim`: a conditional UPDATE under the row's lock);
- once claimed, only its runner writes the row (`save` leaves a claimed row to its runner), and an
  ended row never changes again but for its video's expiry;
- a replica says it is alive every second (`heartbeat`); the running jobs of one silent for longer
  than the grace are failed `worker_lost` by whichever replica notices first (`fail_lost`).
Times that decide liveness come from the database's clock, so replicas' clocks need not agree.
Migrations run at start-up, one replica at a time (an advisory lock), each recorded in `schema_version`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from .base import TERMINAL, Job, Store, StorageError, StoreError
from .base import job_from_row as _job_from_row

try:
    import psycopg
    from psycopg.rows import dict_row
except ImportError:  # only needed by those who choose PostgreSQL
    psycopg = None

log = logging.getLogger("ltx2.jobs")

_COLUMNS = ("id", "status", "created", "started", "finished", "request", "step", "total", "timings", "error",
            "error_status", "result", "video_path", "expired", "owner", "inputs_path", "input_fields")
_ENDED = "('succeeded', 'failed', 'cancelled')"
assert set(TERMINAL) == {"succeeded", "failed", "cancelled"}

# Each step runs once, in order, in one transaction; a newer version appends steps and never edits one.
MIGRATIONS = (
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY, status TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
        started DOUBLE PRECISION, finished DOUBLE PRECISION, request TEXT NOT NULL, step INTEGER,
        total INTEGER, timings TEXT, error TEXT, error_status INTEGER, result TEXT, video_path TEXT,
        expired INTEGER NOT NULL DEFAULT 0, owner TEXT, inputs_path TEXT, input_fields TEXT,
        runner TEXT, cancel_requested BOOLEAN NOT NULL DEFAULT FALSE);
    CREATE INDEX jobs_by_status ON jobs (status, created);
    CREATE INDEX jobs_by_owner ON jobs (owner, created);
    CREATE TABLE store_replicas (id TEXT PRIMARY KEY, seen DOUBLE PRECISION NOT NULL);
    CREATE TABLE jobs_unreadable (id TEXT PRIMARY KEY, row TEXT, error TEXT, moved DOUBLE PRECISION)""",
)
_MIGRATION_LOCK = 0x17C2  # pg_advisory_xact_lock key: replicas starting together migrate one at a time
_NOW = "extract(epoch from clock_timestamp())"


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    creds, host = rest.rsplit("@", 1)
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}" if ":" in creds else url


class PostgresStore(Store):
    """Job records in PostgreSQL. One connection, serialised by a lock (writes are few); a broken
    connection is replaced at the next call. Driver errors are raised as StoreError."""

    shared = True

    def __init__(self, url: str, wait: float = 0.0):
        if psycopg is None:
            raise StorageError("open the job database", "--database postgresql://... needs psycopg: "
                               "pip install 'ltx2[postgres]'")
        self.url = url
        self._lock = threading.Lock()
        self._db = None
        deadline, pause, seen = time.monotonic() + wait, 0.25, None
        while True:
            try:
                with self._lock:
                    self._connection()
                    self._migrate()
                return
            except StoreError as exc:
                if exc.reason != seen:
                    log.error(json.dumps({"event": "job_database_unavailable", "database": _safe(url),
                                          "error": exc.reason}))
                    seen = exc.reason
                if time.monotonic() + pause > deadline:
                    raise StorageError("open the job database", exc) from exc
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    # -- connection and migrations ------------------------------------------------------------

    def _connection(self):
        if self._db is None or self._db.closed or self._db.broken:
            try:
                self._db = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
            except psycopg.Error as exc:
                self._db = None
                raise StoreError(_driver_reason(exc)) from exc
        return self._db

    def _migrate(self) -> None:
        db = self._db
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                row = db.execute("SELECT max(version) AS v FROM schema_version").fetchone()
                done = row["v"] or 0
                for number, step in enumerate(MIGRATIONS[done:], start=done + 1):
                    db.execute(step)
                    db.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
                    log.info(json.dumps({"event": "job_database_migrated", "version": number}))
        except psycopg.Error as exc:
            raise StoreError(_driver_reason(exc)) from exc

    def _run(self, sql: str, args: tuple | list = (), *, many: bool = False, fetch: bool = True) -> Any:
        """One statement (autocommit); rows as dicts, or the row count when `fetch` is False."""
        with self._lock:
            db = self._connection()
            try:
                if many:
                    with db.cursor() as cursor:
                        cursor.executemany(sql, args)
                        return cursor.rowcount
                cursor = db.execute(sql, args)
                return cursor.fetchall() if fetch else cursor.rowcount
            except psycopg.Error as exc:
                raise StoreError(_driver_reason(exc)) from exc

    # -- reading and writing -----------------------------------------------------------------

    def save(self, job: Job) -> None:
        """Insert or update the record. A claimed row is written only by its runner, and an ended row
        not at all: a replica's stale view never overwrites another's."""
        row = (job.id, job.status, job.created, job.started, job.finished,
               job.request.model_dump_json(exclude_unset=True), job.step, job.total, json.dumps(job.timings),
               json.dumps(job.error) if job.error else None, job.error_status,
               json.dumps(job.result) if job.result else None, job.video_path, int(job.expired),
               job.owner, job.inputs_path, ",".join(job.input_fields) or None, job.runner)
        names = (*_COLUMNS, "runner")
        updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in names if n not in ("id", "created", "owner", "runner"))
        self._run(f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('%s' for _ in names)}) "
                  f"ON CONFLICT (id) DO UPDATE SET {updates} WHERE jobs.status NOT IN {_ENDED} "
                  "AND (jobs.runner IS NULL OR jobs.runner = EXCLUDED.runner)", row, fetch=False)

    def _jobs(self, rows: list[dict]) -> list[Job]:
        jobs, bad = [], []
        for row in rows:
            try:
                job = _job_from_row(row)
                job.runner = row.get("runner")
                jobs.append(job)
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the server
                error = f"{type(exc).__name__}: {exc}"[:300]
                log.error(json.dumps({"event": "job_record_skipped", "job": str(row.get("id")), "error": error,
                                      "action": "moved to the table jobs_unreadable"}))
                bad.append((row, error))
        for row, error in bad:
            try:
                self._run("INSERT INTO jobs_unreadable (id, row, error, moved) VALUES (%s, %s, %s, %s) "
                          "ON CONFLICT (id) DO NOTHING", (str(row["id"]), json.dumps(row, default=repr), error,
                                                          time.time()), fetch=False)
                self._run("DELETE FROM jobs WHERE id = %s", (row["id"],), fetch=False)
            except StoreError as exc:
                log.error(json.dumps({"event": "job_records_not_set_aside", "jobs": 1, "error": exc.reason}))
        return jobs

    def load(self, job_id: str) -> Job | None:
        jobs = self._jobs(self._run("SELECT * FROM jobs WHERE id = %s", (job_id,)))
        return jobs[0] if jobs else None

    def load_active(self) -> list[Job]:
        return self._jobs(self._run("SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created"))

    def load_queued(self, limit: int) -> list[Job]:
        """The oldest queued jobs, at most `limit`: what a replica may take from the shared queue."""
        return self._jobs(self._run("SELECT * FROM jobs WHERE status = 'queued' ORDER BY created LIMIT %s",
                                    (limit,)))

    def unreadable(self) -> list[str]:
        return [r["id"] for r in self._run("SELECT id FROM jobs_unreadable ORDER BY moved")]

    def list(self, owner: str | None, limit: int, after: float | None = None, everyone: bool = False,
             order: str = "desc") -> list[Job]:
        return self._jobs(self._run(*self.list_query(owner, limit, after, everyone, order,
                                                     "IS NOT DISTINCT FROM", "%s")))

    def delete(self, job_id: str) -> None:
        self._run("DELETE FROM jobs WHERE id = %s", (job_id,), fetch=False)

    def videos(self) -> list[tuple[str, str, float]]:
        rows = self._run("SELECT id, video_path, finished FROM jobs WHERE status = 'succeeded' AND expired = 0 "
                         "AND video_path IS NOT NULL ORDER BY finished")
        return [(r["id"], r["video_path"], r["finished"] or 0.0) for r in rows]

    def mark_expired(self, job_ids: list[str]) -> None:
        if job_ids:
            self._run("UPDATE jobs SET expired = 1 WHERE id = ANY(%s)", (list(job_ids),), fetch=False)

    def prune(self, ended_before: float) -> int:
        return self._run(f"DELETE FROM jobs WHERE status IN {_ENDED} AND COALESCE(finished, created) < %s",
                         (ended_before,), fetch=False)

    def known_ids(self) -> set[str]:
        return {r["id"] for r in self._run("SELECT id FROM jobs")}

    def check(self) -> None:
        self._run("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()

    # -- one queue, several replicas -----------------------------------------------------------

    def claim(self, job_id: str, runner: str, started: float) -> bool:
        # A concurrent claim waits on the row's lock, then re-reads it: it sees `running` and updates nothing.
        return self._run("UPDATE jobs SET status = 'running', runner = %s, started = %s "
                         "WHERE id = %s AND status = 'queued'", (runner, started, job_id), fetch=False) == 1

    def end_queued(self, job: Job) -> bool:
        return self._run("UPDATE jobs SET status = %s, finished = %s, error = %s, error_status = %s, "
                         "inputs_path = NULL, request = %s WHERE id = %s AND status = 'queued'",
                         (job.status, job.finished, json.dumps(job.error) if job.error else None,
                          job.error_status, job.request.model_dump_json(exclude_unset=True), job.id),
                         fetch=False) == 1

    def request_cancel(self, job_id: str) -> None:
        self._run("UPDATE jobs SET cancel_requested = TRUE WHERE id = %s AND status = 'running'", (job_id,),
                  fetch=False)

    def cancel_requested(self, job_ids: list[str]) -> set[str]:
        if not job_ids:
            return set()
        rows = self._run("SELECT id FROM jobs WHERE id = ANY(%s) AND cancel_requested", (list(job_ids),))
        return {r["id"] for r in rows}

    def states(self, job_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        if not job_ids:
            return {}
        rows = self._run("SELECT id, status, runner FROM jobs WHERE id = ANY(%s)", (list(job_ids),))
        return {r["id"]: (r["status"], r["runner"]) for r in rows}

    def queued_ahead(self, created: float, job_id: str) -> int:
        rows = self._run("SELECT count(*) AS n FROM jobs WHERE status = 'queued' AND (created < %s OR "
                         "(created = %s AND id < %s))", (created, created, job_id))
        return rows[0]["n"]

    def count_queued(self) -> int:
        return self._run("SELECT count(*) AS n FROM jobs WHERE status = 'queued'")[0]["n"]

    def heartbeat(self, replica: str) -> None:
        self._run(f"INSERT INTO store_replicas (id, seen) VALUES (%s, {_NOW}) "
                  f"ON CONFLICT (id) DO UPDATE SET seen = {_NOW}", (replica,), fetch=False)

    def forget_replica(self, replica: str) -> None:
        self._run("DELETE FROM store_replicas WHERE id = %s", (replica,), fetch=False)

    def fail_lost(self, stale_after: float, error: dict) -> list[str]:
        rows = self._run(
            f"UPDATE jobs SET status = 'failed', finished = {_NOW}, error = %s, error_status = 500, "
            "inputs_path = NULL WHERE status = 'running' AND runner IS NOT NULL AND runner NOT IN "
            f"(SELECT id FROM store_replicas WHERE seen > {_NOW} - %s) RETURNING id",
            (json.dumps(error), stale_after))
        # Every start is a new name: forget those silent for an hour (their jobs were failed above long ago).
        self._run(f"DELETE FROM store_replicas WHERE seen < {_NOW} - 3600", fetch=False)
        return [r["id"] for r in rows]


def _driver_reason(exc: BaseException) -> str:
    """A psycopg error's kind and first line, without the connection string."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]
