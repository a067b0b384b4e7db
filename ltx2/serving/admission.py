"""Admission by predicted memory: a request larger than this machine is a 413 before it is queued.

Each request's peak memory is predicted from the loaded model (`Costs`, counted once on meta copies of
its components, ltx2.models.memory_model) for its size x frames, pipeline (one or two stages),
guidance batch, temporal x2 round (`temporal_upscale`), memory policy and VAE tiling, and compared with
what this process may still use:
free GPU memory on CUDA (with the caching allocator's unused blocks), and on the host the tighter of
MemAvailable and every memory cgroup limit above the process (ltx2.models.memory.host_memory).

Host memory on a CPU device holds everything; on CUDA it holds the decoded frames the encoder reads.
While a job runs, the memory it holds now comes back before the next one runs: the running job's
prediction is added back, capped by the last reading taken with no job running.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from ..keyframes import appended_keyframes
from ..models import memory, memory_model
from ..models.geometry import audio_latent_frames, latent_video_shape
from ..models.loaded import LoadedModel
from ..pipelines import attention_strength, tiling
from ..pipelines.stages import model_size, resolve_guidance, resolve_multiscale
from ..schema import (
    FRAME_MAX,
    FRAME_MIN,
    TEMPORAL_MAX_FRAMES,
    GenerateRequest,
    InvalidRequest,
)

GiB = 1024**3
MiB = 1024**2
# Per job, whatever its size: the prompt's encoding on tiny weights, Python objects, the encoder's own
# buffers, the response. Measured on the tiny preset (34 MiB at 64x64x9), rounded up.
BASE_HOST_BYTES = 96 * MiB
# After the decoder, per output pixel-frame: the uint8 frames (F, H, W, 3) and the center-cropped copy
# the encoder reads, on the host.
FRAMES_HOST_BYTES = 3 + 3
# Converting the decoded video to uint8 (stages._to_uint8_frames) on the compute device: a float32 copy
# of the decoder's output (when it is not float32 already), then two float32 temporaries at once.
CHAIN_TEMPORARIES = 2
DEVICE_WORKSPACE_BYTES = 512 * MiB  # cuBLAS/cuDNN workspaces and allocator slack, beyond activations
DEFAULT_MARGIN = 1.1


class TooLarge(InvalidRequest):
    """A request this server cannot hold in memory: 413 too_large_for_server."""

    def __init__(self, field: str, message: str):
        super().__init__(field, message, status=413)

    @property
    def code(self) -> str:
        return "too_large_for_server"


@dataclass(frozen=True)
class Footprint:
    host: int  # bytes of host memory the job adds at its peak
    device: int  # bytes of GPU memory at its peak (0 on a CPU device: all of it is host memory)


class Costs:
    """A loaded model's activations per stage as lines through counts on meta copies (seconds, once)."""

    def __init__(self, model: LoadedModel):
        pipe = model.pipe
        self.spatial, self.temporal = pipe.vae_spatial_compression_ratio, pipe.vae_temporal_compression_ratio
        transformer = memory_model.meta_copy(pipe.transformer)
        dtype = next(transformer.parameters()).dtype
        # Three counts: an origin, then more video tokens, then more audio frames.
        grids = [(2, 2, 2, 8), (2, 4, 4, 8), (2, 2, 2, 40)]
        counts = [((t * h * w, a), memory_model.denoise_bytes(transformer, t, h, w, a, dtype=dtype))
                  for t, h, w, a in grids]
        self.denoise = memory_model.fit(counts)
        audio_vae, vocoder = memory_model.meta_copy(pipe.audio_vae), memory_model.meta_copy(pipe.vocoder)
        self.audio = memory_model.fit([((a,), memory_model.audio_decode_bytes(audio_vae, vocoder, a)) for a in (8, 40)])
        self.vae = pipe.vae
        # The video decoder the pipeline runs (ltx2.pipelines.stages.decode_video): LTX-2.5's diffusion decoder
        # with the attention path it takes on this device (memory_model.decoder_cost), or the VAE's.
        self.diffusion = None
        decoder = pipe.vae
        if model.video_decoder == "diffusion":
            decoder = model.diffusion_decoder
            self.diffusion = memory_model.decoder_cost(decoder)
        self.decoder_bytes_per_pixel = tiling.bytes_per_pixel(pipe.vae)
        # The decoder's output element size (its dtype): a bf16 video is made float32 to convert it.
        dtype = next(decoder.parameters()).dtype
        self.output_element = dtype.itemsize if hasattr(dtype, "itemsize") else 4
        self.upsampler_per_voxel = 0.0
        if model.upsampler is not None:
            upsampler = memory_model.meta_copy(model.upsampler)
            self.upsampler_per_voxel = memory_model.upsampler_bytes(upsampler, 2, 4, 4) / (2 * 4 * 4)
        # The temporal x2 upsampler (temporal_upscale): a line through two counts, since its output has
        # 2F - 1 frames for F in and the ratio of the two moves with F.
        self.temporal_upsample = None
        if model.temporal_upsampler is not None:
            upsampler = memory_model.meta_copy(model.temporal_upsampler)
            self.temporal_upsample = memory_model.fit([((f * 4 * 4,), memory_model.upsampler_bytes(upsampler, f, 4, 4))
                                                       for f in (2, 4)])


class Admission:
    """Predicts a request's peak memory and refuses one that cannot fit (`check`)."""

    def __init__(self, model: LoadedModel, margin: float = DEFAULT_MARGIN, cgroup: str | None = None):
        self.model = model
        self.margin = margin  # 0: no admission check
        self.cgroup = cgroup
        self.cuda = model.device.type == "cuda"
        self.costs = Costs(model)
        self._idle: tuple[int, int | None] | None = None  # (host, device) available when no job ran
        self._lock = threading.Lock()

    # -- prediction --------------------------------------------------------------------------

    def doubles(self, request: GenerateRequest) -> bool:
        """Whether the request runs the temporal x2 round: asked for, and able to run (otherwise it is refused
        with its own 422 when it runs, after the two stages it would follow)."""
        if not request.temporal_upscale or self.costs.temporal_upsample is None:
            return False
        try:
            return resolve_multiscale(self.model, request)
        except InvalidRequest:  # e.g. use_multiscale with no spatial upsampler: refused as it runs
            return False

    def stage_bytes(self, request: GenerateRequest, frames: int, out_w: int, out_h: int) -> tuple[dict[str, int], int]:
        """Each stage's activation bytes for the request at that many frames and that output size, and the
        frames it outputs (2N - 1 with the temporal x2 round)."""
        model, costs = self.model, self.costs
        try:
            # a retake and an extend: one stage
            two_stage = request.retake is None and request.extend is None and resolve_multiscale(model, request)
            batch = len(resolve_guidance(model, request).passes)
        except InvalidRequest:  # refused with its own 422 when it runs; the largest case here
            two_stage, batch = False, 3
        w, h = model_size(out_w, out_h, costs.spatial * (2 if two_stage else 1))
        a = audio_latent_frames(frames, request.fps, model.pipe.audio_vae.config.sample_rate,
                                model.pipe.audio_vae.config.mel_hop_length, model.pipe.audio_vae_temporal_compression_ratio)
        t, lh, lw = latent_video_shape(frames, h, w, costs.spatial, costs.temporal)
        held = appended_keyframes(request, frames)  # each appended keyframe: one more latent frame of tokens
        # ic_lora: stage 1 also carries the reference's tokens, at most as many as its own (downscale factor 1).
        reference = t if request.ic_lora is not None else 0
        # conditioning_attention_strength below 1, or a conditioning_attention_mask: one dense tokens x tokens bias
        # on stage 1's video self-attention.
        biased = request.ic_lora is not None and (request.conditioning_attention_strength < 1
                                                  or request.conditioning_attention_mask is not None)
        bias = lambda tokens: attention_strength.bias_bytes(tokens, model.dtype) if biased else 0  # noqa: E731
        tokens = (t + held + (0 if two_stage else reference)) * lh * lw
        denoise = costs.denoise(tokens, a) * (1 if two_stage else batch) + (0 if two_stage else bias(tokens))
        upsample = 0
        if two_stage:  # stage 1 at half size with the guidance batch, stage 2 at full size alone
            first = (t + held + reference) * (lh // 2) * (lw // 2)
            denoise = max(denoise, costs.denoise(first, a) * batch + bias(first))
            upsample = int(costs.upsampler_per_voxel * t * lh * lw)
        stages = {"encode_prompt": 0, "denoise": denoise, "upsample": upsample}
        decoded_t, out_frames = t, frames
        if two_stage and self.doubles(request):  # the temporal round on 2t - 1 latent frames, then their decode
            decoded_t, out_frames = 2 * t - 1, 2 * (frames - 1) + 1
            # Its own stage, so the upsampler's weights visit (sequential) only for a request that runs it.
            stages["temporal_upsample"] = costs.temporal_upsample(t * lh * lw)
            # Unguided at full size; the audio, stage 2's, rides along held.
            stages["denoise"] = max(denoise, costs.denoise((decoded_t + held) * lh * lw, a))
        pixels = ((decoded_t - 1) * costs.temporal + 1) * h * w
        output = pixels * 3 * costs.output_element
        if costs.diffusion is not None:  # not tiled; its output is of the latent it pads up to its floor
            floor_t, floor_h, floor_w = (max(n, least) for n, least in zip((decoded_t, lh, lw), costs.diffusion.floor))
            output = ((floor_t - 1) * costs.temporal + 1) * floor_h * floor_w * costs.spatial**2 * 3 * costs.output_element
            decode = costs.diffusion(decoded_t, lh, lw)  # its output included
        else:
            decode = int(costs.decoder_bytes_per_pixel * pixels)  # its output included
        if self.cuda and costs.diffusion is None:  # tiled to fit when the whole would not: the smallest tiles
            side = tiling.SPATIAL_TILE // costs.spatial
            smallest = tiling.estimate(self.vae, min(decoded_t, tiling.MIN_TILE_FRAMES), min(lh, side), min(lw, side))
            decode = min(decode, output + smallest)
        chain = output + (pixels * 12 if costs.output_element != 4 else 0) + CHAIN_TEMPORARIES * pixels * 12
        # Under the stage's name in memory.STAGES, so its decoder's weights visit it (footprint).
        stages[memory_model.decode_stage(costs.diffusion is not None)] = max(decode, chain)
        stages["decode_audio"] = costs.audio(a)
        return stages, out_frames

    def footprint(self, request: GenerateRequest, num_frames: int | None = None,
                  width: int | None = None, height: int | None = None, jobs: int = 1) -> Footprint:
        """The request's peak host and device bytes beyond what the idle server holds. `jobs`: that many of it
        denoised as one batch (--max-batch): the denoising activations are as many rows as all of them, and
        every job's frames are held until it is encoded; the other stages run one job at a time."""
        model = self.model
        out_w, out_h = width or request.width, height or request.height
        if request.extend is not None:  # each window costs a generation of num_frames; the output holds them all
            stages, _ = self.stage_bytes(request, request.num_frames, out_w, out_h)
            out_frames = (num_frames or FRAME_MIN) + round(request.extend.seconds * request.fps)
        else:
            stages, out_frames = self.stage_bytes(request, num_frames or request.num_frames, out_w, out_h)
        stages["denoise"] *= jobs
        frames_host = FRAMES_HOST_BYTES * out_frames * out_w * out_h * jobs + BASE_HOST_BYTES
        if not self.cuda:
            return Footprint(host=int((max(stages.values()) + frames_host) * max(self.margin, 1.0)), device=0)
        sizes = model.placement.sizes
        visitors = {stage: sum(sizes.get(name, 0) for name in names if not memory.rests_on_compute(
            model.placement.policy, name)) for stage, names in memory.STAGES.items()}
        stages["encode_prompt"] = memory.ENCODE_WORKSPACE_BYTES
        device = max(act + visitors.get(stage, 0) for stage, act in stages.items()) + DEVICE_WORKSPACE_BYTES
        return Footprint(host=int(frames_host * max(self.margin, 1.0)), device=int(device * max(self.margin, 1.0)))

    @property
    def vae(self):
        return self.costs.vae

    # -- what this process may use ---------------------------------------------------------------

    def available(self, running: GenerateRequest | None = None) -> tuple[memory.HostMemory, int | None]:
        """(host memory, free device bytes or None on a CPU) for the next job to run alone."""
        host = memory.host_memory(self.cgroup)
        device = None
        if self.cuda:
            free, _ = memory.device_memory(self.model.device)
            device = free + torch.cuda.memory_reserved(self.model.device) - torch.cuda.memory_allocated(self.model.device)
        with self._lock:
            if running is None:
                self._idle = (host.available, device)
            elif self._idle is not None:  # what the running job holds comes back, up to the idle reading
                held = self.footprint(running)
                host = memory.HostMemory(min(host.available + held.host, self._idle[0]), host.source)
                if device is not None and self._idle[1] is not None:
                    device = min(device + held.device, self._idle[1])
        return host, device

    def fits_batch(self, request: GenerateRequest, jobs: int) -> bool:
        """Whether `jobs` requests of this one's shape fit as one batch now (a batch is never grown past it)."""
        if self.margin <= 0:
            return True
        return self.fits(self.footprint(request, jobs=jobs), *self.available())

    def fits(self, need: Footprint, host: memory.HostMemory, device: int | None) -> bool:
        return need.host <= host.available and (device is None or need.device <= device)

    def largest_frames(self, request: GenerateRequest, host: memory.HostMemory, device: int | None,
                       width: int | None = None, height: int | None = None) -> int | None:
        """The most frames (8k+1) that fit at the request's size, or None when not even FRAME_MIN does. With
        temporal_upscale: the most whose doubled clip (2N - 1 frames) fits, at most TEMPORAL_MAX_FRAMES."""
        def fits(k: int) -> bool:
            return self.fits(self.footprint(request, 8 * k + 1, width, height), host, device)

        low, high = (FRAME_MIN - 1) // 8, ((TEMPORAL_MAX_FRAMES if self.doubles(request) else FRAME_MAX) - 1) // 8
        if not fits(low):
            return None
        while low < high:  # the largest k that fits: footprints grow with frames
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return 8 * low + 1

    # -- the rule --------------------------------------------------------------------------------

    def check(self, request: GenerateRequest, running: GenerateRequest | None = None,
              num_frames: int | None = None, width: int | None = None, height: int | None = None) -> None:
        """Raise TooLarge when the request's predicted peak does not fit what this process may use."""
        if self.margin <= 0:
            return
        frames = num_frames or request.num_frames
        need = self.footprint(request, frames, width, height)
        host, device = self.available(running)
        if self.fits(need, host, device):
            return
        w, h = width or request.width, height or request.height
        short = need.host > host.available
        what = (f"{need.host / GiB:.2f} GiB of host memory, and this server has {host.available / GiB:.2f} GiB "
                f"available ({host.source})" if short else
                f"{need.device / GiB:.2f} GiB of GPU memory, and this server has {device / GiB:.2f} GiB free")
        largest = self.largest_frames(request, host, device, width, height)
        if not self.doubles(request):
            if largest is None:
                field, hint = "width", f"no frame count fits at {w}x{h}: lower width and height"
            else:
                field, hint = "num_frames", (f"at {w}x{h} at most {largest} frames fit (num_frames <= {largest}), "
                                             "or lower width and height")
            raise TooLarge(field, f"{w}x{h} x {frames} frames needs about {what}; {hint}")
        # temporal_upscale: the frame counts named are the request's N, whose 2N - 1 frames must fit.
        single = request.model_copy(update={"temporal_upscale": False})
        if largest is not None:
            field, hint = "num_frames", (f"with temporal_upscale at {w}x{h} at most {largest} frames fit "
                                         f"(num_frames <= {largest}, {2 * largest - 1} frames out), or send "
                                         "temporal_upscale false, or lower width and height")
        elif (plain := self.largest_frames(single, host, device, width, height)) is not None:
            field, hint = "temporal_upscale", (f"no frame count fits with temporal_upscale at {w}x{h}; without it at "
                                               f"most {plain} frames do: send temporal_upscale false (num_frames <= "
                                               f"{plain}), or lower width and height")
        else:
            field, hint = "width", f"no frame count fits at {w}x{h}, with temporal_upscale or without: lower width and height"
        raise TooLarge(field, f"{w}x{h} x {frames} frames with temporal_upscale ({2 * frames - 1} frames out) needs "
                              f"about {what}; {hint}")

    def report(self, running: GenerateRequest | None = None) -> dict:
        """For /health and GET /: what a job may use, and the most frames at the default size."""
        host, device = self.available(running)
        default = GenerateRequest(prompt="x")
        return {
            "admission": "off" if self.margin <= 0 else f"by predicted memory (margin x{self.margin:g})",
            "host_available_gib": round(host.available / GiB, 2),
            "host_limit": host.source,
            "device_available_gib": None if device is None else round(device / GiB, 2),
            "default_size": f"{default.width}x{default.height}",
            "largest_frames_at_default_size": self.largest_frames(default, host, device),
        }


def frames_of(request: GenerateRequest) -> int:
    """Frames to judge at submission: a length still to come from audio counts as the fewest."""
    # A retake without num_frames takes the video's length: not known before it is decoded either.
    unknown = request.match_audio_length or (request.retake is not None and "num_frames" not in request.model_fields_set)
    unknown = unknown or request.extend is not None  # its input's length (footprint adds the new frames)
    return FRAME_MIN if unknown else request.num_frames
