"""What the application experiments add to ``rnnjax._src.runs``: a start, a loop over data sets
and a summary that leads with the verdict.

:func:`start_run` parses the flags, checks the config and opens the run directory;
:func:`run_each` runs one data set after the other with its own key; :func:`write_results`
writes ``results.json`` (``{"results", "verdict", ...}``) and ``summary.md`` and prints them.
Config fields, presets, the run directory's rule (the same config resumes, another is
refused), tables and figures are ``rnnjax._src.runs``'.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import jax

from rnnjax._src import runs


def start_run(
    config_cls: type,
    presets: dict[str, dict[str, Any]],
    argv: list[str] | None,
    description: str | None,
    name: str,
    check: Callable[[Any], None],
) -> tuple[Any, argparse.Namespace, str]:
    """Returns ``(config, options, run_dir)``: ``rnnjax._src.runs.parse_config``, ``check(config)``
    (which raises on a bad field) and ``rnnjax._src.runs.open_run_dir``, in that order."""
    config, opts = runs.parse_config(config_cls, presets, argv, description or "", name)
    check(config)
    return config, opts, runs.open_run_dir(opts.run_dir, config)


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
    results: Any,
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
    Returns ``{"results", "verdict", "run_dir"}``.
    """
    runs.write_run(
        run_dir,
        title=title,
        config=config,
        results={"results": results, "verdict": verdict},
        summary=[
            intro,
            "",
            tables,
            *[f"- {line}" if i else f"**{line}**" for i, line in enumerate(verdict)],
            "",
            "Figures: " + ", ".join(f"figures/{name}" for name in figures) + ".",
        ],
        wall_time_s=wall,
    )
    print(tables)
    print("\n".join(verdict))
    print(f"\nResults in {run_dir} ({wall:.0f} s)")
    return {"results": results, "verdict": verdict, "run_dir": run_dir}


# experiments/vanishing_gradients.py (moving onto rnnjax.study) still imports these names.
field = runs.option
check_at_least_one = runs.check_positive
parse_config = runs.parse_config
