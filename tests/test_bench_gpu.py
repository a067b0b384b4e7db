"""bench/gpu.py --smoke: the GPU benchmark's every section runs on the CPU, so it is ready for a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_smoke_runs_every_section(tmp_path):
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "| section | item | value | note |" in proc.stdout  # the table comes last
    rows = json.loads((tmp_path / "gpu-bench.json").read_text())["rows"]
    sections = {r["section"] for r in rows}
    assert sections >= {"machine", "build", "e2e", "transformer", "attention", "compile", "text encoder",
                        "vae decode", "mux", "memory caps"}
    assert not [r for r in rows if r["item"] in ("error", "skipped")], rows
    items = {(r["section"], r["item"]) for r in rows}
    assert ("transformer", "FP8 upcast s/step") in items and ("transformer", "BF16 s/step") in items
    assert ("transformer", "FP8 scaled-mm") in items  # n/a on a CPU, with the reason
    assert ("attention", "sdpa") in items and ("attention", "fastest here") in items
    e2e = [r for r in rows if r["section"] == "e2e" and str(r["value"]).endswith(" s")]
    # Two sizes in one stage and one in two stages, each twice.
    assert len(e2e) == 6 and all("denoise" in r["note"] and "mux" in r["note"] for r in e2e)
    assert [r["item"].endswith("two-stage (new prompt)") for r in e2e] == [False] * 4 + [True, False]
    assert ["transformer_passes 1," in r["note"] for r in e2e] == [True] * 4 + [False] * 2  # 1 step, one stage
    assert all("transformer_passes 4," in r["note"] for r in e2e[4:])  # 1 step + stage 2's 3
    # A new prompt runs Gemma, the same prompt again is the prompt cache's hit.
    assert ["prompt_cache_hits 0" in r["note"] for r in e2e] == [True, False] * 3
    assert all("prompt_cache_hits 1" in r["note"] for r in e2e[1::2])
    assert ("vae decode", "tiled") in {(r["section"], r["item"]) for r in rows}
    assert any(r["item"] == "compiled s/step" for r in rows)


def test_gpu_benchmark_smoke_for_random_22b_runs_every_section_on_tiny_2_5(tmp_path):
    """`--model random-22b --smoke`: the same sections on LTX-2.5's tiny preset, plus the diffusion decoder's row."""
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--model", "random-22b", "--smoke", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "## GPU benchmark (tiny-2.5, smoke" in proc.stdout
    report = json.loads((tmp_path / "gpu-bench.json").read_text())
    assert report["model"] == "random-22b"
    rows = report["rows"]
    assert {r["section"] for r in rows} >= {"machine", "build", "e2e", "transformer", "attention", "compile",
                                             "text encoder", "vae decode", "mux", "memory caps"}
    assert not [r for r in rows if r["item"] in ("error", "skipped")], rows
    items = {(r["section"], r["item"]) for r in rows}
    assert ("build", "diffusion_decoder") in items and ("build", "duration_head") in items
    assert {("vae decode", "untiled"), ("vae decode", "tiled"), ("vae decode", "diffusion decoder")} <= items
    decoder = next(r for r in rows if r["item"] == "diffusion decoder")
    assert str(decoder["value"]).endswith(" s"), decoder  # it ran
    e2e = [r for r in rows if r["section"] == "e2e" and str(r["value"]).endswith(" s")]
    assert len(e2e) == 6 and all("denoise" in r["note"] and "decode_video" in r["note"] for r in e2e)


@pytest.mark.slow  # imports the bench (torch, diffusers): seconds
def test_serving_sections_say_skipped_without_two_gpus(capsys):
    """devices and parallel latency start nothing with fewer than 2 GPUs, and say so in one line each."""
    import argparse

    import torch

    if torch.cuda.device_count() >= 2:
        pytest.skip("two GPUs visible: the sections run (bench/gpu.py on the device machine)")
    sys.path.insert(0, str(ROOT / "bench"))
    import gpu
    import gpu_serving

    b = gpu.Bench(argparse.Namespace(smoke=False, device="cpu", budget_s=60.0))
    b.model = "kept"  # a skipped section frees nothing
    gpu_serving.devices_section(b)
    gpu_serving.parallel_latency_section(b)
    count = torch.cuda.device_count()
    assert [(r["section"], r["item"], r["value"]) for r in b.rows] == [
        ("devices", "skipped", f"{count} GPU(s) visible, needs 2"),
        ("parallel latency", "skipped", f"{count} GPU(s) visible, needs 2")]
    assert f"[devices] skipped: {count} GPU(s) visible, needs 2" in capsys.readouterr().out and b.model == "kept"


@pytest.mark.slow
def test_serving_sections_smoke_start_real_servers(tmp_path):
    """--smoke --only devices,parallel latency: the same servers and rows as on GPUs, on cpu,cpu (tiny)."""
    proc = subprocess.run([sys.executable, "bench/gpu.py", "--smoke", "--only", "devices,parallel latency", "--out",
                           str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [r for r in json.loads((tmp_path / "gpu-bench.json").read_text())["rows"]
            if r["section"] in ("devices", "parallel latency")]
    assert [(r["section"], r["item"]) for r in rows] == [
        ("devices", "1 worker (cpu)"), ("devices", "2 workers (cpu,cpu)"),
        ("parallel latency", "one device (cpu)"), ("parallel latency", "ulysses=2")]
    assert all(r["value"].endswith(" videos/h") for r in rows[:2]) and "4 jobs in" in rows[1]["note"]
    assert all(r["value"].endswith(" s") and "x one device" in r["note"] for r in rows[2:])
