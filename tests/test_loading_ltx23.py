"""The single-file loader against miniature LTX-2.3 (22B) checkpoints written in the official 2.3 layout."""

from __future__ import annotations

import copy
import json

import miniature
import pytest
import torch
from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE
from safetensors.torch import save_file
from test_loading import rel_err, run_audio_decode, run_connectors, run_vae_decode, run_vocoder

from ltx2.models import loading
from ltx2.models.configs import CheckpointError

CONFIG = miniature.MINI_CONFIG_23
DISTILLED = "ltx-2.3-22b-distilled-1.1.safetensors"


@pytest.fixture(scope="module")
def source():
    """Random components, rounded to bf16 so a bf16 file holds exactly these values."""
    modules = miniature.build_components(family="ltx-2.3", seed=5)
    miniature.round_to(modules, torch.bfloat16)
    return modules


@pytest.fixture(scope="module")
def bf16_file(source, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt23") / DISTILLED
    miniature.write_checkpoint(path, source, family="ltx-2.3")
    return path


@pytest.fixture(scope="module")
def tensors(source):
    return miniature.official_tensors(source)


def write(path, tensors, config=None):
    save_file(tensors, str(path), metadata={"config": json.dumps(config or CONFIG)})
    return str(path)


def run_transformer(module, seed=0):
    """2.3's connectors hand each stream text at its own width (no caption projection in the transformer),
    and its prompt AdaLN needs the step's sigma."""
    cfg = module.config
    gen = torch.Generator().manual_seed(seed)
    frames, height, width, audio_frames, text = 2, 2, 3, 5, 7
    video = torch.randn(1, frames * height * width, cfg.in_channels, generator=gen)
    audio = torch.randn(1, audio_frames, cfg.audio_in_channels, generator=gen)
    context = torch.randn(1, text, cfg.cross_attention_dim, generator=gen)
    audio_context = torch.randn(1, text, cfg.audio_cross_attention_dim, generator=gen)
    with torch.no_grad():
        video_out, audio_out = module(
            hidden_states=video, audio_hidden_states=audio, encoder_hidden_states=context,
            audio_encoder_hidden_states=audio_context, timestep=torch.tensor([600.0]),
            # 2.3's prompt AdaLN reads the sigma, scaled like the timestep (ltx-core: sigma x 1000).
            sigma=torch.tensor([600.0]),
            encoder_attention_mask=torch.ones(1, text), audio_encoder_attention_mask=torch.ones(1, text),
            num_frames=frames, height=height, width=width, fps=25, audio_num_frames=audio_frames,
            use_cross_timestep=False, return_dict=False,
        )
    return torch.cat([video_out.flatten(), audio_out.flatten()])


RUNNERS = {"transformer": run_transformer, "connectors": run_connectors, "vae": run_vae_decode,
           "audio_vae": run_audio_decode, "vocoder": run_vocoder}


def test_bf16_file_reproduces_every_component(source, bf16_file):
    loaded, report = loading.load_single_file(str(bf16_file), dtype=torch.float32)
    assert (report.family, report.kind, report.kind_source) == ("ltx-2.3", "distilled", "file name")
    assert report.ignored == ["vae.per_channel_statistics.channel", "vae.per_channel_statistics.mean-of-stds"]
    for name, run in RUNNERS.items():
        want = run(source[name])
        assert want.abs().max() > 0, name  # a runner that outputs zeros would compare nothing
        err = rel_err(run(loaded[name]), want)
        print(f"2.3 bf16 file, {name}: relative error {err:.2e}")
        assert err < 1e-5, name
    for name in ("vae", "audio_vae"):
        for key in ("latents_mean", "latents_std"):
            torch.testing.assert_close(getattr(loaded[name], key), getattr(source[name], key))
    # The parts the 19B files have none of: every one came from the file.
    state, want = loaded["transformer"].state_dict(), source["transformer"].state_dict()
    for key in ("prompt_adaln.linear.weight", "audio_prompt_adaln.linear.bias", "transformer_blocks.1.prompt_scale_shift_table",
                "transformer_blocks.0.audio_to_video_attn.to_gate_logits.weight"):
        torch.testing.assert_close(state[key], want[key])
    for key in ("mel_stft.mel_basis", "mel_stft.stft_fn.forward_basis", "bwe_generator.act_out.act.beta"):
        torch.testing.assert_close(loaded["vocoder"].state_dict()[key], source["vocoder"].state_dict()[key])


def test_the_components_are_2_3s_and_the_vocoder_gives_48_khz(bf16_file):
    loaded, _ = loading.load_single_file(str(bf16_file), dtype=torch.bfloat16)
    vocoder = loaded["vocoder"]
    assert isinstance(vocoder, LTX2VocoderWithBWE) and vocoder.config.output_sampling_rate == 48000
    # float32 whatever the model dtype (ltx-core runs it in float32), and every buffer is real.
    assert {t.dtype for t in [*vocoder.parameters(), *vocoder.buffers()]} == {torch.float32}
    assert not any(b.is_meta for b in vocoder.buffers())
    assert loaded["transformer"].dtype == torch.bfloat16
    mel = torch.randn(1, 2, 10, vocoder.config.in_channels // 2)
    with torch.no_grad():
        wave = vocoder(mel.to(vocoder.dtype))
    # 10 mel frames at hop 160 and 16 kHz are 1,600 samples; the bandwidth extension triples them.
    assert wave.shape == (1, 2, 10 * 160 * 3) and wave.abs().max() <= 1


def test_fp8_file_keeps_fp8(source, tmp_path):
    path = tmp_path / "ltx-2.3-22b-dev-fp8.safetensors"
    miniature.write_checkpoint(path, source, fp8=True, family="ltx-2.3")
    loaded, report = loading.load_single_file(str(path), dtype=torch.float32, fp8_compute="upcast")
    assert (report.family, report.kind) == ("ltx-2.3", "dev")
    assert report.fp8_layers == source["transformer"].config.num_layers * (6 * 4 + 2 * 2)
    assert 0 < rel_err(run_transformer(loaded["transformer"]), run_transformer(source["transformer"])) < 0.08


def test_kind_comes_from_the_name(tensors, tmp_path):
    _, report = loading.load_single_file(write(tmp_path / "ltx-2.3-22b-dev.safetensors", tensors))
    assert (report.family, report.kind, report.kind_source) == ("ltx-2.3", "dev", "file name")
    with pytest.raises(CheckpointError, match="cannot tell whether this checkpoint is distilled or dev"):
        loading.load_single_file(write(tmp_path / "ltx-2.3-22b.safetensors", tensors))


def refused(path: str, pattern: str) -> str:
    with pytest.raises(CheckpointError) as info:
        loading.load_single_file(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(path + ": "), message
    assert __import__("re").search(pattern, message), message
    return message


@pytest.mark.parametrize("key", ["model.diffusion_model.transformer_blocks.1.attn2.to_gate_logits.weight",
                                 "model.diffusion_model.audio_prompt_adaln_single.linear.bias",
                                 "text_embedding_projection.audio_aggregate_embed.weight",
                                 "vocoder.bwe_generator.resblocks.2.acts1.0.downsample.lowpass.filter",
                                 "vocoder.mel_stft.mel_basis"])
def test_a_missing_tensor_is_named(tensors, tmp_path, key):
    fewer = {k: v for k, v in tensors.items() if k != key}
    path = write(tmp_path / DISTILLED, fewer)
    refused(path, rf"does not match the ltx-2\.3 layout its config describes; 1 tensor\(s\) missing from the file: "
                  rf"{key.replace('.', '[.]')}$")


@pytest.mark.parametrize("key", ["text_embedding_projection.aggregate_embed.weight",  # the 19B projection
                                 "model.diffusion_model.caption_projection.linear_1.weight",  # 19B's, in the transformer
                                 "vocoder.conv_post.weight",  # the 19B vocoder's, unnested
                                 "vocoder.resampler.filter"])  # computed, never stored
def test_an_unknown_extra_tensor_is_named(tensors, tmp_path, key):
    path = write(tmp_path / DISTILLED, {**tensors, key: torch.zeros(2, 2)})
    refused(path, rf"1 tensor\(s\) in the file that no component owns: {key.replace('.', '[.]')}$")


def _drop(section, key):
    return lambda c: c[section].pop(key)


@pytest.mark.parametrize(("edit", "pattern"), [
    # A 2.3 transformer with the 19B vocoder.
    (lambda c: c.update(vocoder=copy.deepcopy(miniature.MINI_CONFIG["vocoder"])),
     r"config mixes LTX-2 \(19B\) and LTX-2\.3 \(22B\) parts: config\.transformer sets apply_gated_attention, "
     r"caption_proj_before_connector, cross_attention_adaln; config\.transformer has caption_projection_first_linear, "
     r"caption_proj_input_norm, caption_projection_second_linear; but config\.vocoder is a single HiFi-GAN \(no bwe\)$"),
    # The 19B transformer with 2.3's vocoder.
    (lambda c: c.update(transformer=copy.deepcopy(miniature.MINI_CONFIG["transformer"])),
     r"config mixes .*: config\.vocoder has a bandwidth extension \(bwe\); but config\.transformer lacks "
     r"apply_gated_attention, caption_proj_before_connector, cross_attention_adaln$"),
    # One 2.3 marker off.
    (lambda c: c["transformer"].update(cross_attention_adaln=False),
     r"config mixes .*; but config\.transformer lacks cross_attention_adaln$"),
    (_drop("transformer", "apply_gated_attention"), r"config mixes .*; but config\.transformer lacks apply_gated_attention$"),
    # ltx-core's V2 text projection wants all four keys, with exactly these values.
    (_drop("transformer", "caption_proj_input_norm"),
     r"config matches no known LTX-2\.3 variant: transformer\.caption_proj_input_norm is '<missing>' \(LTX-2\.3: False\)$"),
    (lambda c: c["transformer"].update(caption_projection_second_linear=True),
     r"no known LTX-2\.3 variant: transformer\.caption_projection_second_linear is True \(LTX-2\.3: False\)$"),
    # Keys of later families that would build another model.
    (lambda c: c["transformer"].update(use_prompt_adaln_single=False),
     r"no known LTX-2 variant: transformer\.use_prompt_adaln_single is False \(LTX-2 and LTX-2\.3: True\)$"),
    (lambda c: c["vocoder"]["bwe"].update(activation="snake"),
     r"config\.vocoder\.bwe is not LTX-2\.3's stereo BigVGAN v2"),
    (_drop("vocoder", "vocoder"), r"config\.vocoder\.vocoder is not LTX-2\.3's stereo BigVGAN v2"),
])
def test_a_config_that_mixes_families_or_is_unknown_is_refused(tensors, tmp_path, edit, pattern):
    config = copy.deepcopy(CONFIG)
    edit(config)
    with pytest.raises(CheckpointError) as info:
        loading.load_single_file(write(tmp_path / DISTILLED, tensors, config))
    assert "\n" not in str(info.value)
    assert __import__("re").search(pattern, str(info.value)), str(info.value)


def test_a_19b_file_is_still_19b(tmp_path):
    modules = miniature.build_components(seed=1)
    path = tmp_path / "ltx-2-19b-dev.safetensors"
    miniature.write_checkpoint(path, modules)
    loaded, report = loading.load_single_file(str(path), dtype=torch.float32)
    assert report.family == "ltx-2" and type(loaded["vocoder"]).__name__ == "LTX2Vocoder"
    assert loaded["vocoder"].config.output_sampling_rate == 24000
