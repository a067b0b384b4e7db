"""The same server on a Ray Serve cluster: `serve run ltx2.serving.ray_app:app` or `ltx2 serve --ray`.

Two deployments:
- **API**: the FastAPI app of one box (`create_app`: every route, key, limit, page), behind Ray Serve's
  ingress. It keeps the job queue and the records (SQLite, or PostgreSQL for several API replicas), fetches
  and decodes each job's inputs, and hands the prepared job to Generation. Its job manager has one lane per
  generation slot (`--replicas`, or the autoscaler's maximum), so the queue, positions, 429 + Retry-After,
  cancel and time limits are those of one box.
- **Generation**: one replica per GPU (`num_gpus=1`; on CPU a share of the cores), each loading the model
  once. A job runs as one streaming call: the replica yields `started` (its name), each step and stage,
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
import pickle
import queue
import signal
import socket
import threading
import time
from dataclasses import replace

from .faults import free_gpu_memory
from .lanes import WorkerLost
from .service import load_for_serving, render_mp4
from ..media.fetch import FetchPolicy
from ..pipelines.loras import LoraPolicy, with_prepared
from ..settings import Settings, configure_logging

log = logging.getLogger("ltx2.ray")

APP_NAME = "ltx2"
STARTS = 3  # sends of one job whose replica died before it started it (then: worker_lost)
LOCAL_OBJECT_STORE = 512 * 2**20  # bytes, for a cluster `ltx2 serve --ray` starts itself
POLL = 0.5  # seconds between the API's checks of a job's cancel flag and time limit while its replica is silent


def parse_replicas(spec: str) -> tuple[int, int]:
    """`N` (fixed) or `MIN-MAX` (autoscaled) generation replicas -> (min, max); raises ValueError."""
    text = str(spec).strip()
    low, sep, high = text.partition("-")
    try:
        lo, hi = int(low), int(high) if sep else int(low)
    except ValueError:
        raise ValueError(f"LTX2_RAY_REPLICAS must be N or MIN-MAX (e.g. 2 or 1-4), got {spec!r}") from None
    if lo < 0 or hi < 1 or lo > hi:
        raise ValueError(f"LTX2_RAY_REPLICAS must have 0 <= MIN <= MAX and MAX >= 1, got {spec!r}")
    return lo, hi


# ---------------------------------------------------------------------------------------------- Generation


class Carried:
    """An exception on its way from a replica to the API, rebuilt there as the same class with the same
    fields (InvalidRequest's field and status, say), which plain pickling loses for classes whose
    constructor takes more than the message."""

    def __init__(self, exc: BaseException):
        self.cls, self.args, self.state = type(exc), exc.args, dict(vars(exc))
        try:
            pickle.dumps((self.cls, self.args, self.state))
        except Exception:  # noqa: BLE001 - a class or field that cannot travel: say what it was
            self.cls, self.args, self.state = RuntimeError, (f"{type(exc).__name__}: {exc}",), {}

    def rebuild(self) -> BaseException:
        exc = self.cls.__new__(self.cls)
        BaseException.__init__(exc, *self.args)
        exc.__dict__.update(self.state)
        return exc


class _Stopped(Exception):
    """The API cancelled the call: the render stops at its next step or stage."""


class Generation:
    """A replica: the model loaded once, one job at a time (a second call waits for the first's thread,
    even one cancelled a moment ago, so two renders never share the device)."""

    def __init__(self, settings: Settings):
        configure_logging(settings)
        self.settings = settings
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.model = load_for_serving(settings)
        self.fetch_policy = FetchPolicy.from_settings(settings)
        self.lora_policy = LoraPolicy.from_settings(settings)
        self._device = threading.Lock()
        log.info(json.dumps({"event": "generation_replica_ready", "replica": self.name}))

    def _render(self, job: dict, emit, stopped: threading.Event) -> None:
        def check() -> None:
            if stopped.is_set():
                raise _Stopped()

        def on_step(step: int, total: int) -> None:
            check()
            emit({"event": "step", "step": step, "total": total})

        def on_progress(stage: str, done: int, total: int) -> None:
            check()
            emit({"event": "progress", "stage": stage, "done": done, "total": total})

        with self._device:
            if stopped.is_set():
                return
            emit({"event": "started", "replica": self.name})
            try:
                rendered = render_mp4(self.model, job["request"], on_step, fetch_policy=self.fetch_policy,
                                      lora_policy=with_prepared(self.lora_policy, job["loras"]),
                                      conditioning=job["conditioning"], check=check, on_progress=on_progress,
                                      encode_threads=self.settings.encode_threads)
                result = rendered.response(video="").model_dump(exclude={"video"})
                emit({"event": "done", "result": {**result, "replica": self.name}, "mp4": rendered.data})
            except _Stopped:
                emit({"event": "stopped"})
            except Exception as exc:  # noqa: BLE001 - the API fails the job with it, as one box would
                log.exception("job %s failed on replica %s", job["id"], self.name)
                emit({"event": "error", "error": Carried(exc)})
                free_gpu_memory()

    async def run(self, job: dict):
        """Run one prepared job (`pack`), yielding its events; ends with done, error or stopped."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        stopped = threading.Event()
        work = loop.run_in_executor(None, self._render, job, lambda e: loop.call_soon_threadsafe(events.put_nowait, e),
                                    stopped)
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
                if event["event"] in ("done", "error", "stopped"):
                    return
        finally:  # cancelled by the API (asyncio.CancelledError) or ended: the thread stops at its next check
            stopped.set()

    def identity(self) -> str:
        return self.name


# ---------------------------------------------------------------------------------------------- the API side


def pack(job, conditioning, loras) -> dict:
    """What a replica needs to run a job: the request (its inputs already decoded into `conditioning`)."""
    return {"id": job.id, "request": job.request, "conditioning": conditioning, "loras": loras}


def _lost(exc: BaseException) -> bool:
    from ray import exceptions as ray_errors

    return isinstance(exc, (ray_errors.RayActorError, ray_errors.ActorUnavailableError, ray_errors.WorkerCrashedError,
                            ray_errors.NodeDiedError))


class RemoteRunner:
    """Runs a prepared job on a Generation replica through the deployment handle, relaying its events to
    the job (steps, stages, the replica's name) and its cancel flag and time limit to the replica."""

    def __init__(self, handle):
        self.handle = handle

    def __call__(self, job, on_step, conditioning, loras):
        for attempt in range(1, STARTS + 1):
            replica, outcome = self._once(job, on_step, pack(job, conditioning, loras))
            if outcome is not None:
                return outcome
            if replica is not None:
                raise WorkerLost(f"the generation replica {replica} running it was lost (its process or node died)")
            log.warning(json.dumps({"event": "replica_lost_before_start", "job": job.id, "attempt": attempt}))
        raise WorkerLost(f"no generation replica took the job ({STARTS} tries, each replica was lost)")

    def _once(self, job, on_step, packed: dict):
        """(the replica that started it or None, (result, mp4) or None when its replica was lost)."""
        stream = self.handle.options(stream=True).run.remote(packed)
        events: queue.Queue = queue.Queue()

        def pump() -> None:  # the handle's iterator blocks: read it here, check the job's flags below
            try:
                for event in stream:
                    events.put(event)
                events.put({"event": "ended"})
            except BaseException as exc:  # noqa: BLE001 - handed to the job's thread
                events.put({"event": "failed", "error": exc})

        threading.Thread(target=pump, name=f"ltx2-ray-{job.id[:8]}", daemon=True).start()
        job.stage, replica = "waiting_for_replica", None
        try:
            while True:
                try:
                    event = events.get(timeout=POLL)
                except queue.Empty:
                    job.check()  # raises on cancel or time limit: the call is cancelled below
                    continue
                kind = event["event"]
                if kind == "started":
                    replica, job.stage = event["replica"], "generating"
                    log.info(json.dumps({"event": "job_on_replica", "job": job.id, "replica": event["replica"]}))
                elif kind == "step":
                    on_step(event["step"], event["total"])
                elif kind == "progress":
                    job.on_progress(event["stage"], event["done"], event["total"])
                elif kind == "done":
                    return replica, (event["result"], event["mp4"])
                elif kind == "error":
                    raise event["error"].rebuild()
                elif kind == "failed" and _lost(event["error"]):
                    return replica, None
                elif kind == "failed":
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

        # The API runs no job itself: its model copy (read by preparation and admission) stays on the CPU,
        # whatever the generation replicas' device, and it starts no device workers or rank group of its own.
        settings = replace(self.settings, device="cpu", devices="", parallel="")
        return create_app(settings, run_elsewhere=RemoteRunner(self.generation), remote_lanes=self.lanes)


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
