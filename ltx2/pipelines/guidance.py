"""Guidance as the reference's multi-modal guider computes it (ltx-core `MultiModalGuider`).

Each modality has its own knobs. Per step the transformer runs one batch of passes: the positive
prompt ("cond") and, as the knobs ask, the negative prompt ("uncond", classifier-free guidance),
the positive prompt with self-attention skipped in the STG blocks ("ptb", spatio-temporal
guidance), and the positive prompt with the audio<->video cross-attention cut ("mod", modality
guidance). The guided prediction is

    cond + (cfg - 1)(cond - uncond) + stg (cond - ptb) + (modality - 1)(cond - mod)

optionally rescaled towards the standard deviation of `cond`. The reference combines clean
(x0) estimates; the combination is linear and every pass shares the latents and the per-token
sigma, so it is computed on velocities here and only the rescale, which is not linear, goes
through x0 = x - sigma_token * v.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PASSES = ("cond", "uncond", "ptb", "mod")


@dataclass(frozen=True)
class ModalityGuidance:
    """One modality's knobs. The neutral values (1, 0, 1, 0) ask for nothing but the "cond" pass."""

    cfg: float = 1.0
    stg: float = 0.0
    modality: float = 1.0
    rescale: float = 0.0

    def needs(self, name: str) -> bool:
        return {"cond": True, "uncond": self.cfg != 1.0, "ptb": self.stg != 0.0, "mod": self.modality != 1.0}[name]


@dataclass(frozen=True)
class Guidance:
    video: ModalityGuidance
    audio: ModalityGuidance
    stg_blocks: tuple[int, ...] = ()

    @property
    def passes(self) -> tuple[str, ...]:
        """The passes one step runs, in the reference's batch order."""
        return tuple(p for p in PASSES if self.video.needs(p) or self.audio.needs(p))

    @property
    def needs_negative_prompt(self) -> bool:
        return "uncond" in self.passes

    def knobs(self) -> dict:
        """The request's names for what was used (guidance_scale itself is reported on its own)."""
        return {"audio_guidance_scale": self.audio.cfg, "stg_scale": self.video.stg, "audio_stg_scale": self.audio.stg,
                "modality_scale": self.video.modality, "audio_modality_scale": self.audio.modality,
                "guidance_rescale": self.video.rescale, "audio_guidance_rescale": self.audio.rescale,
                "stg_blocks": list(self.stg_blocks)}


def combine(knobs: ModalityGuidance, outputs: dict[str, torch.Tensor], latents: torch.Tensor,
            token_sigma: torch.Tensor) -> torch.Tensor:
    """The guided velocity of one modality from its passes' velocities.

    `token_sigma` (1, tokens, 1) is each token's own noise level (the step's sigma times one minus
    its conditioning strength), the one the reference turns velocity into x0 with.
    """
    cond = outputs["cond"]
    pred = cond
    if knobs.cfg != 1.0:
        pred = pred + (knobs.cfg - 1) * (cond - outputs["uncond"])
    if knobs.stg != 0.0:
        pred = pred + knobs.stg * (cond - outputs["ptb"])
    if knobs.modality != 1.0:
        pred = pred + (knobs.modality - 1) * (cond - outputs["mod"])
    if knobs.rescale == 0.0:
        return pred
    x0_cond = latents - token_sigma * cond
    x0_pred = latents - token_sigma * pred
    factor = x0_cond.std() / x0_pred.std()
    x0_pred = x0_pred * (knobs.rescale * factor + (1 - knobs.rescale))
    # A token at sigma 0 is held to its condition: its x0 is the latent itself and its velocity
    # never reaches the step (the blend with the condition replaces it).
    safe = torch.where(token_sigma > 0, token_sigma, torch.ones_like(token_sigma))
    return torch.where(token_sigma > 0, (latents - x0_pred) / safe, torch.zeros_like(pred))
