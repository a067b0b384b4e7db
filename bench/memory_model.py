"""The 24 GB question, answered with a memory model counted on meta tensors (ltx2.models.memory_model).

    python bench/memory_model.py                     # 768x512x121, one stage, no CFG (the distilled default)
    python bench/memory_model.py --size 1024x1536x121 --guided
    python bench/memory_model.py --preset random-22b    # LTX-2.5 + Gemma 4 (decode: its diffusion decoder)

Prints each stage's device peak under each memory policy, with Gemma in bf16 or FP8 and the VAE
decoding the whole video or temporal tiles. It is a model, not a measurement: bench/gpu.py's capped
runs on a GPU measure the same thing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ltx2.models import memory, memory_model  # noqa: E402

GiB = 1024**3


def table(width: int, height: int, frames: int, guided: bool, tile_frames: int,
          preset: str = "random-19b") -> list[dict]:
    rows = []
    for te_dtype in ("bf16", "fp8"):
        modules = memory_model.build(te_dtype, preset=preset)
        for tiles in (None, tile_frames):
            acts = memory_model.activation_bytes(modules, width, height, frames, guided=guided, decode_frames=tiles)
            for policy in memory.POLICIES:
                peaks = memory_model.stage_peaks(modules, policy, acts)
                rows.append({"gemma": te_dtype, "decode": "whole video" if tiles is None else f"{tiles}-frame tiles",
                             "policy": policy, "peaks": peaks, "activations": acts})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--guided", action="store_true", help="classifier-free guidance (batch 2)")
    parser.add_argument("--tile-frames", type=int, default=4, help="latent frames per VAE decode tile")
    parser.add_argument("--cap-gib", type=float, default=24.0)
    parser.add_argument("--preset", default="random-19b", choices=sorted(memory_model.PRESETS))
    args = parser.parse_args()
    width, height, frames = (int(v) for v in args.size.split("x"))
    start = time.perf_counter()
    rows = table(width, height, frames, args.guided, args.tile_frames, args.preset)
    print(f"memory model (counted on meta tensors, not measured): {args.preset}, {width}x{height}x{frames}, "
          f"{'CFG' if args.guided else 'no CFG'}, bf16 activations, +{memory_model.OVERHEAD_BYTES / GiB:.0f} GiB "
          f"overhead per stage; {time.perf_counter() - start:.0f} s\n")
    acts = rows[0]["activations"]
    tiled = rows[3]["activations"].get("decode_video")  # the VAE's decode; the diffusion decoder is not tiled
    print("activations per stage (GiB): " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in acts.items())
          + (f"; decode in {args.tile_frames}-frame tiles: {tiled / GiB:.2f}" if tiled is not None else "") + "\n")
    stages = [s for s in memory.STAGES if s in rows[0]["peaks"]]  # upsample: only with an upsampler
    print(f"| Gemma | VAE decode | policy | {' | '.join(stages)} | peak GiB | fits {args.cap_gib:g} GiB |")
    print("|---|---|---|" + "---:|" * len(stages) + "---:|---|")
    for r in rows:
        peak = max(r["peaks"].values())
        cells = " | ".join(f"{r['peaks'][s] / GiB:.1f}" for s in stages)
        fits = "yes" if peak <= args.cap_gib * GiB else "no"
        print(f"| {r['gemma']} | {r['decode']} | {r['policy']} | {cells} | {peak / GiB:.1f} | {fits} |")


if __name__ == "__main__":
    main()
