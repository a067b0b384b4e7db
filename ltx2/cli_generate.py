"""`ltx2 generate`: one video to a file, no server.

Its request flags are generated from `GenerateRequest`, so a field added to the model is a flag here
with no edit. Everything a user can get wrong (the flags, --request, input files, -o) is checked before
the model loads, and ends in the API's own message on one line with exit code 2. Progress (stage
names, then the denoising steps with an ETA) goes to stderr when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import base64
import difflib
import json
import os
import re
import sys
import tempfile
import time
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from .schema import GenerateRequest, VideoOutputType, validation_error_body
from .settings import Settings, add_model_arguments, add_serving_arguments, configure_logging, settings_from_args

PROG = "ltx2 generate"
# Request fields that are no flag: how the server delivers the file. The command always writes one.
NOT_FLAGS = ("response_format",)
# The serving settings one local generation uses (fetching image/audio URLs, LoRAs, prompt expansion);
# the others (host, port, queue, keys, ...) belong to a server and are not offered here.
GENERATE_SETTINGS = ("allow_private_urls", "url_timeout", "allow_lora_urls", "max_lora_mb", "prompt_expansion_tokens")
BOOLS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
DEST = "request."  # argparse dest prefix: a request field never collides with a setting's dest

EPILOG = """\
exit status: 0 the video was written; 2 bad input (a flag, --request, an input file or -o), reported before
anything is loaded, in the API's words; 1 the model failed to load or generation failed.
Progress goes to stderr when it is a terminal (not with --quiet); the response, without the video, is
printed to stdout as JSON."""


class UsageError(Exception):
    """A user's mistake: one line on stderr, exit code 2."""


def fail(message: str, code: int = 2) -> typing.NoReturn:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr)  # one line, whatever it held
    raise SystemExit(code)


# ------------------------------------------------------------------------------ flags from the model

@dataclass(frozen=True)
class RequestFlag:
    field: str
    kind: str  # bool, int, float, str, choice, json (lists, objects), file (a media field)
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


def _members(annotation: Any) -> list[Any]:
    if get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _is_media(info) -> bool:
    # A field the API takes as a data URI (its example says so) is a file on the command line.
    return any(isinstance(e, str) and e.startswith("data:") for e in info.examples or ())


def request_flags(model: type[BaseModel] = GenerateRequest) -> list[RequestFlag]:
    """One flag per field of the request model (but NOT_FLAGS), typed from its annotation."""
    flags = []
    for name, info in model.model_fields.items():
        if name in NOT_FLAGS:
            continue
        kinds = _members(info.annotation)
        kind, choices = "json", ()
        if len(kinds) == 1:
            t = kinds[0]
            if get_origin(t) is Literal:
                kind, choices = "choice", tuple(str(v) for v in get_args(t))
            elif t in (bool, int, float):
                kind = t.__name__
            elif t is str:
                kind = "file" if _is_media(info) else "str"
        flags.append(RequestFlag(name, kind, choices))
    return flags


def _aliases(choice: str) -> set[str]:
    # "VP9 (.webm)" is also "vp9" and "webm" on the command line.
    match = re.fullmatch(r"(\S+) \(\.(\w+)\)", choice)
    return {match[1].lower(), match[2].lower()} if match else set()


def _help(flag: RequestFlag, info) -> str:
    text = info.description or ""
    if flag.kind == "file":
        text += " On the command line: a file path (read and sent as base64), an http(s) URL or a data URI."
    if flag.kind == "choice" and any(_aliases(c) for c in flag.choices):
        text += " Also by the short names: " + ", ".join(sorted(a for c in flag.choices for a in _aliases(c))) + "."
    if flag.field == "retake":
        text += " On the command line also START:END in seconds, e.g. --retake 0.5:1.5."
    if flag.field == "extend":
        text += " On the command line also SECONDS: --extend 5 adds 5 s after the end, --extend -5 before the start."
    if flag.kind == "json":
        text += " As JSON" + (f", e.g. '{json.dumps(info.examples[0])}'." if info.examples else ".")
    if info.default is not None and not info.is_required() and info.default_factory is None:
        shown = json.dumps(info.default) if isinstance(info.default, bool) else info.default
        text += f" (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help with %


def add_request_arguments(parser: argparse.ArgumentParser, model: type[BaseModel] = GenerateRequest) -> None:
    group = parser.add_argument_group(
        "the request", "The API's request fields (the body of POST /generate; /docs explains each).\n"
        "A flag overrides the same field in --request.")
    group.add_argument("--request", metavar="JSON",
                       help="the whole request as JSON, or @FILE to read it from a file; flags given as well "
                            "override its fields (flags win)")
    for flag in request_flags(model):
        info = model.model_fields[flag.field]
        options: dict[str, Any] = {"dest": DEST + flag.field, "default": None, "help": _help(flag, info)}
        if flag.kind == "bool":  # --include-audio, --include-audio false, --no-include-audio
            options.update(nargs="?", const="true", metavar="true|false")
            options["help"] += f" {'--no-' + flag.flag[2:]} is {flag.flag} false."
            group.add_argument("--no-" + flag.flag[2:], dest=DEST + flag.field, action="store_const", const="false",
                               help=argparse.SUPPRESS)
        else:
            options["metavar"] = {"int": "N", "float": "X", "json": "JSON", "file": "FILE",
                                  "choice": "{" + ",".join(flag.choices) + "}"}.get(flag.kind, "TEXT")
            if flag.field == "retake":
                options["metavar"] = "START:END"
            if flag.field == "extend":
                options["metavar"] = "[-]SECONDS"
        # ic_lora's mask also by a shorter name
        aliases = ("--attention-mask",) if flag.field == "conditioning_attention_mask" else ()
        group.add_argument(flag.flag, *aliases, **options)
    if "keyframes" in model.model_fields:
        group.add_argument("--keyframe", metavar="IMAGE@FRAME[:STRENGTH]", dest=DEST + "keyframe", action="append",
                           help="An image held at a frame (repeatable, in order; added to keyframes): a file path, "
                                "http(s) URL or data URI, then @ and a frame number, or seconds with an s "
                                "(@1.2s), then optionally : and a strength 0..1. E.g. --keyframe "
                                "mid.png@24:0.8 --keyframe end.png@1.92s")


def keyframe_item(value: str) -> dict[str, Any]:
    """--keyframe IMAGE@FRAME[:STRENGTH] -> one item of keyframes (the image read as --image-start reads it)."""
    image, at, where = value.rpartition("@")
    if not at or not image:
        raise UsageError(f"--keyframe {value[:80]}: give IMAGE@FRAME[:STRENGTH], e.g. mid.png@24 or mid.png@0.96s:0.8")
    where, _, strength = where.partition(":")
    item: dict[str, Any] = {}
    try:
        if where.lower().endswith("s"):
            item["time"] = float(where[:-1])
        else:
            item["frame"] = int(where)
        if strength:
            item["strength"] = float(strength)
    except ValueError:
        raise UsageError(f"--keyframe {value[:80]}: after @ a frame number (24) or seconds (0.96s), then "
                         f"optionally :STRENGTH (0..1); got {'@' + where + (':' + strength if strength else '')!r}") from None
    item["image"] = read_input(RequestFlag("keyframe", "file"), image)
    return item


def _value(flag: RequestFlag, text: Any) -> Any:
    """A flag's text as the JSON value the API takes. Text that is no number stays text: the request
    model then refuses it with the API's message."""
    if flag.kind == "bool":
        return BOOLS.get(text.strip().lower(), text)
    if flag.kind in ("int", "float"):
        try:
            return int(text) if flag.kind == "int" else float(text)
        except ValueError:
            return text
    if flag.kind == "choice":
        if text in flag.choices:
            return text
        found = [c for c in flag.choices if text.strip().lower().lstrip(".") in {c.lower(), *_aliases(c)}]
        return found[0] if len(found) == 1 else text
    if flag.field == "retake" and (span := re.fullmatch(r"\s*([0-9.]+)\s*:\s*([0-9.]+)\s*", text)):
        try:  # --retake START:END in seconds, the short form of {"start": START, "end": END}
            return {"start": float(span[1]), "end": float(span[2])}
        except ValueError:
            pass  # "1.2.3:4": the JSON reading below says what is wrong
    if flag.field == "extend" and re.fullmatch(r"\s*-?[0-9]*\.?[0-9]+\s*", text):
        seconds = float(text)  # --extend SECONDS forward, --extend -SECONDS backward
        return {"seconds": abs(seconds), "direction": "backward" if seconds < 0 else "forward"}
    if flag.kind == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{flag.flag} is not valid JSON: {exc}") from None
    if flag.kind == "file":
        return read_input(flag, text)
    return text


def read_input(flag: RequestFlag, value: str) -> str:
    """A media flag's file, as the base64 the field takes; a URL or data URI is passed as it is."""
    if value[:5].lower() == "data:" or value[:8].lower().startswith(("http://", "https://")):
        return value
    from .media.inputs import InputLimits

    limits = InputLimits.from_env()
    # the field's own limit is checked later; a video has its own, larger one
    video = flag.field in ("video", "conditioning_attention_mask")
    largest = limits.max_video_bytes if video else max(limits.max_image_bytes, limits.max_audio_bytes)
    try:
        with open(value, "rb") as fh:
            data = fh.read(largest + 1)  # never more than any input may be
    except OSError as exc:
        raise UsageError(f"{flag.flag} {value}: cannot read the file: {exc.strerror or exc}") from None
    if len(data) > largest:
        raise UsageError(f"{flag.flag} {value}: the file is larger than any input may be "
                         f"({largest / 2**20:g} MB; "
                         f"{'LTX2_MAX_VIDEO_MB' if video else 'LTX2_MAX_IMAGE_MB, LTX2_MAX_AUDIO_MB'})")
    if not data:
        raise UsageError(f"{flag.flag} {value}: the file is empty")
    return base64.b64encode(data).decode("ascii")


def request_body(args: argparse.Namespace, model: type[BaseModel] = GenerateRequest) -> dict[str, Any]:
    """--request, then every flag given on top of it."""
    body: dict[str, Any] = {}
    if args.request is not None:
        text = args.request
        if text.startswith("@"):
            try:
                with open(text[1:], encoding="utf-8") as fh:
                    text = fh.read()
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"--request {args.request}: cannot read the file: "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            body = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--request is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise UsageError("--request must be a JSON object, like the body of POST /generate")
    for flag in request_flags(model):
        text = getattr(args, DEST + flag.field, None)
        if text is not None:
            body[flag.field] = _value(flag, text)
    for value in getattr(args, DEST + "keyframe", None) or ():
        if not isinstance(body.setdefault("keyframes", []), list):
            raise UsageError("--keyframe adds to keyframes, which --keyframes or --request gives as something "
                             "other than a list")
        body["keyframes"].append(keyframe_item(value))
    return body


# ----------------------------------------------------------------------------------------- output

# The extension of each video_output_type, read from its name ("VP9 (.webm)" -> .webm): the output
# checks need no import of the encoder (PyAV, numpy), so a mistake in -o is reported at once.
EXTENSIONS = {re.fullmatch(r".* \((\.\w+)\)", t)[1]: t for t in get_args(VideoOutputType)}
OUTPUT_TYPE_EXTENSION = {t: ext for ext, t in EXTENSIONS.items()}


def _known_extensions() -> str:
    names = list(EXTENSIONS)
    return ", ".join(names[:-1]) + " or " + names[-1]


def prepare(args: argparse.Namespace) -> tuple[GenerateRequest, str]:
    """The validated request and the checked output path; raises UsageError. Loads nothing.

    -o's extension picks the format; one that names no format we write (out.avi, or none) is refused
    rather than given an MP4 under a name that says otherwise."""
    body = request_body(args)
    named = None
    if args.output and not os.path.isdir(args.output):
        stem, ext = os.path.splitext(args.output)
        named = EXTENSIONS.get(ext.lower())
        if named is None:
            wanted = body.get("video_output_type")
            ext_hint = OUTPUT_TYPE_EXTENSION.get(wanted, ".mp4") if isinstance(wanted, str) else ".mp4"
            what = f"has the extension {ext}, which names no format written here" if ext else "has no extension"
            raise UsageError(f"-o {args.output} {what}: the extension picks the format ({_known_extensions()}); "
                             f"name it e.g. {(stem if ext else args.output) + ext_hint}")
        body.setdefault("video_output_type", named)  # -o cat.webm makes a WebM
    try:
        request = GenerateRequest.model_validate(body)
    except ValidationError as exc:
        raise UsageError(validation_error_body(list(exc.errors()))["error"]) from None
    extension = OUTPUT_TYPE_EXTENSION[request.video_output_type]
    if named is not None and named != request.video_output_type:
        raise UsageError(f"-o {args.output} names a {OUTPUT_TYPE_EXTENSION[named]} file but video_output_type is "
                         f"{request.video_output_type!r}; name it {extension}, or leave video_output_type out")
    path = args.output or f"output{extension}"
    if os.path.isdir(path):
        path = os.path.join(path, f"output{extension}")
    check_writable(path)
    return request, path


def check_writable(path: str) -> None:
    """That `path` can be written, by writing next to it: before any work, not after it."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"-o {path}: the directory {os.path.dirname(path)} does not exist")
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".ltx2-", suffix=".part")
    except OSError as exc:
        raise UsageError(f"-o {path}: cannot write in {os.path.dirname(path) or '.'}: {exc.strerror}") from None
    os.close(fd)
    os.unlink(probe)


def write_file(path: str, data: bytes) -> None:
    """Whole or not at all: an existing file of that name is replaced only by a complete one."""
    fd, part = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".ltx2-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(part, 0o666 & ~umask)  # as open() would have made it, not mkstemp's 0600
        os.replace(part, path)
    except BaseException:
        os.unlink(part)
        raise


# --------------------------------------------------------------------------------------- progress

def process_started() -> float:
    """The time.monotonic() at which this process started, so the progress clock counts the interpreter's
    start and the imports too (what the user waited for). Linux: /proc/self/stat's start time, in clock
    ticks since boot; elsewhere, now."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read().decode()
        ticks = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22; the name in () may hold spaces
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return time.monotonic()
    return time.monotonic() - max(0.0, age)


class Progress:
    """Stage lines, then a tqdm bar over the denoising steps (with its ETA), then one over each stage without
    steps (the video decode's blocks, the audio decode, the frames encoded), on `stream`; nothing when off.
    Its clock starts when the process started."""

    def __init__(self, enabled: bool, stream=None, started: float | None = None):
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.started = process_started() if started is None else started
        self._bar = None
        self._bar_stage: str | None = None

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:6.1f} s]"

    def stage(self, name: str) -> None:
        if self.enabled:
            self.close()
            print(f"{self._stamp()} {name}", file=self.stream, flush=True)

    def step(self, step: int, total: int) -> None:
        self.progress("denoising", step, total)

    def progress(self, stage: str, done: int, total: int) -> None:
        """`stage` is `done` of `total` of its units along (ltx2.pipelines.progress): one bar per stage."""
        if not self.enabled:
            return
        if self._bar is None or self._bar_stage != stage:
            # Made at the first report: `initial` keeps what was done before it out of the rate, so the ETA
            # is the stage's own pace (the denoising bar's is not the prompt encoding's).
            from tqdm import tqdm

            from .pipelines.progress import UNITS, WORDS

            self.close()
            columns, rows = self._size()
            self._bar = tqdm(total=total, initial=done, desc=f"{self._stamp()} {WORDS.get(stage, stage)}",
                             unit=UNITS.get(stage, "it"), file=self.stream, smoothing=0, ncols=columns, nrows=rows)
            self._bar_stage = stage
        else:
            self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def _size(self) -> tuple[int, int]:
        # A terminal that reports no size (0x0, as some ptys do) would make tqdm hide its bar.
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            return 80, 24
        return min(size.columns, 120) or 80, size.lines or 24

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar, self._bar_stage = None, None


# ------------------------------------------------------------------------------------------ command

def add_arguments(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_request_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", default=None, metavar="PATH",
                     help="the file to write; checked before anything runs. Its extension picks the format "
                          "when video_output_type is not given (.mp4, .webm, .mov, .gif). Default: output.<the "
                          "format's extension>; a directory: output.<ext> inside it")
    out.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    load = parser.add_argument_group("the model", "What to load and how (the same settings as `ltx2 serve`).")
    add_model_arguments(load, defaults)
    load.add_argument("--info", action="store_true",
                      help="load the model, print what was loaded as JSON (its family, variant, components, "
                           "defaults, memory) and exit: no prompt needed, nothing generated")
    add_serving_arguments(load, defaults, only=GENERATE_SETTINGS)
    # A mistake in a flag is one line, as every other mistake here (argparse would add its usage).
    parser.error = lambda message: fail(message)  # type: ignore[method-assign]


def reject_unknown(parser: argparse.ArgumentParser, rest: list[str]) -> typing.NoReturn:
    """`unrecognized arguments`, with the flag probably meant."""
    known = [o for a in parser._actions for o in a.option_strings if o.startswith("--") and a.help != argparse.SUPPRESS]
    settings = {f.name for f in fields(Settings)}

    def hint(arg: str, before: str) -> str:
        name = arg.split("=")[0]
        if name[2:].replace("-", "_") in settings and name.startswith("--"):
            return f"{arg} (a setting of `ltx2 serve`)"
        if not name.startswith("-"):  # the value of an unknown flag before it, or of none
            return arg if before.startswith("-") else f"{arg} (a value with no flag; the prompt is --prompt TEXT)"
        match = difflib.get_close_matches(name, known, 1)
        return f"{arg} (did you mean {match[0]}?)" if match else arg

    hints = [hint(arg, before) for arg, before in zip(rest, ["", *rest])]
    fail(f"unrecognized arguments: {' '.join(hints)}; `ltx2 generate --help` lists the flags")


def info(args: argparse.Namespace, defaults: Settings) -> None:
    """`--info`: the loaded model's description, as /health reports it."""
    from .models.loaded import load_from_settings

    try:
        settings = settings_from_args(args, defaults)
    except ValueError as exc:
        fail(str(exc))
    try:
        model = load_from_settings(settings)
    except Exception as exc:
        fail(f"the model failed to load: {exc}", 1)
    print(json.dumps(model.describe(), indent=2))


def run(args: argparse.Namespace, defaults: Settings) -> None:
    if args.info:
        info(args, defaults)
        return
    try:
        request, path = prepare(args)
        settings = settings_from_args(args, defaults)
        from .media.fetch import FetchPolicy
        from .pipelines.loras import LoraPolicy

        fetch_policy, lora_policy = FetchPolicy.from_settings(settings), LoraPolicy.from_settings(settings)
    except UsageError as exc:
        fail(str(exc))
    except ValueError as exc:  # a setting out of its range
        fail(str(exc))
    debug = settings.log_level.lower() == "debug"  # then the loader logs, and a failure keeps its traceback
    if debug:
        configure_logging(settings)
    progress = Progress(enabled=not args.quiet and sys.stderr.isatty())
    try:
        generate_to(path, request, settings, fetch_policy, lora_policy, progress, debug)
    except KeyboardInterrupt:
        progress.close()
        fail("interrupted", 130)
    finally:
        progress.close()


def generate_to(path: str, request: GenerateRequest, settings: Settings, fetch_policy, lora_policy,
                progress: Progress, debug: bool) -> None:
    from .models.loaded import load_from_settings
    from .pipelines.stages import OutputRejected
    from .schema import InvalidRequest
    from .serving.faults import is_out_of_memory, out_of_memory_body
    from .serving.service import render_mp4

    progress.stage(f"loading model {settings.model}")
    try:
        model = load_from_settings(settings)
    except Exception as exc:
        if debug:
            raise
        fail(f"the model failed to load: {exc} (--log-level debug shows the traceback)", 1)
    try:
        rendered = render_mp4(model, request, on_step=progress.step, fetch_policy=fetch_policy,
                              lora_policy=lora_policy, encode_threads=settings.encode_threads, on_stage=progress.stage,
                              on_progress=progress.progress)
    except InvalidRequest as exc:  # an input the API would refuse (an image that isn't one, a LoRA not found)
        fail(exc.message)
    except OutputRejected as exc:
        fail(str(exc), 1)
    except Exception as exc:
        if is_out_of_memory(exc):
            fail(out_of_memory_body(request, exc)["error"], 1)
        if debug:
            raise
        fail(f"generation failed: {type(exc).__name__}: {exc} (--log-level debug shows the traceback)", 1)
    progress.stage(f"writing {path}")
    write_file(path, rendered.data)
    progress.stage(f"done: {path}, {len(rendered.data) / 1e6:.2f} MB, {rendered.format.output_type}")
    progress.close()
    summary = rendered.response(video=path).model_dump(exclude={"video"})
    print(json.dumps({"output": path, **summary}, indent=2))
