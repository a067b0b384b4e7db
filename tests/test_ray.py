"""The Ray Serve application (`ltx2 serve --ray`, ltx2.serving.ray_app): a real `ltx2 serve --ray --replicas 2`
process starts a local Ray cluster (2 CPUs, a small object store), the API deployment and two tiny Generation
replicas, and the tests talk to it over HTTP as a client would. Ray's processes are the server's children:
stopping the server (SIGTERM) takes the cluster down."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

ray = pytest.importorskip("ray")

from hostile import children, rss_mb  # noqa: E402
from ltx2.media.samples import sample_image_uri  # noqa: E402
from ltx2.settings import Settings, parse_replicas  # noqa: E402
from servers import ROOT, free_port, stop_server, wait_for_job, wait_healthy  # noqa: E402

CHEAP = {"prompt": "a boat", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1}
# ~6 s on one core of this CPU (steps cost ~25 ms each whatever the size): its replica is killed well inside it.
LONG = {**CHEAP, "width": 256, "height": 256, "num_frames": 49, "num_inference_steps": 100}


def descendants(pid: int) -> list[int]:
    """Every process under `pid` (Ray's workers are the raylet's children, the raylet the server's)."""
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def generation_pids(server_pid: int) -> list[int]:
    """The Generation replicas' processes (Ray names each process after its actor)."""
    found = []
    for pid in descendants(server_pid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"ServeReplica:ltx2:Generation" in fh.read():
                    found.append(pid)
        except OSError:
            pass
    return sorted(found)


# -- the configuration, without a cluster ------------------------------------------------------------------


def test_replica_counts_are_n_or_min_max():
    from ltx2.settings import parse_replicas

    assert parse_replicas("2") == (2, 2) and parse_replicas("0-4") == (0, 4)
    for bad in ("", "two", "3-1", "0", "-1", "1-0"):
        with pytest.raises(ValueError, match="LTX2_RAY_REPLICAS"):
            parse_replicas(bad)


def test_replica_flags_need_ray_and_a_valid_count(capsys):
    from ltx2.cli import main

    for argv, message in ((["serve", "--replicas", "2"], "--replicas, --min-replicas and --max-replicas need --ray"),
                          (["serve", "--ray", "--min-replicas", "3", "--max-replicas", "1"], "0 <= MIN <= MAX"),
                          (["serve", "--ray", "--replicas", "two"], "N or MIN-MAX")):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow  # imports Ray Serve and the model code: seconds
def test_the_serve_config_and_the_rayservice_example_build_the_app():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from ltx2.serving import ray_app

    config = yaml.safe_load((ROOT / "deploy/ray-serve.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    service = yaml.safe_load((ROOT / "deploy/kuberay-rayservice.yaml").read_text())
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == config  # the example carries the same config
    application = config["applications"][0]
    args = application["args"]
    assert type(ray_app.app_builder(args)).__name__ == "Application"  # what `serve deploy` imports and calls
    assert type(ray_app.app).__name__ == "Application"  # `serve run ltx2.serving.ray_app:app`
    options = ray_app.generation_options(Settings(), *parse_replicas(args["replicas"]), args["cpus"],
                                         args["gpus"])
    assert options["autoscaling_config"]["min_replicas"] == 1 and options["autoscaling_config"]["max_replicas"] == 4
    assert options["autoscaling_config"]["target_ongoing_requests"] == 1  # scaled on the jobs running or waiting
    assert options["ray_actor_options"] == {"num_gpus": 1, "num_cpus": 4} and options["max_ongoing_requests"] == 1
    fixed = ray_app.generation_options(Settings(device="cpu"), 2, 2, None, None)
    assert fixed["num_replicas"] == 2 and fixed["ray_actor_options"] == {"num_gpus": 0, "num_cpus": 1}


# -- a real cluster -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_server(tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-out")
    log_path = out / "server.log"
    port = free_port()
    env = {**os.environ, "LTX2_DEVICE": "cpu", "RAY_ADDRESS": "", "RAY_DEDUP_LOGS": "0",
           # Ray's own start-up checks and usage report reach for the network: off, as on a closed cluster.
           "RAY_USAGE_STATS_ENABLED": "0"}
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ltx2.cli", "serve", "--ray", "--replicas", "2", "--model", "tiny",
             "--host", "127.0.0.1", "--port", str(port), "--output-dir", str(out), "--queue-size", "8"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base, log_path, timeout=150)
        with httpx.Client(base_url=base, timeout=60) as http:
            yield proc, http, log_path
    finally:
        stop_server(proc)
        try:  # whatever of Ray outlived the server (it should not)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_native_openai_and_ltx_routes_through_ray(ray_server):
    _, http, _ = ray_server
    health = http.get("/health").json()
    assert health["status"] == "healthy" and health["worker"]["lanes"] == 2

    r = http.post("/generate", json=CHEAP)
    assert r.status_code == 200, r.text
    body = r.json()
    assert base64.b64decode(body["video"].split(",", 1)[1])[4:8] == b"ftyp"  # the MP4 came back whole
    assert body["seed"] is not None

    # An image input: the API decodes it, and the decoded conditioning travels to the replica.
    r = http.post("/v1/videos", json={"prompt": "a sunset", "size": "64x64", "seconds": "0.4", "seed": 5,
                                      "num_inference_steps": 1,
                                      "input_reference": {"image_url": sample_image_uri(64, 64)}})
    assert r.status_code == 200, r.text
    video = r.json()
    assert video["object"] == "video"
    deadline = time.monotonic() + 60
    while video["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, video
        time.sleep(0.2)
        video = http.get(f"/v1/videos/{video['id']}").json()
    assert video["status"] == "completed", video
    content = http.get(f"/v1/videos/{video['id']}/content")
    assert content.status_code == 200 and content.content[4:8] == b"ftyp"

    r = http.post("/v1/generations/text-to-video", json={"prompt": "a boat", "model": "ltx-2-fast",
                                                          "resolution": "64x64", "duration": 1, "seed": 3,
                                                          "num_inference_steps": 1})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while (done := http.get(r.headers["Location"]).json())["status"] not in ("completed", "failed"):
        assert time.monotonic() < deadline, done
        time.sleep(0.2)
    assert done["status"] == "completed", done
    assert http.get(done["video_url"]).content[4:8] == b"ftyp"

    # Training would run on the API's CPU copy of the model: refused, saying where training runs.
    r = http.post("/trainings", json={"dataset_url": "http://127.0.0.1:9/x.zip", "name": "style"})
    assert r.status_code == 409 and r.json()["code"] == "training_unavailable" and "Ray Serve" in r.json()["error"]

    # Bad input is refused by the API deployment, in each protocol's shape, before any replica is asked.
    bad = http.post("/jobs", json={**CHEAP, "num_frames": 50})
    assert bad.status_code == 422 and bad.json()["field"] == "num_frames"
    bad = http.post("/v1/videos", json={"prompt": "a boat", "seconds": "60"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "seconds"


@pytest.mark.slow
def test_two_jobs_run_on_different_replicas(ray_server):
    proc, http, _ = ray_server
    ids = [http.post("/jobs", json={**CHEAP, "num_inference_steps": 100, "seed": i}).json()["id"] for i in range(2)]
    views = [wait_for_job(http, job_id, seconds=90) for job_id in ids]
    assert [v["status"] for v in views] == ["succeeded", "succeeded"], views
    replicas = {v["result"]["replica"] for v in views}
    assert len(replicas) == 2, views  # both ran at once (~2.5 s each), one on each replica
    assert max(v["started"] for v in views) < min(v["finished"] for v in views)
    pids = {int(name.rsplit(":", 1)[1]) for name in replicas}
    assert pids == set(generation_pids(proc.pid))
    # Ray's processes stay within the suite's memory budget (each well under 4 GB).
    assert max(rss_mb(pid) for pid in [proc.pid, *descendants(proc.pid)]) < 4000


@pytest.mark.slow
def test_a_cancel_reaches_the_replica_mid_job(ray_server):
    _, http, _ = ray_server
    job_id = http.post("/jobs", json={**LONG, "seed": 7}).json()["id"]
    deadline = time.monotonic() + 60
    while (view := http.get(f"/jobs/{job_id}").json())["step"] < 1:  # its replica's steps reach the job
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
    assert view["status"] == "running" and view["stage"] == "denoising" and view["total"] >= 100, view
    total = view["total"]
    asked = time.monotonic()
    assert http.delete(f"/jobs/{job_id}").status_code == 200
    view = wait_for_job(http, job_id, seconds=30)
    assert view["status"] == "cancelled" and view["step"] < total, view
    assert time.monotonic() - asked < 3  # stopped at its next step, not at the end of its ~6 s
    # Both replicas take jobs again at once (the cancelled one's device is free).
    ids = [http.post("/jobs", json={**CHEAP, "seed": 20 + i}).json()["id"] for i in range(2)]
    assert all(wait_for_job(http, j, seconds=60)["status"] == "succeeded" for j in ids)


@pytest.mark.slow
def test_a_killed_replica_fails_its_job_worker_lost_and_the_rest_finish(ray_server):
    proc, http, _ = ray_server
    running = [http.post("/jobs", json={**LONG, "seed": i}).json()["id"] for i in range(2)]
    queued = [http.post("/jobs", json={**CHEAP, "seed": 10 + i}).json()["id"] for i in range(2)]
    deadline = time.monotonic() + 60
    while not all(http.get(f"/jobs/{j}").json()["step"] >= 1 for j in running):  # both replicas are mid-job
        assert time.monotonic() < deadline, [http.get(f"/jobs/{j}").json() for j in running]
        time.sleep(0.1)
    victim = generation_pids(proc.pid)[0]
    os.kill(victim, signal.SIGKILL)

    ends = {job_id: wait_for_job(http, job_id, seconds=120) for job_id in running + queued}
    lost = [v for v in ends.values() if v["status"] == "failed"]
    assert len(lost) == 1, ends  # the killed replica's job, and only it
    assert lost[0]["error"]["code"] == "worker_lost", lost[0]
    assert lost[0]["id"] in running
    finished = [v for v in ends.values() if v["status"] == "succeeded"]
    assert len(finished) == 3, ends  # the other running job and both queued ones
    assert all(v["result"]["replica"] != f"{v['result']['replica'].rsplit(':', 1)[0]}:{victim}" for v in finished)
    # The app keeps serving (Ray Serve starts a new replica in the killed one's place).
    r = http.post("/generate", json=CHEAP)
    assert r.status_code == 200, r.text
    assert http.get("/health").json()["status"] == "healthy"
