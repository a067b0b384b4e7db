"""A memory model of one request on the GPU, counted on `meta` tensors: no memory, no GPU, seconds.

It is a model, not a measurement. What it counts:
- weights: every parameter and buffer of random-19b (the official geometry, FP8 blocks, Gemma in
  bf16 or FP8) or random-22b (LTX-2.5 in bf16, Gemma 4, its duration head and diffusion decoder)
  built on `meta`, at its own element size. Exact for the weights.
- activations: each stage's modules run on `meta` inputs of the request's size while a dispatch
  mode adds up the bytes of every storage the ops made that is still referenced, and keeps the peak.
  Attention is counted as a fused kernel's footprint (flash / cuDNN: the output, nothing N x N).
  LTX-2.5 decodes video with its diffusion decoder, so decode_video counts that one's activations
  (`video_decoder`) as `diffusion_decode` runs it (its padding, stage 5's width slabs), with the
  neighbourhood attention the device runs (`decoder_attention`: NATTEN's fused kernel on a GPU here).
What it leaves out: the CUDA context (~0.5 GB), cuBLAS/cuDNN workspaces, and the caching
allocator's fragmentation; `OVERHEAD_BYTES` stands in for them. bench/gpu.py's capped runs are the
measurement this model predicts.

A stage's peak under a policy is what rests on the device, plus the stage's visitors, plus its
activations; the request's peak is the largest stage (`ltx2.models.memory` moves the components).
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from . import memory, random19b, random22b
from .geometry import audio_latent_frames, latent_video_shape

GiB = 1024**3
OVERHEAD_BYTES = 1 * GiB  # CUDA context, library workspaces, allocator slack: not counted on meta


class LiveBytes(TorchDispatchMode):
    """Bytes of every storage that ops created and that is still referenced, and their peak.

    Storages, not tensors: a view (which at this level looks like any other tensor) shares its
    input's storage and adds nothing; a storage is freed when the last tensor on it dies.
    """

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, list[int]] = {}  # storage -> [tensors alive on it, bytes]

    def _drop(self, key: int) -> None:
        entry = self._refs[key]
        entry[0] -= 1
        if entry[0] == 0:
            self.live -= entry[1]
            del self._refs[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor):
                continue
            key = tensor.untyped_storage()._cdata
            if key not in self._refs:
                if key in inputs:
                    continue  # a view of something made outside (a weight, an input): not ours to count
                nbytes = tensor.untyped_storage().nbytes()
                self._refs[key] = [0, nbytes]
                self.live += nbytes
                self.peak = max(self.peak, self.live)
            self._refs[key][0] += 1
            weakref.finalize(tensor, self._drop, key)
        return out


@contextmanager
def fused_attention():
    """SDPA as a fused kernel's footprint: on meta the math fallback would count the N x N scores."""
    original = torch.nn.functional.scaled_dot_product_attention

    def fused(query, key, value, *args, **kwargs):
        return query.new_empty(*query.shape[:-1], value.shape[-1])

    torch.nn.functional.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = original


class NattenFootprint:
    """NATTEN's na3d (the diffusion decoder's attention on a GPU with natten, ltx2.models.speed) as its
    footprint: q, k, v (contiguous already: the rope's cat, a view of to_v) and the output, nothing per window."""

    def __call__(self, attn, hidden_states, block_mask=None):
        query, key, value = attn.project_qkv(hidden_states)
        return attn.to_out[0](query.new_empty(*hidden_states.shape[:-1], attn.heads * attn.head_dim))


def count(fn) -> int:
    """Peak bytes of the tensors `fn` creates, on meta."""
    with torch.no_grad(), fused_attention(), LiveBytes() as tracker:
        fn()
    return tracker.peak


def activation_bytes(modules: dict, width: int, height: int, frames: int, *, guided: bool = False,
                     decode_frames: int | None = None, dtype: torch.dtype = torch.bfloat16,
                     video_decoder: str = "auto", temporal_upscale: bool = False,
                     decoder_attention: str = "natten") -> dict[str, int]:
    """Peak activation bytes per stage for one request, counted on meta.

    `decode_frames`: latent frames per VAE decode tile (None: the whole video at once).
    `video_decoder`: "conv" (the VAE's), "diffusion" (LTX-2.5's, whole video), "auto": diffusion when
    `modules` has one; `decoder_attention`: the diffusion decoder's attention path (`meta_decoder`), NATTEN's
    on the GPU this models.
    `temporal_upscale`: the temporal x2 round after the request's frames (ltx2.pipelines.temporal), with
    `modules["temporal_upsampler"]`: the upsampler on the latent, one unguided transformer call on 2F - 1
    latent frames with the same audio, and the decode of 2N - 1 frames.
    """
    meta = torch.device("meta")
    transformer, vae = modules["transformer"], modules["vae"]
    spatial = vae.spatial_compression_ratio
    temporal = vae.temporal_compression_ratio
    t_lat, h_lat, w_lat = latent_video_shape(frames, height, width, spatial, temporal)
    audio = modules["audio_vae"].config
    a_frames = audio_latent_frames(frames, 25, audio.sample_rate, audio.mel_hop_length, 4)
    batch = 2 if guided else 1
    tokens = 1024
    gemma = modules["text_encoder"]

    def encode():
        ids = torch.zeros(batch, tokens, dtype=torch.long, device=meta)
        # No padding mask: transformers reads it with .item(), which meta tensors cannot answer (it is 1 MB).
        out = gemma.model.language_model(input_ids=ids, output_hidden_states=True)
        stacked = torch.stack(out.hidden_states, dim=-1).flatten(2)
        modules["connectors"](stacked.to(dtype), torch.ones(batch, tokens, device=meta), padding_side="left")

    decoded_t = 2 * t_lat - 1 if temporal_upscale else t_lat  # the latent frames the decoder gets

    diffusion = _diffusion(modules, video_decoder)

    def decode_video():
        tile = decoded_t if decode_frames is None else min(decode_frames, decoded_t)
        vae.decode(torch.empty(1, vae.config.latent_channels, tile, h_lat, w_lat, device=meta, dtype=dtype),
                   return_dict=False)

    def decode_audio():
        mel = modules["audio_vae"].decode(torch.empty(1, audio.latent_channels, a_frames, audio.mel_bins // 4,
                                                      device=meta, dtype=dtype), return_dict=False)[0]
        modules["vocoder"](mel)

    denoise = denoise_bytes(transformer, t_lat, h_lat, w_lat, a_frames, batch=batch, tokens=tokens, dtype=dtype)
    stages = {"encode_prompt": count(encode), "denoise": denoise}
    if temporal_upscale:  # the round runs unguided (batch 1), its audio stage 2's
        stages["temporal_upsample"] = upsampler_bytes(modules["temporal_upsampler"], t_lat, h_lat, w_lat)
        stages["denoise"] = max(denoise, denoise_bytes(transformer, decoded_t, h_lat, w_lat, a_frames, tokens=tokens,
                                                       dtype=dtype))
    if diffusion:  # the counts admission's lines go through, at this size
        stages[decode_stage(True)] = diffusion_decode_bytes(modules["diffusion_decoder"], decoded_t, h_lat, w_lat,
                                                            decoder_attention)
    else:
        stages[decode_stage(False)] = count(decode_video)
    stages["decode_audio"] = count(decode_audio)
    return stages


PRESETS = {preset.NAME: preset for preset in (random19b, random22b)}


def build(text_encoder_dtype: str = "bf16", layers: int = random19b.FULL_LAYERS,
          dtype: torch.dtype = torch.bfloat16, preset: str = random19b.NAME, temporal_upsampler: bool = False,
          transformer_fp8: bool = False) -> dict:
    """A random preset (random-19b, random-22b) on meta, in the compute dtype (FP8 weights and float32
    scales stay as they are). `temporal_upsampler`: with the x2 temporal upsampler at ltx-core's
    configurator defaults (the size random-19b's spatial one is built at), for a preset whose family
    publishes one. `transformer_fp8`: random-22b's transformer with the official FP8 layer set (what
    `--quantize fp8` makes of a bf16 22B at load); random-19b's is FP8 already, as its files are."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    if preset == random19b.NAME:
        modules = random19b.build_meta(layers, text_encoder_dtype, "upcast")
    else:
        modules = PRESETS[preset].build_meta(layers, text_encoder_dtype, "upcast", fp8_blocks=transformer_fp8)
    if temporal_upsampler:
        modules["temporal_upsampler"] = meta_temporal_upsampler(preset)
    for name, module in modules.items():
        if name != "text_encoder":
            module.to(dtype)
    for param in modules["text_encoder"].parameters():  # Gemma's rotary buffers stay float32, as when loaded
        if param.dtype == torch.float32:
            param.data = param.data.to(dtype)
    return modules


def meta_temporal_upsampler(preset: str) -> torch.nn.Module:
    """The x2 temporal latent upsampler on meta, for a random preset whose family publishes one."""
    import json

    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    from .families import by_name
    from .upsampler import upsampler_config

    family = getattr(PRESETS[preset], "FAMILY", None)
    if family is None or by_name(family).files.temporal_upsampler is None:
        raise ValueError(f"{preset}'s family publishes no temporal upscaler: temporal_upscale cannot run on it")
    config = upsampler_config({"config": json.dumps({"spatial_upsample": False, "temporal_upsample": True})},
                              preset, "temporal")
    with torch.device("meta"):
        return LTX2LatentUpsamplerModel(**config)


def _diffusion(modules: dict, video_decoder: str) -> bool:
    return video_decoder == "diffusion" or (video_decoder == "auto" and "diffusion_decoder" in modules)


def decode_stage(diffusion: bool) -> str:
    """The stage that decodes video: `memory.STAGES` may give the diffusion decoder its own."""
    return "diffusion_decode" if diffusion and "diffusion_decode" in memory.STAGES else "decode_video"


def stage_components(modules: dict, video_decoder: str = "auto") -> dict[str, tuple[str, ...]]:
    """The components each stage brings onto the device, among `modules`: video is decoded by one
    decoder, the one in use (ltx2.pipelines.stages); a stage with none of its components (two-stage's
    upsample without an upsampler, the other decoder's) is left out."""
    unused = "vae" if _diffusion(modules, video_decoder) else "diffusion_decoder"
    found = {}
    for stage, names in memory.STAGES.items():
        if present := tuple(name for name in names if name in modules and name != unused):
            found[stage] = present
    return found


def stage_peaks(modules: dict, policy: str, activations: dict[str, int],
                dtype: torch.dtype = torch.bfloat16, video_decoder: str = "auto") -> dict[str, int]:
    """Device bytes at each stage's peak under `policy`: resting weights + visitors + activations + overhead.
    The temporal round's upsample runs only for a request that asks for it: a stage only where `activations`
    has it."""
    sizes = {name: random19b.weight_bytes(module, dtype) for name, module in modules.items()}
    resting = sum(size for name, size in sizes.items() if memory.rests_on_compute(policy, name))
    peaks = {}
    for stage, names in stage_components(modules, video_decoder).items():
        if stage == "temporal_upsample" and stage not in activations:
            continue
        visitors = sum(sizes[name] for name in names if not memory.rests_on_compute(policy, name))
        peaks[stage] = resting + visitors + activations.get(stage, 0) + OVERHEAD_BYTES
    return peaks


# ------------------------------------------------------------------------------ the diffusion video decoder
# What LTX-2.5's decoder holds depends on its attention path more than on anything else: NATTEN's fused
# kernel holds q, k, v and the output; tiny-2.5's windowed processor gathers every query's window of keys
# and values (kernel volume x the stage's tokens, the decode's peak on CPU); eager FlexAttention (diffusers'
# default processor, with no natten and no torch.compile) evaluates its mask and float32 scores on every
# (query, key) pair. The decoder is counted as `diffusion_decode` runs it, with the path its processors take.


def decoder_attention(decoder) -> str:
    """The neighbourhood attention a loaded diffusion decoder runs: "natten" (ltx2.models.speed on a GPU
    with natten), "flex" (diffusers' FlexAttention processor), or "own" (any other, e.g. tiny-2.5's
    windowed one, counted as it runs)."""
    from diffusers.models.autoencoders.ltx2_diffusion_decoder import (
        LTX2VideoVaeNeighborhoodAttnProcessor,
        LTX2VideoVaeNeighborhoodNattenProcessor,
    )

    kinds = {"natten" if isinstance(p, LTX2VideoVaeNeighborhoodNattenProcessor) else
             "flex" if isinstance(p, LTX2VideoVaeNeighborhoodAttnProcessor) else "own"
             for p in decoder.attn_processors.values()}
    # Mixed processors: the costliest path bounds them all.
    return next(kind for kind in ("flex", "own", "natten") if kind in kinds) if kinds else "own"


def meta_decoder(decoder, attention: str | None = None) -> torch.nn.Module:
    """A meta copy of a diffusion decoder whose attention takes `attention`'s path (default: the one
    `decoder` takes): NATTEN's footprint stands in for its kernel, and for eager flex's linear part (its
    pairs are `DenseAttention`'s); any other processor is the decoder's own, run on meta."""
    copy = meta_copy(decoder)
    attention = attention or decoder_attention(decoder)
    copy.set_attn_processor(NattenFootprint() if attention in ("natten", "flex") else decoder.attn_processors)
    return copy


def diffusion_decode_peaks(decoder, t_lat: int, h_lat: int, w_lat: int) -> tuple[int, ...]:
    """Peak activation bytes of `ltx2.models.diffusion_decode.diffusion_decode` on a `meta_decoder` for a
    latent of that many frames, rows and columns, per phase (stages 1-3, stage 4, then stage 5 with its width
    slabs): the decode's peak is the largest, and which phase holds it moves with the shape."""
    from .diffusion_decode import diffusion_decode

    inner, peaks = decoder.decoder, []

    def phase(*_):  # a new phase: the last one's peak, and this one's from what is alive now
        peaks.append(tracker.peak)
        tracker.peak = tracker.live

    hooks = [inner.det_stages[-1][0].register_forward_pre_hook(phase),
             inner.t_embedder.register_forward_pre_hook(phase)]
    latent = torch.empty(1, decoder.config.latent_channels, t_lat, h_lat, w_lat, device="meta",
                         dtype=next(decoder.parameters()).dtype)
    try:
        with torch.no_grad(), LiveBytes() as tracker:
            diffusion_decode(decoder, latent, None)
    finally:
        for hook in hooks:
            hook.remove()
    return (*peaks, tracker.peak)


# Eager flex_attention on every (query, key) pair, measured on this CPU with torch 2.13 (the math path is
# the same code on a GPU): building a BlockMask evaluates the mask on every pair and sums it per block
# (bool windows, a padded copy, its int64 cast): ~10 B a pair (10.1 at 4096 and 9792 tokens); the attention holds ~3 float32 scores per
# head and pair (scaled, masked, the softmax) and the mask again: ~12 B per head and pair, + 4.
MASK_BYTES_PER_PAIR = 11
SCORE_BYTES_PER_HEAD_PAIR, ATTEND_BYTES_PER_PAIR = 12, 4


@dataclass(frozen=True)
class DenseAttention:
    """Eager flex's (query, key) pairs per decoder phase (stages 1-3, stage 4, stage 5), on top of its
    linear part: stages 1-4 each build a mask on their whole grid and attend on it; stage 5 builds one per
    width slab and attends on one slab at a time (diffusers' whole-grid mask for it is not built:
    ltx2.models.diffusion_decode)."""
    config: object  # the decoder's (diffusers' FrozenDict)
    trailing_pad: int
    heads: tuple[int, ...]  # stages 1..5

    @classmethod
    def of(cls, decoder) -> "DenseAttention":
        inner = decoder.decoder
        heads = tuple(blocks[0].attn.heads for blocks in (*inner.det_stages, inner.diff_blocks))
        return cls(decoder.config, inner.trailing_pad_latent_frames, heads)

    def __call__(self, t_lat: int, h_lat: int, w_lat: int) -> tuple[int, int, int]:
        from .diffusion_decode import W_CHUNKS, min_latent_shape

        config = self.config
        t, h, w = (max(n, least) for n, least in zip((t_lat, h_lat, w_lat), min_latent_shape(config)))
        grid, stages = (t + self.trailing_pad, h, w), []
        for stride, heads in zip(config.decoder_upsample_strides, self.heads):  # attend on the grid, upsample
            tokens = grid[0] * grid[1] * grid[2]
            stages.append(tokens**2 * max(MASK_BYTES_PER_PAIR, SCORE_BYTES_PER_HEAD_PAIR * heads + ATTEND_BYTES_PER_PAIR))
            grid = (grid[0] * stride[0] - (1 if stride[0] == 2 else 0), grid[1] * stride[1], grid[2] * stride[2])
        frames = grid[0] - self.trailing_pad * config.temporal_compression_ratio
        slab = frames * grid[1] * (-(-grid[2] // W_CHUNKS) + 2 * (config.decoder_stage5_kernel[2] // 2))
        stage5 = slab**2 * max(MASK_BYTES_PER_PAIR, SCORE_BYTES_PER_HEAD_PAIR * self.heads[-1] + ATTEND_BYTES_PER_PAIR)
        return max(stages[:-1]), stages[-1], stage5


def diffusion_decode_bytes(decoder, t_lat: int, h_lat: int, w_lat: int, attention: str | None = None) -> int:
    """Peak activation bytes of the diffusion decoder on a latent of that shape, counted at that shape."""
    attention = attention or decoder_attention(decoder)
    peaks = diffusion_decode_peaks(meta_decoder(decoder, attention), t_lat, h_lat, w_lat)
    dense = DenseAttention.of(decoder)(t_lat, h_lat, w_lat) if attention == "flex" else (0,) * len(peaks)
    return max(p + d for p, d in zip(peaks, dense))


def decoder_units(t_lat: int, h_lat: int, w_lat: int, floor: tuple[int, int, int]) -> tuple[int, ...]:
    """What the diffusion decoder's memory is a line in, for a latent padded up to `floor`
    (min_latent_shape): every stage's tokens are (frames affine in t) x (rows x h) x (columns x w), and
    stage 5's slabs add kernel//2 columns each side of a quarter of the width, so: thw, hw, th, h."""
    t, h, w = (max(n, least) for n, least in zip((t_lat, h_lat, w_lat), floor))
    return t * h * w, h * w, t * h, h


@dataclass(frozen=True)
class DecoderCost:
    """A diffusion decoder's activation bytes for any latent: per phase a line through five counts
    (`diffusion_decode_peaks`), the largest phase; with eager flex, each phase's (query, key) pairs on top."""
    floor: tuple[int, int, int]
    phases: tuple[Line, ...]
    dense: "DenseAttention | None" = None

    def __call__(self, t_lat: int, h_lat: int, w_lat: int) -> int:
        units = decoder_units(t_lat, h_lat, w_lat, self.floor)
        dense = self.dense(t_lat, h_lat, w_lat) if self.dense is not None else (0,) * len(self.phases)
        # +1%: the lines meet exact counts within 0.1% from 64x64x9 to 3840x3840x497 (tiny-2.5, measured).
        return int(max(line(*units) + d for line, d in zip(self.phases, dense)) * 1.01)


def decoder_cost(decoder, attention: str | None = None) -> DecoderCost:
    """Count a diffusion decoder (loaded, or on meta) once: five decodes on a meta copy, seconds (kept on
    the decoder, as tiling.bytes_per_pixel keeps the VAE's)."""
    from .diffusion_decode import min_latent_shape

    attention = attention or decoder_attention(decoder)
    cached = getattr(decoder, "_ltx2_decoder_cost", {})
    if attention in cached:
        return cached[attention]
    floor = min_latent_shape(decoder.config)
    t, h, w = floor
    grids = [(t, h, w), (t + 4, h, w), (t, 2 * h, w), (t, h, 2 * w), (t + 4, 2 * h, 2 * w)]
    if attention == "flex":  # the linear part with NATTEN's footprint; the pairs are counted apart
        copy, dense = meta_decoder(decoder, "natten"), DenseAttention.of(decoder)
    else:
        copy, dense = meta_decoder(decoder, attention), None
    counts = [(decoder_units(*grid, floor), diffusion_decode_peaks(copy, *grid)) for grid in grids]
    phases = tuple(solve([(units, peaks[i]) for units, peaks in counts]) for i in range(len(counts[0][1])))
    cached[attention] = DecoderCost(floor, phases, dense)
    decoder._ltx2_decoder_cost = cached
    return cached[attention]


# ---------------------------------------------------------------------------------- a loaded model's costs
# Admission (ltx2.serving.admission) asks what one request of a given size costs on the model that is
# loaded, thousands of times a minute if need be. Activations grow linearly with what a stage works on
# (tokens, pixels, audio frames) once attention is fused, so each stage is counted on meta copies of
# the loaded components a few times, once, and the request's figure is a line through those counts.


def meta_copy(module: torch.nn.Module) -> torch.nn.Module:
    """An empty copy of a loaded diffusers component, on meta, in the dtype it computes in."""
    dtype = next((p.dtype for p in module.parameters() if p.dtype.is_floating_point and p.element_size() > 1),
                 torch.float32)
    with torch.device("meta"):
        return type(module).from_config(module.config).to(dtype)


def text_widths(config) -> tuple[int, int]:
    """The widths of the text contexts the transformer reads (video, audio): Gemma's for the 19B (its
    caption projection is inside), each stream's own from LTX-2.3 on (projected before the connectors)."""
    return ((config.caption_channels,) * 2 if config.use_prompt_embeddings
            else (config.cross_attention_dim, config.audio_cross_attention_dim))


def denoise_bytes(transformer, t_lat: int, h_lat: int, w_lat: int, a_frames: int, *, batch: int = 1,
                  tokens: int = 1024, dtype: torch.dtype = torch.bfloat16) -> int:
    """Peak activation bytes of one transformer call on a meta copy (`transformer` on meta)."""
    meta = torch.device("meta")
    video_text, audio_text = text_widths(transformer.config)

    def call():
        transformer(
            hidden_states=torch.empty(batch, t_lat * h_lat * w_lat, transformer.config.in_channels, device=meta, dtype=dtype),
            audio_hidden_states=torch.empty(batch, a_frames, transformer.config.audio_in_channels, device=meta, dtype=dtype),
            encoder_hidden_states=torch.empty(batch, tokens, video_text, device=meta, dtype=dtype),
            audio_encoder_hidden_states=torch.empty(batch, tokens, audio_text, device=meta, dtype=dtype),
            timestep=torch.empty(batch, device=meta), audio_timestep=torch.empty(batch, device=meta),
            num_frames=t_lat, height=h_lat, width=w_lat, fps=25, audio_num_frames=a_frames,
            video_coords=transformer.rope.prepare_video_coords(batch, t_lat, h_lat, w_lat, "cpu", fps=25).to(meta),
            audio_coords=transformer.audio_rope.prepare_audio_coords(batch, a_frames, "cpu").to(meta),
            sigma=torch.empty(batch, device=meta), audio_sigma=torch.empty(batch, device=meta),
            use_cross_timestep=False, return_dict=False,
        )

    return count(call)


def upsampler_bytes(upsampler, t_lat: int, h_lat: int, w_lat: int) -> int:
    """Peak activation bytes of a latent upsampler (spatial x2 / x1.5 or temporal x2, a meta copy) on a
    latent of that many frames, rows and columns."""
    latent = torch.empty(1, upsampler.config.in_channels, t_lat, h_lat, w_lat, device="meta",
                         dtype=next(upsampler.parameters()).dtype)
    return count(lambda: upsampler(latent))


def audio_decode_bytes(audio_vae, vocoder, a_frames: int) -> int:
    """Peak activation bytes of the audio VAE's decode and the vocoder (both meta copies)."""
    config = audio_vae.config
    dtype = next(audio_vae.parameters()).dtype

    def call():
        mel = audio_vae.decode(torch.empty(1, config.latent_channels, a_frames, config.mel_bins // 4,
                                           device="meta", dtype=dtype), return_dict=False)[0]
        vocoder(mel.to(next(vocoder.parameters()).dtype))

    return count(call)


@dataclass(frozen=True)
class Line:
    """bytes = base + sum(slope_i x units_i): a stage's activations against what it works on."""
    base: float
    slopes: tuple[float, ...]

    def __call__(self, *units: float) -> int:
        return max(0, int(self.base + sum(s * u for s, u in zip(self.slopes, units))))


def fit(counts: list[tuple[tuple[float, ...], int]]) -> Line:
    """The line through (units, bytes) counts: the first is the origin, each next moves one unit."""
    (origin, base_bytes), rest = counts[0], counts[1:]
    slopes = []
    for i, (units, nbytes) in enumerate(rest):
        slopes.append((nbytes - base_bytes) / (units[i] - origin[i]))
    base = base_bytes - sum(s * u for s, u in zip(slopes, origin))
    return Line(base, tuple(max(0.0, s) for s in slopes))


def solve(counts: list[tuple[tuple[float, ...], int]]) -> Line:
    """The line exactly through n + 1 (units, bytes) counts of n units, wherever they lie (a slope may be
    negative: a term that corrects another)."""
    units = torch.tensor([[1.0, *u] for u, _ in counts], dtype=torch.float64)
    coefficients = torch.linalg.solve(units, torch.tensor([float(b) for _, b in counts], dtype=torch.float64))
    return Line(coefficients[0].item(), tuple(c.item() for c in coefficients[1:]))
