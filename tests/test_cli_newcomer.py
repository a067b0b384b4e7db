"""Issue 22, items 8-11: the CLI's output name and its imports, a port in use, `ltx2.Client`'s files and
Ctrl-C, and progress through the decodes and the mux (SSE/jobs, the RunPod handler, the CLI)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from servers import ROOT, wait_for_job

from ltx2 import cli_generate
from ltx2.media.encode import FORMATS

HEAVY = ("torch", "diffusers", "transformers", "av", "numpy")
SMALL = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "use_multiscale": False}


def _ltx2(*argv: str, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ltx2.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, **kwargs)


# ------------------------------------------------------------------------------------------- item 8

@pytest.mark.parametrize("argv", [
    ["--help"], ["generate", "--help"], ["serve", "--help"], ["download", "--help"],
    ["generate", "--prompt", "cat", "--bogus"], ["generate", "--prompt", "cat", "-o", "out.avi"],
    ["generate", "--prompt", "cat", "-o", "cat.webm", "--video-output-type", "mp4"],
])
def test_help_and_argument_errors_import_nothing_heavy(argv):
    code = textwrap.dedent(f"""
        import sys
        from ltx2.cli import main
        try:
            main({argv!r})
        except SystemExit:
            pass
        print("HEAVY", sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r}), file=sys.stderr)
    """)
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in proc.stderr, proc.stderr[-2000:]


def test_the_extension_map_is_the_encoders():
    assert cli_generate.EXTENSIONS == {f.extension: f.output_type for f in FORMATS.values()}


@pytest.mark.parametrize("name, message", [
    ("out.avi", "-o {o} has the extension .avi, which names no format written here: the extension picks the "
                "format (.mp4, .webm, .mov or .gif); name it e.g. {base}out.mp4"),
    ("noext", "-o {o} has no extension: the extension picks the format (.mp4, .webm, .mov or .gif); name it e.g. "
              "{base}noext.mp4"),
])
def test_an_unknown_extension_is_refused_before_loading(tmp_path, name, message):
    out = tmp_path / name
    proc = _ltx2("generate", "--prompt", "cat", "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr == "ltx2 generate: error: " + message.format(o=out, base=f"{tmp_path}/") + "\n"
    assert not out.exists() and "loading" not in proc.stderr


def test_no_extension_suggests_the_requested_format(tmp_path):
    proc = _ltx2("generate", "--prompt", "cat", "-o", str(tmp_path / "clip"), "--video-output-type", "gif")
    assert proc.returncode == 2 and f"name it e.g. {tmp_path}/clip.gif" in proc.stderr


def test_an_extension_that_contradicts_the_output_type_is_refused(tmp_path):
    proc = _ltx2("generate", "--prompt", "cat", "-o", str(tmp_path / "cat.mov"), "--video-output-type", "webm")
    assert proc.returncode == 2
    assert "names a .mov file but video_output_type is 'VP9 (.webm)'; name it .webm" in proc.stderr


def test_the_progress_clock_starts_at_process_start():
    # A process that spent 1 s before making its Progress: the clock shows that second.
    code = ("import time; time.sleep(1.0)\nfrom ltx2.cli_generate import Progress\n"
            "print(time.monotonic() - Progress(False).started)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert 1.0 <= float(proc.stdout) < 30, proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------- item 9

@pytest.mark.parametrize("command", [["server.py"], ["-m", "ltx2.cli", "serve"]])
def test_a_port_in_use_is_one_line_before_anything_loads(tmp_path, command):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, *command, "--model", "tiny", "--host", "127.0.0.1", "--port",
                               str(port), "--output-dir", str(tmp_path / "out")],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == (f"ltx2: cannot start: port {port} on 127.0.0.1 is already in use (another server is "
                           "listening there); stop it, or choose another port with --port or LTX2_PORT\n")
    assert not (tmp_path / "out").exists()  # nothing was set up: it stopped before the storage check


# ------------------------------------------------------------------------------------- items 10, 11

@pytest.fixture(scope="module")
def server(live_server):
    return live_server  # the session's default server (conftest.live_process)


def test_client_saves_with_the_umask_mode(server, tmp_path):
    from ltx2 import Client

    old = os.umask(0o027)
    try:
        with Client(server) as client:
            result = client.generate("a cat", output=tmp_path / "cat.mp4", **SMALL)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(result["output"]).st_mode) == 0o640  # 0666 & ~027, not mkstemp's 0600


def test_ctrl_c_returns_at_once_and_the_job_is_cancelled(server, tmp_path):
    # A job long enough to be interrupted mid-way (many steps on the tiny model), in a child process that
    # prints its id from on_progress; SIGINT is Ctrl-C.
    script = textwrap.dedent(f"""
        import signal, sys
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if our parent ignores it
        from ltx2 import Client
        def seen(job):
            if job["status"] == "running":
                print(job["id"], flush=True)
        try:
            Client({server!r}).generate("a cat", width=256, height=256, num_frames=49, num_inference_steps=100,
                                        use_multiscale=False, output={str(tmp_path / "x.mp4")!r}, on_progress=seen)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    job_id = child.stdout.readline().strip()
    assert job_id, "the job never ran"
    started = time.monotonic()
    child.send_signal(signal.SIGINT)
    rest, _ = child.communicate(timeout=60)
    took = time.monotonic() - started
    assert "interrupted" in rest
    assert took < 2.0, f"Ctrl-C took {took:.1f} s"
    with httpx.Client(base_url=server, timeout=30) as http:
        assert wait_for_job(http, job_id, seconds=60)["status"] == "cancelled"


def test_job_events_report_the_decodes_and_the_mux(server):
    # 256x256x49 on the tiny model: each decode and the mux last long enough (about a second on 2 cores)
    # for the event stream, coalesced to ~10 events a second, to show them.
    request = {"prompt": "a cat", "width": 256, "height": 256, "num_frames": 49, "num_inference_steps": 1,
               "use_multiscale": False}
    with httpx.Client(base_url=server, timeout=120) as http:
        job = http.post("/jobs", json=request).json()
        progress, stages = [], []
        with http.stream("GET", f"/jobs/{job['id']}/events") as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    view = json.loads(line[5:])
                    stages.append(view["stage"])
                    if view["progress"] is not None:
                        progress.append(view["progress"])
                    if view["status"] in ("succeeded", "failed", "cancelled"):
                        break
    assert view["status"] == "succeeded" and view["progress"] is None, view
    seen = [p["stage"] for p in progress if p["stage"] != "denoising"]  # one step: it may be coalesced away
    # In order, once each. The audio decode lasts milliseconds on tiny, so the stream (coalesced to ~10
    # events a second) may not catch it: test_render_reports_every_block_and_frame sees every report.
    order = list(dict.fromkeys(seen))
    assert order in (["decoding_video", "decoding_audio", "encoding"], ["decoding_video", "encoding"]), seen
    assert "storing" in stages or stages[-1] is None
    decode = [p for p in progress if p["stage"] == "decoding_video"]
    assert all(p["total"] == 4 and 0 <= p["done"] <= 4 and p["fraction"] == round(p["done"] / 4, 4) for p in decode)
    assert any(0 < p["done"] < p["total"] for p in progress if p["stage"] != "denoising"), progress  # mid-way


def test_render_reports_every_block_and_frame(model):
    from ltx2.schema import GenerateRequest
    from ltx2.serving.service import render_mp4

    seen = []
    render_mp4(model, GenerateRequest(prompt="a cat", **SMALL), on_progress=lambda *p: seen.append(p))
    video = [p for p in seen if p[0] == "decoding_video"]
    assert video == [("decoding_video", d, 4, ) for d in (0, 1, 2, 3, 3, 4)]  # mid + 3 up blocks; 4 once out
    assert [p for p in seen if p[0] == "decoding_audio"] == [("decoding_audio", d, 3) for d in (0, 1, 2, 3)]
    encoding = [p for p in seen if p[0] == "encoding"]
    assert encoding[0] == ("encoding", 0, 9) and encoding[-1] == ("encoding", 9, 9)
    assert [d for _, d, _ in encoding] == sorted(d for _, d, _ in encoding)


def test_a_cancel_reaches_the_decode_at_a_block(model):
    from ltx2.schema import GenerateRequest
    from ltx2.serving.service import render_mp4

    class Stop(Exception):
        pass

    def stop_in_decode(stage, done, total):
        if stage == "decoding_video" and done == 2:
            raise Stop

    with pytest.raises(Stop):
        render_mp4(model, GenerateRequest(prompt="a cat", **SMALL), on_progress=stop_in_decode)
    # The hooks are gone with the stop: the next video decodes and reports as usual.
    seen = []
    render_mp4(model, GenerateRequest(prompt="a cat", **SMALL), on_progress=lambda *p: seen.append(p))
    assert len([p for p in seen if p[0] == "decoding_video"]) == 6


def test_runpod_progress_names_the_stage(model):
    from ltx2.serving.worker import make_handler

    updates = []
    handler = make_handler(model, send_progress=lambda job, update: updates.append(update))
    out = handler({"id": "j1", "input": {"prompt": "a cat", **SMALL}})
    assert "error" not in out, out
    stages = list(dict.fromkeys(u["stage"] for u in updates))
    assert stages == ["denoising", "decoding_video", "decoding_audio", "encoding"]
    assert {"stage": "encoding", "done": 9, "total": 9, "fraction": 1.0,
            "message": "encoding 9/9 frames (100%)"} in updates
    assert updates[0] == {"step": 1, "total": 1, "stage": "denoising", "done": 1, "message": "denoising step 1/1"}
