"""Per-request cost of LoRAs: the side path ltx2 uses against merging into the weights, 0, 1 and 3 LoRAs.

    python bench/bench_lora.py                 # tiny preset, 288x512x49, 8 steps, median of 3 after a warm-up
    python bench/bench_lora.py --smoke         # a few seconds: the CI check that both designs still run

Two tables:
1. Request time on the tiny preset per design and LoRA count: the denoising stage, the time to put the
   LoRAs in and take them out again, and the whole generate() call. Merging is implemented here, for
   the comparison only: per request it adds B @ A into each adapted weight (dequantising and
   requantising FP8 ones with a fresh per-tensor scale, as ltx-core's FP8 fuse rule does) and restores
   the saved originals afterwards.
2. One FP8 linear at the 19B's width (4096 x 4096, a rank-32 LoRA whose update is ~1% of the weight):
   the time to merge and unmerge it against the side path's extra time per pass, and how much of the
   LoRA's effect each design keeps (error relative to the LoRA's own contribution, against float32).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from host import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from lora_files import factors  # noqa: E402  (the tests' tiny LoRA maker)

from ltx2 import generate, load_model  # noqa: E402
from ltx2.models.fp8 import FP8Linear, quantize_per_tensor  # noqa: E402
from ltx2.models.lora import Adapter, layer_index, side_paths  # noqa: E402
from ltx2.schema import GenerateRequest  # noqa: E402


@contextmanager
def merged(model, adapters):
    """The alternative design: fold every adapter into the weights, restore the originals on exit."""
    index = layer_index(model)
    saved = {}
    try:
        deltas: dict = {}
        for adapter, scale in adapters:
            for layer, (down, up) in adapter.layers.items():
                delta = scale * (up.float() @ down.float())
                deltas[layer] = deltas[layer] + delta if layer in deltas else delta
        for layer, delta in deltas.items():
            module = index.modules[layer]
            if isinstance(module, FP8Linear):
                saved[layer] = (module.weight.data, module.weight_scale.data)
                weight = module.weight.data.float() * module.weight_scale.data + delta
                module.weight.data, module.weight_scale.data = quantize_per_tensor(weight)
            else:
                saved[layer] = (module.weight.data,)
                module.weight.data = (module.weight.data.float() + delta).to(module.weight.dtype)
        yield len(deltas)
    finally:
        for layer, tensors in saved.items():
            module = index.modules[layer]
            module.weight.data = tensors[0]
            if len(tensors) > 1:
                module.weight_scale.data = tensors[1]


def adapters_for(model, count: int, rank: int) -> list[tuple[Adapter, float]]:
    blocks = [layer for layer in layer_index(model).modules
              if layer[0] == "transformer" and layer[1].startswith("transformer_blocks.")]
    return [(Adapter(f"lora{i}", "-", "ltx", factors(model, blocks, rank=rank, seed=i, magnitude=0.1)), 1.0)
            for i in range(count)]


def request_table(args) -> None:
    model = load_model("tiny", device=args.device)
    request = GenerateRequest(prompt="A cat playing piano, studio lighting, gentle music", width=args.width,
                              height=args.height, num_frames=args.num_frames, num_inference_steps=args.steps, seed=1)
    generate(model, request)  # warm-up
    print("| design | LoRAs | layers adapted | denoise s | put in + take out s | generate() s | vs no LoRA |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    baseline = None
    for design, apply in (("side path", side_paths), ("merge", merged)):
        for count in (0, 1, 3):
            adapters = adapters_for(model, count, args.rank)
            denoise, wrap, total = [], [], []
            for _ in range(args.runs):
                start = time.perf_counter()
                with apply(model, adapters) as layers:
                    entered = time.perf_counter()
                    result = generate(model, request, adapters=[])
                    left = time.perf_counter()
                done = time.perf_counter()
                denoise.append(result.timings["denoise"])
                wrap.append((entered - start) + (done - left))
                total.append(done - start)
            row = [statistics.median(x) for x in (denoise, wrap, total)]
            if count == 0 and design == "side path":
                baseline = row[2]
            print(f"| {design} | {count} | {layers} | {row[0]:.3f} | {row[1]:.4f} | {row[2]:.3f} | "
                  f"{row[2] / baseline:.2f}x |")


def layer_table(args) -> None:
    torch.manual_seed(0)
    n, rank, tokens = args.width_19b, 32, args.tokens
    dense = torch.randn(n, n) / n**0.5
    layer = FP8Linear(n, n, bias=False, has_input_scale=False)
    q, scale = quantize_per_tensor(dense)
    layer.weight.data, layer.weight_scale.data = q, scale
    base = q.float() * scale
    down = torch.randn(rank, n) / n**0.5
    up = torch.randn(n, rank) * (0.01 * base.norm() / (torch.randn(n, rank) @ down).norm())  # update ~1% of W
    x = torch.randn(tokens, n)
    exact_lora = x @ (up @ down).T
    exact = x @ base.T + exact_lora

    def timed(fn, repeat=3):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    class One:
        device = torch.device("cpu")
        _lora_layer_index = type("Index", (), {"modules": {("transformer", "x"): layer}})()

    adapter = [(Adapter("x", "-", "ltx", {("transformer", "x"): (down, up)}), 1.0)]
    with torch.no_grad():
        plain_s, _ = timed(lambda: layer(x))
        with side_paths(One, adapter):
            side_s, side = timed(lambda: layer(x))
        context = merged(One, adapter)
        start = time.perf_counter()
        context.__enter__()
        merge_s = time.perf_counter() - start
        merged_out = layer(x)
        start = time.perf_counter()
        context.__exit__(None, None, None)
        unmerge_s = time.perf_counter() - start
        restored = torch.equal(layer.weight.view(torch.uint8), q.view(torch.uint8))
    side_err = ((side - exact).norm() / exact_lora.norm()).item()
    merge_err = ((merged_out - exact).norm() / exact_lora.norm()).item()
    print(f"\nOne FP8 linear {n}x{n}, rank-{rank} LoRA (update ~1% of the weight), {tokens} tokens, CPU float32:\n")
    print("| design | cost | error / LoRA's own contribution |")
    print("|---|---|---:|")
    print(f"| side path | +{(side_s - plain_s) * 1e3:.1f} ms per pass (the pass itself: {plain_s * 1e3:.1f} ms) | "
          f"{side_err:.4f} |")
    print(f"| merge (dequantise, add, requantise) | {merge_s * 1e3:.1f} ms to merge + {unmerge_s * 1e3:.2f} ms to "
          f"restore the saved copy ({'bit-exact' if restored else 'NOT exact'}), once per request | {merge_err:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--width", type=int, default=288)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--num-frames", type=int, default=49)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--width-19b", type=int, default=4096, help="the 19B's hidden width, for the layer table")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--device", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check that everything runs")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.width, args.height, args.num_frames, args.steps = 1, 64, 64, 9, 1
        args.width_19b, args.tokens = 256, 16
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {cpu_model()}, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}")
    print(f"request: tiny preset, {args.width}x{args.height}, {args.num_frames} frames, {args.steps} steps, "
          f"rank-{args.rank} LoRAs on every transformer-block linear, median of {args.runs}\n")
    request_table(args)
    layer_table(args)


if __name__ == "__main__":
    main()
