"""The RunPod serverless handler: same request model, same generate(), same response as POST /generate."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from .model import LoadedModel, load_from_settings
from .schema import (
    GenerateRequest,
    InvalidRequest,
    generation_failed_body,
    validation_error_body,
)
from .service import render
from .settings import Settings, configure_logging

log = logging.getLogger("ltx2.worker")

ProgressSender = Callable[[dict, Any], None]


def runpod_progress_sender() -> ProgressSender:
    """RunPod's progress_update when running on RunPod; a log line in the SDK's local test mode,
    where there is no job server to send updates to."""
    if os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        import runpod

        return runpod.serverless.progress_update
    return lambda job, progress: log.info("job %s progress %s", job.get("id"), progress)


def make_handler(model: LoadedModel, send_progress: ProgressSender | None = None) -> Callable[[dict], dict]:
    send_progress = send_progress or runpod_progress_sender()

    def handler(job: dict) -> dict:
        payload = job.get("input")
        try:
            request = GenerateRequest.model_validate(payload if payload is not None else {})
        except ValidationError as exc:
            return validation_error_body(list(exc.errors()))

        def on_step(step: int, total: int) -> None:
            send_progress(job, {"step": step, "total": total, "message": f"denoising step {step}/{total}"})

        try:
            return render(model, request, on_step=on_step).model_dump()
        except InvalidRequest as exc:
            return exc.body()
        except Exception as exc:
            log.exception("generation failed")
            return generation_failed_body(exc)

    return handler


def main() -> None:
    """Load the model once, then hand the handler to the RunPod SDK (which also reads --test_input)."""
    import runpod

    settings = Settings.from_env()
    configure_logging(settings)
    model = load_from_settings(settings)
    runpod.serverless.start({"handler": make_handler(model)})
