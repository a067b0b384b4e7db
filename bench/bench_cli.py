"""How long the CLI takes to answer what needs no model: help, argument errors, a bad -o, a port in use.

    python bench/bench_cli.py [--runs 5]

Each command runs as a new process (`python -m ltx2.cli ...`, as the console script does); the table has
the median and the slowest wall time, and whether torch/diffusers were imported (`-X importtime`).
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "transformers")


def commands(port: int) -> list[tuple[str, list[str]]]:
    return [
        ("ltx2 --help", ["--help"]),
        ("ltx2 generate --help", ["generate", "--help"]),
        ("ltx2 serve --help", ["serve", "--help"]),
        ("ltx2 download --help", ["download", "--help"]),
        ("ltx2 generate --bogus", ["generate", "--prompt", "cat", "--bogus"]),
        ("ltx2 generate -o out.avi", ["generate", "--prompt", "cat", "-o", "out.avi"]),
        ("ltx2 generate -o x.webm --video-output-type mp4",
         ["generate", "--prompt", "cat", "-o", "x.webm", "--video-output-type", "mp4"]),
        ("ltx2 generate --num-frames 7", ["generate", "--prompt", "cat", "--num-frames", "7"]),
        ("ltx2 serve (port in use)", ["serve", "--model", "tiny", "--host", "127.0.0.1", "--port", str(port)]),
    ]


def run(argv: list[str], trace: bool) -> tuple[float, bool, int]:
    """Wall time, whether a heavy module was imported (only known with `trace`, which slows the run), exit."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, *(["-X", "importtime"] if trace else []), "-m", "ltx2.cli", *argv],
                          cwd=ROOT, capture_output=True, text=True)
    took = time.perf_counter() - start
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
                if line.startswith("import time:")}
    return took, bool(imported & set(HEAVY)), proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with socket.socket() as taken:  # a listening socket: `ltx2 serve` must say so before loading anything
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        rows = []
        for name, argv in commands(taken.getsockname()[1]):
            _, heavy, code = run(argv, trace=True)
            times = [run(argv, trace=False)[0] for _ in range(args.runs)]
            rows.append((name, statistics.median(times), max(times), heavy, code))
    width = max(len(r[0]) for r in rows)
    print(f"{'command':<{width}}  median s  max s  exit  torch/diffusers imported")
    for name, median, slowest, heavy, code in rows:
        print(f"{name:<{width}}  {median:8.2f}  {slowest:5.2f}  {code:4d}  {'yes' if heavy else 'no'}")


if __name__ == "__main__":
    main()
