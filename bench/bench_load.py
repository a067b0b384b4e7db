"""Time and peak host memory of the single-file loader on a >1 GB miniature LTX-2 checkpoint.

    python bench/bench_load.py                 # writes two files to a temp dir, removes them after
    python bench/bench_load.py --dir /data --keep --layers 16

`ltx2.models.loading.load_single_file` builds components on `meta` and streams tensors one at a time
into their final dtype, so its peak should be the loaded model plus one tensor, not two copies.
This writes a bf16 and an FP8 checkpoint in the official layout (with `tests/miniature.py`, a
transformer scaled up until the bf16 file passes 1 GB), then loads each in a fresh subprocess
into bfloat16 (the GPU dtype; FP8 weights stay FP8) and float32 (bf16 data legitimately doubles)
and prints a markdown table of load time and peak RSS over the pre-load baseline.

Peak RSS is split into anonymous memory (the model's tensors) and file-backed pages (a memory map
of the file would show here; the loader reads with pread instead, so this column should stay ~0).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

from host import cpu_model, memory_gib

# The parent process imports neither torch nor the model: a child exec'd from it can inherit its
# peak RSS as its own starting ru_maxrss, and we want the children's numbers to be theirs alone.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_MARK = "BENCH_RESULT "
GIB = 1024**3
FILES = {"bf16": "ltx-2-19b-distilled.safetensors", "fp8": "ltx-2-19b-distilled-fp8.safetensors"}


# ---- child: write the two checkpoints -------------------------------------------------------

def big_config(layers: int, heads: int, head_dim: int) -> dict:
    """MINI_CONFIG with a large transformer; connectors, VAEs and vocoder stay miniature.

    cross_attention_dim must equal heads * head_dim (and the same for audio). caption_channels
    stays 32: `miniature.header_for` fakes the Gemma projection from it, and the connectors are
    sized by it, so it does not change the transformer's weight count much.
    """
    import copy

    import miniature

    config = copy.deepcopy(miniature.MINI_CONFIG)
    config["transformer"].update(
        num_layers=layers, num_attention_heads=heads, attention_head_dim=head_dim, cross_attention_dim=heads * head_dim,
        audio_num_attention_heads=heads, audio_attention_head_dim=head_dim, audio_cross_attention_dim=heads * head_dim,
    )
    return config


def write_files(directory: str, layers: int, heads: int, head_dim: int) -> None:
    import gc
    import time

    import miniature
    import torch

    config = big_config(layers, heads, head_dim)
    t = time.perf_counter()
    modules = miniature.build_components(config, seed=0)  # float32: about 2x the bf16 file
    print(f"built components in {time.perf_counter() - t:.1f}s", flush=True)
    for label, fp8 in (("bf16", False), ("fp8", True)):
        t = time.perf_counter()
        path = os.path.join(directory, FILES[label])
        tensors = miniature.write_checkpoint(path, modules, config, dtype=torch.bfloat16, fp8=fp8)
        del tensors  # the written copy; drop it before building the next one
        gc.collect()
        print(f"wrote {path} ({os.path.getsize(path) / GIB:.2f} GiB) in {time.perf_counter() - t:.1f}s", flush=True)


# ---- child: load one file and measure ---------------------------------------------------------

def proc_status() -> dict[str, int]:
    """/proc/self/status memory fields, in KiB."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def measure(path: str, dtype_name: str) -> None:
    import resource
    import threading
    import time

    import torch

    from ltx2.models.loading import load_single_file

    dtype = getattr(torch, dtype_name)
    before = proc_status()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Reset the kernel's high-water mark to the current RSS so a transient peak during imports
    # cannot hide the load's own peak (Linux >= 4.0; harmless where it is not allowed).
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        hwm_reset = True
    except OSError:
        hwm_reset = False

    # ru_maxrss only gives the total; a sampler thread tells anonymous memory from mapped file
    # pages. Torch's copies release the GIL, so 5 ms sampling keeps up.
    peaks = dict(before)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            now = proc_status()
            for key, value in now.items():
                peaks[key] = max(peaks.get(key, 0), value)
            done.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    modules, report = load_single_file(path, device="cpu", dtype=dtype, fp8_compute="upcast", kind="distilled")
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    after = proc_status()

    # Bytes the loaded tensors hold, each storage once (tied weights would otherwise count twice).
    # Reading one byte per page of every tensor makes it resident, as the first forward pass would;
    # if a loader left weights as lazily mapped file pages, RSS right after loading would hide them.
    seen, loaded = set(), 0
    with torch.no_grad():
        for module in modules.values():
            for tensor in module.state_dict(keep_vars=True).values():
                storage = tensor.untyped_storage()
                if storage.data_ptr() in seen:
                    continue
                seen.add(storage.data_ptr())
                loaded += storage.nbytes()
                flat = torch.empty(0, dtype=torch.uint8).set_(storage)
                flat[::4096].sum()
    touched = proc_status()
    result = {
        "file": path, "file_bytes": os.path.getsize(path), "dtype": dtype_name, "seconds": seconds,
        "baseline_kib": before["VmRSS"], "maxrss_before_kib": maxrss_before, "maxrss_kib": maxrss,
        "hwm_reset": hwm_reset, "peak_anon_kib": peaks["RssAnon"], "peak_file_kib": peaks["RssFile"],
        "baseline_anon_kib": before["RssAnon"], "baseline_file_kib": before["RssFile"], "after_kib": after["VmRSS"],
        "touched_kib": touched["VmRSS"], "loaded_bytes": loaded,
        "fp8_layers": report.fp8_layers, "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


# ---- parent ------------------------------------------------------------------------------------

def machine() -> str:
    return f"{cpu_model()}, {os.cpu_count()} cores, {memory_gib():.0f} GiB RAM"


def child(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False)  # on failure, show its output below
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}")
    return proc


def run_all(args: argparse.Namespace) -> None:
    directory = args.dir or tempfile.gettempdir()
    # Two files of roughly 1.1 and 0.6 GB at the default size, plus slack.
    need = 3 * GIB * args.layers / 12
    free = shutil.disk_usage(directory).free
    if free < need:
        sys.exit(f"{directory}: {free / GIB:.1f} GiB free, need about {need / GIB:.1f}; pass --dir with more room")
    work = tempfile.mkdtemp(prefix="ltx2-bench-load-", dir=directory)
    print(f"machine: {machine()}")
    print(f"files in {work} ({free / GIB:.0f} GiB free)", flush=True)
    try:
        print(child("--_write", work, "--layers", str(args.layers), "--heads", str(args.heads),
                    "--head-dim", str(args.head_dim)).stdout, end="", flush=True)
        results = []
        for label in ("bf16", "fp8"):
            for dtype in ("bfloat16", "float32"):
                out = child("--_measure", os.path.join(work, FILES[label]), dtype).stdout
                line = next(l for l in out.splitlines() if l.startswith(RESULT_MARK))
                results.append(json.loads(line.removeprefix(RESULT_MARK)))
                r = results[-1]
                print(f"  loaded {label} -> {dtype} in {r['seconds']:.1f}s", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results, f"{args.layers} layers x {args.heads} heads x {args.head_dim} (video and audio)")


def gib(kib: int) -> float:
    return kib / 1024**2


def print_table(results: list[dict], model: str) -> None:
    r0 = results[0]
    print(f"\nmachine: {machine()}, torch {r0['torch']} ({r0['threads']} threads); page cache warm "
          f"(files just written); transformer {model}")
    print("\n| file | size | target dtype | load s | peak RSS increase | x file size | anon / file-backed "
          "| loaded bytes | resident after reading weights |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        increase = r["maxrss_kib"] - r["baseline_kib"]
        anon = r["peak_anon_kib"] - r["baseline_anon_kib"]
        file_backed = r["peak_file_kib"] - r["baseline_file_kib"]
        print(f"| {os.path.basename(r['file'])} | {r['file_bytes'] / GIB:.2f} GiB | {r['dtype']} | {r['seconds']:.1f} "
              f"| {gib(increase):.2f} GiB | {increase * 1024 / r['file_bytes']:.2f}x "
              f"| {gib(anon):.2f} / {gib(file_backed):.2f} GiB | {r['loaded_bytes'] / GIB:.2f} GiB "
              f"| {gib(r['touched_kib'] - r['baseline_kib']):.2f} GiB |")
    if not r0["hwm_reset"]:
        print("\nnote: could not reset the RSS high-water mark; peaks include anything the imports touched")
    print("\npeak RSS increase: ru_maxrss after the load minus VmRSS just before it (after imports). anon / "
          "file-backed: peak RssAnon / RssFile over their baselines (tensors in process memory / mapped file "
          "pages, page cache: shared and reclaimable). resident after reading weights: "
          "VmRSS over baseline once every weight page has been read.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", help="where to write the checkpoints (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the written checkpoints")
    parser.add_argument("--layers", type=int, default=12, help="transformer blocks (12 -> ~1.1 GB bf16 file)")
    parser.add_argument("--heads", type=int, default=16, help="attention heads, video and audio")
    parser.add_argument("--head-dim", type=int, default=64, help="attention head dim, video and audio")
    parser.add_argument("--_write", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--_measure", nargs=2, metavar=("FILE", "DTYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args._write or args._measure:
        sys.path[:0] = [REPO, os.path.join(REPO, "tests")]  # ltx2 and tests/miniature.py
        if args._write:
            write_files(args._write, args.layers, args.heads, args.head_dim)
        else:
            measure(*args._measure)
        return
    run_all(args)


if __name__ == "__main__":
    main()
