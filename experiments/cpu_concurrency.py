"""Does XLA:CPU run two independent recurrent loops at the same time? (It does not.)

Why this matters: a bidirectional layer is two independent loops, one per direction. On
parallel hardware both run at once and the layer costs little more than one direction
(1.14x on an H200, docs/benchmarks.md). On a CPU that needs one core per loop. This script
times, in one process with interleaved repetitions (medians), the wall-clock and the
process CPU time of:

- ``one``: one loop of T steps, ``h <- tanh(h W + x_t)`` style with an LSTM-sized
  ``(B, H) @ (H, 4H)`` matmul per step;
- ``two loops``: two such loops with different weights, independent, in one ``jit``;
- ``one body``: both recurrences in the body of ONE loop (two independent chains per step);
- ``vmap``: one loop vmapped over the two weight matrices (how ``rnnjax.bidirectional``
  runs its directions), i.e. a batched matmul per step;
- ``two devices``: the ``vmap`` program with the stacked axis split over two CPU devices
  (``rnnjax.use_cpu_cores``) by ``shard_map``: one loop per device.

If two loops ran concurrently, ``two loops`` and ``one body`` would take about the wall
time of ``one`` and twice its CPU time. XLA:CPU's runtime (its thunk executor) can run
independent operations concurrently in principle, but in jax 0.10.2 two loops in one
program ran one after the other (wall = 2x ``one``, CPU time = wall); only separate
devices ran them at the same time.

    python -m experiments.cpu_concurrency            # B=32 T=200 H=128, 15 reps
    python -m experiments.cpu_concurrency --reps 31 --batch 16
"""

from __future__ import annotations

import argparse
import statistics

import rnnjax
from experiments import benchmark  # its interleaved timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    rnnjax.use_cpu_cores(2)  # before JAX starts; one-device rows use devices()[0]

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec

    b, t, h = args.batch, args.steps, args.hidden
    k = jax.random.split(jax.random.key(0), 3)
    w1 = jax.random.normal(k[0], (h, 4 * h)) * 0.05
    w2 = jax.random.normal(k[1], (h, 4 * h)) * 0.05
    xs = jax.random.normal(k[2], (t, b, 4 * h))

    def step(h_prev, w, x):
        z = h_prev @ w + x
        return jnp.tanh(z[:, :h]) * jax.nn.sigmoid(z[:, h : 2 * h])

    def loop(w, xs):
        body = lambda c, x: (step(c, w, x),) * 2
        return jax.lax.scan(body, jnp.zeros((b, h)), xs)[1]

    def one_body(w1, w2, xs):
        def body(c, x):
            c = (step(c[0], w1, x), step(c[1], w2, x[::-1]))
            return c, c

        return jax.lax.scan(body, (jnp.zeros((b, h)),) * 2, xs)[1]

    ws = jnp.stack([w1, w2])
    mesh = Mesh(np.array(jax.devices()[:2]), ("d",))
    split = jax.shard_map(
        jax.vmap(loop, in_axes=(0, None)),
        mesh=mesh,
        in_specs=(PartitionSpec("d"), PartitionSpec()),
        out_specs=PartitionSpec("d"),
        check_vma=False,  # the loop's zero carry is not marked as varying over "d"
    )
    one_device = jax.devices()[0]
    put = lambda a: jax.device_put(a, one_device)
    fns = {
        "one": (jax.jit(loop), (put(w1), put(xs))),
        "two loops": (
            jax.jit(lambda a, c, x: (loop(a, x), loop(c, x * 2.0))),
            (put(w1), put(w2), put(xs)),
        ),
        "one body": (jax.jit(one_body), (put(w1), put(w2), put(xs))),
        "vmap": (jax.jit(jax.vmap(loop, in_axes=(0, None))), (put(ws), put(xs))),
        "two devices": (jax.jit(split), (ws, xs)),
    }
    calls = {
        name: lambda f=fn, a=fn_args: jax.block_until_ready(f(*a))
        for name, (fn, fn_args) in fns.items()
    }
    for call in calls.values():
        call()  # compile
    wall, cpu = benchmark.interleaved(calls, args.reps)
    base = statistics.median(wall["one"])
    print(
        f"B={b} T={t} H={h}, {args.reps} reps, jax {jax.__version__}, "
        f"{len(jax.devices())} CPU devices"
    )
    print(f"{'program':<12} {'wall ms':>8} {'CPU ms':>8} {'wall / one':>10}")
    for name in fns:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<12} {1e3 * w:8.2f} {1e3 * c:8.2f} {w / base:10.2f}")


if __name__ == "__main__":
    main()
