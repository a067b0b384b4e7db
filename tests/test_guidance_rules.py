"""The arithmetic of guidance (ltx2/pipelines/guidance.py) and of conditioning (ltx2/pipelines/conditioning.py),
each rule checked against numbers worked out here from its definition: small hand-computed tensors and numpy
re-derivations in float64, never values taken from the functions under test. No model: `tools/mutate guidance`
and `tools/mutate conditioning` run this file for every mutant.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ltx2.pipelines.conditioning import (
    Conditioning,
    blend_velocity,
    frames_for_duration,
    image_pixels,
    keyframe_coords,
    start_from,
)
from ltx2.schema import FRAME_MAX
from ltx2.pipelines.guidance import Guidance, ModalityGuidance, combine

# ------------------------------------------------------------------------------------------------ guidance


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, len(values), 1)


def test_neutral_knobs_need_only_the_cond_pass():
    neutral = ModalityGuidance()
    assert (neutral.cfg, neutral.stg, neutral.modality, neutral.rescale) == (1.0, 0.0, 1.0, 0.0)
    assert [neutral.needs(p) for p in ("cond", "uncond", "ptb", "mod")] == [True, False, False, False]
    assert Guidance(neutral, neutral).passes == ("cond",)
    assert not Guidance(neutral, neutral).needs_negative_prompt


@pytest.mark.parametrize("video, audio, passes", [
    (ModalityGuidance(cfg=3.0), ModalityGuidance(), ("cond", "uncond")),
    (ModalityGuidance(), ModalityGuidance(cfg=0.5), ("cond", "uncond")),
    (ModalityGuidance(stg=1.0), ModalityGuidance(), ("cond", "ptb")),
    (ModalityGuidance(), ModalityGuidance(stg=-0.5), ("cond", "ptb")),
    (ModalityGuidance(modality=3.0), ModalityGuidance(), ("cond", "mod")),
    (ModalityGuidance(), ModalityGuidance(modality=0.0), ("cond", "mod")),
    (ModalityGuidance(modality=2.0, rescale=0.7), ModalityGuidance(cfg=7.0, stg=1.0), ("cond", "uncond", "ptb", "mod")),
    (ModalityGuidance(rescale=0.7), ModalityGuidance(rescale=0.5), ("cond",)),  # rescale alone runs no pass
])
def test_passes_are_the_union_of_both_modalities_in_the_references_order(video, audio, passes):
    guidance = Guidance(video, audio)
    assert guidance.passes == passes
    assert guidance.needs_negative_prompt is ("uncond" in passes)


def test_guidance_is_an_immutable_value():
    # One Guidance is resolved per request and read by every step: nothing may change it on the way.
    guidance = Guidance(ModalityGuidance(cfg=3.0), ModalityGuidance(), stg_blocks=(29,))
    assert hash(guidance) == hash(Guidance(ModalityGuidance(cfg=3.0), ModalityGuidance(), stg_blocks=(29,)))
    with pytest.raises(AttributeError):
        guidance.video.cfg = 1.0
    with pytest.raises(AttributeError):
        guidance.stg_blocks = ()


def test_knobs_report_each_request_field_from_its_modality():
    guidance = Guidance(ModalityGuidance(cfg=3.0, stg=1.5, modality=2.5, rescale=0.25),
                        ModalityGuidance(cfg=7.0, stg=0.5, modality=4.0, rescale=0.75), stg_blocks=(28, 29))
    assert guidance.knobs() == {"audio_guidance_scale": 7.0, "stg_scale": 1.5, "audio_stg_scale": 0.5,
                                "modality_scale": 2.5, "audio_modality_scale": 4.0, "guidance_rescale": 0.25,
                                "audio_guidance_rescale": 0.75, "stg_blocks": [28, 29]}


def test_without_guidance_the_cond_velocity_is_returned_as_is():
    cond = t(1.0, -2.0)
    out = combine(ModalityGuidance(), {"cond": cond}, t(0.0, 0.0), t(0.5, 0.5))  # no other pass is read
    assert out is cond


@pytest.mark.parametrize("knobs, expected", [
    # cond 3, uncond 1, ptb 2, mod 4, worked by hand from cond + (cfg-1)(cond-uncond) + stg(cond-ptb)
    # + (modality-1)(cond-mod):
    (ModalityGuidance(cfg=2.5), 3 + 1.5 * 2),  # 6.0: the unconditional side is pushed away from
    (ModalityGuidance(cfg=0.5), 3 - 0.5 * 2),  # 2.0
    (ModalityGuidance(stg=0.5), 3 + 0.5 * 1),  # 3.5
    (ModalityGuidance(stg=-2.0), 3 - 2.0 * 1),  # 1.0
    (ModalityGuidance(modality=3.0), 3 + 2.0 * -1),  # 1.0
    (ModalityGuidance(modality=0.0), 3 - 1.0 * -1),  # 4.0
    (ModalityGuidance(cfg=2.0, stg=1.0, modality=2.0), 3 + 2 + 1 - 1),  # 5.0
])
def test_each_guidance_term_by_hand(knobs, expected):
    outputs = {"cond": t(3.0), "uncond": t(1.0), "ptb": t(2.0), "mod": t(4.0)}
    out = combine(knobs, outputs, t(0.0), t(1.0))
    assert out.item() == pytest.approx(expected)


def test_cfg_swapping_cond_and_uncond_is_a_different_answer():
    # With cfg = 3: cond + 2 (cond - uncond). Swapping the roles gives uncond + 2 (uncond - cond).
    out = combine(ModalityGuidance(cfg=3.0), {"cond": t(1.0, 0.0), "uncond": t(0.0, 1.0)}, t(0.0, 0.0), t(1.0, 1.0))
    assert out.flatten().tolist() == [3.0, -2.0]


def rescaled_reference(x, sigma, cond, pred, rescale):
    """ltx-core's rescale in x0 space, from scratch in float64 (torch.std is the unbiased one: ddof=1)."""
    x, sigma, cond, pred = (np.asarray(a, dtype=np.float64) for a in (x, sigma, cond, pred))
    x0_cond, x0_pred = x - sigma * cond, x - sigma * pred
    x0_pred = x0_pred * (rescale * x0_cond.std(ddof=1) / x0_pred.std(ddof=1) + (1 - rescale))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sigma > 0, (x - x0_pred) / sigma, 0.0)


@pytest.mark.parametrize("rescale", [0.25, 1.0])
def test_rescale_pulls_the_clean_estimates_spread_towards_conds(rescale):
    rng = np.random.default_rng(11)
    x, c, u = (rng.standard_normal((1, 12, 3)).astype(np.float32) for _ in range(3))
    sigma = np.array([0.8] * 5 + [0.3] * 5 + [1.0, 0.0], dtype=np.float32).reshape(1, 12, 1)
    got = combine(ModalityGuidance(cfg=4.0, rescale=rescale), {"cond": torch.from_numpy(c), "uncond": torch.from_numpy(u)},
                  torch.from_numpy(x), torch.from_numpy(sigma)).numpy()
    pred = c + 3.0 * (c - u)
    np.testing.assert_allclose(got, rescaled_reference(x, sigma, c, pred, rescale), rtol=1e-4, atol=1e-4)
    assert np.all(got[:, -1] == 0)  # a held token (sigma 0) gets no velocity


def test_rescale_with_a_uniform_sigma_scales_the_velocity_offset():
    # One sigma s for all tokens: v' = (x - f x0_pred) / s. Worked by hand for x = 0, s = 1: v' = f pred,
    # f = r std(cond) / std(pred) + 1 - r. cond = (1, -1), uncond = (0, 0), cfg 2: pred = 2 cond,
    # std(pred) = 2 std(cond), so f = r / 2 + 1 - r; with r = 0.5: f = 0.75 and v' = 1.5 cond.
    out = combine(ModalityGuidance(cfg=2.0, rescale=0.5), {"cond": t(1.0, -1.0), "uncond": t(0.0, 0.0)},
                  t(0.0, 0.0), torch.ones(1, 1, 1))
    assert out.flatten().tolist() == pytest.approx([1.5, -1.5])


# ------------------------------------------------------------------------------------------------ conditioning


def test_blend_velocity_is_the_euler_step_towards_the_blended_clean_estimate():
    rng = np.random.default_rng(5)
    v, x, clean = (rng.standard_normal((1, 5, 4)) for _ in range(3))
    m = np.array([0.0, 0.25, 0.5, 0.9, 1.0]).reshape(1, 5, 1)
    sigma = 0.7
    # The rule in x0 terms (ltx-core's X0Model + post_process_latent), in float64:
    x0 = x - (1 - m) * sigma * v
    x0_blended = x0 * (1 - m) + clean * m
    expected = (x - x0_blended) / sigma
    got = blend_velocity(*(torch.from_numpy(a) for a in (v, x, clean, m)), sigma).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    assert np.array_equal(got[:, 0], v[:, 0])  # strength 0: the model's velocity bit for bit


def test_blend_velocity_by_hand():
    # v = 1, x = 3, clean = 1, sigma = 0.5, m = 0.5: x0 = 3 - 0.25 = 2.75, blended 1.875, v' = 2.25.
    assert blend_velocity(t(1.0), t(3.0), t(1.0), t(0.5), 0.5).item() == pytest.approx(2.25)


def test_start_from_noises_a_conditioned_token_to_one_minus_its_strength():
    noise, clean = t(2.0, 2.0, 2.0, 2.0), t(10.0, 10.0, 10.0, 10.0)
    mask = t(1.0, 0.25, 0.0, 0.5)
    got = start_from(noise, clean, mask, 0.8).flatten().tolist()
    # level = (1 - s) sigma0: 0, 0.6, -, 0.4. Mixed = noise level + clean (1 - level).
    assert got == pytest.approx([10.0, 2 * 0.6 + 10 * 0.4, 2.0, 2 * 0.4 + 10 * 0.6])
    free = t(-1.0, -1.0, -1.0, -1.0)
    got = start_from(noise, clean, mask, 1.0, free).flatten().tolist()
    assert got == pytest.approx([10.0, 2 * 0.75 + 10 * 0.25, -1.0, 2 * 0.5 + 10 * 0.5])  # free tokens: `free`


class GridRope:
    """A stand-in for the transformer's RoPE: every token at (frame, row, column) [start, end) = 7."""

    def prepare_video_coords(self, batch, frames, height, width, device, fps):
        self.asked = (batch, frames, height, width, fps)
        return torch.full((batch, 3, frames * height * width, 2), 7.0)


@pytest.mark.parametrize("pixel_frame, fps", [(0, 25.0), (120, 25.0), (96, 24.0), (8, 50.0)])
def test_keyframe_tokens_cover_one_pixel_frame_in_seconds(pixel_frame, fps):
    rope = GridRope()
    coords = keyframe_coords(rope, 3, 4, pixel_frame, fps, torch.device("cpu"))
    assert rope.asked == (1, 1, 3, 4, fps) and coords.shape == (1, 3, 12, 2)
    assert torch.all(coords[:, 0, :, 0] == pixel_frame / fps) and torch.all(coords[:, 0, :, 1] == (pixel_frame + 1) / fps)
    assert torch.all(coords[:, 1:] == 7.0)  # the image sits on the video's own spatial grid


def brute_force_frames(seconds: float, fps: int) -> int:
    valid = range(9, FRAME_MAX + 1, 8)  # 8k + 1 from the request limits
    return min(valid, key=lambda n: abs(n - seconds * fps))


@pytest.mark.parametrize("seconds", [0.0, 0.1, 0.38, 0.5, 1.0, 1.02, 2.3, 3.9, 4.0, 7.77, 10.0, 19.2, 19.3, 25.0, 60.0])
@pytest.mark.parametrize("fps", [24, 25, 30])
def test_frames_for_duration_is_the_nearest_valid_count(seconds, fps):
    assert frames_for_duration(seconds, fps) == brute_force_frames(seconds, fps)


def test_audio_seconds_is_samples_over_the_vae_rate():
    assert Conditioning().audio_seconds == 0.0
    assert Conditioning(audio_for_vae=np.zeros((2, 24_000), np.float32), vae_rate=24_000).audio_seconds == 1.0
    # Without a rate: LTX-2's audio VAE rate, 16 kHz.
    assert Conditioning(audio_for_vae=np.zeros((2, 24_000), np.float32)).audio_seconds == 1.5


def test_a_request_without_inputs_decodes_to_nothing_and_starts_no_sandbox():
    from ltx2.media.fetch import FetchPolicy
    from ltx2.media.inputs import InputLimits
    from ltx2.pipelines.conditioning import decode_conditioning
    from ltx2.schema import GenerateRequest

    class NoSandbox:
        def decode(self, *args, **kwargs):
            raise AssertionError("nothing to decode, yet the sandbox was asked")

    out = decode_conditioning(GenerateRequest(prompt="x"), 16_000, 24_000, limits=InputLimits(),
                              fetch_policy=FetchPolicy(), sandbox=NoSandbox())
    assert (out.image_start, out.image_end, out.audio_for_vae, out.audio_preprocessing) == (None, None, None, None)
    out = decode_conditioning(GenerateRequest(prompt="x", image_start="aGk="), 22_050, 24_000, inputs={},
                              sandbox=NoSandbox())  # inputs given (none left): the request's own are not read
    assert out.image_start is None and out.vae_rate == 22_050


@pytest.mark.parametrize("field", ["image_start", "image_end", "audio"])
def test_another_schemes_url_is_refused_by_name_before_the_sandbox(field):
    from ltx2.pipelines.conditioning import decode_conditioning
    from ltx2.schema import GenerateRequest, InvalidRequest

    class NoSandbox:
        def decode(self, *args, **kwargs):
            raise AssertionError("refused inputs must not reach the sandbox")

    request = GenerateRequest(prompt="x", **{field: "ftp://example.com/a"})
    with pytest.raises(InvalidRequest) as info:
        decode_conditioning(request, 16_000, 24_000, sandbox=NoSandbox())
    assert info.value.field == field and info.value.message.startswith(f"{field} is a ftp:// URL")


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_image_pixels_are_in_minus_one_to_one(mode):
    # Left half black, right half white: the VAE's input range is [-1, 1], so black is -1 and white +1.
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, 24:] = 255
    image = Image.fromarray(rgb).convert(mode)
    pixels = image_pixels(image, 48, 32)
    assert pixels.shape == (1, 3, 1, 32, 48)
    assert pixels[..., :20].max() < -0.9 and pixels[..., 28:].min() > 0.9
    assert pixels.min() >= -1.0 - 1e-6 and pixels.max() <= 1.0 + 1e-6
