"""Gradient flow through whole models, against probes placed by hand.

The reference writes each model out here: every loop is ``rnnjax.scan`` over a cell whose
step reads its probe ``p_t`` as extra input features and adds it to the state it hands on
(a decoder is a Python loop over ``cell.step``), the probes are explicit arguments, and
``jax.grad`` with respect to them is dL/d(state_t) by definition. The library's
``diagnostics.gradient_flow`` places its probes itself, inside the real model; the two
must agree per layer and per direction, with per-example lengths under ``vmap``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rnnjax
from rnnjax import diagnostics as dg
from rnnjax import readouts
from rnnjax._src import diagnostics as diagnostics_impl
from rnnjax._src import spectra

B, T, I, H, VOCAB = 2, 5, 2, 3, 6
LENGTHS = jnp.array([T, 3])
TARGETS = jnp.array([3, 4, 2])


def state_size(cell):
    return ravel_pytree(cell.initial_carry(cell.init(jax.random.key(0), I)))[0].size


def probed(cell):
    """``cell`` reading ``[x_t, p_t]``: ``p_t`` is added to the (flattened) new carry; the
    output is the probed ``h`` (the first carry leaf, as for every built-in cell)."""
    n = state_size(cell)

    def step(params, carry, xp):
        new, _ = cell.step(params, carry, xp[:-n])
        flat, unravel = ravel_pytree(new)
        new = unravel(flat + xp[-n:])
        return new, jax.tree.leaves(new)[0]

    return cell._replace(step=step, input_size=None)  # it reads [x_t, p_t]


def flip_valid(a, n):
    """``a`` with its first ``n`` rows in reverse order (the rest in place)."""
    t = jnp.arange(a.shape[0])
    return a[jnp.where(t < n, n - 1 - t, t)]


def direction(cell, params, xs, probes, n, reverse):
    """Returns ``(final carry, ys)`` of one probed direction; rows in input order."""
    if reverse:
        xs, probes = flip_valid(xs, n), flip_valid(probes, n)
    final, ys = rnnjax.scan(probed(cell), params, jnp.concatenate([xs, probes], -1), length=n)
    return final, (flip_valid(ys, n) if reverse else ys)


def bidirectional(cell, params, xs, probes, n, label):
    final_f, ys_f = direction(cell, params["forward"], xs, probes[f"{label}/forward"], n, False)
    final_b, ys_b = direction(cell, params["backward"], xs, probes[f"{label}/backward"], n, True)
    return (final_f, final_b), jnp.concatenate([ys_f, ys_b], -1)


def linear(p, x):
    return x @ p["w"] + p["b"]


def decoder_logits(cell, p, context, probes):
    """Teacher-forced logits of the token decoder, a Python loop over ``cell.step``."""
    previous = jnp.concatenate([jnp.array([1]), TARGETS[:-1]])  # start token 1
    leaves, treedef = jax.tree.flatten(cell.initial_carry(p["cell"]))
    carry = jax.tree.unflatten(
        treedef,
        [jnp.tanh(linear(b, context)).reshape(a.shape) for b, a in zip(p["bridge"], leaves)],
    )
    logits = []
    for t in range(len(TARGETS)):
        x = jnp.concatenate([p["embed"]["table"][previous[t]], context])
        carry, _ = probed(cell).step(p["cell"], carry, jnp.concatenate([x, probes[t]]))
        logits.append(linear(p["readout"], jax.tree.leaves(carry)[0]))
    return jnp.stack(logits)


LSTM, GRU = rnnjax.lstm(H), rnnjax.gru(H)


def stacked_classifier():
    model = rnnjax.many_to_one(
        rnnjax.stack(rnnjax.bidirectional(LSTM), rnnjax.bidirectional(GRU)),
        readouts.linear(2),
        pool="mean",
    )

    def by_hand(params, probes, xs, n):
        _, ys = bidirectional(LSTM, params["rnn"][0], xs, probes, n, "rnn/0")
        _, ys = bidirectional(GRU, params["rnn"][1], ys, probes, n, "rnn/1")
        pooled = jnp.sum(jnp.where(jnp.arange(T)[:, None] < n, ys, 0), 0) / n
        return jnp.sum(jnp.sin(linear(params["readout"], pooled)))

    shapes = {
        f"rnn/{i}/{d}": (T, state_size(c))
        for i, c in enumerate([LSTM, GRU])
        for d in ("forward", "backward")
    }
    return model, (lambda p, x, n: jnp.sum(jnp.sin(model.apply(p, x, length=n)))), by_hand, shapes


def tagger():
    model = rnnjax.many_to_many(rnnjax.recurrent(LSTM), readouts.linear(2))

    def by_hand(params, probes, xs, n):
        _, ys = direction(LSTM, params["rnn"], xs, probes["rnn"], n, False)
        out = jnp.where(jnp.arange(T)[:, None] < n, linear(params["readout"], ys), 0)
        return jnp.sum(jnp.sin(out))

    return (
        model,
        (lambda p, x, n: jnp.sum(jnp.sin(model.apply(p, x, length=n)))),
        by_hand,
        {"rnn": (T, state_size(LSTM))},
    )


def captioner():
    model = rnnjax.one_to_many(LSTM, VOCAB, start_token=1, end_token=2)

    def by_hand(params, probes, xs, n):
        del n
        return jnp.sum(jnp.sin(decoder_logits(LSTM, params, xs[0], probes["cell"])))

    return (
        model,
        (lambda p, x, n: jnp.sum(jnp.sin(model.apply(p, x[0], TARGETS)))),
        by_hand,
        {"cell": (len(TARGETS), state_size(LSTM))},
    )


def translator():
    model = rnnjax.encoder_decoder(
        rnnjax.bidirectional(LSTM), GRU, VOCAB, start_token=1, end_token=2
    )

    def by_hand(params, probes, xs, n):
        final, _ = bidirectional(LSTM, params["encoder"], xs, probes, n, "encoder")
        context = ravel_pytree(final)[0]
        logits = decoder_logits(GRU, params["decoder"], context, probes["decoder/cell"])
        return jnp.sum(jnp.sin(logits))

    def loss(p, x, n):
        return jnp.sum(jnp.sin(model.apply(p, x, TARGETS, source_length=n)))

    shapes = {f"encoder/{d}": (T, state_size(LSTM)) for d in ("forward", "backward")}
    return model, loss, by_hand, {**shapes, "decoder/cell": (len(TARGETS), state_size(GRU))}


def by_leaf(flow):
    """``flow`` with each LSTM row ``[dL/dh; dL/dc]`` (2H wide) split into ``/h`` and ``/c``,
    as ``gradient_flow`` reports a carry of several leaves (a GRU's state is H wide)."""
    out = {}
    for label, g in flow.items():
        if g.shape[-1] == 2 * H:
            out[f"{label}/h"], out[f"{label}/c"] = g[..., :H], g[..., H:]
        else:
            out[label] = g
    return out


@pytest.mark.parametrize(
    "build", [stacked_classifier, tagger, captioner, translator], ids=lambda f: f.__name__
)
def test_gradient_flow_equals_the_gradient_with_respect_to_hand_placed_probes(build):
    model, loss, by_hand, shapes = build()
    params = model.init(jax.random.key(0), I)
    # nonzero biases everywhere, so that no gradient vanishes by symmetry
    params = jax.tree.map(lambda a: a + 0.2 * jax.random.normal(jax.random.key(1), a.shape), params)
    xs = jax.random.normal(jax.random.key(2), (B, T, I))

    @jax.jit
    def both(xs, lengths):
        got = jax.vmap(lambda x, n: dg.gradient_flow(loss, params, x, n))(xs, lengths)
        zeros = {k: jnp.zeros(s) for k, s in shapes.items()}
        want = jax.vmap(lambda x, n: jax.grad(by_hand, argnums=1)(params, zeros, x, n))(xs, lengths)
        value = jax.vmap(lambda x, n: (loss(params, x, n), by_hand(params, zeros, x, n)))(
            xs, lengths
        )
        return got, want, value

    got, want, (value, value_by_hand) = both(xs, LENGTHS)
    want = by_leaf(want)
    np.testing.assert_allclose(value, value_by_hand, rtol=1e-5, atol=1e-6)  # same model
    assert set(got) == set(want)
    for label in want:
        np.testing.assert_allclose(got[label], want[label], rtol=1e-4, atol=1e-6, err_msg=label)
        assert np.abs(want[label]).max() > 1e-3, label  # a gradient that can be wrong
    for label in [k for k in want if k.startswith(("rnn", "encoder"))]:
        # the short example's padded rows carry no gradient
        np.testing.assert_array_equal(got[label][1, 3:], 0.0)


def test_gradient_flow_hook_in_fit_reads_tokens_through_the_embedding():
    import optax

    from rnnjax import losses, training

    model = rnnjax.many_to_one(
        rnnjax.stack(rnnjax.bidirectional(GRU)),
        readouts.linear(2),
        pool="mean",
        embedding=readouts.embedding(VOCAB, 3),
    )
    tokens = jax.random.randint(jax.random.key(0), (4, T), 0, VOCAB)
    lengths, labels = jnp.array([T, 3, 2, 4]), jnp.array([0, 1, 1, 0])

    def loss(p, x, n, y):
        return losses.masked_cross_entropy(model.apply(p, x, length=n)[None], y[None])

    def train_loss(p, batch, key):
        del key
        return jnp.mean(jax.vmap(loss, (None, 0, 0, 0))(p, *batch)), {}

    optimizer = optax.adam(0.05)
    state = training.init_train_state(jax.random.key(1), model.init(jax.random.key(2)), optimizer)
    hook = dg.gradient_flow_hook(loss, (tokens, lengths, labels))
    result = training.fit(
        training.make_train_step(train_loss, optimizer),
        state,
        lambda key, step: (tokens, lengths, labels),
        4,
        hooks=[hook],
        schedule=training.Schedule(chunk_size=2, hook_every=4),
        progress=False,
    )
    rows = {r["step"]: r for r in result.history if "gradient_flow/rnn/0/forward" in r}
    assert sorted(rows) == [0, 4]
    # each recorded row is the flow of the parameters at that step, averaged over the
    # examples in which step t is valid (computed here example by example)
    one = jax.jit(lambda *args: diagnostics_impl.gradient_flow_norms(loss, *args))
    for step, params in ((0, state.params), (4, result.state.params)):
        for label in ("rnn/0/forward", "rnn/0/backward"):
            per_example = [one(params, x, n, y)[label] for x, n, y in zip(tokens, lengths, labels)]
            want = [
                np.mean([float(g[t]) for g, n in zip(per_example, lengths) if t < n])
                for t in range(T)
            ]
            np.testing.assert_allclose(rows[step]["gradient_flow/" + label], want, rtol=1e-4)
    assert not np.allclose(
        rows[0]["gradient_flow/rnn/0/forward"], rows[4]["gradient_flow/rnn/0/forward"]
    )
    # a state batched over runs (vmapped seeds) gives one row per run
    runs = jax.tree.map(lambda a: jnp.stack([a, a]), result.state)
    batched = hook(runs)["gradient_flow/rnn/0/backward"]
    assert batched.shape == (2, T)
    np.testing.assert_allclose(batched[1], rows[4]["gradient_flow/rnn/0/backward"], rtol=1e-5)


def test_per_layer_jacobian_norms_and_lyapunov_spectra_of_a_stack():
    # Each loop of the stack is measured on the inputs it reads inside it: the layer above
    # reads the outputs of the one below, a backward direction the valid prefix reversed.
    layer = rnnjax.stack(rnnjax.bidirectional(LSTM), rnnjax.recurrent(GRU))
    params = layer.init(jax.random.key(0), I)
    xs, n = jax.random.normal(jax.random.key(1), (T, I)), 4
    fn = lambda p, x, n: layer.apply(p, x, length=n)
    got_norms = spectra.layer_jacobian_norms(fn, params, xs, n)
    got_spectra = spectra.layer_lyapunov_spectra(fn, params, xs, n, k=2, key=jax.random.key(2))
    _, below = rnnjax.bidirectional(LSTM).apply(params[0], xs, length=n)
    reads = {
        "0/forward": (LSTM, params[0]["forward"], xs),
        "0/backward": (LSTM, params[0]["backward"], flip_valid(xs, n)),
        "1": (GRU, params[1], below),
    }
    assert set(got_norms) == set(got_spectra) == set(reads)
    for label, (cell, p, inputs) in reads.items():
        np.testing.assert_allclose(
            got_norms[label], dg.jacobian_norms(cell, p, inputs, length=n), rtol=1e-5, err_msg=label
        )
        np.testing.assert_allclose(
            got_spectra[label],
            dg.lyapunov_spectrum(cell, p, inputs, length=n, k=2, key=jax.random.key(2)),
            rtol=1e-5,
            atol=1e-6,
            err_msg=label,
        )


def test_an_lstm_carry_is_reported_per_leaf_against_separate_h_and_c_probes():
    # The reference: a Python loop over cell.step with one probe on h and one on c.
    cell, n = LSTM, 4
    params = cell.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(1), (T, I))
    w = jnp.linspace(-1.0, 1.0, H)

    def read(final, ys):  # reads every output (h) and the final c
        return jnp.sum(jnp.sin(ys)) + jnp.sum(w * final[1]) ** 2

    def by_hand(probe_h, probe_c):
        h, c = cell.initial_carry(params)
        ys = []
        for t in range(T):
            if t < n:
                (h, c), _ = cell.step(params, (h, c), xs[t])
                h, c = h + probe_h[t], c + probe_c[t]
                ys.append(h)
            else:
                ys.append(jnp.zeros(H))
        return read((h, c), jnp.stack(ys))

    want_h, want_c = jax.grad(by_hand, argnums=(0, 1))(jnp.zeros((T, H)), jnp.zeros((T, H)))
    got = dg.gradient_flow(lambda p, x: read(*rnnjax.scan(cell, p, x, length=n)), params, xs)
    assert sorted(got) == ["scan/c", "scan/h"]
    np.testing.assert_allclose(got["scan/h"], want_h, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(got["scan/c"], want_c, rtol=1e-5, atol=1e-7)
    assert np.abs(want_c[: n - 1]).max() > 1e-3  # c carries a gradient of its own
    # the one-cell function keeps the whole state in one row, h before c
    np.testing.assert_allclose(
        dg.state_gradients(cell, params, xs, read, length=n),
        np.concatenate([want_h, want_c], -1),
        rtol=1e-5,
        atol=1e-7,
    )


def test_a_loss_over_a_batch_is_refused_and_one_example_equals_hand_placed_probes():
    # The Flax convention: the loss applies the model to a batch (B, T, I). One probe per
    # loop would be shared by the batch (its gradient the sum over the examples).
    from rnnjax import linen as rl

    model, loss, by_hand, shapes = tagger()
    params = model.init(jax.random.key(0), I)
    xs = jax.random.normal(jax.random.key(2), (B, T, I))

    def batch_loss(p, x, n):
        return jnp.sum(jax.vmap(loss, (None, 0, 0))(p, x, n))

    with pytest.raises(ValueError, match=r"'rnn' runs under a jax.vmap.*per example"):
        dg.gradient_flow(batch_loss, params, xs, LENGTHS)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        dg.gradient_flow_hook(lambda p, x, n: batch_loss(p, x[None], n[None]), (xs, LENGTHS))(
            training_state(params)
        )
    module = rl.Model(model)
    variables = {"params": params}

    def linen_loss(v, x, n):
        return jnp.sum(jnp.sin(module.apply(v, x, n)))

    with pytest.raises(ValueError, match=r"jax\.vmap"):
        dg.gradient_flow(linen_loss, variables, xs, LENGTHS)
    # the same loss on one example (the module takes inputs without batch axes), vmapped
    # outside: equal to the probes placed by hand
    got = jax.vmap(lambda x, n: dg.gradient_flow(linen_loss, variables, x, n))(xs, LENGTHS)
    zeros = {k: jnp.zeros(s) for k, s in shapes.items()}
    want = jax.vmap(lambda x, n: jax.grad(by_hand, argnums=1)(params, zeros, x, n))(xs, LENGTHS)
    want = by_leaf(want)
    assert set(got) == set(want) == {"rnn/h", "rnn/c"}
    for label in want:
        np.testing.assert_allclose(got[label], want[label], rtol=1e-4, atol=1e-6, err_msg=label)


def training_state(params):
    from typing import NamedTuple

    class State(NamedTuple):
        params: dict

    return State(params)


def test_one_diagnostics_api_for_a_model_and_for_a_cell():
    # rnnjax.diagnostics' loop functions take a cell (cell, params, xs) or a model's loss
    # (fn, *args); on the one loop of rnnjax.scan both give the same numbers.
    from rnnjax._src import lags

    cell = rnnjax.lstm(4)
    params = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (7, 3))
    per_cell = lambda c, ys: jnp.sum(jnp.sin(ys))
    fn = lambda p, x: jnp.sum(jnp.sin(rnnjax.scan(cell, p, x, length=5)[1]))
    model_norms = dg.jacobian_norms(fn, params, xs)
    np.testing.assert_allclose(
        model_norms["scan"], dg.jacobian_norms(cell, params, xs, length=5), rtol=1e-6
    )
    assert model_norms.keys() == spectra.layer_jacobian_norms(fn, params, xs).keys()
    np.testing.assert_allclose(
        dg.lyapunov_spectrum(fn, params, xs, k=3)["scan"],
        dg.lyapunov_spectrum(cell, params, xs, k=3, length=5),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        dg.gradient_by_lag(fn, params, xs)["scan"],
        dg.gradient_by_lag(cell, params, xs, per_cell, length=5),
        rtol=1e-5,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        dg.gradient_by_lag(fn, params, xs)["scan"],
        lags.layer_gradient_by_lag(fn, params, xs)["scan"],
    )
    with pytest.raises(TypeError, match=r"cell must be an rnnjax\.Cell"):
        dg.jacobian_norms("lstm", params, xs)
    with pytest.raises(TypeError, match="carry and length belong to a call on one cell"):
        dg.lyapunov_spectrum(fn, params, xs, length=3)
    with pytest.raises(TypeError, match=r"jacobian_norms\(cell, params, xs"):
        dg.jacobian_norms(cell, params)
