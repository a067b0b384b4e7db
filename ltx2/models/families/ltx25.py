"""LTX-2.5 (22B), Lightricks' recommended model: one file per component, Gemma 4 with the projection.

What changes from LTX-2.3, and what the tiny preset keeps of it (families/tiny25.py says more):
- the text encoder is Gemma 4 12B fine-tuned for LTX (`gemma4-12b-ltx-v1`), its text projection
  (feature extractor V2) shipped in the same file;
- the transformer's prompt modulation is a static per-layer table (no prompt AdaLN: the
  cross-attention keys and values do not depend on the step) and its video feed-forward has no bias;
- the video VAE has two decoders: a diffusion decoder (neighbourhood attention, the default when
  its file is there) and the convolutional one;
- a duration head predicts a clip's length from the prompt;
- a distilled model's first stage samples with the ancestral Euler sampler, and a conditioning
  image is re-compressed at CRF 18 (ltx-pipelines' LTX_2_4_PARAMS, which 2.5 inherits: 30 dev steps,
  STG on block 28).
The audio VAE, the 48 kHz vocoder and the latent geometry are 2.3's.
"""

from __future__ import annotations

from .base import DISTILLED_DEFAULTS, Family, OfficialFiles, TinyPreset, dev_defaults

VOCODER_RATE = 48_000


def _tiny():  # the builders import diffusers and transformers' Gemma 4: only when the preset is asked for
    from . import tiny25

    return tiny25


def _extras(seed: int) -> dict:
    tiny25 = _tiny()
    return {"duration_head": tiny25.build_duration_head(seed), "diffusion_decoder": tiny25.build_diffusion_decoder(seed)}


FAMILY = Family(
    name="ltx-2.5",
    title="LTX-2.5 22B",
    distilled=DISTILLED_DEFAULTS,
    dev=dev_defaults(steps=30, stg_block=28),  # LTX_2_4_PARAMS
    image_crf=18,  # LTX_2_4_IMAGE_CRF
    vocoder_rate=VOCODER_RATE,
    ancestral_first_stage=True,
    tiny=TinyPreset(name="tiny-2.5", components=lambda seed: _tiny().build_components(seed),
                    upsampler=lambda seed: _tiny().build_upsampler(seed),
                    distilled_lora=lambda transformer, seed: _tiny().build_distilled_lora(transformer, seed),
                    extras=_extras,
                    temporal_upsampler=lambda seed: _tiny().build_temporal_upsampler(seed)),
    files=OfficialFiles(
        repo="Lightricks/LTX-2.5",
        distilled="diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
        dev="diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors",
        checkpoints=("diffusion_models/ltx-2.5-22b-distilled-transformer-bf16.safetensors",
                     "diffusion_models/ltx-2.5-22b-dev-transformer-bf16.safetensors"),
        upsampler="latent_upscale_models/ltx-2.5-latent-spatial-upscaler-x2-bf16-1.0.safetensors",
        distilled_lora="loras/ltx-2.5-22b-distilled-lora-450-bf16.safetensors",
        parts=("text_encoders/gemma4-12b-with-proj-ltx-2.5-bf16.safetensors",
               "vae/ltx-2.5-video-vae-bf16.safetensors", "vae/ltx-2.5-video-vae-conv-bf16.safetensors",
               "vae/ltx-2.5-audio-vae-bf16.safetensors", "model_patches/ltx-2.5-duration-head-bf16.safetensors"),
        gemma_repo=None,  # Gemma 4 comes with the model
        temporal_upsampler="latent_upscale_models/ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0.safetensors"),
    # Attention gates as 2.3, but no prompt AdaLN: a LoRA of 2.3's prompt AdaLN cannot fit.
    lora_markers=frozenset({"to_gate_logits"}),
)
