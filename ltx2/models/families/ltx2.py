"""LTX-2 19B (LTX-2.0): the original generation. Single files bundling every component but Gemma 3."""

from __future__ import annotations

from .base import DEV_DEFAULTS, DISTILLED_DEFAULTS, Family, OfficialFiles, TinyPreset


def _tiny():  # diffusers is imported only when a tiny preset is asked for
    from .. import tiny

    return tiny


FAMILY = Family(
    name="ltx-2",
    title="LTX-2 19B",
    distilled=DISTILLED_DEFAULTS,
    dev=DEV_DEFAULTS,  # ltx-pipelines' LTX_2_PARAMS: 40 steps, STG on block 29
    image_crf=33,  # ltx-pipelines' DEFAULT_IMAGE_CRF
    vocoder_rate=24_000,  # HiFi-GAN, 240x from 100 mel frames a second
    tiny=TinyPreset(name="tiny", components=lambda seed: _tiny().build_components(seed=seed),
                    upsampler=lambda seed: _tiny().build_upsampler(seed=seed),
                    distilled_lora=lambda transformer, seed: _tiny().build_distilled_lora(transformer, seed=seed)),
    files=OfficialFiles(repo="Lightricks/LTX-2", distilled="ltx-2-19b-distilled.safetensors",
                        dev="ltx-2-19b-dev.safetensors",
                        checkpoints=("ltx-2-19b-distilled-fp8.safetensors",  # the smallest and fastest
                                     "ltx-2-19b-distilled.safetensors", "ltx-2-19b-dev.safetensors",
                                     "ltx-2-19b-dev-fp8.safetensors"),
                        upsampler="ltx-2-spatial-upscaler-x2-1.0.safetensors",
                        distilled_lora="ltx-2-19b-distilled-lora-384.safetensors",
                        gemma_repo="google/gemma-3-12b-it-qat-q4_0-unquantized", camera_loras=True),
    # The caption projection lives in the 19B's transformer; later families project before the connectors.
    lora_markers=frozenset({"caption_projection"}),
)
