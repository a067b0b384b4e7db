"""The tiny preset keeps the real LTX-2 geometry; only widths shrink."""

import torch
from diffusers import AutoencoderKLLTX2Video

from ltx2.models import tiny
from ltx2.models.geometry import audio_latent_frames, latent_video_shape, video_vae_compression

# The real LTX-2 video VAE block layout (from the official config): 32x spatial, 8x temporal.
REAL_VAE_LAYOUT = {
    "patch_size": 4,
    "patch_size_t": 1,
    "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    "spatio_temporal_scaling": (True, True, True, True),
}


def test_true_compression_of_the_real_layout():
    assert video_vae_compression(REAL_VAE_LAYOUT) == (32, 8)


def test_diffusers_default_derivation_would_be_wrong():
    # Why we pass the ratios in: built without them, diffusers counts every block both ways.
    vae = AutoencoderKLLTX2Video(
        latent_channels=8, block_out_channels=(4, 4, 4, 4), decoder_block_out_channels=(4, 4, 4),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1),
    )
    assert (vae.spatial_compression_ratio, vae.temporal_compression_ratio) == (64, 16)


def test_pipeline_uses_real_ratios(model):
    pipe = model.pipe
    assert pipe.vae_spatial_compression_ratio == 32
    assert pipe.vae_temporal_compression_ratio == 8
    assert pipe.audio_vae_temporal_compression_ratio == 4
    assert pipe.audio_vae_mel_compression_ratio == 4


def test_video_vae_encodes_to_real_latent_shape(model):
    vae = model.pipe.vae
    video = torch.zeros(1, 3, 17, 64, 96)
    with torch.inference_mode():
        latent = vae.encode(video).latent_dist.mode()
    assert latent.shape == (1, 128, 3, 2, 3)
    with torch.inference_mode():
        decoded = vae.decode(latent).sample
    assert decoded.shape == video.shape


def test_real_geometry_constants(model):
    pipe = model.pipe
    t = pipe.transformer.config
    assert (t.in_channels, t.out_channels, t.patch_size, t.patch_size_t) == (128, 128, 1, 1)
    assert t.audio_in_channels == 128 and t.audio_sampling_rate == 16000 and t.audio_hop_length == 160
    a = pipe.audio_vae.config
    assert (a.sample_rate, a.mel_hop_length, a.mel_bins, a.latent_channels) == (16000, 160, 64, 8)
    assert pipe.vae.config.latent_channels == 128
    assert pipe.vocoder.config.output_sampling_rate == 24000 and pipe.vocoder.config.out_channels == 2
    assert pipe.vocoder.total_upsample_factor == 240  # 100 mel frames/s -> 24 kHz
    assert pipe.tokenizer_max_length == 1024
    assert type(pipe.text_encoder).__name__ == "Gemma3ForConditionalGeneration"
    assert pipe.connectors.config.text_proj_in_factor == pipe.text_encoder.config.text_config.num_hidden_layers + 1


def test_audio_decoder_and_vocoder_rates(model):
    pipe = model.pipe
    latents = torch.zeros(1, 8, 25, 16)  # one second of audio latents
    with torch.inference_mode():
        mel = pipe.audio_vae.decode(latents).sample
        wave = pipe.vocoder(mel)
    assert mel.shape[1] == 2 and mel.shape[3] == 64
    assert mel.shape[2] == 25 * 4 - 3  # causal decoder: 4 mel frames per latent after the first
    assert wave.shape == (1, 2, mel.shape[2] * 240)


def test_latent_sizes_for_288x512x49():
    assert latent_video_shape(49, 512, 288, 32, 8) == (7, 16, 9)
    assert audio_latent_frames(49, 25, 16000, 160, 4) == 49


def test_tokenizer_is_local_gemma_with_bos():
    tok = tiny.build_tokenizer()
    ids = tok("A cat playing the piano").input_ids
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "A cat playing the piano"


def test_build_is_deterministic():
    a = tiny.build_components(seed=0)["transformer"].state_dict()
    b = tiny.build_components(seed=0)["transformer"].state_dict()
    c = tiny.build_components(seed=1)["transformer"].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_no_output_layer_left_at_zero(model):
    # A zero-initialised output would make the transformer ignore its inputs.
    proj = model.pipe.transformer.proj_out.weight
    assert torch.count_nonzero(proj) > 0
