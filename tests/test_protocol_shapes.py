"""Each protocol answers in its own shape (issue 22, items 3-5), on a real tiny server with an API key, a
1 MB body limit and a queue of one:
- /v1/videos* and /v1/models: every error is OpenAI's {"error": {message, type, param, code}}, the
  middleware's 401 and 413 included, the memory admission's 413 and the full queue's 429 too;
- /v1/generations*: the vendor document's codes (400 for invalid parameters, 422 for an unusable file,
  413, 429) and its statuses, in the LTX API's shape; its 20 s at 25 fps and 10 s at 50 fps;
- RunPod: a failed job keeps {error, code, field} as the SDK carries errors, and `python handler.py`
  writes its video to a file it names.
The frame limit's memory admission at 497 frames is checked on the tiny model in-process."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import time

import httpx
import pytest
from servers import ROOT, start_server, stop_server

from ltx2.media.encode import probe_mp4

KEY = "shape-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHEAP = {"seed": 3, "num_inference_steps": 1}
HUGE = 2 * 1024 * 1024  # over the server's 1 MB body limit


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes")
    proc, base = start_server(out / "output", out / "server.log", env={
        "LTX2_API_KEY": KEY, "LTX2_MAX_BODY_MB": "1", "LTX2_QUEUE_SIZE": "1"})
    yield base
    stop_server(proc)


def openai_error(r: httpx.Response, status: int, code: str, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    error = body["error"]
    assert error["code"] == code and error["param"] == param and error["message"], body
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    return error


def ltx_error(r: httpx.Response, status: int, kind: str, param: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error" and set(body) == {"type", "error"}, body
    error = body["error"]
    assert set(error) == {"type", "message", "code", "param"} and error["type"] == kind, body
    assert error["param"] == param and error["message"], body
    return error


def chunks(size: int):
    for _ in range(size // 65536):
        yield b"x" * 65536


def test_openai_routes_answer_every_error_in_openai_shape(server):
    for method, path in (("POST", "/v1/videos"), ("GET", "/v1/videos"), ("GET", "/v1/videos/abc"),
                         ("GET", "/v1/videos/abc/content"), ("DELETE", "/v1/videos/abc"), ("GET", "/v1/models")):
        r = httpx.request(method, f"{server}{path}", timeout=10)
        error = openai_error(r, 401, "unauthorized")
        assert "API key" in error["message"] and r.headers["www-authenticate"] == "Bearer"
    wrong = httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert openai_error(wrong, 401, "unauthorized")["message"] == "the API key is not valid"
    # The body limit, from Content-Length and counted on a chunked body.
    declared = httpx.post(f"{server}/v1/videos", headers={**AUTH, "Content-Type": "application/json"},
                          content=b"x" * HUGE, timeout=10)
    assert "1 MB" in openai_error(declared, 413, "payload_too_large")["message"]
    counted = httpx.post(f"{server}/v1/videos", headers={**AUTH, "Content-Type": "application/json"},
                         content=chunks(HUGE), timeout=10)
    openai_error(counted, 413, "payload_too_large")
    # Routing, validation and the memory admission.
    openai_error(httpx.get(f"{server}/v1/videos/nope", headers=AUTH, timeout=10), 404, "not_found")
    openai_error(httpx.get(f"{server}/v1/videos/a/b/c", headers=AUTH, timeout=10), 404, "not_found")
    openai_error(httpx.put(f"{server}/v1/videos", headers=AUTH, timeout=10), 405, "method_not_allowed")
    bad = httpx.post(f"{server}/v1/videos", headers=AUTH, json={"prompt": "a", "size": "64x30"}, timeout=10)
    assert "height must be >= 64" in openai_error(bad, 422, "invalid_request", "size")["message"]
    # 3840x3840 x 497 frames: 44 GB of decoded frames alone, more than this machine has.
    large = httpx.post(f"{server}/v1/videos", headers=AUTH, timeout=30,
                       json={"prompt": "a", "size": "3840x3840", "seconds": "19.88"})
    assert large.status_code == 413 and large.json()["error"]["param"] in ("num_frames", "width")
    assert "GiB" in openai_error(large, 413, "too_large_for_server", large.json()["error"]["param"])["message"]
    # The native routes keep the native shape.
    native = httpx.post(f"{server}/jobs", json={"prompt": "a"}, timeout=10)
    assert native.status_code == 401 and native.json()["code"] == "unauthorized"
    assert isinstance(native.json()["error"], str)


def test_the_openai_sdk_shows_the_servers_reason(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.models.list()
    assert "API key" in caught.value.message and caught.value.code == "unauthorized"
    good = openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.UnprocessableEntityError) as caught:
        good.videos.create(prompt="a", size="64x30")
    assert caught.value.param == "size" and "height must be >= 64" in caught.value.message


def test_ltx_routes_follow_the_vendors_codes_and_shape(server):
    route = f"{server}/v1/generations/text-to-video"
    error = ltx_error(httpx.post(route, json={"prompt": "a"}, timeout=10), 401, "authentication_error")
    assert error["code"] == "unauthorized"
    ltx_error(httpx.get(f"{server}/v1/generations/x", timeout=10), 401, "authentication_error")
    too_big = httpx.post(route, headers={**AUTH, "Content-Type": "application/json"}, content=b"x" * HUGE, timeout=10)
    ltx_error(too_big, 413, "request_too_large")
    # Invalid parameters: 400, naming the vendor's field.
    for body, param, phrase in (
            ({"resolution": "1920 by 1080"}, "resolution", "resolution must be WIDTHxHEIGHT"),
            ({"model": "ltx-2-pro"}, "model", "model 'ltx-2-pro' is not loaded"),
            ({"duration": 30}, "duration", "duration must be between 0.36 and 19.88 seconds at 25 fps"),
            ({"duration": 11, "fps": 50}, "duration", "between 0.18 and 9.94 seconds at 50 fps"),
            ({"cost": 1}, "cost", "cost is not a field of this API")):
        r = httpx.post(route, headers=AUTH, json={"prompt": "a", **body}, timeout=10)
        assert phrase in ltx_error(r, 400, "invalid_request_error", param)["message"]
    missing = httpx.post(f"{server}/v1/generations/image-to-video", headers=AUTH, json={"prompt": "a"}, timeout=10)
    ltx_error(missing, 400, "invalid_request_error", "image")
    # An uploaded file that is not an image: 422 at submission, naming `image` (not image_start).
    for r in (httpx.post(f"{server}/v1/generations/image-to-video", headers=AUTH, timeout=10,
                         data={"prompt": "a", "resolution": "64x64"},
                         files={"image": ("notes.png", b"not an image at all", "image/png")}),
              httpx.post(f"{server}/v1/generations/image-to-video", headers=AUTH, timeout=10, json={
                  "prompt": "a", "image": "data:image/png;base64," + base64.b64encode(b"GIF9 nope").decode()})):
        error = ltx_error(r, 422, "invalid_file_format", "image")
        assert error["message"].startswith("image is not a PNG, JPEG, WebP or GIF image")
        assert "image_start" not in error["message"]
    declared = httpx.post(f"{server}/v1/generations/image-to-video", headers=AUTH, timeout=10,
                          json={"prompt": "a", "image": "data:image/bmp;base64,Qk0="})
    assert "image declares image/bmp" in ltx_error(declared, 422, "invalid_file_format", "image")["message"]
    ltx_error(httpx.get(f"{server}/v1/generations/gen_missing", headers=AUTH, timeout=10), 404, "not_found_error")
    ltx_error(httpx.get(f"{server}/v1/generations/a/b", headers=AUTH, timeout=10), 404, "not_found_error")
    large = httpx.post(route, headers=AUTH, timeout=30, json={"prompt": "a", "resolution": "3840x3840", "duration": 19})
    param = large.json()["error"]["param"]
    assert ltx_error(large, 413, "request_too_large", param)["code"] == "too_large_for_server"


def poll(server: str, generation: dict, seen: set) -> dict:
    deadline = time.monotonic() + 240
    while generation["status"] == "processing":
        assert time.monotonic() < deadline, generation
        time.sleep(0.2)
        r = httpx.get(f"{server}/v1/generations/{generation['id']}", headers=AUTH, timeout=10)
        assert r.status_code == 200, r.text
        generation = r.json()
        seen.add(generation["status"])
    return generation


@pytest.mark.parametrize("duration, fps, seconds", [(20, 25, 19.88), (10, 50, 9.94)])
def test_the_vendors_longest_durations_run_with_one_duration_throughout(server, duration, fps, seconds):
    r = httpx.post(f"{server}/v1/generations/text-to-video", headers=AUTH, timeout=30, json={
        "prompt": "a lighthouse", "model": "ltx-2-fast", "resolution": "64x64", "duration": duration, "fps": fps,
        "include_audio": False, **CHEAP})
    assert r.status_code == 202, r.text
    queued = r.json()
    seen = {queued["status"]}
    assert queued["duration"] == seconds and queued["video_url"] is None
    done = poll(server, queued, seen)
    assert seen <= {"processing", "completed"}, seen  # the vendor's statuses: no "queued"
    assert done["status"] == "completed" and done["duration"] == seconds, done
    video = httpx.get(done["video_url"], headers=AUTH, timeout=60)
    assert probe_mp4(video.content)["video"]["frames"] == 497


def test_a_full_queue_is_a_429_in_each_protocols_shape(server):
    slow = {"prompt": "a slow one", "width": 256, "height": 256, "num_frames": 97, "num_inference_steps": 40}
    running = httpx.post(f"{server}/jobs", headers=AUTH, json=slow, timeout=30).json()
    deadline = time.monotonic() + 60
    while httpx.get(f"{server}/jobs/{running['id']}", headers=AUTH, timeout=10).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    waiting = httpx.post(f"{server}/jobs", headers=AUTH, json={"prompt": "b", **CHEAP}, timeout=30).json()
    try:
        openai = httpx.post(f"{server}/v1/videos", headers=AUTH, json={"prompt": "c"}, timeout=10)
        openai_error(openai, 429, "queue_full")
        ltx = httpx.post(f"{server}/v1/generations/text-to-video", headers=AUTH, json={"prompt": "c"}, timeout=10)
        assert ltx_error(ltx, 429, "rate_limit_error")["code"] == "queue_full"
        assert int(openai.headers["retry-after"]) >= 1 and int(ltx.headers["retry-after"]) >= 1
    finally:
        for job in (waiting, running):
            httpx.delete(f"{server}/jobs/{job['id']}", headers=AUTH, timeout=30)


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_admission_holds_at_the_new_frame_limit(model, tmp_path):
    from ltx2.schema import FRAME_MAX, TEMPORAL_MAX_FRAMES, GenerateRequest
    from ltx2.serving.admission import Admission, TooLarge

    assert FRAME_MAX == 497 and TEMPORAL_MAX_FRAMES == 249 and 2 * TEMPORAL_MAX_FRAMES - 1 == FRAME_MAX
    longest = GenerateRequest(prompt="x", num_frames=FRAME_MAX)  # the default size, 288x512
    need = {frames: Admission(model).footprint(longest, frames).host for frames in (489, 497)}
    assert need[489] < need[497]

    def limited(limit: int) -> Admission:
        cgroup = tmp_path / str(limit)
        cgroup.mkdir()
        (cgroup / "memory.max").write_text(str(limit))
        (cgroup / "memory.current").write_text("0")
        (cgroup / "memory.stat").write_text("anon 0\nfile 0\ninactive_file 0\nactive_file 0\n")
        return Admission(model, cgroup=str(cgroup))

    roomy = limited(need[497] + 2**20)
    roomy.check(longest)  # admitted
    assert roomy.report()["largest_frames_at_default_size"] == 497
    tight = limited(need[489] + 2**20)
    with pytest.raises(TooLarge) as refused:
        tight.check(longest)
    assert refused.value.field == "num_frames" and "at most 489 frames fit" in refused.value.message


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_runpod_errors_keep_error_code_and_field_through_the_sdk(model):
    from runpod.serverless.modules.rp_job import run_job

    from ltx2.serving.worker import for_runpod, make_handler

    handler = for_runpod(make_handler(model, send_progress=lambda job, progress: None))
    result = asyncio.run(run_job(handler, {"id": "j1", "input": {"prompt": "a", "num_frames": 50}}))
    error = json.loads(result["error"])  # the SDK's job error: a JSON string, as for its own exceptions
    assert error["field"] == "num_frames" and error["code"] == "invalid_request"
    assert error["error"] == "num_frames must be of the form 8k+1 (e.g. 49 or 57), got 50"
    assert result["output"]["field"] == "num_frames" and result["output"]["code"] == "invalid_request"
    unknown = json.loads(asyncio.run(run_job(handler, {"id": "j2", "input": {"prompt": "a", "num_frame": 9}}))["error"])
    assert unknown["error"] == "num_frame is not a field of this API (did you mean num_frames?)"
    assert "GET /" not in unknown["error"]


def test_python_handler_py_writes_the_video_to_a_file_it_names(tmp_path):
    job = {"input": {"prompt": "a red ball", "width": 64, "height": 64, "num_frames": 9, **CHEAP}}
    env = {**os.environ, "LTX2_MODEL": "tiny", "LTX2_DEVICE": "cpu", "LTX2_OUTPUT_DIR": str(tmp_path / "out")}
    env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    done = subprocess.run([sys.executable, "handler.py", "--test_input", json.dumps(job)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found = re.search(r"ltx2: wrote the video to (\S+\.mp4)", done.stdout)
    assert found, done.stdout[-3000:]
    path = found[1]
    assert path.startswith(str(tmp_path / "out")) and os.path.getsize(path) > 0
    assert probe_mp4(open(path, "rb").read())["video"]["frames"] == 9
    assert "base64," not in done.stdout + done.stderr  # the log names the file instead of printing the video
