"""One job across several processes (`ltx2.models.parallel`): real rank groups over gloo on loopback.

Each group is real processes (this file run as a script, one per rank) that load the tiny preset, join
the group and run `generate()` on the same requests; rank 0 writes what it made. The single-process
result is made here, in the test process, by the same code with no group. Tolerance: fp32, the
latents within 1e-4 (absolute, and relative to their scale) and the 8-bit frames within 1 level; the
split changes only the order of floating-point sums (attention over gathered tokens, batch rows).
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
BASE = {"prompt": "a lighthouse on a cliff, waves crashing", "width": 64, "height": 64, "num_frames": 9,
        "num_inference_steps": 2, "seed": 7, "use_multiscale": False}
# dev guidance: every pass of the guider (cond, uncond, STG, modality) and the rescale, 4 batch rows.
DEV = {"guidance_scale": 3.0, "audio_guidance_scale": 2.0, "stg_scale": 1.0, "audio_stg_scale": 0.5,
       "modality_scale": 2.0, "audio_modality_scale": 1.5, "guidance_rescale": 0.5, "negative_prompt": "blurry"}


def _png() -> str:
    from PIL import Image

    x = np.linspace(0, 255, 64)[None, :].repeat(64, 0)
    rgb = np.stack([x, x.T, 255 - x], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav() -> str:
    rate = 16_000
    t = np.arange(rate) / rate
    samples = np.stack([0.5 * np.sin(2 * np.pi * 330 * t), 0.4 * np.sin(2 * np.pi * 550 * t)])
    buf = io.BytesIO()
    with wave.open(buf, "wb") as fh:
        fh.setnchannels(2)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes((samples.T * 32767).astype("<i2").tobytes())
    return "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()


def cases() -> dict[str, dict]:
    return {"t2v": BASE, "i2v": {**BASE, "image_start": _png()}, "a2v": {**BASE, "audio": _wav()},
            "dev": {**BASE, **DEV, "image_start": _png()}}


# The VAE's tile test: 5 latent frames in tiles of 3 overlapping by 2, i.e. 3 tiles over the ranks.
VAE_SHAPE = (1, None, 5, 2, 2)


def vae_latents(vae) -> torch.Tensor:
    shape = (1, vae.config.latent_channels, *VAE_SHAPE[2:])
    return torch.randn(shape, generator=torch.Generator().manual_seed(3))


def vae_plan():
    from ltx2.pipelines.tiling import TilePlan

    return TilePlan(frames=3, spatial=False, estimate_bytes=0)


def outputs(result) -> dict[str, np.ndarray]:
    out = {"frames": result.frames, "video_latents": result.video_latents.float().numpy(),
           "audio_latents": result.audio_latents.float().numpy()}
    if result.waveform is not None:
        out["waveform"] = result.waveform
    return out


def conditionings(model) -> dict:
    """Each case's decoded inputs (the sandbox decodes them once, here; the ranks are handed them, as
    a rank group's leader would hand its followers a job's prepared inputs)."""
    from ltx2.pipelines.conditioning import Conditioning, decode_conditioning
    from ltx2.pipelines.generate import image_targets
    from ltx2.schema import GenerateRequest

    out = {}
    for name in ("t2v", "i2v", "a2v"):
        request = GenerateRequest.model_validate(cases()[name])
        out[name] = decode_conditioning(request, model.pipe.audio_vae.config.sample_rate, model.vocoder_rate,
                                        targets=image_targets(model, request))
    out["dev"] = out["i2v"]  # the same image at the same size
    assert isinstance(out["t2v"], Conditioning)
    return out


def record_shapes(transformer, seen: dict) -> None:
    """What the transformer's input projections get on this rank: (batch rows, tokens), the largest seen."""
    for name in ("proj_in", "audio_proj_in"):
        def hook(module, args, name=name):
            seen[name] = max(seen.get(name, (0, 0)), tuple(args[0].shape[:2]))
        getattr(transformer, name).register_forward_pre_hook(hook)


def rank_main(rank: int, spec_text: str, port: int, out: str, names: list[str]) -> None:
    """One rank: join the group, run each named case, save what it made and the shapes it ran."""
    import pickle

    torch.set_num_threads(1)  # the ranks share this machine's cores
    from ltx2 import load_model
    from ltx2.models import parallel
    from ltx2.pipelines import tiling
    from ltx2.pipelines.generate import generate

    spec = parallel.ParallelSpec.parse(spec_text)
    model = load_model("tiny", device="cpu")
    spec.check_model(model.pipe.transformer)
    parallel.init(spec, rank, "cpu", address="127.0.0.1", port=port, timeout_s=120)
    with open(os.path.join(out, "conditioning.pkl"), "rb") as fh:
        inputs = pickle.load(fh)
    try:
        every = cases()
        for name in names:
            if name == "vae":
                vae = model.pipe.vae
                calls = []
                handle = vae.decoder.register_forward_pre_hook(lambda module, args, calls=calls: calls.append(1))
                with torch.inference_mode():
                    pixels = tiling.decode(vae, vae_latents(vae), vae_plan())
                handle.remove()
                saved = {"pixels": pixels.float().numpy(), "decoded": np.array(len(calls))}
            else:
                seen: dict = {}
                record_shapes(model.pipe.transformer, seen)
                result = generate(model, every[name], conditioning=inputs[name])
                for module in (model.pipe.transformer.proj_in, model.pipe.transformer.audio_proj_in):
                    module._forward_pre_hooks.clear()
                saved = outputs(result)
                saved.update({key: np.array(value) for key, value in seen.items()})
                saved["passes"] = np.array(result.transformer_passes)
            np.savez(os.path.join(out, f"{name}-rank{rank}.npz"), **saved)
    finally:
        parallel.shutdown()


def run_group(spec: str, names: list[str], tmp_path: Path, inputs: dict, timeout: float = 240) -> Path:
    import pickle

    from servers import free_port

    with open(tmp_path / "conditioning.pkl", "wb") as fh:
        pickle.dump(inputs, fh)

    ranks = __import__("ltx2.models.parallel", fromlist=["x"]).ParallelSpec.parse(spec).size
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(HERE), str(rank), spec, str(port), str(tmp_path), ",".join(names)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in range(ranks)]
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=timeout)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, log in zip(procs, logs):
        assert proc.returncode == 0, log[-3000:]
    return tmp_path


def assert_close(name: str, got: dict, want: dict) -> None:
    for key, expected in want.items():
        actual = got[key]
        assert actual.shape == expected.shape, (name, key)
        if key == "frames":
            worst = int(np.abs(actual.astype(int) - expected.astype(int)).max())
            print(f"{name} {key}: largest difference {worst} levels")
            assert worst <= 1, f"{name} {key}: frames differ by {worst} levels"
        else:
            scale = max(1.0, float(np.abs(expected).max()))
            worst = float(np.abs(actual - expected).max())
            print(f"{name} {key}: largest difference {worst:.1e}")
            assert worst <= 1e-4 * scale, f"{name} {key}: max difference {worst:.2e}"


@pytest.fixture(scope="module")
def inputs(model):
    return conditionings(model)


@pytest.fixture(scope="module")
def single(model, inputs):
    """The single-process results, made here with no rank group."""
    from ltx2.pipelines.generate import generate

    seen: dict = {}
    record_shapes(model.pipe.transformer, seen)
    results = {}
    try:
        for name, request in cases().items():
            seen.clear()
            results[name] = {**outputs(generate(model, request, conditioning=inputs[name])), "seen": dict(seen)}
        return results
    finally:
        for module in (model.pipe.transformer.proj_in, model.pipe.transformer.audio_proj_in):
            module._forward_pre_hooks.clear()


def check(spec: str, names: list[str], single, inputs, tmp_path) -> dict[str, dict]:
    return compare(spec, names, single, run_group(spec, names, tmp_path, inputs))


def compare(spec: str, names: list[str], single, out: Path) -> dict[str, dict]:
    loaded = {}
    for name in names:
        got = dict(np.load(out / f"{name}-rank0.npz"))
        assert_close(f"{spec} {name}", got, {k: v for k, v in single[name].items() if k != "seen"})
        loaded[name] = got
    return loaded


@pytest.fixture(scope="module")
def ulysses_2(inputs, tmp_path_factory) -> Path:
    """One 2-rank group for the four cases and the VAE tiles (a rank's imports cost more than its work)."""
    return run_group("ulysses=2", ["t2v", "i2v", "a2v", "dev", "vae"], tmp_path_factory.mktemp("ulysses2"), inputs)


def test_ulysses_2_equals_one_process(single, ulysses_2):
    """Video and audio tokens split over 2 ranks (odd counts padded): t2v, i2v, a2v and dev guidance equal
    one process's, and each rank's transformer saw half the tokens (rounded up), every pass."""
    got = compare("ulysses=2", ["t2v", "i2v", "a2v", "dev"], single, ulysses_2)
    for name, result in got.items():
        for stream in ("proj_in", "audio_proj_in"):
            rows, tokens = single[name]["seen"][stream]
            assert tuple(result[stream]) == (rows, -(-tokens // 2)), (name, stream)
    assert single["a2v"]["seen"]["audio_proj_in"][1] % 2 == 1  # the audio's odd length: padding exercised
    assert int(got["dev"]["passes"]) == 2 * 4  # 2 steps x cond, uncond, STG, modality


def test_cfg_2_equals_one_process(single, inputs, tmp_path):
    """A guided step's 4 passes, 2 per rank, all tokens; an unguided one (1 pass) runs on both."""
    got = check("cfg=2", ["dev", "t2v"], single, inputs, tmp_path)
    rows, tokens = single["dev"]["seen"]["proj_in"]
    assert rows == 4 and tuple(got["dev"]["proj_in"]) == (2, tokens)
    assert tuple(got["t2v"]["proj_in"]) == tuple(single["t2v"]["seen"]["proj_in"])


def test_ulysses_2_cfg_2_equals_one_process(single, inputs, tmp_path):
    """4 ranks on this machine's 2 cores: 2 passes x half the tokens each."""
    got = check("ulysses=2,cfg=2", ["dev"], single, inputs, tmp_path)
    rows, tokens = single["dev"]["seen"]["proj_in"]
    assert tuple(got["dev"]["proj_in"]) == (rows // 2, -(-tokens // 2))


def test_vae_tiles_split_across_ranks_equal_one_process(model, ulysses_2):
    """3 temporal tiles decoded round robin on 2 ranks and shared: the same pixels as one process's
    decode with the same tiles, on both ranks."""
    from ltx2.pipelines import tiling

    vae = model.pipe.vae
    with torch.inference_mode():
        want = tiling.decode(vae, vae_latents(vae), vae_plan()).float().numpy()
    assert len(tiling.temporal_tiles(VAE_SHAPE[2], vae_plan().frames)) == 3
    out = ulysses_2
    got, other = (np.load(out / f"vae-rank{rank}.npz")["pixels"] for rank in (0, 1))
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(got, other)
    assert int(np.load(out / "vae-rank0.npz")["decoded"]) == 2 and int(np.load(out / "vae-rank1.npz")["decoded"]) == 1


def test_parallel_spec_rules():
    from ltx2.models.parallel import ParallelError, ParallelSpec

    assert ParallelSpec.parse("ulysses=2,cfg=2").size == 4
    assert ParallelSpec.parse("") == ParallelSpec()
    for bad, words in (("cfg=3", "cfg must be 2"), ("ring=2", "MODE=N"), ("ulysses=x", "whole number"),
                       ("ulysses=2,ulysses=2", "twice"), ("ulysses=0", "at least 1")):
        with pytest.raises(ParallelError, match=words):
            ParallelSpec.parse(bad)


def video_frames(data: bytes) -> np.ndarray:
    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def test_server_serves_a_ulysses_group_as_one_worker(client, tmp_path):
    """`--devices cpu,cpu --parallel ulysses=2`: the server starts a follower rank; a job runs on both
    and its video equals the single-process server's; a cancel stops both ranks and the next job runs;
    a follower that dies fails the next jobs naming the group, and the server stays up, its /health 503
    naming the rank."""
    import httpx
    import psutil
    from servers import start_server, stop_server, wait_for_job

    # ProRes 4444 at its best quality: the frames come back within a level or two, not H.264's blocks.
    body = {**BASE, "seed": 11, "video_output_type": "PRORES4444 (.mov)", "video_quality": "maximum"}
    want = video_frames(base64.b64decode(client.post("/generate", json=body).json()["video"].split(",", 1)[1]))
    proc, base = start_server(tmp_path / "out", tmp_path / "server.log", "--devices", "cpu,cpu",
                              "--parallel", "ulysses=2", timeout=240)
    try:
        followers = [p for p in psutil.Process(proc.pid).children() if "ltx2.pipelines.rank_follower" in p.cmdline()]
        assert len(followers) == 1
        assert httpx.get(f"{base}/health", timeout=5).json()["parallel"] == {"parallel": "ulysses=2", "ranks": 2,
                                                                              "exited": []}
        response = httpx.post(f"{base}/generate", json=body, timeout=120)
        assert response.status_code == 200, response.text
        got = video_frames(base64.b64decode(response.json()["video"].split(",", 1)[1]))
        assert got.shape == want.shape
        worst = np.abs(got.astype(int) - want.astype(int)).max()
        print(f"largest difference from one process: {worst} levels")
        assert worst <= 2
        # A job cancelled mid-denoise stops on both ranks at the same step: the next job runs in step.
        with httpx.Client(base_url=base, timeout=30) as http:
            long = http.post("/jobs", json={**BASE, "seed": 3, "num_inference_steps": 100}).json()["id"]
            wait_for_job(http, long, statuses=("running",))
            time.sleep(0.5)
            http.delete(f"/jobs/{long}")
            assert wait_for_job(http, long)["status"] == "cancelled"
        again = httpx.post(f"{base}/generate", json=body, timeout=120)
        assert again.status_code == 200, again.text
        assert np.abs(video_frames(base64.b64decode(again.json()["video"].split(",", 1)[1])).astype(int)
                      - want.astype(int)).max() <= 2
        followers[0].kill()
        deadline = time.monotonic() + 10  # the server reaps it; until then it is a zombie
        while time.monotonic() < deadline and followers[0].is_running() and followers[0].status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.1)
        # The next job finds it gone (or, if it has not been reaped yet, finds the group not answering).
        first = httpx.post(f"{base}/generate", json=body, timeout=60)
        assert first.status_code == 500 and "--parallel group" in first.json()["error"], first.text
        broken = httpx.post(f"{base}/generate", json=body, timeout=60)
        assert broken.status_code == 500 and "rank 1 of the --parallel group has exited" in broken.json()["error"]
        health = httpx.get(f"{base}/health", timeout=5)  # up, and saying why jobs cannot run
        assert health.status_code == 503 and health.json()["parallel"] == {"parallel": "ulysses=2", "ranks": 2,
                                                                            "exited": [1]}
        assert "rank 1 of the --parallel group has exited" in " ".join(health.json()["problems"])
    finally:
        stop_server(proc)


def test_server_refuses_a_group_its_devices_do_not_fit(tmp_path):
    from servers import ROOT as root

    run = subprocess.run([sys.executable, "server.py", "--model", "tiny", "--port", "0", "--output-dir",
                          str(tmp_path), "--devices", "cpu,cpu,cpu", "--parallel", "ulysses=2"],
                         cwd=root, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1
    assert "--devices lists 3 devices; --parallel ulysses=2 is a group of 2 ranks" in run.stderr


def test_worker_and_generate_refuse_a_rank_group_they_cannot_serve(tmp_path):
    """LTX2_PARALLEL is `ltx2 serve`'s: the RunPod worker and `ltx2 generate` say so instead of running alone."""
    env = {**os.environ, "LTX2_PARALLEL": "ulysses=2", "PYTHONPATH": str(ROOT)}
    for command in (["worker"], ["generate", "--prompt", "a cat", "--model", "tiny"]):
        run = subprocess.run([sys.executable, "-m", "ltx2.cli", *command], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=120, check=False)
        assert run.returncode == 2, run.stderr[-2000:]
        assert f"ltx2 {command[0]}: LTX2_PARALLEL='ulysses=2' is for `ltx2 serve`" in run.stderr


if __name__ == "__main__":
    rank_main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5].split(","))
