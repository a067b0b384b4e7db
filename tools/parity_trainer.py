"""Compare ltx2's training loss with Lightricks' ltx-trainer 1.2.0 on the same miniature weights (dev tool).

Neither ltx-trainer nor ltx-core is a dependency: both are imported from an LTX-2 checkout (its
`packages/ltx-trainer/src` and `packages/ltx-core/src`), as tools/parity_ltx_core.py imports ltx-core, and
need einops (and scipy, for ltx-core) on PYTHONPATH, e.g. `pip install --target /tmp/refdeps einops scipy`.

    PYTHONPATH=/tmp/refdeps python tools/parity_trainer.py --checkout LTX-2

Both sides load tests/miniature.py's LTX-2 19B miniature official file (ours through ltx2's loader into
diffusers' transformer, theirs through ltx-core's builder into its LTXModel). For each case, ltx-trainer's
`FlexibleStrategy` (the strategy its t2v/i2v configs name) prepares the inputs from the same latents and text
with a timestep sampler that returns the case's sigmas and the global RNG seeded for its noise; that noise
(target + x0) and those sigmas are handed to `ltx2.training.objective.loss`. Printed: both losses and their
difference, float32 on the CPU, and the loss a zero prediction would have (the model's output matters); the cases with distinct sigmas per modality and first-frame conditioning.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
CASES = (  # name, video sigma, audio sigma, first frame given (ltx-trainer's i2v condition at probability 1)
    ("t2v, sigma 0.7 for both", 0.7, 0.7, False),
    ("t2v, video 0.3 / audio 0.9", 0.3, 0.9, False),
    ("i2v first frame, video 0.55 / audio 0.2", 0.55, 0.2, True),
    ("t2v, sigma near 1 (0.995)", 0.995, 0.995, False),
)


class FixedSigmas:
    """A timestep sampler that returns the given sigmas in order (video's first, then audio's)."""

    def __init__(self, *sigmas: float):
        self.sigmas = list(sigmas)

    def sample_for(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.full((batch.shape[0],), self.sigmas.pop(0))


def import_trainer(checkout: Path) -> dict:
    sys.path.insert(0, str(ROOT / "tools"))
    import parity_ltx_core

    core = parity_ltx_core.import_ltx_core(checkout)
    src = checkout / "packages" / "ltx-trainer" / "src"
    if not src.is_dir():
        raise SystemExit(f"{checkout}: no packages/ltx-trainer/src")
    sys.path.insert(0, str(src))
    from ltx_trainer.training_strategies.flexible import FlexibleStrategy, FlexibleStrategyConfig

    return {"core": core, "tools": parity_ltx_core, "Strategy": FlexibleStrategy, "Config": FlexibleStrategyConfig}


def compare(checkout: Path) -> list[tuple[str, float, float, float]]:
    ref = import_trainer(checkout)
    sys.path.insert(0, str(ROOT))
    from ltx2.models.loading import load_single_file
    from ltx2.pipelines.stages import TextContext
    from ltx2.training.objective import Draw, loss

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = ref["tools"].miniature_checkpoint(Path(tmp), "ltx-2")
        ours = load_single_file(str(path), dtype=torch.float32, kind="distilled")[0]["transformer"].eval()
        theirs = ref["tools"].build_theirs(ref["core"], path, ref["core"]["Configurator"], ref["core"]["sd_ops"])
    model = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32, pipe=SimpleNamespace(transformer=ours))
    g = torch.Generator().manual_seed(0)
    frames, height, width, audio_frames, fps = 3, 2, 3, 9, 25
    video = torch.randn(1, ours.config.in_channels, frames, height, width, generator=g)
    mel = 4
    audio = torch.randn(1, ours.config.audio_in_channels // mel, audio_frames, mel, generator=g)
    caption = ours.config.caption_channels
    text_video = torch.randn(1, 16, caption, generator=g)
    text_audio = torch.randn(1, 16, caption, generator=g)
    for name, video_sigma, audio_sigma, first in CASES:
        conditions = [{"type": "first_frame", "probability": 1.0}] if first else []
        config = ref["Config"](video={"is_generated": True, "latents_dir": "latents", "conditions": conditions},
                               audio={"is_generated": True, "latents_dir": "audio_latents"})
        strategy = ref["Strategy"](config)
        batch = {"video_latents": {"latents": video, "num_frames": torch.tensor([frames]), "height": torch.tensor([height]),
                             "width": torch.tensor([width]), "fps": torch.tensor([float(fps)])},
                 "audio_latents": {"latents": audio, "num_frames": torch.tensor([audio_frames])},
                 "conditions": {"video_prompt_embeds": text_video, "audio_prompt_embeds": text_audio,
                                "prompt_attention_mask": None}}
        torch.manual_seed(1)
        inputs = strategy.prepare_training_inputs(batch, FixedSigmas(video_sigma, audio_sigma))
        with torch.no_grad():
            video_pred, audio_pred = theirs(video=inputs.video, audio=inputs.audio, perturbations=None)
            reference = float(strategy.compute_loss(video_pred, audio_pred, inputs).mean())
            # What the loss would be if the model predicted nothing: the case is not vacuous when it differs.
            blind = float(strategy.compute_loss(torch.zeros_like(video_pred), torch.zeros_like(audio_pred), inputs).mean())
        video_tokens = video.flatten(2).transpose(1, 2)  # ltx-core's patchify at patch size 1: b (f h w) c
        audio_tokens = audio.permute(0, 2, 1, 3).flatten(2)  # b t (c f)
        draw = Draw(torch.tensor([video_sigma]), inputs.video_targets + video_tokens, torch.tensor([audio_sigma]),
                    inputs.audio_targets + audio_tokens, first)
        text = TextContext(text_video, text_audio, torch.ones(1, 16))
        grid = {"frames": frames, "height": height, "width": width, "audio_frames": audio_frames, "fps": fps}
        with torch.no_grad():
            mine = float(loss(model, video_tokens, audio_tokens, text, grid, draw).mean())
        rows.append((name, reference, mine, blind))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkout", type=Path, default=Path("/tmp/ref"), help="root of an LTX-2 checkout (1.2.0)")
    args = parser.parse_args()
    print("| case | ltx-trainer loss | ltx2 loss | difference | loss of a zero prediction |\n|---|---:|---:|---:|---:|")
    for name, reference, mine, blind in compare(args.checkout):
        print(f"| {name} | {reference:.6f} | {mine:.6f} | {abs(reference - mine):.2e} | {blind:.6f} |")


if __name__ == "__main__":
    main()
