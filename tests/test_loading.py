"""The single-file loader against miniature checkpoints written in the official layout."""

from __future__ import annotations

import copy
import json

import miniature
import pytest
import torch
from safetensors.torch import save_file

from ltx2.models import loading
from ltx2.models.configs import CheckpointError


@pytest.fixture(scope="module")
def source():
    """Random components, rounded to bf16 so a bf16 file holds exactly these values."""
    modules = miniature.build_components(seed=3)
    miniature.round_to(modules, torch.bfloat16)
    return modules


@pytest.fixture(scope="module")
def bf16_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ltx-2-19b-distilled.safetensors"
    miniature.write_checkpoint(path, source)
    return path


@pytest.fixture(scope="module")
def fp8_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ltx-2-19b-distilled-fp8.safetensors"
    miniature.write_checkpoint(path, source, fp8=True)
    return path


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def run_transformer(module, seed=0):
    cfg = module.config
    gen = torch.Generator().manual_seed(seed)
    frames, height, width, audio_frames, text = 2, 2, 3, 5, 7
    video = torch.randn(1, frames * height * width, cfg.in_channels, generator=gen)
    audio = torch.randn(1, audio_frames, cfg.audio_in_channels, generator=gen)
    # The connectors' output width is caption_channels; the transformer projects it itself.
    context = torch.randn(1, text, cfg.caption_channels, generator=gen)
    audio_context = torch.randn(1, text, cfg.caption_channels, generator=gen)
    with torch.no_grad():
        video_out, audio_out = module(
            hidden_states=video, audio_hidden_states=audio, encoder_hidden_states=context,
            audio_encoder_hidden_states=audio_context, timestep=torch.tensor([600.0]),
            encoder_attention_mask=torch.ones(1, text), audio_encoder_attention_mask=torch.ones(1, text),
            num_frames=frames, height=height, width=width, fps=25, audio_num_frames=audio_frames,
            use_cross_timestep=False, return_dict=False,
        )
    return torch.cat([video_out.flatten(), audio_out.flatten()])


def run_connectors(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    width = module.config.caption_channels * module.config.text_proj_in_factor
    embeds = torch.randn(1, 128, width, generator=gen)  # a multiple of the 128 learnable registers
    mask = torch.ones(1, 128, dtype=torch.long)
    mask[0, :100] = 0  # left padding, as the pipeline pads
    with torch.no_grad():
        video, audio, _ = module(embeds, mask, padding_side="left")
    return torch.cat([video.flatten(), audio.flatten()])


def run_vae_decode(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, module.config.latent_channels, 2, 2, 2, generator=gen)
    with torch.no_grad():
        return module.decode(latents, return_dict=False)[0]


def run_audio_decode(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, module.config.latent_channels, 6, module.config.mel_bins // 4, generator=gen)
    with torch.no_grad():
        return module.decode(latents, return_dict=False)[0]


def run_vocoder(module, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mel = torch.randn(1, 2, 10, module.config.in_channels // 2, generator=gen)
    with torch.no_grad():
        return module(mel)


RUNNERS = {
    "transformer": run_transformer,
    "connectors": run_connectors,
    "vae": run_vae_decode,
    "audio_vae": run_audio_decode,
    "vocoder": run_vocoder,
}


def test_bf16_file_reproduces_every_component(source, bf16_file):
    loaded, report = loading.load_single_file(str(bf16_file), dtype=torch.float32)
    assert report.family == "ltx-2"
    assert report.kind == "distilled" and report.kind_source == "file name"
    assert report.fp8_layers == 0
    for name, run in RUNNERS.items():
        err = rel_err(run(loaded[name]), run(source[name]))
        print(f"bf16 file, {name}: relative error {err:.2e}")
        assert err < 1e-5, name
    # The statistics that normalise latents came through too (the runners above don't use them).
    for name in ("vae", "audio_vae"):
        for key in ("latents_mean", "latents_std"):
            torch.testing.assert_close(getattr(loaded[name], key), getattr(source[name], key))


def test_fp8_file_keeps_fp8_and_matches_within_quantisation_error(source, fp8_file):
    loaded, report = loading.load_single_file(str(fp8_file), dtype=torch.float32, fp8_compute="upcast")
    n_blocks = source["transformer"].config.num_layers
    assert report.fp8_layers == n_blocks * (6 * 4 + 2 * 2)  # 6 attentions x 4 projections, 2 FFs x 2
    fp8_weights = [p for n, p in loaded["transformer"].named_parameters() if p.dtype == torch.float8_e4m3fn]
    assert len(fp8_weights) == report.fp8_layers
    scales = [b for n, b in loaded["transformer"].state_dict().items() if n.endswith("weight_scale")]
    assert scales and all(s.dtype == torch.float32 and s.ndim == 0 for s in scales)
    err = rel_err(run_transformer(loaded["transformer"]), run_transformer(source["transformer"]))
    print(f"fp8 file, transformer: relative error {err:.2e} (FP8 e4m3 weights, per-tensor scales)")
    assert 0 < err < 0.08
    for name in ("connectors", "vae", "audio_vae", "vocoder"):  # not quantised in the FP8 files
        assert rel_err(RUNNERS[name](loaded[name]), RUNNERS[name](source[name])) < 1e-5, name


def test_fp8_file_in_bf16_as_production_loads_it(source, fp8_file):
    """Production loads in bf16: FP8 weights stay FP8, their scales stay the file's float32 values
    (rounding one to bf16 scales the whole layer by up to 0.4%), everything else becomes bf16."""
    from safetensors import safe_open

    loaded, report = loading.load_single_file(str(fp8_file), dtype=torch.bfloat16, fp8_compute="upcast")
    transformer = loaded["transformer"]
    names = miniature.official_names("transformer", source["transformer"], 4)
    state = transformer.state_dict()
    scales = {k: v for k, v in state.items() if k.endswith(("weight_scale", "input_scale"))}
    assert len(scales) == 2 * report.fp8_layers
    with safe_open(str(fp8_file), "pt") as f:
        for key, value in scales.items():
            layer, _, suffix = key.rpartition(".")
            official = names[layer + ".weight"].removesuffix(".weight") + "." + suffix
            assert value.dtype == torch.float32 and torch.equal(value, f.get_tensor(official)), key
    kinds = {k: v.dtype for k, v in state.items() if k not in scales}
    assert sum(d == torch.float8_e4m3fn for d in kinds.values()) == report.fp8_layers
    assert {d for d in kinds.values() if d != torch.float8_e4m3fn} == {torch.bfloat16}
    out = run_transformer(transformer.to(torch.float32))  # float32 activations; weights as loaded
    assert 0 < rel_err(out, run_transformer(source["transformer"])) < 0.08


def test_known_unused_tensors_are_reported_not_loaded(bf16_file):
    _, report = loading.load_single_file(str(bf16_file), dtype=torch.float32)
    assert report.ignored == ["vae.per_channel_statistics.channel", "vae.per_channel_statistics.mean-of-stds"]


@pytest.fixture(scope="module")
def tensors(source):
    return miniature.official_tensors(source)


def write(path, tensors, config=None):
    save_file(tensors, str(path), metadata={"config": json.dumps(config or miniature.MINI_CONFIG)})
    return str(path)


def test_extra_tensor_is_named(tensors, tmp_path):
    extra = {**tensors, "model.diffusion_model.transformer_blocks.0.attn1.to_gate.weight": torch.zeros(2, 2)}
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) in the file that no component owns: "
                                              r"model\.diffusion_model\.transformer_blocks\.0\.attn1\.to_gate\.weight"):
        loading.load_single_file(write(tmp_path / "x-distilled.safetensors", extra))


def test_missing_tensor_is_named(tensors, tmp_path):
    key = "vocoder.conv_post.weight"
    fewer = {k: v for k, v in tensors.items() if k != key}
    with pytest.raises(CheckpointError, match=r"1 tensor\(s\) missing from the file: vocoder\.conv_post\.weight"):
        loading.load_single_file(write(tmp_path / "x-distilled.safetensors", fewer))


def test_wrong_shape_is_named(tensors, tmp_path):
    key = "model.diffusion_model.patchify_proj.weight"
    bad = {**tensors, key: torch.zeros(32, 15, dtype=torch.bfloat16)}
    with pytest.raises(CheckpointError, match=r"patchify_proj\.weight is \[32, 15\], expected \[32, 16\]"):
        loading.load_single_file(write(tmp_path / "x-distilled.safetensors", bad))


def test_truncated_file_is_named(bf16_file, tmp_path):
    data = bf16_file.read_bytes()
    cut = tmp_path / "ltx-2-19b-distilled.safetensors"
    cut.write_bytes(data[: len(data) - 1000])
    with pytest.raises(CheckpointError, match=r"truncated: .* declares \d+ bytes of tensor data but the file holds"):
        loading.load_single_file(str(cut))
    cut.write_bytes(data[:4])
    with pytest.raises(CheckpointError, match="too short to be a safetensors file"):
        loading.load_single_file(str(cut))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.safetensors: no such file"):
        loading.load_single_file(str(tmp_path / "nope.safetensors"))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["transformer"].update(rope_type="interleaved"),
         r"config matches no known LTX-2 variant: transformer\.rope_type is 'interleaved' \(LTX-2 19B: 'split'\)"),
        (lambda c: c["transformer"].update(apply_gated_attention=True, caption_proj_before_connector=True),
         r"config mixes LTX-2 \(19B\) and LTX-2\.3 \(22B\) parts: config\.transformer sets apply_gated_attention, "
         r"caption_proj_before_connector; but config\.transformer lacks cross_attention_adaln; "
         r"config\.vocoder is a single HiFi-GAN \(no bwe\)$"),
        (lambda c: c.pop("transformer"), r"no 'transformer' section"),
        (lambda c: c["vae"].update(encoder_blocks=[["res_x", 1], ["attn", 1], ["res_x", 1]]),
         r"config\.vae\.encoder_blocks .*\(unsupported: \['attn'\]\)"),
        (lambda c: c["vocoder"].update(bwe={"resblock": "AMP1"}),
         r"config mixes .*: config\.vocoder has a bandwidth extension \(bwe\); but config\.transformer lacks "
         r"apply_gated_attention, caption_proj_before_connector, cross_attention_adaln$"),
    ],
)
def test_unknown_config_is_refused(tensors, tmp_path, edit, message):
    config = copy.deepcopy(miniature.MINI_CONFIG)
    edit(config)
    with pytest.raises(CheckpointError, match=message):
        loading.load_single_file(write(tmp_path / "x-distilled.safetensors", tensors, config))


def test_file_without_config_metadata_is_refused(tensors, tmp_path):
    path = tmp_path / "x-distilled.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match="no 'config' in the safetensors metadata"):
        loading.load_single_file(str(path))


def test_kind_comes_from_the_name_or_the_setting(tensors, tmp_path):
    path = write(tmp_path / "my-model.safetensors", tensors)
    with pytest.raises(CheckpointError, match="cannot tell whether this checkpoint is distilled or dev.*LTX2_VARIANT"):
        loading.load_single_file(path)
    _, report = loading.load_single_file(path, kind="dev")
    assert (report.kind, report.kind_source) == ("dev", "setting")
    _, report = loading.load_single_file(write(tmp_path / "ltx-2-19b-dev.safetensors", tensors))
    assert (report.kind, report.kind_source) == ("dev", "file name")
