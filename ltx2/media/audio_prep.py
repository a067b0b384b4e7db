"""`preprocess_audio`: make an input soundtrack easy for audio-to-video, without changing what the user hears.

What it does (default on, as in the hosted API it comes from, which never said what it meant):

1. **Leading silence is cut**, up to `MAX_TRIM_SECONDS`: a recording that starts with half a second of
   room tone would otherwise open the video on a still, waiting frame. The same seconds are cut from the
   copy that goes into the MP4, so picture and sound stay in sync. Longer silences are taken to be meant
   and only the first second goes.
2. **The model's copy is brought to `TARGET_LUFS`** integrated loudness (ITU-R BS.1770-4: K-weighted,
   gated), with the gain capped at `MAX_GAIN_DB` and the peak kept under `PEAK_CEILING_DBFS`: very quiet
   or very loud inputs are heard by the audio VAE at the level of ordinary online video. The MP4 keeps
   the user's own level: at audio_strength 1 its soundtrack is the user's audio, only trimmed.
3. Resampling happens as always (in decoding); with `preprocess_audio: false` it is the only change.

Loudness is measured in the frequency domain: each 400 ms block's power spectrum is weighted by the
K-filter's magnitude response (the BS.1770 biquads, evaluated at the block's FFT frequencies), which
gives the block's mean square after K-weighting (Parseval) without an IIR filter or SciPy.
"""

from __future__ import annotations

import math

import numpy as np

TARGET_LUFS = -18.0  # between streaming music (-14) and broadcast (-23), where most speech online sits
MAX_GAIN_DB = 20.0  # a near-silent noise floor is not raised to speech level
PEAK_CEILING_DBFS = -1.0
MAX_TRIM_SECONDS = 1.0
SILENCE_DBFS = -50.0  # a 10 ms window whose peak stays below this is silence
_WINDOW_SECONDS = 0.010

# BS.1770-4's K-weighting as two biquads at 48 kHz: a high shelf (+4 dB above ~1.5 kHz), then a high-pass.
_SHELF = ((1.53512485958697, -2.69169618940638, 1.19839281085285), (1.0, -1.69065929318241, 0.73248077421585))
_HIGHPASS = ((1.0, -2.0, 1.0), (1.0, -1.99004745483398, 0.99007225036621))
_DESIGN_RATE = 48_000.0


def _k_power(freqs: np.ndarray) -> np.ndarray:
    """|H(f)|² of the K-weighting filter at frequencies in Hz (below 24 kHz)."""
    z = np.exp(-1j * 2 * np.pi * freqs / _DESIGN_RATE)
    power = np.ones_like(freqs, dtype=np.float64)
    for b, a in (_SHELF, _HIGHPASS):
        num = b[0] + b[1] * z + b[2] * z * z
        den = a[0] + a[1] * z + a[2] * z * z
        power *= np.abs(num / den) ** 2
    return power


def loudness_lufs(wave: np.ndarray, rate: int) -> float | None:
    """Integrated loudness of (channels, samples) in LUFS; None when nothing is above the -70 LUFS gate."""
    block, hop = int(round(0.4 * rate)), int(round(0.1 * rate))
    wave = np.asarray(wave, dtype=np.float64)
    if wave.shape[1] < block:
        block = hop = wave.shape[1]
    if block == 0:
        return None
    starts = range(0, wave.shape[1] - block + 1, hop)
    weight = _k_power(np.fft.rfftfreq(block, 1.0 / rate))
    weight[1:-1 if block % 2 == 0 else None] *= 2  # one-sided spectrum: the other half's power
    powers = []
    for start in starts:
        spectrum = np.fft.rfft(wave[:, start:start + block], axis=1)
        mean_square = (np.abs(spectrum) ** 2 * weight).sum(axis=1) / block**2  # per channel
        powers.append(mean_square.sum())  # BS.1770: front channels weigh 1
    powers = np.array(powers)
    loud = -0.691 + 10 * np.log10(np.maximum(powers, 1e-20))
    kept = powers[loud > -70.0]
    if kept.size == 0:
        return None
    relative = -0.691 + 10 * np.log10(kept.mean()) - 10.0
    kept = powers[(loud > -70.0) & (loud > relative)]
    return float(-0.691 + 10 * np.log10(kept.mean()))


def leading_silence_seconds(wave: np.ndarray, rate: int, limit: float = MAX_TRIM_SECONDS) -> float:
    """Seconds of silence (every channel under SILENCE_DBFS, in 10 ms windows) before the sound starts,
    at most `limit`."""
    window = max(1, int(round(_WINDOW_SECONDS * rate)))
    span = min(wave.shape[1], int(round(limit * rate)))
    threshold = 10 ** (SILENCE_DBFS / 20)
    loud = np.flatnonzero(np.abs(wave[:, :span]).max(axis=0) > threshold)
    silent = loud[0] if loud.size else span
    return (silent // window) * window / rate  # whole windows: never into the first sound


def preprocess_audio(for_model: np.ndarray, model_rate: int, for_output: np.ndarray | None,
                     output_rate: int) -> tuple[np.ndarray, np.ndarray | None, dict[str, float]]:
    """(model copy, MP4 copy, what was done): both trimmed alike, only the model's copy levelled."""
    trim = leading_silence_seconds(for_model, model_rate)
    if trim > 0 and round(trim * model_rate) < for_model.shape[1]:
        for_model = for_model[:, round(trim * model_rate):]
        if for_output is not None:
            for_output = for_output[:, round(trim * output_rate):]
    else:
        trim = 0.0
    gain_db = 0.0
    loudness = loudness_lufs(for_model, model_rate)
    peak = float(np.abs(for_model).max()) if for_model.size else 0.0
    if loudness is not None and peak > 0:
        gain_db = min(TARGET_LUFS - loudness, MAX_GAIN_DB, PEAK_CEILING_DBFS - 20 * math.log10(peak))
        for_model = (for_model * 10 ** (gain_db / 20)).astype(np.float32)
    return np.ascontiguousarray(for_model), for_output, {"trimmed_seconds": round(trim, 3),
                                                          "gain_db": round(gain_db, 2)}
