"""Every bounded request field over its whole range (hypothesis): accepted inside, refused outside with
a message naming the field and the rule. The rules are written out here from the API table in the
README, not read from the request model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import re

from ltx2.schema import MAX_SEED, GenerateRequest, ValidationError, validation_error_body

QUICK = settings(max_examples=150, deadline=None)

# field -> (smallest, largest, step): integers on a grid, or floats (step None)
INTEGER_FIELDS = {"width": (64, 3840, 2), "height": (64, 3840, 2), "fps": (1, 60, 1),
                  "num_inference_steps": (1, 100, 1), "seed": (0, 2**53 - 1, 1)}
FLOAT_FIELDS = {"guidance_scale": (1.0, 20.0), "image_strength": (0.0, 1.0), "end_image_strength": (0.0, 1.0),
                "audio_strength": (0.0, 1.0)}


def refusal(**fields) -> dict:
    with pytest.raises(ValidationError) as info:
        GenerateRequest.model_validate({"prompt": "x", **fields})
    return validation_error_body(info.value.errors())


def test_the_limits_are_the_documented_ones():
    assert MAX_SEED == 2**53 - 1  # the largest integer every JSON client reads back exactly


@QUICK
@given(data=st.data(), name=st.sampled_from(sorted(INTEGER_FIELDS)))
def test_integer_fields_accept_their_whole_range(data, name):
    low, high, step = INTEGER_FIELDS[name]
    value = data.draw(st.integers(0, (high - low) // step).map(lambda i: low + i * step))
    assert getattr(GenerateRequest(prompt="x", **{name: value}), name) == value


@QUICK
@given(data=st.data(), name=st.sampled_from(sorted(INTEGER_FIELDS)))
def test_integer_fields_refuse_beyond_their_range(data, name):
    low, high, step = INTEGER_FIELDS[name]
    below = low - step * data.draw(st.integers(1, 10**6))  # on the field's grid: only the bound is broken
    above = high + step * data.draw(st.integers(1, 10**6))
    body = refusal(**{name: below})
    assert body["field"] == name and body["error"] == f"{name} must be >= {low}, got {below}"
    body = refusal(**{name: above})
    assert body["field"] == name and body["error"] == f"{name} must be <= {high}, got {above}"


@QUICK
@given(data=st.data(), name=st.sampled_from(["width", "height"]))
def test_sizes_must_be_even(data, name):
    odd = data.draw(st.integers(32, 1919).map(lambda k: 2 * k + 1))
    body = refusal(**{name: odd})
    assert body["field"] == name and body["error"] == f"{name} must be an even number, got {odd}"


@QUICK
@given(data=st.data(), name=st.sampled_from(sorted(FLOAT_FIELDS)))
def test_float_fields_accept_their_whole_range_and_refuse_beyond(data, name):
    low, high = FLOAT_FIELDS[name]
    value = data.draw(st.floats(low, high))
    assert getattr(GenerateRequest(prompt="x", **{name: value}), name) == value
    outside = data.draw(st.one_of(st.floats(low - 100, low, exclude_max=True), st.floats(high, high + 100, exclude_min=True)))
    body = refusal(**{name: outside})
    bound = f">= {low}" if outside < low else f"<= {high}"
    assert body["field"] == name and body["error"] == f"{name} must be {bound}, got {outside}"


@settings(max_examples=200, deadline=None)
@given(frames=st.integers(9, 497))
def test_num_frames_is_8k_plus_1(frames):
    valid = sorted(v for v in range(9, 498) if v % 8 == 1)  # 9, 17, ..., 497
    if frames in valid:
        assert GenerateRequest(prompt="x", num_frames=frames).num_frames == frames
        return
    body = refusal(num_frames=frames)
    below = max(v for v in range(1, frames) if v % 8 == 1)
    assert body["field"] == "num_frames"
    assert body["error"] == f"num_frames must be of the form 8k+1 (e.g. {below} or {below + 8}), got {frames}"


@pytest.mark.parametrize(("frames", "message"), [
    (1, "num_frames must be >= 9, got 1"), (8, "num_frames must be >= 9, got 8"), (505, "num_frames must be <= 497, got 505"),
    (13, "num_frames must be of the form 8k+1 (e.g. 9 or 17), got 13"),  # 4k+1: the VAE needs 8k+1
    (21, "num_frames must be of the form 8k+1 (e.g. 17 or 25), got 21"),
    (50, "num_frames must be of the form 8k+1 (e.g. 49 or 57), got 50"),
])
def test_num_frames_by_hand(frames, message):
    assert refusal(num_frames=frames)["error"] == message


@pytest.mark.parametrize("name", sorted(INTEGER_FIELDS) + sorted(FLOAT_FIELDS) + ["num_frames"])
@pytest.mark.parametrize("value", [True, "7", "1.0"])
def test_numbers_must_be_json_numbers(name, value):
    kind = "a number" if name in FLOAT_FIELDS else "an integer"
    body = refusal(**{name: value})
    assert body["field"] == name and body["error"] == f"{name} must be {kind}, got {value!r}"


@pytest.mark.parametrize("name", ["include_audio", "match_audio_length"])
@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_booleans_must_be_json_booleans(name, value):
    body = refusal(**{name: value})
    assert body["field"] == name and body["error"] == f"{name} must be true or false, got {value!r}"


@QUICK
@given(prompt=st.text(alphabet=" \t\n\r\x0b\x0c\x1f\x85\ufeff\u3000\x00\x7f", min_size=1, max_size=50))
def test_a_blank_prompt_is_refused(prompt):
    assert refusal(prompt=prompt)["error"] == "prompt must contain text, got only whitespace or control characters"


def test_the_prompts_schema_pattern_is_the_check():
    """The pattern /docs and schema-driven clients read accepts exactly the prompts the server takes."""
    pattern = GenerateRequest.model_json_schema()["properties"]["prompt"]["pattern"]
    for prompt in ("\x1f", "\x85", "\ufeff", " \u3000 "):
        assert not re.search(pattern, prompt) and "prompt" == refusal(prompt=prompt)["field"]
    assert re.search(pattern, "\x1fa") and GenerateRequest(prompt="\x1fa").prompt == "\x1fa"


def test_prompt_length_limits():
    assert refusal(prompt="")["error"] == "prompt must not be empty"
    assert GenerateRequest(prompt="x" * 10_000).prompt == "x" * 10_000
    assert refusal(prompt="x" * 10_001)["error"] == "prompt must be at most 10000 characters"
    assert refusal(negative_prompt="x" * 10_001)["error"] == "negative_prompt must be at most 10000 characters"


@QUICK
@given(frames=st.integers(1, 60).map(lambda k: 8 * k + 1), fps=st.integers(1, 60))
def test_duration_is_frames_over_fps(frames, fps):
    assert GenerateRequest(prompt="x", num_frames=frames, fps=fps).duration_seconds == frames / fps
