"""Failures a job can meet on the GPU, told apart the same way by the server's queue and the RunPod
handler: out of memory (fail the job, free memory, keep going) or a fault that poisons CUDA."""

from __future__ import annotations

import gc

import torch

from ..schema import ErrorResponse, GenerateRequest

# Allocation failures leave the context usable: the job fails, the process stays. Check these before
# the RunPod handler's CUDA-fault markers: "CUDA error: out of memory" and CUBLAS_STATUS_ALLOC_FAILED
# are allocation failures, not faults.
OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


def _messages(exc: BaseException) -> str:
    """The exception's text and its causes': a CUDA fault is sometimes re-raised wrapped."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or any(m in _messages(exc) for m in OOM_MARKERS)


def free_gpu_memory() -> None:
    """Give the failed job's blocks back, so the next job starts from the same free memory as this one."""
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def out_of_memory_body(request: GenerateRequest, exc: BaseException) -> dict:
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = (
        f"out of GPU memory generating {request.num_frames} frames at {request.width}x{request.height}: "
        f"lower num_frames (a shorter video) or the resolution (width/height) and retry ({first_line})"
    )
    return ErrorResponse(error=message, code="out_of_memory").model_dump()
