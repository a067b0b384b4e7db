"""A follower rank of a `--parallel` group, started by the server (ltx2.pipelines.rank_group.start):
`python -m ltx2.pipelines.rank_follower RANK PARALLEL DEVICE PORT`, the settings then each job on stdin."""

from __future__ import annotations

import argparse
import os
import pickle
import sys
import threading
import time
from dataclasses import replace

import torch
import torch.distributed as dist

from ..models import parallel
from . import rank_group
from .generate import generate
from .rank_group import Stopped


def _follower_step(done: int, total: int) -> None:
    if rank_group.agree_stop(False):
        raise Stopped("the leader stopped the job")


def _orphaned(parent: int) -> None:
    """The leader died (even SIGKILL) while this rank loads or waits to join: end now, not at the rendezvous's
    hour-long timeout."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(0)


def follow(rank: int, spec_text: str, device: str, port: int, threads: int = 0) -> int:
    """A follower's life: load the model, join the group, run each job the leader hands over."""
    from ..models.loaded import load_from_settings

    threading.Thread(target=_orphaned, args=(os.getppid(),), name="ltx2-rank-parent", daemon=True).start()
    if threads:
        torch.set_num_threads(threads)

    stdin = sys.stdin.buffer
    settings = replace(pickle.loads(rank_group.read(stdin)), device=device)
    spec = parallel.ParallelSpec.parse(spec_text)
    model = load_from_settings(settings)
    try:
        spec.check_model(model.pipe.transformer)
    except parallel.ParallelError as exc:
        print(f"ltx2: rank {rank}: {exc}", file=sys.stderr)
        return 2
    parallel.init(spec, rank, device, address="127.0.0.1", port=port, timeout_s=rank_group.RENDEZVOUS_S,
                  op_timeout_s=settings.parallel_timeout)
    while (blob := rank_group.read(stdin)) is not None:
        request, conditioning = pickle.loads(blob)
        try:
            generate(model, request, on_step=_follower_step, conditioning=conditioning)
        except Stopped:
            continue
        except (parallel.GroupFailed, dist.DistError) as exc:  # the group is out of step: nothing can fix it here
            print(f"ltx2: rank {rank}: the group failed ({exc}); exiting", file=sys.stderr)
            return 1
        except Exception as exc:  # noqa: BLE001 - the leader meets the same error on the same request
            print(f"ltx2: rank {rank}: job failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    parallel.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ltx2.pipelines.rank_follower",
                                     description="A follower rank of a --parallel group (started by the server).")
    parser.add_argument("rank", type=int)
    parser.add_argument("parallel")
    parser.add_argument("device")
    parser.add_argument("port", type=int)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    return follow(args.rank, args.parallel, args.device, args.port, args.threads)


if __name__ == "__main__":
    sys.exit(main())
