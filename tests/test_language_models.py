"""rnnjax._src.language_models.carry_bridge: a conditioning vector sets a language model's carry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax import decoding
from rnnjax._src.language_models import carry_bridge, chunk_loss

# An LSTM under a GRU: the carry has three leaves of two sizes, ((h, c), h).
LM = rnnjax.language_model(
    rnnjax.stack(rnnjax.recurrent(rnnjax.lstm(3)), rnnjax.recurrent(rnnjax.gru(2))), 5, embed_size=4
)


def test_bridge_by_hand_through_a_hidden_layer():
    bridge = carry_bridge(LM, (6,))
    params = bridge.init(jax.random.PRNGKey(0), 4)
    x = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
    carry = bridge.apply(params, jnp.asarray(x))
    w1, b1 = (np.asarray(params[0][k], np.float64) for k in ("w", "b"))
    w2, b2 = (np.asarray(params[1][k], np.float64) for k in ("w", "b"))
    assert w1.shape == (4, 6) and w2.shape == (6, 3 + 3 + 2)
    out = np.tanh(np.maximum(x @ w1 + b1, 0.0) @ w2 + b2)
    (h1, c1), h2 = carry
    np.testing.assert_allclose(h1, out[0:3], rtol=1e-5)
    np.testing.assert_allclose(c1, out[3:6], rtol=1e-5)
    np.testing.assert_allclose(h2, out[6:8], rtol=1e-5)
    zeros = LM.initial_carry(LM.init(jax.random.PRNGKey(1)))
    assert jax.tree.structure(carry) == jax.tree.structure(zeros)
    with pytest.raises(ValueError, match=r"x must have shape \(input_size,\).*vmap.*\(2, 4\)"):
        bridge.apply(params, jnp.ones((2, 4)))


def test_conditioned_model_decodes_from_the_bridged_carry():
    bridge = carry_bridge(LM)
    b_params = bridge.init(jax.random.PRNGKey(2), 3)
    params = LM.init(jax.random.PRNGKey(3))
    params["readout"]["w"] = 3.0 * params["readout"]["w"]  # spread the logits out
    carry = bridge.apply(b_params, jnp.array([1.0, -2.0, 0.5]))
    # without hidden layers each leaf is tanh of its own affine map
    (h1, _), _ = carry
    np.testing.assert_allclose(
        h1,
        np.tanh(
            np.array([1.0, -2.0, 0.5]) @ np.asarray(b_params[0]["w"])[:, :3]
            + np.asarray(b_params[0]["b"])[:3]
        ),
        rtol=1e-5,
    )
    tokens = jnp.array([0, 3, 1, 4, 2])
    _, logits = LM.apply(params, tokens, carry=carry)
    c, expected = carry, []  # a Python loop over one-token steps from the same carry
    for t in tokens:
        c, step_logits = LM.step(params, c, t)
        expected.append(step_logits)
    np.testing.assert_allclose(logits, np.stack(expected), rtol=1e-5, atol=1e-6)
    # a beam of one is the greedy generation from that carry; the carry matters
    greedy, _ = LM.generate(params, jnp.array([0]), max_length=7, carry=carry)
    beam, _, _ = decoding.beam_search(
        lambda c, t: LM.step(params, c, t), carry, 0, beam_size=1, max_length=6
    )
    np.testing.assert_array_equal(greedy[1:], beam[0])
    other = bridge.apply(b_params, jnp.array([-1.0, 2.0, -0.5]))
    assert not np.allclose(
        LM.step(params, carry, jnp.array(0))[1], LM.step(params, other, jnp.array(0))[1]
    )


def _identity_model(vocab_size, dropout):
    """A language model whose logits are its (dropped-out) embeddings: no layer, no readout."""
    identity = rnnjax.Layer(
        init=lambda key, n: {},
        apply=lambda p, xs, *, length=None, carry=None, key=None, train=False: (carry, xs),
        output_size=vocab_size,
        initial_carry=lambda p: jnp.zeros(()),
    )
    readout = rnnjax._src.readouts.Readout(lambda key, n: {}, lambda p, x: x, vocab_size)
    return rnnjax.language_model(
        identity, vocab_size, embed_size=vocab_size, readout=readout, dropout=dropout
    )


def test_dropout_keeps_or_zeroes_each_entry_and_is_unbiased():
    p, V = 0.3, 6
    model = _identity_model(V, p)
    params = model.init(jax.random.PRNGKey(0))
    tokens = jnp.array([0, 3, 1, 4, 2, 5, 3, 3])
    table = np.asarray(params["embed"]["table"], np.float64)
    expected = table[np.asarray(tokens)]
    keys = jax.random.split(jax.random.PRNGKey(1), 4000)
    logits = jax.jit(jax.vmap(lambda k: model.apply(params, tokens, key=k, train=True)[1]))(keys)
    logits = np.asarray(logits, np.float64)
    # Two dropouts in a row (embedding, then layer output): each entry is 0 or x / (1-p)^2.
    kept = logits != 0.0
    np.testing.assert_allclose(
        logits[kept], np.broadcast_to(expected / (1 - p) ** 2, logits.shape)[kept], rtol=1e-5
    )
    n = kept.size
    assert abs(kept.mean() - (1 - p) ** 2) < 4 * np.sqrt((1 - p) ** 2 * (1 - (1 - p) ** 2) / n)
    # E[dropout(x)] = x, within four standard errors of the Monte-Carlo mean
    stderr = logits.std(axis=0) / np.sqrt(len(keys))
    assert np.all(np.abs(logits.mean(axis=0) - expected) < 4 * stderr + 1e-7)
    # a different key draws a different mask
    assert not np.array_equal(kept[0], kept[1])


def test_dropout_is_off_outside_training_and_on_in_chunk_loss():
    layer = rnnjax.stack(rnnjax.recurrent(rnnjax.lstm(3)), rnnjax.recurrent(rnnjax.gru(2)))
    plain = rnnjax.language_model(layer, 5, embed_size=4)
    dropped = rnnjax.language_model(layer, 5, embed_size=4, dropout=0.5)
    params = plain.init(jax.random.PRNGKey(0))
    tokens = jnp.array([0, 3, 1, 4, 2])
    _, reference = plain.apply(params, tokens)
    for kwargs in (
        {},
        {"key": jax.random.PRNGKey(1)},
        {"key": jax.random.PRNGKey(1), "train": False},
    ):
        np.testing.assert_array_equal(dropped.apply(params, tokens, **kwargs)[1], reference)
    _, trained = dropped.apply(params, tokens, key=jax.random.PRNGKey(1), train=True)
    assert not np.allclose(trained, reference)
    with pytest.raises(ValueError, match=r"dropout>0.*needs a key, got key=None"):
        dropped.apply(params, tokens, train=True)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        rnnjax.language_model(layer, 5, dropout=1.0)

    chunks = rnnjax.training.document_chunks(
        [np.array([0, 3, 1, 4, 2, 1, 1, 3]), np.array([2, 4, 4, 0, 1])],
        num_streams=2,
        chunk_length=3,
    )
    batch = jax.tree.map(jnp.asarray, rnnjax.training.chunk_at(chunks, 0))
    carry = jax.vmap(lambda _: plain.initial_carry(params))(jnp.arange(2))
    loss_plain, _ = chunk_loss(plain)(params, batch, carry, jax.random.PRNGKey(2))
    loss_eval, _ = chunk_loss(dropped)(params, batch, carry, None)
    loss_train, _ = chunk_loss(dropped)(params, batch, carry, jax.random.PRNGKey(2))
    np.testing.assert_allclose(loss_eval, loss_plain, rtol=1e-6)
    assert abs(float(loss_train) - float(loss_plain)) > 1e-3
    # with a key, stream b runs in training mode on its own key: the loss by hand
    keys = jax.random.split(jax.random.PRNGKey(2), 2)
    nats = []
    for b in range(2):
        _, logits = dropped.apply(
            params,
            batch.inputs[b],
            length=batch.lengths[b],
            carry=jax.tree.map(lambda c, b=b: c[b], carry),
            key=keys[b],
            train=True,
        )
        n = int(batch.lengths[b])
        log_p = np.asarray(jax.nn.log_softmax(logits[:n]), np.float64)
        nats.extend(-log_p[np.arange(n), np.asarray(batch.targets[b, :n])])
    np.testing.assert_allclose(loss_train, np.mean(nats), rtol=1e-5)
