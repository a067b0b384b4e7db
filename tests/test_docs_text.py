"""The words /docs and --help show: articles, formats, a self-consistent example response, the --model presets."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from servers import ROOT

FORMATS = {"MP4": "video/mp4", "WebM": "video/webm", "MOV": "video/quicktime", "GIF": "image/gif"}


@pytest.fixture(scope="module")
def openapi(client):
    return client.get("/openapi.json").json()


def operations(openapi):
    for path, methods in openapi["paths"].items():
        for method, operation in methods.items():
            yield path, method, operation


def test_summaries_take_the_right_article(openapi):
    summaries = {path: op.get("summary", "") for path, method, op in operations(openapi) if method == "post"}
    assert summaries["/v1/generations/image-to-video"] == "Queue an image to video generation (LTX API)"
    assert summaries["/v1/generations/audio-to-video"] == "Queue an audio to video generation (LTX API)"
    assert summaries["/v1/generations/text-to-video"] == "Queue a text to video generation (LTX API)"
    for path, method, operation in operations(openapi):
        text = f"{operation.get('summary', '')} {operation.get('description', '')}"
        assert not re.search(r"\b[Aa] [aeio]", text), f"{method} {path}: {text!r}"  # 'a URL', 'a user' are right


def test_the_content_route_covers_every_format(openapi):
    operation = openapi["paths"]["/v1/videos/{video_id}/content"]["get"]
    text = f"{operation['summary']} {operation.get('description', '')}"
    assert "the MP4" not in operation["summary"]
    for name, mime in FORMATS.items():
        assert name in text and mime in text, (name, text)
    assert set(operation["responses"]["200"]["content"]) == set(FORMATS.values())


def example_response(openapi) -> dict:
    """The 200 example /docs shows for POST /generate: each property's first example."""
    schema = openapi["components"]["schemas"]["GenerateResponse"]
    return {name: prop["examples"][0] for name, prop in schema["properties"].items() if prop.get("examples")}


def test_the_docs_example_response_is_one_consistent_two_stage_result(openapi, client):
    example = example_response(openapi)
    assert example["pipeline"] == "two-stage" and example["use_multiscale"] is True
    assert example["transformer_passes"] == example["num_inference_steps"] + 3  # 8 at half size + 3 refining
    assert example["duration_seconds"] == round(example["num_frames"] / example["fps"], 2)
    assert example["length_from"] != "duration_head" or example["model_family"] == "ltx-2.5"
    assert example["model"].startswith("ltx-2-19b") and example["model_family"] == "ltx-2"
    assert max(example["stg_blocks"]) < 48  # LTX-2 19B's blocks
    # What the server really answers for the example's request on the tiny preset (distilled, two-stage).
    width, height = map(int, example["resolution"].split("x"))
    real = client.post("/generate", json={"prompt": "a lighthouse at dusk", "width": width, "height": height,
                                          "num_frames": example["num_frames"], "fps": example["fps"], "seed": 1})
    assert real.status_code == 200, real.text
    real = real.json()
    for field in ("pipeline", "use_multiscale", "transformer_passes", "num_inference_steps", "model_resolution",
                  "resolution", "duration_seconds", "guidance_scale", "variant", "length_from"):
        assert real[field] == example[field], (field, real[field], example[field])


@pytest.mark.parametrize("command", [[sys.executable, "server.py", "--help"],
                                     [sys.executable, "-m", "ltx2.cli", "generate", "--help"]],
                         ids=["serve", "generate"])
def test_model_help_names_every_preset_and_the_default(command):
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    model_help = " ".join(re.search(r"--model MODEL\s+(.*?)\n  --", done.stdout, re.S).group(1).split())
    for name in ("tiny", "tiny-2.3", "tiny-2.5", "random-19b", "random-22b"):
        assert f"'{name}'" in model_help, (name, model_help)
    assert "(default: tiny)" in model_help, model_help
