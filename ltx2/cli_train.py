"""`ltx2 train`: train a LoRA on a running server from a zip of captioned clips, with progress.

The training runs where the model is (the server's device, in turns with its video jobs); this command
uploads the dataset, prints step, loss and ETA as the server reports them, and ends when the LoRA is
written to the server's <models dir>/loras/<name>.safetensors, ready for `loras` on the next request.
Ctrl-C cancels the training; its last checkpoint stays.
"""

from __future__ import annotations

import argparse
import os
import sys

FIELDS = (  # flag, type, help (the server's defaults apply to what is left out)
    ("mode", str, "t2v (default) or i2v (the first frame given, half of the steps)"),
    ("rank", int, "LoRA rank (default 32)"),
    ("alpha", float, "LoRA alpha (default: the rank)"),
    ("steps", int, "optimisation steps (default 2000)"),
    ("learning_rate", float, "AdamW learning rate (default 1e-4)"),
    ("resolution", str, "WxH each clip is fitted to (default 768x512)"),
    ("num_frames", int, "frames per clip, 8k+1 (default 49)"),
    ("trigger", str, "a word put before every caption"),
    ("checkpoint_every", int, "steps between checkpoints (default 250)"),
    ("validation_prompt", str, "recorded in the LoRA's metadata"),
    ("seed", int, "seed of every draw (default 42)"),
    ("memory_mode", str, "auto (default), full or low_vram"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True,
                        help="a local .zip of clips with a .txt caption each (uploaded), an http(s) URL of one, or "
                             "the name of a zip or folder under the server's <models dir>/datasets/")
    parser.add_argument("--name", required=True, help="the LoRA's name: <models dir>/loras/<name>.safetensors")
    parser.add_argument("--server", default=os.environ.get("LTX2_SERVER", "http://127.0.0.1:8000"),
                        help="the ltx2 server (default $LTX2_SERVER or http://127.0.0.1:8000)")
    parser.add_argument("--api-key", default=os.environ.get("LTX2_API_KEY"), help="its API key (default $LTX2_API_KEY)")
    for name, kind, text in FIELDS:
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=text)


def run(args: argparse.Namespace) -> None:
    from .client import APIError, Client

    fields = {name: getattr(args, name) for name, _, _ in FIELDS if getattr(args, name) is not None}
    last = {"line": None}

    def show(t: dict) -> None:
        if t.get("stage") == "training" and t.get("step"):
            eta = t.get("eta_seconds")
            line = (f"step {t['step']}/{t['steps']}  loss {t['loss']:.4f}"
                    + (f"  ETA {eta:.0f} s" if eta is not None else ""))
        else:
            line = f"{t.get('status')}: {t.get('stage')}" + (f" (position {t['position']})" if t.get("position") else "")
        if line != last["line"]:
            print(line, file=sys.stderr, flush=True)
            last["line"] = line

    with Client(args.server, api_key=args.api_key, timeout=60) as client:
        try:
            done = client.train(args.dataset, args.name, on_progress=show, **fields)
        except APIError as exc:
            body = exc.body if isinstance(exc.body, dict) else {"error": str(exc.body)}
            error = body.get("error")
            message = error.get("message") if isinstance(error, dict) else error
            sys.exit(f"ltx2 train: {message or body} (HTTP {exc.status})")
        except KeyboardInterrupt:
            sys.exit("ltx2 train: cancelled; the last checkpoint stays on the server")
    lora = done.get("lora") or {}
    print(f"LoRA {lora.get('name')} trained ({lora.get('steps')} steps): use it with "
          f"\"loras\": [{{\"path\": \"{lora.get('name')}\"}}]")
