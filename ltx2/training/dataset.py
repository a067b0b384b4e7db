"""A training dataset: a zip or folder of clips with a caption each, checked, decoded and encoded once.

Intake (`read_zip`, `read_folder`) reads nothing but names and sizes before it refuses: every entry of a
zip is judged from its central directory (how many entries, each name, each declared size and ratio,
the sum) before one byte is inflated, then each member is read with a cap, so a lying header costs no
more than the cap. Every refusal is an `InvalidRequest` on the field `dataset` naming the file.

Preparation (`prepare`) follows ltx-trainer's `process_dataset.py`: each clip is decoded in the sandbox
child (never in the server), resized to cover the bucket and centre-cropped, trimmed to the bucket's
frames; then the video VAE's latents, the audio VAE's (for a clip with a soundtrack) and the caption's
prompt embeddings (Gemma and the connectors, both frozen during training) are computed once and cached
on disk under a key of everything they depend on, so a second training on the same clips skips them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
import stat
import zipfile
from dataclasses import dataclass

import torch

from ..media.audio_features import encode_audio
from ..media.fetch import FetchPolicy
from ..media.inputs import InputLimits
from ..media.sandbox import Sandbox, Stopped, VideoTask
from ..models.geometry import audio_latent_frames, latent_video_shape
from ..pipelines.stages import TextContext, encode_pixels, encode_prompt
from ..schema import InvalidRequest

MB = 1024 * 1024
FIELD = "dataset"
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".webm", ".mkv")
CAPTION_SUFFIX = ".txt"


@dataclass(frozen=True)
class DatasetLimits:
    """Bounds on one dataset, all checked from names and declared sizes before anything is inflated."""

    max_entries: int = 2000  # zip members (files and folders)
    max_clips: int = 500
    max_clip_bytes: int = 100 * MB  # one clip, as LTX2_MAX_VIDEO_MB bounds a video input
    max_caption_bytes: int = 16 * 1024
    max_total_bytes: int = 2048 * MB  # everything inflated together
    max_ratio: float = 200.0  # inflated / compressed, for a member over 1 MB: a video barely compresses

    @classmethod
    def from_settings(cls, settings) -> DatasetLimits:
        return cls(max_total_bytes=int(getattr(settings, "training_dataset_mb", 2048) * MB),
                   max_clip_bytes=InputLimits.from_env().max_video_bytes)


@dataclass
class Clip:
    name: str  # its path inside the dataset, as the user wrote it
    data: bytes
    caption: str


def _refuse(message: str, status: int = 422):
    return InvalidRequest(FIELD, f"{FIELD}: {message}", status)


def _safe_name(name: str) -> str:
    """A member name that stays inside the dataset, or a refusal naming it (path traversal, absolute paths,
    drive letters, backslashes that Windows tools read as separators, NUL)."""
    shown = repr(name[:200])
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise _refuse(f"file {shown} has an unsafe path (absolute, a drive, or a backslash)")
    if any(part == ".." for part in name.split("/")):
        raise _refuse(f"file {shown} has an unsafe path ('..' leaves the dataset)")
    return posixpath.normpath(name)


def _kind(name: str) -> str:
    lower = name.lower()
    if lower.endswith(VIDEO_SUFFIXES):
        return "video"
    if lower.endswith(CAPTION_SUFFIX):
        return "caption"
    raise _refuse(f"file {name!r} is neither a clip ({', '.join(VIDEO_SUFFIXES)}) nor a caption (.txt)")


def _pair(videos: dict[str, int], captions: set[str], limits: DatasetLimits) -> list[tuple[str, str]]:
    """(clip, caption) names: each clip needs `<same name>.txt`; a caption without a clip is refused too."""
    if not videos:
        raise _refuse(f"holds no clips ({', '.join(VIDEO_SUFFIXES)}, each with a .txt caption of the same name)")
    if len(videos) > limits.max_clips:
        raise _refuse(f"holds {len(videos)} clips; the limit is {limits.max_clips}", 413)
    pairs = []
    for video in sorted(videos):
        caption = posixpath.splitext(video)[0] + CAPTION_SUFFIX
        if caption not in captions:
            raise _refuse(f"clip {video!r} has no caption: add {caption!r} with its description")
        pairs.append((video, caption))
    stray = captions - {c for _, c in pairs}
    if stray:
        raise _refuse(f"caption {sorted(stray)[0]!r} has no clip of the same name")
    return pairs


def _check_sizes(sizes: dict[str, tuple[int, int]], limits: DatasetLimits) -> None:
    """Declared sizes: each member, each ratio, the running sum (zip bombs by declared size)."""
    total = 0
    for name, (size, compressed) in sizes.items():
        cap = limits.max_caption_bytes if name.lower().endswith(CAPTION_SUFFIX) else limits.max_clip_bytes
        if size > cap:
            raise _refuse(f"file {name!r} is {size / MB:.1f} MB; the limit is {cap / MB:g} MB", 413)
        if size > MB and compressed >= 0 and size > limits.max_ratio * max(compressed, 1):
            raise _refuse(f"file {name!r} inflates {size / max(compressed, 1):.0f}-fold (a zip bomb?); the limit is "
                          f"{limits.max_ratio:g}-fold", 413)
        total += size
        if total > limits.max_total_bytes:
            raise _refuse(f"inflates past {limits.max_total_bytes / MB:g} MB at file {name!r}", 413)


def read_zip(path: str, limits: DatasetLimits = DatasetLimits()) -> list[Clip]:
    """The clips of a zip file on disk, with their captions; every refusal names the file."""
    with _open_zip(path) as archive:
        members, pairs = _index(archive, limits)
        return [Clip(video, _read_member(archive, members[video], video, limits.max_clip_bytes),
                     _caption(_read_member(archive, members[caption], caption, limits.max_caption_bytes), caption))
                for video, caption in pairs]


def check_zip(path: str, limits: DatasetLimits = DatasetLimits()) -> int:
    """What a submission is answered with at once: names, kinds, pairs and declared sizes, then every member
    inflated once, chunk by chunk and thrown away (a member that inflates to other than its header says, a
    bomb by actual size, is refused here too; memory stays one chunk). Returns the number of clips."""
    with _open_zip(path) as archive:
        members, pairs = _index(archive, limits)
        for name, info in members.items():
            cap = limits.max_caption_bytes if name.lower().endswith(CAPTION_SUFFIX) else limits.max_clip_bytes
            _read_member(archive, info, name, cap, keep=False)
        return len(pairs)


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise _refuse(f"is not a readable zip file ({exc})") from None


def _index(archive: zipfile.ZipFile, limits: DatasetLimits):
    infos = archive.infolist()
    if len(infos) > limits.max_entries:  # counted from the central directory, before any member is read
        raise _refuse(f"has {len(infos)} entries; the limit is {limits.max_entries}", 413)
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = _safe_name(info.filename)
        if info.is_dir():
            continue
        if stat.S_ISLNK(info.external_attr >> 16):
            raise _refuse(f"file {info.filename!r} is a symbolic link")
        if name in members:
            raise _refuse(f"file {info.filename!r} appears twice")
        _kind(name)
        members[name] = info
    _check_sizes({n: (i.file_size, i.compress_size) for n, i in members.items()}, limits)
    videos = {n: i.file_size for n, i in members.items() if _kind(n) == "video"}
    return members, _pair(videos, {n for n in members if _kind(n) == "caption"}, limits)


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, cap: int, keep: bool = True) -> bytes:
    """A member's bytes, read in chunks and stopped past min(declared, cap): a header that under-declares
    (a zip bomb by actual size) is caught by the count, and corrupt data by zipfile's CRC check."""
    limit = min(info.file_size, cap)
    out = bytearray()
    try:
        with archive.open(info) as fh:
            count = 0
            while chunk := fh.read(1024 * 1024):
                count += len(chunk)
                if keep:
                    out += chunk
                if count > limit:
                    raise _refuse(f"file {name!r} inflates past its declared {limit / MB:.1f} MB (a zip bomb?)", 413)
    except InvalidRequest:
        raise
    except zipfile.BadZipFile as exc:  # zipfile stops at the declared size: a bomb that under-declares fails its CRC
        raise _refuse(f"file {name!r} does not inflate to what its header declares ({exc}; a zip bomb?)") from None
    except (OSError, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
        raise _refuse(f"file {name!r} could not be read from the zip ({exc})") from None
    return bytes(out)


def read_folder(root: str, limits: DatasetLimits = DatasetLimits()) -> list[Clip]:
    """The clips of a folder (a dataset under `<models dir>/datasets/`): the same checks as a zip, links
    refused, nothing read before every name and size has passed."""
    sizes: dict[str, tuple[int, int]] = {}
    count = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            count += 1
            if count > limits.max_entries:
                raise _refuse(f"has more than {limits.max_entries} entries; the limit", 413)
            rel = os.path.relpath(os.path.join(folder, name), root).replace(os.sep, "/")
            if os.path.islink(os.path.join(folder, name)):
                raise _refuse(f"file {rel!r} is a symbolic link")
            if name in files:
                _kind(rel)
                sizes[rel] = (os.path.getsize(os.path.join(folder, name)), -1)
    _check_sizes(sizes, limits)
    videos = {n: s for n, (s, _) in sizes.items() if _kind(n) == "video"}
    pairs = _pair(videos, {n for n in sizes if _kind(n) == "caption"}, limits)

    def read(rel: str, cap: int) -> bytes:
        with open(os.path.join(root, rel), "rb") as fh:
            data = fh.read(cap + 1)
        if len(data) > cap:
            raise _refuse(f"file {rel!r} grew past {cap / MB:g} MB while it was read", 413)
        return data

    return [Clip(video, read(video, limits.max_clip_bytes), _caption(read(caption, limits.max_caption_bytes), caption))
            for video, caption in pairs]


def _caption(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise _refuse(f"caption {name!r} is not UTF-8 text") from None
    if not text:
        raise _refuse(f"caption {name!r} is empty")
    return " ".join(text.split())


# ------------------------------------------------------------------------------------------ preparation

@dataclass
class Sample:
    """One clip in the transformer's token space, as ltx-trainer's preprocessed `.precomputed` holds it."""

    name: str
    video: torch.Tensor  # (1, tokens, channels): normalised, packed video latents
    audio: torch.Tensor | None  # (1, tokens, channels) normalised, packed audio latents; None: a silent clip
    text: TextContext
    frames: int  # latent frames, rows, columns
    height: int
    width: int
    audio_frames: int
    fps: int


def captioned(caption: str, trigger: str | None) -> str:
    """ltx-trainer's `--lora-trigger`: the trigger word put before every caption."""
    return f"{trigger} {caption}" if trigger else caption


def cache_key(model, clip: Clip, caption: str, width: int, height: int, num_frames: int) -> str:
    h = hashlib.sha256()
    # The model by its name and files (a family's repr holds objects whose text changes per process).
    for part in (str(getattr(model, "name", "")), str(getattr(model, "checkpoint", "")), model.family.name,
                 str(model.dtype), caption, f"{width}x{height}x{num_frames}"):
        h.update(part.encode() + b"\0")
    h.update(hashlib.sha256(clip.data).digest())
    return h.hexdigest()


def prepare(model, clips: list[Clip], *, width: int, height: int, num_frames: int, trigger: str | None,
            sandbox: Sandbox, cache_dir: str | None, should_stop=None, on_clip=None,
            fetch_policy: FetchPolicy | None = None) -> list[Sample]:
    """Every clip decoded in the sandbox, fitted to the one bucket (width x height x num_frames), and
    encoded; cached under `cache_dir`. `on_clip(done, total)` reports progress."""
    samples = []
    for index, clip in enumerate(clips):
        if should_stop is not None and (why := should_stop()) is not None:
            raise why
        caption = captioned(clip.caption, trigger)
        key = cache_key(model, clip, caption, width, height, num_frames)
        path = os.path.join(cache_dir, key + ".pt") if cache_dir else None
        sample = _load_cached(path, clip.name)
        if sample is None:
            sample = _encode(model, clip, caption, width, height, num_frames, sandbox, should_stop, fetch_policy)
            if path is not None:
                _store_cached(path, sample)
        samples.append(sample)
        if on_clip is not None:
            on_clip(index + 1, len(clips))
    return samples


def _decode(model, clip: Clip, width: int, height: int, num_frames: int, sandbox: Sandbox, should_stop,
            fetch_policy: FetchPolicy | None):
    """The clip's first `num_frames` frames at its own rate, covering width x height (centre crop), and its
    soundtrack, decoded in the sandbox child; a refusal names the clip."""
    limits = InputLimits.from_env()
    if len(clip.data) > limits.max_video_bytes:
        raise _refuse(f"clip {clip.name!r} is {len(clip.data) / MB:.1f} MB; the limit is "
                      f"{limits.max_video_bytes / MB:g} MB (LTX2_MAX_VIDEO_MB)", 413)
    task = VideoTask(width=width, height=height, num_frames=num_frames, fps=None, multiple=32)
    try:
        return sandbox.decode({"video": base64.b64encode(clip.data).decode()}, model.pipe.audio_vae.config.sample_rate,
                              model.vocoder_rate, limits, fetch_policy or FetchPolicy(), should_stop=should_stop,
                              video=task)
    except Stopped as exc:
        raise exc.why from None
    except InvalidRequest as exc:
        raise _refuse(f"clip {clip.name!r}: {exc.message}", exc.status) from None


def _encode(model, clip: Clip, caption: str, width: int, height: int, num_frames: int, sandbox: Sandbox,
            should_stop, fetch_policy) -> Sample:
    decoded = _decode(model, clip, width, height, num_frames, sandbox, should_stop, fetch_policy)
    pipe = model.pipe
    fps = int(decoded.video_info["fps"])
    pixels = torch.from_numpy(decoded.video)  # (1, 3, F, H, W) in [-1, 1]
    frames, lat_h, lat_w = latent_video_shape(num_frames, height, width, pipe.vae_spatial_compression_ratio,
                                              pipe.vae_temporal_compression_ratio)
    audio_vae = pipe.audio_vae
    audio_frames = audio_latent_frames(num_frames, fps, audio_vae.config.sample_rate, audio_vae.config.mel_hop_length,
                                       pipe.audio_vae_temporal_compression_ratio)
    with torch.no_grad():
        with model.placement.use("vae"):
            video = encode_pixels(model, pixels).cpu()
        audio = None
        if decoded.audio_for_vae is not None:
            with model.placement.use("audio_vae"):
                raw = encode_audio(audio_vae, torch.from_numpy(decoded.audio_for_vae), audio_frames)
                audio = pipe._normalize_audio_latents(pipe._pack_audio_latents(raw.float()), audio_vae.latents_mean,
                                                      audio_vae.latents_std).float().cpu()
        text = encode_prompt(model, caption, "", guided=False).positive
    text = TextContext(text.video.float().cpu(), text.audio.float().cpu(), text.mask.cpu())
    return Sample(clip.name, video, audio, text, frames, lat_h, lat_w, audio_frames, fps)


def _load_cached(path: str | None, name: str) -> Sample | None:
    if path is None or not os.path.isfile(path):
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        return Sample(name, d["video"], d.get("audio"), TextContext(d["text_video"], d["text_audio"], d["text_mask"]),
                      *(int(d[k]) for k in ("frames", "height", "width", "audio_frames", "fps")))
    except Exception:  # noqa: BLE001 - a damaged cache entry is computed again
        return None


def _store_cached(path: str, sample: Sample) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    d = {"video": sample.video, "text_video": sample.text.video, "text_audio": sample.text.audio,
         "text_mask": sample.text.mask, "frames": sample.frames, "height": sample.height, "width": sample.width,
         "audio_frames": sample.audio_frames, "fps": sample.fps}
    if sample.audio is not None:
        d["audio"] = sample.audio
    try:
        torch.save(d, path + ".part")
        os.replace(path + ".part", path)
    except OSError:  # a cache that cannot be written costs only the recomputation next time
        pass
