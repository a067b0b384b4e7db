"""The RunPod handler: same request model, same generate(), same response; the SDK's local mode."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ltx2.serving.worker import make_handler

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def handler_and_updates(model):
    updates = []
    return make_handler(model, send_progress=lambda job, progress: updates.append((job["id"], progress))), updates


def test_good_input(handler_and_updates):
    handler, updates = handler_and_updates
    updates.clear()
    start = time.perf_counter()
    out = handler({"id": "job-1", "input": {"prompt": "a cat", "num_frames": 9, "seed": 4}})
    took = time.perf_counter() - start
    assert "error" not in out
    assert 0 < out["generation_time_seconds"] <= took + 0.01  # the generation's own time, within the call's
    assert out["video"].startswith("data:video/mp4;base64,")
    assert out["seed"] == 4 and out["resolution"] == "288x512" and out["has_audio"] is True
    # Two-stage (the tiny preset's default): the 8 distilled steps, then stage 2's 3.
    assert out["pipeline"] == "two-stage"
    steps = [p for _, p in updates if p["stage"] == "denoising"]
    assert [p["step"] for p in steps] == list(range(1, 12))
    assert all(p["total"] == 11 for p in steps) and all(job_id == "job-1" for job_id, _ in updates)
    # Then the stages without steps, in order, each ending at its total.
    later = [p["stage"] for _, p in updates if p["stage"] != "denoising"]
    assert [s for i, s in enumerate(later) if i == 0 or later[i - 1] != s] == ["decoding_video", "decoding_audio",
                                                                                "encoding"]
    assert all(p["done"] <= p["total"] for _, p in updates)


def test_same_response_as_the_server(handler_and_updates, client):
    handler, _ = handler_and_updates
    request = {"prompt": "a cat", "num_frames": 9, "seed": 4}
    from_handler = handler({"id": "j", "input": request})
    from_server = client.post("/generate", json=request).json()
    assert from_handler["video"] == from_server["video"]


@pytest.mark.parametrize(
    "bad, phrase",
    [
        ({"prompt": "a", "height": 301}, "height must be an even number, got 301"),
        ({"prompt": "a", "num_frames": 50}, "num_frames must be of the form 8k+1"),
        ({"height": 512}, "prompt is required"),
        (None, "prompt is required"),
        ("just a string", "JSON object"),
    ],
)
def test_bad_input_is_an_error_dict(handler_and_updates, bad, phrase):
    handler, _ = handler_and_updates
    out = handler({"id": "j", "input": bad})
    assert phrase in out["error"]
    assert "video" not in out


def _run_local(args, cwd=ROOT):
    env = {**os.environ, "LTX2_MODEL": "tiny", "LTX2_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "handler.py", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_sdk_local_mode_with_test_input_json():
    proc = _run_local([])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "completed successfully" in out
    # The video goes to a file the run names (LTX2_OUTPUT_DIR), not into the log as base64.
    path = out.split("ltx2: wrote the video to ", 1)[1].split()[0]
    assert path.endswith(".mp4") and "data:video/mp4;base64," not in out
    with open(path, "rb") as f:
        assert f.read(12)[4:8] == b"ftyp"
    os.remove(path)


def test_sdk_local_mode_with_test_input_flag():
    proc = _run_local(["--test_input", json.dumps({"input": {"prompt": "a cat", "num_frames": 9, "seed": 1}})])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    bad = _run_local(["--test_input", json.dumps({"input": {"prompt": "a cat", "width": 301}})])
    assert bad.returncode != 0
    assert "width must be an even number, got 301" in bad.stdout + bad.stderr


def test_test_input_json_is_a_valid_request():
    from ltx2.schema import GenerateRequest

    payload = json.loads((ROOT / "test_input.json").read_text())
    GenerateRequest.model_validate(payload["input"])


def test_progress_goes_to_runpod_only_on_runpod(monkeypatch):
    import runpod

    from ltx2.serving.worker import runpod_progress_sender

    monkeypatch.delenv("RUNPOD_WEBHOOK_POST_OUTPUT", raising=False)
    assert runpod_progress_sender() is not runpod.serverless.progress_update  # local mode: a log line
    monkeypatch.setenv("RUNPOD_WEBHOOK_POST_OUTPUT", "http://127.0.0.1:9/job-done")
    assert runpod_progress_sender() is runpod.serverless.progress_update
