"""Properties of the size arithmetic over the request's whole range (hypothesis): the size the model
runs at, the crop back to the requested frame, the token count that sets the schedule's shift, the
"auto" size from a conditioning image, and resizing that image to cover the frame. Each expectation is the
rule written out here, not a call of the function under test."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ltx2.media.conditioning_image import cover_bilinear
from ltx2.media.inputs import auto_size
from ltx2.models.geometry import latent_video_shape
from ltx2.pipelines.stages import center_crop, model_size
from ltx2.schema import SIZE_MAX, SIZE_MIN

EVEN_SIDE = st.integers(SIZE_MIN // 2, SIZE_MAX // 2).map(lambda n: 2 * n)  # the request's width and height
FRAMES = st.integers(1, 60).map(lambda k: 8 * k + 1)  # 9 .. 481, the request's num_frames


@given(width=EVEN_SIDE, height=EVEN_SIDE, multiple=st.sampled_from([32, 64]))
def test_the_model_runs_at_the_smallest_covering_multiple(width, height, multiple):
    model_w, model_h = model_size(width, height, multiple)
    for side, asked in ((model_w, width), (model_h, height)):
        assert side % multiple == 0
        assert asked <= side < asked + multiple


@settings(max_examples=60)
@given(frames=st.integers(1, 3), height=st.integers(1, 40), width=st.integers(1, 40), data=st.data())
def test_center_crop_keeps_the_middle_with_the_odd_pixel_after(frames, height, width, data):
    crop_h = data.draw(st.integers(1, height))
    crop_w = data.draw(st.integers(1, width))
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    clip = np.stack([np.stack([rows, cols, np.full_like(rows, f)], -1) for f in range(frames)]).astype(np.int32)
    out = center_crop(clip, crop_w, crop_h)
    assert out.shape == (frames, crop_h, crop_w, 3)
    top, left = out[0, 0, 0, 0], out[0, 0, 0, 1]
    bottom, right = height - crop_h - top, width - crop_w - left
    # Equal margins, or the one left-over row (column) below (right of) the picture.
    assert bottom - top in (0, 1) and right - left in (0, 1)
    # A window of the source, rows and columns in order, every frame the same window.
    assert np.array_equal(out[..., 0], np.broadcast_to(np.arange(top, top + crop_h)[:, None], out.shape[:3]))
    assert np.array_equal(out[..., 1], np.broadcast_to(np.arange(left, left + crop_w)[None, :], out.shape[:3]))
    assert np.array_equal(out[:, 0, 0, 2], np.arange(frames))


@given(width=EVEN_SIDE, height=EVEN_SIDE)
def test_the_frame_is_cut_back_out_of_the_model_size(width, height):
    model_w, model_h = model_size(width, height, 32)
    video = np.zeros((1, model_h, model_w, 3), np.uint8)
    out = center_crop(video, width, height)
    assert out.shape == (1, height, width, 3)
    # Under a multiple of 32 is cut, so each side loses at most 15 pixels (31 split in two).
    assert (model_w - width) // 2 <= 15 and (model_h - height) // 2 <= 15


@given(frames=FRAMES, width=EVEN_SIDE, height=EVEN_SIDE)
def test_video_tokens_over_the_request_range(frames, width, height):
    # LTX-2's video VAE: 8x in time after the first frame, 32x in space; one token per latent pixel.
    model_w, model_h = model_size(width, height, 32)
    shape = latent_video_shape(frames, model_h, model_w, 32, 8)
    expected = (1 + (frames - 1) // 8) * math.ceil(height / 32) * math.ceil(width / 32)
    assert math.prod(shape) == expected
    assert shape[0] == (frames + 7) // 8  # 8k+1 frames: k+1 latent frames


@given(img_w=st.integers(16, 8000), img_h=st.integers(16, 8000),
       target=st.integers(SIZE_MIN * SIZE_MIN, 1920 * 1088))
def test_auto_size_keeps_the_images_shape_on_the_grid(img_w, img_h, target):
    width, height = auto_size(img_w, img_h, target)
    assert width % 32 == 0 and height % 32 == 0
    assert SIZE_MIN <= width <= SIZE_MAX and SIZE_MIN <= height <= SIZE_MAX
    if img_w > img_h:
        assert width >= height
    elif img_h > img_w:
        assert height >= width
    # Where the ideal size (the image's aspect, the target's area) lies inside the bounds, each side
    # is that side moved to a neighbouring multiple of 32, so the area is off by at most that much.
    ideal_w, ideal_h = math.sqrt(target * img_w / img_h), math.sqrt(target * img_h / img_w)
    if SIZE_MIN <= ideal_w <= SIZE_MAX and SIZE_MIN <= ideal_h <= SIZE_MAX:
        assert abs(width - ideal_w) < 32 and abs(height - ideal_h) < 32
        low = max(0.0, (1 - 32 / ideal_w) * (1 - 32 / ideal_h))
        assert low <= width * height / target <= (1 + 32 / ideal_w) * (1 + 32 / ideal_h)


@settings(max_examples=40, deadline=None)
@given(parity=st.integers(0, 1), half_w=st.integers(12, 200), half_h=st.integers(12, 200),
       width=EVEN_SIDE.filter(lambda n: n <= 384), height=EVEN_SIDE.filter(lambda n: n <= 384))
def test_conditioning_images_are_scaled_to_cover_without_stretching_and_centred(parity, half_w, half_h, width, height):
    src_w, src_h = 2 * half_w + parity, 2 * half_h + parity
    scale = max(width / src_w, height / src_h)  # cover: the frame is filled, the rest cropped
    side = int(0.6 * min(width, height) / scale)  # a square that stays inside the frame once scaled
    side -= (side - parity) % 2  # same parity as both sides of the source: exactly centred there
    assume(side >= 2 and side * scale >= 8)
    img = np.full((src_h, src_w, 3), 255, np.uint8)
    corner = ((src_w - side) // 2, (src_h - side) // 2)
    img[corner[1]:corner[1] + side, corner[0]:corner[0] + side] = 0
    out = cover_bilinear(img, width, height).permute(1, 2, 0).numpy()
    assert out.shape == (height, width, 3)
    dark = out.mean(-1) < 128
    rows, cols = np.flatnonzero(dark.any(1)), np.flatnonzero(dark.any(0))
    # The square comes out square (one scale for both directions), side * scale wide, in the middle.
    assert abs(len(rows) - side * scale) <= 2 and abs(len(cols) - side * scale) <= 2
    assert abs(rows[0] - (height - 1 - rows[-1])) <= 2 and abs(cols[0] - (width - 1 - cols[-1])) <= 2
