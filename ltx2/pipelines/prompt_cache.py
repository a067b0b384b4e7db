"""The prompt cache: text embeddings (after Gemma and the connectors) of recent prompts.

A repeated (prompt, negative prompt) pair skips Gemma 3 altogether: on a GPU its 12B parameters are
the largest component, and under an offloading policy encoding a prompt also means moving it onto
the device. The embeddings depend on nothing but the prompts and the loaded model, so a hit gives
the same tensors, and so the same video, as encoding again.

Bounded by bytes (`--prompt-cache-mb`, env LTX2_PROMPT_CACHE_MB; 0 turns it off), least recently
used out first. An entry is ~15 MB for the 19B model (1024 tokens x 3840 x bf16, video and audio
context), twice that with guidance. Under `resident` entries stay on the compute device; under an
offloading policy they live in host memory, since the device memory is what that policy saves.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import fields

import torch

from ..models.loaded import LoadedModel

Key = tuple  # (prompt, negative prompt or None when unguided, LoRAs on the connectors as (digest, scale))


class PromptCache:
    """An LRU of `PromptEmbeddings` by `Key`, bounded by bytes."""

    def __init__(self, max_bytes: int, home: torch.device):
        self.max_bytes = max_bytes
        self.home = torch.device(home)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key, device: torch.device):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return _moved(entry[0], device)

    def put(self, key: Key, embeddings) -> None:
        stored = _moved(embeddings, self.home)
        size = _nbytes(stored)
        if size > self.max_bytes:
            return  # larger than the whole cache: keeping it would evict everything for one prompt
        with self._lock:
            if key in self._entries:
                self.bytes -= self._entries.pop(key)[1]
            self._entries[key] = (stored, size)
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted

    def stats(self) -> dict:
        return {"entries": len(self), "bytes": self.bytes, "max_bytes": self.max_bytes, "hits": self.hits,
                "misses": self.misses, "device": str(self.home)}


def cache_for(model: LoadedModel) -> PromptCache | None:
    """The model's prompt cache, made on first use from its settings (None: turned off)."""
    cache = model.speed.get("prompt_cache")
    megabytes = model.speed.get("prompt_cache_mb", 0)
    if cache is None and megabytes > 0:
        placement = model.placement
        home = placement.compute_device if placement.policy == "resident" else placement.offload_device
        cache = model.speed["prompt_cache"] = PromptCache(int(megabytes * 1e6), home)
    return cache


def _tensors(embeddings):
    """Every tensor of a PromptEmbeddings (positive and negative TextContexts)."""
    for part in (embeddings.positive, embeddings.negative):
        if part is not None:
            for f in fields(part):
                yield getattr(part, f.name)


def _nbytes(embeddings) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(embeddings))


def _moved(embeddings, device: torch.device):
    """A copy of the embeddings' structure with every tensor on `device` (the same tensors if already there)."""
    def move(context):
        if context is None:
            return None
        return type(context)(**{f.name: getattr(context, f.name).to(device) for f in fields(context)})

    return type(embeddings)(positive=move(embeddings.positive), negative=move(embeddings.negative))
