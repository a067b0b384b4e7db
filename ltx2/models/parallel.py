"""One job across several processes (one per device) over torch.distributed.

Two modes, combinable (`--parallel ulysses=N,cfg=2`; the group has N x 2 ranks):

- **cfg**: the passes of a guided step (cond, uncond, STG, modality: one batch row each) are split
  across the cfg ranks in contiguous chunks; each rank runs its rows and the rows are all-gathered.
- **ulysses** (sequence parallelism): each rank holds 1/N of the video tokens and 1/N of the audio
  tokens (with their positions, per-token timesteps and keyframe marks) through the whole
  transformer. Around each video/audio self-attention and the audio<->video cross-attentions an
  all-to-all turns "my tokens, all heads" into "all tokens, my heads", the attention runs on full
  sequences, and a second all-to-all turns it back. The prompt cross-attentions need no exchange:
  local queries attend to the full prompt every rank holds. Lengths that do not divide by N are
  padded at the end; the padding is cut off before every attention, so it is never a key.

Every rank holds the full weights and runs the same `generate()` on the same request (the same
seed, so the same noise); only the transformer pass and the VAE decode's tiles are split, and every
rank ends each step with the same full latents.

diffusers' `_cp_plan` for `LTX2VideoTransformer3DModel` does not fit as it stands: it splits the
video tokens only (the audio stream stays whole on every rank and each all-to-all then hands every
rank N copies of the audio keys), it does not split the per-token timesteps that conditioning
(i2v, keyframes, a2v) feeds (their AdaLN would not match the split tokens), nor the keyframe marks,
and its dispatch needs a DeviceMesh and an attention backend with context-parallel support. So the
split and the all-to-all are ours (hooks on the transformer and our own attention processor), and
our reference hooks (AV gates, STG, modality isolation) work unchanged: they act per batch row or
per token.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

MODES = ("ulysses", "cfg")
MAX_RANKS = 64
COLLECTIVE_TIMEOUT_S = 300.0  # a job's collective waiting this long on a peer: the peer hangs


class ParallelError(ValueError):
    """A `--parallel` value that cannot run; the message names the rule."""


class GroupFailed(RuntimeError):
    """A collective failed: a rank died or stopped answering, and the group is out of step."""


def checked(collective, *args, **kwargs):
    """One collective, its backend's failure (a peer gone: gloo's read error, NCCL's) said as what it means."""
    try:
        return collective(*args, **kwargs)
    except (RuntimeError, dist.DistError) as exc:
        raise GroupFailed(f"the --parallel group failed: a rank stopped answering ({str(exc)[:200]})") from exc


@dataclass(frozen=True)
class ParallelSpec:
    ulysses: int = 1
    cfg: int = 1

    @property
    def size(self) -> int:
        return self.ulysses * self.cfg

    def __str__(self) -> str:
        return ",".join(f"{m}={getattr(self, m)}" for m in MODES if getattr(self, m) > 1) or "none"

    @classmethod
    def parse(cls, text: str | None) -> ParallelSpec:
        """`ulysses=N`, `cfg=2`, or both comma-separated; empty or `none` is one process."""
        text = (text or "").strip().lower()
        if text in ("", "none", "1"):
            return cls()
        values: dict[str, int] = {}
        for part in text.split(","):
            name, sep, value = part.strip().partition("=")
            if not sep or name not in MODES:
                raise ParallelError(f"--parallel: {part.strip()!r} is not MODE=N with MODE one of {', '.join(MODES)} "
                                    "(e.g. ulysses=2,cfg=2)")
            if name in values:
                raise ParallelError(f"--parallel: {name} is given twice")
            try:
                values[name] = int(value)
            except ValueError:
                raise ParallelError(f"--parallel: {name}={value!r} is not a whole number") from None
        if values.get("cfg", 1) not in (1, 2):
            raise ParallelError("--parallel: cfg must be 2 (a guided step's passes split across two ranks) or 1")
        if values.get("ulysses", 1) < 1:
            raise ParallelError("--parallel: ulysses must be at least 1")
        spec = cls(**values)
        if spec.size > MAX_RANKS:
            raise ParallelError(f"--parallel: {spec.size} ranks is more than {MAX_RANKS}")
        return spec

    def check_model(self, transformer) -> None:
        """Ulysses splits the attention heads across its ranks: both streams' head counts must divide."""
        if self.ulysses == 1:
            return
        config = transformer.config
        for name in ("num_attention_heads", "audio_num_attention_heads"):
            heads = int(getattr(config, name))
            if heads % self.ulysses:
                raise ParallelError(f"--parallel: ulysses={self.ulysses} must divide the transformer's {name} "
                                    f"({heads})")


@dataclass
class Group:
    """This process's place in the rank group: rank = cfg_rank * ulysses + ulysses_rank."""

    spec: ParallelSpec
    rank: int
    ulysses_group: object
    cfg_group: object
    world_group: object = None  # every rank, with the job collectives' timeout

    @property
    def world(self) -> int:
        return self.spec.size

    @property
    def ulysses_rank(self) -> int:
        return self.rank % self.spec.ulysses

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.spec.ulysses


_current: Group | None = None


def current() -> Group | None:
    """The rank group this process belongs to, or None when it runs jobs alone."""
    return _current


def init(spec: ParallelSpec, rank: int, device: torch.device | str = "cpu", *, address: str | None = None,
         port: int | None = None, timeout_s: float = 600.0, op_timeout_s: float = COLLECTIVE_TIMEOUT_S) -> Group:
    """Join the rank group (gloo on CPU, NCCL on CUDA). The rendezvous is MASTER_ADDR/MASTER_PORT (or
    `address`/`port`) and waits up to `timeout_s` (the other ranks may still be loading their models);
    every rank calls this with the same spec. A collective of a job waits at most `op_timeout_s` for a
    peer, so a rank that hangs fails the job instead of holding the worker."""
    global _current
    device = torch.device(device)
    if address is not None:
        os.environ["MASTER_ADDR"] = address
    if port is not None:
        os.environ["MASTER_PORT"] = str(port)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, rank=rank, world_size=spec.size, timeout=timedelta(seconds=timeout_s))
    u, c = spec.ulysses, spec.cfg
    # Every rank creates every subgroup, in the same order (torch.distributed's rule).
    op_timeout = timedelta(seconds=op_timeout_s)
    ulysses_groups = [dist.new_group([ci * u + ui for ui in range(u)], timeout=op_timeout) for ci in range(c)]
    cfg_groups = [dist.new_group([ci * u + ui for ci in range(c)], timeout=op_timeout) for ui in range(u)]
    everyone = dist.new_group(list(range(spec.size)), timeout=op_timeout)
    _current = Group(spec, rank, ulysses_groups[rank // u], cfg_groups[rank % u], everyone)
    return _current


def shutdown() -> None:
    global _current
    if _current is not None and dist.is_initialized():
        dist.destroy_process_group()
    _current = None


# ---------------------------------------------------------------------------------------- cfg split

def _chunks(batch: int, parts: int) -> list[range]:
    size = -(-batch // parts)
    return [range(min(i * size, batch), min((i + 1) * size, batch)) for i in range(parts)]


def pass_rows(batch: int) -> list[int] | None:
    """The batch rows (passes) this rank runs; None for all of them (no cfg split). A rank left without
    rows (one pass, two ranks) runs the first chunk again, so every rank calls the transformer and the
    ulysses exchanges inside it stay matched."""
    group = _current
    if group is None or group.spec.cfg == 1:
        return None
    chunks = _chunks(batch, group.spec.cfg)
    mine = chunks[group.cfg_rank]
    return list(mine if len(mine) else chunks[0])


def gather_passes(output: torch.Tensor, batch: int) -> torch.Tensor:
    """Every pass's rows back on every rank, in batch order, from each rank's `pass_rows`."""
    group = _current
    if group is None or group.spec.cfg == 1:
        return output
    chunks = _chunks(batch, group.spec.cfg)
    size = len(chunks[0])
    padded = output if output.shape[0] == size else torch.cat(
        [output, output.new_zeros(size - output.shape[0], *output.shape[1:])])
    parts = [torch.empty_like(padded) for _ in chunks]
    checked(dist.all_gather, parts, padded.contiguous(), group=group.cfg_group)
    return torch.cat([part[: len(chunk)] for part, chunk in zip(parts, chunks) if len(chunk)])


# ----------------------------------------------------------------------------------- ulysses split

# The transformer's per-token inputs and the dimension their tokens are on.
_TOKEN_INPUTS = {"hidden_states": ("video", 1), "audio_hidden_states": ("audio", 1), "video_coords": ("video", 2),
                 "audio_coords": ("audio", 2), "video_keyframes_mask": ("video", 1), "timestep": ("video", 1),
                 "audio_timestep": ("audio", 1)}
# The attentions whose keys are split tokens: (query stream, key stream). attn2/audio_attn2 (the prompt) are not.
_SPLIT_ATTENTIONS = {"attn1": ("video", "video"), "audio_attn1": ("audio", "audio"),
                     "audio_to_video_attn": ("video", "audio"), "video_to_audio_attn": ("audio", "video")}


def _shard(x: torch.Tensor, dim: int, n: int, index: int) -> torch.Tensor:
    """Tokens [index * chunk, (index + 1) * chunk) of `dim`, the end padded with zeros to n chunks."""
    total = x.shape[dim]
    chunk = -(-total // n)
    if chunk * n != total:
        pad = list(x.shape)
        pad[dim] = chunk * n - total
        x = torch.cat([x, x.new_zeros(pad)], dim=dim)
    return x.narrow(dim, index * chunk, chunk)


def _gather_tokens(x: torch.Tensor, total: int, group: Group) -> torch.Tensor:
    parts = [torch.empty_like(x) for _ in range(group.spec.ulysses)]
    checked(dist.all_gather, parts, x.contiguous(), group=group.ulysses_group)
    return torch.cat(parts, dim=1)[:, :total]


def _seq_to_heads(x: torch.Tensor, group: Group, total: int) -> torch.Tensor:
    """(B, local tokens, H, D) -> (B, all `total` tokens, H / N, D): the first all-to-all."""
    n = group.spec.ulysses
    b, s, h, d = x.shape
    send = x.reshape(b, s, n, h // n, d).permute(2, 0, 1, 3, 4).contiguous()  # piece j: heads of rank j
    received = torch.empty_like(send)
    checked(dist.all_to_all_single, received, send, group=group.ulysses_group)  # piece j: rank j's tokens, my heads
    return received.permute(1, 0, 2, 3, 4).reshape(b, n * s, h // n, d)[:, :total]


def _heads_to_seq(x: torch.Tensor, group: Group, local: int) -> torch.Tensor:
    """(B, all tokens, H / N, D) -> (B, `local` tokens, H, D): the second all-to-all, padding restored."""
    n = group.spec.ulysses
    b, total, h, d = x.shape
    if local * n != total:
        x = torch.cat([x, x.new_zeros(b, local * n - total, h, d)], dim=1)
    send = x.reshape(b, n, local, h, d).permute(1, 0, 2, 3, 4).contiguous()  # piece j: rank j's tokens
    received = torch.empty_like(send)
    checked(dist.all_to_all_single, received, send, group=group.ulysses_group)  # piece j: my tokens, rank j's heads
    return received.permute(1, 2, 0, 3, 4).reshape(b, local, n * h, d)


class UlyssesProcessor:
    """diffusers' LTX2AudioVideoAttnProcessor with the two all-to-alls around the attention itself.
    Projections, the across-heads RMS norms, RoPE and the per-head gates stay on the local tokens."""

    def __init__(self, group: Group, lengths: dict[str, int], query: str, key: str, backend=None):
        self.group, self.lengths, self.query, self.key, self.backend = group, lengths, query, key, backend

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 query_rotary_emb=None, key_rotary_emb=None):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.transformers.transformer_ltx2 import (
            apply_interleaved_rotary_emb,
            apply_split_rotary_emb,
        )

        source = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        gate_logits = attn.to_gate_logits(hidden_states) if attn.to_gate_logits is not None else None
        query = attn.norm_q(attn.to_q(hidden_states))
        key = attn.norm_k(attn.to_k(source))
        value = attn.to_v(source)
        if query_rotary_emb is not None:
            rotate = apply_interleaved_rotary_emb if attn.rope_type == "interleaved" else apply_split_rotary_emb
            query = rotate(query, query_rotary_emb)
            key = rotate(key, key_rotary_emb if key_rotary_emb is not None else query_rotary_emb)
        local = query.shape[1]
        total_q, total_k = self.lengths[self.query], self.lengths[self.key]
        query = _seq_to_heads(query.unflatten(2, (attn.heads, -1)), self.group, total_q)
        key = _seq_to_heads(key.unflatten(2, (attn.heads, -1)), self.group, total_k)
        value = _seq_to_heads(value.unflatten(2, (attn.heads, -1)), self.group, total_k)
        if attention_mask is not None:  # a full (B, Tq, Tk) additive mask (IC-LoRA's): this rank's heads of it
            mask = attention_mask if attention_mask.ndim == 4 else attention_mask.unsqueeze(1)
            heads = query.shape[2]
            mask = mask.expand(-1, attn.heads, -1, -1)
            attention_mask = mask[:, self.group.ulysses_rank * heads:(self.group.ulysses_rank + 1) * heads]
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False,
                                    backend=self.backend)
        out = _heads_to_seq(out.to(query.dtype), self.group, local)
        if gate_logits is not None:
            out = out * (2.0 * torch.sigmoid(gate_logits)).unsqueeze(-1)
        out = out.flatten(2, 3)
        return attn.to_out[1](attn.to_out[0](out))


@contextmanager
def sequence_parallel(transformer) -> Iterator[None]:
    """For the next calls of `transformer`: its per-token inputs split across the ulysses ranks, its
    token-mixing attentions exchanged (`UlyssesProcessor`), its outputs gathered whole on every rank.
    Nothing happens outside a rank group or with ulysses=1."""
    group = _current
    if group is None or group.spec.ulysses == 1:
        yield
        return
    n, index = group.spec.ulysses, group.ulysses_rank
    lengths: dict[str, int] = {}

    def split(module, args, kwargs):
        if args:
            raise TypeError("sequence_parallel needs the transformer called with keyword arguments")
        lengths["video"] = kwargs["hidden_states"].shape[1]
        lengths["audio"] = kwargs["audio_hidden_states"].shape[1]
        for name, (stream, dim) in _TOKEN_INPUTS.items():
            value = kwargs.get(name)
            if torch.is_tensor(value) and value.ndim > dim and value.shape[dim] == lengths[stream]:
                kwargs[name] = _shard(value, dim, n, index)
        return args, kwargs

    def gather(module, args, kwargs, output):
        video, audio = output[0], output[1]
        return (_gather_tokens(video, lengths["video"], group), _gather_tokens(audio, lengths["audio"], group),
                *output[2:])

    with ExitStack() as stack:
        stack.callback(transformer.register_forward_pre_hook(split, with_kwargs=True).remove)
        stack.callback(transformer.register_forward_hook(gather, with_kwargs=True).remove)
        for block in transformer.transformer_blocks:
            for name, (query, key) in _SPLIT_ATTENTIONS.items():
                attn = getattr(block, name)
                saved = attn.processor
                backend = getattr(saved, "_attention_backend", None)
                attn.processor = UlyssesProcessor(group, lengths, query, key, backend)
                stack.callback(setattr, attn, "processor", saved)
        yield


# ---------------------------------------------------------------------------------------- VAE tiles

def decode_tiles(count: int, decode, device: torch.device, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """The `count` tiles `decode(index)` makes, in order. In a rank group each rank first decodes its own
    (round robin), then every tile is broadcast from its owner; alone, or with one tile (which every rank
    then decodes itself), each is decoded when it is asked for."""
    group = _current
    if group is None or count == 1:
        for index in range(count):
            yield decode(index)
        return
    mine = {index: decode(index) for index in range(count) if index % group.world == group.rank}
    for index in range(count):
        yield share_tile(mine.pop(index, None), index % group.world, device, dtype)


def share_tile(tile: torch.Tensor | None, owner: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The owner's decoded tile on every rank (its shape first: the others have not decoded it). On gloo
    it travels as float32 (gloo has no bfloat16); the values are unchanged either way."""
    wire = device if device.type == "cuda" else torch.device("cpu")
    shape = torch.tensor(tile.shape if tile is not None else [0] * 5, dtype=torch.int64, device=wire)
    checked(dist.broadcast, shape, src=owner, group=_current.world_group)
    wire_dtype = dtype if wire.type == "cuda" else torch.float32
    if tile is None:
        buffer = torch.empty(*shape.tolist(), device=wire, dtype=wire_dtype)
    else:
        buffer = tile.to(wire, wire_dtype).contiguous()
    checked(dist.broadcast, buffer, src=owner, group=_current.world_group)
    return buffer.to(device, dtype)
