"""Truncated backpropagation through time (Williams & Peng 1990) and its truncation bias
(Tallec & Ollivier 2017): a dependency d steps long, learnt with truncation k > d, not k <= d.

Claims reproduced: truncated BPTT with truncation k (Williams & Peng 1990, "An efficient
gradient-based algorithm for on-line training of recurrent network trajectories", Neural
Computation 2(4), BPTT(h)) follows the gradient of each loss back at most k steps, so its
gradient is biased toward short dependencies (Tallec & Ollivier 2017, "Unbiased online
recurrent optimization", arXiv:1702.05043, ICLR 2018, introduction; "Unbiasing truncated
backpropagation through time", arXiv:1705.08209: "truncation favors short-term
dependencies"). On a stream whose target at step t is the symbol read d steps earlier, a
network trained with k > d learns the task; with k <= d no loss in a chunk has the symbol
it needs in that chunk, no gradient ties the two, and the loss stays at the memoryless
baseline.

Setup: a stream of i.i.d. symbols, uniform over an alphabet of V; the target at step t is
the symbol read at t - d ("delayed recall"). Whatever a predictor knows of the last d - 1
symbols, the target is independent of it, so its best cross-entropy is the entropy of the
target, ln V, and its best accuracy 1/V: the memoryless baseline, in closed form. One GRU
layer with an embedding and a linear readout (``rnnjax.language_model``) reads B streams
in consecutive chunks of k steps with ``rnnjax.training.make_stateful_train_step``: the
carry crosses chunk boundaries, the gradient stops at them. Every k makes the same number
of updates, one per chunk, each on fresh symbols (a stream of ``num_steps x k`` symbols,
read once), so the runs differ in where the gradient is cut and in how many symbols an
update sees, which is what truncation trades. The first d targets of each stream are
symbols read before the stream began: d of each stream's thousands of targets cannot be
learnt. The test loss is measured on held-out streams read
from the initial carry without truncation, on the steps after a warm-up.

Usage::

    python -m experiments.reproduce.truncated_bptt                  # quick preset
    python -m experiments.reproduce.truncated_bptt --preset full    # d = 20, more symbols and seeds
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from rnnjax import training
from rnnjax._src import runs
from rnnjax._src.runs import Claim, option
from rnnjax._src.training import stateful

PAPER = "Williams & Peng 1990; Tallec & Ollivier 2017"


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json``."""

    delay: int = option(10, "d: the target at step t is the symbol read at t - d")
    vocab_size: int = option(2, "V: symbols, i.i.d. uniform (memoryless baseline ln V)")
    truncations: tuple[int, ...] = option((5, 10, 20, 40), "truncation lengths k (chunk lengths)")
    hidden_size: int = option(32, "GRU units")
    embed_size: int = option(8, "size of the symbol embeddings")
    num_streams: int = option(32, "B: streams read side by side (the batch)")
    num_steps: int = option(
        1000, "updates per run, one per chunk: each stream holds num_steps x k symbols"
    )
    learning_rate: float = option(3e-3, "Adam learning rate")
    clip_norm: float = option(1.0, "gradient norm clipping threshold")
    num_seeds: int = option(2, "initialisations per truncation, trained as one vmapped program")
    num_evals: int = option(8, "test-loss measurements per run (besides step 0)")
    test_streams: int = option(64, "held-out streams")
    test_length: int = option(300, "steps of each held-out stream")
    test_warmup: int = option(50, "steps of each held-out stream not scored (>= delay)")
    learns_fraction: float = option(0.25, "'learnt': final test loss <= this x ln V")
    stays_fraction: float = option(
        0.75, "'stays at the baseline': test loss >= this x ln V at every evaluation"
    )
    seed: int = option(0, "master seed")


PRESETS = {
    "quick": {},
    # A dependency twice as long (a 20-symbol delay line), 3x the symbols, 3 seeds.
    "full": dict(
        delay=20,
        truncations=(5, 10, 20, 40, 80),
        hidden_size=64,
        num_steps=3000,
        num_seeds=3,
        test_length=400,
    ),
    # A smoke test of the plumbing in seconds (tests, `run_all.py --preset tiny`); its
    # numbers mean nothing.
    "tiny": dict(
        delay=2,
        truncations=(1, 4),
        hidden_size=4,
        embed_size=2,
        num_streams=2,
        num_steps=10,
        num_seeds=1,
        num_evals=2,
        test_streams=2,
        test_length=12,
        test_warmup=4,
    ),
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field out of range."""
    runs.check_positive(
        config,
        "delay",
        "truncations",
        "hidden_size",
        "embed_size",
        "num_streams",
        "num_steps",
        "learning_rate",
        "clip_norm",
        "num_seeds",
        "num_evals",
        "test_streams",
        "test_length",
        "learns_fraction",
        "stays_fraction",
    )
    if config.vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {config.vocab_size}")
    if not config.delay <= config.test_warmup < config.test_length:
        raise ValueError(
            f"test_warmup must lie in [delay, test_length) = [{config.delay}, "
            f"{config.test_length}), got {config.test_warmup}"
        )


def delayed_recall_stream(
    key: jax.Array, num_streams: int, length: int, vocab_size: int, delay: int
) -> tuple[jax.Array, jax.Array]:
    """Returns ``(inputs, targets)``, both ``(num_streams, length)`` int32: ``targets[:, t]`` was read at ``t - delay``.

    Symbols are i.i.d. uniform over ``vocab_size``. For ``t < delay`` the target is a
    symbol drawn before the stream began and never read.
    """
    symbols = jax.random.randint(key, (num_streams, length + delay), 0, vocab_size, jnp.int32)
    return symbols[:, delay:], symbols[:, :length]


def memoryless_baseline(vocab_size: int) -> tuple[float, float]:
    """Returns ``(cross-entropy, accuracy)`` of the best predictor blind to the symbol read d steps ago: ``(ln V, 1/V)``.

    The target x_{t-d} is independent of x_{t-d+1}, ..., x_t (i.i.d. stream), so its
    conditional distribution given them is its marginal, uniform over V symbols.
    """
    return math.log(vocab_size), 1.0 / vocab_size


def stream_chunks(inputs: jax.Array, targets: jax.Array, chunk_length: int) -> stateful.Chunks:
    """Returns the streams ``(B, L)`` as NumPy ``stateful.Chunks`` of ``(L // chunk_length, B, chunk_length)``.

    Consecutive chunks of a stream follow each other (the carry is reset only before the
    first); symbols after the last whole chunk are dropped.
    """
    b, length = inputs.shape
    n = length // chunk_length

    def cut(a):
        return np.asarray(a)[:, : n * chunk_length].reshape(b, n, chunk_length).transpose(1, 0, 2)

    reset = np.broadcast_to((np.arange(n) == 0)[:, None], (n, b))
    return stateful.Chunks(
        cut(inputs), cut(targets), np.full((n, b), chunk_length, np.int32), reset
    )


def train(
    config: Config,
    chunk_length: int,
    stream: tuple[jax.Array, jax.Array],
    test: tuple[jax.Array, jax.Array],
    key: jax.Array,
) -> dict:
    """Returns the test loss and accuracy ``(seeds, evals)`` at each evaluated step of truncated BPTT with ``chunk_length``.

    ``stream``: ``(inputs, targets)``, each ``(num_streams, num_steps x chunk_length)``;
    ``test``: the held-out ``(inputs, targets)``, each ``(test_streams, test_length)``.
    """
    lm = rnnjax.language_model(
        rnnjax.recurrent(rnnjax.gru(config.hidden_size)),
        config.vocab_size,
        embed_size=config.embed_size,
    )
    chunks = jax.tree.map(jnp.asarray, stream_chunks(*stream, chunk_length))  # on device once
    num_steps = chunks.lengths.shape[0]
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate)
    )
    initial = jax.vmap(lambda _: lm.initial_carry(lm.init(key)))(jnp.arange(config.num_streams))
    test_inputs, test_targets = test
    scored = slice(config.test_warmup, None)

    def eval_fn(params, key):
        del key
        _, logits = jax.vmap(lambda x: lm.apply(params, x))(test_inputs)
        log_p = jax.nn.log_softmax(logits[:, scored])
        target = test_targets[:, scored]
        nll = -jnp.take_along_axis(log_p, target[..., None], axis=-1)[..., 0]
        return {"loss": jnp.mean(nll), "accuracy": jnp.mean(jnp.argmax(log_p, -1) == target)}

    seed_keys = jax.random.split(key, config.num_seeds)
    states = jax.vmap(
        lambda k: training.init_stateful_train_state(
            jax.random.fold_in(k, 1), lm.init(k), optimizer, initial
        )
    )(seed_keys)
    step = training.make_stateful_train_step(rnnjax.training.chunk_loss(lm), optimizer, initial)
    every = max(num_steps // config.num_evals, 1)
    result = training.fit(
        step,
        states,
        lambda k, s: training.chunk_at(chunks, s),
        num_steps,
        eval_fn=eval_fn,
        progress=None,
        schedule=training.Schedule(chunk_size=every, eval_every=every),
    )
    rows = [r for r in result.history if "eval/loss" in r]
    return {
        "steps": [r["step"] for r in rows],
        "symbols": [r["step"] * chunk_length for r in rows],
        "test_loss": np.asarray([r["eval/loss"] for r in rows], np.float64).T,
        "accuracy": np.asarray([r["eval/accuracy"] for r in rows], np.float64).T,
    }


def main(argv: list[str] | None = None) -> dict:
    """Trains one network per truncation length; returns ``{"claims", "results", "run_dir"}``."""
    config, opts = runs.parse_config(
        Config, PRESETS, argv, description=__doc__ or "", name="reproduce/truncated_bptt"
    )
    check_config(config)
    run_dir = runs.open_run_dir(opts.run_dir, config)
    t0 = time.perf_counter()
    key = jax.random.key(config.seed)
    d, baseline, chance = config.delay, *memoryless_baseline(config.vocab_size)
    test = delayed_recall_stream(
        jax.random.fold_in(key, 1), config.test_streams, config.test_length, config.vocab_size, d
    )
    trained = {}
    for k in config.truncations:
        print(
            f"truncation k={k} (d={d}): {config.num_steps} steps x {config.num_seeds} seeds",
            file=sys.stderr,
            flush=True,
        )
        stream = delayed_recall_stream(
            jax.random.fold_in(jax.random.fold_in(key, 0), k),
            config.num_streams,
            config.num_steps * k,
            config.vocab_size,
            d,
        )
        trained[k] = train(config, k, stream, test, jax.random.fold_in(key, 2))

    final = {k: float(np.median(r["test_loss"][:, -1])) / baseline for k, r in trained.items()}
    lowest = {
        k: float(np.min(np.median(r["test_loss"], axis=0))) / baseline for k, r in trained.items()
    }
    accuracy = {k: float(np.median(r["accuracy"][:, -1])) for k, r in trained.items()}
    long_k = [k for k in config.truncations if k > d]
    short_k = [k for k in config.truncations if k <= d]

    def listing(ks, values, fmt):
        return ", ".join(f"k={k}: {format(values[k], fmt)}" for k in ks) or "none run"

    size = (
        f"GRU {config.hidden_size} units, V={config.vocab_size}, d={d}, {config.num_streams} "
        f"streams, {config.num_steps} updates for every k (one per chunk, fresh symbols), Adam lr "
        f"{config.learning_rate:g}, clip {config.clip_norm:g}, {config.num_seeds} seeds"
    )
    claim_long = Claim(
        PAPER,
        "BPTT(h), the truncated algorithm (W&P 1990)",
        f"with truncation k > d the d-step dependency is learnt (here d={d})",
        "qualitative (no table for this task)",
        f"final test loss / ln V (median of {config.num_seeds} seeds): "
        f"{listing(long_k, final, '.3f')}; accuracy {listing(long_k, accuracy, '.2f')} (chance {chance:.2f})",
        bool(long_k) and all(final[k] <= config.learns_fraction for k in long_k),
        differs=(
            f"{size}; 'learnt' is read as final test loss <= {config.learns_fraction:g} x ln V "
            f"for every k > d. Neither paper runs this task; it isolates their statement."
        ),
    )
    claim_short = Claim(
        PAPER,
        "truncation bias (T&O 2017, introduction)",
        f"with k <= d no gradient ties a target to its symbol: the loss stays at the memoryless "
        f"baseline ln V (here d={d})",
        "qualitative: 'truncation favors short-term dependencies'",
        f"lowest test loss / ln V over training (median of seeds): {listing(short_k, lowest, '.3f')}; "
        f"final accuracy {listing(short_k, accuracy, '.2f')} (chance {chance:.2f})",
        bool(short_k) and all(lowest[k] >= config.stays_fraction for k in short_k),
        differs=(
            f"'stays at the baseline' is read as test loss >= {config.stays_fraction:g} x ln V "
            "at every evaluation for every k <= d. The carry still crosses the chunk "
            "boundary, so a network can pick up what its state happens to hold of older "
            "symbols without a gradient asking it to store them."
        ),
    )

    plt = runs.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(trained)))
    for (k, r), color in zip(trained.items(), colors):
        for s in range(config.num_seeds):
            axes[0].plot(
                r["steps"],
                r["test_loss"][s] / baseline,
                color=color,
                alpha=0.8,
                ls="-" if k > d else "--",
                label=f"k = {k}" if s == 0 else None,
            )
    axes[0].axhline(1, color="k", lw=1, ls=":", label="memoryless baseline ln V")
    axes[0].set_xlabel("update (one chunk of k steps per stream)")
    axes[0].set_ylabel("test loss / ln V")
    axes[0].set_yscale("log")
    axes[0].legend(fontsize=8)
    ks = list(trained)
    axes[1].plot(ks, [final[k] for k in ks], "o-", color="tab:blue")
    axes[1].axvline(d, color="tab:red", ls="--", lw=1, label=f"k = d = {d}")
    axes[1].axhline(1, color="k", lw=1, ls=":")
    axes[1].set_xscale("log")
    axes[1].set_xticks(ks, [str(k) for k in ks])
    axes[1].minorticks_off()
    axes[1].set_yscale("log")
    axes[1].set_xlabel("truncation k")
    axes[1].set_ylabel("final test loss / ln V (median)")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Delayed recall (d = {d}, V = {config.vocab_size}) with truncated BPTT")
    figure = runs.save_figure(fig, run_dir, "loss_vs_truncation")

    table = [
        "| k | updates | symbols read per stream | targets with their symbol in the chunk | "
        "final test loss / ln V | lowest / ln V | final accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for k, r in trained.items():
        table.append(
            f"| {k} | {r['steps'][-1]} | {r['symbols'][-1]} | {max(k - d, 0) / k:.2f} | {final[k]:.3f} | "
            f"{lowest[k]:.3f} | {accuracy[k]:.2f} |"
        )
    notes = [
        f"Memoryless baseline ln V = {baseline:.4f} nats (accuracy {chance:.2f}). Medians over "
        f"{config.num_seeds} seeds; the test loss is measured on {config.test_streams} held-out "
        f"streams of {config.test_length} steps read without truncation (first "
        f"{config.test_warmup} not scored).",
        "",
        *table,
        "",
        f"Figure: {os.path.relpath(figure, run_dir)}.",
    ]
    results = {
        "baseline_loss": baseline,
        "chance_accuracy": chance,
        "final_over_baseline": final,
        "lowest_over_baseline": lowest,
        "runs": {str(k): r for k, r in trained.items()},
    }
    claims = [claim_long, claim_short]
    return runs.finish_claims(
        run_dir,
        title=f"{PAPER}: truncated BPTT on a {d}-step dependency",
        config=config,
        results=results,
        summary=notes,
        started=t0,
        claims=claims,
    )


if __name__ == "__main__":
    main()
