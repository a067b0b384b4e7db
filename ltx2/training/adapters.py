"""Trainable LoRA side paths, and their export in Lightricks' trainer / ComfyUI key style.

The targets are ltx-trainer's default (`configs/t2v_lora.yaml`: `to_k`, `to_q`, `to_v`, `to_out.0`, PEFT
matching module-name suffixes): every attention projection of the transformer, video, audio, text and
audio<->video cross-attention alike; the text connectors are not adapted (the trainer wraps only the
transformer). Initialisation is PEFT's `init_lora_weights=True`: A Kaiming-uniform (a = sqrt(5)), B zero,
so step 0 is the base model. The factors are float32, as PEFT keeps adapters of a bf16 model
(`autocast_adapter_dtype`), and the input is cast to them as PEFT's LoRA layer does.

The side path is a forward hook, `y = W x + (alpha / r) B A x`, the same arithmetic the inference side
(`models/lora.py`) applies, so what is trained is what is served; the frozen weights (bf16 or FP8) are
never touched. The export carries `diffusion_model.<ltx-core name>.lora_A.weight` / `.lora_B.weight`
with alpha / r folded into B (the trainer's files carry no alpha, and ltx-core / ComfyUI then apply
B A at strength 1), and metadata: base model, rank, alpha, steps, targets.
"""

from __future__ import annotations

import json
import math
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..models import layout
from ..models.lora import _LINEAR

TARGETS = ("to_k", "to_q", "to_v", "to_out.0")
PREFIX = "diffusion_model."


def target_layers(transformer, targets: tuple[str, ...] = TARGETS) -> list[tuple[str, torch.nn.Module]]:
    """The transformer's linear layers whose names end in one of `targets` (PEFT's suffix match)."""
    return [(name, module) for name, module in transformer.named_modules()
            if isinstance(module, _LINEAR) and any(name == t or name.endswith("." + t) for t in targets)]


class TrainableLora:
    """Low-rank factors on every target layer, attached as forward hooks while `attached`."""

    def __init__(self, transformer, rank: int, alpha: float, device, generator: torch.Generator | None = None,
                 targets: tuple[str, ...] = TARGETS):
        self.rank, self.alpha, self.scale = rank, alpha, alpha / rank
        self.layers: dict[str, tuple[torch.nn.Module, torch.nn.Parameter, torch.nn.Parameter]] = {}
        for name, module in target_layers(transformer, targets):
            down = torch.empty(rank, module.in_features)
            # PEFT's init: kaiming_uniform_(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); drawn on the CPU
            bound = 1 / math.sqrt(module.in_features)
            down.uniform_(-bound, bound, generator=generator)
            self.layers[name] = (module, torch.nn.Parameter(down.to(device)),
                                 torch.nn.Parameter(torch.zeros(module.out_features, rank, device=device)))
        self._handles: list = []

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for _, down, up in self.layers.values() for p in (down, up)]

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.parameters())

    def attach(self) -> None:
        for module, down, up in self.layers.values():
            self._handles.append(module.register_forward_hook(self._hook(down, up)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, down, up):
        scale = self.scale

        def side_path(module, args, output):
            return output + (F.linear(F.linear(args[0].to(down.dtype), down), up) * scale).to(output.dtype)

        return side_path

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trainer's / ComfyUI's keys, alpha / r folded into B, in bfloat16 (its checkpoint precision)."""
        out = {}
        for name, (_, down, up) in self.layers.items():
            stem = layout.file_key("transformer", name + ".weight").removesuffix(".weight")
            stem = PREFIX + stem.removeprefix(layout.TRANSFORMER_PREFIX)
            out[stem + ".lora_A.weight"] = down.detach().to("cpu", torch.bfloat16).contiguous()
            out[stem + ".lora_B.weight"] = (up.detach().float() * self.scale).to("cpu", torch.bfloat16).contiguous()
        return out

    def load_state_dict(self, tensors: dict[str, torch.Tensor]) -> None:
        """Back from an exported file (resuming): B un-scaled again."""
        for name, (_, down, up) in self.layers.items():
            stem = PREFIX + layout.file_key("transformer", name + ".weight").removesuffix(".weight").removeprefix(
                layout.TRANSFORMER_PREFIX)
            with torch.no_grad():
                down.copy_(tensors[stem + ".lora_A.weight"].float())
                up.copy_(tensors[stem + ".lora_B.weight"].float() / self.scale)


def export(lora: TrainableLora, path: str, metadata: dict) -> None:
    """Written whole or not at all (a .part renamed), so `loras` never reads half a file."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    meta.update({"rank": str(lora.rank), "alpha": json.dumps(lora.alpha), "format": "ltx-trainer/comfyui",
                 "target_modules": json.dumps(list(TARGETS))})
    part = path + ".part"
    save_file(lora.state_dict(), part, metadata=meta)
    os.replace(part, path)
