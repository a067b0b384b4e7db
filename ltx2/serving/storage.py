"""Storage faults: which errors are the machine's (a full disk, no file descriptors left), and the checks
that find them before work is spent (the start-up check, the probe of a folder, the descriptor check).

The job manager (`jobs.py`) turns what these find into a 507 for the job and a 503 from /health.
"""

from __future__ import annotations

import errno
import os

from .job_store import StorageError, _reason, open_store

STORAGE_ERROR_STATUS = 507  # Insufficient Storage
# Room the storage probe asks for after a failed write whose size is not known: a long 1080p clip.
UNKNOWN_WRITE_BYTES = 64 * 1024 * 1024
# Errors of the machine, not of the job or the model: wherever they strike (writing the video, or a
# library opening a file mid-generation), the job fails as a storage error naming the resource.
RESOURCE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.EACCES,
                   errno.EPERM, errno.ENOTDIR, errno.EIO}
# Libraries that wrap an OS error in their own exception (PyAV, torch, FFmpeg's messages) keep its text:
# these are recognised in any exception of the chain. ENFILE's text contains EMFILE's: it goes first.
_RESOURCE_TEXTS = [(os.strerror(code), code) for code in (errno.ENFILE, errno.EMFILE, errno.ENOSPC, errno.EDQUOT)]
# Room the start-up check asks of each output folder: less than this is a full disk.
START_PROBE_BYTES = 1024 * 1024


def resource_error(exc: BaseException | None) -> OSError | None:
    """The machine's resource error (full disk, no file descriptors left...) behind `exc`, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRNOS:
            return exc
        text = str(exc)
        for words, code in _RESOURCE_TEXTS:
            if words in text:
                return OSError(code, words)
        if isinstance(exc, FileNotFoundError) and "No usable temporary directory" in text:
            # tempfile hides why no directory took its test file: no descriptors is the one we can check.
            try:
                os.close(os.open(os.devnull, os.O_RDONLY))
            except OSError as short:
                return short
            return OSError("no temporary directory can take a file (full, read-only, or no descriptors left)")
        exc = exc.__cause__ or exc.__context__
    return None


def check_storage_at_start(output_dir: str, wait: float = 5.0, database: str = "") -> None:
    """Before the model loads: the job database opens (and takes a write) and each output folder has room
    for a small file; transient failures are retried for `wait` seconds. Raises StorageError with the
    reason, which the command prints as its one line before exiting."""
    open_store(database, output_dir, wait=wait).close()
    for folder in ("videos", "inputs"):
        path = os.path.join(output_dir, folder)
        try:
            os.makedirs(path, exist_ok=True)
            probe_folder(path, START_PROBE_BYTES)
        except OSError as exc:
            raise StorageError(f"write to the output folder {folder}/", exc) from exc


def probe_folder(folder: str, size: int) -> None:
    """Ask the file system for `size` bytes in `folder` (fallocate: reserved, not written); raises OSError."""
    probe = os.path.join(folder, ".probe")
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)
        os.remove(probe)


def descriptors_short() -> str | None:
    """Why no file can be opened now (no descriptors left, for this process or the system), or None."""
    try:
        os.close(os.open(os.devnull, os.O_RDONLY))
    except OSError as exc:
        return f"no file descriptors left: {_reason(exc)}"
    return None
