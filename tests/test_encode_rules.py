"""The rules of ltx2/media/encode.py on tiny clips (64x64, 9 frames), read back with PyAV: what goes into
the file (tracks, rates, channels, colour tags, codec settings, the index position) and what the encoder
refuses. Expected values come from the README's format tables and from the inputs built here. Fast:
`tools/mutate encode` runs it for every mutant, before test_formats.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import time

import av
import numpy as np
import pytest

from ltx2.media import encode
from ltx2.media.encode import FORMATS, VideoEncoder, encode_video, output_format, probe_video, to_data_uri

W, H, N, FPS, RATE = 64, 64, 9, 25, 24_000


def frames(n: int = N, width: int = W, height: int = H) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        out[i, ..., 0] = (x * 4 + i * 8) % 256
        out[i, ..., 1] = (y * 4) % 256
        out[i, ..., 2] = 100
    return out


def tone(seconds: float, rate: int = RATE, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_the_format_table_is_the_readmes():
    table = {name: (f.container, f.extension, f.mime, f.video_codec, f.pix_fmt, f.audio_codec, f.faststart)
             for name, f in FORMATS.items()}
    assert table == {
        "X264 (.mp4)": ("mp4", ".mp4", "video/mp4", "libx264", "yuv420p", "aac", True),
        "VP9 (.webm)": ("webm", ".webm", "video/webm", "libvpx-vp9", "yuv420p", "libopus", False),
        "PRORES4444 (.mov)": ("mov", ".mov", "video/quicktime", "prores_ks", "yuv444p10le", "aac", True),
        "GIF (.gif)": ("gif", ".gif", "image/gif", "gif", "pal8", None, False),
    }
    assert output_format(None) is FORMATS["X264 (.mp4)"] and output_format("GIF (.gif)") is FORMATS["GIF (.gif)"]


@pytest.mark.parametrize("rate, expected", [(8000, 8000), (12000, 12000), (16000, 16000), (24000, 24000),
                                            (48000, 48000), (44100, 48000), (22050, 48000), (32000, 48000)])
def test_opus_takes_its_five_rates_and_everything_else_at_48k(rate, expected):
    assert encode._audio_rate("libopus", rate) == expected
    assert encode._audio_rate("aac", rate) == rate


@pytest.mark.parametrize("cpus, expected", [(1, 1), (3, 3), (8, 8), (9, 8), (64, 8), (0, 1)])
def test_default_threads_are_the_usable_cpus_up_to_8(monkeypatch, cpus, expected):
    asked = []
    monkeypatch.setattr(encode.os, "sched_getaffinity", lambda pid: asked.append(pid) or set(range(cpus)),
                        raising=False)
    assert encode.default_threads() == expected
    assert asked == [0]  # this process's CPUs


def test_default_threads_without_affinity_use_the_cpu_count(monkeypatch):
    monkeypatch.delattr(encode.os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(encode.os, "cpu_count", lambda: 12)
    assert encode.default_threads() == 8
    monkeypatch.setattr(encode.os, "cpu_count", lambda: None)
    assert encode.default_threads() == 1


@pytest.mark.parametrize("width, height", [(65, 64), (64, 63), (0, 64), (64, 0), (-2, 64), (64, -2)])
def test_the_encoder_needs_positive_even_sizes(width, height):
    with pytest.raises(ValueError, match=f"video frames need even dimensions, got {width}x{height}"):
        VideoEncoder(width, height, FPS)


def test_encoder_options_are_given_by_name():
    with pytest.raises(TypeError):
        VideoEncoder(W, H, FPS, "GIF (.gif)")  # a format passed by position is a mistake waiting to happen


def test_write_checks_each_chunk_and_counts_frames():
    with VideoEncoder(W, H, FPS, output_type="VP9 (.webm)") as encoder:
        for bad, message in ((np.zeros((2, H, W, 3), np.float32), "must be uint8"),
                             (np.zeros((2, H, W, 4), np.uint8), "must be uint8"),
                             (np.zeros((H, W), np.uint8), f"must be uint8 (F, H, W, 3), got uint8 ({H}, {W})"),
                             (np.zeros((H, 3), np.uint8), "must be uint8 (F, H, W, 3)"),
                             (np.zeros((2, H, W, 1), np.uint8), "must be uint8"),
                             (np.zeros((2, H, W, 3), np.int8), "must be uint8"),
                             (np.zeros((2, H, W, 3), bool), "must be uint8"),
                             (np.zeros((1, 2, H, W, 3), np.uint8), "must be uint8"),
                             (np.zeros((2, H, W + 2, 3), np.uint8), f"frames are {W + 2}x{H}, the video is {W}x{H}"),
                             (np.zeros((2, H + 2, W, 3), np.uint8), f"frames are {W}x{H + 2}, the video is {W}x{H}")):
            with pytest.raises(ValueError, match=re.escape(message)):
                encoder.write(bad)
        clip = frames(5)
        encoder.write(clip[0])  # one (H, W, 3) frame
        encoder.write(clip[1:3])
        encoder.write(clip[3:])
        assert encoder.frames_written == 5
        data = encoder.finish()
        with pytest.raises(RuntimeError, match="finished"):
            encoder.finish()
        with pytest.raises(RuntimeError, match="finished"):
            encoder.write(clip)
    info = probe_video(data)
    assert info["video"]["frames"] == 5 and info["audio"] is None


@pytest.mark.parametrize("output_type, codec, audio", [("X264 (.mp4)", "h264", "aac"), ("VP9 (.webm)", "vp9", "opus"),
                                                       ("PRORES4444 (.mov)", "prores", "aac"), ("GIF (.gif)", "gif", None)])
def test_each_format_holds_its_tracks(output_type, codec, audio):
    data = encode_video(frames(), FPS, np.stack([tone(N / FPS)] * 2), RATE, output_type=output_type, threads=1)
    info = probe_video(data)
    assert info["container"].split(",")[0] in {"mov", "matroska", "gif"}
    assert info["video"]["codec"] == codec and info["video"]["frames"] == N
    assert (info["video"]["width"], info["video"]["height"]) == (W, H)
    assert info["video"]["fps"] == pytest.approx(FPS)
    if audio is None:
        assert info["audio"] is None
    else:
        assert info["audio"]["codec"] == audio and info["audio"]["channels"] == 2
        assert info["audio"]["sample_rate"] == (48_000 if audio == "opus" else RATE)  # Opus always decodes at 48k


def test_no_waveform_means_no_audio_track_and_one_is_stereo():
    assert probe_video(encode_video(frames(), FPS, None, threads=1))["audio"] is None
    with VideoEncoder(W, H, FPS, audio_rate=RATE, threads=1) as encoder:
        assert encoder.has_audio
        encoder.write(frames())
        data = encoder.finish(np.stack([tone(N / FPS)] * 2))
    with av.open(io.BytesIO(data)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert container.streams.audio[0].codec_context.layout.name == "stereo"
    with VideoEncoder(W, H, FPS, output_type="GIF (.gif)", audio_rate=RATE) as gif:
        assert not gif.has_audio


def peak_hz(channel: np.ndarray, rate: int) -> float:
    """The loudest frequency of a half second from the middle of a channel (past the codec's start-up)."""
    n = rate // 2
    middle = channel[len(channel) // 2 - n // 2: len(channel) // 2 + n // 2]
    return float(np.argmax(np.abs(np.fft.rfft(middle)))) * rate / len(middle)


def rms(channel: np.ndarray) -> float:
    return float(np.sqrt(np.mean(channel[len(channel) // 4: 3 * len(channel) // 4] ** 2)))


@pytest.mark.parametrize("shape", ["(1, n)", "(n,)"])
def test_mono_is_duplicated_to_both_channels(shape):
    wave = tone(1.0)  # 440 Hz at 0.5: rms 0.354
    data = encode_video(frames(25), FPS, wave[None] if shape == "(1, n)" else wave, RATE, threads=1)
    left, right = probe_video(data)["audio"]["samples"]
    for channel in (left, right):  # the tone in both, not silence in one
        assert peak_hz(channel, RATE) == pytest.approx(440, abs=4)
        assert rms(channel) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_left_and_right_stay_apart_and_extra_channels_are_dropped():
    left_in, right_in = tone(1.0, freq=330), tone(1.0, freq=550)
    wave = np.stack([left_in, right_in, np.ones_like(left_in)])
    left, right = probe_video(encode_video(frames(25), FPS, wave, RATE, threads=1))["audio"]["samples"]
    assert peak_hz(left, RATE) == pytest.approx(330, abs=4) and peak_hz(right, RATE) == pytest.approx(550, abs=4)
    assert rms(left) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)  # no third channel mixed in


def test_samples_beyond_full_scale_are_clipped():
    loud = tone(1.0, amplitude=4.0)
    data = encode_video(frames(25), FPS, np.stack([loud, loud]), RATE, threads=1)
    left = probe_video(data)["audio"]["samples"][0]
    # Clipped to +-1 before the encoder: a near-square wave of rms ~0.9 (unclipped it would be ~2.8).
    assert 0.8 < rms(left) < 1.1


@pytest.mark.parametrize("output_type", ["X264 (.mp4)", "VP9 (.webm)"])
def test_a_waveform_at_another_rate_is_resampled_to_the_tracks(output_type):
    # The track runs at the encoder's audio_rate (24 kHz); a 16 kHz waveform is resampled, keeping its
    # length in seconds and its pitch. Opus decodes at 48 kHz whatever it was encoded at.
    with VideoEncoder(W, H, FPS, output_type=output_type, audio_rate=24_000, threads=1) as encoder:
        encoder.write(frames(25))
        data = encoder.finish(np.stack([tone(1.0, 16_000)] * 2), 16_000)
    audio = probe_video(data)["audio"]
    rate = audio["sample_rate"]
    assert rate == (24_000 if output_type == "X264 (.mp4)" else 48_000)
    assert audio["samples"].shape[1] == pytest.approx(rate, rel=0.06)
    assert peak_hz(audio["samples"][0], rate) == pytest.approx(440, abs=4)


def test_opus_at_an_odd_rate_is_resampled_to_48k():
    data = encode_video(frames(25), FPS, np.stack([tone(1.0, 44_100)] * 2), 44_100, output_type="VP9 (.webm)",
                        threads=1)
    audio = probe_video(data)["audio"]
    assert audio["samples"].shape[1] == pytest.approx(48_000, rel=0.06)
    assert peak_hz(audio["samples"][0], 48_000) == pytest.approx(440, abs=4)


@pytest.mark.parametrize("output_type", ["X264 (.mp4)", "PRORES4444 (.mov)"])
def test_mp4_and_mov_put_the_index_first_and_no_version_string(output_type):
    data = encode_video(frames(), FPS, np.stack([tone(N / FPS)] * 2), RATE, output_type=output_type, threads=1)
    assert 0 <= data.find(b"moov") < data.find(b"mdat")
    assert b"Lavf" not in data


def test_webm_is_bit_exact():
    data = encode_video(frames(), FPS, np.stack([tone(N / FPS)] * 2), RATE, output_type="VP9 (.webm)", threads=1)
    assert re.search(rb"Lav[fc]\d", data) is None  # no library version
    assert data == encode_video(frames(), FPS, np.stack([tone(N / FPS)] * 2), RATE, output_type="VP9 (.webm)",
                                threads=1)


def x264_settings(data: bytes) -> str:
    return re.search(rb"x264 - core .*?options: ([^\x00]*)", data).group(1).decode()


@pytest.mark.parametrize("quality, crf", [("low", 28), ("medium", 23), ("high", 18), ("maximum", 12)])
def test_x264_quality_is_its_crf(quality, crf):
    settings = x264_settings(encode_video(frames(), FPS, quality=quality, threads=1))
    assert f" crf={crf}.0 " in settings


def test_videos_are_tagged_bt709_limited_range():
    for output_type in ("X264 (.mp4)", "VP9 (.webm)", "PRORES4444 (.mov)"):
        with av.open(io.BytesIO(encode_video(frames(), FPS, output_type=output_type, threads=1))) as container:
            ctx = container.streams.video[0].codec_context
            assert (ctx.color_primaries, ctx.color_trc, ctx.colorspace, ctx.color_range) == (1, 1, 1, 1), output_type


def test_frames_come_back_as_sent_in_every_format():
    clip = np.zeros((N, H, W, 3), np.uint8)
    clip[:, :, : W // 2] = (200, 40, 40)
    clip[:, :, W // 2:] = (40, 40, 200)
    for output_type in FORMATS:
        info = probe_video(encode_video(clip, FPS, output_type=output_type, threads=1))
        for frame in (info["video"]["first_frame"], info["video"]["last_frame"]):
            assert np.abs(frame.astype(int) - clip[0].astype(int)).mean() < 6, output_type


def test_prores_quality_is_its_fixed_quantiser():
    sizes = [len(encode_video(frames(), FPS, output_type="PRORES4444 (.mov)", quality=q, threads=1))
             for q in ("low", "maximum")]
    assert sizes[0] < sizes[1]
    with av.open(io.BytesIO(encode_video(frames(), FPS, output_type="PRORES4444 (.mov)", threads=1))) as container:
        assert container.streams.video[0].codec_context.profile == "4444"
        assert container.streams.video[0].codec_tag == "ap4h"


@pytest.mark.parametrize("quality, colours", [("low", 32), ("maximum", 255)])
def test_gif_palette_has_the_qualitys_colours_and_one_transparent_entry(quality, colours):
    from PIL import Image

    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)  # noise: every palette entry gets used
    image = Image.open(io.BytesIO(encode_video(clip, 10, output_type="GIF (.gif)", quality=quality)))
    assert image.mode == "P" and len(np.unique(np.asarray(image))) == colours


@pytest.mark.parametrize("width, tiles", [(64, 0), (510, 0), (512, 1), (1024, 2), (2048, 3), (3840, 3),
                                          (16384, 6), (32768, 6)])
def test_vp9_tile_columns_follow_the_width(width, tiles):
    # log2 of the width in whole 256-pixel columns, floored: 510 (one column) -> 0, 512 -> 1, 1024 -> 2,
    # 3840 (15 columns) -> 3; libvpx takes at most 6 (64 columns), reached at 16384.
    with VideoEncoder(width, 64, FPS, output_type="VP9 (.webm)", threads=1) as encoder:
        assert encoder._video.stream.options["tile-columns"] == str(tiles)
        assert encoder._video.stream.options["crf"] == "31" and encoder._video.stream.options["b"] == "0"
        assert (encoder._video.stream.options["deadline"], encoder._video.stream.options["cpu-used"]) == ("good", "5")


def test_data_uri():
    assert to_data_uri(b"\x00\x01video") == "data:video/mp4;base64,AAF2aWRlbw=="
    assert to_data_uri(b"GIF", "image/gif") == "data:image/gif;base64,R0lG"


def test_a_closed_encoder_takes_nothing_more_and_its_thread_never_holds_the_process():
    encoder = VideoEncoder(W, H, FPS, output_type="VP9 (.webm)", threads=1)
    assert encoder._thread.daemon
    encoder.close()
    with pytest.raises(RuntimeError, match="finished"):
        encoder.write(frames(1))
    with pytest.raises(RuntimeError, match="finished"):
        encoder.finish()


def test_a_failed_start_leaves_no_temporary_directory(monkeypatch, tmp_path):
    monkeypatch.setattr(encode.tempfile, "tempdir", str(tmp_path))

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(encode.av, "open", refuse)
    with pytest.raises(OSError):
        VideoEncoder(W, H, FPS)
    assert list(tmp_path.iterdir()) == []


def test_an_abandoned_encoder_removes_its_temporary_file():
    encoder = VideoEncoder(W, H, FPS, threads=1)
    encoder.write(frames(2))
    directory = encoder._tmpdir
    encoder.close()
    import os

    assert directory is not None and not os.path.exists(directory)
    assert VideoEncoder(W, H, FPS, output_type="VP9 (.webm)")._tmpdir is None


def test_the_quality_and_write_mode_tables_are_the_readmes():
    # README, "Output formats": video_quality and video_write_mode per codec.
    assert encode.QUALITY == {
        "libx264": {"low": 28, "medium": 23, "high": 18, "maximum": 12},
        "libvpx-vp9": {"low": 42, "medium": 36, "high": 31, "maximum": 20},
        "prores_ks": {"low": 12, "medium": 6, "high": 3, "maximum": 1},
        "gif": {"low": 32, "medium": 64, "high": 128, "maximum": 255},
        "aac": {"low": 96_000, "medium": 128_000, "high": 192_000, "maximum": 256_000},
        "libopus": {"low": 64_000, "medium": 96_000, "high": 128_000, "maximum": 192_000},
    }
    assert encode.WRITE_MODE == {
        "libx264": {"fast": "superfast", "balanced": "veryfast", "small": "medium"},
        "libvpx-vp9": {"fast": ("realtime", 8), "balanced": ("good", 5), "small": ("good", 2)},
    }
    from PIL import Image

    # GIF: fast does not dither and takes its palette from every 8th frame at 1/4 size; balanced dithers
    # (Floyd-Steinberg); small does not, both sampling every 4th frame at 1/2 size.
    assert encode.GIF_MODES == {"fast": (Image.Dither.NONE, 8, 4), "balanced": (Image.Dither.FLOYDSTEINBERG, 4, 2),
                                "small": (Image.Dither.NONE, 4, 2)}
    assert encode.MAX_THREADS == 8


def test_an_output_format_is_an_immutable_value():
    with pytest.raises(AttributeError):
        FORMATS["X264 (.mp4)"].faststart = False
    assert hash(FORMATS["GIF (.gif)"]) == hash(output_format("GIF (.gif)"))


# --- the encoding thread: its bound, and failures reaching the caller -------------------------------


def _in_thread(target, *args) -> tuple[threading.Thread, dict]:
    """Run target(*args) on a daemon thread (a hung encoder must not hold the test process); the
    result or the exception lands in the dict."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = target(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _hold_first_chunk(encoder: VideoEncoder, then) -> tuple[threading.Event, threading.Event]:
    """Make the encoding thread stop inside its first chunk until released, then call `then(chunk)`."""
    busy, release = threading.Event(), threading.Event()
    real = encoder._video.encode

    def held(chunk):
        if not busy.is_set():
            busy.set()
            release.wait(20)
            return then(chunk)
        return real(chunk)

    encoder._video.encode = held
    return busy, release


def test_at_most_two_chunks_wait_for_the_encoder():
    encoder = VideoEncoder(W, H, FPS, output_type="VP9 (.webm)", threads=1)
    busy, release = _hold_first_chunk(encoder, encoder._video.encode)
    written = []

    def writer():
        for _ in range(5):
            encoder.write(frames(1))
            written.append(1)

    thread, outcome = _in_thread(writer)
    try:
        assert busy.wait(10)
        deadline = time.monotonic() + 10
        while len(written) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # room for a fourth write to get through, if it could
        # One chunk in the encoder's hands and two waiting: the fourth write waits for room.
        assert len(written) == 3 and thread.is_alive()
    finally:
        release.set()
    thread.join(20)
    assert not thread.is_alive() and "error" not in outcome and len(written) == 5
    assert probe_video(encoder.finish())["video"]["frames"] == 5


def test_a_failed_chunk_fails_the_encode_even_with_writers_waiting_behind_it():
    encoder = VideoEncoder(W, H, FPS, output_type="VP9 (.webm)", threads=1)

    def broken(chunk):
        raise RuntimeError("the codec broke")

    busy, release = _hold_first_chunk(encoder, broken)
    encoder.write(frames(1))
    assert busy.wait(10)
    encoder.write(frames(1))
    encoder.write(frames(1))  # the queue is full now
    blocked, blocked_outcome = _in_thread(encoder.write, frames(1))
    time.sleep(0.2)
    release.set()
    blocked.join(10)
    assert not blocked.is_alive(), "a writer waiting for room was left waiting after the encoder failed"
    finishing, outcome = _in_thread(encoder.finish)
    finishing.join(10)
    assert not finishing.is_alive(), "finish() hung after a failed chunk"
    assert isinstance(outcome.get("error"), RuntimeError) and "the codec broke" in str(outcome["error"])
    with pytest.raises(RuntimeError, match="finished"):
        encoder.write(frames(1))


def test_a_failed_flush_fails_finish_instead_of_returning_a_short_file():
    encoder = VideoEncoder(W, H, FPS, threads=1)

    def broken_flush():
        raise RuntimeError("flush failed")

    encoder._video.flush = broken_flush
    encoder.write(frames(3))
    finishing, outcome = _in_thread(encoder.finish)
    finishing.join(20)
    assert not finishing.is_alive()
    assert isinstance(outcome.get("error"), RuntimeError) and "flush failed" in str(outcome["error"])
    assert "value" not in outcome


def _open_paths() -> list[str]:
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_an_abandoned_encoder_closes_its_file():
    encoder = VideoEncoder(W, H, FPS, threads=1)  # MP4: written to a temporary file, then read back
    directory = encoder._tmpdir
    deadline = time.monotonic() + 20
    while not any(path.startswith(directory) for path in _open_paths()):  # opened at the first packet
        assert time.monotonic() < deadline, "the encoder never opened its file"
        encoder.write(frames(8))
        time.sleep(0.05)
    encoder.close()
    assert not any(directory in path for path in _open_paths())


class _CloseFails:
    """A container whose close fails, as on a disk that filled up while the index was written."""

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        return getattr(self._inner, name)

    def close(self):
        self._inner.close()
        raise OSError(28, "No space left on device")


def test_a_failing_close_still_removes_the_temporary_file(monkeypatch):
    real_open = encode.av.open
    monkeypatch.setattr(encode.av, "open", lambda *args, **kwargs: _CloseFails(real_open(*args, **kwargs)))
    finished = VideoEncoder(W, H, FPS, threads=1)
    finished.write(frames(2))
    with pytest.raises(OSError, match="No space left"):
        finished.finish()
    assert not os.path.exists(finished._tmpdir)
    abandoned = VideoEncoder(W, H, FPS, threads=1)
    abandoned.write(frames(2))
    abandoned.close()  # abandoning is best effort: it never raises
    assert not os.path.exists(abandoned._tmpdir)


@pytest.mark.parametrize("output_type", ["X264 (.mp4)", "VP9 (.webm)", "PRORES4444 (.mov)", "GIF (.gif)"])
def test_the_first_frame_is_shown_at_time_zero(output_type):
    # A video that starts a frame late plays a frame behind its soundtrack.
    with av.open(io.BytesIO(encode_video(frames(), FPS, output_type=output_type, threads=1))) as container:
        times = [frame.time for frame in container.decode(container.streams.video[0])]
    assert times[0] == 0.0
    assert times == pytest.approx([i / FPS for i in range(N)])


def test_gif_colours_are_the_centres_of_their_5_bit_buckets():
    # The palette is chosen at 5 bits a channel, each value standing for the middle of its bucket of
    # 8: a flat colour comes back as (c // 8) * 8 + 4 in each channel.
    colours = np.array([(37, 200, 90), (3, 130, 250), (77, 11, 164)], np.uint8)
    clip = np.empty((N, H, W, 3), np.uint8)
    for i, colour in enumerate(colours):
        clip[:, :, i * W // 3:(i + 1) * W // 3] = colour
    clip[:, :, 3 * (W // 3):] = colours[-1]
    info = probe_video(encode_video(clip, 10, output_type="GIF (.gif)", write_mode="small"))
    expected = (clip[0].astype(int) // 8) * 8 + 4
    for frame in (info["video"]["first_frame"], info["video"]["last_frame"]):
        assert np.array_equal(frame.astype(int), expected)


@pytest.fixture
def fresh_x264_flags():
    encode._x264_cpu_flags.cache_clear()
    yield
    encode._x264_cpu_flags.cache_clear()  # the next encode detects again, on the real machine


def test_x264_chooses_its_own_routines_when_its_library_cannot_be_asked(monkeypatch, fresh_x264_flags):
    import ctypes.util

    monkeypatch.setattr(encode.platform, "machine", lambda: "x86_64")
    # Not loadable; loadable but without x264_cpu_detect; not found at all: no flags, no error.
    for found in ("/nonexistent/libx264.so.164", ctypes.util.find_library("c"), None):
        monkeypatch.setattr(encode, "_find_libx264", lambda found=found: found)
        encode._x264_cpu_flags.cache_clear()
        assert encode._x264_cpu_flags() is None, found
    monkeypatch.setattr(encode.platform, "machine", lambda: "aarch64")  # x264's AVX-512 is x86 only
    monkeypatch.setattr(encode, "_find_libx264", lambda: pytest.fail("looked for x264 on ARM"))
    encode._x264_cpu_flags.cache_clear()
    assert encode._x264_cpu_flags() is None


@pytest.mark.parametrize("output_type", ["X264 (.mp4)", "VP9 (.webm)", "PRORES4444 (.mov)"])
def test_the_soundtrack_starts_with_the_first_frame(output_type):
    data = encode_video(frames(), FPS, np.stack([tone(N / FPS)] * 2), RATE, output_type=output_type, threads=1)
    with av.open(io.BytesIO(data)) as container:
        first_audio = next(container.decode(container.streams.audio[0])).time
    with av.open(io.BytesIO(data)) as container:
        first_video = next(container.decode(container.streams.video[0])).time
    assert first_audio == first_video == 0.0


def test_encode_video_takes_keywords_and_a_24khz_soundtrack_by_default():
    # The vocoder's rate is the default: a waveform given without its rate is taken as 24 kHz.
    data = encode_video(frames=frames(25), fps=FPS, waveform=np.stack([tone(1.0)] * 2), threads=1)
    audio = probe_video(data)["audio"]
    assert audio["sample_rate"] == 24_000
    assert peak_hz(audio["samples"][0], 24_000) == pytest.approx(440, abs=4)


@pytest.mark.parametrize("clip", [
    np.zeros((H, W, 3), np.uint8),  # one frame without the frame axis
    np.zeros((1, N, H, W, 3), np.uint8),  # a batch of clips
    np.zeros((N, H, W, 4), np.uint8),  # RGBA
    np.zeros((N, H, W, 2), np.uint8),
    np.zeros((N, H, W, 3), np.float32),  # floats in [0, 1], not bytes
    np.zeros((N, H, W, 3), np.int8),
])
def test_encode_video_takes_uint8_rgb_clips_only(clip):
    with pytest.raises(ValueError, match=r"frames must be uint8 \(F, H, W, 3\)"):
        encode_video(clip, FPS, threads=1)


class _FakeX264:
    def __init__(self, flags: int):
        self.x264_cpu_detect = lambda: flags


@pytest.mark.parametrize("detected, expected", [
    ((1 << 16) | (1 << 15) | 0b111, (1 << 15) | 0b111),  # AVX-512 found: everything but AVX-512
    ((1 << 15) | 0b111, None),  # no AVX-512: x264 detects for itself
])
def test_x264_flags_drop_avx512_only(monkeypatch, fresh_x264_flags, detected, expected):
    monkeypatch.setattr(encode.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(encode, "_find_libx264", lambda: "/opt/libx264.so.164")
    monkeypatch.setattr(encode.ctypes, "CDLL", lambda path: _FakeX264(detected))
    assert encode._x264_cpu_flags() == expected


def test_the_libx264_is_the_one_loaded_even_in_a_folder_with_spaces(monkeypatch):
    maps = ("7f0000000000-7f0000001000 r--p 00000000 08:01 42 /usr/lib/libc.so.6\n"
            "7f0000002000-7f0000003000 r-xp 00001000 08:01 43 /opt/my libs/libx264.so.164\n")

    def fake_open(path, *args, **kwargs):
        assert path == "/proc/self/maps"
        return io.StringIO(maps)

    monkeypatch.setattr(encode, "open", fake_open, raising=False)
    assert encode._find_libx264() == "/opt/my libs/libx264.so.164"


def test_without_proc_the_libx264_bundled_with_pyav_is_used(monkeypatch):
    def no_proc(path, *args, **kwargs):
        raise OSError(2, "No such file or directory", path)

    asked = []

    def fake_glob(pattern):
        asked.append(os.path.basename(pattern))
        return ["/w/av.libs/libx264-b.so.164", "/w/av.libs/libx264-a.so.164"] if "av.libs" in pattern else []

    monkeypatch.setattr(encode, "open", no_proc, raising=False)
    monkeypatch.setattr(encode.glob, "glob", fake_glob)
    monkeypatch.setattr(encode.ctypes.util, "find_library", lambda name: pytest.fail("looked past PyAV's own"))
    assert encode._find_libx264() == "/w/av.libs/libx264-a.so.164"  # the first by name: the same every run
    assert asked == ["libx264*"]


def _phase_at(signal: np.ndarray, rate: int, freq: float) -> float:
    """The phase of `freq` in the middle half of `signal`, against sin(2 pi f t) from the first sample."""
    t = np.arange(len(signal)) / rate
    middle = slice(len(signal) // 4, 3 * len(signal) // 4)
    return float(np.arctan2(np.sum(signal[middle] * np.cos(2 * np.pi * freq * t[middle])),
                            np.sum(signal[middle] * np.sin(2 * np.pi * freq * t[middle]))))


@pytest.mark.parametrize("output_type", ["X264 (.mp4)", "VP9 (.webm)", "PRORES4444 (.mov)"])
def test_the_soundtrack_is_sample_aligned(output_type):
    # One sample early or late is a phase of 2 pi 440 / 24000 = 0.115 rad at 440 Hz; the encoders'
    # own delay (AAC priming, Opus pre-skip) is taken out by the file's own bookkeeping.
    data = encode_video(frames(25), FPS, np.stack([tone(1.0)] * 2), RATE, output_type=output_type, threads=1)
    audio = probe_video(data)["audio"]
    assert abs(_phase_at(audio["samples"][0], audio["sample_rate"], 440.0)) < 0.03


def test_probe_video_reports_the_first_and_last_frames_and_the_duration():
    clip = np.zeros((N, H, W, 3), np.uint8)
    clip[:, :, :, 0] = np.arange(N)[:, None, None] * 25  # each frame its own level of red
    info = probe_video(encode_video(clip, FPS, np.stack([tone(N / FPS)] * 2), RATE, threads=1))
    video = info["video"]
    assert (video["frames"], video["width"], video["height"], video["fps"]) == (N, W, H, FPS)
    assert abs(int(video["first_frame"][..., 0].mean()) - 0) <= 3
    assert abs(int(video["last_frame"][..., 0].mean()) - (N - 1) * 25) <= 3
    assert info["duration"] == pytest.approx(N / FPS, rel=1e-9)  # 9 frames at 25 fps: 0.36 s
    assert info["audio"]["samples"].shape[0] == 2
    assert info["audio"]["duration"] == pytest.approx(N / FPS, abs=1024 / RATE)  # within one AAC frame


@pytest.mark.parametrize("output_type", ["X264 (.mp4)", "VP9 (.webm)"])
def test_an_empty_waveform_is_refused_in_words(output_type):
    encoder = VideoEncoder(W, H, FPS, output_type=output_type, audio_rate=RATE, threads=1)
    encoder.write(frames())
    with pytest.raises(ValueError, match="the waveform holds no samples"):
        encoder.finish(np.zeros((2, 0), np.float32))
    assert encoder._tmpdir is None or not os.path.exists(encoder._tmpdir)
