"""The GPU benchmark: LTX-2 19B (or LTX-2.5 22B) at full size (random weights) on one GPU, in one command.

    python bench/gpu.py --out $OUT          # the device machine: about 5 minutes on an H100/H200
    python bench/gpu.py --model random-22b --out $OUT   # LTX-2.5 + Gemma 4 (bf16; ~67 GiB of weights)
    python bench/gpu.py --smoke             # any machine, CPU included: every row on the tiny preset
    python bench/gpu.py --model random-22b --smoke      # ... on the tiny-2.5 preset

It prints one table (machine, torch, CUDA; then one section per question) and, with --out, writes
the same rows as JSON (gpu-bench.json). Sections run in order and each one stands alone: an error
is a row saying so, and once --budget-s is spent the rest are skipped, so the table always comes
back inside a device call's 10 minutes.

1. build: random-19b (or random-22b) built on the GPU, seconds and GPU memory per component.
2. e2e: warm end-to-end and per-stage seconds (and peak memory per stage where the pipeline
   reports it) for 288x512x49, 768x512x121 (one stage, 8 steps: SGLang's workload) and
   1024x1536x121 two-stage when the build has it; the prompt cache's second request.
3. transformer: seconds per step at 768x512x121 for FP8 `_scaled_mm`, FP8 upcast and BF16 (a bf16
   model, random-22b, gets random-19b's FP8 blocks for the FP8 rows, then goes back to bf16).
4. attention: seconds per step for each SDPA kernel and each other diffusers backend that runs.
5. compile: regional compilation, its compile seconds and its seconds per step.
6. text encoder: Gemma in FP8 against BF16: embedding error, encode seconds, bytes.
7. vae decode: tiled against untiled at 768x512x121: seconds and peak memory; with LTX-2.5's diffusion
   decoder, a row for it too (the conv decoder is the tiled/untiled rows).
8. mux: H.264+AAC of 121 frames at 1920x1088.
8b. batch: --max-batch's videos per minute at 288x512x49 one stage, 8 steps, for 1, 2 and 4 jobs in one batch
   (ltx2.pipelines.batch); without CUDA it says so and runs nothing (--smoke runs 1 and 2 on the tiny preset).
9. memory caps: `set_per_process_memory_fraction` at 48, 32 and 24 GiB: the policy auto picks, does
   768x512x121 finish, its peak and its time.
10. parallel (it frees this process's model): seconds per transformer step at 768x512x121 on
   one GPU, then in `--parallel ulysses=N` groups (N = 2, and 4 or 8 when that many GPUs are visible)
   of rank processes over NCCL, each building the model on its own GPU. With fewer than 2 GPUs it
   says so and runs nothing; `--smoke` runs a 2-rank gloo group on the CPU.
11. devices and 12. parallel latency (bench/gpu_serving.py): real servers. Videos per hour with one worker
   per GPU against one; one guided video's seconds with `--parallel ulysses=2` and `cfg=2` against one GPU.
   With fewer than 2 GPUs: "skipped: N GPU(s) visible, needs 2". `--smoke` runs them only when --only names them.

`--smoke` runs every section on the model's tiny preset (`tiny`, or `tiny-2.5` for random-22b; its
block 1 quantized to FP8 so the FP8 rows have something to time) at small sizes, on the CPU: CI runs
it, so the benchmark cannot rot.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import traceback
from contextlib import contextmanager

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from ltx2 import load_model  # noqa: E402
from ltx2.models import fp8 as fp8_module  # noqa: E402
from ltx2.models import memory, random19b, random22b, speed  # noqa: E402
from ltx2.schema import GenerateRequest  # noqa: E402

import gpu_serving  # noqa: E402

GiB = 1024**3
MODELS = {random19b.NAME: "tiny", random22b.NAME: "tiny-2.5"}  # each random preset's tiny preset, for --smoke
PROMPT = "A red fox trotting through fresh snow at dawn, soft light, the crunch of paws on snow"


class Bench:
    """Rows of (section, item, value, note), the clock, and the budget."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.rows: list[dict] = []
        self.start = time.perf_counter()
        self.model = None

    def row(self, section: str, item: str, value, note: str = "") -> None:
        self.rows.append({"section": section, "item": item, "value": value, "note": note})
        print(f"  [{section}] {item}: {value} {note}", flush=True)

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    @contextmanager
    def section(self, name: str, needs_s: float = 0.0):
        """Run a section unless the budget is spent; an error becomes a row and the next section runs."""
        if self.left() < needs_s:
            self.row(name, "skipped", "-", f"time budget: {self.left():.0f} s left, needs ~{needs_s:.0f}")
            yield False
            return
        print(f"== {name} ({self.left():.0f} s of budget left)", flush=True)
        try:
            yield True
        except Exception as exc:  # noqa: BLE001 - one broken section must not cost the table
            self.row(name, "error", f"{type(exc).__name__}: {str(exc)[:300]}")
            traceback.print_exc()
        finally:
            self.sync()
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def timed(self, fn, repeat: int = 1, warmup: int = 0) -> float:
        """Median wall seconds of `fn()` after `warmup` calls, synchronized with the device."""
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            fn()
            self.sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    def peak_reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_gb(self) -> float | None:
        return round(torch.cuda.max_memory_allocated(self.device) / 1e9, 2) if self.device.type == "cuda" else None


def gb(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 1e9:.2f} GB"


# ---------------------------------------------------------------------------------------- sizes

def sizes(smoke: bool) -> dict[str, tuple[int, int, int]]:
    """Workloads, as (width, height, frames)."""
    if smoke:  # the smallest sizes; "sglang" has 4 latent frames, so the tiled decode makes two tiles
        return {"headline": (64, 64, 9), "sglang": (64, 64, 25), "two_stage": (128, 128, 9)}
    return {"headline": (288, 512, 49), "sglang": (768, 512, 121), "two_stage": (1024, 1536, 121)}


def request(size: tuple[int, int, int], steps: int, **extra) -> GenerateRequest:
    width, height, frames = size
    return GenerateRequest(prompt=PROMPT, width=width, height=height, num_frames=frames, num_inference_steps=steps,
                           seed=7, **extra)


# ---------------------------------------------------------------------------------------- sections

def machine(b: Bench) -> None:
    import diffusers
    import transformers

    from host import cpu_model

    b.row("machine", "cpu", f"{cpu_model()}, {os.cpu_count()} cores")
    b.row("machine", "python / torch", f"{platform.python_version()} / {torch.__version__}")
    b.row("machine", "CUDA / cuDNN", f"{torch.version.cuda} / {torch.backends.cudnn.version()}")
    b.row("machine", "diffusers / transformers", f"{diffusers.__version__} / {transformers.__version__}")
    if b.device.type == "cuda":
        props = torch.cuda.get_device_properties(b.device)
        b.row("machine", "gpu", f"{props.name}, sm_{props.major}{props.minor}, {props.total_memory / GiB:.0f} GiB, "
                                f"{props.multi_processor_count} SMs")
    else:
        b.row("machine", "gpu", "none: CPU run")


def build(b: Bench) -> None:
    """The random preset on the GPU, resident unless --memory-policy says otherwise (the smoke run: its
    tiny preset, with block 1 in FP8)."""
    start = time.perf_counter()
    if b.args.smoke:
        model = load_model(MODELS[b.args.model], device=b.device, attention="auto", compile="off")
        transformer = model.pipe.transformer
        names = random19b.fp8_layer_names(transformer, len(transformer.transformer_blocks))
        fp8_module.quantize_linears(transformer, names, fp8_module.resolve_compute("auto", b.device))
        for name, value in (("transformer_fp8_layers", len(names)),):
            b.row("build", name, value, "tiny preset, block 1 quantized")
    else:
        model = load_model(b.args.model, device=b.device, layers=b.args.layers, memory_policy=b.args.memory_policy,
                           text_encoder_dtype="bf16", attention=b.args.attention, compile="off")
    b.model = model
    b.row("build", "total", f"{time.perf_counter() - start:.1f} s", f"{model.name}, {model.dtype}")
    report = model.checkpoint or {}
    for name, size in model.placement.sizes.items():
        seconds = (report.get("build_seconds") or {}).get(name)
        b.row("build", name, gb(size), f"{seconds:.1f} s" if seconds is not None else "")
    if b.device.type == "cuda":
        b.row("build", "allocated after build", gb(torch.cuda.memory_allocated(b.device)))
    b.row("build", "attention", model.speed["attention"]["backend"], model.speed["attention"]["reason"])


def e2e(b: Bench) -> None:
    from ltx2.serving.service import render_mp4

    model = b.model
    steps = 1 if b.args.smoke else 8
    workloads = sizes(b.args.smoke)
    runs = [("headline", {}), ("sglang", {})]
    if "use_multiscale" in GenerateRequest.model_fields:
        # The headline and SGLang sizes run one stage, as their published numbers do; two-stage has its own row.
        runs = [(key, {"use_multiscale": False}) for key, _ in runs] + [("two_stage", {"use_multiscale": True})]
    else:
        b.row("e2e", "two-stage " + "x".join(map(str, workloads["two_stage"])), "n/a",
              "this build has no two-stage pipeline")
    for key, extra in runs:
        label = "x".join(map(str, workloads[key])) + (" two-stage" if extra.get("use_multiscale") else "")
        if b.left() < (20 if b.args.smoke else 60):
            b.row("e2e", label, "skipped", "time budget")
            continue
        try:
            req = request(workloads[key], steps, **extra)
            if not b.args.smoke:
                render_mp4(model, req)  # warm: allocator, kernels
            # A new prompt, as most requests bring: Gemma runs. Then the same again: the prompt cache's hit.
            req = req.model_copy(update={"seed": 8, "prompt": f"{PROMPT}, {label}"})
            for run in ("new prompt", "repeated prompt"):
                b.peak_reset()
                t = time.perf_counter()
                rendered = render_mp4(model, req)
                b.sync()
                total = time.perf_counter() - t
                timings = rendered.fields["timings"]
                stages = ", ".join(f"{k} {v:.3f}" for k, v in timings.items() if isinstance(v, float) and v >= 0.0005)
                peak = f"; peak {b.peak_gb()} GB" if b.device.type == "cuda" else ""
                counters = ", ".join(f"{k} {timings[k]}" for k in ("transformer_passes", "host_device_bytes",
                                                                     "prompt_cache_hits") if k in timings)
                b.row("e2e", f"{label} ({run})", f"{total:.2f} s", f"{steps} steps; {stages}{peak}; {counters}")
        except Exception as exc:  # noqa: BLE001
            b.row("e2e", label, "error", f"{type(exc).__name__}: {str(exc)[:300]}")


def transformer_inputs(b: Bench, size: tuple[int, int, int]) -> dict:
    """One denoising pass's inputs at a size, the way the pipeline makes them (batch 1, no CFG)."""
    from ltx2.models.geometry import audio_latent_frames, latent_video_shape

    pipe, device, dtype = b.model.pipe, b.device, b.model.dtype
    width, height, frames = size
    t_lat, h_lat, w_lat = latent_video_shape(frames, height, width, pipe.vae_spatial_compression_ratio,
                                             pipe.vae_temporal_compression_ratio)
    audio = pipe.audio_vae.config
    a_frames = audio_latent_frames(frames, 25, audio.sample_rate, audio.mel_hop_length,
                                   pipe.audio_vae_temporal_compression_ratio)
    config = pipe.transformer.config
    gen = torch.Generator().manual_seed(0)
    # The connectors' output widths: Gemma's for the 19B (its caption projection is inside the transformer),
    # each stream's own from LTX-2.3 on.
    video_text, audio_text = ((config.caption_channels,) * 2 if config.use_prompt_embeddings
                              else (config.cross_attention_dim, config.audio_cross_attention_dim))
    return dict(
        hidden_states=torch.randn(1, t_lat * h_lat * w_lat, config.in_channels, generator=gen).to(device, dtype),
        audio_hidden_states=torch.randn(1, a_frames, config.audio_in_channels, generator=gen).to(device, dtype),
        encoder_hidden_states=torch.randn(1, 1024, video_text, generator=gen).to(device, dtype),
        audio_encoder_hidden_states=torch.randn(1, 1024, audio_text, generator=gen).to(device, dtype),
        timestep=torch.full((1,), 500.0, device=device), audio_timestep=torch.full((1,), 500.0, device=device),
        encoder_attention_mask=None, audio_encoder_attention_mask=None,
        num_frames=t_lat, height=h_lat, width=w_lat, fps=25, audio_num_frames=a_frames,
        video_coords=pipe.transformer.rope.prepare_video_coords(1, t_lat, h_lat, w_lat, device, fps=25),
        audio_coords=pipe.transformer.audio_rope.prepare_audio_coords(1, a_frames, device),
        use_cross_timestep=False, return_dict=False,
    )


def step_seconds(b: Bench, inputs: dict, repeat: int) -> float:
    transformer = b.model.pipe.transformer
    with torch.inference_mode(), b.model.placement.use("transformer"):
        return b.timed(lambda: transformer(**inputs), repeat=repeat, warmup=0 if b.args.smoke else 1)


def dequantize(module) -> list[str]:
    """FP8Linear -> bf16 nn.Linear, in place (for the BF16 row); returns the names."""
    names = []
    for name, sub in list(module.named_modules()):
        if isinstance(sub, fp8_module.FP8Linear):
            linear = torch.nn.Linear(sub.in_features, sub.out_features, bias=sub.bias is not None,
                                     device=sub.weight.device, dtype=b_dtype(module))
            with torch.no_grad():
                linear.weight.copy_(sub.weight.float() * sub.weight_scale)
                if sub.bias is not None:
                    linear.bias.copy_(sub.bias)
            parent, _, attr = name.rpartition(".")
            setattr(module.get_submodule(parent), attr, linear.requires_grad_(False))
            names.append(name)
    return names


def b_dtype(module) -> torch.dtype:
    for p in module.parameters():
        if p.dtype.is_floating_point and p.dtype not in (torch.float8_e4m3fn, torch.float32):
            return p.dtype
    return torch.float32


def transformer_modes(b: Bench) -> None:
    size = sizes(b.args.smoke)["sglang"]
    inputs = transformer_inputs(b, size)
    repeat = 1 if b.args.smoke else 5
    transformer = b.model.pipe.transformer
    label = "x".join(map(str, size))
    results = {}
    bf16_model = not any(isinstance(m, fp8_module.FP8Linear) for m in transformer.modules())
    if bf16_model:  # random-22b: random-19b's FP8 blocks for the FP8 rows; back to bf16 after the BF16 row
        names = random19b.fp8_layer_names(transformer, len(transformer.transformer_blocks))
        fp8_module.quantize_linears(transformer, names, fp8_module.resolve_compute("auto", b.device),
                                    work_device=b.device)
        b.row("transformer", "FP8 layers for the FP8 rows", len(names), "a bf16 model: random-19b's FP8 blocks")
    for mode in ("scaled-mm", "upcast"):
        try:
            compute = fp8_module.resolve_compute(mode, b.device)
        except ValueError as exc:
            b.row("transformer", f"FP8 {mode}", "n/a", str(exc)[:120])
            continue
        fp8_module.set_fp8_compute(transformer, compute)
        results[mode] = step_seconds(b, inputs, repeat)
        b.row("transformer", f"FP8 {mode} s/step", f"{results[mode]:.3f}", label)
    fp8_module.set_fp8_compute(transformer, fp8_module.resolve_compute("auto", b.device))
    names = dequantize(transformer)
    try:
        results["bf16"] = step_seconds(b, inputs, repeat)
        b.row("transformer", "BF16 s/step", f"{results['bf16']:.3f}", f"{label}; {len(names)} layers dequantized")
    finally:  # back to FP8 for the sections after this one (a bf16 model stays bf16)
        if not bf16_model:
            fp8_module.quantize_linears(transformer, names, fp8_module.resolve_compute("auto", b.device))
            for name in names:
                layer = transformer.get_submodule(name)
                layer.input_scale = torch.nn.Parameter(torch.ones((), device=layer.weight.device), requires_grad=False)


def attention(b: Bench) -> None:
    size = sizes(b.args.smoke)["sglang"]
    inputs = transformer_inputs(b, size)
    transformer = b.model.pipe.transformer
    results = {}
    # The smoke run tries a few: two that run on a CPU and two that cannot, to keep both kinds of row honest.
    choices = ["sdpa", "sdpa-math", "sdpa-cudnn", "flash"] if b.args.smoke else speed.attention_backends()
    for choice in choices:
        if choice.endswith("_hub") or choice in ("_native_npu", "_native_xla", "native", "_native_cudnn",
                                                 "_native_flash", "_native_efficient", "_native_math"):
            continue  # hub kernels download at run time; the native names are our sdpa-* rows
        try:
            speed.probe_attention(choice, b.device, b.model.dtype)
            transformer.set_attention_backend(speed.SDPA_KERNELS.get(choice, choice))
            results[choice] = step_seconds(b, inputs, 1 if b.args.smoke else 3)
            b.row("attention", choice, f"{results[choice]:.3f} s/step", "x".join(map(str, size)))
        except Exception as exc:  # noqa: BLE001 - not installed or not supported here
            b.row("attention", choice, "unavailable", f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}")
    if results:
        best = min(results, key=results.get)
        auto = speed.auto_attention(b.device)[0]
        b.row("attention", "fastest here", best, f"auto picks {auto}" + ("" if best == auto else
                                                                        ": update AUTO in ltx2/models/speed.py"))
    transformer.set_attention_backend(speed.SDPA_KERNELS.get(b.model.speed["attention"]["backend"],
                                                             b.model.speed["attention"]["backend"]))


def compiled(b: Bench) -> None:
    size = sizes(b.args.smoke)["sglang"]
    inputs = transformer_inputs(b, size)
    transformer = b.model.pipe.transformer
    eager = step_seconds(b, inputs, 1 if b.args.smoke else 3)
    # The smoke run traces with dynamo only (backend "eager"): inductor's C++ build of the block takes
    # minutes on a CPU, and tests/test_speed.py already checks inductor's output against eager there.
    backend = "eager" if b.args.smoke else "inductor"
    speed.compile_blocks(transformer, backend=backend)
    try:
        with torch.inference_mode():
            first = b.timed(lambda: transformer(**inputs))
        after = step_seconds(b, inputs, 1 if b.args.smoke else 3)
        b.row("compile", "eager s/step", f"{eager:.3f}", "x".join(map(str, size)))
        b.row("compile", "compile (first pass)", f"{first:.1f} s", f"regional: one block's graph; {backend}")
        b.row("compile", "compiled s/step", f"{after:.3f}", f"{eager / after:.2f}x eager")
    finally:
        for block in transformer.transformer_blocks:
            block._compiled_call_impl = None  # back to eager for the sections after this one


def text_encoder(b: Bench) -> None:
    """Gemma's embeddings in FP8 against the compute dtype, on this model (random full-size Gemma on a GPU)."""
    from ltx2.models.text_encoder import quantize_gemma

    pipe, model = b.model.pipe, b.model

    def embed():
        with torch.inference_mode(), model.placement.use("text_encoder", "connectors"):
            states, mask, _, _ = pipe.encode_prompt(prompt=PROMPT, do_classifier_free_guidance=False,
                                                    max_sequence_length=pipe.tokenizer_max_length, device=b.device,
                                                    dtype=model.dtype)
            video, _, _ = pipe.connectors(states, mask, padding_side="left")
        return states.float(), video.float()

    before = memory.component_bytes(pipe.text_encoder)
    warmup = 0 if b.args.smoke else 1  # the smoke run checks the rows, not the seconds
    seconds_ref = b.timed(embed, warmup=warmup)
    ref_states, ref_video = embed()
    layers = quantize_gemma(pipe.text_encoder, "auto", b.device)
    model.placement.sizes["text_encoder"] = after = memory.component_bytes(pipe.text_encoder)
    model.speed["text_encoder_dtype"] = {"dtype": "fp8", "reason": "bench", "fp8_layers": layers}
    seconds_fp8 = b.timed(embed, warmup=warmup)
    states, video = embed()
    rel = lambda a, r: float((a - r).norm() / r.norm())  # noqa: E731
    b.row("text encoder", "Gemma bytes bf16 -> fp8", f"{gb(before)} -> {gb(after)}", f"{layers} linears in FP8")
    b.row("text encoder", "encode s bf16 / fp8", f"{seconds_ref:.3f} / {seconds_fp8:.3f}")
    b.row("text encoder", "rel. error, Gemma hidden states", f"{rel(states, ref_states):.4f}")
    b.row("text encoder", "rel. error, connector output", f"{rel(video, ref_video):.4f}", "what the transformer reads")


def vae_decode(b: Bench) -> None:
    try:
        from ltx2.pipelines import tiling
    except ImportError:
        b.row("vae decode", "tiled vs untiled", "n/a", "this build has no tiled decoder")
        return
    from ltx2.models.geometry import latent_video_shape

    pipe = b.model.pipe
    width, height, frames = sizes(b.args.smoke)["sglang"]
    t, h, w = latent_video_shape(frames, height, width, pipe.vae_spatial_compression_ratio,
                                 pipe.vae_temporal_compression_ratio)
    latents = torch.randn(1, pipe.vae.config.latent_channels, t, h, w, generator=torch.Generator().manual_seed(0))
    latents = latents.to(b.device, pipe.vae.dtype)
    # Tiles sized for a third of the whole decode's activations: what a card with that much free would get.
    budget = tiling.estimate(pipe.vae, t, h, w) // 3
    with torch.inference_mode(), b.model.placement.use("vae"):
        for label, plan in (("untiled", None), ("tiled", tiling.plan_for(pipe.vae, latents.shape, budget))):
            b.peak_reset()
            seconds = b.timed(lambda: tiling.decode(pipe.vae, latents, plan))
            b.row("vae decode", label, f"{seconds:.2f} s", f"{width}x{height}x{frames}; peak {b.peak_gb()} GB; {plan}")
    if b.model.diffusion_decoder is None:
        return
    from ltx2.models.diffusion_decode import diffusion_decode

    # LTX-2.5's diffusion decoder, fed as the decode stage feeds it: denormalised latents, the whole video.
    mean, std = (s.view(1, -1, 1, 1, 1).to(latents) for s in b.model.video_latent_stats)
    try:
        with torch.inference_mode(), b.model.placement.use("diffusion_decoder"):
            b.peak_reset()
            seconds = b.timed(lambda: diffusion_decode(b.model.diffusion_decoder, latents * std + mean,
                                                       torch.Generator(b.device).manual_seed(0)))
        processor = type(next(iter(b.model.diffusion_decoder.attn_processors.values()))).__name__
        b.row("vae decode", "diffusion decoder", f"{seconds:.2f} s",
              f"{width}x{height}x{frames}; peak {b.peak_gb()} GB; whole video; {processor}")
    except Exception as exc:  # noqa: BLE001 - out of memory, or no neighbourhood-attention kernel here
        b.row("vae decode", "diffusion decoder", "did not finish", f"{type(exc).__name__}: {str(exc)[:200]}")


def mux(b: Bench) -> None:
    import numpy as np

    from ltx2.media.encode import encode_mp4

    frames_n, height, width = (9, 128, 128) if b.args.smoke else (121, 1088, 1920)
    # A smooth moving gradient, like video (noise would be H.264's worst case, not a real clip's).
    y, x = np.mgrid[0:height, 0:width]
    frames = np.stack([((x + 4 * i) % 256 + (y // 4)) % 256 for i in range(frames_n)]).astype(np.uint8)
    frames = np.repeat(frames[..., None], 3, axis=3)
    wave = np.zeros((2, int(24000 * frames_n / 25)), dtype=np.float32)
    seconds = b.timed(lambda: encode_mp4(frames, 25, wave, 24000))
    b.row("mux", f"{width}x{height}x{frames_n} H.264+AAC", f"{seconds:.2f} s", f"{os.cpu_count()} cores")


def memory_caps(b: Bench) -> None:
    """768x512x121 under each cap: the policy auto picks for it, whether it finishes, peak and time."""
    from ltx2.serving.service import render_mp4

    if b.device.type != "cuda":
        b.row("memory caps", "24/32/48 GiB", "n/a", "needs CUDA (set_per_process_memory_fraction)")
        return
    model = b.model
    total = torch.cuda.get_device_properties(b.device).total_memory
    components = model.components()  # the upsampler and LTX-2.5's diffusion decoder too
    req = request(sizes(False)["sglang"], 8)
    for cap_gib in (48, 32, 24):
        if b.left() < 60:
            b.row("memory caps", f"{cap_gib} GiB", "skipped", "time budget")
            continue
        cap = cap_gib * GiB
        sizes_now = {name: memory.component_bytes(m) for name, m in components.items()}
        policy, reason = memory.choose_policy("auto", cap, sizes_now, memory.default_workspace_bytes(b.device))
        model.placement = memory.Placement(components, policy, b.device, reason=reason).setup()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(cap / total, b.device)
        try:
            b.peak_reset()
            t = time.perf_counter()
            rendered = render_mp4(model, req)
            b.sync()
            seconds = time.perf_counter() - t
            moved = rendered.fields["timings"].get("host_device_bytes")
            b.row("memory caps", f"{cap_gib} GiB: {policy}", f"finished in {seconds:.1f} s",
                  f"peak {b.peak_gb()} GB" + (f"; {gb(moved)} moved" if moved else ""))
        except Exception as exc:  # noqa: BLE001 - an out-of-memory is this row's answer
            b.row("memory caps", f"{cap_gib} GiB: {policy}", "did not finish",
                  f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}; peak {b.peak_gb()} GB")
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, b.device)


def batch(b: Bench) -> None:
    """--max-batch: N jobs of the headline shape (one stage, each its own prompt and seed) as one batch
    (ltx2.pipelines.batch), videos per minute against N = 1. A GPU's question: on a CPU one job already
    fills the cores, so the section says so and runs nothing (but --smoke runs it, so it cannot rot)."""
    from ltx2.pipelines.batch import BatchJob, generate_batch

    if b.device.type != "cuda" and not b.args.smoke:
        b.row("batch", "skipped", "-", "no CUDA device: batching is measured on a GPU (bench/batch.py runs on CPU)")
        return
    size = sizes(b.args.smoke)["headline"]
    steps = 1 if b.args.smoke else 8
    label = "x".join(map(str, size))
    base = None
    for n in (1, 2) if b.args.smoke else (1, 2, 4):
        if b.left() < (10 if b.args.smoke else 40):
            b.row("batch", f"{label} x{n}", "skipped", "time budget")
            continue
        jobs = lambda: [BatchJob(request(size, steps, use_multiscale=False).model_copy(  # noqa: E731
            update={"prompt": f"{PROMPT} ({i})", "seed": 20 + i})) for i in range(n)]
        if not b.args.smoke:
            generate_batch(b.model, jobs())  # warm: allocator, kernels, this batch's shapes
        b.peak_reset()
        t = time.perf_counter()
        out = generate_batch(b.model, jobs())
        b.sync()
        seconds = time.perf_counter() - t
        failed = [r for r in out if isinstance(r, Exception)]
        if failed:
            raise failed[0]
        per_minute = 60 * n / seconds
        base = base or per_minute
        denoise = out[0].timings.get("denoise", 0.0)
        peak = f"; peak {b.peak_gb()} GB" if b.device.type == "cuda" else ""
        b.row("batch", f"{label} x{n}", f"{per_minute:.2f} videos/min",
              f"{seconds:.2f} s; {per_minute / base:.2f}x batch 1; shared denoise {denoise:.2f} s; {steps} steps{peak}")


SECTIONS = [("machine", machine, 0), ("build", build, 0), ("e2e", e2e, 60), ("transformer", transformer_modes, 30),
            ("attention", attention, 30), ("compile", compiled, 120), ("text encoder", text_encoder, 20),
            ("vae decode", vae_decode, 30), ("mux", mux, 20),
            ("batch", batch, 45),  # before memory caps, which leaves the model under its last cap's policy
            ("memory caps", memory_caps, 90), ("parallel", lambda b: parallel_section(b), 45),  # defined below
            # Real servers on several GPUs (bench/gpu_serving.py): they need no model of this process's.
            ("devices", gpu_serving.devices_section, 120), ("parallel latency", gpu_serving.parallel_latency_section, 120)]


def parallel_groups(smoke: bool) -> list[tuple[str, str]]:
    """(spec, backend) of each group to time: ulysses over 2, 4 and 8 GPUs as far as they are visible."""
    if smoke:
        return [("ulysses=2", "cpu")]
    count = torch.cuda.device_count()
    return [(f"ulysses={n}", "cuda") for n in (2, 4, 8) if n <= count]


def parallel_section(b: Bench) -> None:
    """One transformer step alone, then split over a rank group (ltx2.models.parallel)."""
    import socket
    import subprocess
    import tempfile

    groups = parallel_groups(b.args.smoke)
    if not groups:
        b.row("parallel", "skipped", "-", f"{torch.cuda.device_count()} GPU visible: a group needs 2 or more")
        return
    size = sizes(b.args.smoke)["headline" if b.args.smoke else "sglang"]
    label = "x".join(map(str, size))
    repeat = 1 if b.args.smoke else 3
    b.row("parallel", f"{label} one device", f"{step_seconds(b, transformer_inputs(b, size), repeat):.3f} s/step")
    b.model = None  # each rank builds its own copy; this one would crowd rank 0's GPU
    gc.collect()
    if b.device.type == "cuda":
        torch.cuda.empty_cache()
    for spec, kind in groups:
        ranks = int(spec.split("=")[1])
        with tempfile.TemporaryDirectory() as out:
            with socket.socket() as sock:  # a free loopback port for the group's rendezvous
                sock.bind(("127.0.0.1", 0))
                port = str(sock.getsockname()[1])
            base = [sys.executable, os.path.abspath(__file__), "--parallel-spec", spec, "--parallel-port", port,
                    "--parallel-out", out, "--model", b.args.model, "--memory-policy", b.args.memory_policy]
            base += ["--smoke"] if b.args.smoke else []
            base += ["--layers", str(b.args.layers)] if b.args.layers else []
            procs = [subprocess.Popen(base + ["--parallel-rank", str(r), "--device",
                                             "cpu" if kind == "cpu" else f"cuda:{r}"]) for r in range(ranks)]
            codes = [p.wait(timeout=max(60.0, b.left())) for p in procs]
            if any(codes):
                b.row("parallel", f"{label} {spec}", "error", f"rank exit codes {codes}")
                continue
            with open(os.path.join(out, "rank0.json")) as fh:
                result = json.load(fh)
            b.row("parallel", f"{label} {spec}", f"{result['seconds']:.3f} s/step",
                  f"{ranks} ranks ({kind}); each rank holds the full weights"
                  + (f", peak {result['peak_gb']} GB on rank 0" if result.get("peak_gb") else ""))


def parallel_rank(args) -> int:
    """One rank of the parallel section: build the model on its device, join, time the split step."""
    from ltx2.models import parallel

    b = Bench(args)
    build(b)
    spec = parallel.ParallelSpec.parse(args.parallel_spec)
    spec.check_model(b.model.pipe.transformer)
    parallel.init(spec, args.parallel_rank, b.device, address="127.0.0.1", port=int(args.parallel_port))
    try:
        size = sizes(args.smoke)["headline" if args.smoke else "sglang"]
        inputs = transformer_inputs(b, size)
        with parallel.sequence_parallel(b.model.pipe.transformer):
            b.peak_reset()
            seconds = step_seconds(b, inputs, 1 if args.smoke else 3)
        if args.parallel_rank == 0:
            with open(os.path.join(args.parallel_out, "rank0.json"), "w") as fh:
                json.dump({"seconds": seconds, "peak_gb": b.peak_gb()}, fh)
    finally:
        parallel.shutdown()
    return 0


def print_table(b: Bench) -> None:
    model = MODELS[b.args.model] if b.args.smoke else b.args.model
    print(f"\n## GPU benchmark ({model}, {'smoke, ' if b.args.smoke else ''}{time.perf_counter() - b.start:.0f} s)\n")
    print("| section | item | value | note |")
    print("|---|---|---|---|")
    for r in b.rows:
        note = str(r["note"]).replace("|", "/")
        print(f"| {r['section']} | {r['item']} | {r['value']} | {note} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny preset, small sizes, any device (CI)")
    parser.add_argument("--model", default=random19b.NAME, choices=list(MODELS),
                        help="random-19b (LTX-2 + Gemma 3, FP8 blocks) or random-22b (LTX-2.5 + Gemma 4, bf16)")
    parser.add_argument("--layers", type=int, default=None, help="transformer depth (default: the full 48)")
    parser.add_argument("--memory-policy", dest="memory_policy", default=None,
                        help="where the build rests (default: resident for random-19b; auto for random-22b, "
                             "whose ~72 GB of weights fit an H200 but not an H100 resident)")
    parser.add_argument("--attention", default="auto", help="attention setting for the e2e rows")
    parser.add_argument("--device", default=None)
    parser.add_argument("--budget-s", dest="budget_s", type=float, default=None,
                        help="stop starting sections after this many seconds (default 420; smoke 300)")
    parser.add_argument("--only", default=None, help="comma-separated section names to run (machine and build always)")
    parser.add_argument("--out", default=None, help="directory for gpu-bench.json")
    for name in ("rank", "spec", "port", "out"):  # the parallel section's rank processes (internal)
        parser.add_argument(f"--parallel-{name}", dest=f"parallel_{name}", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = 300.0 if args.smoke else 420.0
    if args.memory_policy is None:
        args.memory_policy = "resident" if args.model == random19b.NAME else "auto"
    if args.parallel_rank is not None:
        args.parallel_rank = int(args.parallel_rank)
        return parallel_rank(args)
    b = Bench(args)
    wanted = None if args.only is None else {name.strip() for name in args.only.split(",")}
    for name, fn, needs in SECTIONS:
        if wanted is not None and name not in wanted and name not in ("machine", "build"):
            continue
        if name in gpu_serving.SECTIONS and args.smoke and (wanted is None or name not in wanted):
            continue  # servers: smoke runs them only when --only names them (their own test does)
        if name not in ("machine", "build", *gpu_serving.SECTIONS) and b.model is None:
            b.row(name, "skipped", "-", "no model (the build failed)")
            continue
        with b.section(name, needs) as run:
            if run:
                fn(b)
    print_table(b)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu-bench.json"), "w") as fh:
            json.dump({"smoke": args.smoke, "model": args.model, "seconds": time.perf_counter() - b.start,
                       "rows": b.rows}, fh, indent=1)
    return 0 if not any(r["item"] == "error" for r in b.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
