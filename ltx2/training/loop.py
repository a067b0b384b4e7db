"""The training loop: ltx-trainer's optimisation defaults on the cached samples.

AdamW (torch's defaults: betas 0.9/0.999, eps 1e-8, weight decay 0.01) at `learning_rate` (1e-4), the
linear schedule down to 0.1x over the run, gradients clipped to norm 1, batch 1, gradient checkpointing
on the transformer's blocks (`enable_gradient_checkpointing`). The clips are visited in a shuffled order
per epoch, and every draw (order, sigmas, noise, first-frame choice, initial A) comes from one generator
seeded with `seed`: a run is repeatable.

Progress after every step: the step, the loss, the ETA. A checkpoint is exported every `checkpoint_every`
steps (and at the end) to the LoRA's own path, so a cancelled or failed run leaves its last checkpoint
there, loadable by `loras`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .adapters import TrainableLora, export
from .dataset import Sample
from .objective import ShiftedLogitNormal, draw, eta_seconds, loss


class TrainingStopped(Exception):
    """`should_stop()` returned a reason: the run ends, its last checkpoint stays."""

    def __init__(self, why, steps: int):
        super().__init__(str(why))
        self.why, self.steps = why, steps


@dataclass
class TrainingConfig:
    """What one training run does (ltx-trainer's t2v_lora.yaml values as defaults)."""

    output: str  # the LoRA file
    mode: str = "t2v"  # "t2v", or "i2v" (first frame given clean with probability first_frame_p)
    rank: int = 32
    alpha: float = 32.0
    steps: int = 2000
    learning_rate: float = 1e-4
    checkpoint_every: int = 250
    seed: int = 42
    max_grad_norm: float = 1.0
    first_frame_p: float | None = None  # None: the mode's (t2v 0, i2v 0.5 as the trainer's i2v config)
    gradient_checkpointing: bool = True
    offload_optimizer: bool = False  # low-VRAM: the float32 master copy and AdamW's moments in host memory
    metadata: dict = field(default_factory=dict)

    @property
    def first_frame_probability(self) -> float:
        if self.first_frame_p is not None:
            return self.first_frame_p
        return 0.5 if self.mode == "i2v" else 0.0


@dataclass
class Progress:
    step: int
    steps: int
    loss: float
    eta_s: float | None
    checkpoint: str | None = None  # set on the step a checkpoint was written


@dataclass
class Result:
    steps: int
    losses: list[float]
    path: str
    seconds: float


@contextmanager
def _trainable(model, config: TrainingConfig):
    """The transformer set up for training, and put back as it was (eval, no checkpointing) after."""
    transformer = model.pipe.transformer
    was_training = transformer.training
    checkpointing = getattr(transformer, "gradient_checkpointing", False)
    for p in transformer.parameters():
        p.requires_grad_(False)
    if config.gradient_checkpointing and getattr(transformer, "_supports_gradient_checkpointing", False):
        transformer.enable_gradient_checkpointing()
    transformer.train()
    try:
        yield transformer
    finally:
        transformer.train(was_training)
        if not checkpointing and getattr(transformer, "_supports_gradient_checkpointing", False):
            transformer.disable_gradient_checkpointing()


def train(model, samples: list[Sample], config: TrainingConfig, on_progress: Callable[[Progress], None] | None = None,
          should_stop: Callable[[], object] | None = None) -> Result:
    """Train a LoRA on `samples` and export it to `config.output`. Raises TrainingStopped (after the last
    checkpoint, if any) when `should_stop()` returns a reason."""
    if not samples:
        raise ValueError("no samples")
    generator = torch.Generator("cpu").manual_seed(config.seed)
    sampler = ShiftedLogitNormal()
    losses: list[float] = []
    meta = {**config.metadata, "steps": config.steps, "learning_rate": config.learning_rate, "mode": config.mode,
            "seed": config.seed}
    start = time.monotonic()
    with _trainable(model, config) as transformer, model.placement.use("transformer"), torch.inference_mode(False), \
            torch.enable_grad():
        lora = TrainableLora(transformer, config.rank, config.alpha, model.device, generator)
        params = lora.parameters()
        # Offloaded: AdamW steps a host copy; the device keeps the factors and their gradients only.
        host = [p.detach().to("cpu", copy=True).requires_grad_(True) for p in params] if config.offload_optimizer \
            else params
        optimizer = torch.optim.AdamW(host, lr=config.learning_rate)
        schedule = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0, end_factor=0.1,
                                                     total_iters=config.steps)
        order: list[int] = []
        saved_at = 0
        lora.attach()
        try:
            for step in range(1, config.steps + 1):
                if should_stop is not None and (why := should_stop()) is not None:
                    raise TrainingStopped(why, step - 1)
                if not order:
                    order = torch.randperm(len(samples), generator=generator).tolist()
                s = samples[order.pop()]
                audio_like = s.audio if s.audio is not None else torch.empty(1, s.audio_frames, _audio_width(model))
                d = draw(sampler, s.video, audio_like, config.first_frame_probability, generator)
                grid = {"frames": s.frames, "height": s.height, "width": s.width, "audio_frames": s.audio_frames,
                        "fps": s.fps}
                value = loss(model, s.video, s.audio, s.text, grid, d).mean()
                if not torch.isfinite(value):
                    raise FloatingPointError(f"the loss became {value.item()} at step {step}; lower learning_rate")
                optimizer.zero_grad(set_to_none=True)
                for p in params:  # the device's gradients, when the optimizer steps host copies
                    p.grad = None
                value.backward()
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                if host is not params:
                    for h, p in zip(host, params):
                        h.grad = None if p.grad is None else p.grad.to("cpu")  # a layer no step reached has none
                optimizer.step()
                if host is not params:
                    with torch.no_grad():
                        for h, p in zip(host, params):
                            p.copy_(h)
                schedule.step()
                losses.append(float(value.detach()))
                checkpoint = None
                if step % config.checkpoint_every == 0 or step == config.steps:
                    export(lora, config.output, {**meta, "steps": step, "steps_planned": config.steps})
                    checkpoint, saved_at = config.output, step
                if on_progress is not None:
                    on_progress(Progress(step, config.steps, losses[-1],
                                         eta_seconds(time.monotonic() - start, step, config.steps), checkpoint))
        except TrainingStopped as exc:
            exc.steps = saved_at
            raise
        finally:
            lora.detach()
            del optimizer
    return Result(config.steps, losses, config.output, time.monotonic() - start)


def _audio_width(model) -> int:
    """Channels of a packed audio token (latent channels x latent mel bins)."""
    pipe = model.pipe
    return pipe.audio_vae.config.latent_channels * (pipe.audio_vae.config.mel_bins // pipe.audio_vae_mel_compression_ratio)


def mean_drop(losses: list[float], window: int = 5) -> float:
    """(first `window` mean - last `window` mean) / first mean: how much the loss fell."""
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    return (first - last) / first if first > 0 and math.isfinite(first) else 0.0
