"""Predicting the human sentiment rating of unseen words from their letters: a character RNN vs n-gram regression.

Methods, in the order this script runs them:

1. Data. The VADER sentiment lexicon (Hutto & Gilbert 2014, "VADER: A Parsimonious
   Rule-based Model for Sentiment Analysis of Social Media Text"), the file
   ``vaderSentiment/vader_lexicon.txt`` inside the ``vaderSentiment`` wheel: 7,520 entries
   (words, emoticons, slang: "abandon", ":-)", "lol"), each rated by ten people from -4
   (extremely negative) to +4 (extremely positive); the target is the mean rating. A token
   listed twice keeps its first entry. A test share of the tokens is held out at random;
   many held-out words have a relative in training ("abandoned" / "abandon"), so the
   held-out set is also scored on its part whose first five characters begin no
   training token.
2. Model. A many-to-one network (:func:`rnnjax.many_to_one`) reads a token character by
   character (embedded characters; padded batches with ``length=``): a bidirectional LSTM,
   its two final states (``pool="first_last"``), a linear readout to the rating.
3. Training. Mean squared error on the standardised rating; Adam with clipping.
4. Measure, on the held-out tokens: root mean squared error of the rating, Pearson
   correlation, and accuracy of its sign (no rating is 0), against the training mean (and
   majority sign), and against ridge regression and logistic regression (for the sign) on
   character 1- to 5-gram TF-IDF features of the same tokens, the token's start and end
   marked (scikit-learn; regularisation chosen by shuffled ``cv_folds``-fold cross-validation
   on the training tokens).

Usage::

    python -m experiments.sentiment                  # quick preset
    python -m experiments.sentiment --preset full    # wider, longer

Outputs go to ``--run-dir`` (default ``runs/sentiment/<preset>``): ``config.json``,
``results.json``, ``summary.md`` and ``figures/`` (predicted against human ratings; the
learning curve).
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments.experiment_cli import start_run, write_results
from rnnjax import losses, readouts, training
from rnnjax._src import runs
from rnnjax._src.runs import option

PAD, UNKNOWN = 0, 1  # character tokens; the characters seen in training follow
STEM = 5  # characters a held-out token must not share with any training token's start

# --------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json`` in the run directory."""

    test_share: float = option(0.2, "share of the lexicon's tokens held out")
    hidden_size: int = option(64, "LSTM units per direction")
    embed_size: int = option(16, "character embedding size")
    num_steps: int = option(1500, "Adam updates")
    batch_size: int = option(64, "tokens per update")
    learning_rate: float = option(3e-3, "Adam learning rate")
    clip_norm: float = option(1.0, "gradient clipping by global norm")
    eval_every: int = option(250, "steps between held-out evaluations")
    cv_folds: int = option(5, "cross-validation folds choosing the n-gram models' regularisation")
    seed: int = option(0, "master seed")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": dict(
        hidden_size=128, embed_size=32, num_steps=5000, learning_rate=2e-3, eval_every=500
    ),
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    runs.check_positive(
        config, "hidden_size", "embed_size", "num_steps", "batch_size", "eval_every"
    )
    if config.cv_folds < 2:
        raise ValueError(f"cv_folds must be >= 2, got {config.cv_folds}")
    if not 0 < config.test_share < 1:
        raise ValueError(f"test_share must be in (0, 1), got {config.test_share}")


# ------------------------------------------------------------------------------ the data


def vader_lexicon() -> tuple[list[str], np.ndarray, np.ndarray]:
    """Returns ``(tokens, mean ratings, standard deviations)`` of the VADER lexicon, each token once."""
    text = (importlib.resources.files("vaderSentiment") / "vader_lexicon.txt").read_text(
        encoding="utf-8"
    )
    tokens, means, sds, seen = [], [], [], set()
    for line in text.splitlines():
        if not line.strip():
            continue
        token, mean, sd = line.split("\t")[:3]
        if token not in seen:
            seen.add(token)
            tokens.append(token)
            means.append(float(mean))
            sds.append(float(sd))
    return tokens, np.array(means, np.float32), np.array(sds, np.float32)


class Split(NamedTuple):
    """The lexicon split once into training and held-out tokens, characters as integers.

    Attributes:
      train_tokens, test_tokens: the strings.
      train_chars, test_chars: ``(N, T)`` int32 character codes, ``PAD`` after each token.
      train_lengths, test_lengths: ``(N,)``.
      train_y, test_y: ``(N,)`` mean human ratings.
      test_sd: ``(N,)`` the raters' standard deviation of each held-out token.
      unseen_stem: ``(N_test,)`` bool, no training token starts with this one's first STEM characters.
      alphabet: the characters seen in training, code ``i + 2`` for ``alphabet[i]``.
    """

    train_tokens: list
    test_tokens: list
    train_chars: np.ndarray
    test_chars: np.ndarray
    train_lengths: np.ndarray
    test_lengths: np.ndarray
    train_y: np.ndarray
    test_y: np.ndarray
    test_sd: np.ndarray
    unseen_stem: np.ndarray
    alphabet: str


def encode(tokens: list[str], alphabet: str, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns ``(codes: (N, width) int32, lengths: (N,))``, unknown characters as ``UNKNOWN``."""
    code = {c: i + 2 for i, c in enumerate(alphabet)}
    chars = np.full((len(tokens), width), PAD, np.int32)
    for i, token in enumerate(tokens):
        chars[i, : len(token)] = [code.get(c, UNKNOWN) for c in token]
    return chars, np.array([len(t) for t in tokens], np.int32)


def split_lexicon(test_share: float, seed: int) -> Split:
    """Returns the lexicon split at random, ``test_share`` of the tokens held out."""
    tokens, means, sds = vader_lexicon()
    order = np.random.default_rng(seed).permutation(len(tokens))
    n_test = round(test_share * len(tokens))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    train_tokens, test_tokens = [tokens[i] for i in train], [tokens[i] for i in test]
    alphabet = "".join(sorted(set("".join(train_tokens))))
    width = max(len(t) for t in tokens)
    # every start of up to STEM characters of a training token
    starts = {t[:k] for t in train_tokens for k in range(1, STEM + 1)}
    unseen = np.array([t[:STEM] not in starts for t in test_tokens])
    train_chars, train_lengths = encode(train_tokens, alphabet, width)
    test_chars, test_lengths = encode(test_tokens, alphabet, width)
    return Split(
        train_tokens,
        test_tokens,
        train_chars,
        test_chars,
        train_lengths,
        test_lengths,
        means[train],
        means[test],
        sds[test],
        unseen,
        alphabet,
    )


# ------------------------------------------------------------------------------- metrics


def scores(
    predicted: np.ndarray, truth: np.ndarray, sign: np.ndarray | None = None
) -> dict[str, float]:
    """Returns RMSE, Pearson r and sign accuracy (of ``sign`` if given, else of ``predicted``)."""
    predicted, truth = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
    sign = np.sign(predicted) if sign is None else np.asarray(sign)
    r = np.corrcoef(predicted, truth)[0, 1] if np.std(predicted) > 0 else 0.0
    return {
        "rmse": float(np.sqrt(np.mean((predicted - truth) ** 2))),
        "pearson_r": float(r),
        "sign_accuracy": float(np.mean(sign == np.sign(truth))),
    }


def baselines(split: Split, seed: int, num_folds: int = 5) -> dict[str, dict]:
    """Returns the held-out predictions of the training mean and of character n-gram regressions."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV, KFold

    majority = 1.0 if np.mean(split.train_y > 0) >= 0.5 else -1.0
    mean = np.full(len(split.test_y), split.train_y.mean())
    # n-grams of one training token only cannot generalise (min_df=2), and halve the features.
    vectorizer = TfidfVectorizer(
        analyzer="char", ngram_range=(1, 5), lowercase=False, sublinear_tf=True, min_df=2
    )
    # Word boundaries as characters: "^" and "$" never occur inside a lexicon token.
    x_train = vectorizer.fit_transform(["^" + t + "$" for t in split.train_tokens])
    x_test = vectorizer.transform(["^" + t + "$" for t in split.test_tokens])
    # (RidgeCV's leave-one-out on a sparse 6000 x 15000 matrix is an eigendecomposition of
    # the 6000 x 6000 Gram matrix: minutes; 5-fold CV over four alphas takes seconds.)
    # Shuffled folds: the training tokens are in the lexicon's alphabetical order, and folds
    # of consecutive tokens would hold out whole prefixes (and pick 30x more regularisation).
    folds = KFold(num_folds, shuffle=True, random_state=seed)
    ridge = GridSearchCV(
        Ridge(solver="lsqr"),
        {"alpha": [0.03, 0.1, 0.3, 1.0, 3.0]},
        cv=folds,
        scoring="neg_mean_squared_error",
    ).fit(x_train, split.train_y)
    logistic = GridSearchCV(
        LogisticRegression(solver="liblinear"), {"C": [1.0, 3.0, 10.0, 30.0, 100.0]}, cv=folds
    ).fit(x_train, split.train_y > 0)
    return {
        "mean": {"predicted": mean, "sign": np.full(len(mean), majority)},
        "ngram": {
            "predicted": ridge.predict(x_test),
            "sign": np.where(logistic.predict(x_test), 1.0, -1.0),
            "ridge_alpha": float(ridge.best_params_["alpha"]),
            "logistic_C": float(logistic.best_params_["C"]),
            "num_features": int(x_train.shape[1]),
        },
    }


# ------------------------------------------------------------------------------------ RNN


def train_and_predict(config: Config, split: Split, key: jax.Array, progress: bool | None) -> dict:
    """Returns the character RNN's held-out predicted ratings and its learning curve."""
    model = rnnjax.many_to_one(
        rnnjax.bidirectional(rnnjax.lstm(config.hidden_size)),
        readouts.linear(1),
        pool="first_last",
        embedding=readouts.embedding(len(split.alphabet) + 2, config.embed_size),
    )
    mu, sigma = float(split.train_y.mean()), float(split.train_y.std())
    chars, lengths = jnp.asarray(split.train_chars), jnp.asarray(split.train_lengths)
    targets = jnp.asarray((split.train_y - mu) / sigma)
    test_chars, test_lengths = jnp.asarray(split.test_chars), jnp.asarray(split.test_lengths)
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate)
    )

    def predict(params, x, n):
        out = jax.vmap(lambda a, b: model.apply(params, a, length=b))(x, n)
        return mu + sigma * out[:, 0]

    def loss_fn(params, index, key):
        del key
        out = jax.vmap(lambda a, b: model.apply(params, a, length=b))(chars[index], lengths[index])
        return losses.masked_mse(out[:, 0], targets[index]), {}

    def eval_fn(params, key):
        error = predict(params, test_chars, test_lengths) - split.test_y
        return {"test_rmse": jnp.sqrt(jnp.mean(error**2))}

    def batch_fn(key, step):
        return jax.random.randint(key, (config.batch_size,), 0, chars.shape[0])

    k_init, k_data = jax.random.split(key)
    state = training.init_train_state(k_data, model.init(k_init), optimizer)
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
    evals = [r for r in result.history if "eval/test_rmse" in r]
    return {
        "predicted": np.asarray(jax.jit(predict)(result.state.params, test_chars, test_lengths)),
        "train_wall_s": wall,
        "eval_steps": [r["step"] for r in evals],
        "test_rmse_curve": [r["eval/test_rmse"] for r in evals],
    }


# --------------------------------------------------------------------------- summary, plots


def score_table(split: Split, results: dict) -> dict[str, dict[str, dict[str, float]]]:
    """Returns ``{method: {"all" | "unseen_stem": scores}}`` on the held-out tokens."""
    methods = {
        "rnn": (results["rnn"]["predicted"], None),
        "ngram": (results["ngram"]["predicted"], results["ngram"]["sign"]),
        "mean": (results["mean"]["predicted"], results["mean"]["sign"]),
    }
    table = {}
    for name, (predicted, sign) in methods.items():
        predicted = np.asarray(predicted)
        sign = None if sign is None else np.asarray(sign)
        table[name] = {"all": scores(predicted, split.test_y, sign)}
        part = split.unseen_stem
        table[name]["unseen_stem"] = scores(
            predicted[part], split.test_y[part], None if sign is None else sign[part]
        )
    return table


def verdict(table: dict) -> list[str]:
    """Returns the verdict: the character RNN's held-out RMSE and sign accuracy against the n-gram models'."""
    rnn, ngram = table["rnn"]["all"], table["ngram"]["all"]
    better = rnn["rmse"] < ngram["rmse"]
    return [
        f"VERDICT: the character BiLSTM predicts held-out ratings with RMSE {rnn['rmse']:.3f} vs "
        f"{ngram['rmse']:.3f} for character n-gram ridge regression: "
        + ("better" if better else "NOT better")
        + ".",
        f"sign accuracy: BiLSTM {rnn['sign_accuracy']:.3f}, n-gram logistic regression "
        f"{ngram['sign_accuracy']:.3f}, majority sign {table['mean']['all']['sign_accuracy']:.3f}",
        f"on held-out tokens with an unseen {STEM}-character start: RMSE BiLSTM "
        f"{table['rnn']['unseen_stem']['rmse']:.3f}, n-gram {table['ngram']['unseen_stem']['rmse']:.3f}, "
        f"mean {table['mean']['unseen_stem']['rmse']:.3f}",
    ]


def summary_tables(config: Config, split: Split, results: dict, table: dict) -> str:
    """Returns the score table, on all held-out tokens and on those with an unseen start."""
    names = {
        "rnn": f"BiLSTM {config.hidden_size}x2 over characters",
        "ngram": f"char 1-5-gram TF-IDF, ridge (alpha {results['ngram']['ridge_alpha']:.3g}) "
        f"/ logistic (C {results['ngram']['logistic_C']:.3g})",
        "mean": "training mean / majority sign",
    }
    rows = [
        [names[m]]
        + [
            table[m][part][k]
            for part in ("all", "unseen_stem")
            for k in ("rmse", "pearson_r", "sign_accuracy")
        ]
        for m in names
    ]
    noise = float(np.sqrt(np.mean(split.test_sd**2) / 10))
    return "\n".join(
        [
            f"{len(split.test_tokens)} held-out tokens ({int(split.unseen_stem.sum())} of them with a "
            f"{STEM}-character start no training token has); {len(split.train_tokens)} training tokens. "
            f"Ratings -4..4; the standard error of a mean of ten ratings is {noise:.3f} (root mean "
            "square over the held-out tokens), a floor on the RMSE any predictor of the raters' "
            "mean can reach.",
            "",
            runs.markdown_table(
                [
                    "method",
                    "RMSE",
                    "Pearson r",
                    "sign accuracy",
                    "RMSE, unseen start",
                    "r, unseen start",
                    "sign, unseen start",
                ],
                rows,
            ),
            "",
        ]
    )


def make_figures(split: Split, results: dict, run_dir: str) -> list[str]:
    """Writes predicted against human ratings for the RNN and the n-gram model, and the learning curve."""
    plt = runs.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, (name, predicted) in zip(
        axes,
        (
            ("character BiLSTM", results["rnn"]["predicted"]),
            ("char n-gram ridge", results["ngram"]["predicted"]),
        ),
    ):
        ax.scatter(split.test_y, predicted, s=3, alpha=0.4)
        ax.plot([-4, 4], [-4, 4], "k:", lw=1)
        ax.set_title(name)
        ax.set_xlabel("mean human rating")
    axes[0].set_ylabel("predicted rating")
    paths = [runs.save_figure(fig, run_dir, "predicted_vs_human.png")]
    rnn = results["rnn"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(rnn["eval_steps"], rnn["test_rmse_curve"], "o-", label="character BiLSTM")
    ngram = np.asarray(results["ngram"]["predicted"])
    ax.axhline(
        float(np.sqrt(np.mean((ngram - split.test_y) ** 2))),
        color="k",
        ls="--",
        label="char n-gram ridge",
    )
    ax.axhline(
        float(np.std(split.test_y - split.train_y.mean())),
        color="gray",
        ls=":",
        label="training mean",
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("held-out RMSE")
    ax.legend()
    paths.append(runs.save_figure(fig, run_dir, "learning_curve.png"))
    return paths


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    """Runs the experiment; returns ``{"results", "verdict", "run_dir"}``."""
    config, args, run_dir = start_run(Config, PRESETS, argv, __doc__, "sentiment", check_config)
    t_start = time.perf_counter()
    split = split_lexicon(config.test_share, config.seed)
    results = {
        "test_tokens": split.test_tokens,
        "test_y": split.test_y,
        **baselines(split, config.seed, config.cv_folds),
        "rnn": train_and_predict(config, split, jax.random.PRNGKey(config.seed), args.progress),
    }
    table = score_table(split, results)
    results["scores"] = table
    wall = time.perf_counter() - t_start
    paths = make_figures(split, results, run_dir)
    return write_results(
        run_dir,
        config,
        [results],
        verdict(table),
        summary_tables(config, split, results, table),
        title="Sentiment ratings of unseen words from their characters: BiLSTM vs character n-gram "
        "regression",
        intro="VADER lexicon (vaderSentiment wheel), split once at random; every model is scored "
        "on the same held-out tokens.",
        figures=[os.path.basename(p) for p in paths],
        wall=wall,
    )


if __name__ == "__main__":
    main()
