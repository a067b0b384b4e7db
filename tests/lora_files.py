"""Tiny LoRA files for a loaded model, written in each key style people share."""

from __future__ import annotations

import json
import struct

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


# ---------------------------------------------------------------------------------------------- hostile files
# Files a user can send as a LoRA that are not what they claim; each one crashed or bloated the server
# before LoRA headers were checked (issue 21). They are written byte by byte: no library writes them.

def write_raw(path, entries: dict, data: bytes = b"", metadata: dict | None = None, length: int | None = None) -> int:
    """A safetensors file with exactly this header: {name: (dtype, shape, [start, end])}, then `data`.
    `length` overrides the 8-byte header length (a lie). Returns the file's size."""
    header = {name: {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}
              for name, (dtype, shape, offsets) in entries.items()}
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return 8 + len(text) + len(data)


def first_layers(model, count: int) -> list:
    """The transformer's first `count` linear layers (the tiny preset has 82)."""
    return [layer for layer in layer_index(model).modules if layer[0] == "transformer"][:count]


def shared_range(path, model, entries: int = 2500, share_bytes: int = 1 << 20) -> int:
    """`entries` header entries whose data all point at the same `share_bytes` bytes: the old reader read
    each one separately (2500 x 1 MiB = 2.5 GB from a 1 MiB file). Keys are real layers' factors."""
    stems = [ltx_name(*layer) for layer in attention_layers(model)]
    count = share_bytes // 4
    names = {}
    for i in range(entries):
        stem = stems[i % len(stems)] + "_" * (i // len(stems))  # distinct keys, all in the LoRA's key styles
        names[f"{stem}.lora_{'AB'[i % 2]}.weight"] = ("F32", [count], [0, share_bytes])
    return write_raw(path, names, bytes(share_bytes))


def hollow(path, model, rank: int = 1_000_000, layers: int = 1) -> int:
    """Factors of rank `rank` declared on real layers with no data at all (data_offsets [0, 0]): a few
    hundred bytes that the old reader turned into rank x (in + out) floats per layer."""
    index = layer_index(model)
    entries = {}
    for layer in first_layers(model, layers):
        module, stem = index.modules[layer], ltx_name(*layer)
        entries[stem + ".lora_A.weight"] = ("F32", [rank, module.in_features], [0, 0])
        entries[stem + ".lora_B.weight"] = ("F32", [module.out_features, rank], [0, 0])
    return write_raw(path, entries)


def huge_header(path, entries: int = 1_300_000) -> int:
    """A header of `entries` zero-size tensors (~88 MB of JSON at 1.3M): parsing it holds the interpreter
    lock for seconds. Built as bytes, quickly."""
    body = b",".join(b'"diffusion_%08d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(entries))
    text = b"{" + body + b"}"
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(text)) + text)
    return 8 + len(text)


def factors_as(path, model, dtype: str = "I32", rank: int = 4, layers: int = 1) -> int:
    """Well-laid-out factors of `dtype` and `rank` on real layers (integer factors, or a rank too large)."""
    index = layer_index(model)
    width = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I32": 4, "I8": 1, "U8": 1}[dtype]
    entries, at = {}, 0
    for layer in first_layers(model, layers):
        module, stem = index.modules[layer], ltx_name(*layer)
        for suffix, shape in ((".lora_A.weight", [rank, module.in_features]), (".lora_B.weight", [module.out_features, rank])):
            size = shape[0] * shape[1] * width
            entries[stem + suffix] = (dtype, shape, [at, at + size])
            at += size
    return write_raw(path, entries, bytes(at))
