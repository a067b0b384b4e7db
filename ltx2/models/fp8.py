"""FP8 linear layers that keep the checkpoint's float8 weights as float8 in memory.

The official LTX-2 FP8 checkpoint stores the transformer's big linear weights as
`float8_e4m3fn` with float32 scalar siblings `<layer>.weight_scale` (dequantized weight =
`weight.float() * weight_scale`) and `<layer>.input_scale` (the activation scale for an FP8
matmul). Keeping them FP8 is what lets the 19B transformer fit in ~19 GB instead of ~38 GB.

API:
- `FP8_DTYPE`: the storage dtype, `torch.float8_e4m3fn`.
- `COMPUTE_SETTINGS` / `COMPUTE_MODES`: accepted values of `LTX2_FP8_COMPUTE` / `--fp8-compute`
  ("auto", "scaled-mm", "upcast") and the two concrete modes a layer runs in.
- `quantize_per_tensor(weight)`: (fp8 weight, float32 scalar scale), the checkpoint's format.
- `FP8Linear`: drop-in for `nn.Linear`; state_dict keys `weight`, `weight_scale`,
  `input_scale` (optional), `bias` (optional). `.compute` is the mode it runs in:
  "scaled-mm" (`torch._scaled_mm`, FP8 tensor cores) or "upcast" (dequantize this one layer's
  weight to the activation dtype inside forward, then `F.linear`).
- `scaled_mm_supported(device)`: True only on CUDA with compute capability >= 8.9.
- `resolve_compute(setting, device)`: "auto" | "scaled-mm" | "upcast" -> a concrete mode.
- `swap_in_fp8_linears(model, layer_names, compute, has_input_scale)`: replace named
  `nn.Linear`s with `FP8Linear`s of the same shape on the same device (meta stays meta).
- `quantize_linears(model, layer_names, compute, work_device)`: replace named `nn.Linear`s that hold
  real weights by `FP8Linear`s quantized from them (per-tensor scales; Gemma's `fp8` text-encoder dtype).
- `set_fp8_compute(model, compute)`: switch every `FP8Linear` (e.g. after moving to a device).
- `fp8_weight_bytes(model)`: bytes held by FP8 weights, for reporting.

`model.to(dtype)` / `.half()` / `.float()` leave FP8 weights and float32 scales alone (only
their device follows), so casting a whole diffusers transformer to bf16 is safe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448.0

COMPUTE_SETTINGS = ("auto", "scaled-mm", "upcast")
COMPUTE_MODES = ("scaled-mm", "upcast")

_SETTING_NAME = "LTX2_FP8_COMPUTE / --fp8-compute"


def quantize_per_tensor(weight: Tensor) -> tuple[Tensor, Tensor]:
    """Quantize to float8_e4m3fn with one float32 scale: weight ~= q.float() * scale."""
    w = weight.detach().to(torch.float32)
    amax = w.abs().amax()
    # An all-zero weight would give scale 0 and 0/0 = NaN; any positive scale encodes zeros exactly.
    scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return q, scale


def scaled_mm_supported(device: torch.device | str | None) -> bool:
    """Whether `torch._scaled_mm` runs float8_e4m3fn matmuls natively on `device`.

    Conservative: CUDA with compute capability >= 8.9 (Ada, Hopper, Blackwell) only. ROCm is
    excluded because its FP8 matmul wants the e4m3fnuz format, not the checkpoint's e4m3fn.
    CPU `_scaled_mm` works in torch 2.13 (results match an emulation to ~1e-7) but is no faster
    than upcasting there (2-core EPYC, 4096x4096 layer, 2048 tokens: ~0.8-2.6 s vs ~0.5-1.6 s),
    so "auto" never picks it on CPU.
    """
    if not hasattr(torch, "_scaled_mm") or device is None:
        return False
    device = torch.device(device)
    if device.type != "cuda" or torch.version.hip is not None or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability(device) >= (8, 9)


def resolve_compute(setting: str, device: torch.device | str | None) -> str:
    """Turn a user setting into the mode FP8 layers run in on `device`."""
    if setting not in COMPUTE_SETTINGS:
        raise ValueError(f"{_SETTING_NAME} must be one of {', '.join(COMPUTE_SETTINGS)}; got {setting!r}")
    if setting == "upcast":
        return "upcast"
    supported = scaled_mm_supported(device)
    if setting == "auto":
        return "scaled-mm" if supported else "upcast"
    if not supported:
        raise ValueError(
            f"{_SETTING_NAME}=scaled-mm needs FP8 matmul support (a CUDA GPU with compute capability "
            f">= 8.9); device {device} does not have it. Use 'auto' or 'upcast'."
        )
    return "scaled-mm"


class FP8Linear(nn.Module):
    """A linear layer whose weight is float8_e4m3fn with a per-tensor float32 scale."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        has_input_scale: bool = True,
        compute: str = "upcast",
        device: torch.device | str | None = None,
        bias_dtype: torch.dtype = torch.bfloat16,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        # Frozen: inference only, and autograd cannot hold float8 leaves with grads anyway.
        weight = torch.empty(out_features, in_features, dtype=FP8_DTYPE, device=device)
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones((), dtype=torch.float32, device=device), requires_grad=False)
        if has_input_scale:
            self.input_scale = nn.Parameter(torch.ones((), dtype=torch.float32, device=device), requires_grad=False)
        else:
            self.register_parameter("input_scale", None)
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, dtype=bias_dtype, device=device), requires_grad=False)
        else:
            self.register_parameter("bias", None)
        self.compute = compute

    @property
    def compute(self) -> str:
        """The mode forward runs in: "scaled-mm" or "upcast"."""
        return self._compute

    @compute.setter
    def compute(self, mode: str) -> None:
        if mode not in COMPUTE_MODES:
            raise ValueError(f"FP8Linear compute must be one of {COMPUTE_MODES}; got {mode!r} (resolve 'auto' first)")
        # CUDA's FP8 GEMM needs both weight dims to be multiples of 16; other layers upcast (same math).
        if mode == "scaled-mm" and (self.in_features % 16 or self.out_features % 16):
            mode = "upcast"
        self._compute = mode

    def forward(self, x: Tensor) -> Tensor:
        if self._compute == "scaled-mm":
            return self._forward_scaled_mm(x)
        return self._forward_upcast(x)

    def _forward_upcast(self, x: Tensor) -> Tensor:
        # Only this layer's weight exists in x.dtype, and only until F.linear returns. The scale is
        # applied in float32: on CUDA, bf16 * float32-scalar-tensor rounds the scale to bf16 first,
        # which would scale the whole layer's output by up to 0.4% off. A float32 transient per
        # layer is the price.
        weight = self.weight.to(torch.float32).mul_(self.weight_scale).to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, weight, bias)

    def _forward_scaled_mm(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if self.input_scale is not None:
            # Divide by the scale as x.dtype sees it and hand that same value to _scaled_mm, so the
            # rescale undoes the divide exactly instead of being off by the scale's rounding.
            scale = self.input_scale.to(x.dtype)
        else:
            # No calibrated scale: take a dynamic per-tensor one from this batch.
            amax = x2.abs().amax().to(torch.float32)
            scale = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax)).to(x.dtype)
        # Clamp first: out-of-range values would cast to NaN in e4m3fn (it has no infinity).
        qx = (x2 / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE).contiguous()
        out = torch._scaled_mm(
            qx,
            self.weight.t(),  # column-major view of the row-major weight, as cuBLASLt wants
            scale_a=scale.to(torch.float32),
            scale_b=self.weight_scale,
            out_dtype=x.dtype,
            use_fast_accum=True,
        )
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*lead, self.out_features)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> FP8Linear:
        # Module.to(dtype)/.half() would turn the float8 weight and float32 scales into the model
        # dtype (doubling memory, and rounding the scales). Let them follow device moves only.
        frozen = {id(p) for p in (self.weight, self.weight_scale, self.input_scale) if p is not None}

        def guarded(t: Tensor) -> Tensor:
            if id(t) not in frozen:
                return fn(t)
            probe = fn(torch.empty(0, dtype=t.dtype, device=t.device))
            if probe.dtype == t.dtype:
                return fn(t)
            return t.to(device=probe.device)

        return super()._apply(guarded, recurse)

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # With assign=True torch checks shapes but not dtypes; a bf16 weight would silently
        # replace the FP8 one (and copy_ into FP8 would quantize it without a scale).
        expected = {"weight": FP8_DTYPE, "weight_scale": torch.float32, "input_scale": torch.float32}
        bad = [
            f"{prefix}{name}: expected {dtype}, got {state_dict[prefix + name].dtype}"
            for name, dtype in expected.items()
            if prefix + name in state_dict and state_dict[prefix + name].dtype != dtype
        ]
        if bad:
            error_msgs.append("FP8Linear got tensors of the wrong dtype: " + "; ".join(bad))
            return
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"input_scale={self.input_scale is not None}, compute={self._compute}"
        )


def swap_in_fp8_linears(
    model: nn.Module,
    layer_names: Iterable[str],
    compute: str,
    has_input_scale: Callable[[str], bool] | set[str] | frozenset[str],
) -> list[str]:
    """Replace the named `nn.Linear` submodules of `model` by empty `FP8Linear`s.

    The new modules have the same shape, bias presence, device and bias dtype; their tensors are
    placeholders until the checkpoint is loaded into them. Every name is checked before anything
    is swapped, so a bad name leaves the model untouched.
    """
    if compute not in COMPUTE_MODES:
        raise ValueError(f"compute must be one of {COMPUTE_MODES}; got {compute!r} (resolve 'auto' first)")
    wants_input_scale = has_input_scale if callable(has_input_scale) else has_input_scale.__contains__
    names = swap_targets(model, layer_names)
    for name in names:
        linear = model.get_submodule(name)
        fp8 = FP8Linear(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            has_input_scale=bool(wants_input_scale(name)),
            compute=compute,
            device=linear.weight.device,
            bias_dtype=linear.bias.dtype if linear.bias is not None else torch.bfloat16,
        )
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, fp8)
    return names


def set_fp8_compute(model: nn.Module, compute: str) -> int:
    """Set the mode of every FP8Linear in `model`; returns how many there are."""
    count = 0
    for module in model.modules():
        if isinstance(module, FP8Linear):
            module.compute = compute
            count += 1
    return count


def fp8_weight_bytes(model: nn.Module) -> int:
    """Bytes held by the FP8 weights of `model`'s FP8Linear layers (works on meta too)."""
    return sum(
        m.weight.numel() * m.weight.element_size() for m in model.modules() if isinstance(m, FP8Linear)
    )


def quantize_linears(
    model: nn.Module,
    layer_names: Iterable[str],
    compute: str,
    work_device: torch.device | str | None = None,
) -> list[str]:
    """Replace named `nn.Linear`s holding real weights by `FP8Linear`s quantized from them.

    Each weight gets one per-tensor scale (`quantize_per_tensor`) and no input scale: without
    calibration data, `scaled-mm` takes a per-batch activation scale. `work_device` is where the
    arithmetic runs (the GPU, so that 10 billion weights take seconds, not minutes); each result
    goes back to where its layer lives, so an offloaded model stays offloaded. One layer is
    quantized at a time: the transient is one layer's float32 copy.
    """
    names = swap_targets(model, layer_names)
    for name in names:
        linear = model.get_submodule(name)
        home = linear.weight.device
        work = torch.device(work_device) if work_device is not None else home
        q, scale = quantize_per_tensor(linear.weight.detach().to(work))
        fp8 = FP8Linear(linear.in_features, linear.out_features, bias=linear.bias is not None,
                        has_input_scale=False, compute=compute, device="meta",
                        bias_dtype=linear.bias.dtype if linear.bias is not None else torch.bfloat16)
        fp8.weight = nn.Parameter(q.to(home), requires_grad=False)
        fp8.weight_scale = nn.Parameter(scale.to(home), requires_grad=False)
        if linear.bias is not None:
            fp8.bias = nn.Parameter(linear.bias.detach(), requires_grad=False)
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name), attr, fp8)
        del q, scale, linear
    return names


def swap_targets(model: nn.Module, layer_names: Iterable[str]) -> list[str]:
    """The names, deduplicated, after checking each is a plain `nn.Linear` of `model`."""
    names = list(dict.fromkeys(layer_names))
    modules = dict(model.named_modules())
    missing = [n for n in names if n not in modules or n == ""]  # "" is the model itself
    if missing:
        raise KeyError(f"no such module(s) in {type(model).__name__}: {', '.join(missing)}")
    not_linear = [f"{n} ({type(modules[n]).__name__})" for n in names if not isinstance(modules[n], nn.Linear)]
    if not_linear:
        raise ValueError(f"can only swap plain nn.Linear layers to FP8; not one: {', '.join(not_linear)}")
    return names


FP8_SUFFIXES = ("to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2")


def fp8_blocks(layers: int) -> range:
    """Transformer blocks whose linears are FP8: 1-42 of 48. The first and the last five stay bf16,
    as in the official file; with fewer than 7 blocks only block 0 does, so FP8 is still exercised."""
    return range(1, layers - 5) if layers >= 7 else range(1, layers)


def fp8_layer_names(transformer: nn.Module, layers: int) -> list[str]:
    """Every attention projection and feed-forward linear of the FP8 blocks (ltx-core's downcast set)."""
    return [f"transformer_blocks.{index}.{name}" for index in fp8_blocks(layers)
            for name, module in transformer.transformer_blocks[index].named_modules()
            if isinstance(module, nn.Linear) and name.endswith(FP8_SUFFIXES)]


def quantize_transformer(transformer: nn.Module, setting: str, fp8_compute: str, device: torch.device) -> int:
    """`--quantize fp8`: the transformer's official FP8 layer set (`fp8_layer_names`) quantized at load
    into the same scaled-FP8 layer an official FP8 file loads as, on the compute device, layer by layer.
    A transformer that came in FP8 already (an official FP8 file) is left as it is. Returns how many."""
    if setting == "none":
        return 0
    if setting != "fp8":
        raise ValueError(f"--quantize must be none or fp8, got {setting!r}")
    if any(isinstance(m, FP8Linear) for m in transformer.modules()):
        return 0
    names = fp8_layer_names(transformer, len(transformer.transformer_blocks))
    return len(quantize_linears(transformer, names, resolve_compute(fp8_compute, device), work_device=device))
