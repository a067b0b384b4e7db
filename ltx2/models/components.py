"""diffusers' LTX-2 components built empty: the class for each component and config, on `meta`.

Every loader (the single file, LTX-2.5's split files) and the random presets build components this
way before a tensor is read; this module is what they share.
"""

from __future__ import annotations

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE

from .safetensors_io import name_list

COMPONENT_CLASSES = {
    "transformer": LTX2VideoTransformer3DModel,
    "connectors": LTX2TextConnectors,
    "vae": AutoencoderKLLTX2Video,
    "audio_vae": AutoencoderKLLTX2Audio,
    "vocoder": LTX2Vocoder,
}


def component_class(name: str, config: dict) -> type:
    """The diffusers class for component `name` with this diffusers config: LTX-2.3's vocoder (BigVGAN v2
    plus bandwidth extension to 48 kHz, its config has `bwe_*` entries) is `LTX2VocoderWithBWE`."""
    if name == "vocoder" and "bwe_hidden_channels" in config:
        return LTX2VocoderWithBWE
    return COMPONENT_CLASSES[name]


def build_empty(name: str, config: dict) -> torch.nn.Module:
    """A component with its parameters on `meta`: the shapes, no memory, nothing initialised."""
    cls = component_class(name, config)
    with torch.device("meta"):
        module = cls.from_config(config)
    if cls is LTX2VocoderWithBWE:
        # Its resampler's sinc filter is computed, not stored (a non-persistent buffer): no file fills it,
        # so it is built for real, as ltx-core builds it on the CPU even when the model is on meta.
        with torch.device("cpu"):
            module.resampler = type(module.resampler)(
                ratio=config["output_sampling_rate"] // config["input_sampling_rate"], window_type="hann",
                persistent=False)
    if name == "vae":
        # Loading streams whole videos through the VAE; framewise tiling is a memory choice made later.
        module.use_framewise_encoding = False
        module.use_framewise_decoding = False
    return module


def target_dtype(key: str, target: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """What a file tensor becomes: FP8 weights stay FP8, their scales float32, the rest `dtype`."""
    if target.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return target.dtype  # FP8 stays FP8
    if key.endswith(("weight_scale", "input_scale")):
        return torch.float32
    if not target.dtype.is_floating_point:
        return target.dtype
    return dtype


def finish_loaded(name: str, module: torch.nn.Module, home: torch.device) -> None:
    """After its state dict is assigned: buffers computed at build time (the BWE resampler) go to
    `home` too, the module is frozen in eval mode, and nothing may be left on meta."""
    for owner in module.modules():
        for buf_name, buf in list(owner._buffers.items()):
            if buf is not None and not buf.is_meta and buf.device != home:
                owner._buffers[buf_name] = buf.to(home)
    module.eval().requires_grad_(False)
    left = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:  # a tensor the model creates itself and no file provides: a bug, not a user error
        raise RuntimeError(f"{name}: tensors left uninitialised after loading: {name_list(left)}")
