"""Start/end images and audio-to-video on the tiny preset: the reference semantics, end to end."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
import torch
from PIL import Image

from ltx2 import generate
from ltx2.media.audio_features import encode_audio
from ltx2.pipelines.conditioning import frames_for_duration, image_pixels, keyframe_coords
from ltx2.models.geometry import audio_latent_frames
from ltx2.media.encode import probe_mp4

BASE = {"prompt": "a lighthouse on a cliff, waves crashing", "width": 128, "height": 64, "num_frames": 17,
        "num_inference_steps": 3, "use_multiscale": False}


def png_uri(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def gradient(width=160, height=90, flip=False) -> Image.Image:
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    rgb = np.stack([x, y, 255 - x], axis=-1)
    return Image.fromarray((rgb[:, ::-1] if flip else rgb).astype(np.uint8))


def wav_uri(samples: np.ndarray, rate: int) -> str:
    """(channels, n) float in [-1, 1] -> a 16-bit PCM WAV data URI."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as fh:
        fh.setnchannels(samples.shape[0])
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((samples.T * 32767).astype("<i2").tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def tone(seconds: float, rate: int) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    left = 0.5 * np.sin(2 * np.pi * 330 * t) * np.minimum(1, t * 4)
    right = 0.4 * np.sin(2 * np.pi * 550 * t + 1.0)
    return np.stack([left, right]).astype(np.float32)


def image_latent(model, image, width, height):
    vae = model.pipe.vae
    with torch.no_grad():
        return vae.encode(image_pixels(image, width, height)).latent_dist.mode()[0, :, 0]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.slow
def test_start_image_at_full_strength_is_the_first_latent_frame(model, seed):
    image = gradient()
    result = generate(model, {**BASE, "seed": seed, "image_start": png_uri(image)})
    torch.testing.assert_close(result.video_latents[0, :, 0], image_latent(model, image, 128, 64), atol=1e-5, rtol=1e-5)
    assert result.has_image_start and not result.has_image_end


@pytest.mark.slow
def test_start_image_strength_zero_is_no_image_and_half_lies_between(model):
    image = gradient()
    target = image_latent(model, image, 128, 64)
    plain = generate(model, {**BASE, "seed": 5})
    zero = generate(model, {**BASE, "seed": 5, "image_start": png_uri(image), "image_strength": 0.0})
    np.testing.assert_array_equal(zero.frames, plain.frames)
    assert not zero.has_image_start
    half = generate(model, {**BASE, "seed": 5, "image_start": png_uri(image), "image_strength": 0.5})
    full = generate(model, {**BASE, "seed": 5, "image_start": png_uri(image), "image_strength": 1.0})

    def distance(result):
        return (result.video_latents[0, :, 0] - target).norm().item()

    print(f"first-frame latent distance to the image: strength 0 {distance(zero):.3f}, "
          f"0.5 {distance(half):.3f}, 1.0 {distance(full):.3f}")
    assert distance(full) < 1e-3 < distance(half) < distance(zero)


@pytest.mark.slow
def test_end_image_changes_the_end_and_backward_swaps_the_roles(model):
    start, end = gradient(), gradient(flip=True)
    with_start = {**BASE, "seed": 9, "image_start": png_uri(start)}
    only_start = generate(model, with_start)
    both = generate(model, {**with_start, "image_end": png_uri(end)})
    assert both.has_image_start and both.has_image_end
    # The held first frame is the start image either way; the end image changed what comes after it.
    torch.testing.assert_close(both.video_latents[0, :, 0], only_start.video_latents[0, :, 0])
    assert (both.video_latents[0, :, -1] - only_start.video_latents[0, :, -1]).abs().max() > 1e-3
    backward = generate(model, {**with_start, "image_end": png_uri(end), "interpolation_direction": "backward"})
    torch.testing.assert_close(backward.video_latents[0, :, 0], image_latent(model, end, 128, 64), atol=1e-5, rtol=1e-5)


def test_keyframe_tokens_sit_at_the_last_frame_in_time(model):
    rope = model.pipe.transformer.rope
    coords = keyframe_coords(rope, 2, 4, pixel_frame=16, fps=25, device=torch.device("cpu"))
    assert coords.shape == (1, 3, 8, 2)
    torch.testing.assert_close(coords[0, 0, :, 0], torch.full((8,), 16 / 25))
    torch.testing.assert_close(coords[0, 0, :, 1], torch.full((8,), 17 / 25))
    grid = rope.prepare_video_coords(1, 1, 2, 4, torch.device("cpu"), fps=25)
    torch.testing.assert_close(coords[0, 1:], grid[0, 1:])  # the video's own spatial grid


@pytest.mark.parametrize("num_frames, fps", [(17, 25), (49, 24)])
def test_the_end_keyframe_is_placed_at_the_last_pixel_frame(model, num_frames, fps):
    """The call site, not the helper: prepare_latents appends the end image's tokens in time at the pixel
    frame [num_frames - 1, num_frames), in seconds (the last frame is frame num_frames - 1, counting from 0)."""
    from types import SimpleNamespace

    from ltx2.pipelines import stages

    channels = model.pipe.transformer.config.in_channels
    latent_frames = (num_frames - 1) // 8 + 1
    grid = stages.LatentGrid(latent_frames, 2, 4, 5, 16, num_frames, fps)
    plan = SimpleNamespace(request=SimpleNamespace(audio_strength=1.0))
    end_tokens = torch.randn(1, 8, channels)
    end = stages.ImageCondition(None, 1.0, num_frames - 1)  # where ltx2.keyframes.resolve puts image_end
    video, _ = stages.prepare_latents(model, plan, grid, stages.Conditions(images=[(end, end_tokens)]), 1.0,
                                      torch.Generator().manual_seed(0))
    assert video.own_tokens == latent_frames * 8 and video.latents.shape[1] == video.own_tokens + 8
    keyframe_time = video.coords[0, 0, video.own_tokens:]
    assert torch.all(keyframe_time[:, 0] == (num_frames - 1) / fps) and torch.all(keyframe_time[:, 1] == num_frames / fps)
    torch.testing.assert_close(video.latents[0, video.own_tokens:], end_tokens[0])  # strength 1: starts on it
    assert torch.all(video.strength[0, : video.own_tokens] == 0) and torch.all(video.strength[0, video.own_tokens:] == 1)


@pytest.mark.slow
def test_audio_at_full_strength_is_held_and_is_the_soundtrack(model):
    from ltx2.pipelines.conditioning import decode_conditioning
    from ltx2.schema import GenerateRequest
    from ltx2.serving.service import render

    rate_in = 22_050
    audio = tone(0.9, rate_in)
    request = GenerateRequest(**{**BASE, "num_frames": 17, "seed": 3, "audio": wav_uri(audio, rate_in)})
    result = generate(model, request)
    assert result.has_audio_input
    vae_rate = model.pipe.audio_vae.config.sample_rate
    cond = decode_conditioning(request, vae_rate, model.vocoder_rate)
    frames = audio_latent_frames(17, 25, vae_rate, model.pipe.audio_vae.config.mel_hop_length,
                                 model.pipe.audio_vae_temporal_compression_ratio)
    expected = encode_audio(model.pipe.audio_vae, torch.from_numpy(cond.audio_for_vae), frames)
    torch.testing.assert_close(result.audio_latents, expected.float(), atol=1e-5, rtol=1e-4)

    response = render(model, request)
    assert response.has_audio
    mp4 = base64.b64decode(response.video.split(",", 1)[1])
    track = probe_mp4(mp4)["audio"]
    got = track["samples"].astype(np.float64)
    want = cond.audio_for_output[:, : got.shape[1]].astype(np.float64)
    n = round(17 / 25 * model.vocoder_rate)
    assert abs(got.shape[1] - n) <= 1024  # AAC frames: the track lasts as long as the video
    for ch in (0, 1):  # PyAV drops the AAC encoder delay: the tracks line up sample for sample
        corr = np.corrcoef(got[ch], want[ch])[0, 1]
        print(f"channel {ch}: correlation {corr:.5f} with the input resampled to {model.vocoder_rate} Hz")
        assert corr >= 0.99


@pytest.mark.slow
def test_match_audio_length_takes_the_frames_from_the_audio(model):
    assert frames_for_duration(3.1, 25) == 81  # 77.5 frames: 81 is the nearest 8k+1
    assert frames_for_duration(0.1, 25) == 9 and frames_for_duration(60, 25) == 497
    result = generate(model, {**BASE, "width": 64, "height": 64, "num_inference_steps": 1, "seed": 1,
                              "match_audio_length": True, "audio": wav_uri(tone(3.1, 44_100), 44_100)})
    assert result.num_frames == 81 and result.frames.shape[0] == 81
    assert result.waveform.shape[1] == round(81 / 25 * model.vocoder_rate)


@pytest.mark.slow
def test_audio_below_full_strength_is_regenerated_from_a_noised_copy(model):
    from ltx2.pipelines.conditioning import decode_conditioning
    from ltx2.schema import GenerateRequest

    request = GenerateRequest(**{**BASE, "seed": 4, "audio": wav_uri(tone(0.9, 16_000), 16_000)})
    cond = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate)
    frames = audio_latent_frames(17, 25, 16_000, model.pipe.audio_vae.config.mel_hop_length,
                                 model.pipe.audio_vae_temporal_compression_ratio)
    target = encode_audio(model.pipe.audio_vae, torch.from_numpy(cond.audio_for_vae), frames).float()

    def distance(strength):
        result = generate(model, request.model_copy(update={"audio_strength": strength}))
        return (result.audio_latents - target).norm().item(), result

    far, none = distance(0.0)
    mid, half = distance(0.5)
    print(f"audio latent distance to the input: strength 0 {far:.3f}, 0.5 {mid:.3f}")
    assert 1e-3 < mid < far and half.has_audio_input and not none.has_audio_input
    # Regenerated, not the input: the soundtrack comes from the vocoder, so it differs from the input's.
    assert not np.allclose(half.waveform[:, :1000], cond.audio_for_output[:, :1000], atol=1e-3)


@pytest.mark.slow
def test_video_size_auto_follows_the_start_image(model):
    result = generate(model, {**BASE, "num_inference_steps": 1, "seed": 1, "video_size": "auto",
                              "image_start": png_uri(gradient(200, 100))})
    assert result.width % 32 == 0 and result.height % 32 == 0
    assert abs(result.width / result.height - 2.0) < 0.35
    assert abs(result.width * result.height - 128 * 64) / (128 * 64) < 0.5
    assert result.frames.shape[1:3] == (result.height, result.width)


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"video_size": "auto"}, "video_size", 'video_size "auto" takes its aspect ratio from image_start'),
        ({"match_audio_length": True}, "match_audio_length", "match_audio_length takes the length from audio"),
    ],
)
def test_options_that_need_an_input_say_so(client, fields, field, message):
    response = client.post("/generate", json={**BASE, **fields})
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == field and message in body["error"]
