"""Muxing: frames and a waveform -> a video file in memory, with PyAV, in-process (no ffmpeg subprocess).

Four formats, the seed's `video_output_type` values: H.264 + AAC in MP4, VP9 + Opus in WebM, ProRes
4444 + AAC in MOV, and GIF (no audio). `video_quality` picks each codec's quality control and
`video_write_mode` its speed preset, from the tables below (the API's docs say the same).

`VideoEncoder` takes frames in chunks as they are decoded and encodes them on a thread of its own,
so encoding can overlap a chunked VAE decode; `encode_video` is the one-call form.

Same input, same bytes: x264 runs without its AVX-512 routines (they read past the end of a row of
macroblocks, see `_x264_cpu_flags`), containers are written bit-exact (no random Matroska UIDs, no
library version strings), and threaded encoders split work by slices, which does not depend on
timing. The bytes do depend on the thread count (`threads`), which is why it is a setting.
"""

from __future__ import annotations

import base64
import ctypes
import ctypes.util
import glob
import io
import os
import platform
import queue
import shutil
import tempfile
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter
from PIL import Image

from ..schema import DEFAULT_OUTPUT_TYPE


@dataclass(frozen=True)
class OutputFormat:
    output_type: str  # the request's video_output_type
    container: str  # FFmpeg muxer
    extension: str
    mime: str
    video_codec: str
    pix_fmt: str
    audio_codec: str | None  # None: the container carries no audio
    faststart: bool  # the index (moov) before the media, so playback starts before the download ends


FORMATS: dict[str, OutputFormat] = {
    "X264 (.mp4)": OutputFormat("X264 (.mp4)", "mp4", ".mp4", "video/mp4", "libx264", "yuv420p", "aac", True),
    "VP9 (.webm)": OutputFormat("VP9 (.webm)", "webm", ".webm", "video/webm", "libvpx-vp9", "yuv420p", "libopus",
                                False),
    "PRORES4444 (.mov)": OutputFormat("PRORES4444 (.mov)", "mov", ".mov", "video/quicktime", "prores_ks",
                                      "yuv444p10le", "aac", True),
    "GIF (.gif)": OutputFormat("GIF (.gif)", "gif", ".gif", "image/gif", "gif", "pal8", None, False),
}

# video_quality -> each codec's quality control. x264 and VP9: constant-quality CRF (lower is better;
# 18 is visually lossless for H.264, 31 is Google's recommendation for 1080p VP9). ProRes: prores_ks's
# fixed quantiser (1 is near lossless; a fixed one, as rate control on noise took 20x longer). GIF:
# colours in the palette. Audio: the bitrate.
QUALITY: dict[str, dict[str, int]] = {
    "libx264": {"low": 28, "medium": 23, "high": 18, "maximum": 12},
    "libvpx-vp9": {"low": 42, "medium": 36, "high": 31, "maximum": 20},
    "prores_ks": {"low": 12, "medium": 6, "high": 3, "maximum": 1},
    "gif": {"low": 32, "medium": 64, "high": 128, "maximum": 255},  # and one transparent entry
    "aac": {"low": 96_000, "medium": 128_000, "high": 192_000, "maximum": 256_000},
    "libopus": {"low": 64_000, "medium": 96_000, "high": 128_000, "maximum": 192_000},
}

# video_write_mode -> each codec's speed. x264: its preset (on grainy footage medium's files are a fifth
# smaller than veryfast's, at 7x the time). VP9: libvpx's deadline and cpu-used (higher is faster).
# ProRes is intra-only with no presets: the write mode does not change it. GIF: see GIF_MODES.
WRITE_MODE: dict[str, dict[str, object]] = {
    "libx264": {"fast": "superfast", "balanced": "veryfast", "small": "medium"},
    "libvpx-vp9": {"fast": ("realtime", 8), "balanced": ("good", 5), "small": ("good", 2)},
}
# GIF (Pillow's dithering; sample every nth frame at 1/step size for the palette): fast samples less and
# does not dither; balanced dithers (Floyd-Steinberg), smoothest; small does not dither, so still areas
# stay identical from frame to frame and the GIF stores only the rectangle that changed.
GIF_MODES = {"fast": (Image.Dither.NONE, 8, 4), "balanced": (Image.Dither.FLOYDSTEINBERG, 4, 2),
             "small": (Image.Dither.NONE, 4, 2)}

MAX_THREADS = 8  # past this x264's slices get thin and the gain is small


def default_threads() -> int:
    """Encoder threads when the setting says auto: the CPUs this process may use, at most MAX_THREADS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS))


def output_format(output_type: str | None) -> OutputFormat:
    return FORMATS[output_type or DEFAULT_OUTPUT_TYPE]


class VideoEncoder:
    """Encode one video incrementally: `write()` frames in chunks, then `finish(waveform)` -> the file's bytes.

    Frames are encoded on a thread of the encoder's own while the caller produces the next chunk; at
    most two chunks wait, so memory stays bounded. Use it as a context manager (or call `close()`) so an
    abandoned encode releases its thread and temporary file.
    """

    def __init__(self, width: int, height: int, fps: int, *, output_type: str = DEFAULT_OUTPUT_TYPE,
                 quality: str = "high", write_mode: str = "balanced", audio_rate: int | None = None,
                 threads: int | None = None):
        if width % 2 or height % 2 or width <= 0 or height <= 0:
            raise ValueError(f"video frames need even dimensions, got {width}x{height}")
        self.format = output_format(output_type)
        self.width, self.height, self.fps = width, height, fps
        self.quality, self.write_mode = quality, write_mode
        self.threads = threads or default_threads()
        self.frames_written = 0
        self._tmpdir = tempfile.mkdtemp(prefix="ltx2-encode-") if self.format.faststart else None
        self._target = os.path.join(self._tmpdir, "video" + self.format.extension) if self._tmpdir else io.BytesIO()
        self._error: BaseException | None = None
        self._done = False
        try:
            self._container = av.open(self._target, mode="w", format=self.format.container,
                                      container_options=self._container_options())
            self._video = _VideoTrack(self._container, self)
            self._audio = None
            if audio_rate and self.format.audio_codec:
                self._audio = self._container.add_stream(self.format.audio_codec, rate=_audio_rate(
                    self.format.audio_codec, audio_rate))
                self._audio.layout = "stereo"
                self._audio.bit_rate = QUALITY[self.format.audio_codec][quality]
        except BaseException:
            self._cleanup()
            raise
        self._queue: queue.Queue = queue.Queue(maxsize=2)
        self._thread = threading.Thread(target=self._encode_chunks, name="ltx2-encode", daemon=True)
        self._thread.start()

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def _container_options(self) -> dict[str, str]:
        # bitexact: no random Matroska segment/track UIDs and no library version in the file.
        # max_interleave_delta 0: hold video packets until the audio's arrive (it is encoded last), so the
        # two are interleaved by time however long the clip.
        options = {"fflags": "+bitexact", "max_interleave_delta": "0"}
        if self.format.faststart:
            options["movflags"] = "+faststart"
        return options

    def write(self, frames: np.ndarray) -> None:
        """Queue (n, H, W, 3) uint8 RGB frames (or one (H, W, 3) frame) to be encoded in order."""
        if self._done:
            raise RuntimeError("the encoder has finished")
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        _check_frames(frames)
        if frames.shape[1:3] != (self.height, self.width):
            raise ValueError(f"frames are {frames.shape[2]}x{frames.shape[1]}, the video is {self.width}x{self.height}")
        self._raise_if_failed()
        self._queue.put(frames)
        self.frames_written += len(frames)

    def finish(self, waveform: np.ndarray | None = None, sample_rate: int | None = None) -> bytes:
        """Flush the video, encode the soundtrack ((channels, samples) float in [-1, 1]; mono is
        duplicated), close the file and return its bytes."""
        if self._done:
            raise RuntimeError("the encoder has finished")
        self._done = True
        try:
            self._queue.put(None)
            self._thread.join()
            self._raise_if_failed()
            if self._audio is not None and waveform is not None:
                _encode_audio(self._container, self._audio, waveform, sample_rate or self._audio.rate)
            self._container.close()
            if isinstance(self._target, io.BytesIO):
                return self._target.getvalue()
            with open(self._target, "rb") as fh:
                return fh.read()
        finally:
            self._cleanup()

    def close(self) -> None:
        """Abandon the encode (after an error elsewhere): stop the thread, drop the file."""
        if not self._done:
            self._done = True
            self._queue.put(None)
            self._thread.join()
        self._cleanup()

    def __enter__(self) -> VideoEncoder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _encode_chunks(self) -> None:
        while (frames := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep draining so write() never blocks on a dead thread
            try:
                self._video.encode(frames)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                self._error = exc
        if self._error is None:
            try:
                self._video.flush()
            except BaseException as exc:  # noqa: BLE001
                self._error = exc

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _cleanup(self) -> None:
        container = getattr(self, "_container", None)
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - already closed, or closing a failed file
                pass
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)


class _VideoTrack:
    """The video stream of one file: its codec settings, the RGB conversion, and encoding."""

    def __init__(self, container, encoder: VideoEncoder):
        fmt, quality, mode, threads = encoder.format, encoder.quality, encoder.write_mode, encoder.threads
        self.container, self.fmt, self.index = container, fmt, 0
        codec = fmt.video_codec
        self.stream = container.add_stream(codec, rate=Fraction(encoder.fps, 1))
        ctx = self.stream.codec_context
        self.stream.width, self.stream.height, self.stream.pix_fmt = encoder.width, encoder.height, fmt.pix_fmt
        self.time_base = Fraction(1, encoder.fps)
        self.threads = threads
        self.palette = None
        if codec == "gif":
            self.gif = _GifPalette(QUALITY["gif"][quality], mode)
            self.stream.options = {"gifflags": "+offsetting+transdiff"}
            return
        self.gif = None
        # BT.709, limited range, tagged in the stream: what players assume for HD video.
        ctx.colorspace, ctx.color_range = Colorspace.ITU709, ColorRange.MPEG
        ctx.color_primaries, ctx.color_trc = 1, 1  # AVCOL_PRI_BT709, AVCOL_TRC_BT709
        ctx.thread_type, ctx.thread_count = "SLICE", threads
        self.reformatter = VideoReformatter()
        if codec == "libx264":
            options = {"crf": str(QUALITY[codec][quality]), "preset": WRITE_MODE[codec][mode],
                       "threads": str(threads)}
            if (flags := _x264_cpu_flags()) is not None:
                options["x264-params"] = f"asm={flags}"
        elif codec == "libvpx-vp9":
            deadline, cpu_used = WRITE_MODE[codec][mode]
            # Constant quality (b:v 0 + crf); tiles and row threads split each frame, deterministically.
            tiles = max(0, min(int(np.log2(max(encoder.width // 256, 1))), 6))
            options = {"crf": str(QUALITY[codec][quality]), "b": "0", "deadline": deadline,
                       "cpu-used": str(cpu_used), "row-mt": "1", "tile-columns": str(tiles),
                       "threads": str(threads)}
        else:  # ProRes 4444 from 10-bit 4:4:4, at a fixed quantiser (PyAV scales global_quality to lambda)
            ctx.qscale = True
            ctx.global_quality = QUALITY[codec][quality]
            options = {"profile": "4444", "vendor": "apl0"}
        self.stream.options = options

    def encode(self, frames: np.ndarray) -> None:
        for rgb in frames:
            if self.gif is not None:
                self.gif.observe(rgb)
                continue
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame = self.reformatter.reformat(frame, format=self.fmt.pix_fmt, dst_colorspace=Colorspace.ITU709,
                                              dst_color_range=ColorRange.MPEG, threads=self.threads)
            self._send(frame)

    def flush(self) -> None:
        if self.gif is not None:
            for frame in self.gif.frames():
                self._send(frame)
        for packet in self.stream.encode():
            self.container.mux(packet)

    def _send(self, frame) -> None:
        frame.pts, frame.time_base = self.index, self.time_base
        self.index += 1
        for packet in self.stream.encode(frame):
            self.container.mux(packet)


class _GifPalette:
    """GIF: one palette for the whole clip, by Pillow's median cut over a sample of the frames, then each
    frame mapped onto it by Pillow (nearest colour, or Floyd-Steinberg dithering). FFmpeg's palettegen
    and paletteuse did the same but took minutes on noise, the tiny preset's output: every pixel a new
    colour for their caches. The frames are kept (the caller's arrays, not copies) until the palette is
    known; the last palette entry is transparent, so the encoder can store only what changed."""

    def __init__(self, colours: int, mode: str):
        self.colours = colours
        self.dither, self.every, self.step = GIF_MODES[mode]
        self.kept: list[np.ndarray] = []

    def observe(self, rgb: np.ndarray) -> None:
        self.kept.append(rgb)

    def frames(self):
        # The sample at 5 bits a channel: median cut over 32K colours at most, not millions.
        sample = np.concatenate([f[:: self.step, :: self.step] for f in self.kept[:: self.every]], axis=0)
        palette = Image.fromarray(sample & 0xF8 | 0x04).quantize(
            colors=self.colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        rgb = np.asarray(palette.getpalette()[: 3 * 256], np.uint8).reshape(-1, 3)
        argb = np.zeros((256, 4), np.uint8)
        argb[: len(rgb), 0], argb[: len(rgb), 1:] = 255, rgb
        argb[self.colours:] = 0  # unused entries, and the transparent one at index `colours`
        kept, self.kept = self.kept, []
        for frame in kept:
            indices = np.asarray(Image.fromarray(frame).quantize(palette=palette, dither=self.dither))
            yield av.VideoFrame.from_ndarray((indices, argb), format="pal8")


def _check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3), got {frames.dtype} {frames.shape}")


def _audio_rate(codec: str, rate: int) -> int:
    """Opus takes 8, 12, 16, 24 or 48 kHz (the vocoder's 24 kHz among them); anything else goes to 48 kHz."""
    if codec == "libopus" and rate not in (8000, 12000, 16000, 24000, 48000):
        return 48000
    return rate


def _encode_audio(container, stream, waveform: np.ndarray, sample_rate: int) -> None:
    wave = np.asarray(waveform, dtype=np.float32)
    if wave.ndim == 1:
        wave = wave[None]
    if wave.shape[0] == 1:
        wave = np.repeat(wave, 2, axis=0)
    wave = np.ascontiguousarray(np.clip(wave[:2], -1.0, 1.0))
    if wave.shape[1] == 0:  # said here: FFmpeg's converter would fail on it with "cannot allocate memory"
        raise ValueError("the waveform holds no samples")
    # One frame for the whole soundtrack: PyAV's encoder converts it to the codec's sample format and
    # rate and cuts it into the codec's frame size (1024 samples for AAC, 20 ms for Opus) itself.
    frame = av.AudioFrame.from_ndarray(wave, format="fltp", layout="stereo")
    frame.sample_rate, frame.pts = sample_rate, 0
    for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():  # flushes the conversion, then the codec
        container.mux(packet)


@lru_cache(maxsize=1)
def _x264_cpu_flags() -> int | None:
    """x264's own CPU detection without AVX-512, or None where that does not apply.

    x264's AVX-512 `mbtree_propagate_list` handles 8 macroblocks per iteration and does not stop at the
    end of a row: when the width in macroblocks is not a multiple of 8 (a 64 px or 288 px wide frame), it
    reads motion vectors and costs past the row, and on the last row past the array, memory x264 never
    wrote. Their values are whatever the process left there before (an earlier encode, torch), and they
    feed the macroblock tree's rate control: identical frames came out as different files. The AVX2
    routines handle the remainder correctly, and the speed difference is small.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    library = _find_libx264()
    if library is None:
        return None
    try:
        detect = ctypes.CDLL(library).x264_cpu_detect
    except (OSError, AttributeError):
        return None
    detect.restype = ctypes.c_uint32
    flags = detect()
    avx512 = 1 << 16  # X264_CPU_AVX512 in x264.h
    return flags & ~avx512 if flags & avx512 else None


def _find_libx264() -> str | None:
    """The libx264 that PyAV's libavcodec loaded (PyAV's wheels bundle their own)."""
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                if "libx264" in line:
                    return line.split(None, 5)[-1].strip()
    except OSError:
        pass
    package = os.path.dirname(av.__file__)
    for pattern in ("../av.libs/libx264*", ".dylibs/libx264*"):
        found = sorted(glob.glob(os.path.join(package, pattern)))
        if found:
            return found[0]
    return ctypes.util.find_library("x264")


def encode_video(frames: np.ndarray, fps: int, waveform: np.ndarray | None = None, sample_rate: int = 24_000, *,
                 output_type: str = DEFAULT_OUTPUT_TYPE, quality: str = "high", write_mode: str = "balanced",
                 threads: int | None = None) -> bytes:
    """Encode (F, H, W, 3) uint8 frames and an optional (channels, samples) float waveform in [-1, 1]
    (it should span F / fps seconds) in one call."""
    _check_frames(frames)
    height, width = frames.shape[1:3]
    with VideoEncoder(width, height, fps, output_type=output_type, quality=quality, write_mode=write_mode,
                      audio_rate=sample_rate if waveform is not None else None, threads=threads) as encoder:
        encoder.write(frames)
        return encoder.finish(waveform, sample_rate)


encode_mp4 = encode_video  # the default format is the MP4


def to_data_uri(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def probe_video(data: bytes) -> dict:
    """Read back what a video file holds (used by tests and the benchmarks): container, streams, frames,
    durations, and the audio's samples."""
    info: dict = {"video": None, "audio": None}
    with av.open(io.BytesIO(data)) as container:
        info["container"] = container.format.name
        info["duration"] = container.duration / 1e6 if container.duration else None
        if container.streams.video:
            stream = container.streams.video[0]
            decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            info["video"] = {
                "codec": stream.codec_context.name,
                "profile": stream.codec_context.profile,
                "width": stream.codec_context.width,
                "height": stream.codec_context.height,
                "pix_fmt": stream.codec_context.pix_fmt,
                "fps": float(stream.average_rate) if stream.average_rate else None,
                "frames": len(decoded),
                "first_frame": decoded[0] if decoded else None,
                "last_frame": decoded[-1] if decoded else None,
            }
    with av.open(io.BytesIO(data)) as container:  # anew: a seek back could skip the first audio packets
        if container.streams.audio:
            stream = container.streams.audio[0]
            chunks = [f.to_ndarray() if f.format.is_planar else f.to_ndarray().reshape(-1, len(f.layout.channels)).T
                      for f in container.decode(stream)]
            info["audio"] = {
                "codec": stream.codec_context.name,
                "channels": stream.codec_context.channels,
                "sample_rate": stream.codec_context.sample_rate,
                "duration": float(stream.duration * stream.time_base) if stream.duration else None,
                "samples": np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), np.float32),
            }
    return info


probe_mp4 = probe_video
