"""The `random-22b` preset: LTX-2.5 (22B) and Gemma 4 12B at their real sizes, with seeded random weights.

random-19b's counterpart for LTX-2.5 (ltx2.models.random19b says why a random model at the real
geometry costs what the real one costs); it reuses that module's drawing, materializing, memory
placement and byte counting, and differs only in what it builds on `meta`:

- Transformer (22B) and text connectors: the sizes of LTX-2.3's own `config` metadata
  (`ltx23_22b_config.json`, the `config` of tests/data/ltx23_22b_layout.json: 48 blocks, 32 heads
  x 128 video and x 64 audio, connectors 8 layers of 32 heads with the per-modality projection),
  through the checkpoint loader's config translation, plus 2.5's switches (`LTX25_SWITCHES`: no
  prompt AdaLN, bias-free video feed-forward, the keyframe position embedding), as the tiny-2.5
  preset sets them (families/tiny25.py, which describes LTX-2.5).
- bf16 throughout, as the 2.5 files are. `fp8_blocks=True` quantizes random-19b's FP8 block set
  (blocks 1-42's attention and feed-forward linears) for FP8 experiments.
- Video VAE: the convolutional one, at LTX-2 19B's config (random19b's). Audio VAE and the
  bandwidth-extension vocoder (48 kHz): the 22B config's, which are diffusers' `LTX2VocoderWithBWE`
  defaults except the base generator's final clamp. The vocoder is float32, as the loader keeps
  LTX-2.3's; its computed filters are real, its STFT and mel bases (file tensors) zeros.
- Extras: the diffusion video decoder (`LTX2VideoDiffusionDecoderModel`) and the duration head
  (`LTX2DurationHead`) at diffusers' defaults, which are the shipped sizes; the x2 spatial latent
  upsampler at the official size, as random-19b's.
- Gemma 4 12B (`Gemma4UnifiedForConditionalGeneration`: text model, vision and audio embedders, no
  vision tower). Its config is not public here; transformers' `Gemma4UnifiedConfig` defaults are the
  E2B's text model (2304 wide, 30 layers) with the 12B's vision embedder (`mm_embed_dim` 3840, "the
  text hidden size"). Known: hidden 3840. Assumed, from Gemma 3 12B: 48 layers (5 sliding-window
  layers then one global, the last global), 16 query heads, 8 key/value heads of 256, MLP 15,360;
  from transformers' Gemma 4 defaults: global layers' heads of 512, vocabulary 262,144 rows, window
  1024, no k=v sharing, embedding tied to the output head. That is 12.19 B parameters.
- `layers`: fewer transformer blocks, Gemma layers and connector layers (up to its 8) at the same
  widths. The connectors' projections read `layers + 1` stacked Gemma states, as the real ones read 49.
- The tokenizer is the tiny preset's, as random-19b's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from . import configs, fp8, random19b
from .loading import build_empty
from .random19b import meta_upsampler, place_and_build, weight_bytes  # noqa: F401 (weight_bytes: the interface)

NAME = "random-22b"
FAMILY = "ltx-2.5"
FULL_LAYERS = 48  # transformer blocks of the 22B; Gemma 4 12B's decoder layers assumed the same (Gemma 3 12B's)
CONFIG = json.loads((Path(__file__).parent / "ltx23_22b_config.json").read_text())
CONNECTOR_LAYERS = CONFIG["transformer"]["connector_num_layers"]  # 8

# What LTX-2.5's transformer sets beyond 2.3's config (families/tiny25.py's build_transformer; a test holds them equal).
LTX25_SWITCHES = {"ff_bias": False, "use_prompt_adaln_single": False, "use_keyframes_abs_pos_embedding": True}

# Gemma 4 12B: the text model's sizes (see the module docstring for which are assumed).
GEMMA_HIDDEN = 3840
GEMMA_VOCAB = 262_144


def gemma4_12b_config(layers: int = FULL_LAYERS):
    from transformers import Gemma4UnifiedConfig

    pattern = ["sliding_attention"] * 5 + ["full_attention"]
    types = [pattern[i % 6] for i in range(layers - 1)] + ["full_attention"]  # Gemma 4 ends on a global layer
    return Gemma4UnifiedConfig(
        text_config=dict(
            vocab_size=GEMMA_VOCAB, hidden_size=GEMMA_HIDDEN, intermediate_size=15_360, num_hidden_layers=layers,
            num_attention_heads=16, num_key_value_heads=8, head_dim=256, layer_types=types,
            pad_token_id=0, eos_token_id=1, bos_token_id=2,
        ),
        vision_config={}, audio_config={},  # the embedders at their defaults: the 12B's (3840 wide)
    )


def component_configs(layers: int = FULL_LAYERS) -> dict[str, dict]:
    """diffusers configs of the transformer, connectors, audio VAE and vocoder from the 22B config with
    `layers` blocks (and up to 8 connector layers), and the 19B's video VAE."""
    config = json.loads(json.dumps(CONFIG))
    t = config["transformer"]
    t["num_layers"] = layers
    t["connector_num_layers"] = min(CONNECTOR_LAYERS, layers)
    vae = random19b.component_configs(layers)["vae"]
    audio = configs.audio_vae_config(config)
    video_width = t["num_attention_heads"] * t["attention_head_dim"]
    return {
        "transformer": {**configs.transformer_config(config, vae, audio), **LTX25_SWITCHES},
        "connectors": configs.connectors_config(config, (video_width, t["caption_channels"] * (layers + 1))),
        "vae": vae,
        "audio_vae": audio,
        "vocoder": configs.vocoder_config(config, audio["mel_bins"]),
    }


def meta_extras() -> dict[str, nn.Module]:
    """The duration head and the diffusion video decoder at diffusers' defaults (the shipped sizes), on meta."""
    from accelerate import init_empty_weights
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import LTX2VideoDiffusionDecoderModel
    from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead

    with init_empty_weights(include_buffers=False):
        return {"duration_head": LTX2DurationHead(), "diffusion_decoder": LTX2VideoDiffusionDecoderModel()}


def build_meta(layers: int = FULL_LAYERS, text_encoder_dtype: str = "bf16", fp8_compute: str = "upcast",
               fp8_blocks: bool = False) -> dict[str, nn.Module]:
    """Every component and extra on the `meta` device (shapes and dtypes, no memory); what `load`
    materializes and what the memory model counts. `fp8_blocks`: random-19b's FP8 block linears."""
    from accelerate import init_empty_weights
    from transformers import Gemma4UnifiedForConditionalGeneration

    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    random19b.check_layers(layers, NAME)
    cfgs = component_configs(layers)
    modules = {name: build_empty(name, cfg) for name, cfg in cfgs.items() if name != "vocoder"}
    with init_empty_weights(include_buffers=False):  # its filters and STFT bases computed, as ltx-core does
        modules["vocoder"] = LTX2VocoderWithBWE.from_config(cfgs["vocoder"])
    if fp8_blocks:
        fp8.swap_in_fp8_linears(modules["transformer"], random19b.fp8_layer_names(modules["transformer"], layers),
                                compute=fp8_compute, has_input_scale=lambda _: True)
    with init_empty_weights(include_buffers=False):  # buffers (rotary, scalars) computed for real, on the CPU
        gemma = Gemma4UnifiedForConditionalGeneration(gemma4_12b_config(layers))
    gemma.tie_weights()
    if text_encoder_dtype == "fp8":
        from .text_encoder import gemma_linear_names

        fp8.swap_in_fp8_linears(gemma, gemma_linear_names(gemma), compute=fp8_compute, has_input_scale=set())
    modules["text_encoder"] = gemma
    return {**modules, **meta_extras()}


def load(device: torch.device, dtype: torch.dtype, *, layers: int = FULL_LAYERS, seed: int = 0,
         memory_policy: str = "auto", fp8_compute: str = "auto", text_encoder_dtype: str = "auto",
         workspace_bytes: int | None = None, upsampler: bool = False, vae_decoder: str = "auto",
         fp8_blocks: bool = False) -> tuple[dict, dict, str]:
    """random-19b's `load` for LTX-2.5: components (with `duration_head`, `diffusion_decoder` unless
    `vae_decoder` is "conv", and with `upsampler` the x2 upsampler), the report for /health, and the
    memory policy."""
    compute = fp8.resolve_compute(fp8_compute, device)
    modules = build_meta(layers, "bf16", compute, fp8_blocks=fp8_blocks)
    if vae_decoder == "conv":  # never used: not built
        del modules["diffusion_decoder"]
    # The BWE vocoder runs in float32 whatever `dtype` is, as the loader keeps LTX-2.3's (ltx-core does):
    # drawn here, on the host (it is small); the build moves it where the policy rests it.
    random19b.materialize(modules["vocoder"], random19b._Draws(torch.device("cpu"), seed), torch.device("cpu"),
                          torch.float32, 1 << 24)
    if upsampler:
        modules["upsampler"] = meta_upsampler()
    about = {"name": NAME, "family": FAMILY,
             "kind_source": f"{NAME} mirrors the distilled bf16 files" + (" (FP8 blocks)" if fp8_blocks else "")}
    return place_and_build(modules, device, dtype, compute=compute, layers=layers, seed=seed,
                           memory_policy=memory_policy, text_encoder_dtype=text_encoder_dtype,
                           workspace_bytes=workspace_bytes, about=about)
