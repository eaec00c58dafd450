"""A character-level language model of Python's documentation, next to a Kneser-Ney n-gram model.

Methods, in the order this script runs them:

1. Data. ``pydoc_data.topics`` (in the standard library: the text of the language
   reference's topics, the pages ``help("if")`` shows), one document per topic, about
   465k characters. Documents are split, not characters: every ``test_every``-th topic in
   sorted order is held out, less its paragraphs that occur verbatim in the training text
   (the topics repeat each other); about 35k held-out characters remain. Characters seen
   fewer than ``min_count`` times in the training text (non-ASCII quotes, dashes) become
   one unknown character.
2. Model. A language model (:func:`rnnjax.language_model`): embedding, a stacked LSTM or
   GRU, a linear readout to the next character's logits; dropout (``dropout``) on the
   embeddings and the RNN's outputs, never on the recurrent connections (Zaremba et al.
   2014), active in training only.
3. Training. Truncated backpropagation through time (:mod:`rnnjax.training`'s stateful
   training): ``num_streams`` streams read the training documents in order, in chunks of
   ``chunk_length`` characters; the carry passes from chunk to chunk and is reset where a
   document begins. Adam with gradient clipping, a fixed number of steps, the learning
   rate constant or decayed to zero on a cosine (``lr_schedule``). The held-out text is
   scored every ``eval_every`` steps for the learning curve only: the number reported is
   the last step's, never the best of the curve.
4. Measure. Bits per character on the held-out documents (the carry passed over the whole
   document, every character after the first predicted from all before it), against an
   interpolated Kneser-Ney n-gram model (Chen & Goodman 1998) written here, fitted on the
   same training text and scoring the same characters, and against the unigram
   frequencies. Samples from a prompt: greedy, and with temperature and top-k.

Usage::

    python -m experiments.char_lm                  # quick preset (about 2 minutes)
    python -m experiments.char_lm --preset full    # larger model, longer

Outputs go to ``--run-dir`` (default ``runs/char_lm/<preset>``): ``config.json``,
``results.json``, ``summary.md`` and ``figures/`` (learning curve; n-gram bits per
character by order).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments.experiment_cli import start_run, write_results
from rnnjax import training
from rnnjax._src import runs
from rnnjax._src.runs import option
from rnnjax._src.training import stateful

# --------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json`` in the run directory."""

    cell: str = option("lstm", "recurrent cell, a name in rnnjax.CELLS (lstm, gru, ...)")
    hidden_size: int = option(128, "hidden units per layer")
    num_layers: int = option(1, "stacked recurrent layers")
    embed_size: int = option(32, "character embedding size")
    num_streams: int = option(32, "streams read side by side (batch size)")
    chunk_length: int = option(64, "characters per chunk (truncation of backpropagation)")
    num_steps: int = option(400, "Adam updates")
    learning_rate: float = option(3e-3, "Adam learning rate (the peak, with a schedule)")
    lr_schedule: str = option("constant", "learning rate: constant | cosine (decays to 0)")
    dropout: float = option(0.0, "dropout on the embeddings and the RNN outputs (Zaremba 2014)")
    clip_norm: float = option(1.0, "gradient clipping by global norm")
    ngram_orders: tuple[int, ...] = option((2, 3, 4, 5, 6, 7, 8, 9), "n-gram orders fitted")
    test_every: int = option(7, "every n-th topic (sorted) is held out")
    min_count: int = option(20, "rarer training characters map to one unknown character")
    eval_every: int = option(100, "steps between held-out evaluations")
    sample_length: int = option(300, "characters per sample")
    seed: int = option(0, "master seed")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": dict(
        hidden_size=384,
        embed_size=64,
        num_steps=3000,
        chunk_length=100,
        learning_rate=2e-3,
        lr_schedule="cosine",
        dropout=0.25,
        eval_every=250,
    ),
}
PROMPT = 'The "while" statement\n*********************\n\n'


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    if config.cell not in rnnjax.CELLS:
        raise ValueError(f"cell must be one of {sorted(rnnjax.CELLS)}, got {config.cell!r}")
    runs.check_positive(
        config,
        "hidden_size",
        "num_layers",
        "embed_size",
        "num_streams",
        "chunk_length",
        "num_steps",
        "eval_every",
        "sample_length",
        "min_count",
    )
    if config.test_every < 2:
        raise ValueError(f"test_every must be >= 2, got {config.test_every}")
    if config.lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be constant or cosine, got {config.lr_schedule!r}")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")
    if not config.ngram_orders or min(config.ngram_orders) < 1:
        raise ValueError(f"ngram_orders must be >= 1, got {config.ngram_orders}")


# ------------------------------------------------------------------------------ the data


class Text:
    """The topics split by document, held-out paragraphs seen in training removed, and the vocabulary.

    The topics repeat one another (``specialnames`` contains ``customization`` whole), so a
    held-out topic's paragraph (text between blank lines) that occurs verbatim anywhere in
    the training text is dropped from the held-out text: about half of it otherwise, which
    a high-order n-gram model would score by memory.
    """

    def __init__(self, test_every: int, min_count: int):
        from pydoc_data.topics import topics

        names = sorted(topics)
        self.test_names = names[test_every - 1 :: test_every]
        self.train_names = [n for n in names if n not in self.test_names]
        train_text = "\n".join(topics[n] for n in self.train_names)
        test_text = {
            n: "\n\n".join(p for p in topics[n].split("\n\n") if p.strip() and p not in train_text)
            for n in self.test_names
        }
        self.test_names = [n for n in self.test_names if len(test_text[n]) > 1]
        self.dropped_chars = sum(len(topics[n]) for n in names if n not in self.train_names) - sum(
            len(test_text[n]) for n in self.test_names
        )
        counts = collections.Counter(train_text)
        self.chars = ["\0"] + sorted(c for c, k in counts.items() if k >= min_count)  # \0: unknown
        index = {c: i for i, c in enumerate(self.chars)}
        encode = lambda s: np.array([index.get(c, 0) for c in s], np.int32)
        self.train = [encode(topics[n]) for n in self.train_names]
        self.test = [encode(test_text[n]) for n in self.test_names]

    def decode(self, tokens) -> str:
        """Returns the text of ``tokens`` (the unknown character shown as ``?``)."""
        return "".join("?" if t == 0 else self.chars[t] for t in np.asarray(tokens).tolist())

    def encode(self, text: str) -> np.ndarray:
        """Returns the tokens of ``text``."""
        return np.array([self.chars.index(c) if c in self.chars else 0 for c in text], np.int32)


# ------------------------------------------------------------------- Kneser-Ney baseline


class KneserNey:
    """An interpolated Kneser-Ney character n-gram model (Chen & Goodman 1998, sec. 3.5).

    ``P(w | h) = max(c(h w) - D, 0) / c(h .) + D N1+(h .) / c(h .) P(w | h')`` at the
    highest order, with raw counts ``c``; the lower orders use continuation counts
    ``N1+(. h w)`` (how many different symbols precede ``h w``) in place of ``c``; below
    the unigram is the uniform ``1 / V``. Each order's discount is ``D = n1 / (n1 + 2 n2)``
    from its counts of counts (Ney, Essen & Kneser 1994). A context never seen passes all
    its mass to the next order. Documents are padded in front with ``order - 1`` start
    symbols (``V``), so the first characters have a context. An n-gram is stored as the
    integer ``sum_i s_i (V+1)^(k-1-i)``, its counts found by ``np.unique``/``searchsorted``.
    """

    def __init__(self, documents: list[np.ndarray], order: int, vocab_size: int):
        self.order, self.vocab_size, self.base = order, vocab_size, vocab_size + 1
        if self.base**order >= 2**63:
            raise ValueError(
                f"order must keep (vocab_size + 1) ** order < 2**63 (int64 codes), "
                f"got order {order} with vocab_size {vocab_size}"
            )
        grams = np.unique(
            np.concatenate([self.windows(d) for d in documents]) @ self._powers(order),
            return_counts=True,
        )
        self.tables = {order: self._table(*grams)}
        for k in range(order - 1, 0, -1):
            # N1+(. g): each distinct (k+1)-gram adds one to the count of its k-suffix
            self.tables[k] = self._table(*np.unique(grams[0] % self.base**k, return_counts=True))
            grams = (np.unique(grams[0] % self.base**k), None)

    def _powers(self, k: int) -> np.ndarray:
        return self.base ** np.arange(k - 1, -1, -1, dtype=np.int64)

    def _table(self, codes: np.ndarray, counts: np.ndarray) -> dict:
        of_counts = np.bincount(counts, minlength=3)
        n1, n2 = of_counts[1], of_counts[2]
        contexts, first, types = np.unique(
            codes // self.base, return_index=True, return_counts=True
        )
        totals = np.add.reduceat(counts, first)
        return {
            "codes": codes,
            "counts": counts,
            "contexts": contexts,
            "totals": totals,
            "types": types,
            "discount": n1 / (n1 + 2 * n2) if n1 + n2 else 0.5,
        }

    def windows(self, document: np.ndarray) -> np.ndarray:
        """Returns ``(len(document), order)``: each symbol with the ``order - 1`` before it."""
        seq = np.concatenate([np.full(self.order - 1, self.vocab_size), document]).astype(np.int64)
        return np.lib.stride_tricks.sliding_window_view(seq, self.order)

    def probs(self, windows: np.ndarray) -> np.ndarray:
        """Returns ``P(w | h)`` for each row ``(h, w)`` of ``windows: (N, order)``."""
        windows = np.asarray(windows, np.int64)
        p = np.full(len(windows), 1.0 / self.vocab_size)
        for k in range(1, self.order + 1):
            t = self.tables[k]
            code = windows[:, self.order - k :] @ self._powers(k)
            i = np.minimum(
                np.searchsorted(t["contexts"], code // self.base), len(t["contexts"]) - 1
            )
            seen = t["contexts"][i] == code // self.base
            j = np.minimum(np.searchsorted(t["codes"], code), len(t["codes"]) - 1)
            count = np.where(t["codes"][j] == code, t["counts"][j], 0)
            total, d = np.where(seen, t["totals"][i], 1), t["discount"]
            p = np.where(seen, np.maximum(count - d, 0) / total + d * t["types"][i] / total * p, p)
        return p

    def bits_per_char(self, documents: list[np.ndarray]) -> float:
        """Returns the mean of ``-log2 P(x_t | x_<t)`` over every character after each document's first."""
        windows = np.concatenate([self.windows(d)[1:] for d in documents])
        return float(-np.mean(np.log2(self.probs(windows))))


def unigram_bits_per_char(
    train: list[np.ndarray], test: list[np.ndarray], vocab_size: int
) -> float:
    """Returns the held-out bits per character of add-one-smoothed training character frequencies."""
    counts = np.bincount(np.concatenate(train), minlength=vocab_size) + 1.0
    log_p = np.log2(counts / counts.sum())
    return float(-np.mean(np.concatenate([log_p[d[1:]] for d in test])))


# ------------------------------------------------------------------------------------ RNN


def build_model(config: Config, vocab_size: int) -> rnnjax.LanguageModel:
    """Returns the language model of ``config``."""
    layers = [
        rnnjax.recurrent(rnnjax.make_cell(config.cell, config.hidden_size))
        for _ in range(config.num_layers)
    ]
    layer = layers[0] if len(layers) == 1 else rnnjax.stack(*layers)
    return rnnjax.language_model(
        layer, vocab_size, embed_size=config.embed_size, dropout=config.dropout
    )


def held_out_bits(model: rnnjax.LanguageModel, config: Config, test: list[np.ndarray]):
    """Returns ``bits(params) -> ()``: bits per character over ``test``, each document read whole.

    The documents are read in chunks as in training, by one stream (the carry passed on,
    reset at each document), so every character after a document's first is scored given
    all the characters before it.
    """
    chunks = jax.tree.map(
        jnp.asarray, training.document_chunks(test, num_streams=1, chunk_length=config.chunk_length)
    )
    loss = rnnjax.training.chunk_loss(model)

    def bits(params):
        initial = jax.vmap(lambda _: model.initial_carry(params))(jnp.arange(1))

        def body(carry, chunk):
            carry = stateful.reset_carry(carry, initial, chunk.reset)
            mean, (carry, aux) = loss(params, chunk, carry, None)
            return carry, (mean * aux["tokens"], aux["tokens"])

        _, (nats, tokens) = jax.lax.scan(body, initial, chunks)
        return jnp.sum(nats) / jnp.sum(tokens) / jnp.log(2.0)

    return jax.jit(bits)


def train_rnn(config: Config, text: Text, key: jax.Array, progress: bool | None) -> dict:
    """Returns the RNN's held-out bits per character, its learning curve and its samples."""
    vocab_size = len(text.chars)
    model = build_model(config, vocab_size)
    k_init, k_data, k_sample = jax.random.split(key, 3)
    params = jax.jit(model.init)(k_init)
    chunks = jax.tree.map(
        jnp.asarray,
        training.document_chunks(
            text.train, num_streams=config.num_streams, chunk_length=config.chunk_length
        ),
    )
    initial = jax.vmap(lambda _: model.initial_carry(params))(jnp.arange(config.num_streams))
    learning_rate = (
        optax.cosine_decay_schedule(config.learning_rate, config.num_steps)
        if config.lr_schedule == "cosine"
        else config.learning_rate
    )
    optimizer = optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(learning_rate))
    state = training.init_stateful_train_state(k_data, params, optimizer, initial)
    step = training.make_stateful_train_step(rnnjax.training.chunk_loss(model), optimizer, initial)
    bits = held_out_bits(model, config, text.test)
    t0 = time.perf_counter()
    result = training.fit(
        step,
        state,
        lambda k, s: training.chunk_at(chunks, s),
        config.num_steps,
        eval_fn=lambda p, k: {"test_bpc": bits(p)},
        progress=progress,
        schedule=training.Schedule(config.eval_every, eval_every=config.eval_every),
    )
    wall = time.perf_counter() - t0
    final = result.state.params
    evals = [r for r in result.history if "eval/test_bpc" in r]
    train_rows = [r for r in result.history if "loss" in r]
    prompt = jnp.asarray(text.encode(PROMPT))
    # One program for every sample: top-k 1 is greedy decoding (tests/test_decoding.py).
    sample = jax.jit(
        lambda p, t, k: model.generate(
            p,
            prompt,
            max_length=len(PROMPT) + config.sample_length,
            key=k_sample,
            temperature=t,
            top_k=k,
        )[0]
    )
    samples = {
        name: text.decode(sample(final, t, k))
        for name, t, k in (
            ("greedy", 1.0, 1),
            ("temperature 0.8, top-k 10", 0.8, 10),
            ("temperature 1.0", 1.0, vocab_size),
        )
    }
    return {
        "test_bpc": float(bits(final)),
        "train_bpc_last": float(np.mean([r["loss"] for r in train_rows[-20:]]) / math.log(2)),
        "train_wall_s": wall,
        "steps_per_epoch": int(chunks.lengths.shape[0]),
        "eval_steps": [r["step"] for r in evals],
        "test_bpc_curve": [r["eval/test_bpc"] for r in evals],
        "train_steps": [r["step"] for r in train_rows],
        "train_bpc_curve": [r["loss"] / math.log(2) for r in train_rows],
        "samples": samples,
    }


# --------------------------------------------------------------------------- summary, plots


def verdict(config: Config, results: dict) -> list[str]:
    """Returns the verdict: does the RNN beat the best n-gram order on held-out bits per character."""
    rnn = results["rnn"]["test_bpc"]
    order, best = min(results["ngram_bpc"].items(), key=lambda kv: kv[1])
    diff = best - rnn
    return [
        f"VERDICT: the {config.cell.upper()} language model "
        + ("beats" if diff > 0 else "does NOT beat")
        + f" the best Kneser-Ney n-gram ({order}-gram) on held-out text: {rnn:.3f} vs "
        f"{best:.3f} bits per character ({'-' if diff > 0 else '+'}{abs(diff):.3f}).",
        f"unigram baseline {results['unigram_bpc']:.3f} bits per character",
    ]


def summary_tables(config: Config, results: dict) -> str:
    """Returns the bits-per-character table and the samples."""
    rnn = results["rnn"]
    rows = [
        [
            f"{config.cell.upper()} {config.num_layers}x{config.hidden_size} "
            f"({config.num_steps} steps, {config.num_steps / rnn['steps_per_epoch']:.1f} epochs"
            + (f", dropout {config.dropout}" if config.dropout else "")
            + (f", {config.lr_schedule} learning rate" if config.lr_schedule != "constant" else "")
            + ")",
            rnn["test_bpc"],
        ]
    ]
    rows += [[f"interpolated Kneser-Ney {n}-gram", b] for n, b in results["ngram_bpc"].items()]
    rows += [["unigram (add-one)", results["unigram_bpc"]]]
    data = results["data"]
    parts = [
        f"Held out: {data['test_topics']} topics, {data['test_chars']} characters after "
        f"dropping {data['dropped_test_chars']} in paragraphs also in the training text "
        f"(training: {data['train_topics']} topics, {data['train_chars']} characters; "
        f"{data['vocab_size']} symbols).",
        "",
        runs.markdown_table(["model", "held-out bits per character"], rows),
        "",
    ]
    for name, sample in rnn["samples"].items():
        parts += [f"Sample ({name}), prompt then continuation:", "", "```", sample, "```", ""]
    return "\n".join(parts)


def make_figures(config: Config, results: dict, run_dir: str) -> list[str]:
    """Writes the learning curve and returns its path."""
    plt = runs.pyplot()
    rnn = results["rnn"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(rnn["train_steps"], rnn["train_bpc_curve"], lw=0.6, alpha=0.6, label="training chunk")
    ax.plot(rnn["eval_steps"], rnn["test_bpc_curve"], "o-", label="held-out text")
    best_order, best = min(results["ngram_bpc"].items(), key=lambda kv: kv[1])
    ax.axhline(best, color="k", ls="--", label=f"Kneser-Ney {best_order}-gram")
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per character")
    ax.set_ylim(min(rnn["test_bpc"], best) - 0.3, 5)
    ax.legend()
    ax.set_title(f"{config.cell.upper()} language model on pydoc topics")
    return [runs.save_figure(fig, run_dir, "learning_curve.png")]


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    """Runs the experiment; returns ``{"results", "verdict", "run_dir"}``."""
    config, args, run_dir = start_run(Config, PRESETS, argv, __doc__, "char_lm", check_config)
    t_start = time.perf_counter()
    text = Text(config.test_every, config.min_count)
    vocab_size = len(text.chars)
    results: dict[str, Any] = {
        "data": {
            "train_topics": len(text.train),
            "test_topics": len(text.test),
            "train_chars": int(sum(map(len, text.train))),
            "test_chars": int(sum(map(len, text.test))),
            "vocab_size": vocab_size,
            "test_names": text.test_names,
            "dropped_test_chars": text.dropped_chars,
        }
    }
    print("[1/2] Kneser-Ney n-grams", file=sys.stderr)
    t0 = time.perf_counter()
    results["ngram_bpc"] = {
        n: KneserNey(text.train, n, vocab_size).bits_per_char(text.test)
        for n in config.ngram_orders
    }
    results["ngram_wall_s"] = time.perf_counter() - t0
    results["unigram_bpc"] = unigram_bits_per_char(text.train, text.test, vocab_size)
    print("[2/2] RNN language model", file=sys.stderr)
    results["rnn"] = train_rnn(config, text, jax.random.PRNGKey(config.seed), args.progress)
    wall = time.perf_counter() - t_start
    paths = make_figures(config, results, run_dir)
    return write_results(
        run_dir,
        config,
        [results],
        verdict(config, results),
        summary_tables(config, results),
        title="Character language model of Python's documentation vs Kneser-Ney n-grams",
        intro=(
            "pydoc_data.topics, split by topic; every model scores the same held-out "
            "characters (each document's characters after its first)."
        ),
        figures=[os.path.basename(p) for p in paths],
        wall=wall,
    )


if __name__ == "__main__":
    main()
