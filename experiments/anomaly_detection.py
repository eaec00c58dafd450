"""Anomaly detection by forecasting error (Malhotra et al. 2015), next to a rolling z-score.

Methods, in the order this script runs them (Malhotra, Vig, Shroff & Agarwal 2015, "Long
Short Term Memory Networks for Anomaly Detection in Time Series", ESANN):

1. Data (:mod:`rnnjax.datasets`, files inside the aeon wheel): UCR anomaly archive series
   135, InternalBleeding16 (Wu & Keogh 2021; a vital sign of a patient, 1200 normal training
   steps, one labelled anomaly of 12 steps among the 6301 that follow), and GutenTAG's
   synthetic ECG ``ecg-diff-count-3`` (10000 normal training steps; a test series of 10000
   with three 100-step anomalies). Each is standardised with its training part's mean and std.
2. Split of the normal data (Malhotra's s_N and v_N1): the first ``1 - validation``
   fraction trains the predictor; the rest stops its training and fits the error model.
   No label is used before the final scoring.
3. Predictor. An LSTM reads the series and at every step t predicts the next l values
   x_{t+1..t+l} (many-to-many, a linear readout of l*D outputs per step), trained by Adam
   on random windows of ``context`` steps with the masked MSE; each seed keeps the
   parameters with the lowest v_N1 prediction error. At scoring time the prediction for
   t+1..t+l comes from the window of ``context`` steps ending at t (as in training).
4. Score. Each point x_t has l predictions, made at t-1, ..., t-l; its error vector
   e_t = (x_t - x_hat_t^(1), ..., x_t - x_hat_t^(l)) is modelled by a Gaussian N(mu, Sigma)
   fitted on v_N1, and the anomaly score is -log N(e_t; mu, Sigma).
5. Baseline. The rolling z-score |x_t - m_t| / s_t with the mean and std of the ``context``
   steps before t (the largest over channels).
6. Metrics against the labels, for both detectors: average precision (area under the
   precision-recall curve, threshold-free); the best F1 over all thresholds (an upper bound,
   the threshold chosen WITH the labels); precision, recall and F1 at the threshold set from
   normal data alone (the largest score on v_N1); and the UCR archive's test (Wu & Keogh
   2021): does the highest score fall within 100 steps of a labelled anomaly.

Usage::

    python -m experiments.anomaly_detection                  # quick preset
    python -m experiments.anomaly_detection --preset full    # more seeds, two layers, longer

Outputs go to ``--run-dir`` (default ``runs/anomaly_detection/<preset>``): ``config.json``,
``results.json``, ``summary.md`` and ``figures/`` (series, scores and labels).
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax
from experiments.experiment_cli import run_each, start_run, write_results
from experiments.vmapped_seeds import init_states, keep_best
from rnnjax import losses, readouts, training
from rnnjax._src import datasets, runs
from rnnjax._src.runs import option

# --------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines the run; saved as ``config.json`` in the run directory."""

    datasets: tuple[str, ...] = option(
        ("ucr135", "gutentag_ecg"), f"anomaly sets among {sorted(datasets.ANOMALY_SETS)}"
    )
    hidden_size: int = option(32, "hidden units per LSTM layer")
    num_layers: int = option(1, "stacked LSTM layers (Malhotra et al. use two)")
    predict_ahead: int = option(
        5, "l: values predicted at each step (the error vector's size per channel)"
    )
    context: int = option(64, "input window of the predictor, and of the rolling z-score, in steps")
    validation: float = option(
        0.25, "fraction of the normal data kept for early stopping and the Gaussian (v_N1)"
    )
    num_seeds: int = option(3, "seeds per data set, trained as one vmapped program")
    num_steps: int = option(600, "Adam updates per data set")
    batch_size: int = option(32, "training windows per update")
    learning_rate: float = option(3e-3, "Adam learning rate")
    clip_norm: float = option(1.0, "gradient clipping by global norm")
    eval_every: int = option(50, "steps between validation measurements (early stopping)")
    seed: int = option(0, "master seed")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": dict(num_layers=2, num_seeds=5, num_steps=1200, learning_rate=2e-3),
}
# The UCR archive counts a detection as correct when the top score is within 100 steps of
# the anomaly (Wu & Keogh 2021).
UCR_TOLERANCE = 100


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    for name in config.datasets:
        if name not in datasets.ANOMALY_SETS:
            raise ValueError(
                f"datasets must be among {sorted(datasets.ANOMALY_SETS)}, got {name!r}"
            )
    runs.check_positive(
        config,
        "hidden_size",
        "num_layers",
        "predict_ahead",
        "num_seeds",
        "num_steps",
        "batch_size",
        "eval_every",
    )
    if config.context < 2:
        raise ValueError(f"context must be >= 2, got {config.context}")
    if not 0 < config.validation < 1:
        raise ValueError(f"validation must be in (0, 1), got {config.validation}")
    if not config.learning_rate > 0 or not config.clip_norm > 0:
        raise ValueError(
            f"learning_rate and clip_norm must be > 0, got {config.learning_rate}, "
            f"{config.clip_norm}"
        )


# -------------------------------------------------------------------------------- metrics


def _by_threshold(
    scores: np.ndarray, labels: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns (thresholds, true positives, predicted positives) for 'anomaly iff score >= threshold'.

    One entry per distinct score, from the highest down; NaN scores are never flagged.
    """
    keep = ~np.isnan(scores)
    s, y = scores[keep], labels[keep].astype(bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    return s[last_of_tie], np.cumsum(y)[last_of_tie], last_of_tie + 1


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Returns AP = sum_k (R_k - R_{k-1}) P_k over the thresholds at each distinct score.

    The area under the precision-recall curve without interpolation (as scikit-learn's
    ``average_precision_score``); the positives are ``labels == 1``.
    """
    _, tp, flagged = _by_threshold(scores, labels)
    recall = tp / max(int(np.sum(labels)), 1)
    precision = tp / flagged
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_recall_f1(
    scores: np.ndarray, labels: np.ndarray, threshold: float
) -> dict[str, float]:
    """Returns precision, recall and F1 of flagging the points with ``score > threshold``."""
    flagged = np.nan_to_num(scores, nan=-np.inf) > threshold
    tp = int(np.sum(flagged & (labels == 1)))
    precision = tp / max(int(flagged.sum()), 1)
    recall = tp / max(int(np.sum(labels)), 1)
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "flagged": int(flagged.sum())}


def best_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """Returns the largest F1 over all thresholds (chosen with the labels: an upper bound)."""
    _, tp, flagged = _by_threshold(scores, labels)
    return float(np.max(2 * tp / (flagged + np.sum(labels))))


def top_score_hit(scores: np.ndarray, labels: np.ndarray, tolerance: int = UCR_TOLERANCE) -> bool:
    """Returns whether the highest score lies within ``tolerance`` steps of a labelled point."""
    top = int(np.nanargmax(scores))
    anomalous = np.flatnonzero(labels)
    return bool(np.min(np.abs(anomalous - top)) <= tolerance)


# ------------------------------------------------------------------------------- detectors


def rolling_zscore(x: np.ndarray, width: int) -> np.ndarray:
    """Returns ``(T,)``: max over channels of |x_t - m_t| / s_t, m_t and s_t over x_{t-width..t-1}.

    NaN for the first ``width`` steps (no full window before them).
    """
    T = len(x)
    c1 = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x]), axis=0)
    c2 = np.cumsum(np.vstack([np.zeros((1, x.shape[1])), x**2]), axis=0)
    t = np.arange(width, T)
    mean = (c1[t] - c1[t - width]) / width
    var = np.maximum((c2[t] - c2[t - width]) / width - mean**2, 1e-12)
    out = np.full(T, np.nan)
    out[width:] = np.max(np.abs(x[width:] - mean) / np.sqrt(var), axis=1)
    return out


def error_vectors(x: np.ndarray, predictions: np.ndarray) -> np.ndarray:
    """Returns ``(T, l*D)``: e_t = (x_t - x_hat_t^(j))_{j=1..l}, x_hat_t^(j) predicted at t-j.

    ``predictions: (T, l, D)`` with ``predictions[t, j-1]`` the prediction of x_{t+j} made
    at t (NaN where none was made). Rows with any missing prediction are NaN.
    """
    T, l, D = predictions.shape
    e = np.full((T, l, D), np.nan)
    for j in range(1, l + 1):
        e[j:, j - 1] = x[j:] - predictions[: T - j, j - 1]
    e = e.reshape(T, l * D)
    e[np.isnan(e).any(axis=1)] = np.nan
    return e


def gaussian_nll(e: np.ndarray, fit_on: np.ndarray) -> np.ndarray:
    """Returns ``(T,)``: -log N(e_t; mu, Sigma) with mu, Sigma the mean and covariance of ``fit_on``.

    ``fit_on: (N, K)`` error vectors of normal data (rows with NaN are skipped); a ridge of
    1e-6 times the mean variance keeps Sigma invertible. NaN rows of ``e`` score NaN.
    """
    fit_on = fit_on[~np.isnan(fit_on).any(axis=1)]
    mu = fit_on.mean(axis=0)
    sigma = np.atleast_2d(np.cov(fit_on, rowvar=False))
    sigma += 1e-6 * np.mean(np.diag(sigma)) * np.eye(len(mu))
    _sign, logdet = np.linalg.slogdet(sigma)
    d = e - mu
    maha = np.einsum("tk,kl,tl->t", d, np.linalg.inv(sigma), d)
    return 0.5 * (maha + logdet + len(mu) * np.log(2 * np.pi))


# --------------------------------------------------------------------------- the predictor


def train_predictor(
    config: Config,
    x: np.ndarray,
    num_fit: int,
    num_normal: int,
    key: jax.Array,
    progress: bool | None,
) -> tuple[Any, Any, dict]:
    """Returns (model, each seed's best params, training record) for the series ``x: (T, D)``.

    Trains on windows inside ``x[:num_fit]``; stops on the prediction error of the steps
    ``num_fit..num_normal`` (targets never reach past ``num_normal``).
    """
    L, l, D = config.context, config.predict_ahead, x.shape[1]
    cells = [rnnjax.recurrent(rnnjax.lstm(config.hidden_size)) for _ in range(config.num_layers)]
    model = rnnjax.many_to_many(
        rnnjax.stack(*cells) if len(cells) > 1 else cells[0], readouts.linear(l * D)
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate)
    )
    # Inputs, targets x_{t+1..t+l} and their masks, as every window of L steps inside the
    # training part; only the jitted functions below touch the device.
    future, train_mask = rnnjax.data.ahead(x, l, available=num_fit)  # (T, l, D), (T, l)
    targets = future.reshape(len(x), l * D).astype(np.float32)
    xs = x.astype(np.float32)
    train_windows = [
        jnp.asarray(rnnjax.data.windows(a[:num_fit], L)) for a in (xs, targets, train_mask)
    ]  # (N, L, ...) each

    def batch_fn(key, step):
        del step
        i = jax.random.randint(key, (config.batch_size,), 0, len(train_windows[0]))
        return tuple(w[i] for w in train_windows)

    def masked_loss(params, inputs, target, mask):
        outputs = jax.vmap(lambda w: model.apply(params, w))(inputs)
        full = jnp.repeat(mask, D, axis=-1)  # (B, L, l*D): each horizon's D channels
        return losses.masked_mse(outputs, target, full)

    def loss_fn(params, batch, key):
        del key
        return masked_loss(params, *batch), {}

    # Validation: windows ending at each step of v_N1, scored on their last step's outputs.
    val_ends = np.arange(num_fit, num_normal - 1)
    val_steps = slice(val_ends[0] - L + 1, val_ends[-1] + 1)
    val_mask = np.zeros((len(val_ends), L, l), bool)
    val_mask[:, -1] = rnnjax.data.ahead(x, l, available=num_normal)[1][val_ends]
    val_batch = (
        rnnjax.data.windows(xs[val_steps], L),
        rnnjax.data.windows(targets[val_steps], L),
        val_mask,
    )
    # An argument, not a closed-over constant: XLA would try to constant-fold the sums.
    val_loss_of = jax.jit(jax.vmap(lambda p, batch: masked_loss(p, *batch), in_axes=(0, None)))

    def val_loss(params):
        return val_loss_of(params, val_batch)

    states = init_states(model, D, optimizer, key, config.num_seeds)
    hook, best = keep_best(val_loss, states.params)
    train_step = training.make_train_step(loss_fn, optimizer)
    t0 = time.perf_counter()
    result = training.fit(
        train_step,
        states,
        batch_fn,
        config.num_steps,
        hooks=[hook],
        progress=progress,
        schedule=training.Schedule(config.eval_every, hook_every=config.eval_every),
    )
    curve = [r for r in result.history if "val_loss" in r]
    return (
        model,
        best["params"],
        {
            "train_wall_s": time.perf_counter() - t0,
            "best_step": best["step"].tolist(),
            "best_val_mse": best["loss"].tolist(),
            "val_steps": [r["step"] for r in curve],
            "val_mse": np.asarray([r["val_loss"] for r in curve]).T.tolist(),
        },
    )


def predict_all(model, params, x: np.ndarray, config: Config) -> np.ndarray:
    """Returns ``(seeds, T, l, D)``: each seed's predictions of x_{t+1..t+l} from the window ending at t.

    NaN for t < context - 1 (no full window).
    """
    L, l, D = config.context, config.predict_ahead, x.shape[1]
    windows = rnnjax.data.windows(x.astype(np.float32), L)  # (T - L + 1, L, D), n ends at n+L-1

    def one_seed(p, windows):
        # Chunks of windows bound the memory of the (windows, L, H) activations.
        return jax.lax.map(lambda w: model.apply(p, w)[-1], windows, batch_size=512)

    # The windows are an argument, not a closed-over constant that XLA would try to fold.
    predictions = jax.jit(jax.vmap(one_seed, in_axes=(0, None)))(params, windows)
    out = np.full((jax.tree.leaves(params)[0].shape[0], len(x), l, D), np.nan)
    out[:, L - 1 :] = np.asarray(predictions, np.float64).reshape(-1, len(windows), l, D)
    return out


# ----------------------------------------------------------------------------- one data set


def evaluate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, Any]:
    """Returns every metric of one detector's test ``scores``."""
    return {
        "average_precision": average_precision(scores, labels),
        "best_f1": best_f1(scores, labels),
        "at_normal_threshold": precision_recall_f1(scores, labels, threshold),
        "top_score_hit": top_score_hit(scores, labels),
    }


def run_dataset(config: Config, name: str, key: jax.Array, progress: bool | None) -> dict:
    """Returns both detectors' scores and metrics on one data set."""
    data = datasets.ANOMALY_SETS[name]()
    mean, std = data.train.mean(axis=0), data.train.std(axis=0)
    train, test = (data.train - mean) / std, (data.test - mean) / std
    num_normal = len(train)
    num_fit = round(num_normal * (1 - config.validation))
    # UCR 135's test part continues its training part, so the normal steps before it give
    # the first test points their context; GutenTAG's test series stands alone.
    contiguous = name == "ucr135"
    scored = np.concatenate([train, test]) if contiguous else test
    test_from = num_normal if contiguous else 0

    model, params, record = train_predictor(config, train, num_fit, num_normal, key, progress)
    preds_scored = predict_all(model, params, scored, config)
    # A prediction depends only on the window before it, so the normal part's predictions
    # are the first ones of a contiguous series.
    preds_normal = (
        preds_scored[:, :num_normal] if contiguous else predict_all(model, params, train, config)
    )
    nll_val, nll_test = [], []
    for s in range(config.num_seeds):
        e_fit = error_vectors(train, preds_normal[s])[num_fit:]  # errors on v_N1
        nll_val.append(gaussian_nll(e_fit, e_fit))
        nll_test.append(gaussian_nll(error_vectors(scored, preds_scored[s])[test_from:], e_fit))
    z_all = rolling_zscore(scored, config.context)
    z_val = rolling_zscore(train, config.context)[num_fit:]
    z_test = z_all[test_from:]

    labels = data.labels
    rnn_runs = [
        evaluate(nll_test[s], labels, float(np.nanmax(nll_val[s]))) for s in range(config.num_seeds)
    ]
    zscore = evaluate(z_test, labels, float(np.nanmax(z_val)))

    def mean_of(key):
        return float(np.mean([r[key] for r in rnn_runs]))

    return {
        "dataset": name,
        "source": data.source,
        "num_train": num_normal,
        "num_fit": num_fit,
        "num_test": len(test),
        "num_anomalous": int(labels.sum()),
        "unscored_test_steps": int(np.sum(np.isnan(nll_test[0]))),
        "rnn": {
            "average_precision": mean_of("average_precision"),
            "best_f1": mean_of("best_f1"),
            "average_precision_sd": float(np.std([r["average_precision"] for r in rnn_runs])),
            "f1_at_normal_threshold": float(
                np.mean([r["at_normal_threshold"]["f1"] for r in rnn_runs])
            ),
            "top_score_hits": int(sum(r["top_score_hit"] for r in rnn_runs)),
            "per_seed": rnn_runs,
        },
        "zscore": zscore,
        "rnn_training": record,
        # Kept for the figures.
        "test": test[:, 0].tolist(),
        "labels": labels.tolist(),
        "rnn_score": np.mean(nll_test, axis=0).tolist(),
        "zscore_score": z_test.tolist(),
    }


# --------------------------------------------------------------------------- summary, plots


def verdict(results: list[dict]) -> list[str]:
    """Returns the verdict lines: does the LSTM detector beat the rolling z-score."""
    lines, beats = [], True
    for r in results:
        a, b = r["rnn"]["average_precision"], r["zscore"]["average_precision"]
        ok = a > b
        beats &= ok
        lines.append(
            f"{r['dataset']}: average precision LSTM {a:.3f} vs rolling z-score {b:.3f} "
            f"({'LSTM ahead' if ok else 'z-score ahead or equal'}, "
            f"base rate {r['num_anomalous'] / r['num_test']:.4f}); best F1 "
            f"{r['rnn']['best_f1']:.3f} vs {r['zscore']['best_f1']:.3f}; top score "
            f"within {UCR_TOLERANCE} steps of the anomaly: LSTM "
            f"{r['rnn']['top_score_hits']}/{len(r['rnn']['per_seed'])} seeds, z-score "
            f"{'yes' if r['zscore']['top_score_hit'] else 'no'}"
        )
    lines.insert(
        0,
        "VERDICT: the forecasting-error LSTM "
        + ("beats" if beats else "does NOT beat")
        + " the rolling z-score (average precision) on every data set.",
    )
    return lines


def summary_tables(config: Config, results: list[dict]) -> str:
    """Returns one markdown table per data set: both detectors' metrics."""
    parts = []
    for r in results:
        z, rnn = r["zscore"], r["rnn"]
        seeds = rnn["per_seed"]
        avg = lambda k, seeds=seeds: float(np.mean([s["at_normal_threshold"][k] for s in seeds]))
        rows = [
            [
                f"LSTM forecasting error, Gaussian NLL (mean of {config.num_seeds} seeds, AP sd "
                f"{rnn['average_precision_sd']:.3f})",
                rnn["average_precision"],
                rnn["best_f1"],
                avg("precision"),
                avg("recall"),
                avg("f1"),
                f"{rnn['top_score_hits']}/{len(seeds)}",
            ],
            [
                f"rolling z-score (window {config.context})",
                z["average_precision"],
                z["best_f1"],
                z["at_normal_threshold"]["precision"],
                z["at_normal_threshold"]["recall"],
                z["at_normal_threshold"]["f1"],
                "yes" if z["top_score_hit"] else "no",
            ],
        ]
        parts += [
            f"**{r['dataset']}** ({r['num_train']} normal training steps, {r['num_test']} "
            f"test steps of which {r['num_anomalous']} anomalous; {r['source']})",
            "",
            runs.markdown_table(
                [
                    "detector",
                    "average precision",
                    "best F1 (oracle threshold)",
                    "precision",
                    "recall",
                    "F1 (threshold from normal data)",
                    f"top score within {UCR_TOLERANCE} steps",
                ],
                rows,
            ),
            "",
        ]
    return "\n".join(parts)


def make_figures(results: list[dict], run_dir: str) -> list[str]:
    """Writes the series / score / label figure of each data set and returns the paths."""
    plt = runs.pyplot()
    paths = []
    for r in results:
        x, labels = np.asarray(r["test"]), np.asarray(r["labels"])
        anomalous = np.flatnonzero(labels)
        fig, axes = plt.subplots(3, 1, figsize=(12, 6.5), sharex=True)
        axes[0].plot(x, lw=0.5, color="k")
        axes[0].plot(anomalous, x[anomalous], ".", ms=2, color="tab:red", label="labelled anomaly")
        axes[0].set_ylabel("standardised value")
        axes[0].legend(fontsize=8, loc="upper right")
        rnn = np.asarray(r["rnn_score"], dtype=float)
        # The NLL can be negative (a density above 1); shifted to start at 1, a log axis shows it.
        for ax, score, label, color in (
            (axes[1], rnn - np.nanmin(rnn) + 1, "LSTM: -log N(e_t) - min + 1", "tab:red"),
            (axes[2], np.asarray(r["zscore_score"], dtype=float), "rolling z-score", "tab:blue"),
        ):
            ax.plot(score, lw=0.6, color=color)
            for a in anomalous:
                ax.axvspan(a - 0.5, a + 0.5, color="tab:red", alpha=0.15, lw=0)
            ax.set_ylabel(label, fontsize=8)
        axes[1].set_yscale("log")
        axes[2].set_xlabel("test step")
        axes[0].set_title(f"{r['dataset']}: anomaly scores (shaded: labelled anomalies)")
        paths.append(runs.save_figure(fig, run_dir, f"scores_{r['dataset']}.png"))
    return paths


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    """Runs the experiment; returns ``{"results", "verdict", "run_dir"}``."""
    config, args, run_dir = start_run(
        Config, PRESETS, argv, __doc__, "anomaly_detection", check_config
    )
    t_start = time.perf_counter()
    results = run_each(
        config.datasets,
        lambda name, key: run_dataset(config, name, key, args.progress),
        config.seed,
    )
    wall = time.perf_counter() - t_start
    paths = make_figures(results, run_dir)
    return write_results(
        run_dir,
        config,
        results,
        verdict(results),
        summary_tables(config, results),
        title="Anomaly detection: LSTM forecasting error (Malhotra et al. 2015) vs rolling z-score",
        intro=(
            "Both detectors score the same test steps; thresholds for precision/recall/F1 come "
            "from normal data only (the largest score on the validation part), the best F1 "
            "uses the labels."
        ),
        figures=[os.path.basename(p) for p in paths],
        wall=wall,
    )


if __name__ == "__main__":
    main()
