"""Attention (rnnjax.attention, encoder_decoder(attention=...)) against NumPy loops of the papers' equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rnnjax
from rnnjax._src import attention, initializers, padding

KEY = jax.random.PRNGKey(0)
V, S = 7, 9  # target and source vocabularies; start 1, end 2, pad 0
KINDS = ("bahdanau", "luong")


def _softmax(e):
    e = np.exp(e - e.max())
    return e / e.sum()


# ------------------------------------------------------------------------- masked softmax


def test_masked_softmax_is_the_softmax_of_the_valid_prefix_and_zero_after():
    scores = jnp.array([0.3, -1.2, 2.0, 0.5, np.nan, np.inf])
    for n in range(5):
        w = np.asarray(padding.masked_softmax(scores, n))
        expected = np.zeros(6)
        if n:
            expected[:n] = _softmax(np.asarray(scores[:n], np.float64))
        np.testing.assert_allclose(w, expected, rtol=1e-6, atol=0)
        assert np.all(w[n:] == 0.0)  # exactly zero, not small
    # The Jacobian on the valid block is diag(w) - w w^T (the softmax's); padded scores, NaN
    # and inf included, get a zero gradient column; one valid step has a constant weight.
    jac = np.asarray(jax.jacrev(lambda s: padding.masked_softmax(s, 3))(scores))
    w = _softmax(np.asarray(scores[:3], np.float64))
    expected = np.zeros((6, 6))
    expected[:3, :3] = np.diag(w) - np.outer(w, w)
    np.testing.assert_allclose(jac, expected, rtol=1e-5, atol=1e-7)
    assert np.all(np.asarray(jax.jacrev(lambda s: padding.masked_softmax(s, 1))(scores)) == 0)


def test_scores_are_the_papers_equations():
    rng = np.random.default_rng(0)
    q, h = rng.normal(size=4), rng.normal(size=(5, 3))
    for score in (attention.additive(6), attention.general()):
        p = score.init(KEY, 4, 3)
        got = score.scores(p, jnp.asarray(q), score.keys(p, jnp.asarray(h)))
        if score.name == "general":  # Luong eq. 8: s^T W h_j
            expected = [q @ np.asarray(p["w"]) @ h_j for h_j in h]
        else:  # Bahdanau eq. 6 / A.1.2: v^T tanh(W s + U h_j)
            expected = [
                np.asarray(p["v"]) @ np.tanh(q @ np.asarray(p["w"]) + h_j @ np.asarray(p["u"]))
                for h_j in h
            ]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_nan_annotations_on_padding_reach_no_context_or_gradient():
    rng = np.random.default_rng(1)
    h = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    poisoned = h.at[4].set(jnp.nan).at[5].set(jnp.inf)
    score = attention.additive(5)
    p = score.init(KEY, 2, 3)

    def context(p, h, q):
        return attention.attend(score, p, q, attention.memory(score, p, h, 4))[0]

    q = jnp.array([0.4, -0.7])
    np.testing.assert_array_equal(context(p, poisoned, q), context(p, h, q))
    loss = lambda p, h: jnp.sum(jnp.sin(context(p, h, q)))
    g_clean, g_poisoned = jax.grad(loss, (0, 1))(p, h), jax.grad(loss, (0, 1))(p, poisoned)
    for a, b in zip(jax.tree.leaves(g_clean), jax.tree.leaves(g_poisoned)):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(g_poisoned[1][4:]) == 0)


def _attend_gradient_and_finite_differences(score, q, h):
    """Returns (gradient, central differences, padded rows' gradient) of a loss of ``attend``."""
    p = jax.tree.map(lambda a: a.astype(jnp.float64), score.init(KEY, 4, 3))

    def loss(p, q, h):
        c, w = attention.attend(score, p, q, attention.memory(score, p, h, 3))
        return jnp.sum(jnp.sin(2 * c)) + jnp.sum(jnp.cos(3 * w))

    flat, unravel = ravel_pytree((p, q, h))
    f = lambda x: loss(*unravel(x))
    g = jax.jit(jax.grad(f))(flat)
    eps, shifts = 1e-6, jnp.eye(flat.size)
    fs = jax.jit(jax.vmap(f))  # every coordinate's central difference in one call
    numeric = (fs(flat + eps * shifts) - fs(flat - eps * shifts)) / (2 * eps)
    return g, numeric, unravel(g)[2][3:]


def test_attend_gradient_equals_finite_differences_in_float64():
    # The new derivative paths (the scores, the masked softmax, the weighted sum) for both
    # scores; the cells and scans around them are checked against loops in their own tests.
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        h = jnp.asarray(rng.normal(size=(5, 3)))
        q = jnp.asarray(rng.normal(size=4))
        for score in (attention.additive(6), attention.general()):
            g, numeric, padded = _attend_gradient_and_finite_differences(score, q, h)
            np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9)
            assert np.all(np.asarray(padded) == 0)  # padded annotations: no gradient


# ---------------------------------------------------------------- the decoders, by a loop


def _lstm(hidden):
    # Without the orthogonal initialiser, whose QR costs seconds of compilation per shape.
    return rnnjax.lstm(hidden, recurrent_init=initializers.lecun_normal())


def _model(kind, hidden=5):
    return rnnjax.encoder_decoder(
        rnnjax.bidirectional(_lstm(3)),
        _lstm(hidden),
        V,
        start_token=1,
        end_token=2,
        source_vocab_size=S,
        embed_size=4,
        source_embed_size=2,
        attention=kind,
        attention_size=6,
    )


def _annotations_by_loop(cell, p, xs):
    """Returns the bidirectional encoder's outputs and final carry over ``xs`` (no padding)."""

    def run(params, seq):
        carry, ys = cell.initial_carry(params), []
        for x in seq:
            carry, y = cell.step(params, carry, x)
            ys.append(np.asarray(y))
        return carry, ys

    c_f, ys_f = run(p["forward"], xs)
    c_b, ys_b = run(p["backward"], xs[::-1])
    context = np.concatenate([np.ravel(a) for a in jax.tree.leaves((c_f, c_b))])
    return np.concatenate([np.array(ys_f), np.array(ys_b[::-1])], axis=1), context


def _decoder_by_loop(kind, cell, p, h, context, previous):
    """Returns (logits, weights): the paper's decoder step by step in NumPy around ``cell.step``."""
    f = lambda a: np.asarray(a, np.float64)
    leaves, tree = jax.tree.flatten(cell.initial_carry(p["cell"]))
    carry = jax.tree.unflatten(
        tree,
        [
            np.tanh(context @ f(b["w"]) + f(b["b"])).reshape(a.shape)
            for b, a in zip(p["bridge"], leaves)
        ],
    )
    att = p["attention"]
    fed = f(carry[0]) if kind == "bahdanau" else np.zeros(cell.hidden_size)  # s_0 or h~_0
    all_logits, all_weights = [], []
    for token in previous:
        e = f(p["embed"]["table"])[token]
        if kind == "bahdanau":
            scores = [f(att["v"]) @ np.tanh(fed @ f(att["w"]) + h_j @ f(att["u"])) for h_j in h]
            alpha = _softmax(np.array(scores))
            c = alpha @ h
            carry, s = cell.step(p["cell"], carry, jnp.asarray(np.concatenate([e, c]), jnp.float32))
            fed = f(s)
            out = np.concatenate([fed, c, e])
        else:
            carry, h_t = cell.step(
                p["cell"], carry, jnp.asarray(np.concatenate([e, fed]), jnp.float32)
            )
            alpha = _softmax(np.array([f(h_t) @ f(att["w"]) @ h_j for h_j in h]))
            c = alpha @ h
            fed = np.tanh(np.concatenate([c, f(h_t)]) @ f(p["combine"]["w"]))
            out = fed
        all_logits.append(out @ f(p["readout"]["w"]) + f(p["readout"]["b"]))
        all_weights.append(alpha)
    return np.array(all_logits), np.array(all_weights)


@pytest.mark.parametrize("kind", KINDS)
def test_teacher_forced_decoder_equals_a_loop_of_the_papers_equations(kind):
    model = _model(kind)
    p = jax.jit(model.init)(KEY)
    src = jnp.array([3, 8, 4, 6, 0, 0, 0])
    padded = src.at[4:].set(5)  # padding that a leak would change
    targets = jnp.array([4, 6, 3, 2, 0])
    logits, weights = jax.jit(
        lambda p: model.apply(p, padded, targets, source_length=4, return_attention=True)
    )(p)
    xs = np.asarray(p["source_embed"]["table"])[np.asarray(src[:4])]
    h, context = _annotations_by_loop(_lstm(3), p["encoder"], xs)
    expected_logits, expected_weights = _decoder_by_loop(
        kind, _lstm(5), p["decoder"], h, context, [1, 4, 6, 3, 2]
    )
    np.testing.assert_allclose(logits, expected_logits, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(weights[:, :4], expected_weights, rtol=2e-5, atol=2e-7)
    assert np.all(np.asarray(weights[:, 4:]) == 0.0)
    np.testing.assert_allclose(np.sum(weights, axis=1), 1.0, rtol=1e-6)


@pytest.mark.slow
def test_nan_source_padding_reaches_no_output_or_gradient():
    model = rnnjax.encoder_decoder(
        rnnjax.bidirectional(rnnjax.gru(3)),
        rnnjax.gru(4),
        V,
        start_token=1,
        end_token=2,
        attention="luong",
    )
    p = model.init(KEY, 2)
    xs = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
    poisoned = xs.at[3].set(jnp.nan).at[4].set(-jnp.inf)
    targets = jnp.array([3, 4, 2])

    def loss(p, xs, n):
        logits, w = model.apply(p, xs, targets, source_length=n, return_attention=True)
        return jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(3), targets]) + jnp.sum(w**2)

    value_and_grad = jax.jit(jax.value_and_grad(loss))
    unpadded = jax.jit(jax.value_and_grad(loss), static_argnums=2)(p, xs[:3], None)
    for source in (poisoned, xs):
        value, grads = value_and_grad(p, source, 3)
        np.testing.assert_allclose(value, unpadded[0], rtol=1e-6)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(unpadded[1])):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_equals_finite_differences_in_float64(kind):
    with jax.enable_x64(True):
        model = _model(kind, hidden=3)
        p = jax.tree.map(lambda a: a.astype(jnp.float64), model.init(KEY))
        src, targets = jnp.array([[3, 8, 4, 0], [5, 6, 7, 3]]), jnp.array([[4, 6, 2], [3, 2, 0]])
        lengths = jnp.array([3, 4])

        @jax.jit
        def loss(p):
            logits, w = jax.vmap(
                lambda s, t, n: model.apply(p, s, t, source_length=n, return_attention=True)
            )(src, targets, lengths)
            return jnp.sum(jnp.sin(logits)) + jnp.sum(jnp.cos(3 * w))

        grads = jax.grad(loss)(p)
        flat, unravel = ravel_pytree(p)
        g = ravel_pytree(grads)[0]
        for i in range(3):
            d = jax.random.normal(jax.random.PRNGKey(10 + i), flat.shape, jnp.float64)
            eps = 1e-5
            numeric = (loss(unravel(flat + eps * d)) - loss(unravel(flat - eps * d))) / (2 * eps)
            np.testing.assert_allclose(g @ d, numeric, rtol=1e-7)


# ------------------------------------------------------------------------------- decoding


# A bias toward the end token that makes some of these random decoders stop early.
END_BIAS = {"bahdanau": 2.0, "luong": 1.5}


# Each compilation of a decoder costs seconds: the fast run decodes Luong's greedily, the
# slow run also Bahdanau's and both with a beam of one.
@pytest.mark.parametrize(
    "kind, beam",
    [
        ("luong", False),
        pytest.param("luong", True, marks=pytest.mark.slow),
        pytest.param("bahdanau", True, marks=pytest.mark.slow),
    ],
)
def test_decoding_under_jit_and_vmap_is_greedy_and_returns_the_weights(kind, beam):
    model = _model(kind)
    # Random parameters scaled up, so that the decoded tokens are not all alike.
    p = jax.tree.map(lambda a: 3 * a, jax.jit(model.init)(jax.random.PRNGKey(4)))
    p["decoder"]["readout"]["b"] = p["decoder"]["readout"]["b"].at[2].add(END_BIAS[kind])
    src = jnp.array([[3, 8, 4, 6, 0], [7, 5, 0, 0, 0], [4, 4, 3, 8, 5]])
    lengths = jnp.array([4, 2, 5])
    decode = jax.jit(
        jax.vmap(
            lambda s, n, b: model.generate(
                p, s, max_length=6, source_length=n, beam_size=b, return_attention=True
            ),
            in_axes=(0, 0, None),
        ),
        static_argnums=2,
    )
    tokens, length, weights = decode(src, lengths, None)
    # Teacher forcing on the decoded tokens: each token must be the argmax of its step's
    # logits (greedy), and the weights those of the same steps.
    forced_logits, forced = jax.jit(
        jax.vmap(lambda s, t, n: model.apply(p, s, t, source_length=n, return_attention=True))
    )(src, tokens, lengths)
    ends = 0
    for i in range(3):
        n, k = int(lengths[i]), int(length[i])
        np.testing.assert_array_equal(tokens[i, :k], np.argmax(forced_logits[i, :k], axis=1))
        stopped = bool(tokens[i, k - 1] == 2)
        assert stopped or k == 6
        assert 2 not in tokens[i, : k - 1].tolist() and np.all(np.asarray(tokens[i, k:]) == 0)
        ends += stopped
        np.testing.assert_allclose(weights[i, :k], forced[i, :k], rtol=1e-6, atol=1e-7)
        assert np.all(np.asarray(weights[i, k:]) == 0) and np.all(
            np.asarray(weights[i, :, n:]) == 0
        )
        np.testing.assert_allclose(np.sum(weights[i, :k], axis=1), 1.0, rtol=1e-6)
    assert 1 <= ends < 3  # the end token stopped some decodes, not all
    if beam:  # beam search with one beam is greedy decoding, weights included
        b_tokens, b_length, b_weights = decode(src, lengths, 1)
        np.testing.assert_array_equal(b_tokens, tokens)
        np.testing.assert_array_equal(b_length, length)
        np.testing.assert_allclose(b_weights, weights, rtol=1e-6, atol=1e-7)


def test_attention_arguments_are_checked():
    with pytest.raises(ValueError, match="attention must be None or one of"):
        _model("dot")
    with pytest.raises(ValueError, match="feed_context must be False or None"):
        rnnjax.encoder_decoder(
            rnnjax.recurrent(rnnjax.gru(3)),
            rnnjax.gru(3),
            V,
            start_token=1,
            end_token=2,
            attention="luong",
            feed_context=True,
        )
    model = _model("luong")
    params = model.init(KEY)
    with pytest.raises(ValueError, match="key=None with beam_size"):
        model.generate(
            params, jnp.array([3, 4]), max_length=3, beam_size=2, key=jax.random.PRNGKey(0)
        )
    with pytest.raises(ValueError, match="max_length"):
        model.generate(params, jnp.array([3, 4]), max_length=0)


# -------------------------------------------------------------------------- gradient flow


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_flow_reports_the_decoder_loop_equal_to_hand_placed_probes(kind):
    """Every loop of an attention encoder-decoder is probed: the encoder's two directions and
    the decoder's, against the model written out with explicit probes, by the check of
    tests/test_gradient_flow.py (one full source, one padded)."""
    from test_gradient_flow import TARGETS, T, probed, state_size
    from test_gradient_flow import bidirectional as probed_bidirectional
    from test_gradient_flow import linear as affine
    from test_gradient_flow import (
        test_gradient_flow_equals_the_gradient_with_respect_to_hand_placed_probes as check,
    )

    enc = dec = rnnjax.lstm(3)  # H of test_gradient_flow: its by_leaf splits (h, c)
    model = rnnjax.encoder_decoder(
        rnnjax.bidirectional(enc), dec, V, start_token=1, end_token=2, attention=kind
    )

    def by_hand(params, probes, xs, n):
        final, annotations = probed_bidirectional(enc, params["encoder"], xs, probes, n, "encoder")
        p, valid = params["decoder"], jnp.arange(T) < n
        leaves, tree = jax.tree.flatten(dec.initial_carry(p["cell"]))
        context = ravel_pytree(final)[0]
        carry = jax.tree.unflatten(
            tree,
            [jnp.tanh(affine(b, context)).reshape(a.shape) for b, a in zip(p["bridge"], leaves)],
        )
        att = p["attention"]

        def attend(q):  # eq. 6 (Bahdanau) or eq. 8 (Luong), softmax over the valid steps
            if kind == "bahdanau":
                e = jnp.tanh(q @ att["w"] + annotations @ att["u"]) @ att["v"]
            else:
                e = annotations @ att["w"].T @ q
            w = jax.nn.softmax(jnp.where(valid, e, -jnp.inf))
            return w @ annotations

        def attentional(h):  # Luong's h~ = tanh(W_c [c; h])
            return jnp.tanh(jnp.concatenate([attend(h), h]) @ p["combine"]["w"])

        total = 0.0
        for t, token in enumerate([1, *np.asarray(TARGETS)[:-1].tolist()]):
            e, h_prev = p["embed"]["table"][token], carry[0]
            if kind == "bahdanau":
                fed = attend(h_prev)
            else:
                fed = jnp.zeros(3) if t == 0 else attentional(h_prev)
            x = jnp.concatenate([e, fed, probes["decoder/cell"][t]])
            carry, h = probed(dec).step(p["cell"], carry, x)
            out = jnp.concatenate([h, attend(h_prev), e]) if kind == "bahdanau" else attentional(h)
            total = total + jnp.sum(jnp.sin(affine(p["readout"], out)))
        return total

    def loss(p, x, n):
        return jnp.sum(jnp.sin(model.apply(p, x, TARGETS, source_length=n)))

    shapes = {f"encoder/{d}": (T, state_size(enc)) for d in ("forward", "backward")}
    check(
        lambda: (model, loss, by_hand, {**shapes, "decoder/cell": (len(TARGETS), state_size(dec))})
    )
