"""ltx2: a self-hosted inference server for Lightricks' LTX-2 (video with synchronized audio)."""

from .model import LoadedModel, load_model
from .pipeline import GenerationResult, generate
from .schema import GenerateRequest, GenerateResponse

__all__ = ["GenerateRequest", "GenerateResponse", "GenerationResult", "LoadedModel", "generate", "load_model"]
__version__ = "0.1.0"
