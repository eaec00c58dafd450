"""Captioning images of handwritten numbers in English words: an image sets an LSTM's carry, the LSTM writes.

Methods, in the order this script runs them:

1. Data. scikit-learn's handwritten digits (1797 images of 8x8 pixels, 0-16; the UCI
   optical recognition set), split once: a test share of the images is never seen in
   training. An image of a number is one to three digit images side by side in slots of
   8 columns, left-aligned, the unused slots blank (8 x 24 pixels); a number of two or
   three digits never starts with 0. Its caption is the number in English words, one token
   a word: "seven", "forty two", "three hundred twelve", "five hundred" (31 words, plus
   start, end and pad). Words, not one word per digit, because then the caption is a
   language the decoder has to learn: the number of words differs from the number of
   digits, a teen is one word for two digits ("twelve"), a zero is silent ("three hundred
   five", "forty"). Training images are drawn afresh at every step from the training
   digit images; the test images, once, from the test digit images.
2. Model. A one-to-many generator (Karpathy & Fei-Fei 2015): a feed-forward net maps the
   192 pixels to the initial carry of an LSTM language model
   (:func:`rnnjax.readouts.carry_bridge`, :func:`rnnjax.language_model`), which
   reads the start token and then its own words.
3. Training. Teacher forcing, next-word cross-entropy masked after the end token; Adam
   with clipping.
4. Measure, on the held-out images: exact-match accuracy of greedy decoding
   (:meth:`rnnjax.LanguageModel.generate`) and of beam search
   (:func:`rnnjax.decoding.beam_search`), overall and by number of digits, against a
   per-digit classifier told the segmentation (logistic regression on each digit's 64
   pixels, its digits spelled by the same rules: an oracle on where the digits are).

Usage::

    python -m experiments.captioning                  # quick preset
    python -m experiments.captioning --preset full    # wider, longer

Outputs go to ``--run-dir`` (default ``runs/captioning/<preset>``): ``config.json``,
``results.json``, ``summary.md`` and ``figures/`` (held-out images with their captions;
the learning curve).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments.experiment_cli import start_run, write_results
from experiments.handwriting_ctc import digit_images
from rnnjax import losses, padding, training
from rnnjax._src import decoding, runs
from rnnjax._src.runs import option

ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
PAD, START, END = 0, 1, 2
WORDS = ["<pad>", "<start>", "<end>"] + ONES + TENS + ["hundred"]
MAX_DIGITS = 3
MAX_WORDS = 4  # "seven hundred seventy seven"

# --------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json`` in the run directory."""

    test_images: float = option(0.3, "share of the digit images held out for test numbers")
    num_test: int = option(1000, "held-out number images")
    feature_size: int = option(256, "hidden units of the image net")
    hidden_size: int = option(128, "LSTM units")
    embed_size: int = option(16, "word embedding size")
    num_steps: int = option(1500, "Adam updates")
    batch_size: int = option(64, "images per update")
    learning_rate: float = option(3e-3, "Adam learning rate")
    clip_norm: float = option(1.0, "gradient clipping by global norm")
    beam_size: int = option(4, "beam search width")
    eval_every: int = option(250, "steps between held-out evaluations (greedy)")
    seed: int = option(0, "master seed")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": dict(
        feature_size=512,
        hidden_size=256,
        num_steps=5000,
        num_test=2000,
        learning_rate=2e-3,
        eval_every=500,
    ),
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    runs.check_positive(
        config,
        "num_test",
        "feature_size",
        "hidden_size",
        "embed_size",
        "num_steps",
        "batch_size",
        "beam_size",
        "eval_every",
    )
    if not 0 < config.test_images < 1:
        raise ValueError(f"test_images must be in (0, 1), got {config.test_images}")


# ------------------------------------------------------------------------------ the data


def spell(number: int) -> list[str]:
    """Returns ``number`` (0-999) in English words: 305 -> ["three", "hundred", "five"]."""
    if not 0 <= number <= 999:
        raise ValueError(f"number must be in [0, 999], got {number}")
    if number < 20:
        return [ONES[number]]
    if number < 100:
        return [TENS[number // 10 - 2]] + ([ONES[number % 10]] if number % 10 else [])
    return [ONES[number // 100], "hundred"] + (spell(number % 100) if number % 100 else [])


def caption_table() -> np.ndarray:
    """Returns ``(1000, MAX_WORDS + 1)`` int32: row n is spell(n)'s tokens, the end token, then pads."""
    table = np.full((1000, MAX_WORDS + 1), PAD, np.int32)
    for n in range(1000):
        tokens = [WORDS.index(w) for w in spell(n)] + [END]
        table[n, : len(tokens)] = tokens
    return table


def words_of(tokens) -> str:
    """Returns the words of a token row before its end token, a pad before it shown as ``<pad>``.

    So two captions read the same exactly when their token rows are equal (after the end
    token the decoders emit only pads; a row without one has more words than any caption).
    """
    out = []
    for t in np.asarray(tokens).tolist():
        if t == END:
            break
        out.append(WORDS[t])
    return " ".join(out)


class Numbers(NamedTuple):
    """A batch of number images.

    Attributes:
      pixels: ``(B, 8 * 8 * MAX_DIGITS)``, the 8 x 24 image row by row.
      number: ``(B,)`` the number shown.
      num_digits: ``(B,)``.
      image_index: ``(B, MAX_DIGITS)`` which digit image is in each slot (for the baseline).
    """

    pixels: jax.Array
    number: jax.Array
    num_digits: jax.Array
    image_index: jax.Array


def make_numbers(key: jax.Array, images: jax.Array, labels: jax.Array, batch: int) -> Numbers:
    """Returns ``batch`` random number images made of the given digit images (on device, under jit).

    The number of digits is uniform in 1-3; each slot's image is uniform over the images,
    the first slot's over the images of 1-9 when there are two or more digits.
    """
    k_n, k_i, k_lead = jax.random.split(key, 3)
    num_digits = jax.random.randint(k_n, (batch,), 1, MAX_DIGITS + 1)
    index = jax.random.randint(k_i, (batch, MAX_DIGITS), 0, images.shape[0])
    nonzero = labels != 0
    lead = jax.random.choice(k_lead, images.shape[0], (batch,), p=nonzero / jnp.sum(nonzero))
    index = index.at[:, 0].set(jnp.where(num_digits > 1, lead, index[:, 0]))
    present = jnp.arange(MAX_DIGITS) < num_digits[:, None]
    slots = jnp.where(present[:, :, None, None], images[index], 0.0)  # (B, D, 8, 8)
    pixels = jnp.concatenate(list(jnp.moveaxis(slots, 1, 0)), axis=-1)  # (B, 8, 8 D)
    digits = labels[index]
    place = 10 ** (num_digits[:, None] - 1 - jnp.arange(MAX_DIGITS))
    number = jnp.sum(jnp.where(present, digits * place, 0), axis=1)
    return Numbers(pixels.reshape(batch, -1), number, num_digits, index)


# ------------------------------------------------------------------------------- baseline


def segmented_classifier(data: dict, test: Numbers) -> np.ndarray:
    """Returns ``(num_test,)`` bool: is the spelled reading of logistic regression per digit exact?"""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(max_iter=2000)
    clf.fit(data["train_images"].reshape(len(data["train_images"]), -1), data["train_labels"])
    predicted = clf.predict(data["test_images"].reshape(len(data["test_images"]), -1))
    index, count = np.asarray(test.image_index), np.asarray(test.num_digits)
    read = [int("".join(str(d) for d in predicted[index[b, :n]])) for b, n in enumerate(count)]
    return np.array([spell(r) == spell(int(n)) for r, n in zip(read, np.asarray(test.number))])


# ------------------------------------------------------------------------------------ RNN


def train_and_caption(
    config: Config, data: dict, test: Numbers, key: jax.Array, progress: bool | None
) -> dict:
    """Returns the captioner's held-out exact matches (greedy and beam), learning curve and captions."""
    lm = rnnjax.language_model(
        rnnjax.recurrent(rnnjax.lstm(config.hidden_size)), len(WORDS), embed_size=config.embed_size
    )
    bridge = rnnjax.readouts.carry_bridge(lm, (config.feature_size,))
    table = jnp.asarray(caption_table())
    images, labels = jnp.asarray(data["train_images"]), jnp.asarray(data["train_labels"])
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate)
    )

    def loss_fn(params, numbers, key):
        del key
        targets = table[numbers.number]  # (B, W + 1): words, end, pads
        inputs = jnp.concatenate([jnp.full((targets.shape[0], 1), START), targets[:, :-1]], axis=1)
        length = 1 + jnp.sum((targets != END) & (targets != PAD), axis=1)

        def logits(pixels, x, n):
            return lm.apply(
                params["lm"], x, length=n, carry=bridge.apply(params["bridge"], pixels)
            )[1]

        mask = padding.valid_steps(targets.shape[1], length)
        return losses.masked_cross_entropy(
            jax.vmap(logits)(numbers.pixels, inputs, length), targets, mask
        ), {}

    def greedy(params, pixels):
        def one(p):
            carry = bridge.apply(params["bridge"], p)
            tokens, length = lm.generate(
                params["lm"],
                jnp.array([START]),
                max_length=MAX_WORDS + 2,
                carry=carry,
                end_token=END,
                pad_token=PAD,
            )
            return tokens[1:], length - 1  # the words and the end token, without the start

        return jax.vmap(one)(pixels)

    def beam(params, pixels):
        def one(p):
            tokens, scores, _ = decoding.beam_search(
                lambda c, t: lm.step(params["lm"], c, t),
                bridge.apply(params["bridge"], p),
                START,
                beam_size=config.beam_size,
                max_length=MAX_WORDS + 1,
                end_token=END,
                pad_token=PAD,
            )
            return tokens[0], scores[0]

        return jax.vmap(one)(pixels)

    def log_prob(params, pixels, tokens, lengths):
        return jax.vmap(
            lambda p, y, n: decoding.sequence_log_prob(
                lambda c, t: lm.step(params["lm"], c, t),
                bridge.apply(params["bridge"], p),
                START,
                y,
                n,
            )
        )(pixels, tokens, lengths)

    truth = table[test.number]

    def eval_fn(params, key):
        return {
            "test_exact_match": jnp.mean(jnp.all(greedy(params, test.pixels)[0] == truth, axis=1))
        }

    k_init, k_bridge, k_data = jax.random.split(key, 3)
    params = {"lm": lm.init(k_init), "bridge": bridge.init(k_bridge, test.pixels.shape[1])}
    state = training.init_train_state(k_data, params, optimizer)
    step = training.make_train_step(loss_fn, optimizer)
    t0 = time.perf_counter()
    result = training.fit(
        step,
        state,
        lambda k, s: make_numbers(k, images, labels, config.batch_size),
        config.num_steps,
        eval_fn=eval_fn,
        progress=progress,
        schedule=training.Schedule(config.eval_every, eval_every=config.eval_every),
    )
    wall = time.perf_counter() - t0
    final = result.state.params
    by_greedy, greedy_lengths = jax.jit(greedy)(final, test.pixels)
    by_beam, beam_scores = (np.asarray(a) for a in jax.jit(beam)(final, test.pixels))
    greedy_scores = np.asarray(jax.jit(log_prob)(final, test.pixels, by_greedy, greedy_lengths))
    by_greedy = np.asarray(by_greedy)
    evals = [r for r in result.history if "eval/test_exact_match" in r]
    return {
        "greedy_exact": np.all(by_greedy == np.asarray(truth), axis=1),
        "beam_exact": np.all(by_beam == np.asarray(truth), axis=1),
        "greedy_captions": [words_of(t) for t in by_greedy],
        "beam_captions": [words_of(t) for t in by_beam],
        "beam_minus_greedy_log_prob": beam_scores - greedy_scores,
        "train_wall_s": wall,
        "eval_steps": [r["step"] for r in evals],
        "test_exact_match_curve": [r["eval/test_exact_match"] for r in evals],
        "train_loss": [r["loss"] for r in result.history if "loss" in r],
    }


# --------------------------------------------------------------------------- summary, plots


def well_formed(captions: list[str]) -> int:
    """Returns how many of ``captions`` spell some number 0-999."""
    numbers = {" ".join(spell(n)) for n in range(1000)}
    return sum(c in numbers for c in captions)


def accuracy_rows(config: Config, results: dict) -> list[list[Any]]:
    """Returns the exact-match table's rows: method, overall, then by number of digits."""
    count = np.asarray(results["num_digits"])

    def row(name, exact):
        exact = np.asarray(exact)
        by_digits = [float(exact[count == d].mean()) for d in range(1, MAX_DIGITS + 1)]
        return [name, float(exact.mean())] + by_digits

    rnn = results["rnn"]
    return [
        row(
            f"image net {config.feature_size} -> LSTM {config.hidden_size}, greedy",
            rnn["greedy_exact"],
        ),
        row(
            f"image net {config.feature_size} -> LSTM {config.hidden_size}, beam {config.beam_size}",
            rnn["beam_exact"],
        ),
        row(
            "logistic regression per digit, segmentation given, spelled", results["segmented_exact"]
        ),
    ]


def verdict(config: Config, results: dict) -> list[str]:
    """Returns the verdict: the captioner's held-out exact match against the segmented classifier's."""
    rnn = results["rnn"]
    best = max(("greedy", "beam"), key=lambda m: np.mean(rnn[f"{m}_exact"]))
    ours, base = float(np.mean(rnn[f"{best}_exact"])), float(np.mean(results["segmented_exact"]))
    gain = np.asarray(rnn["beam_minus_greedy_log_prob"])
    changed = sum(g != b for g, b in zip(rnn["greedy_captions"], rnn["beam_captions"]))
    wrong = [c for c, right in zip(rnn["greedy_captions"], rnn["greedy_exact"]) if not right]
    return [
        f"VERDICT: the captioner writes the exact caption of {ours:.3f} of the held-out images "
        f"({best} decoding) vs {base:.3f} for the per-digit classifier told where each digit is: "
        + ("better" if ours > base else "NOT better")
        + ".",
        f"greedy {np.mean(rnn['greedy_exact']):.3f}, beam {np.mean(rnn['beam_exact']):.3f}; beam "
        f"search changed {changed} of {config.num_test} captions; its caption's log-probability "
        f"is >= greedy's for {int(np.sum(gain >= -1e-4))} of {config.num_test} images "
        f"(largest gain {gain.max():.3f} nats)",
        f"{well_formed(wrong)} of the {len(wrong)} wrong greedy captions are well-formed "
        "numbers (the digits misread, not the words)",
    ]


def summary_tables(config: Config, results: dict) -> str:
    """Returns the exact-match table."""
    return "\n".join(
        [
            f"{config.num_test} held-out number images made of {results['num_test_images']} unseen digit "
            f"images ({results['num_train_images']} training images). Exact match: the whole caption "
            "right.",
            "",
            runs.markdown_table(
                ["method", "exact match", "1 digit", "2 digits", "3 digits"],
                accuracy_rows(config, results),
            ),
            "",
        ]
    )


def make_figures(config: Config, results: dict, test_pixels: np.ndarray, run_dir: str) -> list[str]:
    """Writes held-out images with their captions (beam-changed ones first) and the learning curve."""
    plt = runs.pyplot()
    rnn = results["rnn"]
    changed = [
        i for i, (g, b) in enumerate(zip(rnn["greedy_captions"], rnn["beam_captions"])) if g != b
    ]
    shown = (changed + [i for i in range(config.num_test) if i not in changed])[:8]
    fig, axes = plt.subplots(4, 2, figsize=(8, 6.5))
    for ax, i in zip(axes.flat, shown):
        ax.imshow(test_pixels[i].reshape(8, 8 * MAX_DIGITS), cmap="gray_r")
        ax.set_axis_off()
        ax.set_title(
            f"truth: {results['truth_captions'][i]}\ngreedy: {rnn['greedy_captions'][i]}\n"
            f"beam: {rnn['beam_captions'][i]}",
            fontsize=8,
            loc="left",
        )
    fig.tight_layout()
    paths = [runs.save_figure(fig, run_dir, "captions.png")]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(rnn["eval_steps"], rnn["test_exact_match_curve"], "o-", label="captioner (greedy)")
    ax.axhline(
        float(np.mean(results["segmented_exact"])),
        color="k",
        ls="--",
        label="per-digit classifier, segmented",
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out exact match")
    ax.set_ylim(0, 1)
    ax.legend()
    paths.append(runs.save_figure(fig, run_dir, "learning_curve.png"))
    return paths


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    """Runs the experiment; returns ``{"results", "verdict", "run_dir"}``."""
    config, args, run_dir = start_run(Config, PRESETS, argv, __doc__, "captioning", check_config)
    t_start = time.perf_counter()
    data = digit_images(config.test_images, config.seed)
    key = jax.random.PRNGKey(config.seed)
    test = jax.jit(make_numbers, static_argnums=3)(
        jax.random.fold_in(key, 1),
        jnp.asarray(data["test_images"]),
        jnp.asarray(data["test_labels"]),
        config.num_test,
    )
    results = {
        "num_train_images": len(data["train_labels"]),
        "num_test_images": len(data["test_labels"]),
        "num_digits": np.asarray(test.num_digits),
        "truth_captions": [" ".join(spell(int(n))) for n in np.asarray(test.number)],
        "segmented_exact": segmented_classifier(data, test),
        "rnn": train_and_caption(config, data, test, jax.random.fold_in(key, 2), args.progress),
    }
    wall = time.perf_counter() - t_start
    paths = make_figures(config, results, np.asarray(test.pixels), run_dir)
    return write_results(
        run_dir,
        config,
        [results],
        verdict(config, results),
        summary_tables(config, results),
        title="Captioning images of handwritten numbers in words: image net + LSTM vs a segmented "
        "per-digit classifier",
        intro="Digit images split once; the test images are made of digit images no model saw in training.",
        figures=[os.path.basename(p) for p in paths],
        wall=wall,
    )


if __name__ == "__main__":
    main()
