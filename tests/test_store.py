"""The job store's interface: SQLite stays the default, a one-box server needs nothing new, and a
database setting that names no store is refused at start, naming the setting."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ltx2.schema import GenerateRequest
from ltx2.serving.store import Job, Store, StorageError, open_store
from ltx2.serving.store.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent


def test_no_database_setting_is_sqlite_in_the_output_directory_as_before(tmp_path):
    store = open_store("", str(tmp_path))
    assert isinstance(store, SQLiteStore) and isinstance(store, Store) and not store.shared
    assert store.path == os.path.join(str(tmp_path), "jobs.sqlite3")
    store.save(Job(id="a1", request=GenerateRequest(prompt="a boat"), owner="alice"))
    store.close()
    # The old import path still opens the same file with the same records.
    from ltx2.serving.job_store import JobStore

    assert JobStore(str(tmp_path / "jobs.sqlite3")).load("a1").owner == "alice"


def test_a_sqlite_url_names_the_file(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/elsewhere.db", "unused")
    assert isinstance(store, SQLiteStore) and store.path == f"{tmp_path}/elsewhere.db"
    store.close()


@pytest.mark.parametrize("url", ["mysql://root:hunter2@db/x", "jobs.sqlite3", "http://db"])
def test_a_database_no_store_speaks_is_refused_naming_the_setting(url, tmp_path):
    with pytest.raises(StorageError) as caught:
        open_store(url, str(tmp_path))
    assert "LTX2_DATABASE" in caught.value.reason and "postgresql://" in caught.value.reason
    assert "hunter2" not in str(caught.value)
    assert not list(tmp_path.iterdir())  # nothing was created


def test_a_one_box_server_never_imports_the_postgresql_driver():
    code = ("import sys; import ltx2.serving.app, ltx2.serving.jobs; from ltx2.serving.store import open_store; "
            "import tempfile; open_store('', tempfile.mkdtemp()).close(); "
            "print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
