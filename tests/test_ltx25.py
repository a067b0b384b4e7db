"""LTX-2.5 on the `tiny-2.5` preset: its switches (ltx-pipelines 1.2.0), the ancestral first stage, the
diffusion video decoder, the duration head, and the whole product (server, handler, CLI) on it."""

from __future__ import annotations

import base64
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from ltx2 import generate, load_model
from ltx2.media.encode import probe_video
from ltx2.models import families
from ltx2.pipelines import stages
from ltx2.models.diffusion_decode import diffusion_decode, min_latent_shape
from ltx2.pipelines.length import seconds_to_frames
from ltx2.schema import GenerateRequest, InvalidRequest

SMALL = {"prompt": "waves on a pebble beach at dawn, gulls", "width": 128, "height": 128, "seed": 11}


@pytest.fixture(scope="module")
def model25():
    return load_model("tiny-2.5", device="cpu")


@pytest.fixture(scope="module")
def client25(model25, tmp_path_factory):
    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    settings = Settings(model="tiny-2.5", output_dir=str(tmp_path_factory.mktemp("out25")))
    with TestClient(create_app(settings, model=model25)) as client:
        yield client


def test_the_25_description_is_ltx_pipelines_24_params_with_the_ancestral_first_stage():
    family = families.by_name("ltx-2.5")
    assert (family.dev.num_inference_steps, family.dev.stg_blocks, family.image_crf) == (30, (28,), 18)
    assert family.ancestral_first_stage and not families.by_name("ltx-2.3").ancestral_first_stage
    assert family.vocoder_rate == 48_000 and family.files.gemma_repo is None  # Gemma 4 ships with the model
    assert families.preset("tiny-2.5") is family


def test_tiny_25_loads_every_part_and_reports_it(model25):
    info = model25.describe()
    assert (info["model_family"], info["video_decoder"], info["duration_head"]) == ("ltx-2.5", "diffusion", True)
    assert {"diffusion_decoder", "duration_head"} <= set(info["dtypes"])
    assert type(model25.pipe.text_encoder).__name__ == "Gemma4UnifiedForConditionalGeneration"
    transformer = model25.pipe.transformer
    assert not transformer.config.use_prompt_adaln_single and not transformer.config.ff_bias
    conv = load_model("tiny-2.5", device="cpu", vae_decoder="conv")
    assert conv.video_decoder == "conv" and conv.diffusion_decoder is None
    with pytest.raises(ValueError, match="--vae-decoder diffusion: model tiny \\(LTX-2 19B\\) has no diffusion video "
                                         "decoder loaded; use auto or conv"):
        load_model("tiny", device="cpu", vae_decoder="diffusion")
    with pytest.raises(ValueError, match="--vae-decoder must be auto, diffusion or conv, got 'natten'"):
        load_model("tiny", device="cpu", vae_decoder="natten")


# ------------------------------------------------------------------------------------ the sampler

def _reference_ancestral(x, x0, sigma, sigma_next, noise, eta=1.0, s_noise=1.0):
    """ltx-core's EulerAncestralDiffusionStep.step, written out from its definition in numpy."""
    if sigma_next == 0:
        return x0
    sigma_down = sigma_next * (1 + (sigma_next / sigma - 1) * eta)
    r = sigma_down / sigma
    x_next = r * x + (1 - r) * x0
    a_n, a_d = 1 - sigma_next, 1 - sigma_down
    coeff = np.sqrt(max(sigma_next ** 2 - sigma_down ** 2 * a_n ** 2 / a_d ** 2, 0))
    return (a_n / a_d) * x_next + noise * s_noise * coeff


@pytest.mark.parametrize("sigma, sigma_next", [(1.0, 0.99375), (0.975, 0.909375), (0.725, 0.421875), (0.421875, 0.0)])
def test_the_ancestral_step_is_ltx_cores(sigma, sigma_next):
    gen = torch.Generator().manual_seed(0)
    latents, velocity = torch.randn(1, 12, 4, generator=gen), torch.randn(1, 12, 4, generator=gen)
    stream = stages.Stream(latents, torch.zeros(1, 3, 12, 2), own_tokens=12)
    got = stages.ancestral_step(stream, velocity, sigma, sigma_next, torch.Generator().manual_seed(5))
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(5)).numpy()
    x0 = (latents - sigma * velocity).numpy()
    np.testing.assert_allclose(got.numpy(), _reference_ancestral(latents.numpy(), x0, sigma, sigma_next, noise),
                               atol=1e-6)


def test_a_held_token_stays_its_condition_through_an_ancestral_step():
    latents, clean = torch.randn(1, 6, 4), torch.randn(1, 6, 4)
    strength = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.5, 0.5]).view(1, 6, 1)
    stream = stages.Stream(latents, torch.zeros(1, 3, 6, 2), 6, clean=clean, strength=strength)
    out = stages.ancestral_step(stream, torch.randn(1, 6, 4), 0.9, 0.7, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out[:, :2], clean[:, :2])
    assert not torch.allclose(out[:, 2:4], clean[:, 2:4])


def test_a_distilled_25_samples_its_first_stage_ancestrally_seeded_from_the_request(model25):
    request = GenerateRequest(**SMALL, num_frames=9, use_multiscale=False, num_inference_steps=3)
    first, again = generate(model25, request), generate(model25, request)
    torch.testing.assert_close(first.video_latents, again.video_latents)  # the seed decides the injected noise
    euler = dataclasses.replace(model25, family=dataclasses.replace(model25.family, ancestral_first_stage=False))
    plain = generate(euler, request)
    assert not torch.allclose(first.video_latents, plain.video_latents)
    other = generate(model25, request.model_copy(update={"seed": 12}))
    assert not torch.allclose(first.video_latents, other.video_latents)


# ------------------------------------------------------------------------------------ the diffusion decoder

def test_the_decoder_floor_is_ltx_cores_for_the_real_kernels(model25):
    # The real decoder's kernels and strides (diffusers' defaults, as LTX-2.5 ships).
    config = dataclasses.make_dataclass("C", ["decoder_stage_kernels", "decoder_upsample_strides",
                                              "decoder_stage5_kernel"])(
        ((3, 7, 7), (3, 7, 7), (3, 5, 5), (3, 5, 5)), ((1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2)), (11, 11, 11))
    # all_stages_min_tile_size: ceil(kernel / cumulative stride) per stage and axis, stage 5 after all strides.
    assert min_latent_shape(config) == (3, 7, 7)
    assert min_latent_shape(model25.diffusion_decoder.config) == (3, 3, 3)


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 2, 3), (3, 4, 4)])
def test_a_latent_below_the_floor_is_padded_and_cropped_back(model25, shape):
    latents = torch.randn(1, 128, *shape, generator=torch.Generator().manual_seed(2))
    pixels = diffusion_decode(model25.diffusion_decoder, latents, torch.Generator().manual_seed(3))
    frames, height, width = shape
    assert pixels.shape == (1, 3, 8 * (frames - 1) + 1, 32 * height, 32 * width)
    again = diffusion_decode(model25.diffusion_decoder, latents, torch.Generator().manual_seed(3))
    torch.testing.assert_close(pixels, again)  # its noise comes from the generator it is given


def test_diffusion_and_conv_decoders_both_make_the_video(model25):
    conv = load_model("tiny-2.5", device="cpu", vae_decoder="conv")
    request = GenerateRequest(**SMALL, num_frames=9, use_multiscale=False, num_inference_steps=2)
    a, b = generate(model25, request), generate(conv, request)
    torch.testing.assert_close(a.video_latents, b.video_latents)  # the same latents...
    assert a.frames.shape == b.frames.shape == (9, 128, 128, 3)
    assert not np.array_equal(a.frames, b.frames)  # ...through two decoders


# ------------------------------------------------------------------------------------ the duration head

@pytest.mark.parametrize("seconds, fps, expected", [
    (5.86, 25, 145),  # 146.5 -> 146 -> floored onto the grid
    (0.2, 25, 25),  # below 1 s: clamped to 25 frames, on the grid already
    (0.2, 24, 25),  # 24 frames floors to 17 < 24: raised to the next grid point
    (60.0, 25, 497),  # above 20 s: clamped to the server's 497
    (60.0, 12, 233),  # 20 s at 12 fps = 240 -> floored to 233
])
def test_seconds_become_frames_as_ltx_pipelines_rounds_them(seconds, fps, expected):
    frames = seconds_to_frames(seconds, fps, max(9, round(fps)), min(497, round(20 * fps)))
    assert frames == expected and (frames - 1) % 8 == 0


@pytest.mark.slow
def test_no_num_frames_on_25_is_the_duration_heads_length(model25):
    auto = generate(model25, GenerateRequest(**SMALL, use_multiscale=False, num_inference_steps=1))
    assert auto.length_from == "duration_head" and auto.predicted_seconds is not None
    assert auto.num_frames == seconds_to_frames(auto.predicted_seconds, 25, 25, 497)
    assert auto.frames.shape[0] == auto.num_frames and auto.waveform.shape[1] == round(auto.num_frames / 25 * 48_000)
    explicit = generate(model25, GenerateRequest(**SMALL, num_frames=17, use_multiscale=False, num_inference_steps=1))
    assert (explicit.num_frames, explicit.length_from) == (17, "request")
    named = generate(model25, GenerateRequest(**SMALL, duration="auto", use_multiscale=False, num_inference_steps=1))
    assert (named.num_frames, named.length_from) == (auto.num_frames, "duration_head")
    # match_audio_length sent as false says nothing about the length: still the head's.
    unmatched = generate(model25, GenerateRequest(**SMALL, match_audio_length=False, use_multiscale=False,
                                                  num_inference_steps=1))
    assert (unmatched.num_frames, unmatched.length_from) == (auto.num_frames, "duration_head")


def test_auto_on_a_model_without_a_head_is_a_422_naming_duration(model, client):
    with pytest.raises(InvalidRequest) as caught:
        generate(model, GenerateRequest(prompt="a cat", duration="auto"))
    assert caught.value.field == "duration" and "LTX-2 19B has none loaded" in caught.value.message
    answer = client.post("/generate", json={"prompt": "a cat", "duration": "auto"})
    assert answer.status_code == 422 and answer.json()["field"] == "duration"
    both = client.post("/generate", json={"prompt": "a cat", "duration": "auto", "num_frames": 17})
    assert both.status_code == 422
    assert both.json()["field"] == "duration" and both.json()["error"] == 'give num_frames or duration "auto", not both'
    # Without a head, leaving num_frames out keeps the request model's default.
    assert generate(model, GenerateRequest(prompt="a cat", width=64, height=64, num_inference_steps=1,
                                           use_multiscale=False)).num_frames == 49


def test_a_queued_request_keeps_its_length_open_across_the_job_store(model25, tmp_path):
    """The job store keeps only the fields a request set, so a restart does not fix num_frames at 49."""
    request = GenerateRequest(prompt="a fox")
    stored = GenerateRequest.model_validate_json(request.model_dump_json(exclude_unset=True))
    assert "num_frames" not in stored.model_fields_set


# ------------------------------------------------------------------------------------ the product on it

@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_image_conditioning_uses_crf_18(model25):
    import io

    from PIL import Image

    from ltx2.media.conditioning_image import conditioning_pixels
    from ltx2.pipelines.conditioning import decode_conditioning
    from ltx2.pipelines.generate import image_targets

    rgb = np.tile(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], (128, 1, 3))
    rgb[::7] = 255 - rgb[::7]  # detail the two CRFs compress differently
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    request = GenerateRequest(**SMALL, num_frames=9, image_start=uri, use_multiscale=False, num_inference_steps=1)
    # The sandbox prepares the image with the family's CRF: exactly what CRF 18 gives here, not CRF 33.
    targets = image_targets(model25, request)
    cond = decode_conditioning(request, model25.pipe.audio_vae.config.sample_rate, model25.vocoder_rate,
                               targets=targets)
    (size, pixels), = cond.image_start.pixels.items()
    assert targets.crf == 18 and pixels.equal(conditioning_pixels(rgb, *size, crf=18))
    assert not pixels.equal(conditioning_pixels(rgb, *size, crf=33))
    assert generate(model25, request, conditioning=cond).has_image_start


@pytest.mark.slow
def test_server_on_tiny_25(client25):
    health = client25.get("/health").json()["model"]
    assert (health["model_family"], health["video_decoder"], health["audio_sample_rate"]) == ("ltx-2.5", "diffusion",
                                                                                                48_000)
    answer = client25.post("/generate", json={**SMALL, "num_inference_steps": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["model_family"] == "ltx-2.5" and body["length_from"] == "duration_head"
    assert body["timings"]["choose_length"] > 0
    probe = probe_video(base64.b64decode(body["video"].split(",", 1)[1]))
    assert probe["video"]["frames"] == body["num_frames"] and probe["audio"]["sample_rate"] == 48_000
    assert {m["model_family"] for m in client25.get("/v1/models").json()["data"]} == {"ltx-2.5"}


@pytest.mark.slow
def test_handler_on_tiny_25(model25):
    from ltx2.serving.worker import make_handler

    out = make_handler(model25, send_progress=lambda job, progress: None)(
        {"id": "j25", "input": {**SMALL, "num_frames": 9, "num_inference_steps": 2}})
    assert "error" not in out, out
    assert (out["model_family"], out["num_frames"], out["length_from"]) == ("ltx-2.5", 9, "request")


def test_cli_on_tiny_25(tmp_path):
    info = subprocess.run([sys.executable, "-m", "ltx2.cli", "generate", "--model", "tiny-2.5", "--vae-decoder",
                           "conv", "--info"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert info.returncode == 0, info.stderr[-2000:]
    described = json.loads(info.stdout)
    assert (described["model_family"], described["video_decoder"]) == ("ltx-2.5", "conv")
    out = tmp_path / "beach.mp4"
    made = subprocess.run([sys.executable, "-m", "ltx2.cli", "generate", "--model", "tiny-2.5", "--prompt", "a beach",
                           "--duration", "auto", "--width", "128", "--height", "128", "--num-inference-steps", "1",
                           "--use-multiscale", "false", "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    summary = json.loads(made.stdout)
    assert summary["length_from"] == "duration_head"
    assert probe_video(out.read_bytes())["video"]["frames"] == summary["num_frames"]


def test_quantize_fp8_makes_the_official_fp8_layer_set_and_keeps_the_video(model25):
    from ltx2.models.fp8 import FP8Linear, fp8_layer_names

    fp8 = load_model("tiny-2.5", device="cpu", quantize="fp8")
    transformer = fp8.pipe.transformer
    expected = fp8_layer_names(model25.pipe.transformer, len(transformer.transformer_blocks))
    swapped = [name for name, m in transformer.named_modules() if isinstance(m, FP8Linear)]
    assert swapped == expected and fp8.describe()["quantize"] == {"setting": "fp8", "fp8_layers": len(expected)}
    assert all(transformer.get_submodule(n).weight.dtype == torch.float8_e4m3fn for n in swapped)
    request = GenerateRequest(**SMALL, num_frames=9, use_multiscale=False, num_inference_steps=2)
    full, quantized = generate(model25, request), generate(fp8, request)
    error = (full.video_latents - quantized.video_latents).abs().mean() / full.video_latents.abs().mean()
    assert 0 < error < 0.05  # e4m3 with per-tensor scales: a percent or so, not another video
    with pytest.raises(ValueError, match="--quantize must be none or fp8, got 'int4'"):
        load_model("tiny-2.5", device="cpu", quantize="int4")
