"""The dev checkpoint's two-stage pipeline (ltx-pipelines 1.2.0 `TI2VidTwoStagesPipeline`): stage 1 is
the dev model with the multi-modal guider at half size on the dev schedule, then the x2 upsampler,
then stage 2 is the same dev weights with Lightricks' distilled LoRA added, on the distilled stage-2
sigmas, unguided; the decoded soundtrack is stage 1's. Run on the tiny preset with `--variant dev`
and its tiny distilled LoRA (official trainer key style), and on a miniature dev checkpoint with a
distilled LoRA file in <models dir>/loras/."""

from __future__ import annotations

import miniature
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from lora_files import attention_layers, factors, ltx_name, write_lora
from safetensors.torch import save_file
from test_schedules import reference_sigmas

from ltx2 import generate, load_model
from ltx2.models.configs import CheckpointError
from ltx2.models.download import DISTILLED_LORA
from ltx2.models.lora import layer_index
from ltx2.models.tiny import build_distilled_lora
from ltx2.models.upsampler import UPSAMPLER_FILE
from ltx2.pipelines import stages
from ltx2.pipelines.loras import LoraPolicy, resolve
from ltx2.schema import GenerateRequest, InvalidRequest
from ltx2.settings import Settings, parse_settings

REQUEST = {"prompt": "a lighthouse at dusk, waves on rocks", "width": 64, "height": 64, "num_frames": 9,
           "num_inference_steps": 2, "seed": 7}
STAGE_2 = [0.909375, 0.725, 0.421875]  # ltx-pipelines' STAGE_2_DISTILLED_SIGMA_VALUES without the final 0
PROBED = ("transformer", "transformer_blocks.0.attn1.to_q")  # a layer both LoRAs of the traced run adapt


@pytest.fixture(scope="module")
def dev():
    """The tiny preset as a dev checkpoint: the dev defaults, the tiny upsampler and distilled LoRA."""
    return load_model("tiny", device="cpu", variant="dev")


def update(factor_pairs, x: torch.Tensor) -> torch.Tensor:
    """x A^T B^T summed over (A, B) pairs: what LoRAs at scale 1 add to a linear layer's output."""
    return sum(x @ down.T.float() @ up.T.float() for down, up in factor_pairs)


@pytest.fixture(scope="module")
def traced(dev, tmp_path_factory):
    """A default request (so two-stage) with a request LoRA, every denoising stage recorded: its sigmas,
    transformer passes, audio, and what the probed layer adds to its bare output while it runs."""
    root = tmp_path_factory.mktemp("models")
    (root / "loras").mkdir()
    written = write_lora(root / "loras" / "style.safetensors", dev, layers=attention_layers(dev), seed=3)
    module = layer_index(dev).modules[PROBED]
    probe = torch.randn(3, module.in_features, generator=torch.Generator().manual_seed(0))
    calls, decoded = [], []
    real_denoise, real_decode_audio = stages.denoise, stages.decode_audio

    def denoise(run, video, audio, prompt, sigmas, grid, guidance, **sampler):
        added = module(probe) - torch.nn.functional.linear(probe, module.weight, module.bias)
        passes = run.transformer_passes
        video, audio = real_denoise(run, video, audio, prompt, sigmas, grid, guidance, **sampler)
        calls.append(dict(sigmas=list(sigmas), grid=grid, passes=run.transformer_passes - passes, added=added,
                          audio_out=audio.latents.clone()))
        return video, audio

    def decode_audio(model, plan, audio, grid):
        decoded.append(audio.latents.clone())
        return real_decode_audio(model, plan, audio, grid)

    request = GenerateRequest(**REQUEST, loras=[{"path": "style.safetensors"}])
    adapters = resolve(dev, request, LoraPolicy(models_dir=str(root), cache_dir=str(root / "cache")))
    stages.denoise, stages.decode_audio = denoise, decode_audio
    try:
        result = generate(dev, request, adapters=adapters)
    finally:
        stages.denoise, stages.decode_audio = real_denoise, real_decode_audio
    return result, calls, decoded, written, probe


def test_a_dev_model_with_the_distilled_lora_runs_two_stage_by_default(dev, traced):
    result, calls, *_ = traced
    assert dev.describe()["distilled_lora"] == "tiny" and not dev.defaults.distilled
    assert result.pipeline == "two-stage" and result.use_multiscale
    assert result.frames.shape == (9, 64, 64, 3) and np.isfinite(result.frames).all()
    assert {"stage1_denoise", "upsample", "stage2_denoise"} <= set(result.timings)
    low, full = calls[0]["grid"], calls[1]["grid"]
    assert (low.width, low.height, full.width, full.height) == (1, 1, 2, 2)  # 32x32 latents 1x1, 64x64 2x2


def test_stage_1_is_guided_on_the_dev_schedule_and_stage_2_is_one_pass_on_the_distilled_sigmas(traced):
    result, calls, *_ = traced
    first, second = calls
    # The reference builds stage 1's schedule without a latent: the shift of its default 4096 tokens.
    assert first["sigmas"] == pytest.approx(reference_sigmas(2, 4096), abs=1e-12)
    assert second["sigmas"] == STAGE_2
    assert first["passes"] == 2 * 4  # cond, uncond, STG, modality: the dev guider's defaults
    assert second["passes"] == 3  # unguided: one pass per step
    assert result.transformer_passes == 2 * 4 + 3


def test_the_distilled_lora_adapts_stage_2_only_on_top_of_the_request_lora(dev, traced):
    result, calls, _, written, probe = traced
    tiny = build_distilled_lora(dev.pipe.transformer)  # the tiny preset's file, rebuilt: the official keys
    stem = ltx_name(*PROBED)
    distilled = (tiny[f"{stem}.lora_A.weight"], tiny[f"{stem}.lora_B.weight"])
    request_lora = tuple(t.to(torch.bfloat16) for t in written[PROBED])  # write_lora stores bfloat16
    first, second = calls
    torch.testing.assert_close(first["added"], update([request_lora], probe), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(second["added"], update([request_lora, distilled], probe), rtol=1e-4, atol=1e-5)
    assert [(item["path"], item["scale"], item["stage"], item["key_style"]) for item in result.loras] == [
        ("style.safetensors", 1.0, "all", "ltx"), ("tiny", 1.0, "stage2", "ltx")]
    assert result.loras[1]["layers"] == len(tiny) // 2 and len(result.loras[1]["sha256"]) == 64


def test_the_soundtrack_decoded_is_stage_1s(traced):
    _, calls, decoded, *_ = traced
    first, second = calls
    torch.testing.assert_close(decoded[0], first["audio_out"], rtol=0, atol=0)
    assert not torch.equal(decoded[0], second["audio_out"])  # stage 2's audio ran, and was dropped


def test_nothing_of_the_lora_is_left_after_a_two_stage_request(dev):
    weights = {k: v.clone() for k, v in dev.pipe.transformer.state_dict().items()}
    one = {**REQUEST, "use_multiscale": False, "num_inference_steps": 1}
    before = generate(dev, one)
    assert before.pipeline == "one-stage" and before.loras == []
    assert generate(dev, REQUEST).pipeline == "two-stage"
    after = generate(dev, one)
    assert np.array_equal(after.frames, before.frames) and np.array_equal(after.waveform, before.waveform)
    assert not any(m._forward_hooks for m in layer_index(dev).modules.values())
    assert all(torch.equal(v, weights[k]) for k, v in dev.pipe.transformer.state_dict().items())


@pytest.fixture(scope="module")
def dev_client(dev, tmp_path_factory):
    from ltx2.serving.app import create_app

    settings = Settings(output_dir=str(tmp_path_factory.mktemp("output")))
    with TestClient(create_app(settings, model=dev)) as client:
        yield client


def test_dev_two_stage_through_the_server(dev_client):
    r = dev_client.post("/generate", json=REQUEST)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["pipeline"], body["use_multiscale"], body["transformer_passes"]) == ("two-stage", True, 11)
    assert [(lora["path"], lora["stage"]) for lora in body["loras"]] == [("tiny", "stage2")]
    assert body["timings"]["stage1_denoise"] > 0 and body["timings"]["stage2_denoise"] > 0
    assert dev_client.get("/health").json()["model"]["distilled_lora"] == "tiny"


def test_without_the_distilled_lora_a_dev_model_stays_one_stage_and_refuses_use_multiscale(dev, dev_client,
                                                                                          monkeypatch):
    bare = load_model("tiny", device="cpu", variant="dev", distilled_lora="none")
    assert bare.distilled_lora is None and bare.upsampler is not None
    assert generate(bare, {**REQUEST, "num_inference_steps": 1}).pipeline == "one-stage"
    with pytest.raises(InvalidRequest) as caught:
        generate(bare, {**REQUEST, "use_multiscale": True})
    assert caught.value.field == "use_multiscale" and DISTILLED_LORA in caught.value.message
    monkeypatch.setattr(dev, "distilled_lora", None)
    r = dev_client.post("/generate", json={**REQUEST, "use_multiscale": True})
    assert r.status_code == 422 and r.json()["field"] == "use_multiscale"
    assert "distilled LoRA" in r.json()["error"] and "ltx2 download --distilled-lora" in r.json()["error"]


def test_the_setting_and_its_flag():
    assert Settings.from_env({"LTX2_DISTILLED_LORA": "/m/x.safetensors"}).distilled_lora == "/m/x.safetensors"
    assert parse_settings(["--distilled-lora", "none"]).distilled_lora == "none"
    assert parse_settings([]).distilled_lora == "auto"
    with pytest.raises(CheckpointError, match="ltx2 download --distilled-lora"):
        load_model("tiny", device="cpu", variant="dev", distilled_lora="/nonexistent/lora.safetensors")


@pytest.mark.slow
def test_a_dev_checkpoint_finds_the_distilled_lora_file_in_its_models_dir(tmp_path):
    from ltx2.models.tiny import build_text_encoder, build_tokenizer

    modules = miniature.build_components(seed=2)
    miniature.round_to(modules, torch.bfloat16)
    miniature.write_checkpoint(tmp_path / "ltx-2-19b-dev.safetensors", modules)
    latent = miniature.MINI_CONFIG["vae"]["latent_channels"]
    miniature.write_upsampler(tmp_path / UPSAMPLER_FILE, config={**miniature.UPSAMPLER_CONFIG, "in_channels": latent})
    gemma = tmp_path / "gemma"
    tokenizer = build_tokenizer()
    build_text_encoder(len(tokenizer)).save_pretrained(gemma)
    tokenizer.save_pretrained(gemma)
    kw = dict(device="cpu", models_dir=str(tmp_path), gemma_dir=str(gemma))
    without = load_model("ltx-2-19b-dev", **kw)  # no file yet: one stage, as before
    assert without.distilled_lora is None and without.describe()["distilled_lora"] is None
    assert generate(without, {**REQUEST, "num_inference_steps": 1}).pipeline == "one-stage"
    (tmp_path / "loras").mkdir()
    path = tmp_path / "loras" / DISTILLED_LORA  # where `ltx2 download --distilled-lora` puts it
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in build_distilled_lora(without.pipe.transformer).items()},
              str(path))
    model = load_model("ltx-2-19b-dev", **kw)
    assert model.describe()["distilled_lora"] == str(path)
    out = generate(model, {**REQUEST, "num_inference_steps": 1})
    assert out.pipeline == "two-stage" and np.isfinite(out.frames).all()
    assert out.loras[-1]["path"] == DISTILLED_LORA and out.loras[-1]["stage"] == "stage2"
    # A LoRA for another model fails loading, naming the file.
    wrong = {k: v for k, v in factors(model, attention_layers(model)[:1]).items()}
    write_lora(path, weights={layer: (a[:, :3], b) for layer, (a, b) in wrong.items()})
    with pytest.raises(CheckpointError, match=f"{DISTILLED_LORA}: the distilled LoRA does not fit"):
        load_model("ltx-2-19b-dev", **kw)


def test_one_stage_dev_takes_the_4096_token_shift_whatever_the_size(dev, monkeypatch):
    """ltx-pipelines 1.2.0's one-stage pipeline builds its schedule without a latent, as stage 1 above:
    at 64x64 (4 latent tokens per frame) the shift is still the one for 4096 tokens."""
    seen = []
    real_denoise = stages.denoise

    def denoise(run, video, audio, prompt, sigmas, grid, guidance):
        seen.append((list(sigmas), grid.video_tokens))
        return real_denoise(run, video, audio, prompt, sigmas, grid, guidance)

    monkeypatch.setattr(stages, "denoise", denoise)
    result = generate(dev, {**REQUEST, "num_inference_steps": 3, "use_multiscale": False})
    assert result.pipeline == "one-stage"
    (sigmas, tokens), = seen
    assert tokens < 100 and sigmas == pytest.approx(reference_sigmas(3, 4096), abs=1e-12)
    assert sigmas != pytest.approx(reference_sigmas(3, tokens), abs=1e-6)  # the sized shift differs here
