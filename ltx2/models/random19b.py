"""The `random-19b` preset: LTX-2 19B and Gemma 3 12B at their real sizes, with seeded random weights.

Speed and memory depend on shapes and dtypes, not on the weights' values, so a model with the
official geometry and random weights costs what the real one costs: the same FLOPs, bytes, FP8
layers and memory placement. Real weights never reach the development machines; this preset lets
a GPU benchmark (bench/gpu.py) and a 24 GB memory model measure the real thing without them. Its
videos are noise.

- Geometry: the transformer, text connectors, video VAE, audio VAE and vocoder from LTX-2 19B's
  own `config` metadata (`ltx2_19b_config.json`, the `config` of tests/data/ltx2_19b_layout.json),
  through the same config translation the checkpoint loader uses; Gemma 3 12B from its published
  sizes (`gemma_12b_config`).
- FP8 as in the official FP8 file: the transformer's block linears (every attention's q/k/v/out
  and every feed-forward) are float8_e4m3fn with per-tensor float32 weight and input scales in
  blocks 1-42; block 0, blocks 43-47 and every linear outside the blocks stay bf16
  (`fp8_blocks`). They run through the same `FP8Linear`, `--fp8-compute` and memory placement as
  a loaded checkpoint.
- `layers`: fewer transformer blocks and Gemma layers (its vision tower's too, up to its 27) at
  the same widths (tests, cheap smoke runs). Gemma's hidden states are stacked for the
  connectors, so their projection reads `layers + 1` of them, as the real one reads 49.
- Weights are drawn on the compute device, tensor by tensor, and each goes straight to where the
  memory policy rests it: no host copy on a GPU, and seconds to build there. On the CPU, where
  torch draws about 200 million normals a second, each tensor is cut from a seeded pool of 4M
  normals at its own offsets instead (the values repeat; no size, FLOP count or code path changes).
- The tokenizer is the tiny preset's (no Gemma vocabulary ships without a hub); Gemma's embedding
  table keeps the real 262,208 rows, and every prompt is still padded to 1024 tokens.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from torch import nn

from . import configs, fp8
from .loading import build_empty
from .text_encoder import gemma_linear_names

log = logging.getLogger("ltx2")

NAME = "random-19b"
FULL_LAYERS = 48  # transformer blocks of LTX-2 19B; Gemma 3 12B has 48 decoder layers too
CONFIG = json.loads((Path(__file__).parent / "ltx2_19b_config.json").read_text())

# Gemma 3 12B (google/gemma-3-12b-it): text decoder, SigLIP vision tower, projector.
GEMMA_HIDDEN = 3840
GEMMA_VOCAB = 262_208
VISION_LAYERS = 27


def gemma_12b_config(layers: int = FULL_LAYERS):
    from transformers import Gemma3Config

    pattern = ["sliding_attention"] * 5 + ["full_attention"]  # five local layers, then one global
    return Gemma3Config(
        text_config=dict(
            vocab_size=GEMMA_VOCAB, hidden_size=GEMMA_HIDDEN, intermediate_size=15_360, num_hidden_layers=layers,
            num_attention_heads=16, num_key_value_heads=8, head_dim=256, query_pre_attn_scalar=256,
            sliding_window=1024, layer_types=[pattern[i % 6] for i in range(layers)],
            rope_scaling={"rope_type": "linear", "factor": 8.0}, max_position_embeddings=131_072,
            pad_token_id=0, eos_token_id=1, bos_token_id=2,
        ),
        # SigLIP's 27 layers; fewer with --layers (same widths), like the decoder's.
        vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=min(VISION_LAYERS, layers),
                           num_attention_heads=16,
                           image_size=896, patch_size=14, vision_use_head=False),
        mm_tokens_per_image=256, boi_token_index=255_999, eoi_token_index=256_000, image_token_index=262_144,
    )


# The official FP8 file's layer set (blocks 1-42 of 48), shared with `--quantize fp8` (ltx2.models.fp8).
FP8_SUFFIXES, fp8_blocks, fp8_layer_names = fp8.FP8_SUFFIXES, fp8.fp8_blocks, fp8.fp8_layer_names


def component_configs(layers: int = FULL_LAYERS) -> dict[str, dict]:
    """diffusers configs of the five LTX-2 components, from the real config with `layers` blocks."""
    config = json.loads(json.dumps(CONFIG))
    config["transformer"]["num_layers"] = layers
    vae = configs.video_vae_config(config)
    vae["timestep_conditioning"] = bool(config["vae"].get("timestep_conditioning", False))
    audio = configs.audio_vae_config(config)
    caption = config["transformer"]["caption_channels"]
    return {
        "transformer": configs.transformer_config(config, vae, audio),
        "connectors": configs.connectors_config(config, (caption, caption * (layers + 1))),
        "vae": vae,
        "audio_vae": audio,
        "vocoder": configs.vocoder_config(config, audio["mel_bins"]),
    }


def build_meta(layers: int = FULL_LAYERS, text_encoder_dtype: str = "bf16",
               fp8_compute: str = "upcast") -> dict[str, nn.Module]:
    """Every component on the `meta` device (shapes and dtypes, no memory), FP8 layers swapped in.

    What `build` materializes, and what the memory model counts: parameter counts and bytes here
    are those of the full-size model.
    """
    from accelerate import init_empty_weights
    from transformers import Gemma3ForConditionalGeneration

    check_layers(layers)
    modules = {name: build_empty(name, cfg) for name, cfg in component_configs(layers).items()}
    fp8.swap_in_fp8_linears(modules["transformer"], fp8_layer_names(modules["transformer"], layers),
                            compute=fp8_compute, has_input_scale=lambda _: True)
    # Parameters on meta; buffers (rotary frequencies, the embedding scale) computed for real, on the CPU.
    with init_empty_weights(include_buffers=False):
        gemma = Gemma3ForConditionalGeneration(gemma_12b_config(layers))
    gemma.tie_weights()  # the output head shares the embedding, as in the checkpoint (from_pretrained ties it)
    if text_encoder_dtype == "fp8":
        fp8.swap_in_fp8_linears(gemma, gemma_linear_names(gemma), compute=fp8_compute, has_input_scale=set())
    modules["text_encoder"] = gemma
    return modules


def check_layers(layers: int, name: str = NAME) -> int:
    if not isinstance(layers, int) or not 1 <= layers <= FULL_LAYERS:
        raise ValueError(f"--layers must be between 1 and {FULL_LAYERS} for {name}, got {layers!r}")
    return layers


class _Draws:
    """Seeded normals on a device: one generator per tensor on accelerators, pools on the CPU."""

    POOL = 1 << 22

    def __init__(self, device: torch.device, seed: int):
        self.device, self.seed = device, seed
        self.pools: dict[torch.dtype, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def normal(self, shape: torch.Size, dtype: torch.dtype, std: float, index: int) -> torch.Tensor:
        out = torch.empty(shape, dtype=dtype, device=self.device)
        if self.device.type != "cpu":
            generator = torch.Generator(self.device).manual_seed(self.seed * 1_000_003 + index)
            return out.normal_(0.0, std, generator=generator)
        return self._fill(out, self._pool(dtype)[0], index, std)

    def quantized(self, shape: torch.Size, dtype: torch.dtype, std: float, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """An FP8 weight and its per-tensor scale, as `quantize_per_tensor` makes them from normals."""
        if self.device.type != "cpu":
            return fp8.quantize_per_tensor(self.normal(shape, dtype, std, index))
        pool, scale = self._pool(fp8.FP8_DTYPE)
        # Unit normals quantized once: a weight of deviation `std` is the same codes with `std` times the scale.
        return self._fill(torch.empty(shape, dtype=fp8.FP8_DTYPE), pool, index), scale * std

    def _pool(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Unit normals, one pool per dtype, so that filling a tensor is a copy (FP8: quantized once)."""
        if dtype not in self.pools:
            pool = torch.randn(self.POOL, generator=torch.Generator().manual_seed(self.seed))
            pool, scale = fp8.quantize_per_tensor(pool) if dtype == fp8.FP8_DTYPE else (pool.to(dtype), None)
            self.pools[dtype] = (torch.cat([pool, pool]), scale)  # any window of POOL values is contiguous
        return self.pools[dtype]

    def _fill(self, out: torch.Tensor, pool: torch.Tensor, index: int, std: float | None = None) -> torch.Tensor:
        """Copy windows of the pool into `out`, times `std` on the way (one pass over the memory)."""
        flat = out.view(-1)
        for chunk, start in enumerate(range(0, flat.numel(), self.POOL)):
            take = min(self.POOL, flat.numel() - start)
            offset = (index * 7919 + chunk * 104_729) % self.POOL  # windows differ by tensor and by chunk
            if std is None:
                flat[start:start + take].copy_(pool[offset:offset + take])
            else:
                torch.mul(pool[offset:offset + take], std, out=flat[start:start + take])
        return out


def _init_std(name: str, shape: torch.Size) -> float | None:
    """Standard deviation for a weight (1/sqrt(fan-in)); None: a constant (biases 0, norm scales 1)."""
    if len(shape) >= 2:
        return 1.0 / math.sqrt(max(1, math.prod(shape[1:])))
    return None if name.endswith("bias") or "norm" in name or len(shape) == 0 else 0.02


@torch.no_grad()
def materialize(module: nn.Module, draws: _Draws, homes: torch.device, dtype: torch.dtype, first_index: int) -> int:
    """Give every meta parameter and buffer of `module` seeded values, drawn on the compute device
    and moved to `homes`; tied parameters stay tied. Returns the next free tensor index."""
    index = first_index
    made: dict[int, nn.Parameter] = {}
    for prefix, sub in module.named_modules():
        if isinstance(sub, fp8.FP8Linear) and sub.weight.is_meta:
            q, scale = draws.quantized(sub.weight.shape, dtype, 1.0 / math.sqrt(sub.in_features), index)
            sub.weight = nn.Parameter(q.to(homes), requires_grad=False)
            sub.weight_scale = nn.Parameter(scale.to(homes), requires_grad=False)
            if sub.input_scale is not None:
                # Activations of this random network are O(1): a unit scale keeps them in e4m3's range.
                sub.input_scale = nn.Parameter(torch.ones((), dtype=torch.float32, device=homes), requires_grad=False)
            if sub.bias is not None:
                sub.bias = nn.Parameter(torch.zeros(sub.out_features, dtype=dtype, device=homes), requires_grad=False)
            index += 1
            continue
        for key, param in list(sub._parameters.items()):
            if param is None or not param.is_meta:
                continue
            if id(param) not in made:
                name = f"{prefix}.{key}" if prefix else key
                target = dtype if param.dtype.is_floating_point else param.dtype
                std = _init_std(name, param.shape)
                if std is None:
                    fill = 0.0 if name.endswith("bias") or len(param.shape) == 0 else 1.0
                    value = torch.full(param.shape, fill, dtype=target, device=homes)
                else:
                    value = draws.normal(param.shape, target, std, index).to(homes)
                made[id(param)] = nn.Parameter(value, requires_grad=False)
                index += 1
            sub._parameters[key] = made[id(param)]
        for key, buffer in list(sub._buffers.items()):
            if buffer is not None and buffer.is_meta:  # latent statistics: identity normalisation
                fill = 1.0 if key.endswith("std") else 0.0
                sub._buffers[key] = torch.full(buffer.shape, fill, dtype=torch.float32, device=homes)
    module.to(homes)  # buffers built for real on the CPU follow
    return index


def weight_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    """Bytes `module` will hold once materialized in `dtype` (FP8 weights 1 byte, scales float32): a
    count on meta tensors, exact for the weights."""
    width = torch.empty((), dtype=dtype).element_size()
    total = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.dtype in (torch.float8_e4m3fn, torch.float8_e5m2) or tensor.ndim == 0 or not tensor.is_meta:
            total += tensor.numel() * tensor.element_size()
        else:
            total += tensor.numel() * (width if tensor.dtype.is_floating_point else tensor.element_size())
    return total


def fp8_text_encoder_saving(text_encoder: nn.Module, dtype: torch.dtype) -> int:
    """Bytes Gemma's decoder linears give back when stored in FP8 instead of `dtype`."""
    width = torch.empty((), dtype=dtype).element_size()
    return sum(text_encoder.get_submodule(name).weight.numel() for name in gemma_linear_names(text_encoder)) * (width - 1)


def meta_upsampler() -> nn.Module:
    """The x2 spatial latent upsampler at the official file's size (ltx-core's configurator defaults), on meta."""
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from .upsampler import upsampler_config

    with torch.device("meta"):
        return LTX2LatentUpsamplerModel(**upsampler_config({"config": "{}"}, NAME))


def load(device: torch.device, dtype: torch.dtype, *, layers: int = FULL_LAYERS, seed: int = 0,
         memory_policy: str = "auto", fp8_compute: str = "auto", text_encoder_dtype: str = "auto",
         workspace_bytes: int | None = None, upsampler: bool = False,
         vae_decoder: str = "auto") -> tuple[dict, dict, str]:
    """Choose the memory policy and Gemma's dtype from the sizes counted on meta, then build every
    component where the policy rests it. Returns (components, report for /health, policy); with
    `upsampler`, components include a random full-size x2 upsampler for the two-stage pipeline.
    `vae_decoder`: LTX-2 has only the VAE's own decoder; accepted as random-22b's `load` takes it."""
    compute = fp8.resolve_compute(fp8_compute, device)
    modules = build_meta(layers, "bf16", compute)
    if upsampler:
        modules["upsampler"] = meta_upsampler()
    return place_and_build(modules, device, dtype, compute=compute, layers=layers, seed=seed,
                           memory_policy=memory_policy, text_encoder_dtype=text_encoder_dtype,
                           workspace_bytes=workspace_bytes)


def place_and_build(modules: dict[str, nn.Module], device: torch.device, dtype: torch.dtype, *, compute: str,
                    layers: int, seed: int = 0, memory_policy: str = "auto", text_encoder_dtype: str = "auto",
                    workspace_bytes: int | None = None, about: dict | None = None) -> tuple[dict, dict, str]:
    """`load` for any random preset's meta `modules` (Gemma in bf16; `text_encoder` among them): the
    policy and Gemma's dtype from the sizes, then `build`. `about`: the report's preset fields (`build`)."""
    from . import memory

    sizes = {name: weight_bytes(module, dtype) for name, module in modules.items()}
    fp8_sizes = dict(sizes, text_encoder=sizes["text_encoder"] - fp8_text_encoder_saving(modules["text_encoder"], dtype))
    free = memory.device_memory(device)[0] if device.type == "cuda" else 0
    workspace = memory.default_workspace_bytes(device) if workspace_bytes is None else workspace_bytes
    te = memory.choose_text_encoder_dtype(text_encoder_dtype, free, sizes, fp8_sizes, workspace, device.type)
    if te["dtype"] == "fp8":
        gemma = modules["text_encoder"]
        fp8.swap_in_fp8_linears(gemma, gemma_linear_names(gemma), compute=compute, has_input_scale=set())
        sizes = fp8_sizes
    policy, reason = memory.choose_policy(memory_policy, free, sizes, workspace, device_type=device.type)
    homes = {name: device if memory.rests_on_compute(policy, name) else torch.device("cpu") for name in modules}
    components, report = build(modules, device, homes, dtype=dtype, compute=compute, seed=seed, layers=layers,
                               about=about)
    return components, {**report, "memory_reason": reason, "text_encoder_dtype": te}, policy


def build(modules: dict[str, nn.Module], device: torch.device, homes: dict[str, torch.device], *,
          dtype: torch.dtype = torch.bfloat16, compute: str = "upcast", seed: int = 0,
          layers: int = FULL_LAYERS, about: dict | None = None) -> tuple[dict, dict]:
    """Materialize `build_meta`'s components: drawn on `device`, each resting where `homes` says.

    Returns (components for `LTX2Pipeline`, a report for /health). `about`: the preset's name, family
    and kind_source in the report (default: this preset's).
    """
    from .tiny import build_scheduler, build_tokenizer

    start = time.perf_counter()
    draws = _Draws(device, seed)
    index = 0
    seconds = {}
    for name, module in modules.items():
        t = time.perf_counter()
        index = materialize(module, draws, homes.get(name, device), dtype, index)
        module.eval().requires_grad_(False)
        fp8.set_fp8_compute(module, compute)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds[name] = round(time.perf_counter() - t, 3)
    about = {"name": NAME, "family": configs.LTX2_19B, "kind_source": f"{NAME} mirrors the distilled FP8 file",
             **(about or {})}
    report = {
        "checkpoint": None, "format": "random", "family": about["family"], "kind": "distilled",
        "kind_source": about["kind_source"], "layers": layers, "seed": seed,
        "fp8_layers": sum(isinstance(m, fp8.FP8Linear) for m in modules["transformer"].modules()),
        "fp8_compute": compute, "build_seconds": seconds, "load_seconds": round(time.perf_counter() - start, 3),
    }
    log.info("built %s (%d layers) on %s in %.1fs", about["name"], layers, device, report["load_seconds"])
    return {**modules, "tokenizer": build_tokenizer(), "scheduler": build_scheduler()}, report
