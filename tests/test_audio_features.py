"""The audio front end against an independent numpy rendering of ltx-core's definition
(torchaudio MelSpectrogram: periodic Hann, centred reflect-padded frames, magnitude, Slaney mel
scale and norm, log clamped at 1e-5), and `encode_audio` on the tiny preset's audio VAE."""

import numpy as np
import pytest
import torch

from ltx2.media.audio_features import (
    MelConfig,
    encode_audio,
    frames_for,
    hz_to_mel,
    log_mel,
    mel_to_hz,
    samples_for_latents,
    slaney_mel_filterbank,
)
from ltx2.models.geometry import audio_latent_frames

SR, N_FFT, HOP, N_MELS = 16000, 1024, 160, 64


# --- the definition, written out again from the formulas -------------------------------------

def ref_hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000, 3 * f / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))


def ref_mel_to_hz(m):
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15, 200 * m / 3, 1000 * 6.4 ** ((m - 15) / 27))


def ref_filterbank():
    edges = ref_mel_to_hz(np.linspace(0, ref_hz_to_mel(SR / 2), N_MELS + 2))
    bank = np.zeros((N_MELS, N_FFT // 2 + 1))
    for i in range(N_MELS):
        lo, c, hi = edges[i:i + 3]
        for k in range(N_FFT // 2 + 1):
            f = k * SR / N_FFT
            if lo < f <= c:
                bank[i, k] = (f - lo) / (c - lo)
            elif c < f < hi:
                bank[i, k] = (hi - f) / (hi - c)
        bank[i] *= 2 / (hi - lo)
    return bank


def ref_log_mel(x):
    """(channels, samples) -> (channels, frames, mels), float64."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    bank = ref_filterbank()
    out = []
    for channel in np.asarray(x, dtype=np.float64):
        padded = np.pad(channel, N_FFT // 2, mode="reflect")
        starts = range(0, len(padded) - N_FFT + 1, HOP)
        frames = np.stack([padded[s:s + N_FFT] * window for s in starts])
        magnitude = np.abs(np.fft.rfft(frames, axis=1))
        out.append(np.log(np.maximum(magnitude @ bank.T, 1e-5)))
    return np.stack(out)


def chirp(seconds=2.0, seed=0):
    """Stereo 100 Hz -> 7 kHz linear chirp, the channels out of phase, over a little white noise.

    The noise keeps every mel bin well above float32 round-off: a pure tone leaves bins at
    ~1e-5 where a float32 STFT (ours and torchaudio's alike) is only good to a few percent.
    """
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * (100 * t + (7000 - 100) / (2 * seconds) * t ** 2)
    noise = 0.05 * np.random.default_rng(seed).standard_normal((2, t.size))
    return (np.stack([0.8 * np.sin(phase), 0.5 * np.sin(phase + 1.3)]) + noise).astype(np.float32)


# --- log-mel ----------------------------------------------------------------------------------

def test_log_mel_matches_independent_numpy_definition():
    x = chirp()
    ours = log_mel(torch.from_numpy(x))
    assert ours.shape == (1, 2, frames_for(x.shape[1]), N_MELS) and ours.dtype == torch.float32
    ref = ref_log_mel(x)
    assert np.abs(ours[0].numpy() - ref).max() < 1e-4
    # the channels really are different, and the chirp sweeps upwards through the mel bins
    assert np.abs(ref[0] - ref[1]).max() > 0.5
    peaks = ref[0].argmax(axis=1)
    assert peaks[10] < peaks[100] < peaks[190]


def test_log_mel_matches_transformers_audio_utils():
    # a third implementation of the librosa/torchaudio definitions, to catch a misreading shared
    # by the module and the numpy reference above
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    bank = mel_filter_bank(N_FFT // 2 + 1, N_MELS, 0.0, SR / 2, SR, norm="slaney", mel_scale="slaney")
    assert np.abs(slaney_mel_filterbank().numpy() - bank.T).max() < 1e-7
    x = chirp(1.0, seed=1)
    theirs = np.stack([spectrogram(c.astype(np.float64), window_function(N_FFT, "hann", periodic=True), N_FFT, HOP,
                                   power=1.0, center=True, pad_mode="reflect", mel_filters=bank, mel_floor=1e-5,
                                   log_mel="log", dtype=np.float64) for c in x])
    assert np.abs(log_mel(torch.from_numpy(x))[0].numpy() - theirs.transpose(0, 2, 1)).max() < 1e-4


def test_silence_is_clamped_at_log_1e5():
    mel = log_mel(torch.zeros(2, SR // 2))
    assert torch.equal(mel, torch.full_like(mel, float(np.log(np.float32(1e-5)))))


def test_magnitude_not_power():
    # doubling the amplitude adds log 2 (it would add log 4 with a power spectrogram)
    x = torch.from_numpy(chirp(0.5))
    assert torch.allclose(log_mel(2 * x) - log_mel(x), torch.full((1, 2, 51, N_MELS), float(np.log(2))), atol=1e-4)


@pytest.mark.parametrize("samples, frames", [(16000, 101), (16159, 101), (16160, 102), (31360, 197), (513, 4)])
def test_frame_count_is_centred_framing(samples, frames):
    # torch.stft/torchaudio with center=True: one frame per hop, the first centred on sample 0
    x = np.random.default_rng(samples).standard_normal((2, samples)).astype(np.float32)
    assert frames_for(samples) == frames
    assert log_mel(torch.from_numpy(x)).shape[2] == frames == ref_log_mel(x).shape[1]


def test_too_short_for_reflect_padding_is_refused():
    for samples in (1, 100, 512):  # reflect padding of n_fft / 2 = 512 needs more than 512 samples
        with pytest.raises(ValueError, match="reflect"):
            log_mel(torch.zeros(2, samples))
    assert log_mel(torch.zeros(2, 513)).shape[2] == 1 + 513 // 160


def test_the_mel_config_is_a_frozen_hashable_value():
    cfg = MelConfig()
    assert hash(cfg) == hash(MelConfig()) and cfg == MelConfig()  # usable as a cache key
    with pytest.raises(AttributeError):
        cfg.n_mels = 80


# --- the filterbank ---------------------------------------------------------------------------

def test_slaney_mel_scale():
    assert np.allclose(hz_to_mel([0, 200, 1000, 6400, 8000]),
                       [0, 3, 15, 42, 15 + 27 * np.log(8) / np.log(6.4)])
    f = np.array([0.0, 123.4, 999.9, 1000.0, 1000.1, 3210.0, 8000.0])
    assert np.allclose(mel_to_hz(hz_to_mel(f)), f)
    assert np.allclose(hz_to_mel(f), ref_hz_to_mel(f))


def test_filterbank_against_the_formulas():
    bank = slaney_mel_filterbank().numpy()
    assert bank.shape == (N_MELS, N_FFT // 2 + 1) and (bank >= 0).all()
    assert np.abs(bank - ref_filterbank()).max() < 1e-7

    edges = ref_mel_to_hz(np.linspace(0, ref_hz_to_mel(SR / 2), N_MELS + 2))
    centres, df = edges[1:-1], SR / N_FFT
    # evenly spaced in Hz below 1 kHz, in log Hz above
    below, above = centres[centres < 1000], centres[centres > 1000]
    assert len(below) == 21 and np.allclose(np.diff(below), below[0])
    assert np.allclose(np.diff(np.log(above)), np.log(above[1] / above[0]))
    # each triangle peaks at one of the two FFT bins around its centre, at height <= 2 / (hi - lo) ...
    assert (np.abs(bank.argmax(axis=1) - centres / df) < 1).all()
    assert (bank.max(axis=1) <= 2 / (edges[2:] - edges[:-2]) + 1e-7).all()
    # ... so its area is 1: exactly so (to sampling error) once a triangle spans many bins
    area = bank.sum(axis=1) * df
    wide = (edges[2:] - edges[:-2]) > 10 * df
    assert wide.sum() > 30 and np.allclose(area[wide], 1, atol=0.01)
    assert np.allclose(area, 1, atol=0.05)
    # 0 Hz is in no filter (the first edge) and 8 kHz in none either (the last edge)
    assert bank[:, 0].max() == 0 and bank[:, -1].max() == 0


# --- encode_audio on the tiny preset's audio VAE ----------------------------------------------

@pytest.fixture(scope="module")
def audio_vae():
    from ltx2.models.tiny import build_audio_vae

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return build_audio_vae().eval()


def test_config_from_audio_vae(audio_vae):
    assert MelConfig.from_audio_vae(audio_vae) == MelConfig()


@pytest.mark.parametrize("latent_frames", [1, 7, 49, 126])
@pytest.mark.parametrize("seconds", [0.3, 1.96, 6.0])
def test_encode_audio_gives_the_requested_frames(audio_vae, latent_frames, seconds):
    x = chirp(seconds)
    latents = encode_audio(audio_vae, torch.from_numpy(x), latent_frames)
    assert latents.shape == (1, 8, latent_frames, 16)
    assert torch.isfinite(latents).all()


def test_pipeline_geometry_for_49_frames_at_25_fps(audio_vae):
    frames = audio_latent_frames(49, 25.0, SR, HOP, audio_vae.temporal_compression_ratio)
    assert frames == 49
    x = torch.from_numpy(chirp(1.96))
    assert x.shape[1] == 31360
    latents = encode_audio(audio_vae, x, frames)
    assert latents.shape == (1, 8, 49, 16)
    # ltx-pipelines' way (a2vid_two_stage): encode the whole clip, 197 mel frames -> 50 latents,
    # keep the first 49. Ours must be exactly that.
    full = audio_vae.encode(log_mel(x)).latent_dist.mean
    assert full.shape[2] == 50
    assert torch.allclose(latents, full[:, :, :49], atol=1e-6)


def test_encode_audio_is_deterministic_and_depends_on_the_input(audio_vae):
    x = torch.from_numpy(chirp(1.0))
    a, b = encode_audio(audio_vae, x, 25), encode_audio(audio_vae, x, 25)
    assert torch.equal(a, b)
    c = encode_audio(audio_vae, torch.from_numpy(chirp(1.0, seed=1)), 25)
    assert (a - c).abs().max() > 1e-3
    # swapping the channels matters too: stereo is kept, not averaged
    assert (a - encode_audio(audio_vae, x.flip(0), 25)).abs().max() > 1e-3


def test_encode_audio_is_causal_so_cutting_the_tail_is_exact(audio_vae):
    x = torch.from_numpy(chirp(2.0))
    assert torch.allclose(encode_audio(audio_vae, x, 20), encode_audio(audio_vae, x, 45)[:, :, :20], atol=1e-6)


def test_short_audio_is_padded_with_silence(audio_vae):
    x = torch.from_numpy(chirp(0.5))
    padded = torch.cat([x, torch.zeros(2, 2 * SR)], dim=1)
    short = encode_audio(audio_vae, x, 40)
    assert torch.allclose(short, encode_audio(audio_vae, padded, 40), atol=1e-6)
    # not zero latents: the tail is the encoding of silence
    assert short[:, :, -5:].abs().max() > 1e-3


def test_mono_is_duplicated_to_stereo(audio_vae):
    mono = torch.from_numpy(chirp(1.0)[:1])
    assert torch.equal(encode_audio(audio_vae, mono, 25), encode_audio(audio_vae, mono.repeat(2, 1), 25))
    with pytest.raises(ValueError, match="channels"):
        encode_audio(audio_vae, torch.zeros(3, SR), 25)


def test_decode_of_encode_has_the_decoders_shape(audio_vae):
    latents = encode_audio(audio_vae, torch.from_numpy(chirp(1.0)), 25)
    mel = audio_vae.decode(latents, return_dict=False)[0]
    # the causal decoder gives 4 mel frames per latent frame after the first
    assert mel.shape == (1, 2, 4 * 25 - 3, N_MELS)


def test_latents_are_raw_not_normalised(audio_vae):
    # GenerationResult.audio_latents (what the decode stage feeds audio_vae.decode) are the
    # pipeline's latents after _denormalize_audio_latents: raw VAE space. So encode_audio must not
    # read latents_mean/std (the tiny preset's are 0 and 1, so give a copy real-looking ones).
    import copy

    vae = copy.deepcopy(audio_vae)
    vae.latents_mean.normal_(generator=torch.Generator().manual_seed(1))
    vae.latents_std.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(2))
    x = torch.from_numpy(chirp(1.0))
    assert torch.equal(encode_audio(vae, x, 25), encode_audio(audio_vae, x, 25))
    # and the shape is the pipeline's (pipeline.py: audio_latent_frames, mel_bins // compression)
    frames = audio_latent_frames(121, 24.0, vae.config.sample_rate, vae.config.mel_hop_length,
                                 vae.temporal_compression_ratio)
    latents = encode_audio(vae, torch.from_numpy(chirp(121 / 24)), frames)
    assert latents.shape == (1, vae.config.latent_channels, 126, vae.config.mel_bins // vae.mel_compression_ratio)


def test_follows_the_vaes_dtype(audio_vae):
    import copy

    vae = copy.deepcopy(audio_vae).to(torch.bfloat16)
    latents = encode_audio(vae, torch.from_numpy(chirp(0.5)), 12)
    assert latents.dtype == torch.bfloat16 and latents.shape == (1, 8, 12, 16)


def test_too_short_message_names_the_limit():
    with pytest.raises(ValueError, match=r"^waveform has 512 samples; reflect padding needs more than 512$"):
        log_mel(torch.zeros(2, 512))
    assert log_mel(torch.zeros(2, 513)).shape[2] == 4


def test_samples_per_latent_frame():
    # 4 mel frames of 160 samples per latent frame: 640 samples, 40 ms at 16 kHz
    assert samples_for_latents(49, MelConfig()) == 31360
    assert samples_for_latents(1, MelConfig(hop_length=100), compression=2) == 200


class _ShortVAE(torch.nn.Module):
    """An audio VAE whose encoder gives `frames` latent frames, whatever it is fed."""

    def __init__(self, frames: int, in_channels: int = 2):
        super().__init__()
        self.frames = frames
        self.weight = torch.nn.Parameter(torch.zeros(1))  # trainable, as a module's parameters are by default
        self.temporal_compression_ratio = 4
        self.config = type("Config", (), {"sample_rate": 16000, "mel_hop_length": 160, "mel_bins": 64,
                                          "in_channels": in_channels})
        self.seen: list[tuple[int, ...]] = []

    def encode(self, mel):
        self.seen.append(tuple(mel.shape))
        mean = torch.zeros(1, 8, self.frames, 16) + self.weight * mel.mean()
        return type("Out", (), {"latent_dist": type("Dist", (), {"mean": mean})})


def test_a_vae_that_gives_too_few_latents_is_an_error_not_a_short_soundtrack():
    assert encode_audio(_ShortVAE(10), torch.zeros(2, 16000), 10).shape == (1, 8, 10, 16)
    with pytest.raises(RuntimeError, match="audio VAE gave 9 latent frames for 6400 samples, fewer than the 10"):
        encode_audio(_ShortVAE(9), torch.zeros(2, 16000), 10)


@pytest.mark.parametrize("frames", [0, -3])
def test_no_latent_frames_is_refused(frames):
    with pytest.raises(ValueError, match=f"latent_frames must be at least 1, got {frames}"):
        encode_audio(_ShortVAE(1), torch.zeros(2, 16000), frames)


def test_a_waveform_must_be_two_dimensional(audio_vae):
    for bad in (torch.zeros(16000), torch.zeros(1, 2, 16000)):
        with pytest.raises(ValueError, match="waveform must be \\(channels, samples\\)"):
            encode_audio(audio_vae, bad, 5)
        with pytest.raises(ValueError, match="waveform must be \\(channels, samples\\)"):
            log_mel(bad)


@pytest.mark.parametrize("samples", [1, 3000, 6400, 16000])
def test_the_mel_front_end_sees_exactly_the_latents_worth_of_samples(samples):
    # 10 latent frames stand for 10 * 4 * 160 = 6400 samples: longer is cut, shorter padded, to exactly
    # that, so the mel spectrogram has 1 + 6400 // 160 = 41 frames whatever came in.
    vae = _ShortVAE(11)
    encode_audio(vae, torch.ones(2, samples), 10)
    assert vae.seen == [(1, 2, 41, 64)]


def test_encoding_keeps_no_autograd_graph():
    latents = encode_audio(_ShortVAE(10), torch.ones(2, 6400), 10)
    assert not latents.requires_grad and latents.grad_fn is None


@pytest.mark.parametrize(("in_channels", "given", "message"), [
    (2, 0, "the audio VAE takes 2 channels, got 0"),
    (2, 3, "the audio VAE takes 2 channels, got 3"),
    (3, 1, "the audio VAE takes 3 channels, got 1"),  # mono is duplicated for a stereo VAE only
    (1, 2, "the audio VAE takes 1 channels, got 2"),
])
def test_the_channel_count_must_be_the_vaes(in_channels, given, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        encode_audio(_ShortVAE(10, in_channels), torch.zeros(given, 6400), 10)


def test_a_mono_vae_takes_mono_as_it_is():
    vae = _ShortVAE(10, in_channels=1)
    encode_audio(vae, torch.zeros(1, 6400), 10)
    assert vae.seen[0][1] == 1
