"""Le, Jaitly & Hinton (2015), "A simple way to initialize recurrent networks of rectified
linear units" (arXiv:1504.00941): the IRNN on the adding problem.

Claim reproduced (Section 4.1, Fig. 2): on the adding problem at T = 150, 200, 300 and 400,
with 100 hidden units, the IRNN (ReLU units, W_hh = I, biases 0, input weights N(0, 0.001²))
and the LSTM bring the test MSE far below the baseline of always predicting 1 (0.1767 in
the paper), while the RNN with tanh units stays at the baseline beyond T = 150.

Setup, as the paper describes it: 100 units, plain SGD on minibatches of 16 with gradient
clipping, the learning rate picked from a small grid per model and T (the paper tuned it;
we tune only it, over ``learning_rates``), fresh training sequences every step, test MSE
on 2000 held-out sequences. Our adding problem's baseline is exactly 1/6 = 0.1667 (the
paper reports 0.1767); we compare every model with our own task's baseline. The tanh RNN
is ``rnnjax.elman(100)`` (orthogonal W_hh), the LSTM ``rnnjax.lstm(100)`` (forget bias 1),
the IRNN ``rnnjax.irnn(100)``. For each (model, T) the reported number is the median over
seeds of the test MSE at the best learning rate.

What differs: the paper trains for far longer than a 2-core CPU allows in minutes (its
Fig. 2 runs to hundreds of thousands of steps); ``num_steps`` says how many we ran.

Usage::

    python -m experiments.reproduce.le2015_irnn                  # quick preset: T = 200
    python -m experiments.reproduce.le2015_irnn --preset full    # T = 150, 200, 300, 400
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import numpy as np
import optax

import rnnjax
from experiments.reproduce.adding_runs import train_on_adding
from rnnjax._src import runs
from rnnjax._src.runs import Claim, option

PAPER = "Le, Jaitly & Hinton 2015"
PAPER_BASELINE = 0.1767
# The paper's names and labels of the registry's cells.
CELLS = {"tanh": ("RNN + tanh", "elman"), "lstm": ("LSTM", "lstm"), "irnn": ("IRNN", "irnn")}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json``."""

    lengths: tuple[int, ...] = option((200,), "sequence lengths T (paper: 150 200 300 400)")
    cells: tuple[str, ...] = option(("tanh", "lstm", "irnn"), "models: tanh, lstm, irnn")
    hidden_size: int = option(100, "hidden units (paper: 100)")
    batch_size: int = option(16, "sequences per SGD step (paper: 16)")
    num_steps: int = option(600, "SGD steps per run")
    learning_rates: tuple[float, ...] = option(
        (1e-2, 1e-3), "SGD learning-rate grid (tuned, as in the paper)"
    )
    optimizer: str = option("sgd", "sgd (the paper's) or adam")
    clip_norm: float = option(1.0, "gradient clipping by global norm")
    num_seeds: int = option(1, "seeds per (model, T, learning rate)")
    beats_fraction: float = option(0.5, "'below the baseline': test MSE <= this x baseline")
    seed: int = option(0, "master seed")


PRESETS = {
    "quick": {},
    # The paper's lengths and sizes; the steps that fit in about 30 minutes here.
    "full": dict(lengths=(150, 200, 300, 400), num_steps=2000),
    # A smoke test of the plumbing in seconds (tests, `run_all.py --preset tiny`); its
    # numbers mean nothing.
    "tiny": dict(
        lengths=(4,),
        cells=("irnn",),
        hidden_size=3,
        batch_size=4,
        num_steps=3,
        learning_rates=(0.01,),
    ),
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field out of range."""
    runs.check_positive(
        config,
        "lengths",
        "hidden_size",
        "batch_size",
        "num_steps",
        "learning_rates",
        "clip_norm",
        "num_seeds",
        "beats_fraction",
    )
    for cell in config.cells:
        if cell not in CELLS:
            raise ValueError(f"cells must be among {sorted(CELLS)}, got {cell!r}")
    if config.optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")
    if any(t < 2 for t in config.lengths):
        raise ValueError(f"lengths must be >= 2, got {config.lengths}")


def main(argv: list[str] | None = None) -> dict:
    """Trains every (model, T) over the learning-rate grid; returns ``{"claims", "results", "run_dir"}``."""
    config, opts = runs.parse_config(
        Config, PRESETS, argv, description=__doc__ or "", name="reproduce/le2015_irnn"
    )
    check_config(config)
    run_dir = runs.open_run_dir(opts.run_dir, config)
    t0 = time.perf_counter()
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.inject_hyperparams(getattr(optax, config.optimizer))(learning_rate=1.0),
    )
    trained = {}
    for t in config.lengths:
        for name in config.cells:
            print(
                f"{CELLS[name][0]}, T={t}: {len(config.learning_rates)} learning rates x "
                f"{config.num_seeds} seeds x {config.num_steps} steps",
                file=sys.stderr,
            )
            trained[name, t] = train_on_adding(
                rnnjax.make_cell(CELLS[name][1], config.hidden_size),
                optimizer,
                [{"learning_rate": lr} for lr in config.learning_rates],
                length=t,
                batch_size=config.batch_size,
                num_steps=config.num_steps,
                num_seeds=config.num_seeds,
                seed=config.seed,
            )

    baseline = 1 / 6
    best = {}  # (cell, T) -> (median test MSE at the best learning rate, that rate)
    for key, r in trained.items():
        med = np.median(r["test_mse"], axis=1)
        i = int(np.argmin(med))
        best[key] = (float(med[i]), config.learning_rates[i])
    threshold = config.beats_fraction * baseline

    def row(name):
        return ", ".join(f"T={t}: {best[name, t][0]:.3g}" for t in config.lengths)

    claims = []
    size = (
        f"{config.num_steps} {config.optimizer.upper()} steps (batch {config.batch_size}), "
        f"learning rate best of {list(config.learning_rates)}, {config.num_seeds} seed(s)"
    )
    differs = (
        f"{config.num_steps} steps, far fewer than the paper's; our baseline is 1/6 = 0.1667 "
        f"(paper: {PAPER_BASELINE}); 'below the baseline' is read as test MSE <= "
        f"{config.beats_fraction:g} x 1/6 = {threshold:.3g}."
    )
    for name in ("irnn", "lstm"):
        if name in config.cells:
            claims.append(
                Claim(
                    PAPER,
                    "Sec. 4.1, Fig. 2",
                    f"{CELLS[name][0]} goes below the baseline at every T in {list(config.lengths)}",
                    f"test MSE far below {PAPER_BASELINE} at T = 150-400",
                    f"best-lr test MSE {row(name)} ({size})",
                    bool(all(best[name, t][0] <= threshold for t in config.lengths)),
                    differs,
                )
            )
    if "tanh" in config.cells:
        long = [t for t in config.lengths if t > 150]
        claims.append(
            Claim(
                PAPER,
                "Sec. 4.1, Fig. 2",
                "RNN + tanh stays at the baseline beyond T = 150",
                f"test MSE ≈ {PAPER_BASELINE} for T > 150",
                (f"best-lr test MSE {row('tanh')} ({size})" if long else "no T > 150 in this run"),
                bool(long) and bool(all(best["tanh", t][0] > threshold for t in long)),
                differs,
            )
        )

    plt = runs.pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name in config.cells:
        ax.plot(
            config.lengths, [best[name, t][0] for t in config.lengths], "o-", label=CELLS[name][0]
        )
    ax.axhline(baseline, color="k", ls="--", lw=1, label="baseline 1/6 (ours)")
    ax.axhline(threshold, color="gray", ls=":", lw=1, label=f"{config.beats_fraction:g} x baseline")
    ax.set_yscale("log")
    ax.set_xlabel("T")
    ax.set_ylabel("test MSE (median over seeds, best lr)")
    ax.set_title(f"Adding problem, {config.num_steps} {config.optimizer.upper()} steps")
    ax.legend(fontsize=8)
    figure = runs.save_figure(fig, run_dir, "test_mse_vs_T")

    table = [
        "| model | " + " | ".join(f"T={t}" for t in config.lengths) + " |",
        "|---|" + "---|" * len(config.lengths),
    ]
    for name in config.cells:
        table.append(
            f"| {CELLS[name][0]} | "
            + " | ".join(
                f"{best[name, t][0]:.3g} (lr {best[name, t][1]:g})" for t in config.lengths
            )
            + " |"
        )
    results = {
        "baseline": baseline,
        "paper_baseline": PAPER_BASELINE,
        "test_mse": {f"{n}_T{t}": r["test_mse"] for (n, t), r in trained.items()},
        "skipped_updates": {f"{n}_T{t}": r["skipped_updates"] for (n, t), r in trained.items()},
        "best": {f"{n}_T{t}": v for (n, t), v in best.items()},
    }
    notes = [
        "Test MSE, median over seeds at the best learning rate (in brackets):",
        "",
        *table,
        "",
        f"Figure: {os.path.relpath(figure, run_dir)}.",
    ]
    return runs.finish_claims(
        run_dir,
        title=f"{PAPER}: IRNN on the adding problem",
        config=config,
        results=results,
        summary=notes,
        started=t0,
        claims=claims,
    )


if __name__ == "__main__":
    main()
