"""`omniserve serve [MODEL]`: flags, then start the engine process, then the HTTP server.

Flags: every `ServerConfig` field (`--host`, `--port`, `--api-key`, `--max-upload-bytes`, ...) and every
engine config field (`--device`, `--dtype`, `--block-size`, ...; see `omniserve.cli_args`), one to one.
With no MODEL the built-in demo checkpoint is built locally (first run) and served.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from pathlib import Path
from typing import Any

from omniserve.api.server_config import ServerConfig

from omniserve.cli_args import add_engine_arguments, engine_kwargs_from_args

logger = logging.getLogger("omniserve")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model_positional",
        nargs="?",
        metavar="MODEL",
        default=None,
        help="HF id or local folder (same as --model); none = the built-in demo model",
    )
    group = parser.add_argument_group("ServerConfig")
    hints = typing.get_type_hints(ServerConfig)
    for field in dataclasses.fields(ServerConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = next((a for a in typing.get_args(hints[field.name]) if a is not type(None)), hints[field.name])
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            group.add_argument(flag, type=kind, default=None, metavar=field.name.upper())
    add_engine_arguments(parser)


def server_config_from_args(args: argparse.Namespace) -> ServerConfig:
    names = {field.name for field in dataclasses.fields(ServerConfig)}
    given = {name: value for name, value in vars(args).items() if name in names and value is not None}
    return ServerConfig(**given)


def engine_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    options = engine_kwargs_from_args(args)
    positional = getattr(args, "model_positional", None)
    if positional is not None:
        if options.get("model") not in (None, positional):
            raise ValueError(f"two models given: MODEL={positional!r} and --model={options['model']!r}")
        options["model"] = positional
    return options


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn
    from omniserve.api.app import build_app

    from omniserve.async_omni import AsyncOmni
    from omniserve.core.engine_process import EngineStartupError

    try:
        server_config = server_config_from_args(args)
        engine_options = engine_options_from_args(args)
        if server_config.file_storage_dir is not None:
            server_config = dataclasses.replace(
                server_config, file_storage_dir=Path(server_config.file_storage_dir)
            )
        async_omni = AsyncOmni(**engine_options)
    except (ValueError, TypeError, EngineStartupError) as error:
        print(f"omniserve: error: {error}", file=sys.stderr)
        return 2
    try:
        app = build_app(async_omni, server_config)
        config = uvicorn.Config(
            app,
            host=server_config.host,
            port=server_config.port,
            log_level=server_config.log_level,
            access_log=server_config.access_log,
            timeout_graceful_shutdown=5,
        )
        server = uvicorn.Server(config)
        display_host = "localhost" if server_config.host in ("0.0.0.0", "::") else server_config.host
        logger.info(
            "serving %r at http://%s:%d/v1 (OpenAI-compatible)%s",
            app.state.server.model_name,
            display_host,
            server_config.port,
            "; API key required" if server_config.api_key else "",
        )
        server.run()
    finally:
        async_omni.shutdown()
    return 0
