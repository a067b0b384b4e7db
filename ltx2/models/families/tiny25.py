"""The tiny preset of LTX-2.5 (22B): every component at the real model's geometry, with tiny widths.

What LTX-2.5 is (read from diffusers 0.42.1, transformers 5.23 and ltx-core/ltx-pipelines 1.2.0):

* Text encoder: an LTX fine-tune of Gemma 4 12B (`gemma4-12b-ltx-v1`), transformers' `gemma4_unified`
  (`Gemma4UnifiedForConditionalGeneration`: a text model plus light vision/audio *embedders*, no vision
  tower). Prompts are left-padded to 1024 tokens and start with <bos>. LTX2Pipeline._get_gemma_prompt_embeds
  runs the whole model with `output_hidden_states=True` and stacks every hidden state (embeddings + one per
  layer) into (B, 1024, hidden * (layers + 1)); ltx-core calls the inner `model.model` (no lm_head logits),
  same hidden states. The 12B's width is 3840 (Gemma4UnifiedVisionConfig's `mm_embed_dim` "matches the text
  hidden size"); its layer count is only in the checkpoint's embedded config.
* Text projection ("with-proj"): in ltx-core it ships inside the text-encoder file
  (`text_embedding_projection.*`, FeatureExtractorV2: per-token RMS norm, rescale by sqrt(out/hidden),
  separate video and audio Linear *with bias* to 4096 / 2048). diffusers keeps it in `LTX2TextConnectors`
  (`per_modality_projections=True`, `video_text_proj_in` / `audio_text_proj_in`, `proj_bias=True`), so on
  load those tensors go from the text-encoder file to `connectors`, not `text_encoder`.
* Connectors: separate video (4096 wide) and audio (2048 wide) 1-D transformers with 128 learnable registers;
  the transformer has no caption projection (`use_prompt_embeddings=False`, ltx-core
  `caption_proj_before_connector=True`).
* Transformer (22B, 48 blocks, 32 heads; video 32x128 = 4096, audio 32x64 = 2048; 128 video and 8x16 audio
  input channels; patch 1): as LTX-2.3 plus the 2.5 switches: `gated_attn`/`audio_gated_attn` (per-head
  gates), `cross_attn_mod`/`audio_cross_attn_mod` (AdaLN on text cross-attention), `ff_bias=False` (the
  video FFN has no biases; `audio_ff_bias` stays True in ltx-core's default), `use_prompt_adaln_single=False`
  (the prompt K/V modulation is a static per-layer table, so cross-attention K/V can be cached across steps),
  `use_keyframes_abs_pos_embedding=True` on generated-keyframe checkpoints.
* Video VAE: the same latent space as LTX-2 (128 channels, 32x spatial, 8x temporal, k*8+1 frames). Two
  decoders: the convolutional one (`ltx-2.5-video-vae-conv`, diffusers `AutoencoderKLLTX2Video`, which also
  holds the encoder) and a diffusion decoder (`ltx-2.5-video-vae`, diffusers
  `LTX2VideoDiffusionDecoderModel`): neighbourhood-attention stages upsample the latent to a context volume,
  then stage 5 denoises pixels from pure noise conditioned on it. It takes the (denormalised) latent and a
  generator only; timesteps are linspace(1, 1/steps, steps) built inside, and diffusers' defaults (x0
  prediction, one step, timestep x1000) are "how LTX-2.5 ships". NATTEN on GPU, FlexAttention otherwise.
* Audio VAE: unchanged (16 kHz, 160-sample hop, 64 mel bins, 8 latent channels, 4x: 25 latents a second).
* Vocoder: BigVGAN v2 with bandwidth extension (`LTX2VocoderWithBWE`, as LTX-2.3): 160x to 16 kHz, a mel
  of that (hop 80), a BWE generator 240x, plus a 3x resampled skip: 48 kHz stereo, 1920 samples per audio
  latent frame.
* Duration head (`model_patches/ltx-2.5-duration-head`, diffusers `LTX2DurationHead`): attention-pools the
  *connector outputs* (video 4096 and/or audio 2048 tokens, positive prompt only) to one log-duration;
  `forward` returns seconds, `predict_num_frames(video, audio, frame_rate=, temporal_compression_ratio=8,
  min_seconds=1, max_seconds=20)` clamps and snaps to k*8+1.
* Latent upsamplers: spatial x2 and temporal x2 (`LTX2LatentUpsamplerModel`; temporal: F -> 2F-1).

The tiny preset keeps all of that structure and every rate and ratio; it shrinks widths, depths, the
vocabulary and the decoder's neighbourhood kernels (3x3x3 instead of 7x7 / 5x5 / 11x11x11, so small clips
decode). Weights are random and seeded, so two builds are bit-identical.
"""

from __future__ import annotations

import math

import torch
from diffusers import LTX2VideoTransformer3DModel
from diffusers.models.autoencoders.ltx2_diffusion_decoder import (
    LTX2VideoDiffusionDecoderModel,
    LTX2VideoVaeNeighborhoodAttention,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.duration_head import LTX2DurationHead
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

from .. import tiny
from . import tiny23
from ..tiny import (
    AUDIO_HOP_LENGTH,
    AUDIO_SAMPLE_RATE,
    GEMMA_HIDDEN,
    LATENT_CHANNELS,
)

# Real LTX-2.5 values the tiny preset keeps (the rest of the geometry is tiny.py's, unchanged in 2.5).
VOCODER_RATE = 48_000  # after bandwidth extension
VOCODER_BASE_RATE = 16_000  # the first generator's output, before BWE
SAMPLES_PER_AUDIO_LATENT = VOCODER_RATE // (AUDIO_SAMPLE_RATE // AUDIO_HOP_LENGTH // 4)  # 48 kHz / 25 = 1920

# Tiny widths. Video and audio keep one head count, as ltx-core requires.
HEADS = 2
VIDEO_WIDTH = HEADS * 16  # 4096 in the 22B
AUDIO_WIDTH = HEADS * 8  # 2048 in the 22B
DECODER_KERNEL = (3, 3, 3)  # every neighbourhood kernel of the tiny diffusion decoder
DURATION_PRIOR_SECONDS = 5.0  # the tiny duration head's output bias: a plausible clip length, not 1 s


def build_text_encoder(vocab_size: int) -> Gemma4UnifiedForConditionalGeneration:
    """Gemma 4 unified at tiny width: text model (sliding + full attention layers, as Gemma 4 alternates
    them) and the vision / audio embedders the real file carries, which prompt encoding never uses."""
    specials = tiny._SPECIALS
    config = Gemma4UnifiedConfig(
        # tiny.py's text decoder; full-attention layers' head size is 512 by default in Gemma 4.
        text_config=dict(tiny.gemma_text_config(vocab_size), global_head_dim=16),
        vision_config=dict(patch_size=4, pooling_kernel_size=2, mm_embed_dim=16, mm_posemb_size=32,
                           output_proj_dims=GEMMA_HIDDEN),
        audio_config=dict(audio_embed_dim=16),
        boi_token_id=specials.index("<start_of_image>"),
        eoi_token_id=specials.index("<end_of_image>"),
        image_token_id=specials.index("<image_soft_token>"),
        # The tiny vocabulary has no video or audio placeholders; text prompts never need them.
        video_token_id=None,
        boa_token_id=None,
        eoa_token_index=None,
        audio_token_id=None,
    )
    return Gemma4UnifiedForConditionalGeneration(config).eval()


def build_connectors() -> LTX2TextConnectors:
    """2.3's connectors (the projection before them, per modality, biased; gated attention), unchanged."""
    return tiny23.build_connectors()


def build_transformer() -> LTX2VideoTransformer3DModel:
    """tiny-2.3's transformer (gated attention, AdaLN on the text cross-attention, no caption projection;
    tiny.py's 128/128 channels, patches and audio rates) with 2.5's own switches."""
    config = tiny23._config_of(tiny23.build_transformer)
    config.update(
        ff_bias=False,  # bias-free video FFN (2.5); the audio FFN keeps its biases
        use_prompt_adaln_single=False,  # static per-layer prompt K/V table: cacheable cross-attention K/V
        use_keyframes_abs_pos_embedding=True,  # generated-keyframe tokens' learned embedding
    )
    assert (config["num_attention_heads"] * config["attention_head_dim"], config["audio_num_attention_heads"]
            * config["audio_attention_head_dim"]) == (VIDEO_WIDTH, AUDIO_WIDTH)
    return LTX2VideoTransformer3DModel(**config)


def build_video_vae():
    """The convolutional video VAE (encoder + conv decoder): LTX-2's latent space, kept in 2.5."""
    return tiny.build_video_vae()


def build_audio_vae():
    return tiny.build_audio_vae()


def build_vocoder() -> LTX2VocoderWithBWE:
    """2.3's BigVGAN v2 + bandwidth extension to 48 kHz, unchanged: 160x to 16 kHz (100 mel frames a
    second), then 240x from a hop-80 mel to 48 kHz."""
    return tiny23.build_vocoder()


def build_components(seed: int = 0) -> dict:
    """All pipeline components of the tiny LTX-2.5, each seeded on its own so adding one changes no other.

    The keys are LTX2Pipeline's; `duration_head`, the diffusion decoder and the upsamplers come from their
    own builders (LTX2Pipeline(**components, duration_head=build_duration_head(seed), processor=None,
    prompt_enhancer=None))."""
    # tiny.py's tokenizer: Gemma 4 keeps Gemma's <pad>=0, <eos>=1, <bos>=2 and left padding.
    return tiny.build_components(seed=seed, builders=BUILDERS)


BUILDERS = {
    "text_encoder": build_text_encoder,  # needs the tokenizer's size: bound in build_components
    "connectors": build_connectors,
    "transformer": build_transformer,
    "vae": build_video_vae,
    "audio_vae": build_audio_vae,
    "vocoder": build_vocoder,
}
# Seeds of the separate builders, after every pipeline component's (as in tiny.py: the spatial upsampler
# at +len(BUILDERS), the distilled LoRA at +1 after it).
_UPSAMPLER, _LORA, _DECODER, _DURATION, _TEMPORAL = range(len(BUILDERS), len(BUILDERS) + 5)


def build_diffusion_decoder(seed: int = 0) -> LTX2VideoDiffusionDecoderModel:
    """The diffusion video decoder at tiny width: the real 128 latent channels, stage strides (1,2,2),
    (2,1,1), (2,2,2), (2,2,2) and 4x4 pixel patches (32x spatial, 8x temporal with the causal first frame),
    the real channel reductions, x0 prediction in one step. Its neighbourhood attention runs through
    `WindowedNeighborhoodAttnProcessor` (exact NATTEN windows, fast on CPU at these sizes); put diffusers'
    own processor back with `set_attn_processor` to compare.

    Each stage needs a grid at least its kernel (3x3x3): latents of 3x3 or more, and 2 or more latent
    frames (9+ frames), since diffusers pads nothing (ltx-core edge-pads small latents)."""

    def build() -> LTX2VideoDiffusionDecoderModel:
        return LTX2VideoDiffusionDecoderModel(
            out_channels=3,
            latent_channels=LATENT_CHANNELS,
            patch_size=4,
            decoder_head_dim=8,
            decoder_stage_channels=(64, 32, 16, 16, 8),
            decoder_stage_depths=(1, 1, 1, 1, 1),
            decoder_stage_kernels=(DECODER_KERNEL,) * 4,
            decoder_upsample_strides=((1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2)),
            decoder_upsample_channel_reductions=(2, 2, 1, 2),
            decoder_stage5_kernel=DECODER_KERNEL,
            decoder_t_emb_dim=16,
            decoder_timestep_scale_multiplier=1000.0,
            decoder_model_output_type="x0",
            decoder_num_inference_steps=1,
            spatial_compression_ratio=32,
            temporal_compression_ratio=8,
        )

    decoder = tiny.seeded(build, seed + _DECODER)
    for module in decoder.modules():
        if isinstance(module, LTX2VideoVaeNeighborhoodAttention):
            module.set_processor(WindowedNeighborhoodAttnProcessor())
    return decoder


def build_duration_head(seed: int = 0) -> LTX2DurationHead:
    """The duration head at tiny width, reading the tiny connectors' video and audio outputs. Its output
    bias is set so that it predicts clips of about `DURATION_PRIOR_SECONDS` (a random head says ~1 s,
    which every clamp would turn into the same frame count), varying with the prompt."""

    def build() -> LTX2DurationHead:
        head = LTX2DurationHead(video_cross_attention_dim=VIDEO_WIDTH, audio_cross_attention_dim=AUDIO_WIDTH,
                                pooler_hidden_dim=16, num_queries=1, num_pooler_heads=2, mlp_hidden_dim=16)
        with torch.no_grad():
            head.mlp_out.bias.fill_(math.log(DURATION_PRIOR_SECONDS))
        return head

    return tiny.seeded(build, seed + _DURATION)


def build_upsampler(seed: int = 0) -> LTX2LatentUpsamplerModel:
    """The x2 spatial latent upsampler: tiny.py's (the same network; seeded at `seed + _UPSAMPLER`)."""
    assert len(tiny.BUILDERS) == _UPSAMPLER
    return tiny.build_upsampler(seed=seed)


def build_temporal_upsampler(seed: int = 0) -> LTX2LatentUpsamplerModel:
    """The x2 temporal latent upsampler at tiny width: F latent frames in, 2F - 1 out (the causal first
    frame stays one), same size."""
    return tiny.seeded(lambda: LTX2LatentUpsamplerModel(
        in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3,
        spatial_upsample=False, temporal_upsample=True), seed + _TEMPORAL)


def build_distilled_lora(transformer: LTX2VideoTransformer3DModel, seed: int = 0, rank: int = 4,
                         magnitude: float = 0.1) -> dict[str, torch.Tensor]:
    """A tiny stand-in for `ltx-2.5-22b-distilled-lora-450-bf16.safetensors`: tiny.py's builder (every
    linear of the transformer blocks, official key style), whose generator seed is `seed + _LORA`."""
    assert len(tiny.BUILDERS) + 1 == _LORA  # tiny.py seeds its LoRA after its six components, as here
    return tiny.build_distilled_lora(transformer, seed=seed, rank=rank, magnitude=magnitude)


class WindowedNeighborhoodAttnProcessor:
    """Neighbourhood attention for the diffusion decoder by gathering each query's window.

    The window is NATTEN's (and diffusers' FlexAttention mask's): `kernel` positions per axis, centred
    where possible and shifted inward at the borders. Gathering the kernel's keys for every query costs
    tokens x kernel volume, where FlexAttention without torch.compile materialises tokens^2 scores: at
    the tiny preset's sizes this is ~20x faster on CPU. Too much memory for the real 11x11x11 kernel.
    """

    def __call__(self, attn: LTX2VideoVaeNeighborhoodAttention, hidden_states: torch.Tensor,
                 block_mask=None) -> torch.Tensor:
        batch_size, num_frames, height, width, _ = hidden_states.shape
        query, key, value = attn.project_qkv(hidden_states)  # (B, T, H, W, heads, head_dim), query scaled
        t, h, w = (_window(size, min(kernel, size), hidden_states.device)
                   for size, kernel in zip((num_frames, height, width), attn.kernel_size))
        index = (slice(None), t[:, None, None, :, None, None], h[None, :, None, None, :, None],
                 w[None, None, :, None, None, :])
        keys = key[index].flatten(4, 6)  # (B, T, H, W, window, heads, head_dim)
        values = value[index].flatten(4, 6)
        scores = torch.einsum("bthwnd,bthwknd->bthwnk", query, keys)
        probs = scores.float().softmax(dim=-1).to(values.dtype)
        out = torch.einsum("bthwnk,bthwknd->bthwnd", probs, values)
        return attn.to_out[0](out.reshape(batch_size, num_frames, height, width, -1))


def _window(size: int, kernel: int, device: torch.device) -> torch.Tensor:
    """(size, kernel) indices of each position's window along one axis."""
    start = (torch.arange(size, device=device) - kernel // 2).clamp(0, size - kernel)
    return start[:, None] + torch.arange(kernel, device=device)[None, :]
