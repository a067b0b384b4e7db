"""`load_model` on real-layout files: a miniature single file + a Gemma 3 directory, and a
diffusers directory; model-aware defaults; what /health reports; generate() end to end."""

from __future__ import annotations

import miniature
import numpy as np
import pytest
import torch

from ltx2 import generate, load_model
from ltx2.models.configs import CheckpointError
from ltx2.models.tiny import build_text_encoder, build_tokenizer

REQUEST = {"prompt": "a red fox runs through snow", "width": 128, "height": 64, "num_frames": 9, "seed": 7}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """A models directory as `ltx2 download` leaves it: the checkpoints and Gemma 3."""
    root = tmp_path_factory.mktemp("models")
    modules = miniature.build_components(seed=11)
    miniature.round_to(modules, torch.bfloat16)
    miniature.write_checkpoint(root / "ltx-2-19b-distilled-fp8.safetensors", modules, fp8=True)
    miniature.write_checkpoint(root / "ltx-2-19b-dev.safetensors", modules)
    tokenizer = build_tokenizer()
    torch.manual_seed(5)
    gemma = build_text_encoder(len(tokenizer))
    gemma.save_pretrained(root / "gemma-3-12b-it-qat-q4_0-unquantized", max_shard_size="200KB")
    tokenizer.save_pretrained(root / "gemma-3-12b-it-qat-q4_0-unquantized")
    return root


@pytest.fixture(scope="module")
def distilled_fp8(models_dir):
    return load_model("ltx-2-19b-distilled-fp8", device="cpu", models_dir=str(models_dir),
                      gemma_dir=str(models_dir / "gemma-3-12b-it-qat-q4_0-unquantized"))


def test_fp8_distilled_file_loads_by_name_and_generates(distilled_fp8):
    model = distilled_fp8
    info = model.describe()
    assert info["checkpoint"]["kind"] == "distilled" and info["checkpoint"]["fp8_layers"] == 56
    assert info["checkpoint"]["checkpoint"].endswith("ltx-2-19b-distilled-fp8.safetensors")
    assert info["dtypes"]["text_encoder"] == "float32"  # CPU computes in float32
    assert (model.defaults.num_inference_steps, model.defaults.guidance_scale) == (8, 1.0)
    fp8_params = [p for p in model.pipe.transformer.parameters() if p.dtype == torch.float8_e4m3fn]
    assert len(fp8_params) == 56
    result = generate(model, {**REQUEST, "num_inference_steps": 2})
    assert result.frames.shape == (9, 64, 128, 3)
    assert result.num_inference_steps == 2 and result.guidance_scale == 1.0
    assert result.waveform.shape == (2, round(9 / 25 * 24000))
    assert np.isfinite(result.waveform).all() and result.frames.std() > 0


@pytest.fixture(scope="module")
def dev(models_dir):
    return load_model(str(models_dir / "ltx-2-19b-dev.safetensors"), device="cpu",
                      gemma_dir=str(models_dir / "gemma-3-12b-it-qat-q4_0-unquantized"))


def test_dev_file_gets_dev_defaults_and_a_request_value_wins(dev):
    model = dev
    assert (model.defaults.num_inference_steps, model.defaults.guidance_scale) == (40, 3.0)
    assert model.describe()["checkpoint"]["fp8_layers"] == 0
    result = generate(model, {**REQUEST, "num_inference_steps": 2})
    assert (result.num_inference_steps, result.guidance_scale) == (2, 3.0)
    result = generate(model, {**REQUEST, "num_inference_steps": 1, "guidance_scale": 1.0})
    assert (result.num_inference_steps, result.guidance_scale) == (1, 1.0)


def test_unknown_model_name_says_where_it_looked(tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint at ltx-2-19b-nope or .*ltx-2-19b-nope\.safetensors.*ltx2 download"):
        load_model("ltx-2-19b-nope", device="cpu", models_dir=str(tmp_path))


def test_missing_gemma_dir_is_named(models_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "gemma")):
        load_model(str(models_dir / "ltx-2-19b-dev.safetensors"), device="cpu", gemma_dir=str(tmp_path / "gemma"))


def test_diffusers_directory_loads_and_matches_the_components_it_was_saved_from(dev, tmp_path):
    """A model saved with diffusers' save_pretrained, loaded back through our loader."""
    target = tmp_path / "ltx-2-19b-dev-diffusers"
    dev.pipe.save_pretrained(target)
    loaded = load_model(str(target), device="cpu")
    assert loaded.checkpoint["format"] == "diffusers" and loaded.checkpoint["kind"] == "dev"
    a = generate(dev, {**REQUEST, "num_inference_steps": 2})
    b = generate(loaded, {**REQUEST, "num_inference_steps": 2})
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.waveform, b.waveform)


def test_diffusers_directory_with_a_missing_weight_is_refused(dev, tmp_path):
    from safetensors.torch import load_file, save_file

    target = tmp_path / "ltx-2-19b-dev-diffusers"
    dev.pipe.save_pretrained(target)
    weights = target / "vocoder" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    tensors.pop("conv_out.weight")
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"vocoder: .*conv_out\.weight"):
        load_model(str(target), device="cpu")


def test_health_reports_variant_dtypes_device_policy_and_memory(distilled_fp8):
    from fastapi.testclient import TestClient

    from ltx2.serving.app import create_app

    with TestClient(create_app(model=distilled_fp8)) as client:
        body = client.get("/health").json()
    model = body["model"]
    assert model["checkpoint"]["family"] == "ltx-2" and model["checkpoint"]["kind"] == "distilled"
    assert model["checkpoint"]["fp8_compute"] == "upcast"
    assert model["device"] == "cpu" and model["dtypes"]["transformer"] == "float32+float8_e4m3fn"
    assert model["memory"]["policy"] == "resident"
    assert model["defaults"]["num_inference_steps"] == 8 and model["defaults"]["guidance_scale"] == 1.0
    assert model["defaults"]["stg_scale"] == 0.0 and model["defaults"]["modality_scale"] == 1.0


def test_cli_generates_from_a_checkpoint_offline(models_dir, tmp_path):
    """The settings path end to end: flags -> loader -> generate -> MP4, with the hub off."""
    import json
    import os
    import subprocess
    import sys

    from ltx2.media.encode import probe_mp4

    out = tmp_path / "fox.mp4"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "LTX2_DEVICE": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "ltx2.cli", "generate", "--model", "ltx-2-19b-distilled-fp8",
         "--models-dir", str(models_dir), "--request", json.dumps({**REQUEST, "num_frames": 17}), "-o", str(out)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert (summary["num_inference_steps"], summary["guidance_scale"]) == (8, 1.0)  # distilled defaults
    assert summary["model"] == "ltx-2-19b-distilled-fp8"
    info = probe_mp4(out.read_bytes())
    assert info["video"]["frames"] == 17 and info["audio"]["channels"] == 2
    assert not (tmp_path / "hf").exists()  # nothing was fetched or cached


def test_a_lora_runs_on_the_fp8_transformer_without_touching_its_weights(distilled_fp8, tmp_path):
    from lora_files import attention_layers, write_lora

    from ltx2.models.fp8 import FP8Linear
    from ltx2.models.lora import layer_index
    from ltx2.pipelines.loras import LoraPolicy, resolve
    from ltx2.schema import GenerateRequest

    model = distilled_fp8
    layers = attention_layers(model)
    assert all(isinstance(layer_index(model).modules[layer], FP8Linear) for layer in layers)
    (tmp_path / "loras").mkdir()
    write_lora(tmp_path / "loras" / "style.safetensors", model, layers=layers)
    weights = {name: p.detach().clone() for name, p in model.pipe.transformer.named_parameters()
               if p.dtype == torch.float8_e4m3fn}
    request = {**REQUEST, "num_inference_steps": 2}
    bare = generate(model, request)
    lora_request = GenerateRequest(**request, loras=[{"path": "style"}])
    adapters = resolve(model, lora_request, LoraPolicy(models_dir=str(tmp_path), cache_dir=str(tmp_path / "c")))
    styled = generate(model, lora_request, adapters=adapters)
    after = generate(model, request)
    assert not np.array_equal(styled.frames, bare.frames) and np.array_equal(after.frames, bare.frames)
    assert styled.loras[0]["layers"] == len(layers)
    for name, p in model.pipe.transformer.named_parameters():
        if name in weights:  # still FP8, and the same bytes
            assert p.dtype == torch.float8_e4m3fn and torch.equal(p.view(torch.uint8), weights[name].view(torch.uint8))


def test_quantize_fp8_leaves_an_official_fp8_file_as_it_loaded(models_dir):
    model = load_model("ltx-2-19b-distilled-fp8", device="cpu", models_dir=str(models_dir), quantize="fp8",
                       gemma_dir=str(models_dir / "gemma-3-12b-it-qat-q4_0-unquantized"))
    assert model.describe()["quantize"] == {"setting": "fp8", "fp8_layers": 0}
    assert sum(p.dtype == torch.float8_e4m3fn for p in model.pipe.transformer.parameters()) == 56
