"""Property-based API tests with Schemathesis, driven by the server's own /openapi.json.

The app runs in-process over ASGI (lifespan included, so the job manager and its worker thread
run) with the session's tiny model. Every operation gets a bounded, deterministic set of generated
requests, valid (positive) and invalid (negative); every response must pass Schemathesis's checks:
not a 5xx, a documented status code and content type, headers and body as the schema says, and
invalid data refused with a 4xx.

Generation is expensive, so a hook keeps generated request bodies cheap: a body the server would
accept keeps its shape but renders 64x64, 9 frames, at least 25 fps, at most 2 steps (absent sizes
included: the defaults are 288x512x49). Invalid values are left
untouched (the server refuses them before any work), so negative testing still sees them. The
/jobs/{job_id} routes get a real, finished job's id as well as random ones.

Schemathesis's pytest integration for a schema built in a fixture (`schemathesis.pytest.from_fixture`
+ `@schema.parametrize()`, schemathesis 4.32) fails under pytest 9.2: it reads `request.node._nodeid`,
which pytest 9.2's nodes no longer have. So each operation is a plain Hypothesis test over
`operation.as_strategy()`, with the same checks (`case.call_and_validate()`).

The last tests are minimal reproductions of what the property tests found (or reading app.py did).
"""

from __future__ import annotations

import math
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from lora_files import write_lora

from ltx2.media.samples import sample_audio_uri, sample_image_uri
from ltx2.models.download import CAMERA_MOVES, camera_lora_file
from ltx2.schema import FAL_RENAMES, FRAME_MAX

MAX_EXAMPLES = 20
# Schemathesis's own limit is 10 s a call; a /generate with an image (a sandbox child) and a video took
# longer than that on 2 loaded cores, which made a timeout of a valid case. The checks are the same.
CALL_TIMEOUT = 120
LORA = "installed.safetensors"
CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "seed": 1}
OPERATIONS = [
    "POST /generate",
    "POST /jobs",
    "GET /jobs/{job_id}",
    "DELETE /jobs/{job_id}",
    "GET /jobs/{job_id}/video",
    "GET /jobs/{job_id}/video.{extension}",
    "GET /jobs/{job_id}/events",
    "GET /health",
    "GET /metrics",
    "GET /",
    "GET /v1/models",
    "POST /v1/videos",
    "GET /v1/videos",
    "GET /v1/videos/{video_id}",
    "GET /v1/videos/{video_id}/content",
    "DELETE /v1/videos/{video_id}",
    "POST /v1/generations/text-to-video",
    "POST /v1/generations/image-to-video",
    "POST /v1/generations/audio-to-video",
    "POST /v1/generations/retake",
    "POST /v1/generations/extend",
    "GET /v1/generations/{generation_id}",
    "POST /trainings",
    "GET /trainings/{training_id}",
    "DELETE /trainings/{training_id}",
    "GET /trainings/{training_id}/events",
]
# The protocol routes' own names for the size and the length (width/height and num_frames are theirs to set).
PROTOCOL_SIZES = {"/v1/videos": ("size", "seconds", "0.4"), "/v1/generations/": ("resolution", "duration", 0.4)}


def _whole(value) -> int | None:
    """A JSON number that is a whole number (9 and 9.0 alike; JSON Schema counts both as integers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return None


def _number(value, low: float, high: float, low_open: bool = False) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and (low < value if low_open else low <= value) and value <= high)


def _keyframe(item) -> bool:
    return (isinstance(item, dict) and "image" in item and set(item) <= {"image", "frame", "time", "strength"}
            and isinstance(item["image"], str) and len(item["image"]) >= 1
            and (item.get("frame") is None or (_whole(item["frame"]) is not None and item["frame"] >= 0))
            and (item.get("time") is None or _number(item["time"], 0, math.inf))
            and ("strength" not in item or _number(item["strength"], 0, 1)))


def _schema_valid(name: str, value) -> bool:
    """Whether /openapi.json allows `value` for one of the fields `cheap` may take out (their published
    rules, written out: RetakeSpan, KeyframeInput and the plain fields)."""
    if name == "temporal_upscale":
        return isinstance(value, bool)
    if name in ("video", "conditioning_attention_mask"):
        return value is None or isinstance(value, str)
    if name == "retake":
        return value is None or (isinstance(value, dict) and set(value) == {"start", "end"}
                                 and _number(value["start"], 0, 3600) and _number(value["end"], 0, 3600, low_open=True))
    if name == "keyframes":
        return isinstance(value, list) and len(value) <= 8 and all(_keyframe(item) for item in value)
    if name == "ic_lora":
        return value is None or (isinstance(value, str) and 1 <= len(value) <= 255)
    if name in ("ic_lora_scale", "video_strength", "conditioning_attention_strength"):
        return _number(value, 0, 4 if name == "ic_lora_scale" else 1)
    if name == "control":
        return value in (None, "canny", "depth", "pose")
    if name == "extend":
        return value is None or (isinstance(value, dict) and "seconds" in value and set(value) <= {"seconds", "direction"}
                                 and _number(value["seconds"], 0, 3600, low_open=True)
                                 and value.get("direction", "forward") in ("forward", "backward"))
    raise ValueError(name)


def cheap(body, path="/generate"):
    """The same body, but rendering little: valid sizes become 64, frames 9, fps at least 25 (audio
    length is frames / fps), steps at most 2."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    protocol = next((names for prefix, names in PROTOCOL_SIZES.items() if path.startswith(prefix)), None)
    if protocol is not None:
        size, length, short = protocol
        body[size], body[length] = "64x64", short  # 9 frames at 25 fps (up to 25 at 60 fps)
        body.pop("model", None)  # only the loaded model's names are accepted: a runtime rule, said in the text
    # An absent size or length would take the defaults (288x512, 49 frames): over 1 s each here.
    for name in ("width", "height") if protocol is None else ():
        value = _whole(body.get(name))
        if name not in body or value is not None and 64 <= value <= 3840 and value % 2 == 0:
            body[name] = 64
    value = _whole(body.get("num_frames"))
    if protocol is None and ("num_frames" not in body or value is not None and 9 <= value <= FRAME_MAX):
        # Also a schema-valid value that is not 8k+1: the schema cannot say "8k+1" (the description
        # does), so such a value is not a disagreement between the server and its schema.
        body["num_frames"] = 9
    value = _whole(body.get("fps"))
    if value is not None and 1 <= value < 25:
        body["fps"] = 25  # 9 frames at 1 fps is 9 s of audio to generate, decode and mux
    # Two cross-field rules the schema does not express (they are in the descriptions): each needs
    # the input it reads. Without it the server rightly answers 422, which is not what is tested here.
    if body.get("match_audio_length") is True and not isinstance(body.get("audio"), str):
        body["match_audio_length"] = False
    # duration "auto" leaves the length to a duration head, which the tiny (19B) model has not: the
    # server rightly answers 422 naming duration (tested in test_ltx25.py), and num_frames is set here anyway.
    if body.get("duration") == "auto":
        body["duration"] = None
    if body.get("video_size") == "auto" and not isinstance(body.get("image_start"), str):
        body["video_size"] = None
    if body.get("video_size") not in (None, "auto"):
        body["video_size"] = None  # a named size is up to 1024x1024: too slow here (tested in test_server.py)
    # The STG blocks must exist in the loaded model (a runtime rule, in the description): the tiny one's first.
    blocks = body.get("stg_blocks")
    if isinstance(blocks, list) and blocks and all((_whole(b) or 0) >= 0 and _whole(b) is not None for b in blocks):
        body["stg_blocks"] = [0] * len(blocks)
    # Video in and keyframes hold rules between fields the schema cannot state (in the descriptions): retake
    # needs a video and a span inside it, a video needs retake, a keyframe exactly one of frame and time at a
    # frame inside the clip. A generated body has random strings for the media, so the server rightly answers
    # 422; tests/test_retake.py and tests/test_keyframes.py test those rules.
    # temporal_upscale needs a temporal upscaler, which the tiny (19B) model has not: a 422 naming the field
    # (tests/test_upscalers.py). Only a value the schema allows is taken out: an invalid one stays, so that a
    # negative case keeps what makes it invalid.
    # Video to video's fields need an IC-LoRA file and a video with each other (tests/test_video_to_video.py).
    # extend needs a video too (tests/test_extend.py).
    for name in ("video", "retake", "keyframes", "temporal_upscale", "ic_lora", "ic_lora_scale", "video_strength",
                 "control", "extend", "conditioning_attention_strength", "conditioning_attention_mask"):
        if name in body and _schema_valid(name, body[name]):
            del body[name]
    # fal's name for a field and the field itself together are a 422 naming both (tests/test_fal_fields.py).
    for theirs, ours in (*FAL_RENAMES.items(), ("sync_mode", "response_format")):
        if theirs in body and ours in body:
            del body[theirs]
    # And one between two fields: a GIF plays at most 50 fps.
    value = _whole(body.get("fps"))
    if body.get("video_output_type") == "GIF (.gif)" and value is not None and 50 < value <= 60:
        body["fps"] = 50
    value = _whole(body.get("num_inference_steps"))
    if value is not None and 1 <= value <= 100:
        body["num_inference_steps"] = min(value, 2)
    elif body.get("num_inference_steps") is None:
        body["num_inference_steps"] = 1  # absent or null: the model's default, more steps
    return body


@pytest.fixture(scope="module")
def app(model, tmp_path_factory):
    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    output = tmp_path_factory.mktemp("schemathesis-output")
    # Every camera LoRA and one custom LoRA installed (tiny ones), so valid requests naming them are served.
    models = tmp_path_factory.mktemp("schemathesis-models")
    (models / "loras").mkdir()
    write_lora(models / "loras" / LORA, model)
    for move in CAMERA_MOVES:
        write_lora(models / "loras" / camera_lora_file(move), model, seed=1)
    # Prompt expansion writes a few tokens, not 512: the random Gemma's words are not what is tested here.
    tokens, model.prompt_expansion_tokens = model.prompt_expansion_tokens, 8
    # A queue long enough that POST /jobs cases are accepted rather than mostly refused with 429.
    yield create_app(Settings(output_dir=str(output), job_timeout=60, queue_size=64, models_dir=str(models)),
                     model=model)
    model.prompt_expansion_tokens = tokens


@pytest.fixture(scope="module")
def api_schema(app):
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    @schema.hook
    def map_body(context, body):
        return cheap(body, context.operation.path)

    @schema.hook
    def filter_case(context, case):
        # The protocol routes' multipart form is driven by their own tests (the openai SDK, httpx uploads):
        # here a form field's JSON null arrives as the text "null", which schemathesis then counts as
        # schema-violating data that the server accepted.
        return not (case.path.startswith("/v1/") and case.media_type == "multipart/form-data")

    @schema.hook
    def map_case(context, case):
        # A schema-valid image or audio field is any string, but the server needs a decodable file:
        # valid cases carry a real (small) one, so that a 4xx for them means a real disagreement.
        if case.meta is not None and case.meta.generation.mode is GenerationMode.POSITIVE \
                and isinstance(case.body, dict):
            media = {"image_start": sample_image_uri(), "image_end": sample_image_uri(flip=True), "image": sample_image_uri(),
                     "audio": sample_audio_uri(0.5), "image_url": sample_image_uri(),
                     "end_image_url": sample_image_uri(flip=True), "audio_url": sample_audio_uri(0.5)}
            case.body = {**case.body, **{k: v for k, v in media.items() if isinstance(case.body.get(k), str)}}
            if isinstance(case.body.get("loras"), list):  # any string is a schema-valid path; one file is there
                case.body["loras"] = [{**item, "path": LORA} if isinstance(item, dict) else item
                                      for item in case.body["loras"]]
        return case

    yield schema
    schemathesis.python.asgi.shutdown_lifespans()  # stops the job manager's worker


@pytest.fixture(scope="module")
def finished_job(api_schema) -> str:
    """A succeeded job, so the /jobs/{job_id} routes are exercised on a real id too."""
    client = schemathesis.python.asgi.get_client(api_schema.app)
    with client:
        job_id = client.post("/jobs", json=CHEAP).json()["id"]
        deadline = time.monotonic() + 60
        while client.get(f"/jobs/{job_id}").json()["status"] != "succeeded":
            assert time.monotonic() < deadline, "the fixture's job did not succeed within 60 s"
            time.sleep(0.05)
    return job_id


@pytest.mark.slow
def test_every_operation_is_covered(api_schema):
    labels = sorted(result.ok().label for result in api_schema.get_all_operations())
    assert labels == sorted(OPERATIONS)


# Invalid requests exist only where the schema constrains something: the request bodies. (A job id
# is any string, and the GETs take no parameters.)
CASES = [(label, GenerationMode.POSITIVE) for label in OPERATIONS] + [
    ("POST /generate", GenerationMode.NEGATIVE), ("POST /jobs", GenerationMode.NEGATIVE)]


@pytest.mark.parametrize(("label", "mode"), CASES, ids=[f"{label}-{mode.value}" for label, mode in CASES])
@pytest.mark.slow
def test_operation_conforms_to_the_schema(api_schema, finished_job, label, mode):
    operation = api_schema.find_operation_by_label(label)
    statuses: dict[int, int] = {}
    if "{job_id}" in label:
        # First the real, finished job (generated ids are unknown ones: 404).
        real = {"job_id": finished_job, **({"extension": "mp4"} if "{extension}" in label else {})}
        response = operation.Case(path_parameters=real).call_and_validate(timeout=CALL_TIMEOUT)
        statuses[response.status_code] = 1
    strategy = operation.as_strategy(generation_mode=mode)

    # Deterministic (derandomize), no example database, no shrinking: a bounded, repeatable run.
    @settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case):
        response = case.call_and_validate(timeout=CALL_TIMEOUT)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if case.method == "POST" and case.path not in ("/generate", "/trainings") and response.status_code in (200, 202):
            # A queued job (/jobs, /v1/...): its answer is what is checked here. It is cancelled on the
            # queue at once (DELETE /jobs/{id} would wait for a running one to stop), so the cases and
            # tests that follow do not share the CPU with up to 20 jobs per operation.
            api_schema.app.state.ltx2.manager.cancel(response.json()["id"])

    run()
    print(f"\n{label} [{mode.value}]: statuses {dict(sorted(statuses.items()))}")


# -- minimal reproductions -----------------------------------------------------------------------

JOB_ROUTE_STATUSES = {
    # What each route answers besides 200, from ltx2/app.py: find() -> 404 (and 503 while the model loads).
    "GET /jobs/{job_id}": {"404", "503"},
    "DELETE /jobs/{job_id}": {"404", "409", "503"},
    "GET /jobs/{job_id}/video": {"404", "409", "410", "503"},
    "GET /jobs/{job_id}/video.{extension}": {"404", "409", "410", "503"},
    "GET /jobs/{job_id}/events": {"404", "503"},
    # A job that timed out answers 504, one out of memory 507 (ltx2/jobs.py, error_status).
    "POST /generate": {"504", "507"},
}


@pytest.mark.parametrize("label", sorted(JOB_ROUTE_STATUSES))
def test_each_route_documents_the_error_statuses_it_answers(app, label):
    method, path = label.split(" ", 1)
    documented = set(app.openapi()["paths"][path][method.lower()]["responses"])
    missing = JOB_ROUTE_STATUSES[label] - documented
    assert not missing, f"{label} answers {sorted(missing)} but /openapi.json documents only {sorted(documented)}"


def test_the_schema_says_a_blank_prompt_is_refused(app):
    """The server refuses a whitespace-only prompt (422); the schema allows it (minLength 1 only)."""
    import re

    prompt = app.openapi()["components"]["schemas"]["GenerateRequest"]["properties"]["prompt"]
    pattern = prompt.get("pattern")
    assert pattern is not None and re.search(pattern, " \r\n\t") is None and re.search(pattern, " a "), prompt


@pytest.mark.parametrize("field,value", [("include_audio", "yes"), ("guidance_scale", True), ("seed", "7")])
@pytest.mark.slow
def test_a_value_of_the_wrong_json_type_is_refused(api_schema, field, value):
    """The schema says boolean / number / integer; the server coerces "yes", true and "7" instead."""
    client = schemathesis.python.asgi.get_client(api_schema.app)
    with client:
        r = client.post("/generate", json={**CHEAP, field: value})
    assert r.status_code == 422 and r.json()["field"] == field, (r.status_code, r.text[:200])


def test_a_body_that_is_not_utf8_gets_a_documented_invalid_request(api_schema):
    client = schemathesis.python.asgi.get_client(api_schema.app)
    with client:
        r = client.post("/generate", data=b"\xff\xfe{", headers={"Content-Type": "application/json"})
    documented = set(api_schema.app.openapi()["paths"]["/generate"]["post"]["responses"])
    assert str(r.status_code) in documented and r.json()["code"] == "invalid_request", (r.status_code, r.text)


def test_a_generate_whose_job_is_cancelled_answers_with_an_error_body(api_schema):
    """DELETE /jobs/{id} or a shutdown past its grace cancels the job a POST /generate waits for; its
    answer must still be an ErrorResponse, not `500 {}`. (/health shows no job ids to callers without the
    admin key, so the id is read from the app itself.)"""
    import threading

    slow = {"prompt": "a slow boat", "width": 288, "height": 512, "num_frames": 49, "num_inference_steps": 100,
            "use_multiscale": False}  # one stage: 100 steps in all
    answer = {}

    def generate():
        with schemathesis.python.asgi.get_client(api_schema.app) as c:
            answer["r"] = c.post("/generate", json=slow)

    thread = threading.Thread(target=generate)
    thread.start()
    with schemathesis.python.asgi.get_client(api_schema.app) as client:
        deadline = time.monotonic() + 60
        while True:
            progress = client.get("/health").json()["progress"]
            if progress and progress["total"] == 100 and progress["step"] >= 1:
                break
            assert time.monotonic() < deadline and thread.is_alive(), "the slow job was not seen running"
            time.sleep(0.05)
        running = api_schema.app.state.ltx2.manager.running
        assert client.delete(f"/jobs/{running.id}").json()["status"] == "cancelled"
    thread.join(60)
    r = answer["r"]
    body = r.json()
    assert r.status_code < 500 and {"error", "code"} <= set(body), (r.status_code, body)


def test_every_reference_in_the_schema_resolves(app):
    """A protocol route's body copies the request model's fields; a nested model (a LoRA item) must point
    at a schema in the document, or clients (and Schemathesis) can build no body for the route at all."""
    import json
    import re

    schema = app.openapi()
    refs = set(re.findall(r'"\$ref": "([^"]+)"', json.dumps(schema)))
    dangling = sorted(r for r in refs if not r.startswith("#/components/schemas/")
                      or r.rsplit("/", 1)[-1] not in schema["components"]["schemas"])
    assert refs and not dangling, dangling
