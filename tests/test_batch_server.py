"""--max-batch on a real server: waiting jobs of one shape run as one batch, each its own video; admission
never lets a batch grow past what memory allows for all its rows."""

from __future__ import annotations

import io
import json

import av
import httpx
import numpy as np
import pytest
from servers import start_server, stop_server, wait_for_job

from ltx2.schema import GenerateRequest
from ltx2.serving.batching import companions
from ltx2.serving.job_store import Job

# Two jobs of one shape (guided: two passes each, four rows a step together), and a longer job of another
# shape that holds the worker while they queue.
SHAPE = {"width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 2, "use_multiscale": False,
         "guidance_scale": 3.0, "video_quality": "maximum"}
PAIR = [{**SHAPE, "prompt": "a cat on a piano", "seed": 1}, {**SHAPE, "prompt": "rain on a window", "seed": 2}]
OCCUPIER = {"prompt": "a long one", "width": 128, "height": 128, "num_frames": 17, "num_inference_steps": 8,
            "use_multiscale": False, "seed": 3}


def _frames(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(int)


@pytest.mark.slow
def test_two_waiting_jobs_run_as_one_batch_and_each_equals_its_run_alone(tmp_path):
    log = tmp_path / "server.log"
    proc, base = start_server(tmp_path / "out", log, "--max-batch", "2")
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            first = http.post("/jobs", json=OCCUPIER).json()["id"]
            ids = [http.post("/jobs", json=body).json()["id"] for body in PAIR]
            views = [wait_for_job(http, job_id, seconds=300) for job_id in (first, *ids)]
            assert [v["status"] for v in views] == ["succeeded"] * 3, views
            batched = [http.get(f"/jobs/{job_id}/video").content for job_id in ids]
            # The same two again, one at a time: each runs alone (nothing else waits).
            alone = []
            for body in PAIR:
                job_id = http.post("/jobs", json=body).json()["id"]
                assert wait_for_job(http, job_id, seconds=300)["status"] == "succeeded"
                alone.append(http.get(f"/jobs/{job_id}/video").content)
    finally:
        stop_server(proc)
    events = [json.loads(line.split("ltx2.jobs: ", 1)[1]) for line in log.read_text().splitlines()
              if "ltx2.jobs: {" in line]
    batches = [e for e in events if e.get("event") == "batch_started"]
    assert [(b["size"], b["jobs"]) for b in batches] == [(2, ids)]  # the pair, once; the occupier and reruns alone
    assert abs(views[1]["started"] - views[2]["started"]) < 1  # taken off the queue together
    for view, body in zip(views[1:], PAIR):
        assert (view["result"]["seed"], view["result"]["transformer_passes"]) == (body["seed"], 4)
    # Each file is its own video: the batch's frames differ from the run alone's by the batch's rounding
    # (tests/test_batch.py: at most one level before encoding), which the encoder keeps about as small.
    for b, a in zip(batched, alone):
        fb, fa = _frames(b), _frames(a)
        assert fb.shape == fa.shape == (9, 64, 64, 3)
        assert np.abs(fb - fa).mean() < 0.5 and np.abs(fb - fa).max() <= 8, (np.abs(fb - fa).mean(),
                                                                              np.abs(fb - fa).max())
    assert not np.array_equal(_frames(batched[0]), _frames(batched[1]))


@pytest.mark.slow  # the admission counts (about 4 s on this box)
def test_a_batch_never_grows_past_what_admission_allows(model, tmp_path):
    from ltx2.serving.admission import Admission

    request = GenerateRequest.model_validate({**PAIR[0]})
    probe = Admission(model, margin=1.0)
    one, two = (probe.footprint(request, jobs=n).host for n in (1, 2))
    assert two > one  # the batch's denoising rows and every job's frames count
    # A memory cgroup whose room fits one job's rows and not two jobs' (read as LTX2_MEMORY_CGROUP reads it).
    (tmp_path / "memory.max").write_text(str((one + two) // 2))
    (tmp_path / "memory.current").write_text("0")
    admission = Admission(model, margin=1.0, cgroup=str(tmp_path))
    assert admission.fits_batch(request, 1) and not admission.fits_batch(request, 2)
    jobs = [Job(id=f"j{i}", request=GenerateRequest.model_validate(body), ready=True)
            for i, body in enumerate([*PAIR, PAIR[0]])]
    assert companions(jobs[0], jobs, 4, admission) == []
    assert [j.id for j in companions(jobs[0], jobs, 4, Admission(model, margin=1.0))] == ["j1", "j2"]
    assert [j.id for j in companions(jobs[0], jobs, 2, None)] == ["j1"]  # up to --max-batch in all
    other = Job(id="x", request=GenerateRequest.model_validate(OCCUPIER), ready=True)
    waiting = Job(id="w", request=GenerateRequest.model_validate(PAIR[1]), ready=False)  # still preparing
    assert companions(jobs[0], [other, waiting], 4, None) == []


def test_max_batch_below_one_stops_start_up(tmp_path):
    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    with pytest.raises(ValueError, match="LTX2_MAX_BATCH"):
        create_app(Settings(output_dir=str(tmp_path), max_batch=0))
