"""The HTTP API (FastAPI): POST /generate, GET /health, GET /, and Swagger UI at /docs.

The model loads once at start-up. Generation runs on one worker thread, off the event loop, so
/health and /docs answer while a video is being made and jobs on the device run one at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .model import LoadedModel, load_from_settings
from .samples import sample_audio_uri, sample_image_uri
from .schema import (
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    InvalidRequest,
    generation_failed_body,
    request_rules,
    validation_error_body,
)
from .service import render
from .settings import Settings

log = logging.getLogger("ltx2.server")

DESCRIPTION = """Generate video with synchronized audio from a text prompt with Lightricks' LTX-2.

`POST /generate` with a JSON body (only `prompt` is required) returns the MP4 (H.264 + AAC stereo)
as a base64 data URI. Empty `num_inference_steps` and `guidance_scale` take the loaded model's
defaults, reported in the response. Errors are JSON: `{"error": "...", "code": "...", "field": "..."}`.
"""

REQUEST_EXAMPLES = {
    "portrait": {
        "summary": "9:16 portrait, 2 seconds (the defaults)",
        "value": {"prompt": "A cat sitting calmly on a cushion, soft lighting, gentle purring sounds"},
    },
    "preview": {
        "summary": "Quick preview: 9 frames",
        "value": {"prompt": "A cat playing piano, studio lighting", "num_frames": 9, "seed": 7},
    },
    "landscape": {
        "summary": "16:9 landscape, 4.84 s, fixed seed",
        "value": {
            "prompt": "Ocean waves crashing on a rocky shore at sunset, camera pans slowly",
            "width": 768, "height": 432, "num_frames": 121, "fps": 25, "seed": 1234567890,
        },
    },
    "silent": {
        "summary": "Video only (no audio stream)",
        "value": {"prompt": "A timelapse of clouds over mountains", "include_audio": False},
    },
    "image_to_video": {
        "summary": "Animate a picture: image_start held as the first frame",
        "value": {"prompt": "The sky slowly darkens as the sun sets, gentle wind", "image_start": sample_image_uri(),
                  "image_strength": 1.0, "num_frames": 25, "video_size": "auto"},
    },
    "interpolate": {
        "summary": "Between two keyframes: image_start to image_end",
        "value": {"prompt": "A smooth camera move across the horizon", "image_start": sample_image_uri(),
                  "image_end": sample_image_uri(flip=True), "end_image_strength": 1.0, "num_frames": 25},
    },
    "audio_to_video": {
        "summary": "Follow a soundtrack: the video is generated to the input audio",
        "value": {"prompt": "A glass wind chime ringing on a porch", "audio": sample_audio_uri(),
                  "audio_strength": 1.0, "match_audio_length": True},
    },
}

ERROR_RESPONSES = {
    413: {"model": ErrorResponse, "description": "An image or audio input is over its size limit."},
    422: {"model": ErrorResponse, "description": "A field breaks a rule, or an image or audio input cannot be used; "
                                                 "the message names the field and the rule."},
    500: {"model": ErrorResponse, "description": "Generation failed; the server keeps serving."},
    503: {"model": ErrorResponse, "description": "The model is not loaded."},
}


class _State:
    """What the server knows about its one device: the model, the worker thread, the job in hand."""

    def __init__(self, model: LoadedModel | None):
        self.model = model
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ltx2-gpu")
        self.lock = threading.Lock()
        self.waiting = 0  # requests accepted and not finished (the running one included)
        self.progress: dict | None = None

    def on_step(self, step: int, total: int) -> None:
        with self.lock:
            self.progress = {"step": step, "total": total}


def create_app(settings: Settings | None = None, model: LoadedModel | None = None) -> FastAPI:
    """Build the app. Pass `model` to serve an already-loaded one (tests); otherwise it loads at start-up."""
    settings = settings or Settings.from_env()
    state = _State(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state.model is None:
            state.model = await asyncio.get_running_loop().run_in_executor(
                state.executor, lambda: load_from_settings(settings)
            )
        yield
        state.executor.shutdown(wait=True)

    app = FastAPI(title="ltx2", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.ltx2 = state

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return JSONResponse(status_code=422, content=validation_error_body(list(exc.errors())))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = ErrorResponse(error=str(exc.detail), code=code).model_dump()
        return JSONResponse(status_code=exc.status_code, content=body, headers=getattr(exc, "headers", None))

    @app.post(
        "/generate",
        response_model=GenerateResponse,
        responses=ERROR_RESPONSES,
        summary="Generate a video with audio (synchronous)",
    )
    async def generate_video(
        request: Annotated[GenerateRequest, Body(openapi_examples=REQUEST_EXAMPLES)],
    ) -> GenerateResponse | JSONResponse:
        if state.model is None:
            body = ErrorResponse(error="the model is not loaded", code="model_not_loaded")
            return JSONResponse(status_code=503, content=body.model_dump())
        with state.lock:
            state.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(state.executor, render, state.model, request, state.on_step)
        except InvalidRequest as exc:
            return JSONResponse(status_code=exc.status, content=exc.body())
        except Exception as exc:  # a failed job must not take the server down
            log.exception("generation failed")
            return JSONResponse(status_code=500, content=generation_failed_body(exc))
        finally:
            with state.lock:
                state.waiting -= 1
                state.progress = None

    @app.get("/health", summary="Liveness, the loaded model and the job in progress")
    async def health() -> JSONResponse:
        if state.model is None:
            return JSONResponse(status_code=503, content={"status": "loading"})
        with state.lock:
            busy = {"jobs_waiting_or_running": state.waiting, "progress": state.progress}
        return JSONResponse({"status": "healthy", "model": state.model.describe(), **busy})

    @app.get("/", summary="What this API does and its effective defaults")
    async def index() -> dict:
        fields = GenerateRequest.model_fields
        defaults = {name: f.default for name, f in fields.items() if not f.is_required() and f.default is not None}
        defaults["seed"] = "random (returned in the response)"
        if state.model is not None:
            defaults["num_inference_steps"] = state.model.defaults.num_inference_steps
            defaults["guidance_scale"] = state.model.defaults.guidance_scale
        return {
            "name": "ltx2",
            "version": __version__,
            "description": DESCRIPTION,
            "model": state.model.describe() if state.model is not None else None,
            "endpoints": {
                "POST /generate": "generate a video; returns the MP4 as a data URI",
                "GET /health": "liveness and the loaded model",
                "GET /docs": "interactive API documentation (Swagger UI)",
                "GET /openapi.json": "the OpenAPI schema",
            },
            "defaults": defaults,
            "rules": request_rules(),
            "fields": sorted(GenerateRequest.model_fields),
        }

    return app
