"""A user's video input: opened under a demuxer whitelist, bounded before its frames are paid for, frames picked
at the request's frame rate and fitted to the output as ltx-pipelines fits a conditioning video.

What is checked before any frame is decoded (from the container and stream headers): the format (MP4/MOV or
WebM/Matroska, the only demuxers FFmpeg is given, so no playlist or concat format can open other files), that
there is a video stream, its declared width x height, its declared duration and frame count. While decoding,
every frame is counted and measured again, since a header may lie or say nothing: a frame larger than the
limit, a stream that runs past the duration limit or visits more frames than `max_frames` stops the decode
with the field named. Memory is bounded by the frames kept: only the ones the output uses (`num_frames`) are
converted to RGB, each at the stream's checked size.

Frame rate: ltx-pipelines reads a conditioning video frame by frame at the file's own rate
(`decode_video_from_file`). Here output frame k is the last source frame shown at time start + k / fps (its
presentation timestamp at or before that time), so a file at the request's rate gives its frames one for one,
as the reference takes them, and any other rate, constant or variable, is resampled by time rather than by
index. Frames without timestamps (some elementary streams) count at the stream's average rate, as the
reference's fallback does. Timestamps that go backwards are refused: they make the order of frames
undefined.

Fitting: `fit_frame` is ltx-pipelines' `video_preprocess` (each frame to float32, a bilinear resize that
covers the target with ceil'd sides, a centre crop, then x / 127.5 - 1), written in torch so the same numbers
come out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import av
import numpy as np
import torch

from ..schema import InvalidRequest
from .containers import open_container
from .containers import reason as _reason

MB = 1024 * 1024

# FFmpeg demuxer name -> family. Only these demuxers may run (format_whitelist).
_VIDEO_FAMILIES = {"mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}
_DEMUXER_WHITELIST = "mov,matroska"
VIDEO_MIMES = {"video/mp4": {"mp4"}, "video/quicktime": {"mp4"}, "video/x-m4v": {"mp4"},
               "video/webm": {"webm"}, "video/x-matroska": {"webm"}}
VIDEO_FORMATS_TEXT = "MP4/MOV or WebM/MKV"
TIME_TOLERANCE_S = 0.5 / 1000  # a timestamp within half a millisecond of a frame time counts as that time
HEADER_SLACK = 0.1  # a header's duration may be an estimate; refuse on it only when clearly over


@dataclass(frozen=True)
class VideoLimits:
    """Bounds on one video input (the server reads them from its settings)."""

    max_bytes: int = 200 * MB  # the file
    max_seconds: float = 60.0  # the duration decoded (and declared)
    max_pixels: int = 3840 * 2160  # width x height of a frame (4K)
    max_frames: int = 3600  # frames visited by the decoder (60 s at 60 fps)


@dataclass(frozen=True)
class VideoInfo:
    """What the headers say (checked against the limits)."""

    family: str  # "mp4" or "webm"
    width: int
    height: int
    fps: float  # the stream's average frame rate (0 when it declares none)
    seconds: float | None  # declared duration, when there is one
    frames: int  # declared frame count (0: not declared)
    has_audio: bool


def _open(data: bytes, field: str):
    if not data:
        raise InvalidRequest(field, f"{field} is empty")
    return open_container(data, field, _DEMUXER_WHITELIST, "video", VIDEO_FORMATS_TEXT)


def _info(container, field: str, declared_mime: str | None, limits: VideoLimits) -> VideoInfo:
    family = _VIDEO_FAMILIES.get(container.format.name, container.format.name)
    if declared_mime is not None and family not in VIDEO_MIMES.get(declared_mime, ()):
        raise InvalidRequest(field, f"{field} declares {declared_mime} but holds {family.upper()}")
    if not container.streams.video:
        raise InvalidRequest(field, f"{field} holds no video stream (send a video file, not audio only)")
    stream = container.streams.video[0]
    width, height = stream.codec_context.width or 0, stream.codec_context.height or 0
    if width <= 0 or height <= 0:
        # FFmpeg leaves the size at 0 when the header's is unusable: empty, or past what it can allocate (its
        # av_image_check_size refuses (w + 128) x (h + 128) over 2^28: a 30000x30000 MJPEG header says so).
        raise InvalidRequest(field, f"{field} declares no usable frame size ({width}x{height} as read: an empty or "
                                    "impossibly large frame)")
    if width * height > limits.max_pixels:
        raise InvalidRequest(field, f"{field} frames are {width}x{height} ({width * height / 1e6:.1f} MP); the limit "
                             f"is {limits.max_pixels / 1e6:.1f} MP", status=413)
    seconds = None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    if seconds is not None and seconds > limits.max_seconds * (1 + HEADER_SLACK):
        raise InvalidRequest(field, f"{field} is {seconds:.1f} s long; the limit is {limits.max_seconds:g} s")
    frames = int(stream.frames or 0)
    if frames > limits.max_frames:
        raise InvalidRequest(field, f"{field} declares {frames} frames; the limit is {limits.max_frames}")
    fps = float(stream.average_rate) if stream.average_rate else 0.0
    return VideoInfo(family, width, height, fps, seconds, frames, bool(container.streams.audio))


def probe_video(data: bytes, field: str, declared_mime: str | None, limits: VideoLimits) -> VideoInfo:
    """The video's headers, checked against `limits`; a bad or hostile file raises InvalidRequest naming `field`."""
    if len(data) > limits.max_bytes:
        raise InvalidRequest(field, f"{field} is {len(data) / MB:.1f} MB; the limit is {limits.max_bytes / MB:g} MB",
                             status=413)
    with _open(data, field) as container:
        return _info(container, field, declared_mime, limits)


def decode_frames(data: bytes, field: str, declared_mime: str | None, limits: VideoLimits, fps: float,
                  num_frames: int, sizes: tuple[tuple[int, int], ...], start: float = 0.0, reduce=None
                  ) -> tuple[dict[tuple[int, int], torch.Tensor], VideoInfo]:
    """`num_frames` frames at `fps` from `start` seconds, frame k the source frame shown at start + k / fps, each
    fitted (`fit_frame`) to every (width, height) in `sizes`: {size: (1, 3, F, height, width) float32 in [-1, 1]}.
    Fewer frames when the video ends first (at least one: an empty stream is refused). Only one source frame is
    held at a time, so memory is what the output sizes take, whatever the source's size. `reduce`: applied to each
    fitted frame (3, height, width) before it is kept (what is kept, and stacked, is its result)."""
    if not (fps > 0 and num_frames > 0 and start >= 0):
        raise ValueError(f"fps, num_frames must be positive and start non-negative: {fps}, {num_frames}, {start}")
    if len(data) > limits.max_bytes:
        raise InvalidRequest(field, f"{field} is {len(data) / MB:.1f} MB; the limit is {limits.max_bytes / MB:g} MB",
                             status=413)
    with _open(data, field) as container:
        info = _info(container, field, declared_mime, limits)
        stream = container.streams.video[0]
        stream.thread_type = "NONE"  # one thread: the sandbox bounds the child, not a pool of decoder threads
        base = float(stream.time_base) if stream.time_base else 0.0
        rate = info.fps if info.fps > 0 else fps
        times = [start + k / fps for k in range(num_frames)]
        last_needed = times[-1]
        kept: list[dict[tuple[int, int], torch.Tensor]] = []
        shown = None  # the frame on screen at the next output time: (seconds, frame)
        visited, previous = 0, -math.inf
        try:
            for frame in container.decode(stream):
                visited += 1
                if visited > limits.max_frames:
                    raise InvalidRequest(field, f"{field} has more than {limits.max_frames} frames, the limit")
                if frame.width * frame.height > limits.max_pixels:
                    raise InvalidRequest(field, f"{field} has a {frame.width}x{frame.height} frame; the limit is "
                                         f"{limits.max_pixels / 1e6:.1f} MP", status=413)
                t = frame.pts * base if frame.pts is not None and base else (visited - 1) / rate
                if t > limits.max_seconds + TIME_TOLERANCE_S:
                    raise InvalidRequest(field, f"{field} runs past {limits.max_seconds:g} s, the limit")
                if t < previous - TIME_TOLERANCE_S:
                    raise InvalidRequest(field, f"{field} has frame timestamps that go backwards ({previous:.3f} s, "
                                         f"then {t:.3f} s)")
                previous = t
                # Every output time before this frame's shows the frame before it.
                while len(kept) < num_frames and times[len(kept)] + TIME_TOLERANCE_S < t and shown is not None:
                    kept.append(shown)
                if len(kept) == num_frames:
                    break
                if t <= last_needed + TIME_TOLERANCE_S or shown is None:
                    rgb = frame.to_ndarray(format="rgb24")
                    shown = {size: fit_frame(rgb, *size) for size in sizes}
                    if reduce is not None:
                        shown = {size: reduce(pixels) for size, pixels in shown.items()}
                if t > last_needed + TIME_TOLERANCE_S:
                    break
        except InvalidRequest:
            raise
        except MemoryError:
            raise
        except Exception as exc:
            raise InvalidRequest(field, f"{field} could not be decoded: {_reason(exc)}") from None
        if shown is None:
            raise InvalidRequest(field, f"{field} has no frames (a zero-length video stream)")
        # The last frame stays on screen for one frame interval at the stream's rate, then the video has ended.
        end = previous + 1 / rate
        while len(kept) < num_frames and times[len(kept)] < end - TIME_TOLERANCE_S:
            kept.append(shown)
    if not kept:
        raise InvalidRequest(field, f"{field} ends before {start:g} s")
    return {size: torch.stack([k[size] for k in kept], dim=1)[None] for size in sizes}, info


def fit_frame(frame: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, height, width) float32 in [-1, 1], as ltx-pipelines' `video_preprocess` prepares
    each frame of a conditioning video: to float32, resized (bilinear, no corner alignment) to cover the target
    with ceil'd sides, centre-cropped, then x / 127.5 - 1."""
    pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(torch.float32).permute(2, 0, 1)[None]
    src_h, src_w = pixels.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    pixels = torch.nn.functional.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return pixels[0, :, top: top + height, left: left + width] / 127.5 - 1.0


__all__ = ["VIDEO_FORMATS_TEXT", "VIDEO_MIMES", "VideoInfo", "VideoLimits", "decode_frames", "fit_frame",
           "probe_video"]
