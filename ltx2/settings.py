"""Settings: environment variables, overridable by command-line flags. One place lists them all."""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass


@dataclass
class Settings:
    model: str = "tiny"
    host: str = "0.0.0.0"
    port: int = 8000
    device: str | None = None  # None: cuda if available, else cpu
    log_level: str = "info"

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = os.environ if env is None else env
        return cls(
            model=env.get("LTX2_MODEL", cls.model),
            host=env.get("LTX2_HOST", cls.host),
            port=int(env.get("LTX2_PORT", cls.port)),
            device=env.get("LTX2_DEVICE") or None,
            log_level=env.get("LTX2_LOG_LEVEL", cls.log_level),
        )


ENV_HELP = {
    "model": "LTX2_MODEL",
    "host": "LTX2_HOST",
    "port": "LTX2_PORT",
    "device": "LTX2_DEVICE",
    "log_level": "LTX2_LOG_LEVEL",
}


def add_arguments(parser: argparse.ArgumentParser, defaults: Settings) -> None:
    parser.add_argument("--model", default=defaults.model, help=f"model to load: 'tiny' (env {ENV_HELP['model']})")
    parser.add_argument("--host", default=defaults.host, help=f"address to bind (env {ENV_HELP['host']})")
    parser.add_argument("--port", type=int, default=defaults.port, help=f"port (env {ENV_HELP['port']})")
    parser.add_argument("--device", default=defaults.device, help=f"torch device, e.g. cuda:0 (env {ENV_HELP['device']})")
    parser.add_argument("--log-level", dest="log_level", default=defaults.log_level,
                        help=f"debug, info, warning (env {ENV_HELP['log_level']})")


def parse_settings(argv: list[str] | None = None, prog: str | None = None) -> Settings:
    defaults = Settings.from_env()
    parser = argparse.ArgumentParser(prog=prog, description="Serve LTX-2 video+audio generation over HTTP.")
    add_arguments(parser, defaults)
    args = parser.parse_args(argv)
    return Settings(**vars(args))


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
