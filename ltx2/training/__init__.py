"""Training a LoRA on the loaded model, as Lightricks' ltx-trainer 1.2.0 trains one.

- `dataset`: a zip or folder of clips with a caption each, checked before anything is decoded, decoded in
  the sandbox, fitted to one resolution bucket, and encoded once (latents and prompt embeddings, cached).
- `objective`: flow matching (velocity target = noise - x0) and ltx-trainer's timestep sampler.
- `adapters`: trainable low-rank side paths on ltx-trainer's default targets, and their export in the
  trainer's / ComfyUI key style, which `loras` reads.
- `loop`: AdamW, the linear schedule, gradient clipping and checkpointing; progress, checkpoints, cancel.
- `memory`: what a training needs, and the low-VRAM choice.

Nothing below this package imports it (models, media and pipelines know nothing of training).
"""

from .loop import TrainingConfig, TrainingStopped, train

__all__ = ["TrainingConfig", "TrainingStopped", "train"]
