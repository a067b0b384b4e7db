"""Opening a user's audio or video file with FFmpeg (PyAV), shared by the audio and video inputs."""

from __future__ import annotations

import io

import av

from ..schema import InvalidRequest


def reason(exc: Exception) -> str:
    """FFmpeg errors without PyAV's "[Errno 1094995529]" prefix."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def open_container(data: bytes, field: str, whitelist: str, kind: str, formats: str):
    """A PyAV container over `data`, FFmpeg given only the `whitelist` demuxers; anything else, or a file it
    cannot read, is refused naming `field` (a MemoryError, the sandbox's limit, is its own answer)."""
    try:
        return av.open(io.BytesIO(data), mode="r", options={"format_whitelist": whitelist})
    except av.error.ArgumentError:  # FFmpeg found a format, but not one on the whitelist
        raise InvalidRequest(field, f"{field} is not in a supported {kind} format; send {formats}") from None
    except MemoryError:
        raise
    except Exception as exc:
        raise InvalidRequest(field, f"{field} is not a readable {kind} file ({reason(exc)}); send {formats}") from None
