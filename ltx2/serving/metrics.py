"""Prometheus text-format metrics, kept by hand: a few counters and sums need no client library."""

from __future__ import annotations

import threading
from collections import defaultdict

import torch

from .jobs import Job, JobManager
from ..models.memory import process_rss_bytes


# Counts each request reports in its timings, summed here.
COUNTERS = {
    "transformer_passes": "Samples sent through the transformer (steps, x2 with guidance).",
    "host_device_bytes": "Weight bytes the memory policy copied onto the GPU (0 under resident).",
    "prompt_cache_hits": "Requests whose prompt embeddings came from the prompt cache (Gemma skipped).",
}


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs = defaultdict(int)  # outcome -> count
        self.stage_sum = defaultdict(float)
        self.stage_count = defaultdict(int)
        self.job_seconds_sum = 0.0
        self.job_seconds_count = 0
        self.rejected = defaultdict(int)  # reason -> count (queue_full, shutting_down)
        self.counters = defaultdict(int)  # COUNTERS, summed over finished jobs

    def job_finished(self, job: Job) -> None:
        with self._lock:
            self.jobs[job.status] += 1
            for stage, seconds in (job.timings or {}).items():
                if stage in COUNTERS:  # per-request counts ride along in the timings
                    self.counters[stage] += seconds
                    continue
                self.stage_sum[stage] += seconds
                self.stage_count[stage] += 1
            if job.started and job.finished:
                self.job_seconds_sum += job.finished - job.started
                self.job_seconds_count += 1

    def job_rejected(self, reason: str) -> None:
        with self._lock:
            self.rejected[reason] += 1

    def render(self, manager: JobManager | None, device: torch.device | None) -> str:
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, float]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {_number(value)}" for labels, value in samples)

        with self._lock:
            metric("ltx2_queue_depth", "gauge", "Jobs waiting behind the running one.",
                   [("", manager.depth if manager else 0)])
            metric("ltx2_job_running", "gauge", "Jobs running now (1 at most per device worker).",
                   [("", len(manager.running_jobs) if manager else 0)])
            metric("ltx2_jobs_total", "counter", "Finished jobs by outcome.",
                   [(f'{{outcome="{k}"}}', v) for k, v in sorted(self.jobs.items())] or [('{outcome="succeeded"}', 0)])
            metric("ltx2_jobs_rejected_total", "counter", "Submissions refused, by reason.",
                   [(f'{{reason="{k}"}}', v) for k, v in sorted(self.rejected.items())] or [('{reason="queue_full"}', 0)])
            lines += ["# HELP ltx2_job_seconds Wall time of jobs from start to finish.",
                      "# TYPE ltx2_job_seconds summary",
                      f"ltx2_job_seconds_sum {_number(self.job_seconds_sum)}",
                      f"ltx2_job_seconds_count {self.job_seconds_count}",
                      "# HELP ltx2_stage_seconds Seconds spent per pipeline stage.",
                      "# TYPE ltx2_stage_seconds summary"]
            for stage in sorted(self.stage_sum):
                lines.append(f'ltx2_stage_seconds_sum{{stage="{stage}"}} {_number(self.stage_sum[stage])}')
                lines.append(f'ltx2_stage_seconds_count{{stage="{stage}"}} {self.stage_count[stage]}')
            for name, help_text in COUNTERS.items():
                metric(f"ltx2_{name}_total", "counter", help_text, [("", self.counters[name])])
        if manager is not None and len(manager.lanes) > 1:
            lines.extend(_lane_metrics(manager))
        if device is not None and device.type == "cuda":
            memory = [('{kind="allocated"}', torch.cuda.memory_allocated(device)),
                      ('{kind="reserved"}', torch.cuda.memory_reserved(device))]
        else:
            memory = [('{kind="process_rss"}', process_rss_bytes())]
        metric("ltx2_device_memory_bytes", "gauge", "Memory in use on the compute device (or the process, on CPU).",
               memory)
        return "\n".join(lines) + "\n"


def _lane_metrics(manager: JobManager) -> list[str]:
    """--devices: each worker's state, labelled by its lane (`device` label: cuda:0, cpu#1...)."""
    views = [lane.view() for lane in manager.lanes]
    families = {
        "ltx2_device_job_running": ("gauge", "1 while the device's worker runs a job.",
                                    lambda v: 1 if v.get("stage") is not None else 0),
        "ltx2_device_in_service": ("gauge", "1 while the device takes jobs; 0 once repeated faults took it out.",
                                   lambda v: 1 if v["in_service"] else 0),
        "ltx2_device_restarts_total": ("counter", "The device's worker replaced (lost, faulted, stuck or exited).",
                                       lambda v: v["restarts"]),
        "ltx2_device_process_alive": ("gauge", "1 while the device's worker process runs.",
                                      lambda v: 1 if v.get("process_alive", v["alive"]) else 0),
    }
    lines: list[str] = []
    for name, (kind, help_text, value) in families.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        lines += [f'{name}{{device="{_label(v["name"])}"}} {_number(value(v))}' for v in views]
    lines += ["# HELP ltx2_device_worker_memory_bytes Memory the device's worker reported after its last job "
              "(CUDA: allocated, reserved, free, total; CPU: the process's RSS).",
              "# TYPE ltx2_device_worker_memory_bytes gauge"]
    for v in views:
        for kind, amount in (v.get("memory") or {}).items():
            lines.append(f'ltx2_device_worker_memory_bytes{{device="{_label(v["name"])}",kind="{kind.removesuffix("_bytes")}"}} '
                         f"{_number(amount)}")
    return lines


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float) -> str:
    """Exact integers as integers (byte counts stay exact), other values with full precision."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))
