"""The upscalers beyond the two-stage x2: LTX-2.3's x1.5 spatial one (--spatial-upscaler x1.5) and the x2
temporal one (a request's temporal_upscale, ltx-pipelines' DFR temporal round); files of another family or
kind refused at start. Tiny presets, 64x64, 9 frames, 1 step."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

from ltx2 import load_model
from ltx2.models.configs import CheckpointError
from ltx2.models.upsampler import load_upsampler
from ltx2.pipelines.generate import generate
from ltx2.schema import GenerateRequest, InvalidRequest
from tests import miniature
from tests.servers import launch, stop_server

REQUEST = {"prompt": "a red ball", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1, "seed": 3}
TEMPORAL_CONFIG = {**miniature.UPSAMPLER_CONFIG, "spatial_upsample": False, "temporal_upsample": True}
X15_CONFIG = {**miniature.UPSAMPLER_CONFIG, "spatial_scale": 1.5, "rational_resampler": True}
LTX25_TEMPORAL = "ltx-2.5-latent-temporal-upscaler-x2-bf16-1.0.safetensors"


@pytest.fixture(scope="module")
def tiny23_x15():
    return load_model("tiny-2.3", device="cpu", spatial_upscaler="x1.5")


# x1.5: stage 1 at two thirds of a multiple of 96, upsampled to exactly the full latent.

def test_x15_runs_stage_one_at_two_thirds_and_upsamples_to_the_full_size(tiny23_x15):
    assert tiny23_x15.describe()["spatial_upscaler"] == "x1.5"
    out = generate(tiny23_x15, {**REQUEST, "width": 200, "height": 120})
    assert out.pipeline == "two-stage" and (out.model_width, out.model_height) == (288, 192)  # up to 96s
    assert out.frames.shape == (9, 120, 200, 3)
    assert tuple(out.video_latents.shape[2:]) == (2, 192 // 32, 288 // 32)  # stage 1: 4x6 latents, x1.5: 6x9
    small = generate(tiny23_x15, REQUEST)
    assert (small.model_width, small.model_height) == (96, 96) and small.frames.shape == (9, 64, 64, 3)


def test_x15_is_refused_for_a_family_without_one():
    with pytest.raises(CheckpointError, match="LTX-2 19B publishes no x1.5 spatial upscaler"):
        load_model("tiny", device="cpu", spatial_upscaler="x1.5")
    with pytest.raises(ValueError, match="--spatial-upscaler must be x2 or x1.5"):
        load_model("tiny-2.3", device="cpu", spatial_upscaler="x3")


# temporal_upscale: frames 2N - 1, fps doubled, the soundtrack's length that of the video.

def test_temporal_upscale_doubles_frames_and_fps(tiny23_x15):
    base = generate(tiny23_x15, REQUEST)
    out = generate(tiny23_x15, {**REQUEST, "temporal_upscale": True})
    assert (out.num_frames, out.fps) == (17, 50) and out.frames.shape == (17, 64, 64, 3)
    assert out.video_latents.shape[2] == 2 * base.video_latents.shape[2] - 1
    # The audio latents are stage 2's, unchanged in length; the waveform is cut to 17 / 50 s as the reference cuts it.
    assert out.audio_latents.shape == base.audio_latents.shape
    assert out.waveform.shape[-1] == round(17 / 50 * tiny23_x15.vocoder_rate)
    # 1 stage-1 step, 3 stage-2 steps, then the distilled schedule's last 4 sigmas.
    assert out.transformer_passes == base.transformer_passes + 4
    assert out.timings["temporal_upsample"] > 0 and out.timings["temporal_denoise"] > 0
    # The first frames come from the same two stages; the round changes them (re-noised at 0.975).
    assert not (out.frames[0] == base.frames[0]).all()


def test_tiny25_has_the_temporal_upscaler_and_keeps_the_seed_deterministic():
    model = load_model("tiny-2.5", device="cpu", vae_decoder="conv")
    assert model.describe()["temporal_upsampler"] == "tiny"
    first = generate(model, {**REQUEST, "temporal_upscale": True})
    again = generate(model, {**REQUEST, "temporal_upscale": True})
    assert first.frames.shape == (17, 64, 64, 3) and first.fps == 50
    assert (first.frames == again.frames).all()


def test_temporal_upscale_is_refused_where_it_cannot_run():
    ltx2 = load_model("tiny", device="cpu")  # LTX-2 19B publishes no temporal upscaler
    with pytest.raises(InvalidRequest, match="LTX-2 19B publishes none") as err:
        generate(ltx2, {**REQUEST, "temporal_upscale": True})
    assert err.value.field == "temporal_upscale"
    off = load_model("tiny-2.3", device="cpu", temporal_upscaler="none")
    with pytest.raises(InvalidRequest, match="ltx-2.3-temporal-upscaler-x2-1.0.safetensors"):
        generate(off, {**REQUEST, "temporal_upscale": True})
    model = load_model("tiny-2.3", device="cpu")
    with pytest.raises(InvalidRequest, match="after the two-stage pipeline") as err:
        generate(model, {**REQUEST, "temporal_upscale": True, "use_multiscale": False})
    assert err.value.field == "temporal_upscale"


@pytest.mark.parametrize("change, phrase", [
    ({"num_frames": 257}, "num_frames must be at most 249, got 257 (513 frames)"),
    ({"fps": 31}, "fps must be at most 30, got 31"),
    ({"fps": 30, "video_output_type": "GIF (.gif)"}, "doubles fps to 60"),
    ({"temporal_upscale": 1}, "temporal_upscale must be true or false"),
])
def test_temporal_upscale_bounds_are_checked_with_the_request(change, phrase):
    with pytest.raises(ValueError, match=phrase.replace("(", r"\(").replace(")", r"\)")):
        GenerateRequest.model_validate({**REQUEST, "temporal_upscale": True, **change})


def test_a_server_answers_temporal_upscale_in_each_protocol(live_server):
    base = live_server  # the session's default server: tiny, LTX-2 19B, no temporal upscaler
    native = httpx.post(f"{base}/generate", json={**REQUEST, "temporal_upscale": True}, timeout=60)
    assert native.status_code == 422, native.text
    body = native.json()
    assert body["field"] == "temporal_upscale" and "temporal upscaler" in body["error"]
    too_long = httpx.post(f"{base}/generate", json={**REQUEST, "temporal_upscale": True, "num_frames": 257},
                          timeout=60)
    assert too_long.status_code == 422 and too_long.json()["field"] == "temporal_upscale"
    assert httpx.get(f"{base}/health").json()["model"]["temporal_upsampler"] is None


# Files: the kind and the family are checked before the model loads.

def _load_error(tmp_path, *args: str) -> tuple[str, str]:
    """A real server started with `args`: its /health error once the model has failed to load, and its log."""
    import time

    proc, base = launch(tmp_path / "out", tmp_path / "log", *args)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                health = httpx.get(f"{base}/health", timeout=2)
                if health.status_code == 503 and "error" in health.json():
                    return health.json()["error"], (tmp_path / "log").read_text()
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError((tmp_path / "log").read_text()[-3000:])
    finally:
        stop_server(proc)


def test_another_familys_upscaler_is_refused_at_start_in_one_line(tmp_path):
    path = tmp_path / LTX25_TEMPORAL
    miniature.write_upsampler(path, config=TEMPORAL_CONFIG)
    with pytest.raises(CheckpointError, match="is LTX-2.5 22B's x2 temporal upscaler; the loaded model is LTX-2.3 "
                                              "22B, whose is ltx-2.3-temporal-upscaler-x2-1.0.safetensors"):
        load_model("tiny-2.3", device="cpu", temporal_upscaler=str(path))
    spatial = tmp_path / "ltx-2.3-spatial-upscaler-x2-1.1.safetensors"
    miniature.write_upsampler(spatial)
    with pytest.raises(CheckpointError, match="LTX-2.3 22B's x2 spatial upscaler; the loaded model is LTX-2 19B"):
        load_model("tiny", device="cpu", upsampler=str(spatial))
    error, log = _load_error(tmp_path, "--model", "tiny-2.3", "--temporal-upscaler", str(path))
    assert error.startswith("CheckpointError: ") and "LTX-2.5 22B's x2 temporal upscaler" in error and "\n" not in error
    lines = [line for line in log.splitlines() if "LTX-2.5 22B's x2 temporal upscaler" in line]
    assert len(lines) == 1 and "model_load_failed" in lines[0] and "Traceback" not in log


def test_an_upscaler_of_the_wrong_kind_is_refused(tmp_path):
    spatial = tmp_path / "up.safetensors"
    miniature.write_upsampler(spatial)
    with pytest.raises(CheckpointError, match="a x2 spatial upsampler; temporal_upscale .* needs the x2 temporal one"):
        load_model("tiny-2.3", device="cpu", temporal_upscaler=str(spatial))
    temporal = tmp_path / "t.safetensors"
    miniature.write_upsampler(temporal, config=TEMPORAL_CONFIG)
    with pytest.raises(CheckpointError, match="a x2 temporal upsampler; the two-stage pipeline with "
                                              "--spatial-upscaler x1.5 needs the x1.5 spatial one"):
        load_upsampler(str(temporal), kind="x1.5")
    both = tmp_path / "st.safetensors"
    miniature.write_upsampler(both, config={**miniature.UPSAMPLER_CONFIG, "temporal_upsample": True})
    with pytest.raises(CheckpointError, match="a spatio-temporal upsampler"):
        load_upsampler(str(both), kind="temporal")


# Parity with ltx-core's LatentUpsampler: its own module's weights, saved with its config, loaded by ltx2.

def _ltx_core_upsampler():
    src = Path("/tmp/ref/packages/ltx-core/src")
    if not src.is_dir() or not Path("/tmp/refdeps/einops").is_dir():
        pytest.skip("ltx-core 1.2.0 (/tmp/ref) and einops (/tmp/refdeps) are not here")
    for extra in (str(src), "/tmp/refdeps"):
        if extra not in sys.path:
            sys.path.append(extra)
    try:
        from ltx_core.model.upsampler import LatentUpsamplerConfigurator
    except ImportError as exc:
        pytest.skip(f"ltx-core does not import here: {exc}")
    return LatentUpsamplerConfigurator


@pytest.mark.parametrize("config, kind, shape", [
    (X15_CONFIG, "x1.5", (1, 128, 2, 4, 6)),  # even latent sizes: exactly x1.5
    (X15_CONFIG, "x1.5", (1, 128, 2, 3, 5)),  # odd: ceil(1.5 h)
    (TEMPORAL_CONFIG, "temporal", (1, 128, 3, 2, 3)),  # 3 latent frames -> 5
    (miniature.UPSAMPLER_CONFIG, "x2", (1, 128, 2, 2, 3)),
])
def test_the_upscalers_match_ltx_core(tmp_path, config, kind, shape):
    configurator = _ltx_core_upsampler()
    torch.manual_seed(0)
    theirs = configurator.from_metadata({"config": config}).eval()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.05)
    path = tmp_path / "up.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(path),
              metadata={"config": json.dumps(config)})
    ours = load_upsampler(str(path), "cpu", torch.float32, kind)
    x = torch.randn(shape)
    with torch.no_grad():
        expected, got = theirs(x), ours(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    if kind == "x1.5":
        assert got.shape[-2:] == tuple(-(-3 * s // 2) for s in shape[-2:])
    if kind == "temporal":
        assert got.shape[2] == 2 * shape[2] - 1
