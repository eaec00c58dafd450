"""A layer computes exactly what the cell says: edited cells through every path.

A researcher copies a cell and changes one line, either of its step (any function) or of
its element-wise update (a GatedStep, which keeps the fast path). Every layer, model,
Flax module and ``fit`` must then compute the edited function: the reference is
``rnnjax.scan`` over ``cell.step``, step by step (``paths.reference_only``).
"""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnjax
from rnnjax import fused, models, readouts
from budget import examples
from paths import I, fit_one_step, paths, reference_only

B, T, H = 3, 6, 4

CELLS = {
    "elman-tanh": lambda: rnnjax.elman(H),
    "elman-relu": lambda: rnnjax.elman(H, "relu"),
    "lstm": lambda: rnnjax.lstm(H),
    "gru": lambda: rnnjax.gru(H),
    "gru-cho": lambda: rnnjax.gru(H, reset_after=False),
}
EDITS = ("scale", "shift", "swap", "sin")


def _apply_edit(edit, tree):
    return jax.tree.map({"scale": lambda a: 1.5 * a, "shift": lambda a: a + 0.1,
                         "sin": jnp.sin, "swap": lambda a: a}[edit], tree)


def edit_step(cell, edit):
    """Returns ``cell`` with its step wrapped in ``edit`` (no longer a GatedStep)."""
    step = cell.step

    def edited(params, carry, x):
        if edit == "swap":  # the gate (or unit) blocks permuted: a different equation
            params = {k: jnp.roll(v, 1, axis=-1) for k, v in params.items()}
        new, y = step(params, carry, x)
        return _apply_edit(edit, new), _apply_edit(edit, y)

    return cell._replace(step=edited)


def edit_update(cell, edit):
    """Returns ``cell`` with an edited element-wise update: still a GatedStep."""
    gated = cell.step
    update = gated.update

    def pre(a):
        shift = H if a.shape[-1] > H else 1  # the next gate block; for Elman the next unit
        return {"scale": 1.5 * a, "shift": a + 0.1, "swap": jnp.roll(a, shift, axis=-1),
                "sin": a}[edit]

    if gated.additive:
        def edited(carry, z):
            return _apply_edit(edit if edit == "sin" else "swap", update(carry, pre(z)))
    else:
        def edited(carry, gi, gh):
            return _apply_edit(edit if edit == "sin" else "swap", update(carry, pre(gi), gh))

    return cell._replace(step=gated._replace(update=edited))


def random_inputs(seed, lengths):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.random.normal(k1, (B, T, I)), jnp.asarray(lengths, jnp.int32)


def _random_params(init):
    params = init(jax.random.key(3))
    return jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.key(4), a.shape),
                        params)  # nonzero biases


def values_and_gradients(chosen, names, xs, lengths):
    """Returns ``{name: (loss, grads)}`` of every chosen path, as ONE jitted program."""
    params = {name: _random_params(chosen[name][0]) for name in names}

    def all_paths(params, xs, lengths):
        return {name: jax.value_and_grad(chosen[name][1])(params[name], xs, lengths)
                for name in names}

    return jax.jit(all_paths)(params, xs, lengths)


def assert_close(got, want, tol=1e-5):
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_the_issue_example_runs_the_edited_equation():
    cell = rnnjax.lstm(8)

    def my_step(params, carry, x):
        (h, c), y = cell.step(params, carry, x)
        return (2.0 * h, c), 2.0 * h

    edited = cell._replace(step=my_step)
    params = edited.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    want = rnnjax.scan(edited, params, xs)[1]
    np.testing.assert_allclose(rnnjax.recurrent(edited).apply(params, xs)[1], want, atol=1e-6)
    assert fused.path(edited) == "reference" and fused.path(cell) == "fused"
    # and the stock cell is not what ran: the edit changes the result
    assert np.abs(rnnjax.recurrent(cell).apply(params, xs)[1] - want).max() > 0.1


# A stack of a forward and a bidirectional layer (both directions as one vmapped scan), and
# a reverse layer with remat: every way a layer runs a cell. (rnnjax.scan is the reference.)
LAYER_PATHS = ("recurrent-reverse-remat", "stack")
GATED = ("elman-tanh", "elman-relu", "lstm", "gru")


@settings(max_examples=examples(5))
@given(
    name=st.sampled_from(GATED),
    edit=st.sampled_from(EDITS),
    lengths=st.lists(st.integers(0, T), min_size=B, max_size=B),
    seed=st.integers(0, 2**16),
)
def test_an_edited_update_takes_the_fast_path_and_equals_the_reference(name, edit, lengths, seed):
    edited = edit_update(CELLS[name](), edit)
    assert fused.path(edited) == "fused"
    xs, lengths = random_inputs(seed, lengths)
    chosen = paths(edited, generators=False, flax_modules=False)
    got = values_and_gradients(chosen, LAYER_PATHS, xs, lengths)
    with reference_only():
        want = values_and_gradients(chosen, LAYER_PATHS, xs, lengths)
    assert_close(got, want)


@settings(max_examples=examples(5))
@given(
    name=st.sampled_from(sorted(CELLS)),
    edit=st.sampled_from(EDITS),
    lengths=st.lists(st.integers(0, T), min_size=B, max_size=B),
    seed=st.integers(0, 2**16),
)
def test_an_edited_step_runs_as_written_in_every_layer(name, edit, lengths, seed):
    # The reference is a composition of rnnjax.scan written here: a stack of a forward
    # layer and a bidirectional one, each direction its own scan of the edited step.
    edited = edit_step(CELLS[name](), edit)
    assert fused.path(edited) == "reference"
    xs, lengths = random_inputs(seed, lengths)
    layer = rnnjax.stack(rnnjax.recurrent(edited), rnnjax.bidirectional(edited))

    def by_hand(p, x, n):
        c0, y0 = rnnjax.scan(edited, p[0], x, length=n)
        c1, y1 = rnnjax.scan(edited, p[1]["forward"], y0, length=n)
        c2, y2 = rnnjax.scan(edited, p[1]["backward"], y0, length=n, reverse=True)
        return [c0, (c1, c2)], jnp.concatenate([y1, y2], -1)

    def loss(apply):
        return lambda p, xs, lengths: jnp.sum(jax.vmap(lambda x, n: jnp.sum(jnp.sin(
            jax.flatten_util.ravel_pytree(apply(p, x, n))[0])))(xs, lengths))

    params = _random_params(lambda k: layer.init(k, I))
    run = lambda apply: jax.jit(jax.value_and_grad(loss(apply)))(params, xs, lengths)
    assert_close(run(lambda p, x, n: layer.apply(p, x, length=n)), run(by_hand))


MODEL_PATHS = ("many_to_one", "many_to_many", "one_to_many", "encoder_decoder", "linen", "nnx")


def test_an_edited_update_in_models_flax_modules_and_fit():
    # The LSTM: its update has a hand-written derivative, which an edited update must not use.
    edited = edit_update(CELLS["lstm"](), "swap")
    xs, lengths = random_inputs(7, [T, 2, 0])
    chosen = paths(edited)
    got = values_and_gradients(chosen, MODEL_PATHS, xs, lengths)
    with reference_only():
        want = values_and_gradients(chosen, MODEL_PATHS, xs, lengths)
    assert_close(got, want)
    got = fit_one_step(edited, jax.random.key(5), xs, lengths)
    with reference_only():
        want = fit_one_step(edited, jax.random.key(5), xs, lengths)
    assert_close(got, want)


def test_an_edited_step_in_a_model_and_fit():
    edited = edit_step(CELLS["gru"](), "sin")
    model = models.many_to_one(rnnjax.recurrent(edited), readouts.linear(2), pool="last")
    params = _random_params(lambda k: model.init(k, I))
    xs, lengths = random_inputs(8, [T, 3, 1])

    def by_hand(p, x, n):  # the last valid output of the edited scan, read out
        ys = rnnjax.scan(edited, p["rnn"], x, length=n)[1]
        return ys[n - 1] @ p["readout"]["w"] + p["readout"]["b"]

    loss = lambda apply: lambda p: jnp.sum(jnp.sin(jax.vmap(
        lambda x, n: apply(p, x, n))(xs, lengths)))
    assert_close(jax.value_and_grad(loss(lambda p, x, n: model.apply(p, x, length=n)))(params),
                 jax.value_and_grad(loss(by_hand))(params))


def test_bidirectional_with_two_different_steps_runs_each():
    # An edited forward cell and a stock backward cell must not be stacked as one scan.
    cell = rnnjax.gru(H)
    edited = edit_update(cell, "scale")
    layer = rnnjax.bidirectional(edited, cell)
    params = layer.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    _, ys = layer.apply(params, xs, length=4)
    _, ys_f = rnnjax.scan(edited, params["forward"], xs, length=4)
    _, ys_b = rnnjax.scan(cell, params["backward"], xs, length=4, reverse=True)
    np.testing.assert_allclose(ys, jnp.concatenate([ys_f, ys_b], -1), atol=1e-6)
