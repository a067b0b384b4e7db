"""Tiny LoRA files for a loaded model, written in each key style people share."""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from ltx2.models import layout
from ltx2.models.lora import layer_index

STYLES = ("ltx", "comfyui", "kohya", "diffusers")


def ltx_name(component: str, name: str) -> str:
    """A layer's name in the official file, without `model.` (how trainer and ComfyUI files write it)."""
    official = layout.file_key(component, name + ".weight").removesuffix(".weight")
    return official.removeprefix("model.")


def factors(model, layers, rank: int = 4, seed: int = 0, magnitude: float = 0.3) -> dict:
    gen = torch.Generator().manual_seed(seed)
    index = layer_index(model)
    out = {}
    for layer in layers:
        module = index.modules[layer]
        out[layer] = (torch.randn(rank, module.in_features, generator=gen) * magnitude,
                      torch.randn(module.out_features, rank, generator=gen) * magnitude)
    return out


def attention_layers(model, component: str = "transformer") -> list[tuple[str, str]]:
    return [layer for layer in layer_index(model).modules if layer[0] == component and ".attn1." in layer[1]]


def write_lora(path, model=None, style: str = "ltx", layers=None, rank: int = 4, seed: int = 0,
               alpha: float | None = None, weights: dict | None = None, extra: dict | None = None) -> dict:
    """Write a LoRA; returns {layer: (A, B)} as written. `alpha` (ltx/comfyui/kohya: a key per layer;
    diffusers: lora_adapter_metadata) scales each update by alpha / rank."""
    if weights is None:
        weights = factors(model, layers or attention_layers(model), rank, seed)
    tensors, metadata = {}, {}
    for (component, name), (down, up) in weights.items():
        if style == "diffusers":
            stem = f"{component}.{name}"
        elif style == "kohya":
            stem = "lora_unet_" + ltx_name(component, name).removeprefix("diffusion_model.").replace(".", "_")
        else:
            stem = ltx_name(component, name)
        low, high = (".lora_down.weight", ".lora_up.weight") if style in ("comfyui", "kohya") else \
            (".lora_A.weight", ".lora_B.weight")
        tensors[stem + low] = down.to(torch.bfloat16).contiguous()
        tensors[stem + high] = up.to(torch.bfloat16).contiguous()
        if alpha is not None and style != "diffusers":
            tensors[stem + ".alpha"] = torch.tensor(float(alpha))
    if alpha is not None and style == "diffusers":
        rank_ = next(iter(weights.values()))[0].shape[0]
        metadata["lora_adapter_metadata"] = json.dumps({"transformer.lora_alpha": alpha, "transformer.r": rank_})
    tensors.update(extra or {})
    save_file(tensors, str(path), metadata=metadata or None)
    return weights
