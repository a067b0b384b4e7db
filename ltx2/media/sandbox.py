"""Fetching and decoding untrusted images and audio in a child process with hard limits.

Why a process, not a thread or in-process checks. Decoding runs in C (Pillow's libjpeg, FFmpeg),
where Python can neither stop it nor bound what it allocates: a 370 KB progressive JPEG with
thousands of scans holds a thread for minutes, and a 55-byte FLAC declaring a 1 Hz sample rate has
the resampler allocate gigabytes in one call. `inputs.py` refuses every such parameter it can read
before decoding (sample rates, samples x resample ratio, pixel counts, JPEG scan counts), and this
module is the backstop for whatever it cannot foresee:

- the child sets its own address-space limit (RLIMIT_AS, the budget on top of what it uses after
  importing its libraries): any allocation past it fails, in C as in Python, and the field is refused;
- the parent kills it (SIGKILL) at the wall-clock limit, or at once when the job is cancelled or
  reaches its deadline; RLIMIT_CPU stops a child whose parent is gone;
- it may write no file (RLIMIT_FSIZE 0), open few descriptors, and dumps no core.

The child is a fresh interpreter (`python -m ltx2.media.sandbox`), not a fork of the server: it has
no model, no GPU context and no server threads, and it imports numpy, Pillow, PyAV and torch (for the
conditioning image's resize, the very function the pipeline used to run). One is started ahead of
need, so a job does not wait for the imports. It reads one task (the input fields, the limits, the
URL policy and where the images will be used, as JSON on stdin), fetches URLs (with the same SSRF
guard), decodes, and writes back on stdout the audio (float32) and each image prepared at the sizes
the pipeline encodes it at (conditioning_image.py), then exits. Every image operation (decoding, the
H.264 round trip, the colour conversion, the cover-resize) runs here: the server receives tensors
the size of the output frame, whatever the size of the file.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from PIL import Image

from ..schema import InvalidRequest
from .conditioning_image import ImageTargets, PreparedImage
from .fetch import FetchPolicy
from .inputs import InputLimits

MB = 1024 * 1024
FIELD_MARK = "ltx2-field:"
RESIZE_THREADS = 4  # the child says which input it is working on, on stderr


@dataclass
class SandboxLimits:
    """Hard limits on one decoding child. `from_env()` reads LTX2_DECODE_MEMORY_MB (default 2048: the
    address space the child may add to what it uses after importing its libraries) and
    LTX2_DECODE_TIMEOUT (default 60 s of wall clock for decoding; fetching URLs adds `--url-timeout`
    for each URL)."""

    memory_mb: float = 2048.0
    timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings) -> SandboxLimits:
        for name in ("decode_memory_mb", "decode_timeout"):
            value = getattr(settings, name)
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        return cls(memory_mb=settings.decode_memory_mb, timeout=settings.decode_timeout)


@dataclass
class DecodedInputs:
    images: dict[str, PreparedImage] = field(default_factory=dict)  # field -> prepared at the targets' sizes
    audio_for_vae: np.ndarray | None = None  # (2, samples) float32
    audio_for_output: np.ndarray | None = None
    # A video input (retake): its frames at the model size (1, 3, F, H, W) float32 in [-1, 1], at the output
    # size (F, h, w, 3) uint8, and what was chosen from it (width, height, fps, num_frames, has_audio). Its
    # soundtrack, when it has one, is audio_for_vae / audio_for_output.
    video: np.ndarray | None = None
    video_output: np.ndarray | None = None
    video_info: dict | None = None
    # ic_lora's conditioning_attention_mask on the reference's latent grid, (frames, height, width) float32
    # (ltx2.media.attention_mask).
    attention_mask: np.ndarray | None = None


@dataclass(frozen=True)
class VideoTask:
    """How a video input is decoded: the request's width, height, num_frames and fps where it set them (None:
    taken from the video), the model's size multiple, and the frame and second limits of the schema."""

    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: int | None = None
    multiple: int = 32
    # Video to video (ic_lora): the reference is decoded only at the model size times reference[0] / reference[1]
    # (stage 1's size over the IC-LoRA's downscale factor), every `temporal`-th frame after the first, and
    # turned into its edges when control is "canny". None: a retake's video (model and output sizes).
    reference: tuple[int, int] | None = None
    temporal: int = 1
    control: str | None = None
    # Its conditioning_attention_mask: read at stage 1's size (the reference's times `downscale`), pooled onto
    # the reference's latent grid (the VAE's (temporal, spatial) ratios `vae`) in `mask_dtype`.
    downscale: int = 1
    vae: tuple[int, int] = (8, 32)
    mask_dtype: str = "float32"


class Stopped(Exception):
    """The caller's `should_stop()` said so (a cancelled job, or one past its deadline)."""

    def __init__(self, why):
        super().__init__(str(why))
        self.why = why


class Sandbox:
    """Runs decoding tasks in child processes, one at a time per caller, with one child kept ready."""

    def __init__(self, limits: SandboxLimits | None = None):
        self.limits = limits or SandboxLimits()
        self._spare: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._closed = False

    def _spawn(self) -> subprocess.Popen:
        # One thread: every thread's stack and arena counts against the limit. The package is found where
        # this one was loaded from, whatever the working directory.
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "MALLOC_ARENA_MAX": "2",
               "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
        return subprocess.Popen(
            [sys.executable, "-m", "ltx2.media.sandbox", str(int(self.limits.memory_mb * MB)),
             str(int(self.limits.timeout) + 30)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True,
            start_new_session=True,  # a signal to the server's process group does not reach it
        )

    def _take(self) -> subprocess.Popen:
        with self._lock:
            child, self._spare = self._spare, None
        if child is None or child.poll() is not None:
            child = self._spawn()
        self._refill()
        return child

    def _refill(self) -> None:
        with self._lock:
            if self._spare is None and not self._closed:
                self._spare = self._spawn()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spare, self._spare = self._spare, None
        if spare is not None:
            _kill(spare)

    def decode(self, inputs: dict[str, str], vae_rate: int, output_rate: int, limits: InputLimits,
               policy: FetchPolicy, should_stop=None, url_count: int = 0,
               targets: ImageTargets | None = None, video: VideoTask | None = None) -> DecodedInputs:
        """Fetch and decode `inputs` ({field: base64, data URI or URL}) in a child, the images prepared
        for `targets` (by default the request defaults' frame, one stage). Bad input raises
        InvalidRequest naming the field; `should_stop()` returning an exception kills the child and
        raises it."""
        task = {"inputs": inputs, "vae_rate": vae_rate, "output_rate": output_rate, "limits": asdict(limits),
                "policy": asdict(policy), "targets": (targets or ImageTargets()).to_json(),
                # torch's bilinear resize rounds differently on one thread than on several: the child
                # uses this process's count (several at most 4, which round alike), so results match.
                "threads": min(torch.get_num_threads(), RESIZE_THREADS),
                "video": asdict(video or VideoTask())}
        wall = self.limits.timeout + url_count * policy.timeout
        child = self._take()
        try:
            out, err, code = self._run(child, json.dumps(task).encode(), wall, should_stop)
        finally:
            _kill(child)
        return self._result(out, err, code, wall)

    def _run(self, child: subprocess.Popen, task: bytes, wall: float, should_stop):
        deadline = time.monotonic() + wall
        out, err = bytearray(), bytearray()
        with selectors.DefaultSelector() as sel:
            os.set_blocking(child.stdin.fileno(), False)
            sel.register(child.stdin, selectors.EVENT_WRITE)
            sel.register(child.stdout, selectors.EVENT_READ)
            sel.register(child.stderr, selectors.EVENT_READ)
            sent, open_streams = 0, 2
            while open_streams:
                if should_stop is not None and (why := should_stop()) is not None:
                    raise Stopped(why)
                if time.monotonic() > deadline:
                    return out, err, "timeout"
                for key, _ in sel.select(timeout=0.05):
                    if key.fileobj is child.stdin:
                        try:
                            sent += os.write(child.stdin.fileno(), task[sent:sent + 1024 * 1024])
                        except BlockingIOError:
                            pass
                        except BrokenPipeError:  # it stopped reading (it failed): its answer says why
                            sent = len(task)
                        if sent >= len(task):
                            sel.unregister(child.stdin)
                            child.stdin.close()
                    else:
                        chunk = os.read(key.fileobj.fileno(), 4 * MB)
                        if not chunk:
                            sel.unregister(key.fileobj)
                            open_streams -= 1
                        elif key.fileobj is child.stdout:
                            out += chunk
                        elif len(err) < MB:
                            err += chunk
        try:
            code = child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            return out, err, "timeout"
        return out, err, code

    def _result(self, out: bytearray, err: bytearray, code, wall: float) -> DecodedInputs:
        fields = [line[len(FIELD_MARK):] for line in err.decode(errors="replace").splitlines()
                  if line.startswith(FIELD_MARK)]
        current = fields[-1] if fields else "input"
        if code == "timeout":
            raise InvalidRequest(current, f"{current} took longer than {wall:g} s to fetch and decode "
                                          "(LTX2_DECODE_TIMEOUT); send a smaller or simpler file")
        header_end = out.find(b"\n")
        if header_end < 0:
            how = f"signal {-code}" if isinstance(code, int) and code < 0 else f"exit status {code}"
            raise InvalidRequest(current, f"{current} could not be decoded: the decoder stopped ({how})")
        header = json.loads(out[:header_end])
        if "error" in header:
            e = header["error"]
            raise InvalidRequest(e["field"], e["message"], e["status"])
        decoded, offset = DecodedInputs(), header_end + 1
        for item in header["items"]:
            data = memoryview(out)[offset:offset + item["bytes"]]
            offset += item["bytes"]
            if item["kind"] == "image":
                decoded.images[item["name"]] = PreparedImage(size=tuple(item["size"]), crf=item["crf"])
            elif item["kind"] == "pixels":
                width, height = item["at"]
                array = np.frombuffer(data, dtype=np.float32).reshape(1, 3, 1, height, width).copy()
                decoded.images[item["name"]].pixels[(width, height)] = torch.from_numpy(array)
            elif item["kind"] in ("video", "video_output"):
                dtype = np.float32 if item["kind"] == "video" else np.uint8
                setattr(decoded, item["kind"], np.frombuffer(data, dtype=dtype).reshape(item["shape"]).copy())
            elif item["kind"] == "video_info":
                decoded.video_info = item["info"]
            elif item["kind"] == "attention_mask":
                decoded.attention_mask = np.frombuffer(data, dtype=np.float32).reshape(item["shape"]).copy()
            elif item["kind"] == "preview":
                side = item["side"]
                decoded.images[item["name"]].preview = Image.frombytes("RGB", (side, side), bytes(data))
            else:
                array = np.frombuffer(data, dtype=np.float32).reshape(item["shape"]).copy()
                setattr(decoded, item["name"], array)
        return decoded


def _kill(child: subprocess.Popen) -> None:
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except OSError:
            child.kill()
    for stream in (child.stdin, child.stdout, child.stderr):
        try:
            if stream is not None:
                stream.close()
        except OSError:
            pass
    try:
        child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


_default: Sandbox | None = None
_default_lock = threading.Lock()


def default_sandbox() -> Sandbox:
    """The process's sandbox with the environment's limits (the RunPod handler and the CLI use it)."""
    global _default
    with _default_lock:
        if _default is None:
            from ..settings import Settings

            _default = Sandbox(SandboxLimits.from_settings(Settings.from_env()))
        return _default


# ---------------------------------------------------------------------------------------------- the child


def _limit_self(memory_bytes: int, cpu_seconds: int) -> None:
    with open("/proc/self/statm") as fh:
        used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (used + memory_bytes, used + memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))


def _video(data: bytes, mime: str | None, limits: InputLimits, spec: VideoTask, task: dict, items: list,
           blobs: list) -> dict | None:
    """The video's frames at the output's fps, at the model size and the output size, and its soundtrack. For an
    IC-LoRA's reference, what its attention mask is decoded at (ltx2.media.attention_mask.decode)."""
    from ..schema import FRAME_MAX, FRAME_MIN, SIZE_MAX, SIZE_MIN
    from .inputs import load_audio
    from .video_in import decode_frames, probe_video

    bounds = limits.video()
    info = probe_video(data, "video", mime, bounds)
    # An empty fps: the video's own, to a whole number within the schema's 1..60 (25 when it declares none).
    fps = spec.fps or (min(max(round(info.fps), 1), 60) if info.fps else 25)
    # An empty width or height: the video's own, to the nearest multiple the model runs at.
    width, height = ((spec.width, spec.height) if spec.width and spec.height else
                     tuple(min(max(round(side / spec.multiple) * spec.multiple, SIZE_MIN), SIZE_MAX)
                           for side in (info.width, info.height)))
    model = tuple(-(-side // spec.multiple) * spec.multiple for side in (width, height))
    wanted = spec.num_frames
    if wanted is None:  # the 8k+1 frames its declared length covers (decoded below: a header may lie)
        seconds = info.seconds if info.seconds is not None else bounds.max_seconds
        wanted = min(max(int(seconds * fps + 1e-6), 1), FRAME_MAX)
        wanted = max((wanted - 1) // 8 * 8 + 1, FRAME_MIN)  # no frame decoded that the output would drop
    if spec.reference is not None:  # video to video: the reference alone, smaller than the model size
        return _reference(data, mime, bounds, spec, fps, wanted, model, (width, height), info, items, blobs)
    sizes = (model,) if model == (width, height) else (model, (width, height))
    frames, _ = decode_frames(data, "video", mime, bounds, fps, wanted, sizes)
    count = frames[model].shape[2]
    if spec.num_frames is not None and count < spec.num_frames:
        raise InvalidRequest("num_frames", f"video has {count} frames at {fps} fps ({count / fps:g} s), fewer than "
                                           f"num_frames {spec.num_frames}: lower num_frames or leave it out")
    count = (count - 1) // 8 * 8 + 1  # the 8k+1 frames it covers
    if count < FRAME_MIN:
        raise InvalidRequest("video", f"video is too short: it has {frames[model].shape[2]} frames at {fps} fps, "
                                      f"and a retake needs at least {FRAME_MIN}")
    # The frames are the largest thing a job decodes (4 bytes x 3 x width x height a frame at the model size):
    # no copy of them is made here (the slice is the whole array unless the header promised more frames), and
    # they are written out from their own memory.
    model_frames = np.ascontiguousarray(frames[model][:, :, :count].numpy(), dtype=np.float32)
    output = frames[(width, height)][0, :, :count].permute(1, 2, 3, 0)  # (F, h, w, 3)
    output = ((output + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    del frames
    for kind, array in (("video", model_frames), ("video_output", np.ascontiguousarray(output))):
        blobs.append(array.data.cast("B"))
        items.append({"kind": kind, "name": "video", "shape": list(array.shape), "bytes": array.nbytes})
    del model_frames, output
    items.append({"kind": "video_info", "name": "video", "bytes": 0, "info": {
        "width": width, "height": height, "fps": fps, "num_frames": count, "has_audio": info.has_audio,
        "source": f"{info.width}x{info.height} at {info.fps:g} fps"}})
    if info.has_audio:  # its soundtrack, read from the same bytes as an audio file
        for target, rate in (("audio_for_vae", task["vae_rate"]), ("audio_for_output", task["output_rate"])):
            wave = np.ascontiguousarray(load_audio(data, "video", None, limits, rate), dtype=np.float32)
            blobs.append(wave.tobytes())
            items.append({"kind": "audio", "name": target, "shape": list(wave.shape), "bytes": len(blobs[-1])})
    return None


def _reference(data: bytes, mime: str | None, bounds, spec: VideoTask, fps: int, wanted: int, model: tuple[int, int],
               size: tuple[int, int], info, items: list, blobs: list) -> dict:
    """An IC-LoRA's reference video: its frames fitted straight to the reference size (ltx-pipelines'
    video_preprocess, from the source frame, not from a larger copy), subsampled in time as the LoRA was trained
    (frame 0, then every `temporal`-th), and for control "canny" replaced by their edges. Its soundtrack is not
    read: the output's audio is generated (or comes from the request's audio)."""
    from ..schema import FRAME_MIN, InvalidRequest
    from .video_in import decode_frames

    num, den = spec.reference
    ref = tuple(side * num // den for side in model)
    frames, _ = decode_frames(data, "video", mime, bounds, fps, wanted, (ref,))
    pixels = frames[ref]
    count = pixels.shape[2]
    if spec.num_frames is not None and count < spec.num_frames:
        raise InvalidRequest("num_frames", f"video has {count} frames at {fps} fps ({count / fps:g} s), fewer than "
                                           f"num_frames {spec.num_frames}: lower num_frames or leave it out")
    count = (count - 1) // 8 * 8 + 1
    if count < FRAME_MIN:
        raise InvalidRequest("video", f"video is too short: it has {pixels.shape[2]} frames at {fps} fps, and video "
                                      f"to video needs at least {FRAME_MIN}")
    pixels = pixels[:, :, :count]
    if spec.temporal > 1:  # ltx-pipelines' temporal_subsample: VAE-aligned, frame 0 then every Nth
        pixels = pixels[:, :, [0, *range(1, count, spec.temporal)]]
    if spec.control == "canny":
        pixels = canny(pixels)
    array = np.ascontiguousarray(pixels.numpy(), dtype=np.float32)
    del frames, pixels
    blobs.append(array.data.cast("B"))
    items.append({"kind": "video", "name": "video", "shape": list(array.shape), "bytes": array.nbytes})
    items.append({"kind": "video_info", "name": "video", "bytes": 0, "info": {
        "width": size[0], "height": size[1], "fps": fps, "num_frames": count, "has_audio": info.has_audio,
        "source": f"{info.width}x{info.height} at {info.fps:g} fps", "reference": list(ref),
        "temporal": spec.temporal, "control": spec.control}})
    subsampled = 1 + len(range(1, count, spec.temporal))  # the frames kept above
    t_ratio, s_ratio = spec.vae
    return {"fps": fps, "frames": count, "size": tuple(side * spec.downscale for side in ref),
            "latent": ((subsampled - 1) // t_ratio + 1, ref[1] // s_ratio, ref[0] // s_ratio), "dtype": spec.mask_dtype}


def canny(pixels: torch.Tensor) -> torch.Tensor:
    """(1, 3, F, H, W) in [-1, 1] -> each frame's Canny edges (OpenCV, on its grey level, thresholds
    ltx2.video_to_video.CANNY_LOW/HIGH) as white on black in all three channels, in [-1, 1]."""
    import cv2

    from ..video_to_video import CANNY_HIGH, CANNY_LOW

    rgb = ((pixels[0].permute(1, 2, 3, 0) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()  # (F, H, W, 3)
    edges = np.stack([cv2.Canny(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), CANNY_LOW, CANNY_HIGH) for frame in rgb])
    out = torch.from_numpy(edges).to(torch.float32) / 127.5 - 1.0  # (F, H, W)
    return out[None, None].expand(1, 3, *out.shape).contiguous()


def _child_main(memory_bytes: int, cpu_seconds: int) -> None:
    from ..video_to_video import MASK_FIELD
    from . import attention_mask
    from .conditioning_image import prepare_image
    from .fetch import fetch, is_url
    from .inputs import decode_base64_field, load_audio

    _limit_self(memory_bytes, cpu_seconds)
    task = json.loads(sys.stdin.buffer.read())  # waits here, limited, until there is work
    limits, policy = InputLimits(**task["limits"]), FetchPolicy(**task["policy"])
    targets = ImageTargets.from_json(task["targets"])
    torch.set_num_threads(task.get("threads", 1))
    items, blobs, name, frame, reference = [], [], "input", None, None
    # image_start first: under video_size "auto" its aspect ratio sets the frame image_end is fitted to. The
    # attention mask last: it is read at the reference video's frames and grid.
    order = sorted(task["inputs"], key=lambda n: (n != "image_start", n == MASK_FIELD))
    try:
        for name in order:
            value = task["inputs"][name]
            print(FIELD_MARK + name, file=sys.stderr, flush=True)
            kind = name if name in ("audio", "video") else "video" if name == MASK_FIELD else "image"
            max_bytes = {"audio": limits.max_audio_bytes, "video": limits.max_video_bytes}.get(kind,
                                                                                               limits.max_image_bytes)
            data, mime = fetch(value, name, max_bytes, policy) if is_url(value) else \
                decode_base64_field(value, name, max_bytes, kind)
            if name == MASK_FIELD:
                mask = attention_mask.decode(data, mime, limits.video(), reference)
                blobs.append(mask.data.cast("B"))
                items.append({"kind": "attention_mask", "name": name, "shape": list(mask.shape), "bytes": mask.nbytes})
            elif kind == "video":
                reference = _video(data, mime, limits, VideoTask(**task["video"]), task, items, blobs)
            elif kind == "image":
                image = prepare_image(data, name, mime, limits, targets, frame)
                if name == "image_start":
                    frame = targets.frame(image.size)
                items.append({"kind": "image", "name": name, "size": list(image.size), "crf": image.crf, "bytes": 0})
                for (width, height), pixels in image.pixels.items():
                    blobs.append(pixels.numpy().tobytes())
                    items.append({"kind": "pixels", "name": name, "at": [width, height], "bytes": len(blobs[-1])})
                if image.preview is not None:
                    blobs.append(image.preview.tobytes())
                    items.append({"kind": "preview", "name": name, "side": image.preview.size[0],
                                  "bytes": len(blobs[-1])})
                del image
            else:
                for target, rate in (("audio_for_vae", task["vae_rate"]), ("audio_for_output", task["output_rate"])):
                    wave = np.ascontiguousarray(load_audio(data, name, mime, limits, rate), dtype=np.float32)
                    blobs.append(wave.tobytes())
                    items.append({"kind": "audio", "name": target, "shape": list(wave.shape), "bytes": len(blobs[-1])})
                    del wave
            del data
    except InvalidRequest as exc:
        header = {"error": {"field": exc.field, "message": exc.message, "status": exc.status}}
        blobs = []
    except MemoryError:
        header = {"error": {"field": name, "status": 413, "message": (
            f"{name} needs more than {memory_bytes / MB:g} MB of memory to decode (LTX2_DECODE_MEMORY_MB); "
            "send a smaller file")}}
        blobs = []
    else:
        header = {"items": items}
    out = sys.stdout.buffer
    out.write(json.dumps(header).encode() + b"\n")
    for blob in blobs:
        out.write(blob)
    out.flush()


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), int(sys.argv[2]))
