"""A conditioning image prepared as LTX-2 saw its training frames (ltx-pipelines 1.2.0,
`load_image_and_preprocess`): first cropped to even dimensions at its own resolution and sent
through H.264 once (libx264, CRF 33 for LTX-2.0, preset veryfast, yuv420p), so it carries the
compression artefacts of video frames; then resized with bilinear interpolation, no antialiasing,
to cover the frame, center-cropped, and scaled to [-1, 1]. The values stay floating point after
the resize: they are not rounded back to 8 bits.

The server never does this itself: the sandbox child (sandbox.py) decodes the file and prepares it
at each size the pipeline will encode it at (`ImageTargets`), and only those tensors, the size of
the output frame, come back (`PreparedImage`). Whatever the input, the server holds no more than
the output's pixels, and a file that would make the preparation huge fails in the child.
"""

from __future__ import annotations

import errno
import io
import math
from dataclasses import asdict, dataclass, field

import av
import numpy as np
import torch
from PIL import Image

from ..schema import InvalidRequest
from .inputs import InputLimits, auto_size, finish_image, open_image

IMAGE_CRF = 33  # LTX-2.0's (ltx-pipelines' DEFAULT_IMAGE_CRF); 0 skips the round trip
# How far an image's aspect ratio may be from the frame's, as a ratio of the two ratios: beyond it the
# cover-resize would blow one side up more than 16 times past the frame (a 1x9000 PNG into a 3:2
# frame scales 288 times, into gigabytes), and the frame would show a sliver of the image anyway.
MAX_ASPECT_SPREAD = 16.0
# A JPEG is decoded reduced (libjpeg's DCT scaling, 1/2, 1/4 or 1/8) only when it stays at least this
# many times the size its cover-resize needs: ordinary images are prepared from every pixel, exactly as
# the reference prepares them; only a far larger one (8x the need and more) trades that for speed.
DRAFT_MARGIN = 4
_ROTATING_ORIENTATIONS = (5, 6, 7, 8)
H264_MAX_SIDE = 16384  # libx264 opens no encoder for a wider or taller frame  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class ImageTargets:
    """Where the pipeline will use the conditioning images, so the sandbox can prepare them there.

    The frame is (width, height), or with `auto_pixels` the size `auto_size` picks from image_start's
    aspect ratio. The model runs at that frame rounded up to `multiple`, and encodes each image at that
    size times den / num for each (num, den) of `scales` ((1, 1) for one stage; stage 1 at 1/2 or 2/3,
    then (1, 1), for two stages). `crf`: the family's
    H.264 round trip. `preview`: the side of the square copy prompt expansion shows Gemma, or None."""

    width: int = 288
    height: int = 512
    auto_pixels: int | None = None
    multiple: int = 32
    scales: tuple[tuple[int, int], ...] = ((1, 1),)
    crf: int = IMAGE_CRF
    preview: int | None = None
    # Video to video (ic_lora): the reference video's size as (num, den) of the model size, and its temporal
    # subsampling (ltx2.media.sandbox.VideoTask); then, for its attention mask, the IC-LoRA's downscale factor,
    # the VAE's (temporal, spatial) ratios and the model's dtype name. None for any other request.
    reference: tuple | None = None

    def frame(self, image_size: tuple[int, int] | None) -> tuple[int, int]:
        """The output frame; with auto_pixels, from image_start's (width, height)."""
        if self.auto_pixels is not None and image_size is not None:
            return auto_size(*image_size, self.auto_pixels)
        return self.width, self.height

    def sizes(self, frame: tuple[int, int]) -> list[tuple[int, int]]:
        """Every (width, height) the images are encoded at, for this frame."""
        width, height = (math.ceil(side / self.multiple) * self.multiple for side in frame)
        return [(width * den // num, height * den // num) for num, den in self.scales]

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ImageTargets:
        return cls(**{**data, "scales": tuple(tuple(scale) for scale in data["scales"])})


@dataclass
class PreparedImage:
    """A conditioning image as the pipeline consumes it: `size` is the decoded file's upright
    (width, height), for video_size "auto"; `pixels[(w, h)]` is its one-frame VAE input at that size,
    (1, 3, 1, h, w) float32 in [-1, 1]; `preview` the square RGB copy prompt expansion reads."""

    size: tuple[int, int]
    crf: int
    pixels: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    preview: Image.Image | None = None

    def at(self, width: int, height: int, crf: int) -> torch.Tensor:
        if crf != self.crf or (width, height) not in self.pixels:
            raise RuntimeError(f"the conditioning image was prepared at {sorted(self.pixels)} with CRF {self.crf}, "
                               f"not at {width}x{height} with CRF {crf}: its ImageTargets do not match the pipeline")
        return self.pixels[(width, height)]


def h264_round_trip(rgb: np.ndarray, crf: int = IMAGE_CRF) -> np.ndarray:
    """(H, W, 3) uint8 -> the first frame of a one-frame H.264 video of it, (H - H % 2, W - W % 2, 3)."""
    if crf == 0 or min(rgb.shape[0], rgb.shape[1]) < 2:
        return rgb
    height, width = rgb.shape[0] // 2 * 2, rgb.shape[1] // 2 * 2
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:height, :width]), format="rgb24")
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.width, stream.height = width, height
        container.mux(stream.encode(frame.reformat(format="yuv420p")))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = next(container.decode(video=0))
        return decoded.to_ndarray(format="rgb24")


def cover_size(src_w: int, src_h: int, width: int, height: int) -> tuple[int, int]:
    """The (width, height) an image is resized to so it covers the frame before the center crop."""
    scale = max(height / src_h, width / src_w)
    # ceil: a rounding error must not leave the resized image a pixel short of the frame.
    return math.ceil(src_w * scale), math.ceil(src_h * scale)


def cover_bilinear(rgb: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, height, width) float32 in 0..255: scaled to cover, center-cropped."""
    src_h, src_w = rgb.shape[:2]
    new_w, new_h = cover_size(src_w, src_h, width, height)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).float().permute(2, 0, 1)[None]
    tensor = torch.nn.functional.interpolate(tensor, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return tensor[0, :, top: top + height, left: left + width]


def conditioning_pixels(rgb: np.ndarray, width: int, height: int, crf: int = IMAGE_CRF) -> torch.Tensor:
    """An RGB image as a one-frame video-VAE input: (1, 3, 1, height, width) in [-1, 1]."""
    pixels = cover_bilinear(h264_round_trip(rgb, crf), width, height)
    return (pixels / 127.5 - 1.0)[None, :, None]


def aspect_spread(size: tuple[int, int], frame: tuple[int, int]) -> float:
    """How many times the image's aspect ratio is from the frame's (1 when they are equal)."""
    ratio = (size[0] / size[1]) / (frame[0] / frame[1])
    return max(ratio, 1 / ratio)


def check_aspect(field_name: str, size: tuple[int, int], frame: tuple[int, int]) -> None:
    if aspect_spread(size, frame) > MAX_ASPECT_SPREAD:
        raise InvalidRequest(field_name, f"{field_name} is {size[0]}x{size[1]} pixels, an aspect ratio more than "
                             f"{MAX_ASPECT_SPREAD:g} times from the {frame[0]}x{frame[1]} frame's; crop it nearer "
                             "the frame's shape")


def prepare_image(data: bytes, field_name: str, declared_mime: str | None, limits: InputLimits,
                  targets: ImageTargets, frame: tuple[int, int] | None = None) -> PreparedImage:
    """Decode an image file and prepare it at every size of `targets` (in the sandbox child).

    `frame`: the output frame when already known (image_end after image_start under video_size "auto");
    else from `targets` and this image's size. Bad or unpreparable input raises InvalidRequest naming
    the field; MemoryError (the sandbox's limit) passes through."""
    img = open_image(data, field_name, declared_mime, limits)  # the header only: size, format, scans
    stored = img.size
    # Before any pixel is decoded: an aspect ratio far from the frame's in either orientation (EXIF may
    # rotate it) is refused at once.
    guess = frame or targets.frame(stored)
    if min(aspect_spread(stored, guess), aspect_spread(stored[::-1], guess)) > MAX_ASPECT_SPREAD:
        check_aspect(field_name, stored, guess)
    if img.format in ("JPEG", "MPO"):
        _draft(img, targets, frame)
    decoded = img.size  # smaller than stored when drafted
    rgb = finish_image(img, field_name, limits)  # decoded, upright, RGB
    del img
    rotated = rgb.size != decoded
    upright = stored[::-1] if rotated else stored
    frame = frame or targets.frame(upright)
    check_aspect(field_name, upright, frame)
    if targets.crf and max(side // 2 * 2 for side in rgb.size) > H264_MAX_SIDE:
        raise InvalidRequest(field_name, f"{field_name} is {upright[0]}x{upright[1]} pixels; the H.264 round trip "
                             f"the model's training frames went through takes at most {H264_MAX_SIDE} pixels a side")
    out = PreparedImage(size=upright, crf=targets.crf)
    try:
        array = np.asarray(rgb, dtype=np.uint8)
        if targets.preview:  # as prompt expansion's Gemma preprocessing resizes: PIL bilinear
            out.preview = rgb.resize((targets.preview, targets.preview), Image.Resampling.BILINEAR)
        del rgb
        trip = h264_round_trip(array, targets.crf)
        del array
        for width, height in targets.sizes(frame):
            cover = cover_bilinear(trip, width, height)
            out.pixels[(width, height)] = (cover / 127.5 - 1.0)[None, :, None].contiguous()
            del cover
    except MemoryError:
        raise
    except RuntimeError as exc:
        if "alloc" in str(exc).lower():  # torch's allocator under the sandbox's limit
            raise MemoryError(str(exc)) from None
        raise InvalidRequest(field_name, f"{field_name} could not be prepared as a video frame: {exc}") from None
    except Exception as exc:  # FFmpeg refusing the frame (its size), and the like
        if getattr(exc, "errno", None) in (errno.ENOMEM, errno.EAGAIN):  # the encoder's buffers or threads
            raise MemoryError(str(exc)) from None
        raise InvalidRequest(field_name, f"{field_name} could not be prepared as a video frame: "
                             f"{getattr(exc, 'strerror', None) or exc}") from None
    return out


def _draft(img: Image.Image, targets: ImageTargets, frame: tuple[int, int] | None) -> None:
    """Have libjpeg decode a JPEG far larger than needed at 1/2, 1/4 or 1/8 of its size, keeping it at
    least DRAFT_MARGIN times the size its cover-resize needs (see DRAFT_MARGIN)."""
    stored = img.size
    rotated = img.getexif().get(0x0112) in _ROTATING_ORIENTATIONS  # a JPEG's EXIF is read with its header
    upright = stored[::-1] if rotated else stored
    width, height = max(targets.sizes(frame or targets.frame(upright)))
    need = cover_size(*upright, width, height)
    if rotated:
        need = need[::-1]
    wanted = (need[0] * DRAFT_MARGIN, need[1] * DRAFT_MARGIN)
    if min(stored[0] // wanted[0], stored[1] // wanted[1]) >= 2:
        img.draft(img.mode, wanted)
