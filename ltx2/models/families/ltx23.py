"""LTX-2.3 (22B): single files like the 19B's, with a new network and a 48 kHz vocoder.

What changes from LTX-2 19B, and what the tiny preset keeps of it:
- the transformer gates each attention's heads (`to_gate_logits`) and modulates its cross-attention
  with the timestep (cross-attention AdaLN) and the prompt with sigma (the prompt AdaLN);
- the text projection moves out of the transformer, before the connectors (ltx-core's feature
  extractor V2: per-token RMS norm, then one biased projection per modality straight to the
  transformer's widths), and the connectors gate their attention too;
- the vocoder is BigVGAN v2 (snake activations, anti-aliased) followed by a bandwidth extension
  from 16 to 48 kHz;
- dev runs 30 steps with STG on block 28 (ltx-pipelines' LTX_2_3_PARAMS).
Gemma 3 12B, both VAEs' geometry, the audio latents and the x2 upsampler's shape are the 19B's. 2.3 also
publishes a x1.5 spatial upsampler (ltx-core's rational resampler) and a x2 temporal one.
"""

from __future__ import annotations

from .base import DISTILLED_DEFAULTS, Family, OfficialFiles, TinyPreset, dev_defaults

VOCODER_RATE = 48_000


def _tiny():  # the builders import diffusers: only when a tiny preset is asked for
    from . import tiny23

    return tiny23


def _tiny_upsampler(seed: int):
    from .. import tiny

    return tiny.build_upsampler(seed=seed)


FAMILY = Family(
    name="ltx-2.3",
    title="LTX-2.3 22B",
    distilled=DISTILLED_DEFAULTS,
    dev=dev_defaults(steps=30, stg_block=28),  # ltx-pipelines' LTX_2_3_PARAMS
    image_crf=33,  # DEFAULT_IMAGE_CRF: 2.3 keeps 2.0's
    vocoder_rate=VOCODER_RATE,
    tiny=TinyPreset(name="tiny-2.3", components=lambda seed: _tiny().build_components(seed),
                    upsampler=_tiny_upsampler,
                    distilled_lora=lambda transformer, seed: _tiny().build_distilled_lora(transformer, seed),
                    upsampler_x1_5=lambda seed: _tiny().build_upsampler_x1_5(seed),
                    temporal_upsampler=lambda seed: _tiny().build_temporal_upsampler(seed)),
    files=OfficialFiles(repo="Lightricks/LTX-2.3", distilled="ltx-2.3-22b-distilled-1.1.safetensors",
                        dev="ltx-2.3-22b-dev.safetensors",
                        checkpoints=("ltx-2.3-22b-distilled-1.1.safetensors", "ltx-2.3-22b-dev.safetensors"),
                        upsampler="ltx-2.3-spatial-upscaler-x2-1.1.safetensors",
                        distilled_lora="ltx-2.3-22b-distilled-lora-384-1.1.safetensors",
                        gemma_repo="google/gemma-3-12b-it-qat-q4_0-unquantized",
                        upsampler_x1_5="ltx-2.3-spatial-upscaler-x1.5-1.0.safetensors",
                        temporal_upsampler="ltx-2.3-temporal-upscaler-x2-1.0.safetensors"),
    # Per-head attention gates and the prompt AdaLN (ltx-core `prompt_adaln_single`, diffusers `prompt_adaln`).
    lora_markers=frozenset({"to_gate_logits", "prompt_adaln"}),
)
