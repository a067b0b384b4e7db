"""Per-stage times of a few requests on the tiny preset, one table per pipeline, with the machine.

    python bench/bench_tiny.py            # 288x512x49, 8 steps, one-stage and two-stage, 3 runs after a warm-up
    python bench/bench_tiny.py --runs 5 --num-frames 121 --pipelines two-stage
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from host import cpu_model

from ltx2 import load_model
from ltx2.schema import GenerateRequest
from ltx2.serving.service import render

STAGES = {
    "one-stage": ["encode_prompt", "prepare_latents", "denoise", "decode_video", "decode_audio", "mux",
                  "encode_base64"],
    "two-stage": ["encode_prompt", "prepare_latents", "stage1_denoise", "upsample", "stage2_denoise", "decode_video",
                  "decode_audio", "mux", "encode_base64"],
}


def machine() -> str:
    cpu = cpu_model()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {gpu}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--width", type=int, default=288)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--num-frames", type=int, default=49)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default=None)
    parser.add_argument("--pipelines", nargs="+", choices=list(STAGES), default=list(STAGES))
    args = parser.parse_args()

    start = time.perf_counter()
    # No prompt cache: every run encodes its prompt, so encode_prompt is Gemma's time (the cache's effect is
    # bench/gpu.py's "repeated prompt" rows).
    model = load_model("tiny", device=args.device, prompt_cache_mb=0)
    load_s = time.perf_counter() - start
    request = dict(prompt="A cat playing piano, studio lighting, gentle music", width=args.width,
                   height=args.height, num_frames=args.num_frames, num_inference_steps=args.steps)

    print(f"machine: {machine()}")
    print(f"model: tiny on {model.device}, loaded in {load_s:.2f} s")
    print(f"request: {args.width}x{args.height}, {args.num_frames} frames, {args.steps} steps, "
          f"{args.runs} runs after 1 warm-up per pipeline")
    for pipeline in args.pipelines:
        fields = dict(request, use_multiscale=pipeline == "two-stage")
        render(model, GenerateRequest(**fields, seed=0))  # warm-up: first-call allocations and kernels
        rows = []
        for run in range(args.runs):
            t = time.perf_counter()
            response = render(model, GenerateRequest(**fields, seed=run + 1))
            total = time.perf_counter() - t
            rows.append({**response.timings.model_dump(), "total": total,
                         "mp4_kb": len(response.video) * 3 / 4 / 1024, "ran_at": response.model_resolution,
                         "passes": response.transformer_passes})
        print(f"\n{pipeline} (model ran at {rows[0]['ran_at']}, {rows[0]['passes']} transformer passes)\n")
        print(f"| {'stage':<16} | {'median s':>9} | {'min s':>7} | {'max s':>7} |")
        print(f"|{'-' * 18}|{'-' * 11}|{'-' * 9}|{'-' * 9}|")
        for stage in STAGES[pipeline] + ["total"]:
            values = [row[stage] for row in rows]
            print(f"| {stage:<16} | {statistics.median(values):>9.3f} | {min(values):>7.3f} | {max(values):>7.3f} |")
        print(f"\nMP4 size: {statistics.median(r['mp4_kb'] for r in rows):.0f} KB (median)")


if __name__ == "__main__":
    main()
