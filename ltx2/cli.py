"""The `ltx2` command: `ltx2 serve`, `ltx2 worker`, `ltx2 generate`, `ltx2 download`."""

from __future__ import annotations

import argparse
import errno
import math
import os
import socket
import sys

from . import cli_generate, cli_train
from .models.download import add_arguments as add_download_arguments
from .settings import ENV, Settings, add_arguments, configure_logging, parse_replicas, settings_from_args


def check_port(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on (in use, not this machine's address, no permission), or None.
    Bound and released as uvicorn binds it (SO_REUSEADDR), before anything is imported or loaded: with
    real weights the load takes minutes, and uvicorn would only find the port taken after it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return (f"port {port} on {host} is already in use (another server is listening there); stop it, "
                    "or choose another port with --port or LTX2_PORT")
        return f"cannot listen on {host}:{port}: {exc.strerror or exc} (--host/LTX2_HOST, --port/LTX2_PORT)"
    return None


def serve(settings: Settings, ray: bool = False) -> None:
    if (problem := check_port(settings.host, settings.port)) is not None:
        print(f"ltx2: cannot start: {problem}", file=sys.stderr)
        sys.exit(1)
    import uvicorn

    from .serving.app import SHUTDOWN_ANSWER_SLACK, create_app
    from .serving.connections import uvicorn_config

    from .serving.storage import check_storage_at_start
    from .serving.job_store import StorageError

    configure_logging(settings)
    devices: list[str] = []
    if settings.devices:  # one worker process per device, or per rank group (ltx2.serving.device_workers)
        from dataclasses import replace

        from .serving.device_workers import DevicesError, worker_devices

        try:
            devices = worker_devices(settings)
        except (DevicesError, ValueError) as exc:
            print(f"ltx2: cannot start: {exc}", file=sys.stderr)
            sys.exit(1)
        if len(devices) == 1:  # one device: in-process
            settings = replace(settings, device=devices[0], devices="")
    if settings.parallel and not devices:  # one rank group, this process its leader: its followers join first
        from .pipelines import rank_group

        try:
            settings, _ = rank_group.start(settings)
        except (ValueError, RuntimeError) as exc:
            print(f"ltx2: cannot start: {exc}", file=sys.stderr)
            sys.exit(1)
    try:
        # Before the model loads (minutes for the 19B): a full disk or an unreadable database is one line.
        check_storage_at_start(settings.output_dir, database=settings.database)
    except StorageError as exc:
        try:
            disk = os.statvfs(settings.output_dir)
            free = f"; {disk.f_bavail * disk.f_frsize / 1e6:.1f} MB free on its disk"
        except OSError:
            free = ""
        print(f"ltx2: cannot start: could not {exc.action} under {settings.output_dir} ({exc.reason}{free}); "
              "nothing was moved or deleted: fix the storage and start again", file=sys.stderr)
        sys.exit(1)
    if ray:  # the API and Generation as Ray Serve deployments (README "Many machines")
        from .serving.ray_app import serve_ray

        serve_ray(settings)
        return
    app = create_app(settings)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            app.state.ltx2.begin_shutdown()  # refuse new jobs from this moment; the running one finishes
            super().handle_exit(sig, frame)

    # uvicorn with every connection limit in place (header size and time, body rate, keep-alive, cap).
    # uvicorn cuts open connections SHUTDOWN_ANSWER_SLACK after the grace: a waiting /generate is answered
    # (in JSON) a moment before the grace ends, and a loaded machine may take seconds to send it.
    config = uvicorn_config(app, settings,
                            timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + SHUTDOWN_ANSWER_SLACK)
    Server(config).run()


WORKER_HELP = """\
usage: ltx2 worker [RunPod SDK flags]

Run the RunPod serverless worker: load the model once (the LTX2_* environment variables; `ltx2 serve --help`
lists them), then hand each job's input (the body of POST /generate) to the RunPod SDK's loop. On RunPod it
takes jobs from the platform; on your machine the SDK's own flags run it locally:

  LTX2_MODEL=tiny ltx2 worker --test_input '{"input": {"prompt": "a cat", "num_frames": 9}}'
      one job, printed, then exit (`python handler.py` reads test_input.json)
  LTX2_MODEL=tiny ltx2 worker --rp_serve_api --rp_api_port 8010
      RunPod's job API on http://localhost:8010: POST /run, POST /runsync, POST /status/{id}

The RunPod SDK's flags (read by the SDK, not by ltx2):
"""


def worker_help() -> str:
    """WORKER_HELP and the flags the installed RunPod SDK reads, from its own parser, so they never drift."""
    try:
        from runpod.serverless import parser as sdk
    except Exception as exc:  # noqa: BLE001 - help must print whatever the SDK does
        return WORKER_HELP + f"  (the RunPod SDK could not be imported: {exc})"
    formatter = argparse.HelpFormatter("ltx2 worker")
    formatter.add_arguments([a for a in sdk._actions if a.option_strings and "--help" not in a.option_strings])
    return WORKER_HELP + formatter.format_help().rstrip()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(prog="ltx2", description="LTX-2 video+audio generation server")
    sub = parser.add_subparsers(dest="command", required=True)

    p_serve = sub.add_parser("serve", help="run the HTTP server")
    add_arguments(p_serve, defaults)
    on_ray = p_serve.add_argument_group("Ray Serve (pip install 'ltx2[ray]'; README \"Many machines\")")
    on_ray.add_argument("--ray", action="store_true",
                        help="serve as a Ray Serve application: the API in front of generation replicas, on the "
                             "cluster of RAY_ADDRESS or a local one")
    on_ray.add_argument("--replicas", "--ray-replicas", dest="ray_replicas", default=defaults.ray_replicas,
                        help=f"with --ray: generation replicas, N or MIN-MAX (env {ENV['ray_replicas']})")
    on_ray.add_argument("--min-replicas", dest="min_replicas", type=int, default=None,
                        help="with --ray: the fewest generation replicas the autoscaler keeps")
    on_ray.add_argument("--max-replicas", dest="max_replicas", type=int, default=None,
                        help="with --ray: the most generation replicas the autoscaler starts (one per GPU)")

    sub.add_parser("worker", help="run the RunPod serverless worker (reads LTX2_* env variables)", add_help=False)

    p_gen = sub.add_parser("generate", help="generate one video to a file, no server", allow_abbrev=False,
                           description="Generate one video to a file with the model loaded here (no server).\n"
                                       "Every field of the API's request is a flag.")
    cli_generate.add_arguments(p_gen, defaults)

    p_train = sub.add_parser("train", help="train a LoRA on a running server from a zip of captioned clips",
                             description=cli_train.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli_train.add_arguments(p_train)

    p_dl = sub.add_parser("download", help="fetch the official LTX-2 checkpoint and Gemma 3 into --models-dir")
    add_download_arguments(p_dl, defaults)

    args, rest = parser.parse_known_args(argv)
    if args.command in ("worker", "generate") and defaults.parallel:
        # A rank group is served by `ltx2 serve` alone: say so rather than run on one device unasked.
        print(f"ltx2 {args.command}: LTX2_PARALLEL={defaults.parallel!r} is for `ltx2 serve` (a rank group as its "
              "worker); unset it here", file=sys.stderr)
        sys.exit(2)
    if args.command == "worker":
        if {"-h", "--help"} & set(rest):
            print(worker_help())
            return
        from .serving.worker import main as worker_main

        sys.argv = [sys.argv[0], *rest]  # the RunPod SDK parses its own flags (--test_input ...)
        worker_main()
        return
    if rest and args.command == "generate":
        cli_generate.reject_unknown(p_gen, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "download":
        from .models.download import main as download_main

        download_main(args)
        return
    if args.command == "generate":
        cli_generate.run(args, defaults)
        return
    if args.command == "train":
        cli_train.run(args)
        return
    if args.command == "serve" and (args.min_replicas is not None or args.max_replicas is not None):
        low = args.min_replicas if args.min_replicas is not None else 1
        args.ray_replicas = f"{low}-{args.max_replicas if args.max_replicas is not None else max(low, 1)}"
    settings = settings_from_args(args, defaults)
    if args.command == "serve":
        if not args.ray and (args.ray_replicas != defaults.ray_replicas or args.min_replicas is not None
                             or args.max_replicas is not None):
            parser.error("--replicas, --min-replicas and --max-replicas need --ray")
        if args.ray:
            try:
                parse_replicas(settings.ray_replicas)
            except ValueError as exc:
                parser.error(str(exc))
            if settings.parallel or settings.devices:
                parser.error("--ray runs one device per generation replica; --parallel and --devices are for one box")
        serve(settings, ray=args.ray)


if __name__ == "__main__":
    main()
