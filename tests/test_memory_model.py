"""The 24 GB memory model, counted on meta tensors (ltx2.models.memory_model)."""

import pytest
import torch

from ltx2.models import memory_model, random19b, random22b
from ltx2.models.geometry import audio_latent_frames

GiB = 1024**3


def test_live_bytes_counts_what_is_alive_and_keeps_the_peak():
    def work():
        a = torch.empty(1024, 1024, device="meta")  # 4 MiB
        b = a * 2  # 4 MiB more: 8 alive
        view = b.t()  # a view: nothing new
        del a  # 4 alive
        c = view + 1  # 8 alive again
        return c

    assert memory_model.count(work) == 8 * 1024 * 1024


def test_fused_attention_counts_no_score_matrix():
    q = torch.empty(1, 8, 4096, 64, device="meta", dtype=torch.bfloat16)
    peak = memory_model.count(lambda: torch.nn.functional.scaled_dot_product_attention(q, q, q))
    assert peak == q.numel() * 2  # the output only, not 8 x 4096 x 4096 scores


@pytest.mark.slow
def test_768x512x121_fits_24_gib_sequential_with_fp8_gemma():
    """The issue's 24 GB target, as a model: sequential policy, Gemma in FP8, one stage, no CFG."""
    modules = memory_model.build("fp8")
    acts = memory_model.activation_bytes(modules, 768, 512, 121, decode_frames=4)
    peaks = memory_model.stage_peaks(modules, "sequential", acts)
    assert max(peaks.values()) <= 24 * GiB, {k: round(v / GiB, 1) for k, v in peaks.items()}
    # The largest stage is the transformer's: ~20 GiB of weights (FP8 blocks) plus its activations.
    assert max(peaks, key=peaks.get) == "denoise"
    assert 0.5 * GiB < acts["denoise"] < 4 * GiB
    # Resident, the same model needs far more than a 24 GB card has.
    assert max(memory_model.stage_peaks(modules, "resident", acts).values()) > 40 * GiB


@pytest.mark.slow  # two meta forward passes of the full 22B at 768x512x121: ~10-30 s
def test_memory_model_counts_the_22b_weights_and_stages():
    """random-22b on meta: its bytes are numel x element size (bf16), and every stage has a peak."""
    modules = memory_model.build("bf16", preset=random22b.NAME)
    for name, module in modules.items():
        params = list(module.parameters())  # tied ones once
        assert all(p.dtype.is_floating_point for p in params)
        weights = random19b.weight_bytes(torch.nn.ParameterList(params), torch.bfloat16)
        assert weights == sum(p.numel() for p in params) * 2, name  # every weight counted once, in bf16
        # Plus the buffers (Gemma's layer scalars, the vocoder's STFT bases, the VAE's latent statistics).
        assert 0 <= random19b.weight_bytes(module, torch.bfloat16) - weights < 2**22, name
    assert 18.5e9 < sum(p.numel() for p in modules["transformer"].parameters()) < 19.5e9
    for decoder in ("auto", "conv"):  # auto: the diffusion decoder (its own stage, where memory.STAGES has one)
        acts = memory_model.activation_bytes(modules, 768, 512, 121, video_decoder=decoder)
        for policy in ("resident", "offload-text-encoder", "sequential"):
            peaks = memory_model.stage_peaks(modules, policy, acts, video_decoder=decoder)
            assert {"encode_prompt", "denoise", "decode_audio"} <= set(peaks), peaks
            decode = {"diffusion_decode", "decode_video"} & set(peaks) if decoder == "auto" else {"decode_video"}
            assert len(decode) == 1 and decode <= set(peaks) and set(acts) <= set(peaks), peaks
        sequential = memory_model.stage_peaks(modules, "sequential", acts, video_decoder=decoder)
        assert sequential["denoise"] > 36 * GiB  # 35 GiB of bf16 transformer alone


@pytest.mark.slow  # seconds in one process: out of the quick tier
def test_temporal_upscale_adds_the_upsampler_the_round_and_the_doubled_decode():
    """random-22b (LTX-2.5 publishes a temporal upscaler), 1 layer, 64x64x9 with the temporal x2 round: the
    upsampler on the latent, the transformer on 2F - 1 latent frames, the decode of 17 frames."""
    modules = memory_model.build("bf16", layers=1, preset=random22b.NAME, temporal_upsampler=True)
    twice = memory_model.activation_bytes(modules, 64, 64, 9, video_decoder="conv", temporal_upscale=True)
    longer = memory_model.activation_bytes(modules, 64, 64, 17, video_decoder="conv")  # 17 frames, no round
    # 64x64x9: a 2 x 2 x 2 latent; the round's is 3 x 2 x 2, with the same audio latents (9 frames' worth).
    audio = modules["audio_vae"].config
    a_frames = audio_latent_frames(9, 25, audio.sample_rate, audio.mel_hop_length, 4)
    assert twice["temporal_upsample"] == memory_model.upsampler_bytes(modules["temporal_upsampler"], 2, 2, 2) > 0
    stage2 = memory_model.denoise_bytes(modules["transformer"], 2, 2, 2, a_frames)
    assert twice["denoise"] == memory_model.denoise_bytes(modules["transformer"], 3, 2, 2, a_frames) > stage2
    assert twice["decode_video"] == longer["decode_video"]  # the decode of the 17 frames the round makes
    # Its weights: a component of its own, brought onto the device under `sequential` by its own stage,
    # which only a request with the round has.
    weights = random19b.weight_bytes(modules["temporal_upsampler"], torch.bfloat16)
    peaks = memory_model.stage_peaks(modules, "sequential", twice, video_decoder="conv")
    assert peaks["temporal_upsample"] == weights + twice["temporal_upsample"] + memory_model.OVERHEAD_BYTES
    assert "temporal_upsample" not in longer
    assert "temporal_upsample" not in memory_model.stage_peaks(modules, "sequential", longer, video_decoder="conv")
    with pytest.raises(ValueError, match="publishes no temporal upscaler"):
        memory_model.build("bf16", layers=1, temporal_upsampler=True)  # random-19b: LTX-2 19B has none
