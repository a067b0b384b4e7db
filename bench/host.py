"""What machine a benchmark ran on, for the line printed under its table."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def memory_gib() -> float:
    try:
        with open("/proc/meminfo") as fh:
            return int(next(line.split()[1] for line in fh if line.startswith("MemTotal"))) / 1024**2
    except (OSError, StopIteration):
        return float("nan")
