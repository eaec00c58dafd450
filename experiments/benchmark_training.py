"""Overhead of the training loop: steps/s of rnnjax.fit against a bare jitted step, same LSTM.

Baselines, measured in the same run on the same model, batch and optimizer:

* ``bare``: ``for s in range(n): state, m = jax.jit(train_step)(state, batch)`` on one fixed
  device batch, blocking only at the end (the least a Python loop can do);
* ``bare+data``: the same, with the batch made inside the jitted step by ``batch_fn`` (what
  ``fit`` does).

Then ``fit`` with several ``chunk_size`` values, in memory and with a run directory
(metrics.jsonl and orbax checkpoints). Compilation is excluded (every variant is run once
before it is timed). Each time is the best of ``--repeats``.

    python -m experiments.benchmark_training [--steps 1000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import jax
import jax.numpy as jnp
import optax

import rnnjax
from rnnjax import training

# Config: a small LSTM regression problem.
HIDDEN, INPUT, T, BATCH = 32, 4, 20, 32
CELL = rnnjax.lstm(HIDDEN)
OPT = optax.chain(
    optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
)


def init_params(key):
    k_rnn, k_out = jax.random.split(key)
    return {"rnn": CELL.init(k_rnn, INPUT), "out": 0.1 * jax.random.normal(k_out, (HIDDEN,))}


def loss_fn(params, batch, key):
    del key

    def predict(xs):
        (h, _), _ = rnnjax.scan(CELL, params["rnn"], xs)
        return h @ params["out"]

    err = jax.vmap(predict)(batch["x"]) - batch["y"]
    return jnp.mean(err**2), {}


def batch_fn(key, step):
    del step
    x = jax.random.normal(key, (BATCH, T, INPUT))
    return {"x": x, "y": x[:, :, 0].mean(axis=1)}


def best_of(repeats, fn):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.steps

    k_param, k_train = jax.random.split(jax.random.key(0))
    state0 = rnnjax.init_train_state(k_train, init_params(k_param), OPT)
    train_step = rnnjax.make_train_step(loss_fn, OPT)

    step = jax.jit(train_step)
    fixed_batch = batch_fn(jax.random.key(1), 0)

    def bare():
        state = state0
        for _ in range(n):
            state, _ = step(state, fixed_batch)
        jax.block_until_ready(state)

    step_with_data = jax.jit(
        lambda s: train_step(s, batch_fn(jax.random.fold_in(s.key, s.step), s.step))
    )

    def bare_data():
        state = state0
        for _ in range(n):
            state, _ = step_with_data(state)
        jax.block_until_ready(state)

    results = {}
    for name, fn in [("bare", bare), ("bare+data", bare_data)]:
        fn()  # compile
        results[name] = best_of(args.repeats, fn)

    for chunk in (1, 10, 100, n):

        def run(chunk=chunk):
            r = rnnjax.fit(
                train_step, state0, batch_fn, n, schedule=training.Schedule(chunk), progress=False
            )
            jax.block_until_ready(r.state)

        run()
        results[f"fit chunk={chunk}"] = best_of(args.repeats, run)

    def with_run_dir(chunk=100):
        with tempfile.TemporaryDirectory() as d:
            schedule = training.Schedule(chunk, checkpoint_every=max(n // 2, chunk))
            r = rnnjax.fit(
                train_step, state0, batch_fn, n, schedule=schedule, run_dir=d, progress=False
            )
            jax.block_until_ready(r.state)

    with_run_dir()
    results["fit chunk=100 +run_dir, 2 ckpts"] = best_of(args.repeats, with_run_dir)

    print(
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; LSTM hidden={HIDDEN}, "
        f"T={T}, batch={BATCH}; {n} steps, best of {args.repeats}"
    )
    print(f"{'variant':34s} {'steps/s':>10s} {'vs bare':>8s} {'vs bare+data':>13s}")
    for name, t in results.items():
        print(
            f"{name:34s} {n / t:10.1f} {results['bare'] / t:8.2f} {results['bare+data'] / t:13.2f}"
        )


if __name__ == "__main__":
    main()
