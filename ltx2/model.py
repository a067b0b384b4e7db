"""A loaded model: the components (in a diffusers `LTX2Pipeline`, used as a container and for its
helpers), where they live, and the defaults that depend on which checkpoint was loaded."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import torch
from diffusers import LTX2Pipeline

log = logging.getLogger("ltx2")

KNOWN_MODELS = ("tiny",)


@dataclass(frozen=True)
class ModelDefaults:
    """What an empty request field means for this checkpoint."""

    num_inference_steps: int
    guidance_scale: float
    distilled: bool  # a distilled checkpoint uses its trained sigma schedule at its trained step count


DISTILLED_DEFAULTS = ModelDefaults(num_inference_steps=8, guidance_scale=1.0, distilled=True)
DEV_DEFAULTS = ModelDefaults(num_inference_steps=40, guidance_scale=3.0, distilled=False)


@dataclass
class LoadedModel:
    name: str
    pipe: LTX2Pipeline
    defaults: ModelDefaults
    device: torch.device
    dtype: torch.dtype
    load_seconds: float = 0.0
    # One job at a time per device: the transformer's activations for one video fill the GPU.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def vocoder_rate(self) -> int:
        return int(self.pipe.vocoder.config.output_sampling_rate)

    def describe(self) -> dict:
        """What /health and GET / report about the model."""
        dtypes = {
            name: str(next(getattr(self.pipe, name).parameters()).dtype).removeprefix("torch.")
            for name in ("transformer", "text_encoder", "vae", "audio_vae", "vocoder")
        }
        return {
            "name": self.name,
            "device": str(self.device),
            "dtypes": dtypes,
            "defaults": {
                "num_inference_steps": self.defaults.num_inference_steps,
                "guidance_scale": self.defaults.guidance_scale,
            },
            "audio_sample_rate": self.vocoder_rate,
            "load_seconds": round(self.load_seconds, 3),
        }


def default_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def load_model(name: str = "tiny", device: str | torch.device | None = None, seed: int = 0) -> LoadedModel:
    """Load a model once; every request reuses it.

    `tiny`: the random-weight preset with the real geometry (ltx2.tiny), float32.
    """
    start = time.perf_counter()
    device = torch.device(device) if device is not None else default_device()
    if name == "tiny":
        from . import tiny

        components = tiny.build_components(seed=seed)
        dtype = torch.float32
        defaults = DISTILLED_DEFAULTS
    else:
        raise ValueError(
            f"unknown model {name!r}: this build knows {', '.join(KNOWN_MODELS)} "
            "(loading the LTX-2 19B checkpoints is tracked separately and not in this build)"
        )
    pipe = LTX2Pipeline(**components, processor=None, prompt_enhancer=None, duration_head=None)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    model = LoadedModel(name=name, pipe=pipe, defaults=defaults, device=device, dtype=dtype)
    model.load_seconds = time.perf_counter() - start
    log.info("loaded model %s on %s in %.2fs", name, device, model.load_seconds)
    return model
