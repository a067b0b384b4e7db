"""Our mapping against the official LTX-2.3 (22B) file's tensor names and shapes, at full size.

tests/data/ltx23_22b_layout.json lists every tensor of the 2.3 single file, produced by building
Lightricks' reference modules (ltx-core) on the meta device from the 2.3 config
(tools/official_layout_ltx23.py). As for the 19B (tests/test_layout.py): the diffusers components that
config translates to, built on meta and renamed with `layout.file_key`, must give exactly that list.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ltx2.models import configs, layout, loading, safetensors_io

DATA = json.loads((Path(__file__).parent / "data" / "ltx23_22b_layout.json").read_text())
GEMMA_12B = DATA["source"]["config_provenance"]["gemma_text"]  # hidden 3840, 48 layers


def header(config: dict, name: str = "ltx-2.3-22b-dev.safetensors") -> safetensors_io.Header:
    t = config["transformer"]
    width = GEMMA_12B["hidden_size"] * (GEMMA_12B["num_hidden_layers"] + 1)
    projection = safetensors_io.TensorInfo("BF16", (t["num_attention_heads"] * t["attention_head_dim"], width), 0, 0)
    return safetensors_io.Header(name, {"text_embedding_projection.video_aggregate_embed.weight": projection},
                                 {"config": json.dumps(config)})


@pytest.fixture(scope="module")
def built():
    cfgs = loading.component_configs(header(DATA["config"]))
    return cfgs, {name: loading.build_empty(name, cfg) for name, cfg in cfgs.items()}


@pytest.fixture(scope="module")
def mapped(built):
    cfgs, modules = built
    num_down = len(cfgs["vae"]["block_out_channels"])
    return {layout.file_key(name, key, num_down): list(t.shape)
            for name, module in modules.items() for key, t in module.state_dict().items()}


def test_the_config_is_ltx23():
    assert configs.detect_family(DATA["config"], "x") == "ltx-2.3" == configs.LTX23


def test_every_official_tensor_has_an_owner_with_its_shape(mapped):
    official = DATA["tensors"]
    assert len(official) == 5947
    missing = sorted(set(official) - set(mapped))
    extra = sorted(set(mapped) - set(official))
    assert not missing, f"official tensors nothing maps to: {missing[:10]}"
    assert not extra, f"diffusers parameters with no official tensor: {extra[:10]}"
    wrong = {k: (mapped[k], official[k]) for k in official if mapped[k] != official[k]}
    assert not wrong, f"shape mismatches (ours, official): {dict(list(wrong.items())[:10])}"


def test_each_file_tensor_has_exactly_one_owner(built):
    cfgs, modules = built
    num_down = len(cfgs["vae"]["block_out_channels"])
    owners: dict[str, list] = {}
    for name, module in modules.items():
        for key in module.state_dict():
            owners.setdefault(layout.file_key(name, key, num_down), []).append((name, key))
    assert {k: v for k, v in owners.items() if len(v) > 1} == {}
    for key in owners:
        assert layout.component_of(key) == owners[key][0][0], key


def test_the_components_are_the_2_3_ones(built):
    cfgs, modules = built
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    assert isinstance(modules["vocoder"], LTX2VocoderWithBWE)
    assert modules["vocoder"].config.output_sampling_rate == 48000
    assert not modules["vocoder"].resampler.filter.is_meta  # computed, not in the file
    t = modules["transformer"]
    assert not hasattr(t, "caption_projection") and hasattr(t, "prompt_adaln")
    assert t.transformer_blocks[0].attn1.to_gate_logits is not None
    assert t.transformer_blocks[0].audio_to_video_attn.to_gate_logits is not None
    assert hasattr(modules["connectors"], "video_text_proj_in") and not hasattr(modules["connectors"], "text_proj_in")


def test_real_config_translates_to_the_published_diffusers_configs():
    """Values the shapes cannot show, against diffusers' own '2.3' conversion configs
    (scripts/convert_ltx2_to_diffusers.py) and ltx-core's configurators."""
    cfgs = loading.component_configs(header(DATA["config"]))
    t, c, v, voc = (cfgs[n] for n in ("transformer", "connectors", "vae", "vocoder"))
    assert (t["gated_attn"], t["audio_gated_attn"], t["cross_attn_mod"], t["audio_cross_attn_mod"]) == (True,) * 4
    assert t["use_prompt_embeddings"] is False
    assert (t["rope_type"], t["rope_double_precision"], t["causal_offset"]) == ("split", True, 1)
    assert (t["timestep_scale_multiplier"], t["cross_attn_timestep_scale_multiplier"]) == (1000, 1000)
    assert (c["per_modality_projections"], c["proj_bias"], c["video_hidden_dim"], c["audio_hidden_dim"]) == (
        True, True, 4096, 2048)
    assert (c["video_gated_attn"], c["audio_gated_attn"], c["text_proj_in_factor"]) == (True, True, 49)
    assert (c["video_connector_num_layers"], c["audio_connector_num_layers"]) == (8, 8)
    assert (c["audio_connector_num_attention_heads"], c["audio_connector_attention_head_dim"]) == (32, 64)
    # diffusers' 2.3 converter lists upsample_type latent side first, every other decoder tuple output side first.
    assert v["upsample_type"] == ("spatiotemporal", "spatiotemporal", "temporal", "spatial")
    assert (v["upsample_factor"], v["upsample_residual"]) == ((2, 2, 1, 2), (False,) * 4)
    assert (v["block_out_channels"], v["decoder_block_out_channels"]) == ((256, 512, 1024, 1024), (256, 512, 512, 1024))
    assert (v["layers_per_block"], v["decoder_layers_per_block"]) == ((4, 6, 4, 2, 2), (4, 6, 4, 2, 2))
    assert (v["decoder_spatial_padding_mode"], v["encoder_spatial_padding_mode"], v["timestep_conditioning"]) == (
        "zeros", "zeros", False)
    assert (voc["act_fn"], voc["antialias"], voc["bwe_act_fn"], voc["hidden_channels"], voc["bwe_hidden_channels"]) == (
        "snakebeta", True, "snakebeta", 1536, 512)
    # ltx-core: the vocoder clamps its output (use_tanh_at_final false), the BWE generator has no final
    # activation; its sum with the resampled waveform is clamped by the forward.
    assert (voc["final_act_fn"], voc["bwe_final_act_fn"], voc["final_bias"], voc["bwe_final_bias"]) == (
        "clamp", None, False, False)
    assert (voc["filter_length"], voc["hop_length"], voc["window_length"], voc["num_mel_channels"]) == (512, 80, 512, 64)
    assert (voc["input_sampling_rate"], voc["output_sampling_rate"], voc["in_channels"], voc["bwe_in_channels"]) == (
        16000, 48000, 128, 128)


def test_every_tensor_goes_to_the_parameter_the_reference_naming_says(built):
    """Names and shapes alone allow two same-shaped tensors to be swapped (the two text projections' inputs,
    the prompt AdaLNs, the vocoder's two generators' like-named parts): the independent naming of
    tests/miniature.py must send every official tensor to the very parameter our mapping does."""
    import miniature

    cfgs, modules = built
    num_down = len(cfgs["vae"]["block_out_channels"])
    for name, module in modules.items():
        wrong = {}
        for k in module.state_dict():
            ours = layout.file_key(name, k, num_down)
            if miniature.reference_key(name, ours) != k:
                wrong[k] = (ours, miniature.reference_key(name, ours))
        assert not wrong, f"{name}: parameter -> (our file name, where the reference sends it): {list(wrong.items())[:5]}"


@pytest.mark.parametrize(("component", "key", "official"), [
    ("transformer", "prompt_adaln.linear.weight", "model.diffusion_model.prompt_adaln_single.linear.weight"),
    ("transformer", "audio_prompt_adaln.linear.bias", "model.diffusion_model.audio_prompt_adaln_single.linear.bias"),
    ("transformer", "transformer_blocks.5.prompt_scale_shift_table",
     "model.diffusion_model.transformer_blocks.5.prompt_scale_shift_table"),
    ("transformer", "transformer_blocks.5.audio_prompt_scale_shift_table",
     "model.diffusion_model.transformer_blocks.5.audio_prompt_scale_shift_table"),
    ("transformer", "transformer_blocks.2.video_to_audio_attn.to_gate_logits.weight",
     "model.diffusion_model.transformer_blocks.2.video_to_audio_attn.to_gate_logits.weight"),
    ("connectors", "video_text_proj_in.weight", "text_embedding_projection.video_aggregate_embed.weight"),
    ("connectors", "audio_text_proj_in.bias", "text_embedding_projection.audio_aggregate_embed.bias"),
    ("connectors", "audio_connector.transformer_blocks.7.attn1.to_gate_logits.weight",
     "model.diffusion_model.audio_embeddings_connector.transformer_1d_blocks.7.attn1.to_gate_logits.weight"),
    ("vocoder", "vocoder.upsamplers.0.weight", "vocoder.vocoder.ups.0.weight"),
    ("vocoder", "bwe_generator.upsamplers.0.weight", "vocoder.bwe_generator.ups.0.weight"),
    ("vocoder", "vocoder.act_out.act.beta", "vocoder.vocoder.act_post.act.beta"),
    ("vocoder", "bwe_generator.resnets.4.acts2.1.downsample.filter",
     "vocoder.bwe_generator.resblocks.4.acts2.1.downsample.lowpass.filter"),
    ("vocoder", "vocoder.resnets.0.acts1.0.upsample.filter", "vocoder.vocoder.resblocks.0.acts1.0.upsample.filter"),
    ("vocoder", "mel_stft.stft_fn.forward_basis", "vocoder.mel_stft.stft_fn.forward_basis"),
    ("vocoder", "mel_stft.mel_basis", "vocoder.mel_stft.mel_basis"),
    ("vae", "decoder.up_blocks.3.upsamplers.0.conv.conv.weight", "vae.decoder.up_blocks.7.conv.conv.weight"),
    ("vae", "decoder.up_blocks.3.resnets.1.conv1.conv.weight", "vae.decoder.up_blocks.8.res_blocks.1.conv1.conv.weight"),
])
def test_swap_prone_names_written_out(component, key, official):
    assert official in DATA["tensors"]
    assert layout.file_key(component, key) == official


def test_the_files_extra_tensors_are_the_known_unused_ones():
    assert set(DATA["extra_file_tensors"]["tensors"]) == set(layout.KNOWN_UNUSED)


def test_the_vocoder_loads_in_float32_from_a_meta_build(built):
    """The resampler's filter (no file tensor) must not be left on meta: the loader's own check."""
    _, modules = built
    left = [n for n, b in modules["vocoder"].named_buffers() if b.is_meta and n.startswith("resampler")]
    assert left == [] and modules["vocoder"].resampler.filter.dtype == torch.float32
