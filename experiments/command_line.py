"""Command lines built from an experiment's config dataclass: every field is a flag, and a
preset gives the starting values that flags override. Used by ``vanishing_gradients.py``
and the scripts in ``reproduce/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any


def option(default: Any, help: str) -> Any:
    """Returns a dataclass field whose ``help`` becomes the text of its command-line flag."""
    return dataclasses.field(default=default, metadata={"help": help})


def add_config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """Adds one flag per field of ``config_cls`` (``num_steps`` -> ``--num-steps``).

    A field's ``metadata["help"]`` is its help text; tuple fields take several values.
    Every flag defaults to None, meaning "keep the preset's value".
    """
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        hint = hints[f.name]
        many = typing.get_origin(hint) is tuple
        kind = typing.get_args(hint)[0] if many else hint
        default = " ".join(map(str, f.default)) if many else f.default
        parser.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                            nargs="+" if many else None, metavar=kind.__name__.upper(),
                            help=f"{f.metadata['help']} (default {default})")


def config_from_flags(config_cls: type, preset: dict[str, Any], args: argparse.Namespace) -> Any:
    """Returns ``config_cls(**preset)`` with every flag given in ``args`` overriding its field."""
    values = dict(preset)
    for f in dataclasses.fields(config_cls):
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = tuple(given) if isinstance(given, list) else given
    return config_cls(**values)
