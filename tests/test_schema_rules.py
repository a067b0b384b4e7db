"""The request model against the README's API table, field by field and edge by edge, and the 422 body's
sentences for each kind of error. The table below is copied from the README (not read from the model), so a
changed bound, default or message in ltx2/schema.py fails here. Fast: `tools/mutate schema` runs it for
every mutant, after test_request_rules.py's whole-range properties.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ltx2.schema import (
    DEFAULT_NEGATIVE_PROMPT,
    ErrorResponse,
    GenerateRequest,
    InvalidRequest,
    LoraInput,
    StageTimings,
    ValidationError,
    describe_error,
    generation_failed_body,
    request_rules,
    validation_error_body,
)

# The README's table: field -> (default, smallest, largest). None as a default: "the model's".
NUMBERS = {
    "width": (288, 64, 3840), "height": (512, 64, 3840), "num_frames": (49, 9, 497), "fps": (25, 1, 60),
    "guidance_scale": (None, 1.0, 20.0), "audio_guidance_scale": (None, 1.0, 20.0),
    "stg_scale": (None, 0.0, 10.0), "audio_stg_scale": (None, 0.0, 10.0),
    "modality_scale": (None, 1.0, 10.0), "audio_modality_scale": (None, 1.0, 10.0),
    "guidance_rescale": (None, 0.0, 1.0), "audio_guidance_rescale": (None, 0.0, 1.0),
    "num_inference_steps": (None, 1, 100), "seed": (None, 0, 2**53 - 1),
    "image_strength": (1.0, 0.0, 1.0), "end_image_strength": (1.0, 0.0, 1.0), "audio_strength": (1.0, 0.0, 1.0),
    "camera_lora_scale": (1.0, 0.0, 1.0),
}
OTHER_DEFAULTS = {
    "negative_prompt": "blurry, low quality, distorted, glitchy, watermark", "stg_blocks": None,
    "use_multiscale": None, "include_audio": True, "image_start": None, "image_end": None,
    "interpolation_direction": "forward", "audio": None, "match_audio_length": False, "video_size": None,
    "preprocess_audio": True, "loras": [], "camera_lora": "none", "enable_prompt_expansion": False,
    "video_output_type": "X264 (.mp4)", "video_quality": "high", "video_write_mode": "balanced",
}


def refusal(**fields) -> dict:
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"prompt": "x", **fields})
    return validation_error_body(info.value.errors())


def test_defaults_are_the_readmes():
    request = GenerateRequest(prompt="x")
    for name, (default, _, _) in NUMBERS.items():
        assert getattr(request, name) == default, name
    for name, default in OTHER_DEFAULTS.items():
        assert getattr(request, name) == default, name
    assert DEFAULT_NEGATIVE_PROMPT == OTHER_DEFAULTS["negative_prompt"]


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_each_number_is_accepted_at_its_edges_and_refused_just_past_them(name):
    _, low, high = NUMBERS[name]
    step = 8 if name == "num_frames" else 2 if name in ("width", "height") else 1 if isinstance(low, int) else 1e-9
    for value in (low, high):
        assert getattr(GenerateRequest(prompt="x", **{name: value}), name) == value
    below, above = low - step, high + step
    assert refusal(**{name: below})["errors"][0] == {"field": name, "message": f"{name} must be >= {low}, got {below}"}
    assert refusal(**{name: above})["errors"][0] == {"field": name, "message": f"{name} must be <= {high}, got {above}"}


def test_the_published_rules_are_the_tables():
    rules = request_rules()
    assert rules["width"] == rules["height"] == "even, 64..3840"
    assert rules["num_frames"] == "8k+1, 9..497"
    assert rules["guidance_scale"] == "1.0..20.0 (1.0 = no classifier-free guidance)"
    assert rules["seed"] == f"0..{2**53 - 1}" and rules["fps"] == "1..60"
    assert rules["camera_lora_scale"] == "0.0..1.0" and rules["stg_scale"] == "0.0..10.0"
    assert "prompt" not in rules and "stg_blocks" not in rules


@pytest.mark.parametrize("blocks, ok", [([0], True), ([0, 1, 2, 3, 4, 5, 6, 7], True), ([29], True), ([], False),
                                         (list(range(9)), False), ([-1], False), ([1, True], False), ([1.0], False),
                                         ("29", False), (None, True)])
def test_stg_blocks_are_one_to_eight_block_numbers_from_0(blocks, ok):
    if ok:
        assert GenerateRequest(prompt="x", stg_blocks=blocks).stg_blocks == blocks
    else:
        assert refusal(stg_blocks=blocks)["field"].startswith("stg_blocks")


def test_stg_blocks_messages():
    assert refusal(stg_blocks=[3, -1])["error"] == "stg_blocks must be block numbers from 0, got [3, -1]"
    assert refusal(stg_blocks=[True])["error"] == ("stg_blocks must be a list of block numbers (integers), "
                                                   "got [True]")
    assert refusal(stg_blocks=5)["error"] == "stg_blocks must be a list of block numbers (integers), got 5"


def test_use_multiscale_is_a_boolean_or_null():
    assert GenerateRequest(prompt="x", use_multiscale=None).use_multiscale is None
    assert GenerateRequest(prompt="x", use_multiscale=False).use_multiscale is False
    for value in (1, "true", 0):
        assert refusal(use_multiscale=value)["error"] == f"use_multiscale must be true or false, got {value!r}"


@pytest.mark.parametrize("name", ["preprocess_audio", "enable_prompt_expansion"])
def test_more_booleans_must_be_json_booleans(name):
    assert refusal(**{name: 1})["error"] == f"{name} must be true or false, got 1"


def test_loras_up_to_eight_each_scaled_0_to_4():
    lora = {"path": "a.safetensors"}
    assert len(GenerateRequest(prompt="x", loras=[lora] * 8).loras) == 8
    assert refusal(loras=[lora] * 9)["field"] == "loras"
    assert LoraInput(path="a").scale == 1.0
    assert LoraInput(path="a", scale=4.0).scale == 4.0 and LoraInput(path="a", scale=0.0).scale == 0.0
    for bad in (4.000001, -0.000001):
        with pytest.raises(ValidationError):
            LoraInput(path="a", scale=bad)
    with pytest.raises(ValidationError, match="scale must be a number, got '1'"):
        LoraInput(path="a", scale="1")
    assert len(LoraInput(path="p" * 2048).path) == 2048
    for path in ("", "p" * 2049):
        with pytest.raises(ValidationError):
            LoraInput(path=path)


def test_a_named_size_sets_width_and_height():
    presets = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
               "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
    for name, (w, h) in presets.items():
        request = GenerateRequest(prompt="x", video_size=name)
        assert (request.width, request.height) == (w, h)
        assert GenerateRequest(prompt="x", video_size=name, width=w, height=h).width == w
        assert GenerateRequest(prompt="x", video_size=name, width=w).height == h
    auto = GenerateRequest(prompt="x", video_size="auto", width=640)
    assert (auto.video_size, auto.width, auto.height) == ("auto", 640, 512)
    assert refusal(video_size="square", width=640)["error"] == (
        "video_size 'square' is 512x512; leave width and height out or make them match, got 640x512")
    assert refusal(video_size="portrait_16_9", width=256, height=512)["error"] == (  # smaller is no match either
        "video_size 'portrait_16_9' is 576x1024; leave width and height out or make them match, got 256x512")


def test_gif_is_limited_to_50_fps():
    assert GenerateRequest(prompt="x", video_output_type="GIF (.gif)", fps=50).fps == 50
    assert GenerateRequest(prompt="x", video_output_type="GIF (.gif)", fps=25).fps == 25
    with pytest.raises(ValidationError, match="plays at most 50 fps"):  # the type as JSON brings it: a new string
        GenerateRequest.model_validate_json('{"prompt": "x", "video_output_type": "GIF (.gif)", "fps": 51}')
    assert GenerateRequest(prompt="x", video_output_type="X264 (.mp4)", fps=60).fps == 60
    body = refusal(video_output_type="GIF (.gif)", fps=51)
    assert body["field"] == "video_output_type" and body["error"].startswith(
        'video_output_type "GIF (.gif)" plays at most 50 fps (browsers slow down faster GIFs), got fps 51')


def test_the_docs_example_request_is_test_input_json():
    # README, llms.txt, the OpenAPI examples and test_input.json say the same thing.
    example = GenerateRequest.model_config["json_schema_extra"]["examples"][0]
    test_input = json.loads((Path(__file__).resolve().parent.parent / "test_input.json").read_text())["input"]
    assert example == {k: v for k, v in test_input.items() if k in example}
    assert GenerateRequest.model_validate(example).num_frames == test_input["num_frames"]


# Fields that only go together: each one's example is checked with the other's.
COMPANIONS = {"video": "retake", "retake": "video", "extend": "video"}
V2V_KNOBS = ("ic_lora", "ic_lora_scale", "video_strength", "control", "conditioning_attention_strength",
             "conditioning_attention_mask")


@pytest.mark.parametrize("name", sorted(GenerateRequest.model_fields))
def test_every_fields_example_is_a_valid_value(name):
    fields = GenerateRequest.model_fields
    other = {COMPANIONS[name]: fields[COMPANIONS[name]].examples[0]} if name in COMPANIONS else {}
    if name in V2V_KNOBS:  # video to video's: with an IC-LoRA and its reference video
        other = {"video": fields["video"].examples[0], "ic_lora": fields["ic_lora"].examples[0]}
    for example in fields[name].examples or []:
        GenerateRequest.model_validate({"prompt": "x", **other, name: example})  # raises if /docs shows a refused value


def test_every_lora_example_is_valid():
    for name, field in LoraInput.model_fields.items():
        for example in field.examples or []:
            LoraInput.model_validate({"path": "a.safetensors", name: example})


def test_duration_by_hand():
    assert GenerateRequest(prompt="x", num_frames=49, fps=25).duration_seconds == 1.96
    assert GenerateRequest(prompt="x", num_frames=121, fps=24).duration_seconds == pytest.approx(5.041666666)


# ------------------------------------------------------------------------------------------------ the 422 body


@pytest.mark.parametrize("err, field, message", [
    ({"loc": ("body", "width"), "type": "multiple_of", "ctx": {"multiple_of": 2}, "input": 301},
     "width", "width must be an even number, got 301"),
    ({"loc": ("x",), "type": "multiple_of", "ctx": {"multiple_of": 3}, "input": 4}, "x", "x must be a multiple of 3, got 4"),
    ({"loc": ("x",), "type": "greater_than", "ctx": {"gt": 0}, "input": 0}, "x", "x must be > 0, got 0"),
    ({"loc": ("x",), "type": "greater_than_equal", "ctx": {"ge": 1}, "input": 0}, "x", "x must be >= 1, got 0"),
    ({"loc": ("x",), "type": "less_than", "ctx": {"lt": 5}, "input": 5}, "x", "x must be < 5, got 5"),
    ({"loc": ("x",), "type": "less_than_equal", "ctx": {"le": 5}, "input": 6}, "x", "x must be <= 5, got 6"),
    ({"loc": ("body", "prompt"), "type": "missing"}, "prompt", "prompt is required"),
    ({"loc": ("body", "widht"), "type": "extra_forbidden", "input": 3}, "widht",
     "widht is not a field of this API (did you mean width?)"),
    ({"loc": ("fps",), "type": "int_parsing", "input": "a"}, "fps", "fps must be an integer, got 'a'"),
    ({"loc": ("fps",), "type": "int_from_float", "input": 2.5}, "fps", "fps must be an integer, got 2.5"),
    ({"loc": ("g",), "type": "float_parsing", "input": "a"}, "g", "g must be a number, got 'a'"),
    ({"loc": ("b",), "type": "bool_parsing", "input": 2}, "b", "b must be true or false, got 2"),
    ({"loc": ("p",), "type": "string_too_short", "input": ""}, "p", "p must not be empty"),
    ({"loc": ("p",), "type": "string_too_long", "ctx": {"max_length": 7}, "input": "x" * 8}, "p",
     "p must be at most 7 characters"),
    ({"loc": ("p",), "type": "string_type", "input": 5}, "p", "p must be a string, got 5"),
    ({"loc": ("body",), "type": "model_attributes_type", "input": []}, "body", "the request body must be a JSON object"),
    ({"loc": ("body",), "type": "dict_type", "input": []}, "body", "the request body must be a JSON object"),
    ({"loc": ("body", 12), "type": "json_invalid", "ctx": {"error": "Expecting value"}}, "body",
     "the request body is not valid JSON: Expecting value"),
    ({"loc": ("camera_lora",), "type": "literal_error", "ctx": {"expected": "'none' or 'static'"}, "input": "x"},
     "camera_lora", "camera_lora must be 'none' or 'static', got 'x'"),
    ({"loc": ("prompt",), "type": "value_error", "ctx": {"error": "prompt must contain text"}}, "prompt",
     "prompt must contain text"),
    # Only the first place name is FastAPI's; a later "path" is a field (loras.0.path).
    ({"loc": ("query", "a", 0, "path"), "type": "unknown_kind", "msg": "odd"}, "a.0.path", "a.0.path: odd"),
    # Kinds without a sentence of their own (and any a later pydantic adds) keep pydantic's words:
    ({"loc": ("e",), "type": "enum", "msg": "Input should be 'a'"}, "e", "e: Input should be 'a'"),
    ({"loc": ("f",), "type": "frozen_instance", "msg": "Instance is frozen"}, "f", "f: Instance is frozen"),
    ({"loc": ("z",), "type": "zz_future_kind", "msg": "new"}, "z", "z: new"),
    ({"loc": ("x",), "type": "multiple_of", "ctx": {"multiple_of": 0.5}, "input": 0.3}, "x",
     "x must be a multiple of 0.5, got 0.3"),
    ({"loc": (), "type": "missing"}, "body", "body is required"),
])
def test_each_kind_of_error_is_a_sentence_naming_the_field(err, field, message):
    # The kind as written here (CPython shares identifier-like literals between modules) and rebuilt, as
    # pydantic hands it over: equal to the literal, not the same object. Both must read the same.
    for kind in (err["type"], "".join(list(err["type"]))):
        assert describe_error({**err, "type": kind}) == {"field": field, "message": message}


def test_long_values_are_quoted_by_their_start_and_messages_capped():
    got = describe_error({"loc": ("p",), "type": "string_type", "input": "y" * 70})
    assert got["message"] == "p must be a string, got '" + "y" * 59 + "... (70 long)"
    exact = describe_error({"loc": ("p",), "type": "string_type", "input": "z" * 58})  # repr is 60 characters
    assert exact["message"] == "p must be a string, got '" + "z" * 58 + "'"
    over = describe_error({"loc": ("p",), "type": "string_type", "input": "z" * 59})  # 61: cut to 60
    assert over["message"] == "p must be a string, got '" + "z" * 59 + "... (59 long)"
    number = describe_error({"loc": ("n",), "type": "int_parsing", "input": 10**70})
    assert number["message"] == f"n must be an integer, got {str(10**70)[:60]}... (long long)"
    listed = describe_error({"loc": ("l",), "type": "string_type", "input": list(range(30))})
    assert listed["message"].endswith("... (30 long)")
    capped = describe_error({"loc": ("q",), "type": "value_error", "ctx": {"error": "e" * 400}})
    assert capped["message"] == "e" * 297 + "..." and len(capped["message"]) == 300
    assert describe_error({"loc": ("q",), "type": "value_error", "ctx": {"error": "e" * 300}})["message"] == "e" * 300
    assert describe_error({"loc": ("f" * 150,), "type": "missing"})["field"] == "f" * 100


def test_the_422_body_names_five_problems_and_lists_twenty():
    def errors(n):
        return [{"loc": ("body", f"f{i}"), "type": "extra_forbidden"} for i in range(n)]

    one = validation_error_body(errors(1))
    assert one == {"error": "f0 is not a field of this API (check its spelling; the README lists the fields)",
                   "code": "invalid_request", "field": "f0", "errors": [{"field": "f0", "message": one["error"]}]}
    five = validation_error_body(errors(5))
    assert five["error"].count("is not a field") == 5 and "more problems" not in five["error"]
    assert five["field"] == "f0" and [e["field"] for e in five["errors"]] == ["f0", "f1", "f2", "f3", "f4"]
    six = validation_error_body(errors(6))
    assert six["error"].endswith("; and 1 more problems") and six["error"].count("is not a field") == 5
    twenty = validation_error_body(errors(20))
    assert len(twenty["errors"]) == 20 and twenty["error"].endswith("; and 15 more problems")
    many = validation_error_body(errors(23))
    assert len(many["errors"]) == 21 and many["errors"][-1] == {"field": None, "message": "3 more problems not listed"}
    assert many["errors"][19]["field"] == "f19"
    empty = validation_error_body([])
    assert empty == {"error": "invalid request", "code": "invalid_request", "field": None, "errors": []}


def test_invalid_request_bodies_and_codes():
    error = InvalidRequest("audio", "audio is too long")
    assert (error.status, error.code, str(error)) == (422, "invalid_request", "audio is too long")
    assert error.body() == {"error": "audio is too long", "code": "invalid_request", "field": "audio",
                            "errors": [{"field": "audio", "message": "audio is too long"}]}
    assert InvalidRequest("audio", "big", status=413).code == "payload_too_large"
    assert InvalidRequest("audio", "odd", status=400).code == "invalid_request"  # only 413 is about size
    assert generation_failed_body(RuntimeError("out of memory")) == {
        "error": "generation failed: RuntimeError: out of memory", "code": "generation_failed", "field": None,
        "errors": []}
    assert ErrorResponse(error="e", code="c").field is None


def test_stage_timings_leave_out_stages_that_did_not_run():
    timings = StageTimings(encode_prompt=1.0, prepare_latents=0.5, denoise=2.0, decode_video=3.0, decode_audio=4.0)
    dumped = timings.model_dump()
    assert "stage1_denoise" not in dumped and "upsample" not in dumped and dumped["denoise"] == 2.0
    assert dumped["expand_prompt"] == dumped["encode_conditioning"] == dumped["mux"] == dumped["encode_base64"] == 0.0
    assert dumped["transformer_passes"] == dumped["host_device_bytes"] == dumped["prompt_cache_hits"] == 0
