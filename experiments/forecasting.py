"""Forecasting real series with a many-to-many LSTM, next to the forecasts a statistician makes.

Methods, in the order this script runs them:

1. Data (:mod:`rnnjax.datasets`, files inside the statsmodels wheel): monthly Mauna Loa CO2
   (1958-2001, trend and a 12-month season), yearly sunspot numbers (1700-2008, the ~11-year
   Schwabe cycle) and, in the full preset, monthly El Niño sea-surface temperature
   (1950-2010).
2. Split. The last ``test`` steps of each series are held out (10 years for the monthly
   series, 60 years of sunspots). The ``validation`` steps before them are used only to
   stop the RNN's training; ARIMA and ETS are fitted on everything before the test tail.
3. Walk-forward evaluation. At every origin t of the test tail with t + H inside the
   series, every method forecasts y_{t+1..t+H} from y_{<=t}. Parameters are fixed after
   training (no refit), but every method sees each new observation: ARIMA/ETS through their
   Kalman filter, the RNN through its input window.
4. Model. A many-to-many LSTM reads the series' first differences (and, by series, its
   standardised or scaled level) and emits at EVERY step t the H future values
   y_{t+1..t+H}, normalised by what step t knows (:func:`prepare`: changes from y_t for the
   trending CO2, standardised levels for El Niño, levels over a trailing mean for the
   sunspots): a direct multi-horizon forecaster with one linear readout per step (the
   layout of MQ-RNN, Wen et al. 2017). Training: Adam on random
   windows of ``context`` steps from the training part, masked MSE over all steps whose
   targets lie in the training part; ``num_seeds`` seeds as one vmapped program; each
   seed keeps the parameters with the lowest validation MAE (early stopping).
5. Baselines, measured on the same origins: naive (y_t), seasonal naive
   (y_{t+k-m*ceil(k/m)}, period m), SARIMA (orders chosen by AIC on the training part of each
   series, fitted by maximum likelihood, :class:`statsmodels.tsa.statespace.sarimax.SARIMAX`)
   and ETS (additive state-space exponential smoothing, Hyndman et al. 2008,
   :class:`statsmodels.tsa.statespace.exponential_smoothing.ExponentialSmoothing`).
6. Metrics over all origins and horizons: MAE, RMSE and MASE = MAE / (in-sample MAE of the
   seasonal naive one-step forecast on the pre-test part) (Hyndman & Koehler 2006).

Usage::

    python -m experiments.forecasting                  # quick preset: co2 and sunspots
    python -m experiments.forecasting --preset full    # + El Niño, 5 seeds, longer training

Outputs go to ``--run-dir`` (default ``runs/forecasting/<preset>``): ``config.json``,
``results.json``, ``summary.md`` and ``figures/`` (forecasts against the held-out truth,
MAE by horizon).
"""

from __future__ import annotations

import dataclasses
import os
import time
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from threadpoolctl import threadpool_limits

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

    series: tuple[str, ...] = option(("co2", "sunspots"), f"series among {sorted(datasets.SERIES)}")
    cell: str = option("lstm", "recurrent cell: lstm | gru")
    hidden_size: int = option(32, "hidden units")
    num_seeds: int = option(3, "RNN seeds per series, trained as one vmapped program")
    num_steps: int = option(800, "Adam updates per series")
    batch_size: int = option(32, "training windows per update")
    learning_rate: float = option(2e-3, "Adam learning rate")
    clip_norm: float = option(1.0, "gradient clipping by global norm")
    eval_every: int = option(50, "steps between validation measurements (early stopping)")
    seed: int = option(0, "master seed")


PRESETS: dict[str, dict[str, Any]] = {
    "quick": {},
    "full": dict(
        series=("co2", "sunspots", "elnino"),
        hidden_size=64,
        num_seeds=5,
        num_steps=1500,
        learning_rate=1e-3,
    ),
}


class Setup(NamedTuple):
    """How one series is split and modelled (fixed per series, not a flag)."""

    test: int  # held-out tail, steps
    horizon: int  # H, steps ahead
    validation: int  # steps before the test tail used for early stopping
    context: int  # RNN input window, steps
    target: str  # what the RNN predicts: "change", "level" or "scaled" (see prepare)
    arima: tuple  # (order, seasonal_order, trend) for SARIMAX
    ets: dict  # ExponentialSmoothing keywords


# ARIMA orders: lowest AIC on the pre-test part among p, q in {0, 1, 2} with the seasonal part
# (0|1, 1, 1)_12 for the monthly series and AR(p) / ARMA(p, 1), p in {1, 2, 3, 9}, for the
# sunspots (the grid was run once, offline; the orders are fixed here).
SETUPS = {
    "co2": Setup(
        120, 12, 60, 48, "change", ((1, 1, 1), (0, 1, 1, 12), "n"), dict(trend=True, seasonal=12)
    ),
    "sunspots": Setup(
        60, 11, 30, 44, "scaled", ((9, 0, 0), (0, 0, 0, 0), "c"), dict(trend=False, seasonal=None)
    ),
    "elnino": Setup(
        120, 12, 60, 48, "level", ((2, 0, 1), (0, 1, 1, 12), "n"), dict(trend=False, seasonal=12)
    ),
}
CELLS = {"lstm": rnnjax.lstm, "gru": rnnjax.gru}
METHODS = ("rnn", "naive", "seasonal_naive", "arima", "ets")
LABELS = {
    "rnn": "RNN",
    "naive": "naive",
    "seasonal_naive": "seasonal naive",
    "arima": "SARIMA",
    "ets": "ETS",
}


def check_config(config: Config) -> None:
    """Raises ValueError naming the first field that is out of range."""
    for s in config.series:
        if s not in SETUPS:
            raise ValueError(f"series must be among {sorted(SETUPS)}, got {s!r}")
    if config.cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {config.cell!r}")
    runs.check_positive(config, "hidden_size", "num_seeds", "num_steps", "batch_size", "eval_every")
    if not config.learning_rate > 0 or not config.clip_norm > 0:
        raise ValueError(
            f"learning_rate and clip_norm must be > 0, got {config.learning_rate}, "
            f"{config.clip_norm}"
        )


# --------------------------------------------------------------------- splits, baselines


def held_out_origins(num_steps: int, setup: Setup) -> np.ndarray:
    """Returns the forecast origins t of the test tail: y_{t+1..t+H} all held out."""
    first = num_steps - setup.test - 1
    return np.arange(first, num_steps - setup.horizon)


def truth_at(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Returns ``(len(origins), H)``: y_{t+1..t+H} for each origin t."""
    return y[origins[:, None] + np.arange(1, horizon + 1)]


def naive_forecast(y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Returns ``(len(origins), H)``: the last observation y_t repeated."""
    return np.repeat(y[origins][:, None], horizon, axis=1)


def seasonal_naive_forecast(
    y: np.ndarray, origins: np.ndarray, horizon: int, period: int
) -> np.ndarray:
    """Returns ``(len(origins), H)``: y_{t+k-m*ceil(k/m)}, the last observed value of the same season."""
    k = np.arange(1, horizon + 1)
    return y[origins[:, None] + k - period * np.ceil(k / period).astype(int)]


def mase_scale(y_pre: np.ndarray, period: int) -> float:
    """Returns the in-sample MAE of the seasonal naive one-step forecast, mean |y_t - y_{t-m}|."""
    return float(np.mean(np.abs(y_pre[period:] - y_pre[:-period])))


def scores(forecast: np.ndarray, truth: np.ndarray, scale: float) -> dict[str, float]:
    """Returns MAE, RMSE and MASE of ``forecast`` against ``truth`` (both ``(origins, H)``)."""
    err = forecast - truth
    mae = float(np.mean(np.abs(err)))
    return {"mae": mae, "rmse": float(np.sqrt(np.mean(err**2))), "mase": mae / scale}


def state_space_forecasts(result, y: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    """Returns ``(len(origins), H)`` forecasts of a fitted statsmodels state-space model.

    The fitted parameters are applied to the whole series (one Kalman filter pass); the
    forecast from origin t iterates the one-step predicted state a_{t+1|t}:
    y_hat_{t+k} = Z a_{t+k|t} + d, a_{t+k+1|t} = T a_{t+k|t} + c, which is what
    ``result.apply(y[:t+1]).forecast(H)`` computes (tests check it), without refiltering.
    """
    with threadpool_limits(1):  # see fit_statistical
        filtered = result.apply(y).filter_results
    design, transition = filtered.design[..., 0], filtered.transition[..., 0]
    state_intercept, obs_intercept = filtered.state_intercept[:, 0], filtered.obs_intercept[0, 0]
    out = np.empty((len(origins), horizon))
    for i, t in enumerate(origins):
        a = filtered.predicted_state[:, t + 1]
        for k in range(horizon):
            out[i, k] = design[0] @ a + obs_intercept
            a = transition @ a + state_intercept
    return out


def fit_statistical(y_pre: np.ndarray, setup: Setup) -> dict[str, Any]:
    """Returns the fitted SARIMA and ETS results on the pre-test part, and their fit times.

    BLAS runs on one thread: the Kalman filter's matrices are tiny, and a multi-threaded
    BLAS made the AR(9) fit 50x slower (50 s instead of 0.8) on a busy 2-core machine.
    """
    from statsmodels.tsa.statespace.exponential_smoothing import ExponentialSmoothing
    from statsmodels.tsa.statespace.sarimax import SARIMAX

    order, seasonal_order, trend = setup.arima
    out = {}
    with warnings.catch_warnings(), threadpool_limits(1):
        # statsmodels warns about convergence and starting values; the fit is used as it is.
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        out["arima"] = SARIMAX(y_pre, order=order, seasonal_order=seasonal_order, trend=trend).fit(
            disp=False
        )
        out["arima_fit_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        out["ets"] = ExponentialSmoothing(y_pre, **setup.ets).fit(disp=False)
        out["ets_fit_s"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------------- RNN


class Prepared(NamedTuple):
    """The series as the RNN sees it, on device; the forecast is base_t + scale_t * output."""

    inputs: jax.Array  # (T, F)
    targets: jax.Array  # (T, H)
    base: jax.Array  # (T,)
    scale: jax.Array  # (T,)


def trailing_mean(y: np.ndarray, width: int) -> np.ndarray:
    """Returns ``(T,)``: the mean of y over the ``width`` steps ending at each t (fewer at the start)."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    t = np.arange(len(y))
    lo = np.maximum(t - width + 1, 0)
    return (c[t + 1] - c[lo]) / (t + 1 - lo)


def prepare(y: np.ndarray, setup: Setup, num_fit: int) -> Prepared:
    """Returns the RNN's inputs and targets for series ``y``, by the setup's ``target`` kind.

    ``"change"`` (a trending series): input the first difference d_t = (y_t - y_{t-1}) / s,
    s the std of the training part's differences; targets (y_{t+k} - y_t) / s.
    ``"level"`` (a stationary one): inputs d_t and z_t = (y_t - mu) / sigma (training
    part's mean and std); targets z_{t+k}.
    ``"scaled"`` (a positive series whose amplitude drifts): inputs y_t / nu_t and
    (y_t - y_{t-1}) / nu_t, targets y_{t+k} / nu_t, with nu_t = 1 + the mean of the
    ``context`` steps up to t (the mean scaling of DeepAR, Salinas et al. 2020, made causal
    so that every step of a window is scaled by its own past only).
    """
    diff = np.diff(y, prepend=y[0])
    ones = np.ones_like(y)
    if setup.target == "change":
        s = float(np.std(diff[1:num_fit]))
        inputs, base, scale = [diff / s], y, s * ones
    elif setup.target == "level":
        s = float(np.std(diff[1:num_fit]))
        mu, sigma = float(y[:num_fit].mean()), float(y[:num_fit].std())
        inputs, base, scale = [diff / s, (y - mu) / sigma], mu * ones, sigma * ones
    else:
        nu = 1.0 + trailing_mean(y, setup.context)
        inputs, base, scale = [y / nu, diff / nu], 0.0 * ones, nu
    future, _ = rnnjax.data.ahead(y, setup.horizon)  # (T, H): y_{t+1..t+H}
    targets = (future - base[:, None]) / scale[:, None]
    as32 = lambda a: jnp.asarray(a, jnp.float32)
    return Prepared(as32(np.stack(inputs, 1)), as32(targets), as32(base), as32(scale))


def train_rnn(
    config: Config, setup: Setup, y: np.ndarray, key: jax.Array, progress: bool | None
) -> tuple[np.ndarray, dict]:
    """Returns (test forecasts ``(seeds, origins, H)``, training record) of the RNN on one series."""
    num_pre = len(y) - setup.test
    num_fit = num_pre - setup.validation
    data = prepare(y, setup, num_fit)
    L, H = setup.context, setup.horizon
    model = rnnjax.many_to_many(
        rnnjax.recurrent(CELLS[config.cell](config.hidden_size)), readouts.linear(H)
    )
    optimizer = optax.chain(
        optax.clip_by_global_norm(config.clip_norm), optax.adam(config.learning_rate)
    )

    # Every window [s, s+L) inside the training part trains each of its steps t whose
    # targets y_{t+k} lie in the training part too.
    if num_fit - L < 1:
        raise ValueError(f"context {L} leaves no training window in {num_fit} training steps")
    _, target_valid = rnnjax.data.ahead(y, H, available=num_fit)
    train_windows = [
        jnp.asarray(rnnjax.data.windows(np.asarray(a)[:num_fit], L))
        for a in (data.inputs, data.targets, target_valid)
    ]  # (N, L, ...) each
    input_windows = jnp.asarray(rnnjax.data.windows(np.asarray(data.inputs), L))  # n ends at n+L-1

    def batch_fn(key, step):
        del step
        i = jax.random.randint(key, (config.batch_size,), 0, len(train_windows[0]))
        return tuple(w[i] for w in train_windows)

    def loss_fn(params, batch, key):
        del key
        xs, targets, mask = batch
        outputs = jax.vmap(lambda x: model.apply(params, x))(xs)
        return losses.masked_mse(outputs, targets, mask), {}

    def forecast(params, origins):
        """(len(origins), H) forecasts in the series' units from the window ending at each origin."""
        last = jax.vmap(lambda x: model.apply(params, x)[-1])(input_windows[origins - L + 1])
        return data.base[origins][:, None] + data.scale[origins][:, None] * last

    val_origins = np.arange(num_fit - 1, num_pre - H)
    val_truth = jnp.asarray(truth_at(y, val_origins, H), jnp.float32)

    @jax.jit
    @jax.vmap
    def val_mae(params):
        return jnp.mean(jnp.abs(forecast(params, val_origins) - val_truth))

    states = init_states(model, data.inputs.shape[1], optimizer, key, config.num_seeds)
    # Early stopping: each seed keeps the parameters of its lowest validation MAE.
    hook, best = keep_best(val_mae, states.params)
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
    wall = time.perf_counter() - t0
    origins = held_out_origins(len(y), setup)
    forecasts = np.asarray(
        jax.jit(jax.vmap(forecast, in_axes=(0, None)))(best["params"], origins), np.float64
    )
    curve = [r for r in result.history if "val_loss" in r]
    return forecasts, {
        "train_wall_s": wall,
        "best_step": best["step"].tolist(),
        "best_val_mae": best["loss"].tolist(),
        "val_steps": [r["step"] for r in curve],
        "val_mae": np.asarray([r["val_loss"] for r in curve]).T.tolist(),  # (seeds, evals)
        "train_loss": np.asarray([r["loss"] for r in result.history if "loss" in r]).T.tolist(),
    }


# ------------------------------------------------------------------------------ one series


def run_series(config: Config, name: str, key: jax.Array, progress: bool | None) -> dict:
    """Returns every method's forecasts and scores on one series (the same origins for all)."""
    series = datasets.SERIES[name]()
    setup = SETUPS[name]
    y = series.values
    num_pre = len(y) - setup.test
    origins = held_out_origins(len(y), setup)
    truth = truth_at(y, origins, setup.horizon)
    scale = mase_scale(y[:num_pre], series.period)

    rnn, record = train_rnn(config, setup, y, key, progress)
    stats = fit_statistical(y[:num_pre], setup)
    forecasts = {
        "naive": naive_forecast(y, origins, setup.horizon),
        "seasonal_naive": seasonal_naive_forecast(y, origins, setup.horizon, series.period),
        "arima": state_space_forecasts(stats["arima"], y, origins, setup.horizon),
        "ets": state_space_forecasts(stats["ets"], y, origins, setup.horizon),
    }
    per_seed = [scores(f, truth, scale) for f in rnn]
    table = {m: scores(f, truth, scale) for m, f in forecasts.items()}
    table["rnn"] = {k: float(np.mean([s[k] for s in per_seed])) for k in ("mae", "rmse", "mase")}
    table["rnn"]["mase_std"] = float(np.std([s["mase"] for s in per_seed]))
    horizon_mae = {m: np.mean(np.abs(f - truth), axis=0).tolist() for m, f in forecasts.items()}
    horizon_mae["rnn"] = np.mean(np.abs(rnn - truth[None]), axis=(0, 1)).tolist()
    return {
        "series": name,
        "source": series.source,
        "length": len(y),
        "period": series.period,
        "test": setup.test,
        "horizon": setup.horizon,
        "validation": setup.validation,
        "context": setup.context,
        "num_origins": len(origins),
        "mase_scale": scale,
        "arima_order": setup.arima,
        "ets": setup.ets,
        "arima_fit_s": stats["arima_fit_s"],
        "ets_fit_s": stats["ets_fit_s"],
        "scores": table,
        "rnn_per_seed": per_seed,
        "horizon_mae": horizon_mae,
        "rnn_training": record,
        # Kept for the figures: the series and the forecasts from every origin.
        "times": series.times.tolist(),
        "values": y.tolist(),
        "origins": origins.tolist(),
        "forecasts": {**{m: f.tolist() for m, f in forecasts.items()}, "rnn": rnn.tolist()},
    }


# --------------------------------------------------------------------------- summary, plots


def verdict(results: list[dict]) -> list[str]:
    """Returns the verdict lines: does the RNN beat the naive forecasts, and who beats the RNN."""
    lines, beats_naive = [], True
    for r in results:
        s = r["scores"]
        rnn = s["rnn"]["mase"]
        naive_best = min(s["naive"]["mase"], s["seasonal_naive"]["mase"])
        ok = rnn < naive_best
        beats_naive &= ok
        lines.append(
            f"{r['series']}: RNN MASE {rnn:.3f} vs best naive {naive_best:.3f} "
            f"({'beats' if ok else 'does NOT beat'} both naive forecasts)"
        )
        for m in ("arima", "ets"):
            other = s[m]["mase"]
            if other < rnn:
                lines.append(
                    f"{r['series']}: {LABELS[m]} wins, MASE {other:.3f} vs RNN {rnn:.3f} "
                    f"(RNN MAE {100 * (s['rnn']['mae'] / s[m]['mae'] - 1):.0f}% higher)"
                )
            else:
                lines.append(
                    f"{r['series']}: RNN beats {LABELS[m]}, MASE {rnn:.3f} vs {other:.3f} "
                    f"(RNN MAE {100 * (1 - s['rnn']['mae'] / s[m]['mae']):.0f}% lower)"
                )
    lines.insert(
        0,
        "VERDICT: the RNN "
        + ("beats" if beats_naive else "does NOT beat")
        + " the naive and seasonal-naive forecasts on every series.",
    )
    return lines


def summary_tables(config: Config, results: list[dict]) -> str:
    """Returns one markdown table per series: every method's MAE, RMSE and MASE."""
    parts = []
    for r in results:
        s = r["scores"]
        rows = []
        for m in METHODS:
            label = (
                f"{config.cell.upper()} (mean of {config.num_seeds} seeds, MASE sd "
                f"{s['rnn']['mase_std']:.3f})"
                if m == "rnn"
                else LABELS[m]
            )
            if m == "arima":
                order, seasonal, _ = r["arima_order"]
                label += f" {tuple(order)}" + (f"x{tuple(seasonal)}" if seasonal[3] else "")
            rows.append([label, s[m]["mae"], s[m]["rmse"], s[m]["mase"]])
        parts += [
            f"**{r['series']}** ({r['length']} steps, last {r['test']} held out, "
            f"H = {r['horizon']}, {r['num_origins']} walk-forward origins, period "
            f"{r['period']}; {r['source']})",
            "",
            runs.markdown_table(["method", "MAE", "RMSE", "MASE"], rows),
            "",
        ]
    return "\n".join(parts)


def make_figures(results: list[dict], run_dir: str) -> list[str]:
    """Writes the figures (forecasts vs held-out truth, MAE by horizon) and returns their paths."""
    plt = runs.pyplot()
    colors = {
        "rnn": "tab:red",
        "naive": "tab:gray",
        "seasonal_naive": "tab:olive",
        "arima": "tab:blue",
        "ets": "tab:green",
    }
    paths = []
    fig, axes = plt.subplots(len(results), 1, figsize=(11, 3.2 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results):
        t, y = np.asarray(r["times"]), np.asarray(r["values"])
        origins, H = np.asarray(r["origins"]), r["horizon"]
        shown = origins[::H]  # non-overlapping H-step paths cover the test tail
        start = max(0, origins[0] - 3 * H)
        ax.plot(t[start:], y[start:], "k-", lw=1.2, label="observed")
        ax.axvline(t[origins[0]], color="k", ls=":", lw=1)
        for m in ("rnn", "arima", "seasonal_naive"):
            f = np.asarray(r["forecasts"][m])
            if m == "rnn":
                f = f.mean(axis=0)  # the seeds' mean path, for the picture only
            for j, o in enumerate(shown):
                i = int(np.searchsorted(origins, o))
                ax.plot(
                    t[o + 1 : o + H + 1],
                    f[i],
                    color=colors[m],
                    lw=1.2,
                    label=LABELS[m] if j == 0 else None,
                )
        ax.set_title(
            f"{r['series']}: {H}-step forecasts from every {H}th origin of the held-out tail"
        )
        ax.legend(fontsize=8, ncol=4)
    paths.append(runs.save_figure(fig, run_dir, "forecasts.png"))

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.5), squeeze=False)
    for ax, r in zip(axes[0], results):
        for m in METHODS:
            mae = np.asarray(r["horizon_mae"][m])
            ax.plot(
                np.arange(1, len(mae) + 1),
                mae / r["mase_scale"],
                "o-",
                ms=3,
                color=colors[m],
                label=LABELS[m],
            )
        ax.set_xlabel("steps ahead k")
        ax.set_ylabel("MAE / MASE scale")
        ax.set_title(r["series"])
    axes[0][0].legend(fontsize=8)
    paths.append(runs.save_figure(fig, run_dir, "mae_by_horizon.png"))

    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.5), squeeze=False)
    for ax, r in zip(axes[0], results):
        rec = r["rnn_training"]
        for curve in rec["val_mae"]:
            ax.plot(rec["val_steps"], np.asarray(curve) / r["mase_scale"], lw=1)
        ax.set_xlabel("training step")
        ax.set_ylabel("validation MAE / MASE scale")
        ax.set_title(f"{r['series']}: early stopping (one line per seed)")
    paths.append(runs.save_figure(fig, run_dir, "validation_curves.png"))
    return paths


# ------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    """Runs the experiment; returns ``{"results", "verdict", "run_dir"}``."""
    config, args, run_dir = start_run(Config, PRESETS, argv, __doc__, "forecasting", check_config)
    t_start = time.perf_counter()
    results = run_each(
        config.series, lambda name, key: run_series(config, name, key, args.progress), config.seed
    )
    wall = time.perf_counter() - t_start
    paths = make_figures(results, run_dir)
    return write_results(
        run_dir,
        config,
        results,
        verdict(results),
        summary_tables(config, results),
        title="Forecasting real series: RNN vs naive, seasonal naive, SARIMA and ETS",
        intro=(
            "Walk-forward over the held-out tail, parameters fixed after training, every method "
            "on the same origins; MASE scale = in-sample MAE of the seasonal naive forecast."
        ),
        figures=[os.path.basename(p) for p in paths],
        wall=wall,
    )


if __name__ == "__main__":
    main()
