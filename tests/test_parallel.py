"""Data parallelism over CPU cores: rnnjax.use_cpu_cores, sharded jit and shard_map.

Each check runs in a child process, because JAX fixes its CPU devices when its backend
starts. The reference is the same loss and gradient computed on one device, unsharded.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json
    import rnnjax
    assert rnnjax.use_cpu_cores(2) == 2  # before JAX computes anything
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from rnnjax import training
    from rnnjax._src.training import devices

    mesh = training.data_parallel_mesh()
    assert len(jax.devices()) == 2
    B, T, I = 4, 6, 3
    layers = {
        "lstm": rnnjax.recurrent(rnnjax.lstm(5)),
        "gru-reference": rnnjax.recurrent(rnnjax.gru(5), impl="reference"),
        "elman-remat": rnnjax.recurrent(rnnjax.elman(5), remat=2),
        "bidirectional-lstm": rnnjax.bidirectional(rnnjax.lstm(5)),
    }
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    lengths = jnp.array([6, 3, 0, 5])
    errors = {}
    for name, layer in layers.items():
        params = layer.init(jax.random.key(0), I)

        def loss(p, x, n):
            ys = jax.vmap(lambda a, m: layer.apply(p, a, length=m)[1])(x, n)
            return jnp.sum(jnp.sin(ys))

        want = jax.value_and_grad(loss)(params, xs, lengths)
        on_mesh = (devices.replicate(params, mesh),) + training.shard_batch((xs, lengths), mesh)
        sharded = jax.jit(jax.value_and_grad(loss))(*on_mesh)

        def local(p, x, n):  # each device: its slice of the batch
            value, grad = jax.value_and_grad(loss)(p, x, n)
            return jax.lax.psum(value, "data"), grad

        mapped = jax.jit(jax.shard_map(
            local, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P())
        ))(*on_mesh)
        errors[name] = {
            kind: max(float(jnp.max(jnp.abs(a - b)))
                      for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
            for kind, got in (("jit", sharded), ("shard_map", mapped))
        }
        errors[name]["devices"] = len(on_mesh[1].sharding.device_set)
    # a user's cell whose update closes over a traced hyperparameter: its gradient under
    # shard_map (where inputs carry varying-axis types) against the one-device reference
    def closure_loss(p, beta, x, impl):
        cell = rnnjax.gated(5, 1, lambda h, z: jnp.tanh(beta * z + h), additive=True)
        layer = rnnjax.recurrent(cell, impl=impl)
        return jnp.sum(jnp.sin(jax.vmap(lambda a: layer.apply(p, a)[1])(x)))

    params = rnnjax.recurrent(rnnjax.gated(5, 1, jnp.tanh)).init(jax.random.key(0), I)
    beta = jnp.float32(0.7)
    want = jax.value_and_grad(closure_loss, (0, 1))(params, beta, xs, "reference")

    def local(p, b, x):
        value, grad = jax.value_and_grad(closure_loss, (0, 1))(p, b, x, "auto")
        return jax.lax.psum(value, "data"), grad  # invariant inputs: grads come summed

    mapped = jax.jit(jax.shard_map(
        local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P(), P())
    ))(params, beta, xs)
    errors["closed-over"] = {"shard_map": max(
        float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(mapped), jax.tree.leaves(want))
    )}
    try:
        rnnjax.use_cpu_cores(3)
        late = None
    except RuntimeError as e:
        late = str(e)
    print("RESULT" + json.dumps({"errors": errors, "late": late}), flush=True)
""")


def test_sharded_runs_match_one_device():
    # One test for the one child process (a module fixture would run again in each
    # pytest-xdist worker that takes one of its tests); every check is reported.
    # The device count comes from use_cpu_cores alone: no device-count flag inherited.
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false",
    }
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300, env=env
    )
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[0][len("RESULT") :])
    failures = []
    for name in ["lstm", "gru-reference", "elman-remat", "bidirectional-lstm"]:
        errors = result["errors"][name]
        # the batch was split over both CPU devices; sharded jit and shard_map (whose check
        # of varying axes needs rnnjax to cast the initial carry) give the one-device loss
        # and gradient
        if not (errors["devices"] == 2 and errors["jit"] < 1e-5 and errors["shard_map"] < 1e-5):
            failures.append(f"{name}: {errors}")
    closed = result["errors"]["closed-over"]
    if not closed["shard_map"] < 1e-4:  # a closed-over hyperparameter's gradient
        failures.append(f"closed-over: {closed}")
    late = result["late"]
    if not (
        "use_cpu_cores(num=3) must run before JAX computes anything" in late
        and "2 device(s)" in late
    ):
        failures.append(f"late use_cpu_cores message: {late}")
    assert not failures, "\n".join(failures)


def test_use_cpu_cores_rejects_bad_counts():
    import rnnjax

    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="num must be a positive int"):
            rnnjax.use_cpu_cores(bad)
