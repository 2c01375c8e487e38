"""The command line every config-driven command shares: `--config FILE` and `key.sub=value`.

    parser = config_parser(__doc__, "YAML with a DataJobConfig")
    parser.add_argument(...)            # the command's own actions, if any (not settings)
    args = parse_config_args(parser, argv, DataJobConfig)  # a stray --flag: names the key
    cfg = config_from_args(parser, DataJobConfig, args)   # exits 2 with the problems

Settings live in the command's typed tree (rglcd/configuration.py rules: defaults in the
models, YAML holds what differs, unknown keys are errors), never in flags of their own.
"""

from __future__ import annotations

import argparse
from typing import TypeVar

from pydantic import BaseModel

from rglcd.configuration import ConfigError, load_config

M = TypeVar("M", bound=BaseModel)


def config_parser(description: str, config_help: str, default_config: str | None = None):
    """An ArgumentParser taking `--config FILE` and positional `key.sub=value` overrides."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=default_config, help=config_help)
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    return parser


def parse_config_args(
    parser: argparse.ArgumentParser, argv: list[str] | None, model_cls: type[BaseModel]
):
    """`parser.parse_args`, but an unknown `--some-flag` names the config key to write."""
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        flag = next((u for u in unknown if u.startswith("--")), unknown[0])
        name = flag.lstrip("-").replace("-", "_")
        keys = _dotted_keys(model_cls, name) or [name]
        parser.error(
            f"unrecognized argument {flag!r}: settings are config keys, written key=value "
            f"(e.g. {' or '.join(k + '=...' for k in keys)}), or set in a --config FILE"
        )
    return args


def _dotted_keys(model_cls: type[BaseModel], name: str, prefix: str = "") -> list[str]:
    """Every `section.field` of the tree whose last part is `name`."""
    found = []
    for field, info in model_cls.model_fields.items():
        if field == name:
            found.append(prefix + field)
        sub = info.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            found += _dotted_keys(sub, name, f"{prefix}{field}.")
    return found


def config_from_args(parser: argparse.ArgumentParser, model_cls: type[M], args) -> M:
    """The typed config of `--config` + overrides; a problem exits through `parser.error`."""
    try:
        return load_config(model_cls, args.config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
