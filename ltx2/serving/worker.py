"""The RunPod serverless handler: same request model, same generate(), same response as POST /generate.

On top of the server's behaviour it handles what only a RunPod worker meets:
- a result over RunPod's size limit (upload to a bucket instead, or a clear error),
- a GPU fault that leaves the process unusable (ask RunPod to replace the worker),
- running out of GPU memory (fail the job, free the memory, keep the worker).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .admission import Admission, frames_of
from .faults import _messages, free_gpu_memory, is_out_of_memory, out_of_memory_body
from ..models.loaded import LoadedModel
from ..pipelines.progress import DENOISING, describe
from ..schema import (
    DEFAULT_OUTPUT_TYPE,
    ErrorResponse,
    GenerateRequest,
    InvalidRequest,
    generation_failed_body,
    validation_error_body,
)
from ..media.encode import FORMATS, OutputFormat
from ..pipelines.conditioning import decode_conditioning
from ..pipelines.generate import image_targets
from .service import load_for_serving, render, render_mp4
from ..settings import Settings, configure_logging

log = logging.getLogger("ltx2.worker")

ProgressSender = Callable[[dict, Any], None]
PROGRESS_INTERVAL = 1.0  # seconds between two progress updates of one decode or encode stage

# RunPod's size limits, in decimal MB as RunPod states them:
# - Request bodies: /run 10 MB, /runsync 20 MB ("Payload Limit",
#   https://docs.runpod.io/serverless/references/operations). RunPod refuses those before a job
#   reaches this handler, so nothing here checks them.
# - Results: 20 MB. runpod-python's rp_job.run_job passes every result to
#   rp_tips.check_return_size, which flags a result over 20 MB ("exceeds the 20 MB limit. Consider
#   using S3 upload and returning the object's URL instead.") but still tries to send it. We refuse it
#   ourselves with an error that says what to change.
RESULT_LIMIT_BYTES = 20_000_000

# The runpod SDK's convention (runpod/serverless/utils/rp_upload.get_boto_client): uploads go to an
# S3-compatible bucket only when all three are set.
BUCKET_ENV = ("BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY")

# Substrings of errors after which CUDA refuses all further work in this process (a sticky error:
# the context is lost), so the only cure is a new worker.
POISONED_MARKERS = (
    "CUDA error",
    "device-side assert",
    "illegal memory access",
    "CUBLAS_STATUS",
    "CUDNN_STATUS_EXECUTION_FAILED",
    "cudaErrorLaunchFailure",
    "unspecified launch failure",
)


class UploadFailed(Exception):
    pass


def runpod_progress_sender() -> ProgressSender:
    """RunPod's progress_update when running on RunPod; a log line in the SDK's local test mode,
    where there is no job server to send updates to."""
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        import runpod

        return runpod.serverless.progress_update
    return lambda job, progress: log.info("job %s progress %s", job.get("id"), progress)


def bucket_configured() -> bool:
    return all(os.environ.get(name) for name in BUCKET_ENV)


def upload_video(data: bytes, job_id: str, video: OutputFormat = FORMATS[DEFAULT_OUTPUT_TYPE]) -> str:
    """Upload the video file with the SDK's helper; returns its presigned URL (valid 7 days, the SDK's choice)."""
    from runpod.serverless.utils import rp_upload

    # The SDK's key is <prefix>/<file_name> in a bucket named after the month (its default): keep the
    # job id as the folder so a bucket listing maps back to jobs, and a random name so a retried job
    # never overwrites the first attempt's video.
    prefix = re.sub(r"[^A-Za-z0-9._-]", "_", str(job_id or "job"))[:128]
    name = f"ltx2-{uuid.uuid4().hex}{video.extension}"
    with tempfile.TemporaryDirectory(prefix="ltx2-upload-") as tmp:
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        try:
            url = rp_upload.upload_file_to_bucket(
                file_name=name, file_location=path, prefix=prefix,
                extra_args={"ContentType": video.mime},  # so a browser plays the URL instead of downloading it
            )
        except Exception as exc:
            # boto3 names the local temporary file in its message: of no use to the client.
            raise UploadFailed(f"{type(exc).__name__}: {exc}".replace(path, name)) from exc
    # Without boto3 (or a usable client) the SDK quietly saves to a local folder and returns its path,
    # which no client could fetch.
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise UploadFailed(f"the SDK did not upload the video (is boto3 installed?); it returned {url!r}")
    return url


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def is_poisoned(exc: BaseException) -> bool:
    return any(m in _messages(exc) for m in POISONED_MARKERS)


def poisoned_body(exc: BaseException) -> dict:
    body = generation_failed_body(exc)
    body["error"] += "; the GPU can no longer be used by this worker, so RunPod is asked to replace it: retry the job"
    body["code"] = "gpu_fault"
    # runpod-python's rp_job.run_job pops this key and reports the job with stopPod=True: the
    # platform stops this worker after the job and later jobs go to a fresh one.
    body["refresh_worker"] = True
    return body


def wants_upload(request: GenerateRequest) -> bool:
    """Whether this job's video goes to the bucket. response_format as on the server: "url" asks for a
    link (here: a presigned bucket URL, so it needs a bucket), "data_uri" for base64 whatever is
    configured; left out, a configured bucket decides."""
    fmt = getattr(request, "response_format", None)
    if fmt == "url" and not bucket_configured():
        raise InvalidRequest("response_format", 'response_format "url" needs a bucket on RunPod: set '
                             f"{', '.join(BUCKET_ENV)}, or leave response_format out for a data URI")
    return fmt != "data_uri" and bucket_configured()


def make_handler(model: LoadedModel, send_progress: ProgressSender | None = None,
                 encode_threads: int = 0, admission: Admission | None = None) -> Callable[[dict], dict]:
    send_progress = send_progress or runpod_progress_sender()
    admission = admission or Admission(model)  # the server's memory rule (ltx2.serving.admission)

    def handler(job: dict) -> dict:
        payload = job.get("input")
        try:
            request = GenerateRequest.model_validate(payload if payload is not None else {})
        except ValidationError as exc:
            return validation_error_body(list(exc.errors()))

        def on_step(step: int, total: int) -> None:
            send_progress(job, {"step": step, "total": total, "stage": DENOISING, "done": step,
                                "message": f"denoising step {step}/{total}"})

        sent = {"stage": None, "at": 0.0}

        def on_progress(stage: str, done: int, total: int) -> None:
            # The decodes and the encoder report often (each decoder block, each 4 frames), and each
            # update is a request to RunPod: a stage's start and end always go, between them one a second.
            now = time.monotonic()
            if stage == sent["stage"] and 0 < done < total and now - sent["at"] < PROGRESS_INTERVAL:
                return
            sent.update(stage=stage, at=now)
            send_progress(job, {"stage": stage, "done": done, "total": total,
                                "fraction": round(done / total, 4) if total else 0.0,
                                "message": describe(stage, done, total)})

        oom = False
        try:
            admission.check(request, num_frames=frames_of(request))  # larger than this worker: refused first
            upload = wants_upload(request)
            # The server's own render() when the answer is base64, so both give the same response.
            produce = render_mp4 if upload else render
            conditioning = None
            if request.video is not None:  # the size and length its video gives (retake, extend, ic_lora)
                conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate,
                                                   model.vocoder_rate, targets=image_targets(model, request))
                info = conditioning.video_info
                admission.check(request, num_frames=info["num_frames"], width=info["width"], height=info["height"])
            rendered = produce(model, request, on_step=on_step, encode_threads=encode_threads, on_progress=on_progress,
                               conditioning=conditioning)
        except InvalidRequest as exc:
            return exc.body()
        except Exception as exc:
            if is_out_of_memory(exc):
                # str(exc), not exc: a kept log record must not keep the traceback (and its tensors) alive.
                log.warning("job %s ran out of memory: %s", job.get("id"), str(exc))
                body, oom = out_of_memory_body(request, exc), True
            elif is_poisoned(exc):
                log.exception("GPU fault; asking RunPod to replace this worker")
                return poisoned_body(exc)
            else:
                log.exception("generation failed")
                return generation_failed_body(exc)
        if oom:
            # Outside the except block: the exception and its traceback (which hold the failed job's
            # tensors) are gone by now, so their memory can actually be freed.
            free_gpu_memory()
            return body

        if upload:
            try:
                url = upload_video(rendered.data, job.get("id"), rendered.format)
            except UploadFailed as exc:
                log.error("upload failed: %s", exc)
                return ErrorResponse(error=f"uploading the video failed: {exc}", code="upload_failed").model_dump()
            # `video` holds the URL, as the server's response_format "url" does: one field, same model.
            return rendered.response(url).model_dump()

        body = rendered.model_dump()
        size = len(json.dumps(body))  # what the SDK sends back: the JSON of the whole result
        if size > RESULT_LIMIT_BYTES:
            message = (
                f"the video is {_size(len(rendered.video))} as base64, over RunPod's {_size(RESULT_LIMIT_BYTES)} "
                f"result limit; configure a bucket ({', '.join(BUCKET_ENV)}) or lower num_frames/resolution"
            )
            return ErrorResponse(error=message, code="result_too_large").model_dump()
        return body

    return handler


def runpod_error(body: dict) -> dict:
    """A failed job's body ({error, code, field, errors}) as the RunPod SDK carries it. The SDK moves a
    result's "error" into the job's error and keeps the other keys as its output (rp_job.run_job); a
    structured error is a JSON string there, as the SDK's own for an exception (error_type,
    error_message, ...). So `error` is the whole body as JSON (json.loads gives error, code, field) and
    the output keeps code, field and errors where RunPod returns it."""
    extra = {k: body[k] for k in ("refresh_worker",) if k in body}
    kept = {k: v for k, v in body.items() if k != "refresh_worker"}
    return {**kept, "error": json.dumps(kept), **extra}


def for_runpod(handler: Callable[[dict], dict]) -> Callable[[dict], dict]:
    """The handler with its errors in RunPod's form (runpod_error); results unchanged."""
    def run(job: dict) -> dict:
        out = handler(job)
        return runpod_error(out) if isinstance(out, dict) and isinstance(out.get("error"), str) else out

    return run


def is_local_test(argv: list[str], env: dict) -> bool:
    """The SDK's own rule (runpod.serverless.worker._is_local): a --test_input, or no RunPod job queue to
    poll (then it runs test_input.json); --rp_serve_api is its local API server instead."""
    if any(a == "--rp_serve_api" for a in argv):
        return False
    return any(a.split("=")[0] == "--test_input" for a in argv) or not env.get("RUNPOD_WEBHOOK_GET_JOB")


def saving_video(handler: Callable[[dict], dict], output_dir: str) -> Callable[[dict], dict]:
    """For `python handler.py` on a workstation: a finished video is written to a file under
    `output_dir`, its path is printed and stands in the result for the base64 (which the SDK would
    otherwise print in full)."""
    def run(job: dict) -> dict:
        out = handler(job)
        video = out.get("video") if isinstance(out, dict) else None
        if not isinstance(video, str) or not video.startswith("data:"):
            return out  # an error, or a bucket URL
        mime = video[5:].split(";", 1)[0]
        extension = next((f.extension for f in FORMATS.values() if f.mime == mime), ".bin")
        os.makedirs(output_dir, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(job.get("id") or "job"))[:64]
        path = os.path.abspath(os.path.join(output_dir, f"runpod-{name}-{time.strftime('%Y%m%d-%H%M%S')}{extension}"))
        with open(path, "wb") as f:
            f.write(base64.b64decode(video.split(",", 1)[1]))
        print(f"ltx2: wrote the video to {path}", flush=True)
        return {**out, "video": path}

    return run


def main() -> None:
    """Load the model once, then hand the handler to the RunPod SDK (which also reads --test_input)."""
    import sys

    import runpod

    settings = Settings.from_env()
    configure_logging(settings)
    model = load_for_serving(settings)
    admission = Admission(model, settings.memory_margin, settings.memory_cgroup)
    handler = make_handler(model, encode_threads=settings.encode_threads, admission=admission)
    if is_local_test(sys.argv, dict(os.environ)):
        handler = saving_video(handler, settings.output_dir)
    runpod.serverless.start({"handler": for_runpod(handler)})
