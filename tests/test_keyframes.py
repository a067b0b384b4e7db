"""Keyframes at any frame: the request rules, the latents they make on the tiny preset, and every way in
(POST /generate and /jobs as JSON, /v1/videos as multipart, the RunPod handler, the CLI)."""

from __future__ import annotations

import base64
import io
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from ltx2 import generate
from ltx2.keyframes import MAX_KEYFRAMES, STORED_APART, input_values, resolve, with_inputs
from ltx2.pipelines import stages
from ltx2.pipelines.conditioning import image_pixels
from ltx2.schema import GenerateRequest, validation_error_body

BASE = {"prompt": "a lighthouse on a cliff", "width": 64, "height": 64, "num_frames": 9, "fps": 25,
        "num_inference_steps": 1, "use_multiscale": False, "seed": 3}


def picture(shade: int) -> Image.Image:
    x = np.linspace(0, 255, 64)[None, :].repeat(64, 0)
    rgb = np.stack([x, np.full_like(x, shade), 255 - x], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def png(shade: int) -> str:
    buf = io.BytesIO()
    picture(shade).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


THREE = [{"image": png(0), "frame": 0}, {"image": png(120), "frame": 4, "strength": 0.7},
         {"image": png(250), "time": 0.32}]  # 0.32 s at 25 fps: frame 8, the last


def refusal(**fields) -> dict:
    with pytest.raises(ValidationError) as caught:
        GenerateRequest.model_validate({**BASE, **fields})
    return validation_error_body(list(caught.value.errors()))


# ------------------------------------------------------------------------------------------- rules

@pytest.mark.parametrize("fields, field, words", [
    ({"keyframes": [{"image": "x", "frame": 9}]}, "keyframes.0.frame", "frames 0..8"),
    ({"keyframes": [{"image": "x", "frame": 2}, {"image": "x", "time": 0.4}]}, "keyframes.1.time", "frame 10 at 25 fps"),
    ({"keyframes": [{"image": "x"}]}, "keyframes.0.time", "exactly one"),
    ({"keyframes": [{"image": "x", "frame": 1, "time": 0.1}]}, "keyframes.0.frame", "exactly one"),
    ({"keyframes": [{"image": "x", "frame": 0}], "image_start": "y"}, "keyframes.0.frame", "image_start"),
    ({"keyframes": [{"image": "x", "frame": 8}], "image_end": "y"}, "image_end", "keyframes.0"),
    ({"keyframes": [{"image": "x", "frame": 4}, {"image": "x", "time": 0.16}]}, "keyframes.1.time", "frame 4"),
    ({"keyframes": [{"image": "x", "frame": 4.5}]}, "keyframes.0.frame", "integer"),
    ({"keyframes": [{"image": "x", "frame": -1}]}, "keyframes.0.frame", ">= 0"),
    ({"keyframes": [{"image": "x", "frame": 1, "strength": 1.5}]}, "keyframes.0.strength", "<= 1"),
    ({"keyframes": [{"image": "", "frame": 1}]}, "keyframes.0.image", "empty"),
    ({"keyframes": [{"image": "x", "frame": 1, "at": 2}]}, "keyframes.0.at", "not a field"),
    ({"keyframes": [{"image": "x", "frame": i} for i in range(MAX_KEYFRAMES + 1)]}, "keyframes", "at most 8"),
])
def test_bad_keyframes_are_refused_naming_the_field(fields, field, words):
    body = refusal(**fields)
    assert body["field"] == field and words in body["error"], body


def test_the_shorthands_and_keyframes_make_one_list_in_order():
    request = GenerateRequest.model_validate({**BASE, "image_start": "a", "image_end": "b", "end_image_strength": 0.5,
                                              "keyframes": [{"image": "c", "frame": 6}, {"image": "d", "time": 0.08},
                                                            {"image": "e", "frame": 3, "strength": 0}]})
    listed = [(k.source, k.frame, k.strength) for k in resolve(request)]
    # image_start, the keyframes as sent (strength 0 left out), image_end last; time 0.08 s is frame 2.
    assert listed == [("image_start", 0, 1.0), ("keyframes.0.image", 6, 1.0), ("keyframes.1.image", 2, 1.0),
                      ("image_end", 8, 0.5)]
    backward = request.model_copy(update={"interpolation_direction": "backward"})
    assert [(k.source, k.frame) for k in resolve(backward)][::3] == [("image_end", 0), ("image_start", 8)]


def test_a_job_keeps_keyframe_images_apart_and_puts_them_back():
    request = GenerateRequest.model_validate({**BASE, "image_start": "a", "keyframes": [{"image": "k", "frame": 4}]})
    inputs = input_values(request)
    assert inputs == {"image_start": "a", "keyframes.0.image": "k"}
    stripped = with_inputs(request, dict.fromkeys(inputs))
    assert stripped.image_start is None and stripped.keyframes[0].image == STORED_APART
    assert input_values(stripped) == {}
    # The record is read back through the request model: it must still validate.
    again = GenerateRequest.model_validate_json(stripped.model_dump_json(exclude_unset=True))
    assert with_inputs(again, inputs) == request


# ------------------------------------------------------------------------------------ the pipeline

def test_three_keyframes_hold_frame_0_and_append_two_frames_of_tokens(model):
    result = generate(model, {**BASE, "keyframes": THREE})
    assert result.frames.shape == (9, 64, 64, 3) and result.keyframes == 3
    # Frame 0 at strength 1 is the first latent frame itself, as image_start is.
    held = model.pipe.vae.encode(image_pixels(picture(0), 64, 64)).latent_dist.mode()[0, :, 0]
    torch.testing.assert_close(result.video_latents[0, :, 0], held, atol=1e-5, rtol=1e-5)


def test_keyframe_tokens_sit_at_their_frames_after_the_video_in_list_order(model):
    request = GenerateRequest.model_validate({**BASE, "keyframes": THREE})
    plan = SimpleNamespace(request=request)  # all prepare_latents reads of a plan
    grid = stages.LatentGrid(2, 2, 2, 5, 16, 9, 25)
    channels = model.pipe.transformer.config.in_channels
    tokens = [torch.full((1, 4, channels), float(i)) for i in range(3)]
    images = [(stages.ImageCondition(None, k.strength, k.frame), t) for k, t in zip(resolve(request), tokens)]
    video, audio = stages.prepare_latents(model, plan, grid, stages.Conditions(images=images), 1.0,
                                          torch.Generator().manual_seed(7))
    plain_video, plain_audio = stages.prepare_latents(model, plan, grid, stages.Conditions(), 1.0,
                                                      torch.Generator().manual_seed(7))
    assert video.own_tokens == 8 and video.latents.shape[1] == 8 + 2 * 4  # frames 4 and 8: one latent frame each
    times = video.coords[0, 0, 8:, 0].reshape(2, 4)
    assert torch.allclose(times[:, 0], torch.tensor([4 / 25, 8 / 25]))
    assert torch.all(video.strength[0, :4] == 1) and torch.all(video.strength[0, 8:12] == 0.7)
    # Noise in token order: the video's own first (free tokens as without keyframes), then the keyframes',
    # then the audio's, which therefore differs from a draw without keyframes.
    torch.testing.assert_close(video.latents[0, 4:8], plain_video.latents[0, 4:8], rtol=0, atol=0)
    assert not torch.equal(audio.latents, plain_audio.latents)


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_last_frame_keyframe_is_image_end_and_a_frame_0_one_is_image_start(model):
    end = generate(model, {**BASE, "image_end": png(250)})
    as_keyframe = generate(model, {**BASE, "keyframes": [{"image": png(250), "time": 0.32}]})
    np.testing.assert_array_equal(end.frames, as_keyframe.frames)
    start = generate(model, {**BASE, "image_start": png(0), "image_strength": 0.6})
    as_keyframe = generate(model, {**BASE, "keyframes": [{"image": png(0), "frame": 0, "strength": 0.6}]})
    np.testing.assert_array_equal(start.frames, as_keyframe.frames)


# ---------------------------------------------------------------------------------- every way in

@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_generate_and_jobs_take_keyframes_as_json(client):
    r = client.post("/generate", json={**BASE, "keyframes": THREE})
    assert r.status_code == 200, r.text
    assert r.json()["keyframes"] == 3 and r.json()["num_frames"] == 9
    r = client.post("/jobs", json={**BASE, "keyframes": [{"image": png(9), "frame": 12}]})
    assert r.status_code == 422 and r.json()["field"] == "keyframes.0.frame", r.text
    r = client.post("/jobs", json={**BASE, "keyframes": [{"image": "!!not an image!!", "frame": 4}]})
    assert r.status_code == 202, r.text
    job = r.json()["id"]
    for _ in range(600):
        view = client.get(f"/jobs/{job}").json()
        if view["status"] in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.1)
    assert view["status"] == "failed" and view["error"]["field"] == "keyframes.0.image", view


def test_v1_videos_takes_keyframe_images_as_multipart_parts(client):
    files = {"keyframes.0.image": ("mid.png", base64.b64decode(png(120).split(",")[1]), "image/png")}
    data = {"prompt": "a lighthouse", "size": "64x64", "num_frames": "9", "num_inference_steps": "1",
            "use_multiscale": "false", "keyframes": json.dumps([{"frame": 4, "strength": 0.8}])}
    r = client.post("/v1/videos", data=data, files=files)
    assert r.status_code == 200, r.text
    r = client.post("/v1/videos", data={**data, "keyframes": "[]"}, files=files)
    assert r.status_code == 422 and "keyframes.0.image" in r.text, r.text


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_runpod_handler_takes_keyframes(model, client):
    from ltx2.serving.worker import make_handler

    out = make_handler(model, send_progress=lambda job, progress: None)({"id": "k", "input": {**BASE, "keyframes": THREE}})
    assert out.get("keyframes") == 3 and out["num_frames"] == 9, {k: v for k, v in out.items() if k != "video"}
    refused = make_handler(model, send_progress=lambda job, progress: None)(
        {"id": "k", "input": {**BASE, "keyframes": [{"image": png(1), "frame": 0}], "image_start": png(2)}})
    assert "keyframes.0.frame" in json.dumps(refused), refused


def test_the_cli_takes_keyframe_flags(model, tmp_path, capsys, monkeypatch):
    from ltx2 import cli

    monkeypatch.setattr("ltx2.models.loaded.load_from_settings", lambda settings: model)
    picture(120).save(tmp_path / "mid.png")
    out = tmp_path / "out.mp4"
    small = ["--width", "64", "--height", "64", "--num-frames", "9", "--num-inference-steps", "1",
             "--use-multiscale", "false"]
    cli.main(["generate", "--prompt", "a lighthouse", *small, "--keyframe", f"{tmp_path / 'mid.png'}@4:0.8",
              "--keyframe", f"{tmp_path / 'mid.png'}@0.32s", "-o", str(out)])
    assert out.stat().st_size > 0
    for spec, words in (("@soon", "a frame number"), ("@12", "keyframes.0.frame")):
        with pytest.raises(SystemExit) as exited:
            cli.main(["generate", "--prompt", "a", *small, "--keyframe", f"{tmp_path / 'mid.png'}{spec}", "-o", str(out)])
        assert exited.value.code == 2 and words in capsys.readouterr().err


def test_admission_counts_each_appended_keyframe(model):
    from ltx2.serving.admission import Admission

    admission = Admission(model)
    plain = GenerateRequest.model_validate(BASE)
    held = GenerateRequest.model_validate({**BASE, "keyframes": THREE})  # frames 4 and 8 appended; 0 is not
    stages_plain, _ = admission.stage_bytes(plain, 9, 64, 64)
    stages_held, _ = admission.stage_bytes(held, 9, 64, 64)
    assert stages_held["denoise"] > stages_plain["denoise"]
    two = GenerateRequest.model_validate({**BASE, "keyframes": THREE[1:]})
    assert admission.stage_bytes(two, 9, 64, 64)[0]["denoise"] == stages_held["denoise"]
