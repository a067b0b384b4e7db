"""Retake (a `video` and a `retake` span): the request rules, the span's tokens, the frames and audio kept
outside the span on the tiny preset, and every way in (POST /generate as JSON and /v1/videos as multipart on
a live server, the RunPod handler, the CLI), with the outputs probed."""

from __future__ import annotations

import base64
import io
import json
import time
from fractions import Fraction

import av
import numpy as np
import pytest
import requests
import torch

from ltx2 import generate
from ltx2.media.inputs import InputLimits, load_audio
from ltx2.media.video_in import decode_frames
from ltx2.pipelines import retake as retake_module
from ltx2.pipelines import stages
from ltx2.schema import GenerateRequest, InvalidRequest, validation_error_body

FPS, FRAMES, SIDE = 25, 17, 64
SPAN = {"start": 0.12, "end": 0.28}  # output frames 3..6; latent frame 1 (pixel frames 1..8) is regenerated


def clip(frames: int = FRAMES, width: int = SIDE, height: int = SIDE, fps: int = FPS, audio: bool = True) -> bytes:
    """A small MP4: a moving gradient (lossless H.264) and, with `audio`, a stereo AAC tone as long as it."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        stream.options = {"crf": "0", "bf": "0"}
        sound = out.add_stream("aac", rate=48000) if audio else None
        y, x = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.stack([(x * 4 + i * 9) % 256, (y * 4) % 256, np.full_like(x, 40 + 10 * i)], -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            samples = int(frames / fps * 48000)
            wave = (0.2 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 48000)).astype(np.float32)[None].repeat(2, 0)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + 1024]), format="fltp",
                                                   layout="stereo")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, start, Fraction(1, 48000)
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return buf.getvalue()


def flat_clip(side: int, frames: int = 9) -> bytes:
    """A grey MP4 (fast to encode and decode at any size): for what only its size matters."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width = stream.height = side
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast"}
        for _ in range(frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.full((side, side, 3), 100, np.uint8), format="rgb24")))
        out.mux(stream.encode())
    return buf.getvalue()


CLIP = clip()
URI = "data:video/mp4;base64," + base64.b64encode(CLIP).decode()
BASE = {"prompt": "a red ball rolls across", "video": URI, "retake": SPAN, "num_inference_steps": 1, "seed": 5}


def input_frames(data: bytes = CLIP, size: int = SIDE, count: int = FRAMES) -> np.ndarray:
    """The input's frames as the server decodes them: (F, H, W, 3) uint8."""
    fitted, _ = decode_frames(data, "video", None, InputLimits().video(), FPS, count, ((size, size),))
    return ((fitted[(size, size)][0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def kept(count: int = FRAMES) -> np.ndarray:
    times = np.arange(count) / FPS
    return (times < SPAN["start"]) | (times >= SPAN["end"])


def mp4_frames(data: bytes) -> tuple[np.ndarray, bool]:
    with av.open(io.BytesIO(data)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        return frames, bool(container.streams.audio)


# ---------------------------------------------------------------------------------------- the rules

@pytest.mark.parametrize("fields, field, words", [
    ({"retake": SPAN}, "retake", "send video too"),
    ({"video": URI}, "video", "used by retake"),
    ({"video": URI, "retake": {"start": 0.3, "end": 0.3}}, "retake.end", "after retake.start"),
    ({"video": URI, "retake": {"start": -1, "end": 0.3}}, "retake.start", "must be >= 0"),
    ({"video": URI, "retake": {"start": 0.1}}, "retake.end", "retake.end"),
    ({"video": URI, "retake": SPAN, "audio": "data:audio/wav;base64,UklG"}, "audio", "cannot be used with retake"),
    ({"video": URI, "retake": SPAN, "image_start": "data:image/png;base64,iVBO"}, "image_start", "cannot be used"),
    ({"video": URI, "retake": SPAN, "use_multiscale": True}, "use_multiscale", "one stage"),
    ({"video": URI, "retake": SPAN, "width": 64}, "height", "width and height together"),
    ({"video": URI, "retake": {"start": 2.0, "end": 2.5}, "num_frames": 17}, "retake.start", "past the video's end"),
])
def test_bad_retake_requests_are_refused_naming_the_field(fields, field, words):
    with pytest.raises(Exception) as refused:
        GenerateRequest.model_validate({"prompt": "x", **fields})
    body = validation_error_body(list(refused.value.errors()))
    assert body["field"] == field and words in body["error"], body


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_span_outside_the_decoded_video_is_refused_naming_the_field(model):
    for span, field in (({"start": 0.7, "end": 0.9}, "retake.start"), ({"start": 0.2, "end": 0.9}, "retake.end")):
        with pytest.raises(InvalidRequest) as refused:
            generate(model, {**BASE, "retake": span})  # 17 frames at 25 fps: 0.68 s
        assert refused.value.field == field and "0.68 s" in refused.value.message


def test_num_frames_longer_than_the_video_is_refused(model):
    with pytest.raises(InvalidRequest) as refused:
        generate(model, {**BASE, "num_frames": 25})
    assert refused.value.field == "num_frames" and "17 frames" in refused.value.message


# ------------------------------------------------------------------------------------ the pipeline

def test_the_span_regenerates_the_tokens_temporal_region_mask_picks(model):
    """ltx-core's TemporalRegionMask: a token is regenerated when its [t0, t1) overlaps [start, end); video
    latent frame k covers pixel frames 8k-7..8k (frame 0 alone), audio tokens their own seconds."""
    pipe = model.pipe
    coords = pipe.transformer.rope.prepare_video_coords(1, 3, 2, 2, "cpu", fps=FPS)
    per_frame = retake_module.region(coords, SPAN["start"], SPAN["end"])[0, :, 0].view(3, 4)
    assert per_frame[:, 0].tolist() == [0.0, 1.0, 0.0] and bool((per_frame == per_frame[:, :1]).all())
    assert retake_module.region(coords, 0.0, 0.01)[0, :, 0].view(3, 4)[:, 0].tolist() == [1.0, 0.0, 0.0]
    audio = pipe.transformer.audio_rope.prepare_audio_coords(1, 17, "cpu")
    inside = retake_module.region(audio, SPAN["start"], SPAN["end"])[0, :, 0].bool()
    t0, t1 = audio[0, 0, :, 0], audio[0, 0, :, 1]
    assert inside.tolist() == ((t1 > SPAN["start"]) & (t0 < SPAN["end"])).tolist() and 0 < inside.sum() < 17


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_frames_and_audio_outside_the_span_are_the_inputs_own(model):
    result = generate(model, BASE)
    # Defaults from the video: its size, its rate, its 17 frames (8k+1).
    assert (result.width, result.height, result.fps, result.num_frames) == (SIDE, SIDE, FPS, FRAMES)
    assert result.pipeline == "retake" and result.retake == {**SPAN, "first_frame": 3, "end_frame": 7}
    source = input_frames()
    outside = kept()
    assert np.array_equal(result.frames[outside], source[outside])  # bit for bit
    assert not np.array_equal(result.frames[~outside], source[~outside])  # the span was made anew
    rate = model.vocoder_rate
    original = stages.fit_length(load_audio(CLIP, "video", None, InputLimits(), rate), result.waveform.shape[1])
    first, last = round(SPAN["start"] * rate), round(SPAN["end"] * rate)
    assert np.array_equal(result.waveform[:, :first], original[:, :first])
    assert np.array_equal(result.waveform[:, last:], original[:, last:])
    assert not np.array_equal(result.waveform[:, first:last], original[:, first:last])


def test_a_video_without_sound_gets_its_audio_generated_and_a_size_of_its_own(model):
    data = clip(frames=12, width=80, height=48, audio=False)
    uri = "data:video/mp4;base64," + base64.b64encode(data).decode()
    result = generate(model, {**BASE, "video": uri, "width": 64, "height": 64})
    # 12 frames cover 9 (8k+1); the request's size: the video covers it and is centre-cropped.
    assert (result.width, result.height, result.num_frames) == (64, 64, 9)
    assert result.waveform is not None and result.waveform.shape[1] == round(9 / FPS * model.vocoder_rate)
    fitted, _ = decode_frames(data, "video", None, InputLimits().video(), FPS, 9, ((64, 64),))
    source = ((fitted[(64, 64)][0].permute(1, 2, 3, 0) + 1) * 127.5).round().to(torch.uint8).numpy()
    assert np.array_equal(result.frames[kept(9)], source[kept(9)])


# ------------------------------------------------------------------------------------- every way in

def wait_job(base: str, path: str, done=("completed", "failed", "succeeded", "cancelled")) -> dict:
    for _ in range(300):
        r = requests.get(base + path, timeout=10)
        assert r.status_code in (200, 429), r.text  # polled a little too fast for the rate limit: wait
        if r.status_code == 200 and (view := r.json())["status"] in done:
            return view
        time.sleep(0.5)
    raise AssertionError(f"{path} did not finish")


def check_output(data: bytes) -> None:
    frames, has_audio = mp4_frames(data)
    assert frames.shape == (FRAMES, SIDE, SIDE, 3) and has_audio
    error = np.abs(frames.astype(int) - input_frames().astype(int)).mean(axis=(1, 2, 3))
    # The kept frames are the input's within the output codec's loss; the regenerated ones are not.
    assert error[kept()].max() < 4 < error[~kept()].min(), error
    # So is the sound (an AAC round trip each: 0.002 RMS apart outside the span, 0.4 inside, the tone's 0.14).
    rate = 24_000
    out, source = (load_audio(d, "video", None, InputLimits(), rate) for d in (data, CLIP))
    first, last = round(SPAN["start"] * rate), round(SPAN["end"] * rate)
    rms = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
    edge = rate // 50  # 20 ms either side of a seam: the codec's frames straddle it
    assert rms(out[:, edge:first - edge], source[:, edge:first - edge]) < 0.02
    assert rms(out[:, last + edge:-4 * edge], source[:, last + edge:-4 * edge]) < 0.02
    assert rms(out[:, first + edge:last - edge], source[:, first + edge:last - edge]) > 0.05


def test_a_live_server_retakes_through_generate_and_v1_videos(live_server):
    r = requests.post(live_server + "/generate", json=BASE, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["retake"] == {**SPAN, "first_frame": 3, "end_frame": 7} and body["num_frames"] == FRAMES
    check_output(base64.b64decode(body["video"].split(",", 1)[1]))

    form = {"prompt": BASE["prompt"], "retake": json.dumps(SPAN), "num_inference_steps": "1", "seed": "5"}
    r = requests.post(live_server + "/v1/videos", data=form, files={"input_reference": ("clip.mp4", CLIP, "video/mp4")},
                      timeout=60)
    assert r.status_code == 200, r.text
    view = wait_job(live_server, f"/v1/videos/{r.json()['id']}")
    assert view["status"] == "completed", view
    check_output(requests.get(f"{live_server}/v1/videos/{view['id']}/content", timeout=60).content)

    # Refusals in each protocol's shape, naming the field.
    r = requests.post(live_server + "/generate", json={**BASE, "video": "data:video/mp4;base64,"}, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "video", r.text
    r = requests.post(live_server + "/v1/videos", data={**form, "retake": json.dumps({"start": 0.5, "end": 0.2})},
                      files={"input_reference": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["param"] == "retake.end", r.text


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_runpod_handler_retakes(model):
    from ltx2.serving.worker import make_handler

    out = make_handler(model, send_progress=lambda job, progress: None)({"id": "r", "input": BASE})
    assert out.get("retake") == {**SPAN, "first_frame": 3, "end_frame": 7}, {k: v for k, v in out.items() if k != "video"}
    check_output(base64.b64decode(out["video"].split(",", 1)[1]))
    refused = make_handler(model, send_progress=lambda job, progress: None)({"id": "r", "input": {**BASE, "retake": None}})
    assert refused.get("field") == "video", refused


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_runpod_handler_judges_the_size_the_video_gives(model):
    """As the server: a retake without a size is judged again once its video is decoded (413 naming the field)."""
    from ltx2.serving.admission import Admission
    from ltx2.serving.worker import make_handler

    admission = Admission(model)
    default = GenerateRequest.model_validate({"prompt": "x"})
    small = admission.footprint(default, 9, default.width, default.height).host
    margin = admission.available()[0].available / small / 2.5  # the defaults fit; 1024x1024 needs over 6x more
    handler = make_handler(model, send_progress=lambda job, progress: None, admission=Admission(model, margin))
    big = "data:video/mp4;base64," + base64.b64encode(flat_clip(1024)).decode()
    out = handler({"id": "big", "input": {**BASE, "video": big}})
    assert out.get("code") == "too_large_for_server" and "1024x1024" in out["error"], out
    assert handler({"id": "small", "input": BASE}).get("retake"), "the small clip still runs"


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_cli_retakes_a_video_file(model, tmp_path, monkeypatch, capsys):
    from ltx2 import cli

    monkeypatch.setattr("ltx2.models.loaded.load_from_settings", lambda settings: model)
    (tmp_path / "clip.mp4").write_bytes(CLIP)
    out = tmp_path / "out.mp4"
    cli.main(["generate", "--prompt", "a red ball", "--video", str(tmp_path / "clip.mp4"), "--retake", "0.12:0.28",
              "--num-inference-steps", "1", "--seed", "5", "-o", str(out)])
    check_output(out.read_bytes())
    with pytest.raises(SystemExit) as exited:
        cli.main(["generate", "--prompt", "a", "--video", str(tmp_path / "clip.mp4"), "--retake", "0.5:0.1",
                  "-o", str(out)])
    assert exited.value.code == 2 and "retake.end" in capsys.readouterr().err


def test_admission_judges_the_size_the_video_gives_once_it_is_decoded(model, tmp_path):
    """A retake without width/height/num_frames is judged at submission with the defaults; once the video is
    decoded its own size and length are judged again: a 1024x1024 clip is refused with a 413 naming the field,
    not run out of memory."""
    from servers import start_server, stop_server

    from ltx2.serving.admission import Admission

    admission = Admission(model)
    default = GenerateRequest.model_validate({"prompt": "x"})
    small = admission.footprint(default, 9, default.width, default.height).host
    margin = admission.available()[0].available / small / 2.5  # the defaults fit; 1024x1024 needs over 6x more
    proc, base = start_server(tmp_path / "out", tmp_path / "log", "--memory-margin", f"{margin:.3f}")
    try:
        big = "data:video/mp4;base64," + base64.b64encode(flat_clip(1024)).decode()
        r = requests.post(base + "/generate", json={**BASE, "video": big}, timeout=120)
        assert r.status_code == 413 and r.json()["field"] in ("num_frames", "width"), r.text
        assert "1024x1024" in r.json()["error"]
        r = requests.post(base + "/generate", json=BASE, timeout=300)  # the small clip still runs
        assert r.status_code == 200, r.text
    finally:
        stop_server(proc)


@pytest.mark.parametrize("name, words", [("zero_length", "no frames"), ("million_frames", "declares 1000000 frames"),
                                         ("huge_size", "no usable frame size"), ("vfr_burst", "more than 1800 frames"),
                                         ("audio_only_mp4", "no video stream")])
@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_hostile_videos_are_refused_naming_video(model, name, words):
    """bench/attacks_video.py's files (a zero-length stream, 10^6 frames declared, 30000x30000 declared, 4,000
    frames 1 ms apart, no video stream), through the sandbox as a request's video: a 4xx naming video."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import attacks_video

    build, mime = next(case for case in attacks_video.CASES.values() if case[0].__name__ == name)
    with pytest.raises(InvalidRequest) as refused:
        generate(model, {**BASE, "video": f"data:{mime};base64," + base64.b64encode(build()).decode()})
    assert refused.value.field == "video" and refused.value.status == 422 and words in refused.value.message, \
        refused.value.message


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_docs_retake_example_runs(model):
    from ltx2.serving.app import REQUEST_EXAMPLES

    example = REQUEST_EXAMPLES["retake"]["value"]
    result = generate(model, {**example, "num_inference_steps": 1})
    # Its 1 s clip (25 frames at 25 fps, 96x64) sets the size and length; 0.4-0.6 s is frames 10 to 14.
    assert (result.num_frames, result.width, result.height) == (25, 96, 64)
    assert (result.retake["first_frame"], result.retake["end_frame"]) == (10, 15)
