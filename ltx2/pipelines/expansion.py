"""`enable_prompt_expansion`: Gemma 3 instruct, already loaded as the text encoder, rewrites a short
idea into the kind of description LTX-2 was trained on, before that description is encoded.

- The loaded encoder is the full multimodal Gemma 3 (`Gemma3ForConditionalGeneration`, vision tower
  included: the loaders refuse a text-only one), so image-to-video expansion looks at the start image
  through the vision tower, as the reference's i2v enhancer does.
- Sampling as the reference samples Gemma 3 (temperature 0.7), seeded from the request's seed: the same
  request gives the same expansion. The new tokens are bounded (`LoadedModel.prompt_expansion_tokens`,
  `--prompt-expansion-tokens`, 512 by default as in the reference), which also keeps the result inside the
  1024 tokens the text encoder reads.
- Off by default on every route: a prompt then means exactly what was sent, costs no generation time,
  and a seed reproduces a video without depending on the language model's sampling.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch
from PIL import Image

SYSTEM_TEXT_TO_VIDEO = (
    "You turn a user's short idea for a video into the description a text-to-video model with sound "
    "understands best. Write one paragraph in English, present tense, about 80 to 160 words, and nothing "
    "else: no title, no list, no preamble, no comments. Start with the main subject and the action, then "
    "describe in order what happens: movements and gestures, the setting, the light and colours, the "
    "camera's framing and any camera movement, and everything that is heard: speech in quotation marks "
    "with who says it and how, music, ambient sound and sound effects, each tied to the moment it happens. "
    "Keep every element of the user's idea and do not contradict it; add concrete visual and audio detail "
    "where the idea is vague. Describe only what is seen and heard, literally and precisely."
)
SYSTEM_IMAGE_TO_VIDEO = (
    "You turn a user's short idea into the description an image-to-video model with sound understands "
    "best. The image is the video's first frame. Write one paragraph in English, present tense, about 80 "
    "to 160 words, and nothing else. First describe briefly what the image shows (subject, setting, light, "
    "style), consistent with the image, then what happens from that frame on as the user's idea asks: "
    "movements, camera framing and movement, and everything heard, speech in quotation marks with who says "
    "it and how, music, ambient sound and sound effects, each tied to the moment it happens. Do not "
    "contradict the image or the idea. Describe only what is seen and heard, literally and precisely."
)
TEMPERATURE = 0.7


def expand_plan(model, plan):
    """(the plan with its prompt expanded, the expansion or None, seconds): the `expand_prompt` stage.

    The image it looks at is the one that opens the video (image_start, or image_end when backward)."""
    if not plan.request.enable_prompt_expansion:
        return plan, None, 0.0
    start = time.perf_counter()
    with model.placement.use("text_encoder"):
        image = plan.first.image if plan.first is not None else None
        # A sandbox-prepared image brings the copy Gemma reads, already at its size.
        expanded, _ = expand_prompt(model, plan.request.prompt, plan.seed, getattr(image, "preview", image))
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
    request = plan.request.model_copy(update={"prompt": expanded})
    return dataclasses.replace(plan, request=request), expanded, time.perf_counter() - start


def expand_prompt(model, prompt: str, seed: int, image: Image.Image | None = None,
                  max_new_tokens: int | None = None) -> tuple[str, int]:
    """(the expanded prompt, new tokens generated). Gemma must be on the compute device (the caller's
    placement); falls back to the prompt itself if the model writes nothing."""
    gemma, tokenizer = model.pipe.text_encoder, model.pipe.tokenizer
    limit = max_new_tokens if max_new_tokens is not None else model.prompt_expansion_tokens
    limit = min(limit, model.pipe.tokenizer_max_length // 2)  # the expansion must still fit the encoder's window
    config = gemma.config
    system = SYSTEM_IMAGE_TO_VIDEO if image is not None else SYSTEM_TEXT_TO_VIDEO

    def ids(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False).input_ids

    # Gemma 3's turn format (its system text goes at the head of the user turn). Image tokens are placed
    # by id, as Gemma3Processor places them: "\n\n" <start_of_image> <image_soft_token> x N <end_of_image> "\n\n".
    tokens = [tokenizer.bos_token_id] + ids(f"<start_of_turn>user\n{system}\n\n")
    pixel_values = None
    if image is not None:
        tokens += ids("\n\n") + [config.boi_token_index] + [config.image_token_index] * config.mm_tokens_per_image \
            + [config.eoi_token_index] + ids("\n\n")
        pixel_values = _pixels(image, config.vision_config.image_size, gemma)
    tokens += ids(f"User idea: {prompt.strip()}<end_of_turn>\n<start_of_turn>model\n")
    device = next(gemma.parameters()).device
    input_ids = torch.tensor([tokens], device=device)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    if pixel_values is not None:
        inputs.update(pixel_values=pixel_values, token_type_ids=(input_ids == config.image_token_index).long())
    # Seeded on a forked RNG: the same request writes the same text, and nothing else's randomness moves.
    fork = [device] if device.type == "cuda" else []
    with torch.inference_mode(), torch.random.fork_rng(devices=fork):
        torch.manual_seed(seed)
        out = gemma.generate(**inputs, do_sample=True, temperature=TEMPERATURE, max_new_tokens=limit,
                             pad_token_id=tokenizer.pad_token_id)
    new = out[0, input_ids.shape[1]:]
    text = " ".join(tokenizer.decode(new, skip_special_tokens=True).split())
    return (text or prompt), int(new.numel())


def _pixels(image: Image.Image, size: int, gemma) -> torch.Tensor:
    """Gemma 3's image preprocessing (Gemma3ImageProcessor's defaults): RGB, bilinear resize to the vision
    tower's square size, scaled to [0, 1], normalised with mean 0.5 and std 0.5."""
    rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    pixels = torch.from_numpy((array - 0.5) / 0.5).permute(2, 0, 1)[None]
    param = next(gemma.parameters())
    return pixels.to(device=param.device, dtype=param.dtype)
