"""IC-LoRA `conditioning_attention_strength`: an additive bias on the video self-attention, as ltx-core builds it.

ltx-pipelines wraps the reference video's conditioning in `ConditioningItemAttentionStrengthWrapper` when the
strength is below 1. ltx-core (`mask_utils.build_attention_mask`) then gives the video self-attention a
(N+M, N+M) mask over the video tokens: 1 among the first N (the generated ones and any keyframes), 1 among the
M reference tokens, the strength between the generated tokens and the reference both ways, and 0 between the
keyframes and the reference. `transformer_args._prepare_self_attention_mask` turns it into log(m), the dtype's
smallest value where m is 0, added to the attention scores of `attn1` alone (not the audio, text or
audio<->video attentions).

diffusers' transformer would take it as `video_self_attention_mask` but converts it as (1 - m) * -10000, not
log(m), and its processor repeats it once per head; so the bias is handed to each block's `attn1` here,
broadcast over the batch and the heads.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

ALIGN = 16  # the bias's row stride, so fused SDPA kernels read it in place instead of padding a copy
# Kernels that take an additive mask; on any other, attn1 runs torch's SDPA while a bias is set (diffusers drops
# an attn_mask a backend does not support with only a warning).
MASKED_BACKENDS = ("native", "_native_cudnn", "_native_efficient", "_native_math")


def padded(tokens: int) -> int:
    return -(-tokens // ALIGN) * ALIGN


def bias_bytes(tokens: int, dtype: torch.dtype) -> int:
    """What one bias over `tokens` video tokens holds (admission counts it)."""
    return tokens * padded(tokens) * torch.finfo(dtype).bits // 8


def self_attention_bias(generated: int, existing: int, cross: torch.Tensor, dtype: torch.dtype,
                        device: torch.device) -> torch.Tensor:
    """(1, 1, T, T) additive bias, T = existing + M: `generated` tokens first, then keyframes up to `existing`,
    then the M reference tokens whose weight toward and from the generated ones is `cross` (M,) in [0, 1]."""
    total = existing + cross.shape[0]
    mask = torch.zeros(total, padded(total), device=device, dtype=torch.float32)[:, :total]
    mask[:existing, :existing] = 1.0
    mask[existing:, existing:] = 1.0
    cross = cross.to(device=device, dtype=torch.float32)
    mask[:generated, existing:] = cross[None, :]
    mask[existing:, :generated] = cross[:, None]
    finfo = torch.finfo(dtype)
    # ltx-core: log(m), with m clamped at the dtype's tiny; m <= 0 fully masked at the dtype's min.
    bias = torch.where(mask > 0, torch.log(mask.clamp(min=finfo.tiny)), torch.full_like(mask, finfo.min))
    out = torch.empty(total, padded(total), device=device, dtype=dtype)[:, :total]
    out.copy_(bias)
    return out[None, None]


@contextmanager
def applied(transformer, bias: torch.Tensor | None) -> Iterator[None]:
    """For the next calls of `transformer`: `bias` added to every block's video self-attention (attn1)."""
    if bias is None:
        yield
        return
    with ExitStack() as stack:
        for block in transformer.transformer_blocks:
            attn = block.attn1

            def inject(module, args, kwargs):
                kwargs["attention_mask"] = bias
                return args, kwargs

            stack.callback(attn.register_forward_pre_hook(inject, with_kwargs=True).remove)
            # diffusers' processor calls prepare_attention_mask, which copies a mask once per head, then views it
            # (batch, heads, Tq, Tk): a broadcast view gives it that shape without the copies.
            attn.prepare_attention_mask = lambda mask, _length, batch, heads=attn.heads: \
                mask.expand(batch, heads, -1, -1)
            stack.callback(delattr, attn, "prepare_attention_mask")
            processor = attn.processor
            backend = getattr(processor, "_attention_backend", None)
            if backend is not None and getattr(backend, "value", backend) not in MASKED_BACKENDS:
                processor._attention_backend = "native"
                stack.callback(setattr, processor, "_attention_backend", backend)
        yield


__all__ = ["bias_bytes", "applied", "self_attention_bias"]
