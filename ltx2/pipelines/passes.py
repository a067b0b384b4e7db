"""One call of diffusers' LTX-2 transformer, fed as ltx-core 1.2.0 feeds its own.

diffusers' `LTX2VideoTransformer3DModel.forward` mixes two rules for the audio<->video
cross-attention timesteps: with `use_cross_timestep=False` both the scale/shift and the gate of a
stream's cross-attention read that stream's own per-token timesteps; with `True` both read the
other stream's sigma. ltx-core (`MultiModalTransformerArgsPreprocessor`) does neither: the
scale/shift read the stream's own per-token timesteps, and the gate reads the *other* stream's
single sigma times `av_ca_timestep_scale_multiplier`; a stream held fixed counts as sigma 0.
We call with `use_cross_timestep=False` (right for scale/shift) and give the two gate modules
(`av_cross_attn_video_a2v_gate`, `av_cross_attn_audio_v2a_gate`) the other stream's sigma with a
forward pre-hook for the length of the call.

The guidance passes need two perturbations diffusers cannot apply per sample on LTX-2.0 models
(their blocks are built without `perturbed_attn`): STG skips self-attention in chosen blocks (the
attention passes its value projection through, as ltx-core's `Attention` does when a sample is
perturbed), and modality isolation drops the audio<->video cross-attention. Both are forward
hooks that rewrite only the rows of the perturbed samples, so all passes of a step stay one batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Perturbation:
    """What one sample of the batch skips."""

    skip_video_self_attention: bool = False  # in the STG blocks
    skip_audio_self_attention: bool = False
    isolate_modalities: bool = False  # no audio<->video cross-attention anywhere


def gate_timesteps(transformer, other_sigma: torch.Tensor) -> torch.Tensor:
    """The gate input of a stream: the other stream's sigma per sample, in ltx-core's units.

    ltx-core: `sigma * timestep_scale_multiplier * (av_ca_timestep_scale_multiplier /
    timestep_scale_multiplier)`, i.e. sigma times the av multiplier (1000 for the 19B).
    """
    return other_sigma.float() * float(transformer.config.cross_attn_timestep_scale_multiplier)


@contextmanager
def reference_semantics(transformer, video_gate: torch.Tensor, audio_gate: torch.Tensor,
                        perturbations: Sequence[Perturbation], stg_blocks: Sequence[int]) -> Iterator[None]:
    """Hooks that make the next call of `transformer` compute what ltx-core computes.

    `video_gate` / `audio_gate` are the gate inputs per sample (`gate_timesteps` of the *other*
    stream's sigma); `perturbations` has one entry per sample of the batch.
    """
    with ExitStack() as stack:
        def hook(module, fn, **kwargs):
            handle = fn(module, **kwargs)
            stack.callback(handle.remove)

        def gate_input(value):
            def pre_hook(module, args, kwargs):
                return (value.to(args[0].device, args[0].dtype), *args[1:]), kwargs
            return pre_hook

        hook(transformer.av_cross_attn_video_a2v_gate, torch.nn.Module.register_forward_pre_hook,
             hook=gate_input(video_gate), with_kwargs=True)
        hook(transformer.av_cross_attn_audio_v2a_gate, torch.nn.Module.register_forward_pre_hook,
             hook=gate_input(audio_gate), with_kwargs=True)

        video_rows = [i for i, p in enumerate(perturbations) if p.skip_video_self_attention]
        audio_rows = [i for i, p in enumerate(perturbations) if p.skip_audio_self_attention]
        isolated = [i for i, p in enumerate(perturbations) if p.isolate_modalities]
        blocks = transformer.transformer_blocks
        for index in stg_blocks if (video_rows or audio_rows) else ():
            if video_rows:
                hook(blocks[index].attn1, torch.nn.Module.register_forward_hook,
                     hook=_value_passthrough(video_rows), with_kwargs=True)
            if audio_rows:
                hook(blocks[index].audio_attn1, torch.nn.Module.register_forward_hook,
                     hook=_value_passthrough(audio_rows), with_kwargs=True)
        for block in blocks if isolated else ():
            hook(block.audio_to_video_attn, torch.nn.Module.register_forward_hook, hook=_zero_rows(isolated))
            hook(block.video_to_audio_attn, torch.nn.Module.register_forward_hook, hook=_zero_rows(isolated))
        yield


def _value_passthrough(rows: list[int]):
    """Self-attention of the given samples replaced by its value projection (ltx-core's skip)."""
    def forward_hook(attn, args, kwargs, output):
        hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        picked = hidden[rows]
        out = attn.to_v(picked)
        if attn.to_gate_logits is not None:  # per-head gates apply to the value as to attention
            gates = 2.0 * torch.sigmoid(attn.to_gate_logits(picked))
            out = (out.unflatten(2, (attn.heads, -1)) * gates.unsqueeze(-1)).flatten(2, 3)
        out = attn.to_out[1](attn.to_out[0](out))
        output = output.clone()
        output[rows] = out.to(output.dtype)
        return output
    return forward_hook


def _zero_rows(rows: list[int]):
    """The given samples get nothing from this attention: its residual adds zero."""
    def forward_hook(module, args, output):
        output = output.clone()
        output[rows] = 0
        return output
    return forward_hook
