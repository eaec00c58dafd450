"""A layer computes exactly what the cell says: edited cells through every path.

A researcher copies a cell and changes one line, either of its step (any function) or of
its element-wise update (a GatedStep, which keeps the fast path). Every layer, model,
Flax module and ``fit`` must then compute the edited function. The reference is
``rnnjax.reference_scan`` over ``cell.step``, step by step: all paths under ``paths.reference_only``
for an edited update, and a composition of ``rnnjax.reference_scan`` written here for an edited step
(whose every path already runs the reference, so only an independent composition can
catch a layer that runs something else).

An edit is a draw of four numbers and a permutation, passed to the jitted function as
arrays, so that each path compiles once and hypothesis explores edits at run time:
``alpha`` scales and ``beta`` shifts the pre-activations (or the inputs), ``perm``
permutes the gate blocks (a swapped gate), and ``gamma`` mixes in a new nonlinearity,
``(1 - gamma) * c + gamma * sin(c)`` of the new carry.
"""

import functools

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
from budget import examples
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import I, fit_one_step, paths, reference_only

import rnnjax
from rnnjax import readouts, training

B, T, H = 3, 6, 4

CELLS = {
    "elman-tanh": lambda: rnnjax.elman(H),
    "elman-relu": lambda: rnnjax.elman(H, "relu"),
    "lstm": lambda: rnnjax.lstm(H),
    "gru": lambda: rnnjax.gru(H),
    "gru-cho": lambda: rnnjax.gru(H, reset_after=False),
}
GATES = {"elman-tanh": 1, "elman-relu": 1, "lstm": 4, "gru": 3, "gru-cho": 3}


def _mix(e, tree):
    return jax.tree.map(lambda a: (1 - e["gamma"]) * a + e["gamma"] * jnp.sin(a), tree)


def edit_step(cell, e):
    """Returns ``cell`` with its step wrapped in the edit ``e`` (no longer a GatedStep)."""
    step = cell.step

    def edited(params, carry, x):
        params = {k: jnp.take(v, e["perm"], axis=-1) for k, v in params.items()}
        new, y = step(params, carry, e["alpha"] * x + e["beta"])
        return _mix(e, new), _mix(e, y)

    return cell._replace(step=edited)


def edit_update(cell, e):
    """Returns ``cell`` with its element-wise update edited by ``e``: still a GatedStep."""
    gated = cell.step
    update = gated.update
    pre = lambda a: jnp.take(e["alpha"] * a + e["beta"], e["perm"], axis=-1)

    if gated.additive:

        def edited(carry, z):
            return _mix(e, update(carry, pre(z)))
    else:

        def edited(carry, gi, gh):
            return _mix(e, update(carry, pre(gi), gh))

    return cell._replace(step=gated._replace(update=edited))


def edits(num_gates):
    """A hypothesis strategy of edits for a cell with ``num_gates`` gate blocks."""
    size = num_gates * H
    perms = st.sampled_from(["identity", "swap", "reverse", "random"]).map(
        lambda kind: {
            "identity": np.arange(size),
            "swap": np.roll(np.arange(size), H if num_gates > 1 else 1),  # gates 0, 1 exchanged
            "reverse": np.arange(size)[::-1].copy(),
            "random": np.random.default_rng(size).permutation(size),
        }[kind]
    )
    return st.fixed_dictionaries(
        {
            "alpha": st.floats(0.5, 2.0),
            "beta": st.floats(-0.5, 0.5),
            "gamma": st.floats(0.0, 1.0),
            "perm": perms,
        }
    ).map(
        lambda e: {
            k: jnp.asarray(v, jnp.int32 if k == "perm" else jnp.float32) for k, v in e.items()
        }
    )


IDENTITY = {"alpha": jnp.float32(1), "beta": jnp.float32(0), "gamma": jnp.float32(0)}


def random_inputs(seed, lengths):
    return (jax.random.normal(jax.random.key(seed), (B, T, I)), jnp.asarray(lengths, jnp.int32))


def _random_params(init):
    params = init(jax.random.key(3))
    return jax.tree.map(
        lambda a: a + 0.1 * jax.random.normal(jax.random.key(4), a.shape), params
    )  # nonzero biases


def assert_close(got, want, tol=1e-5):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_the_issue_example_runs_the_edited_equation():
    cell = rnnjax.lstm(8)

    def my_step(params, carry, x):
        (h, c), _y = cell.step(params, carry, x)
        return (2.0 * h, c), 2.0 * h

    edited = cell._replace(step=my_step)
    params = edited.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    want = rnnjax.reference_scan(edited, params, xs)[1]
    np.testing.assert_allclose(rnnjax.recurrent(edited).apply(params, xs)[1], want, atol=1e-6)
    assert rnnjax.scan_path(edited) == "reference" and rnnjax.scan_path(cell) == "fused"
    # and the stock cell is not what ran: the edit changes the result
    assert np.abs(rnnjax.recurrent(cell).apply(params, xs)[1] - want).max() > 0.1


# ------------------------------------------------------------ an edited update: the fast path

# A reverse layer with remat, and a stack of a forward and a bidirectional layer (both
# directions as one vmapped scan): every way a layer runs a cell.
LAYER_PATHS = ("recurrent-reverse-remat", "stack")
MODEL_PATHS = ("many_to_one", "many_to_many", "one_to_many", "encoder_decoder", "linen", "nnx")


@functools.cache
def _update_paths(name, names, reference):
    """Returns ``run(e, xs, lengths) -> {path: (loss, grads)}``, jitted once."""
    base = CELLS[name]()
    params = {k: _random_params(paths(base)[k][0]) for k in names}

    def all_paths(e, xs, lengths):
        chosen = paths(edit_update(base, e))
        return {k: jax.value_and_grad(chosen[k][1])(params[k], xs, lengths) for k in names}

    jitted = jax.jit(all_paths)

    def run(e, xs, lengths):
        if reference:
            with reference_only():
                return jitted(e, xs, lengths)
        return jitted(e, xs, lengths)

    return run


def _check_update_edit(name, names, e, xs, lengths):
    edited = edit_update(CELLS[name](), e)
    assert rnnjax.scan_path(edited) == "fused"
    assert_close(
        _update_paths(name, names, False)(e, xs, lengths),
        _update_paths(name, names, True)(e, xs, lengths),
    )


@settings(max_examples=examples(12))
@given(
    # one cell per form of update: Elman (additive, one gate), LSTM (additive, with a
    # hand-written derivative), GRU (gi and gh apart)
    name_and_edit=st.sampled_from(["elman-tanh", "lstm", "gru"]).flatmap(
        lambda name: st.tuples(st.just(name), edits(GATES[name]))
    ),
    lengths=st.lists(st.integers(0, T), min_size=B, max_size=B),
    seed=st.integers(0, 2**16),
)
def test_an_edited_update_takes_the_fast_path_and_equals_the_reference(
    name_and_edit, lengths, seed
):
    _check_update_edit(
        *name_and_edit[:1], LAYER_PATHS, name_and_edit[1], *random_inputs(seed, lengths)
    )


@settings(max_examples=examples(6))
@given(
    e=edits(4),
    lengths=st.lists(st.integers(0, T), min_size=B, max_size=B),
    seed=st.integers(0, 2**16),
)
def test_an_edited_update_in_every_model_kind_and_flax_module(e, lengths, seed):
    # The LSTM: its update has a hand-written derivative, which an edited update must not use.
    _check_update_edit("lstm", MODEL_PATHS, e, *random_inputs(seed, lengths))


def test_an_edited_update_in_fit():
    e = {**IDENTITY, "gamma": jnp.float32(0.5), "perm": jnp.roll(jnp.arange(4 * H), H)}
    edited = edit_update(CELLS["lstm"](), e)
    xs, lengths = random_inputs(7, [T, 2, 0])
    got = fit_one_step(edited, jax.random.key(5), xs, lengths)
    with reference_only():
        want = fit_one_step(edited, jax.random.key(5), xs, lengths)
    assert_close(got, want)


# ------------------------------------------------------------ an edited step: runs as written


def _by_hand(cell, p, x, n):
    """The stack(recurrent, bidirectional) layer written with rnnjax.reference_scan."""
    c0, y0 = rnnjax.reference_scan(cell, p[0], x, length=n)
    c1, y1 = rnnjax.reference_scan(cell, p[1]["forward"], y0, length=n)
    c2, y2 = rnnjax.reference_scan(cell, p[1]["backward"], y0, length=n, reverse=True)
    return [c0, (c1, c2)], jnp.concatenate([y1, y2], -1)


@functools.cache
def _step_paths(name):
    """Returns ``run(e, xs, lengths) -> (layer's (loss, grads), by hand's)``, jitted once."""
    base = CELLS[name]()
    layer = rnnjax.stack(rnnjax.recurrent(base), rnnjax.bidirectional(base))
    params = _random_params(lambda k: layer.init(k, I))

    def both(e, xs, lengths):
        cell = edit_step(base, e)
        edited = rnnjax.stack(rnnjax.recurrent(cell), rnnjax.bidirectional(cell))

        def loss(apply):
            return lambda p: jnp.sum(
                jax.vmap(
                    lambda x, n: jnp.sum(jnp.sin(jax.flatten_util.ravel_pytree(apply(p, x, n))[0]))
                )(xs, lengths)
            )

        return (
            jax.value_and_grad(loss(lambda p, x, n: edited.apply(p, x, length=n)))(params),
            jax.value_and_grad(loss(functools.partial(_by_hand, cell)))(params),
        )

    return jax.jit(both)


@settings(max_examples=examples(12))
@given(
    name_and_edit=st.sampled_from(["elman-tanh", "lstm", "gru", "gru-cho"]).flatmap(
        lambda name: st.tuples(st.just(name), edits(GATES[name]))
    ),
    lengths=st.lists(st.integers(0, T), min_size=B, max_size=B),
    seed=st.integers(0, 2**16),
)
def test_an_edited_step_runs_as_written_in_every_layer(name_and_edit, lengths, seed):
    name, e = name_and_edit
    assert rnnjax.scan_path(edit_step(CELLS[name](), e)) == "reference"
    assert_close(*_step_paths(name)(e, *random_inputs(seed, lengths)))


def test_an_edited_step_in_a_model_and_fit():
    e = {**IDENTITY, "gamma": jnp.float32(0.7), "perm": jnp.arange(3 * H)[::-1]}
    edited = edit_step(CELLS["gru-cho"](), e)
    model = rnnjax.many_to_one(rnnjax.recurrent(edited), readouts.linear(2), pool="last")
    params = _random_params(lambda k: model.init(k, I))
    xs, lengths = random_inputs(8, [T, 3, 1])
    labels = jnp.array([0, 1, 1])

    def by_hand(p, x, n):  # the last valid output of the edited scan, read out
        ys = rnnjax.reference_scan(edited, p["rnn"], x, length=n)[1]
        return ys[n - 1] @ p["readout"]["w"] + p["readout"]["b"]

    def loss(apply):
        return lambda p: rnnjax.losses.masked_cross_entropy(
            jax.vmap(lambda x, n: apply(p, x, n))(xs, lengths), labels
        )

    value, grads = jax.value_and_grad(loss(by_hand))(params)
    assert_close(
        jax.value_and_grad(loss(lambda p, x, n: model.apply(p, x, length=n)))(params),
        (value, grads),
    )
    # one fit step of SGD is params - lr * grad of the hand-written loss
    optimizer = optax.sgd(0.5)
    model_loss = loss(lambda q, x, n: model.apply(q, x, length=n))
    step = training.make_train_step(lambda p, batch, key: (model_loss(p), {}), optimizer)
    state = training.init_train_state(jax.random.key(0), params, optimizer)
    result = training.fit(step, state, lambda key, s: None, 1, progress=False)
    assert_close(result.state.params, jax.tree.map(lambda p, g: p - 0.5 * g, params, grads))


def test_bidirectional_with_two_different_steps_runs_each():
    # An edited forward cell and a stock backward cell must not be stacked as one scan.
    cell = rnnjax.gru(H)
    edited = edit_update(cell, {**IDENTITY, "alpha": jnp.float32(1.5), "perm": jnp.arange(3 * H)})
    layer = rnnjax.bidirectional(edited, cell)
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    _, ys = layer.apply(params, xs, length=4)
    _, ys_f = rnnjax.reference_scan(edited, params["forward"], xs, length=4)
    _, ys_b = rnnjax.reference_scan(cell, params["backward"], xs, length=4, reverse=True)
    np.testing.assert_allclose(ys, jnp.concatenate([ys_f, ys_b], -1), atol=1e-6)
