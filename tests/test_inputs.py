"""Conditioning inputs: every accepted format decodes to the right content; hostile input is refused cleanly.

All test files are generated here with Pillow and PyAV, so nothing binary is checked in.
"""

from __future__ import annotations

import base64
import io
import struct
import time
import wave
import zlib

import av
import numpy as np
import pytest
from PIL import Image

from ltx2.media import inputs
from ltx2.media.conditioning_image import cover_bilinear
from ltx2.media.inputs import (
    InputLimits,
    auto_size,
    decode_base64_field,
    load_audio,
    load_image,
)
from ltx2.schema import InvalidRequest

LIMITS = InputLimits()


def refused(status: int, fn, *args, field: str | None = None) -> str:
    """Call fn, expect InvalidRequest with this status and a message naming the field; return the message."""
    with pytest.raises(InvalidRequest) as caught:
        fn(*args)
    exc = caught.value
    assert exc.status == status, exc.message
    if field is not None:
        assert exc.field == field
        assert field in exc.message
    return exc.message


# ------------------------------------------------------------------------------------------------ files


def image_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def red_left_blue_right(width=200, height=100) -> Image.Image:
    arr = np.zeros((height, width, 3), np.uint8)
    arr[:, : width // 2] = (255, 0, 0)
    arr[:, width // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (valid CRCs), with one tiny IDAT: no pixels allocated."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
            + chunk(b"IEND", b""))


def sine(freq: float, seconds: float, rate: int, amplitude=0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def encode_audio(fmt: str, codec: str, rate: int, channels: list[np.ndarray],
                 layout: str | None = None, options: dict | None = None, codec_options: dict | None = None) -> bytes:
    """Encode per-channel float waveforms in [-1, 1] with PyAV, in the codec's own sample format."""
    layout = layout or {1: "mono", 2: "stereo"}[len(channels)]
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate, options=codec_options or {})
        stream.layout = layout
        if codec in ("libmp3lame", "aac", "vorbis"):
            stream.format = "fltp"
        signal = np.stack(channels)
        sample_fmt = stream.codec_context.format.name
        chunk = stream.codec_context.frame_size or 1024
        for start in range(0, signal.shape[1], chunk):
            piece = signal[:, start : start + chunk]
            frame = av.AudioFrame.from_ndarray(_as_format(piece, sample_fmt), format=sample_fmt, layout=layout)
            frame.sample_rate, frame.pts = rate, start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def _as_format(piece: np.ndarray, sample_fmt: str) -> np.ndarray:
    planar = sample_fmt.endswith("p")
    dtype = {"s16": np.int16, "s32": np.int32, "flt": np.float32}[sample_fmt.removesuffix("p")]
    scale = {np.int16: 32767, np.int32: 2**31 - 1, np.float32: 1}[dtype]
    data = piece if planar else piece.T.reshape(1, -1)
    return np.ascontiguousarray(np.round(data * scale) if scale != 1 else data).astype(dtype)


def dominant_hz(signal: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / rate)[np.argmax(spectrum)])


def b64(data: bytes, mime: str | None = None) -> str:
    text = base64.b64encode(data).decode()
    return f"data:{mime};base64,{text}" if mime else text


# ------------------------------------------------------------------------------------------------ base64


def test_data_uri_and_bare_base64_decode_alike():
    payload = bytes(range(256)) * 3
    assert decode_base64_field(b64(payload), "image_start", 10_000, "image") == (payload, None)
    assert decode_base64_field(b64(payload, "image/PNG"), "image_start", 10_000, "image") == (payload, "image/png")
    # Line-wrapped, URL-safe alphabet, padding dropped: all the same bytes.
    wrapped = "\n".join(b64(payload)[i : i + 76] for i in range(0, len(b64(payload)), 76))
    assert decode_base64_field(" " + wrapped + "\r\n", "image_start", 10_000, "image")[0] == payload
    urlsafe = base64.urlsafe_b64encode(payload + b"\xfb\xff").decode().rstrip("=")
    assert "-" in urlsafe or "_" in urlsafe
    assert decode_base64_field(urlsafe, "image_start", 10_000, "image")[0] == payload + b"\xfb\xff"
    # Parameters before ;base64 are allowed; octet-stream counts as undeclared.
    assert decode_base64_field(f"data:image/jpeg;name=a.jpg;base64,{b64(payload)}", "f", 10_000, "image")[1] == "image/jpeg"
    assert decode_base64_field(b64(payload, "application/octet-stream"), "audio", 10_000, "audio")[1] is None
    assert decode_base64_field(b64(payload, "video/mp4"), "audio", 10_000, "audio")[1] == "video/mp4"


@pytest.mark.parametrize("value", ["not base64!", "QUJD?", "QUJDR", "QU=JD", "données", "QUJD" + "\x00"])
def test_not_base64_is_refused(value):
    assert refused(422, decode_base64_field, value, "image_start", 1000, "image", field="image_start") == \
        "image_start is not valid base64"


@pytest.mark.parametrize("value", ["", "   \n", "data:image/png;base64,", "data:image/png;base64,  "])
def test_empty_is_refused(value):
    assert "empty" in refused(422, decode_base64_field, value, "image_end", 1000, "image", field="image_end")


def test_wrong_kind_or_unsupported_type_or_not_base64_uri():
    data = b64(b"hello", "text/plain")
    assert "text/plain" in refused(422, decode_base64_field, data, "image_start", 1000, "image", field="image_start")
    assert "image/png" in refused(422, decode_base64_field, b64(b"x", "image/png"), "audio", 1000, "audio", field="audio")
    assert "image/bmp" in refused(422, decode_base64_field, b64(b"x", "image/bmp"), "image_end", 1000, "image")
    assert "base64" in refused(422, decode_base64_field, "data:image/png,%89PNG", "image_start", 1000, "image")
    assert "comma" in refused(422, decode_base64_field, "data:image/png;base64", "image_start", 1000, "image")


def test_size_limit_boundary_is_exact():
    assert len(decode_base64_field(b64(b"x" * 300), "audio", 300, "audio")[0]) == 300
    for n in (301, 302, 303):  # every padding length
        assert refused(413, decode_base64_field, b64(b"x" * n), "audio", 300, "audio", field="audio") == \
            f"audio is {n} bytes; the limit is 300 bytes"


def test_oversized_payload_refused_from_its_length_without_decoding(monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("decoded a payload that was already too large")

    monkeypatch.setattr(inputs.base64, "b64decode", never)
    limit = 20 * 1024 * 1024
    huge = "A" * (25 * 1024 * 1024 * 4 // 3)  # 25 MB once decoded
    start = time.perf_counter()
    assert refused(413, decode_base64_field, "data:image/png;base64," + huge, "image_start", limit, "image",
                   field="image_start") == "image_start is 25 MB; the limit is 20 MB"
    assert refused(413, decode_base64_field, huge[:-1000] + "\n", "image_end", limit, "image") == \
        "image_end is 25 MB; the limit is 20 MB"
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------------------------------------ images


@pytest.mark.parametrize("fmt,mime,kw", [
    ("PNG", "image/png", {}),
    ("JPEG", "image/jpeg", {"quality": 95}),
    ("WEBP", "image/webp", {"lossless": True}),
    ("GIF", "image/gif", {}),
])
def test_each_format_decodes_and_cover_crop_keeps_red_left(fmt, mime, kw):
    data = image_bytes(red_left_blue_right(), fmt, **kw)
    value = b64(data, mime)
    raw, declared = decode_base64_field(value, "image_start", LIMITS.max_image_bytes, "image")
    img = load_image(raw, "image_start", declared, LIMITS)
    assert img.mode == "RGB" and img.size == (200, 100)
    # Cover a square: scale to 128 tall (256 wide), crop the middle 128 -> left half red, right half blue.
    out = cover(img, 128, 128)
    assert out.shape == (128, 128, 3)
    assert np.abs(out[:, :56].astype(int) - (255, 0, 0)).max() < 40
    assert np.abs(out[:, -56:].astype(int) - (0, 0, 255)).max() < 40


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((0, 255, 0), (255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    img = load_image(buf.getvalue(), "image_start", "image/gif", LIMITS)
    assert img.getpixel((16, 16)) == (0, 255, 0)


def test_transparency_becomes_white():
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    img = load_image(image_bytes(rgba, "PNG"), "image_start", None, LIMITS)
    assert img.getpixel((1, 1)) == (255, 255, 255) and img.getpixel((0, 0)) == (255, 0, 0)
    # Half-transparent black over white is mid-gray.
    half = load_image(image_bytes(Image.new("RGBA", (2, 2), (0, 0, 0, 128)), "WEBP", lossless=True), "f", None, LIMITS)
    assert abs(half.getpixel((0, 0))[0] - 127) <= 2

    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)  # index 0 black (transparent), 1 green
    pal.putpixel((3, 3), 1)
    img = load_image(image_bytes(pal, "PNG", transparency=0), "image_end", "image/png", LIMITS)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((3, 3)) == (0, 255, 0)

    la = Image.new("LA", (2, 2), (0, 0))
    assert load_image(image_bytes(la, "PNG"), "f", None, LIMITS).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_grayscale_is_scaled_not_clipped():
    arr = np.full((4, 4), 32896, np.uint16)  # mid-gray in 16 bits (128 * 257)
    arr[0, 0], arr[0, 1] = 65535, 0
    data = image_bytes(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")  # it really is a 16-bit PNG
    img = load_image(data, "image_start", None, LIMITS)
    assert img.getpixel((2, 2)) == (128, 128, 128)
    assert img.getpixel((0, 0)) == (255, 255, 255) and img.getpixel((1, 0)) == (0, 0, 0)


def test_grayscale_and_cmyk_become_rgb():
    gray = load_image(image_bytes(Image.new("L", (3, 3), 77), "PNG"), "f", None, LIMITS)
    assert gray.mode == "RGB" and gray.getpixel((1, 1)) == (77, 77, 77)
    cmyk = load_image(image_bytes(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=100), "f", None, LIMITS)
    r, g, b = cmyk.getpixel((4, 4))
    assert cmyk.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied():
    # Stored 40x20, red on the left; orientation 6 means "rotate 90 degrees clockwise to display".
    img = red_left_blue_right(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = load_image(image_bytes(img, "JPEG", exif=exif, quality=95), "image_start", "image/jpeg", LIMITS)
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def cover(img: Image.Image, width: int, height: int) -> np.ndarray:
    """The resize conditioning images get (ltx-core's bilinear cover and centre crop), as (H, W, 3)."""
    return cover_bilinear(np.array(img), width, height).permute(1, 2, 0).numpy()


def test_the_cover_resize_never_stretches():
    # A 300x100 image with a 100x100 white square in the middle, covered into 64x64, fills it
    # exactly: any stretch would pull in the black sides.
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, 100:200] = 255
    out = cover(Image.fromarray(arr), 64, 64)
    assert out.shape == (64, 64, 3) and out[:, 2:-2].min() > 240
    # Portrait target from a landscape image: height matches, sides cropped.
    out = cover(red_left_blue_right(200, 100), 32, 96)
    assert out.shape == (96, 32, 3)
    assert np.abs(out[:, :12] - (255, 0, 0)).max() < 40  # middle 1/6 of the width, left of centre
    assert np.abs(out[:, -12:] - (0, 0, 255)).max() < 40
    # A large downscale stays centred.
    out = cover(red_left_blue_right(3000, 1500), 64, 64)
    assert np.abs(out[:, :30] - (255, 0, 0)).max() < 40
    assert np.abs(out[:, -30:] - (0, 0, 255)).max() < 40
    # Upscaling a tiny image works too.
    assert cover(Image.new("RGB", (3, 2), (9, 9, 9)), 96, 64).shape == (64, 96, 3)


def test_auto_size():
    assert auto_size(1920, 1080, 768 * 432) == (768, 448)  # 432 is no multiple of 32; 448 is closer than 416
    assert auto_size(1080, 1920, 512 * 288) == (288, 512)
    assert auto_size(1000, 1000, 512 * 512) == (512, 512)
    w, h = auto_size(4000, 3000, 1_000_000)
    assert abs(w * h - 1_000_000) < 0.1 * 1_000_000 and abs(w / h - 4 / 3) < 0.05
    # Extreme aspects stay within bounds and multiples of 32.
    for iw, ih in ((10000, 10), (10, 10000), (1, 1)):
        w, h = auto_size(iw, ih, 3840 * 3840)
        assert 64 <= w <= 3840 and 64 <= h <= 3840 and w % 32 == 0 and h % 32 == 0
    assert auto_size(10000, 100, 768 * 512) == (3840, 64)
    assert auto_size(10, 10, 16) == (64, 64)


def test_declared_mime_contradicting_content():
    jpeg = image_bytes(red_left_blue_right(), "JPEG")
    raw, mime = decode_base64_field(b64(jpeg, "image/png"), "image_start", LIMITS.max_image_bytes, "image")
    assert refused(422, load_image, raw, "image_start", mime, LIMITS, field="image_start") == \
        "image_start declares image/png but holds a JPEG"
    assert load_image(jpeg, "image_start", "image/jpg", LIMITS).size == (200, 100)  # a common alias


def test_not_an_image():
    text = decode_base64_field(b64(b"hello, I am plain text and no picture at all"), "image_start", 1000, "image")[0]
    assert refused(422, load_image, text, "image_start", None, LIMITS, field="image_start") == \
        "image_start is not a PNG, JPEG, WebP or GIF image"
    bmp = image_bytes(Image.new("RGB", (4, 4)), "BMP")
    assert "BMP" in refused(422, load_image, bmp, "image_end", None, LIMITS, field="image_end")
    tiff = image_bytes(Image.new("RGB", (4, 4)), "TIFF")
    assert "TIFF" in refused(422, load_image, tiff, "image_end", None, LIMITS, field="image_end")


def test_truncated_png_is_refused():
    data = image_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG")
    message = refused(422, load_image, data[: len(data) // 2], "image_start", None, LIMITS, field="image_start")
    assert message.startswith("image_start could not be decoded: ")
    jpeg = image_bytes(red_left_blue_right(), "JPEG")
    assert "could not be decoded" in refused(422, load_image, jpeg[: len(jpeg) // 2], "image_end", None, LIMITS)
    assert "could not be decoded" in refused(422, load_image, data[:20], "image_end", None, LIMITS)


def test_pixel_bombs_refused_from_the_header_before_decoding():
    start = time.perf_counter()
    bomb = png_header_only(30000, 30000)
    assert len(bomb) < 100
    message = refused(413, load_image, bomb, "image_start", "image/png", LIMITS, field="image_start")
    assert message == "image_start is 900.0 megapixels; the limit is 50 megapixels"
    # Under Pillow's own guard (~179 MP) but over ours: our check, with the dimensions.
    assert refused(413, load_image, png_header_only(8000, 8000), "image_end", None, LIMITS, field="image_end") == \
        "image_end is 8000x8000 pixels; the limit is 50 megapixels"
    small = InputLimits(max_image_pixels=10_000)
    assert refused(413, load_image, image_bytes(Image.new("RGB", (101, 100)), "PNG"), "image_end", None, small) == \
        "image_end is 101x100 pixels; the limit is 0.01 megapixels"
    assert load_image(image_bytes(Image.new("RGB", (100, 100)), "PNG"), "image_end", None, small).size == (100, 100)
    assert time.perf_counter() - start < 2.0


# ------------------------------------------------------------------------------------------------ audio


@pytest.mark.parametrize("name,fmt,codec,rate,mime", [
    ("wav", "wav", "pcm_s16le", 44100, "audio/wav"),
    ("mp3", "mp3", "libmp3lame", 44100, "audio/mpeg"),
    ("opus", "ogg", "libopus", 48000, "audio/ogg"),
    ("flac", "flac", "flac", 22050, "audio/flac"),
    ("m4a", "ipod", "aac", 32000, "audio/mp4"),
    ("adts", "adts", "aac", 24000, "audio/aac"),
    ("webm", "webm", "libopus", 48000, "audio/webm"),
])
@pytest.mark.parametrize("stereo", [False, True])
def test_each_audio_format_decodes_to_stereo_16k(name, fmt, codec, rate, mime, stereo):
    left = sine(440, 1.0, rate)
    channels = [left, sine(1000, 1.0, rate)] if stereo else [left]
    data = encode_audio(fmt, codec, rate, channels)
    raw, declared = decode_base64_field(b64(data, mime), "audio", LIMITS.max_audio_bytes, "audio")
    out = load_audio(raw, "audio", declared, LIMITS, 16000)
    assert out.dtype == np.float32 and out.shape[0] == 2
    # Duration kept within a codec frame or so; raw ADTS has no priming info, so its ~2 frames of
    # encoder delay and padding stay in.
    assert abs(out.shape[1] / 16000 - 1.0) < (0.1 if name == "adts" else 0.05), out.shape
    assert np.abs(out).max() <= 1.0
    rms = np.sqrt(np.mean(out[0, 2000:14000] ** 2))  # a 0.5 sine is 0.354; a -3 dB mono upmix would be 0.25
    assert 0.32 < rms < 0.39, rms
    assert abs(dominant_hz(out[0], 16000) - 440) < 3
    if stereo:
        assert abs(dominant_hz(out[1], 16000) - 1000) < 3  # channel order kept
    else:
        np.testing.assert_array_equal(out[0], out[1])


def test_ogg_vorbis_and_other_rates():
    data = encode_audio("ogg", "vorbis", 44100, [sine(440, 1.0, 44100)] * 2, codec_options={"strict": "experimental"})
    out = load_audio(data, "audio", "audio/ogg", LIMITS, 24000)
    assert out.shape[0] == 2 and abs(out.shape[1] - 24000) < 1200
    assert abs(dominant_hz(out[0], 24000) - 440) < 3
    data = encode_audio("wav", "pcm_s16le", 8000, [sine(440, 0.5, 8000)])
    out = load_audio(data, "audio", None, LIMITS, 48000)
    assert out.shape == (2, 24000) and abs(dominant_hz(out[0], 48000) - 440) < 3


def test_surround_is_downmixed_to_stereo():
    rate = 16000
    silent = np.zeros(rate, np.float32)
    data = encode_audio("wav", "pcm_s16le", rate, [sine(440, 1, rate)] + [silent] * 5, layout="5.1")
    out = load_audio(data, "audio", "audio/wav", LIMITS, rate)
    assert out.shape == (2, rate)
    assert np.abs(out[0]).max() > 0.1 and np.abs(out[1]).max() < 0.01  # front-left stays left


def test_declared_audio_mime_contradicting_content():
    mp3 = encode_audio("mp3", "libmp3lame", 44100, [sine(440, 0.5, 44100)])
    raw, mime = decode_base64_field(b64(mp3, "audio/wav"), "audio", LIMITS.max_audio_bytes, "audio")
    assert refused(422, load_audio, raw, "audio", mime, LIMITS, 16000, field="audio") == \
        "audio declares audio/wav but holds MP3"


def test_not_audio():
    text = decode_base64_field(b64(b"just some text, certainly not a sound " * 20), "audio", 10_000, "audio")[0]
    assert "not a readable audio file" in refused(422, load_audio, text, "audio", None, LIMITS, 16000, field="audio")
    png = image_bytes(red_left_blue_right(), "PNG")  # FFmpeg reads PNGs, but that demuxer is not allowed
    assert "audio" in refused(422, load_audio, png, "audio", None, LIMITS, 16000, field="audio")
    # A container with video and no audio.
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    assert refused(422, load_audio, buf.getvalue(), "audio", "video/mp4", LIMITS, 16000, field="audio") == \
        "audio holds no audio stream"


def test_truncated_or_corrupt_audio_is_refused_or_partial_but_never_crashes():
    flac = encode_audio("flac", "flac", 44100, [sine(440, 1.0, 44100)])
    for data in (flac[:30], flac[: len(flac) // 2], flac[:200] + bytes(5000)):
        try:
            out = load_audio(data, "audio", None, LIMITS, 16000)
        except InvalidRequest as exc:
            assert exc.status == 422 and exc.field == "audio"
        else:
            assert out.shape[0] == 2 and out.shape[1] <= 16000


def test_zero_length_audio():
    buf = io.BytesIO()  # PyAV writes nothing at all for a stream without packets; the stdlib writes a header
    with wave.open(buf, "wb") as writer:
        writer.setnchannels(1), writer.setsampwidth(2), writer.setframerate(44100)
    wav = buf.getvalue()
    assert wav.startswith(b"RIFF") and wav.endswith(b"data\x00\x00\x00\x00")
    assert refused(422, load_audio, wav, "audio", "audio/wav", LIMITS, 16000, field="audio") == \
        "audio is empty (0 samples)"


def test_audio_over_the_duration_limit():
    short = InputLimits(max_audio_seconds=1.0)
    wav = encode_audio("wav", "pcm_s16le", 16000, [sine(440, 2.0, 16000)])
    assert refused(422, load_audio, wav, "audio", None, short, 16000, field="audio") == \
        "audio is 2.0 s long; the limit is 1 s"
    # At the limit it passes; a codec's padding past it is cut off.
    wav = encode_audio("wav", "pcm_s16le", 16000, [sine(440, 1.0, 16000)])
    assert load_audio(wav, "audio", None, short, 16000).shape == (2, 16000)
    m4a = encode_audio("ipod", "aac", 44100, [sine(440, 1.0, 44100)])
    assert load_audio(m4a, "audio", None, short, 16000).shape[1] <= 16000


def lying_mp3(repeats: int) -> bytes:
    """An MP3 whose Info header says about 1 s, followed by `repeats` more seconds of frames."""
    rate = 22050
    encode = lambda options: encode_audio("mp3", "libmp3lame", rate, [sine(440, 1.0, rate, 0.3)], options=options)
    head = bytearray(encode({}))
    body = encode({"write_xing": "0", "id3v2_version": "0"})
    tag = head.find(b"Info")
    assert tag > 0 and struct.unpack(">I", head[tag + 4 : tag + 8])[0] & 3 == 3  # frames and bytes fields present
    data = head + body * repeats
    # FFmpeg distrusts the frame count when the tag's byte count disagrees with the file; make it agree.
    data[tag + 12 : tag + 16] = struct.pack(">I", len(data))
    return bytes(data)


def test_lying_duration_header_cannot_make_us_decode_hours(monkeypatch):
    data = lying_mp3(repeats=1200)  # 20 minutes of audio, 5 MB
    with av.open(io.BytesIO(data)) as container:
        assert container.duration / av.time_base < 1.5  # the header lies

    fed = []
    real = av.AudioResampler

    class CountingResampler:  # PyAV's class cannot be subclassed; wrap it
        def __init__(self, **kwargs):
            self.inner = real(**kwargs)

        def resample(self, frame):
            fed.append(frame.samples if frame is not None else 0)
            return self.inner.resample(frame)

    monkeypatch.setattr(inputs.av, "AudioResampler", CountingResampler)
    limits = InputLimits(max_audio_seconds=3.0)
    assert refused(422, load_audio, data, "audio", "audio/mpeg", limits, 16000, field="audio") == \
        "audio is longer than 3 s, the limit"
    assert sum(fed) < 3.5 * 22050  # stopped right after the limit, not after 20 minutes
    # A long enough limit accepts it (the header's 1 s is not trusted either way).
    out = load_audio(lying_mp3(repeats=3), "audio", None, InputLimits(max_audio_seconds=10), 16000)
    assert 4.0 <= out.shape[1] / 16000 < 4.4  # each appended copy keeps its own encoder delay


def test_limits_from_env():
    limits = InputLimits.from_env({"LTX2_MAX_IMAGE_MB": "5", "LTX2_MAX_AUDIO_MB": "0.5",
                                   "LTX2_MAX_IMAGE_MEGAPIXELS": "12.5", "LTX2_MAX_AUDIO_SECONDS": "20"})
    assert limits == InputLimits(5 * 1024 * 1024, 512 * 1024, 12_500_000, 20.0)
    assert InputLimits.from_env({}) == InputLimits(20 * 1024 * 1024, 50 * 1024 * 1024, 50_000_000, 60.0)
    for bad in ("zero", "0", "-3", "inf", "nan"):
        with pytest.raises(ValueError, match="LTX2_MAX_AUDIO_SECONDS"):
            InputLimits.from_env({"LTX2_MAX_AUDIO_SECONDS": bad})
