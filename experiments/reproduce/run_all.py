"""Runs every reproduction's quick preset (or ``--preset full``) and prints one table of claims:
paper | where | claim | paper's number | ours | reproduced?  (``make reproduce``).

Each script's verdicts are computed from its own measurements; this script only collects
them, times each run, and writes ``runs/reproduce/summary_<preset>.md``. ``--only`` picks
scripts; ``--collect`` reruns nothing and rebuilds the table from the run directories'
``results.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time

from rnnjax._src.runs import Claim, claims_table

SCRIPTS = (
    "pascanu2013",
    "le2015_irnn",
    "tallec2018_chrono",
    "zucchet2024",
    "chaos",
    "truncated_bptt",
)


def main(argv: list[str] | None = None) -> list:
    """Runs the scripts; returns every claim."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--preset",
        default="quick",
        choices=("quick", "full", "tiny"),
        help="quick (default), full, or tiny (a smoke test: seconds, numbers meaningless)",
    )
    parser.add_argument(
        "--only", nargs="+", choices=SCRIPTS, default=SCRIPTS, help="run only these reproductions"
    )
    parser.add_argument(
        "--run-dir",
        default=os.path.join("runs", "reproduce"),
        help="parent of each script's run directory (default runs/reproduce)",
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help="run nothing; rebuild the table from the existing run directories",
    )
    args = parser.parse_args(argv)
    claims, timings = [], []
    for name in args.only:
        run_dir = os.path.join(args.run_dir, name, args.preset)
        if args.collect:
            with open(os.path.join(run_dir, "results.json")) as f:
                record = json.load(f)
            claims += [Claim(**c) for c in record["claims"]]
            timings.append(
                (
                    name,
                    record["wall_time_s"],
                    record.get("process_cpu_time_s"),
                    record["load_average"][0],
                )
            )
            continue
        print(f"\n=== {name} ({args.preset}) ===", flush=True)
        t0, cpu0 = time.perf_counter(), time.process_time()
        out = importlib.import_module(f"experiments.reproduce.{name}").main(
            ["--preset", args.preset, "--run-dir", run_dir]
        )
        timings.append(
            (name, time.perf_counter() - t0, time.process_time() - cpu0, os.getloadavg()[0])
        )
        claims += out["claims"]
    table = claims_table(claims)
    times = [
        "| script | wall time | CPU time | load average (1 min) at the end |",
        "|---|---|---|---|",
    ]
    times += [
        f"| {n} | {t:.0f} s | {'-' if cpu is None else f'{cpu:.0f} s'} | {load:.1f} |"
        for n, t, cpu, load in timings
    ]
    summary = [
        f"# Reproductions ({args.preset} presets)",
        "",
        *table,
        "",
        *times,
        "",
        "Each script's run directory holds its summary.md (with the paper's numbers and "
        "where our setup differs), results.json and figures.",
        "",
    ]
    os.makedirs(args.run_dir, exist_ok=True)
    with open(os.path.join(args.run_dir, f"summary_{args.preset}.md"), "w") as f:
        f.write("\n".join(summary))
    print("\n" + "\n".join(table) + "\n\n" + "\n".join(times))
    print(
        f"\n{sum(c.reproduced is True for c in claims)}/{len(claims)} claims reproduced, "
        f"{sum(c.reproduced is None for c in claims)} inconclusive; "
        f"details in {args.run_dir}/<script>/{args.preset}/summary.md"
    )
    return claims


if __name__ == "__main__":
    main()
