"""`ltx2 generate`: flags made from the request model, the API's errors on one line, -o checked before
anything loads, default names per format, progress on a terminal only, and the help of generate and worker."""

import argparse
import base64
import json
import os
import pty
import re
import select
import subprocess
import sys
from typing import Literal

import pytest
from pydantic import Field

from ltx2 import cli, cli_generate
from ltx2.media.encode import probe_video
from ltx2.schema import GenerateRequest
from ltx2.settings import Settings

SMALL = ["--width", "64", "--height", "64", "--num-frames", "9", "--num-inference-steps", "1", "--seed", "1"]
SERVER_ONLY = ("--host", "--port", "--api-key", "--queue-size", "--job-timeout", "--result-ttl", "--max-body-mb",
               "--docs-public", "--shutdown-grace", "--output-max-gb", "--output-dir", "--lora-cache-mb")


def run_cli(argv, capsys):
    """`ltx2 <argv>` in this process: (exit code, stdout, stderr)."""
    try:
        cli.main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def no_loading(monkeypatch):
    """The loader, replaced by one that records being called and fails."""
    calls = []

    def load(settings):
        calls.append(settings)
        raise RuntimeError("the loader ran")

    monkeypatch.setattr("ltx2.models.loaded.load_from_settings", load)
    return calls


@pytest.fixture
def tiny_loaded(monkeypatch, model):
    """The loader, replaced by one that hands over the session's tiny model (no second load)."""
    monkeypatch.setattr("ltx2.models.loaded.load_from_settings", lambda settings: model)
    return model


def parser_for(model=GenerateRequest) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    cli_generate.add_request_arguments(parser, model)
    return parser


# ------------------------------------------------------------------------------ flags from the model

def test_every_request_field_is_a_flag(capsys):
    code, help_text, _ = run_cli(["generate", "--help"], capsys)
    assert code == 0
    assert cli_generate.NOT_FLAGS == ("response_format",)  # delivery: the command always writes a file
    for name in GenerateRequest.model_fields:
        flag = "--" + name.replace("_", "-")
        assert (flag in help_text) == (name not in cli_generate.NOT_FLAGS), flag
    assert "A flag overrides the same field in --request" in help_text  # which one wins is said


def test_flags_make_the_request_and_override_request_json(tmp_path):
    image, audio = tmp_path / "photo.png", tmp_path / "a.wav"
    image.write_bytes(b"\x89PNG not really")
    audio.write_bytes(b"RIFF not really")
    args = parser_for().parse_args([
        "--request", json.dumps({"prompt": "from json", "width": 128, "seed": 5, "fps": 24}),
        "--prompt", "a fox", "--width", "96", "--guidance-scale", "2.5", "--no-include-audio",
        "--match-audio-length", "--video-output-type", "webm", "--camera-lora", "dolly_in",
        "--loras", '[{"path": "style.safetensors", "scale": 0.5}]', "--image-start", str(image), "--audio", str(audio),
        "--image-end", "https://example.com/end.png", "--enable-prompt-expansion", "false",
    ])
    body = cli_generate.request_body(args)
    request = GenerateRequest.model_validate(body)
    assert (request.prompt, request.width, request.seed, request.fps) == ("a fox", 96, 5, 24)  # flags win
    assert (request.guidance_scale, request.include_audio, request.match_audio_length) == (2.5, False, True)
    assert request.video_output_type == "VP9 (.webm)" and request.camera_lora == "dolly_in"
    assert request.enable_prompt_expansion is False
    assert [(lora.path, lora.scale) for lora in request.loras] == [("style.safetensors", 0.5)]
    assert base64.b64decode(request.image_start) == image.read_bytes()  # the file, as the field takes it
    assert base64.b64decode(request.audio) == audio.read_bytes()
    assert request.image_end == "https://example.com/end.png"  # a URL is passed as it is


def test_a_field_added_to_the_model_becomes_a_flag():
    class Extended(GenerateRequest):
        shutter_angle: float = Field(default=180.0, ge=0, le=360, description="Motion blur, in degrees.")
        film_grain: bool = Field(default=False, description="Add grain.")
        look: Literal["natural", "vivid"] = Field(default="natural", description="Colour look.")

    parser = parser_for(Extended)
    help_text = parser.format_help()
    assert "--shutter-angle" in help_text and "--film-grain" in help_text and "{natural,vivid}" in help_text
    args = parser.parse_args(["--prompt", "cat", "--shutter-angle", "90", "--film-grain", "--look", "vivid"])
    body = cli_generate.request_body(args, Extended)
    assert Extended.model_validate(body).model_dump(include={"shutter_angle", "film_grain", "look"}) == {
        "shutter_angle": 90.0, "film_grain": True, "look": "vivid"}


# ------------------------------------------------------------------------------ mistakes: exit 2, one line

MISTAKES = [
    (["--request", "{bad"], "--request is not valid JSON: Expecting property name"),
    (["--request", "[1]"], "--request must be a JSON object"),
    (["--request", "@{tmp}/none.json"], "cannot read the file: No such file or directory"),
    (["--width", "64"], "prompt is required"),
    (["--prompt", "cat", "--width", "301"], "width must be an even number, got 301"),
    (["--prompt", "cat", "--width", "wide"], "width must be an integer, got 'wide'"),
    (["--prompt", "cat", "--num-frames", "10"], "num_frames must be of the form 8k+1 (e.g. 9 or 17), got 10"),
    (["--prompt", "cat", "--video-quality", "best"], "video_quality must be 'low', 'medium', 'high' or 'maximum'"),
    (["--prompt", "cat", "--include-audio", "maybe"], "include_audio must be true or false, got 'maybe'"),
    (["--prompt", "cat", "--loras", "[x"], "--loras is not valid JSON"),
    (["--prompt", "cat", "--widht", "300"], "unrecognized arguments: --widht (did you mean --width?) 300"),
    (["--prompt", "cat", "--port", "9000"], "--port (a setting of `ltx2 serve`)"),
    (["a cat"], "a cat (a value with no flag; the prompt is --prompt TEXT)"),
    (["--prompt", "cat", "--width"], "argument --width: expected one argument"),
    (["--prompt", "cat", "--image-start", "{tmp}/none.jpg"], "--image-start {tmp}/none.jpg: cannot read the file"),
    (["--prompt", "cat", "-o", "{tmp}/missing/cat.mp4"], "-o {tmp}/missing/cat.mp4: the directory {tmp}/missing "
                                                         "does not exist"),
    (["--prompt", "cat", "-o", "{tmp}/cat.webm", "--video-output-type", "mp4"],
     "names a .webm file but video_output_type is 'X264 (.mp4)'"),
]


@pytest.mark.parametrize("argv,message", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_a_mistake_is_one_line_and_exit_2_before_loading(argv, message, tmp_path, capsys, no_loading):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run_cli(["generate", *argv], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("ltx2 generate: error: "), err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err and out == ""
    assert no_loading == []  # found before the model was loaded


def test_the_messages_are_the_servers_422(client, capsys, no_loading):
    for body in ({"prompt": "cat", "width": 301}, {"prompt": "cat", "num_frames": 10, "fps": 0},
                 {"prompt": " "}, {"prompt": "cat", "video_output_type": "AVI"}, {"prompt": "cat", "colour": 1}):
        answer = client.post("/generate", json=body)
        assert answer.status_code == 422
        code, _, err = run_cli(["generate", "--request", json.dumps(body)], capsys)
        assert code == 2 and err == f"ltx2 generate: error: {answer.json()['error']}\n"


def test_an_input_file_is_read_no_further_than_any_input_may_be(tmp_path, capsys, no_loading, monkeypatch):
    monkeypatch.setenv("LTX2_MAX_IMAGE_MB", "1")
    monkeypatch.setenv("LTX2_MAX_AUDIO_MB", "2")
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (2 * 2**20 + 1))
    code, _, err = run_cli(["generate", "--prompt", "cat", "--audio", str(big)], capsys)
    assert code == 2 and err == f"ltx2 generate: error: --audio {big}: the file is larger than any input may be " \
                                "(2 MB; LTX2_MAX_IMAGE_MB, LTX2_MAX_AUDIO_MB)\n"
    big.write_bytes(b"\0" * (2 * 2**20))  # at the limit it is read, and the field's own rule comes later
    assert cli_generate.read_input(cli_generate.RequestFlag("audio", "file"), str(big)) == \
        base64.b64encode(big.read_bytes()).decode()


def test_unwritable_output_directory(tmp_path, capsys, no_loading):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(["generate", "--prompt", "cat", "-o", str(locked / "cat.mp4")], capsys)
    assert code == 2 and "cannot write in" in err and no_loading == []


def test_with_good_input_the_loader_is_what_runs_next(tmp_path, capsys, no_loading):
    # The control for the tests above: the same replaced loader is reached once the input is good,
    # and its failure is one line with exit code 1, the video not written.
    code, _, err = run_cli(["generate", "--prompt", "cat", "-o", str(tmp_path / "cat.mp4")], capsys)
    assert len(no_loading) == 1 and code == 1
    assert err == "ltx2 generate: error: the model failed to load: the loader ran (--log-level debug shows the " \
                  "traceback)\n"
    assert os.listdir(tmp_path) == []


def test_an_input_the_api_refuses_after_loading_is_exit_2(tmp_path, capsys, tiny_loaded):
    not_an_image = tmp_path / "photo.jpg"
    not_an_image.write_bytes(b"hello, not a picture")
    code, out, err = run_cli(["generate", "--prompt", "cat", *SMALL, "--image-start", str(not_an_image),
                              "-o", str(tmp_path / "cat.mp4")], capsys)
    assert code == 2 and err.count("\n") == 1 and "image_start" in err and "Traceback" not in err
    assert not (tmp_path / "cat.mp4").exists()


# ------------------------------------------------------------------------------ output names and formats

@pytest.mark.parametrize("flags,written,codec", [
    ([], "output.mp4", "h264"),
    (["--video-output-type", "GIF (.gif)"], "output.gif", "gif"),
    (["-o", "clip.webm"], "clip.webm", "vp9"),  # the extension picks the format
    (["-o", "videos", "--video-output-type", "mov"], "videos/output.mov", "prores"),  # a directory: the name inside
])
def test_default_names_follow_the_format(flags, written, codec, tmp_path, monkeypatch, capsys, tiny_loaded):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "videos").mkdir()
    code, out, err = run_cli(["generate", "--prompt", "cat", *SMALL, *flags], capsys)
    assert code == 0, err
    assert json.loads(out)["output"] == written and (tmp_path / written).exists()
    assert probe_video((tmp_path / written).read_bytes())["video"]["codec"] == codec
    assert err == ""  # stderr is no terminal here: no progress
    assert [p for p in os.listdir(tmp_path) if p.endswith(".part")] == []


# ------------------------------------------------------------------------------ progress

def _read_all(fd: int) -> str:
    chunks = []
    while select.select([fd], [], [], 0.2)[0]:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_on_a_terminal(quiet, tmp_path, monkeypatch, capsys, tiny_loaded):
    leader, follower = pty.openpty()
    terminal = os.fdopen(follower, "w", encoding="utf-8")
    try:
        monkeypatch.setattr(sys, "stderr", terminal)
        argv = ["generate", "--prompt", "cat", *SMALL, "--num-inference-steps", "3", "-o", str(tmp_path / "c.mp4")]
        cli.main(argv + (["--quiet"] if quiet else []))
        terminal.flush()
        shown = _read_all(leader)
    finally:
        terminal.close()
        os.close(leader)
    assert json.loads(capsys.readouterr().out)["num_inference_steps"] == 3
    if quiet:
        assert shown == ""
        return
    stages = ["loading model tiny", "encoding the prompt", "denoising", "decoding the video", "decoding the audio",
              "encoding X264 (.mp4)", "writing", "done"]
    positions = [shown.find(s) for s in stages]
    assert -1 not in positions and positions == sorted(positions), shown
    assert "6/6" in shown and "\r" in shown  # a bar redrawn in place: 3 steps, then two-stage's 3 at full size
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+(step/s|s/step)\]", shown), shown  # elapsed<ETA, rate


def test_a_mistake_through_the_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ltx2.cli", "generate", "--prompt", "cat", "-o",
                           str(tmp_path / "no" / "cat.mp4")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"ltx2 generate: error: -o {tmp_path}/no/cat.mp4: the directory {tmp_path}/no does not " \
                          "exist\n"


# ------------------------------------------------------------------------------ help

def test_server_flags_are_not_in_generate_help(capsys):
    _, generate_help, _ = run_cli(["generate", "--help"], capsys)
    _, serve_help, _ = run_cli(["serve", "--help"], capsys)
    for flag in SERVER_ONLY:
        assert f"{flag} " in serve_help, flag
        assert f"{flag} " not in generate_help, flag
    for flag in ("--model ", "--device ", "--url-timeout ", "--allow-private-urls ", "--prompt "):
        assert flag in generate_help


    assert set(cli_generate.GENERATE_SETTINGS) <= set(Settings.__dataclass_fields__)  # each one a real setting


def test_worker_help_lists_the_runpod_sdks_flags(capsys, monkeypatch):
    def start_worker():
        raise AssertionError("--help started the worker")

    monkeypatch.setattr("ltx2.serving.worker.main", start_worker)
    code, out, _ = run_cli(["worker", "--help"], capsys)
    assert code == 0
    for flag in ("--rp_serve_api", "--rp_api_port", "--rp_api_host", "--test_input", "--rp_log_level"):
        assert flag in out, flag
    assert "LTX2_" in out and "POST /runsync" in out
