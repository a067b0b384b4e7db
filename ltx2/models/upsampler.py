"""The x2 spatial latent upsampler of the two-stage pipeline, loaded as strictly as the checkpoint.

The official file (`ltx-2-spatial-upscaler-x2-1.0.safetensors`, in Lightricks/LTX-2) carries its
architecture in the safetensors `config` metadata, read as ltx-core's `LatentUpsamplerConfigurator`
reads it (same keys, same defaults). Its tensor names are diffusers' `LTX2LatentUpsamplerModel`
names already, so loading maps nothing: every tensor must be a parameter of the model and every
parameter must come from the file, with the same shapes.
"""

from __future__ import annotations

import json
import logging
import os
import time

import torch
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

from .configs import CheckpointError
from .safetensors_io import name_list, read_header, read_tensor

log = logging.getLogger("ltx2")

UPSAMPLER_FILE = "ltx-2-spatial-upscaler-x2-1.0.safetensors"


def upsampler_config(metadata: dict[str, str], path: str) -> dict:
    """diffusers `LTX2LatentUpsamplerModel` kwargs from the file's `config` metadata (ltx-core's defaults)."""
    raw = metadata.get("config")
    if raw is None:
        raise CheckpointError(f"{path}: no 'config' in the safetensors metadata; the official upsampler carries one")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not valid JSON ({exc})") from exc
    if not config.get("spatial_upsample", True) or config.get("temporal_upsample", False):
        raise CheckpointError(f"{path}: a temporal upsampler; the two-stage pipeline needs the x2 spatial one")
    scale = float(config.get("spatial_scale", 2.0))
    if scale != 2.0:
        raise CheckpointError(f"{path}: a x{scale:g} upsampler; the LTX-2 two-stage pipeline uses the x2 one")
    return {
        "in_channels": config.get("in_channels", 128),
        "mid_channels": config.get("mid_channels", 512),
        "num_blocks_per_stage": config.get("num_blocks_per_stage", 4),
        "dims": config.get("dims", 3),
        "spatial_upsample": True,
        "temporal_upsample": False,
        "rational_spatial_scale": scale,
        "use_rational_resampler": bool(config.get("rational_resampler", False)),
    }


def load_upsampler(path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16
                   ) -> LTX2LatentUpsamplerModel:
    """The upsampler file onto `device` in `dtype`, offline, every tensor accounted for."""
    start = time.perf_counter()
    header = read_header(path)
    config = upsampler_config(header.metadata, path)
    with torch.device("meta"):
        model = LTX2LatentUpsamplerModel(**config)
    targets = model.state_dict(keep_vars=True)
    missing = set(targets) - set(header.tensors)
    unexpected = set(header.tensors) - set(targets)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the file: {name_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) in the file that the upsampler does not have: "
                         f"{name_list(unexpected)}")
        raise CheckpointError(f"{path}: does not match the spatial upsampler its config describes; " + "; ".join(parts))
    wrong = [f"{k} is {list(header.tensors[k].shape)}, expected {list(t.shape)}" for k, t in targets.items()
             if tuple(header.tensors[k].shape) != tuple(t.shape)]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensor(s) with the wrong shape: " + "; ".join(sorted(wrong)[:12]))
    tensors = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for key, target in targets.items():
            tensors[key] = read_tensor(fd, header, key).to(device=device, dtype=dtype if target.is_floating_point()
                                                           else target.dtype)
    finally:
        os.close(fd)
    model.load_state_dict(tensors, strict=True, assign=True)
    log.info("loaded spatial upsampler %s in %.1fs", path, time.perf_counter() - start)
    return model.eval().requires_grad_(False)


def resolve_upsampler_path(setting: str, models_dir: str | None, official: str = UPSAMPLER_FILE) -> str | None:
    """`--upsampler`: "none"; "auto" (the family's `official` file in the models directory, if it is
    there); or a path, which must exist."""
    if setting == "none":
        return None
    if setting == "auto":
        candidate = os.path.join(models_dir, official) if models_dir else None
        return candidate if candidate and os.path.isfile(candidate) else None
    candidates = [setting] + ([os.path.join(models_dir, setting)] if models_dir and not os.path.isabs(setting) else [])
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointError(f"upsampler {setting!r}: no file at {' or '.join(candidates)}; fetch it with "
                          f"`ltx2 download` ({official}) or set LTX2_UPSAMPLER=none for one-stage only")


def upsampler_bytes(path: str, dtype: torch.dtype) -> int:
    """What the upsampler will occupy once loaded, from its header (for the memory policy)."""
    width = torch.tensor([], dtype=dtype).element_size()
    total = 0
    for info in read_header(path).tensors.values():
        count = 1
        for dim in info.shape:
            count *= dim
        total += count * width
    return total
