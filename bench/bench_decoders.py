"""LTX-2.5's two video decoders on the tiny preset: seconds and peak memory of decoding one latent.

    python bench/bench_decoders.py                 # 288x512 and 512x768, 49 and 121 frames, 3 runs each
    python bench/bench_decoders.py --runs 5 --sizes 288x512x49

The same latent goes through the conv decoder (the VAE's own) and the diffusion decoder (with the
floor padding of ltx2/models/diffusion_decode.py); the table shows the median time and the peak
bytes the decode allocated, counted with the memory model's tracker (ltx2.models.memory_model.LiveBytes
on the CPU's real tensors). It is the tiny preset's cost, not the 22B's: it says how the two decoders
compare at one width, and what the memory model charges the decode_video stage.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_tiny import machine

from ltx2 import load_model
from ltx2.models.memory_model import LiveBytes
from ltx2.models.diffusion_decode import diffusion_decode
from ltx2.pipelines.tiling import decode as tiled_decode
from ltx2.pipelines.tiling import free_bytes, plan_for


def decode_conv(model, latents):
    vae = model.pipe.vae
    return tiled_decode(vae, latents, plan_for(vae, latents.shape, free_bytes(latents.device)), None)


def decode_diffusion(model, latents):
    return diffusion_decode(model.diffusion_decoder, latents, torch.Generator().manual_seed(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["288x512x49", "512x768x121"], help="WIDTHxHEIGHTxFRAMES")
    args = parser.parse_args()
    model = load_model("tiny-2.5", device="cpu")
    print(f"machine: {machine()}")
    print(f"model: tiny-2.5 on {model.device}; {args.runs} runs after a warm-up, median seconds\n")
    print("| size | decoder | median s | min s | peak MB allocated |")
    print("|---|---|---:|---:|---:|")
    for size in args.sizes:
        width, height, frames = (int(v) for v in size.split("x"))
        latents = torch.randn(1, 128, (frames - 1) // 8 + 1, height // 32, width // 32,
                              generator=torch.Generator().manual_seed(1))
        for name, decode in (("conv", decode_conv), ("diffusion", decode_diffusion)):
            with torch.inference_mode():
                decode(model, latents)  # warm-up
                times = []
                for _ in range(args.runs):
                    start = time.perf_counter()
                    decode(model, latents)
                    times.append(time.perf_counter() - start)
                with LiveBytes() as tracker:
                    decode(model, latents)
            print(f"| {width}x{height}x{frames} | {name} | {statistics.median(times):.3f} | {min(times):.3f} | "
                  f"{tracker.peak / 1e6:.0f} |")


if __name__ == "__main__":
    main()
