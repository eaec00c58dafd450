"""Compile time of fwd+bwd for rnnjax, flax.linen and Equinox, each in a fresh process.

In one process, whichever implementation compiles first pays for XLA's autotuning of the
GEMM shapes that the later ones then reuse, so ``benchmark.py``'s first-call column favours
the later rows on a GPU. Here every (case, implementation) runs in its own process, after
the same warm-up, and reports its first call of ``jit(value_and_grad(loss))`` (compile +
one run) and a second call (the run alone).

    python -m experiments.benchmark_compile                 # lstm and gru, 2 rounds
    python -m experiments.benchmark_compile --case lstm --rounds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

IMPLS = {
    "lstm": ["rnnjax", "flax.LSTMCell", "flax.OptimizedLSTMCell", "equinox.LSTMCell"],
    "gru": ["rnnjax", "flax.GRUCell", "equinox.GRUCell"],
    "elman": ["rnnjax", "flax.SimpleCell"],
}


def child(case_name: str, impl: str) -> None:
    import jax

    from experiments import benchmark

    benchmark.warm_up()
    case = dict(benchmark.CASES[case_name])
    key = jax.random.key(0)
    xs = jax.random.normal(jax.random.key(1), (case["B"], case["T"], case["I"]))
    if impl == "rnnjax":
        loss, params = benchmark.rnnjax_model(case, key)
    elif impl.startswith("flax."):
        loss, params = benchmark.flax_model(case, key, impl.removeprefix("flax."))
    else:
        loss, params = benchmark.equinox_model(case, key, impl.removeprefix("equinox."))
    f = jax.jit(jax.value_and_grad(loss))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(f(params, xs))
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "case": case_name,
                "impl": impl,
                "backend": jax.default_backend(),
                "first_call_s": times[0],
                "second_call_s": times[1],
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", nargs="*", default=["lstm", "gru"], choices=sorted(IMPLS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(*args.child)
    for _ in range(args.rounds):
        for case in args.case:
            for impl in IMPLS[case]:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", case, impl],
                    capture_output=True,
                    text=True,
                )
                lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
                row = (
                    json.loads(lines[-1])
                    if lines
                    else {"case": case, "impl": impl, "error": proc.stderr.strip()[-500:]}
                )
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
