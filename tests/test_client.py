"""`ltx2.Client` against a real `python server.py` process on loopback (tiny preset)."""

import pytest

from ltx2 import Client
from ltx2.client import APIError
from ltx2.media.encode import probe_video

TINY = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "seed": 7}


def test_generate_follows_the_job_and_saves_the_video(live_server, tmp_path):
    seen = []
    with Client(live_server) as client:
        result = client.generate("a fox in snow", output=tmp_path / "fox.webm", on_progress=seen.append,
                                 video_output_type="VP9 (.webm)", **TINY)
    assert result["output"] == str(tmp_path / "fox.webm")
    assert (result["seed"], result["resolution"], result["num_frames"]) == (7, "64x64", 9)
    video = probe_video((tmp_path / "fox.webm").read_bytes())["video"]
    assert (video["codec"], video["width"], video["height"], video["frames"]) == ("vp9", 64, 64, 9)
    # The callback heard the job as it went, from the event stream: steps in order, then the end.
    assert seen[-1]["status"] == "succeeded" and seen[-1]["step"] == seen[-1]["total"] == 2 + 3
    steps = [job["step"] for job in seen]
    assert steps == sorted(steps) and all(job["id"] == result["id"] for job in seen)
    assert len({(job["status"], job["step"]) for job in seen}) == len(seen)  # each call is news


def test_the_servers_name_is_kept_without_output(live_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    client = Client(live_server)
    job = client.submit({"prompt": "a bell", **TINY, "video_output_type": "GIF (.gif)"})
    assert client.wait(job["id"])["status"] == "succeeded"
    assert client.download(job["id"]) == f"{job['id']}.gif"
    assert probe_video((tmp_path / f"{job['id']}.gif").read_bytes())["video"]["codec"] == "gif"


def test_a_refused_request_raises_the_apis_message(live_server):
    client = Client(live_server)
    with pytest.raises(APIError) as refused:
        client.generate("a cat", width=65)
    assert (refused.value.status, refused.value.field, str(refused.value)) == (
        422, "width", "width must be an even number, got 65")
    with pytest.raises(APIError) as missing:
        client.wait("0" * 32)
    assert missing.value.status == 404 and missing.value.code == "not_found"
