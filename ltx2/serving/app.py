"""The HTTP API (FastAPI): POST /generate, the /jobs API, GET /health, /metrics, GET /, and /docs.

The model loads once at start-up (in a thread: /health answers meanwhile, and a model that fails
to load leaves the server up, saying why). Every video is a job on one queue in front of the one
GPU (ltx2.serving.jobs): `POST /generate` waits for its job, `POST /jobs` returns at once.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from functools import partial
from urllib.parse import urlsplit
from typing import Annotated

from fastapi import APIRouter, Body, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    StreamingResponse,
)
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..media.fetch import FetchPolicy
from ..pipelines.loras import LoraPolicy, with_prepared
from ..pipelines.loras import prepare as prepare_loras
from ..media.inputs import InputLimits
from ..media.sandbox import Sandbox, SandboxLimits, Stopped
from .. import video_to_video
from ..extend import max_seconds as max_extend_seconds
from ..pipelines.conditioning import decode_conditioning, frames_for_duration
from ..pipelines import rank_group
from ..pipelines.generate import image_targets
from ..pipelines.stages import resolve_multiscale
from .store import open_store
from .jobs import (
    CANCELLED,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    Job,
    JobCancelled,
    JobManager,
    JobTimedOut,
    QueueFull,
    ShuttingDown,
    StorageError,
    STORAGE_ERROR_STATUS,
)
from ..media.encode import FORMATS, output_format
from .delivery import ENCODE_SECONDS, VIDEO, Changes, StreamedJSON, json_response, video_mime
from .admission import Admission, TooLarge, frames_of
from .intake import MAX_BODIES_IN_FLIGHT, SubmitRoute
from .batching import QueueBatching, batch_of, check_setting
from .lanes import Lane
from .device_workers import start_pool, worker_devices
from .metrics import Metrics
from ..models.loaded import LoadedModel
from ..media.samples import sample_audio_uri, sample_image_uri, sample_video_uri
from ..schema import (
    FAL_RENAMES,
    ErrorResponse,
    GenerateRequest,
    GenerateResponse,
    request_rules,
    validation_error_body,
)
from . import ltx_api, openai_api, trainings
from .error_shapes import reshape, reshape_response
from .docs import PAGES as DOCS_PAGES
from .docs import install_docs
from .playground import PAGES as PLAYGROUND_PAGES
from .playground import install_playground
from .protocol import JSON_TYPES, ProtocolContext, ProtocolError, content_type, wrong_content_type_message
from .security import MISSING_KEY, caller_of, install_security
from .service import load_for_serving, render_mp4
from ..settings import Settings

log = logging.getLogger("ltx2.server")
# Seconds uvicorn waits past the shutdown grace before it cuts open connections: the waiting /generate
# calls are answered just before the grace ends, and that answer must not race the cut.
SHUTDOWN_ANSWER_SLACK = 10

DESCRIPTION = """Generate video with synchronized audio from a text prompt with Lightricks' LTX-2.

`POST /generate` with a JSON body (only `prompt` is required) returns the MP4 (H.264 + AAC stereo)
as a base64 data URI; `video_output_type` asks for a WebM (VP9 + Opus), a ProRes 4444 MOV or a GIF.
Empty `num_inference_steps` and `guidance_scale` take the loaded model's defaults, reported in the
response. Errors are JSON: `{"error": "...", "code": "...", "field": "..."}`.

Try it in a browser: [the playground](/playground). The same server also speaks the OpenAI Videos
API (`/v1/videos`) and the LTX API (`/v1/generations/...`), below.
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
    "webm": {
        "summary": "A WebM (VP9 + Opus) for the web, medium quality, fast to encode",
        "value": {"prompt": "A paper boat drifting on a pond, water lapping", "video_output_type": "VP9 (.webm)",
                  "video_quality": "medium", "video_write_mode": "fast"},
    },
    "gif": {
        "summary": "An animated GIF (no audio), 1 second",
        "value": {"prompt": "A cat blinking slowly", "num_frames": 25, "video_output_type": "GIF (.gif)"},
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
    "lora": {
        "summary": "A custom LoRA and a camera move (files in the server's <models dir>/loras/)",
        "value": {"prompt": "A red fox trotting through fresh snow, soft crunching steps", "num_frames": 25,
                  "loras": [{"path": "my-style.safetensors", "scale": 0.8}], "camera_lora": "dolly_in"},
    },
    "prompt_expansion": {
        "summary": "A short idea, expanded by Gemma 3 first (see expanded_prompt in the response)",
        "value": {"prompt": "a cat plays piano", "enable_prompt_expansion": True, "seed": 7, "num_frames": 25},
    },
    "retake": {
        "summary": "Retake: regenerate 0.4-0.6 s of a video from the prompt, keep the rest (size and length its own)",
        "value": {"prompt": "The colours flash bright white for a moment", "video": sample_video_uri(),
                  "retake": {"start": 0.4, "end": 0.6}},
    },
    "extend": {
        "summary": "Extend: continue a video by 1 s with its audio, in 17-frame windows (the input kept as it is)",
        "value": {"prompt": "The colours keep drifting slowly", "video": sample_video_uri(),
                  "extend": {"seconds": 1.0, "direction": "forward"}, "num_frames": 17},
    },
    "audio_to_video": {
        "summary": "Follow a soundtrack: the video is generated to the input audio",
        "value": {"prompt": "A glass wind chime ringing on a porch", "audio": sample_audio_uri(),
                  "audio_strength": 1.0, "match_audio_length": True},
    },
}

def _doc(description: str, error: str | None = None, code: str | None = None, field: str | None = None) -> dict:
    """An error response for /docs, with a realistic example of its body when one is given."""
    doc = {"model": ErrorResponse, "description": description}
    if error is not None:
        example = ErrorResponse(error=error, code=code, field=field,
                                errors=[{"field": field, "message": error}] if field else []).model_dump()
        doc["content"] = {"application/json": {"example": example}}
    return doc


ERROR_RESPONSES = {
    401: _doc("An API key is required and was missing or wrong.", MISSING_KEY, "unauthorized"),
    409: _doc("The job was cancelled before it finished.",
              "job 3f2c9a4e5b6d4c1e8f0a7b2c3d4e5f60 was cancelled before it finished", "cancelled"),
    413: _doc("The request body or an image or audio input is over its size limit (the image's pixel count "
              "included).", "image_start is 31.4 MB; the limit is 20 MB", "payload_too_large", "image_start"),
    422: _doc("A field breaks a rule, or an image or audio input cannot be used; the message names the field "
              "and the rule.", "num_frames must be of the form 8k+1 (e.g. 49 or 57), got 50", "invalid_request",
              "num_frames"),
    429: _doc("The queue is full; retry after the Retry-After header's seconds.", str(QueueFull(42, 8)),
              "queue_full"),
    500: _doc("Generation failed (or produced NaN / an all-black video); the server keeps serving.",
              "the model produced NaN or infinite values (a numerical failure, e.g. in reduced precision); "
              "no video was made", "invalid_output"),
    503: _doc("The model is loading, failed to load, or the server is shutting down.",
              "the model is still loading", "model_not_loaded"),
    504: _doc("The job ran longer than the server's job timeout.",
              "the job ran longer than 1800 s (LTX2_JOB_TIMEOUT) and was stopped", "timeout"),
    507: _doc("Out of GPU memory (lower num_frames or the resolution), or the server could not store the job or "
              "its video (code storage_error).",
              "out of GPU memory generating 241 frames at 768x1344: lower num_frames (a shorter video) or the "
              "resolution (width/height) and retry (CUDA out of memory. Tried to allocate 9.00 GiB)",
              "out_of_memory"),
}
JOB_RESPONSES = {
    401: ERROR_RESPONSES[401],
    404: _doc("No job with this id.", "no job '3f2c9a4e5b6d4c1e8f0a7b2c3d4e5f60'", "not_found"),
    503: ERROR_RESPONSES[503],
}


class _State:
    """What the server knows: the model (or why it is missing), the job manager, the metrics; and the
    job API every route uses (`submit`, `find`, `view`), whatever protocol it speaks."""

    def __init__(self, model: LoadedModel | None, settings: Settings):
        self.model = model
        self.settings = settings
        self.load_error: str | None = None
        self.manager: JobManager | None = None
        self.metrics = Metrics()
        self.fetch_policy = FetchPolicy.from_settings(settings)  # --url-timeout, --allow-private-urls
        self.lora_policy = LoraPolicy.from_settings(settings)  # --models-dir, --allow-lora-urls, --max-lora-mb...
        self.changes = Changes()
        self.body_slots = asyncio.Semaphore(MAX_BODIES_IN_FLIGHT)
        self.sandbox = Sandbox(SandboxLimits.from_settings(settings))  # --decode-memory-mb, --decode-timeout
        self.public_url = _public_url(settings.public_url)  # --public-url: links don't trust the Host header
        self.keys_configured = False  # set by create_app once the keys are read
        self.admission: Admission | None = None  # the memory rule, once the model is loaded (start_jobs)
        self.storage_error: str | None = None  # why the job records could not be opened (retried meanwhile)
        self.stopping = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None  # the server's loop, once it runs
        self.sigterm = asyncio.Event()  # set when SIGTERM arrives (wakes the waiting /generate calls)
        self.shutdown_deadline: float | None = None  # monotonic time the running job is cancelled at
        # Ray Serve's API deployment (ltx2.serving.ray_app): jobs run on Generation replicas through
        # `run_elsewhere(job, on_step, conditioning, loras)`, `remote_lanes` of them at once.
        self.run_elsewhere = None
        self.remote_lanes = 0
        self.device_pool = None  # --devices: one worker process per device (ltx2.serving.device_workers)

    def start_jobs(self) -> None:
        """Open the records and start the workers. If the storage fails here (it passed the check before
        the model loaded), the server stays up: /health and the job routes answer 503 with the reason, and
        a thread retries every 5 s. Nothing is moved aside or swept meanwhile."""
        try:  # the loaded model's costs per stage, counted once on meta (seconds)
            # GPU workers (--devices cuda:...) each judge a job against their own GPU; this process's meta
            # model would judge against host memory, as if it ran here.
            if self.device_pool is None or not self.device_pool.on_cuda:
                self.admission = Admission(self.model, self.settings.memory_margin, self.settings.memory_cgroup)
        except Exception as exc:  # noqa: BLE001 - a model the counts cannot copy still serves, unchecked
            log.error(json.dumps({"event": "admission_unavailable", "error": f"{type(exc).__name__}: {exc}"}))
        try:
            self._open_jobs()
        except StorageError as exc:
            self.storage_error = str(exc)
            log.error(json.dumps({"event": "job_storage_unavailable", "error": self.storage_error,
                                  "action": "retrying every 5 s; /health answers 503 until then"}))
            threading.Thread(target=self._retry_jobs, name="ltx2-storage-retry", daemon=True).start()

    def _retry_jobs(self) -> None:
        while not self.stopping.wait(5):
            try:
                self._open_jobs()
            except StorageError as exc:
                self.storage_error = str(exc)
                continue
            log.info(json.dumps({"event": "job_storage_recovered"}))
            return

    def _open_jobs(self) -> None:
        settings = self.settings
        store = open_store(settings.database, settings.output_dir)
        try:
            manager = JobManager(
                store, settings.output_dir, self._run_job, queue_size=settings.queue_size,
                job_timeout=settings.job_timeout, result_ttl=settings.result_ttl, record_ttl=settings.record_ttl,
                output_max_bytes=int(settings.output_max_gb * 1e9), on_finished=self.metrics.job_finished,
                on_change=self.changes.notify, prepare_job=self._prepare_job,
                # The class's _run_job, not the instance's: trainings wrap that in one device turn for the
                # whole process, and each remote lane has a device of its own (Ray Serve refuses trainings).
                **({"lanes": [Lane(f"remote-{i + 1}", partial(_State._run_job, self))
                              for i in range(self.remote_lanes)]} if self.run_elsewhere is not None else {}),
                **({"lanes": self.device_pool.lanes()} if self.device_pool is not None else {}),
            )
        except BaseException:
            store.close()
            raise
        if self.stopping.is_set():  # shut down while retrying
            store.close()
            return
        if settings.max_batch > 1 and self.run_elsewhere is None:  # --max-batch: this process's model
            # The companions run through _State._run_job itself: the lane's (trainings' device turn) is the lead's.
            manager.batching = QueueBatching(settings.max_batch, self.admission, run_job=partial(_State._run_job, self))
        manager.start()
        self.manager, self.storage_error = manager, None

    def _prepare_job(self, job: Job, check):
        """Fetch and decode the job's inputs in the sandbox, and find, fetch, check and read its LoRAs, off
        the GPU worker; stopped when `check` says the job was cancelled or ran out of time. Returns
        (decoded inputs or None, prepared LoRAs or None)."""
        inputs = self.manager.inputs_of(job)
        wants_loras = bool(job.request.loras) or job.request.camera_lora != "none" or job.request.ic_lora is not None
        if not inputs and not wants_loras:
            return None

        def should_stop():
            try:
                check()
            except (JobCancelled, JobTimedOut) as exc:
                return exc
            return None

        try:
            loras = None
            if wants_loras:  # first: a LoRA refused from its header is answered before any image is decoded
                try:
                    loras = prepare_loras(self.model, job.request, self.lora_policy, should_stop)
                except OSError as exc:  # the LoRA cache's disk (full, read-only); the download is removed
                    raise StorageError("store a downloaded LoRA", exc) from exc
            conditioning = None
            if inputs:
                conditioning = decode_conditioning(
                    job.request, self.model.pipe.audio_vae.config.sample_rate, self.model.vocoder_rate,
                    InputLimits.from_env(), self.fetch_policy, inputs=inputs, sandbox=self.sandbox,
                    should_stop=should_stop, targets=image_targets(self.model, job.request, self.lora_policy))
            return conditioning, loras
        except Stopped as exc:
            raise exc.why from None

    def _run_job(self, job: Job, on_step):
        # A job with inputs or LoRAs comes prepared; one without needs nothing decoded or read. The worker
        # only binds the prepared LoRAs (GPU copies): it never fetches or reads a LoRA file.
        conditioning, loras = job.prepared or (None, None)
        if self.admission is not None and job.request.match_audio_length and conditioning is not None \
                and conditioning.audio_for_vae is not None:  # the length the audio gives, judged now
            self.admission.check(job.request, num_frames=frames_for_duration(conditioning.audio_seconds,
                                                                             job.request.fps))
        if self.admission is not None and conditioning is not None and conditioning.video_info is not None:
            info = conditioning.video_info  # a retake: the size and length the video gives, judged now
            self.admission.check(job.request, num_frames=info["num_frames"], width=info["width"], height=info["height"])
        if self.run_elsewhere is not None:
            return self.run_elsewhere(job, on_step, conditioning, loras)
        if (batch := batch_of(job)) is not None:  # --max-batch: generated together with its batch's other jobs
            return batch.render(self, job, on_step, conditioning, loras)
        rendered = render_mp4(self.model, job.request, on_step, fetch_policy=self.fetch_policy,
                              lora_policy=with_prepared(self.lora_policy, loras), conditioning=conditioning,
                              check=job.check, on_progress=job.on_progress,
                              encode_threads=self.settings.encode_threads)
        return rendered.response(video="").model_dump(exclude={"video"}), rendered.data

    def begin_shutdown(self) -> None:
        """SIGTERM: refuse new jobs at once; the running one gets `shutdown_grace` seconds from now."""
        if self.shutdown_deadline is None:
            self.shutdown_deadline = time.monotonic() + self.settings.shutdown_grace
        if self.manager is not None:
            self.manager.accepting = False
        if self.loop is not None:  # a signal handler: wake the waiting /generate calls from the loop itself
            self.loop.call_soon_threadsafe(self.sigterm.set)

    async def until_shutdown_ends(self, job: Job) -> None:
        """Returns once the server is shutting down and `job` will not end in time for this connection:
        at once for a queued job (kept for the next start), a moment before the grace ends for the running
        one (uvicorn waits SHUTDOWN_ANSWER_SLACK past the grace before it cuts open connections, so the
        answer goes out even on a loaded machine)."""
        await self.sigterm.wait()
        if job.status == RUNNING:
            left = self.shutdown_left() - min(1.0, self.settings.shutdown_grace / 4)
            try:
                await asyncio.wait_for(self.changes.until_done(job), max(0.0, left))
            except TimeoutError:
                pass

    def shutdown_left(self) -> float:
        """Seconds of the grace SIGTERM gave that remain (all of it before a SIGTERM)."""
        if self.shutdown_deadline is None:
            return self.settings.shutdown_grace
        return max(0.0, self.shutdown_deadline - time.monotonic())

    # -- the job API, for every route ------------------------------------------------------------

    def memory_report(self) -> dict | None:
        """What a job may use and the most frames at the default size (ltx2.serving.admission)."""
        if self.admission is None:
            return None
        running = self.manager.admission_running() if self.manager is not None else None
        return self.admission.report(running.request if running else None)

    def unavailable(self) -> JSONResponse | None:
        """Why no job can be submitted or looked up now, or None."""
        if self.load_error is not None:
            return _error(503, f"the model failed to load: {self.load_error}", "model_load_failed")
        if self.manager is None and self.storage_error is not None:
            return _error(503, f"the job storage is unavailable ({self.storage_error}); retry when GET /health "
                          "says healthy", "storage_error")
        if self.manager is None:
            return _error(503, "the model is still loading", "model_not_loaded")
        return None

    async def submit(self, request: GenerateRequest, http: Request) -> Job | JSONResponse:
        """Queue `request` for the caller; a Job, or the error response to send. From a SubmitRoute the
        queue slot is already held; anywhere else one is taken here."""
        if (refusal := self.unavailable()) is not None:
            return refusal
        reservation = getattr(http.state, "ltx2_reservation", None)
        if self.admission is not None:  # larger than this machine: 413 before it is queued
            running = self.manager.admission_running()
            try:
                await asyncio.to_thread(self.admission.check, request, running.request if running else None,
                                        frames_of(request))
            except TooLarge as exc:
                self.metrics.job_rejected("too_large_for_server")
                return JSONResponse(status_code=413, content=exc.body())
        try:
            return await asyncio.to_thread(self.manager.submit, request, caller_of(http).name, reservation)
        except QueueFull as exc:
            self.metrics.job_rejected("queue_full")
            return _error(429, str(exc), "queue_full", headers={"Retry-After": str(exc.retry_after)})
        except ShuttingDown as exc:
            self.metrics.job_rejected("shutting_down")
            return _error(503, str(exc), "shutting_down", headers={"Retry-After": "30"})
        except StorageError as exc:
            self.metrics.job_rejected("storage_error")
            return JSONResponse(status_code=STORAGE_ERROR_STATUS, content=exc.body())

    async def find(self, job_id: str, http: Request) -> Job | JSONResponse:
        """The caller's job with this id, or the error response (404 for an unknown id)."""
        if (refusal := self.unavailable()) is not None:
            return refusal
        try:
            job = await asyncio.to_thread(self.manager.get, job_id)
        except StorageError as exc:
            return JSONResponse(status_code=STORAGE_ERROR_STATUS, content=exc.body())
        # Another key's job is answered exactly as a job that does not exist: its id tells nothing.
        if job is None or not caller_of(http).sees(job.owner, self.keys_configured):
            return _error(404, f"no job {job_id!r}", "not_found")
        return job

    async def list_jobs(self, http: Request, limit: int = 20, after: float | None = None,
                        order: str = "desc") -> list[Job] | JSONResponse:
        """The caller's jobs (every job for the admin key, or on a server without keys), newest first
        (`order` "asc": oldest first), beyond the one created at `after`; or the error response to send."""
        if (refusal := self.unavailable()) is not None:
            return refusal
        caller = caller_of(http)
        try:
            return await asyncio.to_thread(self.manager.list, caller.name, limit, after,
                                           caller.admin or not self.keys_configured, order)
        except StorageError as exc:
            return JSONResponse(status_code=STORAGE_ERROR_STATUS, content=exc.body())

    def url(self, http: Request, name: str, **params) -> str:
        """An absolute link: under --public-url when it is set, else from the request's Host header."""
        if self.public_url is None:
            return str(http.url_for(name, **params))
        return self.public_url + str(http.app.url_path_for(name, **params))

    def links(self, job: Job, http: Request) -> dict[str, str]:
        return {"self": self.url(http, "get_job", job_id=job.id),
                "events": self.url(http, "job_events", job_id=job.id),
                "video": self.url(http, "job_video", job_id=job.id)}

    def video_url(self, job: Job, http: Request) -> str:
        """The video's link ending in its format's extension, for clients that go by it."""
        extension = output_format(job.request.video_output_type).extension[1:]
        return self.url(http, "job_video_file", job_id=job.id, extension=extension)

    def view(self, job: Job, http: Request) -> dict:
        """GET /jobs/{id}'s body. A data_uri result's video is the VIDEO placeholder, for `respond`."""
        view = job.view(self.manager.position(job.id))
        view["links"] = self.links(job, http)
        if job.status == SUCCEEDED and view["video_available"] and view["result"] is not None:
            fmt = job.request.response_format or "url"
            video = self.video_url(job, http) if fmt == "url" else VIDEO
            view["result"] = {"video": video, **view["result"]}
        return view

    def gone(self, job: Job) -> JSONResponse:
        settings = self.settings
        return _error(410, f"the video of job {job.id} has expired (kept {settings.result_ttl:.0f} s, at most "
                           f"{settings.output_max_gb:g} GB of videos)", "expired")

    async def respond(self, content, job: Job, status_code: int = 200, headers: dict | None = None):
        """JSON for `content`, its video (if any) streamed from the file."""
        return await json_response(content, job, status_code, headers, gone=self.gone)


def _public_url(value: str | None) -> str | None:
    """--public-url without its trailing slash, checked: links are built on it."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"LTX2_PUBLIC_URL must be an http(s) URL without a query, like https://video.example.com "
                         f"or https://example.com/ltx2, got {value!r}")
    return value.rstrip("/")


def request_defaults(model: LoadedModel | None) -> dict:
    """What each optional request field means when left out, on this model (GET /): every value here,
    sent back as a request, is accepted. Fields empty by default (seed: drawn at random; the inputs) are
    not listed."""
    defaults = {name: f.get_default(call_default_factory=True) for name, f in GenerateRequest.model_fields.items()
                if not f.is_required() and f.get_default(call_default_factory=True) is not None
                and name not in video_to_video.KNOBS}  # those go only with an ic_lora (their defaults: /docs)
    if model is not None:
        defaults.update(model.defaults.as_dict())  # its stg_blocks exist in its transformer (LoadedModel)
        defaults["use_multiscale"] = resolve_multiscale(model, GenerateRequest(prompt="-"))
        if model.duration_head is not None:  # no length given: the duration head picks it (duration "auto")
            del defaults["num_frames"]
            defaults["duration"] = "auto"
    return defaults


def _error(status: int, message: str, code: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=ErrorResponse(error=message, code=code).model_dump(),
                        headers=headers)


async def _disconnected(http: Request) -> None:
    """Returns when the client goes away. Only once the body has been read: then the server's receive()
    has nothing left to deliver but the disconnect."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def create_app(settings: Settings | None = None, model: LoadedModel | None = None, *, run_elsewhere=None,
               remote_lanes: int = 1) -> FastAPI:
    """Build the app. Pass `model` to serve an already-loaded one (tests); otherwise it loads at start-up.
    `run_elsewhere`: run each prepared job there (ltx2.serving.ray_app), `remote_lanes` at once."""
    settings = settings or Settings.from_env()
    max_extend_seconds()  # a bad LTX2_MAX_EXTEND_SECONDS stops start-up, rather than refusing every extend
    check_setting(settings.max_batch)  # likewise a --max-batch below 1
    state = _State(model, settings)
    state.run_elsewhere, state.remote_lanes = run_elsewhere, remote_lanes

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.changes.bind(asyncio.get_running_loop())
        state.loop = asyncio.get_running_loop()
        # An app may be started again after a shutdown (ASGI test clients do): the last one's flags go.
        state.stopping.clear()
        state.sigterm = asyncio.Event()
        state.shutdown_deadline = None
        if state.model is None:
            try:
                if len(devices := worker_devices(settings)) > 1:  # one worker process per device
                    state.model, state.device_pool = await asyncio.to_thread(start_pool, settings, devices)
                else:
                    state.model = await asyncio.to_thread(load_for_serving, settings)
            except Exception as exc:  # noqa: BLE001 - stay up and say why on /health
                state.load_error = f"{type(exc).__name__}: {exc}"
                log.error(json.dumps({"event": "model_load_failed", "error": state.load_error}))
        if state.model is not None:
            # The model's hundreds of thousands of Python objects live as long as the server: keep them
            # out of every future garbage collection, which otherwise takes ~0.5 s with the GIL held.
            gc.collect()
            gc.freeze()
            await asyncio.to_thread(state.start_jobs)  # recovery and sweeps read the disk
        yield
        state.stopping.set()
        if state.manager is not None:
            # The grace counts from SIGTERM, not again from here: uvicorn's wait for connections spent some.
            await asyncio.to_thread(state.manager.stop, state.shutdown_left())
            state.manager.store.close()
        if state.device_pool is not None:
            await asyncio.to_thread(state.device_pool.close)
        state.sandbox.close()

    # docs_url=None: FastAPI's own /docs loads Swagger UI from a CDN; ours serves it from a package.
    app = FastAPI(title="ltx2", version=__version__, description=DESCRIPTION, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    install_docs(app)
    install_playground(app)
    # API keys and body limit, checked before any body is read.
    state.keys_configured = bool(install_security(app, settings, pages=DOCS_PAGES | PLAYGROUND_PAGES, shape=reshape))
    app.state.ltx2 = state

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        body = validation_error_body(list(exc.errors()))
        kind = content_type(request)
        if body["field"] == "body" and kind not in JSON_TYPES and not kind.endswith("+json"):
            # e.g. curl -d without -H: the body may well be JSON, but it was not sent as JSON.
            message = wrong_content_type_message(kind, JSON_TYPES) + " (curl: -H 'Content-Type: application/json')"
            return ProtocolError("body", message).response
        return JSONResponse(status_code=422, content=body)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 400:  # a body FastAPI could not even decode (e.g. not UTF-8)
            return _error(422, f"the request body is not valid JSON: {exc.detail}", "invalid_request")
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        body = ErrorResponse(error=str(exc.detail), code=code).model_dump()
        response = JSONResponse(status_code=exc.status_code, content=body, headers=getattr(exc, "headers", None))
        return reshape_response(request.url.path, response)  # /v1/...: in that protocol's shape

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # A bug, not the client's doing: still JSON in the route's own shape (the traceback goes to the log).
        response = _error(500, f"internal error ({type(exc).__name__}); the server keeps serving", "internal_error")
        return reshape_response(request.url.path, response)

    # Routes that queue a job: capacity is checked before their bodies are read (ltx2.serving.intake).
    submits = APIRouter(route_class=SubmitRoute)

    @submits.post(
        "/generate",
        response_model=GenerateResponse,
        responses=ERROR_RESPONSES,
        summary="Generate a video with audio (synchronous)",
    )
    async def generate_video(
        http: Request,
        request: Annotated[GenerateRequest, Body(openapi_examples=REQUEST_EXAMPLES)],
    ):
        job = await state.submit(request, http)
        if isinstance(job, JSONResponse):
            return job
        # Wait for the job, woken when it ends; a client that goes away cancels it, so it does not hold the GPU.
        done = asyncio.ensure_future(state.changes.until_done(job))
        gone = asyncio.ensure_future(_disconnected(http))
        stopping = asyncio.ensure_future(state.until_shutdown_ends(job))
        ended, _ = await asyncio.wait({done, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in (done, gone, stopping):
            task.cancel()
        if not job.done.is_set() and stopping in ended:
            # Answered now, in JSON, rather than cut off by uvicorn as the shutdown ends (a plain-text 500).
            queued = job.status != RUNNING
            message = (f"the server is shutting down; job {job.id} " +
                       ("is kept and runs when the server starts again" if queued else
                        "was still running; it is stopped if it does not finish within the shutdown grace") +
                       f": GET /jobs/{job.id} after the restart says how it ended")
            body = {**ErrorResponse(error=message, code="shutting_down").model_dump(), "job_id": job.id}
            return JSONResponse(status_code=503, content=body,
                                headers={"Retry-After": "30", "Location": state.links(job, http)["self"]})
        if not job.done.is_set():
            state.manager.cancel(job.id)
            log.info(json.dumps({"event": "client_disconnected", "job": job.id}))
            return _error(499, "the client closed the connection; the job was cancelled", "client_closed")
        if job.status == CANCELLED:  # by DELETE /jobs/{id}, or by a shutdown past its grace
            return _error(409, f"job {job.id} was cancelled before it finished", "cancelled")
        if job.status != SUCCEEDED:
            return JSONResponse(status_code=job.error_status or 500, content=job.error)
        if job.expired or not job.video_path:
            return state.gone(job)
        fmt = request.response_format or "data_uri"
        video = VIDEO if fmt == "data_uri" else state.video_url(job, http)
        # Accepted to ready, as the field says: the time in the queue counts.
        waited = round(job.finished - job.created, 3)
        content = GenerateResponse(video=video, **{**job.result, "generation_time_seconds": waited}).model_dump(
            mode="json")
        if fmt == "data_uri":  # measured while the video streams out, and written after it
            content["timings"]["encode_base64"] = ENCODE_SECONDS
        return await state.respond(content, job)

    @submits.post("/jobs", status_code=202, summary="Queue a video (asynchronous); poll or stream its progress",
                  responses={k: v for k, v in ERROR_RESPONSES.items() if k not in (409, 504)})
    async def create_job(
        http: Request,
        request: Annotated[GenerateRequest, Body(openapi_examples=REQUEST_EXAMPLES)],
    ) -> JSONResponse:
        job = await state.submit(request, http)
        if isinstance(job, JSONResponse):
            return job
        return JSONResponse(status_code=202, content=state.view(job, http),
                            headers={"Location": state.links(job, http)["self"]})

    app.include_router(submits)

    @app.get("/jobs/{job_id}", name="get_job", summary="A job's status, position, progress, timings and result",
             responses=JOB_RESPONSES)
    async def get_job(job_id: str, http: Request):
        job = await state.find(job_id, http)
        if isinstance(job, JSONResponse):
            return job
        view = state.view(job, http)
        response = await state.respond(view, job)
        if response.status_code == 410:  # expired since the view was made: say so in the view instead
            view["video_available"], view["result"] = False, job.result
            return JSONResponse(view)
        return response

    @app.delete("/jobs/{job_id}", summary="Cancel a job: a queued one is removed, a running one stops at its next step",
                responses={**JOB_RESPONSES, 409: _doc("The job has already finished.", "job 3f2c9a4e5b6d4c1e8f0a7b2c3d4e5f60 has "
                                                                       "already succeeded", "conflict")})
    async def cancel_job(job_id: str, http: Request) -> JSONResponse:
        job = await state.find(job_id, http)
        if isinstance(job, JSONResponse):
            return job
        if job.status in TERMINAL:
            return _error(409, f"job {job_id} has already {job.status}", "conflict")
        # The manager's own object: with a shared store, the job may have ended through another replica.
        job = await asyncio.to_thread(state.manager.cancel, job_id) or job
        if job.status == RUNNING:  # it stops at its next step or stage boundary
            try:
                await asyncio.wait_for(state.changes.until_done(job), 60)
            except TimeoutError:
                pass
        return JSONResponse(state.view(job, http))

    async def video_response(job_id: str, http: Request, head: bool, extension: str | None = None):
        job = await state.find(job_id, http)
        if isinstance(job, JSONResponse):
            return job
        suffix = output_format(job.request.video_output_type).extension
        if extension is not None and f".{extension}" != suffix:
            return _error(404, f"job {job_id}'s video is a {suffix} file, not .{extension}", "not_found")
        if job.status not in TERMINAL:
            return _error(409, f"job {job_id} is {job.status}; its video is not ready", "not_ready")
        if job.status != SUCCEEDED:
            return _error(404, f"job {job_id} {job.status}; it has no video", "no_video")
        if state.manager.video_expired(job) or not job.video_path:
            return state.gone(job)
        try:
            fh = await asyncio.to_thread(open, job.video_path, "rb")
        except OSError:
            return state.gone(job)
        size = os.fstat(fh.fileno()).st_size
        name = os.path.basename(job.video_path)
        headers = {"Content-Length": str(size), "Content-Disposition": f'attachment; filename="{name}"'}
        if head:
            fh.close()
            return Response(status_code=200, media_type=video_mime(job.video_path), headers=headers)

        async def chunks():
            try:
                while chunk := await asyncio.to_thread(fh.read, 256 * 1024):
                    yield chunk
            finally:
                fh.close()

        return StreamingResponse(chunks(), media_type=video_mime(job.video_path), headers=headers)

    video_responses = {200: {"content": {f.mime: {} for f in FORMATS.values()}}, **JOB_RESPONSES,
                       409: _doc("The job has not finished.", "job 3f2c9a4e5b6d4c1e8f0a7b2c3d4e5f60 is running; its video "
                                                             "is not ready", "not_ready"),
                       410: _doc("The video has expired.", "the video of job 3f2c9a4e5b6d4c1e8f0a7b2c3d4e5f60 has "
                                                           "expired (kept 86400 s)", "expired")}

    @app.get("/jobs/{job_id}/video", name="job_video", response_class=FileResponse, responses=video_responses,
             summary="The finished video file (MP4, WebM, MOV or GIF, as the request's video_output_type)")
    async def job_video(job_id: str, http: Request):
        return await video_response(job_id, http, head=False)

    @app.head("/jobs/{job_id}/video", include_in_schema=False)
    async def job_video_head(job_id: str, http: Request):
        return await video_response(job_id, http, head=True)

    @app.get("/jobs/{job_id}/video.{extension}", name="job_video_file", response_class=FileResponse,
             responses=video_responses, summary="The finished video file, by a URL ending in its extension")
    async def job_video_file(job_id: str, extension: str, http: Request):
        return await video_response(job_id, http, head=False, extension=extension)

    @app.head("/jobs/{job_id}/video.{extension}", include_in_schema=False)
    async def job_video_file_head(job_id: str, extension: str, http: Request):
        return await video_response(job_id, http, head=True, extension=extension)

    @app.get("/jobs/{job_id}/events", name="job_events", summary="Server-sent events: progress, then the result",
             responses={200: {"content": {"text/event-stream": {}}}, **JOB_RESPONSES})
    async def job_events(job_id: str, http: Request):
        job = await state.find(job_id, http)
        if isinstance(job, JSONResponse):
            return job

        async def stream():
            # Woken by the worker on each change (no polling); a comment every 15 s keeps proxies from
            # closing an idle stream and finds clients that left.
            seen = -1
            while True:
                if job.version != seen:
                    seen = job.version
                    kind = "result" if job.status in TERMINAL else "progress"
                    body = StreamedJSON(state.view(job, http), job.video_path)
                    try:
                        await body.open()
                    except OSError:  # expired between the view and now
                        body = StreamedJSON({**state.view(job, http), "video_available": False}, None)
                    yield f"event: {kind}\ndata: ".encode()
                    async for part in body.parts():
                        yield part
                    yield b"\n\n"
                    if kind == "result":
                        return
                    await asyncio.sleep(0.1)  # at most ~10 progress events a second; the result is never late
                if not await state.changes.changed(job, seen, 15):
                    yield b": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    # The other protocols: their own routes over the same request model, queue, ownership and errors.
    protocols = ProtocolContext(settings=settings, model=lambda: state.model, unavailable=state.unavailable,
                                submit=state.submit, find=state.find,
                                video=lambda job_id, http: video_response(job_id, http, head=False),
                                list_jobs=state.list_jobs, url=state.url, manager=lambda: state.manager)
    openai_api.install(app, protocols)
    ltx_api.install(app, protocols)
    trainings.install(app, state)  # /trainings: LoRA training on the same device, in turns with the jobs

    @app.get("/health", summary="Liveness, the loaded model, the worker, storage and the queue",
             responses={503: {"description": "Jobs cannot run now: the model is loading or failed to load, the "
                                             "GPU worker is down or stuck, or storage is failing (`problems`)."}})
    async def health(http: Request) -> JSONResponse:
        if state.load_error is not None:
            return JSONResponse(status_code=503, content={"status": "unavailable", "error": state.load_error})
        if state.manager is None and state.storage_error is not None:
            return JSONResponse(status_code=503, content={"status": "unavailable", "storage": {
                "ok": False, "error": state.storage_error}, "problems": [f"storage is failing: {state.storage_error}"]})
        if state.model is None or state.manager is None:
            return JSONResponse(status_code=503, content={"status": "loading"})
        manager = state.manager
        running = manager.running
        progress = {"step": running.step, "total": running.total} if running else None
        if running and caller_of(http).admin:  # job ids only to the operators' key: /health is open
            progress["job"] = running.id
        checks = manager.health(caller_of(http).admin)
        group = rank_group.health()  # --parallel: a follower that exited means no job can run
        if group is not None and group["exited"]:
            checks = {**checks, "ready": False, "problems": [*checks["problems"], *(
                f"rank {rank} of the --parallel group has exited: jobs fail until the server restarts"
                for rank in group["exited"])]}
        try:  # the model and memory reports read /proc: that fails when no file descriptors are left
            model, memory = state.model.describe(), state.memory_report()
        except OSError as exc:
            problem = f"the server cannot open files ({os.strerror(exc.errno) if exc.errno else exc})"
            return JSONResponse(status_code=503, content={"status": "unavailable", "problems": [
                *checks["problems"], problem], "worker": checks["worker"], "storage": checks["storage"]})
        status = "shutting_down" if not manager.accepting else "healthy" if checks["ready"] else "unavailable"
        return JSONResponse(status_code=200 if status != "unavailable" else 503, content={
            "status": status,
            "problems": checks["problems"],
            "worker": checks["worker"],
            "storage": checks["storage"],
            "model": model,
            "jobs_waiting_or_running": manager.depth + len(manager.running_jobs),
            "queue": {"waiting": manager.depth, "capacity": manager.queue_size},
            "progress": progress,
            "memory": memory,
            **({"parallel": group} if group is not None else {}),
            **({"devices": checks["lanes"], "out_of_service": checks["out_of_service"]}
               if "lanes" in checks else {}),  # --devices: each worker, and those taken out of service
        })

    @app.head("/health", include_in_schema=False)
    async def health_head(http: Request) -> Response:
        answer = await health(http)
        return Response(status_code=answer.status_code, media_type="application/json")

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        device = state.model.device if state.model is not None else None
        return PlainTextResponse(state.metrics.render(state.manager, device),
                                 media_type="text/plain; version=0.0.4")

    @app.get("/", summary="What this API does and its effective defaults (JSON; a browser goes to /playground)")
    async def index(http: Request):
        if "text/html" in http.headers.get("accept", ""):  # a browser, not an API client
            return RedirectResponse(str(http.url_for("playground")), status_code=303)
        return {
            "name": "ltx2",
            "version": __version__,
            "description": DESCRIPTION,
            "model": state.model.describe() if state.model is not None else None,
            "endpoints": {
                "POST /generate": "generate a video; returns the MP4 as a data URI (or a URL)",
                "POST /jobs": "queue a video; returns a job id at once (202)",
                "GET /jobs/{id}": "a job's status, queue position, progress, timings and result",
                "GET /jobs/{id}/events": "server-sent events: progress per step, then the result",
                "DELETE /jobs/{id}": "cancel a job",
                "GET /jobs/{id}/video": "the finished MP4",
                "POST /v1/videos": "OpenAI Videos API: create (JSON or multipart); GET, list, /content, DELETE",
                "GET /v1/models": "the loaded model by each name `model` takes, with its model_family (OpenAI's list)",
                "POST /v1/generations/{text,image,audio}-to-video": "the LTX API: queue a generation (JSON or "
                                                                     "multipart); GET /v1/generations/{id} polls",
                "GET /metrics": "Prometheus metrics",
                "GET /health": "liveness and the loaded model",
                "GET /docs": "interactive API documentation (Swagger UI)",
                "GET /playground": "a web page to generate videos and watch their progress",
                "GET /openapi.json": "the OpenAPI schema",
            },
            # Each one, sent back, is accepted by the loaded model. seed and the inputs are empty by default.
            "defaults": request_defaults(state.model),
            "rules": request_rules(),
            "fields": sorted(GenerateRequest.model_fields),
            "fal_fields": {**FAL_RENAMES, "sync_mode": "response_format", "video_size": "width, height (as "
                           "{width, height})", "enable_safety_checker": "false only", "acceleration": '"none" only'},
            "memory": state.memory_report(),
        }

    return app
