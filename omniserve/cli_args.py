"""CLI flags for every engine config field, generated from the config dataclasses (one flag per field).

    --block-size 16  ->  EngineConfig.cache.block_size
Booleans take `--enable-prefix-caching` / `--no-enable-prefix-caching`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from omniserve.config import CacheConfig, DeviceConfig, EncoderConfig, ModelConfig, SchedulerConfig

_GROUPS = (ModelConfig, CacheConfig, SchedulerConfig, DeviceConfig, EncoderConfig)


def _field_type(owner: type, field: dataclasses.Field) -> type:
    hint = typing.get_type_hints(owner)[field.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def add_engine_arguments(parser: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    for owner in _GROUPS:
        group = parser.add_argument_group(owner.__name__)
        for field in dataclasses.fields(owner):
            if field.name in skip:
                continue
            flag = "--" + field.name.replace("_", "-")
            kind = _field_type(owner, field)
            if kind is bool:
                group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
            else:
                group.add_argument(flag, type=kind, default=None, metavar=field.name.upper())


def engine_kwargs_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags the user gave: the dataclass defaults stay the single source of defaults."""
    names = {f.name for owner in _GROUPS for f in dataclasses.fields(owner)}
    return {name: value for name, value in vars(args).items() if name in names and value is not None}
