"""LoRA files are checked from their header before a tensor byte is read, and the job preparer (never the
GPU worker) fetches and reads them (issue 21). The hostile files are made in lora_files.py."""

from __future__ import annotations

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hostile import DripServer, peak_rss_mb, reset_peak_rss, rss_mb
from lora_files import attention_layers, factors_as, hollow, huge_header, shared_range, write_lora, write_raw
from servers import start_server, stop_server, wait_for_job

from ltx2.media.fetch import FetchPolicy
from ltx2.media.sandbox import Stopped
from ltx2.models import lora as lora_module
from ltx2.models.download import camera_lora_file
from ltx2.pipelines import loras as loras_module
from ltx2.pipelines.loras import LoraPolicy, prepare, resolve
from ltx2.schema import GenerateRequest, InvalidRequest

CHEAP = {"prompt": "a lighthouse at dusk", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1,
         "seed": 5}


@pytest.fixture()
def lora_dir(tmp_path):
    folder = tmp_path / "models" / "loras"
    folder.mkdir(parents=True)
    return folder


def policy_for(tmp_path, **kw) -> LoraPolicy:
    return LoraPolicy(models_dir=str(tmp_path / "models"), cache_dir=str(tmp_path / "lora-cache"), **kw)


def refusal(model, policy, path, field="loras.0.path") -> str:
    fields = {"camera_lora": path} if field == "camera_lora" else {"loras": [{"path": path, "scale": 0}]}
    with pytest.raises(InvalidRequest) as caught:
        resolve(model, GenerateRequest(**CHEAP, **fields), policy)
    assert caught.value.field == field and caught.value.status == 422
    return caught.value.message


@pytest.fixture()
def no_reads(monkeypatch):
    """Counts tensor reads: a refusal from the header must come before the first."""
    reads = []
    real = lora_module.read_tensor
    monkeypatch.setattr(lora_module, "read_tensor", lambda *a: reads.append(a[2]) or real(*a))
    return reads


# ---------------------------------------------------------------------------------------------- the header


def test_entries_sharing_one_data_range_are_refused_before_any_read(model, tmp_path, lora_dir, no_reads):
    shared_range(lora_dir / "shared.safetensors", model, entries=64, share_bytes=64 * 1024)
    message = refusal(model, policy_for(tmp_path), "shared.safetensors")  # at scale 0 too
    assert "shared.safetensors is not a readable safetensors file" in message and "overlaps" in message
    assert str(tmp_path) not in message  # the server's paths are never told
    assert no_reads == []


def test_declared_shapes_without_data_are_refused(model, tmp_path, lora_dir, no_reads):
    hollow(lora_dir / "hollow.safetensors", model)
    message = refusal(model, policy_for(tmp_path), "hollow")
    assert "needs" in message and "bytes but its data_offsets span 0" in message and no_reads == []


def test_gaps_overhangs_and_trailing_bytes_are_refused(model, tmp_path, lora_dir):
    f32 = ("F32", [4])
    write_raw(lora_dir / "gap.safetensors", {"a.lora_A.weight": (*f32, [0, 16]), "a.lora_B.weight": (*f32, [32, 48])},
              bytes(48))
    write_raw(lora_dir / "short.safetensors", {"a.lora_A.weight": (*f32, [0, 16])}, bytes(8))
    write_raw(lora_dir / "tail.safetensors", {"a.lora_A.weight": (*f32, [0, 16])}, bytes(4096))
    policy = policy_for(tmp_path)
    assert "leaves bytes 16..32 unused" in refusal(model, policy, "gap")
    assert "past the end of the file" in refusal(model, policy, "short")
    assert "4080 bytes after the last tensor unused" in refusal(model, policy, "tail")


def test_only_floating_factors_are_read(model, tmp_path, lora_dir, no_reads):
    factors_as(lora_dir / "ints.safetensors", model, dtype="I32")
    message = refusal(model, policy_for(tmp_path), "ints")
    assert "dtype 'I32'" in message and "F16, BF16, F32, F64" in message and no_reads == []


def test_a_header_too_long_is_refused_before_it_is_parsed(model, tmp_path, lora_dir, monkeypatch):
    size = huge_header(lora_dir / "huge.safetensors")
    assert size > 85_000_000  # 1.3M entries, as the attack sent
    parsed = []
    real = lora_module.read_checked_header.__globals__["json"].loads
    monkeypatch.setattr(lora_module.read_checked_header.__globals__["json"], "loads",
                        lambda text, *a, **k: parsed.append(len(text)) or real(text, *a, **k))
    start = time.perf_counter()
    message = refusal(model, policy_for(tmp_path), "huge")
    assert time.perf_counter() - start < 0.5
    assert f"the limit is {lora_module.MAX_HEADER_BYTES}" in message and parsed == []


def test_too_many_entries_are_refused(model, tmp_path, lora_dir):
    entries = {f"t{i}": ("F32", [0], [0, 0]) for i in range(lora_module.MAX_ENTRIES + 1)}
    write_raw(lora_dir / "many.safetensors", entries)
    assert f"{lora_module.MAX_ENTRIES + 1} tensors; the limit is {lora_module.MAX_ENTRIES}" in \
        refusal(model, policy_for(tmp_path), "many")


def test_ranks_are_bounded_by_the_layer_and_the_maximum(model, tmp_path, lora_dir, monkeypatch, no_reads):
    module = lora_module.layer_index(model).modules[attention_layers(model)[0]]
    low = min(module.in_features, module.out_features)
    factors_as(lora_dir / "wide.safetensors", model, dtype="F32", rank=low + 1)
    message = refusal(model, policy_for(tmp_path), "wide")
    assert f"rank {low + 1} is outside 1..{low}" in message and no_reads == []
    write_lora(lora_dir / "fine.safetensors", model, rank=4)
    assert resolve(model, GenerateRequest(**CHEAP, loras=[{"path": "fine"}]), policy_for(tmp_path))
    monkeypatch.setattr(lora_module, "MAX_RANK", 2)  # the fixed maximum, as a small model shows it
    os.utime(lora_dir / "fine.safetensors", (1, 1))  # a new cache key: checked again
    assert "and at most 2" in refusal(model, policy_for(tmp_path), "fine")


def test_keys_are_mapped_to_layers_before_any_tensor_is_read(model, tmp_path, lora_dir, no_reads):
    write_raw(lora_dir / "stray.safetensors", {"not.a.layer.lora_A.weight": ("F32", [4, 4], [0, 64])}, bytes(64))
    assert "fit no layer" in refusal(model, policy_for(tmp_path), "stray") and no_reads == []


def test_camera_loras_are_checked_the_same_way(model, tmp_path, lora_dir, no_reads):
    hollow(lora_dir / camera_lora_file("dolly_in"), model)
    message = refusal(model, policy_for(tmp_path), "dolly_in", field="camera_lora")
    assert "bytes but its data_offsets span 0" in message and str(tmp_path) not in message and no_reads == []


def test_reading_takes_the_files_size_and_stops_when_asked(model, tmp_path, lora_dir):
    write_lora(lora_dir / "fine.safetensors", model, rank=4)
    request = GenerateRequest(**CHEAP, loras=[{"path": "fine"}])
    ready = prepare(model, request, policy_for(tmp_path))
    data = sum(t.numel() * t.element_size() for t in ready[0].tensors.values())
    size = os.path.getsize(lora_dir / "fine.safetensors")
    assert data <= size and ready[0].adapter is None
    os.utime(lora_dir / "fine.safetensors", (2, 2))
    with pytest.raises(Stopped):
        prepare(model, request, policy_for(tmp_path), should_stop=lambda: TimeoutError("stop"))


# ---------------------------------------------------------------------------------------------- URLs


class Serve:
    """Loopback files: `bodies[path]` is sent whole; `cut[path]` = (declared, sent) sends less than declared."""

    def __init__(self, bodies: dict[str, bytes], cut: dict[str, tuple[int, bytes]] | None = None):
        cut = cut or {}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                declared, body = cut.get(path, (None, bodies.get(path)))
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(declared if declared is not None else len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def leftovers(cache_dir) -> list[str]:
    return [name for folder, _, names in os.walk(cache_dir) for name in names if name.endswith(".part")]


def test_url_loras_are_checked_and_failed_downloads_leave_nothing(model, tmp_path):
    hostile_file = tmp_path / "shared.safetensors"
    shared_range(hostile_file, model, entries=16, share_bytes=4096)
    serve = Serve({"/shared.safetensors": hostile_file.read_bytes()}, cut={"/cut.safetensors": (100_000, b"x" * 10)})
    policy = policy_for(tmp_path, fetch=FetchPolicy(timeout=5, allow_private=True))
    try:
        message = refusal(model, policy, serve.base + "/shared.safetensors")
        assert "overlaps" in message and serve.base in message
        assert "body ended after 10 of 100000 bytes" in refusal(model, policy, serve.base + "/cut.safetensors")
        assert "answered 404" in refusal(model, policy, serve.base + "/missing.safetensors")
        small = policy_for(tmp_path, max_bytes=1000, fetch=FetchPolicy(timeout=5, allow_private=True))
        with pytest.raises(InvalidRequest) as caught:
            resolve(model, GenerateRequest(**CHEAP, loras=[{"path": serve.base + "/shared.safetensors?b"}]), small)
        assert caught.value.status == 413
    finally:
        serve.close()
    assert leftovers(tmp_path / "lora-cache") == []


def test_a_slow_download_stops_within_a_second_and_removes_its_part(model, tmp_path):
    body = (write_lora(tmp_path / "x.safetensors", model), (tmp_path / "x.safetensors").read_bytes())[1]
    drip = DripServer(body, interval=0.05)
    policy = policy_for(tmp_path, fetch=FetchPolicy(timeout=60, allow_private=True))
    stop = threading.Event()
    outcome = {}

    def work():
        try:
            prepare(model, GenerateRequest(**CHEAP, loras=[{"path": drip.url}]), policy,
                    should_stop=lambda: TimeoutError("cancelled") if stop.is_set() else None)
        except Stopped as exc:
            outcome["stopped"] = exc.why
        outcome["at"] = time.monotonic()

    thread = threading.Thread(target=work)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not leftovers(tmp_path / "lora-cache") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(tmp_path / "lora-cache")  # it is downloading
        stop.set()
        asked = time.monotonic()
        thread.join(5)
        assert isinstance(outcome.get("stopped"), TimeoutError) and outcome["at"] - asked < 1.0
        assert leftovers(tmp_path / "lora-cache") == []
    finally:
        drip.close()


def test_url_index_files_are_bounded_and_go_with_their_files(model, tmp_path, monkeypatch):
    bodies = {}
    for i in range(3):
        write_lora(tmp_path / f"{i}.safetensors", model, seed=i)
        bodies[f"/{i}.safetensors"] = (tmp_path / f"{i}.safetensors").read_bytes()
    serve = Serve(bodies)
    size = len(bodies["/0.safetensors"])
    monkeypatch.setattr(loras_module, "MAX_URL_INDEX", 2)
    policy = policy_for(tmp_path, disk_cache_bytes=2 * size, fetch=FetchPolicy(timeout=5, allow_private=True))
    try:
        for i in range(3):
            loras_module.requested(GenerateRequest(**CHEAP, loras=[{"path": f"{serve.base}/{i}.safetensors"}]), policy)
            time.sleep(0.02)  # distinct modification times: least recently used is well defined
    finally:
        serve.close()
    cache = tmp_path / "lora-cache"
    files = sorted(n for n in os.listdir(cache) if n.endswith(".safetensors"))
    indexes = os.listdir(cache / "urls")
    assert len(files) == 2 and len(indexes) == 2  # the first URL's file went, and its index with it
    named = {loras_module._indexed(str(cache / "urls" / n)) + ".safetensors" for n in indexes}
    assert named == set(files)


# ---------------------------------------------------------------------------------------------- a real server


def test_a_live_server_refuses_hostile_loras_stays_small_and_fetches_off_the_worker(model, tmp_path):
    """One tiny server: the hostile LoRAs are 422s naming the field, its memory stays within a few MB, a
    slow LoRA URL holds neither the GPU worker nor a cancel, and the next job succeeds."""
    models = tmp_path / "models"
    (models / "loras").mkdir(parents=True)
    tiny = model  # the server's tiny preset has the same layers
    shared_range(models / "loras" / "shared.safetensors", tiny, entries=2500, share_bytes=1 << 20)  # 2.5 GB before
    hollow(models / "loras" / "hollow.safetensors", tiny, rank=600_000, layers=8)
    slow_body = (write_lora(tmp_path / "slow.safetensors", tiny), (tmp_path / "slow.safetensors").read_bytes())[1]
    drip = DripServer(slow_body, interval=0.2)
    proc, base = start_server(tmp_path / "out", tmp_path / "server.log", "--models-dir", str(models),
                              "--allow-private-urls", "true", "--job-timeout", "60")
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            assert http.post("/generate", json=CHEAP).status_code == 200  # warm: the baseline of memory
            reset_peak_rss(proc.pid)
            before = rss_mb(proc.pid)
            for name in ("shared.safetensors", "hollow.safetensors"):
                r = http.post("/generate", json={**CHEAP, "loras": [{"path": name, "scale": 0}]})
                body = r.json()
                assert r.status_code == 422 and body["field"] == "loras.0.path" and name in body["error"], body
                assert str(models) not in body["error"]
            assert peak_rss_mb(proc.pid) - before < 100

            slow = http.post("/jobs", json={**CHEAP, "loras": [{"path": drip.url}]}).json()["id"]
            behind = http.post("/jobs", json=CHEAP).json()["id"]
            view = wait_for_job(http, behind, seconds=60)
            assert view["status"] == "succeeded"  # not held up by the download
            assert http.get(f"/jobs/{slow}").json()["status"] == "queued"  # still downloading, in the preparer
            start = time.monotonic()
            http.delete(f"/jobs/{slow}")
            assert wait_for_job(http, slow, seconds=10)["status"] == "cancelled"
            assert time.monotonic() - start < 3
            assert http.post("/generate", json=CHEAP).status_code == 200
            assert leftovers(tmp_path / "out" / "lora-cache") == []
    finally:
        stop_server(proc)
        drip.close()
