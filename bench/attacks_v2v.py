"""Attacks on video to video (`ic_lora` with a reference `video`) on a real tiny server, merged into
bench/attacks.py's table: an IC-LoRA name that leaves the LoRA directory, an IC-LoRA whose metadata claims a
reference downscale factor of 10^6, another family's IC-LoRA, control "depth" (needs a model this server has
not), hostile reference files (10^6 frames declared, 30000x30000 declared) with control "canny",
conditioning_attention_strength out of range, without ic_lora, and at a size whose dense attention bias alone
is 72 GB; and, for contrast, a benign 64x64 clip with control "canny" and one at attention strength 0, which
run (200). Each row set is the answer, the seconds
it took, the server process's peak RSS growth and whether it is alive; then whether the next job succeeds.

`attention_mask`: hostile conditioning_attention_mask videos beside a benign reference (each of
attacks_video.CASES' files, a mask whose 4 frames cannot pool onto the reference's 3 latent frames, an image,
a mask without ic_lora, a loopback URL) and a mask at the 72 GB-bias size at strength 1 (a mask always builds the
bias); and a benign mask, which runs.

    python bench/attacks.py --only video_to_video,attention_mask
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import torch
from attacks import Server, measured_cases
from attacks_video import CASES as VIDEO_CASES
from attacks_video import huge_size, million_frames
from lora_files import write_lora
from safetensors.torch import load_file, save_file
from test_retake import clip

BODY = {"prompt": "a boat, edges", "ic_lora": "ic", "num_inference_steps": 1, "seed": 1}


def models_dir() -> Path:
    """<dir>/loras/ with a tiny IC-LoRA, one claiming a 10^6 reference downscale, and an LTX-2.3 one."""
    from ltx2 import load_model

    root = Path(tempfile.mkdtemp(prefix="ltx2-v2v-models-"))
    (root / "loras").mkdir()
    model = load_model("tiny", device="cpu")
    write_lora(root / "loras" / "ic.safetensors", model, seed=1)
    huge = root / "loras" / "ic-huge.safetensors"
    write_lora(huge, model, seed=2)
    save_file(load_file(str(huge)), str(huge), metadata={"reference_downscale_factor": "1000000"})
    save_file({"diffusion_model.prompt_adaln_single.linear.lora_A.weight": torch.zeros(4, 8, dtype=torch.bfloat16),
               "diffusion_model.prompt_adaln_single.linear.lora_B.weight": torch.zeros(8, 4, dtype=torch.bfloat16)},
              str(root / "loras" / "ic-23.safetensors"))
    return root


def uri(data: bytes, mime: str = "video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def attack_video_to_video() -> list[tuple[str, str]]:
    server = Server("--models-dir", str(models_dir()))
    benign = uri(clip(17, 64, 64, 25, audio=False))
    cases = {
        "ic_lora '../../etc/passwd'": {**BODY, "video": benign, "ic_lora": "../../etc/passwd"},
        "IC-LoRA metadata reference_downscale_factor 10^6": {**BODY, "video": benign, "ic_lora": "ic-huge"},
        "IC-LoRA of another family (LTX-2.3 keys)": {**BODY, "video": benign, "ic_lora": "ic-23"},
        "control depth": {**BODY, "video": benign, "control": "depth"},
        "reference with 10^6 frames declared, control canny": {**BODY, "video": uri(million_frames()),
                                                               "control": "canny"},
        "reference 30000x30000 declared, control canny": {**BODY, "video": uri(huge_size(), "video/quicktime"),
                                                          "control": "canny"},
        "conditioning_attention_strength 2": {**BODY, "video": benign, "conditioning_attention_strength": 2},
        "conditioning_attention_strength 0.5 without ic_lora": {"prompt": "a", "conditioning_attention_strength": 0.5},
        # 2 x 33 latent frames of 60x34 tokens: a 134,640^2 float32 bias (72 GB) before any activation
        "conditioning_attention_strength 0.5, 1920x1088, 257 frames, one stage": {
            **BODY, "video": benign, "conditioning_attention_strength": 0.5, "width": 1920, "height": 1088,
            "num_frames": 257, "use_multiscale": False},
        "benign 64x64 17-frame clip, control canny (runs)": {**BODY, "video": benign, "control": "canny"},
        "benign clip, conditioning_attention_strength 0 (runs)": {**BODY, "video": benign,
                                                                  "conditioning_attention_strength": 0.0},
    }
    return measured_cases(server, cases.items(), "video to video")


def grey_mask(frames: int, side: int = 64) -> bytes:
    """A grey MP4 of `frames` frames at 25 fps (a mask that is all 0.5)."""
    import io

    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width = stream.height = side
        for _ in range(frames):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((side, side, 3), 128, np.uint8), "rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buf.getvalue()


def attack_attention_mask() -> list[tuple[str, str]]:
    import hostile

    server = Server("--models-dir", str(models_dir()))
    benign = uri(clip(17, 64, 64, 25, audio=False))
    field = "conditioning_attention_mask"
    cases = {f"mask: {label}": {**BODY, "video": benign, field: uri(make(), mime)}
             for label, (make, mime) in VIDEO_CASES.items() if not label.startswith("benign")}
    cases.update({
        "mask: 4 frames (cannot pool onto 3 latent frames)": {**BODY, "video": benign, field: uri(grey_mask(4))},
        "mask: a PNG image": {**BODY, "video": benign, field: uri(hostile.png(64, 64), "image/png")},
        "mask: loopback URL http://127.0.0.1:9/m.mp4": {**BODY, "video": benign, field: "http://127.0.0.1:9/m.mp4"},
        "mask without ic_lora": {"prompt": "a", field: uri(grey_mask(17))},
        # strength 1 with a mask: the same 134,640^2 float32 bias (72 GB)
        "mask at 1920x1088, 257 frames, one stage": {**BODY, "video": benign, field: uri(grey_mask(17)), "width": 1920,
                                                     "height": 1088, "num_frames": 257, "use_multiscale": False},
        "benign 17-frame grey mask (runs)": {**BODY, "video": benign, field: uri(grey_mask(17))},
    })
    return measured_cases(server, cases.items(), "attention mask")


ATTACKS = {"video_to_video": attack_video_to_video, "attention_mask": attack_attention_mask}
