"""Which LoRAs a request runs with: `loras` and `camera_lora`, found, fetched, read and bound.

A LoRA `path` is one of:
- a file name under `<models dir>/loras/` (`.safetensors` may be left off);
- an absolute path inside that directory (nothing outside it: `..` and links that leave it are refused);
- an http(s) URL, when the operator allows them (`--allow-lora-urls`), fetched through the same
  SSRF-guarded fetcher as image and audio URLs, at most `--max-lora-mb`, and kept on disk under its
  content hash: the second request for a URL reads the file, it does not download it again.

Bound adapters stay in the model's LRU cache (`ltx2.models.lora.AdapterCache`), keyed by content.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from ..media.fetch import FetchPolicy, fetch, is_url
from ..models.download import LORAS_DIR, camera_lora_file
from ..models.lora import Adapter, bind, check_lora_family, file_sha256, read_lora
from ..schema import GenerateRequest, InvalidRequest

MB = 1024 * 1024
SUFFIX = ".safetensors"


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


def requested(request: GenerateRequest, policy: LoraPolicy) -> list[Wanted]:
    """Locate every LoRA of the request (downloading URL ones); refusals are 422s naming the field."""
    wanted = []
    for i, item in enumerate(request.loras):
        field_name = f"loras.{i}.path"
        if is_url(item.path):
            wanted.append(_from_url(item.path, item.scale, field_name, policy))
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
    return wanted


def load_adapters(model, wanted: list[Wanted], policy: LoraPolicy | None = None) -> list[tuple[Adapter, float]]:
    """Each wanted LoRA bound to the model, from the cache when it is there."""
    cache = model.adapter_cache
    if policy is not None:
        cache.capacity_bytes = policy.memory_cache_bytes
    home = model.device if model.placement.policy != "sequential" else _cpu()
    keys = {id(item): (*item.key, str(home), str(model.dtype)) for item in wanted}
    for item in wanted:  # every LoRA's family from its header, before any LoRA's tensors are read
        if keys[id(item)] not in cache:
            check_lora_family(item.path, item.field, item.label, model.family)
    out = []
    for item in wanted:
        key = (*item.key, str(home), str(model.dtype))
        adapter = cache.get(key)
        if adapter is None:
            tensors, metadata = read_lora(item.path, item.field, item.label, model.family)
            adapter = bind(model, tensors, metadata, field=item.field, label=item.label, digest=_digest(item.path),
                           device=home, dtype=model.dtype)
            cache.put(key, adapter)
        if adapter.name != item.label:  # the same bytes under another name: report the name asked for
            adapter = Adapter(name=item.label, digest=adapter.digest, style=adapter.style, layers=adapter.layers)
        out.append((adapter, item.scale))
    return out


def resolve(model, request: GenerateRequest, policy: LoraPolicy | None = None) -> list[tuple[Adapter, float]]:
    """`requested` then `load_adapters`: what generate() runs with."""
    if not request.loras and request.camera_lora == "none":
        return []
    policy = policy or LoraPolicy.from_env()
    return load_adapters(model, requested(request, policy), policy)


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


def _from_url(url: str, scale: float, field_name: str, policy: LoraPolicy) -> Wanted:
    if not policy.allow_urls:
        raise InvalidRequest(field_name, f"{field_name}: LoRA URLs are turned off on this server (--allow-lora-urls "
                                         f"false); name a file in the server's LoRA directory instead")
    os.makedirs(os.path.join(policy.cache_dir, "urls"), exist_ok=True)
    index = os.path.join(policy.cache_dir, "urls", hashlib.sha256(url.encode()).hexdigest() + ".json")
    digest = None
    try:
        with open(index) as fh:
            digest = json.load(fh)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    path = os.path.join(policy.cache_dir, f"{digest}{SUFFIX}") if digest else None
    if path is None or not os.path.isfile(path):
        body, _ = fetch(url, field_name, policy.max_bytes, policy.fetch)
        digest = hashlib.sha256(body).hexdigest()
        path = os.path.join(policy.cache_dir, f"{digest}{SUFFIX}")
        _write_atomically(path, body)
        _write_atomically(index, json.dumps({"url": url, "sha256": digest}).encode())
        _evict(policy.cache_dir, policy.disk_cache_bytes, keep=path)
    else:
        os.utime(path)  # least recently used goes first
    return Wanted(field_name, url, path, scale, ("sha256", digest))


def _write_atomically(path: str, data: bytes) -> None:
    part = f"{path}.{os.getpid()}.part"
    with open(part, "wb") as fh:
        fh.write(data)
    os.replace(part, path)


def _evict(cache_dir: str, limit: int, keep: str) -> None:
    files = [os.path.join(cache_dir, n) for n in os.listdir(cache_dir) if n.endswith(SUFFIX)]
    files.sort(key=lambda p: os.stat(p).st_mtime)
    total = sum(os.path.getsize(p) for p in files)
    for path in files:
        if total <= limit:
            break
        if path != keep:
            total -= os.path.getsize(path)
            os.remove(path)


def _file_key(path: str) -> tuple:
    st = os.stat(path)  # a replaced or rewritten file is a new key: never a stale adapter
    return ("file", path, st.st_size, st.st_mtime_ns, st.st_ino)


def _digest(path: str) -> str:
    name = os.path.basename(path).removesuffix(SUFFIX)
    if len(name) == 64 and all(c in "0123456789abcdef" for c in name):
        return name  # a cached URL file is named by its hash
    return file_sha256(path)


__all__ = ["LoraPolicy", "Wanted", "load_adapters", "requested", "resolve"]
