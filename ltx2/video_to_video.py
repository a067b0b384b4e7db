"""Video to video with an IC-LoRA: the request's rules, read by the schema, the pipeline and the protocols.

ltx-pipelines' `ICLoraPipeline`: the reference video (a control signal such as edges, depth or pose, or the
footage itself for a detailer or style LoRA) is encoded into clean tokens appended beside the generated ones
in stage 1, and the IC-LoRA (`ic_lora`, a file in `<models dir>/loras/`) was trained to read them. This module
holds what a request may say about it and imports nothing of ltx2, so schema.py can use it.

`control: "canny"` turns a raw video into its Canny edges in the decoding sandbox (OpenCV, thresholds
`CANNY_LOW`/`CANNY_HIGH`); depth and pose need models this server does not run, so they are refused with a
message that says to send the precomputed control video instead.
"""

from __future__ import annotations

from typing import Any

COMPUTED_CONTROLS = ("canny",)  # made here from the raw video
PRECOMPUTED_CONTROLS = ("depth", "pose")  # need a model: the user sends the control video itself
CONTROLS = COMPUTED_CONTROLS + PRECOMPUTED_CONTROLS
CANNY_LOW, CANNY_HIGH = 100, 200  # cv2.Canny's hysteresis thresholds on 0..255 grey (OpenCV's tutorial values)
IC_LORA_SCALE_MAX = 4.0  # as a LoRA's scale
# Fields an IC-LoRA request cannot take: its length comes from the reference video, not the audio or the model.
EXCLUDES = ("match_audio_length", "duration")


# The request fields' descriptions (/docs, the CLI's --help), kept here with their rules.
DOCS = {
    "ic_lora": "Video to video: an IC-LoRA file in the server's <models dir>/loras/ (`ltx2 download --ic-loras` "
               "fetches the loaded family's) that reads video as its reference (ltx-pipelines' ICLoraPipeline). "
               "Needs video.",
    "ic_lora_scale": "How strongly the IC-LoRA applies (its LoRA scale, stage 1).",
    "video_strength": "With ic_lora: how firmly the reference video's tokens are held (1: kept clean, as trained; "
                      "0: denoised like the rest).",
    "conditioning_attention_strength": "With ic_lora: the weight of the attention between the generated video and "
        "the reference video's tokens (ltx-pipelines' ICLoraPipeline conditioning_attention_strength; 1: full, as "
        "trained; 0: the generated tokens do not attend to the reference, nor it to them). Below 1 it adds a dense "
        "tokens x tokens bias to stage 1's video self-attention.",
    "conditioning_attention_mask": "With ic_lora: a mask video (same formats and limits as video) whose grey level, "
        "0 to 1, weights the reference video's tokens where and when it shows (ltx-pipelines' ICLoraPipeline "
        "conditioning_attention_mask): read at stage 1's size, averaged onto the reference's latent grid, times "
        "conditioning_attention_strength. As many frames as the reference, or 1 + k x (its latent frames - 1).",
    "control": 'With ic_lora: "canny" computes the Canny edges of video here (send the raw video); depth and pose '
               "need models this server does not run: send the precomputed control video instead.",
}


class VideoToVideoProblem(ValueError):
    """A rule of a video-to-video request broken, naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


# The knobs that mean something only with ic_lora (sent without it: a 422 naming the knob).
KNOBS = ("ic_lora_scale", "video_strength", "control", "conditioning_attention_strength", "conditioning_attention_mask")
MASK_FIELD = "conditioning_attention_mask"  # a video input of its own (decoded in the sandbox after video)


def check(request: Any) -> None:
    """The rules between ic_lora, its knobs and the other fields; raises VideoToVideoProblem."""
    given = request.model_fields_set
    if request.ic_lora is None:
        for name in KNOBS:
            if name in given and getattr(request, name) is not None:
                raise VideoToVideoProblem(name, f"{name} is a knob of video-to-video: send ic_lora (an IC-LoRA file in "
                                                "the server's <models dir>/loras/) and video too, or leave it out")
        return
    if request.video is None:
        raise VideoToVideoProblem("ic_lora", "ic_lora conditions the output on a reference video: send video too "
                                             "(the control video, or the raw video with control \"canny\")")
    if request.control in PRECOMPUTED_CONTROLS:
        raise VideoToVideoProblem("control", f'control "{request.control}" needs a {request.control} model this '
                                             f"server does not run: send the precomputed {request.control} video as "
                                             "video and leave control out (only \"canny\" is computed here)")
    if getattr(request, "retake", None) is not None:
        raise VideoToVideoProblem("ic_lora", "ic_lora cannot be used with retake: send one of them")
    for name in EXCLUDES:
        if name in given and getattr(request, name) not in (None, False):
            raise VideoToVideoProblem(name, f"{name} cannot be used with ic_lora: the length comes from the video "
                                            "(or num_frames); leave it out")
    if len({"width", "height"} & given) == 1 and "video_size" not in given:
        missing = "height" if "width" in given else "width"
        raise VideoToVideoProblem(missing, f"with ic_lora give width and height together, or neither (the video's own "
                                           f"size): {missing} is missing")
    images = [name for name in ("image_start", "image_end", "keyframes") if getattr(request, name, None)]
    if images and not {"width", "height"} & given:
        # The images are fitted to the output size in the sandbox, before the video that would set it is read.
        raise VideoToVideoProblem("width", f"with ic_lora and {images[0]}, give width and height: the images are "
                                           "prepared at the output size, which is otherwise the video's, read later")


def reference_scales(metadata: dict[str, str] | None, field: str = "ic_lora") -> tuple[int, int]:
    """(spatial, temporal) reference scale factors from an IC-LoRA's safetensors metadata, as ltx-pipelines'
    `read_lora_reference_downscale_factor` and `..._temporal_scale_factor` read them (1 when absent). A value
    that is not a whole number from 1 to 8 is refused naming the field: it sizes what is decoded."""
    out = []
    for key in ("reference_downscale_factor", "reference_temporal_scale_factor"):
        raw = (metadata or {}).get(key, "1")
        try:
            value = int(str(raw).strip())
        except ValueError:
            value = 0
        if not 1 <= value <= 8:
            raise VideoToVideoProblem(field, f"{field}'s metadata {key} must be a whole number from 1 to 8, "
                                             f"got {str(raw)[:40]!r}")
        out.append(value)
    return out[0], out[1]


__all__ = ["CANNY_HIGH", "CANNY_LOW", "COMPUTED_CONTROLS", "CONTROLS", "DOCS", "MASK_FIELD", "PRECOMPUTED_CONTROLS",
           "VideoToVideoProblem", "check", "reference_scales"]
