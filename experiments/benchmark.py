"""Times rnnjax's recurrent layers against flax.linen, Equinox and PyTorch, side by side.

Method: every implementation of a case runs in this one process on the same shapes; the
repetitions are interleaved (rep 1 of every implementation, then rep 2, ...; the order
rotates each repetition) so that load on the machine hits all of them alike, and the table
reports medians. Forward and
forward+backward (gradient of mean(ys^2) with respect to the parameters) are timed
separately; compile time is the first call, excluded from the medians. Peak memory is
XLA's own account of a compiled function (arguments + outputs + temporaries), for the JAX
implementations. The roofline is one GEMM with the same FLOPs as the case, timed in the
same run: ``fraction = flops / GEMM rate / time``.

On a CPU the process shows one JAX device per core (``rnnjax.use_cpu_cores``; choose with
``--cpu-devices``): one XLA:CPU program runs a recurrent loop on one core, while PyTorch's
per-step matmuls use every core. Rows without a suffix run on one device; "-dp" rows split
the batch over all CPU devices with ``shard_map`` (the same wrapper for every library) and
"-dp-jit" rows with plain ``jit`` on a sharded batch (what ``rnnjax.fit`` does).

    python -m experiments.benchmark                       # all cases
    python -m experiments.benchmark --quick               # reference shapes, few reps
    python -m experiments.benchmark --case lstm --json out.json
    python -m experiments.benchmark --case long-remat     # T=100,000, peak memory vs remat
    python -m experiments.benchmark --case padding        # cost of lengths and of checks
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

import rnnjax

# case: cell type, batch B, steps T, input I, hidden H, bidirectional 2-layer?
CASES: dict[str, dict[str, Any]] = {
    "lstm": dict(cell="lstm", B=32, T=200, I=32, H=128),
    "gru": dict(cell="gru", B=32, T=200, I=32, H=128),
    "elman": dict(cell="elman", B=32, T=200, I=32, H=128),
    "lstm-b1": dict(cell="lstm", B=1, T=200, I=32, H=128),
    "lstm-b8": dict(cell="lstm", B=8, T=200, I=32, H=128),
    "lstm-long": dict(cell="lstm", B=8, T=2000, I=32, H=128),
    "lstm-wide": dict(cell="lstm", B=32, T=200, I=32, H=512),
    "lstm-bi1": dict(cell="lstm", B=32, T=200, I=32, H=128, bi=True),
    "lstm-bi2": dict(cell="lstm", B=32, T=200, I=32, H=128, bi=True, layers=2),
    "lstm-uni2": dict(cell="lstm", B=32, T=200, I=32, H=128, layers=2),
}
QUICK = ["lstm", "gru", "elman", "lstm-bi1"]
GATES = {"lstm": 4, "gru": 3, "elman": 1}


def flops(case: dict[str, Any]) -> float:
    """Returns the matmul FLOPs of one forward pass (x W_ih and h W_hh, all steps)."""
    b, t, h, g = case["B"], case["T"], case["H"], GATES[case["cell"]]
    directions = 2 if case.get("bi") else 1
    total = 0
    for layer in range(case.get("layers", 1)):  # layers after the first read H per direction
        features = case["I"] if layer == 0 else directions * h
        total += directions * 2 * b * t * (features + h) * g * h
    return total


# ----------------------------------------------------------------------------- models
# Each builder returns (forward, forward_and_backward, args) as callables of *args.


def _jax_pair(loss_of_params: Callable, params: Any, xs: Any):
    fwd = jax.jit(loss_of_params)
    fwd_bwd = jax.jit(jax.value_and_grad(loss_of_params))
    return fwd, fwd_bwd, (params, xs)


def rnnjax_model(case, key, impl="auto", remat=None, unroll=None):
    cell = {"lstm": rnnjax.lstm, "gru": rnnjax.gru, "elman": rnnjax.elman}[case["cell"]](case["H"])
    make = rnnjax.bidirectional if case.get("bi") else rnnjax.recurrent
    layers = [
        make(cell, impl=impl, remat=remat, unroll=unroll) for _ in range(case.get("layers", 1))
    ]
    layer = layers[0] if len(layers) == 1 else rnnjax.stack(*layers)
    params = layer.init(key, case["I"])

    def loss(params, xs):
        ys = jax.vmap(lambda x: layer.apply(params, x)[1])(xs)
        return jnp.mean(ys**2)

    return loss, params


def flax_model(case, key, cell_name):
    import flax.linen as nn

    make = getattr(nn, cell_name)
    h = case["H"]
    one = (
        (lambda: nn.Bidirectional(nn.RNN(make(h)), nn.RNN(make(h))))
        if case.get("bi")
        else (lambda: nn.RNN(make(h)))
    )
    layers = [one() for _ in range(case.get("layers", 1))]
    model = layers[0] if len(layers) == 1 else nn.Sequential(layers)
    xs = jnp.zeros((case["B"], case["T"], case["I"]))
    params = model.init(key, xs)
    return (lambda p, xs: jnp.mean(model.apply(p, xs) ** 2)), params


def equinox_model(case, key, cell_name):
    import equinox as eqx

    if case.get("bi") or case.get("layers", 1) > 1:
        raise NotImplementedError("no stacked/bidirectional Equinox model in this benchmark")
    cell = getattr(eqx.nn, cell_name)(case["I"], case["H"], key=key)
    params, static = eqx.partition(cell, eqx.is_array)

    def one(p, x):
        c = eqx.combine(p, static)
        h0 = jnp.zeros(case["H"])
        carry = (h0, h0) if cell_name == "LSTMCell" else h0

        def step(carry, x):
            carry = c(x, carry)
            return carry, carry[0] if cell_name == "LSTMCell" else carry

        return jax.lax.scan(step, carry, x)[1]

    return (lambda p, xs: jnp.mean(jax.vmap(lambda x: one(p, x))(xs) ** 2)), params


def torch_model(case, seed):
    import torch

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # cuDNN's RNNs on a GPU
    cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[case["cell"]]
    model = cls(
        case["I"],
        case["H"],
        num_layers=case.get("layers", 1),
        bidirectional=bool(case.get("bi")),
        batch_first=True,
    ).to(device)
    xs = torch.randn(case["B"], case["T"], case["I"], device=device)

    def fwd():
        with torch.no_grad():
            return model(xs)[0].pow(2).mean().item()

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        loss = model(xs)[0].pow(2).mean()
        loss.backward()
        return loss.item()

    return fwd, fwd_bwd


FLAX_CELLS = {
    "lstm": ["LSTMCell", "OptimizedLSTMCell"],
    "gru": ["GRUCell"],
    "elman": ["SimpleCell"],
}
EQX_CELLS = {"lstm": ["LSTMCell"], "gru": ["GRUCell"], "elman": []}


def _data_parallel(loss: Callable, params: Any, xs: Any, how: str):
    """Returns ``(fwd, fwd_bwd, args)`` with the batch split over the CPU devices.

    ``how="shard_map"``: every device runs ``loss`` on its slice and the loss and gradient
    are averaged across devices (one method for every library; ``check_vma=False``
    because flax.linen's ``nn.RNN`` fails shard_map's check of varying axes).
    ``how="jit"``: plain ``jit`` on a sharded batch and replicated params, XLA's
    partitioner deciding the rest (what ``rnnjax.fit`` does).
    """
    from jax.sharding import PartitionSpec as P

    mesh = rnnjax.training.data_parallel_mesh()
    args = (
        rnnjax._src.training.devices.replicate(params, mesh),
        rnnjax.training.shard_batch(xs, mesh),
    )
    if how == "jit":
        return jax.jit(loss), jax.jit(jax.value_and_grad(loss)), args
    mapped = lambda f: jax.jit(
        jax.shard_map(
            lambda p, x: jax.lax.pmean(f(p, x), "data"),
            mesh=mesh,
            in_specs=(P(), P("data")),
            out_specs=P(),
            check_vma=False,
        )
    )
    return mapped(loss), mapped(jax.value_and_grad(loss)), args


def implementations(case: dict[str, Any], notes: list[str]) -> dict[str, dict[str, Any]]:
    """Returns name -> {"fwd", "fwd_bwd": callables of no arguments, "jax": (f, args) | None}.

    With several CPU devices (``--cpu-devices``) and a batch they divide, every JAX
    implementation but the reference also runs data-parallel ("-dp": shard_map over the
    batch), and rnnjax and the first flax cell also under plain jit ("-dp-jit").
    """
    key = jax.random.key(0)
    xs = jax.random.normal(jax.random.key(1), (case["B"], case["T"], case["I"]))
    out: dict[str, dict[str, Any]] = {}
    devices = len(jax.devices()) if jax.default_backend() == "cpu" else 1
    parallel = devices > 1 and case["B"] % devices == 0
    if devices > 1 and not parallel:
        notes.append(f"batch {case['B']} not divisible by the {devices} CPU devices: no -dp rows")

    def add(name, fwd, fwd_bwd, args):
        out[name] = {
            "fwd": lambda: jax.block_until_ready(fwd(*args)),
            "fwd_bwd": lambda: jax.block_until_ready(fwd_bwd(*args)),
            "jax": (fwd, fwd_bwd, args),
        }

    def add_jax(name, loss, params, dp=("shard_map",)):
        add(name, *_jax_pair(loss, params, xs))
        for how in dp if parallel else ():
            add(
                f"{name}-dp" + ("-jit" if how == "jit" else ""),
                *_data_parallel(loss, params, xs, how),
            )

    add_jax("rnnjax", *rnnjax_model(case, key, "auto"), dp=("shard_map", "jit"))
    add_jax("rnnjax-reference", *rnnjax_model(case, key, "reference"), dp=())
    try:
        import flax.linen  # noqa: F401

        for i, name in enumerate(FLAX_CELLS[case["cell"]]):
            dp = ("shard_map", "jit") if i == 0 else ("shard_map",)
            add_jax(f"flax.{name}", *flax_model(case, key, name), dp=dp)
    except ImportError:
        notes.append("flax not installed: skipped")
    try:
        import equinox  # noqa: F401

        for name in EQX_CELLS[case["cell"]]:
            try:
                add_jax(f"equinox.{name}", *equinox_model(case, key, name))
            except NotImplementedError as e:
                notes.append(f"equinox.{name}: {e}")
    except ImportError:
        notes.append("equinox not installed: skipped")
    try:
        import torch  # noqa: F401

        fwd, fwd_bwd = torch_model(case, 0)
        cls = {"lstm": "LSTM", "gru": "GRU", "elman": "RNN"}[case["cell"]]
        out[f"torch.{cls}"] = {"fwd": fwd, "fwd_bwd": fwd_bwd, "jax": None}
    except ImportError:
        notes.append("torch not installed: skipped")
    return out


def gemm_rate(case: dict[str, Any], reps: int) -> float:
    """Returns the measured FLOP/s of one (B*T, I+H) @ (I+H, G*H) GEMM, float32."""
    m, k, n = case["B"] * case["T"], case["I"] + case["H"], GATES[case["cell"]] * case["H"]
    a = jax.random.normal(jax.random.key(2), (m, k))
    b = jax.random.normal(jax.random.key(3), (k, n))
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, b))
    times = []
    for _ in range(max(reps, 5)):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t0)
    return 2 * m * k * n / statistics.median(times)


def jax_memory(fn, args) -> int | None:
    """Returns XLA's bytes for arguments + outputs + temporaries of ``fn(*args)``."""
    try:
        m = fn.lower(*args).compile().memory_analysis()
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes)
    except Exception:  # memory_analysis is not available on every backend
        return None


def interleaved(
    calls: dict[str, Callable[[], Any]], reps: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Returns the wall-clock and the process CPU seconds of each call, ``reps`` times each.

    Repetition k runs every call once, in an order rotated by k, so that no call always
    runs right after the same one: in a fixed order, the same JAX program measured 15.4 ms
    right after PyTorch and 12.6 ms in another slot (PyTorch's threads spin a while after a
    call, presumably taking a core from whatever runs next). A call must block until its
    result is ready.
    """
    wall: dict[str, list[float]] = {name: [] for name in calls}
    cpu: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            c0, t0 = time.process_time(), time.perf_counter()
            calls[name]()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def run_case(name: str, case: dict[str, Any], reps: int) -> dict[str, Any]:
    notes: list[str] = []
    impls = implementations(case, notes)
    result: dict[str, Any] = {"case": name, **case, "notes": notes, "impls": {}}
    for mode in ("fwd", "fwd_bwd"):
        compile_s = {}
        for impl, fns in impls.items():  # the first call compiles
            t0 = time.perf_counter()
            fns[mode]()
            compile_s[impl] = time.perf_counter() - t0
        times, _ = interleaved({impl: fns[mode] for impl, fns in impls.items()}, reps)
        for impl in impls:
            entry = result["impls"].setdefault(impl, {})
            entry[f"{mode}_ms"] = 1e3 * statistics.median(times[impl])
            entry[f"{mode}_first_call_s"] = compile_s[impl]
    for impl, fns in impls.items():
        if fns["jax"] is not None:
            _fwd, fwd_bwd, args = fns["jax"]
            result["impls"][impl]["fwd_bwd_peak_mb"] = (
                None if (b := jax_memory(fwd_bwd, args)) is None else b / 2**20
            )
    rate = gemm_rate(case, reps)
    result["gemm_gflops"] = rate / 1e9
    result["load_avg_after"] = os.getloadavg()  # other jobs on the machine skew the times
    result["flops_fwd"] = flops(case)
    for entry in result["impls"].values():
        entry["fwd_roofline"] = flops(case) / rate / (entry["fwd_ms"] / 1e3)
        # backward: two matmuls per forward matmul (dW and dx/dh)
        entry["fwd_bwd_roofline"] = 3 * flops(case) / rate / (entry["fwd_bwd_ms"] / 1e3)
    return result


def print_case(r: dict[str, Any]) -> None:
    shape = f"B={r['B']} T={r['T']} I={r['I']} H={r['H']}" + (
        f" {r.get('layers', 1)}-layer" + (" bidirectional" if r.get("bi") else "")
    )
    load = ", ".join(f"{x:.1f}" for x in r["load_avg_after"])
    print(
        f"\n### {r['case']}: {r['cell']} {shape}  (GEMM {r['gemm_gflops']:.0f} GFLOP/s; "
        f"load average after: {load})"
    )
    base = r["impls"]["rnnjax"]
    print(
        "| impl | fwd ms | fwd+bwd ms | x rnnjax (fwd+bwd) | roofline (fwd+bwd) | "
        "first call fwd+bwd s | peak MB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for impl, e in r["impls"].items():
        peak = e.get("fwd_bwd_peak_mb")
        print(
            f"| {impl} | {e['fwd_ms']:.1f} | {e['fwd_bwd_ms']:.1f} | "
            f"{e['fwd_bwd_ms'] / base['fwd_bwd_ms']:.2f} | {100 * e['fwd_bwd_roofline']:.0f}% | "
            f"{e['fwd_bwd_first_call_s']:.2f} | {'-' if peak is None else f'{peak:.0f}'} |"
        )
    fastest = lambda lib: min(
        (
            (e["fwd_bwd_ms"], k)
            for k, e in r["impls"].items()
            if k.startswith(lib) and "reference" not in k
        ),
        default=None,
    )
    ours = fastest("rnnjax")
    for lib in ("flax", "equinox", "torch"):
        if (theirs := fastest(lib)) is not None:
            print(
                f"- fwd+bwd, fastest rnnjax row ({ours[1]}, {ours[0]:.1f} ms) vs fastest {lib} "
                f"row ({theirs[1]}, {theirs[0]:.1f} ms): speed-up of rnnjax {theirs[0] / ours[0]:.2f}x"
            )
    for note in r["notes"]:
        print(f"- {note}")


# ------------------------------------------------------------------ long sequences, remat


def long_remat_child(remat: str, steps: int) -> None:
    """Runs one fwd+bwd of a T=`steps` LSTM (B=8, H=128, I=32) and prints JSON."""
    case = dict(cell="lstm", B=8, T=steps, I=32, H=128)
    loss, params = rnnjax_model(case, jax.random.key(0), "auto", None if remat == "none" else remat)
    xs = jax.random.normal(jax.random.key(1), (case["B"], steps, case["I"]))
    f = jax.jit(jax.value_and_grad(loss))
    t0 = time.perf_counter()
    jax.block_until_ready(f(params, xs))
    first = time.perf_counter() - t0
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        jax.block_until_ready(f(params, xs))
        times.append(time.perf_counter() - t0)
    print(
        json.dumps(
            {
                "remat": remat,
                "T": steps,
                "first_call_s": first,
                "fwd_bwd_s": min(times),
                "xla_peak_mb": (jax_memory(f, (params, xs)) or 0) / 2**20,
                "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def long_remat(steps: int) -> list[dict[str, Any]]:
    """Returns one record per remat setting, each measured in a fresh process (peak RSS)."""
    out = []
    for remat in ("sqrt", "none"):
        proc = subprocess.run(
            [sys.executable, __file__, "--long-remat-child", remat, "--steps", str(steps)],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            out.append({"remat": remat, "T": steps, "error": proc.stderr.strip()[-500:]})
        else:
            out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps(out[-1]), flush=True)
    return out


def padding_cost(reps: int) -> list[dict[str, Any]]:
    """Returns fwd+bwd medians of each cell at the reference shape, on one device: without
    ``length``, with a per-example ``length`` (padded steps cleaned and masked), and with
    ``length`` under ``rnnjax.checked`` (a run-time check of every length)."""
    rows = []
    for cell_name in ("lstm", "gru", "elman"):
        case = dict(CASES[cell_name])
        xs = jax.random.normal(jax.random.key(1), (case["B"], case["T"], case["I"]))
        lengths = case["T"] - jnp.arange(case["B"], dtype=jnp.int32) % 7
        cell = {"lstm": rnnjax.lstm, "gru": rnnjax.gru, "elman": rnnjax.elman}[cell_name](case["H"])
        layer = rnnjax.recurrent(cell)
        params = layer.init(jax.random.key(0), case["I"])
        no_length = jax.jit(
            jax.value_and_grad(
                lambda p, x, n: jnp.mean(jax.vmap(lambda a: layer.apply(p, a)[1])(x) ** 2)
            )
        )
        loss = lambda p, x, n: jnp.mean(
            jax.vmap(lambda a, m: layer.apply(p, a, length=m)[1])(x, n) ** 2
        )
        with_length = jax.jit(jax.value_and_grad(loss))
        calls = {
            name: (lambda f=f: jax.block_until_ready(f(params, xs, lengths)))
            for name, f in (("no length", no_length), ("length", with_length))
        }
        # rnnjax.checked raises on the host, so it wraps the jitted call, not inside it
        checked = rnnjax.checked(jax.jit(jax.value_and_grad(lambda p, x, n: loss(p, x, n))))
        calls["length, checked"] = lambda: jax.block_until_ready(checked(params, xs, lengths))
        for call in calls.values():
            call()
        times, _ = interleaved(calls, reps)
        row = {"cell": cell_name, **{k: 1e3 * statistics.median(v) for k, v in times.items()}}
        row["load_avg_after"] = os.getloadavg()
        rows.append(row)
        print(
            f"{cell_name}: "
            + ", ".join(f"{k} {row[k]:.1f} ms" for k in calls)
            + f"; length/no length {row['length'] / row['no length']:.3f}, "
            f"checked/unchecked {row['length, checked'] / row['length']:.3f}",
            flush=True,
        )
    return rows


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {
        "jax": jax.__version__,
        "rnnjax": rnnjax.__version__,
        "python": platform.python_version(),
    }
    for mod in ("flax", "equinox", "torch"):
        with contextlib.suppress(ImportError):
            versions[mod] = __import__(mod).__version__
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "devices": [str(d) for d in jax.devices()],
        "load_avg": os.getloadavg(),
        "versions": versions,
    }


def warm_up() -> None:
    """Runs a small jitted scan, matmul and gradient, so that the first implementation timed
    does not pay the process's one-time costs (backend start, BLAS handles, autotuning) in
    its first-call time: on an H200 the first JAX row's first call was ~1 s longer."""
    w = jnp.eye(16)
    loss = lambda w, xs: jnp.sum(jax.lax.scan(lambda h, x: (jnp.tanh(h @ w + x), h), xs[0], xs)[1])
    jax.block_until_ready(jax.jit(jax.value_and_grad(loss))(w, jnp.ones((8, 4, 16))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--case", nargs="*", help=f"cases among {sorted(CASES)}, long-remat or padding"
    )
    parser.add_argument("--quick", action="store_true", help="reference-shape cases, 5 reps")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--steps", type=int, default=100_000, help="T of long-remat")
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    parser.add_argument("--long-remat-child", type=str, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        help="JAX CPU devices for the -dp rows (default: one per core; 1: no -dp rows)",
    )
    args = parser.parse_args()
    if args.long_remat_child:
        return long_remat_child(args.long_remat_child, args.steps)
    rnnjax.use_cpu_cores(args.cpu_devices)  # before JAX computes anything
    warm_up()

    names = args.case or (QUICK if args.quick else list(CASES) + ["long-remat"])
    reps = args.reps or (5 if args.quick else 15)
    report: dict[str, Any] = {"machine": machine(), "reps": reps, "cases": []}
    print(json.dumps(report["machine"]))
    for name in names:
        if name == "long-remat":
            report["long_remat"] = long_remat(args.steps)
            continue
        if name == "padding":
            report["padding"] = padding_cost(reps)
            continue
        if name not in CASES:
            raise ValueError(
                f"--case must be among {sorted(CASES)}, long-remat or padding, got {name!r}"
            )
        r = run_case(name, CASES[name], reps)
        report["cases"].append(r)
        print_case(r)
        sys.stdout.flush()
        if args.json:  # after every case, so that an interrupted run keeps what it measured
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    if args.json and ("long_remat" in report or "padding" in report):
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
