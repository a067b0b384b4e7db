"""The job store: SQLite under the output directory (`sqlite.py`, the default: one box, no server to run)
or PostgreSQL (`postgres.py`, for several API replicas sharing one queue), behind one interface
(`base.Store`). `open_store(url, output_dir)` picks one from `--database` / LTX2_DATABASE.
"""

from __future__ import annotations

import os

from .base import (  # noqa: F401 - the records' names, importable from the package
    CANCELLED, DB_ERRORS, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, Store, StorageError, StoreError,
    _reason, job_from_row, stage_progress,
)


def open_store(url: str | None, output_dir: str, wait: float = 0.0) -> Store:
    """The store `url` names: empty or sqlite:///path for SQLite (default: jobs.sqlite3 in the output
    directory), postgresql://... (or postgres://) for PostgreSQL."""
    url = (url or "").strip()
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore  # psycopg is only needed by those who use it

        return PostgresStore(url, wait=wait)
    from .sqlite import SQLiteStore

    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///"):], wait=wait)  # sqlite:////abs/path keeps its leading /
    if url:  # only the scheme is repeated: the rest may hold a password
        raise StorageError("open the job database", "LTX2_DATABASE (--database) must be empty (SQLite in the "
                           "output directory), sqlite:///path or postgresql://...; got one starting "
                           f"{url.split(':', 1)[0][:20]!r}")
    return SQLiteStore(os.path.join(output_dir, "jobs.sqlite3"), wait=wait)
