"""`ltx2 download`: fetch a family's official checkpoint, its x2 spatial upsampler (two-stage pipeline) and
the Gemma 3 text encoder into the models directory, under the official names (`--family`: LTX-2 19B or
LTX-2.3; each family's names are in its description, ltx2.models.families).

Run once with internet access; afterwards the server loads everything from disk with HF_HUB_OFFLINE=1.
huggingface_hub does the transfers, so a second run only asks the hub for metadata and skips complete files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing

from ..settings import DEFAULT_GEMMA_NAME, ENV, Settings, add_directory_arguments
from . import families

# What `ltx2 download` fetches with no --family: Lightricks' recommended model.
DEFAULT_FAMILY = "ltx-2.5"
# LTX-2 19B's repository and files (the 19B camera LoRAs and the distilled LoRA's constant below are its too).
CHECKPOINT_REPO = families.by_name("ltx-2").files.repo
CHECKPOINTS = families.by_name("ltx-2").files.checkpoints
GEMMA_REPO = f"google/{DEFAULT_GEMMA_NAME}"
# From the family's description, not models.upsampler: that imports torch and diffusers (seconds), and
# `ltx2 --help` imports this module.
UPSAMPLER_FILE = families.by_name("ltx-2").files.upsampler

# Lightricks' LTX-2 19B LoRAs (LTX-2 repository's model list). They go to <models dir>/loras/.
LORAS_DIR = "loras"
# The distilled LoRA: the dev checkpoint's two-stage pipeline refines stage 2 with it.
DISTILLED_LORA = "ltx-2-19b-distilled-lora-384.safetensors"
# Camera control: one repository per move, named after it; the request's camera_lora values.
CAMERA_MOVES = ("dolly_in", "dolly_out", "dolly_left", "dolly_right", "jib_up", "jib_down", "static")


# The official IC-LoRAs of each family (video to video, the request's ic_lora), as the LTX-2 repository's model
# lists name them: (Hugging Face repository, file). `ltx2 download --ic-loras` fetches the --family's.
IC_LORAS = {
    "ltx-2": tuple((f"Lightricks/LTX-2-19b-IC-LoRA-{name}", f"ltx-2-19b-ic-lora-{name.lower()}.safetensors")
                   for name in ("Canny-Control", "Depth-Control", "Pose-Control", "Detailer")),
    "ltx-2.3": (("Lightricks/LTX-2.3-22b-IC-LoRA-Union-Control",
                 "ltx-2.3-22b-ic-lora-union-control-ref0.5.safetensors"),
                ("Lightricks/LTX-2.3-22b-IC-LoRA-Motion-Track-Control",
                 "ltx-2.3-22b-ic-lora-motion-track-control-ref0.5.safetensors"),
                ("Lightricks/LTX-2.3-22b-IC-LoRA-DubIt", "ltx-2.3-22b-ic-lora-dubit-0.9.safetensors")),
    "ltx-2.5": (("Lightricks/LTX-2.5-22b-IC-LoRA-Pixel-Spatial-Upscaler",
                 "ltx-2.5-22b-ic-lora-pixel-spatial-upscaler-x2-1.0.safetensors"),),
}


def camera_lora_file(move: str) -> str:
    """The official file of a camera move, e.g. dolly_in -> ltx-2-19b-lora-camera-control-dolly-in.safetensors."""
    return f"ltx-2-19b-lora-camera-control-{move.replace('_', '-')}.safetensors"


def camera_lora_repo(move: str) -> str:
    """Its Hugging Face repository, e.g. Lightricks/LTX-2-19b-LoRA-Camera-Control-Dolly-In."""
    return "Lightricks/LTX-2-19b-LoRA-Camera-Control-" + "-".join(w.capitalize() for w in move.split("_"))
GEMMA_LICENSE_URL = f"https://huggingface.co/{GEMMA_REPO}"

# Only what transformers needs to load Gemma 3 and its tokenizer/processor; anything else in the repo
# (README, other formats) is skipped. fnmatch semantics: "*" also crosses "/".
GEMMA_FILES = [
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template*",
    "preprocessor_config.json",
    "processor_config.json",
]

_TRUE = {"1", "on", "yes", "true"}


def checkpoint_filename(name: str, family: str = DEFAULT_FAMILY) -> str:
    """The official file for NAME of FAMILY, given with or without `.safetensors`."""
    filename = name if name.endswith(".safetensors") else f"{name}.safetensors"
    offered = families.by_name(family).files.checkpoints
    # LTX-2.5's files sit in folders (diffusion_models/...): the bare file name is enough.
    filename = next((path for path in offered if path.rsplit("/", 1)[-1] == filename), filename)
    if filename not in offered:
        known = ", ".join(c.rsplit("/", 1)[-1].removesuffix(".safetensors") for c in offered)
        raise ValueError(f"unknown checkpoint {name!r} for --family {family}; known: {known}")
    return filename


def _family_arg(name: str) -> str:
    try:
        return families.by_name(name).name
    except ValueError as exc:  # argparse only shows the message of an ArgumentTypeError
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    parser.description = parser.description or (
        f"Download a model family's official files (LTX-2.5 by default: its transformer, Gemma 4 text encoder, "
        f"VAEs and duration head; LTX-2.3 and LTX-2 19B: a checkpoint and the Gemma 3 text encoder, {GEMMA_REPO}) "
        f"into --models-dir, so the server can run offline. Gemma is gated: accept Google's license at "
        f"{GEMMA_LICENSE_URL} and pass a token with --token or HF_TOKEN. Re-running skips complete files.")
    add_directory_arguments(parser, defaults)  # the same layout the loader reads
    parser.add_argument("--family", type=_family_arg, default=DEFAULT_FAMILY,
                        help=f"which model family: {', '.join(families.FAMILIES)} (default {DEFAULT_FAMILY})")
    parser.add_argument("--checkpoint", default=None,
                        help="which official file of the family; " + "; ".join(
                            f"{f.name}: " + ", ".join(c.rsplit("/", 1)[-1].removesuffix(".safetensors")
                                                      for c in f.files.checkpoints)
                            for f in families.FAMILIES.values()) + " (default: the first)")
    parser.add_argument("--token", default=None,
                        help="Hugging Face token for the gated Gemma repo; default: env HF_TOKEN or `hf auth login`")
    parser.add_argument("--skip-checkpoint", action="store_true", help="don't download the LTX-2 checkpoint")
    parser.add_argument("--skip-gemma", action="store_true", help="don't download Gemma 3")
    parser.add_argument("--camera-loras", action="store_true",
                        help=f"also fetch Lightricks' seven LTX-2 19B camera-control LoRAs into <models-dir>/{LORAS_DIR}/ "
                             "(for the request field camera_lora)")
    parser.add_argument("--ic-loras", action="store_true",
                        help=f"also fetch the family's official IC-LoRAs (video to video, the request field ic_lora) "
                             f"into <models-dir>/{LORAS_DIR}/: " + "; ".join(
                                 f"{name}: " + ", ".join(file for _, file in files)
                                 for name, files in IC_LORAS.items()))
    parser.add_argument("--distilled-lora", action="store_true",
                        help=f"also fetch the family's distilled LoRA ({DISTILLED_LORA} for ltx-2) into "
                             f"<models-dir>/{LORAS_DIR}/ (the dev checkpoint's two-stage pipeline refines its second "
                             "stage with it)")
    parser.add_argument("--skip-upsampler", action="store_true",
                        help=f"don't download the two-stage pipeline's x2 spatial upsampler ({UPSAMPLER_FILE} for "
                             "ltx-2)")


def offline_mode() -> bool:
    # Read at call time (huggingface_hub reads it once, at import) and with the same two variables it honours.
    return any(os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def lift_offline_mode() -> None:
    """The Docker image sets HF_HUB_OFFLINE=1 so that serving never downloads. This command exists to
    download, so it lifts the flag for its own process only (the environment outside is unchanged)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "0"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = False  # read once at import, then checked per request
    print("HF_HUB_OFFLINE is set (so that serving never downloads); lifted for this download only.", flush=True)


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status behind an error; huggingface_hub sometimes wraps the HTTP error in another one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        response = getattr(exc, "response", None)
        if response is not None and getattr(response, "status_code", None):
            return response.status_code
        exc = exc.__cause__ or exc.__context__
    return None


def _fail(what: str, repo_id: str, exc: Exception) -> SystemExit:
    status = _http_status(exc)
    if status in (401, 403):
        hint = (f"the Hugging Face Hub refused access to {repo_id} (HTTP {status}). "
                f"Accept the license at https://huggingface.co/{repo_id} while logged in, create a read token at "
                "https://huggingface.co/settings/tokens, and pass it with --token or the HF_TOKEN environment "
                "variable.")
        if repo_id == GEMMA_REPO:
            hint += " Gemma is gated: Google's license must be accepted by the account that owns the token."
        first_line = next((line for line in str(exc).splitlines() if line.strip()), "")
        return SystemExit(f"ltx2 download: {what}: {hint}\n({type(exc).__name__}: {first_line})")
    return SystemExit(f"ltx2 download: {what} failed: {type(exc).__name__}: {exc}")


def hf_hub_download(*args, **kwargs) -> str:
    from huggingface_hub import hf_hub_download as download  # imported late: the CLI starts without it

    return download(*args, **kwargs)


def download_checkpoint(filename: str, models_dir: str, token: str | None, repo: str = CHECKPOINT_REPO) -> str:
    try:
        return hf_hub_download(repo, filename, local_dir=models_dir, token=token)
    except OSError as exc:  # HfHubHTTPError, LocalEntryNotFoundError and disk errors are all OSErrors
        raise _fail(f"downloading {repo}/{filename}", repo, exc) from exc


def download_gemma(gemma_dir: str, token: str | None) -> str:
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(GEMMA_REPO, local_dir=gemma_dir, allow_patterns=GEMMA_FILES, token=token)
    except OSError as exc:
        raise _fail(f"downloading {GEMMA_REPO}", GEMMA_REPO, exc) from exc
    # When the hub can't be reached or refuses to list the repo, snapshot_download returns an existing
    # non-empty local_dir with only a warning, so check that what is there can actually be loaded.
    missing = missing_gemma_files(path)
    if missing:
        raise SystemExit(f"ltx2 download: {path} is incomplete, missing {', '.join(missing)}. If a warning above "
                         "says the hub couldn't be reached or refused access, fix that (network, --token/HF_TOKEN, "
                         f"license at {GEMMA_LICENSE_URL}) and run `ltx2 download` again.")
    return path


def missing_gemma_files(path: str) -> list[str]:
    """Files loading Gemma needs that are absent from PATH (config, tokenizer, every weight shard).

    Presence only: text_encoder.validate_gemma_dir does the thorough check when the server loads.
    """
    def has(name: str) -> bool:
        return os.path.isfile(os.path.join(path, name))

    missing = [name for name in ("config.json", "tokenizer_config.json") if not has(name)]
    if not (has("tokenizer.json") or has("tokenizer.model")):
        missing.append("tokenizer.json")
    if has("model.safetensors.index.json"):
        with open(os.path.join(path, "model.safetensors.index.json")) as fh:
            shards = sorted(set(json.load(fh).get("weight_map", {}).values()))
        missing += [s for s in shards if not has(s)]
    elif not has("model.safetensors"):
        missing.append("model.safetensors.index.json")
    return missing


def _usage_error(message: str) -> typing.NoReturn:
    """A flag that doesn't fit the family: one line and exit 2, as argparse answers, before any download."""
    print(f"ltx2 download: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(args: argparse.Namespace) -> None:
    extras = getattr(args, "camera_loras", False) or getattr(args, "distilled_lora", False) or \
        getattr(args, "ic_loras", False)
    skip_upsampler = getattr(args, "skip_upsampler", False)
    if args.skip_checkpoint and args.skip_gemma and skip_upsampler and not extras:
        raise SystemExit("ltx2 download: nothing to do with --skip-checkpoint, --skip-gemma and --skip-upsampler")
    models_dir = os.path.abspath(os.path.expanduser(args.models_dir))
    gemma_dir = os.path.abspath(os.path.expanduser(args.gemma_dir or os.path.join(models_dir, DEFAULT_GEMMA_NAME)))
    family = families.by_name(getattr(args, "family", None) or DEFAULT_FAMILY)
    files = family.files
    try:  # also validates names set by callers other than argparse
        filename = checkpoint_filename(args.checkpoint or files.checkpoints[0], family.name)
    except ValueError as exc:
        _usage_error(f"--checkpoint: {exc}")
    if getattr(args, "camera_loras", False) and not files.camera_loras:
        _usage_error(f"--camera-loras: Lightricks' camera-control LoRAs are LTX-2 19B's; none is published for "
                     f"{family.title}")
    if offline_mode():
        lift_offline_mode()

    env_lines = [f"{ENV['models_dir']}={models_dir}"]
    if not args.skip_checkpoint:
        print(f"Downloading {files.repo}/{filename} to {models_dir}", flush=True)
        path = download_checkpoint(filename, models_dir, args.token, files.repo)
        print(f"checkpoint: {path}", flush=True)
        env_lines.append(f"{ENV['model']}={path}")
    if not skip_upsampler:  # in the models directory, where the server's LTX2_UPSAMPLER=auto finds it
        print(f"Downloading {files.repo}/{files.upsampler} to {models_dir}", flush=True)
        path = download_checkpoint(files.upsampler, models_dir, args.token, files.repo)
        print(f"upsampler: {path}", flush=True)
    for part in files.parts if not args.skip_checkpoint else ():  # LTX-2.5: one file per component
        print(f"Downloading {files.repo}/{part} to {models_dir}", flush=True)
        path = download_checkpoint(part, models_dir, args.token, files.repo)
        print(f"component: {path}", flush=True)
    if files.gemma_repo is None:
        pass  # the text encoder came with the family's parts
    elif not args.skip_gemma:
        print(f"Downloading {GEMMA_REPO} to {gemma_dir}", flush=True)
        path = download_gemma(gemma_dir, args.token)
        print(f"gemma: {path}", flush=True)
        env_lines.append(f"{ENV['gemma_dir']}={path}")

    loras_dir = os.path.join(models_dir, LORAS_DIR)
    wanted = [(camera_lora_repo(m), camera_lora_file(m)) for m in CAMERA_MOVES] if getattr(args, "camera_loras", False) \
        else []
    if getattr(args, "distilled_lora", False):
        wanted.append((files.repo, files.distilled_lora))
    if getattr(args, "ic_loras", False):
        wanted.extend(IC_LORAS.get(family.name, ()))
    for repo, filename in wanted:
        # A file already in the repository's loras/ folder (LTX-2.5) keeps its path under the models directory.
        where = models_dir if filename.startswith(f"{LORAS_DIR}/") else loras_dir
        print(f"Downloading {repo}/{filename} to {where}", flush=True)
        try:
            path = hf_hub_download(repo, filename, local_dir=where, token=args.token)
        except OSError as exc:
            raise _fail(f"downloading {repo}/{filename}", repo, exc) from exc
        print(f"lora: {path}", flush=True)

    print("\nDone. To serve these files without network access, set:")
    for line in [*env_lines, "HF_HUB_OFFLINE=1"]:
        print(f"  {line}")
