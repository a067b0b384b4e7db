"""The HTTP API: POST /generate, validation, /health, /, /docs, /openapi.json, and a real process."""

import base64
import threading
import time

import httpx
import pytest

from ltx2.media.encode import probe_mp4
from ltx2.serving.metrics import COUNTERS

CONTRACT_FIELDS = {
    "video", "duration_seconds", "resolution", "fps", "seed", "generation_time_seconds",
    "has_audio", "has_image_start", "has_image_end",
}


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_generate_returns_the_contract_response(client):
    r = client.post("/generate", json={"prompt": "A cat sitting calmly on a cushion", "seed": 9})
    assert r.status_code == 200
    body = r.json()
    assert CONTRACT_FIELDS <= set(body)
    assert body["resolution"] == "288x512" and body["fps"] == 25 and body["seed"] == 9
    assert body["duration_seconds"] == pytest.approx(1.96)
    assert body["has_audio"] is True and body["has_image_start"] is False and body["has_image_end"] is False
    assert body["num_inference_steps"] == 8 and body["guidance_scale"] == 1.0
    assert body["generation_time_seconds"] > 0 and body["timings"]["encode_base64"] > 0
    seconds = {k: v for k, v in body["timings"].items() if k not in COUNTERS}  # timings also carries counters
    assert body["generation_time_seconds"] >= sum(seconds.values()) - 0.05  # accepted to ready
    info = probe_mp4(base64.b64decode(body["video"].split(",", 1)[1]))
    assert info["video"]["frames"] == 49 and info["audio"]["channels"] == 2


def test_explicit_values_win_over_model_defaults(client):
    body = client.post("/generate", json={"prompt": "x", "num_frames": 9, "num_inference_steps": 3,
                                          "guidance_scale": 2.5, "seed": 1}).json()
    assert body["num_inference_steps"] == 3 and body["guidance_scale"] == 2.5


@pytest.mark.parametrize(
    "payload, field, phrase",
    [
        ({"width": 301}, "width", "width must be an even number, got 301"),
        ({"height": 301}, "height", "height must be an even number, got 301"),
        ({"width": 32}, "width", "width must be >= 64, got 32"),
        ({"height": 4096}, "height", "height must be <= 3840, got 4096"),
        ({"num_frames": 50}, "num_frames", "num_frames must be of the form 8k+1"),
        ({"num_frames": 1}, "num_frames", "num_frames must be >= 9, got 1"),
        ({"num_frames": 505}, "num_frames", "num_frames must be <= 497, got 505"),
        ({"fps": 0}, "fps", "fps must be >= 1, got 0"),
        ({"fps": 61}, "fps", "fps must be <= 60, got 61"),
        ({"guidance_scale": 0.5}, "guidance_scale", "guidance_scale must be >= 1.0, got 0.5"),
        ({"num_inference_steps": 0}, "num_inference_steps", "num_inference_steps must be >= 1, got 0"),
        ({"num_inference_steps": 101}, "num_inference_steps", "num_inference_steps must be <= 100"),
        ({"seed": -1}, "seed", "seed must be >= 0, got -1"),
        ({"width": "wide"}, "width", "width must be an integer"),
        ({"include_audio": "maybe"}, "include_audio", "include_audio must be true or false"),
        ({"prompt": "   "}, "prompt", "prompt must contain text"),
        ({"prompt": ""}, "prompt", "prompt must not be empty"),
        ({"prompt": None}, "prompt", "prompt must be a string"),
        ({"colour": "red"}, "colour", "colour is not a field of this API"),
        ({"image_strength": 1.5}, "image_strength", "image_strength must be <= 1"),
        ({"interpolation_direction": "sideways"}, "interpolation_direction",
         "interpolation_direction must be 'forward' or 'backward', got 'sideways'"),
        ({"video_size": "huge"}, "video_size", "video_size must be 'auto', 'square_hd', 'square', 'portrait_4_3', "
                                               "'portrait_16_9', 'landscape_4_3' or 'landscape_16_9', got 'huge'"),
        ({"video_size": "square", "width": 64}, "video_size",
         "video_size 'square' is 512x512; leave width and height out or make them match, got 64x512"),
    ],
)
def test_each_rule_is_a_422_naming_the_field(client, payload, field, phrase):
    body = {"prompt": "a cat", **payload}
    r = client.post("/generate", json=body)
    assert r.status_code == 422
    err = r.json()
    assert err["field"] == field
    assert phrase in err["error"]
    assert err["code"] == "invalid_request"


def test_missing_prompt_and_non_object_body(client):
    r = client.post("/generate", json={"width": 288})
    assert r.status_code == 422 and r.json()["error"] == "prompt is required"
    r = client.post("/generate", json=[1, 2])
    assert r.status_code == 422 and "JSON object" in r.json()["error"]
    r = client.post("/generate", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]


def test_prompt_too_long_for_the_encoder_is_422(client):
    r = client.post("/generate", json={"prompt": "word " * 2000})
    assert r.status_code == 422
    assert r.json()["field"] == "prompt" and "tokens" in r.json()["error"]


def test_server_keeps_serving_after_errors(client):
    for _ in range(3):
        assert client.post("/generate", json={"prompt": "a", "height": 1}).status_code == 422
    assert client.post("/generate", json={"prompt": "a", "num_frames": 9, "seed": 2}).status_code == 200


def test_health(client):
    body = client.get("/health").json()
    assert body["status"] == "healthy"
    assert body["model"]["name"] == "tiny" and body["model"]["device"] == "cpu"
    # A distilled model: one pass per step, every guidance knob neutral (audio guidance follows guidance_scale).
    assert body["model"]["defaults"] == {
        "num_inference_steps": 8, "guidance_scale": 1.0, "audio_guidance_scale": None, "stg_scale": 0.0,
        "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0, "guidance_rescale": 0.0,
        "audio_guidance_rescale": 0.0, "stg_blocks": [1]}  # LTX-2's block 29, as the tiny model's 2 blocks take it


def test_index_describes_api_and_effective_defaults(client):
    body = client.get("/").json()
    assert body["defaults"]["num_inference_steps"] == 8
    assert body["defaults"]["guidance_scale"] == 1.0
    assert body["defaults"]["width"] == 288 and body["defaults"]["num_frames"] == 49
    assert "POST /generate" in body["endpoints"]
    assert "prompt" in body["fields"]


def test_docs_and_openapi_teach_every_field(client):
    assert client.get("/docs").status_code == 200
    assert "swagger" in client.get("/docs").text.lower()
    spec = client.get("/openapi.json").json()
    props = spec["components"]["schemas"]["GenerateRequest"]["properties"]
    for name, prop in props.items():
        assert prop.get("description"), f"{name} has no description"
        assert prop.get("examples"), f"{name} has no example"
    assert props["width"]["multipleOf"] == 2  # any even size; the model runs at the covering multiple of 32
    assert props["num_frames"]["minimum"] == 9 and props["num_frames"]["maximum"] == 497
    examples = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["examples"]
    assert {"portrait", "preview"} <= set(examples)


def test_unknown_route_has_the_error_shape(client):
    r = client.get("/nope")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_real_process_generates_and_health_answers_meanwhile(live_server):
    result = {}

    def slow_job():
        result["r"] = httpx.post(f"{live_server}/generate",
                                 json={"prompt": "a storm", "num_frames": 97, "seed": 3}, timeout=300)

    worker = threading.Thread(target=slow_job)
    worker.start()
    # /health must answer while the job runs, and see it.
    saw_busy = False
    deadline = time.monotonic() + 60
    while worker.is_alive() and time.monotonic() < deadline:
        h = httpx.get(f"{live_server}/health", timeout=5)
        assert h.status_code == 200
        saw_busy = saw_busy or h.json()["jobs_waiting_or_running"] == 1
        time.sleep(0.05)
    worker.join(timeout=300)
    assert saw_busy
    r = result["r"]
    assert r.status_code == 200 and r.json()["seed"] == 3 and r.json()["duration_seconds"] == pytest.approx(3.88)
    bad = httpx.post(f"{live_server}/generate", json={"prompt": "a", "height": 301}, timeout=30)
    assert bad.status_code == 422 and bad.json()["error"] == "height must be an even number, got 301"
    assert httpx.get(f"{live_server}/openapi.json", timeout=5).status_code == 200


@pytest.mark.parametrize("name, size", [("square_hd", (1024, 1024)), ("square", (512, 512)),
                                        ("portrait_4_3", (768, 1024)), ("portrait_16_9", (576, 1024)),
                                        ("landscape_4_3", (1024, 768)), ("landscape_16_9", (1024, 576))])
def test_named_video_sizes_and_their_pixels_in_the_docs(client, name, size):
    from ltx2.schema import GenerateRequest

    request = GenerateRequest(prompt="a cat", video_size=name)
    assert (request.width, request.height) == size
    assert GenerateRequest(prompt="a cat", video_size=name, width=size[0]).height == size[1]  # matching is fine
    description = client.get("/openapi.json").json()["components"]["schemas"]["GenerateRequest"]["properties"][
        "video_size"]["description"]
    assert f"{name} = {size[0]}x{size[1]}" in description


def test_a_named_size_makes_a_video_of_its_pixels(client):
    body = client.post("/generate", json={"prompt": "a cat", "video_size": "square", "num_frames": 9,
                                          "num_inference_steps": 1, "seed": 4}).json()
    assert body["resolution"] == "512x512"
    info = probe_mp4(base64.b64decode(body["video"].split(",", 1)[1]))
    assert (info["video"]["width"], info["video"]["height"]) == (512, 512)
