"""Compression ratios, latent shapes, token counts and audio latent length, from their definitions.

The reference (ltx-core 1.2.0, `types.py`): a video latent has (frames - 1) // 8 + 1 frames (the
causal VAE encodes the first frame alone, then 8 per latent) and H / 32 x W / 32 cells, one token each
(patch size 1); an audio latent has round(duration x 16000 / 160 / 4) frames, 25 per second.
"""

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ltx2.models.geometry import audio_latent_frames, latent_video_shape, video_vae_compression

# Every valid request: 8k+1 frames in 9..481, sides multiples of 32 in 64..3840, 1..60 fps.
K = st.integers(1, 60)
SIDE = st.integers(2, 120).map(lambda n: 32 * n)
FPS = st.integers(1, 60)


@settings(max_examples=300, deadline=None)
@given(k=K, height=SIDE, width=SIDE)
def test_latent_shape_of_every_valid_request(k, height, width):
    frames, lh, lw = latent_video_shape(8 * k + 1, height, width, 32, 8)
    # 8k+1 frames: the first alone, then k groups of 8
    assert (frames, lh, lw) == (k + 1, height // 32, width // 32)
    assert all(type(n) is int for n in (frames, lh, lw))
    # the token count the scheduler's shift reads (patch size 1): one per latent cell
    assert frames * lh * lw == (k + 1) * (height * width) // 1024


@settings(max_examples=200, deadline=None)
@given(frames=st.integers(1, 2000), height=st.integers(1, 5000), width=st.integers(1, 5000),
       spatial=st.sampled_from([1, 2, 8, 16, 32, 64]), temporal=st.sampled_from([1, 2, 4, 8]))
def test_latent_shape_is_the_reference_floor_rule_for_any_size(frames, height, width, spatial, temporal):
    # A frame count that is not 1 + a multiple of the ratio keeps the frames the last latent covers fully.
    lf, lh, lw = latent_video_shape(frames, height, width, spatial, temporal)
    assert lf == 1 + sum(1 for f in range(1, frames) if f % temporal == 0)  # latents begun after frame 0
    assert (lh, lw) == (sum(1 for y in range(1, height + 1) if y % spatial == 0),
                        sum(1 for x in range(1, width + 1) if x % spatial == 0))


def test_hand_computed_shapes():
    assert latent_video_shape(49, 512, 288, 32, 8) == (7, 16, 9)
    assert latent_video_shape(9, 64, 64, 32, 8) == (2, 2, 2)
    assert latent_video_shape(481, 3840, 3840, 32, 8) == (61, 120, 120)
    assert latent_video_shape(1, 32, 32, 32, 8) == (1, 1, 1)  # a single image
    assert latent_video_shape(16, 100, 70, 32, 8) == (2, 3, 2)  # 16 frames: 1 + 8 full, 7 left over
    assert latent_video_shape(17, 64, 64, 32, 4) == (5, 2, 2)


@pytest.mark.parametrize("frames, fps, latents", [
    (49, 10, 123), (153, 30, 127), (201, 10, 503), (249, 50, 125), (337, 10, 843), (377, 10, 943), (465, 50, 233),
    (473, 50, 237),
])
def test_audio_latent_frames_where_the_float_order_decides_a_half(frames, fps, latents):
    # Every request (8k+1 frames, 1..60 fps) whose exact count ends in .5 and where the two float orders
    # disagree, found by scanning the range; the expected counts are ltx-core's order, duration times
    # latents per second: round((frames / fps) * (16000 / 160 / 4)) in float64. Exact arithmetic would
    # round half to even, and frames / fps * 16000 / 160 / 4 lands on the other side.
    assert audio_latent_frames(frames, fps, 16000, 160, 4) == latents


def test_audio_latent_frames_hand_computed():
    assert audio_latent_frames(49, 25, 16000, 160, 4) == 49  # 1.96 s x 25 per second
    assert audio_latent_frames(121, 24, 16000, 160, 4) == 126  # 5.0417 s -> 126.04
    assert audio_latent_frames(17, 50, 16000, 160, 4) == 8  # 0.34 s x 25 = 8.5: half to even, as round()
    assert audio_latent_frames(9, 60, 16000, 160, 4) == 4  # 3.75 -> 4
    assert audio_latent_frames(481, 1, 16000, 160, 4) == 12025
    assert audio_latent_frames(25, 25, 24000, 240, 4) == 25  # the rate is sample_rate / hop / compression
    assert audio_latent_frames(25, 25, 16000, 160, 2) == 50
    assert audio_latent_frames(25, 25, 16000, 320, 4) == 12  # 12.5: Python's round, half to even


@settings(max_examples=500, deadline=None)
@given(k=K, fps=FPS)
def test_audio_latent_frames_over_the_request_range(k, fps):
    num_frames = 8 * k + 1
    ours = audio_latent_frames(num_frames, fps, 16000, 160, 4)
    # ltx-core's AudioLatentShape.from_duration, as it computes it
    assert ours == round(float(num_frames) / float(fps) * (16000.0 / 160.0 / 4.0))
    # ... which is the exact duration x 25 rounded, to within the rounding of a tie
    exact = Fraction(num_frames * 25, fps)
    assert abs(ours - exact) <= Fraction(1, 2)


# --- compression ratios, counted per block type ------------------------------------------------


REAL_ENCODER = {"patch_size": 4, "patch_size_t": 1, "spatio_temporal_scaling": (True, True, True, True),
                "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal")}


def test_the_real_encoder_is_32x_8x():
    assert video_vae_compression(REAL_ENCODER) == (32, 8)


@pytest.mark.parametrize("config, expected", [
    ({"downsample_type": ("spatial",)}, (2, 1)),
    ({"downsample_type": ("temporal",)}, (1, 2)),
    ({"downsample_type": ("spatiotemporal",)}, (2, 2)),
    ({"downsample_type": ("spatial", "spatial", "temporal"), "patch_size": 2}, (8, 2)),
    ({"downsample_type": ("spatial", "temporal"), "patch_size_t": 3}, (2, 6)),
    # a level that does not scale counts for nothing, whatever its type
    ({"downsample_type": ("spatial", "temporal", "spatiotemporal"),
      "spatio_temporal_scaling": (True, False, True)}, (4, 2)),
    ({"downsample_type": ("spatial", "spatiotemporal"), "spatio_temporal_scaling": False}, (1, 1)),
    ({"downsample_type": ("spatial", "spatiotemporal"), "spatio_temporal_scaling": True}, (4, 2)),
    ({"downsample_type": ("spatial", "spatiotemporal"), "patch_size": 4}, (16, 2)),  # scaling defaults to all
    ({"downsample_type": ()}, (1, 1)),
])
def test_compression_by_block_type(config, expected):
    assert video_vae_compression(config) == expected


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(st.sampled_from(["spatial", "temporal", "spatiotemporal"]), max_size=6),
       data=st.data(), patch=st.integers(1, 8), patch_t=st.integers(1, 4))
def test_compression_counts_each_scaling_block_once_per_direction(kinds, data, patch, patch_t):
    scaling = data.draw(st.lists(st.booleans(), min_size=len(kinds), max_size=len(kinds)))
    config = {"downsample_type": tuple(kinds), "spatio_temporal_scaling": tuple(scaling),
              "patch_size": patch, "patch_size_t": patch_t}
    spatial_blocks = sum(1 for k, s in zip(kinds, scaling) if s and k != "temporal")
    temporal_blocks = sum(1 for k, s in zip(kinds, scaling) if s and k != "spatial")
    assert video_vae_compression(config) == (patch * 2**spatial_blocks, patch_t * 2**temporal_blocks)
