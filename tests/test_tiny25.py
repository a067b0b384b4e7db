"""The tiny LTX-2.5 preset keeps the real 2.5 structure and geometry; only widths shrink."""

import pytest
import torch
from diffusers import LTX2Pipeline
from diffusers.models.autoencoders.ltx2_diffusion_decoder import (
    LTX2VideoVaeNeighborhoodAttention,
    LTX2VideoVaeNeighborhoodAttnProcessor,
)

from ltx2.models import tiny
from ltx2.models.families import tiny25
from ltx2.models.geometry import audio_latent_frames, latent_video_shape

PROMPTS = ["A red fox trotting through fresh snow, soft crunching steps",
           "Two children build a sandcastle on a crowded beach while seagulls circle above"]


@pytest.fixture(scope="module")
def components():
    return tiny25.build_components(seed=0)


@pytest.fixture(scope="module")
def pipe(components):
    return LTX2Pipeline(**components, duration_head=tiny25.build_duration_head(seed=0), processor=None,
                        prompt_enhancer=None)


@pytest.fixture(scope="module")
def contexts(pipe):
    """Both prompts through Gemma 4 and the connectors: (video, audio, mask), one row per prompt."""
    with torch.inference_mode():
        embeds, mask, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False, device="cpu")
        return embeds, mask, pipe.connectors(embeds, mask, padding_side=pipe.tokenizer.padding_side)


def _states(module):
    return module.state_dict() if isinstance(module, torch.nn.Module) else module


def _identical(a, b) -> bool:
    a, b = _states(a), _states(b)
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_two_builds_are_bit_identical(components):
    again = tiny25.build_components(seed=0)
    assert again.keys() == components.keys() == {"tokenizer", "scheduler", *tiny25.BUILDERS}
    for name in tiny25.BUILDERS:
        assert _identical(components[name], again[name]), name
    assert again["tokenizer"].get_vocab() == components["tokenizer"].get_vocab()
    for build in (tiny25.build_diffusion_decoder, tiny25.build_duration_head, tiny25.build_upsampler,
                  tiny25.build_temporal_upsampler):
        assert _identical(build(seed=0), build(seed=0)), build.__name__
        assert not _identical(build(seed=0), build(seed=1)), build.__name__
    lora = tiny25.build_distilled_lora(components["transformer"], seed=0)
    assert _identical(lora, tiny25.build_distilled_lora(again["transformer"], seed=0))
    other = tiny25.build_components(seed=1)
    assert not _identical(components["transformer"], other["transformer"])


def test_separate_builders_change_no_pipeline_component(components):
    # Every extra builder is seeded after the six components, as tiny.py's upsampler and LoRA are.
    seeds = {tiny25._UPSAMPLER, tiny25._LORA, tiny25._DECODER, tiny25._DURATION, tiny25._TEMPORAL}
    assert len(seeds) == 5 and min(seeds) == len(tiny25.BUILDERS)
    assert _identical(tiny25.build_upsampler(seed=3), tiny.build_upsampler(seed=3))


def test_pipeline_takes_the_25_components(pipe):
    assert type(pipe.text_encoder).__name__ == "Gemma4UnifiedForConditionalGeneration"
    assert pipe.text_encoder.config.model_type == "gemma4_unified"
    assert type(pipe.vocoder).__name__ == "LTX2VocoderWithBWE"
    assert type(pipe.duration_head).__name__ == "LTX2DurationHead"
    assert (pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio) == (32, 8)
    assert (pipe.audio_vae_temporal_compression_ratio, pipe.audio_vae_mel_compression_ratio) == (4, 4)
    assert pipe.tokenizer_max_length == tiny.PROMPT_TOKENS == 1024


def test_real_geometry_and_25_switches(pipe):
    t = pipe.transformer.config
    assert (t.in_channels, t.out_channels, t.patch_size, t.patch_size_t) == (128, 128, 1, 1)
    assert (t.audio_in_channels, t.audio_sampling_rate, t.audio_hop_length) == (128, 16000, 160)
    assert t.num_attention_heads == t.audio_num_attention_heads  # ltx-core requires one head count
    assert t.gated_attn and t.audio_gated_attn and t.cross_attn_mod and t.audio_cross_attn_mod
    assert not t.use_prompt_embeddings and not t.use_prompt_adaln_single and not t.ff_bias and t.audio_ff_bias
    block = pipe.transformer.transformer_blocks[0]
    assert block.ff.net[0].proj.bias is None and block.audio_ff.net[0].proj.bias is not None
    assert block.attn1.to_gate_logits is not None
    assert not hasattr(pipe.transformer, "caption_projection") and not hasattr(pipe.transformer, "prompt_adaln")
    c = pipe.connectors.config
    assert c.per_modality_projections and c.proj_bias
    assert c.text_proj_in_factor == pipe.text_encoder.config.text_config.num_hidden_layers + 1
    assert c.caption_channels == pipe.text_encoder.config.text_config.hidden_size
    a = pipe.audio_vae.config
    assert (a.sample_rate, a.mel_hop_length, a.mel_bins, a.latent_channels) == (16000, 160, 64, 8)
    assert pipe.vae.config.latent_channels == 128
    v = pipe.vocoder.config
    assert (v.input_sampling_rate, v.output_sampling_rate, v.out_channels, v.bwe_out_channels) == (16000, 48000, 2, 2)


def test_no_output_layer_left_at_zero(pipe):
    assert torch.count_nonzero(pipe.transformer.proj_out.weight) > 0
    assert torch.count_nonzero(pipe.transformer.audio_proj_out.weight) > 0
    decoder = tiny25.build_diffusion_decoder(seed=0).decoder
    assert torch.count_nonzero(decoder.conv_out.weight) > 0


def test_prompt_becomes_contexts_of_the_transformers_widths(pipe, contexts):
    embeds, mask, (video, audio, video_mask) = contexts
    layers = pipe.text_encoder.config.text_config.num_hidden_layers + 1  # embeddings + every layer
    assert embeds.shape == (2, 1024, tiny25.GEMMA_HIDDEN * layers)
    assert mask.shape == (2, 1024) and mask[:, -1].all() and not mask[:, 0].any()  # left padding
    assert mask[0].sum() != mask[1].sum()  # two prompts of different lengths
    inner = pipe.transformer.config.num_attention_heads * pipe.transformer.config.attention_head_dim
    audio_inner = pipe.transformer.config.audio_num_attention_heads * pipe.transformer.config.audio_attention_head_dim
    assert video.shape == (2, 1024, inner) and audio.shape == (2, 1024, audio_inner)
    assert video_mask.shape == (2, 1024)
    assert torch.isfinite(video).all() and torch.isfinite(audio).all()
    assert not torch.allclose(video[0], video[1]) and not torch.allclose(audio[0], audio[1])


def test_one_transformer_step_responds_to_the_prompt(pipe, contexts):
    _, _, (video, audio, video_mask) = contexts
    frames, fps = 9, 24.0
    latent_frames, latent_h, latent_w = latent_video_shape(frames, 256, 256, 32, 8)
    assert (latent_frames, latent_h, latent_w) == (2, 8, 8)
    audio_frames = audio_latent_frames(frames, fps, 16000, 160, 4)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, latent_frames * latent_h * latent_w, 128, generator=generator).expand(2, -1, -1)
    audio_latents = torch.randn(1, audio_frames, 128, generator=generator).expand(2, -1, -1)
    timestep = torch.full((2,), 500.0)
    with torch.inference_mode():
        velocity, audio_velocity = pipe.transformer(
            hidden_states=latents, audio_hidden_states=audio_latents, encoder_hidden_states=video,
            audio_encoder_hidden_states=audio, timestep=timestep, sigma=timestep,
            encoder_attention_mask=video_mask, audio_encoder_attention_mask=video_mask,
            num_frames=latent_frames, height=latent_h, width=latent_w, fps=fps, audio_num_frames=audio_frames,
            use_cross_timestep=True, return_dict=False)
    assert velocity.shape == latents.shape and audio_velocity.shape == audio_latents.shape
    assert torch.isfinite(velocity).all() and torch.isfinite(audio_velocity).all()
    # Same noise, different prompts: the prediction follows the prompt.
    assert not torch.allclose(velocity[0], velocity[1]) and not torch.allclose(audio_velocity[0], audio_velocity[1])


def test_conv_vae_decodes_to_32x_and_8x_plus_one(pipe):
    latent = torch.randn(1, 128, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        video = pipe.vae.decode(latent).sample
    assert video.shape == (1, 3, 9, 96, 96)
    assert torch.isfinite(video).all()


def test_diffusion_decoder_decodes_on_cpu_without_natten():
    decoder = tiny25.build_diffusion_decoder(seed=0)
    assert decoder.config.latent_channels == 128
    assert (decoder.spatial_compression_ratio, decoder.temporal_compression_ratio) == (32, 8)
    assert (decoder.config.decoder_model_output_type, decoder.config.decoder_num_inference_steps) == ("x0", 1)
    processors = {type(m.processor) for m in decoder.modules() if isinstance(m, LTX2VideoVaeNeighborhoodAttention)}
    assert processors == {tiny25.WindowedNeighborhoodAttnProcessor}
    latent = torch.randn(1, 128, 2, 3, 3, generator=torch.Generator().manual_seed(0))

    def decode(z, seed):
        with torch.inference_mode():
            return decoder.decode(z, generator=torch.Generator().manual_seed(seed)).sample

    video = decode(latent, 0)
    assert video.shape == (1, 3, 9, 96, 96)  # 32x spatial, (2 - 1) * 8 + 1 frames
    assert torch.isfinite(video).all()
    assert torch.equal(video, decode(latent, 0))  # the generator makes it reproducible
    assert not torch.allclose(video, decode(latent, 1))  # it denoises sampled noise
    assert not torch.allclose(video, decode(latent * -1, 0))  # conditioned on the latent


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
@pytest.mark.parametrize("grid,kernel", [((4, 5, 6), (3, 3, 3)), ((3, 7, 4), (3, 5, 3)), ((5, 3, 3), (3, 3, 3))])
def test_windowed_attention_equals_diffusers_neighbourhood_attention(grid, kernel):
    """The tiny decoder's processor computes diffusers' FlexAttention neighbourhood (NATTEN's windows,
    shifted inward at the borders), just without materialising every score."""
    torch.manual_seed(0)
    attn = LTX2VideoVaeNeighborhoodAttention(dim=16, kernel_size=kernel, head_dim=8).eval()
    hidden = torch.randn(2, *grid, 16)
    with torch.inference_mode():
        reference = attn(hidden)
        assert isinstance(attn.processor, LTX2VideoVaeNeighborhoodAttnProcessor)
        attn.set_processor(tiny25.WindowedNeighborhoodAttnProcessor())
        windowed = attn(hidden)
    torch.testing.assert_close(windowed, reference, rtol=1e-5, atol=1e-5)


def test_vocoder_turns_the_audio_vae_mel_into_48khz(pipe):
    waves = []
    for latents in (4, 5):
        with torch.inference_mode():
            noise = torch.randn(1, 8, latents, 16, generator=torch.Generator().manual_seed(0))
            mel = pipe.audio_vae.decode(noise).sample
            wave = pipe.vocoder(mel)
        assert mel.shape == (1, 2, 4 * latents - 3, 64)  # causal: 4 mel frames per latent after the first
        assert wave.shape == (1, 2, mel.shape[2] * 480)  # 160 samples at 16 kHz, then 3x: 480 at 48 kHz
        assert torch.isfinite(wave).all() and wave.abs().max() <= 1
        waves.append(wave)
    assert pipe.vocoder.config.output_sampling_rate == tiny25.VOCODER_RATE == 48_000
    per_latent = waves[1].shape[-1] - waves[0].shape[-1]
    assert per_latent == tiny25.SAMPLES_PER_AUDIO_LATENT == 48_000 // 25 == 1920


def test_duration_head_predicts_a_frame_count_for_a_prompt(pipe, contexts):
    _, _, (video, audio, _) = contexts
    head = pipe.duration_head
    with torch.inference_mode():
        seconds = head(video, audio)
        assert seconds.shape == (2,) and (seconds > 0).all()
        assert seconds[0] != seconds[1]  # it reads the prompt
        frames = head.predict_num_frames(video[:1], audio[:1], frame_rate=24.0,
                                         temporal_compression_ratio=pipe.vae_temporal_compression_ratio)
        short = head.predict_num_frames(video[:1], audio[:1], frame_rate=24.0, temporal_compression_ratio=8,
                                        min_seconds=1.0, max_seconds=2.0)
    assert isinstance(frames, int) and (frames - 1) % 8 == 0 and 24 <= frames <= 480
    assert abs(frames - seconds[0].item() * 24) <= 8 + 1  # the prediction, snapped down to the 8k + 1 grid
    assert short in (25, 33, 41)  # clamped to [24, 48] frames, then on the grid


def test_pipeline_predicts_its_own_duration_when_num_frames_is_omitted(pipe):
    """LTX2Pipeline's auto-duration path end to end: prompt -> Gemma 4 -> connectors -> duration head
    (clamped to 2 s: 48 frames, snapped down to 41) -> two transformer steps on latents of that length."""
    with torch.inference_mode():
        video, audio = pipe(prompt=PROMPTS[0], height=64, width=64, max_seconds=2.0, num_inference_steps=2,
                            guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, audio_guidance_scale=1.0,
                            audio_stg_scale=0.0, audio_modality_scale=1.0, generator=torch.Generator().manual_seed(0),
                            output_type="latent", return_dict=False)
    assert video.shape == (1, 128, *latent_video_shape(41, 64, 64, 32, 8))
    assert audio.shape == (1, 8, audio_latent_frames(41, 24.0, 16000, 160, 4), 16)
    assert torch.isfinite(video).all() and torch.isfinite(audio).all()


def test_upsamplers_double_space_or_time():
    latent = torch.randn(1, 128, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        assert tiny25.build_upsampler(seed=0)(latent).shape == (1, 128, 3, 8, 10)
        assert tiny25.build_temporal_upsampler(seed=0)(latent).shape == (1, 128, 5, 4, 5)  # 2F - 1


def test_distilled_lora_covers_every_block_linear(components):
    transformer = components["transformer"]
    lora = tiny25.build_distilled_lora(transformer, seed=0)
    linears = {name: m for name, m in transformer.named_modules()
               if isinstance(m, torch.nn.Linear) and name.startswith("transformer_blocks.")}
    assert len(lora) == 2 * len(linears)
    assert any("to_gate_logits" in name for name in linears)  # the 2.5 gates are LoRA targets too
    assert all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in lora)
    assert all(v.shape[0] == 4 for k, v in lora.items() if k.endswith("lora_A.weight"))
