"""One worker process per device (`--devices cuda:0,cuda:1`, `all`, or `cpu,cpu`, without `--parallel`).

Each device gets its own process (multiprocessing "spawn"): it loads the model once on its device (on
CPU, with the cores split between the workers), then runs one job at a time, sent by the API process as
a packed payload (ltx2.serving.remote_job) over a pipe; step and progress events come back on it, and a
stop (cancel, time limit) goes to it. The video comes back as bytes and the API process stores it. A
CUDA fault, a leak or a hang in one worker touches no other: the API process keeps the queue, the
records and the preparer, and each worker is one lane of the job manager (ltx2.serving.lanes).

A worker that dies under a job (killed, crashed) fails that job `worker_lost` with its exit (the signal
or code); the manager restarts it. One that exits while idle is restarted by the supervisor. Faults
that repeat take the device out of service (lanes.FAULT_LIMIT within lanes.FAULT_WINDOW).

The API process loads the model on `meta` (no weights): the preparer needs its configuration (sample
rates, image sizes, LoRA layouts) and admission its shapes, never its weights.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import replace

import torch

from .lanes import JobFailed, Lane, WorkerLost
from . import remote_job

log = logging.getLogger("ltx2.workers")

POLL_S = 0.2  # how often a waiting API thread looks at the job's cancel flag and time limit
STOP_WAIT_S = 60.0  # a worker told to stop that has not stopped by then is killed (and restarted)
LOAD_TIMEOUT_S = 3600.0  # a worker's model load (minutes for the 19B)


class DevicesError(ValueError):
    """--devices that cannot be served: named in the message."""


def parse_devices(spec: str) -> list[str]:
    """`cuda:0,cuda:1`, `all` (every visible GPU) or `cpu,cpu` -> the device names, one per worker."""
    text = (spec or "").strip()
    if text == "all":
        count = torch.cuda.device_count()
        if count == 0:
            raise DevicesError("--devices all: no CUDA device is visible (list devices, e.g. cpu,cpu)")
        return [f"cuda:{i}" for i in range(count)]
    names = [d.strip() for d in text.split(",") if d.strip()]
    out = []
    for name in names:
        try:
            device = torch.device(name)
        except RuntimeError as exc:
            raise DevicesError(f"--devices: {name!r} is not a device ({exc})") from None
        if device.type not in ("cuda", "cpu"):
            raise DevicesError(f"--devices: {name!r}: only cuda:N and cpu devices are served")
        if device.type == "cuda":
            index = 0 if device.index is None else device.index
            if index >= torch.cuda.device_count():
                raise DevicesError(f"--devices: {name!r}: {torch.cuda.device_count()} CUDA devices are visible")
            name = f"cuda:{index}"
            if name in out:
                raise DevicesError(f"--devices lists {name} twice: one worker per GPU (each holds the full weights)")
        out.append(name)
    return out


def worker_groups(settings) -> list[list[str]]:
    """--devices split into --parallel's rank groups, in order (cpu,cpu,cpu,cpu with ulysses=2: two groups of
    two); without --parallel, one device each. A count that is not a multiple of the group size is refused."""
    devices = parse_devices(settings.devices) if settings.devices else []
    if not settings.parallel:
        return [[d] for d in devices]
    from ..models.parallel import ParallelSpec

    spec = ParallelSpec.parse(settings.parallel)
    if not devices or spec.size == 1:
        return [devices] if devices else []
    if len(devices) % spec.size:
        raise DevicesError(f"--devices lists {len(devices)} devices; --parallel {spec} is a group of {spec.size} "
                           f"ranks, one device each: list a multiple of {spec.size} (each group is one worker)")
    groups = [devices[i:i + spec.size] for i in range(0, len(devices), spec.size)]
    for group in groups:
        if len({torch.device(d).type for d in group}) > 1:
            raise DevicesError(f"--devices: the group {','.join(group)} mixes device kinds: one group runs on one kind")
    return groups


def worker_devices(settings) -> list[str]:
    """The devices `ltx2 serve` runs a worker process on, one per worker: --devices without --parallel, or with
    it each rank group's first device (its leader) when the list makes several groups. One device or one
    group, or none listed: [] or that one device, served in-process (one group: its leader is the server)."""
    if not settings.devices:
        return []
    groups = worker_groups(settings)
    if settings.parallel and len(groups) <= 1:
        return []
    return [group[0] for group in groups]


def lane_names(devices: list[str]) -> list[str]:
    """Unique names: the device, with #i where a device (cpu) is listed more than once."""
    return [d if devices.count(d) == 1 else f"{d}#{i}" for i, d in enumerate(devices)]


def _memory(device: torch.device) -> dict:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return {"allocated_bytes": torch.cuda.memory_allocated(device),
                "reserved_bytes": torch.cuda.memory_reserved(device), "free_bytes": free, "total_bytes": total}
    from ..models.memory import process_rss_bytes

    return {"process_rss_bytes": process_rss_bytes()}


# -- the worker process -----------------------------------------------------------------------------


def _lead_group(settings, group: list[str], threads: int, send) -> object:
    """A rank group's worker: start its followers (rank_group.start, on a port of its own) and watch them. A
    follower that exits, under a job or idle, ends this process with the group (its followers killed), telling
    the API process which rank, so that the job fails `worker_lost` and the whole group restarts."""
    from ..pipelines import rank_group

    settings, _ = rank_group.start(replace(settings, devices=",".join(group)), threads=threads)

    def watch() -> None:
        while True:
            time.sleep(POLL_S)
            if (reason := rank_group.exited()) is not None:
                group_lost(reason, send)

    threading.Thread(target=watch, name="ltx2-worker-group", daemon=True).start()
    return settings


def group_lost(reason: str, send) -> None:
    """End this worker and its group, after saying why (the API process fails the job and restarts it)."""
    from ..pipelines import rank_group

    logging.getLogger("ltx2.worker").error("the rank group failed: %s; the worker restarts with it", reason)
    rank_group.kill()
    try:
        send({"type": "lost", "reason": reason})
    except (OSError, ValueError):
        pass
    os._exit(4)


def _serve(conn, settings, device: str, threads: int, group: list[str] | None = None) -> None:
    """The worker process's life: load, say ready, run each job sent until the pipe closes. With a rank
    `group`, this process is its rank 0 and starts its followers first."""
    # Ctrl-C, and a service manager's SIGTERM, reach the whole process group: the API process decides when a
    # worker ends (its pipe closes once the running jobs had their grace).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    parent = os.getppid()

    def orphaned() -> None:  # the API process died (even SIGKILL) while this one loads: end now, not after
        while os.getppid() == parent:
            time.sleep(1)
        _end_followers()
        os._exit(0)

    threading.Thread(target=orphaned, name="ltx2-worker-parent", daemon=True).start()
    if threads:
        torch.set_num_threads(threads)
    from ..media.fetch import FetchPolicy
    from ..pipelines.loras import LoraPolicy
    from ..settings import configure_logging
    from .admission import Admission
    from .faults import free_gpu_memory
    from .service import load_for_serving

    configure_logging(settings)
    settings = replace(settings, device=device)
    send_lock = threading.Lock()

    def send(message: dict) -> None:
        with send_lock:
            conn.send(message)

    try:
        if group:
            settings = _lead_group(settings, group, threads, send)
        model = load_for_serving(settings)
    except BaseException as exc:  # noqa: BLE001 - told to the API process, which reports it
        _end_followers()
        conn.send({"type": "load_failed", "error": f"{type(exc).__name__}: {exc}"})
        return
    # Admission's costs take seconds to count (meta copies of every component): counted while the worker
    # already reports ready, and waited for by the first job.
    counted: dict = {}

    def count() -> None:
        try:
            counted["admission"] = Admission(model, settings.memory_margin, settings.memory_cgroup)
        except Exception:  # noqa: BLE001 - as in the API process: unchecked rather than down
            counted["admission"] = None

    counting = threading.Thread(target=count, name="ltx2-worker-admission", daemon=True)
    counting.start()
    fetch_policy, lora_policy = FetchPolicy.from_settings(settings), LoraPolicy.from_settings(settings)
    described = model.describe()
    send({"type": "ready", "model": described.get("name"), "load_seconds": described.get("load_seconds"),
          "memory": _memory(model.device), "threads": torch.get_num_threads(),
          **({"group": {"parallel": settings.parallel, "devices": group, "follower_pids": _follower_pids()}}
             if group else {})})
    jobs: list = []
    wake = threading.Condition()
    stop_job: set[str] = set()

    def read() -> None:  # the API process's messages: jobs and stops; its pipe closing ends this process
        while True:
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):
                _end_followers()
                os._exit(0)
            if message.startswith(b"stop:"):
                with wake:
                    stop_job.add(message[5:].decode())
            else:
                with wake:
                    jobs.append(message)
                    wake.notify()

    threading.Thread(target=read, name="ltx2-worker-pipe", daemon=True).start()
    while True:
        with wake:
            while not jobs:
                wake.wait()
            blob = jobs.pop(0)
        payload = remote_job.loads(blob)
        job_id = payload["job"]
        counting.join()
        admission = counted["admission"]
        try:
            result, mp4 = remote_job.run_packed(
                model, payload, send, lambda job_id=job_id: job_id in stop_job, fetch_policy=fetch_policy,
                lora_policy=lora_policy, encode_threads=settings.encode_threads, admission=admission)
        except remote_job.Stopped:
            send({"type": "stopped", "memory": _memory(model.device)})
        except Exception as exc:  # noqa: BLE001 - told to the API process, which fails the job
            if group and (reason := _group_failure(exc)) is not None:
                group_lost(reason, send)
            body, status, fault = remote_job.failure(exc, payload["request"])
            if status == 500:
                logging.getLogger("ltx2.worker").exception("job %s failed on %s", job_id, device)
            free_gpu_memory()
            send({"type": "failed", "body": body, "status": status, "device_fault": fault,
                  "memory": None if fault else _memory(model.device)})
            if fault:  # a poisoned CUDA context: this process cannot run another job
                os._exit(3)
        else:
            send({"type": "done", "result": result, "mp4": mp4, "memory": _memory(model.device)})
        finally:
            with wake:
                stop_job.discard(job_id)


def _follower_pids() -> list[int]:
    from ..pipelines import rank_group

    return rank_group.follower_pids()


def _end_followers() -> None:
    import sys

    if "ltx2.pipelines.rank_group" in sys.modules:  # only a group's worker has followers
        sys.modules["ltx2.pipelines.rank_group"].kill()


def _group_failure(exc: BaseException) -> str | None:
    """Why the group cannot go on after `exc` (a rank exited, or a collective failed or timed out), or None
    for an error every rank met alike (a bad request): the group is still in step then."""
    import torch.distributed as dist

    from ..models.parallel import GroupFailed
    from ..pipelines import rank_group

    deadline = time.monotonic() + 2.0  # a follower killed under a collective: reaped within moments
    while time.monotonic() < deadline:
        if (reason := rank_group.exited()) is not None:
            return reason
        if not isinstance(exc, (GroupFailed, rank_group.GroupBroken, dist.DistError)):
            return None
        time.sleep(POLL_S)
    return f"{type(exc).__name__}: {exc}"


# -- the API process's side ---------------------------------------------------------------------------


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class DeviceWorker:
    """One device's worker process, as a lane: `run_job`, `restart`, `describe`, `alive`."""

    def __init__(self, name: str, device: str, settings, threads: int, group: list[str] | None = None):
        self.name, self.device, self.settings, self.threads = name, device, settings, threads
        self.group = group  # --parallel: this worker is the rank group's leader, on group[0]
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # one job or one restart at a time
        self._proc = None
        self._conn = None
        self.starts = 0
        self.last_exit: str | None = None
        self.ready: dict = {}
        self.memory: dict | None = None
        self.closing = False

    def lane(self) -> Lane:
        return Lane(self.name, self.run_job, restart=self.restart, describe=self.describe, alive=self.alive)

    # -- starting and stopping -------------------------------------------------------------------

    def spawn(self) -> None:
        parent, child = self._context.Pipe(duplex=True)
        proc = self._context.Process(target=_serve, args=(child, self.settings, self.device, self.threads, self.group),
                                     name=f"ltx2-worker-{self.name}", daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        self.starts += 1
        log.info(json.dumps({"event": "device_worker_started", "lane": self.name, "device": self.device,
                             "pid": proc.pid, "threads": self.threads}))

    def wait_ready(self, timeout: float = LOAD_TIMEOUT_S) -> None:
        """Until the worker's model is loaded; RuntimeError naming the device if it fails or exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.closing:
            if self._conn.poll(POLL_S):
                try:
                    message = self._conn.recv()
                except (EOFError, OSError):
                    break
                if message["type"] == "ready":
                    self.ready, self.memory = message, message.get("memory")
                    log.info(json.dumps({"event": "device_worker_ready", "lane": self.name,
                                         "pid": self._proc.pid, "load_seconds": message.get("load_seconds")}))
                    return
                raise RuntimeError(f"the worker on {self.device} could not load the model: {message.get('error')}")
            if not self._proc.is_alive():
                break
        self._end()
        if self.closing:
            raise RuntimeError(f"the server is shutting down: the worker on {self.device} was not started")
        raise RuntimeError(f"the worker on {self.device} exited while loading the model ({self.last_exit}); "
                           "its error is above")

    def _end(self) -> None:
        """Kill the process (if it runs) and close the pipe."""
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        if proc.is_alive():
            proc.kill()
        proc.join(10)
        self.last_exit = _exit_text(proc.exitcode)
        try:
            conn.close()
        except OSError:
            pass
        proc.close() if proc.exitcode is not None else None
        self._proc = self._conn = None

    def restart(self, reason: str) -> None:
        """A fresh process with the model loaded (blocking); raises if it cannot load."""
        with self._lock:
            self._end()
            if self.closing:
                return
            log.warning(json.dumps({"event": "device_worker_restart", "lane": self.name, "reason": reason}))
            self.spawn()
            self.wait_ready()

    def close(self) -> None:
        """At shutdown (the running jobs had their grace): the pipe closes and the worker exits; one still
        loading (a restart holds the lock) is killed."""
        self.closing = True
        proc, conn = self._proc, self._conn
        if conn is not None and not self._lock.locked():
            try:
                conn.close()
            except OSError:
                pass
        if proc is not None:
            try:
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
                    proc.join(5)
            except ValueError:  # closed by a restart meanwhile
                pass

    def alive(self) -> bool:
        proc = self._proc
        if self.closing or self._lock.locked():
            return True  # busy (a job or a restart): the lane's own thread watches it then
        if proc is None:
            return False
        try:
            return proc.is_alive()
        except ValueError:  # closed meanwhile
            return False

    def pid(self) -> int | None:
        proc = self._proc
        try:
            return proc.pid if proc is not None else None
        except ValueError:
            return None

    def describe(self) -> dict:
        proc = self._proc
        try:
            running = proc is not None and proc.is_alive()
        except ValueError:
            running = False
        return {"device": self.device, "pid": self.pid(), "process_alive": running, "process_starts": self.starts,
                "last_exit": self.last_exit, "model": self.ready.get("model"), "threads": self.ready.get("threads"),
                "memory": self.memory, **({"group": self.ready.get("group")} if self.group else {})}

    # -- a job ------------------------------------------------------------------------------------

    def _lost(self) -> WorkerLost:
        pid = self.pid()
        if self._proc is not None:
            self._proc.join(5)  # its exit code, for the reason
        self._end()
        return WorkerLost(f"its process on {self.device} (pid {pid}) exited: {self.last_exit}")

    def run_job(self, job, on_step):
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                # Died while idle and not restarted yet (the supervisor does within a second): start it now.
                self._end()
                try:
                    self.spawn()
                    self.wait_ready()
                except RuntimeError as exc:  # counted as a fault: repeated, the device goes out of service
                    raise WorkerLost(str(exc)) from None
            blob = remote_job.dumps(remote_job.pack(job))
            try:
                self._conn.send_bytes(blob)
            except (OSError, ValueError):
                raise self._lost() from None
            return self._follow(job, on_step)

    def _follow(self, job, on_step):
        """Replay the worker's events into the job until it ends; a cancel or time limit stops the worker."""
        stopping: BaseException | None = None
        stop_sent = 0.0

        def stop(exc: BaseException) -> None:
            nonlocal stopping, stop_sent
            stopping, stop_sent = exc, time.monotonic()
            try:
                self._conn.send_bytes(b"stop:" + job.id.encode())
            except (OSError, ValueError):
                pass  # gone: the read below says so

        while True:
            if stopping is None and job.check is not None:
                try:
                    job.check()
                except Exception as exc:  # noqa: BLE001 - JobCancelled, JobTimedOut: stop the worker's job
                    stop(exc)
            elif stopping is not None and time.monotonic() - stop_sent > STOP_WAIT_S:
                log.error(json.dumps({"event": "device_worker_stop_timeout", "lane": self.name, "job": job.id}))
                self._end()  # restarted before the next job (run_job) or by the supervisor
                raise stopping
            try:
                if not self._conn.poll(POLL_S):
                    continue
                message = self._conn.recv()
            except (EOFError, OSError):
                if stopping is not None:
                    self._end()
                    raise stopping from None
                raise self._lost() from None
            kind = message["type"]
            if kind in ("step", "progress"):
                if stopping is None:
                    try:
                        remote_job.replay(job, on_step, message)
                    except Exception as exc:  # noqa: BLE001 - the manager's check raised: stop there
                        stop(exc)
                continue
            self.memory = message.get("memory") or self.memory
            if stopping is not None:
                raise stopping
            if kind == "done":
                return message["result"], message["mp4"]
            if kind == "failed":
                raise JobFailed(message["body"], message["status"], device_fault=message["device_fault"])
            if kind == "lost":  # a rank of its group exited or stopped answering: the worker ends with the group
                self._end()
                raise WorkerLost(f"its --parallel group on {','.join(self.group or [self.device])} failed: "
                                 f"{message['reason']}")
            raise WorkerLost(f"the worker on {self.device} answered {kind!r} to a job it was not asked to stop")


class DevicePool:
    """Every device's worker (a lane each), started together."""

    def __init__(self, settings, devices: list[str]):
        groups = worker_groups(settings) if settings.parallel else [[d] for d in devices]
        ranks = [d for group in groups for d in group]  # every process that computes: the cores split over them
        cpus = sum(torch.device(d).type == "cpu" for d in ranks)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        threads = max(1, cores // max(1, cpus)) if cpus else max(1, cores // len(ranks))
        names = lane_names(ranks)
        at = 0
        self.workers = []
        for group in groups:  # a group's lane is named by its devices: cuda:0+cuda:1, cpu#0+cpu#1
            name = "+".join(names[at:at + len(group)])
            self.workers.append(DeviceWorker(name, group[0], settings, threads, group if len(group) > 1 else None))
            at += len(group)
        self.on_cuda = any(torch.device(d).type == "cuda" for d in ranks)

    def lanes(self) -> list[Lane]:
        return [worker.lane() for worker in self.workers]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()


def start_pool(settings, devices: list[str]):
    """The API process's half: the worker pool started, and the model on `meta` for the preparer and
    admission (no weights, no device memory). Returns (meta model, pool)."""
    from ..models.loaded import load_from_settings

    pool = DevicePool(settings, devices)
    for worker in pool.workers:  # they load while this process builds its meta copy
        worker.spawn()
    try:
        model = load_from_settings(replace(settings, device="meta", compile="off"))
        for worker in pool.workers:
            worker.wait_ready()
    except BaseException:
        pool.close()
        raise
    return model, pool
