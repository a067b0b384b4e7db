"""bench/gpu.py --smoke: the GPU benchmark's every section runs on the CPU, so it is ready for a GPU."""

import json
import subprocess
import sys
from pathlib import Path

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
