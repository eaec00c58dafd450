"""Translating numbers spelled in English into German, with and without attention.

Methods, in the order this script runs them:

1. Data. A restricted-domain translation pair from the num2words package (its English and
   German spelling rules, pure code inside the wheel): "forty-two" -> "zweiundvierzig",
   "one thousand, nine hundred and ninety-nine" -> "eintausendneunhundertneunundneunzig".
   The word order differs (German says the units before the tens) and German writes a
   number below a million as one word. Source tokens: the English words (hyphens and
   commas dropped). Target tokens: the German string, lower-cased, cut into number pieces
   ("zwei", "und", "vierzig", "tausend", ...) by longest match; joining the pieces gives
   the string back. The numbers 1 .. 10^max_digits - 1 are split once by digit count:
   ``num_test`` numbers (an equal share of each digit count) are held out and never
   trained on; training batches draw a digit count uniformly, then a number from a pool
   of the remaining numbers of that count.
2. Models. The same encoder and decoder for every model (:func:`rnnjax.encoder_decoder`):
   embeddings, a bidirectional LSTM encoder, an LSTM decoder started from the encoder's
   final carry. ``none``: the source reaches the decoder only through that carry and the
   same vector fed at every step (Sutskever et al. 2014; Cho et al. 2014). ``bahdanau``:
   additive attention over the encoder's outputs (Bahdanau et al. 2015). ``luong``:
   multiplicative ("general") attention with input feeding (Luong et al. 2015).
3. Training. Teacher-forced cross-entropy over the target pieces and the end token; Adam
   with clipping; the same batches, steps and seed for every model.
4. Measure, on the held-out numbers: exact match of greedy decoding (every piece and the
   end token right), bucketed by the source length in English words; the attention
   weights of one long held-out number, plotted.

Usage::

    python -m experiments.translation                  # quick preset
    python -m experiments.translation --preset full    # numbers up to 10^12, wider, longer

Outputs go to ``--run-dir`` (default ``runs/translation/<preset>``): ``config.json``,
``results.json``, ``summary.md`` and ``figures/`` (accuracy by source length, the
attention matrices, the learning curves).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments.experiment_cli import start_run, write_results
from rnnjax import losses, padding, training
from rnnjax._src import runs
from rnnjax._src.runs import option

PAD, START, END = 0, 1, 2
ATTENTION = {"none": None, "bahdanau": "bahdanau", "luong": "luong"}

# German number pieces; a number's spelling (below 10^12) is a sequence of these.
GERMAN_PIECES = (
    "ein",
    "eins",
    "eine",
    "zwei",
    "drei",
    "vier",
    "fünf",
    "sechs",
    "sieben",
    "acht",
    "neun",
    "zehn",
    "elf",
    "zwölf",
    "sechzehn",
    "siebzehn",
    "zwanzig",
    "dreißig",
    "vierzig",
    "fünfzig",
    "sechzig",
    "siebzig",
    "achtzig",
    "neunzig",
    "hundert",
    "tausend",
    "und",
    "million",
    "millionen",
    "milliarde",
    "milliarden",
    " ",
)

# --------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json`` in the run directory."""

    max_digits: int = option(9, "numbers 1 .. 10^max_digits - 1")
    num_test: int = option(1350, "held-out numbers (an equal share of each digit count)")
    pool_per_digit: int = option(4000, "most training numbers of each digit count")
    models: tuple[str, ...] = option(
        ("none", "bahdanau", "luong"), "attention: none, bahdanau, luong"
    )
    hidden_size: int = option(64, "LSTM units (encoder per direction, decoder)")
    embed_size: int = option(32, "source and target embedding size")
    num_steps: int = option(400, "Adam updates per model")
    batch_size: int = option(64, "numbers per update")
    learning_rate: float = option(3e-3, "Adam learning rate")
    clip_norm: float = option(1.0, "gradient clipping by global norm")
    eval_every: int = option(200, "steps between held-out evaluations")
    seed: int = option(0, "master seed")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": dict(
        max_digits=12,
        num_test=2400,
        pool_per_digit=10000,
        hidden_size=128,
        num_steps=2000,
        eval_every=500,
    ),
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    runs.check_positive(
        config,
        "num_test",
        "pool_per_digit",
        "hidden_size",
        "embed_size",
        "num_steps",
        "batch_size",
        "eval_every",
    )
    if not 1 <= config.max_digits <= 12:
        raise ValueError(f"max_digits must be in [1, 12], got {config.max_digits}")
    unknown = [m for m in config.models if m not in ATTENTION]
    if not config.models or unknown:
        raise ValueError(
            f"models must be a non-empty subset of {sorted(ATTENTION)}, got {config.models}"
        )


# ------------------------------------------------------------------------------ the data


def english_words(n: int) -> list[str]:
    """Returns num2words' English spelling of ``n`` as words, hyphens and commas dropped."""
    from num2words import num2words

    return re.findall(r"[a-z]+", num2words(n, lang="en"))


def german_pieces(n: int) -> list[str]:
    """Returns num2words' German spelling of ``n``, lower-cased, cut into :data:`GERMAN_PIECES` by longest match."""
    from num2words import num2words

    text, pieces = num2words(n, lang="de").lower(), []
    while text:
        match = max((p for p in GERMAN_PIECES if text.startswith(p)), key=len, default=None)
        if match is None:
            raise ValueError(f"no German piece starts {text!r} (spelling of {n})")
        pieces.append(match)
        text = text[len(match) :]
    return pieces


class Pairs(NamedTuple):
    """Numbers with their token sequences, padded.

    Attributes:
      numbers: ``(N,)``.
      source: ``(N, S)`` English word ids, 0 after ``source_length``.
      source_length: ``(N,)``.
      target: ``(N, T)`` German piece ids then END, PAD after.
      target_length: ``(N,)``, counting END.
    """

    numbers: np.ndarray
    source: np.ndarray
    source_length: np.ndarray
    target: np.ndarray
    target_length: np.ndarray


class Vocab(NamedTuple):
    """Token ids: English words from 1 (0 pads), German pieces from 3 (PAD, START, END first)."""

    english: tuple[str, ...]
    german: tuple[str, ...]

    @staticmethod
    def make() -> Vocab:
        words = sorted(
            {
                w
                for n in (*range(1, 21), *range(30, 100, 10), 100, 10**3, 10**6, 10**9, 101)
                for w in english_words(n)
            }
        )
        return Vocab(("<pad>", *words), ("<pad>", "<start>", "<end>", *GERMAN_PIECES))


def encode(numbers: np.ndarray, vocab: Vocab) -> Pairs:
    """Returns the token arrays of ``numbers``, padded to the longest spelling among them."""
    en_id = {w: i for i, w in enumerate(vocab.english)}
    de_id = {w: i for i, w in enumerate(vocab.german)}
    sources = [[en_id[w] for w in english_words(int(n))] for n in numbers]
    targets = [[de_id[p] for p in german_pieces(int(n))] + [END] for n in numbers]

    def padded(rows):
        out = np.zeros((len(rows), max(map(len, rows))), np.int32)
        for i, row in enumerate(rows):
            out[i, : len(row)] = row
        return out, np.array([len(r) for r in rows], np.int32)

    (source, s_len), (target, t_len) = padded(sources), padded(targets)
    return Pairs(np.asarray(numbers), source, s_len, target, t_len)


def select(pairs: Pairs, index: Any) -> Pairs:
    """Returns the rows ``index`` of ``pairs``."""
    return Pairs(*(a[index] for a in pairs))


def split_numbers(config: Config) -> tuple[np.ndarray, list[np.ndarray]]:
    """Returns ``(test numbers, [training pool of each digit count])``, disjoint."""
    rng = np.random.default_rng(config.seed)
    test, pools = [], []
    share = math.ceil(config.num_test / config.max_digits)
    for d in range(1, config.max_digits + 1):
        low, high = 10 ** (d - 1), 10**d  # d = 1: 1..9
        count = high - low
        held = min(share, count // 3)  # keep two thirds of the short numbers to train on
        drawn = (
            rng.choice(count, size=min(count, held + config.pool_per_digit), replace=False) + low
        )
        test.append(drawn[:held])
        pools.append(drawn[held:])
    return np.concatenate(test), pools


def make_data(config: Config) -> tuple[Vocab, Pairs, list[Pairs]]:
    """Returns ``(vocab, held-out pairs, [training pairs of each digit count])``."""
    vocab = Vocab.make()
    test_numbers, pool_numbers = split_numbers(config)
    # One encoding of every number, so that the test set and the pools share their widths.
    every = encode(np.concatenate([test_numbers, *pool_numbers]), vocab)
    ends = np.cumsum([len(test_numbers)] + [len(p) for p in pool_numbers])
    test = select(every, slice(0, ends[0]))
    pools = [select(every, slice(a, b)) for a, b in itertools.pairwise(ends)]
    return vocab, test, pools


# ------------------------------------------------------------------------------- training


def source_buckets(lengths: np.ndarray, width: int = 3) -> list[tuple[int, int]]:
    """Returns the source-length buckets ``[(lo, hi), ...]`` (inclusive) of ``width`` words covering ``lengths``."""
    top = int(lengths.max())
    return [(lo, min(lo + width - 1, top)) for lo in range(1, top + 1, width)]


def train_and_translate(
    name: str,
    config: Config,
    vocab: Vocab,
    pools: list[Pairs],
    test: Pairs,
    key: jax.Array,
    progress: bool | None,
) -> dict:
    """Returns one model's held-out exact matches, learning curves, and the attention of the longest test number."""
    model = rnnjax.encoder_decoder(
        rnnjax.bidirectional(rnnjax.lstm(config.hidden_size)),
        rnnjax.lstm(config.hidden_size),
        len(vocab.german),
        start_token=START,
        end_token=END,
        pad_token=PAD,
        embed_size=config.embed_size,
        source_vocab_size=len(vocab.english),
        source_embed_size=config.embed_size,
        attention=ATTENTION[name],
    )
    # The pools stacked, (digit count, pool size, ...), each repeated to the largest's size;
    # a batch indexes only the first pool_size[d] rows of pool d.
    size = max(len(p.numbers) for p in pools)
    stacked = Pairs(
        *(
            jnp.asarray(np.stack([np.resize(a, (size,) + a.shape[1:]) for a in arrays]))
            for arrays in zip(*pools)
        )
    )
    pool_size = jnp.asarray([len(p.numbers) for p in pools])
    width_t = test.target.shape[1]

    def batch_fn(k, step):
        del step
        k_d, k_i = jax.random.split(k)
        d = jax.random.randint(k_d, (config.batch_size,), 0, len(pools))
        i = jax.random.randint(k_i, (config.batch_size,), 0, pool_size[d])
        return (
            stacked.source[d, i],
            stacked.source_length[d, i],
            stacked.target[d, i],
            stacked.target_length[d, i],
        )

    def loss_fn(params, batch, key):
        del key
        src, n, tgt, m = batch
        logits = jax.vmap(lambda s, t, k: model.apply(params, s, t, source_length=k))(src, tgt, n)
        return losses.masked_cross_entropy(logits, tgt, padding.valid_steps(tgt.shape[1], m)), {}

    def translate(params):
        return jax.vmap(
            lambda s, n: model.generate(params, s, max_length=width_t, source_length=n)
        )(jnp.asarray(test.source), jnp.asarray(test.source_length))

    buckets = {
        f"{lo}-{hi}": (test.source_length >= lo) & (test.source_length <= hi)
        for lo, hi in source_buckets(test.source_length)
    }

    def eval_fn(params, key):
        """Exact match (every piece and the end token) over all held-out numbers and per bucket."""
        del key
        tokens, length = translate(params)
        valid = jnp.arange(width_t) < jnp.asarray(test.target_length)[:, None]
        same = jnp.all(jnp.where(valid, tokens == jnp.asarray(test.target), True), axis=1)
        correct = same & (length == jnp.asarray(test.target_length))
        return {
            "exact_match": jnp.mean(correct),
            **{f"exact_match/{b}": jnp.mean(correct[inside]) for b, inside in buckets.items()},
        }

    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate)
    )
    k_init, k_data = jax.random.split(key)
    params = jax.jit(model.init)(k_init)
    state = training.init_train_state(k_data, params, optimizer)
    step = training.make_train_step(loss_fn, optimizer)
    t0 = time.perf_counter()
    result = training.fit(
        step,
        state,
        batch_fn,
        config.num_steps,
        eval_fn=eval_fn,
        progress=progress,
        schedule=training.Schedule(config.eval_every, eval_every=config.eval_every),
    )
    wall = time.perf_counter() - t0
    final = result.state.params
    evals = [r for r in result.history if "eval/exact_match" in r]  # the last: after training
    out = {
        "exact_match": evals[-1]["eval/exact_match"],
        "by_source_length": {
            b: {"count": int(inside.sum()), "exact_match": evals[-1][f"eval/exact_match/{b}"]}
            for b, inside in buckets.items()
        },
        "num_params": int(sum(np.size(a) for a in jax.tree.leaves(final))),
        "train_wall_s": wall,
        "eval_steps": [r["step"] for r in evals],
        "exact_match_curve": [r["eval/exact_match"] for r in evals],
        "train_loss": [r["loss"] for r in result.history if "loss" in r],
    }
    if ATTENTION[name] is not None:  # the attention of the longest held-out number
        i = int(np.lexsort((test.numbers, test.source_length))[-1])
        tokens, length, weights = jax.jit(
            lambda p: model.generate(
                p,
                test.source[i],
                max_length=width_t,
                source_length=test.source_length[i],
                return_attention=True,
            )
        )(final)
        n, k = int(test.source_length[i]), int(length)
        out["attention_example"] = {
            "number": int(test.numbers[i]),
            "source": [vocab.english[t] for t in test.source[i, :n]],
            "output": [vocab.german[t] for t in np.asarray(tokens[:k])],
            "target": [vocab.german[t] for t in test.target[i, : test.target_length[i]]],
            "weights": np.asarray(weights[:k, :n]).tolist(),
        }
    return out


# --------------------------------------------------------------------------- summary, plots


def verdict(config: Config, results: dict) -> list[str]:
    """Returns the verdict: exact match with attention vs without on the longest source bucket, with standard errors."""
    models = results["models"]
    longest = list(models[config.models[0]]["by_source_length"])[-1]
    lines = []
    if "none" in models and len(models) > 1:
        base = models["none"]["by_source_length"][longest]
        best = max(
            (m for m in models if m != "none"),
            key=lambda m: models[m]["by_source_length"][longest]["exact_match"],
        )
        ours = models[best]["by_source_length"][longest]
        p, q, n = ours["exact_match"], base["exact_match"], base["count"]
        se = math.sqrt(max(p * (1 - p) + q * (1 - q), 1e-12) / n)
        better = p - q > 2 * se
        lines.append(
            f"VERDICT: on the longest held-out inputs ({longest} English words, {n} "
            f"numbers) {best} attention reaches exact match {p:.3f} vs {q:.3f} without "
            f"attention: "
            + ("attention measurably better" if better else "NOT measurably better")
            + f" (difference {p - q:+.3f}, 2 standard errors = {2 * se:.3f})."
        )
    for m, r in models.items():
        lines.append(
            f"{m}: exact match {r['exact_match']:.3f} on all {results['num_test']} "
            f"held-out numbers; {r['num_params']} parameters; trained in "
            f"{r['train_wall_s']:.0f} s"
        )
    return lines


def summary_tables(config: Config, results: dict) -> str:
    """Returns the exact-match table by source length."""
    models = results["models"]
    labels = list(models[config.models[0]]["by_source_length"])
    rows = [
        [f"{label} words", models[config.models[0]]["by_source_length"][label]["count"]]
        + [models[m]["by_source_length"][label]["exact_match"] for m in models]
        for label in labels
    ]
    rows.append(["all", results["num_test"]] + [models[m]["exact_match"] for m in models])
    return "\n".join(
        [
            f"Held-out exact match (greedy decoding) on {results['num_test']} numbers below "
            f"10^{config.max_digits} never seen in training ({results['num_train_pool']} training "
            f"numbers); encoder BiLSTM {config.hidden_size}x2, decoder LSTM {config.hidden_size}, "
            f"{config.num_steps} steps of {config.batch_size} for every model.",
            "",
            runs.markdown_table(
                ["source length", "numbers"]
                + [f"{m} attention" if m != "none" else "no attention" for m in models],
                rows,
            ),
            "",
        ]
    )


def make_figures(config: Config, results: dict, run_dir: str) -> list[str]:
    """Writes exact match by source length, the attention matrices and the learning curves."""
    plt = runs.pyplot()
    models = results["models"]
    paths = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m, r in models.items():
        labels = list(r["by_source_length"])
        ax.plot(
            labels,
            [r["by_source_length"][b]["exact_match"] for b in labels],
            "o-",
            label="no attention" if m == "none" else m,
        )
    ax.set_xlabel("source length (English words)")
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1.02)
    ax.legend()
    paths.append(runs.save_figure(fig, run_dir, "exact_match_by_length.png"))
    attended = [m for m in models if "attention_example" in models[m]]
    if attended:
        fig, axes = plt.subplots(1, len(attended), figsize=(5.5 * len(attended), 5), squeeze=False)
        for ax, m in zip(axes[0], attended):
            ex = models[m]["attention_example"]
            ax.imshow(np.asarray(ex["weights"]), cmap="gray_r", vmin=0, vmax=1, aspect="auto")
            ax.set_xticks(range(len(ex["source"])), ex["source"], rotation=60, fontsize=8)
            ax.set_yticks(
                range(len(ex["output"])),
                [repr(p) if p == " " else p for p in ex["output"]],
                fontsize=8,
            )
            verdict = "right" if ex["output"] == ex["target"] else "wrong"
            ax.set_title(f"{m}: {ex['number']} (translation {verdict})", fontsize=9)
        paths.append(runs.save_figure(fig, run_dir, "attention.png"))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for m, r in models.items():
        ax.plot(
            r["eval_steps"],
            r["exact_match_curve"],
            "o-",
            label="no attention" if m == "none" else m,
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1.02)
    ax.legend()
    paths.append(runs.save_figure(fig, run_dir, "learning_curves.png"))
    return paths


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    """Runs the experiment; returns ``{"results", "verdict", "run_dir"}``."""
    config, args, run_dir = start_run(Config, PRESETS, argv, __doc__, "translation", check_config)
    t_start = time.perf_counter()
    vocab, test, pools = make_data(config)
    key = jax.random.PRNGKey(config.seed)
    results = {
        "num_test": len(test.numbers),
        "num_train_pool": int(sum(len(p.numbers) for p in pools)),
        "source_vocab": len(vocab.english),
        "target_vocab": len(vocab.german),
        "models": {},
    }
    for i, name in enumerate(config.models):
        print(f"[{i + 1}/{len(config.models)}] {name}", file=sys.stderr)
        # One key for every model: the same initial encoder draw and the same batches.
        results["models"][name] = train_and_translate(
            name, config, vocab, pools, test, jax.random.fold_in(key, 1), args.progress
        )
    wall = time.perf_counter() - t_start
    paths = make_figures(config, results, run_dir)
    return write_results(
        run_dir,
        config,
        [results],
        verdict(config, results),
        summary_tables(config, results),
        title="Numbers from English to German: encoder-decoder with and without attention",
        intro="num2words spellings; the held-out numbers are never trained on.",
        figures=[os.path.basename(p) for p in paths],
        wall=wall,
    )


if __name__ == "__main__":
    main()
