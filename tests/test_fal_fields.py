"""fal's LTX-2 requests (seeds 001 and 004) run unchanged on /generate and /jobs; GET / and /health
advertise only defaults the loaded model accepts (issue 22, items 6 and 7).

Server-level behaviour runs on real `python server.py` processes (tiny preset); the request model's
translations are checked directly, where no server is needed to see them."""

from __future__ import annotations

import base64
import http.server
import threading
from functools import partial

import httpx
import pytest
from lora_files import write_lora
from servers import launch, start_server, stop_server, wait_for_job, wait_healthy

from ltx2.media.samples import sample_audio_uri, sample_image_uri
from ltx2.schema import GenerateRequest, ValidationError, validation_error_body

PROMPT = "A woman speaks to the camera"
SMALL = {"video_size": {"width": 64, "height": 64}, "num_inference_steps": 1, "seed": 3}


def refusal(body: dict) -> dict:
    """The request model's 422 body for `body` (what /generate answers, before any work)."""
    with pytest.raises(ValidationError) as caught:
        GenerateRequest.model_validate(body)
    return validation_error_body(caught.value.errors())


# -- the request model: each fal name becomes ours ------------------------------------------------

def test_fal_names_become_ours_and_survive_a_stored_round_trip():
    image, audio = sample_image_uri(), sample_audio_uri(0.5)
    body = {"prompt": PROMPT, "image_url": image, "end_image_url": image, "audio_url": audio,
            "generate_audio": False, "sync_mode": False, "fps": 25.0, "video_size": {"width": 96, "height": 64},
            "enable_safety_checker": False, "acceleration": "none", "loras": [{"path": "a.safetensors", "scale": 1}]}
    request = GenerateRequest.model_validate(body)
    assert (request.image_start, request.image_end, request.audio) == (image, image, audio)
    assert request.include_audio is False and request.response_format == "url"  # sync_mode false: a link
    assert (request.fps, request.width, request.height, request.video_size) == (25, 96, 64, None)
    assert request.match_audio_length is True  # fal's default, with audio_url and no length given
    # Jobs are stored as model_dump_json(exclude_unset=True) under our names and read back after a restart.
    stored = request.model_dump_json(exclude_unset=True)
    assert "image_url" not in stored and "sync_mode" not in stored
    again = GenerateRequest.model_validate_json(stored)
    assert again == request and again.model_fields_set == request.model_fields_set
    assert GenerateRequest.model_validate({"prompt": "a", "sync_mode": True}).response_format == "data_uri"


def test_match_audio_length_follows_fal_only_for_audio_url_without_a_length():
    audio = sample_audio_uri(0.5)
    assert GenerateRequest.model_validate({"prompt": "a", "audio_url": audio}).match_audio_length is True
    for given in ({"num_frames": 121}, {"match_audio_length": False}):  # a length asked for wins
        request = GenerateRequest.model_validate({"prompt": "a", "audio_url": audio, **given})
        assert request.match_audio_length is False
    # Our own `audio` keeps this API's contract: the audio is fitted to num_frames (49 by default).
    assert GenerateRequest.model_validate({"prompt": "a", "audio": audio}).match_audio_length is False


@pytest.mark.parametrize(("ours", "theirs", "value"), [
    ("image_start", "image_url", "data:image/png;base64,AAAA"), ("image_end", "end_image_url", "x"),
    ("audio", "audio_url", "x"), ("include_audio", "generate_audio", True), ("response_format", "sync_mode", True),
])
def test_both_names_at_once_is_refused_naming_both(ours, theirs, value):
    own = "url" if ours == "response_format" else value
    body = refusal({"prompt": "a", ours: own, theirs: value})
    assert body["field"] == theirs and ours in body["error"] and theirs in body["error"], body


def test_fal_options_not_honoured_here_are_refused_with_the_reason():
    body = refusal({"prompt": "a", "enable_safety_checker": True})
    assert body["field"] == "enable_safety_checker" and "no safety checker" in body["error"]
    body = refusal({"prompt": "a", "acceleration": "regular"})
    assert body["field"] == "acceleration" and "fal's hosted model" in body["error"]
    assert refusal({"prompt": "a", "acceleration": "warp"})["field"] == "acceleration"
    for name, bad in (("generate_audio", "yes"), ("sync_mode", 1), ("image_url", 5)):
        assert refusal({"prompt": "a", name: bad})["field"] == name
    body = refusal({"prompt": "a", "fps": 23.976})
    assert body["field"] == "fps" and "whole number" in body["error"]
    body = refusal({"prompt": "a", "video_size": {"width": 64}})
    assert body["field"] == "video_size"
    body = refusal({"prompt": "a", "width": 64, "video_size": {"width": 64, "height": 64}})
    assert body["field"] == "video_size" and "width" in body["error"]


def test_an_empty_lora_path_names_loras_0_path():
    body = refusal({"prompt": "a", "loras": [{"path": "", "scale": 1}]})  # seed 001's own example
    assert body["field"] == "loras.0.path"
    assert body["error"].startswith("loras.0.path must name a .safetensors file"), body


# -- a real server --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A loopback HTTP server with an image and a WAV: fal's *_url fields as URLs."""
    root = tmp_path_factory.mktemp("media")
    (root / "first.png").write_bytes(base64.b64decode(sample_image_uri(96, 64).split(",", 1)[1]))
    (root / "speech.wav").write_bytes(base64.b64decode(sample_audio_uri(0.9).split(",", 1)[1]))
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def live(model, tmp_path_factory):
    """A tiny server that fetches loopback URLs and has one LoRA installed; its output folder, for a restart."""
    out = tmp_path_factory.mktemp("fal")
    (out / "models" / "loras").mkdir(parents=True)
    write_lora(out / "models" / "loras" / "style.safetensors", model)
    args = ("--allow-private-urls", "true", "--models-dir", str(out / "models"))
    proc, base = start_server(out / "output", out / "server.log", *args)
    yield base, out, args, proc
    stop_server(proc)


def test_seed_004_image_to_video_runs_unchanged(live, media):
    base, *_ = live
    # Seed 004's required example (its image a loopback URL), smaller; fal's switches as fal sends them.
    body = {"prompt": PROMPT, "image_url": f"{media}/first.png", "generate_audio": False, "sync_mode": True,
            "fps": 25.0, "num_frames": 9, "enable_safety_checker": False, "end_image_url": sample_image_uri(flip=True),
            **SMALL}
    r = httpx.post(f"{base}/generate", json=body, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["has_image_start"] and out["has_image_end"] and out["has_audio"] is False
    assert out["video"].startswith("data:video/mp4;base64,") and out["resolution"] == "64x64"


def test_seed_001_audio_to_video_takes_the_audio_length(live, media):
    base, *_ = live
    body = {"prompt": PROMPT, "audio_url": f"{media}/speech.wav", "loras": [{"path": "", "scale": 1}], **SMALL}
    r = httpx.post(f"{base}/generate", json=body, timeout=120)  # seed 001's required example, as written
    assert r.status_code == 422 and r.json()["field"] == "loras.0.path", r.text
    body["loras"] = [{"path": "style.safetensors", "scale": 1}]
    r = httpx.post(f"{base}/generate", json={**body, "sync_mode": False}, timeout=120)
    assert r.status_code == 200, r.text
    out = r.json()
    # 0.9 s at 25 fps: the nearest 8k+1 is 25 frames (fal's match_audio_length default), not our 49.
    assert out["length_from"] == "audio" and out["num_frames"] == 25
    assert [lora["path"] for lora in out["loras"]] == ["style.safetensors"]
    assert "/jobs/" in out["video"]  # sync_mode false: a link, as fal answers


def test_fal_refusals_are_422s_in_our_shape(live):
    base, *_ = live
    for extra, field in (({"enable_safety_checker": True}, "enable_safety_checker"),
                         ({"image_url": "x", "image_start": "y"}, "image_url")):
        r = httpx.post(f"{base}/generate", json={"prompt": "a", **extra}, timeout=30)
        assert r.status_code == 422, r.text
        assert r.json()["field"] == field and r.json()["code"] == "invalid_request"


def test_openapi_documents_the_fal_names(live):
    base, *_ = live
    schema = httpx.get(f"{base}/openapi.json", timeout=30).json()["components"]["schemas"]["GenerateRequest"]
    for name in ("image_url", "end_image_url", "audio_url", "generate_audio", "sync_mode", "enable_safety_checker"):
        assert schema["properties"][name]["description"], name
    assert "image_start" in schema["properties"]["image_url"]["description"]
    index = httpx.get(f"{base}/", timeout=30).json()
    assert index["fal_fields"]["image_url"] == "image_start"


def test_a_fal_job_survives_a_restart(live, media):
    """Last of the live tests: it stops the module's server and starts another on the same folder."""
    base, out, args, proc = live
    body = {"prompt": PROMPT, "image_url": f"{media}/first.png", "num_frames": 9, **SMALL}
    r = httpx.post(f"{base}/jobs", json=body, timeout=60)
    assert r.status_code == 202, r.text
    with httpx.Client(base_url=base, timeout=30) as http:
        view = wait_for_job(http, r.json()["id"])
    assert view["status"] == "succeeded", view
    stop_server(proc)
    proc, again = launch(out / "output", out / "server.log", *args)
    try:
        wait_healthy(proc, again, out / "server.log")
        after = httpx.get(f"{again}/jobs/{view['id']}", timeout=30).json()
        assert after["status"] == "succeeded" and after["result"]["has_image_start"], after
    finally:
        stop_server(proc)


# -- item 7: what GET / and /health advertise is accepted -----------------------------------------

@pytest.fixture(params=["tiny", "tiny-2.5"])
def preset_server(request, tmp_path):
    """(preset, address): tiny is the session's default server (conftest.live_server), tiny-2.5 its own."""
    if request.param == "tiny":
        yield request.param, request.getfixturevalue("live_server")
        return
    proc, base = start_server(tmp_path / "out", tmp_path / "server.log", "--model", request.param)
    yield request.param, base
    stop_server(proc)


def test_advertised_defaults_sent_back_are_accepted(preset_server):
    preset, base = preset_server
    defaults = httpx.get(f"{base}/", timeout=30).json()["defaults"]
    model = httpx.get(f"{base}/health", timeout=30).json()["model"]
    # /health's model defaults are GET /'s, from the same place; the tiny transformer has 2 blocks.
    assert model["defaults"].items() <= defaults.items() and defaults["stg_blocks"] == [1]
    assert ("duration" in defaults) == (preset == "tiny-2.5")  # a duration head picks the length
    # One account of Gemma's dtype: the choice reports the dtype the weights hold.
    assert model["text_encoder_dtype"]["dtype"] == model["dtypes"]["text_encoder"]
    GenerateRequest.model_validate({"prompt": "a", **defaults})  # every value, the schema's rules
    # And the loaded model's: every default as advertised, except the size and step count, whose
    # rules are the schema's alone (just checked), made small so that this runs in seconds.
    cheap = {**defaults, "width": 64, "height": 64, "num_inference_steps": 1}
    r = httpx.post(f"{base}/generate", json={"prompt": "a red fox in snow", **cheap}, timeout=300)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["stg_blocks"] == [1] and out["use_multiscale"] == defaults["use_multiscale"]
