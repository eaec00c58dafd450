"""The vanishing-gradient study: vanilla RNN vs LSTM vs GRU on long-range dependencies.

Methods, in the order this script runs them:

1. Task. The adding problem (Hochreiter & Schmidhuber 1997; two-channel form of Le, Jaitly &
   Hinton 2015): T values ~ U[0, 1], two of them marked (one in each half); predict their sum
   from the last step. Predicting the constant 1 gives MSE 1/6 without remembering anything,
   so a model has learned the long-range dependency only when its test MSE falls well below
   1/6. Copy memory (Arjovsky et al. 2016) and temporal order are available with ``--task``.
2. Models. One recurrent layer (Elman tanh, LSTM with forget-gate bias 1, GRU, and Elman
   ReLU with identity init, the IRNN of Le et al. 2015) and a linear readout at every step.
3. Training. Adam with gradient clipping by global norm (Pascanu, Mikolov & Bengio 2013),
   fresh batches every step. The seeds of one (cell, T) are ONE vmapped program
   (:func:`rnnjax.training.fit` on a state with a leading seed axis); each seed has its own
   initialisation and data order.
4. Measurement. Final loss on a held-out test set drawn from a key no training run uses;
   learning curves; and the gradient that backpropagation through time delivers to each
   step, ||dL/dh_t|| (:func:`rnnjax.diagnostics.state_gradient_norms`, averaged over test
   sequences) at initialisation, during and after training. Its ratio
   ||dL/dh_1|| / ||dL/dh_T|| says how much of the loss signal reaches the first step.

Usage::

    python experiments/vanishing_gradients.py                   # quick preset, a few minutes
    python experiments/vanishing_gradients.py --preset full     # paper scale; rerun to resume
    python experiments/vanishing_gradients.py --preset linear   # + LRU, minGRU at T = 100
    python experiments/vanishing_gradients.py --cells elman lstm --lengths 10 200 --num-steps 3000

Outputs go to ``--run-dir`` (default ``runs/vanishing_gradients/<preset>``): ``config.json``,
``results.json`` (one record per cell x T x seed), ``summary.md``, ``figures/*.png`` and one
subdirectory per (cell, T) with that group's training run (config, metrics.jsonl, checkpoints,
gradient norms). Rerunning with the same config skips finished groups and resumes the
unfinished one from its last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from rnnjax import diagnostics, models, plots, readouts, tasks, training

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from experiment_cli import check_at_least_one, field, parse_config

# --------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the study; saved as ``config.json`` in the run directory."""

    task: str = field("adding", "task: adding | copy | temporal_order")
    cells: tuple[str, ...] = field(
        ("elman", "lstm", "gru", "irnn"),
        "recurrent cells: elman (tanh, orthogonal W_hh), lstm (forget bias --forget-bias), "
        "gru, irnn (ReLU, W_hh = I; Le et al. 2015), lru (Orvieto et al. 2023), mingru "
        "(Feng et al. 2024)",
    )
    lengths: tuple[int, ...] = field(
        (10, 50, 100),
        "sequence lengths T (for copy: the number of blanks between the symbols and the recall)",
    )
    num_seeds: int = field(3, "seeds per (cell, T), trained together as one vmapped program")
    hidden_size: int = field(32, "hidden units per cell")
    batch_size: int = field(64, "training sequences per step (fresh every step)")
    num_steps: int = field(1000, "Adam updates per run")
    learning_rate: float = field(1e-2, "Adam learning rate (constant)")
    clip_norm: float = field(1.0, "gradient clipping by global norm (Pascanu et al. 2013)")
    forget_bias: float = field(1.0, "LSTM forget-gate bias at initialisation")
    test_size: int = field(1000, "held-out test sequences per T (one fixed set for all runs)")
    diag_size: int = field(128, "test sequences averaged for the gradient-norm diagnostics")
    eval_every: int = field(100, "steps between test-loss and gradient-norm measurements")
    solved_fraction: float = field(
        0.1, "a run counts as solved when final test loss <= this fraction of the baseline"
    )
    checkpoint_every: int = field(
        0, "steps between checkpoints within a group (0: at the end only)"
    )
    seed: int = field(0, "master seed; seed s of every group is derived from it")


PRESETS: dict[str, dict[str, Any]] = {
    # A few minutes on a 2-core CPU: the effect at T = 100 with 3 seeds.
    "quick": {},
    # The quick preset's settings at its longest T, with the cells linear in their state
    # (LRU, minGRU) beside the gated ones: does a linear recurrence solve it? (Kept out of
    # "quick", whose five minutes two more cells at three lengths would exceed.)
    "linear": dict(cells=("elman", "lstm", "gru", "lru", "mingru"), lengths=(100,)),
    # Paper scale: T up to 1000 (Le et al. 2015 go to 750), more seeds, more steps, and the
    # cells linear in their state.
    "full": dict(
        cells=("elman", "lstm", "gru", "irnn", "lru", "mingru"),
        lengths=(10, 50, 100, 200, 400, 750, 1000),
        num_seeds=5,
        hidden_size=128,
        batch_size=64,
        num_steps=20_000,
        learning_rate=1e-3,
        eval_every=500,
        checkpoint_every=2000,
    ),
}

CELLS = {
    "elman": lambda c: rnnjax.elman(c.hidden_size, "tanh"),
    "lstm": lambda c: rnnjax.lstm(c.hidden_size, forget_bias=c.forget_bias),
    "gru": lambda c: rnnjax.gru(c.hidden_size),
    "irnn": lambda c: rnnjax.irnn(c.hidden_size),
    # Linear in the state, on one associative scan (Orvieto et al. 2023 use the ring
    # r in [0.9, 0.999] and phases up to pi/10 on their long-range tasks; Feng et al. 2024).
    "lru": lambda c: rnnjax.lru(c.hidden_size, 0.9, 0.999, math.pi / 10),
    "mingru": lambda c: rnnjax.mingru(c.hidden_size),
}
LABELS = {
    "elman": "vanilla RNN (tanh)",
    "lstm": "LSTM",
    "gru": "GRU",
    "irnn": "IRNN (ReLU, W=I)",
    "lru": "LRU",
    "mingru": "minGRU",
}
COLORS = {
    "elman": "tab:red",
    "lstm": "tab:blue",
    "gru": "tab:green",
    "irnn": "tab:orange",
    "lru": "tab:purple",
    "mingru": "tab:brown",
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    if config.task not in tasks.TASKS:
        raise ValueError(f"task must be one of {sorted(tasks.TASKS)}, got {config.task!r}")
    for cell in config.cells:
        if cell not in CELLS:
            raise ValueError(f"cells must be among {sorted(CELLS)}, got {cell!r}")
    if not config.cells or not config.lengths:
        raise ValueError("cells and lengths must be non-empty")
    check_at_least_one(
        config,
        "num_seeds",
        "hidden_size",
        "batch_size",
        "num_steps",
        "test_size",
        "diag_size",
        "eval_every",
    )
    if any(t < 2 for t in config.lengths):
        raise ValueError(f"lengths must be >= 2, got {config.lengths}")
    if not config.learning_rate > 0 or not config.clip_norm > 0:
        raise ValueError("learning_rate and clip_norm must be > 0")
    if config.diag_size > config.test_size:
        raise ValueError(
            f"diag_size ({config.diag_size}) must be <= test_size ({config.test_size})"
        )


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """Returns (config, other options): the preset, overridden by any flag given."""
    config, args = parse_config(Config, PRESETS, argv, __doc__, "vanishing_gradients")
    check_config(config)
    return config, args


# --------------------------------------------------------------------------- one group


def gradient_norm_profile(cell, readout, task, params, xs, targets):
    """Returns (T,): ||dL/d state_t|| averaged over the sequences ``xs: (B, T, I)``, one seed.

    ``state_t`` is the whole carry leaving step t (h, and c for the LSTM); the gradient is
    the total one that backpropagation through time delivers to it
    (:func:`rnnjax.diagnostics.state_gradient_norms`).
    """

    def norms(x, target):
        def loss_fn(final_carry, ys):
            del final_carry
            return task.loss(readout.apply(params["readout"], ys), target)

        return diagnostics.state_gradient_norms(cell, params["rnn"], x, loss_fn)

    return jnp.mean(jax.vmap(norms)(xs, targets), axis=0)


def run_group(
    config: Config, cell_name: str, length: int, group_dir: str, progress: bool | None
) -> dict:
    """Returns this (cell, T) group's measurements, training its seeds as one vmapped program."""
    task = tasks.make_task(config.task, **{tasks.SIZE_ARGUMENT[config.task]: length})
    cell = CELLS[cell_name](config)
    readout = readouts.linear(task.output_size)
    model = models.many_to_many(rnnjax.recurrent(cell), readout)
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate)
    )

    def loss_fn(params, batch, key):
        del key
        xs, targets = batch
        outputs = jax.vmap(lambda x: model.apply(params, x))(xs)
        return jnp.mean(jax.vmap(task.loss)(outputs, targets)), {}

    def batch_fn(key, step):
        del step
        return tasks.sample_batch(task, key, config.batch_size)

    # One test set per T, from a key no training run touches (fold 1 of the master seed),
    # the same for every cell and seed. It is regenerated inside each jitted function from
    # that key rather than closed over, so no eager sampling runs on the host.
    test_key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), length)

    def eval_fn(params, key):
        del key
        xs, targets = tasks.sample_batch(task, test_key, config.test_size)
        outputs = jax.vmap(lambda x: model.apply(params, x))(xs)
        out = {"loss": jnp.mean(jax.vmap(task.loss)(outputs, targets))}
        if task.accuracy is not None:
            out["accuracy"] = jnp.mean(jax.vmap(task.accuracy)(outputs, targets))
        return out

    @jax.jit
    @jax.vmap
    def grad_norms(params):
        xs, targets = tasks.sample_batch(task, test_key, config.diag_size)
        return gradient_norm_profile(cell, readout, task, params, xs, targets)

    def hook(state):
        return {"grad_norms": np.asarray(grad_norms(state.params))}

    # Seed s has its own initialisation and data order; at a given T, seed s of every cell
    # sees the same data order (a paired comparison across cells).
    group_key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(config.seed), 0), length)

    @jax.jit
    @jax.vmap
    def init_state(key):
        k_init, k_data = jax.random.split(key)
        params = model.init(k_init, task.input_size)
        return training.init_train_state(k_data, params, optimizer, skip_nonfinite=True)

    states = init_state(jax.random.split(group_key, config.num_seeds))
    train_step = training.make_train_step(
        loss_fn, optimizer, skip_nonfinite=True, learning_rate=config.learning_rate
    )
    group_config = {**dataclasses.asdict(config), "cell": cell_name, "length": length}
    t0 = time.perf_counter()
    result = training.fit(
        train_step,
        states,
        batch_fn,
        config.num_steps,
        run_dir=group_dir,
        config=group_config,
        eval_fn=eval_fn,
        hooks=[hook],
        schedule=training.Schedule(
            chunk_size=config.eval_every,
            eval_every=config.eval_every,
            checkpoint_every=config.checkpoint_every or None,
            hook_every=config.eval_every,
            keep_checkpoints=1,
        ),
        progress=progress,
    )
    wall = time.perf_counter() - t0

    train_rows = [r for r in result.history if "loss" in r]
    eval_rows = [r for r in result.history if "eval/loss" in r]
    hook_rows = [r for r in result.history if "grad_norms" in r]
    final_eval = eval_rows[-1]
    return {
        "cell": cell_name,
        "T": length,
        "baseline_loss": task.baseline_loss,
        "wall_time_s": wall,
        "train_loss": np.asarray(
            [r["loss"] for r in train_rows], np.float64
        ).T.tolist(),  # (N, steps)
        "eval_steps": [r["step"] for r in eval_rows],
        "eval_loss": np.asarray([r["eval/loss"] for r in eval_rows]).T.tolist(),  # (N, evals)
        "final_test_loss": list(np.atleast_1d(final_eval["eval/loss"])),
        "final_accuracy": (
            list(np.atleast_1d(final_eval["eval/accuracy"]))
            if "eval/accuracy" in final_eval
            else None
        ),
        "nonfinite_skipped": list(np.atleast_1d(train_rows[-1].get("nonfinite_count", 0))),
        "hook_steps": [r["step"] for r in hook_rows],
        "grad_norms": [r["grad_norms"] for r in hook_rows],  # (evals, N, T)
    }


# ----------------------------------------------------------------------- records, table


def grad_ratio(norms: Any) -> float:
    """Returns ||dL/dh_1|| / ||dL/dh_T|| from the (T,) per-step gradient norms.

    For a cell whose output is read from its new state inside the step (the LRU:
    ``y_t = Re(h_t C) + x_t D``), a loss on the outputs gives row T nothing (the carry leaving
    the last step feeds no output; :func:`rnnjax.diagnostics.state_gradients`): its last
    state to receive the loss is ``h_{T-1}``, and the ratio is taken against that row.
    """
    norms = np.asarray(norms, np.float64)
    last = norms[-1] if norms[-1] > 0 or len(norms) < 2 else norms[-2]
    return float(norms[0] / last) if last > 0 else float("nan")


def records_of(config: Config, group: dict) -> list[dict]:
    """Returns one results.json record per seed of a group."""
    out = []
    for s in range(config.num_seeds):
        loss = float(group["final_test_loss"][s])
        rec = {
            "task": config.task,
            "cell": group["cell"],
            "T": group["T"],
            "seed": s,
            "steps": config.num_steps,
            "final_test_loss": loss,
            "baseline_loss": group["baseline_loss"],
            "loss_over_baseline": loss / group["baseline_loss"],
            "solved": bool(loss <= config.solved_fraction * group["baseline_loss"]),
            "grad_ratio_init": grad_ratio(group["grad_norms"][0][s]),
            "grad_ratio_final": grad_ratio(group["grad_norms"][-1][s]),
            "nonfinite_updates_skipped": int(group["nonfinite_skipped"][s]),
        }
        if group["final_accuracy"] is not None:
            rec["final_accuracy"] = float(group["final_accuracy"][s])
        out.append(rec)
    return out


def _sci(x: float) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.1e}"


def _cell_by_length(
    config: Config, records: list[dict], entry: Callable[[list[dict]], str]
) -> list[str]:
    """Returns markdown table lines: one row per cell, one column per T, ``entry(records)`` in each."""
    lines = [
        "| cell | " + " | ".join(f"T={t}" for t in config.lengths) + " |",
        "|---|" + "---|" * len(config.lengths),
    ]
    for cell in config.cells:
        row = [LABELS[cell]]
        for t in config.lengths:
            rs = [r for r in records if r["cell"] == cell and r["T"] == t]
            row.append(entry(rs) if rs else "–")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def summary_table(config: Config, records: list[dict]) -> str:
    """Returns the markdown tables: loss / baseline (solved fraction) and gradient ratios."""

    def loss_entry(rs):
        med = np.median([r["loss_over_baseline"] for r in rs])
        return f"{med:.3f} ({sum(r['solved'] for r in rs)}/{len(rs)})"

    def ratio_entry(rs):
        a = np.median([r["grad_ratio_init"] for r in rs])
        b = np.median([r["grad_ratio_final"] for r in rs])
        return f"{_sci(a)} → {_sci(b)}"

    lines = _cell_by_length(config, records, loss_entry)
    lines += [
        "",
        "Gradient reaching the first step, median over seeds of "
        "||dL/dh_1|| / ||dL/dh_T||, at initialisation → after training:",
        "",
    ]
    lines += _cell_by_length(config, records, ratio_entry)
    if any("final_accuracy" in r for r in records):
        chance = {
            "copy": " (on the 10 recalled symbols; chance 1/8)",
            "temporal_order": " (chance 1/4)",
        }.get(config.task, "")
        lines += ["", f"Median final test accuracy{chance}:", ""]
        lines += _cell_by_length(
            config, records, lambda rs: f"{np.median([r['final_accuracy'] for r in rs]):.3f}"
        )
    return "\n".join(lines)


def verdict(config: Config, records: list[dict]) -> list[str]:
    """Returns the verdict lines: does the vanilla RNN fail at long T where gated cells succeed?"""
    t_long, t_short = max(config.lengths), min(config.lengths)
    med = lambda cell, t: float(
        np.median([r["loss_over_baseline"] for r in records if r["cell"] == cell and r["T"] == t])
    )
    frac = config.solved_fraction
    have = {c for c in ("elman", "lstm", "gru") if c in config.cells}
    lines = []
    if "elman" in have:
        e = med("elman", t_long)
        lines.append(
            f"vanilla RNN at T={t_long}: median test loss {e:.2f} x baseline "
            f"({'FAILS, as expected' if e >= 0.5 else 'does not fail'})"
        )
    for c in sorted(have - {"elman"}):
        g = med(c, t_long)
        lines.append(
            f"{LABELS[c]} at T={t_long}: {g:.3f} x baseline "
            f"({'solves it' if g <= frac else 'does not reach ' + str(frac)})"
        )
    # The control (every cell solves the shortest T) exists only when a shorter T was run.
    short = {c: med(c, t_short) for c in have} if t_short < t_long else {}
    if short:
        lines.append(
            f"at T={t_short}: "
            + ", ".join(f"{LABELS[c]} {v:.3f}" for c, v in short.items())
            + (
                " (all solve it)"
                if all(v <= frac for v in short.values())
                else " (not all solve it)"
            )
        )
    if {"elman", "lstm"} <= have:
        ge = np.median(
            [r["grad_ratio_init"] for r in records if r["cell"] == "elman" and r["T"] == t_long]
        )
        gl = np.median(
            [r["grad_ratio_init"] for r in records if r["cell"] == "lstm" and r["T"] == t_long]
        )
        lines.append(
            f"gradient at step 1 / step T at init, T={t_long}: vanilla {_sci(ge)}, "
            f"LSTM {_sci(gl)} ({math.log10(gl / ge):+.1f} orders of magnitude)"
            if ge > 0 and gl > 0
            else "gradient ratios at init: not finite"
        )
    # Cells linear in their state: does a linear recurrence solve the longest T, and how much
    # gradient reaches its first step? (Not part of the verdict on the vanishing-gradient effect.)
    ratio = lambda cell, which: float(
        np.median([r[which] for r in records if r["cell"] == cell and r["T"] == t_long])
    )
    for c in (c for c in ("lru", "mingru") if c in config.cells):
        g = med(c, t_long)
        lines.append(
            f"{LABELS[c]} (linear in its state) at T={t_long}: {g:.3f} x baseline "
            f"({'solves it' if g <= frac else 'does not reach ' + str(frac)}); "
            f"||dL/dh_1|| / ||dL/dh_T|| {_sci(ratio(c, 'grad_ratio_init'))} at init, "
            f"{_sci(ratio(c, 'grad_ratio_final'))} after training"
        )
    shown = (
        "elman" in have
        and med("elman", t_long) >= 0.5
        and all(med(c, t_long) <= frac for c in have - {"elman"})
        and all(v <= frac for v in short.values())
    )
    lines.insert(
        0,
        "VERDICT: the vanishing-gradient effect " + ("IS" if shown else "is NOT") + " reproduced.",
    )
    return lines


# --------------------------------------------------------------------------------- figures


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Returns the moving average of ``x`` over ``width`` steps (valid part only)."""
    width = max(1, min(width, len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    return (c[width:] - c[:-width]) / width


def make_figures(
    config: Config, groups: list[dict], records: list[dict], fig_dir: str
) -> list[str]:
    """Writes the PNG figures and returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(fig_dir, exist_ok=True)
    paths = []
    by = {(g["cell"], g["T"]): g for g in groups}
    t_long = max(config.lengths)
    frac = config.solved_fraction

    def save(fig, name):
        path = os.path.join(fig_dir, name)
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        paths.append(path)

    def loss_vs_t(ax):
        for cell in config.cells:
            ts = [t for t in config.lengths if (cell, t) in by]
            per_seed = [
                [r["loss_over_baseline"] for r in records if r["cell"] == cell and r["T"] == t]
                for t in ts
            ]
            ax.plot(
                ts, [np.median(v) for v in per_seed], "o-", color=COLORS[cell], label=LABELS[cell]
            )
            for t, v in zip(ts, per_seed):
                ax.scatter([t] * len(v), v, s=10, color=COLORS[cell], alpha=0.4)
        ax.axhline(1.0, color="k", ls="--", lw=1, label="memoryless baseline")
        ax.axhline(frac, color="gray", ls=":", lw=1, label=f"solved ({frac:g} x baseline)")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("final test loss / baseline")
        ax.legend(fontsize=8, loc="center right")

    def grad_profile(ax, cell, t, which, style, label):
        g = by[(cell, t)]
        norms = np.median(np.asarray(g["grad_norms"][which], np.float64), axis=0)
        ax.semilogy(np.arange(1, len(norms) + 1), norms, style, color=COLORS[cell], label=label)

    fig, ax = plt.subplots(figsize=(5, 4))
    loss_vs_t(ax)
    ax.set_title(f"{config.task}: final loss vs T (median, dots = seeds)")
    save(fig, "final_loss_vs_T.png")

    fig, axes = plt.subplots(
        1, len(config.lengths), figsize=(4 * len(config.lengths), 3.5), squeeze=False, sharey=True
    )
    for ax, t in zip(axes[0], config.lengths):
        for cell in config.cells:
            if (cell, t) not in by:
                continue
            g = by[(cell, t)]
            curve = np.median(np.asarray(g["train_loss"], np.float64), axis=0) / g["baseline_loss"]
            w = max(1, len(curve) // 50)
            ax.plot(
                np.arange(len(curve) - w + 1) + w,
                _smooth(curve, w),
                color=COLORS[cell],
                label=LABELS[cell],
                lw=1,
            )
        ax.axhline(1.0, color="k", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_ylim(top=10.0)  # an early exploding step (IRNN) would squash the rest
        ax.set_title(f"T = {t}")
        ax.set_xlabel("training step")
    axes[0][0].set_ylabel("training loss / baseline (median over seeds)")
    axes[0][0].legend(fontsize=8)
    save(fig, "learning_curves.png")

    def grid():
        return plt.subplots(
            1, len(config.cells), figsize=(4.5 * len(config.cells), 3.5), squeeze=False
        )[1][0]

    axes = grid()
    for ax, cell in zip(axes, config.cells):
        if (cell, t_long) in by:
            g = np.asarray(by[(cell, t_long)]["grad_norms"], np.float64)  # (evals, seeds, T)
            plots.gradient_norms(
                {
                    "at initialisation": np.median(g[0], axis=0),
                    "after training": np.median(g[-1], axis=0),
                },
                ax=ax,
                title=f"{LABELS[cell]}, T = {t_long}",
                ylabel=r"$\|\partial L / \partial \mathrm{state}_t\|$ (median over seeds)",
            )
    save(axes[0].figure, "gradient_norms.png")

    axes = grid()
    for ax, cell in zip(axes, config.cells):
        if (cell, t_long) in by:
            g = by[(cell, t_long)]
            plots.gradient_heatmap(
                np.median(np.asarray(g["grad_norms"], np.float64), axis=1),
                train_steps=g["hook_steps"],
                ax=ax,
                title=f"{LABELS[cell]}, T = {t_long}",
            )
    save(axes[0].figure, "gradient_heatmap.png")

    # The story at a glance: who solves long T, and how much gradient reaches early steps.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    loss_vs_t(a1)
    a1.set_title("Who learns the long-range dependency")
    for cell in config.cells:
        if (cell, t_long) in by:
            grad_profile(a2, cell, t_long, 0, ":", None)
            grad_profile(a2, cell, t_long, -1, "-", LABELS[cell])
    a2.set_xlabel("time step t")
    a2.set_ylabel("||dL/dh_t||")
    a2.set_title(f"Gradient reaching step t, T = {t_long} (dotted: init)")
    a2.legend(fontsize=8)
    fig.suptitle(f"Vanishing gradients on the {config.task} task", fontweight="bold", y=1.02)
    save(fig, "summary.png")
    return paths


# ------------------------------------------------------------------------------------ main


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, default=lambda o: np.asarray(o).tolist())
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    """Runs the study; returns ``{"records", "verdict", "run_dir"}``."""
    config, args = parse_args(argv)
    run_dir = os.path.abspath(args.run_dir)
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    config_dict = json.loads(json.dumps(dataclasses.asdict(config)))
    if os.path.exists(config_path):
        with open(config_path) as f:
            saved = json.load(f)
        if saved != config_dict:
            changed = sorted(k for k in config_dict if saved.get(k) != config_dict[k])
            raise SystemExit(
                f"{config_path} holds a different config (fields {changed}); "
                f"pass a new --run-dir or delete that directory"
            )
    else:
        _write_json(config_path, config_dict)

    t_start = time.perf_counter()
    groups = []
    todo = [(c, t) for t in config.lengths for c in config.cells]
    for i, (cell, t) in enumerate(todo, 1):
        group_dir = os.path.join(run_dir, f"{cell}_T{t}")
        done_path = os.path.join(group_dir, "group.json")
        if os.path.exists(done_path):
            with open(done_path) as f:
                groups.append(json.load(f))
            print(f"[{i}/{len(todo)}] {cell} T={t}: done earlier, loaded", file=sys.stderr)
            continue
        print(
            f"[{i}/{len(todo)}] {cell} T={t}: training {config.num_seeds} seeds x "
            f"{config.num_steps} steps",
            file=sys.stderr,
        )
        group = run_group(config, cell, t, group_dir, args.progress)
        _write_json(done_path, group)
        groups.append(group)
        r = group["final_test_loss"]
        print(
            "    test loss / baseline: "
            + " ".join(f"{x / group['baseline_loss']:.3f}" for x in r)
            + f"  ({group['wall_time_s']:.0f} s)",
            file=sys.stderr,
        )

    records = [rec for g in groups for rec in records_of(config, g)]
    _write_json(os.path.join(run_dir, "results.json"), records)
    lines = verdict(config, records)
    table = summary_table(config, records)
    wall = time.perf_counter() - t_start
    summary = "\n".join(
        [
            f"# Vanishing gradients: {config.task}",
            "",
            "Median final test loss / baseline (the memoryless baseline: "
            + ", ".join(
                f"{g['baseline_loss']:.4g} at T={g['T']}"
                for g in groups
                if g["cell"] == config.cells[0]
            )
            + "), and the number of seeds solved (loss <= "
            f"{config.solved_fraction:g} x baseline), after {config.num_steps} steps:",
            "",
            table,
            "",
            *[f"- {ln}" if i else f"**{ln}**" for i, ln in enumerate(lines)],
            "",
            f"Config: `{json.dumps(config_dict)}`",
            "",
            f"Wall time of this invocation: {wall:.0f} s.",
            "Figures: figures/summary.png, final_loss_vs_T.png, learning_curves.png, "
            "gradient_norms.png, gradient_heatmap.png (||dL/dh_t|| over training).",
            "",
        ]
    )
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write(summary)
    make_figures(config, groups, records, os.path.join(run_dir, "figures"))
    print(table)
    print()
    print("\n".join(lines))
    print(f"\nResults in {run_dir} ({wall:.0f} s)")
    return {"records": records, "verdict": lines, "run_dir": run_dir}


if __name__ == "__main__":
    main()
