"""The latent upscalers, loaded as strictly as the checkpoint: the x2 spatial one of the two-stage
pipeline, LTX-2.3's x1.5 spatial one (its rational resampler) and the x2 temporal one (`temporal_upscale`).

The official file (`ltx-2-spatial-upscaler-x2-1.0.safetensors`, in Lightricks/LTX-2) carries its
architecture in the safetensors `config` metadata, read as ltx-core's `LatentUpsamplerConfigurator`
reads it (same keys, same defaults). Its tensor names are diffusers' `LTX2LatentUpsamplerModel`
names already, so loading maps nothing: every tensor must be a parameter of the model and every
parameter must come from the file, with the same shapes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time

import torch
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

from .configs import CheckpointError
from .safetensors_io import name_list, read_header, read_tensor

log = logging.getLogger("ltx2")

UPSAMPLER_FILE = "ltx-2-spatial-upscaler-x2-1.0.safetensors"


# What each kind of upscaler is, in the file's config: (spatial_upsample, temporal_upsample, spatial_scale).
KINDS = {"x2": (True, False, 2.0), "x1.5": (True, False, 1.5), "temporal": (False, True, 2.0)}
KIND_NAMES = {"x2": "x2 spatial", "x1.5": "x1.5 spatial", "temporal": "x2 temporal"}
USES = {"x2": "the two-stage pipeline (--spatial-upscaler x2)", "x1.5": "the two-stage pipeline with "
        "--spatial-upscaler x1.5", "temporal": "temporal_upscale (--temporal-upscaler)"}


def upsampler_kind(config: dict, path: str) -> str:
    """"x2", "x1.5" or "temporal" from a file's config (ltx-core's configurator defaults)."""
    spatial, temporal = bool(config.get("spatial_upsample", True)), bool(config.get("temporal_upsample", False))
    scale = float(config.get("spatial_scale", 2.0))
    for kind, shape in KINDS.items():
        if (spatial, temporal, scale if spatial else 2.0) == shape:
            return kind
    what = "spatio-temporal" if spatial and temporal else f"x{scale:g} spatial"
    raise CheckpointError(f"{path}: a {what} upsampler; ltx2 runs the x2 and x1.5 spatial and the x2 temporal ones")


def upsampler_config(metadata: dict[str, str], path: str, kind: str = "x2") -> dict:
    """diffusers `LTX2LatentUpsamplerModel` kwargs from the file's `config` metadata (ltx-core's defaults),
    refused unless the file is the `kind` of upscaler asked for."""
    raw = metadata.get("config")
    if raw is None:
        raise CheckpointError(f"{path}: no 'config' in the safetensors metadata; the official upsampler carries one")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: metadata 'config' is not valid JSON ({exc})") from exc
    found = upsampler_kind(config, path)
    if found != kind:
        raise CheckpointError(f"{path}: a {KIND_NAMES[found]} upsampler; {USES[kind]} needs the {KIND_NAMES[kind]} one")
    spatial, temporal, scale = KINDS[kind]
    return {
        "in_channels": config.get("in_channels", 128),
        "mid_channels": config.get("mid_channels", 512),
        "num_blocks_per_stage": config.get("num_blocks_per_stage", 4),
        "dims": config.get("dims", 3),
        "spatial_upsample": spatial,
        "temporal_upsample": temporal,
        "rational_spatial_scale": scale,
        # ltx-core builds the rational resampler only for a spatial-only upsampler with this flag set
        "use_rational_resampler": spatial and not temporal and bool(config.get("rational_resampler", False)),
    }


def load_upsampler(path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.bfloat16,
                   kind: str = "x2") -> LTX2LatentUpsamplerModel:
    """The `kind` of upsampler file onto `device` in `dtype`, offline, every tensor accounted for."""
    start = time.perf_counter()
    header = read_header(path)
    config = upsampler_config(header.metadata, path, kind)
    with torch.device("meta"):
        model = LTX2LatentUpsamplerModel(**config)
    targets = model.state_dict(keep_vars=True)
    # The rational resampler's blur kernel is a constant (binomial 5x5) that a file may or may not carry.
    constants = {key: _blur_kernel(t.shape[-1]) for key, t in targets.items()
                 if key.endswith("blur_down.kernel") and key not in header.tensors}
    missing = set(targets) - set(header.tensors) - set(constants)
    unexpected = set(header.tensors) - set(targets)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing from the file: {name_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} tensor(s) in the file that the upsampler does not have: "
                         f"{name_list(unexpected)}")
        raise CheckpointError(f"{path}: does not match the upsampler its config describes; " + "; ".join(parts))
    wrong = [f"{k} is {list(header.tensors[k].shape)}, expected {list(t.shape)}" for k, t in targets.items()
             if k not in constants and tuple(header.tensors[k].shape) != tuple(t.shape)]
    if wrong:
        raise CheckpointError(f"{path}: {len(wrong)} tensor(s) with the wrong shape: " + "; ".join(sorted(wrong)[:12]))
    tensors = {}
    fd = os.open(path, os.O_RDONLY)
    try:
        for key, target in targets.items():
            source = constants[key] if key in constants else read_tensor(fd, header, key)
            tensors[key] = source.to(device=device, dtype=dtype if target.is_floating_point()
                                                           else target.dtype)
    finally:
        os.close(fd)
    model.load_state_dict(tensors, strict=True, assign=True)
    log.info("loaded %s upsampler %s in %.1fs", KIND_NAMES[kind], path, time.perf_counter() - start)
    return model.eval().requires_grad_(False)


def _blur_kernel(size: int) -> torch.Tensor:
    """ltx-core's BlurDownsample kernel: the outer product of a binomial row, normalised to sum 1."""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    return (row[:, None] * row[None, :] / row.sum() ** 2).float()[None, None]


def resolve_upsampler_path(setting: str, models_dir: str | None, official: str | None = UPSAMPLER_FILE,
                           env: str = "LTX2_UPSAMPLER") -> str | None:
    """`--upsampler` (or `--temporal-upscaler`): "none"; "auto" (the family's `official` file in the models
    directory, if it is there); or a path, which must exist."""
    if setting == "none":
        return None
    if setting == "auto":
        candidate = os.path.join(models_dir, official) if models_dir and official else None
        return candidate if candidate and os.path.isfile(candidate) else None
    candidates = [setting] + ([os.path.join(models_dir, setting)] if models_dir and not os.path.isabs(setting) else [])
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise CheckpointError(f"upsampler {setting!r}: no file at {' or '.join(candidates)}; fetch it with "
                          f"`ltx2 download` ({official or 'not published for this family'}) or set {env}=none")


def family_problem(path: str, family, families) -> str | None:
    """Why the upscaler at `path` belongs to another model family, in one line; None when it may fit.

    The spatial x2 upscalers of LTX-2 and LTX-2.3 have the same tensors and config, so a file's contents
    cannot tell them apart: the official file names can (each family publishes its own)."""
    name = os.path.basename(path)
    if any(os.path.basename(own) == name for own in family.files.upscalers().values()):
        return None
    for other in families:
        for kind, official in other.files.upscalers().items():
            if os.path.basename(official) == name:
                own = family.files.upscalers().get(kind)
                return (f"{path} is {other.title}'s {KIND_NAMES[kind]} upscaler; the loaded model is {family.title}"
                        + (f", whose is {os.path.basename(own)}" if own else f", which has no {KIND_NAMES[kind]} one"))
    return None


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


def resolve_upscaler(setting: str, models_dir: str | None, family, families, kind: str) -> str | None:
    """The file of the `kind` of upscaler that `setting` names for a model of `family` ("auto": the family's
    official file in the models directory, when present), refused when it is another family's."""
    official = family.files.upscalers().get(kind)
    if kind == "x1.5" and official is None:
        raise CheckpointError(f"--spatial-upscaler x1.5: {family.title} publishes no x1.5 spatial upscaler (LTX-2.3 "
                              "does); use x2")
    env = "LTX2_TEMPORAL_UPSCALER" if kind == "temporal" else "LTX2_UPSAMPLER"
    path = resolve_upsampler_path(setting, models_dir, official, env)
    if path is not None and (problem := family_problem(path, family, families)) is not None:
        raise CheckpointError(problem)
    return path


def tiny_upscaler(setting: str, family, families, kind: str, seed: int, device) -> tuple[object, str] | tuple[None, None]:
    """A tiny preset's upscaler of `kind`: its own random one for "auto" (none where the family publishes none),
    or a file, checked as a checkpoint's would be."""
    if setting == "none":
        return None, None
    if setting != "auto":
        path = resolve_upscaler(setting, None, family, families, kind)
        return load_upsampler(path, "cpu", torch.float32, kind).to(device), path
    build = {"x2": family.tiny.upsampler, "x1.5": family.tiny.upsampler_x1_5,
             "temporal": family.tiny.temporal_upsampler}[kind]
    if build is None:
        if kind == "x1.5":
            raise CheckpointError(f"--spatial-upscaler x1.5: {family.title} publishes no x1.5 spatial upscaler (LTX-2.3 "
                                  "does); use x2")
        return None, None
    return build(seed).to(device), "tiny"
