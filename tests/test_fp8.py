"""FP8 linear layers: numerics against references, dtype discipline, loading and swapping."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ltx2.models.fp8 import (
    COMPUTE_SETTINGS,
    FP8_DTYPE,
    FP8Linear,
    fp8_weight_bytes,
    quantize_linears,
    quantize_per_tensor,
    resolve_compute,
    scaled_mm_supported,
    set_fp8_compute,
    swap_in_fp8_linears,
)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def _cpu_scaled_mm_works() -> bool:
    if not hasattr(torch, "_scaled_mm"):
        return False
    a = torch.ones(16, 16).to(FP8_DTYPE)
    one = torch.tensor(1.0)
    try:
        out = torch._scaled_mm(a, a.t(), scale_a=one, scale_b=one, out_dtype=torch.float32)
    except (RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(out, torch.full((16, 16), 16.0)))


CPU_SCALED_MM = _cpu_scaled_mm_works()


class CastLikeCUDA(torch.overrides.TorchFunctionMode):
    """Casts to float8_e4m3fn as c10's conversion defines them (and CUDA computes them): e4m3fn has no
    infinity, so a magnitude of 480 or more (past the last rounding boundary above 448) becomes NaN.
    torch 2.13's CPU cast saturates to 448 instead, which would hide a missing clamp here."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (func is torch.Tensor.to and isinstance(out, torch.Tensor) and out.dtype == FP8_DTYPE
                and args[0].dtype != FP8_DTYPE):
            overflow = args[0].abs() >= 480
            if overflow.any():
                out = torch.where(overflow.to(out.device), float("nan"), out.float()).to(FP8_DTYPE)
        return out
needs_scaled_mm = pytest.mark.skipif(not CPU_SCALED_MM, reason="this torch build has no float8 torch._scaled_mm on CPU")


def make_fp8(linear: nn.Linear, compute: str = "upcast", input_scale: float | None = None) -> FP8Linear:
    """An FP8Linear holding `linear`'s weight quantized the way the checkpoint stores it."""
    q, scale = quantize_per_tensor(linear.weight)
    fp8 = FP8Linear(
        linear.in_features, linear.out_features, bias=linear.bias is not None,
        has_input_scale=input_scale is not None, compute=compute, device="meta",
        bias_dtype=torch.float32,
    )
    sd = {"weight": q, "weight_scale": scale}
    if input_scale is not None:
        sd["input_scale"] = torch.tensor(input_scale, dtype=torch.float32)
    if linear.bias is not None:
        sd["bias"] = linear.bias.detach().clone()
    fp8.load_state_dict(sd, assign=True)
    return fp8


def dequantized(fp8: FP8Linear) -> torch.Tensor:
    return fp8.weight.float() * fp8.weight_scale


@pytest.fixture
def linear() -> nn.Linear:
    torch.manual_seed(0)
    return nn.Linear(256, 192)


# --- quantization ---------------------------------------------------------------------------


def test_quantize_per_tensor_format_and_error():
    torch.manual_seed(1)
    w = torch.randn(128, 64) * 0.02
    q, scale = quantize_per_tensor(w)
    assert q.dtype == FP8_DTYPE and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == ()
    assert torch.allclose(scale, w.abs().max() / 448.0)
    # The largest weight lands on the top of the e4m3 range.
    assert q.float().abs().max().item() == 448.0
    # e4m3 keeps 3 mantissa bits: each normal value is within half a step, 2^-4 relative.
    deq = q.float() * scale
    normal = w.abs() / scale >= 2.0**-6
    assert ((deq - w).abs()[normal] <= w.abs()[normal] * 2.0**-4 + 1e-12).all()
    err = rel_err(deq, w)
    print(f"per-tensor fp8 weight rel err: {err:.4f}")
    assert 0.001 < err < 0.04


def test_quantize_all_zero_weight_is_finite():
    q, scale = quantize_per_tensor(torch.zeros(8, 8))
    assert torch.isfinite(scale) and scale.item() > 0
    assert (q.float() == 0).all()


# --- FP8Linear, upcast path -------------------------------------------------------------------


def test_upcast_matches_dequantized_reference(linear):
    fp8 = make_fp8(linear)
    x = torch.randn(2, 37, 256)
    with torch.no_grad():
        out = fp8(x)
        ref = F.linear(x, dequantized(fp8), linear.bias)
    assert out.shape == (2, 37, 192) and out.dtype == torch.float32
    err = rel_err(out, ref)
    print(f"upcast vs dequantized float32 reference: rel err {err:.2e}")
    assert err < 1e-6


def test_upcast_close_to_original_linear(linear):
    # Random rounding of each weight to e4m3 (<= 2^-4 relative, ~2-3% RMS for a uniform weight)
    # adds up in quadrature over a dot product, so the output error is ~the weight's RMS relative
    # error; 0.05 is about twice what it should be and far below what a wrong scale would give.
    fp8 = make_fp8(linear)
    x = torch.randn(3, 50, 256)
    with torch.no_grad():
        err = rel_err(fp8(x), linear(x))
    print(f"upcast vs unquantized nn.Linear: rel err {err:.4f}")
    assert 1e-4 < err < 0.05  # nonzero: it really computes with the quantized weight


def test_upcast_bf16_applies_scale_in_float32():
    torch.manual_seed(2)
    lin = nn.Linear(64, 48, bias=False)
    fp8 = make_fp8(lin)
    x = torch.randn(4, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        out = fp8(x)
        ref = F.linear(x, dequantized(fp8).to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, ref)


def test_bias_bf16_with_float32_input(linear):
    # The checkpoint's biases are bf16; activations may be float32 (CPU, tests): the bias is cast.
    for compute in ["upcast"] + (["scaled-mm"] if CPU_SCALED_MM else []):
        fp8 = make_fp8(linear, compute=compute, input_scale=6.0 / 448)
        fp8.bias = nn.Parameter(linear.bias.detach().to(torch.bfloat16), requires_grad=False)
        x = torch.randn(2, 5, 256)
        with torch.no_grad():
            out = fp8(x)
            ref = F.linear(x, dequantized(fp8), linear.bias.detach().to(torch.bfloat16).float())
        assert out.dtype == torch.float32 and fp8.bias.dtype == torch.bfloat16
        assert rel_err(out, ref) < (1e-6 if compute == "upcast" else 0.05)


# --- dtype discipline ---------------------------------------------------------------------


def test_weight_stays_fp8_through_forward_and_dtype_casts(linear):
    fp8 = make_fp8(linear, input_scale=0.01)
    raw = fp8.weight.detach().view(torch.uint8).clone()
    scale = fp8.weight_scale.detach().clone()
    with torch.no_grad():
        fp8(torch.randn(4, 256))
    assert fp8.weight.dtype == FP8_DTYPE and fp8.weight.element_size() == 1

    for cast in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.float(), lambda m: m.to("cpu", torch.float16)):
        cast(fp8)
        assert fp8.weight.dtype == FP8_DTYPE and fp8.weight.element_size() == 1
        assert fp8.weight_scale.dtype == torch.float32 and fp8.input_scale.dtype == torch.float32
        assert isinstance(fp8.weight, nn.Parameter) and not fp8.weight.requires_grad
        assert torch.equal(fp8.weight.detach().view(torch.uint8), raw)  # no round trip through bf16
        assert torch.equal(fp8.weight_scale, scale)
    # The bias is an ordinary parameter and follows the model dtype.
    fp8.to(torch.bfloat16)
    assert fp8.bias.dtype == torch.bfloat16
    with torch.no_grad():
        out = fp8(torch.randn(4, 256, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()


def test_whole_model_to_bf16_keeps_fp8(linear):
    model = nn.Sequential(nn.Linear(256, 256), make_fp8(linear, input_scale=0.01), nn.GELU())
    model.to(torch.bfloat16)
    assert model[0].weight.dtype == torch.bfloat16
    assert model[1].weight.dtype == FP8_DTYPE
    assert model[1].weight_scale.dtype == torch.float32 and model[1].input_scale.dtype == torch.float32
    # Device moves still apply to the frozen tensors.
    model.to("meta")
    assert model[1].weight.is_meta and model[1].weight.dtype == FP8_DTYPE


# --- construction and loading --------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("has_input_scale", [True, False])
def test_state_dict_keys(bias, has_input_scale):
    fp8 = FP8Linear(32, 16, bias=bias, has_input_scale=has_input_scale, device="meta")
    expected = {"weight", "weight_scale"} | ({"input_scale"} if has_input_scale else set()) | ({"bias"} if bias else set())
    assert set(fp8.state_dict()) == expected
    assert fp8.weight.shape == (16, 32) and fp8.weight.dtype == FP8_DTYPE and fp8.weight.is_meta
    assert fp8.weight_scale.shape == () and fp8.weight_scale.dtype == torch.float32
    assert all(not p.requires_grad for p in fp8.parameters())


def test_meta_then_assign_load(linear):
    q, scale = quantize_per_tensor(linear.weight)
    fp8 = FP8Linear(256, 192, device="meta")
    assert fp8.weight.is_meta
    sd = {"weight": q, "weight_scale": scale, "input_scale": torch.tensor(0.02), "bias": linear.bias.detach().to(torch.bfloat16)}
    fp8.load_state_dict(sd, assign=True)
    assert not any(p.is_meta for p in fp8.parameters())
    assert fp8.weight.data_ptr() == q.data_ptr()  # assigned, not copied: the mmap'd tensor is kept
    assert all(isinstance(p, nn.Parameter) and not p.requires_grad for p in fp8.parameters())
    x = torch.randn(3, 256)
    with torch.no_grad():
        assert rel_err(fp8(x), F.linear(x, q.float() * scale, sd["bias"].float())) < 1e-6


def test_load_rejects_wrong_dtypes(linear):
    fp8 = FP8Linear(256, 192, device="meta")
    sd = {"weight": linear.weight.detach().to(torch.bfloat16), "weight_scale": torch.tensor(1.0),
          "input_scale": torch.tensor(1.0), "bias": linear.bias.detach()}
    with pytest.raises(RuntimeError, match=r"weight: expected torch.float8_e4m3fn, got torch.bfloat16"):
        fp8.load_state_dict(sd, assign=True)
    sd["weight"], _ = quantize_per_tensor(linear.weight)
    sd["weight_scale"] = torch.tensor(1.0, dtype=torch.bfloat16)
    with pytest.raises(RuntimeError, match=r"weight_scale: expected torch.float32"):
        fp8.load_state_dict(sd, assign=True)


def test_extra_repr_and_mode():
    fp8 = FP8Linear(32, 16, bias=False, has_input_scale=False, compute="scaled-mm", device="meta")
    assert fp8.compute == "scaled-mm"
    text = repr(fp8)
    assert "in_features=32" in text and "out_features=16" in text and "bias=False" in text
    assert "input_scale=False" in text and "compute=scaled-mm" in text
    with pytest.raises(ValueError, match="auto"):
        fp8.compute = "auto"
    # cuBLASLt's FP8 GEMM needs dims that are multiples of 16; others fall back to upcasting.
    assert FP8Linear(40, 16, compute="scaled-mm", device="meta").compute == "upcast"


# --- device support and settings -----------------------------------------------------------


def test_resolve_compute_on_cpu():
    assert scaled_mm_supported("cpu") is False  # conservative by design, even though CPU _scaled_mm exists
    assert scaled_mm_supported(torch.device("meta")) is False
    assert resolve_compute("auto", "cpu") == "upcast"
    assert resolve_compute("upcast", "cpu") == "upcast"
    with pytest.raises(ValueError, match=r"LTX2_FP8_COMPUTE.*--fp8-compute.*cpu"):
        resolve_compute("scaled-mm", "cpu")
    with pytest.raises(ValueError, match="auto, scaled-mm, upcast"):
        resolve_compute("fp8", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_resolve_compute_on_cuda():
    expected = torch.cuda.get_device_capability() >= (8, 9) and torch.version.hip is None
    assert scaled_mm_supported("cuda") is expected
    assert resolve_compute("auto", "cuda") == ("scaled-mm" if expected else "upcast")


# --- FP8Linear, scaled-mm path -------------------------------------------------------------


@needs_scaled_mm
def test_scaled_mm_matches_emulation_and_original(linear):
    input_scale = 5.0 / 448  # x is N(0, 1): amax of a few thousand samples is ~4, so no clipping
    fp8 = make_fp8(linear, compute="scaled-mm", input_scale=input_scale)
    x = torch.randn(2, 37, 256)
    with torch.no_grad():
        out = fp8(x)
        qx = (x / input_scale).clamp(-448, 448).to(FP8_DTYPE).float() * input_scale
        emulated = F.linear(qx, dequantized(fp8), linear.bias)
        err_emu = rel_err(out, emulated)
        err_deq = rel_err(out, F.linear(x, dequantized(fp8), linear.bias))
        err_orig = rel_err(out, linear(x))
    print(f"scaled-mm vs emulation {err_emu:.2e}, vs dequantized weight {err_deq:.4f}, vs original {err_orig:.4f}")
    assert out.shape == (2, 37, 192)
    assert err_emu < 1e-5
    # Activations are quantized too now: two independent ~2-3% errors, adding in quadrature.
    assert 1e-3 < err_deq < 0.05 and err_orig < 0.07


@needs_scaled_mm
def test_scaled_mm_clamps_outliers_and_dynamic_scale(linear):
    x = torch.randn(4, 256)
    # Far beyond input_scale * 448: an unclamped cast gives NaN on CUDA, and here under CastLikeCUDA.
    x[0, 0] = 1e4
    static = make_fp8(linear, compute="scaled-mm", input_scale=5.0 / 448)
    dynamic = make_fp8(linear, compute="scaled-mm", input_scale=None)
    with CastLikeCUDA():
        assert torch.tensor([479.0, 480.0]).to(FP8_DTYPE).float()[1].isnan()  # the emulation is on
    with torch.no_grad(), CastLikeCUDA():
        out_static = static(x)
        out_dynamic = dynamic(x[1:])
        ref = F.linear(x[1:], dequantized(dynamic), linear.bias)
    assert torch.isfinite(out_static).all()
    clipped = x.clone()
    clipped[0, 0] = 5.0
    with torch.no_grad():
        assert rel_err(out_static[0], F.linear(clipped[0], dequantized(static), linear.bias)) < 0.05
    assert rel_err(out_dynamic, ref) < 0.05
    # 1-D input keeps its shape.
    with torch.no_grad():
        assert dynamic(x[1]).shape == (192,)


@needs_scaled_mm
def test_set_fp8_compute_switches_modes(linear):
    model = nn.Sequential(make_fp8(linear, input_scale=5.0 / 448), nn.ReLU(), FP8Linear(192, 40, device="meta"))
    x = torch.randn(3, 256)
    with torch.no_grad():
        upcast = model[0](x)
    assert set_fp8_compute(model, "scaled-mm") == 2
    assert model[0].compute == "scaled-mm" and model[2].compute == "upcast"  # 40 is not a multiple of 16
    with torch.no_grad():
        scaled = model[0](x)
    assert 1e-4 < rel_err(scaled, upcast) < 0.05  # a different code path, same layer
    with pytest.raises(ValueError):
        set_fp8_compute(model, "auto")


# --- swapping ----------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_q = nn.Linear(32, 32)
        self.to_out = nn.Sequential(nn.Linear(32, 48, bias=False), nn.Dropout(0.0))
        self.norm = nn.LayerNorm(32)


def test_swap_exactly_the_named_layers():
    with torch.device("meta"):
        model = nn.Sequential(Block(), Block(), nn.Linear(32, 16))
    names = ["0.to_q", "1.to_out.0", "2"]
    swapped = swap_in_fp8_linears(model, names, "upcast", has_input_scale={"0.to_q"})
    assert swapped == names
    fp8 = {n for n, m in model.named_modules() if isinstance(m, FP8Linear)}
    assert fp8 == set(names)
    plain = {n for n, m in model.named_modules() if type(m) is nn.Linear}
    assert plain == {"1.to_q", "0.to_out.0"}
    assert model[0].to_q.input_scale is not None and model[1].to_out[0].input_scale is None
    assert model[1].to_out[0].bias is None and model[0].to_q.bias is not None
    assert (model[2].in_features, model[2].out_features) == (32, 16)
    assert all(m.weight.is_meta for n, m in model.named_modules() if n in names)
    assert fp8_weight_bytes(model) == 32 * 32 + 32 * 48 + 32 * 16


def test_swap_with_callable_and_real_device():
    model = nn.Sequential(Block())
    swap_in_fp8_linears(model, ["0.to_q"], "scaled-mm", has_input_scale=lambda name: name.endswith("to_q"))
    assert model[0].to_q.weight.device.type == "cpu" and model[0].to_q.input_scale is not None
    assert model[0].to_q.compute == "scaled-mm"


def test_swap_rejects_bad_names_and_leaves_model_alone():
    model = nn.Sequential(Block())
    with pytest.raises(KeyError, match=r"no such module.*0\.to_k"):
        swap_in_fp8_linears(model, ["0.to_q", "0.to_k"], "upcast", set())
    with pytest.raises(ValueError, match=r"0\.norm \(LayerNorm\)"):
        swap_in_fp8_linears(model, ["0.to_q", "0.norm"], "upcast", set())
    with pytest.raises(ValueError, match="auto"):
        swap_in_fp8_linears(model, ["0.to_q"], "auto", set())
    assert type(model[0].to_q) is nn.Linear  # nothing swapped by the failed calls
    swap_in_fp8_linears(model, ["0.to_q"], "upcast", set())
    with pytest.raises(ValueError, match="FP8Linear"):  # swapping twice is a bug in the caller
        swap_in_fp8_linears(model, ["0.to_q"], "upcast", set())


# --- a real (tiny) LTX-2 transformer -----------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_transformer():
    from ltx2.models import tiny

    torch.manual_seed(0)
    model = tiny.build_transformer().eval().requires_grad_(False)
    # diffusers zero-inits some output layers; give them values so the output depends on everything.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() > 1 and not name.endswith("bias") and torch.count_nonzero(p) == 0:
                p.normal_(0, 0.02)
    return model


def _transformer_inputs(dtype: torch.dtype = torch.float32) -> dict:
    gen = torch.Generator().manual_seed(3)
    frames, height, width, audio_frames = 2, 2, 3, 5
    return {
        "hidden_states": torch.randn(1, frames * height * width, 128, generator=gen, dtype=dtype),
        "audio_hidden_states": torch.randn(1, audio_frames, 128, generator=gen, dtype=dtype),
        "encoder_hidden_states": torch.randn(1, 7, 32, generator=gen, dtype=dtype),
        "audio_encoder_hidden_states": torch.randn(1, 7, 32, generator=gen, dtype=dtype),
        "timestep": torch.tensor([500.0]),
        "num_frames": frames, "height": height, "width": width, "audio_num_frames": audio_frames,
        "use_cross_timestep": False, "return_dict": False,
    }


def _quantize_blocks(model: nn.Module) -> tuple[dict, dict[str, torch.Tensor], list[str]]:
    """(checkpoint-like state dict, input scales calibrated on the test input, FP8 layer names)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith("transformer_blocks.")]
    amax: dict[str, torch.Tensor] = {}
    hooks = [
        model.get_submodule(n).register_forward_pre_hook(lambda m, args, n=n: amax.__setitem__(n, args[0].abs().amax()))
        for n in names
    ]
    with torch.no_grad():
        model(**_transformer_inputs())
    for h in hooks:
        h.remove()
    sd = dict(model.state_dict())
    input_scales = {n: (amax[n] / 448).float() for n in names}
    for n in names:
        sd[f"{n}.weight"], sd[f"{n}.weight_scale"] = quantize_per_tensor(sd[f"{n}.weight"])
        sd[f"{n}.input_scale"] = input_scales[n]
    return sd, input_scales, names


def _load_fp8_transformer(sd: dict, names: list[str], compute: str) -> nn.Module:
    """What the loader does: build on meta, swap, assign the checkpoint's tensors."""
    from ltx2.models import tiny

    with torch.device("meta"):
        model = tiny.build_transformer()
    swap_in_fp8_linears(model, names, compute, has_input_scale=set(names))
    model.load_state_dict(sd, strict=True, assign=True)
    return model.eval().requires_grad_(False)


def test_tiny_transformer_fp8_matches_dequantized(tiny_transformer):
    sd, _, names = _quantize_blocks(tiny_transformer)
    assert len(names) == 56  # 28 linears in each of the 2 blocks
    fp8_model = _load_fp8_transformer(sd, names, "upcast")
    assert sum(isinstance(m, FP8Linear) for m in fp8_model.modules()) == 56
    assert not any(p.is_meta for p in fp8_model.parameters())

    reference = copy.deepcopy(tiny_transformer)  # plain nn.Linear holding the dequantized weights
    with torch.no_grad():
        for n in names:
            reference.get_submodule(n).weight.copy_(sd[f"{n}.weight"].float() * sd[f"{n}.weight_scale"])
        video, audio = fp8_model(**_transformer_inputs())
        ref_video, ref_audio = reference(**_transformer_inputs())
        orig_video, orig_audio = tiny_transformer(**_transformer_inputs())
    err = max(rel_err(video, ref_video), rel_err(audio, ref_audio))
    err_orig = max(rel_err(video, orig_video), rel_err(audio, orig_audio))
    print(f"tiny transformer, fp8 upcast vs dequantized: rel err {err:.2e}; vs unquantized: {err_orig:.4f}")
    assert err < 1e-5
    assert 1e-4 < err_orig < 0.1  # the FP8 weights are really in use

    bytes_fp8 = fp8_weight_bytes(fp8_model)
    assert bytes_fp8 == sum(sd[f"{n}.weight"].numel() for n in names)


@needs_scaled_mm
def test_tiny_transformer_scaled_mm(tiny_transformer):
    sd, _, names = _quantize_blocks(tiny_transformer)
    upcast = _load_fp8_transformer(sd, names, "upcast")
    scaled = _load_fp8_transformer(sd, names, "scaled-mm")
    assert {m.compute for m in scaled.modules() if isinstance(m, FP8Linear)} == {"scaled-mm"}
    with torch.no_grad():
        out = scaled(**_transformer_inputs())
        ref = upcast(**_transformer_inputs())
    err = max(rel_err(o, r) for o, r in zip(out, ref))
    print(f"tiny transformer, scaled-mm vs upcast (activation quantization): rel err {err:.4f}")
    assert 1e-4 < err < 0.1


def test_tiny_transformer_to_bf16_keeps_fp8(tiny_transformer):
    sd, _, names = _quantize_blocks(tiny_transformer)
    model = _load_fp8_transformer(sd, names, "upcast")
    with torch.no_grad():
        out32 = model(**_transformer_inputs())
    model.to(torch.bfloat16)
    assert model.dtype == torch.bfloat16  # diffusers reads it off the first (non-FP8) parameter
    for n in names:
        layer = model.get_submodule(n)
        assert layer.weight.dtype == FP8_DTYPE and layer.weight.element_size() == 1
        assert layer.weight_scale.dtype == torch.float32 and layer.input_scale.dtype == torch.float32
        assert torch.equal(layer.weight.view(torch.uint8), sd[f"{n}.weight"].view(torch.uint8))
    assert model.proj_in.weight.dtype == torch.bfloat16
    with torch.no_grad():
        out16 = model(**_transformer_inputs(torch.bfloat16))
    assert out16[0].dtype == torch.bfloat16
    err = max(rel_err(a.float(), b) for a, b in zip(out16, out32))
    print(f"tiny transformer bf16 vs float32 (both fp8 weights): rel err {err:.4f}")
    assert err < 0.05


# --- which devices get FP8 matmul: the rule, on reported capabilities ------------------------------


@pytest.mark.parametrize(("capability", "hip", "expected"), [
    ((8, 9), None, True),  # Ada
    ((9, 0), None, True),  # Hopper
    ((10, 0), None, True),  # Blackwell
    ((8, 8), None, False),  # the rule's edge: 8.9 is the first with FP8 tensor cores
    ((8, 6), None, False),  # Ampere: no FP8 tensor cores
    ((7, 5), None, False),
    ((9, 4), "6.2", False),  # ROCm wants e4m3fnuz, not the checkpoint's e4m3fn
])
def test_scaled_mm_support_follows_compute_capability(monkeypatch, capability, hip, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.version, "hip", hip)
    assert scaled_mm_supported("cuda") is expected
    assert scaled_mm_supported(torch.device("cuda", 1)) is expected
    assert scaled_mm_supported("cpu") is False and scaled_mm_supported(None) is False
    # Only CUDA devices ask for the capability: other types sort both before and after "cuda".
    for other in ("meta", "mps", "xpu", "cpu"):
        assert scaled_mm_supported(torch.device(other)) is False
    assert resolve_compute("auto", "cuda") == ("scaled-mm" if expected else "upcast")
    assert resolve_compute("upcast", "cuda") == "upcast"
    if expected:
        assert resolve_compute("scaled-mm", "cuda") == "scaled-mm"
    else:
        with pytest.raises(ValueError, match="needs FP8 matmul support"):
            resolve_compute("scaled-mm", "cuda")


def _fresh(text: str) -> str:
    """The same text as a new string object, as a setting read from the environment or argv is."""
    return "".join(list(text))


def test_settings_are_compared_by_value_not_identity():
    # LTX2_FP8_COMPUTE arrives as a string object of its own; the literal's identity must not matter.
    assert all(_fresh(setting) is not setting for setting in COMPUTE_SETTINGS)  # the point of the helper
    assert resolve_compute(_fresh("upcast"), "cpu") == "upcast"
    assert resolve_compute(_fresh("auto"), "cpu") == "upcast"
    with pytest.raises(ValueError, match="needs FP8 matmul support"):
        resolve_compute(_fresh("scaled-mm"), "cpu")


def test_no_cuda_means_no_scaled_mm(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.version, "hip", None)
    assert scaled_mm_supported("cuda") is False


@pytest.mark.parametrize(("shape", "mode"), [((16, 16), "scaled-mm"), ((32, 48), "scaled-mm"), ((40, 16), "upcast"),
                                             ((16, 40), "upcast"), ((8, 8), "upcast")])
def test_scaled_mm_needs_both_dims_multiples_of_16(shape, mode):
    assert FP8Linear(*shape, compute="scaled-mm", device="meta").compute == mode
    assert FP8Linear(*shape, compute="upcast", device="meta").compute == "upcast"


def test_swap_refuses_the_model_itself_and_keeps_the_bias_dtype():
    model = nn.Sequential(Block()).to(torch.float16)
    with pytest.raises(KeyError, match="no such module"):
        swap_in_fp8_linears(model, [""], "upcast", set())
    swap_in_fp8_linears(model, ["0.to_q"], "upcast", set())
    assert model[0].to_q.bias.dtype == torch.float16


# --- Gemma's FP8: quantizing layers that hold real weights ----------------------------------------


def test_quantize_linears_replaces_each_named_layer_by_its_own_fp8_copy():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 16, bias=False))
    model[0].bias.data = model[0].bias.data.to(torch.bfloat16)
    originals = {name: model.get_submodule(name).weight.detach().clone() for name in ("0", "2")}
    bias = model[0].bias.detach().clone()
    assert quantize_linears(model, ["0", "2", "0"], "upcast") == ["0", "2"]
    for name, weight in originals.items():
        layer = model.get_submodule(name)
        assert isinstance(layer, FP8Linear) and layer.weight.dtype == FP8_DTYPE
        # One float32 scale per tensor: the largest magnitude lands on e4m3's top, 448 (numpy, not ours).
        w = weight.numpy().astype(np.float64)
        assert layer.weight_scale.dtype == torch.float32
        assert layer.weight_scale.item() == pytest.approx(np.abs(w).max() / 448.0, rel=1e-6)
        deq = layer.weight.float().numpy() * layer.weight_scale.item()
        assert np.abs(deq - w).max() <= np.abs(w).max() * 2.0**-4
        # No calibration data: no input scale, so scaled-mm takes one per batch.
        assert layer.input_scale is None
        # Frozen like every FP8 layer: nothing here is trained.
        assert not any(p.requires_grad for p in layer.parameters())
    assert torch.equal(model[0].bias, bias) and model[0].bias.dtype == torch.bfloat16
    assert model[2].bias is None


def test_quantize_linears_works_on_the_work_device_and_leaves_the_result_home(monkeypatch):
    from ltx2.models import fp8 as fp8_module

    seen = []
    real = fp8_module.quantize_per_tensor

    def spy(weight):
        seen.append(weight.device.type)
        return real(torch.ones(weight.shape))  # meta tensors hold no values: quantize stand-in ones

    monkeypatch.setattr(fp8_module, "quantize_per_tensor", spy)
    model = nn.Sequential(nn.Linear(16, 16))
    quantize_linears(model, ["0"], "upcast", work_device="meta")
    assert seen == ["meta"] and model[0].weight.device.type == "cpu"
    quantize_linears(nn.Sequential(nn.Linear(16, 16)), ["0"], "upcast")  # no work device: where it lives
    assert seen == ["meta", "cpu"]


# --- scaled-mm on the settings production resolves ------------------------------------------------


def test_layers_made_from_a_resolved_setting_still_upcast_odd_shapes(monkeypatch):
    # resolve_compute hands back its own "scaled-mm" string; the shape rule must hold for it too.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    monkeypatch.setattr(torch.version, "hip", None)
    mode = resolve_compute("auto", "cuda")
    assert mode == "scaled-mm"
    assert FP8Linear(40, 16, compute=mode, device="meta").compute == "upcast"
    assert FP8Linear(32, 16, compute=mode, device="meta").compute == "scaled-mm"


def _emulated_scaled_mm(x: torch.Tensor, fp8: FP8Linear, scale: float) -> torch.Tensor:
    """What the FP8 matmul computes, from its definition: x cast to e4m3 at `scale`, times the
    dequantized weight, in float64."""
    qx = (x.double() / scale).clamp(-448, 448).float().to(FP8_DTYPE).double() * scale
    return qx @ (fp8.weight.double() * fp8.weight_scale.double()).t() + fp8.bias.double()


@needs_scaled_mm
@pytest.mark.parametrize("magnitude", [1e-3, 0.5, 3.0, 200.0])
def test_dynamic_input_scale_is_the_batchs_absmax_over_448(linear, magnitude):
    # Small activations (below 1) show whether the scale is really amax / 448: at scale 1 they would
    # fall into e4m3's subnormals and lose most of their bits.
    torch.manual_seed(5)
    x = torch.randn(6, 256)
    x = x / x.abs().max() * magnitude
    fp8 = make_fp8(linear, compute="scaled-mm", input_scale=None)
    with torch.no_grad():
        out = fp8(x).double()
    expected = _emulated_scaled_mm(x, fp8, x.abs().max().item() / 448.0)
    assert rel_err(out, expected) < 1e-5


@needs_scaled_mm
def test_dynamic_scale_of_an_all_zero_batch_gives_the_bias(linear):
    fp8 = make_fp8(linear, compute="scaled-mm", input_scale=None)
    with torch.no_grad():
        out = fp8(torch.zeros(3, 256))
    assert torch.isfinite(out).all()
    assert torch.equal(out, linear.bias.detach().expand(3, -1))


@needs_scaled_mm
def test_scaled_mm_asks_for_fast_accumulation(linear, monkeypatch):
    # cuBLASLt's fast FP8 accumulation is the speed setting on the GPU (CPU _scaled_mm ignores it, so
    # the call itself is what can be checked here).
    calls = []
    real = torch._scaled_mm

    def spy(*args, **kwargs):
        calls.append(kwargs.get("use_fast_accum"))
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "_scaled_mm", spy)
    with torch.no_grad():
        make_fp8(linear, compute="scaled-mm", input_scale=5.0 / 448)(torch.randn(2, 256))
    assert calls == [True]
