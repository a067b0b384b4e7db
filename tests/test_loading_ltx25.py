"""LTX-2.5's split layout (ltx2.models.split) against a miniature LTX-2.5 directory in the official layout."""

from __future__ import annotations

import json
import shutil

import miniature
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_loading import rel_err, run_audio_decode, run_connectors, run_vae_decode, run_vocoder
from test_loading_ltx23 import run_transformer

from ltx2.models import configs, loading, split
from ltx2.models.configs import CheckpointError
from ltx2.models.families.tiny25 import WindowedNeighborhoodAttnProcessor


@pytest.fixture(scope="module")
def source():
    modules = miniature.build_components_25(seed=7)
    miniature.round_to(modules, torch.bfloat16)  # a bf16 file holds exactly these values
    return modules


@pytest.fixture(scope="module")
def root(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("ltx25")
    miniature.write_ltx25(path, source)
    return path


def copy_root(root, tmp_path):
    shutil.copytree(root, tmp_path / "m")
    return tmp_path / "m"


def run_text_encoder(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 200, (1, 9), generator=gen)
    with torch.no_grad():
        out = module(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
    return torch.cat([h.flatten() for h in out.hidden_states])


def run_diffusion_decoder(module, seed=0):
    for attn in module.modules():
        if type(attn).__name__ == "LTX2VideoVaeNeighborhoodAttention":
            attn.set_processor(WindowedNeighborhoodAttnProcessor())
    latents = torch.randn(1, module.config.latent_channels, 2, 3, 3, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return module.decode(latents, generator=torch.Generator().manual_seed(seed + 1), return_dict=False)[0]


def run_duration_head(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    cfg = module.config
    video = torch.randn(1, 5, cfg.video_cross_attention_dim, generator=gen)
    audio = torch.randn(1, 5, cfg.audio_cross_attention_dim, generator=gen)
    with torch.no_grad():
        return module(video, audio)


RUNNERS = {"transformer": run_transformer, "connectors": run_connectors, "vae": run_vae_decode,
           "audio_vae": run_audio_decode, "vocoder": run_vocoder, "text_encoder": run_text_encoder,
           "diffusion_decoder": run_diffusion_decoder, "duration_head": run_duration_head}


def test_a_directory_loads_strictly_and_reproduces_every_component(source, root):
    loaded, report = loading.load_split(str(root), dtype=torch.float32)
    assert (report["family"], report["kind"], report["format"]) == ("ltx-2.5", "distilled", "split")
    assert report["gemma_version"] == miniature.GEMMA_VERSION and report["tokenizer"] == "embedded"
    assert report["video_decoders"] == ["diffusion", "conv"]
    for name, run in RUNNERS.items():
        want = run(source[name])
        assert want.abs().max() > 0, name
        got = run(loaded[name])
        assert rel_err(got, want) < 1e-5, name
    te = loaded["text_encoder"]
    assert te.lm_head.weight.data_ptr() == te.model.language_model.embed_tokens.weight.data_ptr()  # tied, stored once
    from ltx2.models import tiny

    prompt = "a cat walks on the beach"
    assert loaded["tokenizer"](prompt).input_ids == tiny.build_tokenizer()(prompt).input_ids
    assert loaded["tokenizer"].padding_side == "left"


def test_family_is_read_from_metadata_not_names(root, tmp_path):
    header = split.read_header(str(root / miniature.LTX25_FILES["transformer"]))
    meta = split.transformer_metadata(header)
    assert configs.detect_family(meta["config"], "x", meta) == "ltx-2.5" == configs.LTX25
    assert configs.detect_family(meta["config"], "x") == "ltx-2.5"  # ff_bias false alone says it
    # Renamed files, same content: the same roles.
    m = copy_root(root, tmp_path)
    for part, rel in miniature.LTX25_FILES.items():
        src = m / rel
        src.rename(src.with_name(f"part-{part}.safetensors"))
    files = split.resolve_files(str(m), variant="distilled")
    assert files.diffusion_vae.endswith("part-diffusion_vae.safetensors")
    assert files.conv_vae.endswith("part-conv_vae.safetensors")
    assert files.duration_head.endswith("part-duration_head.safetensors")


def test_a_transformer_file_finds_its_siblings_and_overrides_win(root, tmp_path):
    files = split.resolve_files(str(root / miniature.LTX25_FILES["transformer"]))
    assert files.text_encoder == str(root / miniature.LTX25_FILES["text_encoder"])
    other = tmp_path / "elsewhere.safetensors"
    shutil.copy(root / miniature.LTX25_FILES["audio_vae"], other)
    files = split.resolve_files(str(root), {"audio_vae": str(other), "video_vae": str(root / miniature.LTX25_FILES["conv_vae"])})
    assert files.audio_vae == str(other)


def test_only_the_diffusion_vae_file(source, root, tmp_path):
    m = copy_root(root, tmp_path)
    (m / miniature.LTX25_FILES["conv_vae"]).unlink()
    loaded, report = loading.load_split(str(m), dtype=torch.float32)
    assert report["video_decoders"] == ["diffusion"]
    # The VAE's encoder and statistics come from the diffusion VAE file; it cannot decode.
    video = torch.randn(1, 3, 9, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = source["vae"].encode(video).latent_dist.mean
        got = loaded["vae"].encode(video).latent_dist.mean
    assert rel_err(got, want) < 1e-5
    with pytest.raises(RuntimeError, match="without the convolutional VAE file"):
        loaded["vae"].decode(want)


def test_a_gated_distilled_diffusion_decoder_is_folded(source, tmp_path):
    miniature.write_ltx25(tmp_path, source, gates=True)
    loaded, _ = loading.load_split(str(tmp_path), dtype=torch.float32)
    assert rel_err(run_diffusion_decoder(loaded["diffusion_decoder"]), run_diffusion_decoder(source["diffusion_decoder"])) < 1e-5


def _one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def test_missing_text_encoder_is_refused(root, tmp_path):
    m = copy_root(root, tmp_path)
    (m / miniature.LTX25_FILES["text_encoder"]).unlink()
    with pytest.raises(CheckpointError) as info:
        loading.load_split(str(m))
    assert "lacks its text_encoder file" in _one_line(info) and "text_encoders" in str(info.value)


def test_wrong_gemma_version_is_refused(source, tmp_path):
    miniature.write_ltx25(tmp_path, source, gemma_version="gemma4-12b-it")
    with pytest.raises(CheckpointError) as info:
        loading.load_split(str(tmp_path))
    message = _one_line(info)
    assert "'gemma4-12b-it'" in message and "'gemma4-12b-ltx-v1'" in message and "gemma4-12b-with-proj" in message


def test_a_transformer_that_declares_no_gemma_is_refused(source, tmp_path):
    miniature.write_ltx25(tmp_path, source, declared_version=None)
    with pytest.raises(CheckpointError, match="must declare gemma_source_checkpoint.gemma_version") as info:
        loading.load_split(str(tmp_path))
    _one_line(info)


def test_a_23_transformer_with_25_parts_is_refused(root, tmp_path):
    m = copy_root(root, tmp_path)
    modules = miniature.build_components(family="ltx-2.3", seed=1)
    tensors = {k: v for k, v in miniature.official_tensors(modules).items() if k.startswith("model.diffusion_model.")}
    path = m / miniature.LTX25_FILES["transformer"]
    save_file(tensors, str(path), metadata={"config": json.dumps({"transformer": miniature.MINI_CONFIG_23["transformer"]})})
    with pytest.raises(CheckpointError) as info:
        loading.load_split(str(m))
    message = _one_line(info)
    assert "an ltx-2.3 transformer, given with LTX-2.5 parts" in message and "gemma4-12b-with-proj" in message


def test_an_unknown_extra_tensor_is_refused(source, tmp_path):
    miniature.write_ltx25(tmp_path, source, extra={"audio_vae": {"vocoder.surprise": torch.zeros(2)}})
    with pytest.raises(CheckpointError) as info:
        loading.load_split(str(tmp_path))
    message = _one_line(info)
    assert "ltx-2.5-audio-vae-bf16.safetensors: 1 tensor(s) no component owns: vocoder.surprise" in message


def test_a_missing_tensor_is_refused(root, tmp_path):
    m = copy_root(root, tmp_path)
    path = m / miniature.LTX25_FILES["duration_head"]
    tensors = load_file(str(path))
    del tensors["duration_head.mlp_out.bias"]
    save_file(tensors, str(path), metadata={"config": json.dumps({"duration_head": {"num_pooler_heads": 2}})})
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) missing: duration_head\.mlp_out\.bias") as info:
        loading.load_split(str(m))
    _one_line(info)


def test_a_single_file_23_config_with_one_later_key_is_still_refused_as_23():
    config = json.loads(json.dumps(miniature.MINI_CONFIG_23))
    config["transformer"]["use_prompt_adaln_single"] = False
    with pytest.raises(CheckpointError, match="no known LTX-2 variant"):
        configs.detect_family(config, "x")
    config["transformer"]["ff_bias"] = False  # now 2.5's
    assert configs.detect_family(config, "x") == "ltx-2.5"
    lacking = json.loads(json.dumps(miniature.MINI_CONFIG["transformer"]))
    lacking["ff_bias"] = False
    with pytest.raises(CheckpointError, match="config mixes LTX-2.5 and older parts"):
        configs.detect_family({"transformer": lacking}, "x")


def test_load_model_fills_extras(root):
    from ltx2.models.loaded import load_model

    model = load_model(str(root), device="cpu", upsampler="none", distilled_lora="none", compile="off")
    assert model.family.name == "ltx-2.5" and model.checkpoint["format"] == "split"
    assert model.diffusion_decoder is not None and model.duration_head is not None
    assert model.video_decoder == "diffusion"
