"""The OpenAI Videos API, driven by the official `openai` SDK (pinned in the test extra) against a real
server process on loopback, as the SDK's docs show: `OpenAI(base_url=...)`, then `client.videos`."""

import base64

import httpx
import openai
import pytest
from openai import OpenAI

from ltx2.media.encode import probe_mp4
from ltx2.media.samples import sample_image_uri

# The SDK marks client.videos deprecated (Sora's hosted API); the protocol is what is tested here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CHEAP = {"seed": 5, "num_inference_steps": 2}


@pytest.fixture(scope="module")
def sdk(live_server):
    return OpenAI(base_url=f"{live_server}/v1", api_key="not-needed", max_retries=0, timeout=120)


def png_bytes() -> bytes:
    return base64.b64decode(sample_image_uri(128, 64).split(",", 1)[1])


def test_create_poll_download_an_mp4(sdk, tmp_path):
    video = sdk.videos.create(prompt="A paper boat on a rainy street, rain sounds", seconds="1", size="128x64",
                              extra_body=CHEAP)
    assert video.object == "video" and video.status in ("queued", "in_progress")
    assert video.size == "128x64" and video.created_at > 0 and video.progress < 100
    done = sdk.videos.poll(video.id, poll_interval_ms=100)
    assert done.status == "completed" and done.progress == 100 and done.error is None
    # "1" second at 25 fps is the 8k+1 frame count nearest 25: 25 frames, 1 s.
    assert done.seconds == "1" and done.size == "128x64" and done.model == "tiny"
    assert done.completed_at >= done.created_at and done.expires_at > done.completed_at
    path = tmp_path / "boat.mp4"
    sdk.videos.download_content(video.id).write_to_file(path)
    info = probe_mp4(path.read_bytes())
    assert info["video"]["codec"] == "h264" and info["video"]["frames"] == 25
    assert (info["video"]["width"], info["video"]["height"]) == (128, 64)
    assert info["audio"]["channels"] == 2


def test_seconds_map_to_the_nearest_valid_frame_count(sdk):
    # 2 s at 12 fps is 24 frames; the nearest 8k+1 is 25, so the file holds 25/12 s.
    done = sdk.videos.create_and_poll(prompt="a clock ticking", seconds="2", size="64x64", poll_interval_ms=100,
                                      extra_body={**CHEAP, "fps": 12, "include_audio": False})
    assert done.status == "completed" and done.seconds == "2.0833"


def test_input_reference_upload_becomes_the_first_frame(sdk, live_server):
    video = sdk.videos.create_and_poll(prompt="the sunset glows", size="128x64", seconds="0.4",
                                       input_reference=("first.png", png_bytes(), "image/png"),
                                       poll_interval_ms=100, extra_body=CHEAP)
    assert video.status == "completed", video.error
    job = httpx.get(f"{live_server}/jobs/{video.id}", timeout=10).json()  # the same job on our own API
    assert job["result"]["has_image_start"] is True and job["result"]["num_frames"] == 9


def test_json_body_with_an_image_url_reference(live_server):
    r = httpx.post(f"{live_server}/v1/videos", timeout=30, json={
        "prompt": "a sunset", "size": "64x64", "seconds": "0.4", **CHEAP,
        "input_reference": {"image_url": sample_image_uri(64, 64)}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "video" and body["size"] == "64x64" and body["seconds"] == "0.36"


@pytest.mark.parametrize("kwargs, field, phrase", [
    ({"size": "301x64"}, "size", "size: width must be an even number, got 301"),
    ({"size": "wide"}, "size", "size must be WIDTHxHEIGHT"),
    ({"seconds": "60"}, "seconds", "seconds must be between 0.36 and 19.88 seconds at 25 fps"),
    ({"model": "sora-2"}, "model", "model 'sora-2' is not loaded on this server; it serves 'ltx-2-fast', 'tiny'"),
    ({"extra_body": {"stepz": 3}}, "stepz", "stepz is not a field of this API"),
    ({"extra_body": {"num_inference_steps": "many"}}, "num_inference_steps",
     "num_inference_steps must be an integer, got 'many'"),
])
def test_bad_fields_are_422_naming_the_field(sdk, kwargs, field, phrase):
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        sdk.videos.create(prompt="a cat", **kwargs)
    error = caught.value
    assert error.param == field and error.code == "invalid_request" and error.type == "invalid_request_error"
    assert phrase in error.message  # the SDK's own message carries ours


def test_list_retrieve_and_delete(sdk):
    first = sdk.videos.create(prompt="one", size="64x64", seconds="0.4", extra_body=CHEAP)
    second = sdk.videos.create(prompt="two", size="64x64", seconds="0.4", extra_body=CHEAP)
    sdk.videos.poll(second.id, poll_interval_ms=100)
    ids = [v.id for v in sdk.videos.list(limit=100)]
    assert ids.index(second.id) < ids.index(first.id)  # newest first
    page = sdk.videos.list(limit=1, order="asc")
    assert len(page.data) == 1 and page.has_more and page.last_id == page.data[0].id
    assert sdk.videos.retrieve(first.id).prompt == "one"

    deleted = sdk.videos.delete(first.id)
    assert deleted.deleted is True and deleted.object == "video.deleted" and deleted.id == first.id
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve(first.id)
    with pytest.raises(openai.NotFoundError):
        sdk.videos.download_content(first.id)
    assert first.id not in [v.id for v in sdk.videos.list(limit=100)]


def test_content_of_an_unfinished_or_unknown_video(sdk, live_server):
    with pytest.raises(openai.NotFoundError):
        sdk.videos.retrieve("no-such-video")
    r = httpx.get(f"{live_server}/v1/videos/no-such-video/content?variant=thumbnail", timeout=10)
    assert r.status_code == 422 and r.json()["error"]["param"] == "variant"
    assert r.json()["error"]["message"] == "variant must be 'video', got 'thumbnail'"


def test_a_body_neither_json_nor_form_says_which_types_are_accepted(live_server):
    r = httpx.post(f"{live_server}/v1/videos", content=b"prompt=a cat", headers={"content-type": "text/plain"},
                   timeout=10)
    assert r.status_code == 422
    assert r.json()["error"]["message"] == ("the request body must be sent as application/json or multipart/form-data or "
                                 "application/x-www-form-urlencoded; this request has Content-Type 'text/plain'")
