"""Synthetic clips for the muxing benchmarks: a smooth, camera-panned landscape that codecs treat like
real footage, and uniform noise, the worst case (nothing to predict, nothing to compress)."""

from __future__ import annotations

import numpy as np


def smooth_frames(num_frames: int, height: int, width: int, start: int = 0) -> np.ndarray:
    """Frames start..start+num_frames-1 of a landscape: a sky gradient, a sun drifting across it, three
    layers of hills panning at different speeds (parallax) and gentle shading. Deterministic."""
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    sky = np.broadcast_to(np.stack([0.35 + 0.4 * y, 0.55 + 0.3 * y, 0.95 - 0.2 * y], -1), (height, width, 3))
    layers = [(0.02, 0.55, 0.06, (0.35, 0.45, 0.55)), (0.05, 0.68, 0.08, (0.25, 0.5, 0.3)),
              (0.12, 0.82, 0.07, (0.3, 0.38, 0.18))]
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for i in range(num_frames):
        t = (start + i) / 25.0
        image = sky * np.float32(255.0)
        # The sun: a soft disc, drawn only where its glow is visible.
        sun_x, sun_y, r = (0.2 + 0.05 * t) * width, (0.25 - 0.02 * t) * height, 0.06 * height
        y0, y1 = max(int(sun_y - 3 * r), 0), min(int(sun_y + 3 * r) + 1, height)
        x0, x1 = max(int(sun_x - 3 * r), 0), min(int(sun_x + 3 * r) + 1, width)
        if y0 < y1 and x0 < x1:
            yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
            glow = np.exp(-((xx - sun_x) ** 2 + (yy - sun_y) ** 2) / (r * r))[..., None]
            image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - glow) + np.float32([255, 235, 180]) * glow
        for layer, (speed, base, amp, colour) in enumerate(layers):
            phase = x * (3 + 2 * layer) + speed * t * 10
            ridge = base + amp * np.sin(2 * np.pi * phase) + 0.5 * amp * np.sin(2 * np.pi * 2.7 * phase + layer)
            shade = 0.85 + 0.15 * np.cos(2 * np.pi * phase)
            below = y > ridge  # (H, W)
            light = shade * (1.1 - 0.3 * (y - ridge))  # (H, W)
            ground = light[..., None] * (np.float32(colour) * 255)
            np.copyto(image, ground, where=below[..., None])
        np.clip(image + 0.5, 0, 255, out=image)
        out[i] = image
    return out


def noise_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def tone(seconds: float, rate: int = 24_000) -> np.ndarray:
    """A stereo chord with a slow tremolo, (2, samples) float32 in [-1, 1]."""
    t = np.arange(int(round(seconds * rate)), dtype=np.float32) / rate
    left = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 277.2 * t)
    right = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.2 * np.sin(2 * np.pi * 440 * t)
    wobble = 0.75 + 0.25 * np.sin(2 * np.pi * 0.5 * t)
    return np.stack([left * wobble, right * wobble]).astype(np.float32)
