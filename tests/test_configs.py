"""From the official file's `config` metadata to diffusers component configs, checked against sources
that are not ours: diffusers' LTX-2 classes, whose defaults are the published LTX-2 19B configs; and
ltx-core's configurators (`model_configurator.py`), whose `.get(key, default)` say what a missing key
means. Sizes and structure of other layouts are counted by hand."""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path

import pytest

from ltx2.models import configs, loading
from ltx2.models.configs import CheckpointError

DATA = json.loads((Path(__file__).parent / "data" / "ltx2_19b_layout.json").read_text())
REAL = DATA["config"]
PROJECTION = (3840, 3840 * 49)  # Gemma 3 12B: 48 layers + the embeddings, 3840 wide


def diffusers_defaults(name: str) -> dict:
    cls = loading.COMPONENT_CLASSES[name]
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def translate(config: dict) -> dict[str, dict]:
    vae = configs.video_vae_config(config)
    audio = configs.audio_vae_config(config)
    return {"transformer": configs.transformer_config(config, vae, audio),
            "connectors": configs.connectors_config(config, PROJECTION), "vae": vae, "audio_vae": audio,
            "vocoder": configs.vocoder_config(config, audio["mel_bins"])}


def same(a, b) -> bool:
    return list(a) == list(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b


# Where the published 2.0 configs differ from the classes' defaults, each with its source.
NOT_THE_CLASS_DEFAULT = {
    ("transformer", "rope_type"): "split",  # LTX-2.0 uses split RoPE (diffusers' converter sets it)
    ("connectors", "rope_type"): "split",
    ("vae", "decoder_causal"): False,  # ltx-core's causal_decoder is false in the 19B file
    ("vae", "spatial_compression_ratio"): 32,  # passed in: diffusers would derive 64 (see geometry.py)
    ("vae", "temporal_compression_ratio"): 8,
    # bools of the 19B file that the class leaves at None (a decoder without timestep conditioning)
}


@pytest.mark.parametrize("name", ["transformer", "connectors", "vae", "audio_vae", "vocoder"])
def test_the_real_file_gives_the_published_19b_config(name):
    ours = translate(REAL)[name]
    defaults = diffusers_defaults(name)
    for key, value in ours.items():
        expected = NOT_THE_CLASS_DEFAULT.get((name, key), defaults.get(key, "<not a parameter>"))
        assert same(value, expected), f"{name}.{key}: ours {value!r}, published {expected!r}"


MINIMAL_TRANSFORMER = {key: REAL["transformer"][key] for key in (
    "num_attention_heads", "attention_head_dim", "cross_attention_dim", "audio_num_attention_heads",
    "audio_attention_head_dim", "audio_cross_attention_dim", "num_layers", "caption_channels")}


def test_what_missing_transformer_keys_mean():
    """ltx-core's LTXModelConfigurator defaults for the keys the 19B file may leave out."""
    config = {**copy.deepcopy(REAL), "transformer": dict(MINIMAL_TRANSFORMER)}
    t = translate(config)["transformer"]
    assert (t["in_channels"], t["out_channels"], t["audio_in_channels"], t["audio_out_channels"]) == (128, 128, 128, 128)
    assert (t["pos_embed_max_pos"], t["base_height"], t["base_width"], t["audio_pos_embed_max_pos"]) == (20, 2048, 2048, 20)
    assert t["rope_theta"] == 10000.0 and t["rope_double_precision"] is False  # frequencies_precision absent
    assert (t["timestep_scale_multiplier"], t["cross_attn_timestep_scale_multiplier"]) == (1000, 1)
    assert t["norm_eps"] == 1e-6 and t["activation_fn"] == "gelu-approximate"
    assert t["causal_offset"] == 1  # causal_temporal_positioning defaults to true
    c = translate(config)["connectors"]
    assert (c["video_connector_num_attention_heads"], c["video_connector_attention_head_dim"]) == (30, 128)
    assert (c["video_connector_num_layers"], c["video_connector_num_learnable_registers"]) == (2, 128)
    assert (c["audio_connector_num_attention_heads"], c["audio_connector_attention_head_dim"]) == (30, 128)
    assert (c["audio_connector_num_layers"], c["audio_connector_num_learnable_registers"]) == (2, 128)
    assert c["connector_rope_base_seq_len"] == 4096 and c["rope_theta"] == 10000.0
    assert c["rope_double_precision"] is False


def test_transformer_values_follow_the_file():
    config = copy.deepcopy(REAL)
    config["transformer"].update(in_channels=64, out_channels=32, audio_in_channels=16, audio_out_channels=8,
                                 positional_embedding_max_pos=[7, 300, 500], audio_positional_embedding_max_pos=[9, 999],
                                 positional_embedding_theta=500.0, frequencies_precision="float32",
                                 causal_temporal_positioning=False, timestep_scale_multiplier=10,
                                 av_ca_timestep_scale_multiplier=3, norm_eps=1e-5, connector_num_layers=5,
                                 connector_num_attention_heads=3, connector_attention_head_dim=7,
                                 connector_num_learnable_registers=16, audio_connector_num_layers=4,
                                 connector_positional_embedding_max_pos=[77, 999])
    config["audio_vae"]["model"]["params"]["ddconfig"]["ch_mult"] = [1, 2, 2, 4]
    config["audio_vae"]["model"]["params"]["sampling_rate"] = 22050
    out = translate(config)
    t, c = out["transformer"], out["connectors"]
    assert (t["in_channels"], t["out_channels"], t["audio_in_channels"], t["audio_out_channels"]) == (64, 32, 16, 8)
    assert (t["pos_embed_max_pos"], t["base_height"], t["base_width"], t["audio_pos_embed_max_pos"]) == (7, 300, 500, 9)
    assert (t["rope_theta"], t["rope_double_precision"], t["causal_offset"]) == (500.0, False, 0)
    assert (t["timestep_scale_multiplier"], t["cross_attn_timestep_scale_multiplier"], t["norm_eps"]) == (10, 3, 1e-5)
    assert t["audio_scale_factor"] == 8 and t["audio_sampling_rate"] == 22050  # 2 ** (4 levels - 1)
    assert t["vae_scale_factors"] == (8, 32, 32)
    assert (c["video_connector_num_layers"], c["audio_connector_num_layers"]) == (5, 4)
    assert (c["video_connector_num_attention_heads"], c["audio_connector_num_attention_heads"]) == (3, 3)
    assert (c["video_connector_attention_head_dim"], c["audio_connector_attention_head_dim"]) == (7, 7)
    assert (c["video_connector_num_learnable_registers"], c["audio_connector_num_learnable_registers"]) == (16, 16)
    assert c["connector_rope_base_seq_len"] == 77 and c["text_proj_in_factor"] == 49


@pytest.mark.parametrize("shape", [None, (3840,), (3840, 3840 * 49 + 1), (3840, 100, 3), (3840, 3840 * 49, 1)])
def test_projection_shape_must_be_caption_times_layers(shape):
    with pytest.raises(CheckpointError, match=r"text_embedding_projection\.aggregate_embed\.weight has shape"):
        configs.connectors_config(REAL, shape)
    assert configs.connectors_config(REAL, (3840, 3840 * 3))["text_proj_in_factor"] == 3


# --- the video VAE: ltx-core's flat block lists to diffusers' per-level tuples ------------------


def test_real_vae_blocks():
    v = translate(REAL)["vae"]
    # 128 latent channels doubled by each multiplier-2 down block ...
    blocks = REAL["vae"]["encoder_blocks"]
    expected, channels = [], 128
    for kind, params in blocks[1::2]:
        channels *= params.get("multiplier", 2)
        expected.append(channels)
    assert v["block_out_channels"] == tuple(expected)
    assert v["layers_per_block"] == tuple(p["num_layers"] if isinstance(p, dict) else p for _, p in blocks[0::2])
    assert v["down_block_types"] == ("LTX2VideoDownBlock3D",) * 4


def test_a_different_vae_layout_counted_by_hand():
    config = copy.deepcopy(REAL)
    config["vae"].update(latent_channels=16, patch_size=2, decoder_base_channels=8, causal_decoder=True,
                         timestep_conditioning=True, in_channels=4, out_channels=5,
                         encoder_spatial_padding_mode="reflect", spatial_padding_mode="zeros",
                         encoder_blocks=[["res_x", {"num_layers": 3}], ["compress_time_res", {"multiplier": 3}],
                                         ["res_x", 2], ["compress_space_res", {}], ["res_x", {"num_layers": 1}]],
                         decoder_blocks=[["res_x", {"num_layers": 2, "inject_noise": True}],
                                         ["compress_space", {"multiplier": 3, "residual": True}],
                                         ["res_x", {"num_layers": 4}], ["compress_time", {}],
                                         ["res_x", {"num_layers": 1}]])
    v = configs.video_vae_config(config)
    assert v["block_out_channels"] == (48, 96)  # 16 x 3, then x 2 (the default multiplier)
    assert v["layers_per_block"] == (3, 2, 1)
    assert v["downsample_type"] == ("temporal", "spatial")
    assert v["decoder_block_out_channels"] == (24, 24)  # 8 x 3, then x 1 (the decoder's default)
    assert v["decoder_layers_per_block"] == (2, 4, 1)
    assert v["decoder_inject_noise"] == (True, False, False)
    # diffusers reverses every decoder tuple but upsample_type, which it reads latent side first
    # (tests/test_layout_ltx23.py pins this against LTX-2.3's asymmetric decoder at full size).
    assert v["upsample_type"] == ("temporal", "spatial") and v["upsample_residual"] == (True, False)
    assert v["upsample_factor"] == (3, 1)
    assert v["spatio_temporal_scaling"] == (True, True) and v["decoder_spatio_temporal_scaling"] == (True, True)
    assert (v["spatial_compression_ratio"], v["temporal_compression_ratio"]) == (4, 2)  # patch 2 x 2; 2
    assert (v["latent_channels"], v["patch_size"], v["patch_size_t"]) == (16, 2, 1)
    assert (v["in_channels"], v["out_channels"], v["decoder_causal"], v["timestep_conditioning"]) == (4, 5, True, True)
    # ltx-core's configurator reads the shared spatial_padding_mode first, for the encoder too.
    assert (v["encoder_spatial_padding_mode"], v["decoder_spatial_padding_mode"]) == ("zeros", "zeros")
    assert v["encoder_causal"] is True and v["resnet_norm_eps"] == 1e-6


def test_vae_defaults_of_ltx_core():
    config = copy.deepcopy(REAL)
    for key in ("latent_channels", "patch_size", "decoder_base_channels", "causal_decoder", "timestep_conditioning",
                "in_channels", "out_channels", "spatial_padding_mode", "encoder_spatial_padding_mode"):
        config["vae"].pop(key, None)
    v = configs.video_vae_config(config)
    assert (v["latent_channels"], v["patch_size"], v["in_channels"], v["out_channels"]) == (128, 4, 3, 3)
    assert v["decoder_block_out_channels"][0] == 128 * REAL["vae"]["decoder_blocks"][1][1].get("multiplier", 1)
    assert (v["decoder_causal"], v["timestep_conditioning"]) == (False, False)
    assert (v["encoder_spatial_padding_mode"], v["decoder_spatial_padding_mode"]) == ("zeros", "reflect")


@pytest.mark.parametrize(("blocks", "bad"), [
    ([["res_x", 1], ["compress_all_res", {}]], "an even count"),
    ([["res_x", 1], ["res_x", 1], ["res_x", 1]], "['res_x']"),
    ([["compress_all_res", {}], ["compress_all_res", {}], ["res_x", 1]], "['compress_all_res']"),
    ([["res_x", 1], ["compress_all", {}], ["res_x", 1]], "['compress_all']"),  # a decoder block in the encoder
    ([["res_x", 1], ["compress_all_res", {}], ["res_x_y", 1]], "['res_x_y']"),  # LTX-Video's other res block
    ([["res_x", 1], ["compress_all_res", {}], ["res_x", 1], ["compress_all_res", {}]], "an even count"),
])
def test_encoder_blocks_must_alternate(blocks, bad):
    config = copy.deepcopy(REAL)
    config["vae"]["encoder_blocks"] = blocks
    with pytest.raises(CheckpointError, match=r"config\.vae\.encoder_blocks .* \(unsupported: " + __import__("re").escape(bad)):
        configs.video_vae_config(config)


@pytest.mark.parametrize("entry", [["res_x"], "res_x", ["res_x", 1, 2]])
def test_a_block_is_a_name_and_params(entry):
    config = copy.deepcopy(REAL)
    config["vae"]["encoder_blocks"] = [entry, ["compress_all_res", {}], ["res_x", 1]]
    with pytest.raises(CheckpointError, match=r"config\.vae\.encoder_blocks: entry .* is not \[name, params\]"):
        configs.video_vae_config(config)


def test_another_vae_class_is_refused():
    config = copy.deepcopy(REAL)
    for other in ("VideoAutoencoder", "AutoencoderKLLTX2Video"):  # sorting after and before the right one
        config["vae"]["_class_name"] = other
        with pytest.raises(CheckpointError, match=f"_class_name is '{other}'; LTX-2 19B uses CausalVideoAutoencoder"):
            configs.video_vae_config(config)
    del config["vae"]["_class_name"]  # absent: the LTX-2 class
    assert configs.video_vae_config(config)["latent_channels"] == 128


# --- the audio VAE and the vocoder ---------------------------------------------------------------


def test_audio_vae_defaults_of_ltx_core():
    a = configs.audio_vae_config({"audio_vae": {"preprocessing": {"mel": {"n_mel_channels": 80}}}})
    assert (a["base_channels"], a["output_channels"], a["ch_mult"], a["num_res_blocks"]) == (128, 2, (1, 2, 4), 2)
    assert (a["in_channels"], a["resolution"], a["latent_channels"], a["norm_type"]) == (2, 256, 8, "pixel")
    assert (a["causality_axis"], a["dropout"], a["mid_block_add_attention"], a["double_z"]) == ("height", 0.0, True, True)
    assert (a["sample_rate"], a["mel_hop_length"], a["is_causal"], a["mel_bins"]) == (16000, 160, True, 80)


def test_audio_vae_values_follow_the_file():
    config = copy.deepcopy(REAL)
    dd = config["audio_vae"]["model"]["params"]["ddconfig"]
    dd.update(ch=64, out_ch=1, num_res_blocks=3, attn_resolutions=[16, 32], resolution=128, z_channels=4,
              norm_type="group", causality_axis="width", dropout=0.1, mid_block_add_attention=True, in_channels=1,
              double_z=False)
    config["audio_vae"]["preprocessing"]["stft"].update(hop_length=256, causal=False)
    a = configs.audio_vae_config(config)
    assert (a["base_channels"], a["output_channels"], a["num_res_blocks"], a["attn_resolutions"]) == (64, 1, 3, (16, 32))
    assert (a["resolution"], a["latent_channels"], a["norm_type"], a["causality_axis"]) == (128, 4, "group", "width")
    assert (a["dropout"], a["mid_block_add_attention"], a["in_channels"], a["double_z"]) == (0.1, True, 1, False)
    assert (a["mel_hop_length"], a["is_causal"]) == (256, False)


@pytest.mark.parametrize(("where", "expected"), [
    ({"model": {"params": {"ddconfig": {"mel_bins": 64}}}, "preprocessing": {"mel": {"n_mel_channels": 80}},
      "variables": {"mel_bins": 96}}, 64),
    ({"preprocessing": {"mel": {"n_mel_channels": 80}}, "variables": {"mel_bins": 96}}, 80),
    ({"variables": {"mel_bins": 96}}, 96),
])
def test_mel_bins_are_read_in_ltx_cores_order(where, expected):
    assert configs.audio_vae_config({"audio_vae": where})["mel_bins"] == expected


def test_no_mel_bins_is_refused():
    with pytest.raises(CheckpointError, match="gives no mel bin count"):
        configs.audio_vae_config({"audio_vae": {}})


def test_vocoder_defaults_and_values():
    v = configs.vocoder_config({"vocoder": {}}, mel_bins=80)
    assert v["in_channels"] == 160 and v["out_channels"] == 2  # stereo mels stacked, stereo out
    assert (v["hidden_channels"], v["upsample_kernel_sizes"], v["upsample_factors"]) == (1024, [16, 15, 8, 4, 4], [6, 5, 2, 2, 2])
    assert (v["resnet_kernel_sizes"], v["resnet_dilations"]) == ([3, 7, 11], [[1, 3, 5]] * 3)
    assert (v["final_act_fn"], v["final_bias"], v["output_sampling_rate"]) == ("tanh", True, 24000)
    assert (v["act_fn"], v["leaky_relu_negative_slope"], v["antialias"]) == ("leaky_relu", 0.1, False)
    v = configs.vocoder_config({"vocoder": {"use_tanh_at_final": False, "use_bias_at_final": False,
                                            "output_sampling_rate": 48000, "resblock_dilation_sizes": [[2, 4]]}}, 64)
    assert (v["final_act_fn"], v["final_bias"], v["output_sampling_rate"], v["resnet_dilations"]) == (None, False, 48000, [[2, 4]])


@pytest.mark.parametrize("vocoder", [{"resblock": "2"}, {"stereo": False}, {"resblock": "AMP1"}, {"resblock": "0"},
                                     {"resblock": 1}])
def test_a_vocoder_that_is_not_19b_is_refused(vocoder):
    with pytest.raises(CheckpointError, match="is not LTX-2 19B's stereo HiFi-GAN"):
        configs.vocoder_config({"vocoder": vocoder}, 64)


# --- which family and which variant ---------------------------------------------------------------


def test_detect_family():
    assert configs.detect_family(copy.deepcopy(REAL), "x") == "ltx-2" == configs.LTX2 == configs.LTX2_19B
    for marker in configs.LTX23_MARKERS:
        config = copy.deepcopy(REAL)
        config["transformer"][marker] = True  # one 2.3 marker on a 19B config: neither family
        with pytest.raises(CheckpointError, match=rf"^x: config mixes LTX-2 \(19B\) and LTX-2\.3 \(22B\) parts: "
                                                  rf"config\.transformer sets {marker}.*; but config\.transformer lacks"):
            configs.detect_family(config, "x")
        config["transformer"][marker] = False  # present but false: still 19B
        assert configs.detect_family(config, "x") == "ltx-2"
    for section in ("vae", "audio_vae", "vocoder"):
        config = copy.deepcopy(REAL)
        config[section] = "nope"
        with pytest.raises(CheckpointError, match=f"no '{section}' section"):
            configs.detect_family(config, "x")
    with pytest.raises(CheckpointError, match="no 'transformer' section"):
        configs.detect_family({**REAL, "transformer": {}}, "x")


def test_every_invariant_is_checked_and_a_missing_one_is_allowed():
    for key, want in configs.LTX2_TRANSFORMER_INVARIANTS.items():
        config = copy.deepcopy(REAL)
        config["transformer"][key] = "something else"
        with pytest.raises(CheckpointError, match=rf"transformer\.{key} is 'something else' \(LTX-2 19B: {want!r}\)"):
            configs.detect_family(config, "x")
        del config["transformer"][key]
        assert configs.detect_family(config, "x") == "ltx-2"


@pytest.mark.parametrize(("path", "kind"), [
    ("/m/ltx-2-19b-distilled-fp8.safetensors", "distilled"),
    ("/m/ltx-2-19b-distilled.safetensors", "distilled"),
    ("/m/ltx-2-19b-dev.safetensors", "dev"),
    ("/m/ltx-2-19b-dev-fp8.safetensors", "dev"),
    ("C:\\models\\LTX-2-19B-DEV.safetensors", "dev"),
    ("/m/dev", "dev"),
    ("/m/ltx2_dev_fp8/", "dev"),
    ("/m/ltx-2.dev.safetensors", "dev"),
])
def test_kind_from_the_official_names(path, kind):
    assert configs.detect_kind(path) == (kind, "file name")


@pytest.mark.parametrize("path", ["/dev/ltx-2-19b.safetensors", "/m/device.safetensors", "/m/devil-fp8.safetensors",
                                  "/m/ltx-2-19b-undev.safetensors"])
def test_kind_not_guessed_from_a_word_that_only_contains_dev(path):
    with pytest.raises(CheckpointError, match="cannot tell whether this checkpoint is distilled or dev"):
        configs.detect_kind(path)
    assert configs.detect_kind(path, "distilled") == ("distilled", "setting")
    assert configs.detect_kind(path, "dev") == ("dev", "setting")
