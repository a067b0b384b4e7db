"""The two-stage distilled pipeline (use_multiscale): stage sizes and sigmas, the x2 latent upsampler
round trip, the noise re-injected before stage 2, the upsampler file, and every entry point."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import miniature
import numpy as np
import pytest
import torch

from ltx2 import generate
from ltx2.media.encode import probe_mp4
from ltx2.models.configs import CheckpointError
from ltx2.models.upsampler import UPSAMPLER_FILE, load_upsampler
from ltx2.pipelines import stages
from ltx2.pipelines.schedules import DISTILLED_SIGMAS

REQUEST = {"prompt": "a red kite over a beach, wind and surf", "width": 128, "height": 64, "num_frames": 9,
           "seed": 5}


def pack_video(latent: torch.Tensor) -> torch.Tensor:
    """(1, C, F, H, W) -> (1, F*H*W, C): LTX-2's patch size 1 tokens, written out here."""
    return latent.permute(0, 2, 3, 4, 1).reshape(1, -1, latent.shape[1])


def pack_audio(latent: torch.Tensor) -> torch.Tensor:
    """(1, C, T, M) -> (1, T, C*M)."""
    return latent.permute(0, 2, 1, 3).reshape(1, latent.shape[2], -1)


@pytest.fixture(scope="module")
def traced(model):
    """A default (two-stage) run with every call of the shared stages recorded."""
    calls = {"denoise": [], "upsample": []}
    real_denoise, real_upsample = stages.denoise, stages.upsample

    def denoise(run, video, audio, prompt, sigmas, grid, guidance):
        record = dict(sigmas=list(sigmas), grid=grid, video_in=video.latents.clone(), audio_in=audio.latents.clone())
        video, audio = real_denoise(run, video, audio, prompt, sigmas, grid, guidance)
        calls["denoise"].append({**record, "audio_out": audio.latents.clone()})
        return video, audio

    def upsample(model_, video, grid):
        out = real_upsample(model_, video, grid)
        calls["upsample"].append((video.latents.clone(), out.clone()))
        return out

    stages.denoise, stages.upsample = denoise, upsample
    try:
        result = generate(model, REQUEST)
    finally:
        stages.denoise, stages.upsample = real_denoise, real_upsample
    return result, calls


def test_default_on_a_model_with_an_upsampler_is_two_stage(traced):
    result, calls = traced
    assert result.pipeline == "two-stage" and result.use_multiscale
    assert result.frames.shape == (9, 64, 128, 3)
    assert (result.model_width, result.model_height) == (128, 64)
    assert result.transformer_passes == 8 + 3  # 8 distilled steps at half size, 3 at full size
    assert {"stage1_denoise", "upsample", "stage2_denoise"} <= set(result.timings)
    assert "denoise" not in result.timings  # the stages' times do not overlap: they add up to the call


def test_stage_sizes_and_sigmas(traced):
    _, calls = traced
    first, second = calls["denoise"]
    assert first["sigmas"] == list(DISTILLED_SIGMAS)
    assert second["sigmas"] == [0.909375, 0.725, 0.421875]  # then 0, appended by the scheduler
    # 128x64 in multiples of 64; stage 1 at 64x32: 2x1 latent tokens per frame, stage 2 4x2.
    low, full = first["grid"], second["grid"]
    assert (low.width, low.height, full.width, full.height) == (2, 1, 4, 2)


def test_noise_is_reinjected_at_the_first_stage2_sigma(model, traced):
    _, calls = traced
    first, second = calls["denoise"]
    _, upsampled = calls["upsample"][0]
    audio_frames = second["grid"].audio_frames
    # The generator's draws in order: stage-1 video, stage-1 audio, stage-2 video, stage-2 audio noise, each
    # in token order (tokens, channels) as ltx-pipelines' GaussianNoiser draws them.
    g = torch.Generator().manual_seed(REQUEST["seed"])
    stage1_video_noise = torch.randn((1, 2 * 1 * 2, 128), generator=g)
    stage1_audio_noise = torch.randn((1, audio_frames, 8 * 16), generator=g)
    video_noise = torch.randn((1, 2 * 2 * 4, 128), generator=g)
    audio_noise = torch.randn((1, audio_frames, 8 * 16), generator=g)
    torch.testing.assert_close(first["video_in"], stage1_video_noise)  # stage 1 starts from pure noise
    torch.testing.assert_close(first["audio_in"], stage1_audio_noise)
    sigma = 0.909375
    torch.testing.assert_close(second["video_in"], (1 - sigma) * upsampled + sigma * video_noise)
    # The audio carries over from stage 1 (its last latents), re-noised the same way.
    torch.testing.assert_close(second["audio_in"], (1 - sigma) * first["audio_out"] + sigma * audio_noise)


def test_upsampler_round_trip_uses_the_vae_statistics(model, monkeypatch):
    """un-normalise -> upsampler -> normalise, checked with a nearest-neighbour stand-in and statistics
    that are not 0 and 1 (the tiny VAE's are, which would hide a missing step)."""
    vae = model.pipe.vae
    # The stage reads the VAE's statistics as copied at load (the VAE may rest off the device then).
    assert all(torch.equal(copy, real) for copy, real in zip(model.video_latent_stats,
                                                             (vae.latents_mean, vae.latents_std)))
    g = torch.Generator().manual_seed(1)
    mean, std = torch.randn(128, generator=g), torch.rand(128, generator=g) + 0.5
    monkeypatch.setattr(model, "video_latent_stats", (mean, std))
    seen = {}

    class Nearest(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            seen["input"] = x.clone()
            return x.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)

    stand_in = Nearest()
    monkeypatch.setattr(model, "upsampler", stand_in)
    monkeypatch.setitem(model.placement.components, "upsampler", stand_in)
    latent = torch.randn(1, 128, 2, 1, 3, generator=g)  # normalised, as the transformer sees it
    grid = stages.LatentGrid(2, 1, 3, 5, 16, 9, 25)
    out = stages.upsample(model, stages.Stream(pack_video(latent), torch.zeros(1), 6), grid)
    stats = lambda t: t.view(1, -1, 1, 1, 1)  # noqa: E731
    torch.testing.assert_close(seen["input"], latent * stats(std) + stats(mean))  # raw VAE space in
    expected = latent.repeat_interleave(2, dim=3).repeat_interleave(2, dim=4)  # normalised again out
    torch.testing.assert_close(out, pack_video(expected), rtol=1e-5, atol=1e-5)


def test_one_stage_on_request_and_two_stage_refused_without_an_upsampler(model, client, monkeypatch):
    one = generate(model, {**REQUEST, "use_multiscale": False, "num_inference_steps": 2})
    assert one.pipeline == "one-stage" and not one.use_multiscale and one.transformer_passes == 2
    monkeypatch.setattr(model, "upsampler", None)
    assert generate(model, {**REQUEST, "num_inference_steps": 1}).pipeline == "one-stage"  # the default follows
    r = client.post("/generate", json={**REQUEST, "use_multiscale": True})
    assert r.status_code == 422 and r.json()["field"] == "use_multiscale" and "upsampler" in r.json()["error"]


def test_a_start_image_is_held_in_both_stages(model):
    from test_conditioning import gradient, image_latent, png_uri

    out = generate(model, {**REQUEST, "image_start": png_uri(gradient())})
    # Stage 2 restarts the first latent frame from the image encoded at full size, and holds it.
    expected = image_latent(model, gradient(), 128, 64)
    torch.testing.assert_close(out.video_latents[0, :, 0], expected, rtol=1e-4, atol=1e-4)


def test_two_stage_through_the_server(client):
    r = client.post("/generate", json={**REQUEST, "width": 288, "height": 512})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["pipeline"], body["use_multiscale"], body["resolution"], body["model_resolution"]) == (
        "two-stage", True, "288x512", "320x512")
    timings = body["timings"]
    assert timings["stage1_denoise"] > 0 and timings["upsample"] > 0 and timings["stage2_denoise"] > 0
    info = probe_mp4(base64.b64decode(body["video"].split(",", 1)[1]))
    assert (info["video"]["width"], info["video"]["height"]) == (288, 512)


def test_two_stage_through_the_handler(model):
    from ltx2.serving.worker import make_handler

    progress = []
    handler = make_handler(model, send_progress=lambda job, update: progress.append(update))
    out = handler({"id": "two", "input": {**REQUEST, "use_multiscale": True, "num_inference_steps": 2}})
    assert out["pipeline"] == "two-stage" and out["timings"]["upsample"] > 0, out
    # Progress counts both stages: 2 steps at half size, then 3 at full size.
    steps = [p for p in progress if p["stage"] == "denoising"]
    assert [(p["step"], p["total"]) for p in steps] == [(i, 5) for i in range(1, 6)]


def test_two_stage_through_the_cli(tmp_path):
    path = tmp_path / "kite.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "ltx2.cli", "generate", "--model", "tiny", "--device", "cpu",
         "--request", json.dumps({**REQUEST, "use_multiscale": True}), "-o", str(path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["pipeline"] == "two-stage"
    assert probe_mp4(path.read_bytes())["video"]["width"] == 128


# The upsampler file: the official layout, strictly.

def test_upsampler_loads_from_a_miniature_official_file(tmp_path):
    path = tmp_path / UPSAMPLER_FILE
    written = miniature.write_upsampler(path, seed=3)
    model = load_upsampler(str(path), "cpu", torch.float32)
    state = model.state_dict()
    assert set(state) == set(written)
    for name, tensor in written.items():
        torch.testing.assert_close(state[name], tensor.float())
    x = torch.randn(1, 128, 2, 3, 4)
    assert model(x).shape == (1, 128, 2, 6, 8)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("final_conv.bias"), "missing from the file: final_conv.bias"),
    (lambda t: t.update({"extra.weight": torch.zeros(1)}), "does not have: extra.weight"),
    (lambda t: t.update({"final_conv.bias": torch.zeros(7)}), "final_conv.bias is [7], expected [128]"),
])
def test_a_damaged_upsampler_file_fails_naming_the_tensor(tmp_path, edit, message):
    path = tmp_path / "up.safetensors"
    tensors = miniature.write_upsampler(path)
    edit(tensors)
    miniature.write_upsampler(path, tensors=tensors)
    with pytest.raises(CheckpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_upsampler(str(path))


def test_a_temporal_or_x15_upsampler_is_refused(tmp_path):
    for change, phrase in [({"temporal_upsample": True}, "temporal"), ({"spatial_scale": 1.5}, "x1.5")]:
        path = tmp_path / "other.safetensors"
        miniature.write_upsampler(path, config={**miniature.UPSAMPLER_CONFIG, **change})
        with pytest.raises(CheckpointError, match=phrase):
            load_upsampler(str(path))


def test_a_models_dir_with_the_upsampler_serves_two_stage(tmp_path):
    from ltx2 import load_model
    from ltx2.models.tiny import build_text_encoder, build_tokenizer

    modules = miniature.build_components(seed=2)
    miniature.round_to(modules, torch.bfloat16)
    miniature.write_checkpoint(tmp_path / "ltx-2-19b-distilled.safetensors", modules)
    latent = miniature.MINI_CONFIG["vae"]["latent_channels"]
    miniature.write_upsampler(tmp_path / "mismatched.safetensors")  # 128 channels: another model's
    miniature.write_upsampler(tmp_path / UPSAMPLER_FILE, config={**miniature.UPSAMPLER_CONFIG, "in_channels": latent})
    gemma = tmp_path / "gemma"
    tokenizer = build_tokenizer()
    build_text_encoder(len(tokenizer)).save_pretrained(gemma)
    tokenizer.save_pretrained(gemma)
    model = load_model("ltx-2-19b-distilled", device="cpu", models_dir=str(tmp_path), gemma_dir=str(gemma))
    info = model.describe()
    assert info["upsampler"] == str(tmp_path / UPSAMPLER_FILE) and info["dtypes"]["upsampler"] == "float32"
    assert "upsampler" in info["memory"]["components"]
    out = generate(model, {**REQUEST, "num_inference_steps": 2})
    assert out.pipeline == "two-stage" and out.frames.shape == (9, 64, 128, 3) and np.isfinite(out.frames).all()
    none = load_model("ltx-2-19b-distilled", device="cpu", models_dir=str(tmp_path), gemma_dir=str(gemma),
                      upsampler="none")
    assert none.describe()["upsampler"] is None
    assert generate(none, {**REQUEST, "num_inference_steps": 1}).pipeline == "one-stage"
    with pytest.raises(CheckpointError, match=f"works on 128 latent channels; the video VAE has {latent}"):
        load_model("ltx-2-19b-distilled", device="cpu", models_dir=str(tmp_path), gemma_dir=str(gemma),
                   upsampler="mismatched.safetensors")
    with pytest.raises(CheckpointError, match="no file at"):
        load_model("ltx-2-19b-distilled", device="cpu", models_dir=str(tmp_path), gemma_dir=str(gemma),
                   upsampler="missing.safetensors")



def test_jobs_of_both_pipelines_count_in_the_stage_metrics(client):
    import time

    def finish(body):
        job = client.post("/jobs", json=body).json()
        deadline = time.monotonic() + 120
        while (view := client.get(f"/jobs/{job['id']}").json())["status"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, view
            time.sleep(0.05)
        return view

    one = finish({**REQUEST, "use_multiscale": False, "num_inference_steps": 1})
    two = finish({**REQUEST, "use_multiscale": True, "num_inference_steps": 1})
    assert one["status"] == two["status"] == "succeeded", (one, two)
    assert "upsample" not in one["timings"] and two["timings"]["upsample"] > 0  # no nulls in a job's record
    metrics = client.get("/metrics").text
    assert 'ltx2_stage_seconds_count{stage="upsample"}' in metrics
    assert 'ltx2_stage_seconds_count{stage="denoise"}' in metrics


def test_the_memory_policy_counts_the_upsampler():
    from ltx2.models.memory import choose_policy, peak_bytes, rests_on_compute

    gb = 10**9
    sizes = {"transformer": 19 * gb, "text_encoder": 24 * gb, "connectors": 3 * gb, "vae": 2 * gb,
             "audio_vae": gb // 10, "vocoder": gb // 10}
    with_upsampler = {**sizes, "upsampler": gb}
    work = 8 * gb
    # Resident: every weight plus the workspace, the upsampler's gigabyte included.
    assert peak_bytes("resident", with_upsampler, work) == peak_bytes("resident", sizes, work) + gb
    # Sequential: it visits for its own stage only, so it adds nothing while the transformer is larger.
    assert not rests_on_compute("sequential", "upsampler") and rests_on_compute("offload-text-encoder", "upsampler")
    assert peak_bytes("sequential", with_upsampler, work) == peak_bytes("sequential", sizes, work)
    # A card on which everything but the upsampler would fit resident drops to the next policy.
    free = peak_bytes("resident", sizes, work) + gb // 2
    assert choose_policy("auto", free, sizes, work)[0] == "resident"
    assert choose_policy("auto", free, with_upsampler, work)[0] == "offload-text-encoder"
