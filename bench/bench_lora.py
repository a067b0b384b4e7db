"""Per-request cost of LoRAs: the side path ltx2 uses against merging into the weights, 0, 1 and 3 LoRAs.

    python bench/bench_lora.py                 # tiny preset, 288x512x49, 8 steps, fastest of 3 (round robin) after a warm-up
    python bench/bench_lora.py --smoke         # a few seconds: the CI check that both designs still run

Three tables:
1. Request time on the tiny preset per design and LoRA count: the denoising stage, the time to put the
   LoRAs in and take them out again, the whole generate() call, and the multiply-adds each design adds,
   counted by hooks (the tiny preset's 32-wide layers make a rank-16 LoRA as costly as the layer itself:
   read the ratios from table 2). Merging is implemented here, for
   the comparison only: per request it adds B @ A into each adapted weight (dequantising and
   requantising FP8 ones with a fresh per-tensor scale, as ltx-core's FP8 fuse rule does) and restores
   the saved originals afterwards.
2. The same count for the real 19B's block linears (shapes from tests/data/ltx2_19b_layout.json) at
   ranks 16, 64 and 384 (the distilled LoRA's).
3. One FP8 linear at the 19B's width (4096 x 4096, a rank-32 LoRA whose update is ~1% of the weight):
   the time to merge and unmerge it against the side path's extra time per pass, and how much of the
   LoRA's effect each design keeps (error relative to the LoRA's own contribution, against float32).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from host import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
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


def linear_macs(model, request) -> dict:
    """Multiply-adds of the transformer-block linears in one request, counted by hooks: {layer: rows}."""
    rows: dict = {}
    handles = []
    for layer, module in layer_index(model).modules.items():
        if layer[0] == "transformer" and layer[1].startswith("transformer_blocks."):
            handles.append(module.register_forward_hook(
                lambda m, args, out, layer=layer: rows.__setitem__(layer, rows.get(layer, 0) + args[0].numel() // m.in_features)))
    try:
        generate(model, request)
    finally:
        for handle in handles:
            handle.remove()
    return rows


def request_table(args) -> None:
    # random-19b: the real widths (so the real LoRA shapes) with --layers blocks, random weights.
    model = load_model(args.model, device=args.device, layers=args.layers if args.model == "random-19b" else None)
    request = GenerateRequest(prompt="A cat playing piano, studio lighting, gentle music", width=args.width,
                              height=args.height, num_frames=args.num_frames, num_inference_steps=args.steps, seed=1,
                              use_multiscale=False)  # one stage: one denoise time per row, at the requested size
    generate(model, request)  # warm-up
    # Counted, not timed: what each design adds in multiply-adds per request (the load on a shared machine
    # cannot change these).
    rows, index = linear_macs(model, request), layer_index(model)
    base = sum(n * index.modules[layer].in_features * index.modules[layer].out_features for layer, n in rows.items())
    configs = [(design, apply, count) for design, apply in (("side path", side_paths), ("merge", merged))
               for count in (0, 1, 3)]
    adapters = {count: adapters_for(model, count, args.rank) for count in (0, 1, 3)}
    times: dict = {key[::2]: ([], [], []) for key in configs}
    for _ in range(args.runs):  # round robin: a burst of load on the machine hits every row alike
        for design, apply, count in configs:
            start = time.perf_counter()
            with apply(model, adapters[count]) as layers:
                entered = time.perf_counter()
                result = generate(model, request, adapters=[])
                left = time.perf_counter()
            done = time.perf_counter()
            for series, value in zip(times[(design, count)], (result.timings["denoise"],
                                                               (entered - start) + (done - left), done - start)):
                series.append(value)
            times[(design, count, "layers")] = layers
    print("| design | LoRAs | layers | denoise s | put in + take out s | generate() s | extra multiply-adds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for design, _, count in configs:
        denoise, wrap, total = (min(series) for series in times[(design, count)])
        rank = args.rank * count
        if design == "side path":
            extra = sum(n * rank * (index.modules[layer].in_features + index.modules[layer].out_features)
                        for layer, n in rows.items())
        else:
            extra = sum(rank * index.modules[layer].in_features * index.modules[layer].out_features for layer in rows)
        share = f"{extra / 1e6:.1f} M ({100 * extra / base:.2f}% of the block linears)" if count else "0"
        print(f"| {design} | {count} | {times[(design, count, 'layers')]} | {denoise:.3f} | {wrap:.4f} | {total:.3f} | "
              f"{share} |")


def full_size_table(ranks=(16, 64, 384)) -> None:
    """The 19B's own block linears (shapes from the checked-in official layout): what each design costs."""
    layout = json.loads((ROOT / "tests" / "data" / "ltx2_19b_layout.json").read_text())["tensors"]
    shapes = [shape for key, shape in layout.items() if key.startswith("model.diffusion_model.transformer_blocks.")
              and key.endswith(".weight") and len(shape) == 2]
    params = sum(o * i for o, i in shapes)
    print(f"\nLTX-2 19B, all {len(shapes)} transformer-block linears ({params / 1e9:.1f} B weights), counted:\n")
    print("| rank | LoRA size (bf16) | side path: extra linear work per pass | merge: work per request | "
          "merge: FP8 weights rewritten and restored |")
    print("|---:|---:|---:|---:|---:|")
    for rank in ranks:
        lora = sum(rank * (o + i) for o, i in shapes)
        print(f"| {rank} | {lora * 2 / 1e9:.2f} GB | {100 * lora / params:.2f}% | "
              f"{2 * rank * params / 1e12:.2f} TFLOP + dequantise/requantise | {params / 1e9:.1f} GB twice, plus a "
              f"saved copy |")


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
    parser.add_argument("--model", default="tiny", choices=("tiny", "random-19b"),
                        help="the request table's model: the tiny preset, or LTX-2 19B at full width (random weights)")
    parser.add_argument("--layers", type=int, default=2, help="random-19b: transformer blocks to build")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: a check that everything runs")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.width, args.height, args.num_frames, args.steps = 1, 64, 64, 9, 1
        args.width_19b, args.tokens = 256, 16
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    print(f"machine: {cpu_model()}, torch {torch.__version__} ({torch.get_num_threads()} threads), {gpu}")
    model = "tiny preset" if args.model == "tiny" else f"random-19b, {args.layers} blocks at full width"
    print(f"request: {model}, {args.width}x{args.height}, {args.num_frames} frames, {args.steps} steps, "
          f"rank-{args.rank} LoRAs on every transformer-block linear, fastest of {args.runs} (round robin)\n")
    request_table(args)
    full_size_table()
    layer_table(args)


if __name__ == "__main__":
    main()
