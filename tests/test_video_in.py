"""The video input decoder (ltx2/media/video_in.py): frames picked by time at the request's rate, fitted as
ltx-pipelines fits a conditioning video, and every bad or hostile file refused with the field named."""

from __future__ import annotations

import io
import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hostile import audio_only_mp4

from ltx2.media.video_in import VideoLimits, decode_frames, fit_frame, probe_video
from ltx2.schema import InvalidRequest

SIZE = 64
SIZES = ((SIZE, SIZE),)


def colour(i: int) -> tuple[int, int, int]:
    """Source frame i's flat colour: i in base 16 over red and green, levels far enough apart that the codec's
    loss cannot make two frames alike."""
    return 20 + 14 * (i % 16), 20 + 14 * (i // 16), 128


def make_video(times: list[float], fmt: str = "mp4", codec: str = "libx264", size: int = SIZE,
               audio_seconds: float = 0.0) -> bytes:
    """A video whose frame i is flat colour(i), shown from times[i] (milliseconds resolution)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
        if codec == "libx264":
            stream.options = {"crf": "0", "bf": "0"}
        sound = None
        if audio_seconds:
            sound = out.add_stream("aac" if fmt == "mp4" else "libopus", rate=48000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), colour(i), np.uint8), format="rgb24")
            frame.pts = round(t * 1000)
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            samples = int(audio_seconds * 48000)
            wave = (0.1 * np.sin(np.arange(samples) / 10)).astype(np.float32)[None].repeat(2, 0)
            for start in range(0, samples, 960):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 960]), format="fltp",
                                                   layout="stereo")
                chunk.sample_rate = 48000
                chunk.pts = start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return buf.getvalue()


def indices(fitted: torch.Tensor) -> list[int]:
    """Each output frame's source frame, read back from its colour."""
    red, green = ((fitted[0, c].mean(dim=(1, 2)) + 1) * 127.5 for c in (0, 1))
    return [round((float(r) - 20) / 14) + 16 * round((float(g) - 20) / 14) for r, g in zip(red, green)]


def decode(data: bytes, fps: float, num_frames: int, start: float = 0.0, limits: VideoLimits = VideoLimits()):
    fitted, info = decode_frames(data, "video", None, limits, fps, num_frames, SIZES, start)
    return indices(fitted[SIZES[0]]), info


def test_a_video_at_the_request_rate_gives_its_frames_one_for_one():
    frames, info = decode(make_video([i / 25 for i in range(12)]), fps=25, num_frames=12)
    assert frames == list(range(12))
    assert (info.width, info.height, info.family, info.has_audio) == (SIZE, SIZE, "mp4", False)


def test_another_rate_is_resampled_by_time_and_a_start_skips_ahead():
    fifty = make_video([i / 50 for i in range(40)])
    assert decode(fifty, fps=25, num_frames=10)[0] == list(range(0, 20, 2))
    assert decode(fifty, fps=25, num_frames=5, start=0.4)[0] == [20, 22, 24, 26, 28]
    twelve = make_video([i / 12 for i in range(12)])
    # Output k at k / 25 s shows the source frame on screen then: floor(k * 12 / 25).
    assert decode(twelve, fps=25, num_frames=20)[0] == [k * 12 // 25 for k in range(20)]


def test_a_variable_frame_rate_is_read_by_timestamps():
    times = [0.0, 0.04, 0.2, 0.24, 0.28, 0.6]
    frames, _ = decode(make_video(times), fps=25, num_frames=16)
    expected = [max(i for i, t in enumerate(times) if t <= k / 25 + 1e-6) for k in range(16)]
    assert frames == expected


def test_a_video_shorter_than_asked_gives_the_frames_it_has():
    frames, _ = decode(make_video([i / 25 for i in range(5)]), fps=25, num_frames=9)
    assert frames == [0, 1, 2, 3, 4]


def test_webm_and_its_soundtrack_are_read():
    data = make_video([i / 25 for i in range(6)], fmt="webm", codec="libvpx-vp9", audio_seconds=0.3)
    info = probe_video(data, "video", "video/webm", VideoLimits())
    assert info.family == "webm" and info.has_audio
    assert decode(data, fps=25, num_frames=6)[0] == list(range(6))


def test_two_sizes_come_from_the_source_each():
    data = make_video([i / 25 for i in range(3)], size=96)
    fitted, _ = decode_frames(data, "video", None, VideoLimits(), 25, 3, ((64, 32), (128, 64)))
    assert fitted[(64, 32)].shape == (1, 3, 3, 32, 64) and fitted[(128, 64)].shape == (1, 3, 3, 64, 128)


def test_fit_frame_at_the_same_size_is_the_pixels_mapped_to_the_vae_range():
    frame = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    out = fit_frame(frame, 40, 24)
    assert torch.equal(out, torch.from_numpy(frame).float().permute(2, 0, 1) / 127.5 - 1.0)


def test_fit_frame_is_ltx_pipelines_video_preprocess():
    checkout = Path(os.environ.get("LTX_CORE_CHECKOUT", "/tmp/ref")) / "packages" / "ltx-pipelines" / "src"
    deps = Path(os.environ.get("LTX_CORE_DEPS", "/tmp/refdeps"))
    if not checkout.is_dir():
        pytest.skip(f"no ltx-pipelines checkout at {checkout}")
    for path in (checkout, deps, checkout.parents[1] / "ltx-core" / "src"):
        if str(path) not in sys.path:
            sys.path.append(str(path))
    pytest.importorskip("einops")
    import importlib.machinery
    import types

    # ltx-core's audio package imports torchaudio, its EXR reader OpenImageIO: neither is used here.
    placeholders = [name for name in ("torchaudio", "OpenImageIO") if name not in sys.modules]
    for name in placeholders:
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__spec__ = importlib.machinery.ModuleSpec(name, None)
    try:
        from ltx_pipelines.utils.media_io.decode import video_preprocess
    finally:
        for name in placeholders:
            del sys.modules[name]

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (90, 160, 3), dtype=np.uint8) for _ in range(3)]
    for width, height in ((64, 64), (96, 32), (200, 120)):
        theirs = video_preprocess((torch.from_numpy(f)[None] for f in frames), height, width, torch.float32,
                                  torch.device("cpu"))
        ours = torch.stack([fit_frame(f, width, height) for f in frames], dim=1)[None]
        assert torch.equal(ours, theirs), (width, height)


# --- refused, with the field named -----------------------------------------------------------------------------

def refused(data: bytes, limits: VideoLimits = VideoLimits(), mime: str | None = None, **kw) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        decode_frames(data, "video", mime, limits, kw.get("fps", 25), kw.get("num_frames", 9), SIZES)
    assert caught.value.field == "video" and "video" in caught.value.message
    return caught.value


def test_no_video_stream_is_refused():
    assert "no video stream" in refused(audio_only_mp4()).message


def test_a_zero_length_stream_is_refused():
    # A Matroska file whose first cluster is empty and last: its header declares a video track with no frames.
    whole = make_video([0.0, 0.04], fmt="webm", codec="libvpx-vp9")
    header_only = whole[:whole.index(b"\x1f\x43\xb6\x75")] + b"\x1f\x43\xb6\x75\x80"
    assert probe_video(header_only, "video", None, VideoLimits()).width == SIZE
    assert "no frames" in refused(header_only).message


def test_frames_over_the_pixel_limit_are_refused_from_the_header():
    error = refused(make_video([0.0, 0.04], size=128), VideoLimits(max_pixels=64 * 64))
    assert error.status == 413 and "128x128" in error.message


def test_more_frames_than_the_limit_declared_or_decoded_are_refused():
    many = make_video([i / 25 for i in range(30)])
    assert "declares 30 frames" in refused(many, VideoLimits(max_frames=20)).message
    # WebM declares no frame count: the decoder's own count stops it.
    webm = make_video([i / 25 for i in range(30)], fmt="webm", codec="libvpx-vp9")
    assert probe_video(webm, "video", None, VideoLimits()).frames == 0
    assert "more than 20 frames" in refused(webm, VideoLimits(max_frames=20), num_frames=30).message


def test_a_video_longer_than_the_limit_is_refused():
    long = make_video([i for i in range(5)])  # 5 s at 1 fps
    assert "limit is 2 s" in refused(long, VideoLimits(max_seconds=2)).message


def test_not_a_video_and_a_wrong_declared_type_are_refused():
    assert "not in a supported video format" in refused(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).message
    assert "not a readable video" in refused(b"\x1a\x45\xdf\xa3" + b"\xff" * 64).message  # a broken Matroska
    assert "declares video/webm but holds MP4" in refused(make_video([0.0]), mime="video/webm").message
    assert refused(b"").message == "video is empty"
    error = refused(b"x" * 100, VideoLimits(max_bytes=50))
    assert error.status == 413
