"""A conditioning image prepared as LTX-2 saw its training frames (ltx-pipelines 1.2.0,
`load_image_and_preprocess`): first cropped to even dimensions at its own resolution and sent
through H.264 once (libx264, CRF 33 for LTX-2.0, preset veryfast, yuv420p), so it carries the
compression artefacts of video frames; then resized with bilinear interpolation, no antialiasing,
to cover the frame, center-cropped, and scaled to [-1, 1]. The values stay floating point after
the resize: they are not rounded back to 8 bits.
"""

from __future__ import annotations

import io
import math

import av
import numpy as np
import torch

IMAGE_CRF = 33  # LTX-2.0's (ltx-pipelines' DEFAULT_IMAGE_CRF); 0 skips the round trip


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


def cover_bilinear(rgb: np.ndarray, width: int, height: int) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, height, width) float32 in 0..255: scaled to cover, center-cropped."""
    src_h, src_w = rgb.shape[:2]
    scale = max(height / src_h, width / src_w)
    # ceil: a rounding error must not leave the resized image a pixel short of the frame.
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).float().permute(2, 0, 1)[None]
    tensor = torch.nn.functional.interpolate(tensor, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return tensor[0, :, top: top + height, left: left + width]


def conditioning_pixels(rgb: np.ndarray, width: int, height: int, crf: int = IMAGE_CRF) -> torch.Tensor:
    """An RGB image as a one-frame video-VAE input: (1, 3, 1, height, width) in [-1, 1]."""
    pixels = cover_bilinear(h264_round_trip(rgb, crf), width, height)
    return (pixels / 127.5 - 1.0)[None, :, None]
