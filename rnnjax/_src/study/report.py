"""The study's results: records, the summary tables, the verdicts, the figures."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from rnnjax._src import registry, runs
from rnnjax._src.study.config import Config, StudyCell


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


def _long_lag_fraction(lag_norms: Any) -> float:
    """Returns Σ_{d >= L/2} ||g_d|| / Σ_d ||g_d||: the share of the lag components' norms
    from dependencies at least half the input sequence (``L`` lags) back."""
    norms = np.asarray(lag_norms, np.float64)
    total = norms.sum()
    return float(norms[len(norms) // 2 :].sum() / total) if total > 0 else float("nan")


def _records_of(config: Config, group: dict) -> list[dict]:
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
            "jacobian_norm_first_init": float(group["jacobian_norms_init"][s][0]),
            "lyapunov_max_init": float(group["lyapunov_init"][s][0]),
            "long_lag_fraction_init": _long_lag_fraction(group["lag_norms_init"][s]),
            "long_lag_fraction_final": _long_lag_fraction(group["lag_norms_final"][s]),
        }
        if group["final_accuracy"] is not None:
            rec["final_accuracy"] = float(group["final_accuracy"][s])
        out.append(rec)
    return out


def _sci(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.1e}"


def _median(records: Sequence[dict], key: str, cell: str, length: int) -> float:
    return float(np.median([r[key] for r in records if r["cell"] == cell and r["T"] == length]))


def _cell_by_length(
    config: Config,
    cells: Sequence[StudyCell],
    records: list[dict],
    entry: Callable[[list[dict]], str],
) -> list[str]:
    """Returns markdown table lines: one row per cell, one column per T, ``entry(records)`` in each."""
    lines = [
        "| cell | " + " | ".join(f"T={t}" for t in config.lengths) + " |",
        "|---|" + "---|" * len(config.lengths),
    ]
    for cell in cells:
        row = [cell.label]
        for t in config.lengths:
            rs = [r for r in records if r["cell"] == cell.name and r["T"] == t]
            row.append(entry(rs) if rs else "–")
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _summary_table(config: Config, cells: Sequence[StudyCell], records: list[dict]) -> str:
    """Returns the markdown tables: loss / baseline (solved), gradient ratios, init diagnostics."""

    def loss_entry(rs):
        med = np.median([r["loss_over_baseline"] for r in rs])
        return f"{med:.3f} ({sum(r['solved'] for r in rs)}/{len(rs)})"

    def pair(rs, a, b, fmt):
        return f"{fmt(np.median([r[a] for r in rs]))} → {fmt(np.median([r[b] for r in rs]))}"

    table = lambda entry: _cell_by_length(config, cells, records, entry)
    lines = table(loss_entry)
    lines += [
        "",
        "Gradient reaching the first step, median over seeds of "
        "||dL/dh_1|| / ||dL/dh_T||, at initialisation → after training:",
        "",
    ]
    lines += table(lambda rs: pair(rs, "grad_ratio_init", "grad_ratio_final", _sci))
    if any(not np.isfinite(r[k]) for r in records for k in ("grad_ratio_init", "grad_ratio_final")):
        lines += [
            "",
            "n/a: ||dL/dh_T|| = 0 in at least one seed: its loss is 0 in float32 (solved outright), "
            "so no gradient reaches any step and the ratio is undefined.",
        ]
    if any("final_accuracy" in r for r in records):
        chance = {
            "copy": " (on the 10 recalled symbols; chance 1/8)",
            "temporal_order": " (chance 1/4)",
        }.get(config.task, "")
        lines += ["", f"Median final test accuracy{chance}:", ""]
        lines += table(lambda rs: f"{np.median([r['final_accuracy'] for r in rs]):.3f}")
    lines += [
        "",
        "At initialisation, median over seeds: ||dh_T/dh_1|| (spectral norm of the Jacobian "
        "product, geometric mean over sequences) / the top Lyapunov exponent (nats per step):",
        "",
    ]
    lines += table(
        lambda rs: (
            f"{_sci(float(np.median([r['jacobian_norm_first_init'] for r in rs])))} / "
            f"{np.median([r['lyapunov_max_init'] for r in rs]):+.3f}"
        )
    )
    lines += [
        "",
        "Share of the parameter gradient's lag components (norms) from lags >= half the "
        "sequence (Pascanu et al. 2013, eqs. 3-5), at initialisation → after training:",
        "",
    ]
    fraction = lambda x: f"{x:.2f}"
    lines += table(
        lambda rs: pair(rs, "long_lag_fraction_init", "long_lag_fraction_final", fraction)
    )
    return "\n".join(lines)


def verdict(config: Config, records: list[dict]) -> list[str]:
    """Returns the verdict lines: does the vanilla RNN fail at long T where gated cells succeed?

    Uses the baselines ``elman``, ``lstm`` and ``gru`` of ``records`` (other cells do not
    change it); the first line starts with ``VERDICT:``.
    """
    t_long, t_short = max(config.lengths), min(config.lengths)
    med = lambda cell, t: _median(records, "loss_over_baseline", cell, t)
    frac = config.solved_fraction
    label = lambda c: registry.CELLS[c].label
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
            f"{label(c)} at T={t_long}: {g:.3f} x baseline "
            f"({'solves it' if g <= frac else 'does not reach ' + str(frac)})"
        )
    # The control (every cell solves the shortest T) exists only when a shorter T was run.
    # In table order (a set's order of strings changes from one process to the next).
    ordered = [c for c in ("elman", "lstm", "gru") if c in have]
    short = {c: med(c, t_short) for c in ordered} if t_short < t_long else {}
    if short:
        lines.append(
            f"at T={t_short}: "
            + ", ".join(f"{label(c)} {v:.3f}" for c, v in short.items())
            + (
                " (all solve it)"
                if all(v <= frac for v in short.values())
                else " (not all solve it)"
            )
        )
    if {"elman", "lstm"} <= have:
        ge = _median(records, "grad_ratio_init", "elman", t_long)
        gl = _median(records, "grad_ratio_init", "lstm", t_long)
        lines.append(
            f"gradient at step 1 / step T at init, T={t_long}: vanilla {_sci(ge)}, "
            f"LSTM {_sci(gl)} ({math.log10(gl / ge):+.1f} orders of magnitude)"
            if ge > 0 and gl > 0
            else "gradient ratios at init: not finite"
        )
    # Cells linear in their state: does a linear recurrence solve the longest T, and how much
    # gradient reaches its first step? (Not part of the verdict on the vanishing-gradient effect.)
    for c in (c for c in ("lru", "mingru") if c in config.cells):
        g = med(c, t_long)
        lines.append(
            f"{label(c)} (linear in its state) at T={t_long}: {g:.3f} x baseline "
            f"({'solves it' if g <= frac else 'does not reach ' + str(frac)}); "
            f"||dL/dh_1|| / ||dL/dh_T|| "
            f"{_sci(_median(records, 'grad_ratio_init', c, t_long))} at init, "
            f"{_sci(_median(records, 'grad_ratio_final', c, t_long))} after training"
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


def cell_verdict(config: Config, records: list[dict], cell: str, label: str | None = None) -> str:
    """Returns one line: does ``cell`` learn the longest T, and does as much gradient reach
    its first step at initialisation as in the gated baselines?

    The rule, at the longest T: the cell *learns it* when its median loss / baseline is
    <= ``config.solved_fraction``; it *keeps the gradient* when its median
    ||dL/dh_1|| / ||dL/dh_T|| at initialisation is at least the smallest median of the
    gated baselines run (LSTM, GRU). Without a gated baseline, only the first part.
    """
    t_long = max(config.lengths)
    frac = config.solved_fraction
    loss = _median(records, "loss_over_baseline", cell, t_long)
    solved = sum(r["solved"] for r in records if r["cell"] == cell and r["T"] == t_long)
    runs = sum(1 for r in records if r["cell"] == cell and r["T"] == t_long)
    line = (
        f"VERDICT for {label or cell}: at T={t_long}, {loss:.3f} x baseline "
        f"({solved}/{runs} seeds solved): "
        + ("LEARNS the long dependency" if loss <= frac else "does NOT learn the long dependency")
    )
    gated = [c for c in ("lstm", "gru") if c in config.cells]
    if gated:
        ratio = _median(records, "grad_ratio_init", cell, t_long)
        reference = {c: _median(records, "grad_ratio_init", c, t_long) for c in gated}
        keeps = ratio >= min(reference.values())
        line += (
            f"; gradient reaching step 1 at init {_sci(ratio)} vs "
            + ", ".join(f"{registry.CELLS[c].label} {_sci(v)}" for c, v in reference.items())
            + (": KEEPS" if keeps else ": LOSES")
            + " long-range gradient like the gated baselines"
        )
    return line


# --------------------------------------------------------------------------------- figures


def _smooth(x: np.ndarray, width: int) -> np.ndarray:
    """Returns the moving average of ``x`` over ``width`` steps (valid part only)."""
    width = max(1, min(width, len(x)))
    c = np.cumsum(np.insert(x, 0, 0.0))
    return (c[width:] - c[:-width]) / width


def _pyplot():
    """Returns matplotlib.pyplot (Agg), or raises ImportError saying which extra installs it."""
    try:
        import matplotlib  # noqa: F401  (only: is it installed?)
    except ImportError as e:
        raise ImportError(
            "the study's figures need matplotlib: pip install 'rnnjax[experiments]'"
        ) from e
    return runs.pyplot()


def make_figures(
    config: Config,
    cells: Sequence[StudyCell],
    groups: list[dict],
    records: list[dict],
    run_dir: str,
) -> list[str]:
    """Writes the PNG figures into ``run_dir/figures`` and returns their paths."""
    from rnnjax._src import plots

    plt = _pyplot()
    paths = []
    by = {(g["cell"], g["T"]): g for g in groups}
    t_long = max(config.lengths)
    frac = config.solved_fraction

    def save(fig, name):
        paths.append(runs.save_figure(fig, run_dir, name))

    def loss_vs_t(ax):
        for cell in cells:
            ts = [t for t in config.lengths if (cell.name, t) in by]
            per_seed = [
                [r["loss_over_baseline"] for r in records if r["cell"] == cell.name and r["T"] == t]
                for t in ts
            ]
            ax.plot(ts, [np.median(v) for v in per_seed], "o-", color=cell.color, label=cell.label)
            for t, v in zip(ts, per_seed):
                ax.scatter([t] * len(v), v, s=10, color=cell.color, alpha=0.4)
        ax.axhline(1.0, color="k", ls="--", lw=1, label="memoryless baseline")
        ax.axhline(frac, color="gray", ls=":", lw=1, label=f"solved ({frac:g} x baseline)")
        ax.set_yscale("log")
        ax.set_xlabel("sequence length T")
        ax.set_ylabel("final test loss / baseline")
        ax.legend(fontsize=8, loc="center right")

    def grad_profile(ax, cell, t, which, style, label):
        g = by[(cell.name, t)]
        norms = np.median(np.asarray(g["grad_norms"][which], np.float64), axis=0)
        ax.semilogy(np.arange(1, len(norms) + 1), norms, style, color=cell.color, label=label)

    fig, ax = plt.subplots(figsize=(5, 4))
    loss_vs_t(ax)
    ax.set_title(f"{config.task}: final loss vs T (median, dots = seeds)")
    save(fig, "final_loss_vs_T.png")

    fig, axes = plt.subplots(
        1, len(config.lengths), figsize=(4 * len(config.lengths), 3.5), squeeze=False, sharey=True
    )
    for ax, t in zip(axes[0], config.lengths):
        for cell in cells:
            if (cell.name, t) not in by:
                continue
            g = by[(cell.name, t)]
            curve = np.median(np.asarray(g["train_loss"], np.float64), axis=0) / g["baseline_loss"]
            w = max(1, len(curve) // 50)
            ax.plot(
                np.arange(len(curve) - w + 1) + w,
                _smooth(curve, w),
                color=cell.color,
                label=cell.label,
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
        return plt.subplots(1, len(cells), figsize=(4.5 * len(cells), 3.5), squeeze=False)[1][0]

    axes = grid()
    for ax, cell in zip(axes, cells):
        if (cell.name, t_long) in by:
            g = np.asarray(by[(cell.name, t_long)]["grad_norms"], np.float64)  # (evals, seeds, T)
            plots.gradient_norms(
                {
                    "at initialisation": np.median(g[0], axis=0),
                    "after training": np.median(g[-1], axis=0),
                },
                ax=ax,
                title=f"{cell.label}, T = {t_long}",
                ylabel=r"$\|\partial L / \partial \mathrm{state}_t\|$ (median over seeds)",
            )
    save(axes[0].figure, "gradient_norms.png")

    axes = grid()
    for ax, cell in zip(axes, cells):
        if (cell.name, t_long) in by:
            g = by[(cell.name, t_long)]
            plots.gradient_heatmap(
                np.median(np.asarray(g["grad_norms"], np.float64), axis=1),
                train_steps=g["hook_steps"],
                ax=ax,
                title=f"{cell.label}, T = {t_long}",
            )
    save(axes[0].figure, "gradient_heatmap.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for cell in cells:
        if (cell.name, t_long) in by:
            g = by[(cell.name, t_long)]
            for key, style, label in (
                ("lag_norms_init", ":", None),
                ("lag_norms_final", "-", cell.label),
            ):
                norms = np.median(np.asarray(g[key], np.float64), axis=0)
                ax.semilogy(np.arange(len(norms)), norms, style, color=cell.color, label=label)
    ax.set_xlabel("time lag d = t - k")
    ax.set_ylabel("||component of dL/dθ from lag d||")
    ax.set_title(f"Parameter gradient by time lag, T = {t_long} (dotted: init)")
    ax.legend(fontsize=8)
    save(fig, "gradient_by_lag.png")

    # The story at a glance: who solves long T, and how much gradient reaches early steps.
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    loss_vs_t(a1)
    a1.set_title("Who learns the long-range dependency")
    for cell in cells:
        if (cell.name, t_long) in by:
            grad_profile(a2, cell, t_long, 0, ":", None)
            grad_profile(a2, cell, t_long, -1, "-", cell.label)
    a2.set_xlabel("time step t")
    a2.set_ylabel("||dL/dh_t||")
    a2.set_title(f"Gradient reaching step t, T = {t_long} (dotted: init)")
    a2.legend(fontsize=8)
    fig.suptitle(f"Vanishing gradients on the {config.task} task", fontweight="bold", y=1.02)
    save(fig, "summary.png")
    return paths


# ------------------------------------------------------------------------------------ run
