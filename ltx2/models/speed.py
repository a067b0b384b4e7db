"""Start-up choices that make the transformer fast: the attention kernel and regional compilation.

Attention (`--attention`, env LTX2_ATTENTION). Every attention call of the transformer goes through
diffusers' attention dispatcher, so the choice is a dispatcher backend: torch's SDPA under its own
kernel choice (`sdpa`), or pinned to one of its kernels (`sdpa-flash`, `sdpa-cudnn`,
`sdpa-efficient`, `sdpa-math`), or any other backend diffusers registers (`flex`, `flash` and
`_flash_3` with the flash-attn packages, `sage`, `xformers`) by its diffusers name.

`auto` (`AUTO_ATTENTION`), by architecture, and why:
- CPU: `sdpa`. Torch has one fused CPU kernel and picks it; there is nothing to choose.
- Hopper (sm_90) and Blackwell (sm_100+): `sdpa-cudnn`. Torch's own flash kernel is FlashAttention-2,
  written for Ampere; cuDNN's fused attention uses Hopper's asynchronous matrix instructions, and
  PyTorch 2.5's release notes put it up to 75% ahead of FlashAttention-2 on an H100. It also takes
  the cross-attention's additive mask, which the flash kernel refuses. LTX-2's head size (128 video,
  64 audio) is in the range both support.
- Ampere and Ada (sm_80, sm_86, sm_89): `sdpa`: FlashAttention-2 is the fastest kernel torch has
  there and SDPA already picks it whenever no mask is given.
- Older GPUs: `sdpa` (torch falls back to its memory-efficient kernel).
These are priors from published numbers, not yet from our own measurement: bench/gpu.py times every
backend on the GPU it runs on and prints which was fastest; this table follows its results. The
chosen backend is tried once at start-up on the device with and without a mask; if it fails there,
`auto` falls back to `sdpa` and says why (a named backend that fails is an error instead).

Compilation (`--compile`, env LTX2_COMPILE). `torch.compile` of the repeated transformer block only
(regional compilation, diffusers' `compile_repeated_blocks`): the 48 blocks share one code object,
so start-up compiles one block's graph, not the whole 48-block model, and every block reuses it.
`auto` is on for CUDA and off on CPU, where inductor's C++ build takes minutes and gains little.
The server warms the compiled block up with one request of the default size before `/health`
reports ready (ltx2.pipelines.warmup), and reports the seconds it took.
"""

from __future__ import annotations

import logging
import time

import torch

log = logging.getLogger("ltx2")

SDPA_KERNELS = {
    "sdpa": "native",
    "sdpa-flash": "_native_flash",
    "sdpa-cudnn": "_native_cudnn",
    "sdpa-efficient": "_native_efficient",
    "sdpa-math": "_native_math",
}
ATTENTION_SETTING = "LTX2_ATTENTION / --attention"


def attention_backends() -> list[str]:
    """Every value `--attention` takes besides auto: our SDPA names, then diffusers' backend names."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    return [*SDPA_KERNELS, *(b.value for b in AttentionBackendName if b.value not in SDPA_KERNELS.values())]


def auto_attention(device: torch.device) -> tuple[str, str]:
    """(choice, reason) for `auto` on this device; see the module's docstring for the evidence."""
    if device.type != "cuda":
        return "sdpa", f"auto on {device.type}: torch's SDPA picks its one fused kernel"
    major, minor = torch.cuda.get_device_capability(device)
    if major >= 9:
        return "sdpa-cudnn", (f"auto on sm_{major}{minor}: cuDNN's fused attention uses the Hopper/Blackwell "
                              "matrix instructions that torch's FlashAttention-2 does not, and takes masks")
    return "sdpa", f"auto on sm_{major}{minor}: torch's SDPA picks FlashAttention-2 where no mask is given"


def resolve_attention(setting: str, device: torch.device) -> tuple[str, str]:
    if setting == "auto":
        return auto_attention(device)
    if setting not in attention_backends():
        raise ValueError(f"{ATTENTION_SETTING} must be auto or one of {', '.join(attention_backends())}; "
                         f"got {setting!r}")
    return setting, f"{setting}: requested"


def probe_attention(choice: str, device: torch.device, dtype: torch.dtype) -> None:
    """One small attention call with and without an additive mask, as the transformer makes them."""
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    q = torch.randn(1, 64, 2, 64, device=device, dtype=dtype)  # (batch, tokens, heads, head size)
    dispatch_attention_fn(q, q, q, backend=SDPA_KERNELS.get(choice, choice))
    if choice != "sdpa-flash":  # the flash kernel takes no mask; the pipeline drops the all-zero one
        mask = torch.zeros(1, 1, 64, 64, device=device, dtype=dtype)
        dispatch_attention_fn(q, q, q, attn_mask=mask, backend=SDPA_KERNELS.get(choice, choice))


def apply_attention(modules, setting: str, device: torch.device, dtype: torch.dtype) -> tuple[str, str]:
    """Resolve `setting`, check it works on the device, and set it on every attention of `modules`."""
    choice, reason = resolve_attention(setting, device)
    try:
        probe_attention(choice, device, dtype)
    except Exception as exc:  # noqa: BLE001 - a kernel missing here: say which and why
        if setting != "auto":
            raise ValueError(f"{ATTENTION_SETTING}={setting} does not run on {device}: {exc}") from exc
        reason = f"{reason}; but it failed here ({type(exc).__name__}: {exc}), so sdpa"
        choice = "sdpa"
    logging.getLogger("diffusers.models.modeling_utils").setLevel(logging.ERROR)  # "experimental" warning
    for module in modules:
        module.set_attention_backend(SDPA_KERNELS.get(choice, choice))
    log.info("attention: %s", reason)
    return choice, reason


def compile_enabled(setting: str, device: torch.device) -> bool:
    if setting not in ("auto", "on", "off"):
        raise ValueError(f"LTX2_COMPILE / --compile must be auto, on or off; got {setting!r}")
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def compile_blocks(transformer, **options) -> float:
    """Regional compilation: wrap each repeated transformer block in torch.compile (lazy: the graph
    is built on the first call); `options` go to torch.compile. Returns the seconds spent here, not
    the compile itself."""
    start = time.perf_counter()
    transformer.compile_repeated_blocks(**options)
    return time.perf_counter() - start


def apply_decoder_attention(decoder, device: torch.device) -> str:
    """LTX-2.5's diffusion decoder: NATTEN's fused neighbourhood attention on a GPU when natten is
    installed (diffusers does not pick it by itself), else the processor the decoder came with
    (diffusers' FlexAttention fallback, or the tiny preset's windowed one). Nothing is fetched."""
    import importlib.util

    from diffusers.models.autoencoders.ltx2_diffusion_decoder import (
        LTX2VideoVaeNeighborhoodAttention,
        LTX2VideoVaeNeighborhoodNattenProcessor,
    )

    modules = [m for m in decoder.modules() if isinstance(m, LTX2VideoVaeNeighborhoodAttention)]
    if device.type == "cuda" and importlib.util.find_spec("natten") is not None:
        for module in modules:
            module.set_processor(LTX2VideoVaeNeighborhoodNattenProcessor())
        return "natten"
    names = {type(m.processor).__name__ for m in modules}
    return "+".join(sorted(names)) or "none"
