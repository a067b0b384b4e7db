"""Videos per minute against the batch size (`--max-batch`): N jobs of one shape, each with its own prompt and
seed, through `ltx2.pipelines.batch.generate_batch` (N = 1 is the same code with one job, which equals
`generate()` bit for bit).

    python bench/batch.py                                   # tiny preset, 64x64x9, batch 1/2/4
    python bench/batch.py --model random-19b --layers 2 --size 256x256x9 --transformer-only
                                                            # LTX-2 19B's widths, 2 blocks: one denoising call

Each row: the batch's wall seconds (median of --repeat after a warm-up batch), videos per minute, and the
seconds of its shared denoising (the transformer batch) against the per-job stages (prompt, VAE encode and
decode, audio). The per-job stages do not shrink with batching; the denoising's gain is what a batch buys,
and it is larger where one job leaves the device idle (small videos on a big GPU) than on a CPU.
`--transformer-only` times just the shared part, one transformer call on N videos' rows (the inputs
bench/gpu.py's transformer rows use, widened to N): the arithmetic of batching without the per-job VAE
(a full-size VAE decode takes minutes on a CPU). The CPU columns (this process's CPU seconds, all threads) are the steadier measure on a shared machine,
where the wall clock also counts other processes' turns.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from ltx2 import load_model  # noqa: E402
from ltx2.pipelines.batch import BatchJob, generate_batch  # noqa: E402

PROMPTS = ["A red fox trotting through fresh snow at dawn", "Rain on a window at night, a city behind it",
           "A cat playing a grand piano, gentle music", "Waves on a beach under a storm, thunder far off"]
DENOISE = ("denoise", "stage1_denoise", "stage2_denoise")


def jobs(n: int, size: tuple[int, int, int], steps: int, two_stage: bool) -> list[BatchJob]:
    width, height, frames = size
    return [BatchJob({"prompt": PROMPTS[i % len(PROMPTS)] + f" ({i})", "seed": 100 + i, "width": width,
                      "height": height, "num_frames": frames, "num_inference_steps": steps,
                      "use_multiscale": two_stage}) for i in range(n)]


def run(model, n: int, args) -> dict:
    times, cpu, denoise = [], [], []
    for attempt in range(args.repeat + 1):  # the first is a warm-up
        start, start_cpu = time.perf_counter(), time.process_time()
        out = generate_batch(model, jobs(n, args.size, args.steps, args.two_stage))
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
        failed = [r for r in out if isinstance(r, Exception)]
        if failed:
            raise failed[0]
        if attempt:
            times.append(seconds)
            cpu.append(cpu_seconds)
            denoise.append(sum(out[0].timings.get(k, 0.0) for k in DENOISE))
    wall, shared, used = statistics.median(times), statistics.median(denoise), statistics.median(cpu)
    return {"batch": n, "seconds": wall, "videos_per_minute": 60 * n / wall, "denoise": shared,
            "per_job": (wall - shared) / n, "cpu": used, "per_cpu_minute": 60 * n / used}


def transformer_rows(model, n: int, args) -> dict:
    """Seconds of one transformer call on n videos' rows (one pass each), median of --repeat after a warm-up."""
    from types import SimpleNamespace

    import gpu  # bench/gpu.py: the pipeline-shaped inputs of one pass

    inputs = gpu.transformer_inputs(SimpleNamespace(model=model, device=model.device), args.size)
    widened = {k: torch.cat([v] * n) if torch.is_tensor(v) and v.dim() >= 1 and v.shape[0] == 1 else v
               for k, v in inputs.items()}
    transformer = model.pipe.transformer
    times, cpu = [], []
    with torch.inference_mode(), model.placement.use("transformer"):
        for attempt in range(args.repeat + 1):
            start, start_cpu = time.perf_counter(), time.process_time()
            transformer(**widened)
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            if attempt:
                times.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
    wall, used = statistics.median(times), statistics.median(cpu)
    return {"batch": n, "seconds": wall, "cpu": used, "per_video": wall / n, "per_video_cpu": used / n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="tiny, or random-19b (with --layers)")
    parser.add_argument("--layers", type=int, default=None)
    parser.add_argument("--size", default="64x64x9", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--two-stage", dest="two_stage", action="store_true")
    parser.add_argument("--batches", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--transformer-only", dest="transformer_only", action="store_true",
                        help="time one transformer call on N videos' rows instead of whole batches")
    args = parser.parse_args(argv)
    args.size = tuple(int(x) for x in args.size.lower().split("x"))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    extra = {"layers": args.layers} if args.layers else {}
    if args.model != "tiny":
        extra.update(text_encoder_dtype="bf16", compile="off")
    start = time.perf_counter()
    model = load_model(args.model, device=device, **extra)
    built = time.perf_counter() - start
    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    label = f"{args.model}{f' --layers {args.layers}' if args.layers else ''}"
    if args.transformer_only:
        rows = [transformer_rows(model, int(n), args) for n in args.batches.split(",")]
        print(f"\n## One transformer call on N videos' rows: {label}, {'x'.join(map(str, args.size))} "
              f"({where}; built in {built:.1f} s)\n")
        print("| batch | seconds | s/video | vs batch 1 | CPU s | CPU s/video | vs batch 1 |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['batch']} | {r['seconds']:.3f} | {r['per_video']:.3f} | "
                  f"{rows[0]['per_video'] / r['per_video']:.2f}x | {r['cpu']:.3f} | {r['per_video_cpu']:.3f} | "
                  f"{rows[0]['per_video_cpu'] / r['per_video_cpu']:.2f}x |")
        return 0
    rows = [run(model, int(n), args) for n in args.batches.split(",")]
    base = rows[0]["videos_per_minute"]
    print(f"\n## Batched generation: {label}, {'x'.join(map(str, args.size))}, {args.steps} steps, "
          f"{'two' if args.two_stage else 'one'} stage ({where}; built in {built:.1f} s)\n")
    print("| batch | seconds | videos/min | vs batch 1 | shared denoise s | per-job stages s/video | CPU s | "
          "videos/CPU-min | vs batch 1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['seconds']:.2f} | {r['videos_per_minute']:.1f} | "
              f"{r['videos_per_minute'] / base:.2f}x | {r['denoise']:.2f} | {r['per_job']:.2f} | {r['cpu']:.2f} | "
              f"{r['per_cpu_minute']:.1f} | {r['per_cpu_minute'] / rows[0]['per_cpu_minute']:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
