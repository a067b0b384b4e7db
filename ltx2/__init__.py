"""ltx2: a self-hosted inference server for Lightricks' LTX-2 (video with synchronized audio)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__all__ = ["Client", "GenerateRequest", "GenerateResponse", "GenerationResult", "LoadedModel", "generate", "load_model"]
__version__ = "0.1.0"

# Imported on first use: `ltx2 download --help` and the settings should not wait for torch.
_WHERE = {
    "Client": "client",
    "GenerateRequest": "schema", "GenerateResponse": "schema", "GenerationResult": "pipelines.generate",
    "generate": "pipelines.generate", "LoadedModel": "models.loaded", "load_model": "models.loaded",
}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'ltx2' has no attribute {name!r}")


if TYPE_CHECKING:
    from .client import Client
    from .models.loaded import LoadedModel, load_model
    from .pipelines.generate import GenerationResult, generate
    from .schema import GenerateRequest, GenerateResponse
