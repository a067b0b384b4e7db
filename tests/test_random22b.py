"""`random-22b`: LTX-2.5 (22B) and Gemma 4 12B at full size with random weights (ltx2.models.random22b)."""

import json
import resource
from dataclasses import replace
from pathlib import Path

import pytest

from ltx2.models import random22b
from ltx2.models.families import tiny25

LAYOUT = json.loads((Path(__file__).parent / "data" / "ltx23_22b_layout.json").read_text())


@pytest.fixture(scope="module")
def full_size():
    return random22b.build_meta(48, "bf16", "upcast")


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())  # tied parameters once


def test_the_packaged_config_is_the_22b_layouts_config():
    assert random22b.CONFIG == LAYOUT["config"]


def test_the_2_5_switches_are_the_tiny_2_5_presets():
    config = tiny25.build_transformer().config
    assert {key: config[key] for key in random22b.LTX25_SWITCHES} == random22b.LTX25_SWITCHES
    assert config["use_prompt_embeddings"] is False and config["gated_attn"] and config["cross_attn_mod"]


def test_full_size_has_the_real_parameter_counts(full_size):
    transformer, connectors = count(full_size["transformer"]), count(full_size["connectors"])
    assert 18.5e9 < transformer < 19.5e9, transformer  # bias-free video FFN, no prompt AdaLN
    assert 21.5e9 < transformer + connectors < 22.5e9  # the "22B": the 2.3 file holds both
    assert 12.0e9 < count(full_size["text_encoder"]) < 12.4e9  # Gemma 4 12B (assumed 48 layers), tied head
    gemma = full_size["text_encoder"]
    assert type(gemma).__name__ == "Gemma4UnifiedForConditionalGeneration"
    assert gemma.lm_head.weight is gemma.model.language_model.embed_tokens.weight
    assert gemma.config.text_config.hidden_size == 3840 and gemma.config.text_config.num_hidden_layers == 48
    assert len(full_size["transformer"].transformer_blocks) == 48
    assert full_size["transformer"].config.use_prompt_adaln_single is False
    assert full_size["transformer"].config.ff_bias is False
    assert full_size["connectors"].config.per_modality_projections
    assert full_size["connectors"].video_text_proj_in.weight.shape == (4096, 49 * 3840)
    assert full_size["connectors"].audio_text_proj_in.weight.shape == (2048, 49 * 3840)
    assert full_size["vocoder"].config.output_sampling_rate == 48_000
    assert full_size["duration_head"].config.video_cross_attention_dim == 4096
    assert full_size["diffusion_decoder"].config.decoder_stage_channels == (2048, 1024, 512, 512, 256)
    assert all(p.is_meta for m in full_size.values() for p in m.parameters())
    assert not any(m.__class__.__name__ == "FP8Linear" for m in full_size["transformer"].modules())  # bf16 files


def test_full_size_matches_the_22b_files_tensor_shapes(full_size):
    """Transformer and connectors: the tensors of the official 2.3 22B file (2.5 shares its sizes)."""
    from ltx2.models.layout import file_key

    shapes = LAYOUT["tensors"]
    checked = 0
    for name in ("transformer", "connectors"):
        for key, tensor in full_size[name].state_dict(keep_vars=True).items():
            if (file := file_key(name, key)) in shapes:
                assert list(tensor.shape) == shapes[file], file
                checked += 1
    assert checked > 4000


def test_fewer_layers_keep_the_widths_and_fp8_blocks_are_one_switch():
    small = random22b.build_meta(2, "bf16", "upcast", fp8_blocks=True)
    assert len(small["transformer"].transformer_blocks) == 2
    assert small["transformer"].transformer_blocks[1].attn1.to_q.weight.shape == (4096, 4096)
    assert type(small["transformer"].transformer_blocks[1].ff.net[2]).__name__ == "FP8Linear"
    assert len(small["connectors"].video_connector.transformer_blocks) == 2  # up to its 8
    assert small["connectors"].video_text_proj_in.weight.shape == (4096, 3 * 3840)
    with pytest.raises(ValueError, match="--layers .* random-22b"):
        random22b.build_meta(49)


@pytest.mark.bigmem  # ~8 GB of full-width weights in this process: `python -m pytest -q -m bigmem`
def test_random_22b_with_1_layer_loads_every_part_at_full_width():
    """Full widths, 1 transformer block, 1 Gemma 4 layer and 1 connector layer, bf16: every part in place.

    It is not run through a generation here: at full width and bf16 a CPU without bf16 matmuls needs
    minutes for one prompt (about 50 s a Gemma layer). The same code path runs on `tiny-2.5` (test_ltx25.py),
    and `bench/gpu.py --model random-22b` runs it on a GPU."""
    from ltx2 import load_model

    model = load_model("random-22b", device="cpu", layers=1, upsampler="none", vae_decoder="conv")
    described = model.describe()
    assert described["model_family"] == "ltx-2.5" and described["name"] == "random-22b"
    assert model.checkpoint["family"] == "ltx-2.5" and model.checkpoint["layers"] == 1
    assert model.duration_head is not None and model.video_decoder == "conv"
    # The family's distilled defaults, its STG block clamped to the one block loaded (what GET / advertises)
    assert model.vocoder_rate == 48_000 and model.defaults == replace(model.family.distilled, stg_blocks=(0,))
    assert described["dtypes"]["transformer"] == "bfloat16"
    assert model.pipe.transformer.config.num_layers == 1 and model.pipe.transformer.config.cross_attention_dim == 4096
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    assert rss_gb < 14, rss_gb  # ~8 GB of full-width weights (Gemma's 262k embedding, the VAE, 1 block)
