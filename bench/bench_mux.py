"""Muxing at high resolution: a 1088x1920, 121-frame smooth clip with a stereo soundtrack, encoded as
the default MP4 (H.264 veryfast CRF 18 + AAC).

Rows: the encoder as it was before threading (one x264 thread), the encoder now at 1..8 threads, and
the encoder fed chunk by chunk while a (simulated) chunked VAE decode produces the next chunk, against
decoding everything first. Each row says whether a second encode gave the same bytes.

    python bench/bench_mux.py
    python bench/bench_mux.py --width 768 --height 432 --threads 1,2 --decode-seconds 1
"""

from __future__ import annotations

import argparse
import io
import os
import time
from fractions import Fraction

import av
import numpy as np
from host import cpu_model
from scenes import smooth_frames, tone

from ltx2.media.encode import VideoEncoder, default_threads, encode_video


def before(frames: np.ndarray, fps: int, wave: np.ndarray, rate: int) -> bytes:
    """The MP4 encoder before this change: x264 with one thread and every routine it detects, swscale's
    default conversion, AAC after the video."""
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(fps, 1))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast", "threads": "1"}
        audio = container.add_stream("aac", rate=rate)
        audio.layout, audio.bit_rate = "stereo", 192_000
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        for start in range(0, wave.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start : start + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
    return buffer.getvalue()


def timed(fn) -> tuple[float, float, bytes]:
    wall, cpu = time.perf_counter(), time.process_time()
    data = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, data


def chunked(frames, wave, threads: int, decode_seconds: float, chunk: int, overlap: bool) -> bytes:
    """A chunked decode (sleeping `decode_seconds` in all, as the CPU does while the GPU decodes) feeding
    the encoder chunk by chunk (overlap), or decoding every chunk before encoding anything."""
    pieces = range(0, len(frames), chunk)
    per_chunk = decode_seconds / len(pieces)
    height, width = frames.shape[1:3]
    if not overlap:
        for _ in pieces:
            time.sleep(per_chunk)
        return encode_video(frames, 25, wave, 24_000, threads=threads)
    with VideoEncoder(width, height, 25, audio_rate=24_000, threads=threads) as encoder:
        for start in pieces:
            time.sleep(per_chunk)
            encoder.write(frames[start : start + chunk])
        return encoder.finish(wave, 24_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1088)
    parser.add_argument("--num-frames", type=int, default=121)
    parser.add_argument("--threads", default="1,2,4,8", help="thread counts to try")
    parser.add_argument("--decode-seconds", type=float, default=4.0,
                        help="simulated VAE decode time for the overlap rows (the GPU's, during which the CPU idles)")
    parser.add_argument("--chunk", type=int, default=16, help="frames per decoded chunk")
    args = parser.parse_args()

    frames = smooth_frames(args.num_frames, args.height, args.width)
    wave = tone(args.num_frames / 25)
    load = os.getloadavg()
    rows = []

    def row(name: str, fn) -> None:
        wall, cpu, data = timed(fn)
        same = fn() == data
        rows.append((name, wall, cpu, len(data), same))
        print(f"  {name}: {wall:.2f} s", flush=True)

    row("before: x264 1 thread (AVX-512 on), AAC after the video", lambda: before(frames, 25, wave, 24_000))
    for threads in (int(t) for t in args.threads.split(",")):
        row(f"now: {threads} thread{'s' if threads > 1 else ''}", lambda t=threads: encode_video(
            frames, 25, wave, 24_000, threads=t))
    threads = default_threads()
    for overlap in (False, True):
        label = "encoding each chunk as it is decoded" if overlap else "decoding everything, then encoding"
        row(f"{label} ({args.decode_seconds:g} s decode, {threads} threads)",
            lambda o=overlap: chunked(frames, wave, threads, args.decode_seconds, args.chunk, o))

    print(f"\n{args.width}x{args.height}, {args.num_frames} frames at 25 fps + stereo AAC, H.264 veryfast CRF 18\n")
    print("| encoder | wall s | CPU s | size | same bytes twice |")
    print("|---|---:|---:|---:|---|")
    for name, wall, cpu, size, same in rows:
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {size / 1e6:.2f} MB | {'yes' if same else 'NO'} |")
    print(f"\n{cpu_model()}, {os.cpu_count()} cores, PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); "
          f"load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after")


if __name__ == "__main__":
    main()
