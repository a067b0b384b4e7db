"""Conditioning inputs (images at any frames, a soundtrack) and how they enter the latents.

The wrappers decode what the user sent (`decode_conditioning`, before the job takes the GPU);
`generate()` encodes it with the VAEs and holds it in the latents. The semantics follow the
reference model: a conditioned token's strength `s` is kept as a mask; the token starts at noise
level (1 - s) of the schedule, its timestep is scaled by (1 - s), its clean estimate is taken at
that timestep, and after every step it is blended back towards the condition by `s`. At s = 1 the
token never moves; at s = 0 the condition is dropped altogether, which is the same as sending none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..keyframes import image_field, input_values
from ..media.audio_prep import preprocess_audio
from ..media.conditioning_image import ImageTargets, PreparedImage
from ..media.inputs import InputLimits
from ..schema import FRAME_MAX, FRAME_MIN, GenerateRequest


@dataclass
class Conditioning:
    """Decoded inputs, ready for `generate()`."""

    # Prepared in the sandbox at the sizes the pipeline encodes them at (a PIL image also works, prepared
    # in this process: for library callers with images of their own).
    image_start: PreparedImage | Image.Image | None = None
    image_end: PreparedImage | Image.Image | None = None
    keyframes: dict[int, PreparedImage | Image.Image] = field(default_factory=dict)  # keyframes[i]'s image
    audio_for_vae: np.ndarray | None = None  # (2, samples) float32 at the audio VAE's rate
    audio_for_output: np.ndarray | None = None  # (2, samples) float32 at the vocoder's rate, for the MP4
    vae_rate: int = 16_000
    audio_preprocessing: dict[str, float] | None = None  # what preprocess_audio did, for the response
    # A video input (retake), from the sandbox: frames at the model size (1, 3, F, H, W) in [-1, 1], the same
    # frames at the output size (F, h, w, 3) uint8 (pasted back outside the span), and what was taken from it
    # (width, height, fps, num_frames, has_audio). Its soundtrack is audio_for_vae / audio_for_output.
    video: torch.Tensor | None = None
    video_output: np.ndarray | None = None
    video_info: dict | None = None
    # ic_lora's conditioning_attention_mask on the reference's latent grid, (frames, height, width) float32
    # holding values of the model's dtype (ltx2.media.attention_mask), before conditioning_attention_strength.
    attention_mask: torch.Tensor | None = None

    def image(self, source: str) -> PreparedImage | Image.Image | None:
        """The image a request field holds: image_start, image_end or keyframes.N.image."""
        if source.startswith("keyframes."):
            return self.keyframes.get(int(source.split(".")[1]))
        return getattr(self, source)

    @property
    def audio_seconds(self) -> float:
        return 0.0 if self.audio_for_vae is None else self.audio_for_vae.shape[1] / self.vae_rate


def decode_conditioning(request: GenerateRequest, vae_rate: int, output_rate: int,
                        limits: InputLimits | None = None, fetch_policy=None, *, inputs: dict[str, str] | None = None,
                        sandbox=None, should_stop=None, targets: ImageTargets | None = None) -> Conditioning:
    """Decode the request's inputs (base64, data URIs, or http(s) URLs fetched under `fetch_policy`,
    by default the one the environment sets); bad input raises InvalidRequest naming the field.

    Fetching and decoding run in a child process with hard memory and time limits (ltx2.media.sandbox;
    `sandbox`, else the process's default one), killed as soon as `should_stop()` returns an exception
    (then raised as `Stopped`). `inputs` overrides the request's own inputs (as ltx2.keyframes.input_values
    names them: image_start, image_end, audio, keyframes.N.image).
    `targets`: where the pipeline will encode the images (`generate.image_targets`); by default the
    request's frame at one stage and CRF 33."""
    from ..media.fetch import FetchPolicy, is_url, refuse_other_schemes
    from ..media.sandbox import default_sandbox

    out = Conditioning(vae_rate=vae_rate)
    if inputs is None:
        inputs = input_values(request)
    if not inputs:
        return out
    for name, value in inputs.items():
        if not is_url(value):
            refuse_other_schemes(value, name)  # file://, ftp://...: say which schemes work
    targets = targets or request_targets(request)
    decoded = (sandbox or default_sandbox()).decode(
        inputs, vae_rate, output_rate, limits or InputLimits.from_env(), fetch_policy or FetchPolicy.from_env(),
        should_stop=should_stop, url_count=sum(map(is_url, inputs.values())),
        targets=targets, video=video_task(request, targets.multiple, targets.reference) if "video" in inputs else None)
    out.image_start, out.image_end = decoded.images.get("image_start"), decoded.images.get("image_end")
    out.keyframes = {i: decoded.images[image_field(i)] for i in range(len(request.keyframes))
                     if image_field(i) in decoded.images}
    out.audio_for_vae, out.audio_for_output = decoded.audio_for_vae, decoded.audio_for_output
    if decoded.video is not None:
        out.video, out.video_output = torch.from_numpy(decoded.video), decoded.video_output
        out.video_info = decoded.video_info
        if decoded.attention_mask is not None:
            out.attention_mask = torch.from_numpy(decoded.attention_mask)
        if request.ic_lora is None:
            return out  # a retake keeps the video's soundtrack as it is: no trimming, no loudness
    if out.audio_for_vae is not None and request.preprocess_audio:
        out.audio_for_vae, out.audio_for_output, out.audio_preprocessing = preprocess_audio(
            out.audio_for_vae, vae_rate, out.audio_for_output, output_rate)
    return out


def video_task(request: GenerateRequest, multiple: int, reference: tuple[int, int, int] | None = None):
    """What the sandbox decodes a video at: the request's size, length and fps where it gave them; for an
    IC-LoRA's reference, `reference` (num, den, temporal[, downscale, (VAE ratios), mask dtype]:
    ImageTargets.reference) and its control."""
    from ..media.sandbox import VideoTask

    given = request.model_fields_set
    sized = {"width", "height"} <= given or "video_size" in given
    extra = {} if reference is None else {"reference": tuple(reference[:2]), "temporal": reference[2],
                                          "control": request.control}
    if reference is not None and len(reference) > 3:  # where its attention mask is read and pooled
        extra.update(downscale=reference[3], vae=tuple(reference[4]), mask_dtype=reference[5])
    return VideoTask(width=request.width if sized else None, height=request.height if sized else None,
                     # extend: num_frames is each window's length, and the video is taken whole
                     num_frames=request.num_frames if "num_frames" in given and request.extend is None else None,
                     fps=request.fps if "fps" in given else None, multiple=multiple, **extra)


def request_targets(request: GenerateRequest, multiple: int = 32, scales: tuple[tuple[int, int], ...] = ((1, 1),),
                    crf: int = 33, preview: int | None = None) -> ImageTargets:
    """Where a request's images are used: its frame (or video_size "auto" over its pixel count)."""
    auto = request.width * request.height if request.video_size == "auto" else None
    return ImageTargets(request.width, request.height, auto, multiple, scales, crf, preview)


def frames_for_duration(seconds: float, fps: int) -> int:
    """The valid frame count (8k+1, within the limits) nearest to `seconds` at `fps`."""
    k = round((seconds * fps - 1) / 8)
    return int(min(max(8 * k + 1, FRAME_MIN), FRAME_MAX))


def image_pixels(image: Image.Image, width: int, height: int, crf: int = 33) -> torch.Tensor:
    """An image covering (width, height), center-cropped, as a one-frame VAE input in [-1, 1],
    prepared as the reference prepares it (an H.264 round trip at the family's `crf`, then a
    bilinear resize). 33 is LTX-2.0's and 2.3's CRF. A PreparedImage was prepared so in the sandbox."""
    from ..media.conditioning_image import conditioning_pixels

    if isinstance(image, PreparedImage):
        return image.at(width, height, crf)
    rgb = np.asarray(image.convert("RGB") if image.mode != "RGB" else image, dtype=np.uint8)
    return conditioning_pixels(rgb, width, height, crf)  # (1, 3, 1, H, W)


def keyframe_coords(rope, latent_height: int, latent_width: int, pixel_frame: int, fps: float,
                    device: torch.device) -> torch.Tensor:
    """RoPE coordinates for one image appended as keyframe tokens at pixel frame `pixel_frame`.

    Spatially the image sits on the video's own latent grid; in time it occupies the single pixel
    frame [pixel_frame, pixel_frame + 1), in seconds, as the reference places image keyframes.
    """
    coords = rope.prepare_video_coords(1, 1, latent_height, latent_width, device, fps=fps)  # (1, 3, N, 2)
    coords = coords.clone()
    coords[:, 0, :, 0] = pixel_frame / fps
    coords[:, 0, :, 1] = (pixel_frame + 1) / fps
    return coords


def blend_velocity(velocity: torch.Tensor, latents: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor,
                   sigma: float) -> torch.Tensor:
    """The step's velocity with each token's clean estimate pulled towards its condition by `mask`.

    As the reference (ltx-core's X0Model and post_process_latent): a token of strength m was told
    its noise level is (1 - m) sigma, so its clean estimate is x0 = x - (1 - m) sigma v; then
    x0' = x0 (1 - m) + clean m, and the Euler step moves along (x - x0') / sigma, which is
    v (1 - m)^2 + (x - clean) m / sigma. Written on the velocity so that tokens with m = 0 keep
    the model's velocity bit for bit.
    """
    towards_clean = (latents - clean) / sigma
    keep = 1 - mask
    return velocity * (keep * keep) + towards_clean * mask


def start_from(noise: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor, sigma0: float,
               free: torch.Tensor | None = None) -> torch.Tensor:
    """Initial latents: conditioned tokens noised only to (1 - strength) of the first sigma; the
    others are `free` (the noise itself when not given)."""
    level = (1 - mask) * sigma0
    mixed = noise * level + clean * (1 - level)
    return torch.where(mask > 0, mixed, noise if free is None else free)
