"""Settings: environment variables, overridable by command-line flags. One place lists them all."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass, fields

# The Docker image mounts a network volume here (RunPod's convention); `ltx2 download` fills it.
DEFAULT_MODELS_DIR = "/runpod-volume/models"
DEFAULT_GEMMA_NAME = "gemma-3-12b-it-qat-q4_0-unquantized"

MEMORY_POLICIES = ("auto", "resident", "offload-text-encoder", "sequential")
FP8_COMPUTE = ("auto", "scaled-mm", "upcast")
VARIANTS = ("auto", "distilled", "dev")
VAE_DECODERS = ("auto", "diffusion", "conv")
QUANTIZE = ("none", "fp8")
SPATIAL_UPSCALERS = ("x2", "x1.5")
TEXT_ENCODER_DTYPES = ("auto", "bf16", "fp8")


@dataclass
class Settings:
    model: str = "tiny"  # "tiny", a checkpoint file, a file name in models_dir, or a diffusers directory
    models_dir: str = DEFAULT_MODELS_DIR
    gemma_dir: str | None = None  # None: <models_dir>/gemma-3-12b-it-qat-q4_0-unquantized
    memory_policy: str = "auto"
    fp8_compute: str = "auto"
    variant: str = "auto"  # distilled or dev; auto reads the checkpoint's name
    vae_decoder: str = "auto"  # LTX-2.5's video decoder: auto (the diffusion one when loaded), diffusion, conv
    quantize: str = "none"  # fp8: a bf16 transformer's official FP8 layer set quantized at load
    # LTX-2.5's per-component files, overriding what its official layout around --model provides (None: the layout's).
    text_encoder: str | None = None  # the Gemma 4 + projection file
    video_vae: str | None = None  # a video VAE file (diffusion or conv; comma-separated for both)
    audio_vae: str | None = None  # the audio VAE + vocoder file
    duration_head: str | None = None  # the duration head file
    layers: int | None = None  # random-19b only: transformer blocks and Gemma layers to build (None: 48)
    text_encoder_dtype: str = "auto"  # Gemma's linear weights: bf16, or fp8 (e4m3, per-tensor scales)
    attention: str = "auto"  # attention kernel (ltx2.models.speed.ATTENTION_CHOICES)
    compile: str = "auto"  # regional torch.compile of the transformer block: on, off; auto = on for CUDA
    prompt_cache_mb: float = 512.0  # text embeddings of recent prompts kept, at most; 0 turns the cache off
    upsampler: str = "auto"  # the two-stage x2 upsampler: auto (tiny's, or the official file in models_dir), none, a path
    spatial_upscaler: str = "x2"  # which spatial upscaler the two-stage pipeline runs: x2, or x1.5 (LTX-2.3)
    temporal_upscaler: str = "auto"  # temporal_upscale's x2 temporal upscaler: auto (tiny's, or the official file), none, a path
    distilled_lora: str = "auto"  # a dev checkpoint's two-stage stage-2 LoRA: auto (tiny's, or the official file), none, a path
    host: str = "0.0.0.0"
    port: int = 8000
    device: str | None = None  # None: cuda if available, else cpu
    devices: str = ""  # one worker process per device (cuda:0,cuda:1, all, cpu,cpu); with --parallel: one per rank; empty: --device
    parallel: str = ""  # one job across several devices: ulysses=N and/or cfg=2 (ltx2.models.parallel); empty: one
    parallel_timeout: float = 300.0  # seconds a rank waits on a peer within a job before the job fails
    log_level: str = "info"
    # Serving: jobs, delivery, limits, access.
    output_dir: str = "ltx2-output"  # job records (SQLite) and finished videos
    database: str = ""  # job records elsewhere: postgresql://... for several API replicas; empty: SQLite in output_dir
    ray_replicas: str = "1"  # ltx2 serve --ray: generation replicas, N or MIN-MAX (autoscaled on queue depth)
    queue_size: int = 8  # jobs waiting behind the running one; more is a 429
    max_batch: int = 1  # queued jobs of one shape denoised together as one batch (1: one job at a time)
    training_queue: int = 4  # LoRA trainings waiting behind the running one; more is a 429
    training_dataset_mb: float = 2048.0  # a training dataset (upload, URL, inflated zip) larger than this is a 413
    job_timeout: float = 1800.0  # seconds a job may run before it is stopped and failed
    result_ttl: float = 86400.0  # seconds a finished video stays downloadable
    output_max_gb: float = 20.0  # videos kept at most; the oldest go first
    max_body_mb: float = 128.0  # request bodies larger than this are refused (413) before being read
    api_key: str | None = None  # when set, every route but /health needs it
    docs_public: bool = True  # /docs and /openapi.json open without the key
    allow_private_urls: bool = False  # let image/audio URLs point at loopback/private addresses
    url_timeout: float = 30.0  # seconds to fetch one image/audio URL
    shutdown_grace: float = 120.0  # seconds SIGTERM waits for the running job
    max_connections: int = 1000  # open connections at most (and below the descriptor limit)
    header_timeout: float = 10.0  # seconds for a request's line and headers to arrive
    body_timeout: float = 30.0  # seconds a body may take, plus 1 s per min_body_kbps KB
    min_body_kbps: float = 64.0  # slowest body rate accepted past body_timeout, KB/s
    keep_alive: float = 5.0  # seconds an idle connection is kept between requests
    max_header_kb: float = 32.0  # request line and headers at most, KB
    api_keys: str | None = None  # "name:key,name:key": more keys, each owning its jobs
    api_keys_file: str | None = None  # a file of name:key lines
    admin_key: str | None = None  # the operators' key: sees and cancels every job
    api_key_file: str | None = None  # a file holding api_key (kept off the command line, which others can read)
    admin_key_file: str | None = None  # a file holding admin_key
    max_connections_per_client: int = 64  # open connections from one client address at most
    public_url: str | None = None  # the server's public base URL, for links (else the Host header)
    decode_memory_mb: float = 2048.0  # memory a decoding child may add (MB)
    decode_timeout: float = 60.0  # seconds a decoding child may run
    memory_margin: float = 1.1  # predicted job memory x this must fit what is available (413 beyond); 0: no check
    memory_cgroup: str | None = None  # a memory cgroup directory to read instead of this process's own; "none": ignore cgroups
    record_ttl: float = 604800.0  # seconds a finished job's record is kept (at least result_ttl)
    # LoRAs: URL ones may be turned off; each bounded in size; bound adapters cached in memory and on disk.
    allow_lora_urls: bool = True
    max_lora_mb: float = 2048.0
    lora_cache_mb: float = 4096.0
    lora_disk_cache_gb: float = 20.0
    prompt_expansion_tokens: int = 512  # the most tokens enable_prompt_expansion lets Gemma write
    # Encoding: the file's bytes depend on the thread count, so a fixed count keeps same seed = same bytes.
    encode_threads: int = 0  # 0: the CPUs this process may use, at most 8

    @classmethod
    def from_env(cls, env: dict | None = None) -> Settings:
        env = os.environ if env is None else env
        values = {}
        for f in fields(cls):
            raw = env.get(ENV[f.name])
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(f.name, raw)
        return cls(**values)

    @property
    def resolved_gemma_dir(self) -> str:
        return self.gemma_dir or os.path.join(self.models_dir, DEFAULT_GEMMA_NAME)


ENV = {
    "model": "LTX2_MODEL",
    "models_dir": "LTX2_MODELS_DIR",
    "gemma_dir": "LTX2_GEMMA_DIR",
    "memory_policy": "LTX2_MEMORY_POLICY",
    "fp8_compute": "LTX2_FP8_COMPUTE",
    "variant": "LTX2_VARIANT",
    "vae_decoder": "LTX2_VAE_DECODER",
    "quantize": "LTX2_QUANTIZE",
    "text_encoder": "LTX2_TEXT_ENCODER",
    "video_vae": "LTX2_VIDEO_VAE",
    "audio_vae": "LTX2_AUDIO_VAE",
    "duration_head": "LTX2_DURATION_HEAD",
    "layers": "LTX2_LAYERS",
    "text_encoder_dtype": "LTX2_TEXT_ENCODER_DTYPE",
    "attention": "LTX2_ATTENTION",
    "compile": "LTX2_COMPILE",
    "prompt_cache_mb": "LTX2_PROMPT_CACHE_MB",
    "upsampler": "LTX2_UPSAMPLER",
    "spatial_upscaler": "LTX2_SPATIAL_UPSCALER",
    "temporal_upscaler": "LTX2_TEMPORAL_UPSCALER",
    "distilled_lora": "LTX2_DISTILLED_LORA",
    "host": "LTX2_HOST",
    "port": "LTX2_PORT",
    "device": "LTX2_DEVICE",
    "devices": "LTX2_DEVICES",
    "parallel": "LTX2_PARALLEL",
    "parallel_timeout": "LTX2_PARALLEL_TIMEOUT",
    "log_level": "LTX2_LOG_LEVEL",
    "output_dir": "LTX2_OUTPUT_DIR",
    "database": "LTX2_DATABASE",
    "ray_replicas": "LTX2_RAY_REPLICAS",
    "queue_size": "LTX2_QUEUE_SIZE",
    "max_batch": "LTX2_MAX_BATCH",
    "training_queue": "LTX2_TRAINING_QUEUE",
    "training_dataset_mb": "LTX2_TRAINING_DATASET_MB",
    "job_timeout": "LTX2_JOB_TIMEOUT",
    "result_ttl": "LTX2_RESULT_TTL",
    "output_max_gb": "LTX2_OUTPUT_MAX_GB",
    "max_body_mb": "LTX2_MAX_BODY_MB",
    "api_key": "LTX2_API_KEY",
    "docs_public": "LTX2_DOCS_PUBLIC",
    "allow_private_urls": "LTX2_ALLOW_PRIVATE_URLS",
    "url_timeout": "LTX2_URL_TIMEOUT",
    "shutdown_grace": "LTX2_SHUTDOWN_GRACE",
    "max_connections": "LTX2_MAX_CONNECTIONS",
    "header_timeout": "LTX2_HEADER_TIMEOUT",
    "body_timeout": "LTX2_BODY_TIMEOUT",
    "min_body_kbps": "LTX2_MIN_BODY_KBPS",
    "keep_alive": "LTX2_KEEP_ALIVE",
    "max_header_kb": "LTX2_MAX_HEADER_KB",
    "api_keys": "LTX2_API_KEYS",
    "api_keys_file": "LTX2_API_KEYS_FILE",
    "admin_key": "LTX2_ADMIN_KEY",
    "api_key_file": "LTX2_API_KEY_FILE",
    "admin_key_file": "LTX2_ADMIN_KEY_FILE",
    "max_connections_per_client": "LTX2_MAX_CONNECTIONS_PER_CLIENT",
    "public_url": "LTX2_PUBLIC_URL",
    "decode_memory_mb": "LTX2_DECODE_MEMORY_MB",
    "decode_timeout": "LTX2_DECODE_TIMEOUT",
    "memory_margin": "LTX2_MEMORY_MARGIN",
    "memory_cgroup": "LTX2_MEMORY_CGROUP",
    "record_ttl": "LTX2_RECORD_TTL",
    "allow_lora_urls": "LTX2_ALLOW_LORA_URLS",
    "max_lora_mb": "LTX2_MAX_LORA_MB",
    "lora_cache_mb": "LTX2_LORA_CACHE_MB",
    "lora_disk_cache_gb": "LTX2_LORA_DISK_CACHE_GB",
    "prompt_expansion_tokens": "LTX2_PROMPT_EXPANSION_TOKENS",
    "encode_threads": "LTX2_ENCODE_THREADS",
}
_INTS = {"max_connections", "max_connections_per_client", "port", "queue_size", "max_batch", "training_queue", "prompt_expansion_tokens", "layers", "encode_threads"}
_FLOATS = {"parallel_timeout", "training_dataset_mb", "prompt_cache_mb", "job_timeout", "result_ttl", "output_max_gb", "max_body_mb", "url_timeout", "shutdown_grace",
           "max_lora_mb", "lora_cache_mb", "lora_disk_cache_gb", "record_ttl", "decode_memory_mb", "decode_timeout", "memory_margin",
           "header_timeout", "body_timeout", "min_body_kbps", "keep_alive", "max_header_kb"}
_BOOLS = {"docs_public", "allow_private_urls", "allow_lora_urls"}


def _parse(name: str, raw: str):
    """An environment string as the setting's type; a bad value names the variable."""
    try:
        if name in _INTS:
            return int(raw)
        if name in _FLOATS:
            return float(raw)
    except ValueError:
        raise ValueError(f"{ENV[name]}={raw!r} is not a number") from None
    if name in _BOOLS:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{ENV[name]}={raw!r} is not true or false")
    return raw


def _bool_flag(text: str) -> bool:
    return _parse("docs_public", text)


def add_directory_arguments(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    """--models-dir and --gemma-dir: one layout for `ltx2 download` and the loader."""
    parser.add_argument("--models-dir", dest="models_dir", default=defaults.models_dir,
                        help=f"where checkpoints and Gemma live (env {ENV['models_dir']})")
    parser.add_argument("--gemma-dir", dest="gemma_dir", default=defaults.gemma_dir,
                        help=f"Gemma 3 directory in Hugging Face format; default <models-dir>/{DEFAULT_GEMMA_NAME} "
                             f"(env {ENV['gemma_dir']})")


def add_model_arguments(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    """Flags that say what to load and where to find it."""
    parser.add_argument("--model", default=defaults.model,
                        help="what to load (default: %(default)s): a tiny preset, random weights at tiny widths "
                             "('tiny': LTX-2 19B, 'tiny-2.3': LTX-2.3, 'tiny-2.5': LTX-2.5); a full-size random "
                             "preset for GPU benchmarks ('random-19b': LTX-2 19B + Gemma 3, 'random-22b': LTX-2.5 + "
                             "Gemma 4); a .safetensors checkpoint (path or file name in --models-dir), LTX-2.5's "
                             f"folders, or a diffusers directory (env {ENV['model']})")
    add_directory_arguments(parser, defaults)
    parser.add_argument("--memory-policy", dest="memory_policy", default=defaults.memory_policy,
                        choices=MEMORY_POLICIES, help=f"what stays on the GPU (env {ENV['memory_policy']})")
    parser.add_argument("--fp8-compute", dest="fp8_compute", default=defaults.fp8_compute, choices=FP8_COMPUTE,
                        help=f"FP8 matmul: scaled-mm where the GPU has it, else upcast (env {ENV['fp8_compute']})")
    parser.add_argument("--variant", default=defaults.variant, choices=VARIANTS,
                        help="distilled (8 steps, guidance 1) or dev (40 steps, guidance 3); auto reads the "
                             f"checkpoint's file name (env {ENV['variant']})")
    parser.add_argument("--layers", type=int, default=defaults.layers,
                        help="random-19b only: build this many transformer blocks and Gemma layers at the real widths "
                             f"(default 48, the real depth) (env {ENV['layers']})")
    parser.add_argument("--text-encoder-dtype", dest="text_encoder_dtype", default=defaults.text_encoder_dtype,
                        choices=TEXT_ENCODER_DTYPES,
                        help="Gemma's linear weights: bf16, or fp8 (e4m3 with per-tensor scales, about half the "
                             f"memory); auto picks fp8 only when nothing else fits (env {ENV['text_encoder_dtype']})")
    parser.add_argument("--attention", default=defaults.attention,
                        help="attention kernel: auto, sdpa, sdpa-flash, sdpa-cudnn, sdpa-efficient, sdpa-math, or a "
                             f"diffusers attention backend name (env {ENV['attention']})")
    parser.add_argument("--compile", default=defaults.compile, choices=("auto", "on", "off"),
                        help="compile the repeated transformer block with torch.compile and warm it up at start-up; "
                             f"auto: on for CUDA, off on CPU (env {ENV['compile']})")
    parser.add_argument("--prompt-cache-mb", dest="prompt_cache_mb", type=float, default=defaults.prompt_cache_mb,
                        help="megabytes of recent prompts' text embeddings to keep (a repeat skips Gemma); 0: off "
                             f"(env {ENV['prompt_cache_mb']})")
    parser.add_argument("--upsampler", default=defaults.upsampler,
                        help="the x2 spatial latent upsampler of the two-stage pipeline: auto (the tiny preset's, or "
                             "ltx-2-spatial-upscaler-x2-1.0.safetensors in --models-dir when present), none "
                             f"(one-stage only), or a file (env {ENV['upsampler']})")
    parser.add_argument("--spatial-upscaler", dest="spatial_upscaler", default=defaults.spatial_upscaler,
                        choices=SPATIAL_UPSCALERS,
                        help="the two-stage pipeline's spatial upscaler: x2 (stage 1 at half size), or x1.5 (LTX-2.3's "
                             "ltx-2.3-spatial-upscaler-x1.5-1.0.safetensors: stage 1 at two thirds, sizes multiples of "
                             f"96) (env {ENV['spatial_upscaler']})")
    parser.add_argument("--temporal-upscaler", dest="temporal_upscaler", default=defaults.temporal_upscaler,
                        help="the x2 temporal latent upscaler a request's temporal_upscale runs (frames and fps "
                             "doubled): auto (the tiny preset's, or the family's official file in --models-dir when "
                             f"present), none, or a file (env {ENV['temporal_upscaler']})")
    parser.add_argument("--distilled-lora", dest="distilled_lora", default=defaults.distilled_lora,
                        help="the distilled LoRA a dev checkpoint's two-stage pipeline refines stage 2 with: auto (the "
                             "tiny preset's with --variant dev, or ltx-2-19b-distilled-lora-384.safetensors in "
                             "--models-dir or its loras/ when present), none (a dev checkpoint runs one stage), or a "
                             f"file (env {ENV['distilled_lora']})")
    parser.add_argument("--quantize", default=defaults.quantize, choices=QUANTIZE,
                        help="fp8: quantize a bf16 transformer (LTX-2.3, LTX-2.5) at load into the scaled-FP8 layers "
                             "the official 19B FP8 files use (blocks 1 to 42 of 48, per-tensor scales): about half "
                             f"its memory; an FP8 file stays as it is (env {ENV['quantize']})")
    parser.add_argument("--vae-decoder", dest="vae_decoder", default=defaults.vae_decoder, choices=VAE_DECODERS,
                        help="LTX-2.5's video decoder: diffusion (neighbourhood attention, sharper, slower; natten when "
                             "installed), conv (the convolutional one), or auto: diffusion when its file is loaded "
                             f"(env {ENV['vae_decoder']})")
    for flag, what in (("text-encoder", "the Gemma 4 text encoder with its projection"),
                       ("video-vae", "a video VAE (diffusion or conv; comma-separated for both)"),
                       ("audio-vae", "the audio VAE and vocoder"), ("duration-head", "the duration head")):
        dest = flag.replace("-", "_")
        parser.add_argument(f"--{flag}", dest=dest, default=getattr(defaults, dest),
                            help=f"LTX-2.5: the file of {what}, instead of the one the official layout around --model "
                                 f"holds (env {ENV[dest]})")
    parser.add_argument("--device", default=defaults.device, help=f"torch device, e.g. cuda:0 (env {ENV['device']})")
    parser.add_argument("--parallel", default=defaults.parallel,
                        help="one job across several devices, a rank group served as one worker: ulysses=N (the video "
                             "and audio tokens split N ways), cfg=2 (a guided step's passes split two ways), or both, "
                             f"ulysses=2,cfg=2 (4 ranks); each rank holds the full weights (env {ENV['parallel']})")
    parser.add_argument("--devices", default=defaults.devices,
                        help="one worker process per device, one queue: cuda:0,cuda:1, all (every visible GPU) or "
                             "cpu,cpu; each holds the full weights. With --parallel: the rank group's devices, one "
                             f"per rank (env {ENV['devices']}); default: --device, in-process")
    parser.add_argument("--parallel-timeout", dest="parallel_timeout", type=float, default=defaults.parallel_timeout,
                        help="with --parallel: seconds a rank waits on another within a job; a rank that hangs "
                             f"longer fails the job (env {ENV['parallel_timeout']})")
    parser.add_argument("--log-level", dest="log_level", default=defaults.log_level,
                        help=f"debug, info, warning (env {ENV['log_level']})")
    parser.add_argument("--encode-threads", dest="encode_threads", type=int, default=defaults.encode_threads,
                        help="threads that encode the video file; the same seed gives the same bytes for the same "
                             f"count; 0: the CPUs, at most 8 (env {ENV['encode_threads']})")


def add_arguments(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    add_model_arguments(parser, defaults)
    parser.add_argument("--host", default=defaults.host, help=f"address to bind (env {ENV['host']})")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"port (env {ENV['port']})")
    add_serving_arguments(parser, defaults)


def add_serving_arguments(parser: argparse.ArgumentParser, defaults: Settings, only: tuple[str, ...] | None = None
                          ) -> None:
    """Jobs, delivery, limits and access: one flag per setting, named after it (`only`: just these settings)."""
    helps = {
        "output_dir": "job records and finished videos",
        "database": "where job records live: empty for SQLite in --output-dir (one server), postgresql://user@host/db "
                    "for several API replicas sharing one queue (needs psycopg: pip install 'ltx2[postgres]')",
        "queue_size": "jobs that may wait behind the running one; beyond it, 429",
        "max_batch": "denoise up to this many waiting jobs of one shape (size, length, steps, guidance, LoRAs) as one "
                     "batch; 1: one job at a time",
        "training_queue": "LoRA trainings that may wait behind the running one; beyond it, 429",
        "training_dataset_mb": "the largest training dataset (upload, URL or inflated zip); larger is a 413",
        "job_timeout": "seconds a job may run",
        "result_ttl": "seconds a finished video stays downloadable",
        "output_max_gb": "the most video the output directory keeps, oldest removed first",
        "max_body_mb": "larger request bodies get 413 before they are read",
        "api_key": "require this key (Authorization: Bearer or X-API-Key) on every route but /health",
        "docs_public": "serve /docs and /openapi.json without the key (true/false)",
        "allow_private_urls": "let image/audio URLs point at loopback or private addresses (true/false)",
        "url_timeout": "seconds to fetch one image/audio URL",
        "shutdown_grace": "seconds SIGTERM lets the running job finish",
        "max_connections": "open connections at most; more are answered 503 and closed",
        "max_connections_per_client": "open connections from one client address at most; more are answered 503 "
                                      "and closed",
        "header_timeout": "seconds a request line and headers may take to arrive",
        "body_timeout": "seconds a request body may take, plus one per --min-body-kbps KB received",
        "min_body_kbps": "slowest request-body rate (KB/s) accepted after --body-timeout",
        "keep_alive": "seconds an idle keep-alive connection is kept",
        "max_header_kb": "largest request line and headers, KB (431 beyond)",
        "api_keys": "more API keys, name:key,name:key; each key sees only its own jobs",
        "api_keys_file": "a file of API keys, one name:key a line",
        "admin_key": "the operators' key: sees, downloads and cancels every job",
        "api_key_file": "a file holding --api-key (a key on the command line is visible to every local user)",
        "admin_key_file": "a file holding --admin-key",
        "public_url": "base URL for links in responses (e.g. https://video.example.com); default: the request's Host",
        "decode_memory_mb": "memory (MB) the child process decoding an image or audio input may use",
        "decode_timeout": "seconds to decode one job's inputs (each URL adds --url-timeout)",
        "memory_margin": "a job's predicted peak memory times this must fit the memory available, else 413 too_large_for_server; 0 turns the check off",
        "memory_cgroup": "a memory cgroup directory to read the host limit from instead of this process's own; none: MemAvailable alone",
        "record_ttl": "seconds a finished job's record is kept (at least --result-ttl); then it is deleted",
        "allow_lora_urls": "let requests name LoRAs by http(s) URL (true/false); files in <models-dir>/loras always work",
        "max_lora_mb": "the largest LoRA a URL may deliver",
        "lora_cache_mb": "LoRAs kept loaded in memory between requests (least recently used go first)",
        "lora_disk_cache_gb": "URL LoRAs kept on disk under <output-dir>/lora-cache (least recently used go first)",
        "prompt_expansion_tokens": "the most tokens Gemma 3 may write for enable_prompt_expansion",
    }
    for name, text in helps.items():
        if only is not None and name not in only:
            continue
        kind = int if name in _INTS else float if name in _FLOATS else _bool_flag if name in _BOOLS else str
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=getattr(defaults, name),
                            help=f"{text} (env {ENV[name]})")


def parse_replicas(spec: str) -> tuple[int, int]:
    """LTX2_RAY_REPLICAS: `N` (fixed) or `MIN-MAX` (autoscaled) generation replicas -> (min, max); raises
    ValueError."""
    text = str(spec).strip()
    low, sep, high = text.partition("-")
    try:
        lo, hi = int(low), int(high) if sep else int(low)
    except ValueError:
        raise ValueError(f"LTX2_RAY_REPLICAS must be N or MIN-MAX (e.g. 2 or 1-4), got {spec!r}") from None
    if lo < 0 or hi < 1 or lo > hi:
        raise ValueError(f"LTX2_RAY_REPLICAS must have 0 <= MIN <= MAX and MAX >= 1, got {spec!r}")
    return lo, hi


def settings_from_args(args: argparse.Namespace, defaults: Settings | None = None) -> Settings:
    """A Settings from parsed flags; fields the parser didn't define keep their defaults."""
    base = defaults or Settings.from_env()
    values = {f.name: getattr(args, f.name, getattr(base, f.name)) for f in fields(Settings)}
    return Settings(**values)


def parse_settings(argv: list[str] | None = None, prog: str | None = None) -> Settings:
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(prog=prog, description="Serve LTX-2 video+audio generation over HTTP.")
    add_arguments(parser, defaults)
    return settings_from_args(parser.parse_args(argv), defaults)


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
