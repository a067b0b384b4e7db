"""What a training run needs in memory, and the choice between the full mode and the low-VRAM one.

The arithmetic, per run (batch 1, gradient checkpointing on every transformer block, as ltx-trainer):

- frozen weights: the transformer as loaded (bf16: 2 bytes a parameter; FP8: 1), on the device;
- the LoRA: float32 factors, their gradients and AdamW's two moments: 16 bytes a LoRA parameter. The
  low-VRAM mode keeps only the factors and their gradients on the device (8 bytes) and the float32
  master copy and both moments in host memory (12 bytes), as ltx-trainer's optimizer-state offload does;
- activations: with checkpointing, each block's input is kept for the backward pass (video tokens x
  video width + audio tokens x audio width, in the compute dtype, per block), plus one block recomputed
  with its gradients, counted as `BLOCK_FACTOR` times one block's input and attention scores.

ltx-trainer's documentation puts the 19B at 80 GB for its standard LoRA config and 32 GB for its
low-VRAM config (FP8 frozen weights via quantization, 8-bit optimizer, rank 16); `ltx2` cannot
re-quantize the served model in place, so low-VRAM here is the offloaded optimizer state on whatever the
operator loaded (start the server with an FP8 checkpoint or `--fp8` to get the trainer's 32 GB figure).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.geometry import audio_latent_frames, latent_video_shape
from .adapters import target_layers

BLOCK_FACTOR = 24  # one block's forward + backward working set, in units of its input: an estimate, not measured on a GPU yet
FULL, LOW_VRAM = "full", "low_vram"


@dataclass(frozen=True)
class TrainingFootprint:
    weights: int  # frozen transformer
    lora_device: int  # factors, gradients (and in full mode the moments)
    lora_host: int  # low-VRAM: master copy and moments on the host
    activations: int

    @property
    def device(self) -> int:
        return self.weights + self.lora_device + self.activations


def lora_parameters(model, rank: int) -> int:
    return sum(rank * (m.in_features + m.out_features) for _, m in target_layers(model.pipe.transformer))


def footprint(model, mode: str, *, width: int, height: int, num_frames: int, fps: int, rank: int) -> TrainingFootprint:
    pipe, transformer = model.pipe, model.pipe.transformer
    weights = sum(p.numel() * p.element_size() for p in transformer.parameters())
    weights += sum(b.numel() * b.element_size() for b in transformer.buffers())
    lora = lora_parameters(model, rank)
    frames, lat_h, lat_w = latent_video_shape(num_frames, height, width, pipe.vae_spatial_compression_ratio,
                                              pipe.vae_temporal_compression_ratio)
    audio = audio_latent_frames(num_frames, fps, pipe.audio_vae.config.sample_rate, pipe.audio_vae.config.mel_hop_length,
                                pipe.audio_vae_temporal_compression_ratio)
    config = transformer.config
    video_dim = config.num_attention_heads * config.attention_head_dim
    audio_dim = config.audio_num_attention_heads * config.audio_attention_head_dim
    width_bytes = torch.tensor([], dtype=model.dtype).element_size()
    tokens = frames * lat_h * lat_w
    block_input = (tokens * video_dim + audio * audio_dim) * width_bytes
    scores = (tokens * tokens * config.num_attention_heads) * width_bytes  # one attention's scores, unfused
    activations = len(transformer.transformer_blocks) * block_input + BLOCK_FACTOR * block_input + scores
    if mode == LOW_VRAM:
        return TrainingFootprint(weights, 8 * lora, 12 * lora, activations)
    return TrainingFootprint(weights, 16 * lora, 0, activations)


@dataclass(frozen=True)
class MemoryChoice:
    mode: str
    full: TrainingFootprint
    low_vram: TrainingFootprint
    available: int | None  # device bytes free (None: a CPU device, where host memory holds everything)

    def report(self) -> dict:
        gib = lambda n: round(n / 1024**3, 3)  # noqa: E731
        return {"mode": self.mode, "full_gib": gib(self.full.device), "low_vram_gib": gib(self.low_vram.device),
                "low_vram_host_gib": gib(self.low_vram.lora_host),
                "available_gib": None if self.available is None else gib(self.available)}


def choose(model, available: int | None, *, width: int, height: int, num_frames: int, fps: int, rank: int,
           requested: str = "auto") -> MemoryChoice | None:
    """The full mode when it fits `available`, else low-VRAM when that fits, else None (too large: the
    caller refuses). `requested` "full" or "low_vram" forces one (still refused when it does not fit)."""
    full = footprint(model, FULL, width=width, height=height, num_frames=num_frames, fps=fps, rank=rank)
    low = footprint(model, LOW_VRAM, width=width, height=height, num_frames=num_frames, fps=fps, rank=rank)
    fits = lambda f: available is None or f.device <= available  # noqa: E731
    order = {"auto": (FULL, LOW_VRAM), FULL: (FULL,), LOW_VRAM: (LOW_VRAM,)}[requested]
    for mode in order:
        if fits(full if mode == FULL else low):
            return MemoryChoice(mode, full, low, available)
    return None
