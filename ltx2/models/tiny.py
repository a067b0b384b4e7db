"""The tiny preset: every LTX-2 component at the real model's geometry, with tiny widths.

What is kept from LTX-2 19B (so token counts, frame counts and audio/video alignment are the real
ones): the video VAE's 32x spatial / 8x temporal compression and 128 latent channels, the
transformer's patch sizes and 128 video / 128 audio input channels, the audio VAE's 16 kHz rate,
160-sample hop, 64 mel bins, 8 latent channels and 4x compression, the vocoder's 240x upsampling to
24 kHz stereo, Gemma 3's architecture (text + vision tower) and the 1024-token prompt length.
What is shrunk: widths, layer counts, the vocabulary. Weights are random, seeded, so two builds
are bit-identical.
"""

from __future__ import annotations

import string

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GemmaTokenizer

from . import tiny_vocab
from .geometry import video_vae_compression

# Real LTX-2 values that the tiny preset must not change.
LATENT_CHANNELS = 128
AUDIO_SAMPLE_RATE = 16_000
AUDIO_HOP_LENGTH = 160
AUDIO_MEL_BINS = 64
AUDIO_LATENT_CHANNELS = 8
VOCODER_RATE = 24_000
PROMPT_TOKENS = 1024

# Tiny widths.
GEMMA_HIDDEN = 32
GEMMA_LAYERS = 2

_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def build_tokenizer() -> GemmaTokenizer:
    """A Gemma tokenizer built offline: Gemma's special tokens, byte fallback, and an English vocabulary
    of whole words, so that a prompt costs about as many tokens as on the real Gemma 3 (~1.3 per word).

    It is a real `GemmaTokenizer` (same normalisation, "▁" word boundaries, no prefix space, left
    padding as the pipeline asks), with ~33k entries instead of 262k. Each word of `tiny_vocab.WORDS`
    (and its capitalised form) is built letter by letter from its start, with and without the leading
    "▁". Merge ranks come in tiers, so that a word's own chain always wins over pieces inside it:
    "▁word" chains, then capitalised word starts (a text's first word has no "▁"), then the lowercase
    words and `tiny_vocab.PIECES` as pieces of words outside the list. Anything else falls back to
    single characters, then bytes.
    """
    vocab: dict[str, int] = {}
    for tok in _SPECIALS:
        vocab[tok] = len(vocab)
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for ch in "▁" + string.ascii_letters + string.digits + string.punctuation:
        vocab.setdefault(ch, len(vocab))
    merges: dict[tuple[str, str], None] = {}  # ordered: the rank of a merge is its position

    def chain(text: str) -> None:
        for end in range(2, len(text) + 1):
            vocab.setdefault(text[:end], len(vocab))
            merges.setdefault((text[:end - 1], text[end - 1]), None)

    words = list(dict.fromkeys(tiny_vocab.WORDS.split()))
    capitalised = [w[0].upper() + w[1:] for w in words]
    for word in words + capitalised:
        chain("▁" + word)
    for punct in "\"'(-":
        chain("▁" + punct)
    for word in capitalised + words + tiny_vocab.PIECES.split():
        chain(word)
    tok = GemmaTokenizer(vocab=vocab, merges=list(merges), add_bos_token=True)  # Gemma prompts start with <bos>
    tok.model_max_length = PROMPT_TOKENS
    tok.padding_side = "left"
    return tok


def gemma_text_config(vocab_size: int) -> dict:
    """The tiny Gemma's text decoder (Gemma 3 here, Gemma 4 in families/tiny25.py): one sliding and one
    full attention layer, Gemma's special token ids."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=GEMMA_HIDDEN,
        intermediate_size=64,
        num_hidden_layers=GEMMA_LAYERS,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=PROMPT_TOKENS * 2,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )


def build_text_encoder(vocab_size: int) -> Gemma3ForConditionalGeneration:
    config = Gemma3Config(
        text_config=dict(gemma_text_config(vocab_size), query_pre_attn_scalar=16),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
            vision_use_head=False,
        ),
        mm_tokens_per_image=4,
        boi_token_index=_SPECIALS.index("<start_of_image>"),
        eoi_token_index=_SPECIALS.index("<end_of_image>"),
        image_token_index=_SPECIALS.index("<image_soft_token>"),
    )
    model = Gemma3ForConditionalGeneration(config)
    return model.eval()


def build_connectors() -> LTX2TextConnectors:
    return LTX2TextConnectors(
        caption_channels=GEMMA_HIDDEN,
        text_proj_in_factor=GEMMA_LAYERS + 1,  # every hidden state incl. the embeddings, as in LTX-2
        video_connector_num_attention_heads=2,
        video_connector_attention_head_dim=GEMMA_HIDDEN // 2,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=128,
        audio_connector_num_attention_heads=2,
        audio_connector_attention_head_dim=GEMMA_HIDDEN // 2,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=128,
        connector_rope_base_seq_len=4096,
        rope_theta=10000.0,
        rope_double_precision=True,
        causal_temporal_positioning=False,
        rope_type="split",
        per_modality_projections=False,
        proj_bias=False,
    )


def build_transformer() -> LTX2VideoTransformer3DModel:
    return LTX2VideoTransformer3DModel(
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=16,
        cross_attention_dim=32,
        vae_scale_factors=(8, 32, 32),
        audio_in_channels=AUDIO_LATENT_CHANNELS * (AUDIO_MEL_BINS // 4),
        audio_out_channels=AUDIO_LATENT_CHANNELS * (AUDIO_MEL_BINS // 4),
        audio_patch_size=1,
        audio_patch_size_t=1,
        audio_num_attention_heads=2,
        audio_attention_head_dim=8,
        audio_cross_attention_dim=16,
        audio_scale_factor=4,
        audio_sampling_rate=AUDIO_SAMPLE_RATE,
        audio_hop_length=AUDIO_HOP_LENGTH,
        num_layers=2,
        caption_channels=GEMMA_HIDDEN,
        rope_double_precision=True,
        rope_type="split",
        cross_attn_timestep_scale_multiplier=1000,
    )


def build_video_vae() -> AutoencoderKLLTX2Video:
    config = dict(
        in_channels=3,
        out_channels=3,
        latent_channels=LATENT_CHANNELS,
        block_out_channels=(8, 16, 16, 32),
        decoder_block_out_channels=(8, 16, 32),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, True, True),
        decoder_spatio_temporal_scaling=(True, True, True),
        decoder_inject_noise=(False, False, False, False),
        downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
        upsample_type=("spatiotemporal", "spatiotemporal", "spatiotemporal"),
        upsample_residual=(True, True, True),
        upsample_factor=(2, 2, 2),
        timestep_conditioning=False,
        patch_size=4,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
        encoder_spatial_padding_mode="zeros",
        decoder_spatial_padding_mode="reflect",
    )
    # diffusers would derive 64x/16x from this config (it counts every scaling block as both
    # spatial and temporal); the true ratios come from the block types.
    spatial, temporal = video_vae_compression(config)
    vae = AutoencoderKLLTX2Video(**config, spatial_compression_ratio=spatial, temporal_compression_ratio=temporal)
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    return vae


def build_audio_vae() -> AutoencoderKLLTX2Audio:
    vae = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        ch_mult=(1, 2, 4),  # three levels = two 2x downsamples = the real 4x latent compression
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=256,
        latent_channels=AUDIO_LATENT_CHANNELS,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=AUDIO_SAMPLE_RATE,
        mel_hop_length=AUDIO_HOP_LENGTH,
        is_causal=True,
        mel_bins=AUDIO_MEL_BINS,
        double_z=True,
    )
    # diffusers sizes the per-channel statistics by `base_channels` (128 in the real model, which
    # happens to equal latent_channels * latent mel bins, the packed width they normalise).
    packed = AUDIO_LATENT_CHANNELS * (AUDIO_MEL_BINS // 4)
    vae.register_buffer("latents_mean", torch.zeros(packed), persistent=True)
    vae.register_buffer("latents_std", torch.ones(packed), persistent=True)
    return vae


def build_vocoder() -> LTX2Vocoder:
    return LTX2Vocoder(
        in_channels=2 * AUDIO_MEL_BINS,  # stereo mel, flattened
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[16, 15, 8, 4, 4],  # the real kernels: with these, exactly 240 samples per mel frame
        upsample_factors=[6, 5, 2, 2, 2],  # 240x: 100 mel frames/s -> 24 kHz, as in LTX-2
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3]],
        leaky_relu_negative_slope=0.1,
        output_sampling_rate=VOCODER_RATE,
    )


def build_upsampler(seed: int = 0) -> LTX2LatentUpsamplerModel:
    """The x2 spatial latent upsampler at tiny width: the real 128 latent channels in and out."""
    torch.manual_seed(seed + len(BUILDERS))  # after every pipeline component's seed: changes none of them
    model = LTX2LatentUpsamplerModel(in_channels=LATENT_CHANNELS, mid_channels=32, num_blocks_per_stage=1, dims=3,
                                     spatial_upsample=True, temporal_upsample=False, use_rational_resampler=False)
    return model.eval().requires_grad_(False)


def build_distilled_lora(transformer: LTX2VideoTransformer3DModel, seed: int = 0, rank: int = 4,
                         magnitude: float = 0.1) -> dict[str, torch.Tensor]:
    """A tiny stand-in for `ltx-2-19b-distilled-lora-384.safetensors`, so the dev two-stage pipeline runs
    on CPU: a random rank-`rank` update of every linear in the transformer blocks, keyed as the
    official file is (Lightricks' trainer style, `diffusion_model.<ltx-core name>.lora_A.weight` /
    `.lora_B.weight`, no alpha) and bound through the same name mapping as any LoRA file."""
    from . import layout

    gen = torch.Generator().manual_seed(seed + len(BUILDERS) + 1)  # after the upsampler's seed
    tensors = {}
    for name, module in transformer.named_modules():
        if not (isinstance(module, torch.nn.Linear) and name.startswith("transformer_blocks.")):
            continue
        stem = layout.file_key("transformer", name + ".weight").removesuffix(".weight").removeprefix("model.")
        tensors[f"{stem}.lora_A.weight"] = torch.randn(rank, module.in_features, generator=gen) * magnitude
        tensors[f"{stem}.lora_B.weight"] = torch.randn(module.out_features, rank, generator=gen) * magnitude
    return tensors


def build_scheduler() -> FlowMatchEulerDiscreteScheduler:
    # Sigmas are computed by ltx2.pipelines.schedules and passed in as they are: no shift here.
    return FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)


def build_components(seed: int = 0, builders: dict | None = None) -> dict:
    """All components of the tiny preset, each seeded on its own so adding one changes no other.
    `builders` replaces `BUILDERS` for another family's tiny preset (the same names, the same order)."""
    tokenizer = build_tokenizer()
    components = {"tokenizer": tokenizer, "scheduler": build_scheduler()}
    for offset, (name, build) in enumerate((builders or BUILDERS).items()):
        text_encoder = name == "text_encoder"  # its vocabulary is the tokenizer's
        components[name] = seeded((lambda b=build: b(len(tokenizer))) if text_encoder else build, seed + offset)
    return components


def seeded(build, seed: int) -> torch.nn.Module:
    """`build()` under `seed`, zero-initialised output layers randomised, frozen in eval mode."""
    torch.manual_seed(seed)
    module = build()
    _randomize_zero_init(module, seed)
    return module.eval().requires_grad_(False)


BUILDERS = {
    "text_encoder": build_text_encoder,  # needs the tokenizer's size: bound in build_components
    "connectors": build_connectors,
    "transformer": build_transformer,
    "vae": build_video_vae,
    "audio_vae": build_audio_vae,
    "vocoder": build_vocoder,
}


def _randomize_zero_init(module: torch.nn.Module, seed: int) -> None:
    """Give zero-initialised output layers small random values.

    Several diffusers blocks zero-init their last projection (adaLN tables, proj_out), which makes
    a freshly built model ignore its inputs. The tiny preset must respond to its inputs like a
    trained one, or tests of conditioning and determinism would pass vacuously.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.numel() > 1 and torch.count_nonzero(param) == 0 and not name.endswith("bias"):
                param.copy_(torch.randn(param.shape, generator=gen) * 0.02)
