"""Kept for the import paths of the first version: the job records now live in `store/` (the interface,
SQLite, PostgreSQL). `JobStore` is the SQLite store."""

from __future__ import annotations

import sqlite3  # noqa: F401 - tests patch job_store.sqlite3.connect

from .store import (  # noqa: F401 - re-exported
    CANCELLED, DB_ERRORS, FAILED, QUEUED, RUNNING, SUCCEEDED, TERMINAL, Job, Store, StorageError, StoreError,
    _reason, open_store, stage_progress,
)
from .store.sqlite import (  # noqa: F401 - re-exported
    COLUMNS, SQLITE_CORRUPT, SQLITE_NOTADB, CorruptDatabase, _job_from_row, is_corrupt,
)
from .store.sqlite import SQLiteStore as JobStore  # noqa: F401
