"""Encode time and file size for every output format x quality (and x write mode), on a smooth synthetic
landscape (how real footage behaves for a codec) and on uniform noise (the worst case: nothing to
predict). Prints markdown tables with the machine.

    python bench/bench_formats.py                       # 768x432, 121 frames at 25 fps, with audio
    python bench/bench_formats.py --width 1920 --height 1088 --runs 1
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import av
from host import cpu_model
from scenes import noise_frames, smooth_frames, tone

from ltx2.media.encode import FORMATS, default_threads, encode_video

QUALITIES = ("low", "medium", "high", "maximum")
MODES = ("fast", "balanced", "small")


def measure(frames, wave, runs: int, **options) -> tuple[float, int]:
    best, size = float("inf"), 0
    for _ in range(runs):
        start = time.perf_counter()
        data = encode_video(frames, 25, wave, 24_000, **options)
        best = min(best, time.perf_counter() - start)
        size = len(data)
    print(f"  {options} {best:.2f} s {size} bytes", file=sys.stderr, flush=True)
    return best, size


def table(title: str, rows: list[tuple[str, str, tuple, tuple]], column: str) -> None:
    print(f"\n{title}\n")
    print(f"| format | {column} | smooth s | smooth size | noise s | noise size |")
    print("|---|---|---:|---:|---:|---:|")
    for name, value, (ts, ss), (tn, sn) in rows:
        print(f"| {name} | {value} | {ts:.2f} | {ss / 1e6:.2f} MB | {tn:.2f} | {sn / 1e6:.1f} MB |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--height", type=int, default=432)
    parser.add_argument("--num-frames", type=int, default=121)
    parser.add_argument("--runs", type=int, default=2, help="best of this many encodes per cell")
    parser.add_argument("--threads", type=int, default=0, help="encoder threads; 0: the default")
    args = parser.parse_args()

    smooth = smooth_frames(args.num_frames, args.height, args.width)
    noise = noise_frames(args.num_frames, args.height, args.width)
    wave = tone(args.num_frames / 25)
    threads = args.threads or default_threads()
    load = os.getloadavg()

    def sweep(option: str, values: tuple[str, ...]) -> list:
        return [(output_type, value,
                 measure(smooth, wave, args.runs, output_type=output_type, threads=threads, **{option: value}),
                 measure(noise, wave, args.runs, output_type=output_type, threads=threads, **{option: value}))
                for output_type in FORMATS for value in values]

    table(f"video_quality, write mode balanced ({args.width}x{args.height}, {args.num_frames} frames, stereo audio "
          "where the format has it)", sweep("quality", QUALITIES), "quality")
    table("video_write_mode, quality high", sweep("write_mode", MODES), "write mode")

    print(f"\n{cpu_model()}, {os.cpu_count()} cores, {threads} encoder threads, PyAV {av.__version__} "
          f"(FFmpeg {av.ffmpeg_version_info}); best of {args.runs}; load average {load[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
