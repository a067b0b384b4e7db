"""The 24 GB memory model, counted on meta tensors (ltx2.models.memory_model)."""

import torch

from ltx2.models import memory_model

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
