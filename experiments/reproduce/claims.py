"""A paper's claim beside our measurement: the record every reproduction in this folder
returns, the command line built from its config, and its run directory.

Each reproduction (``pascanu2013.py``, ``le2015_irnn.py``, ...) is a short script with a
``Config`` dataclass and presets; it measures, then states each claim of its paper as a
:class:`Claim` whose ``reproduced`` is computed from the measured numbers. This module
writes them out the same way for all: ``config.json``, ``results.json`` (the claims and
every measured number), ``summary.md`` (paper's number | ours | verdict) and ``figures/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, NamedTuple

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from experiment_cli import field as option  # noqa: F401  (option: for the scripts)
from experiment_cli import parse_config as _parse_flags


class Claim(NamedTuple):
    """One claim of a paper and our measurement of it.

    Attributes:
      paper: authors and year, e.g. ``"Pascanu, Mikolov & Bengio 2013"``.
      where: figure, table or section of the paper.
      claim: the claim in one sentence.
      paper_value: what the paper reports (a number, or the qualitative result).
      ours: what we measured, with its size (steps, seeds, T).
      reproduced: computed from the measured numbers by the script, never typed in.
      differs: where our setup differs from the paper's and why (sizes, steps, optimiser).
    """

    paper: str
    where: str
    claim: str
    paper_value: str
    ours: str
    reproduced: bool
    differs: str = ""


def parse_config(
    config_cls: type, presets: dict[str, dict], doc: str, name: str, argv: list[str] | None = None
) -> tuple[Any, str]:
    """Returns ``(config, run_dir)``: the chosen preset of ``config_cls`` overridden by flags.

    Every field of the dataclass is a flag (``num_steps`` -> ``--num-steps``; tuples take
    several values). ``--preset`` picks the starting values (default ``quick``) and
    ``--run-dir`` the output directory (default ``runs/reproduce/<name>/<preset>``).
    """
    config, args = _parse_flags(config_cls, presets, argv, doc, os.path.join("reproduce", name))
    return config, os.path.abspath(args.run_dir)


def check_positive(config: Any, *names: str) -> None:
    """Raises ValueError naming the first of ``names`` whose value (or any element) is <= 0."""
    for name in names:
        value = getattr(config, name)
        for v in value if isinstance(value, tuple) else (value,):
            if not v > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")


def claims_table(claims: list[Claim], *, with_paper: bool = True) -> list[str]:
    """Returns the markdown lines of one table row per claim."""
    head = ["paper", "where", "claim"] if with_paper else ["where", "claim"]
    lines = [
        "| " + " | ".join(head + ["paper's number", "ours", "reproduced?"]) + " |",
        "|" + "---|" * (len(head) + 3),
    ]
    for c in claims:
        cells = ([c.paper] if with_paper else []) + [
            c.where,
            c.claim,
            c.paper_value,
            c.ours,
            "**yes**" if c.reproduced else "**no**",
        ]
        lines.append("| " + " | ".join(s.replace("|", "/") for s in cells) + " |")
    return lines


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.ndarray, np.generic)) or hasattr(obj, "__array__"):
        return _jsonable(np.asarray(obj).tolist())
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def write_run(
    run_dir: str,
    *,
    title: str,
    config: Any,
    claims: list[Claim],
    results: dict,
    notes: list[str],
    wall_time_s: float,
) -> dict:
    """Writes ``config.json``, ``results.json`` and ``summary.md``; returns what ``main`` returns.

    ``results`` holds every measured number the claims were computed from; ``notes`` are
    the summary's paragraphs after the table (setup, figures, what differs).
    """
    os.makedirs(run_dir, exist_ok=True)
    config_dict = dataclasses.asdict(config)
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        json.dump(_jsonable(config_dict), f, indent=1)
    record = {
        "claims": [c._asdict() for c in claims],
        "results": results,
        "wall_time_s": wall_time_s,
        "load_average": os.getloadavg(),
        "process_cpu_time_s": time.process_time(),
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(_jsonable(record), f, indent=1)
    differs = []  # one line per distinct note: claims measured by one run share theirs
    for c in claims:
        if c.differs and not any(c.differs in line for line in differs):
            differs.append(f"- {c.where}: {c.differs}")
    summary = [f"# {title}", "", *claims_table(claims, with_paper=False), "", *notes, ""]
    if differs:
        summary += ["Where our setup differs from the paper's:", "", *differs, ""]
    summary += [
        f"Config: `{json.dumps(_jsonable(config_dict))}`",
        "",
        f"Wall time {wall_time_s:.0f} s, CPU time of the process {time.process_time():.0f} s "
        f"(load average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}; "
        "a 2-core machine shared with other jobs).",
        "",
    ]
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write("\n".join(summary))
    print("\n".join(claims_table(claims)))
    print(f"\nRun directory: {run_dir} ({wall_time_s:.0f} s)")
    return {"claims": claims, "results": results, "run_dir": run_dir}


def save_figure(fig: Any, run_dir: str, name: str) -> str:
    """Saves ``fig`` as ``<run_dir>/figures/<name>.png``, closes it and returns the path."""
    import matplotlib.pyplot as plt

    path = os.path.join(run_dir, "figures", name + ".png")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def pyplot() -> Any:
    """Returns ``matplotlib.pyplot`` with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
