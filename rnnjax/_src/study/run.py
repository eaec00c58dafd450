"""The vanishing-gradient study, for the built-in cells and for yours.

Does a cell keep long-range gradients, and does it learn long dependencies, compared with
the LSTM and the GRU? From the command line::

    python -m rnnjax.study --preset quick                        # what `make study` runs
    python -m rnnjax.study --cell my_cells.py:make_cell          # your cell beside the baselines
    python -m rnnjax.study --cell mypackage.cells:make_cell --cells lstm gru --lengths 10 100
    python -m rnnjax.study --cells lru mingru --block glu        # a GLU after the recurrence

``--cell`` names a factory ``make_cell(hidden_size) -> rnnjax.Cell`` in a Python file or an
importable module; ``--cells`` picks baselines from ``rnnjax.CELLS``. From
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
   gradient's component from each time lag (:func:`rnnjax.diagnostics.gradient_by_lag`).

A run directory (``--run-dir``, default ``runs/study/<preset>``) holds ``config.json``,
``results.json`` (one record per cell x T x seed), ``summary.md`` (tables and a verdict
computed from the numbers), ``figures/*.png`` (matplotlib: ``pip install rnnjax[experiments]``)
and one subdirectory per (cell, T) with that group's training run. Rerunning with the same
config skips finished groups and resumes the unfinished one from its last checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from jax.flatten_util import ravel_pytree

from rnnjax._src import diagnostics, lags, models, readouts, runs, spectra, tasks
from rnnjax._src.cells import Cell
from rnnjax._src.layers import recurrent
from rnnjax._src.study.config import (
    _USER_COLORS,
    PRESETS,
    Config,
    StudyCell,
    _study_cells,
    check_config,
)
from rnnjax._src.study.report import (
    _records_of,
    _summary_table,
    cell_verdict,
    make_figures,
    verdict,
)
from rnnjax._src.training.host_loop import fit
from rnnjax._src.training.schedule import Schedule
from rnnjax._src.training.step import init_train_state, make_train_step


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
        jac = spectra.jacobian_norms(cell, params["rnn"], x)
        # A random initial basis: a ReLU unit that is off makes a unit vector singular.
        lyap = spectra.lyapunov_spectrum(cell, params["rnn"], x, k=k, key=key)
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
        return init_train_state(k_data, params, optimizer, skip_nonfinite=True)

    states = init_state(jax.random.split(group_key, config.num_seeds))
    jacobian_norms, lyapunov = init_diagnostics(states.params)
    lag_norms_init = lag_norms(states.params)
    train_step = make_train_step(
        loss_fn, optimizer, skip_nonfinite=True, learning_rate=config.learning_rate
    )
    group_config = {**dataclasses.asdict(config), "cell": study_cell.name, "length": length}
    t0 = time.perf_counter()
    result = fit(
        train_step,
        states,
        batch_fn,
        config.num_steps,
        run_dir=group_dir,
        config=group_config,
        eval_fn=eval_fn,
        hooks=[hook],
        schedule=Schedule(
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
