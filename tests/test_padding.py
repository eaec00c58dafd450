"""Padding never leaks, and invalid lengths and tokens have a contract under jit and vmap.

Padding is whatever a data pipeline leaves (NaN for "missing", inf, huge values): the
values AND gradients of every path must equal those with zero padding. Lengths and token
ids outside their range are clipped / embedded to zeros by default (finite results), and
raise a named InvalidValueError under ``rnnjax.checked``.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import I, paths, reference_only

import rnnjax
from rnnjax import padding, readouts

B, T, H = 3, 6, 4
CELLS = {
    "elman": lambda: rnnjax.elman(H),
    "lstm": lambda: rnnjax.lstm(H),
    "gru": lambda: rnnjax.gru(H),
    "gru-cho": lambda: rnnjax.gru(H, reset_after=False),
    "mgu": lambda: rnnjax.gated(
        H,
        2,
        lambda h, gi, gh: (
            jnp.tanh(gi[..., H:] + gh[..., H:]) * jax.nn.sigmoid(gi[..., :H] + gh[..., :H])
        ),
    ),
}
PATHS = (
    "scan",
    "recurrent",
    "recurrent-reverse-remat",
    "bidirectional",
    "stack",
    "many_to_one",
    "many_to_many",
    "encoder_decoder",
    "linen",
    "nnx",
)
PADS = (np.nan, np.inf, -np.inf, 1e30)
# (cell, loop): the LSTM on both loops (the fast one with its hand-written derivative), a
# user's update on the fast path with JAX's derivative (MGU), and the Cho GRU, which only has
# the reference. The cleaning of padded inputs happens before either loop, in
# rnnjax.padding, for every cell alike.
RUNS = (("lstm", "fast"), ("lstm", "reference"), ("mgu", "fast"), ("gru-cho", "reference"))
# The models and Flax modules add no loop of their own (they call the layers), so the
# reference runs check them on one model kind and the fast runs on all.
REFERENCE_PATHS = (
    "scan",
    "recurrent",
    "recurrent-reverse-remat",
    "bidirectional",
    "stack",
    "encoder_decoder",
)


def _pad(xs, lengths, value):
    valid = jnp.arange(T)[None, :, None] < lengths[:, None, None]
    return jnp.where(valid, xs, value)


@functools.cache
def _all_paths(name, loop):
    """Returns ``run(xs, lengths) -> {path: (loss, (grads, dxs))}``, jitted once."""
    chosen = paths(CELLS[name]())
    names = REFERENCE_PATHS if loop == "reference" else PATHS
    params = {k: chosen[k][0](jax.random.key(3)) for k in names}
    jitted = jax.jit(
        lambda xs, lengths: {
            k: jax.value_and_grad(chosen[k][1], argnums=(0, 1))(params[k], xs, lengths)
            for k in names
        }
    )

    def run(xs, lengths):
        with reference_only() if loop == "reference" else contextlib.nullcontext():
            return jitted(xs, lengths)

    return run


@settings(max_examples=examples(12))
@given(
    run=st.sampled_from(RUNS),
    pad=st.sampled_from(PADS),
    lengths=st.lists(st.integers(0, T - 1), min_size=B, max_size=B),
    seed=st.integers(0, 2**16),
)
def test_dirty_padding_gives_the_values_and_gradients_of_zero_padding(run, pad, lengths, seed):
    # Every path (jit of vmap of grad) in one program per cell and loop.
    xs = jax.random.normal(jax.random.key(seed), (B, T, I))
    lengths = jnp.asarray(lengths, jnp.int32)
    clean = _all_paths(*run)(_pad(xs, lengths, 0.0), lengths)
    dirty = _all_paths(*run)(_pad(xs, lengths, pad), lengths)
    for a, b in zip(jax.tree.leaves(dirty), jax.tree.leaves(clean), strict=True):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_masked_losses_ignore_nan_predictions_and_targets():
    preds = jnp.array([[1.0, 2.0], [jnp.nan, jnp.inf]])
    targets = jnp.array([[0.5, 1.0], [jnp.nan, 3.0]])
    mask = jnp.array([True, False])
    value, grad = jax.value_and_grad(rnnjax.losses.masked_mse)(preds, targets, mask)
    np.testing.assert_allclose(value, (0.25 + 1.0) / 2)  # mean over features of row 0
    np.testing.assert_array_equal(grad[1], 0.0)


# ------------------------------------------------------------------------- lengths


LAYERS = {
    "scan": lambda cell: lambda p, x, n: rnnjax.scan(cell, p, x, length=n)[1],
    "recurrent": lambda cell: lambda p, x, n: rnnjax.recurrent(cell).apply(p, x, length=n)[1],
    "reverse": lambda cell: (
        lambda p, x, n: rnnjax.recurrent(cell, reverse=True).apply(p, x, length=n)[1]
    ),
}


def _bidirectional(cell):
    layer = rnnjax.bidirectional(cell)
    return layer, (lambda p, x, n: layer.apply(p, x, length=n)[1])


@pytest.mark.parametrize("name", ["scan", "recurrent", "reverse", "bidirectional", "many_to_one"])
def test_lengths_out_of_range_under_jit_vmap_are_clipped_and_finite(name):
    cell = rnnjax.lstm(H)
    if name == "bidirectional":
        layer, fn = _bidirectional(cell)
        params = layer.init(jax.random.key(0), I)
    elif name == "many_to_one":
        model = rnnjax.many_to_one(rnnjax.bidirectional(cell), readouts.linear(2), pool="mean")
        params, fn = model.init(jax.random.key(0), I), lambda p, x, n: model.apply(p, x, length=n)
    else:
        params, fn = cell.init(jax.random.key(0), I), LAYERS[name](cell)
    xs = jax.random.normal(jax.random.key(1), (4, T, I))
    run = jax.jit(jax.vmap(fn, in_axes=(None, 0, 0)))
    got = run(params, xs, jnp.array([300, -5, 3, T]))
    want = run(params, xs, jnp.array([T, 0, 3, T]))  # the documented meaning: clipped
    assert np.all(np.isfinite(got))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    grads = jax.grad(lambda p: jnp.sum(run(p, xs, jnp.array([300, -5, 3, T]))))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_checked_names_the_bad_length_and_its_batch_element():
    cell = rnnjax.gru(H)
    layer, fn = _bidirectional(cell)
    params = layer.init(jax.random.key(0), I)
    xs = jnp.zeros((4, T, I))
    run = jax.jit(jax.vmap(fn, in_axes=(None, 0, 0)))
    run(params, xs, jnp.array([1, 2, 3, 4]))  # traced and cached without checks first
    checked = rnnjax.checked(run)
    with pytest.raises(
        rnnjax.InvalidValueError, match=r"length must be in \[0, T=6\], got 300 \(batch element 2\)"
    ):
        checked(params, xs, jnp.array([1, 2, 300, 4]))
    with pytest.raises(rnnjax.InvalidValueError, match=r"got -1 \(batch element 0\)"):
        rnnjax.checked(jax.grad(lambda p, n: jnp.sum(run(p, xs, n))))(
            params, jnp.array([-1, 2, 3, 4])
        )
    ok = checked(params, xs, jnp.array([1, 2, 3, 4]))
    np.testing.assert_array_equal(ok, run(params, xs, jnp.array([1, 2, 3, 4])))
    # nested vmaps: the flat index over both batch axes
    nested = rnnjax.checked(jax.vmap(jax.vmap(fn, in_axes=(None, 0, 0)), in_axes=(None, 0, 0)))
    with pytest.raises(rnnjax.InvalidValueError, match=r"got 7 \(batch element 5\)"):
        nested(params, jnp.zeros((2, 3, T, I)), jnp.array([[1, 2, 3], [4, 5, 7]]))


def test_concrete_lengths_out_of_range_raise_at_once():
    cell = rnnjax.lstm(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(ValueError, match=r"length must be in \[0, T=6\], got 7"):
        rnnjax.recurrent(cell).apply(params, jnp.zeros((T, I)), length=7)


def test_no_time_steps_and_integer_inputs_are_errors():
    cell = rnnjax.lstm(H)
    params = cell.init(jax.random.key(0), I)
    with pytest.raises(
        ValueError, match=r"xs must have at least one time step \(T >= 1\), got shape \(0, 3\)"
    ):
        rnnjax.scan(cell, params, jnp.zeros((0, I)))
    with pytest.raises(
        TypeError, match=r"xs must be floating point features.*int32.*readouts.embedding"
    ):
        jax.jit(lambda x: rnnjax.recurrent(cell).apply(params, x))(jnp.zeros((T, I), jnp.int32))
    # tokens (T,) that skipped their embedding: the dtype is named before the shape
    with pytest.raises(
        TypeError, match=r"got int32 of shape \(6,\).*readouts.embedding.*embedding="
    ):
        rnnjax.recurrent(cell).apply(params, jnp.zeros((T,), jnp.int32))


# ------------------------------------------------------------------------- tokens


def test_out_of_range_tokens_embed_to_zeros_and_raise_when_checked():
    table = readouts.embedding(5, 3)
    params = table.init(jax.random.key(0))
    with pytest.raises(
        ValueError, match=r"tokens must be in \[0, vocab_size=5\), got 7 at flat position 1"
    ):
        table.apply(params, jnp.array([1, 7, 2]))
    run = jax.jit(jax.vmap(lambda t: table.apply(params, t)))
    got = run(jnp.array([[1, 7], [-1, 2]]))
    np.testing.assert_array_equal(got[0, 1], 0.0)
    np.testing.assert_array_equal(got[1, 0], 0.0)
    np.testing.assert_array_equal(got[0, 0], params["table"][1])
    with pytest.raises(
        rnnjax.InvalidValueError,
        match=r"tokens must be in \[0, vocab_size=5\), got -1 at position 0 .*\(batch element 1\)",
    ):
        rnnjax.checked(run)(jnp.array([[1, 2], [-1, 2]]))


def test_a_seq2seq_model_with_bad_source_tokens_gives_finite_logits():
    model = rnnjax.encoder_decoder(
        rnnjax.recurrent(rnnjax.gru(H)),
        rnnjax.gru(H),
        6,
        start_token=1,
        end_token=2,
        source_vocab_size=5,
    )
    params = model.init(jax.random.key(0))
    apply = jax.jit(jax.vmap(lambda s, t: model.apply(params, s, t)))
    logits = apply(jnp.array([[1, 9, 2], [0, 1, 2]]), jnp.array([[3, 2], [4, 2]]))
    assert np.all(np.isfinite(logits))
    with pytest.raises(rnnjax.InvalidValueError, match="got 9"):
        rnnjax.checked(apply)(jnp.array([[1, 9, 2], [0, 1, 2]]), jnp.array([[3, 2], [4, 2]]))


# ------------------------------------------------------------------------- the helpers


@given(length=st.integers(-3, T + 3), seed=st.integers(0, 100))
def test_reverse_valid_reverses_the_prefix_and_is_an_involution(length, seed):
    xs = jax.random.normal(jax.random.key(seed), (T, 2))
    got = padding.reverse_valid(xs, jnp.int32(length))
    n = min(max(length, 0), T)
    want = np.concatenate([np.asarray(xs)[:n][::-1], np.asarray(xs)[n:]])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(padding.reverse_valid(got, jnp.int32(length)), xs)
