"""The 24 GB question, answered with a memory model counted on meta tensors (ltx2.models.memory_model).

    python bench/memory_model.py                     # 768x512x121, one stage, no CFG (the distilled default)
    python bench/memory_model.py --size 1024x1536x121 --guided
    python bench/memory_model.py --preset random-22b    # LTX-2.5 + Gemma 4 (decode: its diffusion decoder)
    python bench/memory_model.py --preset random-22b --temporal-upscale   # rows with the temporal x2 round too
    python bench/memory_model.py --preset random-22b --quantize fp8      # its transformer as --quantize fp8 loads it
    python bench/memory_model.py --calibrate         # admission's prediction against a tiny server's VmHWM
                                                     # (tiny, and tiny-2.5 with and without temporal_upscale)

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
          preset: str = "random-19b", temporal_upscale: bool = False, transformer_fp8: bool = False,
          video_decoder: str = "auto") -> list[dict]:
    """Rows per Gemma dtype x decode x (with `temporal_upscale`: without and with the round) x policy."""
    rows = []
    for te_dtype in ("bf16", "fp8"):
        modules = memory_model.build(te_dtype, preset=preset, temporal_upsampler=temporal_upscale,
                                     transformer_fp8=transformer_fp8)
        if video_decoder == "conv":  # `--vae-decoder conv`: the diffusion decoder is not loaded
            modules.pop("diffusion_decoder", None)
        for tiles in (None, tile_frames):
            for doubling in (False, True) if temporal_upscale else (False,):
                acts = memory_model.activation_bytes(modules, width, height, frames, guided=guided, decode_frames=tiles,
                                                     temporal_upscale=doubling)
                for policy in memory.POLICIES:
                    peaks = memory_model.stage_peaks(modules, policy, acts)
                    rows.append({"gemma": te_dtype, "decode": "whole video" if tiles is None else f"{tiles}-frame tiles",
                                 "round": "x2 temporal" if doubling else "none", "policy": policy, "peaks": peaks,
                                 "activations": acts})
    return rows


# (model, WxHxF, temporal_upscale, video decoder): tiny at three sizes, then tiny-2.5 at one size with and
# without the temporal x2 round (2N - 1 frames decoded, the transformer on twice the latent frames), with
# each of its video decoders.
CALIBRATION_CASES = (("tiny", "64x64x9", False, "auto"), ("tiny", "512x288x49", False, "auto"),
                     ("tiny", "768x512x121", False, "auto"),
                     ("tiny-2.5", "512x288x49", False, "conv"), ("tiny-2.5", "512x288x49", True, "conv"),
                     ("tiny-2.5", "512x288x49", False, "diffusion"), ("tiny-2.5", "512x288x49", True, "diffusion"))


def calibrate(cases=CALIBRATION_CASES) -> list[tuple[str, str, bool, str, float, float]]:
    """(model, size, temporal_upscale, video decoder, predicted MiB, measured MiB) per case: admission's
    host prediction (margin 1) for that preset on the CPU, against a fresh server's VmHWM growth over its
    resident size at rest for one job of that size (1 step)."""
    import httpx

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
    import tempfile

    from servers import launch, stop_server, wait_healthy

    from ltx2.models.loaded import load_from_settings
    from ltx2.schema import GenerateRequest
    from ltx2.serving.admission import Admission
    from ltx2.settings import Settings

    admissions = {}
    rows = []
    for name, size, temporal, decoder in cases:
        if (name, decoder) not in admissions:
            settings = Settings(device="cpu", model=name, vae_decoder=decoder)
            admissions[name, decoder] = Admission(load_from_settings(settings), margin=1.0)
        width, height, frames = (int(v) for v in size.split("x"))
        body = {"prompt": "a boat", "width": width, "height": height, "num_frames": frames, "num_inference_steps": 1,
                "seed": 1, **({"temporal_upscale": True} if temporal else {})}
        predicted = admissions[name, decoder].footprint(GenerateRequest(**body)).host
        folder = tempfile.mkdtemp(prefix="ltx2-calibrate-")
        proc, base = launch(os.path.join(folder, "out"), os.path.join(folder, "log"), "--model", name,
                            "--vae-decoder", decoder)
        try:
            wait_healthy(proc, base, os.path.join(folder, "log"), 180)
            rest = _status_kib(proc.pid, "VmRSS")
            with httpx.Client(base_url=base, timeout=600) as http:
                answer = http.post("/generate", json=body)
                assert answer.status_code == 200, answer.text
            measured = _status_kib(proc.pid, "VmHWM") - rest
        finally:
            stop_server(proc)
        rows.append((name, size, temporal, decoder, predicted / 2**20, measured * 1024 / 2**20))
    return rows


def _status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as file:
        return next(int(line.split()[1]) for line in file if line.startswith(key + ":"))


def main() -> None:
    if "--calibrate" in sys.argv:
        print("| model | video decoder | size (WxHxF) | temporal_upscale | predicted MiB | measured VmHWM growth MiB "
              "| predicted / measured |\n|---|---|---|---|---:|---:|---:|")
        for name, size, temporal, decoder, predicted, measured in calibrate():
            print(f"| {name} | {decoder} | {size} | {'yes' if temporal else 'no'} | {predicted:.0f} | {measured:.0f} | "
                  f"{predicted / measured:.2f} |", flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="768x512x121", help="WIDTHxHEIGHTxFRAMES")
    parser.add_argument("--guided", action="store_true", help="classifier-free guidance (batch 2)")
    parser.add_argument("--tile-frames", type=int, default=4, help="latent frames per VAE decode tile")
    parser.add_argument("--cap-gib", type=float, default=24.0)
    parser.add_argument("--preset", default="random-19b", choices=sorted(memory_model.PRESETS))
    parser.add_argument("--temporal-upscale", action="store_true",
                        help="rows with the temporal x2 round as well (2N - 1 frames; random-22b: LTX-2.5 has one)")
    parser.add_argument("--vae-decoder", choices=("auto", "conv"), default="auto",
                        help="random-22b: decode with the conv VAE (LTX-2.3's only decoder; LTX-2.5's --vae-decoder conv)")
    parser.add_argument("--quantize", choices=("none", "fp8"), default="none",
                        help="random-22b: its transformer in FP8 as `ltx2 serve --quantize fp8` loads a bf16 22B")
    args = parser.parse_args()
    width, height, frames = (int(v) for v in args.size.split("x"))
    start = time.perf_counter()
    rows = table(width, height, frames, args.guided, args.tile_frames, args.preset, args.temporal_upscale,
                 transformer_fp8=args.quantize == "fp8", video_decoder=args.vae_decoder)
    weights = {name: memory_model.random19b.weight_bytes(module, memory_model.torch.bfloat16) / GiB for name, module in
               memory_model.build("bf16", preset=args.preset, transformer_fp8=args.quantize == "fp8").items()}
    print("weights (GiB): " + ", ".join(f"{name} {size:.2f}" for name, size in weights.items()))
    print(f"memory model (counted on meta tensors, not measured): {args.preset}"
          f"{' (transformer FP8)' if args.quantize == 'fp8' else ''}, {width}x{height}x{frames}, "
          f"{'CFG' if args.guided else 'no CFG'}, bf16 activations, +{memory_model.OVERHEAD_BYTES / GiB:.0f} GiB "
          f"overhead per stage; {time.perf_counter() - start:.0f} s\n")
    acts = rows[0]["activations"]
    per_decode = len(memory.POLICIES) * (2 if args.temporal_upscale else 1)
    tiled = rows[per_decode]["activations"].get("decode_video")  # the VAE's; the diffusion decoder is not tiled
    print("activations per stage (GiB): " + ", ".join(f"{k} {v / GiB:.2f}" for k, v in acts.items())
          + (f"; decode in {args.tile_frames}-frame tiles: {tiled / GiB:.2f}" if tiled is not None else "") + "\n")
    # upsample: only with an upsampler; temporal_upsample: only in a row with the temporal round
    stages = [s for s in memory.STAGES if any(s in r["peaks"] for r in rows)]
    print(f"| Gemma | VAE decode | round | policy | {' | '.join(stages)} | peak GiB | fits {args.cap_gib:g} GiB |")
    print("|---|---|---|---|" + "---:|" * len(stages) + "---:|---|")
    for r in rows:
        peak = max(r["peaks"].values())
        cells = " | ".join(f"{r['peaks'][s] / GiB:.1f}" if s in r["peaks"] else "-" for s in stages)
        fits = "yes" if peak <= args.cap_gib * GiB else "no"
        print(f"| {r['gemma']} | {r['decode']} | {r['round']} | {r['policy']} | {cells} | {peak / GiB:.1f} | {fits} |")


if __name__ == "__main__":
    main()
