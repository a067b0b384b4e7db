"""A prepared job sent to a worker in another process, and run there on its loaded model.

The API process keeps the queue, the records and the preparer (the sandboxed decode, the LoRA reads);
a worker process (ltx2.serving.device_workers, or a Ray actor) holds a model on one device. Between
them goes one small payload per job, `pack(job)`:

    {"v": 1, "job": id, "request": GenerateRequest (inputs stripped: they are decoded),
     "conditioning": Conditioning | None (the decoded tensors), "loras": [Prepared] | None (CPU tensors)}

pickled (`dumps`/`loads`): both ends are this server's own processes, never a client. The worker runs it
with `run_packed(model, payload, emit, should_stop, ...)`, which emits events as plain dicts:

    {"type": "step", "step", "total"}            each denoising step
    {"type": "progress", "stage", "done", "total"}  the stages without steps (decode, encode)

and returns (result dict, MP4 bytes), or raises: `Stopped` when `should_stop()` said so (a cancel or a
time limit, judged by the API process), anything else as the job's failure, which `failure(exc)` turns
into (error body, HTTP status, device_fault) to send back. The API side replays the events into the
job's `on_step`/`on_progress` (`replay`), so cancel and the time limit work as in-process.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable

from .faults import is_out_of_memory, out_of_memory_body
from .storage import STORAGE_ERROR_STATUS, resource_error
from .job_store import StorageError
from ..pipelines.conditioning import frames_for_duration
from ..pipelines.generate import OutputRejected
from ..pipelines.loras import _cache_key, with_prepared
from ..schema import ErrorResponse, InvalidRequest, generation_failed_body

VERSION = 1
# Faults that leave a CUDA context unusable (the RunPod handler asks for a new worker on these): the
# worker process exits after reporting one, and its lane counts it toward taking the device out of service.
POISONED_MARKERS = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "device-side assert", "illegal memory access",
                    "NCCL error")


class Stopped(Exception):
    """The API process asked the worker to stop the job (cancel, time limit, shutdown)."""


def pack(job) -> dict:
    """The payload for a prepared job: its request and what the preparer decoded and read."""
    conditioning, loras = job.prepared or (None, None)
    for ready in loras or ():
        if ready.tensors is None and ready.adapter is not None:
            # Bound to this process's model already: its tensors live here, not in the payload. Never
            # happens when this process only prepares (it binds nothing), but say so if it does.
            raise ValueError(f"LoRA {ready.wanted.label!r} is bound here and cannot be sent to a worker")
    return {"v": VERSION, "job": job.id, "request": job.request, "conditioning": conditioning,
            "loras": list(loras) if loras is not None else None}


def dumps(payload: dict) -> bytes:
    return pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)


def loads(blob: bytes) -> dict:
    payload = pickle.loads(blob)  # noqa: S301 - from this server's own API process
    if payload.get("v") != VERSION:
        raise ValueError(f"job payload version {payload.get('v')!r}; this worker reads {VERSION}")
    return payload


def admit(admission, request, conditioning) -> None:
    """Memory admission for what only the decoded inputs tell (raises TooLarge, a 413): the length an
    audio gives (match_audio_length), the size and length a retake's video gives. Per device: the
    worker judges against its own device's memory."""
    if admission is None or conditioning is None:
        return
    if request.match_audio_length and conditioning.audio_for_vae is not None:
        admission.check(request, num_frames=frames_for_duration(conditioning.audio_seconds, request.fps))
    if conditioning.video_info is not None:
        info = conditioning.video_info
        admission.check(request, num_frames=info["num_frames"], width=info["width"], height=info["height"])


def run_packed(model, payload: dict, emit: Callable[[dict], None], should_stop: Callable[[], bool], *,
               fetch_policy=None, lora_policy=None, encode_threads: int = 0, admission=None) -> tuple[dict, bytes]:
    """Run a packed job on `model` (this process's), emitting step and progress events."""
    from .service import render_mp4  # the heavy imports only where a model runs

    request, conditioning, loras = payload["request"], payload["conditioning"], payload["loras"]
    for ready in loras or ():  # keyed for this process's device; bound already here: reuse it
        ready.key = _cache_key(model, ready.wanted)
        if (cached := model.adapter_cache.get(ready.key)) is not None:
            ready.adapter, ready.tensors = cached, None

    def check() -> None:
        if should_stop():
            raise Stopped()

    def on_step(step: int, total: int) -> None:
        check()
        emit({"type": "step", "step": step, "total": total})

    def on_progress(stage: str, done: int, total: int) -> None:
        check()
        emit({"type": "progress", "stage": stage, "done": done, "total": total})

    admit(admission, request, conditioning)
    policy = with_prepared(lora_policy, loras) if lora_policy is not None else None
    rendered = render_mp4(model, request, on_step, fetch_policy=fetch_policy, lora_policy=policy,
                          conditioning=conditioning, check=check, on_progress=on_progress,
                          encode_threads=encode_threads)
    return rendered.response(video="").model_dump(exclude={"video"}), rendered.data


def is_poisoned(exc: BaseException) -> bool:
    from .faults import _messages

    return not is_out_of_memory(exc) and any(m in _messages(exc) for m in POISONED_MARKERS)


def failure(exc: BaseException, request) -> tuple[dict, int, bool]:
    """How a job that raised in a worker failed: (error body, HTTP status, device fault), as the job
    manager answers the same error in-process."""
    if isinstance(exc, InvalidRequest):
        return exc.body(), exc.status, False
    if isinstance(exc, StorageError):
        return exc.body(), STORAGE_ERROR_STATUS, False
    if isinstance(exc, OutputRejected):
        return ErrorResponse(error=str(exc), code="invalid_output").model_dump(), 500, False
    if (cause := resource_error(exc)) is not None:
        return StorageError("run the job", cause).body(), STORAGE_ERROR_STATUS, False
    if is_out_of_memory(exc):
        return out_of_memory_body(request, exc), 507, False
    return generation_failed_body(exc), 500, is_poisoned(exc)


def replay(job, on_step, event: dict) -> None:
    """On the API side: a worker's event into the job's callbacks (each may raise to stop the job)."""
    if event["type"] == "step":
        on_step(event["step"], event["total"])
    elif event["type"] == "progress" and job.on_progress is not None:
        job.on_progress(event["stage"], event["done"], event["total"])
