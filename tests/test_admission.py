"""Admission by predicted memory (ltx2.serving.admission): cgroup v1/v2 readings from real file layouts,
a real server held under a memory limit of the test's own, the RunPod handler, and an out-of-memory job
that fails alone."""

from __future__ import annotations

import resource
import time

import httpx
import pytest
import torch

from ltx2.models import memory
from ltx2.models.memory_model import fit
from ltx2.schema import GenerateRequest
from servers import launch, stop_server, wait_healthy

GiB = 1024**3
CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 1}


def write(directory, **files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name.replace("_", ".", 1)).write_text(text)
    return directory


def v2(directory, limit, current, inactive=0):
    return write(directory, memory_max=str(limit), memory_current=str(current),
                 memory_stat=f"anon {current}\nfile 0\ninactive_file {inactive}\nactive_file 0\n")


def v1(directory, limit, usage, inactive=0):
    return write(directory, **{"memory_limit_in_bytes": str(limit), "memory_usage_in_bytes": str(usage),
                               "memory_stat": f"cache 0\ninactive_file {inactive}\ntotal_inactive_file {inactive}\n"})


def test_cgroup_v2_limit_less_usage_less_reclaimable_cache(tmp_path):
    assert memory.cgroup_memory(str(v2(tmp_path / "a", 6 * GiB, 2 * GiB, inactive=GiB // 2))) == (6 * GiB, 3 * GiB // 2)
    unlimited = write(tmp_path / "b", memory_max="max", memory_current="123")
    assert memory.cgroup_memory(str(unlimited)) is None
    assert memory.cgroup_memory(str(tmp_path / "missing")) is None


def test_cgroup_v1_limit_and_its_no_limit_value(tmp_path):
    assert memory.cgroup_memory(str(v1(tmp_path / "a", 4 * GiB, GiB, inactive=GiB // 4))) == (4 * GiB, 3 * GiB // 4)
    # v1 says "no limit" with a page-rounded LONG_MAX
    assert memory.cgroup_memory(str(v1(tmp_path / "b", 9223372036854771712, GiB))) is None


def test_cgroup_directories_found_from_proc_files_leaf_first(tmp_path):
    mount2, mount1 = tmp_path / "unified", tmp_path / "memory"
    v2(mount2 / "kubepods" / "pod1", 3 * GiB, GiB)
    v1(mount1 / "docker" / "abc", 2 * GiB, GiB)
    proc = write(tmp_path / "proc", cgroup="12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/kubepods/pod1\n",
                 mountinfo=(f"30 25 0:26 / {mount2} rw,nosuid - cgroup2 cgroup2 rw\n"
                            f"40 25 0:35 / {mount1} rw,nosuid - cgroup cgroup rw,memory\n"
                            f"41 25 0:36 / {tmp_path / 'cpu'} rw - cgroup cgroup rw,cpu,cpuacct\n"))
    found = memory.memory_cgroup_dirs(str(proc / "cgroup"), str(proc / "mountinfo"))
    assert found == [str(mount1 / "docker" / "abc"), str(mount1 / "docker"), str(mount1),
                     str(mount2 / "kubepods" / "pod1"), str(mount2 / "kubepods"), str(mount2)]
    # Inside a cgroup namespace the mount's root is the process's cgroup: the mount point is the cgroup.
    ns = write(tmp_path / "ns", cgroup="0::/\n", mountinfo=f"30 25 0:26 /kubepods/pod1 {mount2} rw - cgroup2 cgroup2 rw\n")
    assert memory.memory_cgroup_dirs(str(ns / "cgroup"), str(ns / "mountinfo")) == [str(mount2)]


def test_host_memory_takes_the_tighter_of_meminfo_and_the_cgroup(tmp_path):
    tight = memory.host_memory(str(v2(tmp_path / "cg", 3 * GiB, 2 * GiB)))
    assert tight.available == GiB and "limit 3.00 GiB" in tight.source
    loose = memory.host_memory(str(v2(tmp_path / "big", 1 << 50, 0)))
    assert loose.source.startswith("MemAvailable") and loose.available < 1 << 50
    assert memory.host_memory("none").source.startswith("MemAvailable")


def test_line_through_counts():
    line = fit([((10, 5), 1000), ((20, 5), 1500), ((10, 15), 1300)])
    assert line(10, 5) == 1000 and line(30, 25) == 1000 + 20 * 50 + 20 * 30


@pytest.mark.slow
def test_footprint_grows_with_size_and_frames_and_finds_the_largest_that_fits(model, tmp_path):
    from ltx2.schema import GenerateRequest
    from ltx2.serving.admission import Admission, TooLarge

    admission = Admission(model, cgroup=str(v2(tmp_path / "cg", 6 * GiB, GiB // 2)))
    small, big = (admission.footprint(GenerateRequest(prompt="x", width=w, height=h, num_frames=f))
                  for w, h, f in ((512, 288, 49), (1280, 720, 241)))
    assert small.device == 0 and 0 < small.host < big.host  # a CPU device: all of it is host memory
    request = GenerateRequest(prompt="x", width=1280, height=720, num_frames=241)
    with pytest.raises(TooLarge) as refused:
        admission.check(request)
    largest = int(refused.value.message.split("at most ")[1].split()[0])
    assert refused.value.field == "num_frames" and (largest - 1) % 8 == 0
    admission.check(request, num_frames=largest)  # the count it names fits
    with pytest.raises(TooLarge):
        admission.check(request, num_frames=largest + 8)


# temporal_upscale (tiny-2.5 has the x2 temporal upsampler): its round counted, and the 413 names the N whose
# 2N - 1 frames fit.

@pytest.fixture(scope="module")
def tiny25():
    from ltx2 import load_model

    return load_model("tiny-2.5", device="cpu")


@pytest.fixture(scope="module")
def admission25(tiny25):
    from ltx2.serving.admission import Admission

    return Admission(tiny25, margin=1.0)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as file:
        return next(int(line.split()[1]) * 1024 for line in file if line.startswith(key + ":"))


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_diffusion_decoder_is_counted_as_it_runs_on_this_device(tiny25, admission25):
    """tiny-2.5 decodes video with its diffusion decoder, whose windowed attention gathers every query's
    window (27 keys and values a token): admission counts that decode, not the VAE's 24 B a pixel, and a
    real decode at 256x160x17 in this process peaks within the prediction."""
    from ltx2.models import memory_model
    from ltx2.models.diffusion_decode import diffusion_decode
    from ltx2.pipelines import tiling
    costs, decoder = admission25.costs, tiny25.diffusion_decoder
    t, h, w = 3, 5, 8  # 17 frames at 256x160
    predicted = costs.diffusion(t, h, w)
    latent = torch.randn(1, 128, t, h, w)
    with open("/proc/self/clear_refs", "w") as file:  # VmHWM from here
        file.write("5")
    before = _status_bytes("VmRSS")
    with torch.no_grad(), memory_model.LiveBytes() as live:
        pixels = diffusion_decode(decoder, latent, torch.Generator().manual_seed(0))
    grown = _status_bytes("VmHWM") - before
    assert pixels.shape == (1, 3, 17, 160, 256)
    # Its tensors' peak, counted as it ran, is the prediction (lines through five counts on meta, +1%) ...
    assert live.peak <= predicted <= live.peak * 1.02
    # ... and the process's own peak growth (the allocator's share, ~10 MiB more here) is within what admission
    # holds for a request of that size at margin 1 (its decode at 3 x 6 x 8, the frames, the base).
    request = GenerateRequest(prompt="x", width=256, height=160, num_frames=17)
    assert grown <= admission25.footprint(request).host, grown
    # The VAE's figure, which admission used for every model, is well under half of it.
    assert tiling.bytes_per_pixel(tiny25.pipe.vae) * 17 * 160 * 256 < predicted / 2
    # A request's decode stage is that decoder's, on the latent it decodes (two stages: 256x192, 3 x 6 x 8).
    stages, _ = admission25.stage_bytes(request, 17, 256, 160)
    assert "decode_video" not in stages and stages["diffusion_decode"] == costs.diffusion(3, 6, 8)


def test_temporal_upscale_counts_the_upsampler_the_round_and_the_doubled_decode(tiny25, admission25, model):
    from ltx2.models.geometry import audio_latent_frames
    from ltx2.schema import GenerateRequest
    from ltx2.serving.admission import BASE_HOST_BYTES, FRAMES_HOST_BYTES, Admission

    admission, costs = admission25, admission25.costs
    plain = GenerateRequest(prompt="x", width=512, height=288, num_frames=49)
    doubling = GenerateRequest(prompt="x", width=512, height=288, num_frames=49, temporal_upscale=True)
    once, frames_once = admission.stage_bytes(plain, 49, 512, 288)
    twice, frames_twice = admission.stage_bytes(doubling, 49, 512, 288)
    assert (frames_once, frames_twice) == (49, 97)
    # Two stages at 512x320 (multiples of 64): a 7 x 10 x 16 latent, and 49 frames' worth of audio latents.
    t, lh, lw = 7, 10, 16
    audio = tiny25.pipe.audio_vae.config
    a = audio_latent_frames(49, 25, audio.sample_rate, audio.mel_hop_length, tiny25.pipe.audio_vae_temporal_compression_ratio)
    # The temporal upsampler on stage 2's latent, a stage of its own.
    assert "temporal_upsample" not in once and twice["temporal_upsample"] == costs.temporal_upsample(t * lh * lw) > 0
    # The round's transformer call on 2t - 1 latent frames with the same audio: the largest denoise.
    assert twice["denoise"] == costs.denoise((2 * t - 1) * lh * lw, a) > once["denoise"]
    # The decode (and uint8 conversion) of 97 frames: what 97 frames without the round decode.
    decode = "diffusion_decode"  # tiny-2.5's video decoder, in its own stage
    assert twice[decode] == admission.stage_bytes(plain, 97, 512, 288)[0][decode] > once[decode]
    assert (twice["upsample"], twice["decode_audio"]) == (once["upsample"], once["decode_audio"])
    # The footprint: the largest stage, and 97 frames on the host.
    expected = max(twice.values()) + FRAMES_HOST_BYTES * 97 * 512 * 288 + BASE_HOST_BYTES
    assert admission.footprint(doubling).host == expected > admission.footprint(plain).host
    # A model with no temporal upsampler refuses temporal_upscale with its own 422 as it runs: nothing to count.
    tiny = Admission(model, margin=1.0)
    assert tiny.footprint(doubling) == tiny.footprint(plain)


def test_a_temporal_request_that_fits_only_without_its_round_is_413_naming_the_frames_that_fit(admission25, tmp_path,
                                                                                              monkeypatch):
    from ltx2.schema import GenerateRequest
    from ltx2.serving.admission import TooLarge

    plain = GenerateRequest(prompt="x", width=1280, height=720, num_frames=97)
    doubling = GenerateRequest(prompt="x", width=1280, height=720, num_frames=97, temporal_upscale=True)
    probe = admission25

    def limited(room: int, name: str):  # told by a cgroup of the test's own that `room` bytes are left
        monkeypatch.setattr(admission25, "cgroup", str(v2(tmp_path / name, room + GiB // 2, GiB // 2)))
        return admission25

    admission = limited((probe.footprint(plain).host + probe.footprint(doubling).host) // 2, "between")
    admission.check(plain)  # 97 frames fit; their doubling (193 frames) does not
    with pytest.raises(TooLarge) as refused:
        admission.check(doubling)
    error = refused.value
    assert error.status == 413 and error.code == "too_large_for_server" and error.field == "num_frames"
    assert "97 frames with temporal_upscale (193 frames out)" in error.message
    largest = int(error.message.split("with temporal_upscale at 1280x720 at most ")[1].split()[0])
    assert largest < 97 and (largest - 1) % 8 == 0 and f"{2 * largest - 1} frames out" in error.message
    admission.check(doubling, num_frames=largest)  # the N it names fits, doubled
    with pytest.raises(TooLarge):
        admission.check(doubling, num_frames=largest + 8)

    # Room for 9 frames but not for 17: no N fits with the round, so the field is temporal_upscale itself.
    short = GenerateRequest(prompt="x", width=1280, height=720, num_frames=9, temporal_upscale=True)
    single = short.model_copy(update={"temporal_upscale": False})
    admission = limited((probe.footprint(single).host + probe.footprint(short).host) // 2, "tight")
    with pytest.raises(TooLarge) as refused:
        admission.check(short)
    assert refused.value.field == "temporal_upscale" and "send temporal_upscale false (num_frames <= 9)" in \
        refused.value.message
    admission.check(single)


@pytest.fixture
def limited_server(tmp_path):
    """A tiny server told by a cgroup directory of the test's own that it may use 6 GiB, 0.5 GiB of them in
    use (the server's own size at rest), and held by RLIMIT_AS to what it uses at rest + 3 GiB: a request
    admitted by mistake fails its allocation instead of exhausting this machine."""
    cgroup = v2(tmp_path / "cgroup", 6 * GiB, GiB // 2)
    log = tmp_path / "server.log"
    proc, base = launch(tmp_path / "out", log, env={"LTX2_MEMORY_CGROUP": str(cgroup)})
    try:
        wait_healthy(proc, base, log)
        size = int(open(f"/proc/{proc.pid}/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.prlimit(proc.pid, resource.RLIMIT_AS, (size + 3 * GiB, size + 3 * GiB))
        with httpx.Client(base_url=base, timeout=60) as http:
            yield proc, http
    finally:
        stop_server(proc)


def hwm(pid: int) -> int:
    return int(open(f"/proc/{pid}/status").read().split("VmHWM:")[1].split()[0]) * 1024


def test_requests_larger_than_the_machine_are_413_in_every_protocol_and_the_next_job_runs(limited_server):
    proc, http = limited_server
    before = hwm(proc.pid)
    started = time.monotonic()
    for route, body in (("/jobs", {"width": 3840, "height": 3840, "num_frames": 9}),
                        ("/generate", {"width": 1280, "height": 720, "num_frames": 241})):
        refused = http.post(route, json={"prompt": "a boat", **body})
        assert refused.status_code == 413, refused.text
        error = refused.json()
        assert error["code"] == "too_large_for_server" and "GiB of host memory" in error["error"]
        assert "5.50 GiB available" in error["error"] and "limit 6.00 GiB" in error["error"]
    assert error["field"] == "num_frames" and "at most 121 frames fit" in error["error"]
    openai = http.post("/v1/videos", json={"prompt": "a", "size": "3840x3840"})
    assert openai.status_code == 413
    assert openai.json()["error"]["code"] == "too_large_for_server" and openai.json()["error"]["param"] == "width"
    ltx = http.post("/v1/generations/text-to-video", json={"prompt": "a", "resolution": "1920x1080", "duration": 10})
    assert ltx.status_code == 413 and ltx.json()["error"]["code"] == "too_large_for_server", ltx.text
    assert time.monotonic() - started < 5  # refused before anything ran
    assert hwm(proc.pid) - before < 64 * 1024**2
    assert http.post("/generate", json=CHEAP).status_code == 200
    health = http.get("/health").json()
    assert health["status"] == "healthy"
    assert health["memory"]["host_available_gib"] == 5.5 and health["memory"]["default_size"] == "288x512"
    assert health["memory"]["largest_frames_at_default_size"] >= 49
    assert http.get("/").json()["memory"]["host_limit"].startswith("cgroup ")
    assert 'ltx2_jobs_rejected_total{reason="too_large_for_server"} 4' in http.get("/metrics").text


def test_runpod_handler_refuses_a_request_larger_than_the_worker(model, tmp_path):
    from ltx2.serving.admission import Admission
    from ltx2.serving.worker import make_handler

    admission = Admission(model, cgroup=str(v2(tmp_path / "cg", 6 * GiB, GiB // 2)))
    handler = make_handler(model, send_progress=lambda job, progress: None, admission=admission)
    out = handler({"id": "j1", "input": {"prompt": "a", "width": 3840, "height": 3840, "num_frames": 9}})
    assert out["code"] == "too_large_for_server" and out["field"] == "width"
    assert "video" in handler({"id": "j2", "input": CHEAP})


def test_out_of_memory_in_the_decoder_fails_only_its_job(model, tmp_path, monkeypatch):
    """A CUDA out-of-memory raised where the decoder runs: 507 for that job, memory freed, the next one runs."""
    from ltx2.schema import GenerateRequest
    from ltx2.serving import jobs
    from ltx2.serving.job_store import JobStore
    from ltx2.serving.service import render_mp4

    freed = []
    monkeypatch.setattr(jobs, "free_gpu_memory", lambda: freed.append(1))

    def run(job, on_step):
        rendered = render_mp4(model, job.request, on_step)
        return rendered.response(video="").model_dump(exclude={"video"}), rendered.data

    manager = jobs.JobManager(JobStore(str(tmp_path / "jobs.sqlite3")), str(tmp_path), run)
    manager.start()
    try:
        def out_of_memory(*args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

        with monkeypatch.context() as patch:
            patch.setattr(model.pipe.vae, "decode", out_of_memory)
            failed = manager.submit(GenerateRequest(**CHEAP))
            assert failed.done.wait(60)
        ok = manager.submit(GenerateRequest(**CHEAP))
        assert ok.done.wait(60)
    finally:
        manager.stop(5)
        manager.store.close()
    assert failed.error_status == 507 and failed.error["code"] == "out_of_memory"
    assert "9 frames at 64x64" in failed.error["error"]
    assert freed == [1] and ok.status == jobs.SUCCEEDED
