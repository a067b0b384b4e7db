"""The 24 GB question, answered with a memory model counted on meta tensors (ltx2.models.memory_model).

    python bench/memory_model.py                     # 768x512x121, one stage, no CFG (the distilled default)
    python bench/memory_model.py --size 1024x1536x121 --guided
    python bench/memory_model.py --preset random-22b    # LTX-2.5 + Gemma 4 (decode: its diffusion decoder)
    python bench/memory_model.py --calibrate         # admission's prediction against a tiny server's VmHWM

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


CALIBRATION_SIZES = ("64x64x9", "512x288x49", "768x512x121")


def calibrate(sizes=CALIBRATION_SIZES) -> list[tuple[str, float, float]]:
    """(size, predicted MiB, measured MiB) per size: admission's host prediction (margin 1) for the tiny
    preset on the CPU, against a fresh tiny server's VmHWM growth over its resident size at rest for one
    job of that size (1 step)."""
    import httpx

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import tempfile

    from servers import launch, stop_server, wait_healthy

    from ltx2.models.loaded import load_from_settings
    from ltx2.schema import GenerateRequest
    from ltx2.serving.admission import Admission
    from ltx2.settings import Settings

    admission = Admission(load_from_settings(Settings(device="cpu")), margin=1.0)
    rows = []
    for size in sizes:
        width, height, frames = (int(v) for v in size.split("x"))
        body = {"prompt": "a boat", "width": width, "height": height, "num_frames": frames, "num_inference_steps": 1,
                "seed": 1}
        predicted = admission.footprint(GenerateRequest(**body)).host
        folder = tempfile.mkdtemp(prefix="ltx2-calibrate-")
        proc, base = launch(os.path.join(folder, "out"), os.path.join(folder, "log"))
        try:
            wait_healthy(proc, base, os.path.join(folder, "log"), 180)
            rest = _status_kib(proc.pid, "VmRSS")
            with httpx.Client(base_url=base, timeout=600) as http:
                assert http.post("/generate", json=body).status_code == 200
            measured = _status_kib(proc.pid, "VmHWM") - rest
        finally:
            stop_server(proc)
        rows.append((size, predicted / 2**20, measured * 1024 / 2**20))
    return rows


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith(key + ":"))


def main() -> None:
    if "--calibrate" in sys.argv:
        print("| size (WxHxF) | predicted MiB | measured VmHWM growth MiB | predicted / measured |\n|---|---:|---:|---:|")
        for size, predicted, measured in calibrate():
            print(f"| {size} | {predicted:.0f} | {measured:.0f} | {predicted / measured:.2f} |")
        return
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
