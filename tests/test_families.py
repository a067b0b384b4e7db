"""Model families: one description each, read by the stages; the `tiny-2.3` preset runs the whole product.

The values each family's description must hold are ltx-pipelines 1.2.0's (utils/constants.py):
LTX_2_PARAMS (40 steps, STG block 29) for 2.0, LTX_2_3_PARAMS (30 steps, STG block 28) for 2.3,
DEFAULT_IMAGE_CRF 33 for both; the vocoder rates are the families' (24 kHz HiFi-GAN, 48 kHz BWE).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from ltx2 import generate, load_model
from ltx2.media.encode import probe_video
from ltx2.models import families
from ltx2.pipelines import stages
from ltx2.schema import GenerateRequest

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"prompt": "a red fox trotting through snow, wind", "width": 256, "height": 128, "num_frames": 17, "seed": 5}


@pytest.fixture(scope="module")
def model23():
    return load_model("tiny-2.3", device="cpu")


@pytest.fixture(scope="module")
def client23(model23, tmp_path_factory):
    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    settings = Settings(model="tiny-2.3", output_dir=str(tmp_path_factory.mktemp("out23")))
    with TestClient(create_app(settings, model=model23)) as client:
        yield client


# ------------------------------------------------------------------------------------ descriptions

def test_each_family_holds_its_reference_generation_switches():
    two, three = families.by_name("ltx-2"), families.by_name("ltx-2.3")
    assert (two.dev.num_inference_steps, two.dev.stg_blocks) == (40, (29,))
    assert (three.dev.num_inference_steps, three.dev.stg_blocks) == (30, (28,))
    for family in (two, three):
        # 2.3 changes only the steps and the STG block of LTX_2_PARAMS' guider.
        assert (family.dev.guidance_scale, family.dev.audio_guidance_scale, family.dev.stg_scale,
                family.dev.modality_scale, family.dev.guidance_rescale) == (3.0, 7.0, 1.0, 3.0, 0.7)
        assert family.distilled.num_inference_steps == 8 and family.distilled.guidance_scale == 1.0
        assert family.image_crf == 33
        assert family.defaults(distilled=True) is family.distilled and family.defaults(distilled=False) is family.dev
    assert (two.vocoder_rate, three.vocoder_rate) == (24_000, 48_000)


def test_families_are_found_by_detected_name_and_presets_by_preset_name():
    assert families.preset("tiny").name == "ltx-2" and families.preset("tiny-2.3").name == "ltx-2.3"
    assert families.preset("ltx-2.3-22b-dev.safetensors") is None  # a file is never a preset
    with pytest.raises(ValueError, match="unknown model family 'ltx-9'; known: ltx-2, ltx-2.3"):
        families.by_name("ltx-9")


def test_no_stage_tests_a_family_name():
    """The stages ask the description; a new family must not mean a hunt through `if` chains. No
    comparison in pipelines/, serving/ or media/ has a family's name as an operand."""
    import ast

    names = set(families.FAMILIES)
    found = []
    for folder in ("pipelines", "serving", "media"):
        for path in (ROOT / "ltx2" / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare):
                    operands = [node.left, *node.comparators]
                    strings = {n.value for o in operands for n in ast.walk(o) if isinstance(n, ast.Constant)}
                    if strings & names:
                        found.append(f"{path.name}:{node.lineno}")
    assert not found
    # The check itself sees such a test.
    tree = ast.parse('if model.family.name == "ltx-2.3": pass')
    assert any(isinstance(n, ast.Compare) for n in ast.walk(tree))


# ------------------------------------------------------------------------------------ the 2.3 network

def test_tiny_23_has_the_23_structure(model23):
    pipe = model23.pipe
    transformer, connectors, vocoder = pipe.transformer, pipe.connectors, pipe.vocoder
    block = transformer.transformer_blocks[0]
    # Gated attention, cross-attention AdaLN (9 modulation rows) and the prompt AdaLN.
    assert block.attn1.to_gate_logits is not None and block.audio_attn1.to_gate_logits is not None
    assert transformer.time_embed.linear.out_features == 9 * transformer.config.num_attention_heads \
        * transformer.config.attention_head_dim
    assert hasattr(transformer, "prompt_adaln") and hasattr(transformer, "audio_prompt_adaln")
    # The text projection sits before the connectors, one per modality, biased (feature extractor V2).
    assert not hasattr(transformer, "caption_projection")
    assert connectors.config.per_modality_projections and connectors.video_text_proj_in.bias is not None
    assert connectors.video_text_proj_in.out_features == transformer.config.cross_attention_dim
    assert connectors.audio_text_proj_in.out_features == transformer.config.audio_cross_attention_dim
    assert type(vocoder).__name__ == "LTX2VocoderWithBWE" and model23.vocoder_rate == model23.family.vocoder_rate == 48_000
    # What stays the 19B's: the latent geometry and the audio VAE's rate.
    assert pipe.vae.config.latent_channels == 128 and pipe.audio_vae.config.sample_rate == 16_000


def test_the_bwe_vocoder_writes_three_48k_samples_per_16k_sample(model23):
    mel = torch.randn(1, 2, 50, 64)  # half a second of stereo mel frames at 100 a second
    with torch.no_grad():
        wave = model23.pipe.vocoder(mel)
    assert wave.shape == (1, 2, 50 * 160 * 3)  # 160 samples a frame at 16 kHz, x3 to 48 kHz
    assert torch.isfinite(wave).all() and wave.abs().max() <= 1.0


def test_the_prompt_adaln_reads_each_streams_sigma_and_zero_for_a_held_stream(model23):
    """ltx-pipelines' modality_from_latent_state: a frozen modality's sigma is 0 for its prompt AdaLN."""
    transformer = model23.pipe.transformer
    seen = {}

    def grab(name):
        def hook(module, args):
            seen[name] = args[0].detach().clone()
        return hook

    handles = [transformer.prompt_adaln.register_forward_pre_hook(grab("video")),
               transformer.audio_prompt_adaln.register_forward_pre_hook(grab("audio"))]
    try:
        request = GenerateRequest(**{**SMALL, "num_frames": 9, "num_inference_steps": 1, "use_multiscale": False})
        generate(model23, request)
        assert seen["video"].tolist() == [1000.0] and seen["audio"].tolist() == [1000.0]  # sigma 1 x 1000
        wav = _tone(seconds=0.5)
        generate(model23, request.model_copy(update={"audio": _wav_uri(wav)}))
        assert seen["video"].tolist() == [1000.0] and seen["audio"].tolist() == [0.0]  # the soundtrack is held
    finally:
        for handle in handles:
            handle.remove()


def test_the_23_transformer_responds_to_the_prompt_through_its_adaln(model23):
    a = generate(model23, GenerateRequest(**{**SMALL, "use_multiscale": False, "num_inference_steps": 2}))
    b = generate(model23, GenerateRequest(**{**SMALL, "use_multiscale": False, "num_inference_steps": 2,
                                             "prompt": "an empty stage, silence"}))
    assert not torch.equal(a.video_latents, b.video_latents)
    assert not torch.equal(a.audio_latents, b.audio_latents)


# ------------------------------------------------------------------------------------ the product on it

def test_two_stage_t2v_at_48k(model23):
    result = generate(model23, GenerateRequest(**SMALL))
    assert result.pipeline == "two-stage" and result.transformer_passes == 8 + 3
    assert result.frames.shape == (17, 128, 256, 3) and result.sample_rate == 48_000
    assert result.waveform.shape == (2, round(17 / 25 * 48_000))
    assert np.isfinite(result.waveform).all()


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_image_to_video_uses_the_family_crf(model23):
    from ltx2.media.conditioning_image import conditioning_pixels
    from ltx2.pipelines.conditioning import decode_conditioning
    from ltx2.pipelines.generate import image_targets

    rgb = np.tile(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], (128, 1, 3))
    image = Image.fromarray(rgb)
    buf = __import__("io").BytesIO()
    image.save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    request = GenerateRequest(**{**SMALL, "image_start": uri, "image_end": uri, "use_multiscale": False,
                                 "num_inference_steps": 2})
    targets = image_targets(model23, request)
    cond = decode_conditioning(request, model23.pipe.audio_vae.config.sample_rate, model23.vocoder_rate,
                               targets=targets)
    # Both images prepared in the sandbox with the family's CRF, exactly as this process would.
    assert targets.crf == model23.family.image_crf
    for image_ in (cond.image_start, cond.image_end):
        (size, pixels), = image_.pixels.items()
        assert pixels.equal(conditioning_pixels(rgb, *size, crf=model23.family.image_crf))
    result = generate(model23, request, conditioning=cond)
    assert result.has_image_start and result.has_image_end


def test_dev_two_stage_runs_the_23_guider_and_its_distilled_lora():
    dev = load_model("tiny-2.3", device="cpu", variant="dev")
    # The family's defaults, its STG block clamped to the tiny transformer's last (what GET / advertises)
    assert dev.defaults == replace(families.by_name("ltx-2.3").dev, stg_blocks=(1,))
    assert dev.distilled_lora_file == "tiny"
    request = GenerateRequest(**{**SMALL, "num_inference_steps": 2})
    plan_guidance = stages.resolve_guidance(dev, request)
    assert plan_guidance.stg_blocks == (1,)  # block 28 of 48 is the last one of the tiny 2-block transformer
    result = generate(dev, request)
    # Stage 1: 2 steps x 4 passes (cond, uncond, STG, modality); stage 2: 3 unguided steps with the LoRA.
    assert result.transformer_passes == 2 * 4 + 3
    assert [lora["stage"] for lora in result.loras] == ["stage2"] and result.loras[0]["path"] == "tiny"


@pytest.mark.slow
def test_server_reports_the_family_everywhere(client23):
    health = client23.get("/health").json()
    assert health["model"]["model_family"] == "ltx-2.3" and health["model"]["audio_sample_rate"] == 48_000
    assert client23.get("/", headers={"accept": "application/json"}).json()["model"]["model_family"] == "ltx-2.3"
    models = client23.get("/v1/models").json()
    assert models["object"] == "list" and {m["id"] for m in models["data"]} == {"ltx-2-fast", "tiny-2.3"}
    assert {m["model_family"] for m in models["data"]} == {"ltx-2.3"}
    answer = client23.post("/generate", json={**SMALL, "num_frames": 9})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model"], body["model_family"], body["variant"]) == ("tiny-2.3", "ltx-2.3", "distilled")
    probe = probe_video(base64.b64decode(body["video"].split(",", 1)[1]))
    assert probe["audio"]["sample_rate"] == 48_000 and probe["audio"]["channels"] == 2
    assert probe["video"]["frames"] == 9


@pytest.mark.slow
def test_handler_on_tiny_23(model23):
    from ltx2.serving.worker import make_handler

    out = make_handler(model23, send_progress=lambda job, progress: None)(
        {"id": "j23", "input": {**SMALL, "num_frames": 9}})
    assert "error" not in out, out
    assert out["model_family"] == "ltx-2.3" and out["has_audio"] is True


def test_cli_info_and_generate_on_tiny_23(tmp_path):
    info = subprocess.run([sys.executable, "-m", "ltx2.cli", "generate", "--model", "tiny-2.3", "--info"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert info.returncode == 0, info.stderr[-2000:]
    described = json.loads(info.stdout)
    assert (described["model_family"], described["variant"], described["audio_sample_rate"]) == \
        ("ltx-2.3", "distilled", 48_000)
    out = tmp_path / "fox.mp4"
    made = subprocess.run([sys.executable, "-m", "ltx2.cli", "generate", "--model", "tiny-2.3", "--prompt", "a fox",
                           "--num-frames", "9", "--width", "128", "--height", "128", "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert made.returncode == 0, made.stderr[-2000:]
    assert json.loads(made.stdout)["model_family"] == "ltx-2.3"
    assert probe_video(out.read_bytes())["audio"]["sample_rate"] == 48_000


def _tone(seconds: float, rate: int = 16_000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def _wav_uri(wave: np.ndarray, rate: int = 16_000) -> str:
    import io
    import wave as wavemod

    buf = io.BytesIO()
    with wavemod.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((wave * 32767).astype(np.int16).tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------------ LoRAs per family

def _gate_layers(model):
    from ltx2.models.lora import layer_index

    return [layer for layer in layer_index(model).modules if layer[1].endswith("attn1.to_gate_logits")]


@pytest.mark.parametrize("style", ["ltx", "kohya", "diffusers"])
def test_a_lora_for_another_family_is_a_422_before_a_tensor_is_read(model, model23, style, tmp_path, monkeypatch):
    from lora_files import attention_layers, write_lora

    from ltx2.models import lora as lora_module
    from ltx2.pipelines.loras import LoraPolicy, resolve
    from ltx2.schema import InvalidRequest

    loras = tmp_path / "loras"
    loras.mkdir()
    # A 2.3 LoRA that adapts the attention gates, which the 19B does not have, in each key style.
    write_lora(loras / "gates23.safetensors", model23, style=style,
               layers=_gate_layers(model23) + attention_layers(model23)[:2])
    reads = []
    monkeypatch.setattr(lora_module, "read_tensor", lambda *a: reads.append(a) or pytest.fail("a tensor was read"))
    policy = LoraPolicy(models_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    request = GenerateRequest(prompt="a cat", loras=[{"path": "plain.safetensors", "scale": 1.0},
                                                     {"path": "gates23.safetensors", "scale": 0.5}])
    write_lora(loras / "plain.safetensors", model, style=style, layers=attention_layers(model)[:2])
    with pytest.raises(InvalidRequest) as caught:
        resolve(model, request, policy)
    assert caught.value.field == "loras.1.path"  # the request's own field naming (loras[1])
    assert caught.value.message == ("loras.1.path: LoRA gates23.safetensors is a LoRA for LTX-2.3 22B or LTX-2.5 22B "
                                    "(it adapts to_gate_logits, which LTX-2 19B does not have); the loaded model is "
                                    "LTX-2 19B")
    assert not reads


def test_loras_of_shared_layers_fit_either_family_and_19b_only_layers_are_refused_by_23(model, model23, tmp_path):
    from lora_files import write_lora

    from ltx2.models import families as fam
    from ltx2.models.lora import layer_index
    from ltx2.pipelines.loras import LoraPolicy, resolve
    from ltx2.schema import InvalidRequest

    loras = tmp_path / "loras"
    loras.mkdir()
    ff = [layer for layer in layer_index(model23).modules if layer[1] == "transformer_blocks.0.ff.net.0.proj"]
    write_lora(loras / "shared.safetensors", model23, layers=ff)
    policy = LoraPolicy(models_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    for loaded in (model, model23):  # attention and feed-forward layers: the same in 19B and 22B
        adapters = resolve(loaded, GenerateRequest(prompt="a cat", loras=[{"path": "shared.safetensors"}]), policy)
        assert len(adapters) == 1 and list(adapters[0][0].layers) == ff
    caption = [layer for layer in layer_index(model).modules if "caption_projection" in layer[1]]
    write_lora(loras / "caption19.safetensors", model, layers=caption)
    with pytest.raises(InvalidRequest, match=r"loras.0.path: LoRA caption19.safetensors is a LoRA for LTX-2 19B "
                                             r"\(it adapts caption_projection, which LTX-2.3 22B does not have\)"):
        resolve(model23, GenerateRequest(prompt="a cat", loras=[{"path": "caption19.safetensors"}]), policy)
    assert [f.name for f in fam.lora_families(["x.to_gate_logits.lora_A.weight"])] == ["ltx-2.3", "ltx-2.5"]
    # The prompt AdaLN is 2.3's alone (2.5's prompt modulation is a static table).
    assert [f.name for f in fam.lora_families(["x.prompt_adaln_single.linear.lora_A.weight"])] == ["ltx-2.3"]
    assert [f.name for f in fam.lora_families(["x.to_gate_logits.a", "y.caption_projection.b"])] == []


# ------------------------------------------------------------------------------------ a 2.3 file, end to end

@pytest.fixture(scope="module")
def models23(tmp_path_factory):
    """A models directory as `ltx2 download --family ltx-2.3` leaves it (miniature files, official layout)."""
    import miniature

    from ltx2.models.tiny import build_text_encoder, build_tokenizer

    root = tmp_path_factory.mktemp("models23")
    modules = miniature.build_components(seed=4, family="ltx-2.3")
    miniature.round_to(modules, torch.bfloat16)
    miniature.write_checkpoint(root / "ltx-2.3-22b-dev.safetensors", modules, family="ltx-2.3")
    latent = modules["vae"].config.latent_channels
    miniature.write_upsampler(root / "ltx-2.3-spatial-upscaler-x2-1.1.safetensors",
                              config={**miniature.UPSAMPLER_CONFIG, "in_channels": latent})
    tokenizer = build_tokenizer()
    torch.manual_seed(5)
    build_text_encoder(len(tokenizer)).save_pretrained(root / "gemma", max_shard_size="200KB")
    tokenizer.save_pretrained(root / "gemma")
    return root


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_23_file_serves_with_its_familys_defaults_upsampler_and_48k_audio(models23, tmp_path):
    from ltx2.serving.app import create_app
    from ltx2.settings import Settings

    model = load_model("ltx-2.3-22b-dev", device="cpu", models_dir=str(models23), gemma_dir=str(models23 / "gemma"),
                       distilled_lora="none")
    info = model.describe()
    assert (info["model_family"], info["variant"], info["checkpoint"]["family"]) == ("ltx-2.3", "dev", "ltx-2.3")
    last = model.pipe.transformer.config.num_layers - 1  # STG block 28, clamped to a miniature's last block
    assert model.defaults == replace(families.by_name("ltx-2.3").dev, stg_blocks=(min(28, last),))
    # "auto" found the family's own upsampler file; without the distilled LoRA a dev model runs one stage.
    assert info["upsampler"] == str(models23 / "ltx-2.3-spatial-upscaler-x2-1.1.safetensors")
    settings = Settings(model="ltx-2.3-22b-dev", output_dir=str(tmp_path / "out"))
    with TestClient(create_app(settings, model=model)) as client:
        answer = client.post("/generate", json={**SMALL, "num_frames": 9, "width": 64, "height": 64,
                                                 "num_inference_steps": 2})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["model_family"], body["variant"], body["pipeline"], body["stg_blocks"]) == \
        ("ltx-2.3", "dev", "one-stage", [min(28, model.pipe.transformer.config.num_layers - 1)])
    assert body["transformer_passes"] == 2 * 4  # cond, uncond, STG, modality per step
    assert probe_video(base64.b64decode(body["video"].split(",", 1)[1]))["audio"]["sample_rate"] == 48_000


def test_a_missing_23_distilled_lora_is_named(models23):
    from ltx2.models.configs import CheckpointError

    with pytest.raises(CheckpointError, match="ltx-2.3-22b-distilled-lora-384-1.1.safetensors"):
        load_model("ltx-2.3-22b-dev", device="cpu", models_dir=str(models23), gemma_dir=str(models23 / "gemma"),
                   distilled_lora="ltx-2.3-22b-distilled-lora-384-1.1.safetensors")
