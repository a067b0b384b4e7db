"""`--devices` with `--parallel` (issue 24): N / group workers, each a rank group (its worker process the group's
rank 0, its followers started by it on a port of its own), each a lane of the one queue. A real server on
cpu,cpu,cpu,cpu with ulysses=2: two groups run two jobs at once, each video equal to the single-process one; a
follower killed under a job fails that job `worker_lost` naming the rank, and its whole group restarts while
the other group goes on."""

from __future__ import annotations

import io
import os
import signal
import time
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from servers import start_server, stop_server, wait_for_job

# ProRes 4444 at its best quality: frames within a level or two of the single-process run (as test_parallel's
# server test). Steps enough that two jobs overlap on this box's single-thread ranks.
BODY = {"prompt": "a lighthouse on a cliff, waves crashing", "width": 64, "height": 64, "num_frames": 9,
        "num_inference_steps": 12, "use_multiscale": False, "video_output_type": "PRORES4444 (.mov)",
        "video_quality": "maximum"}


def frames(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_devices_split_into_groups_and_a_remainder_is_refused():
    from ltx2.serving.device_workers import DevicesError, worker_devices, worker_groups

    four = SimpleNamespace(devices="cpu,cpu,cpu,cpu", parallel="ulysses=2")
    assert worker_groups(four) == [["cpu", "cpu"], ["cpu", "cpu"]] and worker_devices(four) == ["cpu", "cpu"]
    # One group: served as before, the server its leader (no worker processes).
    assert worker_devices(SimpleNamespace(devices="cpu,cpu", parallel="ulysses=2")) == []
    assert worker_groups(SimpleNamespace(devices="cpu,cpu,cpu,cpu", parallel="ulysses=2,cfg=2")) == [["cpu"] * 4]
    with pytest.raises(DevicesError, match=r"--devices lists 3 devices; --parallel ulysses=2 is a group of 2 ranks, "
                                           r"one device each: list a multiple of 2 \(each group is one worker\)"):
        worker_devices(SimpleNamespace(devices="cpu,cpu,cpu", parallel="ulysses=2"))


@pytest.mark.slow
def test_two_groups_serve_one_queue_and_a_lost_rank_restarts_its_group(client, tmp_path):
    import psutil

    seeds = (11, 12)
    want = {}
    for seed in seeds:
        done = wait_for_job(client, client.post("/jobs", json={**BODY, "seed": seed}).json()["id"], seconds=120)
        want[seed] = frames(client.get(f"/jobs/{done['id']}/video").content)
    proc, base = start_server(tmp_path / "out", tmp_path / "server.log", "--devices", "cpu,cpu,cpu,cpu",
                              "--parallel", "ulysses=2", timeout=300)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            devices = http.get("/health").json()["devices"]
            assert [d["name"] for d in devices] == ["cpu#0+cpu#1", "cpu#2+cpu#3"]
            assert all(d["group"]["parallel"] == "ulysses=2" and len(d["group"]["follower_pids"]) == 1 for d in devices)
            followers = [psutil.Process(d["group"]["follower_pids"][0]) for d in devices]
            assert [f.ppid() for f in followers] == [d["pid"] for d in devices]  # each group's worker leads it
            assert all("ltx2.pipelines.rank_follower" in f.cmdline() for f in followers)

            ids = [http.post("/jobs", json={**BODY, "seed": seed}).json()["id"] for seed in seeds]
            deadline = time.monotonic() + 120
            while sum(http.get(f"/jobs/{i}").json()["status"] == "running" for i in ids) < 2:
                assert time.monotonic() < deadline, "the two groups never ran at once"
                time.sleep(0.05)
            for seed, job_id in zip(seeds, ids):
                view = wait_for_job(http, job_id, seconds=120)
                assert view["status"] == "succeeded", view["error"]
                got = frames(http.get(f"/jobs/{job_id}/video").content)
                worst = np.abs(got.astype(int) - want[seed].astype(int)).max()
                print(f"seed {seed}: largest difference from one process: {worst} levels")
                assert got.shape == want[seed].shape and worst <= 2

            # A follower killed under a job: that job fails worker_lost naming the rank; its group restarts.
            ids = [http.post("/jobs", json={**BODY, "seed": seed, "num_inference_steps": 60}).json()["id"]
                   for seed in seeds]
            deadline = time.monotonic() + 120
            while sum(http.get(f"/jobs/{i}").json()["status"] == "running" for i in ids) < 2:
                assert time.monotonic() < deadline, "the two groups never ran at once"
                time.sleep(0.05)
            victim = followers[0]
            os.kill(victim.pid, signal.SIGKILL)
            views = [wait_for_job(http, i, seconds=180) for i in ids]
            failed = [v for v in views if v["status"] == "failed"]
            assert len(failed) == 1, [(v["status"], v["error"]) for v in views]
            assert failed[0]["error"]["code"] == "worker_lost"
            assert f"rank 1 (pid {victim.pid}) exited: killed by SIGKILL" in failed[0]["error"]["error"]
            assert [v["status"] for v in views if v is not failed[0]] == ["succeeded"]  # the other group's
            deadline = time.monotonic() + 180
            while True:
                after = http.get("/health").json()["devices"]
                if after[0]["process_alive"] and after[0]["pid"] != devices[0]["pid"] and not after[0]["restarting"]:
                    break
                assert time.monotonic() < deadline, after
                time.sleep(0.2)
            assert after[0]["restarts"] == 1 and after[0]["group"]["follower_pids"] != [victim.pid]
            assert after[1]["pid"] == devices[1]["pid"] and after[1]["restarts"] == 0  # never stopped
            assert not psutil.pid_exists(devices[0]["pid"]) or psutil.Process(devices[0]["pid"]).status() == "zombie"
            again = wait_for_job(http, http.post("/jobs", json={**BODY, "seed": 11, "num_inference_steps": 2}
                                                 ).json()["id"], seconds=120)
            assert again["status"] == "succeeded", again["error"]
        ranks = [d["pid"] for d in after] + [p for d in after for p in d["group"]["follower_pids"]]
    finally:
        stop_server(proc)
    time.sleep(1)
    assert [p for p in ranks if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"] == []
