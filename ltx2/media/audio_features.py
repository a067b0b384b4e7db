"""Audio front end for audio-to-video: 16 kHz waveform -> log-mel spectrogram -> audio VAE latents.

The spectrogram must be the one LTX-2's audio VAE was trained on, which ltx-core computes with
torchaudio (`ltx_core/model/audio_vae/ops.py`, `AudioProcessor`): a periodic Hann window of n_fft
samples, centred frames with reflect padding, the STFT *magnitude* (power 1), a Slaney-scale mel
filterbank with Slaney area normalisation from 0 Hz to sample_rate / 2, then log(clamp(x, 1e-5)).
Each channel is transformed on its own; stereo stays stereo. We write it with torch.stft and our
own filterbank so the server needs neither torchaudio nor librosa.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MelConfig:
    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    win_length: int = 1024
    n_mels: int = 64
    f_min: float = 0.0
    f_max: float = 8000.0
    log_floor: float = 1e-5

    @classmethod
    def from_audio_vae(cls, audio_vae) -> MelConfig:
        """What the diffusers audio VAE's config records; the rest is fixed by the reference.

        ltx-core always uses f_min 0 and f_max = sample_rate / 2 (not the checkpoint's mel_fmax,
        which it never reads; both are 8000 Hz for LTX-2).
        """
        c = audio_vae.config
        return cls(sample_rate=int(c.sample_rate), hop_length=int(c.mel_hop_length), n_mels=int(c.mel_bins),
                   f_max=c.sample_rate / 2.0)


# Slaney's mel scale (librosa htk=False, torchaudio mel_scale="slaney"): linear, 3 mels per
# 200 Hz, up to 1 kHz (15 mels), then logarithmic with 27 mels per factor 6.4.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = math.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    log_part = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP
    return np.where(hz >= _MIN_LOG_HZ, log_part, hz / _F_SP)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    log_part = _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
    return np.where(mel >= _MIN_LOG_MEL, log_part, mel * _F_SP)


def slaney_mel_filterbank(cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) float32: triangles evenly spaced in Slaney mels, each of area 1 in Hz."""
    freqs = np.arange(cfg.n_fft // 2 + 1) * cfg.sample_rate / cfg.n_fft
    edges = mel_to_hz(np.linspace(hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max), cfg.n_mels + 2))
    lo, centre, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (centre - lo)
    falling = (hi - freqs) / (hi - centre)
    triangles = np.maximum(0.0, np.minimum(rising, falling))
    return torch.from_numpy(triangles * (2.0 / (hi - lo))).float()


def frames_for(samples: int, cfg: MelConfig = MelConfig()) -> int:
    """Mel frames from `samples` samples: centred framing puts one frame at every hop, 0 included."""
    return 1 + samples // cfg.hop_length


def log_mel(waveform: torch.Tensor, cfg: MelConfig = MelConfig()) -> torch.Tensor:
    """(channels, samples) at cfg.sample_rate -> (1, channels, frames, n_mels) float32 log-mel."""
    wave = torch.as_tensor(waveform)
    if wave.ndim != 2:
        raise ValueError(f"waveform must be (channels, samples), got shape {tuple(wave.shape)}")
    if wave.shape[1] <= cfg.n_fft // 2:
        raise ValueError(f"waveform has {wave.shape[1]} samples; reflect padding needs more than {cfg.n_fft // 2}")
    wave = wave.float()
    window = torch.hann_window(cfg.win_length, periodic=True, device=wave.device)
    spec = torch.stft(wave, cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, window=window,
                      center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
    mel = slaney_mel_filterbank(cfg).to(wave.device) @ spec.abs()  # (channels, n_mels, frames)
    return torch.log(mel.clamp(min=cfg.log_floor)).transpose(1, 2).unsqueeze(0).contiguous()


def samples_for_latents(latent_frames: int, cfg: MelConfig, compression: int = 4) -> int:
    """Samples that `latent_frames` latents stand for (640 per latent frame, 40 ms, for LTX-2)."""
    return latent_frames * compression * cfg.hop_length


@torch.no_grad()
def encode_audio(audio_vae, waveform, latent_frames: int) -> torch.Tensor:
    """16 kHz (channels, samples) -> (1, latent_channels, latent_frames, mel_bins // 4) raw VAE latents.

    Returns the posterior mean in the audio VAE's own latent space, before the pipeline's
    per-channel normalisation: the space of `GenerationResult.audio_latents` and of
    `audio_vae.decode`'s input; on the VAE's device, in its dtype. The waveform is not resampled.
    Mono is duplicated to stereo, as ltx-trainer does.

    Length: the waveform is cut or padded with digital silence to the `latent_frames` * 40 ms it
    stands for, then the latents are cut to `latent_frames` (the causal VAE gives one more: its
    first latent covers mel frame 0 alone). Padding the waveform rather than the latents makes a
    short clip end in encoded silence; a zero latent (ltx-pipelines' choice) is not silence.
    Cutting the waveform changes nothing kept, as the LTX-2 encoder is causal in time: the last
    kept latent reads mel frames up to 4 * (latent_frames - 1), whose windows end before the cut.
    """
    cfg = MelConfig.from_audio_vae(audio_vae)
    wave = torch.as_tensor(waveform, dtype=torch.float32)
    if wave.ndim != 2:
        raise ValueError(f"waveform must be (channels, samples), got shape {tuple(wave.shape)}")
    channels = audio_vae.config.in_channels
    if wave.shape[0] == 1 and channels == 2:
        wave = wave.expand(2, -1)
    if wave.shape[0] != channels:
        raise ValueError(f"the audio VAE takes {channels} channels, got {wave.shape[0]}")
    if latent_frames < 1:
        raise ValueError(f"latent_frames must be at least 1, got {latent_frames}")

    samples = samples_for_latents(latent_frames, cfg, audio_vae.temporal_compression_ratio)
    wave = wave[:, :samples]
    wave = torch.nn.functional.pad(wave, (0, samples - wave.shape[1]))

    param = next(audio_vae.parameters())
    mel = log_mel(wave.to(param.device), cfg)  # float32 features, then the VAE's dtype
    latents = audio_vae.encode(mel.to(param.dtype)).latent_dist.mean
    if latents.shape[2] < latent_frames:
        raise RuntimeError(f"audio VAE gave {latents.shape[2]} latent frames for {samples} samples, "
                           f"fewer than the {latent_frames} asked for")
    return latents[:, :, :latent_frames]
