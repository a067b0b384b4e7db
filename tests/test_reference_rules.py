"""The conditioning and guidance rules of ltx-core / ltx-pipelines 1.2.0, each pinned by values
computed from the rule itself (by hand or with numpy), not read from our own output."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_conditioning import BASE, gradient, png_uri, tone, wav_uri

from ltx2 import generate
from ltx2.models.loaded import DEV_DEFAULTS
from ltx2.pipelines import stages
from ltx2.pipelines.guidance import Guidance, ModalityGuidance, combine
from ltx2.pipelines.passes import Perturbation, reference_semantics


def spy_inputs(module: torch.nn.Module, seen: list) -> torch.utils.hooks.RemovableHandle:
    """Record the first positional input of every call of `module`, as the module ran on it."""
    return module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))


# ------------------------------------------------------------------------------------------------
# Rule 1: audio<->video cross-attention. Scale/shift from the stream's own per-token timesteps; the
# gate from the OTHER stream's sigma times av_ca_timestep_scale_multiplier (1000); held = sigma 0.

def _first_step_inputs(model, request):
    t = model.pipe.transformer
    names = ("av_cross_attn_video_a2v_gate", "av_cross_attn_audio_v2a_gate",
             "av_cross_attn_video_scale_shift", "av_cross_attn_audio_scale_shift")
    seen = {name: [] for name in names}
    handles = [spy_inputs(getattr(t, name), seen[name]) for name in names]
    try:
        generate(model, request)
    finally:
        for h in handles:
            h.remove()
    return {name: calls for name, calls in seen.items()}


def test_gates_read_the_other_streams_sigma_and_a_held_soundtrack_is_sigma_0(model):
    assert model.pipe.transformer.config.cross_attn_timestep_scale_multiplier == 1000
    request = {**BASE, "num_inference_steps": 2, "seed": 4, "image_start": png_uri(gradient()),
               "audio": wav_uri(tone(1.0, 16000), 16000), "audio_strength": 1.0}
    seen = _first_step_inputs(model, request)
    # Step 1 is at sigma 1.0. The soundtrack is held: the video's gate reads sigma 0 of the audio.
    assert seen["av_cross_attn_video_a2v_gate"][0].tolist() == [0.0]
    # The audio's gate reads the video's sigma (1.0) x 1000, not its own timesteps (all 0: held).
    assert seen["av_cross_attn_audio_v2a_gate"][0].tolist() == [1000.0]
    # Scale/shift: each stream's own per-token timesteps. The 128x64 frame is 4x2 latent tokens per
    # latent frame, 3 latent frames (17 frames); the first frame is the image (strength 1 -> t = 0).
    video_t = seen["av_cross_attn_video_scale_shift"][0]
    assert video_t.tolist() == [0.0] * 8 + [1000.0] * 16
    audio_t = seen["av_cross_attn_audio_scale_shift"][0]
    assert audio_t.numel() == round(17 / 25 * 25) and audio_t.abs().max() == 0  # every audio token held


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_gates_follow_the_step_sigma_when_nothing_is_held(model):
    request = {**BASE, "num_inference_steps": 3, "seed": 4, "audio": wav_uri(tone(1.0, 16000), 16000),
               "audio_strength": 0.5}
    seen = _first_step_inputs(model, request)
    from ltx2.pipelines.schedules import shifted_sigmas

    # One stage's schedule: the shift for 4096 tokens whatever the size, as ltx-pipelines builds it.
    expected = [round(s * 1000, 2) for s in shifted_sigmas(3, num_tokens=4096)]
    # Not frozen (strength 0.5): each gate reads the other stream's step sigma, per call.
    assert [round(x.item(), 2) for x in seen["av_cross_attn_video_a2v_gate"]] == expected
    assert [round(x.item(), 2) for x in seen["av_cross_attn_audio_v2a_gate"]] == expected
    # while the audio's scale/shift read its own timesteps: sigma x (1 - 0.5).
    first = seen["av_cross_attn_audio_scale_shift"][0]
    assert torch.allclose(first, torch.full_like(first, 500.0))


# ------------------------------------------------------------------------------------------------
# Rule 2: partial strength. x0 = x - (1 - s) sigma v per token, then x0' = x0 (1 - s) + clean s.

def _one_step(model, monkeypatch, strength: float, sigma: float):
    torch.manual_seed(0)
    tokens, channels = 6, 128
    x = torch.randn(1, tokens, channels)
    clean = torch.randn(1, tokens, channels)
    v = torch.randn(1, tokens, channels)
    mask = torch.tensor([strength, strength, 0.0, 0.0, 1.0, strength]).view(1, tokens, 1)
    video = stages.Stream(x.clone(), torch.zeros(1, 3, tokens, 2), tokens, clean=clean, strength=mask)
    audio = stages.Stream(torch.zeros(1, 2, 128), torch.zeros(1, 1, 2, 2), 2)
    monkeypatch.setattr(stages, "transformer_pass",
                        lambda run, video, audio, *a, **k: (v.clone(), torch.zeros(1, 2, 128)))
    ctx = stages.TextContext(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), torch.ones(1, 1))
    run = stages.Run(model, None, total_steps=1)
    grid = stages.LatentGrid(1, 1, tokens, 2, 16, 9, 25)
    neutral = Guidance(ModalityGuidance(), ModalityGuidance())
    out, _ = stages.denoise(run, video, audio, stages.PromptEmbeddings(ctx, None), [sigma], grid, neutral)
    return x.numpy(), clean.numpy(), v.numpy(), mask.numpy(), out.latents.numpy()


@pytest.mark.parametrize("strength", [0.5, 0.25])
def test_partial_strength_takes_x0_at_the_tokens_own_sigma(model, monkeypatch, strength):
    sigma = 0.8
    x, clean, v, m, after = _one_step(model, monkeypatch, strength, sigma)
    # One step from sigma to 0 lands on the step's clean estimate, computed here from the rule:
    x0 = x - (1 - m) * sigma * v
    expected = x0 * (1 - m) + clean * m
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)
    # The old rule (x0 at the step's sigma) is measurably different on the partial tokens.
    old = (x - sigma * v) * (1 - m) + clean * m
    assert np.abs(after[:, [0, 1, 5]] - old[:, [0, 1, 5]]).max() > 1e-2
    # Free tokens keep the model's estimate; held tokens land on their condition.
    np.testing.assert_allclose(after[:, 2:4], (x - sigma * v)[:, 2:4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(after[:, 4], clean[:, 4], rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Rule 6: the dev model's multi-modal guider.

def test_guider_combination_and_rescale_match_the_formula():
    rng = np.random.default_rng(3)
    shape = (1, 10, 4)
    x, c, u, p, mo = (rng.standard_normal(shape).astype(np.float32) for _ in range(5))
    token_sigma = np.array([0.9] * 7 + [0.45] * 2 + [0.0], dtype=np.float32).reshape(1, 10, 1)
    knobs = ModalityGuidance(cfg=3.0, stg=1.0, modality=3.0, rescale=0.7)
    got = combine(knobs, {k: torch.from_numpy(a) for k, a in zip(("cond", "uncond", "ptb", "mod"), (c, u, p, mo))},
                  torch.from_numpy(x), torch.from_numpy(token_sigma)).numpy()
    # Written in x0 space as ltx-core's MultiModalGuider.calculate does, from scratch in float64.
    x64, s64 = x.astype(np.float64), token_sigma.astype(np.float64)
    to_x0 = lambda vel: x64 - s64 * vel.astype(np.float64)  # noqa: E731
    cond, uncond, ptb, mod = map(to_x0, (c, u, p, mo))
    pred = cond + 2.0 * (cond - uncond) + 1.0 * (cond - ptb) + 2.0 * (cond - mod)
    factor = cond.std(ddof=1) / pred.std(ddof=1)
    pred = pred * (0.7 * factor + 0.3)
    live = token_sigma[0, :, 0] > 0
    expected = (x64 - pred)[:, live] / s64[:, live]
    np.testing.assert_allclose(got[:, live], expected, rtol=2e-4, atol=2e-4)
    assert np.all(got[:, ~live] == 0)  # held tokens: replaced by their condition after the guider


def test_plain_cfg_is_the_formula_without_rescale():
    c, u = torch.randn(1, 5, 3), torch.randn(1, 5, 3)
    got = combine(ModalityGuidance(cfg=4.0), {"cond": c, "uncond": u}, torch.zeros(1, 5, 3), torch.ones(1, 1, 1))
    torch.testing.assert_close(got, u + 4.0 * (c - u))


@pytest.fixture(scope="module")
def dev_model(model):
    """The tiny components with a dev checkpoint's defaults."""
    dev = copy.copy(model)
    dev.defaults = DEV_DEFAULTS
    return dev


@pytest.mark.parametrize("fields, passes", [
    ({}, 4),  # cond, uncond, STG, modality: the reference's dev defaults
    ({"stg_scale": 0.0, "audio_stg_scale": 0.0}, 3),
    ({"stg_scale": 0.0, "audio_stg_scale": 0.0, "modality_scale": 1.0, "audio_modality_scale": 1.0}, 2),
    ({"guidance_scale": 1.0, "audio_guidance_scale": 1.0, "stg_scale": 0.0, "audio_stg_scale": 0.0,
      "modality_scale": 1.0, "audio_modality_scale": 1.0}, 1),
])
def test_dev_passes_per_step(dev_model, fields, passes):
    out = generate(dev_model, {**BASE, "num_frames": 9, "num_inference_steps": 2, "seed": 1, **fields})
    assert out.transformer_passes == 2 * passes


def test_dev_defaults_are_the_references_and_requests_override_them(dev_model):
    out = generate(dev_model, {**BASE, "num_frames": 9, "num_inference_steps": 1, "seed": 1})
    g = out.guidance
    assert (g.video.cfg, g.video.stg, g.video.modality, g.video.rescale) == (3.0, 1.0, 3.0, 0.7)
    assert (g.audio.cfg, g.audio.stg, g.audio.modality, g.audio.rescale) == (7.0, 1.0, 3.0, 0.7)
    assert g.stg_blocks == (1,)  # block 29 of 48 in LTX-2 19B; the tiny transformer has 2 blocks
    mine = generate(dev_model, {**BASE, "num_frames": 9, "num_inference_steps": 1, "seed": 1,
                                "audio_guidance_scale": 5.0, "guidance_rescale": 0.0, "stg_blocks": [0]})
    assert (mine.guidance.audio.cfg, mine.guidance.video.rescale, mine.guidance.stg_blocks) == (5.0, 0.0, (0,))


def test_stg_blocks_out_of_range_is_refused(client):
    r = client.post("/generate", json={"prompt": "x", "stg_scale": 1.0, "stg_blocks": [29]})
    assert r.status_code == 422 and r.json()["field"] == "stg_blocks"
    assert "below 2" in r.json()["error"]


def test_the_response_reports_every_knob(client):
    body = client.post("/generate", json={**BASE, "num_frames": 9, "seed": 2, "guidance_scale": 2.0,
                                          "use_multiscale": False}).json()
    assert body["guidance_scale"] == 2.0 and body["audio_guidance_scale"] == 2.0  # distilled: audio follows
    assert (body["stg_scale"], body["modality_scale"], body["guidance_rescale"]) == (0.0, 1.0, 0.0)
    assert body["transformer_passes"] == 3 * 2  # 3 steps, [cond, uncond] per step


# The two perturbations, checked against diffusers' own implementation of each for one sample.

def _inputs(model, batch: int):
    t = model.pipe.transformer
    g = torch.Generator().manual_seed(0)
    frames, h, w, audio_frames = 2, 2, 3, 5
    return dict(
        hidden_states=torch.randn(batch, frames * h * w, 128, generator=g),
        audio_hidden_states=torch.randn(batch, audio_frames, 128, generator=g),
        encoder_hidden_states=torch.randn(batch, 7, t.config.caption_channels, generator=g),
        audio_encoder_hidden_states=torch.randn(batch, 7, t.config.caption_channels, generator=g),
        timestep=torch.full((batch,), 700.0), audio_timestep=torch.full((batch,), 700.0),
        num_frames=frames, height=h, width=w, fps=25, audio_num_frames=audio_frames, return_dict=False,
    )


def _first_row(inputs):
    return {k: (v[:1] if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in inputs.items()}


def test_stg_pass_is_diffusers_perturbed_attention_on_that_sample(model):
    from diffusers.models.transformers.transformer_ltx2 import LTX2PerturbedAttnProcessor

    t = copy.deepcopy(model.pipe.transformer)
    inputs = _inputs(model, 2)
    gate = torch.full((2,), 700.0)
    ptb = [Perturbation(), Perturbation(skip_video_self_attention=True, skip_audio_self_attention=True)]
    with torch.no_grad(), reference_semantics(t, gate, gate, ptb, stg_blocks=(1,)):
        ours_v, ours_a = t(**inputs, use_cross_timestep=False)
    # diffusers' LTX-2.3 path: block 1 with the perturbed-attention processor, every sample perturbed.
    block = t.transformer_blocks[1]
    block.perturbed_attn = True
    block.attn1.set_processor(LTX2PerturbedAttnProcessor())
    block.audio_attn1.set_processor(LTX2PerturbedAttnProcessor())
    with torch.no_grad(), reference_semantics(t, gate[:1], gate[:1], [Perturbation()], stg_blocks=()):
        ref_v, ref_a = t(**_first_row({**inputs, "hidden_states": inputs["hidden_states"][1:],
                                       "audio_hidden_states": inputs["audio_hidden_states"][1:],
                                       "encoder_hidden_states": inputs["encoder_hidden_states"][1:],
                                       "audio_encoder_hidden_states": inputs["audio_encoder_hidden_states"][1:]}),
                         spatio_temporal_guidance_blocks=[1], use_cross_timestep=False)
        plain_v, _ = t(**_first_row(inputs), use_cross_timestep=False)
    torch.testing.assert_close(ours_v[1:], ref_v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_a[1:], ref_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_v[:1], plain_v, rtol=1e-5, atol=1e-5)  # the other sample is untouched
    with torch.no_grad(), reference_semantics(t, gate, gate, [Perturbation()] * 2, stg_blocks=()):
        unperturbed_v, _ = t(**inputs, use_cross_timestep=False)
    assert (unperturbed_v[1:] - ours_v[1:]).abs().max() > 1e-3  # the perturbation does change that sample


def test_modality_pass_is_diffusers_isolated_modalities_on_that_sample(model):
    t = model.pipe.transformer
    inputs = _inputs(model, 2)
    gate = torch.full((2,), 700.0)
    iso = [Perturbation(), Perturbation(isolate_modalities=True)]
    with torch.no_grad(), reference_semantics(t, gate, gate, iso, stg_blocks=()):
        ours_v, ours_a = t(**inputs, use_cross_timestep=False)
    second = {k: (v[1:] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == 2 else v) for k, v in inputs.items()}
    with torch.no_grad(), reference_semantics(t, gate[:1], gate[:1], [Perturbation()], stg_blocks=()):
        ref_v, ref_a = t(**second, isolate_modalities=True, use_cross_timestep=False)
    torch.testing.assert_close(ours_v[1:], ref_v, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_a[1:], ref_a, rtol=1e-5, atol=1e-5)
    with torch.no_grad(), reference_semantics(t, gate, gate, [Perturbation()] * 2, stg_blocks=()):
        joint_v, _ = t(**inputs, use_cross_timestep=False)
    assert (joint_v[1:] - ours_v[1:]).abs().max() > 1e-4  # cutting the cross-attention changes that sample


def test_guidance_knobs_are_checked(client):
    for field, value, phrase in [("stg_scale", -1, "stg_scale must be >= 0"),
                                 ("guidance_rescale", 1.5, "guidance_rescale must be <= 1"),
                                 ("stg_blocks", [-1], "block numbers from 0"),
                                 ("stg_blocks", "29", "list of block numbers")]:
        r = client.post("/generate", json={"prompt": "x", field: value})
        assert r.status_code == 422 and r.json()["field"] == field and phrase in r.json()["error"], r.json()



# ------------------------------------------------------------------------------------------------
# Rule 3: the video encoder's spatial padding comes from `spatial_padding_mode` (ltx-core's
# configurator reads that key first for the flat LTX-2 config), then `encoder_spatial_padding_mode`.

@pytest.mark.parametrize("keys, expected", [
    ({"spatial_padding_mode": "reflect"}, "reflect"),
    ({"encoder_spatial_padding_mode": "replicate"}, "replicate"),
    ({"spatial_padding_mode": "reflect", "encoder_spatial_padding_mode": "zeros"}, "reflect"),
    ({}, "zeros"),
])
def test_encoder_padding_follows_the_references_keys(keys, expected):
    import miniature

    from ltx2.models.configs import video_vae_config

    vae = {k: v for k, v in miniature.MINI_CONFIG["vae"].items()
           if k not in ("spatial_padding_mode", "encoder_spatial_padding_mode")}
    config = video_vae_config({**miniature.MINI_CONFIG, "vae": {**vae, **keys}})
    assert config["encoder_spatial_padding_mode"] == expected
    assert config["decoder_spatial_padding_mode"] == keys.get("spatial_padding_mode", "reflect")


def test_a_reflect_checkpoint_encodes_with_reflect_padding(tmp_path):
    """The miniature file's metadata says "reflect" (and no encoder key): its encoder pads by reflection."""
    import miniature

    from ltx2.models.loading import load_single_file

    assert miniature.MINI_CONFIG["vae"]["spatial_padding_mode"] == "reflect"
    assert "encoder_spatial_padding_mode" not in miniature.MINI_CONFIG["vae"]
    modules = miniature.build_components(seed=1)
    miniature.write_checkpoint(tmp_path / "ltx-2-19b-distilled.safetensors", modules)
    loaded, _ = load_single_file(str(tmp_path / "ltx-2-19b-distilled.safetensors"), dtype=torch.float32)
    assert loaded["vae"].config.encoder_spatial_padding_mode == "reflect"
    # Every padded convolution of the encoder pads by reflection (the old reading gave zeros).
    modes = {m.padding_mode for m in loaded["vae"].encoder.modules() if isinstance(m, torch.nn.Conv3d)}
    assert modes == {"reflect"}


# ------------------------------------------------------------------------------------------------
# Rule 4: a conditioning image is cropped to even dimensions, sent through H.264 (libx264, CRF 33,
# veryfast, yuv420p), then resized bilinearly without antialiasing to cover, center-cropped, [-1, 1].

def numpy_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear resampling (align_corners=False, no antialiasing), from its definition."""
    in_h, in_w = img.shape[:2]

    def axis(out_n, in_n):
        x = (np.arange(out_n) + 0.5) * (in_n / out_n) - 0.5
        x = np.clip(x, 0, None)
        lo = np.minimum(np.floor(x).astype(int), in_n - 1)
        hi = np.minimum(lo + 1, in_n - 1)
        return lo, hi, x - lo

    y0, y1, wy = axis(out_h, in_h)
    x0, x1, wx = axis(out_w, in_w)
    img = img.astype(np.float64)
    top = img[y0][:, x0] * (1 - wx)[None, :, None] + img[y0][:, x1] * wx[None, :, None]
    bottom = img[y1][:, x0] * (1 - wx)[None, :, None] + img[y1][:, x1] * wx[None, :, None]
    return top * (1 - wy)[:, None, None] + bottom * wy[:, None, None]


def reference_round_trip(rgb: np.ndarray) -> np.ndarray:
    """The rule's H.264 round trip, written with PyAV here: even crop, libx264 CRF 33 veryfast, yuv420p."""
    import io

    import av

    h, w = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=1, options={"crf": "33", "preset": "veryfast"})
        stream.width, stream.height = w, h
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24").reformat(format="yuv420p")
        for packet in [*stream.encode(frame), *stream.encode()]:
            out.mux(packet)
    buf.seek(0)
    with av.open(buf) as inp:
        return next(inp.decode(video=0)).to_ndarray(format="rgb24")


def test_bilinear_cover_resize_matches_its_definition():
    from ltx2.media.conditioning_image import cover_bilinear

    rgb = np.random.default_rng(0).integers(0, 256, (37, 50, 3), dtype=np.uint8)
    got = cover_bilinear(rgb, 64, 32).numpy().transpose(1, 2, 0)
    # scale = max(32/37, 64/50) = 1.28: 37x50 -> ceil 47.36 = 48 x 64, then rows (48-32)//2 = 8.. cut out.
    expected = numpy_bilinear(rgb, 48, 64)[8:40]
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_conditioning_image_is_round_tripped_then_resized(model):
    from ltx2.pipelines.conditioning import image_pixels

    odd = gradient(width=161, height=91)  # odd sides: the round trip crops to 160x90 first
    rgb = np.asarray(odd)
    trip = reference_round_trip(rgb)
    assert trip.shape == (90, 160, 3) and not np.array_equal(trip, rgb[:90, :160])  # lossy
    got = image_pixels(odd, 128, 64)[0, :, 0].numpy().transpose(1, 2, 0)
    # 90x160 -> scale max(64/90, 128/160) = 0.8 -> 72x128, rows (72-64)//2 = 4.. kept.
    expected = numpy_bilinear(trip, 72, 128)[4:68] / 127.5 - 1.0
    np.testing.assert_allclose(got, expected, atol=2e-5)


# ------------------------------------------------------------------------------------------------
# Rule 5: a timestep-conditioned decoder decodes at t = 0.05 after 2.5% noise in the normalised latent.

def _timestep_vae():
    from diffusers import AutoencoderKLLTX2Video

    from ltx2.models import tiny

    plain = tiny.build_video_vae()
    config = {**dict(plain.config), "timestep_conditioning": True}
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    torch.manual_seed(0)
    vae = AutoencoderKLLTX2Video(**config)
    vae.use_framewise_encoding = vae.use_framewise_decoding = False
    g = torch.Generator().manual_seed(2)
    vae.latents_mean.copy_(torch.randn(vae.latents_mean.shape, generator=g))
    vae.latents_std.copy_(torch.rand(vae.latents_std.shape, generator=g) + 0.5)
    return vae.eval()


@pytest.mark.parametrize("conditioned", [True, False])
def test_decode_noise_and_timestep(model, monkeypatch, conditioned):
    vae = _timestep_vae() if conditioned else model.pipe.vae
    seen = {}
    real_decode = vae.decode

    def spy(z, temb=None, *args, **kwargs):
        seen["z"], seen["temb"] = z.clone(), temb
        return real_decode(z, temb, *args, **kwargs)

    monkeypatch.setattr(vae, "decode", spy)
    monkeypatch.setattr(model.pipe, "vae", vae) if conditioned else None
    monkeypatch.setitem(model.placement.components, "vae", vae)
    grid = stages.LatentGrid(2, 2, 2, 2, 16, 9, 25)
    z = torch.randn(1, 8, 128, generator=torch.Generator().manual_seed(7))  # normalised tokens
    stream = stages.Stream(z.clone(), torch.zeros(1), 8)
    frames, latents = stages.decode_video(model, stream, grid, 64, 48, torch.Generator().manual_seed(9))
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    unpacked = z.reshape(1, 2, 2, 2, 128).permute(0, 4, 1, 2, 3)  # (1, C, F, H, W)
    torch.testing.assert_close(latents, unpacked * std + mean)  # what the model made, reported as is
    if conditioned:
        noise = torch.randn(unpacked.shape, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(seen["z"], (0.975 * unpacked + 0.025 * noise) * std + mean)
        assert seen["temb"].tolist() == [pytest.approx(0.05)]
    else:
        torch.testing.assert_close(seen["z"], unpacked * std + mean)
        assert seen["temb"] is None
    assert frames.shape == (9, 48, 64, 3)  # 64x64 decoded, center-cropped
