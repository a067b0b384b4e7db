"""enable_prompt_expansion on the tiny preset: its random Gemma writes gibberish, but the plumbing is real:
seeding, the token bound, the image path through the vision tower, the response and what gets encoded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ltx2 import generate
from ltx2.pipelines import expansion
from ltx2.pipelines.expansion import expand_prompt

CHEAP = {"prompt": "a dog on a beach", "width": 64, "height": 64, "num_frames": 9, "num_inference_steps": 1}


@pytest.fixture()
def few_tokens(model):
    before = model.prompt_expansion_tokens
    model.prompt_expansion_tokens = 12
    yield 12
    model.prompt_expansion_tokens = before


def image() -> Image.Image:
    x = np.linspace(0, 255, 80, dtype=np.uint8)
    return Image.fromarray(np.stack([np.tile(x, (60, 1))] * 3, -1))


def test_seeded_and_bounded(model, few_tokens):
    first, n = expand_prompt(model, "a dog on a beach", seed=3)
    again, _ = expand_prompt(model, "a dog on a beach", seed=3)
    other, _ = expand_prompt(model, "a dog on a beach", seed=4)
    assert first == again and first != other
    assert 0 < n <= few_tokens
    _, n = expand_prompt(model, "a dog on a beach", seed=3, max_new_tokens=3)
    assert n <= 3


def test_the_start_image_goes_through_the_vision_tower(model, few_tokens, monkeypatch):
    seen = {}
    tower = model.pipe.text_encoder.model.vision_tower

    def record(module, args, kwargs, output):
        seen["pixels"] = (args or [kwargs.get("pixel_values")])[0].shape

    handle = tower.register_forward_hook(record, with_kwargs=True)
    try:
        with_image, _ = expand_prompt(model, "a dog on a beach", seed=3, image=image())
    finally:
        handle.remove()
    size = model.pipe.text_encoder.config.vision_config.image_size
    assert seen["pixels"] == (1, 3, size, size)
    text_only, _ = expand_prompt(model, "a dog on a beach", seed=3)
    assert with_image != text_only


def test_the_video_is_made_from_the_expansion_and_the_response_says_it(model, client, few_tokens):
    result = generate(model, {**CHEAP, "seed": 8, "enable_prompt_expansion": True})
    assert result.expanded_prompt and result.expanded_prompt != CHEAP["prompt"]
    assert result.timings["expand_prompt"] > 0
    same = generate(model, {**CHEAP, "seed": 8, "prompt": result.expanded_prompt})
    assert np.array_equal(result.frames, same.frames)
    plain = generate(model, {**CHEAP, "seed": 8})
    assert plain.expanded_prompt is None and plain.timings["expand_prompt"] == 0
    assert not np.array_equal(plain.frames, result.frames)
    body = client.post("/generate", json={**CHEAP, "seed": 8, "enable_prompt_expansion": True}).json()
    assert body["expanded_prompt"] == result.expanded_prompt and body["timings"]["expand_prompt"] > 0
    assert client.post("/generate", json={**CHEAP, "seed": 8}).json()["expanded_prompt"] is None


def test_a_random_seed_is_shared_by_the_expansion_and_the_noise(model, few_tokens):
    result = generate(model, {**CHEAP, "enable_prompt_expansion": True})
    assert result.expanded_prompt == expand_prompt(model, CHEAP["prompt"], seed=result.seed)[0]


def test_the_system_instructions_are_ours_and_differ_by_mode():
    assert expansion.SYSTEM_TEXT_TO_VIDEO != expansion.SYSTEM_IMAGE_TO_VIDEO
    assert "first frame" in expansion.SYSTEM_IMAGE_TO_VIDEO and torch.is_tensor(torch.zeros(1))
