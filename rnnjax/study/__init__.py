"""The vanishing-gradient study, for the built-in cells and for yours.

Does a cell keep long-range gradients, and does it learn long dependencies, compared with
the LSTM and the GRU? From the command line::

    python -m rnnjax.study --preset quick                        # what `make study` runs
    python -m rnnjax.study --cell my_cells.py:make_cell          # your cell beside the baselines
    python -m rnnjax.study --cell mypackage.cells:make_cell --cells lstm gru --lengths 10 100
    python -m rnnjax.study --cells lru mingru --block glu        # a GLU after the recurrence

``--cell`` names a factory ``make_cell(hidden_size) -> rnnjax.Cell`` in a Python file or an
importable module; ``--cells`` picks baselines from ``rnnjax.registry.CELLS``. From
Python, :func:`run_study` takes the cells themselves.

Methods, in the order the study runs them:

1. Task. The adding problem (Hochreiter & Schmidhuber 1997; two-channel form of Le, Jaitly &
   Hinton 2015): T values ~ U[0, 1], two of them marked (one in each half); predict their sum
   from the last step. Predicting the constant 1 gives MSE 1/6 without remembering anything,
   so a model has learned the long-range dependency only when its test MSE falls well below
   1/6. Copy memory (Arjovsky et al. 2016) and temporal order with ``--task``
   (:mod:`rnnjax.tasks`).
2. Models. One recurrent layer and a linear readout at every step; with ``--block glu``, a
   residual gated MLP (GLU) on each step's output before the readout, as the papers on
   linear recurrences (LRU, RG-LRU, Mamba, xLSTM) place one after each recurrent layer, so
   that a one-layer model is not linear in its inputs.
3. Training. Adam with gradient clipping by global norm (Pascanu, Mikolov & Bengio 2013),
   fresh batches every step. The seeds of one (cell, T) are ONE vmapped program
   (:func:`rnnjax.training.fit` on a state with a leading seed axis); each seed has its own
   initialisation and data order, and seed s of every cell sees the same data.
4. Measurement. Final loss on a held-out test set; the gradient that backpropagation through
   time delivers to each step, ||dL/dh_t|| (:func:`rnnjax.diagnostics.state_gradient_norms`),
   at initialisation, during and after training, and its ratio ||dL/dh_1|| / ||dL/dh_T||;
   at initialisation, the Jacobian norms ||dh_T/dh_t|| and the top Lyapunov exponents of the
   input-driven cell; at initialisation and after training, the norm of the parameter
   gradient's component from each time lag (:func:`rnnjax.lags.gradient_by_lag`).

A run directory (``--run-dir``, default ``runs/study/<preset>``) holds ``config.json``,
``results.json`` (one record per cell x T x seed), ``summary.md`` (tables and a verdict
computed from the numbers), ``figures/*.png`` (matplotlib: ``pip install rnnjax[experiments]``)
and one subdirectory per (cell, T) with that group's training run. Rerunning with the same
config skips finished groups and resumes the unfinished one from its last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import json
import math
import os
import re
import sys
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.flatten_util import ravel_pytree

from rnnjax import diagnostics, lags, models, readouts, registry, runs, tasks, training
from rnnjax.cells import Cell
from rnnjax.layers import recurrent

__all__ = [
    "PRESETS",
    "Config",
    "StudyCell",
    "cell_verdict",
    "load_cell_factory",
    "check_config",
    "grad_ratio",
    "main",
    "make_figures",
    "parse_args",
    "run_study",
    "verdict",
]


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines a study; saved as ``config.json`` in the run directory."""

    task: str = runs.option("adding", "task: adding | copy | temporal_order")
    cells: tuple[str, ...] = runs.option(
        ("elman", "lstm", "gru"),
        "baseline cells from rnnjax.registry.CELLS (elman: tanh, orthogonal W_hh; lstm: forget "
        "bias --forget-bias; gru; irnn: ReLU, W_hh = I; lru; mingru; ...)",
    )
    cell: tuple[str, ...] = runs.option(
        (), "your cells: factories make(hidden_size) -> Cell as file.py:name or module:name"
    )
    lengths: tuple[int, ...] = runs.option(
        (10, 50, 100),
        "sequence lengths T (for copy: the number of blanks between the symbols and the recall)",
    )
    num_seeds: int = runs.option(3, "seeds per (cell, T), trained together as one vmapped program")
    hidden_size: int = runs.option(32, "hidden units per cell")
    block: str = runs.option("none", "after the recurrent layer: none | glu (a residual gated MLP)")
    batch_size: int = runs.option(64, "training sequences per step (fresh every step)")
    num_steps: int = runs.option(1000, "Adam updates per run")
    learning_rate: float = runs.option(1e-2, "Adam learning rate (constant)")
    clip_norm: float = runs.option(1.0, "gradient clipping by global norm (Pascanu et al. 2013)")
    forget_bias: float = runs.option(1.0, "LSTM forget-gate bias at initialisation")
    test_size: int = runs.option(1000, "held-out test sequences per T (one fixed set for all runs)")
    diag_size: int = runs.option(128, "test sequences averaged for the gradient-norm diagnostics")
    lag_size: int = runs.option(
        16, "test sequences for the lag decomposition, Jacobian norms and Lyapunov exponents"
    )
    lyapunov_exponents: int = runs.option(8, "top Lyapunov exponents measured at initialisation")
    eval_every: int = runs.option(100, "steps between test-loss and gradient-norm measurements")
    solved_fraction: float = runs.option(
        0.1, "a run counts as solved when final test loss <= this fraction of the baseline"
    )
    checkpoint_every: int = runs.option(
        0, "steps between checkpoints within a group (0: at the end only)"
    )
    seed: int = runs.option(0, "master seed; seed s of every group is derived from it")


#: Named starting values for :class:`Config` (``--preset``): ``tiny``, ``quick`` (``make study``),
#: ``linear`` and ``full``; each maps field names to values, the rest keep their defaults.
PRESETS: dict[str, dict[str, Any]] = {
    # Seconds: the tests' run, and a check that a new cell runs at all.
    "tiny": dict(
        lengths=(5, 10),
        num_seeds=2,
        hidden_size=8,
        batch_size=16,
        num_steps=40,
        test_size=64,
        diag_size=8,
        lag_size=4,
        lyapunov_exponents=4,
        eval_every=20,
    ),
    # A few minutes on a 2-core CPU: the effect at T = 100 with 3 seeds (`make study`).
    "quick": dict(cells=("elman", "lstm", "gru", "irnn")),
    # The quick preset's settings at its longest T, with the cells linear in their state
    # (LRU, minGRU) beside the gated ones: does a linear recurrence solve it?
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

_BLOCKS = ("none", "glu")
_USER_COLORS = ("black", "tab:olive", "tab:cyan", "tab:gray")


@dataclasses.dataclass(frozen=True)
class StudyCell:
    """A cell in the study: ``make(hidden_size) -> Cell``, its name in results, label and colour."""

    name: str
    make: Callable[[int], Cell]
    label: str
    color: str


def load_cell_factory(spec: str) -> Callable[[int], Cell]:
    """Returns the factory ``spec`` names: ``path/to/file.py:name`` or ``package.module:name``.

    Raises:
      ValueError: ``spec`` has no ``:name``, or the file, module or name does not exist.
    """
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ValueError(f"cell must be 'file.py:name' or 'module:name', got {spec!r}")
    if path.endswith(".py"):
        if not os.path.isfile(path):
            raise ValueError(f"cell file {path!r} (from {spec!r}) does not exist")
        module_name = "_rnnjax_study_" + re.sub(r"\W", "_", os.path.abspath(path))
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        assert module_spec is not None and module_spec.loader is not None
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module  # dataclasses and pickling look modules up here
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(path)
        except ImportError as e:
            raise ValueError(f"cannot import module {path!r} (from {spec!r}): {e}") from e
    factory = getattr(module, name, None)
    if not callable(factory):
        raise ValueError(f"{path!r} has no callable {name!r} (from {spec!r})")
    return typing.cast(Callable[[int], Cell], factory)


def _study_cells(config: Config) -> list[StudyCell]:
    """Returns the baselines (registry) then the user's cells (factories) of ``config``."""
    out = []
    for name in config.cells:
        spec = registry.CELLS[name]
        options = {"forget_bias": config.forget_bias} if name == "lstm" else {}
        make = lambda h, spec=spec, options=options: spec.make(h, **options)
        out.append(StudyCell(name, make, spec.label, spec.color))
    for i, cell_spec in enumerate(config.cell):
        name = cell_spec.rpartition(":")[2]
        if name in registry.CELLS:
            name = f"user_{name}"
        out.append(
            StudyCell(
                name,
                load_cell_factory(cell_spec),
                name,
                _USER_COLORS[i % len(_USER_COLORS)],
            )
        )
    return out


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    if config.task not in tasks.TASKS:
        raise ValueError(f"task must be one of {sorted(tasks.TASKS)}, got {config.task!r}")
    for cell in config.cells:
        if cell not in registry.CELLS:
            raise ValueError(f"cells must be among {sorted(registry.CELLS)}, got {cell!r}")
    if not (config.cells or config.cell) or not config.lengths:
        raise ValueError("cells (or cell) and lengths must be non-empty")
    if config.block not in _BLOCKS:
        raise ValueError(f"block must be one of {_BLOCKS}, got {config.block!r}")
    for name in (
        "num_seeds",
        "hidden_size",
        "batch_size",
        "num_steps",
        "test_size",
        "diag_size",
        "lag_size",
        "lyapunov_exponents",
        "eval_every",
    ):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if any(t < 2 for t in config.lengths):
        raise ValueError(f"lengths must be >= 2, got {config.lengths}")
    if not config.learning_rate > 0 or not config.clip_norm > 0:
        raise ValueError("learning_rate and clip_norm must be > 0")
    for name in ("diag_size", "lag_size"):
        if getattr(config, name) > config.test_size:
            raise ValueError(
                f"{name} ({getattr(config, name)}) must be <= test_size ({config.test_size})"
            )


# --------------------------------------------------------------------------- one group


def _glu(hidden_size: int) -> readouts.Readout:
    """Returns the residual GLU block ``h + (gelu(h W_g) * (h W_v)) W_o`` (Shazeer 2020)."""
    gate, value = readouts.linear(2 * hidden_size), readouts.linear(2 * hidden_size)
    out = readouts.linear(hidden_size)

    def init(key, input_size):
        k = jax.random.split(key, 3)
        return {
            "gate": gate.init(k[0], input_size),
            "value": value.init(k[1], input_size),
            "out": out.init(k[2], 2 * hidden_size),
        }

    def apply(params, h):
        mixed = jax.nn.gelu(gate.apply(params["gate"], h)) * value.apply(params["value"], h)
        return h + out.apply(params["out"], mixed)

    return readouts.Readout(init, apply, hidden_size)


def _readout(config: Config, output_size: int) -> readouts.Readout:
    """Returns the per-step map after the recurrent layer: linear, or GLU then linear."""
    linear = readouts.linear(output_size)
    if config.block == "none":
        return linear
    glu = _glu(config.hidden_size)

    def init(key, input_size):
        k_glu, k_out = jax.random.split(key)
        return {"glu": glu.init(k_glu, input_size), "linear": linear.init(k_out, input_size)}

    def apply(params, h):
        return linear.apply(params["linear"], glu.apply(params["glu"], h))

    return readouts.Readout(init, apply, output_size)


def _gradient_norm_profile(cell, readout, task, params, xs, targets):
    """Returns (T,): ||dL/d state_t|| averaged over the sequences ``xs: (B, T, I)``, one seed."""

    def norms(x, target):
        def loss_fn(final_carry, ys):
            del final_carry
            return task.loss(readout.apply(params["readout"], ys), target)

        return diagnostics.state_gradient_norms(cell, params["rnn"], x, loss_fn)

    return jnp.mean(jax.vmap(norms)(xs, targets), axis=0)


def _lag_norms(cell, readout, task, params, xs, targets):
    """Returns (T,): per lag, the norm of the mean over ``xs`` of the cell-parameter gradient's
    component (the lag decomposition of the batch-mean loss, one seed)."""

    def components(x, target):
        def loss_fn(final_carry, ys):
            del final_carry
            return task.loss(readout.apply(params["readout"], ys), target)

        return lags.lag_gradients(cell, params["rnn"], x, loss_fn)

    flat = jax.vmap(lambda x, y: jax.vmap(lambda c: ravel_pytree(c)[0])(components(x, y)))
    return jnp.linalg.norm(jnp.mean(flat(xs, targets), axis=0), axis=-1)


def _init_diagnostics(config, cell, xs, key, params):
    """Returns the Jacobian norms (T,) and top Lyapunov exponents (k,) at init, one seed,
    averaged over ``xs`` (the Jacobian norms as a geometric mean: they span decades)."""
    size = ravel_pytree(cell.initial_carry(params["rnn"]))[0].size
    k = min(config.lyapunov_exponents, size)

    def one(x):
        jac = diagnostics.jacobian_norms(cell, params["rnn"], x)
        # A random initial basis: a ReLU unit that is off makes a unit vector singular.
        lyap = diagnostics.lyapunov_spectrum(cell, params["rnn"], x, k=k, key=key)
        return jnp.log(jnp.maximum(jac, 1e-30)), lyap

    log_jac, lyap = jax.vmap(one)(xs)
    # A complex state (the LRU) gives complex log|R_ii| of zero imaginary part.
    return jnp.exp(jnp.mean(log_jac, axis=0)), jnp.real(jnp.mean(lyap, axis=0))


def _run_group(
    config: Config, study_cell: StudyCell, length: int, group_dir: str, progress: bool | None
) -> dict:
    """Returns this (cell, T) group's measurements, training its seeds as one vmapped program."""
    task = tasks.make_task(config.task, **{tasks.SIZE_ARGUMENT[config.task]: length})
    cell = study_cell.make(config.hidden_size)
    if not isinstance(cell, Cell):
        raise TypeError(
            f"the factory of cell {study_cell.name!r} must return an rnnjax.Cell, "
            f"got {type(cell).__name__}"
        )
    readout = _readout(config, task.output_size)
    model = models.many_to_many(recurrent(cell), readout)
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
        return _gradient_norm_profile(cell, readout, task, params, xs, targets)

    @jax.jit
    @jax.vmap
    def lag_norms(params):
        xs, targets = tasks.sample_batch(task, test_key, config.lag_size)
        return _lag_norms(cell, readout, task, params, xs, targets)

    lyapunov_key = jax.random.fold_in(
        jax.random.fold_in(jax.random.PRNGKey(config.seed), 2), length
    )

    @jax.jit
    @jax.vmap
    def init_diagnostics(params):
        xs, _ = tasks.sample_batch(task, test_key, config.lag_size)
        return _init_diagnostics(config, cell, xs, lyapunov_key, params)

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
    jacobian_norms, lyapunov = init_diagnostics(states.params)
    lag_norms_init = lag_norms(states.params)
    train_step = training.make_train_step(
        loss_fn, optimizer, skip_nonfinite=True, learning_rate=config.learning_rate
    )
    group_config = {**dataclasses.asdict(config), "cell": study_cell.name, "length": length}
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
    lag_norms_final = lag_norms(result.state.params)

    train_rows = [r for r in result.history if "loss" in r]
    eval_rows = [r for r in result.history if "eval/loss" in r]
    hook_rows = [r for r in result.history if "grad_norms" in r]
    final_eval = eval_rows[-1]
    return {
        "cell": study_cell.name,
        "T": length,
        "baseline_loss": task.baseline_loss,
        "wall_time_s": wall,
        "train_loss": np.asarray([r["loss"] for r in train_rows], np.float64).T.tolist(),
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
        "jacobian_norms_init": np.asarray(jacobian_norms).tolist(),  # (N, T)
        "lyapunov_init": np.asarray(lyapunov).tolist(),  # (N, k)
        "lag_norms_init": np.asarray(lag_norms_init).tolist(),  # (N, T)
        "lag_norms_final": np.asarray(lag_norms_final).tolist(),  # (N, T)
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
    return "nan" if not np.isfinite(x) else f"{x:.1e}"


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
    from rnnjax import plots

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


def run_study(
    config: Config,
    run_dir: str,
    *,
    cells: Mapping[str, Callable[[int], Cell]] | None = None,
    progress: bool | None = None,
    figures: bool = True,
) -> dict:
    """Runs the study; returns ``{"records", "verdict", "cell_verdicts", "run_dir"}``.

    Args:
      config: the study (:class:`Config`, e.g. ``Config(**PRESETS["tiny"])``).
      run_dir: where ``config.json``, ``results.json``, ``summary.md``, ``figures/`` and one
        directory per (cell, T) go; rerunning with the same config resumes.
      cells: your cells by name, ``{name: make(hidden_size) -> Cell}`` (a notebook's
        cells), run beside ``config.cells`` and ``config.cell``; each gets a verdict
        line against the baselines.
      progress: a progress bar over the groups and each group's steps (None: when stderr is
        a terminal).
      figures: write ``figures/*.png`` (needs matplotlib, the extra ``experiments``).
    """
    check_config(config)
    study_cells = _study_cells(config)
    for i, (name, make) in enumerate((cells or {}).items()):
        if not callable(make):
            raise TypeError(f"cells[{name!r}] must be a factory make(hidden_size) -> Cell")
        if name in {c.name for c in study_cells}:
            raise ValueError(f"cells: the name {name!r} is already a cell of the study")
        color = _USER_COLORS[(i + len(config.cell)) % len(_USER_COLORS)]
        study_cells.append(StudyCell(name, make, name, color))
    run_dir = runs.open_run_dir(run_dir, config)
    show = sys.stderr.isatty() if progress is None else progress

    t_start = time.perf_counter()
    groups = []
    todo = [(c, t) for t in config.lengths for c in study_cells]
    bar = tqdm.tqdm(todo, desc="study", unit="group", disable=not show, file=sys.stderr)
    for i, (cell, t) in enumerate(bar, 1):
        bar.set_postfix_str(f"{cell.name} T={t}")
        group_dir = os.path.join(run_dir, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', cell.name)}_T{t}")
        done_path = os.path.join(group_dir, "group.json")
        if os.path.exists(done_path):
            with open(done_path) as f:
                groups.append(json.load(f))
            tqdm.tqdm.write(
                f"[{i}/{len(todo)}] {cell.name} T={t}: done earlier, loaded", sys.stderr
            )
            continue
        tqdm.tqdm.write(
            f"[{i}/{len(todo)}] {cell.name} T={t}: training {config.num_seeds} seeds x "
            f"{config.num_steps} steps",
            sys.stderr,
        )
        group = _run_group(config, cell, t, group_dir, progress)
        runs.write_json(done_path, group)
        groups.append(group)
        r = group["final_test_loss"]
        tqdm.tqdm.write(
            "    test loss / baseline: "
            + " ".join(f"{x / group['baseline_loss']:.3f}" for x in r)
            + f"  ({group['wall_time_s']:.0f} s)",
            sys.stderr,
        )
    bar.close()

    records = [rec for g in groups for rec in _records_of(config, g)]
    runs.write_json(os.path.join(run_dir, "results.json"), records)
    lines = verdict(config, records)
    baselines = set(config.cells)
    cell_lines = [
        cell_verdict(config, records, c.name, c.label)
        for c in study_cells
        if c.name not in baselines
    ]
    table = _summary_table(config, study_cells, records)
    wall = time.perf_counter() - t_start
    config_dict = json.loads(json.dumps(dataclasses.asdict(config)))
    first = study_cells[0].name
    summary = "\n".join(
        [
            f"# Vanishing gradients: {config.task}",
            "",
            "Median final test loss / baseline (the memoryless baseline: "
            + ", ".join(
                f"{g['baseline_loss']:.4g} at T={g['T']}" for g in groups if g["cell"] == first
            )
            + "), and the number of seeds solved (loss <= "
            f"{config.solved_fraction:g} x baseline), after {config.num_steps} steps:",
            "",
            table,
            "",
            *[f"- {ln}" if i else f"**{ln}**" for i, ln in enumerate(lines)],
            *[f"\n**{ln}**" for ln in cell_lines],
            "",
            f"Config: `{json.dumps(config_dict)}`",
            "",
            f"Wall time of this invocation: {wall:.0f} s.",
            "Figures: figures/summary.png, final_loss_vs_T.png, learning_curves.png, "
            "gradient_norms.png, gradient_heatmap.png (||dL/dh_t|| over training), "
            "gradient_by_lag.png.",
            "",
        ]
    )
    with open(os.path.join(run_dir, "summary.md"), "w") as f:
        f.write(summary)
    if figures:
        make_figures(config, study_cells, groups, records, run_dir)
    print(table)
    print()
    print("\n".join(lines + cell_lines))
    print(f"\nResults in {run_dir} ({wall:.0f} s)")
    return {"records": records, "verdict": lines, "cell_verdicts": cell_lines, "run_dir": run_dir}


# ------------------------------------------------------------------------ command line


def parse_args(
    argv: Sequence[str] | None = None, *, name: str = "study"
) -> tuple[Config, argparse.Namespace]:
    """Returns ``(config, other options)``: the preset, overridden by any flag given
    (:func:`rnnjax.runs.parse_config`; run directories under ``runs/<name>/<preset>``).

    Raises:
      ValueError: a field is out of range (:func:`check_config`).
    """
    config, args = runs.parse_config(Config, PRESETS, argv, __doc__ or "", name)
    check_config(config)
    return config, args


def main(argv: Sequence[str] | None = None, *, name: str = "study") -> dict:
    """Runs the study from the command line (``python -m rnnjax.study --help``); returns
    what :func:`run_study` returns. Run directories go under ``runs/<name>/<preset>``."""
    try:  # a bad flag, cell or run directory: a message, not a traceback
        config, args = parse_args(argv, name=name)
        _study_cells(config)
        runs.open_run_dir(args.run_dir, config)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from e
    return run_study(config, args.run_dir, progress=args.progress)
