"""The RunPod handler at parity with the server, plus what only a RunPod worker meets: progress per
step, a result over RunPod's size limit, uploading to an S3-compatible bucket (a fake one on
loopback, driven by the runpod SDK's own helper and boto3), GPU faults and out-of-memory."""

import asyncio
import base64
import gc
import json
import threading
import uuid
import weakref
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import torch

from ltx2.serving import worker
from ltx2.media.encode import probe_mp4
from ltx2.serving.worker import make_handler

# Small enough for a fraction of a second on CPU; 4 steps so progress is checked off the default.
REQUEST = {"prompt": "a red ball bouncing, a thud", "width": 64, "height": 64, "num_frames": 9, "seed": 7,
           "num_inference_steps": 4, "use_multiscale": False}


@pytest.fixture(scope="module")
def updates():
    return []


@pytest.fixture(scope="module")
def handler(model, updates):
    return make_handler(model, send_progress=lambda job, progress: updates.append((job["id"], progress)))


@pytest.fixture(autouse=True)
def no_bucket(monkeypatch):
    """Every test starts without a bucket, whatever the environment running the tests has."""
    for name in worker.BUCKET_ENV:
        monkeypatch.delenv(name, raising=False)


def job(request=None, job_id=None):
    return {"id": job_id or f"job-{uuid.uuid4().hex[:8]}", "input": dict(request or REQUEST)}


@pytest.fixture(scope="module")
def reference(handler, updates):
    """REQUEST rendered without a bucket: the base64 response every other mode is compared with, and
    the progress updates it sent."""
    updates.clear()
    out = handler(job(job_id="job-reference"))
    assert "error" not in out, out
    return out, list(updates)


def mp4_of(out):
    assert out["video"].startswith("data:video/mp4;base64,")
    return base64.b64decode(out["video"].partition(",")[2])


# ---------------------------------------------------------------------------------------------
# Progress and errors: the same as the server.

def test_one_progress_update_per_step_in_order(reference):
    out, updates = reference
    assert out["num_inference_steps"] == 4
    steps = [p for _, p in updates if p["stage"] == "denoising"]  # then the decode and encode stages
    assert [p["step"] for p in steps] == [1, 2, 3, 4]
    assert {p["total"] for p in steps} == {4}
    assert {job_id for job_id, _ in updates} == {"job-reference"}
    assert steps[-1]["message"] == "denoising step 4/4"


@pytest.mark.parametrize("bad", [
    {**REQUEST, "height": 301},
    {**REQUEST, "num_frames": 50},
    {**REQUEST, "heigth": 64},
    {"width": 64},
    {**REQUEST, "image_start": "data:image/png;base64,this is not base64!"},
])
@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_same_error_bodies_as_the_server(handler, client, bad):
    from_handler = handler(job(bad))
    response = client.post("/generate", json=bad)
    assert response.status_code in (413, 422)
    assert from_handler == response.json()
    assert "refresh_worker" not in from_handler


def test_a_generic_failure_is_the_servers_generation_failed(handler, monkeypatch):
    def boom(*args, **kwargs):
        raise ValueError("something broke")

    monkeypatch.setattr(worker, "render", boom)
    out = handler(job())
    assert out["code"] == "generation_failed"
    assert out["error"] == "generation failed: ValueError: something broke"
    assert "refresh_worker" not in out


# ---------------------------------------------------------------------------------------------
# RunPod's result size limit.

def test_result_over_the_limit_without_a_bucket_is_a_clear_error(handler, reference, monkeypatch):
    reference, _ = reference
    monkeypatch.setattr(worker, "RESULT_LIMIT_BYTES", 10_000)
    out = handler(job())
    assert out["code"] == "result_too_large"
    assert "video" not in out
    video_kb = len(reference["video"]) / 1e3
    assert out["error"].startswith(f"the video is {video_kb:.1f} kB as base64, over RunPod's 10.0 kB result limit")
    assert "BUCKET_ENDPOINT_URL" in out["error"] and "num_frames" in out["error"]


def test_the_limit_is_runpods_20_mb():
    assert worker.RESULT_LIMIT_BYTES == 20_000_000


# ---------------------------------------------------------------------------------------------
# Uploads, through the SDK's helper and boto3, to a fake S3-compatible bucket on loopback.

class FakeBucket:
    """Path-style S3: PutObject, multipart upload (the SDK's TransferConfig goes multipart above
    25 kB), GetObject. `fail` answers every request with a 500, as a broken bucket would."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.parts: dict[str, dict[int, bytes]] = {}
        self.fail = False
        self.requests: list[str] = []
        bucket = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers boto3's Expect: 100-continue at once

            def log_message(self, *args):
                pass

            def _reply(self, status, body=b"", headers=None):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _handle(self):
                url = urlsplit(self.path)
                key, query = url.path, parse_qs(url.query, keep_blank_values=True)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                bucket.requests.append(f"{self.command} {self.path}")
                if bucket.fail:
                    return self._reply(500, b"<Error><Code>InternalError</Code><Message>bucket is down</Message>"
                                            b"</Error>", {"Content-Type": "application/xml"})
                if self.command == "PUT" and "uploadId" in query:
                    bucket.parts[query["uploadId"][0]][int(query["partNumber"][0])] = body
                    return self._reply(200, headers={"ETag": f'"part{query["partNumber"][0]}"'})
                if self.command == "PUT":
                    bucket.objects[key] = body
                    bucket.content_types[key] = self.headers.get("Content-Type")
                    return self._reply(200, headers={"ETag": '"object"'})
                if self.command == "POST" and "uploads" in query:
                    upload_id = uuid.uuid4().hex
                    bucket.parts[upload_id] = {}
                    bucket.content_types[key] = self.headers.get("Content-Type")
                    xml = (f"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>{key}</Key>"
                           f"<UploadId>{upload_id}</UploadId></InitiateMultipartUploadResult>")
                    return self._reply(200, xml.encode())
                if self.command == "POST" and "uploadId" in query:
                    parts = bucket.parts.pop(query["uploadId"][0])
                    bucket.objects[key] = b"".join(parts[n] for n in sorted(parts))
                    xml = (f"<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>{key}</Key>"
                           f'<ETag>"whole"</ETag></CompleteMultipartUploadResult>')
                    return self._reply(200, xml.encode())
                if self.command in ("GET", "HEAD") and key in bucket.objects:
                    return self._reply(200, bucket.objects[key], {"Content-Type": bucket.content_types[key]})
                return self._reply(404, b"<Error><Code>NoSuchKey</Code></Error>")

            do_PUT = do_POST = do_GET = do_HEAD = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def bucket(monkeypatch):
    fake = FakeBucket()
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", fake.url)
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "test-key")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "test-secret")
    yield fake
    fake.close()


def test_with_a_bucket_the_video_is_uploaded_and_video_is_its_url(handler, reference, bucket, monkeypatch):
    reference, _ = reference
    monkeypatch.setattr(worker, "RESULT_LIMIT_BYTES", 10_000)  # an upload is not bound by the result limit
    out = handler(job(job_id="job-upload"))
    assert "error" not in out, out
    assert out["video"].startswith(f"{bucket.url}/")
    assert ";base64," not in json.dumps(out) and "data:" not in json.dumps(out)

    assert len(bucket.objects) == 1
    (key, stored), = bucket.objects.items()
    assert "/job-upload/" in key and key.endswith(".mp4")
    assert urlsplit(out["video"]).path == key
    assert stored == mp4_of(reference)  # exactly the MP4 the base64 mode returns
    assert stored[4:8] == b"ftyp"
    info = probe_mp4(stored)
    assert (info["video"]["width"], info["video"]["height"], info["video"]["frames"]) == (64, 64, 9)
    assert info["audio"] is not None
    assert bucket.content_types[key] == "video/mp4"
    # The presigned URL is what a client fetches.
    assert httpx.get(out["video"]).content == stored

    same = {k: v for k, v in out.items() if k not in ("video", "timings", "generation_time_seconds")}
    assert same == {k: v for k, v in reference.items() if k not in ("video", "timings", "generation_time_seconds")}


def test_response_format_data_uri_keeps_base64_even_with_a_bucket(handler, reference, bucket):
    reference, _ = reference
    out = handler(job({**REQUEST, "response_format": "data_uri"}))
    assert out["video"] == reference["video"]
    assert not bucket.requests


def test_response_format_url_without_a_bucket_is_refused_before_rendering(handler, monkeypatch):
    monkeypatch.setattr(worker, "render", lambda *a, **k: pytest.fail("rendered"))
    out = handler(job({**REQUEST, "response_format": "url"}))
    assert out["code"] == "invalid_request" and out["field"] == "response_format"
    assert "BUCKET_ENDPOINT_URL" in out["error"]


def test_a_failing_bucket_is_an_upload_error_and_the_next_job_succeeds(handler, bucket):
    bucket.fail = True
    out = handler(job())
    assert out["code"] == "upload_failed"
    assert out["error"].startswith("uploading the video failed: ")
    assert "InternalError" in out["error"] and "bucket is down" in out["error"]
    assert "/tmp" not in out["error"]  # names the object, not the worker's temporary file
    assert "video" not in out and "refresh_worker" not in out
    assert bucket.requests and not bucket.objects

    bucket.fail = False
    out = handler(job())
    assert "error" not in out, out
    assert out["video"].startswith(f"{bucket.url}/")
    assert len(bucket.objects) == 1


def test_an_sdk_that_saves_locally_instead_of_uploading_is_an_upload_failure(bucket, monkeypatch, tmp_path):
    # What the SDK does without boto3: get_boto_client gives no client, and the helper copies the
    # file into ./local_upload and returns that path, which no client could fetch.
    from runpod.serverless.utils import rp_upload

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rp_upload, "get_boto_client", lambda creds=None: (None, None))
    with pytest.raises(worker.UploadFailed, match=r"is boto3 installed\?"):
        worker.upload_video(b"\0\0\0\x20ftyp", "job-1")
    assert list(tmp_path.rglob("*.mp4"))  # it did save locally: the guard is what caught it
    assert not bucket.requests


# ---------------------------------------------------------------------------------------------
# GPU faults: a poisoned process asks RunPod for a new worker; running out of memory does not.

@pytest.fixture
def transformer_fault(model):
    """install(exc_factory, at_step=2, refs=None): the transformer raises on its at_step-th call, as a
    CUDA kernel would. Returns a function that removes the fault; teardown removes it in any case."""
    handles = []

    def install(exc_factory, at_step=2, refs=None):
        calls = []

        def pre_hook(module, args, kwargs):
            calls.append(1)
            if len(calls) == at_step:
                held = torch.zeros(1024)  # stands for the failed job's activations, kept by the traceback
                if refs is not None:
                    refs.append(weakref.ref(held))
                raise exc_factory()

        handles.append(model.pipe.transformer.register_forward_pre_hook(pre_hook, with_kwargs=True))
        return handles[-1].remove

    yield install
    for handle in handles:
        handle.remove()


def test_a_cuda_fault_fails_the_job_and_asks_for_a_new_worker(handler, transformer_fault):
    transformer_fault(lambda: RuntimeError("CUDA error: an illegal memory access was encountered"))
    out = handler(job())
    assert out["refresh_worker"] is True
    assert out["code"] == "gpu_fault"
    assert "illegal memory access" in out["error"] and "retry" in out["error"]
    assert "video" not in out


def test_the_sdk_turns_refresh_worker_into_stop_pod(handler, transformer_fault):
    """runpod-python's own job runner: what it sends back to RunPod for a poisoned job."""
    from runpod.serverless.modules import rp_job

    transformer_fault(lambda: RuntimeError("CUDA error: device-side assert triggered"))
    result = asyncio.run(rp_job.run_job(handler, job()))
    assert result["stopPod"] is True
    assert "device-side assert" in result["error"]
    assert "refresh_worker" not in result.get("output", {})


@pytest.mark.parametrize("message", [
    "CUDA error: an illegal memory access was encountered",
    "CUDA error: device-side assert triggered",
    "CUDA error: unspecified launch failure (cudaErrorLaunchFailure)",
    "CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx( handle, opa, opb, ...)`",
])
def test_poisoning_errors_ask_for_a_new_worker(handler, monkeypatch, message):
    def fault(*args, **kwargs):
        raise RuntimeError(message)

    monkeypatch.setattr(worker, "render", fault)
    assert handler(job())["refresh_worker"] is True


def test_a_wrapped_cuda_fault_is_still_recognised(handler, monkeypatch):
    def fault(*args, **kwargs):
        try:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        except RuntimeError as inner:
            raise ValueError("decoding failed") from inner

    monkeypatch.setattr(worker, "render", fault)
    assert handler(job())["refresh_worker"] is True


def test_out_of_memory_names_what_to_lower_frees_memory_and_the_worker_stays(handler, reference, monkeypatch,
                                                                             transformer_fault):
    reference, _ = reference
    refs, freed = [], []
    real_free = worker.free_gpu_memory

    def spy():
        gc.collect()
        freed.append(all(ref() is None for ref in refs))  # the failed job's tensors are gone by then
        real_free()

    monkeypatch.setattr(worker, "free_gpu_memory", spy)
    remove_fault = transformer_fault(lambda: torch.cuda.OutOfMemoryError(
        "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19 GiB"), refs=refs)
    out = handler(job())
    assert out["code"] == "out_of_memory"
    assert "refresh_worker" not in out and "video" not in out
    assert "9 frames at 64x64" in out["error"]
    assert "lower num_frames" in out["error"] and "width/height" in out["error"]
    assert "Tried to allocate 2.00 GiB" in out["error"]
    assert refs and freed == [True]

    remove_fault()  # the fault is gone: the same worker serves the next job, identically
    assert handler(job())["video"] == reference["video"]


def test_cuda_error_out_of_memory_is_not_poisoning(handler, monkeypatch):
    def fault(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(worker, "render", fault)
    out = handler(job())
    assert out["code"] == "out_of_memory"
    assert "refresh_worker" not in out
