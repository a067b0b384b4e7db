"""The same server on a Ray Serve cluster: `serve run ltx2.serving.ray_app:app` or `ltx2 serve --ray`.

Two deployments:
- **API**: the FastAPI app of one box (`create_app`: every route, key, limit, page), behind Ray Serve's
  ingress. It keeps the job queue and the records (SQLite, or PostgreSQL for several API replicas), fetches
  and decodes each job's inputs with its model on `meta` (no weights), and hands the prepared job
  (remote_job.pack) to Generation. Its job manager has one lane per
  generation slot (`--replicas`, or the autoscaler's maximum), so the queue, positions, 429 + Retry-After,
  cancel and time limits are those of one box.
- **Generation**: one replica per GPU (`num_gpus=1`; on CPU a share of the cores), each loading the model
  once and judging each job against its own memory (admission) before running it. A job runs as one streaming call: the replica yields `started` (its name), each step and stage,
  then the result with the MP4's bytes (one file, not frames). Cancelling the call (a cancel, a time
  limit) stops the job at its next step. A replica that dies mid-job fails that job `worker_lost`; a job
  whose replica died before it started is sent again, and Ray Serve routes it to a live replica.

Autoscaling follows queue depth: each lane's call waits in Ray Serve's router until a replica is free, and
the autoscaler counts those waiting calls (`target_ongoing_requests` 1: one replica per running or waiting
job, between the minimum and the maximum).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
from dataclasses import replace

from . import remote_job
from .admission import Admission, frames_of
from .faults import free_gpu_memory
from .lanes import JobFailed, WorkerLost
from .service import load_for_serving
from ..media.fetch import FetchPolicy
from ..pipelines.loras import LoraPolicy
from ..settings import Settings, configure_logging, parse_replicas

log = logging.getLogger("ltx2.ray")

APP_NAME = "ltx2"
STARTS = 3  # sends of one job whose replica died before it started it (then: worker_lost)
LOCAL_OBJECT_STORE = 512 * 2**20  # bytes, for a cluster `ltx2 serve --ray` starts itself
POLL = 0.5  # seconds between the API's checks of a job's cancel flag and time limit while its replica is silent


# ---------------------------------------------------------------------------------------------- Generation


class Generation:
    """A replica: the model loaded once, one job at a time (a second call waits for the first's thread,
    even one cancelled a moment ago, so two renders never share the device). A job runs as in a --devices
    worker (remote_job.run_packed), judged first against this replica's own memory."""

    def __init__(self, settings: Settings):
        configure_logging(settings)
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.model = load_for_serving(settings)
        try:  # memory admission on this replica's device (the API's process has no device to judge by)
            self.admission = Admission(self.model, settings.memory_margin, settings.memory_cgroup)
        except Exception:  # noqa: BLE001 - as on one box: unchecked rather than down
            self.admission = None
        self.fetch_policy = FetchPolicy.from_settings(settings)
        self.lora_policy = LoraPolicy.from_settings(settings)
        self._device = threading.Lock()
        log.info(json.dumps({"event": "generation_replica_ready", "replica": self.name}))

    def _render(self, payload: dict, emit, stopped: threading.Event) -> None:
        with self._device:
            if stopped.is_set():
                return
            emit({"type": "started", "replica": self.name})
            try:
                if self.admission is not None:
                    request = payload["request"]
                    self.admission.check(request, None, frames_of(request))
                result, mp4 = remote_job.run_packed(
                    self.model, payload, emit, stopped.is_set, fetch_policy=self.fetch_policy,
                    lora_policy=self.lora_policy, encode_threads=self.settings.encode_threads,
                    admission=self.admission)
                emit({"type": "done", "result": {**result, "replica": self.name}, "mp4": mp4})
            except remote_job.Stopped:
                emit({"type": "stopped"})
            except Exception as exc:  # noqa: BLE001 - the API fails the job with it, as one box would
                body, status, fault = remote_job.failure(exc, payload["request"])
                if status == 500:
                    log.exception("job %s failed on replica %s", payload["job"], self.name)
                free_gpu_memory()
                emit({"type": "failed", "body": body, "status": status, "device_fault": fault})
                if fault:  # a poisoned CUDA context: this process cannot run another job; Ray starts another
                    threading.Timer(1.0, os._exit, (3,)).start()

    async def run(self, payload: dict):
        """Run one packed job (remote_job.pack), yielding its events; ends with done, failed or stopped."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stopped = threading.Event()
        work = loop.run_in_executor(None, self._render, payload,
                                    lambda e: loop.call_soon_threadsafe(events.put_nowait, e), stopped)
        try:
            while True:
                waiting = asyncio.ensure_future(events.get())
                finished, _ = await asyncio.wait({waiting, work}, return_when=asyncio.FIRST_COMPLETED)
                if waiting not in finished:  # the thread ended without a last event (it found the call stopped)
                    waiting.cancel()
                    if events.empty():
                        return
                    waiting = asyncio.ensure_future(events.get())
                event = await waiting
                yield event
                if event["type"] in ("done", "failed", "stopped"):
                    return
        finally:  # cancelled by the API (asyncio.CancelledError) or ended: the thread stops at its next check
            stopped.set()

    def identity(self) -> str:
        return self.name


# ---------------------------------------------------------------------------------------------- the API side


def _lost(exc: BaseException) -> bool:
    from ray import exceptions as ray_errors

    return isinstance(exc, (ray_errors.RayActorError, ray_errors.ActorUnavailableError, ray_errors.WorkerCrashedError,
                            ray_errors.NodeDiedError))


class RemoteRunner:
    """Runs a prepared job on a Generation replica through the deployment handle, replaying its events
    into the job (steps, stages, the replica's name) and its cancel flag and time limit to the replica."""

    def __init__(self, handle):
        self.handle = handle

    def __call__(self, job, on_step, conditioning, loras):
        payload = remote_job.pack(job)
        for attempt in range(1, STARTS + 1):
            replica, outcome = self._once(job, on_step, payload)
            if outcome is not None:
                return outcome
            if replica is not None:
                raise WorkerLost(f"the generation replica {replica} running it was lost (its process or node died)")
            log.warning(json.dumps({"event": "replica_lost_before_start", "job": job.id, "attempt": attempt}))
        raise WorkerLost(f"no generation replica took the job ({STARTS} tries, each replica was lost)")

    def _once(self, job, on_step, payload: dict):
        """(the replica that started it or None, (result, mp4) or None when its replica was lost)."""
        stream = self.handle.options(stream=True).run.remote(payload)
        events: queue.Queue = queue.Queue()

        def pump() -> None:  # the handle's iterator blocks: read it here, check the job's flags below
            try:
                for event in stream:
                    events.put(event)
                events.put({"type": "ended"})
            except BaseException as exc:  # noqa: BLE001 - handed to the job's thread
                events.put({"type": "call_failed", "error": exc})

        threading.Thread(target=pump, name=f"ltx2-ray-{job.id[:8]}", daemon=True).start()
        job.stage, replica = "waiting_for_replica", None
        try:
            while True:
                try:
                    event = events.get(timeout=POLL)
                except queue.Empty:
                    job.check()  # raises on cancel or time limit: the call is cancelled below
                    continue
                kind = event["type"]
                if kind == "started":
                    replica, job.stage = event["replica"], "generating"
                    log.info(json.dumps({"event": "job_on_replica", "job": job.id, "replica": replica}))
                elif kind in ("step", "progress"):
                    remote_job.replay(job, on_step, event)
                elif kind == "done":
                    return replica, (event["result"], event["mp4"])
                elif kind == "failed":
                    raise JobFailed(event["body"], event["status"], device_fault=event["device_fault"])
                elif kind == "call_failed" and _lost(event["error"]):
                    return replica, None
                elif kind == "call_failed":
                    raise event["error"]
                else:  # stopped or ended without a result: the replica saw a cancel the job did not
                    job.check()
                    raise WorkerLost(f"the generation replica ended the call without a result ({kind})")
        except BaseException:
            stream.cancel()
            raise


# ---------------------------------------------------------------------------------------------- deployments


def generation_options(settings: Settings, low: int, high: int, cpus: float | None, gpus: float | None) -> dict:
    options: dict = {"name": "Generation", "max_ongoing_requests": 1, "graceful_shutdown_timeout_s": 30,
                     # Loading the 19B model takes minutes: the controller must not give up on a replica sooner.
                     "health_check_timeout_s": 60}
    if low == high:
        options["num_replicas"] = high
    else:  # one replica per running or waiting job, within min..max
        options["autoscaling_config"] = {"min_replicas": low, "max_replicas": high, "target_ongoing_requests": 1,
                                         "upscale_delay_s": 5, "downscale_delay_s": 300}
    if gpus is None:
        device = settings.device or ""
        gpus = 1 if device.startswith("cuda") else 0
    options["ray_actor_options"] = {"num_gpus": gpus, "num_cpus": cpus if cpus is not None else 1}
    return options


def build_app(settings: Settings | None = None, replicas: str | None = None, *, cpus: float | None = None,
              gpus: float | None = None, api_cpus: float = 0):
    """The application: API (one replica) in front of Generation. `replicas`: N or MIN-MAX (default
    LTX2_RAY_REPLICAS); `cpus`/`gpus`: each generation replica's share (default: one GPU when the device is
    cuda, else one core)."""
    from ray import serve

    settings = settings or Settings.from_env()
    low, high = parse_replicas(replicas if replicas is not None else settings.ray_replicas)
    generation = serve.deployment(Generation).options(**generation_options(settings, low, high, cpus, gpus))
    api = serve.deployment(serve.ingress()(API)).options(
        name="API", num_replicas=1, max_ongoing_requests=1000, ray_actor_options={"num_cpus": api_cpus},
        graceful_shutdown_timeout_s=max(5.0, settings.shutdown_grace), health_check_timeout_s=60)
    return api.bind(generation.bind(settings), settings, high)


class API:
    """The ingress: `create_app` with its jobs run on Generation (`lanes` calls in flight at most)."""

    def __init__(self, generation, settings: Settings, lanes: int):
        self.generation = generation
        self.settings = settings
        self.lanes = lanes

    def __serve_build_asgi_app__(self):
        from .app import create_app
        from ..models.loaded import load_from_settings

        # The API runs no job: its model is on `meta` (configuration and shapes, no weights, no device), which
        # is what the preparer reads (sample rates, image sizes, LoRA layouts); it starts no device workers.
        settings = replace(self.settings, device="cpu", devices="", parallel="")
        model = load_from_settings(replace(settings, device="meta", compile="off"))
        app = create_app(settings, model, run_elsewhere=RemoteRunner(self.generation), remote_lanes=self.lanes)
        state = app.state.ltx2
        start_jobs = state.start_jobs

        def start_jobs_unjudged() -> None:
            # Memory admission is each replica's, against its own device: this node's host memory says
            # nothing about a GPU node's (a request too large fails its job with 413 there).
            start_jobs()
            state.admission = None

        state.start_jobs = start_jobs_unjudged
        return app


def app_builder(args: dict):
    """`serve run ltx2.serving.ray_app:app_builder replicas=1-4` and a Serve config's `args`: replicas (N or
    MIN-MAX), cpus, gpus (per generation replica); everything else from the LTX2_* environment."""
    def number(key):
        return float(args[key]) if key in args else None

    return build_app(replicas=args.get("replicas"), cpus=number("cpus"), gpus=number("gpus"))


def serve_ray(settings: Settings) -> None:
    """`ltx2 serve --ray`: join the Ray cluster at RAY_ADDRESS (or start a local one on this machine), serve
    the app on --host/--port until SIGINT or SIGTERM, then take it down (the API's running jobs get the
    shutdown grace; queued ones stay queued in the records)."""
    import ray
    from ray import serve

    application = build_app(settings)
    address = os.environ.get("RAY_ADDRESS")
    # A local cluster's object store carries the prepared inputs and the finished MP4s of the jobs in flight,
    # spilling to disk beyond this: it need not take Ray's default of 30% of the RAM.
    ray.init(address=address or None, **({} if address else {"include_dashboard": False,
                                                            "object_store_memory": LOCAL_OBJECT_STORE}))

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=False)
        log.info(json.dumps({"event": "ray_app_ready", "url": f"http://{settings.host}:{settings.port}",
                             "replicas": settings.ray_replicas}))
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            serve.delete(APP_NAME)
        finally:
            ray.shutdown()


def __getattr__(name: str):
    """`serve run ltx2.serving.ray_app:app`: built when asked for, from the LTX2_* environment (a replica
    importing this module builds nothing, and the module imports without ray)."""
    if name == "app":
        return build_app()
    raise AttributeError(name)
