"""An experiment's harness: its config and flags, its run directory, and verdicts with uncertainty.

An experiment is a frozen dataclass whose fields carry their help text (:func:`option`) and
a dict of presets; :func:`parse_config` turns them into a command line (``--preset`` picks
the starting values, each field is a flag that overrides one). Its run directory
(:func:`open_run_dir`) holds ``config.json``, ``results.json``, ``summary.md`` and
``figures/*.png``. One rule for a directory that exists: the same config resumes in it (the
rerun replaces its results), another config is refused — a run directory holds one run.

A verdict is computed from the numbers with their uncertainty, never from a point estimate
alone: a success rate gets its Wilson score interval (:func:`wilson_interval`), a mean
two standard errors (:func:`mean_interval`), a difference of two estimates Newcombe's
interval (:func:`difference_interval`), and :func:`decide` answers ``True``/``False`` only
when the whole interval lies on one side of the criterion, ``None`` ("inconclusive") when
it straddles it. A paper's claim beside our measurement is a :class:`Claim`.

Matplotlib (the ``experiments`` extra) is imported only when a figure is drawn.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
import typing
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rnnjax._src.training import run_dir as _files

__all__ = [
    "Claim",
    "Interval",
    "check_positive",
    "claims_table",
    "decide",
    "difference_interval",
    "markdown_table",
    "mean_interval",
    "open_run_dir",
    "option",
    "parse_config",
    "pyplot",
    "save_figure",
    "verdict_text",
    "wilson_interval",
    "write_json",
    "write_run",
]


# ------------------------------------------------------------------ config and flags


def option(default: Any, help: str) -> Any:
    """Returns a dataclass field with ``default`` whose ``help`` becomes its flag's help."""
    return dataclasses.field(default=default, metadata={"help": help})


def parse_config(
    config_cls: type,
    presets: Mapping[str, Mapping[str, Any]],
    argv: Sequence[str] | None,
    description: str,
    name: str,
) -> tuple[Any, argparse.Namespace]:
    """Returns ``(config, options)``: the preset's values overridden by the flags in ``argv``.

    Every field of the dataclass ``config_cls`` is a flag (``num_steps`` -> ``--num-steps``;
    a tuple field takes several values). ``options`` holds ``preset``, ``run_dir`` (default
    ``runs/<name>/<preset>``) and ``progress`` (None: a progress bar when stderr is a
    terminal).
    """
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Presets: "
        + "; ".join(
            f"{p}: " + (", ".join(f"{k}={v}" for k, v in values.items()) or "the defaults")
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
    fields = dataclasses.fields(config_cls)
    for f in fields:
        hint = hints[f.name]
        many = typing.get_origin(hint) is tuple
        kind = typing.get_args(hint)[0] if many else hint
        default: Any = f.default
        if many:
            default = " ".join(map(str, default))
        # A bool is a switch pair --name / --no-name: type=bool would read "False" as True.
        kind_args: dict[str, Any] = (
            {"action": argparse.BooleanOptionalAction}
            if kind is bool
            else {"type": kind, "nargs": "+" if many else None, "metavar": kind.__name__.upper()}
        )
        parser.add_argument(
            "--" + f.name.replace("_", "-"),
            default=None,
            help=f"{f.metadata['help']} (default {default})".replace("%", "%%"),
            **kind_args,
        )
    args = parser.parse_args(argv)
    values = dict(presets[args.preset])
    for f in fields:
        given = getattr(args, f.name)
        if given is not None:
            values[f.name] = tuple(given) if isinstance(given, list) else given
    config = config_cls(**values)
    if args.run_dir is None:
        args.run_dir = os.path.join("runs", name, args.preset)
    return config, args


def check_positive(config: Any, *names: str) -> None:
    """Raises ValueError naming the first of ``names`` whose value (or any element) is <= 0."""
    for name in names:
        value = getattr(config, name)
        for v in value if isinstance(value, tuple) else (value,):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")


# ------------------------------------------------------------------- run directory


def open_run_dir(run_dir: str | os.PathLike, config: Any) -> str:
    """Returns the absolute run directory, created with ``figures/``, its config saved or checked.

    The same config resumes in an existing directory; another one is refused.

    Raises:
      ValueError: the directory's ``config.json`` differs from ``config``; the message
        names the fields that differ.
    """
    run_dir = os.path.abspath(run_dir)
    os.makedirs(os.path.join(run_dir, "figures"), exist_ok=True)
    _files.check_or_save_config(run_dir, _jsonable(dataclasses.asdict(config)), write=True)
    return run_dir


def _jsonable(obj: Any) -> Any:
    # Arrays become lists, tuples lists, and non-finite floats the strings "inf"/"nan"
    # (valid JSON, unlike json's Infinity).
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "__array__"):
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as JSON atomically (arrays as lists, inf/nan as strings)."""
    _files.write_atomic(os.fspath(path), json.dumps(_jsonable(obj), indent=1) + "\n")


def write_run(
    run_dir: str,
    *,
    title: str,
    config: Any,
    results: Mapping[str, Any],
    summary: Sequence[str],
    wall_time_s: float,
    claims: Sequence[Claim] = (),
) -> None:
    """Writes ``results.json`` and ``summary.md`` into ``run_dir``.

    ``results.json`` is ``results`` with the ``claims``, the wall time, the process's CPU
    time and the load average added. ``summary.md`` is ``# title``, the claims' table, the
    lines of ``summary``, where the setup differs from the papers' (each claim's
    ``differs``, once), the config and the times (on a shared machine the wall time means
    little without the load).
    """
    cpu, load = time.process_time(), os.getloadavg()
    record = {
        **results,
        "wall_time_s": wall_time_s,
        "process_cpu_time_s": cpu,
        "load_average": load,
    }
    if claims:
        record["claims"] = [c._asdict() for c in claims]
    write_json(os.path.join(run_dir, "results.json"), record)
    differs = list(dict.fromkeys(f"- {c.where}: {c.differs}" for c in claims if c.differs))
    text = [f"# {title}", ""]
    if claims:
        text += [*claims_table(claims, with_paper=False), ""]
    text += [*summary, ""]
    if differs:
        text += ["Where our setup differs from the paper's:", "", *differs, ""]
    text += [
        f"Config: `{json.dumps(_jsonable(dataclasses.asdict(config)))}`",
        "",
        f"Wall time {wall_time_s:.0f} s, CPU time of the process {cpu:.0f} s (load average at "
        f"the end {' '.join(f'{x:.1f}' for x in load)}).",
        "",
    ]
    _files.write_atomic(os.path.join(run_dir, "summary.md"), "\n".join(text))


def finish_claims(
    run_dir: str,
    *,
    title: str,
    config: Any,
    results: Mapping[str, Any],
    summary: Sequence[str],
    started: float,
    claims: Sequence[Claim],
) -> dict:
    """The end of a reproduction: :func:`write_run` (wall time since ``started``, a
    ``time.perf_counter()``), the claims' table printed, ``{"claims", "results", "run_dir"}``."""
    write_run(
        run_dir,
        title=title,
        config=config,
        results=results,
        summary=summary,
        wall_time_s=time.perf_counter() - started,
        claims=claims,
    )
    print("\n".join(claims_table(claims)) + f"\n\nRun directory: {run_dir}")
    return {"claims": claims, "results": results, "run_dir": run_dir}


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Returns a markdown table; floats are printed with 4 significant digits."""

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v).replace("|", "/")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def pyplot() -> Any:
    """Returns ``matplotlib.pyplot`` with the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, run_dir: str, name: str) -> str:
    """Returns the path ``run_dir/figures/name`` (``.png`` added if absent) where ``fig`` was saved, closed."""
    path = os.path.join(run_dir, "figures", name if name.endswith(".png") else name + ".png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return path


# --------------------------------------------------------- verdicts with uncertainty


class Interval(NamedTuple):
    """An estimate and its interval ``[low, high]``."""

    estimate: float
    low: float
    high: float


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> Interval:
    """Returns the success rate ``successes / trials`` and its Wilson score interval.

    Wilson (1927): with p = s/n, the interval is
    ``(p + z²/2n ± z sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)``; unlike p ± z s.e. it stays
    inside [0, 1] and is not empty at 0 of n or n of n. ``z = 1.96``: 95 %.

    Raises:
      ValueError: ``trials`` < 1 or ``successes`` outside [0, trials].
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be in [0, trials={trials}], got {successes}")
    p, n, z2 = successes / trials, trials, z * z
    center = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Interval(p, max(0.0, center - half), min(1.0, center + half))


def mean_interval(samples: Any, num_se: float = 2.0) -> Interval:
    """Returns the mean of ``samples: (n,)`` and mean ± ``num_se`` standard errors.

    The standard error is ``std(ddof=1) / sqrt(n)``; with one sample it is unknown and the
    interval is the whole line.

    Raises:
      ValueError: ``samples`` is empty or holds a non-finite value.
    """
    x = np.asarray(samples, np.float64).reshape(-1)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError(f"samples must be a non-empty array of finite numbers, got {x!r}")
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, -math.inf, math.inf)
    half = num_se * float(x.std(ddof=1)) / math.sqrt(x.size)
    return Interval(mean, mean - half, mean + half)


def difference_interval(a: Interval, b: Interval) -> Interval:
    """Returns ``a - b`` and its interval by Newcombe's square-and-add rule.

    Newcombe (1998, method 10): ``low = d - sqrt((a - a.low)² + (b.high - b)²)``, ``high =
    d + sqrt((a.high - a)² + (b - b.low)²)`` with d = a - b. For two Wilson intervals this is
    the hybrid score interval of a difference of proportions; for two symmetric normal
    intervals it is d ± the root sum of squares of the half-widths. An infinite ``d`` is its
    own interval.
    """
    d = a.estimate - b.estimate
    if math.isinf(d):  # an infinite estimate (e.g. every run diverged): no width to add
        return Interval(d, d, d)
    low = d - math.hypot(a.estimate - a.low, b.high - b.estimate)
    high = d + math.hypot(a.high - a.estimate, b.estimate - b.low)
    return Interval(d, low, high)


def decide(interval: Interval, criterion: float, *, above: bool = True) -> bool | None:
    """Returns whether the claim "the quantity is above (or below) ``criterion``" holds.

    True when the whole ``interval`` lies on the claimed side, False when it lies on the
    other side, None (inconclusive) when it contains ``criterion``.
    """
    if interval.low > criterion:
        return above
    if interval.high < criterion:
        return not above
    return None


def verdict_text(verdict: bool | None) -> str:
    """Returns ``"yes"``, ``"no"`` or ``"inconclusive"`` for ``True``, ``False`` or ``None``."""
    return "inconclusive" if verdict is None else "yes" if verdict else "no"


# ----------------------------------------------------------------------- claims


class Claim(NamedTuple):
    """One claim of a paper and our measurement of it.

    Attributes:
      paper: authors and year, e.g. ``"Pascanu, Mikolov & Bengio 2013"``.
      where: figure, table or section of the paper.
      claim: the claim in one sentence.
      paper_value: what the paper reports (a number, or the qualitative result).
      ours: what we measured, with its size (steps, seeds, T) and its interval.
      reproduced: computed from the measured numbers (e.g. by :func:`decide`), never typed
        in; None when the uncertainty leaves it open.
      differs: where our setup differs from the paper's and why.
    """

    paper: str
    where: str
    claim: str
    paper_value: str
    ours: str
    reproduced: bool | None
    differs: str = ""


def claims_table(claims: Sequence[Claim], *, with_paper: bool = True) -> list[str]:
    """Returns the markdown lines of a table with one row per claim, its verdict in bold."""
    head = ["paper", "where", "claim"] if with_paper else ["where", "claim"]
    rows = [
        ([c.paper] if with_paper else [])
        + [c.where, c.claim, c.paper_value, c.ours, f"**{verdict_text(c.reproduced)}**"]
        for c in claims
    ]
    return markdown_table(head + ["paper's number", "ours", "reproduced?"], rows).split("\n")
