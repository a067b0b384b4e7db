"""Every image operation runs in the sandbox, bounded by the output frame: an aspect ratio far from the
frame's is a 422 before a pixel is decoded, an image that cannot be decoded or prepared is a 422 naming
its field (never a 500), only output-sized tensors come back, and for ordinary images they are exactly
what this process would compute."""

from __future__ import annotations

import base64
import io
import time

import hostile
import httpx
import numpy as np
import pytest
from hostile import raw_png
from PIL import Image

from ltx2.media.conditioning_image import MAX_ASPECT_SPREAD, ImageTargets, conditioning_pixels
from ltx2.media.fetch import FetchPolicy
from ltx2.media.inputs import InputLimits
from ltx2.media.sandbox import Sandbox, SandboxLimits
from ltx2.schema import InvalidRequest

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encoded(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(width: int, height: int, seed: int = 0, grain: float = 12) -> np.ndarray:
    """Smooth gradients with noise: something H.264 and JPEG treat like a picture."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], axis=-1)
    noise = np.random.default_rng(seed).normal(0, grain, base.shape) if grain else 0
    return np.clip(base + noise, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def box():
    sandbox = Sandbox(SandboxLimits(memory_mb=1024, timeout=30))
    yield sandbox
    sandbox.close()


def prepare(box: Sandbox, field: str, data: bytes, targets: ImageTargets):
    return box.decode({field: b64(data)}, 16_000, 24_000, InputLimits(), FetchPolicy(), targets=targets).images[field]


def refused(box: Sandbox, field: str, data: bytes, targets: ImageTargets) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        prepare(box, field, data, targets)
    assert info.value.field == field, info.value.message
    return info.value


# -------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("field", ["image_start", "image_end"])
@pytest.mark.slow
def test_a_thin_image_is_refused_for_its_aspect_before_it_is_decoded(box, field):
    thin = raw_png(1, 9000)  # ~100 bytes; covering 768x512 would scale it 768 times: 6.9 G pixels
    start = time.monotonic()
    error = refused(box, field, thin, ImageTargets(width=768, height=512))
    assert error.status == 422 and "1x9000 pixels" in error.message
    assert f"more than {MAX_ASPECT_SPREAD:g} times from the 768x512 frame" in error.message
    assert time.monotonic() - start < 20  # a fresh sandbox child at most, not a decode


def test_the_aspect_bound_is_measured_from_the_frame():
    from ltx2.media.conditioning_image import aspect_spread

    assert aspect_spread((1920, 1080), (1920, 1080)) == 1
    assert aspect_spread((1080, 1920), (1920, 1080)) == pytest.approx((16 / 9) ** 2)
    assert aspect_spread((1600, 100), (64, 64)) == 16  # the bound itself is accepted...
    assert aspect_spread((1602, 100), (64, 64)) > MAX_ASPECT_SPREAD  # ...past it is not


@pytest.mark.slow
def test_an_image_at_the_aspect_bound_is_accepted(box):
    wide = photo(1024, 64)  # 16:1 into a square frame: exactly the bound
    prepared = prepare(box, "image_start", encoded(wide, "PNG"), ImageTargets(width=64, height=64))
    assert prepared.size == (1024, 64)
    assert prepared.pixels[(64, 64)].equal(conditioning_pixels(wide, 64, 64))


@pytest.mark.parametrize("auto", [False, True])
@pytest.mark.slow
def test_a_decompression_bomb_shape_is_a_422_not_a_500(box, auto):
    bomb = raw_png(2, 24_999_999)  # 73 KB, just under the 50 MP limit
    targets = ImageTargets(width=768, height=512, auto_pixels=768 * 512 if auto else None)
    error = refused(box, "image_start", bomb, targets)
    assert error.status == 422 and "2x24999999 pixels" in error.message


@pytest.mark.slow
def test_an_image_h264_cannot_hold_is_a_422_naming_the_field(box):
    # Within the aspect bound of a 16:1 frame and the pixel limit, but wider than libx264 encodes.
    wide = raw_png(28_000, 1760, channels=3)
    error = refused(box, "image_end", wide, ImageTargets(width=3840, height=240))
    assert error.status == 422 and "at most 16384 pixels a side" in error.message


def test_a_truncated_image_is_a_422_naming_the_field(box):
    data = encoded(photo(200, 100), "PNG")
    error = refused(box, "image_end", data[: len(data) // 2], ImageTargets(width=64, height=64))
    assert error.status == 422 and "could not be decoded" in error.message


# ----------------------------------------------------------------------- exactly as before, output-sized


def test_prepared_pixels_are_bit_identical_to_this_process_at_every_stage_size(box):
    rgb = photo(161, 91)  # odd sides: the round trip crops to 160x90 first
    targets = ImageTargets(width=128, height=64, multiple=64, scales=((2, 1), (1, 1)), crf=18)
    prepared = prepare(box, "image_start", encoded(rgb, "PNG"), targets)
    assert prepared.size == (161, 91) and sorted(prepared.pixels) == [(64, 32), (128, 64)]
    for (width, height), pixels in prepared.pixels.items():
        assert pixels.shape == (1, 3, 1, height, width) and pixels.dtype.is_floating_point
        assert pixels.equal(conditioning_pixels(rgb, width, height, crf=18))


def test_exif_rotation_is_applied_and_the_size_is_upright(box):
    rgb = photo(120, 80)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: the upright image is 80x120
    data = encoded(rgb, "JPEG", exif=exif, quality=95)
    prepared = prepare(box, "image_start", data, ImageTargets(width=64, height=96))
    upright = np.asarray(Image.open(io.BytesIO(data)).transpose(Image.Transpose.ROTATE_270).convert("RGB"))
    assert prepared.size == (80, 120)
    assert prepared.pixels[(64, 96)].equal(conditioning_pixels(upright, 64, 96))


def test_auto_size_fits_image_end_to_image_starts_frame(box):
    start, end = photo(300, 100), photo(100, 100, seed=1)
    targets = ImageTargets(width=64, height=64, auto_pixels=64 * 64 * 4)
    inputs = {"image_end": b64(encoded(end, "PNG")), "image_start": b64(encoded(start, "PNG"))}
    images = box.decode(inputs, 16_000, 24_000, InputLimits(), FetchPolicy(), targets=targets).images
    frame = targets.frame((300, 100))
    assert list(images["image_start"].pixels) == list(images["image_end"].pixels) == targets.sizes(frame)
    assert images["image_end"].pixels[frame].equal(conditioning_pixels(end, *frame))


def test_the_preview_for_prompt_expansion_is_gemmas_resize(box):
    rgb = photo(90, 60)
    prepared = prepare(box, "image_start", encoded(rgb, "PNG"), ImageTargets(width=64, height=64, preview=56))
    expected = Image.fromarray(rgb).resize((56, 56), Image.Resampling.BILINEAR)
    assert prepared.preview.size == (56, 56) and prepared.preview.tobytes() == expected.tobytes()


@pytest.mark.slow
def test_a_jpeg_is_decoded_reduced_only_when_far_larger_than_needed(box):
    targets = ImageTargets(width=64, height=64)
    # 384 px: under 8x the 64 px it covers, decoded whole (bit-identical to a full decode).
    small = encoded(photo(384, 384), "JPEG", quality=90)
    full = np.asarray(Image.open(io.BytesIO(small)).convert("RGB"))
    assert prepare(box, "image_start", small, targets).pixels[(64, 64)].equal(conditioning_pixels(full, 64, 64))
    # 2048 px: 32x the need. libjpeg decodes it at 1/8 (256 px, still 4x the need).
    large = encoded(photo(2048, 2048), "JPEG", quality=90)
    prepared = prepare(box, "image_start", large, targets)
    reduced = Image.open(io.BytesIO(large))
    reduced.draft("RGB", (256, 256))
    reduced = np.asarray(reduced.convert("RGB"))
    assert reduced.shape == (256, 256, 3) and prepared.size == (2048, 2048)
    assert prepared.pixels[(64, 64)].equal(conditioning_pixels(reduced, 64, 64))


# ------------------------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def server(live_process):
    """The session's default server (conftest.live_process): its memory is read around each request."""
    proc, base = live_process
    with httpx.Client(base_url=base, timeout=120) as http:
        yield proc, http


@pytest.mark.parametrize("name,image,words", [
    ("thin", raw_png(1, 9000), "1x9000 pixels, an aspect ratio"),
    ("bomb shape", raw_png(2, 24_999_999), "2x24999999 pixels, an aspect ratio"),
])
def test_the_server_refuses_a_hostile_shape_and_holds_no_image_memory(server, name, image, words):
    proc, http = server
    hostile.reset_peak_rss(proc.pid)
    before = hostile.rss_mb(proc.pid)
    answer = http.post("/generate", json={**CHEAP, "image_start": "data:image/png;base64," + b64(image)})
    grew = hostile.peak_rss_mb(proc.pid) - before
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "image_start" and words in answer.json()["error"]
    assert grew < 50, grew
    assert http.post("/generate", json=CHEAP).status_code == 200


def test_the_server_prepares_a_large_image_outside_its_own_memory(server):
    proc, http = server
    big = encoded(photo(6000, 4000, grain=0), "PNG")  # 24 MP: 72 MB decoded, 288 MB as floats
    hostile.reset_peak_rss(proc.pid)
    before = hostile.rss_mb(proc.pid)
    answer = http.post("/generate", json={**CHEAP, "image_start": "data:image/png;base64," + b64(big)})
    grew = hostile.peak_rss_mb(proc.pid) - before
    assert answer.status_code == 200 and answer.json()["has_image_start"], answer.text[:300]
    assert grew < 80, grew  # the request body and its base64, not the image's pixels
