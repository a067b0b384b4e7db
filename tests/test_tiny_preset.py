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


# English prompts of the kind people send, written for this test (none was used to choose tiny_vocab's
# words). Gemma 3's 262k vocabulary holds almost every common English word whole, with its leading space
# ("▁camera"), splits rarer words into a few pieces and digits one by one: about 1.3 tokens per word on
# English prose (its tokenizer docs show "Derinkuyu is an underground city." as 8 tokens for 5 words,
# the rare name in 3 pieces).
ENGLISH = [
    "Ocean waves crashing on a rocky shore at sunset, camera pans slowly",
    "A red fox trotting through fresh snow, soft crunching steps",
    "A cat sitting calmly on a cushion, soft lighting, gentle purring sounds",
    "Two children build a sandcastle on a crowded beach while their father reads a newspaper under a striped "
    "umbrella. Seagulls circle above, and the sound of waves and distant laughter carries on the breeze. The "
    "camera slowly moves in on the sandcastle as a wave reaches it.",
    "A vintage red convertible drives along a winding mountain road in autumn. Orange and yellow leaves swirl "
    "behind the car. The shot is wide and steady, then cuts to the driver, an older man in sunglasses who taps "
    "the wheel to an old jazz song on the radio.",
    "In a dim workshop, a carpenter planes a long board of pale wood. Curls of shavings fall to the floor and "
    "dust floats in a beam of light from a high window. We hear the scrape of the plane, his slow breathing, and "
    "rain against the roof.",
    "A street musician plays violin in a subway station during rush hour. Commuters hurry past; a small girl "
    "stops, holding her mother's hand, and listens. The camera stays at her eye level. The music echoes off the "
    "tiled walls over the noise of an arriving train.",
    "Most people who try the service for the first time want to know how long it takes and what it costs. The "
    "short answer is that it depends on the size of the video and the number of steps, but a typical clip is "
    "ready in about a minute on a modern graphics card.",
]


def tokens_per_word(tok, text: str) -> float:
    return len(tok(text, add_special_tokens=False).input_ids) / len(text.split())


def test_tokenizer_counts_english_about_as_gemma_does():
    """~1.3 tokens per word, as Gemma 3 (the old tiny vocabulary of single letters took ~4.5). The range
    leaves room for the tiny vocabulary's few thousand words against Gemma's 262k, not for letters."""
    tok = tiny.build_tokenizer()
    rates = [tokens_per_word(tok, text) for text in ENGLISH]
    assert all(0.9 <= rate <= 1.9 for rate in rates), rates  # short prompts swing with one rare word
    long_ones = [rate for text, rate in zip(ENGLISH, rates) if len(text.split()) >= 40]
    assert all(1.0 <= rate <= 1.6 for rate in long_ones), long_ones
    total = sum(len(tok(text, add_special_tokens=False).input_ids) for text in ENGLISH)
    assert 1.15 <= total / sum(len(text.split()) for text in ENGLISH) <= 1.45
    # Common words are one token with their space, as in Gemma; the first word has no space.
    assert tok.tokenize("The camera slowly moves in") == ["The", "▁camera", "▁slowly", "▁moves", "▁in"]
    assert tok.tokenize("A quiet street at night") == ["A", "▁quiet", "▁street", "▁at", "▁night"]


def test_a_prompt_gemma_reads_whole_is_not_refused_on_tiny(model):
    """About 700 words is ~900 Gemma tokens, under the 1024 the text encoder reads: tiny agrees."""
    from ltx2.pipelines.stages import check_prompt_lengths
    from ltx2.schema import GenerateRequest

    words: list[str] = []
    while len(words) < 700:
        words += " ".join(ENGLISH[3:]).split()
    prompt = " ".join(words[:700])
    check_prompt_lengths(model.pipe, GenerateRequest(prompt=prompt), guided=False)  # raises if refused
    count = len(model.pipe.tokenizer(prompt).input_ids)
    assert 800 <= count <= model.pipe.tokenizer_max_length == tiny.PROMPT_TOKENS, count


def test_tokenizer_falls_back_to_bytes_and_round_trips():
    tok = tiny.build_tokenizer()
    text = "Ünïcode café 日本, 1920x1080 at 25 fps"
    ids = tok(text).input_ids
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.unk_token_id not in ids  # byte fallback, never <unk>
    assert tiny.build_tokenizer().get_vocab() == tok.get_vocab()  # deterministic


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
