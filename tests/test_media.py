"""The MP4 as a player sees it: one H.264 stream, one AAC stereo stream of the video's duration."""

import base64
import io

import av
import numpy as np
import pytest

from ltx2.media.encode import encode_mp4, probe_mp4
from ltx2.schema import GenerateRequest
from ltx2.serving.service import render


@pytest.fixture(scope="module")
def mp4(model):
    response = render(model, GenerateRequest(prompt="A dog barking in a park", seed=5))
    assert response.video.startswith("data:video/mp4;base64,")
    return base64.b64decode(response.video.split(",", 1)[1])


@pytest.mark.slow
def test_video_stream(mp4):
    info = probe_mp4(mp4)["video"]
    assert info["codec"] == "h264"
    assert (info["width"], info["height"]) == (288, 512)
    assert info["pix_fmt"] == "yuv420p"
    assert info["fps"] == 25
    assert info["frames"] == 49


def test_audio_stream(mp4):
    info = probe_mp4(mp4)["audio"]
    assert info["codec"] == "aac"
    assert info["channels"] == 2
    assert info["sample_rate"] == 24000
    # Within one frame of num_frames / fps, by container duration and by decoded samples.
    assert abs(info["duration"] - 49 / 25) <= 1 / 25
    assert abs(info["samples"].shape[1] / 24000 - 49 / 25) <= 1 / 25


def test_exactly_one_stream_of_each(mp4):
    with av.open(io.BytesIO(mp4)) as container:
        kinds = sorted(s.type for s in container.streams)
    assert kinds == ["audio", "video"]


def test_no_audio_stream_when_not_included(model):
    response = render(model, GenerateRequest(prompt="x", num_frames=9, seed=1, include_audio=False))
    assert response.has_audio is False
    data = base64.b64decode(response.video.split(",", 1)[1])
    with av.open(io.BytesIO(data)) as container:
        assert [s.type for s in container.streams] == ["video"]
        assert sum(1 for _ in container.decode(video=0)) == 9


def test_soundtrack_survives_the_round_trip():
    # A 440 Hz tone in, the same tone out of the AAC stream (correlation, not just length).
    rate, seconds = 24000, 1.0
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    frames = np.full((25, 64, 64, 3), 128, np.uint8)
    data = encode_mp4(frames, 25, np.stack([tone, tone]), rate)
    decoded = probe_mp4(data)["audio"]["samples"][0]
    # AAC adds encoder delay at the start; align by cross-correlation over a short window.
    window = decoded[: rate // 2]
    lags = [np.dot(window[lag : lag + 2000], tone[:2000]) for lag in range(3000)]
    lag = int(np.argmax(lags))
    aligned = decoded[lag : lag + 12000]
    assert np.corrcoef(aligned, tone[:12000])[0, 1] > 0.99


def test_frames_survive_the_round_trip():
    frames = np.zeros((9, 64, 96, 3), np.uint8)
    frames[:, :, :48] = (200, 40, 40)
    frames[:, :, 48:] = (40, 40, 200)
    first = probe_mp4(encode_mp4(frames, 24))["video"]["first_frame"]
    assert np.abs(first.astype(int) - frames[0].astype(int)).mean() < 4


def test_refuses_odd_sizes_and_wrong_dtype():
    with pytest.raises(ValueError, match="even"):
        encode_mp4(np.zeros((9, 63, 64, 3), np.uint8), 25)
    with pytest.raises(ValueError, match="uint8"):
        encode_mp4(np.zeros((9, 64, 64, 3), np.float32), 25)


@pytest.mark.slow
def test_same_seed_same_file(model):
    # Byte-identical MP4s for the same request (tests/test_formats.py holds it for every format, after
    # other encodes, with threads).
    request = GenerateRequest(prompt="a bell ringing", num_frames=9, seed=21)
    files = {render(model, request).video for _ in range(4)}
    assert len(files) == 1
