"""Our mapping against the real LTX-2 19B file's tensor names and shapes, at full size.

tests/data/ltx2_19b_layout.json lists every tensor of the official single file, produced by
building Lightricks' reference modules (ltx-core) on the meta device from the file's config
(tools/official_layout.py says how). Here the diffusers components that config translates to are
built on the meta device too (no memory), renamed with `ltx2.models.layout.file_key`, and must give
exactly that list: same names, same shapes, nothing left over either way.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ltx2.models import layout, loading, safetensors_io

DATA = json.loads((Path(__file__).parent / "data" / "ltx2_19b_layout.json").read_text())
GEMMA_12B = DATA["source"]["config_provenance"]["gemma_text"]  # hidden 3840, 48 layers


def header(config: dict) -> safetensors_io.Header:
    caption = GEMMA_12B["hidden_size"]
    projection = safetensors_io.TensorInfo("BF16", (caption, caption * (GEMMA_12B["num_hidden_layers"] + 1)), 0, 0)
    return safetensors_io.Header("ltx-2-19b-dev.safetensors", {"text_embedding_projection.aggregate_embed.weight": projection},
                          {"config": json.dumps(config)})


def mapped_layout(config: dict) -> dict[str, list[int]]:
    cfgs = loading.component_configs(header(config))
    num_down = len(cfgs["vae"]["block_out_channels"])
    out = {}
    for name, cfg in cfgs.items():
        module = loading.build_empty(name, cfg)
        for key, tensor in module.state_dict().items():
            out[layout.file_key(name, key, num_down)] = list(tensor.shape)
    return out


@pytest.fixture(scope="module")
def mapped():
    return mapped_layout(DATA["config"])


def test_every_official_tensor_has_an_owner_with_its_shape(mapped):
    official = DATA["tensors"]
    assert len(official) == 4049
    missing = sorted(set(official) - set(mapped))
    extra = sorted(set(mapped) - set(official))
    assert not missing, f"official tensors nothing maps to: {missing[:10]}"
    assert not extra, f"diffusers parameters with no official tensor: {extra[:10]}"
    wrong = {k: (mapped[k], official[k]) for k in official if mapped[k] != official[k]}
    assert not wrong, f"shape mismatches (ours, official): {dict(list(wrong.items())[:10])}"


def test_the_files_extra_tensors_are_the_known_unused_ones():
    assert set(DATA["extra_file_tensors"]["tensors"]) == set(layout.KNOWN_UNUSED)


def test_timestep_conditioned_vae_decoder_maps_too():
    """Whether the 19B VAE decoder is timestep-conditioned is not public; both layouts must load."""
    config = copy.deepcopy(DATA["config"])
    config["vae"]["timestep_conditioning"] = True
    mapped = mapped_layout(config)
    expected = {**DATA["tensors"], **DATA["vae_decoder_timestep_conditioning"]["tensors"]}
    assert set(mapped) == set(expected)
    assert all(mapped[k] == expected[k] for k in expected)


def test_real_config_translates_to_the_published_diffusers_configs():
    """Values the shapes cannot show, against diffusers' own LTX-2 (2.0) conversion configs."""
    cfgs = loading.component_configs(header(DATA["config"]))
    t, c, v, a, voc = (cfgs[n] for n in ("transformer", "connectors", "vae", "audio_vae", "vocoder"))
    assert (t["rope_type"], t["rope_double_precision"], t["causal_offset"]) == ("split", True, 1)
    assert (t["timestep_scale_multiplier"], t["cross_attn_timestep_scale_multiplier"]) == (1000, 1000)
    assert (t["pos_embed_max_pos"], t["base_height"], t["base_width"], t["audio_pos_embed_max_pos"]) == (20, 2048, 2048, 20)
    assert (t["vae_scale_factors"], t["audio_scale_factor"], t["audio_sampling_rate"], t["audio_hop_length"]) == (
        (8, 32, 32), 4, 16000, 160)
    assert (t["qk_norm"], t["norm_eps"], t["activation_fn"]) == ("rms_norm_across_heads", 1e-6, "gelu-approximate")
    assert (c["text_proj_in_factor"], c["connector_rope_base_seq_len"], c["causal_temporal_positioning"]) == (49, 4096, False)
    assert (c["video_connector_num_attention_heads"], c["video_connector_attention_head_dim"]) == (30, 128)
    assert (v["spatial_compression_ratio"], v["temporal_compression_ratio"]) == (32, 8)
    assert v["downsample_type"] == ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
    assert v["upsample_type"] == ("spatiotemporal",) * 3 and v["upsample_residual"] == (True,) * 3
    assert (v["decoder_spatial_padding_mode"], v["encoder_spatial_padding_mode"], v["decoder_causal"]) == (
        "reflect", "zeros", False)
    assert (a["sample_rate"], a["mel_hop_length"], a["mel_bins"], a["is_causal"], a["latent_channels"]) == (
        16000, 160, 64, True, 8)
    assert (voc["act_fn"], voc["final_act_fn"], voc["output_sampling_rate"], voc["in_channels"]) == (
        "leaky_relu", "tanh", 24000, 128)


def test_every_tensor_goes_to_the_parameter_the_reference_naming_says(mapped):
    """Same names and shapes (above) still allow two same-shaped tensors to be swapped (q_norm / k_norm,
    the latent mean / std, the a2v / v2a gates). diffusers' own single-file converters (transformer and
    both VAEs) and ltx-core's module names (connectors, vocoder; tests/miniature.py) must send every
    official tensor to the very parameter our mapping does."""
    import miniature

    cfgs = loading.component_configs(header(DATA["config"]))
    num_down = len(cfgs["vae"]["block_out_channels"])
    for name, cfg in cfgs.items():
        keys = loading.build_empty(name, cfg).state_dict()
        wrong = {k: (layout.file_key(name, k, num_down), miniature.reference_key(name, layout.file_key(name, k, num_down)))
                 for k in keys if miniature.reference_key(name, layout.file_key(name, k, num_down)) != k}
        assert not wrong, f"{name}: parameter -> (our file name, where the reference sends it): {dict(list(wrong.items())[:5])}"


@pytest.mark.parametrize(("component", "key", "official"), [
    # Pairs of same-shaped tensors, written out from ltx-core's module names.
    ("vae", "latents_mean", "vae.per_channel_statistics.mean-of-means"),
    ("vae", "latents_std", "vae.per_channel_statistics.std-of-means"),
    ("audio_vae", "latents_mean", "audio_vae.per_channel_statistics.mean-of-means"),
    ("audio_vae", "latents_std", "audio_vae.per_channel_statistics.std-of-means"),
    ("transformer", "transformer_blocks.3.attn1.norm_q.weight", "model.diffusion_model.transformer_blocks.3.attn1.q_norm.weight"),
    ("transformer", "transformer_blocks.3.attn1.norm_k.weight", "model.diffusion_model.transformer_blocks.3.attn1.k_norm.weight"),
    ("transformer", "av_cross_attn_video_a2v_gate.linear.weight", "model.diffusion_model.av_ca_a2v_gate_adaln_single.linear.weight"),
    ("transformer", "av_cross_attn_audio_v2a_gate.linear.weight", "model.diffusion_model.av_ca_v2a_gate_adaln_single.linear.weight"),
    ("transformer", "time_embed.linear.weight", "model.diffusion_model.adaln_single.linear.weight"),
    ("transformer", "audio_time_embed.linear.weight", "model.diffusion_model.audio_adaln_single.linear.weight"),
    ("connectors", "video_connector.transformer_blocks.1.attn1.norm_k.weight",
     "model.diffusion_model.video_embeddings_connector.transformer_1d_blocks.1.attn1.k_norm.weight"),
    ("connectors", "audio_connector.learnable_registers", "model.diffusion_model.audio_embeddings_connector.learnable_registers"),
    ("connectors", "text_proj_in.weight", "text_embedding_projection.aggregate_embed.weight"),
    ("vocoder", "upsamplers.2.weight", "vocoder.ups.2.weight"),
    ("vocoder", "resnets.4.convs2.1.bias", "vocoder.resblocks.4.convs2.1.bias"),
    ("vae", "encoder.down_blocks.1.downsamplers.0.conv.conv.weight", "vae.encoder.down_blocks.3.conv.conv.weight"),
    ("vae", "encoder.down_blocks.1.resnets.0.conv1.conv.weight", "vae.encoder.down_blocks.2.res_blocks.0.conv1.conv.weight"),
    ("vae", "encoder.mid_block.resnets.1.conv2.conv.weight", "vae.encoder.down_blocks.8.res_blocks.1.conv2.conv.weight"),
    ("vae", "decoder.mid_block.resnets.0.conv1.conv.weight", "vae.decoder.up_blocks.0.res_blocks.0.conv1.conv.weight"),
    ("vae", "decoder.up_blocks.0.upsamplers.0.conv.conv.weight", "vae.decoder.up_blocks.1.conv.conv.weight"),
    ("vae", "decoder.up_blocks.2.resnets.0.conv1.conv.weight", "vae.decoder.up_blocks.6.res_blocks.0.conv1.conv.weight"),
    ("vae", "decoder.scale_shift_table", "vae.decoder.last_scale_shift_table"),
    ("vae", "decoder.time_embedder.timestep_embedder.linear_1.weight",
     "vae.decoder.last_time_embedder.timestep_embedder.linear_1.weight"),
])
def test_swap_prone_names_written_out(component, key, official):
    assert official in {**DATA["tensors"], **DATA["vae_decoder_timestep_conditioning"]["tensors"]}
    assert layout.file_key(component, key) == official


def test_component_of_every_official_tensor(mapped):
    """The loader sorts the file's tensors by prefix: each must land with the component that owns it."""
    cfgs = loading.component_configs(header(DATA["config"]))
    num_down = len(cfgs["vae"]["block_out_channels"])
    for name, cfg in cfgs.items():
        for key in loading.build_empty(name, cfg).state_dict():
            assert layout.component_of(layout.file_key(name, key, num_down)) == name, key
    for key in DATA["extra_file_tensors"]["tensors"]:
        assert layout.component_of(key) == "vae"
    for key in ("foo.bar", "model.diffusion", "vaex.encoder.conv", "audio.x", "text_embedding.x", "vocoders.a", ""):
        assert layout.component_of(key) is None, key


def test_component_names_are_compared_by_value():
    # Names read from a config or built at run time are equal to the literals but not the same objects.
    for name in layout.COMPONENTS:
        runtime = "".join(list(name))
        assert runtime is not name
        assert layout.file_key(runtime, "x.weight") == layout.file_key(name, "x.weight")


@pytest.mark.parametrize("name", ["", "abc", "audio", "audio_vaf", "connector", "trans", "v", "vaa", "vaf", "vocoderz",
                                  "zzz"])
def test_an_unknown_component_is_refused(name):
    with pytest.raises(ValueError, match=f"unknown component {name!r}"):
        layout.file_key(name, "x.weight")
