"""Which LoRAs a request runs with: `loras` and `camera_lora`, found, fetched, checked, read and bound.

A LoRA `path` is one of:
- a file name under `<models dir>/loras/` (`.safetensors` may be left off);
- an absolute path inside that directory (nothing outside it: `..` and links that leave it are refused);
- an http(s) URL, when the operator allows them (`--allow-lora-urls`), fetched with the same SSRF
  guard as image and audio URLs (`ltx2.media.fetch`), at most `--max-lora-mb`, streamed to disk (never
  held in memory) and kept there under its content hash: the second request for a URL reads the file,
  it does not download it again.

Two halves, for the job queue: `prepare` (find, fetch, check every header against the model, read the
tensors to CPU memory) runs in the job preparer, off the GPU worker, and stops within a fraction of a
second when asked (`should_stop`); `bind_prepared` (the GPU copies) runs in the worker. `resolve` does
both, for callers without a queue (the CLI, the RunPod handler). Bound adapters stay in the model's
LRU cache (`ltx2.models.lora.AdapterCache`), keyed by content.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from urllib.parse import urljoin

from ..media.fetch import CHUNK, REDIRECT_STATUSES, FetchPolicy, is_url, pinned_connection
from ..media.fetch import _reason
from ..media.inputs import _size_text
from ..media.sandbox import Stopped
from ..models.download import LORAS_DIR, camera_lora_file
from ..models.lora import Adapter, bind, check_lora, read_lora
from ..schema import GenerateRequest, InvalidRequest

MB = 1024 * 1024
SUFFIX = ".safetensors"
MAX_URL_INDEX = 1024  # URL -> content hash files kept (each under 4 KB); the oldest go first
_INDEX_BYTES = 8192  # an index file is read up to this (a URL is at most 2048 characters)
_STALE_PART = 3600.0  # a .part file this old is a dead process's: swept
_POLL = 0.2  # seconds between asking should_stop() while a download runs


@dataclass
class LoraPolicy:
    """Where LoRAs come from and the bounds on them (`from_settings`: the server's flags)."""

    models_dir: str = "/runpod-volume/models"
    cache_dir: str = "ltx2-output/lora-cache"  # URL LoRAs, one file per content hash
    allow_urls: bool = True
    max_bytes: int = 2048 * MB  # one URL LoRA
    disk_cache_bytes: int = 20 * 1024 * MB  # all URL LoRAs kept; the least recently used go first
    memory_cache_bytes: int = 4096 * MB  # bound adapters kept in memory
    fetch: FetchPolicy = field(default_factory=FetchPolicy)
    # LoRAs the job preparer has already found and read (`prepare`): `resolve` then only binds them.
    prepared: list | None = field(default=None, repr=False)

    @property
    def loras_dir(self) -> str:
        return os.path.join(self.models_dir, LORAS_DIR)

    @classmethod
    def from_settings(cls, settings) -> LoraPolicy:
        return cls(models_dir=settings.models_dir, cache_dir=os.path.join(settings.output_dir, "lora-cache"),
                   allow_urls=settings.allow_lora_urls, max_bytes=int(settings.max_lora_mb * MB),
                   disk_cache_bytes=int(settings.lora_disk_cache_gb * 1024 * MB),
                   memory_cache_bytes=int(settings.lora_cache_mb * MB), fetch=FetchPolicy.from_settings(settings))

    @classmethod
    def from_env(cls, env: dict | None = None) -> LoraPolicy:
        from ..settings import Settings

        return cls.from_settings(Settings.from_env(env))


@dataclass
class Wanted:
    """One LoRA a request asks for, as it will be reported."""

    field: str  # the request field, for errors: loras.0.path, camera_lora
    label: str  # the name the response shows
    path: str  # the local file it is read from
    scale: float
    key: tuple  # what makes two files the same content, for the cache


def requested(request: GenerateRequest, policy: LoraPolicy, should_stop=None) -> list[Wanted]:
    """Locate every LoRA of the request (downloading URL ones); refusals are 422s naming the field."""
    wanted = []
    for i, item in enumerate(request.loras):
        field_name = f"loras.{i}.path"
        if is_url(item.path):
            wanted.append(_from_url(item.path, item.scale, field_name, policy, should_stop))
        else:
            wanted.append(_from_dir(item.path, item.scale, field_name, policy))
    if request.camera_lora != "none":
        name = camera_lora_file(request.camera_lora)
        path = os.path.join(policy.loras_dir, name)
        if not os.path.isfile(path):
            raise InvalidRequest("camera_lora", f"camera_lora {request.camera_lora!r} needs {name} in the server's "
                                                f"LoRA directory (<models dir>/{LORAS_DIR}/); the operator fetches it "
                                                "with `ltx2 download --camera-loras`")
        wanted.append(Wanted("camera_lora", name, path, request.camera_lora_scale, _file_key(path)))
    if request.ic_lora is not None:  # last: video to video runs every LoRA in stage 1 with it
        wanted.append(_from_dir(request.ic_lora, request.ic_lora_scale, "ic_lora", policy))
    return wanted


def ic_lora_scales(model, request: GenerateRequest, policy: LoraPolicy | None = None) -> tuple[int, int]:
    """The request's IC-LoRA's (spatial, temporal) reference factors from its metadata, its header checked
    against the model first (another family's is refused naming ic_lora), before its reference is decoded."""
    from ..video_to_video import VideoToVideoProblem, reference_scales

    item = _from_dir(request.ic_lora, request.ic_lora_scale, "ic_lora", policy or LoraPolicy.from_env())
    header = check_lora(item.path, item.field, item.label, model)
    try:
        return reference_scales(header.metadata)
    except VideoToVideoProblem as exc:
        raise InvalidRequest(exc.field, str(exc)) from None


@dataclass
class Prepared:
    """One wanted LoRA made ready on the CPU: bound already (from the cache), or its tensors read."""

    wanted: Wanted
    key: tuple  # the adapter cache's key: content, device, dtype
    adapter: Adapter | None = None
    tensors: dict | None = field(default=None, repr=False)
    metadata: dict | None = None
    digest: str = ""


def prepare(model, request: GenerateRequest, policy: LoraPolicy, should_stop=None) -> list[Prepared]:
    """Everything but the GPU copies, for the job preparer: find and fetch every LoRA, check every header
    against the model before any LoRA's tensors are read (`check_lora`: layout, bounds, keys, ranks),
    then read the tensors to CPU memory (each file's data size, no more). `should_stop()` is asked
    often; an exception it returns stops the work (`Stopped`) within about `_POLL` seconds."""
    return _read(model, requested(request, policy, should_stop), should_stop)


def _read(model, wanted: list[Wanted], should_stop=None) -> list[Prepared]:
    cache = model.adapter_cache
    out, headers = [], {}
    for item in wanted:
        key = _cache_key(model, item)
        adapter = cache.get(key)  # held by this job from here on: a later eviction cannot take it away
        out.append(Prepared(item, key, adapter))
        if adapter is None:
            headers[id(item)] = check_lora(item.path, item.field, item.label, model)
    for ready in out:
        if ready.adapter is None:
            item = ready.wanted
            ready.tensors, ready.metadata = read_lora(item.path, item.field, item.label,
                                                      header=headers[id(item)], should_stop=_raising(should_stop))
            ready.digest = _digest(item.path, should_stop)
    return out


def bind_prepared(model, prepared: list[Prepared], policy: LoraPolicy | None = None) -> list[tuple[Adapter, float]]:
    """The GPU half: each prepared LoRA bound to the model (its CPU tensors then dropped) and cached."""
    cache = model.adapter_cache
    if policy is not None:
        cache.capacity_bytes = policy.memory_cache_bytes
    home = model.device if model.placement.policy != "sequential" else _cpu()
    out = []
    for ready in prepared:
        item, adapter = ready.wanted, ready.adapter
        if adapter is None:
            adapter = bind(model, ready.tensors, ready.metadata, field=item.field, label=item.label,
                           digest=ready.digest, device=home, dtype=model.dtype)
            ready.tensors = None
            cache.put(ready.key, adapter)
        if adapter.name != item.label:  # the same bytes under another name: report the name asked for
            adapter = Adapter(name=item.label, digest=adapter.digest, style=adapter.style, layers=adapter.layers)
        out.append((adapter, item.scale))
    return out


def load_adapters(model, wanted: list[Wanted], policy: LoraPolicy | None = None) -> list[tuple[Adapter, float]]:
    """Each wanted LoRA checked, read and bound to the model, from the cache when it is there."""
    return bind_prepared(model, _read(model, wanted), policy)


def resolve(model, request: GenerateRequest, policy: LoraPolicy | None = None) -> list[tuple[Adapter, float]]:
    """What generate() runs with: the LoRAs the preparer read (`policy.prepared`) bound, or else
    `prepare` and `bind_prepared` here (a caller without a job queue)."""
    if not request.loras and request.camera_lora == "none" and request.ic_lora is None:
        return []
    policy = policy or LoraPolicy.from_env()
    if policy.prepared is not None:
        return bind_prepared(model, policy.prepared, policy)
    return bind_prepared(model, prepare(model, request, policy), policy)


def with_prepared(policy: LoraPolicy, prepared: list[Prepared] | None) -> LoraPolicy:
    """`policy` carrying a job's prepared LoRAs to `resolve` (None: none prepared, resolve finds them)."""
    return policy if prepared is None else replace(policy, prepared=prepared)


def _cache_key(model, item: Wanted) -> tuple:
    home = model.device if model.placement.policy != "sequential" else _cpu()
    return (*item.key, str(home), str(model.dtype))


def _raising(should_stop):
    """should_stop() -> exception or None, as read_lora wants it: a Stopped carrying the reason."""
    if should_stop is None:
        return None

    def check():
        why = should_stop()
        return None if why is None else Stopped(why)

    return check


def _cpu():
    import torch

    return torch.device("cpu")


def _from_dir(path: str, scale: float, field_name: str, policy: LoraPolicy) -> Wanted:
    root = os.path.realpath(policy.loras_dir)
    if "\x00" in path:
        raise InvalidRequest(field_name, f"{field_name} must not contain a NUL character")
    if os.path.isabs(path):
        candidate = path
    else:
        if any(part == ".." for part in path.replace("\\", "/").split("/")):
            raise InvalidRequest(field_name, f"{field_name} must not contain '..': name a file in the server's LoRA "
                                             f"directory (<models dir>/{LORAS_DIR}/)")
        candidate = os.path.join(root, path)
    if not candidate.endswith(SUFFIX) and not os.path.isfile(candidate):
        candidate += SUFFIX
    real = os.path.realpath(candidate)
    if os.path.commonpath([real, root]) != root:
        raise InvalidRequest(field_name, f"{field_name} must name a file inside the server's LoRA directory "
                                         f"(<models dir>/{LORAS_DIR}/), or be an http(s) URL")
    if not os.path.isfile(real):
        raise InvalidRequest(field_name, f"{field_name}: no LoRA file {path!r} in the server's LoRA directory "
                                         f"(<models dir>/{LORAS_DIR}/)")
    return Wanted(field_name, path, real, scale, _file_key(real))


# ---------------------------------------------------------------------------------------------- URL LoRAs

def _from_url(url: str, scale: float, field_name: str, policy: LoraPolicy, should_stop=None) -> Wanted:
    if not policy.allow_urls:
        raise InvalidRequest(field_name, f"{field_name}: LoRA URLs are turned off on this server (--allow-lora-urls "
                                         f"false); name a file in the server's LoRA directory instead")
    os.makedirs(os.path.join(policy.cache_dir, "urls"), exist_ok=True)
    index = _index_path(policy.cache_dir, url)
    digest = _indexed(index)
    path = os.path.join(policy.cache_dir, f"{digest}{SUFFIX}") if digest else None
    if path is None or not os.path.isfile(path):
        part = os.path.join(policy.cache_dir, f".{uuid.uuid4().hex}.part")
        try:
            digest = _download(url, field_name, policy, part, should_stop)
            path = os.path.join(policy.cache_dir, f"{digest}{SUFFIX}")
            os.replace(part, path)
        finally:
            _remove(part)  # a failed, refused or stopped download leaves nothing behind
        _write_atomically(index, json.dumps({"url": url, "sha256": digest}).encode())
        _evict(policy.cache_dir, policy.disk_cache_bytes, keep=path)
    else:
        os.utime(path)  # least recently used goes first
        os.utime(index)  # and so does its index entry
    return Wanted(field_name, url, path, scale, ("sha256", digest))


def _index_path(cache_dir: str, url: str) -> str:
    return os.path.join(cache_dir, "urls", hashlib.sha256(url.encode()).hexdigest() + ".json")


def _indexed(index: str) -> str | None:
    """The content hash an index file names, or None (missing, too long, or not ours)."""
    try:
        with open(index, "rb") as fh:
            digest = json.loads(fh.read(_INDEX_BYTES))["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return digest if _is_digest(digest) else None


def _is_digest(text) -> bool:
    return isinstance(text, str) and len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _download(url: str, field: str, policy: LoraPolicy, part: str, should_stop=None) -> str:
    """Stream `url` into `part`, hashing it on the way; its sha256. The transfer runs in a thread of its
    own while this one asks `should_stop()` every `_POLL` seconds: a stop closes the socket (the
    transfer ends at once) and raises Stopped. One deadline (`--url-timeout`) covers the whole fetch."""
    state: dict = {"abort": threading.Event()}

    def work():
        try:
            state["digest"] = _stream(url, field, policy, part, state)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            state["error"] = exc

    thread = threading.Thread(target=work, name="ltx2-lora-fetch", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(_POLL)
        if should_stop is not None and thread.is_alive() and (why := should_stop()) is not None:
            state["abort"].set()
            _close_socket(state.get("conn"))
            raise Stopped(why)
    if "error" in state:
        raise state["error"]
    return state["digest"]


def _stream(url: str, field: str, policy: LoraPolicy, part: str, state: dict) -> str:
    fetch = policy.fetch
    deadline = time.monotonic() + fetch.timeout
    try:
        for _ in range(fetch.max_redirects + 1):
            conn, response = _open(url, field, fetch, deadline, state)
            try:
                if response.status in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise InvalidRequest(field, f"{field} URL answered {response.status} without a Location")
                    url = urljoin(url, location.strip())
                    continue
                if not 200 <= response.status < 300:
                    raise InvalidRequest(field, f"{field} URL answered {response.status}")
                return _save_body(response, field, policy.max_bytes, part, state)
            finally:
                response.close()
                conn.close()
        raise InvalidRequest(field, f"{field} URL redirected more than {fetch.max_redirects} times")
    except TimeoutError:
        raise InvalidRequest(field, f"{field} URL timed out after {fetch.timeout:g} s") from None


def _open(url: str, field: str, fetch: FetchPolicy, deadline: float, state: dict):
    """One GET to a checked address (the guard of `ltx2.media.fetch`): (connection, response)."""
    conn, target = pinned_connection(url, field, fetch, deadline)
    state["conn"] = conn
    try:
        conn.request("GET", target, headers={"User-Agent": "ltx2", "Accept-Encoding": "identity"})
        return conn, conn.getresponse()
    except TimeoutError:
        conn.close()
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        conn.close()
        _aborted(state)
        raise InvalidRequest(field, f"{field} URL could not be fetched: {_reason(exc)}") from None


def _save_body(response, field: str, max_bytes: int, part: str, state: dict) -> str:
    """The body into `part`, counted against `max_bytes` as it comes (a missing or lying length too)."""
    length = response.headers.get("Content-Length")
    declared = int(length) if length is not None and length.strip().isdigit() else None
    if declared is not None and declared > max_bytes:
        raise InvalidRequest(field, f"{field} URL is {_size_text(declared)}; the limit is {_size_text(max_bytes)}",
                             status=413)
    digest, got = hashlib.sha256(), 0
    with open(part, "wb") as out:  # a full disk raises OSError here: the caller's storage error, not the URL's
        while True:
            try:
                chunk = response.read1(CHUNK)
            except TimeoutError:
                raise
            except (OSError, http.client.HTTPException) as exc:  # truncated body, reset, or our own stop
                _aborted(state)
                raise InvalidRequest(field, f"{field} URL could not be read: {_reason(exc)}") from None
            if not chunk:
                break
            _aborted(state)
            got += len(chunk)
            if got > max_bytes:
                raise InvalidRequest(field, f"{field} URL is larger than the limit of {_size_text(max_bytes)}",
                                     status=413)
            digest.update(chunk)
            out.write(chunk)
    if declared is not None and got < declared:
        raise InvalidRequest(field, f"{field} URL could not be read: the body ended after {got} of {declared} bytes")
    if not got:
        raise InvalidRequest(field, f"{field} URL returned an empty body")
    return digest.hexdigest()


class _Aborted(Exception):
    """The waiting thread stopped this download (its answer has been given already)."""


def _aborted(state: dict) -> None:
    if state["abort"].is_set():
        raise _Aborted()


def _close_socket(conn) -> None:
    """Wake a transfer blocked in recv: shut its socket down from this thread (close alone would not)."""
    sock = getattr(getattr(conn, "sock", None), "_sock", None)  # _PinnedConnection wraps it in _DeadlineSocket
    try:
        if sock is not None:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _write_atomically(path: str, data: bytes) -> None:
    part = f"{path}.{os.getpid()}.part"
    try:
        with open(part, "wb") as fh:
            fh.write(data)
        os.replace(part, path)
    finally:
        _remove(part)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _evict(cache_dir: str, limit: int, keep: str) -> None:
    """Keep the URL cache under `limit` bytes (least recently used out first), then drop the index
    entries whose file is gone and the oldest beyond `MAX_URL_INDEX`, and any dead process's .part."""
    now = time.time()
    files = [entry for entry in os.scandir(cache_dir) if entry.name.endswith(SUFFIX)]
    files.sort(key=lambda e: e.stat().st_mtime)
    total = sum(e.stat().st_size for e in files)
    for entry in files:
        if total <= limit:
            break
        if entry.path != keep:
            total -= entry.stat().st_size
            _remove(entry.path)
    urls = os.path.join(cache_dir, "urls")
    indexes = sorted((e for e in os.scandir(urls) if e.name.endswith(".json")), key=lambda e: e.stat().st_mtime,
                     reverse=True)
    for n, entry in enumerate(indexes):
        digest = _indexed(entry.path)
        if n >= MAX_URL_INDEX or digest is None or not os.path.isfile(os.path.join(cache_dir, digest + SUFFIX)):
            _remove(entry.path)
    for folder in (cache_dir, urls):
        for entry in os.scandir(folder):
            if entry.name.endswith(".part") and now - entry.stat().st_mtime > _STALE_PART:
                _remove(entry.path)


def _file_key(path: str) -> tuple:
    st = os.stat(path)  # a replaced or rewritten file is a new key: never a stale adapter
    return ("file", path, st.st_size, st.st_mtime_ns, st.st_ino)


def _digest(path: str, should_stop=None) -> str:
    name = os.path.basename(path).removesuffix(SUFFIX)
    if _is_digest(name):
        return name  # a cached URL file is named by its hash
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MB):
            if should_stop is not None and (why := should_stop()) is not None:
                raise Stopped(why)
            h.update(chunk)
    return h.hexdigest()


__all__ = ["LoraPolicy", "Prepared", "Wanted", "bind_prepared", "ic_lora_scales", "load_adapters", "prepare",
           "requested", "resolve", "with_prepared"]
