"""Tallec & Ollivier (2018), "Can recurrent neural networks warp time?" (ICLR 2018): the chrono
initialisation of the LSTM on the copy task.

Claims reproduced (Section 5, Fig. 3, copy task): with the chrono initialisation — forget-gate
biases b_f = log U[1, T_max - 1] and input-gate biases b_i = -b_f, T_max = 3T/2 — an LSTM
learns the copy task at long T (500, 2000 in the paper), going far below the memoryless
baseline 10 ln 8 / (T + 20), while the same LSTM with a standard initialisation (forget bias
1 here) stays at that baseline. And the mechanism (Sections 3-4): the chrono biases spread
the forgetting times over [1, T_max], so at initialisation the loss gradient reaches the
first steps, where the symbols are, instead of vanishing within a few steps.

Setup: the copy-memory task of Arjovsky, Shah & Bengio (2016) as ``rnnjax.tasks.copy_memory``
(``num_symbols`` symbols from an alphabet of 8, T blanks, a delimiter, recall; the loss
is the cross-entropy averaged over all T + 2 * num_symbols steps; its memoryless baseline
is num_symbols ln 8 / (T + 2 num_symbols)); one LSTM layer (``rnnjax.lstm(H)`` against
``rnnjax.lstm(H, chrono_t_max=3T/2)``) and a linear readout at every step; every seed of
both initialisations trained as one vmapped program with :func:`rnnjax.training.fit`.
We also measure, at initialisation, how much of the recall loss's gradient reaches the
state after the symbols were read, ||dL/dh_K|| / ||dL/dh_T|| (K = num_symbols;
:func:`rnnjax.diagnostics.state_gradient_norms`): the mechanism the chrono
initialisation acts on.

Usage::

    python -m experiments.reproduce.tallec2018_chrono                  # quick preset
    python -m experiments.reproduce.tallec2018_chrono --preset full    # T = 500, 128 units, 10 symbols
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from rnnjax import diagnostics, readouts, training
from rnnjax._src import runs, tasks
from rnnjax._src.runs import Claim, option

PAPER = "Tallec & Ollivier 2018"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json``."""

    num_blanks: int = option(
        200, "T, the blanks between the symbols and the recall (paper: 500, 2000)"
    )
    num_symbols: int = option(3, "symbols to copy (paper: 10)")
    hidden_size: int = option(32, "LSTM units (paper: 128)")
    chrono_factor: float = option(1.5, "T_max = chrono_factor x T (paper: 3/2)")
    batch_size: int = option(32, "sequences per step")
    num_steps: int = option(1000, "optimizer steps")
    optimizer: str = option("adam", "adam or rmsprop")
    learning_rate: float = option(3e-3, "learning rate")
    num_seeds: int = option(2, "seeds per initialisation")
    eval_every: int = option(100, "steps between test-loss measurements")
    test_size: int = option(500, "held-out test sequences")
    beats_fraction: float = option(0.5, "'below the baseline': test loss <= this x baseline")
    seed: int = option(0, "master seed")


PRESETS = {
    "quick": {},
    # T = 500, the paper's shorter copy task, with its 10 symbols; 64 units (paper: 128)
    # and the steps that fit in about 30 minutes here.
    "full": dict(
        num_blanks=500,
        num_symbols=10,
        hidden_size=64,
        num_steps=2000,
        learning_rate=1e-3,
        eval_every=200,
        num_seeds=2,
    ),
    # A smoke test of the plumbing in seconds (tests, `run_all.py --preset tiny`); its
    # numbers mean nothing.
    "tiny": dict(
        num_blanks=4,
        num_symbols=2,
        hidden_size=3,
        batch_size=4,
        num_steps=4,
        eval_every=2,
        test_size=8,
        num_seeds=1,
    ),
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field out of range."""
    runs.check_positive(
        config,
        "num_blanks",
        "num_symbols",
        "hidden_size",
        "chrono_factor",
        "batch_size",
        "num_steps",
        "learning_rate",
        "num_seeds",
        "eval_every",
        "test_size",
        "beats_fraction",
    )
    if config.optimizer not in ("adam", "rmsprop"):
        raise ValueError(f"optimizer must be 'adam' or 'rmsprop', got {config.optimizer!r}")


def train(config: Config, inits: dict[str, rnnjax.Cell], task: tasks.Task, key: jax.Array) -> dict:
    """Returns, per initialisation, the test-loss curves ``(seeds, evals)`` and the gradient ratio at init.

    The cells differ only in how they initialise (their step is the same LSTM), so every
    (initialisation, seed) run is one vmapped program; seed s has the same data order
    under every initialisation.
    """
    cells = list(inits.values())
    if any(c.kind != cells[0].kind for c in cells):
        raise ValueError("the initialisations must share one step equation (cell.kind)")
    models_ = {
        n: rnnjax.many_to_many(rnnjax.recurrent(c), readouts.linear(task.output_size))
        for n, c in inits.items()
    }
    model = next(iter(models_.values()))
    optimizer = getattr(optax, config.optimizer)(config.learning_rate)
    test_xs, test_targets = tasks.sample_batch(task, jax.random.fold_in(key, 1), config.test_size)

    def mean_loss(params, xs, targets):
        outputs = jax.vmap(lambda x: model.apply(params, x))(xs)
        return jnp.mean(jax.vmap(task.loss)(outputs, targets)), outputs

    def loss_fn(params, batch, key):
        del key
        return mean_loss(params, *batch)[0], {}

    def eval_fn(params, key):
        del key
        loss, outputs = mean_loss(params, test_xs, test_targets)
        return {"loss": loss, "accuracy": jnp.mean(jax.vmap(task.accuracy)(outputs, test_targets))}

    seed_keys = jax.random.split(jax.random.fold_in(key, 0), config.num_seeds)
    states = [
        training.init_train_state(jax.random.fold_in(k, 1), m.init(k, task.input_size), optimizer)
        for m in models_.values()
        for k in seed_keys
    ]
    states = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    ratio = jax.jit(
        jax.vmap(
            lambda p: recall_gradient(
                cells[0], p, task, config.num_symbols, test_xs[:16], test_targets[:16]
            )
        )
    )(states.params)
    result = training.fit(
        training.make_train_step(loss_fn, optimizer),
        states,
        lambda k, step: tasks.sample_batch(task, k, config.batch_size),
        config.num_steps,
        eval_fn=eval_fn,
        progress=None,
        schedule=training.Schedule(chunk_size=config.eval_every, eval_every=config.eval_every),
    )
    rows = [r for r in result.history if "eval/loss" in r]
    losses = np.asarray([r["eval/loss"] for r in rows], np.float64).T  # (runs, evals)
    accuracy = np.asarray([r["eval/accuracy"] for r in rows], np.float64).T
    n = config.num_seeds
    return {
        name: {
            "steps": [r["step"] for r in rows],
            "test_loss": losses[i * n : (i + 1) * n],
            "accuracy": accuracy[i * n : (i + 1) * n],
            "grad_ratio_init": np.asarray(ratio, np.float64)[i * n : (i + 1) * n],
        }
        for i, name in enumerate(inits)
    }


def recall_gradient(
    cell: rnnjax.Cell,
    params: dict,
    task: tasks.Task,
    num_symbols: int,
    xs: jax.Array,
    targets: jax.Array,
) -> jax.Array:
    """Returns ||dL/dh_K|| / ||dL/dh_T|| averaged over ``xs: (B, T, I)``, L the recall loss.

    L is the cross-entropy of the last ``num_symbols`` outputs only (the recall), h_K the
    state after the K = num_symbols input symbols: how much of the recall's gradient reaches
    the steps that must be remembered, against the last step's.
    """
    readout = readouts.linear(task.output_size)

    def one(x, target):
        def recall_loss(final_carry, ys):
            del final_carry
            logits = readout.apply(params["readout"], ys[-num_symbols:])
            return jnp.mean(
                optax.softmax_cross_entropy_with_integer_labels(logits, target[-num_symbols:])
            )

        norms = diagnostics.state_gradient_norms(cell, params["rnn"], x, recall_loss)
        return norms[num_symbols - 1] / norms[-1]

    return jnp.mean(jax.vmap(one)(xs, targets))


def main(argv: list[str] | None = None) -> dict:
    """Trains both initialisations; returns ``{"claims", "results", "run_dir"}``."""
    config, opts = runs.parse_config(
        Config, PRESETS, argv, description=__doc__ or "", name="reproduce/tallec2018_chrono"
    )
    check_config(config)
    run_dir = runs.open_run_dir(opts.run_dir, config)
    t0 = time.perf_counter()
    task = tasks.copy_memory(config.num_blanks, num_symbols=config.num_symbols)
    t_max = config.chrono_factor * config.num_blanks
    inits = {
        "standard": ("standard (forget bias 1)", rnnjax.lstm(config.hidden_size)),
        "chrono": (
            f"chrono (T_max = {t_max:g})",
            rnnjax.lstm(config.hidden_size, chrono_t_max=t_max),
        ),
    }
    print(
        f"both initialisations x {config.num_seeds} seeds x {config.num_steps} steps",
        file=sys.stderr,
    )
    trained = train(
        config, {n: cell for n, (_, cell) in inits.items()}, task, jax.random.key(config.seed)
    )

    baseline = task.baseline_loss
    final = {n: r["test_loss"][:, -1] / baseline for n, r in trained.items()}
    below = config.beats_fraction

    def first_below(r):
        hits = [
            s
            for s, v in zip(r["steps"], np.median(r["test_loss"], axis=0))
            if v <= below * baseline
        ]
        return hits[0] if hits else None

    ours = (
        f"final test loss / baseline (median of {config.num_seeds} seeds): chrono "
        f"{np.median(final['chrono']):.3f}, standard {np.median(final['standard']):.3f}; "
        f"recall accuracy chrono {np.median(trained['chrono']['accuracy'][:, -1]):.2f}, standard "
        f"{np.median(trained['standard']['accuracy'][:, -1]):.2f} (chance 1/8); first step below "
        f"{below:g} x baseline: chrono {first_below(trained['chrono'])}, standard "
        f"{first_below(trained['standard'])}"
    )
    claim = Claim(
        PAPER,
        "Sec. 5, Fig. 3 (copy task)",
        f"at long T the chrono LSTM goes far below the memoryless baseline; the standard one stays at it "
        f"(here T={config.num_blanks})",
        "chrono → loss ≈ 0; standard ≈ baseline 10 ln 8 / (T + 20), T = 500, 2000",
        ours,
        bool(np.median(final["chrono"]) <= below and np.median(final["standard"]) > below),
        differs=(
            f"T={config.num_blanks}, {config.num_symbols} symbols, {config.hidden_size} units, "
            f"{config.num_steps} {config.optimizer} steps at lr {config.learning_rate:g}, batch "
            f"{config.batch_size}, {config.num_seeds} seeds (paper: T = 500 and 2000, 10 "
            "symbols, 128 units, many more steps); 'far below' is read as <= "
            f"{below:g} x baseline, 'stays at it' as above that."
        ),
    )
    ratio = {n: float(np.median(r["grad_ratio_init"])) for n, r in trained.items()}
    claim_gradient = Claim(
        PAPER,
        "Sec. 3-4 (why chrono works)",
        "chrono biases spread the forgetting times over [1, T_max], so at initialisation the "
        "recall's gradient reaches the stored symbols; forget bias 1 forgets within a few steps",
        "characteristic forgetting times up to T_max (by construction); gradient reach not reported",
        f"recall loss: ||dL/dh_K|| / ||dL/dh_T|| at initialisation (median over seeds): chrono {ratio['chrono']:.2e}, "
        f"standard {ratio['standard']:.2e}",
        bool(ratio["chrono"] >= 1e3 * ratio["standard"]),
        differs="Our reading of the paper's argument as a measurement: 'reaches' is read as "
        "at least 1000x more of the recall's gradient at the symbols than with forget bias 1.",
    )

    plt = runs.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, color in (("standard", "tab:red"), ("chrono", "tab:blue")):
        r = trained[name]
        for s in range(config.num_seeds):
            axes[0].plot(
                r["steps"],
                r["test_loss"][s] / baseline,
                color=color,
                alpha=0.8,
                label=inits[name][0] if s == 0 else None,
            )
            axes[1].plot(r["steps"], r["accuracy"][s], color=color, alpha=0.8)
    axes[0].axhline(1, color="k", ls="--", lw=1, label="memoryless baseline")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("test loss / baseline")
    axes[0].legend(fontsize=8)
    axes[1].axhline(1 / 8, color="k", ls="--", lw=1)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("recall accuracy")
    fig.suptitle(f"Copy task, T = {config.num_blanks}, {config.num_symbols} symbols")
    figure = runs.save_figure(fig, run_dir, "copy_learning_curves")

    table = [
        "| step | " + " | ".join(f"{inits[n][0]}" for n in trained) + " |",
        "|---|" + "---|" * len(trained),
    ]
    for j, step in enumerate(trained["chrono"]["steps"]):
        table.append(
            f"| {step} | "
            + " | ".join(
                f"{np.median(r['test_loss'][:, j]) / baseline:.3f} (acc {np.median(r['accuracy'][:, j]):.2f})"
                for r in trained.values()
            )
            + " |"
        )
    notes = [
        f"Test loss / memoryless baseline ({baseline:.4g}) and recall accuracy, median over seeds:",
        "",
        *table,
        "",
        "||dL/dh_K|| / ||dL/dh_T|| (L: the recall loss, K: the last symbol read) is measured "
        "on 16 test sequences at initialisation.",
        "",
        f"Figure: {os.path.relpath(figure, run_dir)}.",
    ]
    results = {
        "baseline": baseline,
        "t_max": t_max,
        **{f"{n}_{k}": v for n, r in trained.items() for k, v in r.items()},
    }
    claims = [claim, claim_gradient]
    return runs.finish_claims(
        run_dir,
        title=f"{PAPER}: chrono initialisation on the copy task",
        config=config,
        results=results,
        summary=notes,
        started=t0,
        claims=claims,
    )


if __name__ == "__main__":
    main()
