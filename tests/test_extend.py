"""Extend (a `video` and `extend`): the request rules, the window plan, the input's frames and audio kept and
the new ones joined on, forward and backward, chained, and every way in (POST /generate with a data URI, the
LTX API's /v1/generations/extend with an upload, the RunPod handler, the CLI), with the outputs probed."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests

from ltx2 import extend as rules
from ltx2 import generate
from ltx2.media.inputs import InputLimits, load_audio
from ltx2.pipelines import stages
from ltx2.schema import GenerateRequest, validation_error_body
from tests.test_retake import clip, mp4_frames, wait_job

FPS, FRAMES, SIDE = 8, 9, 64  # a 9-frame clip at 8 fps: 1.125 s
CLIP = clip(frames=FRAMES, fps=FPS)
URI = "data:video/mp4;base64," + base64.b64encode(CLIP).decode()
# Windows of 17 frames: forward 9 held + 8 new, so 2 s (16 frames) takes two chained windows.
BASE = {"prompt": "a red ball rolls on", "video": URI, "extend": {"seconds": 1.0}, "num_frames": 17,
        "num_inference_steps": 1, "seed": 5}


def _decoded(kind: str = "uint8"):
    """The input's frames as the server decodes them: (F, H, W, 3) uint8, or the model's (1, 3, F, H, W) floats."""
    import torch

    from ltx2.media.video_in import decode_frames

    fitted, _ = decode_frames(CLIP, "video", None, InputLimits().video(), FPS, FRAMES, ((SIDE, SIDE),))
    if kind == "float":
        return fitted[(SIDE, SIDE)]
    return ((fitted[(SIDE, SIDE)][0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


_source = _decoded()


# ---------------------------------------------------------------------------------------- the rules

@pytest.mark.parametrize("fields, field, words", [
    ({"extend": {"seconds": 1}}, "extend", "send video too"),
    ({"video": URI, "extend": {"seconds": 0}}, "extend.seconds", "must be > 0"),
    ({"video": URI, "extend": {"seconds": 61}}, "extend.seconds", "LTX2_MAX_EXTEND_SECONDS"),
    ({"video": URI, "extend": {"seconds": 1, "direction": "up"}}, "extend.direction", "forward"),
    ({"video": URI, "extend": {"seconds": 1}, "num_frames": 9}, "num_frames", "each window's length"),
    ({"video": URI, "extend": {"seconds": 1}, "retake": {"start": 0, "end": 0.5}}, "retake", "cannot be used with extend"),
    ({"video": URI, "extend": {"seconds": 1}, "audio": "data:audio/wav;base64,UklG"}, "audio", "cannot be used"),
    ({"video": URI, "extend": {"seconds": 1}, "use_multiscale": True}, "use_multiscale", "one stage"),
    ({"video": URI, "extend": {"seconds": 1}, "width": 64}, "height", "width and height together"),
    ({"video": URI, "extend": {"seconds": 1, "speed": 2}}, "extend.speed", "not a field"),
])
def test_bad_extend_requests_are_refused_naming_the_field(fields, field, words):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as caught:
        GenerateRequest.model_validate({"prompt": "x", **fields})
    body = validation_error_body(list(caught.value.errors()))
    assert body["field"] == field and words.lower() in body["error"].lower(), body


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_cap_on_the_output_is_a_setting_and_counts_the_input(model, monkeypatch):
    monkeypatch.setenv("LTX2_MAX_EXTEND_SECONDS", "2")
    with pytest.raises(Exception) as caught:  # 1.125 s of input + 1 s > 2 s: refused after the decode, before work
        generate(model, BASE)
    assert getattr(caught.value, "field", None) == "extend.seconds" and "at most 2 s" in str(caught.value)


@pytest.mark.parametrize("value", ["sixty", "0", "-5", "inf"])
def test_a_bad_cap_setting_stops_the_server_at_start(monkeypatch, value):
    from ltx2.serving.app import create_app

    monkeypatch.setenv("LTX2_MAX_EXTEND_SECONDS", value)
    with pytest.raises(ValueError, match="LTX2_MAX_EXTEND_SECONDS must be a positive number"):
        create_app()


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_video_past_the_frames_read_is_refused_not_cut(model):
    """The sandbox reads a video up to FRAME_MAX frames; an extend keeps its input whole, so a longer one is a
    422 naming video, not an extension of its first 19.88 s."""
    from tests.test_retake import flat_clip

    long = "data:video/mp4;base64," + base64.b64encode(flat_clip(64, frames=500)).decode()
    with pytest.raises(Exception) as caught:
        generate(model, {**BASE, "video": long, "fps": 25})
    assert getattr(caught.value, "field", None) == "video" and "497 frames" in str(caught.value)


def test_the_window_plan():
    forward = rules.plan("forward", 9, 16, 17, 8, 5)
    assert [(w.start, w.end, w.overlap_frames, w.new_frames, w.seed) for w in forward] == [
        (0.0, 2.125, 9, 8, 5), (1.0, 3.125, 9, 8, 6)]
    backward = rules.plan("backward", 9, 16, 17, 8, 5)  # a 9-frame input: one latent frame (8 frames) held
    assert [(w.start, w.end, w.overlap_frames, w.new_frames) for w in backward] == [(0.875, 3.0, 8, 9), (0.0, 1.875, 8, 7)]
    long = rules.plan("forward", 121, 30 * 25, 121, 25, 0)  # 30 s in 121-frame windows: 112 new frames each
    assert len(long) == 7 and sum(w.new_frames for w in long) == 750 and all(w.num_frames <= 121 for w in long)
    assert all((w.num_frames - 1) % 8 == 0 for w in forward + backward + long)
    assert [w.seed for w in rules.plan("forward", 9, 16, 17, 8, 2**53 - 1)] == [2**53 - 1, 2**53]  # the first: the seed


# ----------------------------------------------------------------------------------- the pipeline

@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_forward_keeps_the_input_and_joins_the_new_frames_on(model):
    result = generate(model, BASE)
    new = FPS  # 1 s
    assert result.pipeline == "extend" and (result.width, result.height, result.fps) == (SIDE, SIDE, FPS)
    assert result.num_frames == result.frames.shape[0] == FRAMES + new
    assert np.array_equal(result.frames[:FRAMES], _source)  # the input, bit for bit
    assert result.extend["windows"] == [{"index": 0, "start": 0.0, "end": 2.125, "num_frames": 17, "overlap_frames": 9,
                                         "overlap_seconds": 1.125, "new_frames": 8, "seed": 5}]
    rate = model.vocoder_rate
    assert result.waveform.shape[1] == round(result.num_frames / FPS * rate)
    original = load_audio(CLIP, "video", None, InputLimits(), rate)
    first = round(FRAMES / FPS * rate)
    assert np.array_equal(result.waveform[:, :first], stages.fit_length(original, first))  # the input's own sound
    assert np.abs(result.waveform[:, first:]).max() > 0  # and new sound after it


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_backward_puts_the_new_frames_before_the_input(model):
    result = generate(model, {**BASE, "extend": {"seconds": 1.0, "direction": "backward"}})
    assert result.num_frames == result.frames.shape[0] == FRAMES + FPS
    assert np.array_equal(result.frames[FPS:], _source)
    assert result.extend["direction"] == "backward" and result.extend["windows"][0]["end"] == 2.0
    rate = model.vocoder_rate
    original = load_audio(CLIP, "video", None, InputLimits(), rate)
    first = round(FPS / FPS * rate)
    kept = result.waveform[:, first:]
    assert np.array_equal(kept, stages.fit_length(original, kept.shape[1]))


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_chain_of_windows_reaches_the_length_and_reports_its_plan(model):
    steps = []
    result = generate(model, {**BASE, "extend": {"seconds": 2.0}}, on_step=lambda done, total: steps.append((done, total)))
    assert result.num_frames == result.frames.shape[0] == FRAMES + 2 * FPS
    assert [w["start"] for w in result.extend["windows"]] == [0.0, 1.0] and result.extend["new_frames"] == 16
    assert [w["seed"] for w in result.extend["windows"]] == [5, 6]
    assert (2, 2) in steps  # one step per window, counted across the chain
    assert np.array_equal(result.frames[:FRAMES], _source)


def vae_latents(model, pixels) -> "torch.Tensor":
    """(1, 3, F, H, W) in [-1, 1] -> the video VAE's own latents (its mode), as the result reports them."""
    vae = model.pipe.vae
    return vae.encode(pixels.to(vae.dtype)).latent_dist.mode().float()


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_join_each_window_holds_the_frames_before_it_exactly(model):
    """The seam: a window's first 2 latent frames are the encoding of the 9 frames before the new part, held
    clean through the denoising (strength 1, VideoConditionByLatentIndex at index 0), in the first window the
    input's and in a chained one the previous window's own decoded frames."""
    import torch

    one = generate(model, BASE)
    held = vae_latents(model, _decoded("float")[:, :, -9:])
    assert torch.allclose(one.video_latents[:, :, :2], held, atol=1e-4)
    assert not torch.allclose(one.video_latents[:, :, 2], held[:, :, 1], atol=1e-2)  # the new one is no copy

    two = generate(model, {**BASE, "extend": {"seconds": 2.0}})  # the result's latents: the last window's
    overlap = torch.from_numpy(two.frames[8:17]).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
    assert torch.allclose(two.video_latents[:, :, :2], vae_latents(model, overlap), atol=1e-4)
    assert np.array_equal(two.frames[:FRAMES + FPS], one.frames), "the first window is the same with a longer chain"

    # Backward: the window's last latent frame is the input's first 8 frames, encoded where they sit (after 9
    # copies of the first frame, which the causal VAE has seen by then).
    back = generate(model, {**BASE, "extend": {"seconds": 1.0, "direction": "backward"}})
    source = _decoded("float")
    window = torch.cat([source[:, :, :1].expand(-1, -1, 9, -1, -1), source[:, :, :8]], dim=2)
    assert torch.allclose(back.video_latents[:, :, -1:], vae_latents(model, window)[:, :, -1:], atol=1e-4)


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_video_without_sound_gets_its_new_audio_and_silence_under_the_input(model):
    silent = clip(frames=FRAMES, fps=FPS, audio=False)
    uri = "data:video/mp4;base64," + base64.b64encode(silent).decode()
    result = generate(model, {**BASE, "video": uri, "extend": {"seconds": 2.0}})
    rate = model.vocoder_rate
    first = round(FRAMES / FPS * rate)
    assert not result.has_audio_input and result.waveform.shape[1] == round(result.num_frames / FPS * rate)
    assert not result.waveform[:, :first].any() and np.abs(result.waveform[:, first:]).max() > 0


# ------------------------------------------------------------------------------------- every way in

def check_output(data: bytes, new: int) -> None:
    frames, has_audio = mp4_frames(data)
    assert frames.shape == (FRAMES + new, SIDE, SIDE, 3) and has_audio
    error = np.abs(frames[:FRAMES].astype(int) - _source.astype(int)).mean()
    assert error < 4, error  # the input's frames within the output codec's loss
    out = load_audio(data, "video", None, InputLimits(), 24_000)
    assert out.shape[1] >= round((FRAMES + new) / FPS * 24_000) * 0.97


def test_a_live_server_extends_through_generate_and_the_ltx_api(live_server):
    r = requests.post(live_server + "/generate", json=BASE, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pipeline"] == "extend" and body["num_frames"] == FRAMES + FPS, body
    assert [w["new_frames"] for w in body["extend"]["windows"]] == [8]
    check_output(base64.b64decode(body["video"].split(",", 1)[1]), FPS)

    form = {"prompt": BASE["prompt"], "duration": "2", "direction": "backward", "num_frames": "17",
            "num_inference_steps": "1", "seed": "5"}
    r = requests.post(live_server + "/v1/generations/extend", data=form,
                      files={"video": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code == 202, r.text
    view = wait_job(live_server, f"/v1/generations/{r.json()['id']}", done=("completed", "failed"))
    assert view["status"] == "completed" and view["duration"] == round((FRAMES + 2 * FPS) / FPS, 4), view
    data = requests.get(view["video_url"], timeout=60).content
    frames, _ = mp4_frames(data)
    assert frames.shape[0] == FRAMES + 2 * FPS
    assert np.abs(frames[2 * FPS:].astype(int) - _source.astype(int)).mean() < 4  # the input, after the new part

    # OpenAI's Videos API: the clip as input_reference, extend as a JSON text part.
    r = requests.post(live_server + "/v1/videos", data={"prompt": BASE["prompt"], "extend": json.dumps({"seconds": 1}),
                                                        "num_frames": "17", "num_inference_steps": "1"},
                      files={"input_reference": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code == 200, r.text
    video = wait_job(live_server, f"/v1/videos/{r.json()['id']}")
    assert video["status"] == "completed", video
    check_output(requests.get(f"{live_server}/v1/videos/{video['id']}/content", timeout=60).content, FPS)

    # Refusals in the LTX API's shape, naming the vendor's field.
    r = requests.post(live_server + "/v1/generations/extend", data={**form, "duration": "61"},
                      files={"video": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "duration", r.text
    r = requests.post(live_server + "/v1/generations/extend", data=form,
                      files={"video": ("clip.mp4", b"not a video at all", "video/mp4")}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["param"] == "video", r.text
    r = requests.post(live_server + "/v1/generations/retake", json={"prompt": "x", "video": URI, "start_time": 0.5,
                                                                   "duration": -1}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "duration", r.text
    r = requests.post(live_server + "/generate", json={**BASE, "extend": {"seconds": 1, "direction": "sideways"}},
                      timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "extend.direction", r.text


def test_the_ltx_api_retakes_a_span(live_server):
    r = requests.post(live_server + "/v1/generations/retake", data={
        "prompt": "a flash", "start_time": "0.25", "duration": "0.5", "num_inference_steps": "1", "seed": "5"},
        files={"video": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code == 202, r.text
    view = wait_job(live_server, f"/v1/generations/{r.json()['id']}", done=("completed", "failed"))
    assert view["status"] == "completed" and view["duration"] == round(FRAMES / FPS, 4), view
    frames, _ = mp4_frames(requests.get(view["video_url"], timeout=60).content)
    error = np.abs(frames.astype(int) - _source.astype(int)).mean(axis=(1, 2, 3))
    assert error[:2].max() < 4 < error[2:6].min(), error  # frames 2..5 (0.25-0.75 s at 8 fps) made anew
    r = requests.post(live_server + "/v1/generations/retake", data={"prompt": "x", "start_time": "5", "duration": "1"},
                      files={"video": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    view = wait_job(live_server, f"/v1/generations/{r.json()['id']}", done=("completed", "failed"))
    assert view["status"] == "failed" and view["error"]["param"] == "start_time", view


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_runpod_handler_extends(model):
    from ltx2.serving.worker import make_handler

    handler = make_handler(model, send_progress=lambda job, progress: None)
    out = handler({"id": "e", "input": BASE})
    assert out.get("extend", {}).get("new_frames") == FPS, {k: v for k, v in out.items() if k != "video"}
    check_output(base64.b64decode(out["video"].split(",", 1)[1]), FPS)
    refused = handler({"id": "e", "input": {**BASE, "extend": {"seconds": 100}}})
    assert refused.get("field") == "extend.seconds", refused


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_cli_extends_a_video_file_forward_and_backward(model, tmp_path, monkeypatch, capsys):
    from ltx2 import cli

    monkeypatch.setattr("ltx2.models.loaded.load_from_settings", lambda settings: model)
    (tmp_path / "clip.mp4").write_bytes(CLIP)
    out = tmp_path / "out.mp4"
    common = ["--prompt", "a red ball", "--video", str(tmp_path / "clip.mp4"), "--num-frames", "17",
              "--num-inference-steps", "1", "--seed", "5", "-o", str(out)]
    cli.main(["generate", *common, "--extend", "2"])
    check_output(out.read_bytes(), 2 * FPS)
    cli.main(["generate", *common, "--extend", "-1"])
    frames, _ = mp4_frames(out.read_bytes())
    assert frames.shape[0] == FRAMES + FPS
    assert np.abs(frames[FPS:].astype(int) - _source.astype(int)).mean() < 4  # backward: the input comes last
    with pytest.raises(SystemExit) as exited:
        cli.main(["generate", *common, "--extend", "0"])
    assert exited.value.code == 2 and "extend.seconds" in capsys.readouterr().err


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_stop_between_windows_ends_the_chain(model):
    """A job's cancel or time limit (its on_step raising) is seen at every step and between windows: a chain of
    two 1-step windows stopped after the first does not start the second."""
    calls = []

    class Stop(Exception):
        pass

    def on_step(done, total):
        calls.append((done, total))
        if done == 1 and len(calls) > 1:  # the check between windows, after window 0's one step
            raise Stop()

    with pytest.raises(Stop):
        generate(model, {**BASE, "extend": {"seconds": 2.0}}, on_step=on_step)
    assert calls == [(1, 2), (1, 2)]  # window 0's step, then the check before window 1: no step of window 1


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_admission_costs_a_window_and_holds_the_whole_output(model):
    """A chain's peak is one window's (a generation of num_frames), plus the output's frames held for the file:
    the input's and every new one (at submission the input counts as FRAME_MIN frames; again once decoded)."""
    from ltx2.serving.admission import FRAMES_HOST_BYTES, Admission, frames_of

    admission = Admission(model, 1.0)
    long = GenerateRequest.model_validate({**BASE, "width": 64, "height": 64, "fps": FPS, "extend": {"seconds": 59}})
    plain = GenerateRequest.model_validate({"prompt": "x", "width": 64, "height": 64, "num_frames": 17, "fps": FPS,
                                            "use_multiscale": False})  # one stage, as a window
    assert frames_of(long) == 9
    assert admission.stage_bytes(long, 17, 64, 64)[0] == admission.stage_bytes(plain, 17, 64, 64)[0]
    held = admission.footprint(long, 9).host - admission.footprint(plain).host
    assert held == FRAMES_HOST_BYTES * (9 + 59 * FPS - 17) * 64 * 64, held
    decoded = admission.footprint(long, 473).host - admission.footprint(long, 9).host  # a 59 s input, once read
    assert decoded == FRAMES_HOST_BYTES * (473 - 9) * 64 * 64
