"""Any even frame size: the model runs at the covering multiple of 32 and the frames are its center crop."""

import base64

import numpy as np
import pytest

from ltx2 import generate
from ltx2.media.encode import probe_mp4
from ltx2.pipelines.stages import center_crop, model_size

FAST = {"prompt": "a harbour at dawn, gulls calling", "num_frames": 9, "num_inference_steps": 2, "seed": 21,
        "use_multiscale": False}


def test_model_size_rounds_up_to_the_multiple():
    assert model_size(768, 432, 32) == (768, 448)  # 432 = 13.5 x 32
    assert model_size(1920, 1080, 32) == (1920, 1088)
    assert model_size(288, 512, 32) == (288, 512)  # already a multiple: unchanged
    assert model_size(66, 64, 32) == (96, 64)
    assert model_size(288, 512, 64) == (320, 512)


def test_center_crop_takes_the_middle():
    frames = np.arange(2 * 6 * 8 * 3, dtype=np.uint8).reshape(2, 6, 8, 3)
    out = center_crop(frames, 4, 2)
    # rows (6 - 2) // 2 = 2 .. 3, columns (8 - 4) // 2 = 2 .. 5
    assert np.array_equal(out, frames[:, 2:4, 2:6])
    assert out.flags.c_contiguous
    odd = center_crop(frames, 8, 3)  # an odd margin puts the extra row at the bottom
    assert np.array_equal(odd, frames[:, 1:4])
    assert center_crop(frames, 8, 6) is frames


def test_a_size_off_the_grid_is_the_crop_of_the_covering_size(model):
    cropped = generate(model, {**FAST, "width": 96, "height": 80})
    full = generate(model, {**FAST, "width": 96, "height": 96})
    assert cropped.frames.shape == (9, 80, 96, 3)
    assert (cropped.width, cropped.height, cropped.model_width, cropped.model_height) == (96, 80, 96, 96)
    # Same seed, same model size: the same video, of which the request keeps the central 80 rows.
    assert np.array_equal(cropped.frames, full.frames[:, 8:88])
    assert (full.model_width, full.model_height) == (96, 96)


@pytest.mark.parametrize("width, height, multiscale, model_resolution, pipeline", [
    (768, 432, False, "768x448", "one-stage"),
    (768, 432, None, "768x448", "two-stage"),  # the tiny preset's default: it has an upsampler
    (1920, 1080, None, "1920x1088", "two-stage"),
    (1000, 562, None, "1024x576", "two-stage"),  # multiples of 64 for two-stage (992x576 would do for one stage)
])
@pytest.mark.slow
def test_the_file_has_exactly_the_requested_size(client, width, height, multiscale, model_resolution, pipeline):
    body = {**FAST, "num_inference_steps": 1, "width": width, "height": height, "use_multiscale": multiscale}
    r = client.post("/generate", json={k: v for k, v in body.items() if v is not None})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resolution"] == f"{width}x{height}"
    assert body["model_resolution"] == model_resolution
    assert body["pipeline"] == pipeline and body["use_multiscale"] == (pipeline == "two-stage")
    info = probe_mp4(base64.b64decode(body["video"].split(",", 1)[1]))
    assert (info["video"]["width"], info["video"]["height"], info["video"]["frames"]) == (width, height, 9)


def test_an_odd_size_is_refused_naming_the_rule(client):
    r = client.post("/generate", json={"prompt": "x", "width": 433})
    assert r.status_code == 422
    assert r.json()["field"] == "width" and r.json()["error"] == "width must be an even number, got 433"
