"""Parallel in time on this machine: the sequential scan against the associative scan and Newton.

Methods, in the order this script runs them:

1. Cases. Cells linear in their state (LRU, minGRU, mLSTM, RG-LRU, Mamba's selective SSM
   with N = 16 states per channel): ``rnnjax.recurrent(cell,
   impl="reference")`` (``cell.step`` in ``lax.scan``, one step after another) against
   ``impl="parallel"`` (one ``jax.lax.associative_scan``, O(log T) depth). Nonlinear cells
   (Elman, GRU, sLSTM): the sequential ``"reference"`` and ``"fused"`` loops against Newton's
   method over the whole trajectory, ``"deer"`` (dense Jacobians; Lim et al. 2024),
   ``"quasi-deer"`` (diagonal) and ``"elk"`` (diagonal, damped; Gonzalez et al. 2024),
   each iteration one associative scan (:mod:`rnnjax.parallel_in_time`). Batch ``B`` by
   ``jax.vmap``, inputs ~ N(0, 1) with ``I`` features, default initialisation.
2. Timing. All implementations of one (cell, H, T) are compiled first, then timed in ONE
   process with interleaved, rotated repetitions (``benchmark.interleaved``); the median is
   reported, with the load average, because this machine is shared. Forward: the sum of
   the outputs; forward+backward: its value and gradient with respect to the parameters.
   Memory: XLA's memory analysis of the forward+backward program (arguments, outputs and
   temporaries). Dense DEER is skipped where its Jacobians alone (``B T H² · 4`` bytes)
   exceed ``--dense-limit-gb``.
3. Newton iterations. ``parallel_in_time.evaluate``'s report (iterations, max over the
   batch) for a GRU at initialisation and after a short training run on the adding problem
   (Adam, ``--train-steps`` updates at T = ``--train-length``), evaluated on adding-problem
   inputs of every length.

Usage::

    python -m experiments.benchmark_parallel                  # quick preset: T = 1k, 10k; H = 8
    python -m experiments.benchmark_parallel --preset full    # T up to 100k, H in {8, 32, 128}

Outputs in ``--run-dir`` (default ``runs/benchmark_parallel/<preset>``): ``config.json``,
``results.json``, ``summary.md`` (the tables), ``figures/speedup.png``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

import rnnjax
from experiments import benchmark  # interleaved timing, XLA memory analysis
from experiments import experiment_cli as cli
from rnnjax import parallel_in_time, readouts, tasks, training
from rnnjax._src import runs


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the benchmark; saved as ``config.json`` in the run directory."""

    linear_cells: tuple[str, ...] = cli.field(
        ("lru", "mingru", "mingru-linear", "mlstm", "rg_lru", "selective_ssm"),
        "cells on the associative scan (mingru: log space, as Feng et al.; mingru-linear: the "
        "same recurrence scanned in linear space; mlstm: xLSTM's matrix memory, stabilised; "
        "selective_ssm: N = 16, a (H, 16) state)",
    )
    newton_cells: tuple[str, ...] = cli.field(
        ("elman", "gru", "slstm"), "cells under DEER/quasi-DEER/ELK"
    )
    methods: tuple[str, ...] = cli.field(parallel_in_time.METHODS, "Newton methods timed")
    lengths: tuple[int, ...] = cli.field((1000, 10_000), "sequence lengths T")
    hidden_sizes: tuple[int, ...] = cli.field((8,), "hidden sizes H")
    batch_size: int = cli.field(16, "sequences per batch (vmap)")
    input_size: int = cli.field(4, "input features I")
    reps: int = cli.field(5, "interleaved timing repetitions (median reported)")
    dense_limit_gb: float = cli.field(
        2.0, "skip dense DEER when B T H^2 float32 Jacobians exceed this"
    )
    train_steps: int = cli.field(300, "Adam updates of the GRU whose Newton iterations are counted")
    train_length: int = cli.field(50, "adding-problem length the GRU is trained on")
    seed: int = cli.field(0, "seed of the parameters, inputs and training data")


PRESETS: dict[str, dict[str, Any]] = {
    # Minutes on a quiet 2-core CPU: the acceptance targets (T = 10k, B = 16, H = 8).
    "quick": {},
    # The grid.
    "full": dict(lengths=(1000, 10_000, 100_000), hidden_sizes=(8, 32, 128)),
}

CELLS = {
    "lru": rnnjax.lru,
    "mingru": rnnjax.mingru,
    "mingru-linear": lambda h: rnnjax.mingru(h, log_space=False),
    "rg_lru": rnnjax.rg_lru,
    "selective_ssm": rnnjax.selective_ssm,
    "elman": rnnjax.elman,
    "gru": rnnjax.gru,
    "mlstm": rnnjax.mlstm,
    "slstm": rnnjax.slstm,
}
# timed against their reference loop
LINEAR = ("lru", "mingru", "mingru-linear", "mlstm", "rg_lru", "selective_ssm")


def check(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    for name in config.linear_cells:
        if name not in LINEAR:
            raise ValueError(f"linear_cells must be among {LINEAR}, got {name!r}")
    for name in config.linear_cells + config.newton_cells:
        if name not in CELLS:
            raise ValueError(f"cells must be among {sorted(CELLS)}, got {name!r}")
    for method in config.methods:
        if method not in parallel_in_time.METHODS:
            raise ValueError(f"methods must be among {parallel_in_time.METHODS}, got {method!r}")
    for name in ("batch_size", "input_size", "reps", "train_steps", "train_length"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if any(t < 2 for t in config.lengths) or any(h < 1 for h in config.hidden_sizes):
        raise ValueError(
            f"need lengths >= 2 and hidden_sizes >= 1, got {config.lengths}, {config.hidden_sizes}"
        )


# ------------------------------------------------------------------------------ timing


def programs(cell, impl, params, xs):
    """Returns ``(fwd, fwd_bwd)``: jitted forward and forward+backward of a batched layer."""
    layer = rnnjax.recurrent(cell, impl=impl)

    def loss(params, xs):
        return jnp.sum(jax.vmap(lambda x: layer.apply(params, x)[1])(xs))

    return jax.jit(loss), jax.jit(jax.value_and_grad(loss))


def time_case(
    config: Config, cell_name: str, hidden: int, length: int, impls: list[str], key
) -> dict:
    """Returns the record of one (cell, H, T): per impl, fwd/fwd+bwd ms, first-call s, MB."""
    cell = CELLS[cell_name](hidden)
    k_params, k_xs = jax.random.split(key)
    params = cell.init(k_params, config.input_size)
    xs = jax.random.normal(k_xs, (config.batch_size, length, config.input_size))
    record: dict[str, Any] = {
        "cell": cell_name,
        "H": hidden,
        "T": length,
        "impls": {},
        "skipped": {},
    }
    dense_gb = config.batch_size * length * hidden**2 * 4 / 2**30
    if "deer" in impls and dense_gb > config.dense_limit_gb:
        impls = [i for i in impls if i != "deer"]
        record["skipped"]["deer"] = f"dense Jacobians alone {dense_gb:.1f} GB"
    calls = {}
    for impl in impls:
        fwd, fwd_bwd = programs(cell, impl, params, xs)
        entry = record["impls"][impl] = {"path": rnnjax.scan_path(cell, impl)}
        for mode, fn in (("fwd", fwd), ("fwd_bwd", fwd_bwd)):
            t0 = time.perf_counter()
            jax.block_until_ready(fn(params, xs))
            entry[f"{mode}_first_call_s"] = time.perf_counter() - t0
            calls[(impl, mode)] = lambda fn=fn: jax.block_until_ready(fn(params, xs))
        memory = benchmark.jax_memory(fwd_bwd, (params, xs))
        entry["fwd_bwd_mb"] = None if memory is None else memory / 2**20
    wall, _ = benchmark.interleaved(calls, config.reps)
    for (impl, mode), times in wall.items():
        record["impls"][impl][f"{mode}_ms"] = 1e3 * statistics.median(times)
    record["load_avg"] = os.getloadavg()
    return record


# ------------------------------------------------------------------ Newton iterations


def trained_gru(config: Config, hidden: int, key):
    """Returns ``(cell, untrained params, trained params, final train loss)``: a GRU + readout
    trained briefly on the adding problem (Adam 1e-2, clipping 1, batch 32)."""
    cell = rnnjax.gru(hidden)
    task = tasks.make_task("adding", num_steps=config.train_length)
    model = rnnjax.many_to_many(rnnjax.recurrent(cell), readouts.linear(1))
    k_init, k_run = jax.random.split(key)
    params = model.init(k_init, task.input_size)

    def loss_fn(params, batch, key):
        xs, targets = batch
        return jnp.mean(
            jax.vmap(lambda x, y: task.loss(model.apply(params, x), y))(xs, targets)
        ), {}

    optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    step = training.make_train_step(loss_fn, optimizer)
    state = training.init_train_state(k_run, params, optimizer)
    batch_fn = lambda key, s: tasks.sample_batch(task, key, 32)
    result = training.fit(step, state, batch_fn, config.train_steps, progress=False)
    loss = next((row["loss"] for row in reversed(result.history) if "loss" in row), float("nan"))
    is_cell = lambda a: isinstance(a, dict) and "w_hh" in a
    cell_params = lambda p: next(a for a in jax.tree.leaves(p, is_leaf=is_cell) if is_cell(a))
    return cell, cell_params(params), cell_params(result.state.params), loss


def newton_iterations(config: Config, key) -> list[dict]:
    """Returns one record per (params, method, T): the Newton report over a batch."""
    hidden = min(config.hidden_sizes)
    cell, untrained, trained, loss = trained_gru(config, hidden, key)
    records = []
    for length in config.lengths:
        task = tasks.make_task("adding", num_steps=length)
        xs, _ = tasks.sample_batch(task, jax.random.fold_in(key, length), config.batch_size)
        for label, params in (("untrained", untrained), ("trained", trained)):
            for method in config.methods:
                if (
                    method == "deer"
                    and config.batch_size * length * hidden**2 * 4 / 2**30 > config.dense_limit_gb
                ):
                    continue
                run = jax.jit(
                    jax.vmap(
                        lambda x: parallel_in_time.evaluate(
                            cell, params, x, method=method, max_iter=200
                        )[2]
                    )
                )
                report = run(xs)
                records.append(
                    {
                        "params": label,
                        "method": method,
                        "T": length,
                        "H": hidden,
                        "iterations_max": int(jnp.max(report.iterations)),
                        "iterations_median": float(jnp.median(report.iterations)),
                        "converged": float(jnp.mean(report.converged)),
                        "train_loss": loss if label == "trained" else None,
                    }
                )
    return records


# ------------------------------------------------------------------------------ report


def ratio_rows(records: list[dict], mode: str) -> list[list[Any]]:
    rows = []
    for r in records:
        base = "reference" if r["cell"] in LINEAR else "fused"
        base_ms = r["impls"][base][f"{mode}_ms"]
        for impl, e in r["impls"].items():
            rows.append(
                [
                    r["cell"],
                    r["H"],
                    r["T"],
                    impl,
                    e[f"{mode}_ms"],
                    f"{base_ms / e[f'{mode}_ms']:.2f}x",
                    e["fwd_bwd_mb"],
                ]
            )
        for impl, why in r["skipped"].items():
            rows.append([r["cell"], r["H"], r["T"], impl, "skipped", why, ""])
    return rows


def verdict(records: list[dict]) -> list[str]:
    """Returns the acceptance targets at T = 10k, computed from the measured times."""
    lines = []
    for r in records:
        if r["T"] != 10_000:
            continue
        if r["cell"] in LINEAR:
            ours, base, name = "parallel", "reference", f"associative-scan {r['cell']} H={r['H']}"
        elif r["cell"] == "gru" and r["H"] == 8 and "quasi-deer" in r["impls"]:
            ours, base, name = "quasi-deer", "fused", "quasi-DEER GRU H=8"
        else:
            continue
        for mode in ("fwd_bwd", "fwd"):
            ratio = r["impls"][base][f"{mode}_ms"] / r["impls"][ours][f"{mode}_ms"]
            met = "faster" if ratio > 1 else "SLOWER"
            lines.append(
                f"{name}, {mode}: {met} than sequential ({base}), sequential / parallel "
                f"= {ratio:.2f}x ({r['impls'][ours][f'{mode}_ms']:.1f} vs "
                f"{r['impls'][base][f'{mode}_ms']:.1f} ms)"
            )
    return lines or ["no case at T = 10,000 (the targets' length) was run"]


def figure(records: list[dict], fig_dir: str) -> str:
    plt = runs.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    for ax, mode in zip(axes, ("fwd", "fwd_bwd")):
        series: dict[str, tuple[list, list]] = {}
        for r in records:
            base = "reference" if r["cell"] in LINEAR else "fused"
            for impl, e in r["impls"].items():
                if impl in ("reference", "fused"):
                    continue
                xs_, ys_ = series.setdefault(f"{r['cell']} H={r['H']} {impl}", ([], []))
                xs_.append(r["T"])
                ys_.append(r["impls"][base][f"{mode}_ms"] / e[f"{mode}_ms"])
        for label, (x, y) in series.items():
            ax.plot(x, y, "o-", label=label)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set(xscale="log", yscale="log", xlabel="T", title=f"{mode}: sequential / parallel time")
    axes[0].set_ylabel("speed-up (>1: parallel faster)")
    axes[1].legend(fontsize=7)
    return os.path.basename(runs.save_figure(fig, fig_dir, "speedup.png"))


def main(argv: list[str] | None = None) -> dict:
    """Runs the benchmark; returns ``{"results", "verdict", "run_dir"}``."""
    config, _args, run_dir = cli.start_run(
        Config, PRESETS, argv, __doc__, "benchmark_parallel", check
    )
    start = time.perf_counter()
    benchmark.warm_up()
    key = jax.random.PRNGKey(config.seed)
    records = []
    cases = [(c, ["reference", "parallel"]) for c in config.linear_cells]
    cases += [(c, ["reference", "fused", *config.methods]) for c in config.newton_cells]
    for length in config.lengths:
        for hidden in config.hidden_sizes:
            for cell_name, impls in cases:
                print(f"{cell_name} H={hidden} T={length}", file=sys.stderr, flush=True)
                records.append(
                    time_case(
                        config,
                        cell_name,
                        hidden,
                        length,
                        impls,
                        jax.random.fold_in(key, len(records)),
                    )
                )
                runs.write_json(os.path.join(run_dir, "timings.json"), records)  # hours of work
    iterations = newton_iterations(config, jax.random.fold_in(key, 10_000))
    runs.write_json(os.path.join(run_dir, "newton_iterations.json"), iterations)
    header = ["cell", "H", "T", "impl", "ms", "sequential / this", "fwd+bwd MB"]
    tables = "\n\n".join(
        [
            f"## Forward + backward (B = {config.batch_size})\n\n"
            + runs.markdown_table(header, ratio_rows(records, "fwd_bwd")),
            "## Forward\n\n" + runs.markdown_table(header, ratio_rows(records, "fwd")),
            f"## Newton iterations, GRU H={min(config.hidden_sizes)} (max / median over the batch; converged fraction)\n\n"
            + runs.markdown_table(
                ["params", "method", "T", "max", "median", "converged"],
                [
                    [
                        r["params"],
                        r["method"],
                        r["T"],
                        r["iterations_max"],
                        r["iterations_median"],
                        r["converged"],
                    ]
                    for r in iterations
                ],
            ),
        ]
    )
    fig = figure(records, os.path.join(run_dir, "figures"))
    return cli.write_results(
        run_dir,
        config,
        {"timings": records, "newton_iterations": iterations, "machine": benchmark.machine()},
        verdict(records),
        tables,
        title="Parallel in time: sequential vs parallel",
        intro=(
            "Sequential scan (reference: cell.step in lax.scan; fused: the gated cells' fast "
            "path) against the associative scan (LinearStep cells) and Newton's method "
            "(DEER family), interleaved medians in one process. 'sequential / this' > 1: "
            "this implementation is faster."
        ),
        figures=[fig],
        wall=time.perf_counter() - start,
    )


if __name__ == "__main__":
    main()
