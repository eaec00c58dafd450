"""Benchmark: the cost of per-step state gradients relative to ordinary training gradients.

For each cell, times (jitted, batched with vmap, best of --repeats, measured interleaved)
  1. baseline: one forward + backward pass, d(loss)/d(params) of the batch loss;
  2. state_gradient_norms: ||dL/dh_t|| for every step t and every example (one forward
     and one backward pass: the loss is differentiated with respect to a zero probe
     added to each step's carry, not with respect to the parameters);
and prints both times and their ratio (target: < 1.5x).

    python -m experiments.benchmark_diagnostics --batch 32 --steps 100 --hidden 64
"""

import argparse
import time

import jax
import jax.numpy as jnp

import rnnjax
from rnnjax import diagnostics

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batch", type=int, default=32)
parser.add_argument("--steps", type=int, default=100)
parser.add_argument("--hidden", type=int, default=64)
parser.add_argument("--input", type=int, default=16)
parser.add_argument("--repeats", type=int, default=20)
parser.add_argument("--cells", default="elman,lstm,gru")
args = parser.parse_args()

CELLS = {"elman": rnnjax.elman, "lstm": rnnjax.lstm, "gru": rnnjax.gru}


def loss_fn(final_carry, ys):
    """A loss that reads every output and the final carry, as a sequence model's would."""
    h = final_carry[0] if isinstance(final_carry, tuple) else final_carry
    return jnp.mean(ys**2) + jnp.sum(jnp.tanh(h))


def timed(fn, *a):
    start = time.perf_counter()
    jax.block_until_ready(fn(*a))
    return time.perf_counter() - start


def main():
    key = jax.random.PRNGKey(0)
    xs = jax.random.normal(key, (args.batch, args.steps, args.input))
    print(
        f"device={jax.devices()[0].platform} batch={args.batch} T={args.steps} "
        f"H={args.hidden} I={args.input} best of {args.repeats}"
    )
    print(f"{'cell':6s} {'fwd+bwd (ms)':>13s} {'state_grad_norms (ms)':>22s} {'ratio':>6s}")
    for name in args.cells.split(","):
        cell = CELLS[name](args.hidden)
        params = cell.init(jax.random.fold_in(key, 1), args.input)

        @jax.jit
        def baseline(params, xs):
            def batch_loss(p):
                def one(x):
                    return loss_fn(*rnnjax.scan(cell, p, x))

                return jnp.mean(jax.vmap(one)(xs))

            return jax.value_and_grad(batch_loss)(params)

        @jax.jit
        def state_norms(params, xs):
            return jax.vmap(lambda x: diagnostics.state_gradient_norms(cell, params, x, loss_fn))(
                xs
            )

        fns = {"baseline": baseline, "state": state_norms}
        for fn in fns.values():  # compile
            timed(fn, params, xs)
        best = {k: float("inf") for k in fns}
        for _ in range(args.repeats):  # interleaved, so load drifts hit both alike
            for k, fn in fns.items():
                best[k] = min(best[k], timed(fn, params, xs))
        ratio = best["state"] / best["baseline"]
        print(f"{name:6s} {1e3 * best['baseline']:13.2f} {1e3 * best['state']:22.2f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
