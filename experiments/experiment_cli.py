"""The command line and run directory every application experiment shares.

An experiment is a frozen ``Config`` dataclass whose fields carry their help text
(:func:`field`), a dict of presets, and a run directory holding ``config.json`` (refused
when it differs from the one asked for), ``results.json``, ``summary.md`` and
``figures/*.png``. :func:`parse_config` turns the dataclass into flags: ``--preset`` picks
the starting values, every flag overrides one field. :func:`run_each` runs one data set
after the other with its own key, :func:`write_results` writes and prints the outcome.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import typing
from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def field(default: Any, help: str) -> Any:
    """Returns a dataclass field with ``default`` whose ``help`` becomes the flag's help."""
    return dataclasses.field(default=default, metadata={"help": help})


def check_at_least_one(config: Any, *names: str) -> None:
    """Raises ValueError naming the first of ``names`` whose value is below 1."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


def parse_config(
    config_cls: type,
    presets: dict[str, dict[str, Any]],
    argv: list[str] | None,
    description: str,
    name: str,
) -> tuple[Any, argparse.Namespace]:
    """Returns ``(config, other options)``: the preset's values overridden by the flags given.

    Other options: ``run_dir`` (default ``runs/<name>/<preset>``) and ``progress`` (None:
    a progress bar when stderr is a terminal).
    """
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Presets: "
        + "; ".join(
            f"{p}: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "the defaults above")
            for p, values in presets.items()
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(presets),
        default="quick",
        help="starting values for every field; flags override them (default quick)",
    )
    parser.add_argument(
        "--run-dir", default=None, help=f"output directory (default runs/{name}/<preset>)"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars (default: when stderr is a terminal)",
    )
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            elem = typing.get_args(hint)[0]
            parser.add_argument(
                flag,
                type=elem,
                nargs="+",
                default=None,
                metavar=elem.__name__.upper(),
                help=f"{f.metadata['help']} (default {' '.join(map(str, f.default))})",
            )
        else:
            parser.add_argument(
                flag,
                type=hint,
                default=None,
                metavar=hint.__name__.upper(),
                help=f"{f.metadata['help']} (default {f.default})",
            )
    args = parser.parse_args(argv)
    values = dict(presets[args.preset])
    for f in dataclasses.fields(config_cls):
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = tuple(given) if isinstance(given, list) else given
    config = config_cls(**values)
    if args.run_dir is None:
        args.run_dir = os.path.join("runs", name, args.preset)
    return config, args


def start_run(
    config_cls: type,
    presets: dict[str, dict[str, Any]],
    argv: list[str] | None,
    description: str,
    name: str,
    check: Callable[[Any], None],
) -> tuple[Any, argparse.Namespace, str]:
    """Returns ``(config, other options, run_dir)``: :func:`parse_config`, ``check(config)``
    (which raises on a bad field) and :func:`open_run_dir`, in that order."""
    config, args = parse_config(config_cls, presets, argv, description, name)
    check(config)
    return config, args, open_run_dir(args.run_dir, config)


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as JSON (arrays as lists) atomically: a reader never sees half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: np.asarray(o).tolist())
    os.replace(tmp, path)


def open_run_dir(run_dir: str, config: Any) -> str:
    """Returns the absolute run directory, created, with ``config.json`` written or checked.

    Raises SystemExit naming the fields when the directory holds another config, so that two
    configurations never mix in one directory.
    """
    run_dir = os.path.abspath(run_dir)
    os.makedirs(os.path.join(run_dir, "figures"), exist_ok=True)
    path = os.path.join(run_dir, "config.json")
    config_dict = json.loads(json.dumps(dataclasses.asdict(config)))
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if saved != config_dict:
            changed = sorted(k for k in config_dict if saved.get(k) != config_dict[k])
            raise SystemExit(
                f"{path} holds a different config (fields {changed}); "
                f"pass a new --run-dir or delete that directory"
            )
    else:
        write_json(path, config_dict)
    return run_dir


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """Returns a markdown table; floats are printed with 4 significant digits."""

    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot():
    """Returns matplotlib.pyplot with the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, fig_dir: str, name: str) -> str:
    """Saves ``fig`` as ``fig_dir/name`` (PNG, 100 dpi), closes it and returns the path."""
    path = os.path.join(fig_dir, name)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return path


def run_each(
    names: tuple[str, ...], run_one: Callable[[str, jax.Array], dict], seed: int
) -> list[dict]:
    """Returns ``[run_one(name, key_i) ...]``, key_i = fold_in(PRNGKey(seed), i), announcing each on stderr."""
    results = []
    for i, name in enumerate(names):
        print(f"[{i + 1}/{len(names)}] {name}", file=sys.stderr)
        results.append(run_one(name, jax.random.fold_in(jax.random.PRNGKey(seed), i)))
    return results


def write_results(
    run_dir: str,
    config: Any,
    results: list[dict],
    verdict: list[str],
    tables: str,
    *,
    title: str,
    intro: str,
    figures: list[str],
    wall: float,
) -> dict:
    """Writes ``summary.md`` and ``results.json``, prints the tables and the verdict.

    ``verdict[0]`` is the headline (bold in the summary), the rest its supporting lines.
    The summary records the wall time and the machine's load average, since on a shared
    machine the one means little without the other. Returns ``{"results", "verdict", "run_dir"}``.
    """
    load = os.getloadavg()
    summary = "\n".join(
        [
            f"# {title}",
            "",
            intro,
            "",
            tables,
            *[f"- {line}" if i else f"**{line}**" for i, line in enumerate(verdict)],
            "",
            f"Config: `{dataclasses.asdict(config)}`",
            "",
            f"Wall time: {wall:.0f} s (load average {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}).",
            "Figures: " + ", ".join(f"figures/{name}" for name in figures) + ".",
            "",
        ]
    )
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write(summary)
    write_json(
        os.path.join(run_dir, "results.json"),
        {"results": results, "verdict": verdict, "wall_s": wall, "load_average": load},
    )
    print(tables)
    print("\n".join(verdict))
    print(f"\nResults in {run_dir} ({wall:.0f} s)")
    return {"results": results, "verdict": verdict, "run_dir": run_dir}
