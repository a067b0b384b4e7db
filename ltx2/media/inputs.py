"""Conditioning inputs: decode the user's `image_start`, `image_end` and `audio` fields, or refuse them cleanly.

Every refusal is an `InvalidRequest(field, message, status)` whose message names the field and the rule
(422; 413 when an input is too large). Hostile input must not crash, hang or exhaust the server, so
each step is bounded before it is paid for: the base64 length is checked before decoding, an image's
pixel count is read from its header before its pixels are decoded, and audio decoding stops as soon
as it runs past the duration limit, whatever the container's header claims.

Accepted encodings: `data:<mime>[;param...];base64,<data>` or bare base64. Whitespace and newlines
anywhere are ignored, the URL-safe alphabet (`-_`) is accepted as well as the standard one (`+/`),
and `=` padding is optional. `application/octet-stream` (or an empty mime) counts as undeclared.

Images: PNG, JPEG, WebP and GIF (first frame) only -- the four the vendor API takes. Other formats
Pillow could open (BMP, TIFF, PSD, EPS...) are refused: each extra plugin is extra attack surface
(EPS even runs Ghostscript) for no need. Audio: WAV, MP3, OGG (Opus, Vorbis, FLAC), FLAC,
MP4/M4A/MOV (AAC...), ADTS AAC and WebM/Matroska (what browsers' MediaRecorder produces); FFmpeg is
given only these demuxers, so playlist formats (HLS, concat) that open other files can never run.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import re
from dataclasses import dataclass

import av
import numpy as np
from PIL import Image, ImageOps

from ..schema import SIZE_MAX, SIZE_MIN, InvalidRequest
from .containers import open_container
from .containers import reason as _reason

MB = 1024 * 1024


@dataclass
class InputLimits:
    """Bounds on conditioning inputs. `from_env()` reads, each optional:

    - LTX2_MAX_IMAGE_MB (default 20): largest decoded image, in MiB; larger gives 413.
    - LTX2_MAX_AUDIO_MB (default 50): largest decoded audio file, in MiB; larger gives 413.
    - LTX2_MAX_IMAGE_MEGAPIXELS (default 50): largest image width x height, read from the header
      before decoding (decompression-bomb guard); larger gives 413. Pillow's own guard refuses
      anything over ~179 MP (2 x Image.MAX_IMAGE_PIXELS) whatever this says.
    - LTX2_MAX_AUDIO_SECONDS (default 60): longest audio accepted; longer gives 422.
    - LTX2_MAX_JPEG_SCANS (default 100): most scans a (progressive) JPEG may have, counted before
      decoding; each scan makes the decoder visit every pixel again. Encoders write 1 to ~20.
    - LTX2_MAX_VIDEO_MB (default 100): largest video file (retake), in MiB; larger gives 413.
    - LTX2_MAX_VIDEO_SECONDS (default 30): longest video accepted (declared, and as decoded); longer gives 422.
      A video's frames are bounded by LTX2_MAX_IMAGE_MEGAPIXELS each, and at most 60 per second are visited.
    """

    max_image_bytes: int = 20 * MB
    max_audio_bytes: int = 50 * MB
    max_image_pixels: int = 50_000_000
    max_audio_seconds: float = 60.0
    max_jpeg_scans: int = 100
    max_video_bytes: int = 100 * MB
    max_video_seconds: float = 30.0

    def video(self):
        """The bounds a video input is decoded under (media.video_in)."""
        from .video_in import VideoLimits

        return VideoLimits(max_bytes=self.max_video_bytes, max_seconds=self.max_video_seconds,
                           max_pixels=min(self.max_image_pixels, VideoLimits.max_pixels),
                           max_frames=int(math.ceil(self.max_video_seconds * 60)))

    @classmethod
    def from_env(cls, env: dict | None = None) -> InputLimits:
        env = os.environ if env is None else env

        def read(name: str, default: float) -> float:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {raw!r}") from None
            if not value > 0 or math.isinf(value):
                raise ValueError(f"{name} must be a positive number, got {raw!r}")
            return value

        return cls(
            max_image_bytes=int(read("LTX2_MAX_IMAGE_MB", cls.max_image_bytes / MB) * MB),
            max_audio_bytes=int(read("LTX2_MAX_AUDIO_MB", cls.max_audio_bytes / MB) * MB),
            max_image_pixels=int(read("LTX2_MAX_IMAGE_MEGAPIXELS", cls.max_image_pixels / 1e6) * 1e6),
            max_audio_seconds=read("LTX2_MAX_AUDIO_SECONDS", cls.max_audio_seconds),
            max_jpeg_scans=int(read("LTX2_MAX_JPEG_SCANS", cls.max_jpeg_scans)),
            max_video_bytes=int(read("LTX2_MAX_VIDEO_MB", cls.max_video_bytes / MB) * MB),
            max_video_seconds=read("LTX2_MAX_VIDEO_SECONDS", cls.max_video_seconds),
        )


# ---------------------------------------------------------------------------------------------- base64

# Declared mime -> what the content must be. Images: Pillow format names; audio: families below.
IMAGE_MIMES = {
    "image/png": "PNG", "image/apng": "PNG", "image/jpeg": "JPEG", "image/jpg": "JPEG",
    "image/pjpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF",
}
AUDIO_MIMES = {
    "audio/wav": {"wav"}, "audio/x-wav": {"wav"}, "audio/wave": {"wav"}, "audio/vnd.wave": {"wav"},
    "audio/mpeg": {"mp3"}, "audio/mp3": {"mp3"}, "audio/mpeg3": {"mp3"}, "audio/x-mpeg-3": {"mp3"},
    "audio/x-mp3": {"mp3"},
    "audio/ogg": {"ogg"}, "audio/opus": {"ogg"}, "audio/vorbis": {"ogg"}, "application/ogg": {"ogg"},
    "video/ogg": {"ogg"},
    "audio/flac": {"flac"}, "audio/x-flac": {"flac"},
    "audio/mp4": {"mp4"}, "audio/m4a": {"mp4"}, "audio/x-m4a": {"mp4"}, "video/mp4": {"mp4"},
    "video/quicktime": {"mp4"},
    "audio/aac": {"aac", "mp4"}, "audio/x-aac": {"aac", "mp4"},  # used for both raw ADTS and .m4a files
    "audio/webm": {"webm"}, "video/webm": {"webm"}, "audio/x-matroska": {"webm"}, "video/x-matroska": {"webm"},
}
UNDECLARED_MIMES = {"", "application/octet-stream"}
IMAGE_FORMATS_TEXT = "PNG, JPEG, WebP or GIF"
AUDIO_FORMATS_TEXT = "WAV, MP3, OGG (Opus/Vorbis), FLAC, M4A/AAC or WebM"

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _size_text(n: float) -> str:
    if n >= MB:
        return f"{n / MB:.1f}".removesuffix(".0") + " MB"
    return f"{int(n)} bytes"


def decode_base64_field(value: str, field: str, max_bytes: int, kind: str) -> tuple[bytes, str | None]:
    """Decode a data URI or bare base64 string; return (bytes, declared mime or None).

    `kind` is "image" or "audio": a data URI must declare a type of that kind that we support.
    The size is computed from the encoded length, before decoding, so an oversized payload
    costs one scan and no allocation of its decoded form.
    """
    if kind not in ("image", "audio", "video"):
        raise ValueError(f"kind must be 'image', 'audio' or 'video', got {kind!r}")
    if not isinstance(value, str):
        raise InvalidRequest(field, f"{field} must be a base64 string or a data URI")
    payload, mime = value, None
    if value[:5].lower() == "data:":
        header, comma, payload = value.partition(",")
        if not comma:
            raise InvalidRequest(field, f"{field} is a data URI without a comma before its data")
        mime, *params = (p.strip().lower() for p in header[5:].split(";"))
        if "base64" not in params:
            raise InvalidRequest(field, f"{field} must be base64-encoded (data:<type>;base64,<data>)")
        mime = _check_declared_mime(mime, field, kind)

    # Whitespace (line-wrapped base64) is not data; drop it before measuring.
    payload = "".join(payload.split())
    if not payload:
        raise InvalidRequest(field, f"{field} is empty")
    decoded_size = len(payload.rstrip("=")) * 3 // 4
    if decoded_size > max_bytes:
        raise InvalidRequest(field, f"{field} is {_size_text(decoded_size)}; the limit is {_size_text(max_bytes)}",
                             status=413)
    try:
        raw = payload.encode("ascii").translate(_URLSAFE_TO_STANDARD).rstrip(b"=")
        if len(raw) % 4 == 1:  # no base64 string has this length, whatever its padding
            raise ValueError("impossible length")
        data = base64.b64decode(raw + b"=" * (-len(raw) % 4), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise InvalidRequest(field, f"{field} is not valid base64") from None
    return data, mime


def _check_declared_mime(mime: str, field: str, kind: str) -> str | None:
    if mime in UNDECLARED_MIMES:
        return None
    from .video_in import VIDEO_FORMATS_TEXT, VIDEO_MIMES

    table, formats = {"image": (IMAGE_MIMES, IMAGE_FORMATS_TEXT), "audio": (AUDIO_MIMES, AUDIO_FORMATS_TEXT),
                      "video": (VIDEO_MIMES, VIDEO_FORMATS_TEXT)}[kind]
    if mime in table:
        return mime
    right_kind = mime.startswith(f"{kind}/") or (kind == "audio" and mime.startswith("video/"))
    what = "a type that is not supported" if right_kind else \
        f"a type that is not {'an image' if kind == 'image' else 'a video' if kind == 'video' else 'audio'}"
    raise InvalidRequest(field, f"{field} declares {mime}, {what}; send {formats}")


# ---------------------------------------------------------------------------------------------- images

SUPPORTED_IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
_FORMAT_NAMES = {"PNG": "PNG", "JPEG": "JPEG", "MPO": "JPEG", "WEBP": "WebP", "GIF": "GIF"}
# Magic numbers, only to name what a refused file is; Pillow identifies the supported ones itself.
_OTHER_IMAGE_SIGNATURES = [
    (re.compile(rb"^BM"), "BMP"), (re.compile(rb"^(II\*\x00|MM\x00\*)"), "TIFF"),
    (re.compile(rb"^8BPS"), "PSD"), (re.compile(rb"^\x00\x00\x01\x00"), "ICO"),
    (re.compile(rb"^....ftyp(heic|heix|mif1|msf1)", re.DOTALL), "HEIC"), (re.compile(rb"^....ftypavi[fs]", re.DOTALL), "AVIF"),
    (re.compile(rb"^\s*(<\?xml|<svg)", re.IGNORECASE), "SVG"),
]
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def load_image(data: bytes, field: str, declared_mime: str | None, limits: InputLimits) -> Image.Image:
    """Decode PNG/JPEG/WebP/GIF bytes to an RGB image, upright per its EXIF orientation.

    Transparency is composited over white; 16-bit grayscale is scaled (not clipped) to 8 bits.
    """
    return finish_image(open_image(data, field, declared_mime, limits), field, limits)


def open_image(data: bytes, field: str, declared_mime: str | None, limits: InputLimits) -> Image.Image:
    """Open an image and check what its header says (format, declared type, pixel count, JPEG scans),
    decoding no pixel; `finish_image` decodes it."""
    try:
        img = Image.open(io.BytesIO(data), formats=SUPPORTED_IMAGE_FORMATS)  # reads the header only
    except Image.DecompressionBombError as exc:  # Pillow's own guard, above ~179 MP
        raise _bomb(exc, field, limits) from None
    except MemoryError:  # the sandbox's memory limit: its own answer, not "cannot decode"
        raise
    except Exception as exc:  # Pillow raises many types on hostile headers; all mean "not a usable image"
        other = next((name for sig, name in _OTHER_IMAGE_SIGNATURES if sig.match(data[:64])), None)
        if other:
            raise InvalidRequest(field, f"{field} is in {other} format; send {IMAGE_FORMATS_TEXT}") from None
        if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff" or data[:4] == b"GIF8" or (
                data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
            raise InvalidRequest(field, f"{field} could not be decoded: {exc}") from None
        raise InvalidRequest(field, f"{field} is not a {IMAGE_FORMATS_TEXT} image") from None

    found = _FORMAT_NAMES.get(img.format, img.format)
    if declared_mime is not None and _FORMAT_NAMES.get(IMAGE_MIMES.get(declared_mime, "")) != found:
        raise InvalidRequest(field, f"{field} declares {declared_mime} but holds a {found}")
    width, height = img.size
    if width < 1 or height < 1:
        raise InvalidRequest(field, f"{field} is {width}x{height} pixels: it has no pixels")
    if width * height > limits.max_image_pixels:
        raise InvalidRequest(field, f"{field} is {width}x{height} pixels; the limit is "
                             f"{limits.max_image_pixels / 1e6:g} megapixels", status=413)
    if found == "JPEG" and jpeg_scans(data, limits.max_jpeg_scans) > limits.max_jpeg_scans:
        raise InvalidRequest(field, f"{field} is a JPEG of more than {limits.max_jpeg_scans} scans, the limit "
                             "(LTX2_MAX_JPEG_SCANS); encoders write at most a few dozen")
    return img


def finish_image(img: Image.Image, field: str, limits: InputLimits) -> Image.Image:
    """Decode an image `open_image` checked: RGB, upright per its EXIF orientation."""
    try:
        img.load()  # truncated files raise here: LOAD_TRUNCATED_IMAGES stays off on purpose
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except Image.DecompressionBombError as exc:  # a GIF frame may be larger than the GIF's header says
        raise _bomb(exc, field, limits) from None
    except MemoryError:  # the sandbox's memory limit: its own answer, not "cannot decode"
        raise
    except Exception as exc:
        raise InvalidRequest(field, f"{field} could not be decoded: {_reason(exc)}") from None


def jpeg_scans(data: bytes, limit: int) -> int:
    """How many scans (SOS segments) a JPEG has, counted by walking its segments without decoding;
    counting stops once past `limit`. Entropy-coded data is skipped with bytes.find: a 0xFF in it is
    always followed by 0x00 (stuffing), a restart marker or a fill byte, so the next other marker
    ends it."""
    scans, i, end = 0, 2, len(data)
    while i + 4 <= end:
        if data[i] != 0xFF:
            i += 1  # junk between segments, which decoders skip too
            continue
        marker = data[i + 1]
        if marker == 0xFF or marker == 0x01 or 0xD0 <= marker <= 0xD7:  # fill byte, or a marker without length
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:  # end of image
            break
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker != 0xDA:
            continue
        scans += 1
        if scans > limit:
            break
        while True:  # to the end of this scan's entropy-coded data
            j = data.find(b"\xff", i)
            if j < 0 or j + 1 >= end:
                return scans
            after = data[j + 1]
            if after == 0x00 or after == 0xFF or 0xD0 <= after <= 0xD7:
                i = j + 1
                continue
            i = j
            break
    return scans


def _bomb(exc: Exception, field: str, limits: InputLimits) -> InvalidRequest:
    found = _BOMB_PIXELS.search(str(exc))
    size = f"{int(found.group(1)) / 1e6:.1f} megapixels" if found else "too many pixels"
    return InvalidRequest(field, f"{field} is {size}; the limit is {limits.max_image_pixels / 1e6:g} megapixels",
                          status=413)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale PNG. Pillow's convert("L") clips at 255 instead of scaling; scale 65535 -> 255.
        # Integer arithmetic, rounded: 4 bytes a pixel, not the 8 of float64 on a 50 MP image.
        values = np.clip(np.asarray(img), 0, 65535).astype(np.uint32)
        img = Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), mode="L")
    if img.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La") or "transparency" in img.info:
        # Transparent pixels become white, not the black (or arbitrary colour) their RGB holds.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        background.alpha_composite(rgba)
        img = background
    return img.convert("RGB")  # L, 1, CMYK, YCbCr, RGBA-over-white...


def auto_size(img_w: int, img_h: int, target_pixels: int, multiple: int = 32,
              min_size: int = SIZE_MIN, max_size: int = SIZE_MAX) -> tuple[int, int]:
    """A (width, height) in multiples of `multiple`, about `target_pixels`, with the image's aspect ratio."""
    aspect = img_w / img_h
    width, height = math.sqrt(target_pixels * aspect), math.sqrt(target_pixels / aspect)
    # Keep the aspect while bringing the size within bounds; an extreme aspect clamps last, below.
    shrink = min(1.0, max_size / width, max_size / height)
    width, height = width * shrink, height * shrink
    grow = max(1.0, min_size / width, min_size / height)
    width, height = width * grow, height * grow

    def snap(x: float, up: bool) -> int:
        n = math.ceil(x / multiple) if up else math.floor(x / multiple)
        return min(max(n * multiple, min_size), max_size)

    # Of the four nearest grid points, the one closest in aspect and area (equal weight, in log terms).
    candidates = {(snap(width, a), snap(height, b)) for a in (False, True) for b in (False, True)}
    return min(candidates, key=lambda wh: (abs(math.log(wh[0] / wh[1] / aspect))
                                           + abs(math.log(wh[0] * wh[1] / target_pixels)), wh))


# ---------------------------------------------------------------------------------------------- audio

# FFmpeg demuxer name -> family. Only these demuxers may run (format_whitelist).
_AUDIO_FAMILIES = {"wav": "wav", "mp3": "mp3", "ogg": "ogg", "flac": "flac", "aac": "aac",
                   "mov,mp4,m4a,3gp,3g2,mj2": "mp4", "matroska,webm": "webm"}
_FAMILY_NAMES = {"wav": "WAV", "mp3": "MP3", "ogg": "OGG", "flac": "FLAC", "aac": "AAC (ADTS)",
                 "mp4": "MP4/M4A", "webm": "WebM/Matroska"}
_DEMUXER_WHITELIST = "wav,mp3,ogg,flac,aac,mov,matroska"
DURATION_TOLERANCE_S = 0.1  # encoder padding/priming (AAC, MP3, Opus) may add a few ms past the content
# No recording is sampled slower than telephone-grade 8 kHz; 4 kHz leaves room. A lower rate means a
# file built to make the resampler multiply a few samples into gigabytes (a 55-byte FLAC at 1 Hz).
MIN_AUDIO_RATE = 4000
HEADER_SLACK = 0.1  # a header's estimate may be off (e.g. VBR MP3); refuse on it only when clearly over


def load_audio(data: bytes, field: str, declared_mime: str | None, limits: InputLimits,
               sample_rate: int) -> np.ndarray:
    """Decode an audio file to float32 (2, samples) in [-1, 1] at `sample_rate`.

    Mono is duplicated to both channels; more than two channels are downmixed to stereo.
    At most max_audio_seconds (+ DURATION_TOLERANCE_S) is ever decoded; the result is cut to
    max_audio_seconds.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    max_s = limits.max_audio_seconds
    container = open_container(data, field, _DEMUXER_WHITELIST, "audio", AUDIO_FORMATS_TEXT)
    with container:
        family = _AUDIO_FAMILIES.get(container.format.name, container.format.name)
        if declared_mime is not None and family not in AUDIO_MIMES.get(declared_mime, ()):
            raise InvalidRequest(field, f"{field} declares {declared_mime} but holds {_FAMILY_NAMES.get(family, family)}")
        if not container.streams.audio:
            raise InvalidRequest(field, f"{field} holds no audio stream")
        stream = container.streams.audio[0]
        _check_rate(stream.codec_context.sample_rate or stream.sample_rate, field)

        declared = None
        if stream.duration and stream.time_base:
            declared = float(stream.duration * stream.time_base)
        elif container.duration:
            declared = container.duration / av.time_base
        if declared is not None and declared > max_s * (1 + HEADER_SLACK) + DURATION_TOLERANCE_S:
            raise InvalidRequest(field, f"{field} is {declared:.1f} s long; the limit is {max_s:g} s")

        # Count what comes out of the resampler and stop past the limit, so a header that
        # understates the length (or has none) cannot make us decode hours.
        limit = round(max_s * sample_rate)
        stop_after = limit + round(DURATION_TOLERANCE_S * sample_rate)
        chunks, total = [], 0
        resampler = None
        try:
            for frame in _decoded_then_flush(container, stream):
                if frame is not None:
                    # What this frame becomes once resampled, refused before the resampler allocates it.
                    _check_rate(frame.sample_rate, field)
                    if not frame.sample_rate:
                        raise InvalidRequest(field, f"{field} has audio frames without a sample rate")
                    if total + math.ceil(frame.samples * sample_rate / frame.sample_rate) > stop_after:
                        raise InvalidRequest(field, f"{field} is longer than {max_s:g} s, the limit")
                if resampler is None and frame is not None:
                    layout = "mono" if frame.layout.nb_channels == 1 else "stereo"
                    resampler = av.AudioResampler(format="fltp", layout=layout, rate=sample_rate)
                if resampler is None:
                    break
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray()
                    chunks.append(chunk)
                    total += chunk.shape[1]
                if total > stop_after:
                    raise InvalidRequest(field, f"{field} is longer than {max_s:g} s, the limit")
        except InvalidRequest:
            raise
        except MemoryError:  # the sandbox's memory limit: its own answer, not "cannot decode"
            raise
        except Exception as exc:
            raise InvalidRequest(field, f"{field} could not be decoded: {_reason(exc)}") from None

    if total == 0:
        raise InvalidRequest(field, f"{field} is empty (0 samples)")
    wave = np.concatenate(chunks, axis=1)[:, :limit].astype(np.float32, copy=False)
    if wave.shape[0] == 1:
        wave = np.repeat(wave, 2, axis=0)
    # Lossy decoders overshoot slightly past full scale, and float WAVs may hold NaN or inf.
    return np.clip(np.nan_to_num(wave, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)


def _check_rate(rate: int | None, field: str) -> None:
    if rate and rate < MIN_AUDIO_RATE:
        raise InvalidRequest(field, f"{field} has a sample rate of {rate} Hz; the lowest accepted is "
                             f"{MIN_AUDIO_RATE} Hz")


def _decoded_then_flush(container, stream):
    """Decoded frames of one stream, then None (which tells the resampler to flush)."""
    yield from container.decode(stream)
    yield None


__all__ = [
    "InputLimits",
    "auto_size",
    "decode_base64_field",
    "finish_image",
    "load_audio",
    "load_image",
    "open_image",
]
