"""The SQLite job store: the default, one file under the output directory, for one server process.

This is the only code that speaks SQLite. It survives what a local disk does to a file: a damaged
database is moved aside, a deleted one is recreated from the open copy, an unreadable row is set aside.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time

from .base import Job, Store, StorageError, _reason
from .base import job_from_row as _job_from_row

log = logging.getLogger("ltx2.jobs")

# SQLite's primary result codes (the low byte of an extended code) that mean the file itself is damaged.
# Only these move a database aside: an I/O error, a full disk, a lock or a permission says nothing about
# the records, which are intact and readable once the storage is back.
SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def is_corrupt(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)


# ---------------------------------------------------------------------------------------------- records

# Column -> SQLite type. Columns a newer version adds are added to an older file at start-up; a row
# that cannot be read (another version's, or damaged) is skipped with a log line, never fatal.
COLUMNS = {
    "id": "TEXT PRIMARY KEY", "status": "TEXT", "created": "REAL", "started": "REAL", "finished": "REAL",
    "request": "TEXT", "step": "INTEGER", "total": "INTEGER", "timings": "TEXT", "error": "TEXT",
    "error_status": "INTEGER", "result": "TEXT", "video_path": "TEXT", "expired": "INTEGER DEFAULT 0",
    "owner": "TEXT", "inputs_path": "TEXT", "input_fields": "TEXT",
}
_NAMES = tuple(COLUMNS)
_INSERT = f"INSERT OR REPLACE INTO jobs ({', '.join(_NAMES)}) VALUES ({', '.join('?' for _ in _NAMES)})"
_ACTIVE = "status IN ('queued', 'running')"
_ENDED = "status IN ('succeeded', 'failed', 'cancelled')"


class CorruptDatabase(Exception):
    """quick_check found damage the error codes did not report."""


class SQLiteStore(Store):
    """SQLite records of every job. Writes are few (state changes, not every step) and serialised.

    The file is checked at start-up: only one SQLite reports as damaged (quick_check, SQLITE_CORRUPT,
    SQLITE_NOTADB) is moved aside (`jobs.sqlite3.corrupt-<time>`) with an error in the log, and a fresh
    one started. Any other failure (an I/O error, a full disk, a lock, a permission) leaves the file as it
    is: opening is retried for `wait` seconds, then StorageError says why. Opening writes one small row,
    so a database that can be read but not written does not pass. Before each write the file is checked
    to still be the one open: if it was deleted (or replaced) while running, it is recreated from the
    open copy, so queued jobs do not vanish at the next start. Free pages are given back to the file
    system (incremental auto-vacuum), and the write-ahead log is truncated after each sweep. A row that
    cannot be read is logged once and moved to the table `jobs_unreadable` (kept for inspection).
    """

    def __init__(self, path: str, wait: float = 0.0):
        self.path = path
        self._lock = threading.Lock()
        self._db = self._open_retrying(wait)

    # -- opening ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file, or at the VACUUM below
        db.execute("PRAGMA journal_mode=WAL")  # a reader never waits for the worker's write
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA journal_size_limit=1048576")  # the WAL shrinks back to 1 MB after a checkpoint
        return db

    def _open_retrying(self, wait: float) -> sqlite3.Connection:
        """Open the file, retrying for `wait` seconds whatever is not damage (a transient I/O error, a
        lock, a disk that may get space back); then raise StorageError. Each distinct failure is logged once."""
        deadline, pause, seen = time.monotonic() + wait, 0.25, None
        while True:
            try:
                return self._open()
            except (sqlite3.Error, OSError) as exc:
                reason = _reason(exc)
                if reason != seen:
                    log.error(json.dumps({"event": "job_database_unavailable", "path": self.path, "error": reason,
                                          "action": "left as it is; retrying" if time.monotonic() < deadline
                                          else "left as it is"}))
                    seen = reason
                if time.monotonic() + pause > deadline:
                    raise StorageError("open the job database", exc) from exc
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _open(self) -> sqlite3.Connection:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        db = None
        try:
            db = self._connect()
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise CorruptDatabase(f"quick_check: {check}")
            self._migrate(db)
        except (sqlite3.Error, CorruptDatabase) as exc:
            if db is not None:
                db.close()
            if not isinstance(exc, CorruptDatabase) and not is_corrupt(exc):
                raise  # the records may be intact: never move them aside for this
            self._move_aside(".corrupt", f"SQLite reports it damaged ({exc})")
            db = self._connect()
            self._migrate(db)
        try:
            # One real write: a database that reads but cannot be written (a full disk) is not open.
            db.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('opened', ?)", (str(time.time()),))
            self._inode = os.stat(self.path).st_ino
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute(f"CREATE TABLE IF NOT EXISTS jobs ({', '.join(f'{k} {v}' for k, v in COLUMNS.items())})")
        have = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
        for name, kind in COLUMNS.items():
            if name not in have:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind.replace(' PRIMARY KEY', '')}")
        db.execute("CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, finished)")
        db.execute("CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created)")
        db.execute("CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT)")
        # Rows no version of the reader could read, moved out of `jobs` so they are logged only once.
        db.execute("CREATE TABLE IF NOT EXISTS jobs_unreadable (id TEXT PRIMARY KEY, row TEXT, error TEXT, "
                   "moved REAL)")
        if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # a file from before: convert it once
            db.execute("VACUUM")

    def _move_aside(self, suffix: str, why: str) -> None:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = f"{self.path}{suffix}-{stamp}"
        for tail in ("", "-wal", "-shm"):
            if os.path.exists(self.path + tail):
                os.replace(self.path + tail, moved + tail)
        log.error(json.dumps({"event": "job_database_moved_aside", "path": self.path, "moved_to": moved,
                              "why": why, "action": "started a fresh job database; the old one is kept for "
                                                     "inspection"}))

    def _check_file(self) -> None:
        """Recreate the file if it was deleted or replaced while open (SQLite would go on writing to
        the deleted inode, and every record would be gone at the next start)."""
        try:
            same = os.stat(self.path).st_ino == self._inode
        except FileNotFoundError:
            same = False
        if same:
            return
        if os.path.exists(self.path):
            self._move_aside(".replaced", "another file took its place while the server ran")
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)  # the whole output folder may have gone
        for tail in ("-wal", "-shm"):  # a stale log must never be replayed into the new file
            try:
                os.remove(self.path + tail)
            except FileNotFoundError:
                pass
        fresh = self._connect()
        self._db.backup(fresh)  # the open connection still reads the deleted file: copy it all
        self._migrate(fresh)
        self._db.close()
        self._db = fresh
        self._inode = os.stat(self.path).st_ino
        log.error(json.dumps({"event": "job_database_recreated", "path": self.path,
                              "why": "the file was deleted or replaced while the server ran; its records were "
                                     "copied from the open database"}))

    # -- reading and writing -----------------------------------------------------------------

    def save(self, job: Job) -> None:
        row = (job.id, job.status, job.created, job.started, job.finished,
               job.request.model_dump_json(exclude_unset=True), job.step, job.total, json.dumps(job.timings),
               json.dumps(job.error) if job.error else None, job.error_status,
               json.dumps(job.result) if job.result else None, job.video_path, int(job.expired),
               job.owner, job.inputs_path, ",".join(job.input_fields) or None)
        with self._lock:
            self._check_file()
            self._db.execute(_INSERT, row)

    def check(self) -> None:
        """The periodic check: recreate a deleted file even when no job is being written."""
        with self._lock:
            self._check_file()

    def _rows(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _jobs(self, rows: list[sqlite3.Row]) -> list[Job]:
        """The rows as jobs. One that cannot be read (another version's, or damaged) is skipped with one
        log line and moved to `jobs_unreadable`, so it is not read (and logged) again at every start."""
        jobs, bad = [], []
        for row in rows:
            try:
                jobs.append(_job_from_row(row))
            except Exception as exc:  # noqa: BLE001 - one bad row must not stop the server
                error = f"{type(exc).__name__}: {exc}"[:300]
                log.error(json.dumps({"event": "job_record_skipped", "job": str(row["id"]), "error": error,
                                      "action": "moved to the table jobs_unreadable"}))
                bad.append((row, error))
        if bad:
            self._set_aside(bad)
        return jobs

    def _set_aside(self, bad: list[tuple[sqlite3.Row, str]]) -> None:
        moved = [(str(row["id"]), json.dumps({k: row[k] for k in row.keys()}, default=repr), error, time.time())
                 for row, error in bad]
        try:
            with self._lock:
                self._check_file()
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany("INSERT OR REPLACE INTO jobs_unreadable (id, row, error, moved) "
                                         "VALUES (?, ?, ?, ?)", moved)
                    self._db.executemany("DELETE FROM jobs WHERE id = ?", [(m[0],) for m in moved])
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        except (sqlite3.Error, OSError) as exc:  # storage failing: they are skipped again next time
            log.error(json.dumps({"event": "job_records_not_set_aside", "jobs": len(moved), "error": _reason(exc)}))

    def load(self, job_id: str) -> Job | None:
        jobs = self._jobs(self._rows("SELECT * FROM jobs WHERE id = ?", (job_id,)))
        return jobs[0] if jobs else None

    def load_active(self) -> list[Job]:
        """Jobs that were queued or running, oldest first; unreadable rows are skipped and set aside."""
        return self._jobs(self._rows(f"SELECT * FROM jobs WHERE {_ACTIVE} ORDER BY created"))

    def unreadable(self) -> list[str]:
        """The ids of the rows set aside as unreadable."""
        return [r["id"] for r in self._rows("SELECT id FROM jobs_unreadable ORDER BY moved")]

    def list(self, owner: str | None, limit: int, after: float | None = None, everyone: bool = False,
             order: str = "desc") -> list[Job]:
        """Jobs of `owner` (all owners with `everyone`), newest first ("asc": oldest first), beyond the
        one created at `after` in that order."""
        return self._jobs(self._rows(*self.list_query(owner, limit, after, everyone, order, "IS", "?")))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._check_file()
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def videos(self) -> list[tuple[str, str, float]]:
        """(id, path, finished) of every video still served, oldest first."""
        rows = self._rows("SELECT id, video_path, finished FROM jobs WHERE status = 'succeeded' AND expired = 0 "
                          "AND video_path IS NOT NULL ORDER BY finished")
        return [(r["id"], r["video_path"], r["finished"] or 0.0) for r in rows]

    def mark_expired(self, job_ids: list[str]) -> None:
        with self._lock:
            self._check_file()
            self._db.executemany("UPDATE jobs SET expired = 1 WHERE id = ?", [(i,) for i in job_ids])

    def prune(self, ended_before: float) -> int:
        """Delete the records of jobs that ended before `ended_before`; returns how many."""
        with self._lock:
            self._check_file()
            cursor = self._db.execute(f"DELETE FROM jobs WHERE {_ENDED} AND COALESCE(finished, created) < ?",
                                      (ended_before,))
            return cursor.rowcount

    def compact(self) -> None:
        """Give free pages back to the file system and truncate the write-ahead log."""
        with self._lock:
            # executescript steps it to the end; execute() would free one page per call.
            self._db.executescript("PRAGMA incremental_vacuum;")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def known_ids(self) -> set[str]:
        return {r["id"] for r in self._rows("SELECT id FROM jobs")}

    def close(self) -> None:
        with self._lock:
            self._db.close()
