"""Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural networks"
(ICML 2013): the cliff in the loss surface, and gradient-norm clipping.

Claims reproduced:

1. Section 3.3, Fig. 6: the one-unit RNN x_t = w σ(x_{t-1}) + b, started at x_0 = 0.5 and
   trained so that x_50 = 0.7 (loss (x_50 - 0.7)², no input), has a loss surface over (w, b)
   with a wall: where the start x_0 sits on the unstable fixed point of x = w σ(x) + b
   (b = 0.5 - w σ(0.5), for w σ'(0.5) > 1), x_50 jumps from one attractor to the other and
   the gradient is orders of magnitude larger than elsewhere.
2. Fig. 6 (trajectories): gradient descent that reaches the wall is thrown far off by the
   exploding gradient; with the gradient norm clipped (their Algorithm 1) the step stays
   bounded and the descent stays by the wall.
3. Section 5 (SGD vs SGD-C) and Section 3.2 (the threshold): on a real task, clipping lets
   SGD train where plain SGD diverges, and training is not very sensitive to the threshold,
   working even for rather small ones. Here: the adding problem with a tanh RNN, success
   rate over seeds against the clipping threshold, at a learning rate where unclipped SGD
   explodes.

Method: the one-unit RNN is a custom :class:`rnnjax.Cell` run by :func:`rnnjax.scan`; its
gradients are jax.grad through the scan. The ablation trains ``rnnjax.elman`` (tanh) with
plain SGD and ``optax.clip_by_global_norm``, every (threshold, seed) as one vmapped program
(``adding_runs.train_on_adding``), and calls a run successful when its test MSE is below
``success_fraction`` x the memoryless baseline 1/6.

Usage::

    python -m experiments.reproduce.pascanu2013                  # quick preset
    python -m experiments.reproduce.pascanu2013 --preset full    # T = 50, more seeds and steps
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments.reproduce.adding_runs import train_on_adding
from rnnjax._src import runs
from rnnjax._src.runs import Claim, option

PAPER = "Pascanu, Mikolov & Bengio 2013"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json``."""

    unit_steps: int = option(50, "steps of the one-unit RNN (paper: 50)")
    x0: float = option(0.5, "its initial state (paper: 0.5)")
    target: float = option(0.7, "its target x_T (paper: 0.7)")
    surface_points: int = option(201, "grid points per axis of the loss surface")
    gd_steps: int = option(300, "gradient-descent steps of each trajectory on the surface")
    gd_learning_rate: float = option(0.02, "learning rate of those trajectories")
    gd_clip: float = option(1.0, "gradient-norm threshold of the clipped trajectories")
    task_length: int = option(10, "adding-problem length T of the clipping ablation")
    hidden_size: int = option(32, "tanh RNN units of the ablation")
    batch_size: int = option(32, "sequences per SGD step")
    num_steps: int = option(3000, "SGD steps per run")
    learning_rate: float = option(
        0.3, "SGD learning rate of the ablation (unclipped SGD explodes here)"
    )
    thresholds: tuple[float, ...] = option(
        (0.1, 0.3, 1.0, 3.0, 10.0), "clipping thresholds (plus 'none')"
    )
    num_seeds: int = option(
        48, "seeds per threshold (a success rate's 95% interval is about ±0.13 at 48)"
    )
    success_fraction: float = option(0.1, "success: test MSE <= this x baseline (1/6)")
    seed: int = option(0, "master seed")


PRESETS = {
    "quick": {},
    # T = 50, the shortest length of the paper's pathological tasks, and 50 units; the
    # steps and seeds that fit in about 30 minutes of CPU (estimated, not run here).
    "full": dict(
        task_length=50,
        hidden_size=50,
        num_steps=5000,
        num_seeds=8,
        learning_rate=0.1,
        thresholds=(0.1, 0.3, 1.0, 3.0, 10.0, 30.0),
    ),
    # A smoke test of the plumbing in seconds (tests, `run_all.py --preset tiny`); its
    # numbers mean nothing.
    "tiny": dict(
        unit_steps=8,
        surface_points=11,
        gd_steps=4,
        task_length=4,
        hidden_size=3,
        batch_size=4,
        num_steps=3,
        thresholds=(0.5,),
        num_seeds=2,
    ),
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field out of range."""
    runs.check_positive(
        config,
        "unit_steps",
        "surface_points",
        "gd_steps",
        "gd_learning_rate",
        "gd_clip",
        "task_length",
        "hidden_size",
        "batch_size",
        "num_steps",
        "learning_rate",
        "thresholds",
        "num_seeds",
        "success_fraction",
    )


# ------------------------------------------------------------ 1-2. the one-unit RNN


def one_unit_cell() -> rnnjax.Cell:
    """Returns the cell x_t = w σ(x_{t-1}) + b (Pascanu et al. 2013, eq. 8), which ignores its input.

    Params: ``{"w": (), "b": ()}``. Carry and output: ``x: (1,)``.
    """

    def init(key, input_size):
        del key, input_size
        return {"w": jnp.array(1.0), "b": jnp.array(0.0)}

    def step(params, x, inputs):
        del inputs
        x = params["w"] * jax.nn.sigmoid(x) + params["b"]
        return x, x

    return rnnjax.Cell(init, lambda params: jnp.zeros((1,)), step, 1, ("one_unit_sigmoid",))


def unit_loss(config: Config, theta: jax.Array) -> jax.Array:
    """Returns (x_T - target)² for ``theta = (w, b)``."""
    final, _ = rnnjax.scan(
        one_unit_cell(),
        {"w": theta[0], "b": theta[1]},
        jnp.zeros((config.unit_steps, 1)),
        carry=jnp.full((1,), config.x0),
    )
    return jnp.sum(jnp.square(final - config.target))


def cliff_b(config: Config, w: np.ndarray) -> np.ndarray:
    """Returns the b of the wall at each w: x_0 is a fixed point there, b = x_0 - w σ(x_0)."""
    return config.x0 - w / (1 + np.exp(-config.x0))


def descend(config: Config, starts: jax.Array, clips: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Returns (paths ``(runs, steps + 1, 2)``, losses ``(runs, steps + 1)``) of gradient descent.

    Run i starts at ``starts[i]`` and rescales a gradient whose norm exceeds ``clips[i]`` to
    that norm (Algorithm 1 of the paper); ``inf`` is plain gradient descent.
    """

    def run(theta, clip):
        def body(theta, _):
            loss, g = jax.value_and_grad(lambda t: unit_loss(config, t))(theta)
            norm = jnp.linalg.norm(g)
            g = jnp.where(norm > clip, g * clip / norm, g)
            return theta - config.gd_learning_rate * g, (theta, loss)

        last, (path, losses) = jax.lax.scan(body, theta, None, length=config.gd_steps)
        return (
            jnp.concatenate([path, last[None]]),
            jnp.concatenate([losses, unit_loss(config, last)[None]]),
        )

    paths, losses = jax.jit(jax.vmap(run))(starts, clips)
    return np.asarray(paths, np.float64), np.asarray(losses, np.float64)


def measure_cliff(config: Config) -> dict:
    """Returns the loss surface, gradient norms across the wall and the descents with and without clipping."""
    w = np.linspace(0.0, 10.0, config.surface_points)
    b = np.linspace(-7.0, 1.0, config.surface_points)
    ww, bb = np.meshgrid(w, b)
    # The wall is thinner than the grid: cross it along b at w = 5 and 6 on fine transects,
    # evaluated with the grid in one call.
    walls, fine = (5.0, 6.0), 2001
    across = [
        np.stack(
            [np.full(fine, w0), cliff_b(config, np.array(w0)) + np.linspace(-0.05, 0.05, fine)], 1
        )
        for w0 in walls
    ]
    points = np.concatenate([np.stack([ww.ravel(), bb.ravel()], axis=1), *across])
    loss, grad = jax.jit(jax.vmap(jax.value_and_grad(lambda t: unit_loss(config, t))))(
        jnp.asarray(points, jnp.float32)
    )
    norms = np.linalg.norm(np.asarray(grad, np.float64), axis=1)
    size = ww.size
    transects = {
        w0: float(norms[size + fine * i : size + fine * (i + 1)].max())
        for i, w0 in enumerate(walls)
    }
    sw, sb = np.meshgrid(np.linspace(5.0, 9.0, 9), np.linspace(-2.0, 1.0, 7))
    starts = np.stack([sw.ravel(), sb.ravel()], axis=1)
    clips = np.repeat([np.inf, config.gd_clip], len(starts))
    paths, losses = descend(
        config,
        jnp.asarray(np.concatenate([starts, starts]), jnp.float32),
        jnp.asarray(clips, jnp.float32),
    )
    n = len(starts)
    return {
        "w": w,
        "b": b,
        "surface": np.asarray(loss, np.float64)[:size].reshape(ww.shape),
        "grad_norm": norms[:size].reshape(ww.shape),
        "transects": transects,
        "plain": (paths[:n], losses[:n]),
        "clipped": (paths[n:], losses[n:]),
    }


def thrown_off(paths: np.ndarray, jump: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Returns (per run: did one step move (w, b) by >= ``jump``, the largest step).

    The default, 1, is a tenth of the width of the plotted surface and 50 times the
    largest clipped step of the quick preset (lr 0.02 x threshold 1).
    """
    largest = np.linalg.norm(np.diff(paths, axis=1), axis=-1).max(axis=1)
    return largest >= jump, largest


# --------------------------------------------------------------- 3. the ablation


def clipping_ablation(config: Config) -> dict:
    """Returns test MSEs ``(thresholds + 1, seeds)`` (last row: no clipping) and gradient norms."""
    optimizer = optax.chain(
        optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=1.0),
        optax.sgd(config.learning_rate),
    )
    thresholds = list(config.thresholds) + [float("inf")]
    trained = train_on_adding(
        rnnjax.elman(config.hidden_size),
        optimizer,
        [{"max_norm": c} for c in thresholds],
        length=config.task_length,
        batch_size=config.batch_size,
        num_steps=config.num_steps,
        num_seeds=config.num_seeds,
        seed=config.seed,
    )
    return {"thresholds": thresholds, **trained}


# ------------------------------------------------------------------------------ main


def make_figures(
    config: Config, cliff: dict, ablation: dict, success: np.ndarray, run_dir: str
) -> list[str]:
    """Writes the figures; returns their paths."""
    plt = runs.pyplot()
    paths = []
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ww, bb = np.meshgrid(cliff["w"], cliff["b"])
    mesh = axes[0].pcolormesh(
        ww, bb, np.log10(cliff["surface"] + 1e-4), shading="auto", cmap="viridis"
    )
    fig.colorbar(mesh, ax=axes[0], label=r"$\log_{10}$ loss")
    (plain_paths, _), (clip_paths, _) = cliff["plain"], cliff["clipped"]
    jumped, _ = thrown_off(plain_paths)
    for i in np.nonzero(jumped)[0][:4]:
        axes[0].plot(plain_paths[i, :, 0], plain_paths[i, :, 1], "w-", lw=1)
        axes[0].plot(clip_paths[i, :, 0], clip_paths[i, :, 1], "r--", lw=1.2)
        axes[0].plot(*plain_paths[i, 0], "wo", ms=3)
    w_wall = cliff["w"][cliff["w"] * math.exp(-config.x0) / (1 + math.exp(-config.x0)) ** 2 > 1]
    axes[0].plot(w_wall, cliff_b(config, w_wall), "k:", lw=1, label="wall: x_0 is a fixed point")
    axes[0].set_xlim(cliff["w"][0], cliff["w"][-1])
    axes[0].set_ylim(cliff["b"][0], cliff["b"][-1])
    axes[0].set_xlabel("w")
    axes[0].set_ylabel("b")
    axes[0].set_title("Loss; GD without clipping (white) and with (red, dashed)")
    axes[0].legend(fontsize=8, loc="lower left")
    mesh = axes[1].pcolormesh(
        ww, bb, np.log10(cliff["grad_norm"] + 1e-8), shading="auto", cmap="magma"
    )
    fig.colorbar(mesh, ax=axes[1], label=r"$\log_{10} \|\nabla\|$")
    axes[1].set_xlabel("w")
    axes[1].set_title("Gradient norm (the wall is thinner than the grid)")
    paths.append(runs.save_figure(fig, run_dir, "cliff"))

    fig, ax = plt.subplots(figsize=(5, 3.5))
    labels = [f"{c:g}" for c in ablation["thresholds"][:-1]] + ["none"]
    ax.bar(labels, success, color=["tab:blue"] * (len(labels) - 1) + ["tab:red"])
    ax.set_xlabel("clipping threshold (global gradient norm)")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.set_title(f"tanh RNN, adding T={config.task_length}, SGD lr={config.learning_rate}")
    paths.append(runs.save_figure(fig, run_dir, "clipping_ablation"))
    return paths


def _rate(r: runs.Interval) -> str:
    return f"{r.estimate:.2f} [{r.low:.2f}, {r.high:.2f}]"


def _all_of(verdicts: list[bool | None]) -> bool | None:
    """Returns False if any verdict is False, None if any is open, else whether there is one."""
    if False in verdicts:
        return False
    return None if None in verdicts else bool(verdicts)


def main(argv: list[str] | None = None) -> dict:
    """Measures the cliff and runs the ablation; returns ``{"claims", "results", "run_dir"}``."""
    config, opts = runs.parse_config(
        Config, PRESETS, argv, description=__doc__ or "", name="reproduce/pascanu2013"
    )
    check_config(config)
    run_dir = runs.open_run_dir(opts.run_dir, config)
    t0 = time.perf_counter()
    cliff = measure_cliff(config)
    ablation = clipping_ablation(config)

    wall = max(cliff["transects"].values())
    typical = float(np.median(cliff["grad_norm"]))
    claim_wall = Claim(
        PAPER,
        "Sec. 3.3, Fig. 6 (surface)",
        "the one-unit RNN's loss surface has a wall where the gradient explodes",
        "a high-curvature wall (figure)",
        f"max ||∇L|| across the wall (w=5, 6): {wall:.3g}; median over the (w, b) grid: {typical:.3g} "
        f"(x{wall / typical:.2g})",
        bool(wall >= 1000 * typical),
        differs="σ taken as the logistic sigmoid; 'explodes' is read as at least 1000 x the "
        "median gradient norm of the surface.",
    )

    plain_paths, plain_loss = cliff["plain"]
    clip_paths, clip_loss = cliff["clipped"]
    jumped, largest = thrown_off(plain_paths)
    rise = [
        float(np.max(plain_loss[i, 1:] / np.maximum(plain_loss[i, :-1], 1e-12)))
        for i in np.nonzero(jumped)[0]
    ]
    clip_jumped, clip_largest = thrown_off(clip_paths)
    ratio = float(np.median(clip_loss[:, -1]) / np.median(clip_loss[:, 0]))
    claim_jump = Claim(
        PAPER,
        "Fig. 6 (trajectories)",
        "without clipping, descent that hits the wall is thrown off; with clipping it stays "
        "by the wall and keeps descending",
        "solid (thrown off) vs dashed (clipped) arrows (schematic)",
        f"{int(jumped.sum())}/{len(jumped)} plain runs thrown off (one step >= 1 in (w, b); "
        f"largest {largest.max():.3g}, loss up to x{max(rise, default=1):.3g} at that step); "
        f"clipped (c={config.gd_clip:g}): {int(clip_jumped.sum())} thrown off, largest step "
        f"{clip_largest.max():.3g}, median loss x{ratio:.2g} of its start",
        bool(jumped.mean() >= 0.25 and not clip_jumped.any() and ratio < 0.1),
        differs=f"{len(jumped)} starts on a grid w in [5, 9], b in [-2, 1], {config.gd_steps} "
        f"steps of lr {config.gd_learning_rate}; 'thrown off' is read as one step moving "
        "(w, b) by at least 1 (a tenth of the plotted width), 'keeps descending' as the "
        "median final loss below a tenth of the median start loss.",
    )

    solved = ablation["test_mse"] <= config.success_fraction * ablation["baseline"]
    success = np.mean(solved, axis=1)
    rates = [runs.wilson_interval(int(n), config.num_seeds) for n in solved.sum(axis=1)]
    clipped_rates, plain = success[:-1], rates[-1]
    best = int(np.argmax(clipped_rates))
    gain = runs.difference_interval(rates[best], plain)
    small = [i for i, c in enumerate(config.thresholds) if c <= ablation["grad_norm_median_start"]]
    small_verdicts = [runs.decide(rates[i], 0.5) for i in small]
    claim_sgd = Claim(
        PAPER,
        "Sec. 5 (SGD vs SGD-C)",
        "gradient clipping lets SGD train a tanh RNN where plain SGD fails",
        "SGD-C succeeds more often than SGD (figure 7)",
        f"success rate of {config.num_seeds} seeds: no clipping {_rate(plain)}; clipped "
        + ", ".join(f"c={c:g}: {_rate(r)}" for c, r in zip(config.thresholds, rates))
        + f"; best clipped - none: {_rate(gain)}",
        runs.decide(gain, 0.5),
        differs=f"adding problem T={config.task_length} (paper: T >= 50, several tasks), "
        f"{config.hidden_size} units, {config.num_seeds} seeds, {config.num_steps} steps "
        f"at lr {config.learning_rate}; success = test MSE <= {config.success_fraction:g} "
        "x baseline; 'lets SGD train' is read as a success rate at least 0.5 higher for the "
        "best threshold, decided on the 95% interval of the difference (Wilson intervals, "
        "Newcombe's rule); inconclusive when it contains 0.5.",
    )
    claim_threshold = Claim(
        PAPER,
        "Sec. 3.2 (choice of threshold)",
        "training is not very sensitive to the threshold and works even for rather small ones",
        "qualitative",
        f"median gradient norm of the first 100 steps {ablation['grad_norm_median_start']:.3g}; success at "
        "thresholds below it: "
        + (
            ", ".join(f"c={config.thresholds[i]:g}: {_rate(rates[i])}" for i in small)
            or "none tested"
        ),
        _all_of(small_verdicts),
        differs="'works' is read as a success rate of at least 0.5 at every threshold below "
        "the typical gradient norm, each decided on its 95% Wilson interval.",
    )

    results = {
        "wall_max_grad_norm": cliff["transects"],
        "surface_median_grad_norm": typical,
        "plain_largest_step": largest,
        "clipped_largest_step": clip_largest,
        "plain_final_loss": plain_loss[:, -1],
        "clipped_final_loss": clip_loss[:, -1],
        "ablation": {**ablation, "success_rate": success, "success_interval": rates},
    }
    figures = make_figures(config, cliff, ablation, success, run_dir)
    table = [
        "| threshold | success rate [95% interval] | median test MSE / baseline | skipped non-finite updates |",
        "|---|---|---|---|",
    ]
    for i, c in enumerate(ablation["thresholds"]):
        table.append(
            f"| {'none' if math.isinf(c) else f'{c:g}'} | {_rate(rates[i])} | "
            f"{np.median(ablation['test_mse'][i]) / ablation['baseline']:.3g} | "
            f"{int(np.sum(ablation['skipped_updates'][i]))} |"
        )
    notes = [
        f"Clipping ablation: tanh RNN ({config.hidden_size} units), adding problem "
        f"T={config.task_length}, plain SGD lr {config.learning_rate}, batch "
        f"{config.batch_size}, {config.num_steps} steps, {config.num_seeds} seeds:",
        "",
        *table,
        "",
        "Figures: " + ", ".join(os.path.relpath(p, run_dir) for p in figures) + ".",
    ]
    claims = [claim_wall, claim_jump, claim_sgd, claim_threshold]
    return runs.finish_claims(
        run_dir,
        title=f"{PAPER}: the cliff and gradient clipping",
        config=config,
        results=results,
        summary=notes,
        started=t0,
        claims=claims,
    )


if __name__ == "__main__":
    main()
