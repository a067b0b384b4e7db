"""Batched generation (ltx2.pipelines.batch): each job's video equals its unbatched one.

Bit for bit where the batch runs the same kernels as the job alone (a batch of one). With several jobs one
kernel differs: the transformer's timestep MLP multiplies a (rows, 256) matrix, and PyTorch's CPU BLAS takes
a matrix-vector path for one row and a blocked matrix path for more, which round differently (measured here:
a Linear on 1 row vs 2 rows differs by up to 2.4e-7; the whole tiny model's latents by up to 2.6e-6 after
2 guided steps). Everything after the transformer runs per job, so the difference stays at that rounding:
latents within LATENT_TOLERANCE, frames within one uint8 level.
"""

from __future__ import annotations

import numpy as np
import pytest

from ltx2 import generate
from ltx2.pipelines.batch import BatchJob, generate_batch, request_key
from ltx2.schema import GenerateRequest

LATENT_TOLERANCE = 1e-5  # measured 2.6e-6 at most (see the module's docstring), with room for other CPUs
BASE = {"width": 64, "height": 64, "num_frames": 9, "fps": 25, "num_inference_steps": 2, "use_multiscale": False}
GUIDED = {**BASE, "guidance_scale": 3.0, "stg_scale": 1.0}  # three passes a step: cond, uncond, ptb
JOBS = [("a cat", 1), ("a dog running in the snow", 2), ("waves on a beach at night", 3)]


def _close(alone, batched) -> None:
    assert not isinstance(batched, Exception), batched
    assert batched.frames.shape == alone.frames.shape
    assert (alone.video_latents - batched.video_latents).abs().max() <= LATENT_TOLERANCE
    assert (alone.audio_latents - batched.audio_latents).abs().max() <= LATENT_TOLERANCE
    assert np.abs(alone.frames.astype(int) - batched.frames.astype(int)).max() <= 1
    assert np.abs(alone.waveform - batched.waveform).max() <= 1e-4
    assert (batched.seed, batched.transformer_passes, batched.pipeline) == \
        (alone.seed, alone.transformer_passes, alone.pipeline)


@pytest.mark.slow
def test_a_batch_of_one_is_bit_for_bit_the_job_alone(model):
    request = {**GUIDED, "prompt": "a cat", "seed": 4}
    alone = generate(model, request)
    (batched,) = generate_batch(model, [BatchJob(request)])
    assert np.array_equal(alone.frames, batched.frames)
    assert np.array_equal(alone.waveform, batched.waveform)
    assert alone.video_latents.equal(batched.video_latents) and alone.audio_latents.equal(batched.audio_latents)
    assert set(alone.timings) == set(batched.timings)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [GUIDED, {**BASE, "use_multiscale": True, "width": 128, "height": 128}],
                         ids=["one-stage-guided", "two-stage"])
def test_three_jobs_equal_their_unbatched_videos(model, shape):
    requests = [{**shape, "prompt": prompt, "seed": seed} for prompt, seed in JOBS]
    steps: list[list[int]] = [[], [], []]
    batched = generate_batch(model, [BatchJob(r, on_step=lambda s, t, i=i: steps[i].append(s))
                                     for i, r in enumerate(requests)])
    for request, result in zip(requests, batched):
        _close(generate(model, request), result)
    # Each job heard its own progress, every step of every stage.
    total = batched[0].num_inference_steps + (3 if shape.get("use_multiscale") else 0)
    assert steps == [list(range(1, total + 1))] * 3
    assert len({r.frames.tobytes() for r in batched}) == 3  # three different videos, not one copied


class Cancelled(Exception):
    pass


@pytest.mark.slow
def test_cancelling_one_job_leaves_the_others_unchanged(model):
    requests = [{**GUIDED, "num_inference_steps": 3, "prompt": prompt, "seed": seed} for prompt, seed in JOBS]
    heard = []

    def cancel_at_2(step, total):
        heard.append(step)
        if step == 2:
            raise Cancelled()

    out = generate_batch(model, [BatchJob(requests[0]), BatchJob(requests[1], on_step=cancel_at_2),
                                 BatchJob(requests[2])])
    assert isinstance(out[1], Cancelled)
    assert heard == [1, 2]  # dropped at the step it raised: never called again
    _close(generate(model, requests[0]), out[0])
    _close(generate(model, requests[2]), out[2])
    assert out[0].transformer_passes == out[2].transformer_passes == 9


@pytest.mark.slow
def test_a_job_that_does_not_fit_runs_alone_bit_for_bit(model):
    """A job whose plan differs from the first one's (another length) runs after the batch, alone."""
    first = {**BASE, "prompt": "a cat", "seed": 1}
    other = {**BASE, "prompt": "a dog", "seed": 2, "num_frames": 17}
    out = generate_batch(model, [BatchJob(first), BatchJob(other)])
    alone = generate(model, other)
    assert np.array_equal(out[1].frames, alone.frames) and out[1].num_frames == 17
    assert np.array_equal(out[0].frames, generate(model, first).frames)


@pytest.mark.slow
def test_a_refused_job_fails_alone(model):
    out = generate_batch(model, [BatchJob({**BASE, "prompt": "a cat", "seed": 1}),
                                 BatchJob({**BASE, "prompt": "x", "stg_blocks": [99]})])
    assert not isinstance(out[0], Exception)
    assert getattr(out[1], "field", None) == "stg_blocks"


def test_the_request_key():
    def key(**fields):
        return request_key(GenerateRequest.model_validate({**BASE, "prompt": "p", **fields}))

    # Prompt, seed, the output's format and quality are each job's own.
    assert key(seed=1) == key(prompt="other", seed=2, negative_prompt="blur", video_output_type="VP9 (.webm)",
                              video_quality="high") is not None
    for change in ({"num_inference_steps": 3}, {"width": 96}, {"num_frames": 17}, {"fps": 24},
                   {"guidance_scale": 2.0}, {"stg_blocks": [0]}, {"use_multiscale": True},
                   {"loras": [{"path": "a.safetensors"}]}, {"camera_lora": "dolly_in"}):
        assert key(**change) != key(), change
    video = "data:video/mp4;base64,AAAA"
    assert key(video=video, retake={"start": 0, "end": 0.5}) is None  # retake, like extend and video to video, is never batched
    assert key(temporal_upscale=True, use_multiscale=True) is None


def _png(color) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), color).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
def test_images_and_keyframes_are_each_jobs_own(model):
    """Two image-to-video jobs with their own start images, keyframes and strengths: one transformer call a
    step for both, each video within tolerance of its own run alone."""
    shape = {**BASE, "num_frames": 17, "guidance_scale": 2.0}
    requests = [{**shape, "prompt": "a", "seed": 1, "image_start": _png((200, 10, 10)),
                 "keyframes": [{"image": _png((0, 0, 200)), "frame": 8}]},
                {**shape, "prompt": "b", "seed": 2, "image_start": _png((10, 200, 10)), "image_strength": 0.7,
                 "keyframes": [{"image": _png((0, 200, 200)), "frame": 8, "strength": 0.5}]}]
    calls = []
    handle = model.pipe.transformer.register_forward_hook(lambda m, a, k: calls.append(k))
    try:
        out = generate_batch(model, [BatchJob(r) for r in requests])
    finally:
        handle.remove()
    assert len(calls) == 2  # 2 steps, both jobs in each call
    for request, result in zip(requests, out):
        alone = generate(model, request)
        _close(alone, result)
        assert result.keyframes == alone.keyframes == 2
