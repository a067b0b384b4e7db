"""preprocess_audio: BS.1770 loudness, bounded leading-silence trim, and the user's audio kept in the MP4."""

from __future__ import annotations

import numpy as np
import pytest
from test_conditioning import BASE, wav_uri

from ltx2 import generate
from ltx2.media.audio_prep import (
    MAX_TRIM_SECONDS,
    PEAK_CEILING_DBFS,
    TARGET_LUFS,
    loudness_lufs,
    preprocess_audio,
)
from ltx2.media.inputs import InputLimits, decode_base64_field, load_audio
from ltx2.pipelines.conditioning import decode_conditioning
from ltx2.schema import GenerateRequest

RATE = 16_000


def sine(seconds: float, amplitude: float, rate: int = RATE, freq: float = 997.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([amplitude * np.sin(2 * np.pi * freq * t)] * 2).astype(np.float32)


def test_the_meter_reads_bs1770_reference_levels():
    # BS.1770: a full-scale 1 kHz sine in both front channels reads 0 LUFS; in one channel -3.01.
    assert loudness_lufs(sine(3, 1.0), RATE) == pytest.approx(0.0, abs=0.05)
    one = sine(3, 1.0)
    one[1] = 0
    assert loudness_lufs(one, RATE) == pytest.approx(-3.01, abs=0.05)
    assert loudness_lufs(sine(3, 0.1), RATE) == pytest.approx(-20.0, abs=0.05)
    assert loudness_lufs(np.zeros((2, RATE), np.float32), RATE) is None  # below the -70 LUFS gate


def test_leading_silence_is_cut_from_both_copies_and_only_the_models_is_levelled():
    quiet = np.concatenate([np.zeros((2, int(0.4 * RATE)), np.float32), sine(1.0, 0.02)], axis=1)
    out_rate = 24_000
    for_output = np.concatenate([np.zeros((2, int(0.4 * out_rate)), np.float32), sine(1.0, 0.02, out_rate)], axis=1)
    model_copy, mp4_copy, report = preprocess_audio(quiet, RATE, for_output, out_rate)
    assert report["trimmed_seconds"] == pytest.approx(0.4, abs=0.011)
    assert loudness_lufs(model_copy, RATE) == pytest.approx(TARGET_LUFS, abs=0.1)
    assert report["gain_db"] == pytest.approx(TARGET_LUFS - loudness_lufs(quiet[:, int(0.4 * RATE):], RATE), abs=0.1)
    cut = round(report["trimmed_seconds"] * out_rate)
    assert np.array_equal(mp4_copy, for_output[:, cut:])  # the user's own samples, only trimmed


def test_the_trim_is_bounded_and_the_gain_never_clips():
    long_silence = np.concatenate([np.zeros((2, 3 * RATE), np.float32), sine(1.0, 0.3)], axis=1)
    _, _, report = preprocess_audio(long_silence, RATE, None, RATE)
    assert report["trimmed_seconds"] == MAX_TRIM_SECONDS
    spiky = sine(2.0, 0.01)
    spiky[:, RATE] = 0.9  # one loud click in a quiet tone: the ceiling, not the target, sets the gain
    levelled, _, report = preprocess_audio(spiky, RATE, None, RATE)
    assert 20 * np.log10(np.abs(levelled).max()) == pytest.approx(PEAK_CEILING_DBFS, abs=0.01)
    assert loudness_lufs(levelled, RATE) < TARGET_LUFS


@pytest.mark.slow
def test_off_the_model_hears_the_audio_as_sent_only_resampled(model):
    audio = np.concatenate([np.zeros((2, 8000), np.float32), sine(0.8, 0.05, 22_050)[:, :]], axis=1)
    uri = wav_uri(audio, 22_050)
    vae_rate = model.pipe.audio_vae.config.sample_rate
    data, mime = decode_base64_field(uri, "audio", 10**8, "audio")
    untouched = load_audio(data, "audio", mime, InputLimits(), vae_rate)
    off = decode_conditioning(GenerateRequest(prompt="x", audio=uri, preprocess_audio=False), vae_rate, model.vocoder_rate)
    on = decode_conditioning(GenerateRequest(prompt="x", audio=uri), vae_rate, model.vocoder_rate)
    assert np.array_equal(off.audio_for_vae, untouched) and off.audio_preprocessing is None
    assert on.audio_preprocessing["trimmed_seconds"] > 0.3 and on.audio_preprocessing["gain_db"] > 0
    assert on.audio_for_vae.shape[1] < untouched.shape[1]


@pytest.mark.slow
def test_at_full_strength_the_soundtrack_is_the_users_audio_trimmed(model):
    rate = 24_000
    audio = np.concatenate([np.zeros((2, rate // 4), np.float32), sine(1.0, 0.05, rate, 440.0)], axis=1)
    request = GenerateRequest(**{**BASE, "width": 64, "height": 64, "num_inference_steps": 1, "seed": 2,
                                 "audio": wav_uri(audio, rate), "audio_strength": 1.0})
    result = generate(model, request)
    cond = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate)
    trimmed = cond.audio_preprocessing["trimmed_seconds"]
    assert trimmed == pytest.approx(0.25, abs=0.011)
    data, mime = decode_base64_field(request.audio, "audio", 10**8, "audio")
    original = load_audio(data, "audio", mime, InputLimits(), model.vocoder_rate)
    n = result.waveform.shape[1]
    expected = original[:, round(trimmed * model.vocoder_rate):][:, :n]
    assert np.array_equal(result.waveform[:, :expected.shape[1]], expected)  # same level, same samples
