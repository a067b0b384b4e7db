"""bench/bench_lora.py --smoke: both LoRA designs still run, the merge restores the weights bit for bit,
and only the side path keeps a LoRA's effect on an FP8 layer."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_lora_benchmark_runs_and_shows_what_merging_into_fp8_loses():
    run = subprocess.run([sys.executable, "bench/bench_lora.py", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    rows = re.findall(r"^\| (side path|merge) \| (\d) \| (\d+) \|", run.stdout, re.MULTILINE)
    assert [(d, n) for d, n, _ in rows] == [(d, n) for d in ("side path", "merge") for n in "013"]
    assert all((layers == "0") == (n == "0") for _, n, layers in rows)
    side = float(re.search(r"^\| side path \| \+.*\| ([\d.]+) \|$", run.stdout, re.MULTILINE).group(1))
    merge = re.search(r"^\| merge \(dequantise.*\((bit-exact|NOT exact)\).*\| ([\d.]+) \|$", run.stdout, re.MULTILINE)
    assert side < 1e-3 and merge.group(1) == "bit-exact" and float(merge.group(2)) > 0.3
