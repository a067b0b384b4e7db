"""A rank group (`--parallel`) served as one worker.

The server's process is rank 0, the leader: it runs the job queue and calls `generate()` as it does
alone. It starts one follower process per other rank (`ltx2.pipelines.rank_follower`), each
with the full model on its own device. Every job the leader starts is handed to the followers over
their stdin (the request with its seed fixed, and its inputs as the leader decoded them), and all
ranks run the same `generate()`: the transformer passes and the VAE tiles are split between them
(ltx2.models.parallel). An idle follower waits on its pipe, not in a collective that would time out.

A stop (cancel, time limit) reaches the followers at the next step: after each denoising step the
leader broadcasts whether its step callback raised, and the followers raise with it. An error every
rank meets alike (a bad request) leaves the group in step; a follower that faults otherwise exits,
and the leader then fails each job, naming the rank, instead of waiting on it.
"""

from __future__ import annotations

import atexit
import pickle
import secrets
import signal
import socket
import struct
import subprocess
import sys
import threading
from dataclasses import replace

import torch
import torch.distributed as dist

from ..models import parallel
from ..schema import GenerateRequest
from .stages import StepCallback

_followers: list[subprocess.Popen] = []
_HEADER = struct.Struct("<Q")
RENDEZVOUS_S = 3600.0  # the followers load their models first (minutes for the 19B); a dead one ends it sooner


class Stopped(RuntimeError):
    """The leader stopped the job: the followers stop theirs at the same step."""


class GroupBroken(RuntimeError):
    """A follower exited: the group cannot run jobs until the server restarts."""


def devices_for(settings, spec: parallel.ParallelSpec) -> list[str]:
    """One device per rank: --devices, else --device (or the default device) for every rank."""
    listed = [d.strip() for d in (settings.devices or "").split(",") if d.strip()]
    if not listed:
        default = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return [default] * spec.size
    if len(listed) != spec.size:
        raise parallel.ParallelError(f"--devices lists {len(listed)} devices; --parallel {spec} is a group of "
                                     f"{spec.size} ranks, one device each: list a multiple of {spec.size} "
                                     "(each group is one worker)")
    kinds = {torch.device(d).type for d in listed}
    if len(kinds) > 1:
        raise parallel.ParallelError(f"--devices mixes {' and '.join(sorted(kinds))}: one group runs on one kind")
    return listed


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(settings, threads: int | None = None) -> tuple[object, parallel.Group | None]:
    """Start the followers and join the group as rank 0. Returns the leader's settings (its device
    set to the first rank's) and the group; (settings, None) without --parallel. `threads`: each
    follower's torch threads (a --devices worker splits the CPU cores over every rank)."""
    spec = parallel.ParallelSpec.parse(settings.parallel)
    if spec.size == 1:
        return settings, None
    devices = devices_for(settings, spec)
    settings = replace(settings, device=devices[0])
    port = _free_port()
    blob = pickle.dumps(settings)
    for rank in range(1, spec.size):
        proc = subprocess.Popen([sys.executable, "-m", "ltx2.pipelines.rank_follower", str(rank), str(spec), devices[rank],
                                 str(port), *(["--threads", str(threads)] if threads else [])],
                                stdin=subprocess.PIPE)
        proc.stdin.write(_HEADER.pack(len(blob)) + blob)  # the settings first, then one job at a time
        proc.stdin.flush()
        _followers.append(proc)
    atexit.register(stop)
    joined: dict = {}
    thread = threading.Thread(target=lambda: joined.update(group=parallel.init(
        spec, 0, devices[0], address="127.0.0.1", port=port, timeout_s=RENDEZVOUS_S,
        op_timeout_s=settings.parallel_timeout)),
                              daemon=True)
    thread.start()
    while thread.is_alive():  # the followers load their models meanwhile; one that exits ends the start
        thread.join(0.5)
        for rank, proc in enumerate(_followers, start=1):
            if proc.poll() is not None:
                stop()
                raise GroupBroken(f"--parallel: rank {rank} on {devices[rank]} exited (code {proc.returncode}) "
                                  "before joining the group; its message is above")
    if "group" not in joined:
        stop()
        raise GroupBroken("--parallel: the group could not form (see the error above)")
    return settings, joined["group"]


def stop() -> None:
    """End the followers (their stdin closes: each exits after its current job)."""
    for proc in _followers:
        if proc.poll() is None:
            try:
                proc.stdin.close()
            except OSError:
                pass
    for proc in _followers:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    _followers.clear()


def kill() -> None:
    """End the followers now (the group failed, or its leader is ending): no job of theirs is worth waiting for."""
    for proc in _followers:
        if proc.poll() is None:
            proc.kill()
    for proc in _followers:
        proc.wait()
    _followers.clear()


def exited() -> str | None:
    """Which follower has exited and how, or None while every one runs."""
    for rank, proc in enumerate(_followers, start=1):
        if (code := proc.poll()) is not None:
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            return f"rank {rank} (pid {proc.pid}) exited: {how}"
    return None


def follower_pids() -> list[int]:
    return [proc.pid for proc in _followers]


def agree_stop(stop: bool) -> bool:
    """Rank 0's answer to "stop now?" on every rank."""
    device = torch.device(f"cuda:{torch.cuda.current_device()}") if dist.get_backend() == "nccl" else "cpu"
    flag = torch.tensor([1 if stop else 0], dtype=torch.int32, device=device)
    parallel.checked(dist.broadcast, flag, src=0, group=parallel.current().world_group)
    return bool(flag.item())


def lead(request: GenerateRequest, conditioning, on_step: StepCallback | None
         ) -> tuple[GenerateRequest, StepCallback | None]:
    """On the leader of a served group: hand the job to the followers and return the request (its seed
    fixed, so that every rank draws the same noise) and a step callback that tells them when it stops.
    Anywhere else (alone, or ranks started as peers that each call generate()), the job as it is."""
    group = parallel.current()
    if group is None or group.rank != 0 or not _followers:
        return request, on_step
    for rank, proc in enumerate(_followers, start=1):
        if proc.poll() is not None:
            raise GroupBroken(f"rank {rank} of the --parallel group has exited (code {proc.returncode}); the server "
                              "must be restarted to run jobs again")
    if request.seed is None:
        request = request.model_copy(update={"seed": secrets.randbelow(2**31)})
    blob = pickle.dumps((request, conditioning))
    for rank, proc in enumerate(_followers, start=1):
        try:
            proc.stdin.write(_HEADER.pack(len(blob)) + blob)
            proc.stdin.flush()
        except OSError as exc:
            raise GroupBroken(f"rank {rank} of the --parallel group is gone ({exc})") from None

    def step(done: int, total: int) -> None:
        try:
            if on_step is not None:
                on_step(done, total)
        except BaseException:
            agree_stop(True)
            raise
        agree_stop(False)

    return request, step


def read(stream) -> bytes | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return stream.read(_HEADER.unpack(header)[0])


def health() -> dict | None:
    """/health's view of a served group: its spec, its ranks, and which followers have exited (then jobs
    cannot run: the server says so). None when this process serves no group."""
    group = parallel.current()
    if group is None or not _followers:
        return None
    exited = [rank for rank, proc in enumerate(_followers, start=1) if proc.poll() is not None]
    return {"parallel": str(group.spec), "ranks": group.world, "exited": exited}
