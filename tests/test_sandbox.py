"""Untrusted media decoded in a bounded sandbox, ahead of the GPU: implausible parameters refused
before anything is allocated, and a hard memory and wall-clock limit behind that; a job's cancel and
time limit reach its fetch and decode; a slow input never holds up the jobs behind it."""

from __future__ import annotations

import base64
import os
import time

import hostile
import httpx
import numpy as np
import pytest
from servers import start_server, stop_server
from servers import wait_for_job as wait_for

from ltx2.media.fetch import FetchPolicy
from ltx2.media.inputs import InputLimits
from ltx2.media.sandbox import Sandbox, SandboxLimits, Stopped
from ltx2.schema import InvalidRequest

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sandbox_children(sandbox: Sandbox) -> list[int]:
    """This process's sandbox children other than the spare kept ready."""
    spare = sandbox._spare.pid if sandbox._spare is not None else None
    out = []
    for pid in hostile.children(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"ltx2.media.sandbox" in fh.read() and pid != spare:
                    out.append(pid)
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def sandbox():
    """One for the module: each decode takes the spare child the last one started (a child is ~2 s of
    CPU for its imports; a sandbox per test started two and killed the unused spare)."""
    box = Sandbox(SandboxLimits(memory_mb=512, timeout=20))
    yield box
    box.close()


def decode(box: Sandbox, inputs: dict, limits: InputLimits | None = None, should_stop=None):
    return box.decode(inputs, 16_000, 24_000, limits or InputLimits(), FetchPolicy(allow_private=True),
                      should_stop=should_stop)


@pytest.mark.parametrize("rate", [1, 8, 3999])
@pytest.mark.slow
def test_a_flac_declaring_a_tiny_sample_rate_is_refused_before_it_is_resampled(sandbox, rate):
    start = time.monotonic()
    with pytest.raises(InvalidRequest) as info:
        decode(sandbox, {"audio": "data:audio/flac;base64," + b64(hostile.flac_bomb(sample_rate=rate))})
    assert info.value.field == "audio" and f"sample rate of {rate} Hz" in info.value.message
    assert time.monotonic() - start < 10


@pytest.mark.slow
def test_audio_frames_that_would_resample_past_the_limit_are_refused_first(sandbox):
    # 4 kHz is a plausible rate, but 30 blocks of 65535 samples are 8 minutes: refused at the frame that
    # would cross 60 s, before the resampler makes its 16 kHz copy.
    bomb = hostile.flac_bomb(sample_rate=4000, frames=30)
    with pytest.raises(InvalidRequest) as info:
        decode(sandbox, {"audio": b64(bomb)})
    assert "longer than 60 s" in info.value.message


@pytest.mark.slow
def test_a_jpeg_of_thousands_of_scans_is_refused_from_its_segments(sandbox):
    bomb = hostile.jpeg_scan_bomb(3000)  # 370 KB, 49 MP: minutes to decode
    start = time.monotonic()
    with pytest.raises(InvalidRequest) as info:
        decode(sandbox, {"image_start": b64(bomb)})
    took = time.monotonic() - start
    assert info.value.field == "image_start" and "more than 100 scans" in info.value.message
    assert took < 10, took


def test_the_wall_clock_limit_kills_a_decode_that_runs_long():
    box = Sandbox(SandboxLimits(memory_mb=512, timeout=1.0))
    others = set(sandbox_children(box))  # no spare of its own yet: the other sandboxes' children, which stay
    try:
        start = time.monotonic()
        with pytest.raises(InvalidRequest) as info:  # the scan limit lifted: only the clock stops it
            decode(box, {"image_start": b64(hostile.jpeg_scan_bomb(3000))}, InputLimits(max_jpeg_scans=10**6))
        took = time.monotonic() - start
        assert "took longer than 1 s" in info.value.message and took < 5, took
        assert set(sandbox_children(box)) <= others  # killed and reaped
    finally:
        box.close()


@pytest.mark.slow
def test_the_memory_limit_refuses_what_needs_more_than_it(sandbox):
    # A plausible 49 MP PNG, but this sandbox may use 128 MB: decoding it needs ~150 MB.
    box = Sandbox(SandboxLimits(memory_mb=128, timeout=20))
    try:
        with pytest.raises(InvalidRequest) as info:
            decode(box, {"image_end": b64(hostile.png(7000, 7000))})
        assert info.value.field == "image_end" and info.value.status == 413
        assert "needs more than 128 MB of memory" in info.value.message
        # Within its limits the same sandbox decodes a normal image.
        decoded = decode(box, {"image_start": b64(hostile.png(640, 480))})
        assert decoded.images["image_start"].size == (640, 480)
    finally:
        box.close()


def test_should_stop_kills_the_child_at_once():
    # A sandbox of its own, as before the module shared one: with the shared one's ready spare this took
    # 5.5 s once under load (the full suite, load 8), not yet explained; see the commit.
    sandbox = Sandbox(SandboxLimits(memory_mb=512, timeout=20))
    others = set(sandbox_children(sandbox))  # other tests' sandboxes in this process (their spares) stay
    start = time.monotonic()
    stop = RuntimeError("cancelled")
    with pytest.raises(Stopped) as info:
        decode(sandbox, {"image_start": b64(hostile.jpeg_scan_bomb(3000))}, InputLimits(max_jpeg_scans=10**6),
               should_stop=lambda: stop if time.monotonic() - start > 0.5 else None)
    try:
        assert info.value.why is stop and time.monotonic() - start < 2
        assert set(sandbox_children(sandbox)) <= others
    finally:
        sandbox.close()


@pytest.mark.slow
def test_decoded_images_and_audio_come_back_exactly(sandbox):
    from ltx2.media.inputs import decode_base64_field, load_audio, load_image

    png, wav = hostile.png(48, 32), hostile.wav(1.5, rate=22_050)
    decoded = decode(sandbox, {"image_start": b64(png), "audio": "data:audio/wav;base64," + b64(wav)})
    limits = InputLimits()
    here = load_image(decode_base64_field(b64(png), "image_start", limits.max_image_bytes, "image")[0],
                      "image_start", None, limits)
    # The image comes back prepared at the (default) frame, exactly as this process would prepare it.
    from ltx2.media.conditioning_image import ImageTargets, conditioning_pixels

    (size, pixels), = decoded.images["image_start"].pixels.items()
    assert size == ImageTargets().sizes((288, 512))[0] and decoded.images["image_start"].size == (48, 32)
    assert pixels.equal(conditioning_pixels(np.asarray(here), *size))
    assert (decoded.audio_for_vae == load_audio(wav, "audio", None, limits, 16_000)).all()
    assert decoded.audio_for_output.shape == (2, 36_000)


# ---------------------------------------------------------------------------------------------
# A real server: decoding happens before the GPU, and cancel and the time limit reach it


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    out = tmp_path_factory.mktemp("sandbox-server")
    proc, base = start_server(out / "output", out / "server.log", "--job-timeout", "5", "--allow-private-urls", "true",
                              env={"LTX2_MAX_JPEG_SCANS": "1000000"})  # so that the clock has to stop the JPEG
    with httpx.Client(base_url=base, timeout=60) as http:
        yield proc, http
    stop_server(proc)


def test_a_slow_decode_holds_up_neither_the_gpu_nor_a_cancel(server):
    proc, http = server
    bomb = "data:image/jpeg;base64," + b64(hostile.jpeg_scan_bomb(3000))  # ~15 s to decode here
    slow = http.post("/jobs", json={**CHEAP, "image_start": bomb}).json()["id"]
    assert wait_for(http, slow, ("queued",))["stage"] in ("queued", "preparing_inputs")
    start = time.monotonic()
    behind = http.post("/generate", json=CHEAP)  # runs while the JPEG decodes in its sandbox
    assert behind.status_code == 200 and time.monotonic() - start < 10
    assert http.get(f"/jobs/{slow}").json()["stage"] == "preparing_inputs"
    start = time.monotonic()
    cancelled = http.delete(f"/jobs/{slow}")
    took = time.monotonic() - start
    assert cancelled.json()["status"] == "cancelled" and took < 2, (cancelled.text, took)
    time.sleep(1)  # the server's sandbox child is gone too (only the spare, idle, remains)
    busy = [pid for pid in hostile.children(proc.pid) if hostile.cpu_seconds(pid) > 1.0]
    assert busy == [], busy


def test_the_job_time_limit_stops_a_decode_and_a_fetch(server):
    proc, http = server
    bomb = "data:image/jpeg;base64," + b64(hostile.jpeg_scan_bomb(3000))
    drip = hostile.DripServer(hostile.png(), interval=0.5)  # would take a minute to deliver
    try:
        jobs = [http.post("/jobs", json={**CHEAP, "image_start": value}).json()["id"] for value in (bomb, drip.url)]
        start = time.monotonic()
        views = [wait_for(http, job, seconds=30) for job in jobs]
        took = time.monotonic() - start
    finally:
        drip.close()
    for view in views:
        assert view["status"] == "failed" and view["error"]["code"] == "timeout", view
    assert took < 14, took  # 5 s each (one sandbox at a time), not the decode's 15 s or the URL's 30 s
    assert http.post("/generate", json=CHEAP).status_code == 200


def test_a_flac_bomb_costs_the_server_nothing(server):
    proc, http = server
    hostile.reset_peak_rss(proc.pid)
    before = hostile.rss_mb(proc.pid)
    r = http.post("/generate", json={**CHEAP, "audio": "data:audio/flac;base64," + b64(hostile.flac_bomb(1))})
    grew = hostile.peak_rss_mb(proc.pid) - before
    assert r.status_code == 422 and "sample rate of 1 Hz" in r.json()["error"], r.text
    assert grew < 50, grew  # the 4 GB resample never happens, and decoding is in another process anyway
    assert http.post("/generate", json=CHEAP).status_code == 200
