"""`--max-batch N` on the job queue: a lane that takes a ready job also takes up to N - 1 waiting ready jobs
with the same batch key (ltx2.pipelines.batch.request_key: size, length, fps, steps, guidance, LoRAs, the
inputs' layout), and their denoising runs as one transformer batch.

Each member keeps its whole life as a job: the manager's own `_run` runs it, on a thread of its own, with
its own `check` / `on_step` / `on_progress`, its own finish (succeeded, cancelled, failed, timed out) and its
own video file. Only the generation is shared: every member's `run_job` reaches `Batch.render`, which waits
until each member has arrived (or ended before it could), generates them all in one call on one of their
threads (`generate_batch`), and hands each its own result to encode. A member's cancel or time limit
raises from its own step callback inside the batch and drops its row; the others go on.

Only in-process lanes batch (a worker process or a remote lane runs one job per call), never with a store
shared between API replicas (each job is claimed on its own), and a batch never grows past what memory
admission allows for that many rows (`Admission.fits_batch`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from types import SimpleNamespace

from ..media.encode import output_format
from ..pipelines.batch import BatchJob, generate_batch, request_key
from ..pipelines.conditioning import decode_conditioning
from ..pipelines.generate import image_targets
from ..pipelines.loras import resolve as resolve_loras
from ..pipelines.loras import with_prepared
from ..schema import generation_failed_body
from .job_store import FAILED, RUNNING
from .service import render_mp4

log = logging.getLogger("ltx2.jobs")

_batches: dict[str, Batch] = {}  # job id -> the batch it runs in, while it runs
_registry = threading.Lock()


def check_setting(max_batch: int) -> int:
    """LTX2_MAX_BATCH / --max-batch: a whole number >= 1 (a bad value stops start-up)."""
    if not isinstance(max_batch, int) or isinstance(max_batch, bool) or max_batch < 1:
        raise ValueError(f"LTX2_MAX_BATCH (--max-batch) must be a whole number >= 1, got {max_batch!r}")
    return max_batch


def companions(lead, waiting, max_batch: int, admission=None) -> list:
    """Up to `max_batch - 1` jobs from `waiting` (queue order) to run with `lead`: ready, with its batch key,
    and only as many as admission judges to fit as that many rows together."""
    key = request_key(lead.request) if max_batch > 1 else None
    chosen: list = []
    for job in waiting if key is not None else ():
        if len(chosen) + 1 >= max_batch:
            break
        if job is lead or not job.ready or job.cancel.is_set() or request_key(job.request) != key:
            continue
        if admission is not None and not admission.fits_batch(lead.request, len(chosen) + 2):
            break  # a larger batch would not fit; the rest wait for their turn
        chosen.append(job)
    return chosen


class QueueBatching:
    """The job manager's hook (`JobManager.batching`): `take` picks a lead's companions under the manager's
    lock, `run` runs them together."""

    def __init__(self, max_batch: int, admission=None, run_job=None):
        self.max_batch = check_setting(max_batch)
        self.admission = admission
        # The companions' run_job: the app's own, not the lane's, which takes the device's turn (shared with
        # LoRA trainings) per job; the lead holds the turn for the whole batch.
        self.run_job = run_job

    def take(self, manager, lead, lane) -> list:
        """Under `manager._cv`, once `lead` is RUNNING on `lane`: its companions, taken off the queue and
        marked running with it. None on a lane that is not this process's model, or a shared store."""
        if self.max_batch <= 1 or manager.store.shared or getattr(getattr(lane, "lane", None), "restart", None):
            return []
        waiting = [manager.jobs[i] for i in manager.waiting if i in manager.jobs]
        chosen = companions(lead, waiting, self.max_batch, self.admission)
        for job in chosen:
            manager.waiting.remove(job.id)
            job.status, job.started, job.stage = RUNNING, lead.started, "generating"
        return chosen

    def run(self, manager, lane, jobs) -> None:
        companion = lane
        if self.run_job is not None:  # duck-typed: what the manager's _run reads of a lane
            companion = SimpleNamespace(name=getattr(lane, "name", "main"), running=None,
                                        lane=SimpleNamespace(name=getattr(lane, "name", "main"), run_job=self.run_job,
                                                             restart=None, describe=None))
        run_together(manager, lane, jobs, manager._run, companion)


def batch_of(job) -> Batch | None:
    with _registry:
        return _batches.get(job.id)


class Batch:
    """The jobs of one batch meeting on their threads: the last to arrive generates for all."""

    def __init__(self, jobs):
        self.ids = [job.id for job in jobs]
        self.started = time.perf_counter()
        self._cv = threading.Condition()
        self._entries: dict[str, BatchJob] = {}
        self._gone: set[str] = set()
        self._taken = False  # a thread is generating (or has)
        self._results: dict[str, object] | None = None

    def _due(self) -> bool:
        """Under the lock: whether every member has arrived or ended, and no one has started the batch."""
        if self._taken or not self._entries or len(self._entries.keys() | self._gone) < len(self.ids):
            return False
        self._taken = True
        return True

    def leave(self, job) -> None:
        """A member's thread is done (or never arrived: refused before its generation)."""
        with self._cv:
            self._gone.add(job.id)
            due = self._due()
        if due:
            self._generate()

    def _generate(self) -> None:
        order = [i for i in self.ids if i in self._entries]
        results: dict[str, object] = {}
        try:
            out = generate_batch(self._model, [self._entries[i] for i in order])
            results = dict(zip(order, out))
        except Exception as exc:  # noqa: BLE001 - the shared call failed: every member fails with it
            results = dict.fromkeys(order, exc)
        finally:
            if not results:  # a BaseException: the members must not wait for ever
                results = dict.fromkeys(order, RuntimeError("the batch's generation was interrupted"))
            with self._cv:
                self._results = results
                self._cv.notify_all()

    def generate(self, model, job, entry: BatchJob):
        """Arrive with this job's request and callbacks; its own result once the batch has run."""
        with self._cv:
            self._model = model
            self._entries[job.id] = entry
            due = self._due()
        if due:
            self._generate()
        with self._cv:
            self._cv.wait_for(lambda: self._results is not None)
            out = self._results[job.id]
        if isinstance(out, Exception):
            raise out
        return out

    def render(self, state, job, on_step, conditioning, loras):
        """`_State._run_job` for a member: its inputs and LoRAs bound, the batch's generation, its own file."""
        model, request = state.model, job.request
        if output_format(request.video_output_type).audio_codec is None and request.include_audio:
            request = request.model_copy(update={"include_audio": False})  # as render_mp4: no track to fill
        policy = with_prepared(state.lora_policy, loras)
        if conditioning is None:  # a job without inputs: nothing to fetch, the empty conditioning
            conditioning = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate,
                                               targets=image_targets(model, request, policy))
        adapters = resolve_loras(model, request, policy)
        result = self.generate(model, job, BatchJob(request, on_step, conditioning, adapters, job.on_progress))
        rendered = render_mp4(model, request, on_step, conditioning=conditioning, check=job.check,
                              on_progress=job.on_progress, encode_threads=state.settings.encode_threads,
                              generated=result, started=self.started)
        return rendered.response(video="").model_dump(exclude={"video"}), rendered.data


def run_together(manager, lane, jobs, run, companion_lane=None) -> None:
    """Run `jobs` (the lane's job first, then its companions, all RUNNING) as one batch: `run(job, lane)` (the
    manager's `_run`) for each on a thread of its own, the lead on this one (the companions on
    `companion_lane`); returns when all have ended."""
    batch = Batch(jobs)
    with _registry:
        for job in jobs:
            _batches[job.id] = batch
    log.info(json.dumps({"event": "batch_started", "size": len(jobs), "jobs": batch.ids,
                         **({"lane": lane.name} if getattr(lane, "name", None) else {})}))

    def member(job) -> None:
        try:
            if job is not jobs[0]:  # the lead's record was written by the loop that took it
                manager._changed(job)
                manager._save(job)
            run(job, lane if job is jobs[0] else (companion_lane or lane))
        except Exception as exc:  # noqa: BLE001 - our own handling failed: this job fails, the rest go on
            log.exception("job %s: handling it failed", job.id)
            manager._finish(job, FAILED, error=generation_failed_body(exc), error_status=500)
        finally:
            batch.leave(job)

    def follow_shutdown() -> None:
        # The manager's stop() cancels the lane's job (the lead) when its grace ends: the companions with it.
        while not ended.wait(0.2):
            if getattr(manager, "_stopping", None) is not None and manager._stopping.is_set() \
                    and jobs[0].cancel.is_set():
                for job in jobs:
                    job.cancel.set()
                return

    ended = threading.Event()
    threads = [threading.Thread(target=member, args=(job,), name=f"ltx2-batch-{job.id[:8]}", daemon=True)
               for job in jobs[1:]]
    watch = threading.Thread(target=follow_shutdown, name="ltx2-batch-shutdown", daemon=True)
    try:
        for thread in (*threads, watch):
            thread.start()
        member(jobs[0])
        for thread in threads:
            thread.join()
    finally:
        ended.set()
        with _registry:
            for job in jobs:
                _batches.pop(job.id, None)
