"""ltx2.generate() on the tiny preset: shapes, durations, seeds, defaults, progress."""

import time

import numpy as np
import pytest
import torch

from ltx2 import GenerateRequest, generate
from ltx2.pipelines.schedules import DISTILLED_SIGMAS, shifted_sigmas, sigmas_for
from ltx2.schema import InvalidRequest

# One stage: these pin the one-stage pipeline (tests/test_two_stage.py has the other).
BASE = {"prompt": "A cat playing piano, gentle music", "width": 288, "height": 512, "num_frames": 49, "fps": 25,
        "use_multiscale": False}


@pytest.fixture(scope="module")
def result(model):
    start = time.perf_counter()
    out = generate(model, {**BASE, "seed": 11})
    out.test_wall_seconds = time.perf_counter() - start  # what the stage timings must fit in
    return out


def test_shapes_288x512x49(result):
    assert result.frames.shape == (49, 512, 288, 3)
    assert result.frames.dtype == np.uint8
    assert result.video_latents.shape == (1, 128, 7, 16, 9)
    assert result.audio_latents.shape == (1, 8, 49, 16)


def test_audio_lasts_as_long_as_the_video(result):
    assert result.sample_rate == 24000
    assert result.waveform.shape == (2, round(49 / 25 * 24000))
    assert result.waveform.dtype == np.float32
    assert np.abs(result.waveform).max() <= 1.0
    assert result.waveform.std() > 0  # not silence


def test_reports_what_was_used(result):
    assert (result.seed, result.num_inference_steps, result.guidance_scale) == (11, 8, 1.0)
    assert (result.num_frames, result.fps, result.width, result.height) == (49, 25, 288, 512)
    assert set(result.timings) == {"expand_prompt", "encode_prompt", "encode_conditioning", "prepare_latents", "denoise",
                                   "decode_video", "decode_audio"}
    # Each stage that works takes time; together they account for most of the call and no more than it.
    assert all(result.timings[s] > 0 for s in ("encode_prompt", "prepare_latents", "denoise", "decode_video",
                                               "decode_audio"))
    assert 0.5 * result.test_wall_seconds <= sum(result.timings.values()) <= result.test_wall_seconds


def test_same_seed_same_output(model, result):
    again = generate(model, {**BASE, "seed": 11})
    assert np.array_equal(again.frames, result.frames)
    assert np.array_equal(again.waveform, result.waveform)


def test_different_seeds_differ(model, result):
    other = generate(model, {**BASE, "seed": 12})
    assert not np.array_equal(other.frames, result.frames)
    assert not torch.equal(other.audio_latents, result.audio_latents)


def test_prompt_changes_the_output(model, result):
    other = generate(model, {**BASE, "seed": 11, "prompt": "Rain on a window, thunder"})
    assert not torch.equal(other.video_latents, result.video_latents)


def test_random_seed_is_returned_and_reproduces(model):
    request = {**BASE, "num_frames": 9}
    first = generate(model, request)
    second = generate(model, request)
    assert first.seed != second.seed or not np.array_equal(first.frames, second.frames)
    replay = generate(model, {**request, "seed": first.seed})
    assert np.array_equal(replay.frames, first.frames)


def test_progress_after_every_step(model):
    seen = []
    generate(model, {**BASE, "num_frames": 9, "seed": 1, "num_inference_steps": 5}, on_step=lambda s, n: seen.append((s, n)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


def test_raising_from_progress_stops_the_job(model):
    class Stop(Exception):
        pass

    steps = []

    def stop_at_two(step, total):
        steps.append(step)
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        generate(model, {**BASE, "num_frames": 9, "seed": 1}, on_step=stop_at_two)
    assert steps == [1, 2]
    assert not model.lock.locked()  # the device is free for the next job


def test_guidance_runs_the_batched_cfg_path(model):
    plain = generate(model, {**BASE, "num_frames": 9, "seed": 3, "guidance_scale": 1.0})
    guided = generate(model, {**BASE, "num_frames": 9, "seed": 3, "guidance_scale": 3.0})
    assert guided.guidance_scale == 3.0
    assert not torch.equal(plain.video_latents, guided.video_latents)


def test_no_audio_requested_gives_no_waveform(model):
    out = generate(model, {**BASE, "num_frames": 9, "seed": 3, "include_audio": False})
    assert out.waveform is None
    assert out.audio_latents.shape == (1, 8, 9, 16)  # audio is still denoised jointly with the video


def test_other_sizes_and_rates(model):
    out = generate(model, {"prompt": "x", "width": 512, "height": 288, "num_frames": 17, "fps": 50, "seed": 1})
    assert out.frames.shape == (17, 288, 512, 3)
    assert out.audio_latents.shape[2] == round(17 / 50 * 25)
    assert out.waveform.shape[1] == round(17 / 50 * 24000)


def test_prompt_longer_than_the_encoder_reads_is_refused(model):
    with pytest.raises(InvalidRequest) as info:
        generate(model, {**BASE, "prompt": "word " * 2000})
    assert info.value.field == "prompt"
    assert "1024" in info.value.message


def test_request_model_accepted_directly(model):
    out = generate(model, GenerateRequest(prompt="x", num_frames=9, seed=5))
    assert out.frames.shape == (9, 512, 288, 3)


def test_distilled_schedule_and_shifted_schedule():
    assert sigmas_for(8, 1008, distilled=True) == list(DISTILLED_SIGMAS)
    dev = sigmas_for(40, 1008, distilled=False)
    assert len(dev) == 40 and dev[0] == pytest.approx(1.0) and dev[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(dev, dev[1:]))
    # More tokens shift the schedule towards high noise.
    assert shifted_sigmas(10, 6000)[5] > shifted_sigmas(10, 1000)[5]
    assert sigmas_for(1, 1008, distilled=True) == [1.0]


@pytest.mark.parametrize("guidance, passes_per_step", [(1.0, 1), (3.0, 2)])
def test_transformer_passes_per_step(model, guidance, passes_per_step):
    out = generate(model, {**BASE, "num_frames": 9, "seed": 2, "num_inference_steps": 3, "guidance_scale": guidance})
    # No guidance: one pass per step. CFG: the negative and the positive prompt, one batch of two.
    assert out.transformer_passes == 3 * passes_per_step
    assert out.pipeline == "one-stage" and (out.model_width, out.model_height) == (288, 512)
