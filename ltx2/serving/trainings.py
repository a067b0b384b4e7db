"""The training routes: `POST /trainings`, `GET`/`DELETE /trainings/{id}`, `/trainings/{id}/events`.

A training is a job on the same device as the generation jobs: `DeviceTurns` hands the device out in
arrival order, so a training waits for the video being made, and videos queued behind a training wait
until it ends (their job shows it is waiting for the device). One training runs at a time; at most
`LTX2_TRAINING_QUEUE` wait. The same API keys and ownership as jobs: another key's training is a 404.

Records are one JSON file each under `<output dir>/trainings/`, written at every change of status and
at every checkpoint (not at every step), so a restart lists what ran; a training that was running when
the server stopped is reported failed, with its last checkpoint in place. (They are not in the jobs
database: its schema is the generation request's.)

What is refused before anything is spent: the fields (a 422 naming the field and the rule), a dataset
name outside `<models dir>/datasets/`, a LoRA name already taken by a file this server did not train, a
body larger than LTX2_TRAINING_DATASET_MB, a full queue (429), a run the memory rule says cannot fit
(413). Then, on the training's own thread, the dataset's names and declared sizes, each clip in the
sandbox: a refusal fails the training with the 4xx body naming the file.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections import deque
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..media.fetch import FetchPolicy, fetch, is_url
from ..models.download import LORAS_DIR
from ..schema import ErrorResponse, InvalidRequest, validation_error_body
from ..training import TrainingConfig, TrainingStopped, train
from ..training.dataset import DatasetLimits, check_zip, prepare, read_folder, read_zip
from ..training.memory import LOW_VRAM, choose
from .security import caller_of

log = logging.getLogger("ltx2.trainings")
MB = 1024 * 1024
DATASETS_DIR = "datasets"
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_LOSSES = 2000  # loss points kept for the plot; beyond, every other one is dropped


class TrainingRequest(BaseModel):
    """A LoRA training (ltx-trainer's t2v_lora.yaml values as defaults)."""

    model_config = ConfigDict(extra="forbid")

    dataset: str | None = Field(None, max_length=2048, description=(
        "An http(s) URL of a zip (fetched under the same guard as image URLs), or the name of a zip or folder "
        "under <models dir>/datasets/; or leave it out and upload the zip as the multipart field `dataset`."),
        examples=["my-clips.zip"])
    name: str = Field(description="The LoRA's name: it is written to <models dir>/loras/<name>.safetensors, and "
                      "the next request uses it as loras: [{\"path\": name}]", examples=["neon-street"])
    mode: Literal["t2v", "i2v"] = Field("t2v", description="t2v: text to video. i2v: each clip's first frame is "
                                        "kept clean as the condition, as ltx-trainer's first-frame conditioning.",
                                        examples=["t2v"])
    rank: int = Field(32, ge=1, le=256, description="LoRA rank (ltx-trainer's default 32).", examples=[32])
    alpha: float | None = Field(None, gt=0, le=1024, description="LoRA alpha; empty: the rank (a scale of 1)",
                                examples=[32])
    steps: int = Field(2000, ge=1, le=100_000, description="Optimizer steps.", examples=[2000])
    learning_rate: float = Field(1e-4, gt=0, le=1.0, description="AdamW's learning rate (linear decay).",
                                 examples=[1e-4])
    resolution: str = Field("768x512", description="WxH, each a multiple of 32 from 64 to 1920: every clip is "
                            "cropped and scaled to it", examples=["768x512"])
    num_frames: int = Field(49, ge=9, le=257, description="8k+1 frames per clip (its first ones)", examples=[49])
    trigger: str | None = Field(None, max_length=64, description="A word put before every caption",
                                examples=["NEONST"])
    checkpoint_every: int = Field(250, ge=1, le=100_000, description="Save the LoRA every this many steps (a cancel "
                                  "keeps the last one).", examples=[250])
    validation_prompt: str | None = Field(None, max_length=2000, description="Recorded with the LoRA's metadata",
                                          examples=["NEONST a street at dusk"])
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seeds the timesteps, the noise and the LoRA's start.",
                      examples=[42])
    memory_mode: Literal["auto", "full", "low_vram"] = Field(
        "auto", description="auto: full when the device holds it, else low_vram (optimizer state on the host), "
        "else refused with 413", examples=["auto"])

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not NAME.match(value) or value.endswith(".safetensors"):
            raise ValueError("name must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, "
                             "without .safetensors")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str) -> str:
        match = re.fullmatch(r"(\d{2,4})x(\d{2,4})", value)
        if not match or not all(64 <= int(s) <= 1920 and int(s) % 32 == 0 for s in match.groups()):
            raise ValueError("resolution must be 'WxH', each side a multiple of 32 from 64 to 1920 (e.g. '768x512')")
        return value

    @field_validator("num_frames")
    @classmethod
    def _frames(cls, value: int) -> int:
        if (value - 1) % 8:
            raise ValueError("num_frames must be 8k+1 (9, 17, 25, ... 257)")
        return value

    @model_validator(mode="after")
    def _checkpoints(self):
        self.checkpoint_every = min(self.checkpoint_every, self.steps)
        return self

    @property
    def size(self) -> tuple[int, int]:
        width, height = self.resolution.split("x")
        return int(width), int(height)


class DeviceTurns:
    """The device, handed out in arrival order (a ticket lock): generation jobs and trainings take turns.
    `hold(check)` waits for its turn, calling `check()` (which raises to give up) every 0.2 s."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._next = self._serving = 0
        self.holder: str | None = None

    def hold(self, check=None, who: str = "job"):
        turns = self

        class _Turn:
            def __enter__(self):
                with turns._cv:
                    self.ticket = turns._next
                    turns._next += 1
                    try:
                        while turns._serving != self.ticket:
                            turns._cv.wait(0.2)
                            if check is not None and turns._serving != self.ticket:
                                check()
                    except BaseException:
                        turns._skip(self.ticket)
                        raise
                    turns.holder = who
                return self

            def __exit__(self, *exc):
                with turns._cv:
                    turns.holder = None
                    turns._advance()
                return False

        return _Turn()

    def _skip(self, ticket: int) -> None:  # a waiter gave up: its turn passes when it comes
        self._skipped = getattr(self, "_skipped", set()) | {ticket}

    def _advance(self) -> None:
        self._serving += 1
        skipped = getattr(self, "_skipped", set())
        while self._serving in skipped:
            skipped.discard(self._serving)
            self._serving += 1
        self._cv.notify_all()

    @property
    def waiting(self) -> int:
        return self._next - self._serving - (1 if self.holder else 0)


class Training:
    """One training's record: what was asked, where it stands, what it made."""

    def __init__(self, id: str, owner: str | None, request: dict, **state):
        self.id, self.owner, self.request = id, owner, request
        self.status = state.get("status", QUEUED)
        self.created = state.get("created", time.time())
        self.started, self.finished = state.get("started"), state.get("finished")
        self.step, self.steps = state.get("step", 0), request.get("steps", 0)
        self.loss, self.losses, self.eta_s = state.get("loss"), state.get("losses", []), state.get("eta_s")
        self.stage = state.get("stage", "queued")
        self.checkpoint_step = state.get("checkpoint_step")
        self.lora, self.memory = state.get("lora"), state.get("memory")
        self.error, self.error_status = state.get("error"), state.get("error_status")
        self.dataset_path = state.get("dataset_path")  # an uploaded or fetched zip, deleted when it ends
        self.version = 0
        self.cancel = threading.Event()

    def record(self) -> dict:
        keys = ("status", "created", "started", "finished", "step", "loss", "losses", "eta_s", "stage",
                "checkpoint_step", "lora", "memory", "error", "error_status", "dataset_path")
        return {"id": self.id, "owner": self.owner, "request": self.request, **{k: getattr(self, k) for k in keys}}

    def view(self, position: int | None) -> dict:
        return {"id": self.id, "object": "training", "status": self.status, "stage": self.stage,
                "position": position, "step": self.step, "steps": self.steps, "loss": self.loss,
                "losses": self.losses, "eta_seconds": self.eta_s, "checkpoint_step": self.checkpoint_step,
                "lora": self.lora, "memory": self.memory, "error": self.error, "error_status": self.error_status,
                "created": self.created,
                "started": self.started, "finished": self.finished,
                "request": {k: v for k, v in self.request.items() if k != "dataset" or not _is_upload(v)}}


def _is_upload(value) -> bool:
    return isinstance(value, str) and value.startswith("upload:")


class TrainingManager:
    """The trainings' queue, their one thread, and their records."""

    def __init__(self, state, turns: DeviceTurns):
        self.state, self.turns = state, turns
        settings = state.settings
        self.folder = os.path.join(settings.output_dir, "trainings")
        self.uploads = os.path.join(self.folder, "uploads")
        os.makedirs(self.uploads, exist_ok=True)
        self.queue_size = int(getattr(settings, "training_queue", 4))
        self.limits = DatasetLimits.from_settings(settings)
        self.trainings: dict[str, Training] = {}
        self.waiting: deque[str] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._recover()

    # -- records ----------------------------------------------------------------------------------

    def _path(self, training_id: str) -> str:
        return os.path.join(self.folder, training_id + ".json")

    def _save(self, t: Training) -> None:
        try:
            with open(self._path(t.id) + ".part", "w") as fh:
                json.dump(t.record(), fh)
            os.replace(self._path(t.id) + ".part", self._path(t.id))
        except OSError as exc:  # the training goes on; its record is written again at its next change
            log.error(json.dumps({"event": "training_record_failed", "training": t.id, "error": str(exc)}))

    def _recover(self) -> None:
        for entry in sorted(os.listdir(self.folder)):
            if not entry.endswith(".json"):
                continue
            try:
                with open(os.path.join(self.folder, entry)) as fh:
                    data = json.load(fh)
                t = Training(data.pop("id"), data.pop("owner"), data.pop("request"), **data)
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if t.status not in TERMINAL:  # queued or running when the server stopped
                t.status, t.finished, t.stage = FAILED, time.time(), "failed"
                t.error = ErrorResponse(error="the server restarted while this training was queued or running; "
                                              "its last checkpoint (if any) is in place", code="interrupted").model_dump()
                t.error_status = 500
                self._remove_upload(t)
                self._save(t)
            self.trainings[t.id] = t

    def _changed(self, t: Training) -> None:
        t.version += 1
        self.state.changes.notify(t)

    # -- submitting -------------------------------------------------------------------------------

    def submit(self, request: TrainingRequest, owner: str | None, upload: str | None) -> Training:
        with self._cv:
            if len(self.waiting) >= self.queue_size:
                raise InvalidRequest("dataset", f"{len(self.waiting)} trainings are waiting, the limit "
                                                f"(LTX2_TRAINING_QUEUE); try again later", 429)
            t = Training(uuid.uuid4().hex, owner, request.model_dump(), dataset_path=upload)
            if upload is not None:
                t.request["dataset"] = "upload:" + os.path.basename(upload)
            self.trainings[t.id] = t
            self.waiting.append(t.id)
            self._save(t)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="ltx2-training", daemon=True)
                self._thread.start()
            self._cv.notify_all()
        return t

    def position(self, t: Training) -> int | None:
        with self._cv:
            return list(self.waiting).index(t.id) + 1 if t.id in self.waiting else None

    def cancel(self, t: Training) -> None:
        t.cancel.set()
        with self._cv:
            if t.id in self.waiting:
                self.waiting.remove(t.id)
                self._finish(t, CANCELLED)

    # -- running ----------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self.state.stopping.is_set():
            with self._cv:
                while not self.waiting and not self.state.stopping.is_set():
                    self._cv.wait(1)
                if self.state.stopping.is_set():
                    return
                t = self.trainings[self.waiting.popleft()]
            try:
                self._run(t)
            except Exception as exc:  # noqa: BLE001 - a failed training must not stop the next one
                log.exception("training %s failed", t.id)
                self._finish(t, FAILED, ErrorResponse(error=f"training failed: {type(exc).__name__}: {exc}",
                                                      code="training_failed").model_dump(), 500)

    def _stop_reason(self, t: Training):
        if t.cancel.is_set():
            return "cancelled"
        if self.state.stopping.is_set():
            return "the server is shutting down"
        return None

    def _check(self, t: Training):
        def check():
            if (why := self._stop_reason(t)) is not None:
                raise TrainingStopped(why, 0)
        return check

    def _run(self, t: Training) -> None:
        request = TrainingRequest(**{**t.request, "dataset": None})
        state, model = self.state, self.state.model
        t.status, t.started, t.stage = RUNNING, time.time(), "waiting for the device"
        self._save(t)
        self._changed(t)
        try:
            with self.turns.hold(self._check(t), who=f"training {t.id}"):
                self._train(t, request, model, state)
        except TrainingStopped as exc:
            if t.checkpoint_step:
                t.lora = {**(t.lora or {}), "steps": t.checkpoint_step}
            self._finish(t, CANCELLED if exc.why == "cancelled" else FAILED,
                         None if exc.why == "cancelled" else ErrorResponse(error=f"stopped: {exc.why}",
                                                                           code="interrupted").model_dump(), 503)
        except InvalidRequest as exc:
            self._finish(t, FAILED, exc.body(), exc.status)

    def _train(self, t: Training, request: TrainingRequest, model, state) -> None:
        width, height = request.size
        t.stage = "reading the dataset"
        self._changed(t)
        clips = self._clips(t)
        choice = choose(model, _free_device_bytes(model), width=width, height=height, num_frames=request.num_frames,
                        fps=24, rank=request.rank, requested=request.memory_mode)
        if choice is None:
            raise InvalidRequest("resolution", f"training at {request.resolution}x{request.num_frames} with rank "
                                               f"{request.rank} does not fit this device's free memory: lower them",
                                 413)
        t.memory = choice.report()
        t.stage = "encoding the clips"
        self._changed(t)

        def on_clip(done, total):
            t.stage = f"encoding the clips ({done}/{total})"
            self._changed(t)

        should_stop = lambda: (TrainingStopped(why, 0) if (why := self._stop_reason(t)) else None)  # noqa: E731
        samples = prepare(model, clips, width=width, height=height, num_frames=request.num_frames,
                          trigger=request.trigger, sandbox=state.sandbox,
                          cache_dir=os.path.join(self.folder, "cache"), should_stop=should_stop, on_clip=on_clip,
                          fetch_policy=state.fetch_policy)
        del clips
        loras = os.path.join(state.settings.models_dir, LORAS_DIR)
        path = os.path.join(loras, request.name + ".safetensors")
        t.lora = {"name": request.name, "path": path}
        config = TrainingConfig(
            output=path, mode=request.mode, rank=request.rank, alpha=float(request.alpha or request.rank),
            steps=request.steps, learning_rate=request.learning_rate, checkpoint_every=request.checkpoint_every,
            seed=request.seed, offload_optimizer=choice.mode == LOW_VRAM,
            metadata={"base_model": str(getattr(model, "name", "")), "family": model.family.name,
                      "trained_by": "ltx2", "resolution": request.resolution, "num_frames": request.num_frames,
                      "trigger": request.trigger or "", "validation_prompt": request.validation_prompt or "",
                      "clips": len(samples), "memory_mode": choice.mode})
        t.stage = "training"
        self._changed(t)

        def on_progress(p):
            t.step, t.loss, t.eta_s = p.step, p.loss, p.eta_s
            t.losses.append(round(p.loss, 6))
            if len(t.losses) > MAX_LOSSES:
                t.losses = t.losses[::2]
            if p.checkpoint:
                t.checkpoint_step = p.step
                self._save(t)
            self._changed(t)

        with model.lock if hasattr(model, "lock") else _nothing():
            train(model, samples, config, on_progress=on_progress, should_stop=lambda: self._stop_reason(t))
        t.lora = {**t.lora, "steps": t.checkpoint_step}
        self._finish(t, SUCCEEDED)

    def _clips(self, t: Training):
        value = t.dataset_path or t.request.get("dataset")
        if t.dataset_path:
            return read_zip(t.dataset_path, self.limits)
        if is_url(value):
            data, _ = fetch(value, "dataset", self.limits.max_total_bytes, self.state.fetch_policy or FetchPolicy())
            with tempfile.NamedTemporaryFile(dir=self.uploads, suffix=".zip", delete=False) as fh:
                fh.write(data)
            t.dataset_path = fh.name
            del data
            return read_zip(t.dataset_path, self.limits)
        path = dataset_path(self.state.settings.models_dir, value)
        return read_zip(path, self.limits) if os.path.isfile(path) else read_folder(path, self.limits)

    def _finish(self, t: Training, status: str, error: dict | None = None, error_status: int | None = None) -> None:
        t.status, t.finished, t.stage = status, time.time(), status
        t.error, t.error_status = error, (error_status if error else None)
        self._remove_upload(t)
        self._save(t)
        self._changed(t)

    def _remove_upload(self, t: Training) -> None:
        if t.dataset_path and os.path.dirname(os.path.abspath(t.dataset_path)) == os.path.abspath(self.uploads):
            try:
                os.remove(t.dataset_path)
            except OSError:
                pass
        t.dataset_path = None


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _free_device_bytes(model) -> int | None:
    import torch

    if model.device.type != "cuda":
        return None  # host memory holds everything; the generation admission rule guards it
    free, _ = torch.cuda.mem_get_info(model.device)
    return int(free + torch.cuda.memory_reserved(model.device) - torch.cuda.memory_allocated(model.device))


def dataset_path(models_dir: str, name: str) -> str:
    """`<models dir>/datasets/<name>` (a zip or a folder); anything that leaves that folder is refused."""
    root = os.path.realpath(os.path.join(models_dir, DATASETS_DIR))
    path = os.path.realpath(os.path.join(root, name))
    if os.path.dirname(path) != root or not os.path.exists(path):
        raise InvalidRequest("dataset", f"dataset {name!r} is neither an http(s) URL nor a zip or folder directly "
                                        f"under <models dir>/{DATASETS_DIR}/")
    return path


def _error(status: int, message: str, code: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=ErrorResponse(error=message, code=code, field=field).model_dump())


def install(app: FastAPI, state) -> None:
    """The routes, and the device turns shared with the generation worker (wrapping its `_run_job`)."""
    turns = DeviceTurns()
    run_job = state._run_job

    def run_job_in_turn(job, on_step):
        if turns.holder is not None or turns.waiting:
            job.stage = "waiting for the device (a training holds it)"
        def waiting() -> None:
            # Its time limit (and the supervisor's stuck watch) begins when it gets the device: until then
            # its start moves with the clock, and only a cancel ends it.
            job.started = time.time()
            if job.cancel.is_set():
                job.check()

        with turns.hold(waiting, who=f"job {job.id}"):
            job.started = time.time()
            return run_job(job, on_step)

    state._run_job = run_job_in_turn  # read by _open_jobs when the job manager starts
    holder: dict[str, TrainingManager] = {}

    def manager() -> TrainingManager:
        if "m" not in holder:
            holder["m"] = TrainingManager(state, turns)
        return holder["m"]

    def refuse_unavailable() -> JSONResponse | None:
        if state.model is None:
            return _error(503, f"the model is not loaded: {state.load_error or 'still loading'}", "unavailable")
        return None

    async def find(training_id: str, http: Request) -> Training | JSONResponse:
        if (refusal := refuse_unavailable()) is not None:
            return refusal
        t = (await asyncio.to_thread(manager)).trainings.get(training_id)
        if t is None or not caller_of(http).sees(t.owner, state.keys_configured):
            return _error(404, f"no training {training_id!r}", "not_found")
        return t

    def view(t: Training, http: Request) -> dict:
        body = t.view(manager().position(t))
        body["links"] = {"self": state.url(http, "get_training", training_id=t.id),
                         "events": state.url(http, "training_events", training_id=t.id)}
        return body

    limit_mb = float(getattr(state.settings, "training_dataset_mb", 2048))

    @app.post("/trainings", status_code=202, tags=["trainings"], name="create_training",
              summary="Train a LoRA on a dataset of captioned clips (queued on the same device as videos)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": TrainingRequest.model_json_schema(
                      ref_template="#/components/schemas/{model}")}, "multipart/form-data": {"schema": {
                          "type": "object", "required": ["dataset", "name"],
                          "properties": {"dataset": {"type": "string", "format": "binary", "description":
                                                     "A zip of clips, each with a caption .txt of the same name"},
                                         "name": {"type": "string"}},
                          "additionalProperties": {"type": "string"}}}}}},
              responses={422: {"model": ErrorResponse, "description": "A field breaks its rule (named in field)"},
                         413: {"model": ErrorResponse, "description": "The dataset is too large"},
                         409: {"model": ErrorResponse, "description": "The server runs a worker per device "
                                                                      "(--devices) or on Ray Serve: it does not "
                                                                      "train"},
                         503: {"model": ErrorResponse, "description": "The model is not loaded"}})
    async def create_training(http: Request) -> JSONResponse:
        if (refusal := refuse_unavailable()) is not None:
            return refusal
        if getattr(state, "device_pool", None) is not None:  # the rule for --devices: no device to train on here
            return _error(409, "this server runs one worker process per device (--devices); training runs on a "
                          "one-device server (its model in the server's own process): start one to train",
                          "training_unavailable")
        if getattr(state, "run_elsewhere", None) is not None:  # Ray Serve: this process holds a CPU copy only
            return _error(409, "this server runs on Ray Serve (ltx2 serve --ray), its models in the generation "
                          "replicas; training runs on a one-device server (its model in the server's own "
                          "process): start one to train", "training_unavailable")
        kind = http.headers.get("content-type", "").split(";")[0].strip().lower()
        upload = None
        try:
            if kind == "multipart/form-data":
                fields, upload = await _read_form(http, manager().uploads, limit_mb)
            elif kind in ("application/json", ""):
                try:
                    fields = json.loads(await http.body() or b"null")
                except ValueError:
                    return _error(422, "the body is not JSON", "invalid_request")
                if not isinstance(fields, dict):
                    return _error(422, "the body must be a JSON object of the training's fields", "invalid_request")
            else:
                return _error(415, f"send JSON or multipart/form-data, not {kind!r}", "unsupported_media_type")
            request = TrainingRequest.model_validate(fields)
            if upload is None and not request.dataset:
                raise InvalidRequest("dataset", "dataset is required: upload a zip as the multipart field `dataset`, "
                                                "or give a URL or a name under <models dir>/datasets/")
            if upload is not None and request.dataset:
                raise InvalidRequest("dataset", "dataset: give either an upload or a URL / name, not both")
            if request.dataset and not is_url(request.dataset):
                dataset_path(state.settings.models_dir, request.dataset)
            _check_name(state.settings.models_dir, request.name)
            if upload is not None:  # names and declared sizes judged now: a hostile zip is answered at once
                await asyncio.to_thread(check_zip, upload, manager().limits)
            t = await asyncio.to_thread(manager().submit, request, caller_of(http).name, upload)
            upload = None  # the training owns it now
        except ValidationError as exc:
            return JSONResponse(status_code=422, content=validation_error_body(list(exc.errors())))
        except InvalidRequest as exc:
            return JSONResponse(status_code=exc.status, content=exc.body())
        finally:
            if upload is not None:
                os.remove(upload)
        return JSONResponse(status_code=202, content=view(t, http), headers={"Location": view(t, http)["links"]["self"]})

    missing = {404: {"model": ErrorResponse, "description": "No such training (or another key's)"},
               503: {"model": ErrorResponse, "description": "The model is not loaded"}}

    @app.get("/trainings/{training_id}", name="get_training", tags=["trainings"], responses=missing,
             summary="A training's status, step, loss (and the losses so far), ETA and LoRA")
    async def get_training(training_id: str, http: Request):
        t = await find(training_id, http)
        return t if isinstance(t, JSONResponse) else JSONResponse(view(t, http))

    @app.delete("/trainings/{training_id}", name="cancel_training", tags=["trainings"],
                responses={**missing, 409: {"model": ErrorResponse, "description": "The training has ended"}},
                summary="Cancel a training: a queued one is removed, a running one stops; its last checkpoint stays")
    async def cancel_training(training_id: str, http: Request):
        t = await find(training_id, http)
        if isinstance(t, JSONResponse):
            return t
        if t.status in TERMINAL:
            return _error(409, f"training {training_id} has already {t.status}", "conflict")
        manager().cancel(t)
        deadline = time.monotonic() + 60
        while t.status not in TERMINAL and time.monotonic() < deadline:  # it stops at its next step
            await state.changes.changed(t, t.version, 1)
        return JSONResponse(view(t, http))

    @app.get("/trainings/{training_id}/events", name="training_events", tags=["trainings"], responses=missing,
             summary="Server-sent events: progress (step, loss, ETA), then the result")
    async def training_events(training_id: str, http: Request):
        t = await find(training_id, http)
        if isinstance(t, JSONResponse):
            return t

        async def stream():
            seen = -1
            while True:
                if t.version != seen:
                    seen = t.version
                    kind = "result" if t.status in TERMINAL else "progress"
                    body = view(t, http)
                    if kind == "progress":  # the whole curve once per stream is enough: then the new point
                        body["losses"] = body["losses"][-1:]
                    yield f"event: {kind}\ndata: {json.dumps(body)}\n\n".encode()
                    if kind == "result":
                        return
                    await asyncio.sleep(0.1)
                if not await state.changes.changed(t, seen, 15):
                    yield b": keep-alive\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _check_name(models_dir: str, name: str) -> None:
    """A LoRA file of that name that this server did not train is not overwritten."""
    path = os.path.join(models_dir, LORAS_DIR, name + ".safetensors")
    if not os.path.exists(path):
        return
    try:
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            ours = (f.metadata() or {}).get("trained_by") == "ltx2"
    except Exception:  # noqa: BLE001 - unreadable: not ours
        ours = False
    if not ours:
        raise InvalidRequest("name", f"name {name!r}: {LORAS_DIR}/{name}.safetensors exists and was not trained here; "
                                     "choose another name", 409)


async def _read_form(http: Request, folder: str, limit_mb: float) -> tuple[dict, str | None]:
    """The multipart fields, and the `dataset` file streamed to disk under a cap (never held in memory)."""
    from python_multipart import MultipartParser
    from python_multipart.multipart import parse_options_header

    _, params = parse_options_header(http.headers["content-type"])
    boundary = params.get(b"boundary")
    if not boundary:
        raise InvalidRequest("dataset", "multipart/form-data without a boundary")
    limit = int(limit_mb * MB)
    fields: dict[str, str] = {}
    part: dict = {}
    fd, path = tempfile.mkstemp(dir=folder, suffix=".zip")
    out = os.fdopen(fd, "wb")
    state = {"size": 0, "files": 0}

    def on_part_begin():
        part.clear()
        part.update(headers={}, data=bytearray(), name=None, file=False)

    def on_header_field(data, start, end):
        part["header"] = bytes(data[start:end]).decode("latin-1").lower()

    def on_header_value(data, start, end):
        part["headers"][part["header"]] = bytes(data[start:end]).decode("latin-1")

    def on_headers_finished():
        _, p = parse_options_header(part["headers"].get("content-disposition", ""))
        part["name"] = (p.get(b"name") or b"").decode()
        part["file"] = b"filename" in p
        if part["file"]:
            if part["name"] != "dataset" or state["files"]:
                raise InvalidRequest(part["name"] or "dataset", "only one file, named `dataset`, may be uploaded")
            state["files"] += 1

    def on_part_data(data, start, end):
        if part["file"]:
            state["size"] += end - start
            if state["size"] > limit:
                raise InvalidRequest("dataset", f"dataset is larger than {limit_mb:g} MB, the limit "
                                                "(LTX2_TRAINING_DATASET_MB)", 413)
            out.write(data[start:end])
        else:
            part["data"] += data[start:end]
            if len(part["data"]) > 8192:
                raise InvalidRequest(part["name"], f"{part['name']} is longer than 8192 bytes")

    def on_part_end():
        if not part["file"]:
            if len(fields) >= 32:
                raise InvalidRequest(part["name"], "more than 32 form fields")
            fields[part["name"]] = part["data"].decode("utf-8", "replace")

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_headers_finished": on_headers_finished,
                                        "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        async for chunk in http.stream():
            parser.write(chunk)
        parser.finalize()
    except InvalidRequest:
        out.close()
        os.remove(path)
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed body
        out.close()
        os.remove(path)
        raise InvalidRequest("dataset", f"the multipart body could not be read ({type(exc).__name__})") from None
    out.close()
    if not state["files"]:
        os.remove(path)
        return fields, None
    return fields, path
