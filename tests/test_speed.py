"""Start-up speed choices: regional compilation, the attention kernel, and Gemma in FP8."""

from types import SimpleNamespace

import pytest
import torch

from ltx2 import load_model
from ltx2.models import memory, speed
from ltx2.models.fp8 import FP8Linear
from ltx2.models.loaded import apply_speed_settings
from ltx2.pipelines.generate import generate
from ltx2.pipelines.warmup import warm_up
from ltx2.schema import GenerateRequest

# The smallest request: inductor's build of the block's kernels is the test's cost, not the size.
SMALL = dict(prompt="warm-up", width=64, height=64, num_frames=9, num_inference_steps=1, seed=0)


@pytest.mark.slow
def test_compiled_and_eager_agree_on_tiny_and_the_warm_up_compiles():
    model = load_model("tiny", device="cpu")
    assert warm_up(model) is None  # not compiled: nothing to warm
    eager = generate(model, SMALL)
    apply_speed_settings(model, compile="on")
    blocks = model.pipe.transformer.transformer_blocks
    assert all(block._compiled_call_impl is not None for block in blocks)  # each block, not the whole model
    assert model.speed["compile"]["warmed_up"] is False
    torch._dynamo.utils.counters.clear()
    seconds = warm_up(model, GenerateRequest(**SMALL))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # it really compiled (inductor: the default)
    assert model.speed["compile"]["warmed_up"] and model.speed["compile"]["warmup_seconds"] == round(seconds, 3)
    assert model.speed["compile"]["warmup_request"] == "64x64x9"
    compiled = generate(model, SMALL)
    # Inductor reorders float32 sums: equal to rounding, not bit for bit.
    scale = eager.video_latents.abs().max()
    assert (compiled.video_latents - eager.video_latents).abs().max() <= 1e-4 * scale
    assert (compiled.audio_latents - eager.audio_latents).abs().max() <= 1e-4 * compiled.audio_latents.abs().max()


def test_the_server_warms_up_with_a_default_size_request(monkeypatch):
    from ltx2.pipelines import warmup
    from ltx2.serving import service

    seen = []
    monkeypatch.setattr(warmup, "generate", lambda model, request: seen.append(request))
    model = SimpleNamespace(speed={"compile": {"enabled": True}})
    monkeypatch.setattr(service, "load_from_settings", lambda settings: model)
    assert service.load_for_serving(None) is model
    defaults = GenerateRequest(prompt="x")
    assert [(r.width, r.height, r.num_frames) for r in seen] == [(defaults.width, defaults.height, defaults.num_frames)]
    assert model.speed["compile"]["warmup_request"] == "288x512x49"


def test_compile_is_off_by_default_on_cpu_and_on_for_cuda():
    assert not speed.compile_enabled("auto", torch.device("cpu"))
    assert speed.compile_enabled("auto", torch.device("cuda"))
    assert speed.compile_enabled("on", torch.device("cpu"))
    with pytest.raises(ValueError, match="--compile"):
        speed.compile_enabled("yes", torch.device("cpu"))


def test_attention_auto_on_cpu_and_a_pinned_kernel_gives_the_same_video():
    model = load_model("tiny", device="cpu")
    assert model.speed["attention"]["backend"] == "sdpa"
    request = dict(prompt="a lighthouse at night", width=64, height=64, num_frames=9, num_inference_steps=1, seed=4)
    default = generate(model, request)
    apply_speed_settings(model, attention="sdpa-math")
    assert model.speed["attention"] == {"backend": "sdpa-math", "reason": "sdpa-math: requested"}
    backends = {m.processor._attention_backend.value for m in model.pipe.transformer.modules()
                if hasattr(m, "processor")}
    assert backends == {"_native_math"}
    math = generate(model, request)
    assert torch.allclose(default.video_latents, math.video_latents, atol=1e-5)


def test_attention_names_are_checked_and_a_kernel_missing_here_is_an_error():
    with pytest.raises(ValueError, match="--attention must be auto or one of"):
        speed.resolve_attention("fastest", torch.device("cpu"))
    model = load_model("tiny", device="cpu")
    # diffusers' `flash` needs the flash-attn package and a GPU: named, it fails loudly, not silently.
    with pytest.raises(ValueError, match="does not run on cpu"):
        apply_speed_settings(model, attention="flash")


def tiny_embeddings(model, prompt: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Gemma's stacked hidden states and the connectors' video context for one prompt."""
    pipe = model.pipe
    with torch.no_grad():
        embeds, mask, _, _ = pipe.encode_prompt(prompt=prompt, do_classifier_free_guidance=False,
                                                max_sequence_length=pipe.tokenizer_max_length, device="cpu")
        video, _, _ = pipe.connectors(embeds, mask, padding_side="left")
    return embeds, video


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_fp8_text_encoder_quantizes_gemmas_linears_and_moves_embeddings_little():
    reference = load_model("tiny", device="cpu")
    quantized = load_model("tiny", device="cpu", text_encoder_dtype="fp8")
    layers = [m for m in quantized.pipe.text_encoder.modules() if isinstance(m, FP8Linear)]
    assert len(layers) == 2 * 7 and all(m.weight.dtype == torch.float8_e4m3fn for m in layers)
    assert quantized.speed["text_encoder_dtype"] == {"dtype": "fp8", "reason": "fp8: requested", "fp8_layers": 14}
    assert "float8_e4m3fn" in quantized.describe()["dtypes"]["text_encoder"]
    prompt = "A cat sitting calmly on a cushion, soft lighting, gentle purring sounds"
    ref_states, ref_video = tiny_embeddings(reference, prompt)
    fp8_states, fp8_video = tiny_embeddings(quantized, prompt)
    # e4m3 keeps 3 mantissa bits. Measured on this preset: ~6.4% on Gemma's stacked hidden states,
    # ~1% on the connectors' output, which is what the transformer reads.
    assert 0 < relative_error(fp8_states, ref_states) < 0.1
    assert 0 < relative_error(fp8_video, ref_video) < 0.03


def test_auto_text_encoder_dtype_is_fp8_only_when_nothing_fits_in_bf16():
    gib = 1024**3
    sizes = {"text_encoder": 24 * gib, "connectors": 3 * gib, "transformer": 20 * gib, "vae": 2 * gib}
    fp8_sizes = dict(sizes, text_encoder=13 * gib)
    # 80 GB free: everything fits resident in bf16.
    assert memory.choose_text_encoder_dtype("auto", 80 * gib, sizes, fp8_sizes, 4 * gib)["dtype"] == "bf16"
    # 28 GB: Gemma's encode stage (24 + 3 + 2) does not fit in bf16 under any policy; in FP8 it does.
    choice = memory.choose_text_encoder_dtype("auto", 28 * gib, sizes, fp8_sizes, 4 * gib)
    assert choice["dtype"] == "fp8" and "no memory policy fits" in choice["reason"]
    assert memory.choose_text_encoder_dtype("auto", 0, sizes, fp8_sizes, 0, device_type="cpu")["dtype"] == "bf16"
    assert memory.choose_text_encoder_dtype("bf16", 1, sizes, fp8_sizes, 0)["dtype"] == "bf16"  # asked: honoured
    with pytest.raises(ValueError, match="--text-encoder-dtype"):
        memory.choose_text_encoder_dtype("int4", 1, sizes, fp8_sizes, 0)


def test_health_reports_attention_compile_and_text_encoder_dtype(client):
    model = client.get("/health").json()["model"]
    assert model["attention"]["backend"] == "sdpa" and "reason" in model["attention"]
    assert model["compile"] == {"enabled": False, "setting": "off"}
    # Not FP8, and the dtype Gemma holds (float32 on the CPU), as dtypes.text_encoder says.
    assert model["text_encoder_dtype"]["fp8"] is False
    assert model["text_encoder_dtype"]["dtype"] == model["dtypes"]["text_encoder"] == "float32"
