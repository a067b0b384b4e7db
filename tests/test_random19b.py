"""`random-19b`: LTX-2 19B and Gemma 3 12B at full size with random weights (ltx2.models.random19b)."""

import base64
import json
from pathlib import Path

import httpx
import pytest
import torch
from servers import start_server, stop_server

from ltx2.media.encode import probe_mp4
from ltx2.models import random19b
from ltx2.models.fp8 import FP8Linear
from ltx2.settings import Settings

LAYOUT = json.loads((Path(__file__).parent / "data" / "ltx2_19b_layout.json").read_text())


@pytest.fixture(scope="module")
def full_size():
    return random19b.build_meta(48, "bf16", "upcast")


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())  # tied parameters once


def test_the_packaged_config_is_the_loaders_19b_config():
    assert random19b.CONFIG == LAYOUT["config"]


def test_full_size_has_the_real_parameter_counts(full_size):
    transformer = count(full_size["transformer"])
    gemma = count(full_size["text_encoder"])
    assert 18.5e9 < transformer < 19.5e9, transformer  # the "19B"
    assert 12.0e9 < gemma < 12.4e9, gemma  # Gemma 3 12B, its output head tied to the embedding
    assert full_size["text_encoder"].lm_head.weight is full_size["text_encoder"].model.language_model.embed_tokens.weight
    assert len(full_size["transformer"].transformer_blocks) == 48
    assert full_size["text_encoder"].config.text_config.num_hidden_layers == 48
    # Every tensor is on meta: building it costs no memory.
    assert all(p.is_meta for m in full_size.values() for p in m.parameters())


def test_full_size_matches_the_official_files_tensor_shapes(full_size):
    """The transformer's tensors are those of the official 19B file (the loader's name mapping)."""
    from ltx2.models.layout import file_key

    shapes = LAYOUT["tensors"]
    checked = 0
    for key, tensor in full_size["transformer"].state_dict(keep_vars=True).items():
        name = file_key("transformer", key)
        if name in shapes:
            assert list(tensor.shape) == shapes[name], name
            checked += 1
    assert checked > 3000


def test_fp8_layers_are_the_block_linears_of_blocks_1_to_42(full_size):
    transformer = full_size["transformer"]
    fp8_by_block: dict[int, int] = {}
    for name, module in transformer.named_modules():
        if isinstance(module, FP8Linear):
            assert name.startswith("transformer_blocks."), name  # nothing outside the blocks
            block = int(name.split(".")[1])
            fp8_by_block[block] = fp8_by_block.get(block, 0) + 1
            assert module.weight.dtype == torch.float8_e4m3fn and module.input_scale is not None
    assert sorted(fp8_by_block) == list(range(1, 43))
    # Every attention's q/k/v/out (six attentions) and both feed-forwards' two linears.
    assert set(fp8_by_block.values()) == {6 * 4 + 2 * 2}
    plain = [n for n, m in transformer.transformer_blocks[0].named_modules() if type(m) is torch.nn.Linear]
    assert len(plain) == 28
    fp8_bytes = sum(m.weight.numel() for m in transformer.modules() if isinstance(m, FP8Linear))
    assert 15.5e9 < fp8_bytes < 17e9


def test_fewer_layers_keep_the_widths_and_fp8_in_block_1():
    small = random19b.build_meta(2, "bf16", "upcast")
    transformer = small["transformer"]
    assert len(transformer.transformer_blocks) == 2
    assert transformer.transformer_blocks[1].attn1.to_q.weight.shape == (4096, 4096)
    assert isinstance(transformer.transformer_blocks[1].ff.net[2], FP8Linear)
    assert not isinstance(transformer.transformer_blocks[0].ff.net[2], FP8Linear)
    # The connectors read Gemma's 2 layers + the embeddings, at Gemma's width.
    assert small["connectors"].text_proj_in.weight.shape == (3840, 3 * 3840)
    with pytest.raises(ValueError, match="--layers"):
        random19b.build_meta(0)


def test_fp8_text_encoder_on_meta_halves_its_linears():
    model = random19b.build_meta(2, "fp8", "upcast")["text_encoder"]
    quantized = [m for m in model.modules() if isinstance(m, FP8Linear)]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down per layer
    assert all(m.input_scale is None for m in quantized)  # no calibration data: scale per batch


def test_layers_only_for_random_19b():
    from ltx2 import load_model

    with pytest.raises(ValueError, match="--layers"):
        load_model("tiny", device="cpu", layers=2)
    assert Settings.from_env({"LTX2_LAYERS": "2"}).layers == 2


@pytest.mark.bigmem  # ~9.7 GB of full-width weights in the server: `python -m pytest -q -m bigmem`
def test_random_19b_with_2_layers_serves_through_the_server(tmp_path):
    """Full widths, 2 transformer blocks and 2 Gemma layers, bf16 with FP8 blocks, on the CPU.

    2 layers is the fewest that hold an FP8 block (blocks 1-42 are FP8, block 0 is not). The weights
    that make the ~9.7 GB do not shrink with layers (Gemma's 262k-row embedding, the VAE, the
    connectors), so this cannot fit the default run's 4 GB; it is the `bigmem` step."""
    proc, base = start_server(tmp_path / "out", tmp_path / "server.log", "--model", "random-19b", "--layers", "2",
                              timeout=900)
    try:
        health = httpx.get(f"{base}/health", timeout=30).json()
        model = health["model"]
        assert model["name"] == "random-19b"
        assert model["checkpoint"]["format"] == "random" and model["checkpoint"]["layers"] == 2
        assert model["checkpoint"]["fp8_layers"] == 28
        assert model["dtypes"]["transformer"] == "bfloat16+float32+float8_e4m3fn"
        assert model["memory"]["weights_bytes"] > 8e9  # full widths: ~9.7 GB even at 2 layers
        assert model["attention"]["backend"] == "sdpa" and model["compile"]["enabled"] is False
        assert model["text_encoder_dtype"]["dtype"] == model["dtypes"]["text_encoder"] == "bfloat16"
        assert model["upsampler"] == "random-19b"  # a random x2 upsampler at the official size: two-stage runs
        r = httpx.post(f"{base}/generate", json={"prompt": "a red fox in snow", "width": 64, "height": 64,
                                                 "num_frames": 9, "num_inference_steps": 1, "seed": 5}, timeout=900)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["model"] == "random-19b" and body["num_inference_steps"] == 1
        assert body["pipeline"] == "two-stage" and body["transformer_passes"] == 1 + 3
        info = probe_mp4(base64.b64decode(body["video"].split(",", 1)[1]))
        assert info["video"]["frames"] == 9 and info["audio"]["channels"] == 2
    finally:
        stop_server(proc)
