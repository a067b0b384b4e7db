"""Video to video with an IC-LoRA (`ic_lora`, `video`, `control`): the request rules, the IC-LoRA file's checks
and metadata, Canny edges on real pixels, the reference tokens the transformer sees on the tiny preset, and
every way in (POST /generate with a data URI and /v1/videos with a multipart video on a live server, the
RunPod handler, the CLI), plus `ltx2 download --ic-loras`'s plan per family."""

from __future__ import annotations

import base64
import io
import json

import av
import numpy as np
import pytest
import requests
import torch
from safetensors.torch import load_file, save_file

import hostile
from lora_files import write_lora
from servers import start_server, stop_server
from test_retake import clip, mp4_frames, wait_job

from ltx2.media.sandbox import canny
from ltx2.pipelines import video_to_video as v2v_pipeline
from ltx2.pipelines.conditioning import decode_conditioning
from ltx2.pipelines.generate import generate, image_targets
from ltx2.pipelines.loras import LoraPolicy, resolve
from ltx2.schema import GenerateRequest, InvalidRequest, validation_error_body

SIDE, FRAMES, FPS = 64, 17, 25
CLIP = clip(FRAMES, SIDE, SIDE, FPS, audio=False)
URI = "data:video/mp4;base64," + base64.b64encode(CLIP).decode()
PNG = "data:image/png;base64," + base64.b64encode(hostile.png(SIDE, SIDE)).decode()
BASE = {"prompt": "a red ball, edges", "video": URI, "ic_lora": "ic", "num_inference_steps": 1, "seed": 5}


def mask_clip(levels, side: int = SIDE, split: bool = False, fps: int = FPS) -> bytes:
    """An MP4 mask: frame k all grey level levels[k] (0..255); with `split`, its right half black. Lossless H.264
    4:4:4, so a grey level comes back within one step."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = side
        stream.pix_fmt, stream.options = "yuv444p", {"crf": "0", "bf": "0"}
        for level in levels:
            grey = np.full((side, side, 3), level, np.uint8)
            if split:
                grey[:, side // 2:] = 0
            for packet in stream.encode(av.VideoFrame.from_ndarray(grey, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


# Frame 0 white, frames 1-8 mid grey, 9-16 black: on 3 latent frames, weights 1, ~0.5, 0.
MASK = mask_clip([255] + [128] * 8 + [0] * 8)
MASK_URI = "data:video/mp4;base64," + base64.b64encode(MASK).decode()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, model):
    root = tmp_path_factory.mktemp("v2v-models")
    (root / "loras").mkdir()
    ic_lora_file(root / "loras" / "ic.safetensors", model, 1)
    ic_lora_file(root / "loras" / "ic-half.safetensors", model, 2, {"reference_downscale_factor": "2"})
    ic_lora_file(root / "loras" / "ic-bad.safetensors", model, 3, {"reference_downscale_factor": "zero"})
    ic_lora_file(root / "loras" / "ic-every-2nd.safetensors", model, 4, {"reference_temporal_scale_factor": "2"})
    # An LTX-2.3 LoRA (its prompt AdaLN, which LTX-2 19B has not): another family's.
    save_file({"diffusion_model.prompt_adaln_single.linear.lora_A.weight": torch.zeros(4, 8, dtype=torch.bfloat16),
               "diffusion_model.prompt_adaln_single.linear.lora_B.weight": torch.zeros(8, 4, dtype=torch.bfloat16)},
              str(root / "loras" / "ic-23.safetensors"))
    return root


def ic_lora_file(path, model, seed: int, metadata: dict | None = None) -> None:
    """A tiny LoRA for the tiny model, with the metadata ltx-pipelines reads an IC-LoRA's reference scale from."""
    write_lora(path, model, seed=seed)
    if metadata:
        save_file(load_file(str(path)), str(path), metadata=metadata)


def policy(models_dir, tmp_path) -> LoraPolicy:
    return LoraPolicy(models_dir=str(models_dir), cache_dir=str(tmp_path / "lora-cache"))


def run(model, fields: dict, pol: LoraPolicy, **kw):
    request = GenerateRequest.model_validate({**BASE, **fields})
    cond = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate,
                               targets=image_targets(model, request, pol))
    return generate(model, request, conditioning=cond, adapters=resolve(model, request, pol), **kw), cond


# ---------------------------------------------------------------------------------------- the rules

@pytest.mark.parametrize("fields, field, words", [
    ({"video": None}, "ic_lora", "send video too"),
    ({"ic_lora": None}, "video", "used by retake"),
    ({"control": "sobel"}, "control", "canny"),
    ({"control": "depth"}, "control", "precomputed depth video"),
    ({"control": "pose"}, "control", "precomputed pose video"),
    ({"ic_lora": None, "video": None, "control": "canny"}, "control", "send ic_lora"),
    ({"ic_lora": None, "video": None, "video_strength": 0.5}, "video_strength", "send ic_lora"),
    ({"retake": {"start": 0.1, "end": 0.2}}, "ic_lora", "cannot be used with retake"),
    ({"match_audio_length": True}, "match_audio_length", "cannot be used with ic_lora"),
    ({"width": 64}, "height", "width and height together"),
    ({"video_strength": 1.5}, "video_strength", "must be <= 1.0"),
    ({"ic_lora_scale": -1}, "ic_lora_scale", "must be >= 0"),
    ({"ic_lora": None, "video": None, "conditioning_attention_strength": 0.5}, "conditioning_attention_strength",
     "send ic_lora"),
    ({"conditioning_attention_strength": 1.01}, "conditioning_attention_strength", "must be <= 1.0"),
    ({"conditioning_attention_strength": -0.1}, "conditioning_attention_strength", "must be >= 0"),
    ({"ic_lora": None, "video": None, "conditioning_attention_mask": MASK_URI}, "conditioning_attention_mask",
     "send ic_lora"),
    ({"image_start": PNG}, "width", "give width and height"),  # fitted before the video sets the size
])
def test_bad_video_to_video_requests_are_refused_naming_the_field(fields, field, words):
    with pytest.raises(Exception) as refused:
        GenerateRequest.model_validate({**BASE, **fields})
    body = validation_error_body(list(refused.value.errors()))
    assert body["field"] == field and words in body["error"], body


@pytest.mark.parametrize("name, words", [
    ("missing", "no LoRA file 'missing'"),
    ("ic-23", "LTX-2.3"),
    ("ic-bad", "reference_downscale_factor must be a whole number"),
])
def test_the_ic_lora_file_is_checked_before_its_video_is_decoded(model, models_dir, tmp_path, name, words):
    with pytest.raises(InvalidRequest) as refused:
        image_targets(model, GenerateRequest.model_validate({**BASE, "ic_lora": name}), policy(models_dir, tmp_path))
    assert refused.value.field == "ic_lora" and words in str(refused.value), str(refused.value)


def test_a_downscaled_ic_lora_sizes_the_reference_and_its_width_rule(model, models_dir, tmp_path):
    pol = policy(models_dir, tmp_path)
    request = GenerateRequest.model_validate({**BASE, "ic_lora": "ic-half"})
    targets = image_targets(model, request, pol)
    # two-stage: stage 1 is 1/2, the reference 1/4; a mask is read at stage 1's size (2x the reference's), pooled
    # on the VAE's 8x32 grid in the model's dtype
    assert targets.multiple == 128 and targets.reference == (1, 4, 1, 2, (8, 32), "float32")
    with pytest.raises(InvalidRequest) as refused:
        image_targets(model, GenerateRequest.model_validate({**BASE, "ic_lora": "ic-half", "width": 64, "height": 128}),
                      pol)
    assert refused.value.field == "width" and "multiple of 128" in str(refused.value)


# --------------------------------------------------------------------------------------------- canny

def test_canny_marks_the_edge_of_a_step_and_nothing_on_flat_ground():
    frame = torch.full((1, 3, 1, 32, 32), -1.0)
    frame[..., 16:] = 1.0  # black left half, white right half: one vertical edge
    edges = canny(frame)
    assert edges.shape == frame.shape and set(edges.unique().tolist()) == {-1.0, 1.0}
    on = (edges[0, 0, 0] > 0).numpy()
    assert (edges[0, 0] == edges[0, 1]).all() and (edges[0, 1] == edges[0, 2]).all()  # grey edges in every channel
    columns = set(np.nonzero(on)[1].tolist())
    assert columns <= {15, 16} and on[:, 15:17].any(axis=1).all(), columns  # the boundary, all the way down
    assert not on[:, :14].any() and not on[:, 18:].any()


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_control_canny_decodes_the_reference_as_its_edges(model, models_dir, tmp_path):
    pol = policy(models_dir, tmp_path)
    raw = GenerateRequest.model_validate(BASE)
    edged = GenerateRequest.model_validate({**BASE, "control": "canny"})
    rate = model.pipe.audio_vae.config.sample_rate
    plain = decode_conditioning(raw, rate, model.vocoder_rate, targets=image_targets(model, raw, pol))
    edges = decode_conditioning(edged, rate, model.vocoder_rate, targets=image_targets(model, edged, pol))
    assert plain.video.shape == edges.video.shape == (1, 3, FRAMES, SIDE // 2, SIDE // 2)  # stage 1's size
    assert edges.video_info["control"] == "canny" and edges.video_info["reference"] == [SIDE // 2, SIDE // 2]
    assert set(edges.video.unique().tolist()) <= {-1.0, 1.0} and (edges.video > 0).any()
    assert torch.equal(edges.video, canny(plain.video))  # the edges of the very frames the raw video gives


# ---------------------------------------------------------------------------------------- the tokens

@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_an_image_with_ic_lora_runs_at_the_given_size(model, models_dir, tmp_path):
    result, _ = run(model, {"image_start": PNG, "width": SIDE, "height": SIDE}, policy(models_dir, tmp_path))
    assert result.frames.shape[1:3] == (SIDE, SIDE)


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_stage_one_carries_the_reference_tokens_and_they_change_the_video(model, models_dir, tmp_path):
    pol = policy(models_dir, tmp_path)
    seen = []
    hook = model.pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["hidden_states"].shape[1], kwargs["video_coords"][0].clone())),
        with_kwargs=True)
    try:
        result, _ = run(model, {"control": "canny"}, pol)
        seen_v2v, seen[:] = list(seen), []
        held, _ = run(model, {"control": "canny", "video_strength": 0.0}, pol)
        seen[:] = []
        plain = generate(model, {"prompt": BASE["prompt"], "num_inference_steps": 1, "seed": 5, "width": SIDE,
                                 "height": SIDE, "num_frames": FRAMES})
        seen_plain = [seen[0], seen[-1]]
    finally:
        hook.remove()
    # Stage 1 (32x32: 3 latent frames of 1x1) holds its 3 tokens and the reference's 3; stage 2 its own 12 only.
    (first, coords), (second, _) = seen_v2v[0], seen_v2v[-1]
    assert (first, second) == (6, 12) and [n for n, _ in seen_plain] == [3, 12]
    own, ref = coords[:, :3], coords[:, 3:]
    assert torch.equal(own, ref)  # downscale 1, temporal 1: the reference sits on the target's own grid
    assert result.reference == {"width": 32, "height": 32, "frames": FRAMES, "downscale": 1, "temporal": 1,
                                "control": "canny", "attention_mask": None}
    assert result.pipeline == "ic-lora-two-stage" and [lora["stage"] for lora in result.loras] == ["stage1"]
    assert result.frames.shape == (FRAMES, SIDE, SIDE, 3)
    differs = lambda a, b: np.abs(a.frames.astype(int) - b.frames.astype(int)).mean()  # noqa: E731
    assert differs(result, plain) > 1 and differs(result, held) > 0.1


@pytest.mark.parametrize("fields, reference, stage1_tokens", [
    # 128x128: stage 1 at 64x64 (2x2 latents, 3 frames: 12 tokens), the reference at 32x32 (1x1: 3 tokens)
    ({"ic_lora": "ic-half", "video": "data:video/mp4;base64," + base64.b64encode(clip(FRAMES, 128, 128, FPS, False))
      .decode()}, {"width": 32, "height": 32, "frames": FRAMES, "downscale": 2, "temporal": 1}, 12 + 3),
    # every 2nd frame after the first: 9 of 17 frames, 2 latent frames (2 tokens beside stage 1's 3)
    ({"ic_lora": "ic-every-2nd"}, {"width": 32, "height": 32, "frames": 9, "downscale": 1, "temporal": 2}, 3 + 2),
])
@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_ic_loras_metadata_sizes_the_reference_stage_one_reads(model, models_dir, tmp_path, fields, reference,
                                                                   stage1_tokens):
    seen = []
    hook = model.pipe.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["hidden_states"].shape[1]), with_kwargs=True)
    try:
        result, cond = run(model, fields, policy(models_dir, tmp_path))
    finally:
        hook.remove()
    assert {k: v for k, v in result.reference.items() if k not in ("control", "attention_mask")} == reference
    assert tuple(cond.video.shape[2:]) == (reference["frames"], reference["height"], reference["width"])
    assert seen[0] == stage1_tokens


def test_reference_positions_follow_the_downscale_and_temporal_factors(model):
    from ltx2.pipelines.stages import LatentGrid

    grid = LatentGrid(frames=3, height=4, width=4, audio_frames=1, mel_bins=1, num_frames=17, fps=25)
    rope = model.pipe.transformer.rope
    target = rope.prepare_video_coords(1, 3, 4, 4, model.device, fps=25)
    # Half size, every 2nd frame (9 pixel frames: 2 latent frames): VideoConditionByReferenceLatent's arithmetic.
    got = v2v_pipeline.reference_coords(model, grid, 2, 2, 2, downscale=2, temporal=2)
    base = rope.prepare_video_coords(1, 2, 2, 2, model.device, fps=25)
    expected = base.clone()
    expected[:, 0] = (base[:, 0] * 2 - 1 / 25).clamp(min=0)
    expected[:, 1:] *= 2
    assert torch.allclose(got, expected, atol=1e-7)
    assert got[:, 1:].max() == target[:, 1:].max()  # it spans the target's frame, though half its size
    assert got[0, 0, -1, 1] == pytest.approx(target[0, 0, -1, 1])  # its last patch ends with the target's


# ------------------------------------------------------------------------------ attention strength

def attention_calls(model):
    """Every attention module of the transformer, and a list that gets (name, attention_mask) of each call."""
    seen, handles = [], []
    for index, block in enumerate(model.pipe.transformer.transformer_blocks):
        for name in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
            handles.append(getattr(block, name).register_forward_hook(
                lambda module, args, kwargs, out, name=f"{index}.{name}": seen.append((name, kwargs.get(
                    "attention_mask", args[2] if len(args) > 2 else None))), with_kwargs=True))
    return seen, handles


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_attention_strength_biases_only_stage_ones_video_self_attention(model, models_dir, tmp_path):
    pol = policy(models_dir, tmp_path)
    seen, handles = attention_calls(model)
    try:
        omitted, _ = run(model, {}, pol)
        unbiased = [name for name, mask in seen if mask is not None and name.endswith("attn1")]
        seen.clear()
        one, _ = run(model, {"conditioning_attention_strength": 1.0}, pol)
        assert not [name for name, mask in seen if mask is not None and name.endswith("attn1")]
        seen.clear()
        half, _ = run(model, {"conditioning_attention_strength": 0.5}, pol)
    finally:
        for handle in handles:
            handle.remove()
    assert not unbiased  # strength 1 (the default): no mask is built, nothing changes
    assert np.array_equal(one.frames, omitted.frames)
    masked = [(name, mask) for name, mask in seen if mask is not None]
    blocks = len(model.pipe.transformer.transformer_blocks)
    # Stage 1's one step: each block's attn1 and nothing else; stage 2 (3 steps) none.
    assert [name for name, _ in masked] == [f"{i}.attn1" for i in range(blocks)], [name for name, _ in masked]
    assert sum(name == "0.attn1" for name, _ in seen) == 4
    bias = masked[0][1][0, 0]  # 3 generated tokens, then the reference's 3
    half_log = float(torch.log(torch.tensor(0.5)))
    assert torch.equal(bias[:3, :3], torch.zeros(3, 3)) and torch.equal(bias[3:, 3:], torch.zeros(3, 3))
    assert torch.allclose(bias[:3, 3:], torch.full((3, 3), half_log)) and torch.allclose(bias[3:, :3], bias[:3, 3:])
    assert np.abs(half.frames.astype(int) - omitted.frames.astype(int)).mean() > 0.05  # it changes the video


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_attention_strength_zero_hides_the_reference_from_the_generated_tokens(model, models_dir, tmp_path):
    """ltx-core's mask at 0: the generated tokens' self-attention is what it would be without the reference (the
    dtype's smallest bias: exp gives exactly 0), and the reference attends only to itself. (It still reaches the
    audio through the audio<->video attention, as in ltx-core, so the video as a whole is not the plain one's.)"""
    attn = model.pipe.transformer.transformer_blocks[0].attn1
    calls = []
    handle = attn.register_forward_hook(
        lambda module, args, kwargs, out: calls.append((dict(kwargs), out.clone())) if not calls else None,
        with_kwargs=True)
    try:
        # ic_lora_scale 0: the LoRA's side paths, which exist only inside the run, add nothing to attn1 there
        run(model, {"conditioning_attention_strength": 0.0, "ic_lora_scale": 0.0}, policy(models_dir, tmp_path))
    finally:
        handle.remove()
    (kwargs, out), = calls
    hidden, rope, bias = kwargs["hidden_states"], kwargs["query_rotary_emb"], kwargs["attention_mask"]
    assert hidden.shape[1] == 6 and bias[0, 0, :3, 3:].max() == torch.finfo(bias.dtype).min
    own = tuple(part[..., :3, :] if part.shape[-2] == 6 else part[:, :3] for part in rope)
    ref_rope = tuple(part[..., 3:, :] if part.shape[-2] == 6 else part[:, 3:] for part in rope)
    with torch.inference_mode():
        alone = attn(hidden[:, :3], query_rotary_emb=own)  # the generated tokens without the reference at all
        ref_alone = attn(hidden[:, 3:], query_rotary_emb=ref_rope)
    assert torch.allclose(out[:, :3], alone, atol=1e-5), (out[:, :3] - alone).abs().max()
    assert torch.allclose(out[:, 3:], ref_alone, atol=1e-5)
    with torch.inference_mode():  # and with the reference in view (no bias) they differ: the test can tell
        seen = attn(hidden, query_rotary_emb=rope)
    assert (seen[:, :3] - alone).abs().max() > 1e-2


def test_the_bias_keeps_keyframes_and_reference_apart_as_ltx_core_does():
    from ltx2.pipelines.attention_strength import bias_bytes, self_attention_bias

    # 4 generated tokens, 2 keyframe tokens, 3 reference tokens with their own weights.
    bias = self_attention_bias(4, 6, torch.tensor([1.0, 0.25, 0.0]), torch.float32, torch.device("cpu"))[0, 0]
    low = torch.finfo(torch.float32).min
    assert bias.shape == (9, 9) and bias.stride(0) == 16  # rows aligned for the fused kernels
    assert torch.equal(bias[:6, :6], torch.zeros(6, 6)) and torch.equal(bias[6:, 6:], torch.zeros(3, 3))
    expected = torch.tensor([0.0, float(torch.log(torch.tensor(0.25))), low])
    assert torch.equal(bias[:4, 6:], expected.expand(4, 3)) and torch.equal(bias[6:, :4], expected[:, None].expand(3, 4))
    assert (bias[4:6, 6:] == low).all() and (bias[6:, 4:6] == low).all()  # keyframes <-> reference: 0
    assert bias_bytes(9, torch.bfloat16) == 9 * 16 * 2


def test_admission_counts_the_bias(model):
    from ltx2.serving.admission import Admission

    admission = Admission(model, margin=1.0)
    fields = {**BASE, "width": 512, "height": 512, "num_frames": 121, "use_multiscale": False}
    plain = admission.stage_bytes(GenerateRequest.model_validate(fields), 121, 512, 512)[0]["denoise"]
    biased = admission.stage_bytes(GenerateRequest.model_validate({**fields, "conditioning_attention_strength": 0.5}),
                                   121, 512, 512)[0]["denoise"]
    masked = admission.stage_bytes(GenerateRequest.model_validate({**fields, "conditioning_attention_mask": MASK_URI}),
                                   121, 512, 512)[0]["denoise"]  # a mask builds the bias at strength 1 too
    tokens = 2 * 16 * 16 * 16  # 16 latent frames of 16x16, and the reference's as many
    assert biased - plain == masked - plain == tokens * tokens * 4  # float32 on the CPU


# ------------------------------------------------------------------------------ attention mask

def test_the_mask_pools_onto_the_latent_grid_by_area_then_by_runs_of_frames():
    """ltx-pipelines' downsample_mask_video_to_latent, written out by hand: each frame's 2x2 blocks averaged onto a
    2x2 grid, the first frame alone, then each later latent frame the mean of its run of (F - 1) / (f - 1) frames."""
    from ltx2.media.attention_mask import frames_fit, to_latent

    torch.manual_seed(0)
    mask = torch.rand(1, 1, 17, 4, 4)
    blocks = mask[0, 0].reshape(17, 2, 2, 2, 2).mean(dim=(2, 4))  # (F, 2, 2): the area resize
    for frames, run in ((3, 8), (2, 16), (17, 1)):
        expected = torch.cat([blocks[:1]] + [blocks[1 + j * run:1 + (j + 1) * run].mean(0, keepdim=True)
                                            for j in range(frames - 1)])
        assert torch.allclose(to_latent(mask, (frames, 2, 2)), expected.flatten(), atol=1e-6), frames
    assert torch.allclose(to_latent(mask, (1, 2, 2)), blocks[0].flatten(), atol=1e-6)  # one latent frame: frame 0
    assert frames_fit(17, 3) and frames_fit(9, 3) and frames_fit(3, 3) and frames_fit(5, 1)
    assert not frames_fit(4, 3) and not frames_fit(1, 3) and not frames_fit(16, 3)
    half = to_latent(mask.to(torch.bfloat16), (3, 2, 2))  # the dtype is the mask's, as in ltx-pipelines
    assert half.dtype == torch.bfloat16


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_mask_weights_each_reference_token_in_stage_ones_bias(model, models_dir, tmp_path):
    pol = policy(models_dir, tmp_path)
    attn = model.pipe.transformer.transformer_blocks[0].attn1
    biases = []
    handle = attn.register_forward_hook(  # after the run's own pre-hook has set the bias
        lambda module, args, kwargs, out: biases.append(kwargs.get("attention_mask")), with_kwargs=True)
    try:
        result, cond = run(model, {"conditioning_attention_mask": MASK_URI, "conditioning_attention_strength": 0.5}, pol)
        full, _ = run(model, {"conditioning_attention_mask": MASK_URI}, pol)  # strength 1: the mask alone
    finally:
        handle.remove()
    # Two stages at 64x64: the reference on stage 1's 1x1 latent grid, 3 latent frames (17 frames).
    weights = cond.attention_mask
    assert tuple(weights.shape) == (3, 1, 1) and result.reference["attention_mask"] == [3, 1, 1]
    assert weights[0, 0, 0] == pytest.approx(1.0, abs=1 / 255) and weights[1, 0, 0] == pytest.approx(128 / 255, abs=2 / 255)
    assert weights[2, 0, 0] == pytest.approx(0.0, abs=1 / 255)
    low = torch.finfo(torch.float32).min
    for bias, strength in ((biases[0], 0.5), (biases[4], 1.0)):  # stage 1's pass of each run (stage 2: 3 more)
        expected = weights.flatten() * strength
        logs = torch.where(expected > 0, torch.log(expected.clamp(min=1e-38)), torch.tensor(low))
        bias = bias[0, 0]
        assert torch.allclose(bias[:3, 3:], logs.expand(3, 3)) and torch.allclose(bias[3:, :3], logs[:, None].expand(3, 3))
        assert torch.equal(bias[3:, 3:], torch.zeros(3, 3))
    assert [b is None for b in biases] == [False, True, True, True] * 2
    assert np.abs(result.frames.astype(int) - full.frames.astype(int)).mean() > 0.05


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_a_mask_that_cannot_be_matched_is_refused_naming_it(model, models_dir, tmp_path):
    pol = policy(models_dir, tmp_path)
    rate = model.pipe.audio_vae.config.sample_rate

    def decode(mask: str):
        request = GenerateRequest.model_validate({**BASE, "conditioning_attention_mask": mask})
        return decode_conditioning(request, rate, model.vocoder_rate, targets=image_targets(model, request, pol))

    uri = lambda data: "data:video/mp4;base64," + base64.b64encode(data).decode()  # noqa: E731
    five = decode(uri(mask_clip([255, 0, 0, 255, 255])))  # 5 frames: 1, then runs of 2 onto 3 latent frames
    assert five.attention_mask.flatten().tolist() == pytest.approx([1.0, 0.0, 1.0], abs=1 / 255)
    for mask, words in ((uri(mask_clip([255] * 4)), "has 4 frames"), (uri(mask_clip([255])), "has 1 frames"),
                        (PNG, "image/png"), (uri(b"\x00" * 64), "conditioning_attention_mask")):
        with pytest.raises(InvalidRequest) as refused:
            decode(mask)
        assert refused.value.field == "conditioning_attention_mask" and words in str(refused.value), str(refused.value)


# ----------------------------------------------------------------------------------------- ways in

@pytest.fixture(scope="module")
def v2v_server(tmp_path_factory, models_dir):
    out = tmp_path_factory.mktemp("v2v-live")
    proc, base = start_server(out / "output", out / "server.log", "--models-dir", str(models_dir))
    yield base
    stop_server(proc)


def check_file(data: bytes) -> None:
    frames, _ = mp4_frames(data)
    assert frames.shape == (FRAMES, SIDE, SIDE, 3) and frames.std() > 1


def test_a_live_server_runs_video_to_video_through_generate_and_v1_videos(v2v_server):
    r = requests.post(v2v_server + "/generate", json={**BASE, "control": "canny"}, timeout=300)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pipeline"] == "ic-lora-two-stage" and body["reference"]["control"] == "canny", body
    assert body["loras"][0]["path"] == "ic" and body["loras"][0]["stage"] == "stage1"
    check_file(base64.b64decode(body["video"].split(",", 1)[1]))

    form = {"prompt": BASE["prompt"], "ic_lora": "ic", "control": "canny", "num_inference_steps": "1", "seed": "5",
            "conditioning_attention_strength": "0.5"}
    r = requests.post(v2v_server + "/v1/videos", data=form, files={"input_reference": ("clip.mp4", CLIP, "video/mp4")},
                      timeout=60)
    assert r.status_code == 200, r.text
    view = wait_job(v2v_server, f"/v1/videos/{r.json()['id']}")
    assert view["status"] == "completed", view
    check_file(requests.get(f"{v2v_server}/v1/videos/{view['id']}/content", timeout=60).content)

    # Refusals in each protocol's shape, naming the field.
    r = requests.post(v2v_server + "/generate", json={**BASE, "control": "depth"}, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "control" and "precomputed" in r.json()["error"], r.text
    r = requests.post(v2v_server + "/generate", json={**BASE, "ic_lora": "ic-23"}, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "ic_lora", r.text
    r = requests.post(v2v_server + "/generate", json={"prompt": "a", "conditioning_attention_strength": 0.5}, timeout=60)
    assert r.status_code == 422 and r.json()["field"] == "conditioning_attention_strength", r.text
    r = requests.post(v2v_server + "/v1/videos", data={**form, "conditioning_attention_strength": "1.5"},
                      files={"input_reference": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["param"] == "conditioning_attention_strength", r.text
    r = requests.post(v2v_server + "/v1/videos", data={**form, "control": "pose"},
                      files={"input_reference": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["param"] == "control", r.text
    r = requests.post(v2v_server + "/v1/videos", data={**form, "ic_lora": "nope"},
                      files={"input_reference": ("clip.mp4", CLIP, "video/mp4")}, timeout=60)
    assert r.status_code in (200, 422), r.text
    if r.status_code == 200:  # refused when its job is prepared: the job fails naming ic_lora
        view = wait_job(v2v_server, f"/v1/videos/{r.json()['id']}", done=("completed", "failed"))
        assert view["status"] == "failed" and "ic_lora" in view["error"]["message"], view
    assert requests.get(v2v_server + "/health", timeout=10).status_code == 200


def test_a_live_server_takes_the_attention_mask_on_every_way_in(v2v_server):
    # /generate: a data URI
    r = requests.post(v2v_server + "/generate", json={**BASE, "conditioning_attention_mask": MASK_URI}, timeout=300)
    assert r.status_code == 200 and r.json()["reference"]["attention_mask"] == [3, 1, 1], r.text[:300]
    # /jobs: the mask is kept in the job's inputs file (not its record) and read back when the job runs
    r = requests.post(v2v_server + "/jobs", json={**BASE, "conditioning_attention_mask": MASK_URI}, timeout=60)
    assert r.status_code == 202, r.text
    view = wait_job(v2v_server, f"/jobs/{r.json()['id']}")
    assert view["status"] == "succeeded" and view["result"]["reference"]["attention_mask"] == [3, 1, 1], view
    # /v1/videos: a multipart part of its own, beside the reference video's
    form = {"prompt": BASE["prompt"], "ic_lora": "ic", "num_inference_steps": "1", "seed": "5"}
    files = {"input_reference": ("clip.mp4", CLIP, "video/mp4"), "conditioning_attention_mask": ("m.mp4", MASK, "video/mp4")}
    r = requests.post(v2v_server + "/v1/videos", data=form, files=files, timeout=60)
    assert r.status_code == 200, r.text
    view = wait_job(v2v_server, f"/v1/videos/{r.json()['id']}")
    assert view["status"] == "completed", view
    assert requests.get(f"{v2v_server}/jobs/{view['id']}", timeout=10).json()["result"]["reference"]["attention_mask"] \
        == [3, 1, 1]
    # Refusals naming the field: frames that cannot pool onto the reference's, not a video, no ic_lora.
    four = "data:video/mp4;base64," + base64.b64encode(mask_clip([255] * 4)).decode()
    for mask, words in ((four, "has 4 frames"), (PNG, "image/png")):
        r = requests.post(v2v_server + "/generate", json={**BASE, "conditioning_attention_mask": mask}, timeout=60)
        assert r.status_code == 422 and r.json()["field"] == "conditioning_attention_mask" and words in r.json()["error"], \
            r.text
    r = requests.post(v2v_server + "/v1/videos", data={"prompt": "a"},
                      files={"conditioning_attention_mask": ("m.mp4", MASK, "video/mp4")}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["param"] == "conditioning_attention_mask", r.text
    assert requests.get(v2v_server + "/health", timeout=10).status_code == 200


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_runpod_handler_runs_video_to_video(model, models_dir, monkeypatch):
    from ltx2.serving.worker import make_handler

    monkeypatch.setenv("LTX2_MODELS_DIR", str(models_dir))
    handler = make_handler(model, send_progress=lambda job, progress: None)
    out = handler({"id": "v", "input": {**BASE, "control": "canny", "conditioning_attention_strength": 0.25}})
    assert out.get("reference", {}).get("control") == "canny", {k: v for k, v in out.items() if k != "video"}
    check_file(base64.b64decode(out["video"].split(",", 1)[1]))
    refused = handler({"id": "v", "input": {**BASE, "ic_lora": "missing"}})
    assert refused.get("field") == "ic_lora", refused
    refused = handler({"id": "v", "input": {**BASE, "conditioning_attention_strength": -1}})
    assert refused.get("field") == "conditioning_attention_strength", refused
    out = handler({"id": "v", "input": {**BASE, "conditioning_attention_mask": MASK_URI}})
    assert out.get("reference", {}).get("attention_mask") == [3, 1, 1], {k: v for k, v in out.items() if k != "video"}
    for mask in (PNG, "http://127.0.0.1:9/mask.mp4"):  # not a video; a URL the fetch guard refuses (loopback)
        refused = handler({"id": "v", "input": {**BASE, "conditioning_attention_mask": mask}})
        assert refused.get("field") == "conditioning_attention_mask", refused


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_the_cli_runs_video_to_video_from_a_file(model, models_dir, tmp_path, monkeypatch, capsys):
    from ltx2 import cli

    monkeypatch.setattr("ltx2.models.loaded.load_from_settings", lambda settings: model)
    monkeypatch.setenv("LTX2_MODELS_DIR", str(models_dir))
    (tmp_path / "clip.mp4").write_bytes(CLIP)
    (tmp_path / "mask.mp4").write_bytes(MASK)
    out = tmp_path / "out.mp4"
    cli.main(["generate", "--prompt", "edges", "--video", str(tmp_path / "clip.mp4"), "--ic-lora", "ic",
              "--control", "canny", "--ic-lora-scale", "0.8", "--video-strength", "0.9",
              "--conditioning-attention-strength", "0.5", "--attention-mask", str(tmp_path / "mask.mp4"),
              "--num-inference-steps", "1",
              "--seed", "5", "-o", str(out)])
    check_file(out.read_bytes())
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert summary["loras"][0]["scale"] == 0.8 and summary["reference"]["control"] == "canny", summary
    assert summary["reference"]["attention_mask"] == [3, 1, 1], summary
    with pytest.raises(SystemExit) as exited:
        cli.main(["generate", "--prompt", "a", "--video", str(tmp_path / "clip.mp4"), "--ic-lora", "ic",
                  "--control", "depth", "-o", str(out)])
    assert exited.value.code == 2 and "control" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- download

@pytest.mark.parametrize("family, files", [
    ("ltx-2", ["ltx-2-19b-ic-lora-canny-control.safetensors", "ltx-2-19b-ic-lora-depth-control.safetensors",
               "ltx-2-19b-ic-lora-pose-control.safetensors", "ltx-2-19b-ic-lora-detailer.safetensors"]),
    ("ltx-2.3", ["ltx-2.3-22b-ic-lora-union-control-ref0.5.safetensors",
                 "ltx-2.3-22b-ic-lora-motion-track-control-ref0.5.safetensors",
                 "ltx-2.3-22b-ic-lora-dubit-0.9.safetensors"]),
    ("ltx-2.5", ["ltx-2.5-22b-ic-lora-pixel-spatial-upscaler-x2-1.0.safetensors"]),
])
def test_download_ic_loras_fetches_the_familys_own_into_the_lora_directory(family, files, tmp_path, monkeypatch):
    from ltx2 import cli
    from ltx2.models import download

    fetched = []
    monkeypatch.setattr(download, "hf_hub_download",
                        lambda repo, filename, local_dir, token=None: fetched.append((repo, filename, local_dir)))
    cli.main(["download", "--family", family, "--models-dir", str(tmp_path), "--skip-checkpoint", "--skip-gemma",
              "--skip-upsampler", "--ic-loras"])
    assert [f for _, f, _ in fetched] == files
    assert {where for _, _, where in fetched} == {str(tmp_path / "loras")}
    assert all(repo.startswith("Lightricks/") and "IC-LoRA" in repo for repo, _, _ in fetched)

