"""The vendor's LTX API routes, driven with httpx (JSON and multipart uploads) against a real server
process on loopback: queue, poll GET /v1/generations/{id}, download video_url, check the MP4."""

import base64
import time

import httpx
import pytest

from ltx2.media.encode import probe_mp4
from ltx2.media.samples import sample_audio_uri, sample_image_uri

CHEAP = {"seed": 3, "num_inference_steps": 2}


def file_bytes(data_uri: str) -> bytes:
    return base64.b64decode(data_uri.split(",", 1)[1])


def wait(base: str, generation: dict) -> dict:
    deadline = time.monotonic() + 120
    while generation["status"] == "processing":
        assert time.monotonic() < deadline, generation
        time.sleep(0.1)
        r = httpx.get(f"{base}/v1/generations/{generation['id']}", timeout=10)
        assert r.status_code == 200
        generation = r.json()
    return generation


def test_text_to_video_json(live_server):
    r = httpx.post(f"{live_server}/v1/generations/text-to-video", timeout=30, json={
        "prompt": "A lighthouse at dusk, waves and gulls", "model": "ltx-2-fast", "resolution": "128x64",
        "duration": 1, "fps": 25, **CHEAP})
    assert r.status_code == 202, r.text
    queued = r.json()
    assert queued["status"] == "processing" and queued["video_url"] is None
    assert queued["resolution"] == "128x64" and queued["duration"] == 1.0
    assert r.headers["location"].endswith(f"/v1/generations/{queued['id']}")
    done = wait(live_server, queued)
    assert done["status"] == "completed", done
    assert done["model"] == "tiny" and done["resolution"] == "128x64" and done["duration"] == 1.0
    video = httpx.get(done["video_url"], timeout=30)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    info = probe_mp4(video.content)
    assert info["video"]["frames"] == 25 and (info["video"]["width"], info["video"]["height"]) == (128, 64)
    assert info["audio"]["channels"] == 2


def test_image_to_video_multipart_upload(live_server):
    r = httpx.post(f"{live_server}/v1/generations/image-to-video", timeout=30,
                   data={"prompt": "the sky darkens", "resolution": "64x64", "duration": "0.4", "seed": "3",
                         "num_inference_steps": "2", "include_audio": "false"},
                   files={"image": ("first.png", file_bytes(sample_image_uri(64, 64)), "image/png")})
    assert r.status_code == 202, r.text
    done = wait(live_server, r.json())
    assert done["status"] == "completed", done
    job = httpx.get(f"{live_server}/jobs/{done['id']}", timeout=10).json()["result"]
    assert job["has_image_start"] is True and job["has_audio"] is False and job["num_frames"] == 9


def test_audio_to_video_follows_the_audio_length(live_server):
    # A 1 s clip and no duration: the video lasts as long as the audio (25 frames at 25 fps).
    r = httpx.post(f"{live_server}/v1/generations/audio-to-video", timeout=30,
                   data={"prompt": "a wind chime", "resolution": "64x64", **{k: str(v) for k, v in CHEAP.items()}},
                   files={"audio": ("chime.wav", file_bytes(sample_audio_uri(1.0)), "audio/wav")})
    assert r.status_code == 202, r.text
    done = wait(live_server, r.json())
    assert done["status"] == "completed", done
    assert done["duration"] == 1.0


def test_an_image_that_fails_to_decode_fails_its_generation_naming_image(live_server):
    # A PNG signature and nothing after it: it passes the check at submission, then fails to decode.
    r = httpx.post(f"{live_server}/v1/generations/image-to-video", timeout=30,
                   data={"prompt": "x", "resolution": "64x64", "duration": "0.4"},
                   files={"image": ("cut.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png")})
    assert r.status_code == 202, r.text
    done = wait(live_server, r.json())
    assert done["status"] == "failed" and done["video_url"] is None
    assert done["error"]["param"] == "image" and done["error"]["code"] == "invalid_request"
    assert "image_start" not in done["error"]["message"]


@pytest.mark.parametrize("route, body, field, phrase", [
    ("text-to-video", {"model": "ltx-2-pro"}, "model",
     "model 'ltx-2-pro' is not loaded on this server; it serves 'ltx-2-fast', 'tiny'"),
    ("text-to-video", {"resolution": "1920 by 1080"}, "resolution", "resolution must be WIDTHxHEIGHT"),
    ("text-to-video", {"resolution": "64x32"}, "resolution", "resolution: height must be >= 64, got 32"),
    ("text-to-video", {"duration": 0}, "duration", "duration must be a positive number of seconds, got 0"),
    ("text-to-video", {"duration": 2, "num_frames": 49}, "duration", "give duration or num_frames, not both"),
    ("text-to-video", {"fps": 99}, "fps", "fps must be <= 60, got 99"),
    ("image-to-video", {}, "image", "image is required for image-to-video"),
    ("audio-to-video", {}, "audio", "audio is required for audio-to-video"),
    ("text-to-video", {"cost": 1}, "cost", "cost is not a field of this API"),
])
def test_bad_fields_are_400_naming_the_field(live_server, route, body, field, phrase):
    r = httpx.post(f"{live_server}/v1/generations/{route}", json={"prompt": "a cat", **body}, timeout=10)
    assert r.status_code == 400  # the vendor's code for invalid parameters
    error = r.json()["error"]
    assert error["param"] == field and phrase in error["message"] and error["code"] == "invalid_request"
    assert error["type"] == "invalid_request_error"


def test_unknown_generation_is_404(live_server):
    r = httpx.get(f"{live_server}/v1/generations/gen_missing", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
