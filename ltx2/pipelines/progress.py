"""Progress through the stages that have no steps of their own: the video and audio decodes.

Denoising reports each step through `on_step`. The decodes are single calls into a VAE (or the
diffusion decoder), which at 1080p can run for minutes; to report them, a forward hook on the
decoder's blocks counts the blocks as they run: `(stage, done, total)` to the callback that
`reporting()` installed for this generation. A context variable carries the callback, so the
pipelines pass nothing along: it reaches the decode in whichever pipeline runs, and a generation
without a listener pays nothing.

A callback that raises stops the decode at that block: a cancel or a time limit reaches a decode
within one block of the decoder rather than after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # no torch at run time: the job queue and the CLI import the names above
    from torch import nn

StageCallback = Callable[[str, int, int], None]
"""Called as `on_progress(stage, done, total)`: the stage's name and how far it is, in its own units."""

DENOISING = "denoising"
DECODING_VIDEO = "decoding_video"
DECODING_AUDIO = "decoding_audio"
ENCODING = "encoding"  # the encoder and muxer, by frames handed to it (serving.service)
UNITS = {DENOISING: "step", DECODING_VIDEO: "block", DECODING_AUDIO: "part", ENCODING: "frame"}
WORDS = {DENOISING: "denoising", DECODING_VIDEO: "decoding the video", DECODING_AUDIO: "decoding the audio",
         ENCODING: "encoding"}


def describe(stage: str, done: int, total: int) -> str:
    """One line for a person: "decoding the video 3/12 blocks (25%)"."""
    unit = UNITS.get(stage, "")
    unit = f" {unit}s" if unit else ""
    return f"{WORDS.get(stage, stage)} {done}/{total}{unit} ({100 * done // max(total, 1)}%)"

class _Listener:
    def __init__(self, callback: StageCallback):
        self.callback = callback
        self.totals: dict[str, int] = {}  # each counted stage's total, for `finished`


_current: ContextVar[_Listener | None] = ContextVar("ltx2_stage_progress", default=None)


@contextmanager
def reporting(callback: StageCallback | None) -> Iterator[None]:
    """Within this block (and this thread), the decodes report to `callback`."""
    token = _current.set(None if callback is None else _Listener(callback))
    try:
        yield
    finally:
        _current.reset(token)


def report(stage: str, done: int, total: int) -> None:
    listener = _current.get()
    if listener is not None:
        listener.callback(stage, done, total)


def finished(stage: str) -> None:
    """A counted stage is over (its output is ready, not just its last block run): total/total."""
    listener = _current.get()
    if listener is not None and stage in listener.totals:
        total = listener.totals.pop(stage)
        listener.callback(stage, total, total)


@contextmanager
def counting(stage: str, modules: Sequence[nn.Module], total: int, finish: bool = True) -> Iterator[None]:
    """Report `stage` as `modules` run: 0/total at the start, one more after each block's forward, and
    total/total when the block ends (`finish`) or at `finished(stage)`. `total` is the expected count of
    forwards; done holds below it until the end, so the display never says a decode finished before the
    frames are out."""
    listener = _current.get()
    if listener is None:
        yield
        return
    callback, total = listener.callback, max(1, total)
    listener.totals[stage] = total
    done = 0

    def hook(module, args, output) -> None:
        nonlocal done
        done += 1
        callback(stage, min(done, total - 1), total)

    handles = [module.register_forward_hook(hook) for module in modules]
    try:
        callback(stage, 0, total)
        yield
    finally:
        for handle in handles:
            handle.remove()
    if finish:
        finished(stage)
