"""Each cell's step against the equations written out in NumPy (and Flax's cells)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from random_params import random_params

import rnnjax
from rnnjax._src.registry import make_cell


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_step(kind, p, h, x, *, activation="tanh", reset_after=True):
    """The PyTorch equations, written out gate by gate in NumPy (float64)."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(x, np.float64)
    if kind == "lstm":
        h, c = (np.asarray(a, np.float64) for a in h)
    else:
        h = np.asarray(h, np.float64)
    H = h.shape[0]
    W_i = lambda g: p["w_ih"][:, g * H : (g + 1) * H]
    W_h = lambda g: p["w_hh"][:, g * H : (g + 1) * H]
    b_i = lambda g: p["b_ih"][g * H : (g + 1) * H]
    b_h = lambda g: p["b_hh"][g * H : (g + 1) * H]
    if kind == "elman":
        act = {"tanh": np.tanh, "relu": lambda v: np.maximum(v, 0), "identity": lambda v: v}[
            activation
        ]
        h = act(x @ W_i(0) + b_i(0) + h @ W_h(0) + b_h(0))
        return h, h
    if kind == "lstm":
        pre = lambda g: x @ W_i(g) + b_i(g) + h @ W_h(g) + b_h(g)
        i, f, g, o = sigmoid(pre(0)), sigmoid(pre(1)), np.tanh(pre(2)), sigmoid(pre(3))
        c = f * c + i * g
        h = o * np.tanh(c)
        return (h, c), h
    r = sigmoid(x @ W_i(0) + b_i(0) + h @ W_h(0) + b_h(0))
    z = sigmoid(x @ W_i(1) + b_i(1) + h @ W_h(1) + b_h(1))
    if reset_after:
        n = np.tanh(x @ W_i(2) + b_i(2) + r * (h @ W_h(2) + b_h(2)))
    else:
        n = np.tanh(x @ W_i(2) + b_i(2) + (r * h) @ W_h(2) + b_h(2))
    h = (1 - z) * n + z * h
    return h, h


CASES = [
    ("elman", rnnjax.elman(5), {}),
    ("elman", rnnjax.elman(5, "relu"), {"activation": "relu"}),
    ("elman", rnnjax.elman(5, "identity"), {"activation": "identity"}),
    ("lstm", rnnjax.lstm(5), {}),
    ("gru", rnnjax.gru(5), {}),
    ("gru", rnnjax.gru(5, reset_after=False), {"reset_after": False}),
]


@pytest.mark.parametrize(
    "kind,cell,options", CASES, ids=lambda c: str(c) if isinstance(c, str) else ""
)
def test_step_matches_numpy_equations(kind, cell, options):
    key = jax.random.key(0)
    params = random_params(cell, key, 3)
    carry = jax.tree.map(
        lambda a: jax.random.normal(jax.random.key(1), a.shape), cell.initial_carry(params)
    )
    x = jax.random.normal(jax.random.key(2), (3,))
    new_carry, y = cell.step(params, carry, x)
    ref_carry, ref_y = numpy_step(kind, params, carry, x, **options)
    np.testing.assert_allclose(y, ref_y, atol=1e-5)
    for a, b in zip(jax.tree.leaves(new_carry), jax.tree.leaves(ref_carry)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_parameter_shapes_and_initialisers():
    key = jax.random.key(0)
    p = rnnjax.lstm(6).init(key, 4)
    assert {k: v.shape for k, v in p.items()} == {
        "w_ih": (4, 24),
        "w_hh": (6, 24),
        "b_ih": (24,),
        "b_hh": (24,),
    }
    # forget-gate bias 1 (Jozefowicz et al. 2015), every other bias 0
    np.testing.assert_array_equal(p["b_ih"][6:12], 1.0)
    np.testing.assert_array_equal(np.delete(np.asarray(p["b_ih"]), np.s_[6:12]), 0.0)
    np.testing.assert_array_equal(p["b_hh"], 0.0)
    # each gate's recurrent block is orthogonal
    for g in range(4):
        block = np.asarray(p["w_hh"][:, 6 * g : 6 * (g + 1)])
        np.testing.assert_allclose(block.T @ block, np.eye(6), atol=1e-5)
    # IRNN: identity recurrent weights, ReLU
    irnn = rnnjax.irnn(5)
    np.testing.assert_array_equal(irnn.init(key, 2)["w_hh"], np.eye(5))
    assert irnn.kind[1] == "relu"
    np.testing.assert_array_equal(
        rnnjax.elman(4, recurrent_init=rnnjax.initializers.identity(0.5)).init(key, 2)["w_hh"],
        0.5 * np.eye(4),
    )
    # no biases when asked
    assert set(rnnjax.gru(3, use_bias=False).init(key, 2)) == {"w_ih", "w_hh"}
    # chrono init (Tallec & Ollivier 2018): b_f in [0, log(T_max - 1)], b_i = -b_f
    p = rnnjax.lstm(50, chrono_t_max=100).init(key, 2)
    b_i, b_f = np.asarray(p["b_ih"][:50]), np.asarray(p["b_ih"][50:100])
    assert b_f.min() >= 0.0 and b_f.max() <= np.log(99.0) + 1e-6 and b_f.std() > 0.5
    np.testing.assert_array_equal(b_i, -b_f)


SEEDS_AT_ONCE = """
import jax, numpy as np, rnnjax
layer = rnnjax.bidirectional(rnnjax.gru(64))
keys = jax.random.split(jax.random.key(0), 3)
batched = jax.jit(jax.vmap(lambda k: layer.init(k, 3)))(keys)
for i, k in enumerate(keys):
    for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(layer.init(k, 3))):
        np.testing.assert_array_equal(a[i], b)
print("SAME")
"""


def test_a_numpy_initialiser_draws_each_gate_from_its_own_key():
    # A user's initialiser may call NumPy (no tracing under the vmapped draw): it gets the
    # gates' keys one by one, and the same keys as a JAX initialiser's vmapped draw.
    def numpy_init(key, shape, dtype):
        seed = int(np.asarray(jax.random.key_data(key)).ravel()[-1]) % 4096
        return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

    def jax_init(key, shape, dtype):
        seed = jax.random.key_data(key).ravel()[-1] % 4096  # exact in float32
        return jnp.full(shape, seed.astype(jnp.float32))

    key = jax.random.key(3)
    got = rnnjax.gru(4, recurrent_init=numpy_init).init(key, 2)["w_hh"]
    seeds = np.asarray(rnnjax.gru(4, recurrent_init=jax_init).init(key, 2)["w_hh"])[0, ::4]
    want = np.concatenate([numpy_init_from(int(s)) for s in seeds], axis=1)
    np.testing.assert_array_equal(got, want)


def numpy_init_from(seed):
    return np.random.default_rng(seed).standard_normal((4, 4)).astype(np.float32)


def test_several_seeds_initialise_in_one_jitted_vmap():
    # A child process with a timeout: this program used to hang on XLA:CPU (two batched
    # LAPACK QRs at once, JAX 0.10; see tests/test_no_hang.py), and a hang must fail, not
    # stall CI. It runs with XLA's default compiler flags, as a user's program does.
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", SEEDS_AT_ONCE],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0 and "SAME" in proc.stdout, proc.stderr[-2000:]


def _flax_to_rnnjax(kind, fp):
    """Flax keeps one Dense per gate and a single bias per gate; map to rnnjax's layout."""
    cat = lambda names, what: jnp.concatenate([fp[n][what] for n in names], axis=-1)
    zeros_like = lambda a: jnp.zeros_like(a)
    if kind == "lstm":
        hidden = ["hi", "hf", "hg", "ho"]
        w_ih = cat(["ii", "if", "ig", "io"], "kernel")
        b_hh = cat(hidden, "bias")
        return {"w_ih": w_ih, "w_hh": cat(hidden, "kernel"), "b_ih": zeros_like(b_hh), "b_hh": b_hh}
    if kind == "gru":
        b_ih = cat(["ir", "iz", "in"], "bias")
        b_hh = jnp.concatenate(
            [jnp.zeros_like(fp["ir"]["bias"]), jnp.zeros_like(fp["iz"]["bias"]), fp["hn"]["bias"]]
        )
        return {
            "w_ih": cat(["ir", "iz", "in"], "kernel"),
            "w_hh": cat(["hr", "hz", "hn"], "kernel"),
            "b_ih": b_ih,
            "b_hh": b_hh,
        }
    return {
        "w_ih": fp["i"]["kernel"],
        "w_hh": fp["h"]["kernel"],
        "b_ih": fp["i"]["bias"],
        "b_hh": jnp.zeros_like(fp["i"]["bias"]),
    }


@pytest.mark.parametrize("kind", ["elman", "lstm", "gru"])
def test_sequence_matches_flax_with_lengths(kind):
    """rnnjax.reference_scan under vmap vs flax.linen nn.RNN with seq_lengths, weights copied across."""
    H, I, T, B = 6, 3, 9, 3
    flax_cell = {"elman": nn.SimpleCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[kind](features=H)
    cell = make_cell(kind, H)
    rnn = nn.RNN(flax_cell, return_carry=True)
    xs = jax.random.normal(jax.random.key(0), (B, T, I))
    lengths = jnp.array([9, 4, 1])
    variables = rnn.init(jax.random.key(1), xs)
    # every flax parameter random, biases included
    leaves, treedef = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    variables = jax.tree.unflatten(
        treedef, [0.5 * jax.random.normal(k, a.shape) for k, a in zip(keys, leaves)]
    )
    flax_carry, flax_ys = rnn.apply(variables, xs, seq_lengths=lengths)

    params = _flax_to_rnnjax(kind, variables["params"]["cell"])
    carry, ys = jax.vmap(lambda x, n: rnnjax.reference_scan(cell, params, x, length=n))(xs, lengths)
    valid = (jnp.arange(T)[None, :] < lengths[:, None])[..., None]
    np.testing.assert_allclose(jnp.where(valid, ys, 0), jnp.where(valid, flax_ys, 0), atol=1e-5)
    if kind == "lstm":
        flax_carry = (flax_carry[1], flax_carry[0])  # flax keeps (c, h); rnnjax (h, c) like PyTorch
    for a, b in zip(jax.tree.leaves(carry), jax.tree.leaves(flax_carry)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_low_precision_params_and_inputs():
    cell = rnnjax.lstm(8, param_dtype=jnp.bfloat16)
    params = cell.init(jax.random.key(0), 4)
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves(params))
    xs = jax.random.normal(jax.random.key(1), (6, 4)).astype(jnp.bfloat16)
    carry, ys = jax.jit(lambda p, x: rnnjax.reference_scan(cell, p, x, length=4))(params, xs)
    assert ys.dtype == jnp.bfloat16 and carry[0].dtype == jnp.bfloat16
    # bfloat16 result close to the float32 computation with the same (rounded) weights
    p32 = jax.tree.map(lambda a: a.astype(jnp.float32), params)
    _, ys32 = rnnjax.reference_scan(rnnjax.lstm(8), p32, xs.astype(jnp.float32), length=4)
    np.testing.assert_allclose(ys.astype(jnp.float32), ys32, atol=3e-2)
    # float16 inputs with float32 params compute in float32 and keep a float32 carry
    _, ys16 = rnnjax.reference_scan(
        rnnjax.gru(8), rnnjax.gru(8).init(jax.random.key(2), 4), xs.astype(jnp.float16)
    )
    assert ys16.dtype == jnp.float32
